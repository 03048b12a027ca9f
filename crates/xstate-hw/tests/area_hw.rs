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
            let mut area = SaveArea::new(policy.clone(), form, mask).unwrap();
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
            let mut area = SaveArea::new(small.clone(), form, mask).unwrap();
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

/// Issue 12 item 1: the area is the operand of the CPU's own save. XSAVE (standard area) and
/// XSAVEC (compacted area) write straight into `bytes_mut()`; the area then holds the CPU's
/// state: its stores restore to it, and its component views are the bytes the CPU wrote. A
/// compacted area saved with a narrower RFBM (XCOMP_BV then shrinks) still loads and stores.
#[test]
fn the_area_is_the_operand_of_xsave() {
    use std::io::Write;
    let h = host();
    let l = h.layout().clone();
    let xcr0 = h.xcr0();
    let mask = mxcsr_mask(&h);
    let policy = Arc::new(Policy::derive(&l, &Selection::masks(xcr0, Xfeatures::EMPTY)).unwrap());
    let mut cases = vec![(Form::Standard, SaveInstr::Xsave)];
    let mut policies = vec![policy.clone()];
    if h.has(SaveInstr::Xsavec) {
        cases.push((Form::Compacted, SaveInstr::Xsavec));
        policies.push(policy.clone());
    } else {
        let _ = writeln!(std::io::stderr(), "SKIP: no XSAVEC: the compacted area is not saved into");
    }
    // A policy hiding XSAVEC (so its guest layout has no align64 flags) on a host whose
    // compacted layout aligns a component: the views must follow the host's bytes.
    let aligned = xcr0.iter().any(|c| l.geometry(c).is_some_and(|g| g.align64));
    if h.has(SaveInstr::Xsavec) && aligned {
        let p = Selection::masks(xcr0, Xfeatures::EMPTY).without(xstate::policy::Feature::Xsavec);
        let hidden = Arc::new(Policy::derive(&l, &p.without(xstate::policy::Feature::Xsaves)).unwrap());
        assert!(!hidden.compaction());
        cases.push((Form::Compacted, SaveInstr::Xsavec));
        policies.push(hidden);
    } else {
        let _ = writeln!(
            std::io::stderr(),
            "SKIP: no align64 component in XCR0 {xcr0}: views under a policy hiding XSAVEC not checked"
        );
    }
    let g = StateGen::new(&l, xcr0, mask);
    let mut rng = Rng::new(0xA5EA_0002);
    let restore = |img: &[u8]| h.xrstor_then_save(img, xcr0, SaveInstr::Xsave, xcr0, 0).map(|b| b.to_vec());
    let mut n = 0;
    for ((form, instr), policy) in cases.into_iter().zip(policies) {
        for case in 0..100 {
            let state = g.standard(&mut rng);
            let want = restore(&state).unwrap();
            let mut area = SaveArea::new(policy.clone(), form, mask).unwrap();
            area.set_xcr0(xcr0).unwrap();
            h.xrstor_then_save_into(&state, xcr0, instr, xcr0, area.bytes_mut())
                .unwrap_or_else(|e| panic!("{form} case {case}: {e}"));
            for (what, img) in
                [("area", area.bytes().to_vec()), ("store", area.store(Form::Standard).unwrap().to_vec())]
            {
                let got = restore(&img).unwrap_or_else(|f| panic!("{form} case {case} {what}: {f}"));
                same_state(&got, &want, &l, xcr0).unwrap_or_else(|e| panic!("{form} case {case} {what}: {e}"));
            }
            let cpu = h.xrstor_then_save(&state, xcr0, instr, xcr0, 0).unwrap();
            let cpu = xstate::image::Image::new(&cpu).unwrap();
            for c in (xcr0 & area.xstate_bv()).iter().filter(|c| !c.is_legacy()) {
                assert_eq!(area.component(c), cpu.component(&l, c), "{form} case {case}: {c}");
            }
            // A save with a narrower RFBM (x87 and SSE only): XSAVEC writes XCOMP_BV = bit 63 | 0x3.
            h.xrstor_then_save_into(&state, xcr0, instr, Xfeatures(0x3), area.bytes_mut()).unwrap();
            area.load(&state).unwrap_or_else(|e| panic!("{form} case {case}: load after a narrow save: {e}"));
            let got = restore(&area.store(Form::Standard).unwrap()).unwrap();
            same_state(&got, &want, &l, xcr0).unwrap_or_else(|e| panic!("{form} case {case} after reload: {e}"));
            n += 1;
        }
    }
    // An unsuitable operand is refused before anything runs.
    let mut short = xstate::aligned::AlignedBuf::zeroed(576);
    let e = h.xrstor_then_save_into(&g.standard(&mut rng), xcr0, SaveInstr::Xsave, xcr0, &mut short);
    assert!(xcr0 == Xfeatures(3) || matches!(e, Err(xstate_hw::OperandError::TooShort { .. })), "{e:?}");
    println!("{n} areas saved into by the CPU restored to its state");
}
