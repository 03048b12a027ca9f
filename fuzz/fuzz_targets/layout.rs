//! The layout engine on arbitrary leaf 0xD tables: construction never panics, and every layout
//! it accepts answers queries for arbitrary masks consistently.
#![no_main]

use libfuzzer_sys::fuzz_target;
use xstate::cpuid::{Leaf0d, Regs};
use xstate::{Layout, Xfeatures};

fuzz_target!(|data: &[u8]| {
    let mut leaf = Leaf0d::new();
    let mut words = data.chunks_exact(17);
    for w in &mut words {
        let i = w[0] & 63;
        let r = |k: usize| u32::from_le_bytes([w[1 + 4 * k], w[2 + 4 * k], w[3 + 4 * k], w[4 + 4 * k]]);
        leaf.set(i, Regs::new(r(0), r(1), r(2), r(3)));
    }
    let Ok(l) = Layout::from_leaf0d(&leaf) else { return };
    let masks = [l.user_supported(), l.supported(), Xfeatures(u64::from_le_bytes(
        words.remainder().iter().chain([0u8; 8].iter()).take(8).copied().collect::<Vec<_>>().try_into().unwrap(),
    ))];
    for m in masks {
        let std = l.standard_size(m);
        let cmp = l.compacted_size(m);
        if let Some(s) = std {
            assert!(s == 0 || s >= 576);
            assert!(s <= l.standard_size_max());
        }
        if let Some(c) = cmp {
            assert!(c >= 576);
            for comp in m.iter() {
                if let Some(off) = l.compacted_offset(comp, m) {
                    assert!(off as u64 + l.geometry(comp).unwrap().size as u64 <= c as u64 || comp.is_legacy());
                }
            }
        }
        let _ = l.holes(m);
        let _ = l.cross_check(Some(m), Some(m));
    }
    let back = Layout::from_leaf0d(&l.to_leaf0d(l.user_supported(), l.supervisor_supported())).unwrap();
    assert_eq!(back.supported(), l.supported());
});
