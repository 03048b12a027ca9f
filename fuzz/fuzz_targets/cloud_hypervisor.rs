//! The Cloud Hypervisor `state.json` reader, its JSON reader and the patcher on arbitrary bytes
//! (byte 0: whether the layout is given, and which): never a panic; a snapshot that reads
//! patches back to itself byte for byte; a patched register reads back, in the xsave region and
//! in `fpu`; a retarget is refused or reads back in the target layout; JSON spans lie inside the
//! text and string escapes round-trip. Seeded with the fixture (`seeds/make_vmm_seeds.py`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use xstate::fixtures::{SAMPLES as FIXTURES, layout};
use xstate::record::json;
use xstate::record::{Format, Options, patch, read};

fn spans_inside(v: &json::Value<'_>, len: usize) {
    assert!(v.span.start <= v.span.end && v.span.end <= len);
    if let Some(a) = v.as_array() {
        a.iter().for_each(|x| spans_inside(x, len));
    }
    if let Some(m) = v.as_object() {
        m.iter().for_each(|(_, x)| spans_inside(x, len));
    }
    if let Some(s) = v.as_str() {
        assert_eq!(json::parse(&json::escape(&s)).unwrap().as_str().unwrap(), s);
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, bytes)) = data.split_first() else { return };
    if let Ok(t) = core::str::from_utf8(bytes)
        && let Ok(v) = json::parse(t)
    {
        spans_inside(&v, t.len());
    }
    let given = layout(FIXTURES[(sel & 0x0f) as usize % FIXTURES.len()]);
    let mut opts = Options::default();
    opts.layout_given = sel & 0x10 != 0;
    let Ok(c) = read(Format::CloudHypervisor, bytes, &given, &opts).map_err(|e| e.to_string()) else { return };
    let l = c.layout.clone().unwrap_or_else(|| given.clone());
    let same = patch(Format::CloudHypervisor, bytes, &c, &l, &l, &opts).expect("a snapshot patches with its own contents");
    if !opts.layout_given {
        assert!(same == bytes, "patching with the snapshot's own contents changed it");
    }
    let mut c2 = c.clone();
    if let Some(img) = c2.states.first_mut().and_then(|s| s.image.as_mut()) {
        img[160] ^= 0x5a;
        let want = img[160];
        if let Ok(out) = patch(Format::CloudHypervisor, bytes, &c2, &l, &l, &opts) {
            let mut o = opts;
            o.layout_given = true;
            let back = read(Format::CloudHypervisor, &out, &l, &o).expect("a patched snapshot reads back");
            assert_eq!(back.states[0].image.as_ref().unwrap()[160], want);
        }
    }
    let to = layout(FIXTURES[(sel >> 5) as usize % FIXTURES.len()]);
    if let Ok(out) = patch(Format::CloudHypervisor, bytes, &c, &l, &to, &opts) {
        let mut o = opts;
        o.layout_given = true;
        read(Format::CloudHypervisor, &out, &to, &o).expect("a retargeted snapshot reads back in its layout");
    }
});
