//! Conversions held against the processor: random states are loaded with XRSTOR and saved with
//! XSAVE and XSAVEC under varied RFBM; each saved image is converted (standard, compacted with
//! XCOMP_BV = XCR0 and with other masks, compacted to compacted, re-laid out to another CPU's
//! layout and back), and XRSTOR + XSAVE of every conversion must give the same state as XRSTOR
//! + XSAVE of the saved image itself (see `common::same_state` for what "same" means).

#[macro_use]
mod common;

use xstate::fixtures::{AMD_ZEN4, INTEL_ICELAKE, layout as fixture};
use xstate::image::validate::Context;
use xstate::image::{Profile, Target, convert, validate};
use xstate::{Component, Layout, Xfeatures};
use xstate_hw::SaveInstr;
use xstate_hw::selfcheck::Rng;
use xstate_hw::stategen::StateGen;

use common::{footprint_len, host, mxcsr_mask, same_state, shuffled_layout};

/// Another vendor's real layout that holds some of XCR0's components above SSE at the same
/// size but at other offsets (Intel Ice Lake on AMD hosts, AMD Zen 4 on Intel hosts). States
/// whose components in use it holds go there and back; on an AMX host those are the states
/// with the tiles in init state, since no corpus CPU has AMX at other offsets.
fn other_vendor(l: &Layout, xcr0: Xfeatures) -> Option<(&'static str, Layout)> {
    [("Intel Ice Lake", fixture(INTEL_ICELAKE)), ("AMD Zen 4", fixture(AMD_ZEN4))].into_iter().find(|(_, f)| {
        let common = xcr0 & f.user_supported();
        common.iter().all(|c| c.is_legacy() || f.geometry(c).map(|g| g.size) == l.geometry(c).map(|g| g.size))
            && common
                .iter()
                .any(|c| !c.is_legacy() && f.geometry(c).map(|g| g.offset) != l.geometry(c).map(|g| g.offset))
    })
}

#[test]
fn conversions_restore_the_same_state() {
    let h = host();
    let l = h.layout().clone();
    let xcr0 = h.xcr0();
    let mask = mxcsr_mask(&h);
    let ctx = Context::new(xcr0).with_mxcsr_mask_field(mask);
    let has_xsavec = h.has(SaveInstr::Xsavec);
    if !has_xsavec {
        skip!("no XSAVEC (CPUID 0xD.1 EAX[1] = 0): only XSAVE images and standard conversions are checked");
    }
    if !xcr0.contains(Component::TILEDATA) {
        skip!("AMX: XCR0 {xcr0} has no TILECFG/TILEDATA, so tiles are not part of the states");
    }
    let shuffled = shuffled_layout(&l, xcr0);
    let vendor = other_vendor(&l, xcr0);
    match &vendor {
        Some((name, f)) => println!(
            "re-layout through {name} (holding {} of XCR0 {xcr0}) and through a shuffled synthetic layout",
            xcr0 & f.user_supported()
        ),
        None => println!("re-layout through a shuffled synthetic layout only (no corpus CPU holds XCR0 {xcr0})"),
    }
    let foreign: Vec<&Layout> = std::iter::once(&shuffled).chain(vendor.as_ref().map(|(_, f)| f)).collect();
    let mut vendor_moves = 0usize;
    let g = StateGen::new(&l, xcr0, mask);
    let mut rng = Rng::new(common::seed(0x1234_5678));
    let n_cases = common::cases(600);
    let reference = |img: &[u8]| -> Vec<u8> {
        h.xrstor_then_save(img, xcr0, SaveInstr::Xsave, xcr0, 0)
            .unwrap_or_else(|f| panic!("XRSTOR faulted: {f}"))
            .to_vec()
    };
    let (mut compared, mut mxcsr_fixes, mut by_instr) = (0usize, 0usize, [0usize; 2]);
    for case in 0..n_cases {
        let state = g.standard(&mut rng);
        let instr = if has_xsavec && case % 2 == 1 { SaveInstr::Xsavec } else { SaveInstr::Xsave };
        let save_rfbm = if rng.next_u64().is_multiple_of(2) { xcr0 } else { g.random_mask(&mut rng) | Xfeatures::X87 };
        let saved =
            h.xrstor_then_save(&state, xcr0, instr, save_rfbm, 0).unwrap_or_else(|f| panic!("case {case}: {f}"));
        let mut img = saved[..footprint_len(&saved, &l, xcr0)].to_vec();
        by_instr[usize::from(instr == SaveInstr::Xsavec)] += 1;
        // Bytes no restore reads for this image: the software area, clear components, and in the
        // compacted form the MXCSR field when SSE is clear (its reserved bits are then ignored).
        rng.fill(&mut img[464..512]);
        let v = xstate::image::Image::new(&img).unwrap();
        let bv = v.xstate_bv();
        let compacted = v.form() == xstate::image::Form::Compacted;
        let clear: Vec<_> =
            (xcr0 - bv).iter().filter(|c| !c.is_legacy()).filter_map(|c| v.component_range(&l, c)).collect();
        for r in clear {
            rng.fill(&mut img[r]);
        }
        if compacted && !bv.contains(Component::SSE) {
            rng.fill(&mut img[24..28]);
            rng.fill(&mut img[160..416]);
        }
        if compacted && !bv.contains(Component::X87) {
            rng.fill(&mut img[0..24]);
        }
        validate(&img, &l, Profile::Hardware, &ctx).unwrap_or_else(|e| panic!("case {case}: saved image refused: {e}"));
        let want = reference(&img);
        let in_use = bv & xcr0;
        let extra = Xfeatures(rng.next_u64()) & xcr0;
        let mut outputs: Vec<(String, Vec<u8>)> = Vec::new();
        let mut conv = |name: String, r: Result<xstate::image::ImageBuf, xstate::image::ConvertError>| match r {
            Ok(b) => outputs.push((name, b.to_vec())),
            Err(e) => panic!("case {case}: {name}: {e}"),
        };
        conv("standard".into(), convert(&img, &l, &l, xcr0, Target::Standard));
        if has_xsavec {
            let full = convert(&img, &l, &l, xcr0, Target::Compacted { mask: xcr0 });
            if let Ok(b) = &full {
                let c2 = convert(b, &l, &l, xcr0, Target::Compacted { mask: in_use | Xfeatures::LEGACY | extra });
                conv("compacted(XCR0) -> compacted(other mask)".into(), c2);
                if Xfeatures(u64::from_le_bytes(b[512..520].try_into().unwrap())) != in_use {
                    mxcsr_fixes += 1;
                }
            }
            conv("compacted(XCR0)".into(), full);
            conv(
                "compacted(in use | SSE)".into(),
                convert(&img, &l, &l, xcr0, Target::Compacted { mask: in_use | Xfeatures(0x2) }),
            );
        }
        for (k, f) in foreign.iter().enumerate() {
            // A target missing a component in use refuses the conversion (covered by the
            // library's tests); here only the states it can hold go there and back.
            if !(in_use - Xfeatures::LEGACY).is_subset_of(f.user_supported()) {
                continue;
            }
            vendor_moves += usize::from(k > 0);
            let there = if has_xsavec && case % 3 == 0 {
                Target::Compacted { mask: xcr0 & f.supported() }
            } else {
                Target::Standard
            };
            let back = if has_xsavec && case % 4 == 1 { Target::Compacted { mask: xcr0 } } else { Target::Standard };
            let moved = convert(&img, &l, f, xcr0, there).and_then(|x| convert(&x, f, &l, xcr0, back));
            conv(format!("re-layout {there:?} and back {back:?}"), moved);
        }
        for (name, out) in &outputs {
            validate(out, &l, Profile::Hardware, &ctx)
                .unwrap_or_else(|e| panic!("case {case}: {name}: converted image refused: {e}"));
            let got = reference(out);
            if let Err(d) = same_state(&want, &got, &l, xcr0) {
                panic!("case {case} ({} saved with RFBM {save_rfbm}), {name}: state differs: {d}", instr.name());
            }
            compared += 1;
        }
    }
    println!(
        "{n_cases} states ({} XSAVE, {} XSAVEC images), {compared} conversions restored the same state; \
         {mxcsr_fixes} needed the MXCSR fix (XSTATE_BV[1] set in compacted form)",
        by_instr[0], by_instr[1]
    );
    if let Some((name, f)) = &vendor {
        println!(
            "{vendor_moves} states went through {name}'s layout and back (those whose components in use it holds)"
        );
        let holds_all = (xcr0 - f.user_supported()).is_empty();
        assert!(if holds_all { vendor_moves == n_cases } else { vendor_moves > 0 });
    }
    assert!(n_cases >= 500 && compared >= n_cases);
}

/// The MXCSR corner conversions rely on (SDM Vol. 1 §13.8; docs/HARDWARE.md): with zero XMM
/// registers and MXCSR ≠ 0x1F80, a compacted image must carry XSTATE_BV\[1\] for MXCSR to
/// survive. Asks what XSAVE and XSAVEC write here, and checks the library's compacted
/// conversion of the XSAVE image restores MXCSR where a verbatim XSTATE_BV copy would not.
#[test]
fn mxcsr_with_zero_xmm() {
    let h = host();
    let l = h.layout().clone();
    let xcr0 = h.xcr0();
    if !h.has(SaveInstr::Xsavec) {
        skip!("no XSAVEC");
        return;
    }
    let n = l.standard_size(xcr0).unwrap() as usize;
    let mut img = vec![0u8; n];
    img[0..2].copy_from_slice(&0x037Fu16.to_le_bytes());
    img[24..28].copy_from_slice(&0x7F80u32.to_le_bytes());
    // XSTATE_BV = 0: everything init except MXCSR, which the standard form loads anyway.
    let xsave = h.xrstor_then_save(&img, xcr0, SaveInstr::Xsave, xcr0, 0).unwrap();
    let xsavec = h.xrstor_then_save(&img, xcr0, SaveInstr::Xsavec, xcr0, 0).unwrap();
    let bv = |b: &[u8]| u64::from_le_bytes(b[512..520].try_into().unwrap());
    let mx = |b: &[u8]| u32::from_le_bytes(b[24..28].try_into().unwrap());
    println!(
        "after XRSTOR (XSTATE_BV 0, MXCSR 0x7f80): XSAVE wrote XSTATE_BV {:#x} MXCSR {:#x}; XSAVEC wrote XSTATE_BV {:#x} MXCSR {:#x}",
        bv(&xsave),
        mx(&xsave),
        bv(&xsavec),
        mx(&xsavec)
    );
    assert_eq!(mx(&xsave), 0x7F80);
    let want = h.xrstor_then_save(&xsave[..n], xcr0, SaveInstr::Xsave, xcr0, 0).unwrap();
    // The library's compacted form restores MXCSR ...
    let c = convert(&xsave[..n], &l, &l, xcr0, Target::Compacted { mask: xcr0 }).unwrap();
    assert!(bv(&c) & 2 != 0, "the conversion sets XSTATE_BV[1]");
    let got = h.xrstor_then_save(&c, xcr0, SaveInstr::Xsave, xcr0, 0).unwrap();
    same_state(&want, &got, &l, xcr0).unwrap();
    // ... where a verbatim copy of XSTATE_BV would lose it (the CPU loads 0x1F80).
    let mut naive = c.to_vec();
    naive[512..520].copy_from_slice(&(bv(&c) & !2).to_le_bytes());
    let lost = h.xrstor_then_save(&naive, xcr0, SaveInstr::Xsave, xcr0, 0).unwrap();
    assert_eq!(mx(&lost), 0x1F80, "compacted XRSTOR with XSTATE_BV[1] = 0 loads MXCSR 0x1F80");
    // XSAVEC's own image restores MXCSR (it marks SSE itself, or the CPU would lose state).
    let cl = footprint_len(&xsavec, &l, xcr0);
    let from_c = h.xrstor_then_save(&xsavec[..cl], xcr0, SaveInstr::Xsave, xcr0, 0).unwrap();
    assert_eq!(mx(&from_c), 0x7F80);
}
