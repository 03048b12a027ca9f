//! Every record parser on arbitrary bytes (byte 0 picks the format, byte 1 the layout, byte 2
//! options): never a panic; auto-detection never panics; the blob and layout-note parsers are
//! exact inverses of their writers; whatever reads as a record with an image can be written
//! back in its own format (or refused with a typed error) and what is written reads again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use xstate::fixtures::{
    AMD_FAM15H_LWP, AMD_ZEN2, AMD_ZEN3, AMD_ZEN4, AVX_ONLY, INTEL_AMX_GUEST, INTEL_ICELAKE, INTEL_SAPPHIRE_RAPIDS,
    INTEL_SKYLAKE_SP, Rows, layout,
};
use xstate::record::blob::Blob;
use xstate::record::linux::LayoutNote;
use xstate::record::xen::{DomctlBlob, XenHost};
use xstate::record::{Format, Options, detect, read, write};
use xstate::Xfeatures;

const FIXTURES: [Rows; 9] = [
    INTEL_SKYLAKE_SP,
    INTEL_ICELAKE,
    INTEL_SAPPHIRE_RAPIDS,
    INTEL_AMX_GUEST,
    AMD_ZEN4,
    AMD_ZEN3,
    AMD_ZEN2,
    AMD_FAM15H_LWP,
    AVX_ONLY,
];

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let f = Format::ALL[data[0] as usize % Format::ALL.len()];
    let l = layout(FIXTURES[data[1] as usize % FIXTURES.len()]);
    let bytes = &data[3..];
    let mut opts = Options::default();
    if data[2] & 1 != 0 {
        opts.kvm_supported = Some(l.user_supported() & Xfeatures(0xE7));
    }
    if data[2] & 2 != 0 {
        opts.mxcsr_mask = Some(0xFFBF);
    }
    let _ = detect(bytes, &l);
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
            let _ = c.rfbm();
            if c.image.is_some() && f.writable() {
                let from = c.layout.clone().unwrap_or_else(|| l.clone());
                if let Ok(out) = write(f, &c, &from, &l, &opts) {
                    read(f, &out, &l, &opts).expect("what write produces reads back");
                }
            }
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
