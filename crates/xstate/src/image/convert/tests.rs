use alloc::vec::Vec;

use super::*;
use crate::fixtures::{AMD_ZEN2, AMD_ZEN4, INTEL_ICELAKE, INTEL_SKYLAKE_SP, layout};
use crate::image::state::State;

const BIT63: u64 = 1 << 63;

/// A standard image with every component of `bv` filled with a pattern.
fn filled(l: &Layout, xcr0: Xfeatures, bv: Xfeatures, mxcsr: u32) -> ImageBuf {
    let mut b = ImageBuf::init(l.standard_size(xcr0).unwrap() as usize, Xfeatures(0));
    for c in bv.iter() {
        let ranges: Vec<core::ops::Range<usize>> =
            if c.is_legacy() { c.legacy_ranges().to_vec() } else { alloc::vec![l.standard_range(c).unwrap()] };
        for r in ranges {
            for i in r {
                b[i] = (i as u8).wrapping_mul(7).wrapping_add(c.index());
            }
        }
    }
    b[24..28].copy_from_slice(&mxcsr.to_le_bytes());
    b[28..32].copy_from_slice(&0xFFFFu32.to_le_bytes());
    b.set_xstate_bv(bv);
    b
}

fn values(b: &[u8], l: &Layout, rfbm: Xfeatures) -> crate::image::state::Values {
    State::new(Image::new(b).unwrap(), l, rfbm).values().unwrap()
}

#[test]
fn standard_compacted_standard() {
    let l = layout(INTEL_SKYLAKE_SP);
    let xcr0 = Xfeatures(0x2FF);
    for bv in [0x0u64, 0x1, 0x3, 0x7, 0x2E7, 0x2FF, 0x18, 0x200] {
        let src = filled(&l, xcr0, Xfeatures(bv), 0x1F80);
        let c = convert(&src, &l, &l, xcr0, Target::Compacted { mask: xcr0 }).unwrap();
        assert_eq!(c.len(), 2568);
        assert_eq!(c.header().xcomp_bv, Xfeatures(BIT63 | 0x2FF));
        let back = convert(&c, &l, &l, xcr0, Target::Standard).unwrap();
        assert_eq!(back.len(), 2696);
        assert_eq!(values(&back, &l, xcr0), values(&src, &l, xcr0), "XSTATE_BV {bv:#x}");
        assert_eq!(values(&c, &l, xcr0), values(&src, &l, xcr0));
        assert_eq!(back.header().xstate_bv, Xfeatures(bv));
        // Minimal mask: just what is in use.
        let m = convert(&src, &l, &l, xcr0, Target::Compacted { mask: Xfeatures(bv) }).unwrap();
        assert_eq!(values(&m, &l, xcr0), values(&src, &l, xcr0));
    }
}

#[test]
fn mxcsr_rules() {
    let l = layout(AMD_ZEN4);
    let xcr0 = Xfeatures(0xE7);
    // Standard, SSE clear, MXCSR not init: the compacted image must carry SSE with zero XMM.
    let src = filled(&l, xcr0, Xfeatures(0x5), 0x7F80);
    let c = convert(&src, &l, &l, xcr0, Target::Compacted { mask: xcr0 }).unwrap();
    assert_eq!(c.header().xstate_bv, Xfeatures(0x7));
    assert_eq!(u32::from_le_bytes(c[24..28].try_into().unwrap()), 0x7F80);
    assert!(c[160..416].iter().all(|&b| b == 0));
    assert_eq!(values(&c, &l, xcr0), values(&src, &l, xcr0));
    assert_eq!(
        convert(&src, &l, &l, xcr0, Target::Compacted { mask: Xfeatures(0x5) }),
        Err(ConvertError::MxcsrNeedsSse { mxcsr: 0x7F80 })
    );
    // Compacted, SSE clear: MXCSR is 0x1F80 whatever the field says.
    let mut c = ImageBuf::init(832, Xfeatures(BIT63 | 0x7));
    c[24..28].copy_from_slice(&0xFFFF_FFFFu32.to_le_bytes());
    c.set_xstate_bv(Xfeatures(0x4));
    let s = convert(&c, &l, &l, xcr0, Target::Standard).unwrap();
    assert_eq!(u32::from_le_bytes(s[24..28].try_into().unwrap()), 0x1F80);
    assert_eq!(values(&s, &l, xcr0).mxcsr, Some(0x1F80));
}

#[test]
fn init_values_and_gaps() {
    let l = layout(INTEL_ICELAKE);
    let xcr0 = Xfeatures(0x2E7);
    // Garbage in clear components, the hole and 416..511 does not survive.
    let mut src = filled(&l, xcr0, Xfeatures(0x2E7), 0x1F80);
    src.set_xstate_bv(Xfeatures(0x4));
    src[900] = 0xAA; // hole 0x340..0x440
    src[470] = 0xBB;
    let out = convert(&src, &l, &l, xcr0, Target::Standard).unwrap();
    assert_eq!(&out[0..2], &0x037Fu16.to_le_bytes());
    assert!(out[2..24].iter().all(|&b| b == 0));
    assert!(out[32..576].iter().all(|&b| b == 0) || out[512..520] == 4u64.to_le_bytes());
    assert!(out[416..512].iter().all(|&b| b == 0));
    assert_eq!(out[900], 0);
    assert!(out[1088..2696].iter().all(|&b| b == 0));
    assert_eq!(&out[576..832], &src[576..832]);
}

#[test]
fn relayout_between_vendors() {
    let intel = layout(INTEL_ICELAKE);
    let amd = layout(AMD_ZEN4);
    let xcr0 = Xfeatures(0x2E7);
    let src = filled(&intel, xcr0, xcr0, 0x1F80);
    let a = convert(&src, &intel, &amd, xcr0, Target::Standard).unwrap();
    assert_eq!(a.len(), 2440);
    assert_eq!(&a[2432..2440], &src[2688..2696]);
    assert_eq!(&a[1408..2432], &src[1664..2688]);
    let back = convert(&a, &amd, &intel, xcr0, Target::Standard).unwrap();
    assert_eq!(values(&back, &intel, xcr0), values(&src, &intel, xcr0));
    let ac = convert(&src, &intel, &amd, xcr0, Target::Compacted { mask: xcr0 }).unwrap();
    assert_eq!(values(&ac, &amd, xcr0), values(&a, &amd, xcr0));
    // MPX in use cannot go to AMD; init MPX can.
    let sky = layout(INTEL_SKYLAKE_SP);
    let mpx = filled(&sky, Xfeatures(0x2FF), Xfeatures(0x1F), 0x1F80);
    assert_eq!(
        convert(&mpx, &sky, &amd, Xfeatures(0x2FF), Target::Standard),
        Err(ConvertError::Missing { component: Component::BNDREGS })
    );
    let no_mpx = filled(&sky, Xfeatures(0x2FF), Xfeatures(0x7), 0x1F80);
    let moved = convert(&no_mpx, &sky, &amd, Xfeatures(0x2FF), Target::Standard).unwrap();
    assert_eq!(moved.len(), 2440);
    // Zen 2's 64-byte bit 9 is not PKRU.
    let zen2 = layout(AMD_ZEN2);
    let pk = filled(&intel, xcr0, Xfeatures(0x203), 0x1F80);
    assert_eq!(
        convert(&pk, &intel, &zen2, xcr0, Target::Standard),
        Err(ConvertError::SizeDiffers { component: Component::PKRU, from: 8, to: 64 })
    );
}

#[test]
fn refusals() {
    let l = layout(AMD_ZEN4);
    let xcr0 = Xfeatures(0xE7);
    let src = filled(&l, xcr0, Xfeatures(0x27), 0x1F80);
    assert_eq!(
        convert(&src, &l, &l, xcr0, Target::Compacted { mask: Xfeatures(0x7) }),
        Err(ConvertError::NotInMask { component: Component::OPMASK, mask: Xfeatures(0x7) })
    );
    assert_eq!(
        convert(&src, &l, &l, xcr0, Target::Compacted { mask: Xfeatures(0x2E7) }),
        Err(ConvertError::MaskOutsideRfbm { bits: Xfeatures(0x200) })
    );
    let mut bad = src.clone();
    bad[520] = 1;
    assert!(matches!(convert(&bad, &l, &l, xcr0, Target::Standard), Err(ConvertError::Invalid(_))));
    assert!(matches!(convert(&src[..100], &l, &l, xcr0, Target::Standard), Err(ConvertError::Invalid(_))));
    // Supervisor state in use has no place in a standard image.
    let mut s = ImageBuf::init(l.compacted_size(Xfeatures(0x8E7)).unwrap() as usize, Xfeatures(BIT63 | 0x8E7));
    s.set_xstate_bv(Xfeatures(0x803));
    assert_eq!(
        convert(&s, &l, &l, Xfeatures(0x8E7), Target::Standard),
        Err(ConvertError::Supervisor { component: Component::CET_U })
    );
    let cc = convert(&s, &l, &l, Xfeatures(0x8E7), Target::Compacted { mask: Xfeatures(0x803) }).unwrap();
    assert_eq!(cc.header().xcomp_bv, Xfeatures(BIT63 | 0x803));
}

#[test]
fn init_components_of_another_size_are_carried_as_init() {
    // Zen 2's 64-byte bit 9 and Intel's 8-byte PKRU: fine while init, refused in use.
    let zen2 = layout(AMD_ZEN2);
    let intel = layout(INTEL_ICELAKE);
    let xcr0 = Xfeatures(0x207);
    let src = filled(&zen2, xcr0, Xfeatures(0x7), 0x1F80);
    let out = convert(&src, &zen2, &intel, xcr0, Target::Standard).unwrap();
    assert_eq!(out.len(), 2696);
    assert!(out[2688..2696].iter().all(|&b| b == 0));
    let used = filled(&zen2, xcr0, Xfeatures(0x207), 0x1F80);
    assert_eq!(
        convert(&used, &zen2, &intel, xcr0, Target::Standard),
        Err(ConvertError::SizeDiffers { component: Component::PKRU, from: 64, to: 8 })
    );
    assert!(matches!(convert(&src, &zen2, &intel, Xfeatures(0x205), Target::Standard), Err(ConvertError::BadXcr0(_))));
}

#[test]
fn convert_into_reuses_the_buffer_and_equals_convert() {
    use crate::fixtures;
    for (rows, mask) in [
        (fixtures::INTEL_SAPPHIRE_RAPIDS, Xfeatures(0x602E7)),
        (fixtures::AMD_ZEN4, Xfeatures(0x2E7)),
        (fixtures::AMD_FAM15H_LWP, Xfeatures(0x4000_0000_0000_0007)),
    ] {
        let l = fixtures::layout(rows);
        let std_len = l.standard_size(mask).unwrap() as usize;
        let mut img = alloc::vec![0u8; std_len];
        for (i, b) in img.iter_mut().enumerate() {
            *b = (i * 7 + 3) as u8;
        }
        img[416..576].fill(0);
        for h in l.holes(mask).unwrap() {
            img[h.start as usize..h.end as usize].fill(0);
        }
        img[0..2].copy_from_slice(&0x037Fu16.to_le_bytes());
        img[24..28].copy_from_slice(&0x1F80u32.to_le_bytes());
        img[512..520].copy_from_slice(&mask.bits().to_le_bytes());
        let mut out = alloc::vec![0xEEu8; std_len + 100];
        let targets: &[Target] = if l.features().compaction() {
            &[Target::Compacted { mask }, Target::Standard]
        } else {
            &[Target::Standard]
        };
        for &target in targets {
            let want = convert(&img, &l, &l, mask, target).unwrap();
            out.fill(0xEE);
            let n = convert_into(&img, &l, &l, mask, target, &mut out).unwrap();
            assert_eq!(n, want.len());
            assert_eq!(Some(n), output_len(&l, mask, target));
            assert!(out[..n] == want[..], "{target:?}: convert_into differs from convert");
            assert!(out[n..].iter().all(|&b| b == 0xEE), "{target:?}: bytes past the output were written");
            // A buffer one byte short is refused and left alone.
            let mut short = alloc::vec![0xEEu8; n - 1];
            assert_eq!(
                convert_into(&img, &l, &l, mask, target, &mut short),
                Err(ConvertError::OutputTooShort { len: n - 1, needed: n })
            );
            assert!(short.iter().all(|&b| b == 0xEE));
            // An unaligned part of a larger buffer (a kvm_xsave region, guest memory) works.
            let mut words = alloc::vec![0u8; n + 3];
            assert_eq!(convert_into(&img, &l, &l, mask, target, &mut words[3..]), Ok(n));
            assert!(words[3..] == want[..]);
            let back = convert(&want, &l, &l, mask, Target::Standard).unwrap();
            let first = back.iter().zip(&img).position(|(a, b)| a != b);
            assert_eq!(back.len(), img.len());
            assert_eq!(first, None, "round trip through {target:?} differs at this offset");
        }
        // A refused conversion leaves the buffer as it was.
        let before = out.to_vec();
        let mut bad = img.clone();
        bad[520] = 1;
        assert!(convert_into(&bad, &l, &l, mask, Target::Standard, &mut out).is_err());
        assert_eq!(out.to_vec(), before);
    }
}

#[test]
fn a_compacted_source_keeps_room_for_components_the_target_lacks() {
    // Skylake-SP -> Zen 4: MPX is laid out in the compacted source (XCOMP_BV = RFBM) but not in
    // use, and Zen 4 has no MPX. PKRU (in use) sits after BNDREGS and BNDCSR in the source.
    use crate::fixtures;
    let skx = fixtures::layout(fixtures::INTEL_SKYLAKE_SP);
    let zen4 = fixtures::layout(fixtures::AMD_ZEN4);
    let rfbm = Xfeatures(0x219); // x87, BNDREGS, BNDCSR, PKRU
    let mut std = alloc::vec![0u8; skx.standard_size(rfbm).unwrap() as usize];
    std[0..2].copy_from_slice(&0x037Fu16.to_le_bytes());
    std[24..28].copy_from_slice(&0x1F80u32.to_le_bytes());
    std[0xA80..0xA84].copy_from_slice(&0x5555_5554u32.to_le_bytes());
    std[512..520].copy_from_slice(&0x201u64.to_le_bytes());
    let cmp = convert(&std, &skx, &skx, rfbm, Target::Compacted { mask: rfbm }).unwrap();
    assert_eq!(
        crate::image::Image::new(&cmp).unwrap().component(&skx, Component::PKRU).unwrap()[..4],
        [0x54, 0x55, 0x55, 0x55]
    );
    for target in [Target::Standard, Target::Compacted { mask: Xfeatures(0x201) }] {
        let out = convert(&cmp, &skx, &zen4, rfbm, target).unwrap();
        let pkru = crate::image::Image::new(&out).unwrap().component(&zen4, Component::PKRU).unwrap();
        assert_eq!(pkru[..4], [0x54, 0x55, 0x55, 0x55], "{target:?}");
    }
}

#[test]
fn components_only_the_target_has_are_sized_and_init_there() {
    // AMD Zen 4 (no AMX) to the Intel AMX guest, restored there with XCR0 0x600e7: the output
    // is as long as XRSTOR with that RFBM reads, the tiles in init state; and back.
    let (zen4, amx) = (layout(AMD_ZEN4), layout(crate::fixtures::INTEL_AMX_GUEST));
    let rfbm = Xfeatures(0x600E7);
    let src = filled(&zen4, Xfeatures(0xE7), Xfeatures(0xE7), 0x1F80);
    let ctx = Context::new(rfbm);
    let std = convert(&src, &zen4, &amx, rfbm, Target::Standard).unwrap();
    assert_eq!(std.len(), 11008);
    validate_image(&Image::new(&std).unwrap(), &amx, Profile::Hardware, &ctx).unwrap();
    assert_eq!(std.header().xstate_bv, Xfeatures(0xE7));
    assert!(values(&std, &amx, Xfeatures(0xE7)) == values(&src, &zen4, Xfeatures(0xE7)));
    let cmp = convert(&src, &zen4, &amx, rfbm, Target::Compacted { mask: rfbm }).unwrap();
    assert_eq!((cmp.len(), cmp.header().xcomp_bv), (10688, Xfeatures(BIT63 | 0x600E7)));
    assert_eq!(cmp.header().xstate_bv, Xfeatures(0xE7));
    validate_image(&Image::new(&cmp).unwrap(), &amx, Profile::Hardware, &ctx).unwrap();
    let conv = Converter::new(&zen4, &amx, rfbm, Target::Compacted { mask: rfbm }).unwrap();
    let mut out = ImageBuf::init(conv.output_len(), Xfeatures(0));
    assert_eq!(conv.convert_into(&src, &mut out), Ok(10688));
    assert_eq!(out[..], cmp[..]);
    // Back to Zen 4 with the same RFBM: fine while the tiles are init, refused once in use.
    let back = convert(&cmp, &amx, &zen4, rfbm, Target::Standard).unwrap();
    assert_eq!(back[..], convert(&src, &zen4, &zen4, rfbm, Target::Standard).unwrap()[..]);
    // The target's part of RFBM keeps the XCR0 rules too: BNDCSR without BNDREGS is no XCR0
    // on Skylake-SP, though Zen 4 (no MPX) reads the same RFBM as 0x7.
    let skx = layout(INTEL_SKYLAKE_SP);
    let avx = filled(&zen4, Xfeatures(0x7), Xfeatures(0x7), 0x1F80);
    assert!(matches!(convert(&avx, &zen4, &skx, Xfeatures(0x17), Target::Standard), Err(ConvertError::BadXcr0(_))));
    assert!(matches!(Converter::new(&zen4, &skx, Xfeatures(0x17), Target::Standard), Err(ConvertError::BadXcr0(_))));
    let tiles = filled(&amx, rfbm, Xfeatures(0x400E7), 0x1F80);
    assert_eq!(
        convert(&tiles, &amx, &zen4, rfbm, Target::Standard),
        Err(ConvertError::Missing { component: Component::TILEDATA })
    );
}

#[test]
fn each_side_restores_with_its_own_rfbm() {
    // A Zen 4 guest running with XCR0 0x7 moves to Skylake-SP, which restores with 0x2e7:
    // the output is Skylake-SP's 2696-byte image with the AVX-512 and PKRU components init.
    let zen4 = layout(AMD_ZEN4);
    let skx = layout(INTEL_SKYLAKE_SP);
    let src = filled(&zen4, Xfeatures(0x7), Xfeatures(0x7), 0x1F80);
    let out = convert_between(&src, &zen4, Xfeatures(0x7), &skx, Xfeatures(0x2E7), Target::Standard).unwrap();
    assert_eq!(out.len(), 2696);
    assert_eq!(out.header().xstate_bv, Xfeatures(0x7));
    assert_eq!(values(&out, &skx, Xfeatures(0x7)), values(&src, &zen4, Xfeatures(0x7)));
    assert!(out[0x340..].iter().all(|&b| b == 0), "the components only the target enables are init");
    // Back with a smaller RFBM than the state in use: refused, naming the component.
    let used = filled(&skx, Xfeatures(0x2E7), Xfeatures(0x27), 0x1F80);
    let e = convert_between(&used, &skx, Xfeatures(0x2E7), &zen4, Xfeatures(0x7), Target::Standard).unwrap_err();
    assert_eq!(e, ConvertError::NotEnabled { component: Component::OPMASK, rfbm: Xfeatures(0x7) });
    // The same RFBM on both sides is convert().
    let a = convert_between(&used, &skx, Xfeatures(0x2E7), &zen4, Xfeatures(0x2E7), Target::Standard).unwrap();
    let b = convert(&used, &skx, &zen4, Xfeatures(0x2E7), Target::Standard).unwrap();
    assert_eq!(a[..], b[..]);
}

/// The standard form loads MXCSR whenever RFBM[1] or RFBM[2] is set: a target restoring
/// with neither cannot load a source's MXCSR other than 0x1F80, so the conversion is refused
/// (NotEnabled SSE), as it is with XSTATE_BV[1] set or into a compacted image (it returned
/// an image that drops the MXCSR).
#[test]
fn a_live_mxcsr_the_target_cannot_load_is_refused() {
    let l = layout(AMD_ZEN4);
    let x87_only = Xfeatures(0x1);
    for (mxcsr, ok) in [(0u32, false), (0x1F80, true)] {
        let src = filled(&l, Xfeatures(0x3), x87_only, mxcsr);
        let r = convert_between(&src, &l, Xfeatures(0x3), &l, x87_only, Target::Standard);
        if ok {
            assert!(r.is_ok(), "{r:?}");
        } else {
            assert_eq!(r.unwrap_err(), ConvertError::NotEnabled { component: Component::SSE, rfbm: x87_only });
        }
    }
}

/// RFBM bit 63 is reserved (XCR0 and IA32_XSS never set it): refused, not ignored.
#[test]
fn rfbm_bit_63_is_refused() {
    let l = layout(AMD_ZEN4);
    let src = filled(&l, Xfeatures(0xE7), Xfeatures(0x3), 0x1F80);
    let r = convert(&src, &l, &l, Xfeatures(0xE7 | BIT63), Target::Standard);
    assert!(matches!(r, Err(ConvertError::BadXcr0(_))), "{r:?}");
}
