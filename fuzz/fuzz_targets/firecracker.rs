//! The Firecracker vmstate reader (CRC, header; bincode: vcpu_states walked by structure; bitcode: kvm_xsave / kvm_xcrs / CPUID by content) and
//! patcher on arbitrary bytes (byte 0: the layout given, byte 1 bit 0: re-seal the CRC first,
//! so the fuzzer gets past the checksum): never a panic; a vmstate that reads patches back to
//! itself; a patched register reads back with a valid CRC; a retarget reads back in its layout.
//! Seeded with the fixture (`seeds/make_vmm_seeds.py`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use xstate::fixtures::{SAMPLES as FIXTURES, layout};
use xstate::record::firecracker::{Vmstate, crc64};
use xstate::record::{Format, Options, patch, read};

fuzz_target!(|data: &[u8]| {
    let [sel, flags, rest @ ..] = data else { return };
    let mut bytes = rest.to_vec();
    if flags & 1 != 0 && bytes.len() >= 8 {
        let body = bytes.len() - 8;
        let crc = crc64(&bytes[..body]);
        bytes[body..].copy_from_slice(&crc.to_le_bytes());
    }
    let _ = Vmstate::parse(&bytes);
    let given = layout(FIXTURES[(sel & 0x0f) as usize % FIXTURES.len()]);
    let Ok(c) = read(Format::Firecracker, &bytes, &given, &Options::default()).map_err(|e| e.to_string()) else {
        return;
    };
    let l = c.layout.clone().unwrap_or_else(|| given.clone());
    let same = patch(Format::Firecracker, &bytes, &c, &l, &l, &Options::default()).expect("patches with its own contents");
    assert!(same == bytes, "patching with the vmstate's own contents changed it");
    let mut c2 = c.clone();
    if let Some(img) = c2.states.first_mut().and_then(|s| s.image.as_mut()) {
        img[160] ^= 0x5a;
        let want = img[160];
        if let Ok(out) = patch(Format::Firecracker, &bytes, &c2, &l, &l, &Options::default()) {
            assert_eq!(crc64(&out), 0, "the CRC is recomputed");
            let back = read(Format::Firecracker, &out, &l, &Options::default()).expect("a patched vmstate reads back");
            assert_eq!(back.states[0].image.as_ref().unwrap()[160], want);
        }
    }
    let to = layout(FIXTURES[(sel >> 4) as usize % FIXTURES.len()]);
    if let Ok(out) = patch(Format::Firecracker, &bytes, &c, &l, &to, &Options::default()) {
        let mut o = Options::default();
        o.layout_given = true;
        read(Format::Firecracker, &out, &to, &o).expect("a retargeted vmstate reads back in its layout");
    }
});
