//! The ELF core note reader on arbitrary bytes, then NT_X86_XSTATE and NT_X86_XSAVE_LAYOUT of
//! whatever it finds, and the note rewriter (`xstate core -o`): never a panic. Byte 0 picks the layout for cores without a layout note.
#![no_main]

use libfuzzer_sys::fuzz_target;
use xstate::fixtures::{AMD_ZEN4, INTEL_AMX_GUEST, INTEL_SKYLAKE_SP, layout};
use xstate::image::Image;
use xstate::image::regs::decode;
use xstate::record::elf::{read_core, rewrite_notes};
use xstate::record::linux::{LayoutNote, NtXstate};

fuzz_target!(|data: &[u8]| {
    let Some((&sel, bytes)) = data.split_first() else { return };
    let fixture = [INTEL_SKYLAKE_SP, AMD_ZEN4, INTEL_AMX_GUEST][sel as usize % 3];
    let Ok(notes) = read_core(bytes) else { return };
    // Rewriting every note with a copy of itself (a new PT_NOTE at the end) reads back the same.
    if let Ok(copy) = rewrite_notes(bytes, |_, _, d| Ok(Some(d.to_vec()))) {
        let again = read_core(&copy).expect("a rewritten core reads");
        assert_eq!(again.threads.len(), notes.threads.len());
        assert!(again.threads.iter().zip(&notes.threads).all(|(a, b)| a.xstate == b.xstate && a.tid == b.tid));
        assert_eq!(again.layout, notes.layout);
    }
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
