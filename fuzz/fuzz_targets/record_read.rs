//! Every record parser on arbitrary bytes (byte 0 picks the format, byte 1 the layout, byte 2
//! options): never a panic; auto-detection never panics; the blob and layout-note parsers are
//! exact inverses of their writers; whatever reads as a record with an image can be written
//! back in its own format (or refused with a typed error) and what is written reads again;
//! a Xen record valid under a guest maximum is valid under every larger one; every error has
//! a message and a chain, and a Xen error an errno.
//! With byte 2 bit 7 set, the layout is built from the next 320 bytes (subleaves 0..=19, 16
//! bytes each) instead of a fixture, as a hostile CPUID dump would give it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use xstate::cpuid::{Leaf0d, Regs};
use xstate::fixtures::{SAMPLES as FIXTURES, layout};
use xstate::policy::XenGuest;
use xstate::record::fc_blob::FcBlob as Blob;
use xstate::record::linux::LayoutNote;
use xstate::record::xen::{DomctlBlob, XenHost};
use xstate::record::{Field, FieldSet, Format, Options, detect, read, write};
use xstate::{Layout, Xfeatures};

/// Bytes of the fuzzed leaf 0xD: subleaves 0..=19, 16 bytes each.
const LEAF_BYTES: usize = 20 * 16;

fn fuzzed_layout(d: &[u8]) -> Option<Layout> {
    let mut leaf = Leaf0d::new();
    for (k, chunk) in d.chunks_exact(16).enumerate() {
        let r = |i: usize| u32::from_le_bytes([chunk[4 * i], chunk[4 * i + 1], chunk[4 * i + 2], chunk[4 * i + 3]]);
        leaf.set(k as u8, Regs::new(r(0), r(1), r(2), r(3)));
    }
    Layout::from_leaf0d(&leaf).ok()
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let f = Format::ALL[data[0] as usize % Format::ALL.len()];
    let (l, bytes) = if data[2] & 0x80 == 0 {
        (layout(FIXTURES[data[1] as usize % FIXTURES.len()]), &data[3..])
    } else {
        let Some(leaf) = data.get(3..3 + LEAF_BYTES) else { return };
        let Some(l) = fuzzed_layout(leaf) else { return };
        (l, &data[3 + LEAF_BYTES..])
    };
    let mut opts = Options::default();
    if data[2] & 1 != 0 {
        opts.kvm_supported = Some(l.user_supported() & Xfeatures(0xE7));
    }
    if data[2] & 2 != 0 {
        opts.mxcsr_mask = Some(0xFFBF);
    }
    if data[2] & 4 != 0 {
        opts.vcpu = Some(u32::from(data[1]));
        opts.drop = Field::ALL.into_iter().fold(FieldSet::NONE, FieldSet::with);
    }
    if data[2] & 8 != 0 {
        opts.xen = Some(XenHost::for_guest(&l, XenGuest::ALL[data[1] as usize % 3]));
    }
    let _ = detect(bytes, &l);
    // The guest maxima are nested: valid for PV => valid for HVM shadow => valid for HVM HAP.
    let mut valid_before = false;
    for g in XenGuest::ALL {
        let ok = DomctlBlob::parse(bytes, &l, &XenHost::for_guest(&l, g)).is_ok();
        assert!(ok || !valid_before, "{g} refuses what a smaller maximum accepts");
        valid_before = ok;
    }
    if let Ok(b) = DomctlBlob::parse(bytes, &l, &XenHost::of(&l)) {
        assert_eq!(b.to_bytes(), bytes);
        // Every valid old blob is a valid new blob with the same meaning.
        let n = Blob::parse(bytes, &l, &Blob::host_of(&l)).expect("old blob valid under the new rules");
        assert_eq!((n.xstates, n.xstates_accum, n.image), (b.xcr0, b.xcr0_accum, b.image));
    }
    if let Ok(b) = Blob::parse(bytes, &l, &Blob::host_of(&l)) {
        assert_eq!(b.to_bytes(), bytes);
    }
    if let Ok(n) = LayoutNote::parse(bytes) {
        assert_eq!(n.to_bytes(), bytes);
        let _ = n.to_layout(l.features());
    }
    match read(f, bytes, &l, &opts) {
        Ok(c) => {
            let has_image = c.state().is_some_and(|s| s.image.is_some());
            if has_image && f.writable() {
                let from = c.layout.clone().unwrap_or_else(|| l.clone());
                if let Ok(out) = write(f, &c, &from, &l, &opts) {
                    read(f, &out, &l, &opts).expect("what write produces reads back");
                }
            }
        }
        Err(e) => {
            let _ = e.to_string();
            let _ = core::error::Error::source(&e);
            if matches!(f, Format::XenDomctl | Format::XenHvm) {
                assert!(e.errno().is_some() || e.rule == xstate::record::Rule::TypeCode, "{e}: no errno");
            }
        }
    }
});
