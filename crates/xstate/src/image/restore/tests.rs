use alloc::vec::Vec;

use super::*;
use crate::component::legacy::COMPACTED;
use crate::fixtures::{AMD_ZEN4, INTEL_SAPPHIRE_RAPIDS, INTEL_SKYLAKE_SP, layout};
use crate::image::{ImageBuf, Target, convert, state::Values};

/// A standard image with every component of `bv` filled with a pattern derived from `seed`.
fn filled(l: &Layout, xcr0: Xfeatures, bv: Xfeatures, mxcsr: u32, seed: u8) -> ImageBuf {
    let mut b = ImageBuf::init(l.standard_size(xcr0).unwrap() as usize, Xfeatures(0));
    for c in bv.iter() {
        let ranges: Vec<core::ops::Range<usize>> =
            if c.is_legacy() { c.legacy_ranges().to_vec() } else { alloc::vec![l.standard_range(c).unwrap()] };
        for r in ranges {
            for i in r {
                b[i] = (i as u8).wrapping_mul(7).wrapping_add(c.index()).wrapping_add(seed) | 1;
            }
        }
    }
    b[24..28].copy_from_slice(&mxcsr.to_le_bytes());
    b[28..32].copy_from_slice(&0xFFFFu32.to_le_bytes());
    b.set_xstate_bv(bv);
    b
}

fn values(b: &[u8], l: &Layout, rfbm: Xfeatures) -> Values {
    State::new(Image::new(b).unwrap(), l, rfbm).values().unwrap()
}

#[test]
fn agrees_with_convert_into_a_fresh_image() {
    for (rows, xcr0) in [(INTEL_SKYLAKE_SP, 0x2FFu64), (AMD_ZEN4, 0x2E7), (INTEL_SAPPHIRE_RAPIDS, 0x602E7)] {
        let l = layout(rows);
        let xcr0 = Xfeatures(xcr0);
        for bv in [0u64, 1, 2, 3, 4, 5, 7, 0xE7, 0x200, 0x20003, 0x60007, 0x2FF, 0x602E7] {
            let bv = Xfeatures(bv) & xcr0;
            for mxcsr in [0x1F80, 0x7F80] {
                let src = filled(&l, xcr0, bv, mxcsr, 3);
                for target in [Target::Standard, Target::Compacted { mask: xcr0 }] {
                    let want = convert(&src, &l, &l, xcr0, target).unwrap();
                    let mut got = ImageBuf::init(want.len(), want.header().xcomp_bv);
                    restore_into(&src.image(), &l, xcr0, &mut got, &l).unwrap();
                    assert_eq!(got.header(), want.header(), "{bv} {mxcsr:#x} {target:?}");
                    // Byte for byte, but for MXCSR_MASK, which convert carries and no restore reads.
                    assert_eq!(got[..28], want[..28]);
                    assert_eq!(got[32..], want[32..]);
                    assert_eq!(values(&got, &l, xcr0), values(&src, &l, xcr0));
                }
            }
        }
    }
}

#[test]
fn components_outside_rfbm_are_kept() {
    let l = layout(INTEL_SAPPHIRE_RAPIDS);
    let xcr0 = Xfeatures(0x602E7);
    for xcomp in [Xfeatures(0), Xfeatures(COMPACTED | 0x602E7)] {
        let full = filled(&l, xcr0, xcr0, 0x1F80, 9);
        let mut dst = convert(
            &full,
            &l,
            &l,
            xcr0,
            if xcomp.is_empty() { Target::Standard } else { Target::Compacted { mask: xcr0 } },
        )
        .unwrap();
        let before = dst.clone();
        let src = filled(&l, Xfeatures(0x7), Xfeatures(0x4), 0x1F81, 77);
        restore_into(&src.image(), &l, Xfeatures(0x7), &mut dst, &l).unwrap();
        // x87 and SSE become init, AVX takes the source's bytes, the rest is untouched. MXCSR
        // 0x1F81 is not init: a compacted image carries it with XSTATE_BV[1] and zero XMM.
        let sse = if xcomp.is_empty() { 0 } else { 2 };
        assert_eq!(dst.header().xstate_bv, Xfeatures(0x602E4 | sse));
        assert_eq!(u32::from_le_bytes(dst[24..28].try_into().unwrap()), 0x1F81);
        let after = values(&dst, &l, xcr0);
        let old = values(&before, &l, xcr0);
        let new = values(&src, &l, Xfeatures(0x7));
        for (c, v) in &after.components {
            let want = if c.index() < 3 {
                &new.components.iter().find(|(d, _)| d == c).unwrap().1
            } else {
                &old.components.iter().find(|(d, _)| d == c).unwrap().1
            };
            assert_eq!(v, want, "{c}");
        }
    }
}

#[test]
fn compacted_destination_carries_mxcsr_with_sse() {
    let l = layout(AMD_ZEN4);
    let src = filled(&l, Xfeatures(0xE7), Xfeatures(0x5), 0x7F80, 1);
    let mut dst = ImageBuf::init(l.compacted_size(Xfeatures(0xE7)).unwrap() as usize, Xfeatures(COMPACTED | 0xE7));
    dst[160..416].fill(0xAA);
    restore_into(&src.image(), &l, Xfeatures(0xE7), &mut dst, &l).unwrap();
    assert_eq!(dst.header().xstate_bv, Xfeatures(0x7));
    assert!(dst[160..416].iter().all(|&b| b == 0));
    assert_eq!(u32::from_le_bytes(dst[24..28].try_into().unwrap()), 0x7F80);
    // Without SSE in the destination's XCOMP_BV there is no way to carry it.
    let mut dst = ImageBuf::init(2432, Xfeatures(COMPACTED | 0xE5));
    let before = dst.clone();
    assert_eq!(
        restore_into(&src.image(), &l, Xfeatures(0xE7), &mut dst, &l),
        Err(ConvertError::MxcsrNeedsSse { mxcsr: 0x7F80 })
    );
    assert_eq!(dst, before);
}

#[test]
fn refusals_leave_the_destination_alone() {
    let l = layout(INTEL_SAPPHIRE_RAPIDS);
    // A compacted source with PT in use (XRSTORS image).
    let mut src = ImageBuf::init(l.compacted_size(Xfeatures(0x107)).unwrap() as usize, Xfeatures(COMPACTED | 0x107));
    src.set_xstate_bv(Xfeatures(0x104));
    let pt = src.image().component_range(&l, Component::PT).unwrap();
    src[pt].fill(0x5A);
    let rfbm = Xfeatures(0x107);
    let mut std_dst = filled(&l, Xfeatures(0x7), Xfeatures(0x7), 0x1F80, 4);
    let before = std_dst.clone();
    assert_eq!(
        restore_into(&src.image(), &l, rfbm, &mut std_dst, &l),
        Err(ConvertError::Supervisor { component: Component::PT })
    );
    assert_eq!(std_dst, before);
    let mut narrow = ImageBuf::init(1000, Xfeatures(COMPACTED | 0x7));
    let before = narrow.clone();
    assert_eq!(
        restore_into(&src.image(), &l, rfbm, &mut narrow, &l),
        Err(ConvertError::NotInMask { component: Component::PT, mask: Xfeatures(0x7) })
    );
    assert_eq!(narrow, before);
    let mut short = ImageBuf::init(600, Xfeatures(COMPACTED | 0x107));
    assert_eq!(
        restore_into(&src.image(), &l, rfbm, &mut short, &l),
        Err(ConvertError::OutOfBounds { component: Component::AVX, destination: true })
    );
    assert!(restore_into(&src.image(), &l, rfbm, &mut [0u8; 100], &l).is_err());
    // A source too short for a component in use (AVX at 576..832).
    let cut = &src[..700];
    let mut dst = ImageBuf::init(2000, Xfeatures(COMPACTED | 0x107));
    assert_eq!(
        restore_into(&Image::new(cut).unwrap(), &l, rfbm, &mut dst, &l),
        Err(ConvertError::OutOfBounds { component: Component::AVX, destination: false })
    );
    // Success: PT lands in a compacted destination that has it.
    let mut ok = ImageBuf::init(l.compacted_size(Xfeatures(0x60107)).unwrap() as usize, Xfeatures(COMPACTED | 0x60107));
    restore_into(&src.image(), &l, rfbm, &mut ok, &l).unwrap();
    assert_eq!(ok.header().xstate_bv, Xfeatures(0x104));
    assert!(ok.image().component(&l, Component::PT).unwrap().iter().all(|&b| b == 0x5A));
}
