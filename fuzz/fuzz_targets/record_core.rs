//! The ELF core note reader on arbitrary bytes, then NT_X86_XSTATE and NT_X86_XSAVE_LAYOUT of
//! whatever it finds: never a panic. Byte 0 picks the layout for cores without a layout note.
#![no_main]

use libfuzzer_sys::fuzz_target;
use xstate::fixtures::{AMD_ZEN4, INTEL_AMX_GUEST, INTEL_SKYLAKE_SP, layout};
use xstate::image::Image;
use xstate::image::regs::decode;
use xstate::record::elf::read_core;
use xstate::record::linux::{LayoutNote, NtXstate};

fuzz_target!(|data: &[u8]| {
    let Some((&sel, bytes)) = data.split_first() else { return };
    let fixture = [INTEL_SKYLAKE_SP, AMD_ZEN4, INTEL_AMX_GUEST][sel as usize % 3];
    let Ok(notes) = read_core(bytes) else { return };
    let l = match notes.layout.map(LayoutNote::parse) {
        Some(Ok(n)) => match n.to_layout(Default::default()) {
            Ok(l) => l,
            Err(_) => return,
        },
        Some(Err(_)) => return,
        None => layout(fixture),
    };
    for t in &notes.threads {
        if let Ok(n) = NtXstate::parse(t.xstate, &l) {
            let img = Image::new(n.image).expect("a parsed note holds a header");
            let d = decode(&img, &l, n.xcr0);
            assert!(d.truncated.is_empty(), "a parsed note holds every component of its XCR0");
        }
    }
});
