//! The save area held against the processor. Random states are loaded with XRSTOR and saved
//! with XSAVE or XSAVEC; each saved image is loaded into a `SaveArea` (standard and compacted)
//! sized for a policy of this host; the area itself, and every image it stores, must restore
//! (XRSTOR, then XSAVE) to the same state as the saved image. Mutated images must be accepted by
//! the area exactly when XRSTOR accepts them. And a state kept across a policy grow and shrink
//! restores unchanged.

#[macro_use]
mod common;

use std::sync::Arc;

use xstate::area::SaveArea;
use xstate::image::Form;
use xstate::policy::{Policy, Selection};
use xstate::{Component, Xfeatures};
use xstate_hw::SaveInstr;
use xstate_hw::selfcheck::Rng;
use xstate_hw::stategen::StateGen;

use common::{footprint_len, host, mutate, mxcsr_mask, same_state};

const CASES: usize = 300;

#[test]
fn area_restores_what_the_cpu_saved() {
    let h = host();
    let l = h.layout().clone();
    let xcr0 = h.xcr0();
    let mask = mxcsr_mask(&h);
    let has_xsavec = h.has(SaveInstr::Xsavec);
    if !has_xsavec {
        skip!("no XSAVEC (CPUID 0xD.1 EAX[1] = 0): compacted areas and XSAVEC images not checked");
    }
    let policy = Arc::new(Policy::derive(&l, &Selection::masks(xcr0, Xfeatures::EMPTY)).unwrap());
    let forms: Vec<Form> = if has_xsavec { vec![Form::Standard, Form::Compacted] } else { vec![Form::Standard] };
    let g = StateGen::new(&l, xcr0, mask);
    let mut rng = Rng::new(0xA5EA_0001);
    let restore = |img: &[u8]| h.xrstor_then_save(img, xcr0, SaveInstr::Xsave, xcr0, 0).map(|b| b.to_vec());
    let (mut compared, mut agreed, mut accepted) = (0usize, 0usize, 0usize);
    for case in 0..CASES {
        let state = g.standard(&mut rng);
        let instr = if has_xsavec && case % 2 == 1 { SaveInstr::Xsavec } else { SaveInstr::Xsave };
        let saved = h.xrstor_then_save(&state, xcr0, instr, xcr0, 0).unwrap_or_else(|f| panic!("case {case}: {f}"));
        let saved = saved[..footprint_len(&saved, &l, xcr0)].to_vec();
        let want = restore(&saved).unwrap();
        for &form in &forms {
            let mut area = SaveArea::new(policy.clone(), form).unwrap();
            area.set_mxcsr_mask(mask);
            area.set_xcr0(xcr0).unwrap();
            area.load(&saved).unwrap_or_else(|e| panic!("case {case}: the area refused a CPU-saved image: {e}"));
            let mut outs =
                vec![("area", area.bytes().to_vec()), ("standard store", area.store(Form::Standard).unwrap().to_vec())];
            if has_xsavec {
                outs.push(("compacted store", area.store(Form::Compacted).unwrap().to_vec()));
            }
            for (what, img) in outs {
                let got = restore(&img).unwrap_or_else(|f| panic!("case {case}: {form} {what}: XRSTOR faulted: {f}"));
                if let Err(e) = same_state(&got, &want, &l, xcr0) {
                    panic!("case {case}: {form} area, {what}: {e}");
                }
                compared += 1;
            }
            // A mutated image: the area takes it exactly when XRSTOR does, and then holds its state.
            let mut bad = saved.clone();
            let what = mutate(&mut bad, xcr0, mask, &mut rng);
            let cpu = h.xrstor(&bad, xcr0);
            let before = area.clone();
            let ours = area.load(&bad);
            assert_eq!(ours.is_ok(), cpu.is_ok(), "case {case}: {what}: area {ours:?}, XRSTOR {cpu:?}");
            if ours.is_ok() {
                let got = restore(area.bytes()).unwrap();
                let want = restore(&bad).unwrap();
                if let Err(e) = same_state(&got, &want, &l, xcr0) {
                    panic!("case {case}: {what}: {e}");
                }
                accepted += 1;
            } else {
                assert!(area == before, "case {case}: a refused load changed the area");
            }
            agreed += 1;
        }
    }
    println!(
        "{compared} area images (the area itself and its standard/compacted stores) restored to the CPU-saved \
         state; the area agreed with XRSTOR on {agreed} mutated images ({accepted} accepted)"
    );
}

#[test]
fn state_survives_a_policy_grow_and_shrink() {
    let h = host();
    let l = h.layout().clone();
    let xcr0 = h.xcr0();
    if !xcr0.contains(Component::AVX) {
        skip!("XCR0 {xcr0} has no AVX: no smaller policy to grow from");
        return;
    }
    let mask = mxcsr_mask(&h);
    let small = Arc::new(Policy::derive(&l, &Selection::masks(Xfeatures(0x7), Xfeatures::EMPTY)).unwrap());
    let big = Arc::new(Policy::derive(&l, &Selection::masks(xcr0, Xfeatures::EMPTY)).unwrap());
    let forms: Vec<Form> =
        if h.has(SaveInstr::Xsavec) { vec![Form::Standard, Form::Compacted] } else { vec![Form::Standard] };
    let g = StateGen::new(&l, Xfeatures(0x7), mask);
    let mut rng = Rng::new(77);
    for form in forms {
        for case in 0..50 {
            let state = g.standard(&mut rng);
            let mut area = SaveArea::new(small.clone(), form).unwrap();
            area.set_mxcsr_mask(mask);
            area.set_xcr0(Xfeatures(0x7)).unwrap();
            area.load(&state).unwrap();
            let want =
                h.xrstor_then_save(&area.store(Form::Standard).unwrap(), xcr0, SaveInstr::Xsave, xcr0, 0).unwrap();
            area.set_policy(big.clone()).unwrap();
            area.set_xcr0(xcr0).unwrap();
            let grown = h.xrstor_then_save(area.bytes(), xcr0, SaveInstr::Xsave, xcr0, 0).unwrap();
            same_state(&grown, &want, &l, xcr0).unwrap_or_else(|e| panic!("{form} case {case} after growing: {e}"));
            area.set_xcr0(Xfeatures(0x7)).unwrap();
            if xcr0 != Xfeatures(0x7) {
                assert!(area.set_policy(small.clone()).is_err(), "the guest enabled {xcr0}: shrinking must be refused");
            }
        }
    }
    println!("state kept across policy growth on the CPU (standard and compacted areas), shrink refused as busy");
}
