//! The `hardware` validation profile against XRSTOR's own verdict (#GP caught as SIGSEGV) on
//! mutated images: XSTATE_BV and XCOMP_BV bits inside and outside XCR0, bit 63, reserved header
//! bytes, MXCSR reserved bits, XSTATE_BV not within XCOMP_BV, garbage in bytes 464..511.

#[macro_use]
mod common;

use std::collections::BTreeMap;

use xstate::Xfeatures;
use xstate::image::validate::Context;
use xstate::image::{Profile, validate};
use xstate_hw::SaveInstr;
use xstate_hw::selfcheck::Rng;
use xstate_hw::stategen::StateGen;

use common::{Tally, host, init_image, mutate, mxcsr_mask};

#[test]
fn hardware_profile_agrees_with_xrstor() {
    let h = host();
    let l = h.layout().clone();
    let xcr0 = h.xcr0();
    let mask = mxcsr_mask(&h);
    println!("XCR0 {xcr0}, MXCSR mask {mask:#x} (from an XSAVE'd MXCSR_MASK field)");
    let ctx = Context::new(xcr0).with_mxcsr_mask_field(mask);
    let has_xsavec = h.has(SaveInstr::Xsavec);
    if !has_xsavec {
        skip!("no XSAVEC: bases are XSAVE images only (mutations still reach the compacted form)");
    }
    let g = StateGen::new(&l, xcr0, mask);
    let mut rng = Rng::new(common::seed(0xC0FFEE));
    let n_cases = common::cases(1500);
    let n = h.area_size();
    let mut tally = Tally::default();
    let mut kinds: BTreeMap<&'static str, usize> = BTreeMap::new();
    for case in 0..n_cases {
        let state = g.standard(&mut rng);
        let instr = if has_xsavec && case % 2 == 1 { SaveInstr::Xsavec } else { SaveInstr::Xsave };
        let save_rfbm = if rng.next_u64().is_multiple_of(2) { xcr0 } else { g.random_mask(&mut rng) | Xfeatures::X87 };
        let base = h.xrstor_then_save(&state, xcr0, instr, save_rfbm, 0).unwrap();
        // The CPU sees the image followed by zeros up to the area size; so does the library.
        let mut img = base[..n].to_vec();
        let mut what = Vec::new();
        for _ in 0..1 + rng.next_u64() % 3 {
            let k = mutate(&mut img, xcr0, mask, &mut rng);
            *kinds.entry(k).or_default() += 1;
            what.push(k);
        }
        let lib = validate(&img, &l, Profile::Hardware, &ctx);
        let cpu = h.xrstor(&img, xcr0);
        if let Err(f) = &cpu {
            assert!(f.is_general_protection(), "case {case}: XRSTOR raised {f}, not #GP");
        }
        tally.record(case, &what, &img, &lib, "CPU", &cpu);
    }
    println!("{n_cases} mutated images; library verdicts: {:?}", tally.verdicts);
    println!("mutations applied: {kinds:?}");
    tally.assert_agreement(n_cases, "XRSTOR");
}

/// The rules the manual leaves open, one case each, asked of the CPU and held against the
/// library; the CPU's answers are printed for docs/HARDWARE.md.
#[test]
fn xrstor_rules_case_by_case() {
    let h = host();
    let l = h.layout().clone();
    let xcr0 = h.xcr0();
    let mask = mxcsr_mask(&h);
    let ctx = Context::new(xcr0).with_mxcsr_mask_field(mask);
    let n = h.area_size();
    let base = init_image(n);
    const C: u64 = 1 << 63;
    let with = |bvv: u64, comp: u64, f: &dyn Fn(&mut Vec<u8>)| {
        let mut v = base.clone();
        v[512..520].copy_from_slice(&bvv.to_le_bytes());
        v[520..528].copy_from_slice(&comp.to_le_bytes());
        f(&mut v);
        v
    };
    let none = |_: &mut Vec<u8>| {};
    let mut cases: Vec<(String, Vec<u8>)> = vec![
        ("standard, XSTATE_BV 0".into(), with(0, 0, &none)),
        ("standard, MXCSR reserved bit 31, XSTATE_BV 0".into(), with(0, 0, &|v| v[27] = 0x80)),
        ("standard, XSTATE_BV bit 63".into(), with(C | 3, 0, &none)),
        ("compacted, XCOMP_BV bit63 only, XSTATE_BV 0".into(), with(0, C, &none)),
        ("compacted, XCOMP_BV bit63 only, XSTATE_BV x87|SSE".into(), with(3, C, &none)),
        ("compacted, XCOMP_BV bit63|AVX, XSTATE_BV x87".into(), with(1, C | 4, &none)),
        ("compacted, XSTATE_BV bit 63".into(), with(C | 3, C | 3, &none)),
        ("compacted, XCOMP_BV bit 62".into(), with(0, C | 1 << 62, &none)),
        ("compacted, XCOMP_BV = XCR0, XSTATE_BV 0".into(), with(0, C | xcr0.bits(), &none)),
    ];
    for off in [520usize, 528, 535, 536, 550, 575] {
        cases.push((format!("standard, header byte {off} = 1"), with(3, 0, &|v| v[off] = 1)));
    }
    for off in [528usize, 536, 575] {
        cases.push((format!("compacted, header byte {off} = 1"), with(3, C | 3, &|v| v[off] = 1)));
    }
    for bvv in 0..8u64 {
        cases.push((
            format!("compacted XCOMP_BV x87|SSE|AVX, XSTATE_BV {bvv:#x}, MXCSR 0xffff0000"),
            with(bvv, C | 7, &|v| v[24..28].copy_from_slice(&0xFFFF_0000u32.to_le_bytes())),
        ));
    }
    cases.push((
        "standard, MXCSR bit 17 (MM)".into(),
        with(3, 0, &|v| v[24..28].copy_from_slice(&0x2_1F80u32.to_le_bytes())),
    ));
    for (name, img) in &cases {
        let cpu = h.xrstor(img, xcr0);
        let lib = validate(img, &l, Profile::Hardware, &ctx);
        println!(
            "{name}: CPU {}, library {}",
            cpu.map_or_else(|f| f.to_string(), |_| "loads".into()),
            lib.as_ref().map_or_else(|e| format!("{:?}", e.rule), |_| "valid".into())
        );
        assert_eq!(lib.is_ok(), cpu.is_ok(), "{name}");
    }
}
