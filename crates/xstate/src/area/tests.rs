//! Save areas on fixture hosts.

use alloc::string::ToString;
use alloc::sync::Arc;
use alloc::vec::Vec;

use super::*;
use crate::component::Component;
use crate::fixtures::{self, AMD_ZEN4, INTEL_AMX_GUEST, INTEL_SAPPHIRE_RAPIDS, INTEL_SKYLAKE_SP};
use crate::image::state::{State, Values};
use crate::policy::Selection;

fn policy(rows: fixtures::Rows, list: &str) -> Arc<Policy> {
    Arc::new(Policy::derive(&fixtures::layout(rows), &Selection::parse(list).unwrap()).unwrap())
}

fn masks(rows: fixtures::Rows, xcr0: u64, xss: u64) -> Arc<Policy> {
    Arc::new(Policy::derive(&fixtures::layout(rows), &Selection::masks(Xfeatures(xcr0), Xfeatures(xss))).unwrap())
}

/// A standard image for `layout` with every component of `bv` filled with a pattern.
fn image(layout: &Layout, xcr0: Xfeatures, bv: Xfeatures, seed: u8) -> ImageBuf {
    let mut b = ImageBuf::init(layout.standard_size(xcr0).unwrap() as usize, Xfeatures::EMPTY);
    for c in bv.iter() {
        let ranges: Vec<core::ops::Range<usize>> =
            if c.is_legacy() { c.legacy_ranges().to_vec() } else { alloc::vec![layout.standard_range(c).unwrap()] };
        for r in ranges {
            for i in r {
                b[i] = (i as u8).wrapping_mul(13).wrapping_add(seed) | 1;
            }
        }
    }
    b[24..28].copy_from_slice(&0x1F80u32.to_le_bytes());
    b.set_xstate_bv(bv);
    b
}

fn values(img: &[u8], layout: &Layout, rfbm: Xfeatures) -> Values {
    State::new(Image::new(img).unwrap(), layout, rfbm).values().unwrap()
}

#[test]
fn sized_for_the_policy_not_the_host() {
    // An AVX-512 guest on the AMX guest host: 2688 standard, 2432 compacted; the host maximum is
    // 11008.
    let p = policy(INTEL_AMX_GUEST, "avx,avx512");
    for (form, size) in [(Form::Standard, 2688), (Form::Compacted, 2432)] {
        let a = SaveArea::new(p.clone(), form, 0xFFFF).unwrap();
        assert_eq!(a.len(), size);
        assert!(a.allocated() >= size && a.allocated() < size + 64, "{}", a.allocated());
        assert!((a.bytes().as_ptr() as usize).is_multiple_of(64));
    }
    assert_eq!(SaveArea::new(policy(INTEL_AMX_GUEST, "all"), Form::Standard, 0xFFFF).unwrap().len(), 11008);
    assert_eq!(SaveArea::new(policy(INTEL_AMX_GUEST, "all"), Form::Compacted, 0xFFFF).unwrap().len(), 10688);
    // Supervisor state lives only in compacted areas.
    let cet = policy(AMD_ZEN4, "avx,avx512,cet");
    assert_eq!(
        SaveArea::new(cet.clone(), Form::Standard, 0xFFFF).unwrap_err(),
        AreaError::SupervisorNeedsCompacted { xss_max: Xfeatures(0x1800) }
    );
    assert_eq!(SaveArea::new(cet, Form::Compacted, 0xFFFF).unwrap().len(), 2432 + 16 + 24);
    // No compaction on the host: no compacted area.
    let lwp = policy(fixtures::AMD_FAM15H_LWP, "all");
    assert_eq!(SaveArea::new(lwp.clone(), Form::Compacted, 0xFFFF).unwrap_err(), AreaError::NoCompaction);
    assert_eq!(SaveArea::new(lwp, Form::Standard, 0xFFFF).unwrap().len(), 960);
}

#[test]
fn starts_in_the_architectural_init_state() {
    let p = policy(INTEL_SAPPHIRE_RAPIDS, "all");
    let a = SaveArea::new(p.clone(), Form::Compacted, 0xFFFF).unwrap();
    let b = a.bytes();
    assert_eq!(u16::from_le_bytes([b[0], b[1]]), 0x037F);
    assert_eq!(u32::from_le_bytes(b[24..28].try_into().unwrap()), 0x1F80);
    assert!(b[2..24].iter().all(|&x| x == 0) && b[28..512].iter().all(|&x| x == 0));
    assert_eq!(a.xstate_bv(), Xfeatures::EMPTY);
    assert_eq!(a.image().xcomp_bv(), Xfeatures(COMPACTED | 0x602E7 | 0xDD00));
    assert!(b[576..].iter().all(|&x| x == 0));
    assert_eq!(
        (a.xcr0(), a.xss(), a.xcr0_accum(), a.xss_accum()),
        (Xfeatures(1), Xfeatures(0), Xfeatures(1), Xfeatures(0))
    );
    // The area is an image XRSTORS with the policy's maximum would load.
    let mut ctx = Context::new(p.xcr0_max());
    ctx.xss = p.xss_max();
    image::validate(b, p.host_layout(), Profile::Hardware, &ctx).unwrap();
}

#[test]
fn xcr0_and_xss_follow_the_policy_and_accumulate() {
    let mut a = SaveArea::new(policy(AMD_ZEN4, "avx,avx512,cet"), Form::Compacted, 0xFFFF).unwrap();
    a.set_xcr0(Xfeatures(0xE7)).unwrap();
    a.set_xcr0(Xfeatures(0x7)).unwrap();
    assert_eq!((a.xcr0(), a.xcr0_accum()), (Xfeatures(0x7), Xfeatures(0xE7)));
    let before = a.clone();
    assert!(matches!(a.set_xcr0(Xfeatures(0x2E7)), Err(AreaError::Set(SetError::Mask(_)))), "PKRU is not exposed");
    assert!(a.set_xcr0(Xfeatures(0x67)).is_err());
    assert!(a.set_xss(Xfeatures(0x4)).is_err());
    assert_eq!(a, before);
    a.set_xss(Xfeatures(0x800)).unwrap();
    a.set_xss(Xfeatures(0)).unwrap();
    assert_eq!((a.xss(), a.xss_accum()), (Xfeatures(0), Xfeatures(0x800)));
    let mut b = SaveArea::new(policy(AMD_ZEN4, "avx,-xsaves"), Form::Compacted, 0xFFFF).unwrap();
    assert!(matches!(b.set_xss(Xfeatures(0)), Err(AreaError::Set(SetError::XssWithoutXsaves { .. }))));
}

#[test]
fn load_and_store_both_forms() {
    let p = policy(INTEL_SKYLAKE_SP, "avx,avx512,pku,mpx");
    let l = p.host_layout().clone();
    let xcr0 = Xfeatures(0x2FF);
    for form in [Form::Standard, Form::Compacted] {
        let mut a = SaveArea::new(p.clone(), form, 0xFFFF).unwrap();
        a.set_xcr0(xcr0).unwrap();
        let src = image(&l, xcr0, Xfeatures(0x2A7), 5);
        a.load(&src).unwrap();
        assert_eq!(a.xstate_bv(), Xfeatures(0x2A7));
        for out_form in [Form::Standard, Form::Compacted] {
            let out = a.store(out_form).unwrap();
            assert_eq!(out.image().form(), out_form);
            assert_eq!(out.len(), if out_form == Form::Standard { 2696 } else { 2696 - 128 });
            assert_eq!(values(&out, &l, xcr0), values(&src, &l, xcr0), "{form} -> {out_form}");
            // What the area hands out, it takes back.
            let mut b = SaveArea::new(p.clone(), form, 0xFFFF).unwrap();
            b.set_xcr0(xcr0).unwrap();
            b.load(&out).unwrap();
            assert_eq!(b.bytes(), a.bytes());
        }
        // XRSTOR semantics: RFBM = XCR0 = 0x7 replaces x87/SSE/AVX and keeps AVX-512 and PKRU.
        a.set_xcr0(Xfeatures(0x7)).unwrap();
        let small = image(&l, Xfeatures(0x7), Xfeatures(0x4), 99);
        a.load(&small).unwrap();
        assert_eq!(a.xstate_bv(), Xfeatures(0x2A4));
        let out = a.store_with(Form::Standard, xcr0).unwrap();
        let v = values(&out, &l, xcr0);
        let (s, o) = (values(&small, &l, Xfeatures(0x7)), values(&src, &l, xcr0));
        for (c, bytes) in &v.components {
            let from = if c.index() < 3 { &s } else { &o };
            assert_eq!(bytes, &from.components.iter().find(|(d, _)| d == c).unwrap().1, "{c}");
        }
        // Refusals change nothing.
        let before = a.clone();
        let beyond = image(&l, xcr0, Xfeatures(0x2E7), 1);
        assert!(matches!(a.load(&beyond), Err(AreaError::Invalid(_))), "XSTATE_BV beyond XCR0");
        let mut bad_mxcsr = small.clone();
        bad_mxcsr[24..28].copy_from_slice(&0x1_0000u32.to_le_bytes());
        assert!(matches!(a.load(&bad_mxcsr), Err(AreaError::Invalid(_))));
        assert!(matches!(a.load(&small[..600]), Err(AreaError::Invalid(_))));
        assert!(matches!(a.load(&[0u8; 10]), Err(AreaError::Invalid(_))));
        assert_eq!(
            a.load_with(&small, Xfeatures(0x60007)),
            Err(AreaError::RfbmOutsideAccum { rfbm: Xfeatures(0x60007), outside: Xfeatures(0x60000) })
        );
        assert!(a.store_with(Form::Standard, Xfeatures(0x100)).is_err());
        assert_eq!(a, before);
    }
}

#[test]
fn set_policy_grows_shrinks_keeps_state_and_refuses_busy() {
    let host = INTEL_SAPPHIRE_RAPIDS;
    let small = masks(host, 0xE7, 0);
    let big = masks(host, 0x602E7, 0);
    let l = big.host_layout().clone();
    for form in [Form::Standard, Form::Compacted] {
        let mut a = SaveArea::new(small.clone(), form, 0xFFFF).unwrap();
        a.set_xcr0(Xfeatures(0xE7)).unwrap();
        let src = image(&l, Xfeatures(0xE7), Xfeatures(0xE7), 3);
        a.load(&src).unwrap();
        let want = values(a.store(Form::Standard).unwrap().as_ref(), &l, Xfeatures(0xE7));
        let old = a.bytes().to_vec();
        a.set_policy(big.clone()).unwrap();
        assert_eq!(a.len(), SaveArea::size_for(&big, form));
        assert_eq!(values(a.store(Form::Standard).unwrap().as_ref(), &l, Xfeatures(0xE7)), want);
        if form == Form::Standard {
            // Kept byte for byte up to the old extent; zero from there to the new size.
            assert_eq!(&a.bytes()[..2688], &old[..2688]);
            assert!(a.bytes()[2688..].iter().all(|&b| b == 0));
        } else {
            assert_eq!(a.image().xcomp_bv(), Xfeatures(COMPACTED | 0x602E7));
        }
        // Shrinking back is fine while only AVX-512 was ever enabled.
        a.set_policy(small.clone()).unwrap();
        assert_eq!(a.len(), SaveArea::size_for(&small, form));
        assert_eq!(values(a.store(Form::Standard).unwrap().as_ref(), &l, Xfeatures(0xE7)), want);
        // Once AMX was enabled, shrinking is refused and nothing changes.
        a.set_policy(big.clone()).unwrap();
        a.set_xcr0(Xfeatures(0x602E7)).unwrap();
        a.set_xcr0(Xfeatures(0xE7)).unwrap();
        let before = a.clone();
        assert_eq!(
            a.set_policy(small.clone()),
            Err(AreaError::Busy {
                register: MaskRegister::Xcr0,
                accum: Xfeatures(0x602E7),
                outside: Xfeatures(0x60200)
            })
        );
        assert_eq!(a, before);
    }
}

#[test]
fn set_policy_across_hosts_only_where_the_state_sits_still() {
    // AVX sits at 576 on Intel and AMD; AVX-512 does not.
    let intel = masks(INTEL_SKYLAKE_SP, 0xE7, 0);
    let amd = masks(AMD_ZEN4, 0xE7, 0);
    let mut a = SaveArea::new(intel.clone(), Form::Standard, 0xFFFF).unwrap();
    a.set_xcr0(Xfeatures(0x7)).unwrap();
    a.set_policy(amd.clone()).unwrap();
    assert_eq!(a.len(), 2432);
    a.set_xcr0(Xfeatures(0xE7)).unwrap();
    let before = a.clone();
    assert_eq!(a.set_policy(intel), Err(AreaError::Geometry { component: Component::OPMASK }));
    assert_eq!(a, before);
    // A standard area cannot move to a policy with supervisor state.
    let cet = masks(AMD_ZEN4, 0xE7, 0x1800);
    assert_eq!(a.set_policy(cet), Err(AreaError::SupervisorNeedsCompacted { xss_max: Xfeatures(0x1800) }));
    assert_eq!(a, before);
}

#[test]
fn supervisor_state_in_a_compacted_area() {
    let p = policy(AMD_ZEN4, "avx,avx512,cet");
    let l = p.host_layout().clone();
    let mut a = SaveArea::new(p.clone(), Form::Compacted, 0xFFFF).unwrap();
    a.set_xcr0(Xfeatures(0xE7)).unwrap();
    a.set_xss(Xfeatures(0x1800)).unwrap();
    let rfbm = Xfeatures(0x18E7);
    let mut src = ImageBuf::init(l.compacted_size(rfbm).unwrap() as usize, Xfeatures(COMPACTED) | rfbm);
    src.set_xstate_bv(Xfeatures(0x1804));
    for c in [Component::AVX, Component::CET_U, Component::CET_S] {
        let r = src.image().component_range(&l, c).unwrap();
        src[r].fill(c.index() + 0x10);
    }
    a.load(&src).unwrap();
    assert_eq!(a.xstate_bv(), Xfeatures(0x1804));
    let out = a.store(Form::Compacted).unwrap();
    assert_eq!(values(&out, &l, rfbm), values(&src, &l, rfbm));
    // A standard store is XSAVE: no supervisor state in it.
    let std = a.store(Form::Standard).unwrap();
    assert_eq!(std.header().xstate_bv, Xfeatures(0x4));
    // Shrinking to a policy without CET is refused: the guest enabled it.
    let before = a.clone();
    let e = a.set_policy(policy(AMD_ZEN4, "avx,avx512")).unwrap_err();
    assert_eq!(
        e,
        AreaError::Busy { register: MaskRegister::Xss, accum: Xfeatures(0x1800), outside: Xfeatures(0x1800) }
    );
    assert!(e.to_string().contains("cet_u|cet_s"), "{e}");
    assert_eq!(a, before);
}

/// Issue 12 item 1: with a policy that hides XSAVEC, the guest's layout has no align64 flags,
/// so compacted offsets computed from it miss the area's bytes (TILEDATA sits 64-byte aligned
/// in the host's compacted image). The area hands out component views in the layout its bytes
/// follow: the host's.
#[test]
fn component_views_follow_the_host_layout() {
    let p = policy(INTEL_SAPPHIRE_RAPIDS, "avx,avx512,pku,amx,xsaveopt,xgetbv1");
    assert!(!p.compaction());
    let host = p.host_layout().clone();
    let xcr0 = Xfeatures(0x602E7);
    let mut area = SaveArea::new(p.clone(), Form::Compacted, 0xFFFF).unwrap();
    area.set_xcr0(xcr0).unwrap();
    let img = image(&host, xcr0, xcr0, 7);
    area.load(&img).unwrap();
    assert_eq!(area.layout(), &host);
    for c in xcr0.iter().filter(|c| !c.is_legacy()) {
        let want = img.image().component(&host, c).unwrap();
        assert_eq!(area.component(c), Some(want), "{c}");
    }
    // The trap the views avoid: the guest layout puts TILEDATA elsewhere in this area.
    let guest_view = area.image().component(p.layout(), Component::TILEDATA);
    assert_ne!(guest_view, area.component(Component::TILEDATA));
    assert_eq!(area.component(Component::PT), None);
}

/// Issue 12 item 1: the area's bytes are an XSAVE operand: what a save instruction writes into
/// `bytes_mut()` (here an XSAVE-format image copied in) is the area's state afterwards.
#[test]
fn bytes_mut_is_the_save_operand() {
    let p = policy(AMD_ZEN4, "avx,avx512,pku");
    let l = p.host_layout().clone();
    let xcr0 = Xfeatures(0x2E7);
    let mut area = SaveArea::new(p, Form::Standard, 0xFFFF).unwrap();
    area.set_xcr0(xcr0).unwrap();
    let img = image(&l, xcr0, Xfeatures(0x27), 3);
    assert!((area.bytes_mut().as_ptr() as usize).is_multiple_of(64));
    area.bytes_mut()[..img.len()].copy_from_slice(&img);
    assert_eq!(area.xstate_bv(), Xfeatures(0x27));
    assert_eq!(values(&area.store(Form::Standard).unwrap(), &l, xcr0), values(&img, &l, xcr0));
}

/// Issue 12 item 1: a Zen 4 image with MXCSR bit 17 (MM, in Zen 4's mask 0x2FFFF) is valid
/// there; an area must not refuse it behind the caller's back with a default mask.
#[test]
fn zen4_mxcsr_is_loaded_with_the_hosts_mask() {
    let p = policy(AMD_ZEN4, "avx,avx512,pku");
    let l = p.host_layout().clone();
    let xcr0 = Xfeatures(0x2E7);
    let mut img = image(&l, xcr0, Xfeatures(0x7), 5);
    img[24..28].copy_from_slice(&0x2_1F80u32.to_le_bytes());
    let mut area = SaveArea::new(p.clone(), Form::Standard, 0x2_FFFF).unwrap();
    area.set_xcr0(xcr0).unwrap();
    area.load(&img).unwrap();
    assert_eq!(area.image().mxcsr(), 0x2_1F80);
    assert_eq!(area.mxcsr_mask(), 0x2_FFFF);
    // An Intel host's mask refuses it, naming the mask it was checked against.
    let mut intel = SaveArea::new(p, Form::Standard, 0xFFFF).unwrap();
    intel.set_xcr0(xcr0).unwrap();
    let e = intel.load(&img).unwrap_err();
    assert!(e.to_string().contains("outside mask 0xffff"), "{e}");
    // A field of 0 means 0xFFBF (SDM Vol. 1 §11.6.6).
    assert_eq!(SaveArea::new(policy(AMD_ZEN4, "avx"), Form::Standard, 0).unwrap().mxcsr_mask(), 0xFFBF);
}
