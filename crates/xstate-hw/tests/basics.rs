//! The fault-catching XRSTOR/XSAVE machinery against facts the CPU decides.

#[macro_use]
mod common;

use xstate::Xfeatures;
use xstate_hw::{SaveInstr, selfcheck};

use common::{host, init_image};

#[test]
fn gp_is_caught_and_state_survives() {
    let h = host();
    let xcr0 = h.xcr0();
    let size = h.layout().standard_size(xcr0).unwrap() as usize;
    let img = init_image(size);
    assert_eq!(h.xrstor(&img, xcr0), Ok(()));
    // Standard form: XCOMP_BV must be zero (SDM 13.8.1; HARDWARE-FINDINGS 1).
    let mut bad = img.clone();
    bad[520] = 1;
    let f = h.xrstor(&bad, xcr0).unwrap_err();
    assert!(f.is_general_protection(), "{f:?}");
    // XSTATE_BV bit outside XCR0.
    let mut bad = img.clone();
    bad[519] = 0x80;
    assert!(h.xrstor(&bad, xcr0).unwrap_err().is_general_protection());
    // The thread's own floating point still works after the faults.
    let x: f64 = std::hint::black_box(1.5);
    assert_eq!(x * 2.0, 3.0);
    // Many faults in a row do not leak anything.
    for _ in 0..1000 {
        assert!(h.xrstor(&bad, xcr0).is_err());
    }
    assert_eq!(h.xrstor(&img, xcr0), Ok(()));
}

#[test]
fn footprints_follow_the_layout() {
    let h = host();
    let xcr0 = h.xcr0();
    let l = h.layout();
    let img = init_image(h.area_size());
    // The footprint is measured in 64-byte steps (XRSTOR needs a 64-byte aligned operand, so
    // the guard page can only start at such an offset): a size ending within a step, as PKRU's
    // 2440 on AMD Zen 3, is read as that step's end.
    let step = |n: u32| (n as usize).next_multiple_of(64);
    for rfbm in [Xfeatures(0x3), Xfeatures(0x7), xcr0] {
        let rfbm = rfbm & xcr0;
        let fp = h.xrstor_footprint(&img, rfbm).unwrap();
        assert_eq!(fp, step(l.standard_size(rfbm).unwrap()), "standard footprint of RFBM {rfbm}");
    }
    if h.has(SaveInstr::Xsavec) {
        // With every XCOMP_BV component to be loaded, both vendors read the whole compacted size.
        let mut c = img.clone();
        c[512..520].copy_from_slice(&xcr0.bits().to_le_bytes());
        c[520..528].copy_from_slice(&(xcr0 | Xfeatures::BIT63).bits().to_le_bytes());
        // An XSTATE_BV of all-in-use needs loadable contents: zeros are (FCW/MXCSR are set).
        let fp = h.xrstor_footprint(&c, xcr0).unwrap();
        assert_eq!(fp, step(l.compacted_size(xcr0).unwrap()), "compacted footprint, XSTATE_BV = XCR0");
        // With XSTATE_BV = 0, Intel still reads compacted_size(XCOMP_BV & RFBM) (HARDWARE-FINDINGS
        // 2); AMD Zen 4 reads only the header. Either is allowed; say which this CPU did.
        c[512..520].fill(0);
        let fp = h.xrstor_footprint(&c, xcr0).unwrap();
        let full = step(l.compacted_size(xcr0).unwrap());
        assert!(fp == 576 || fp == full, "compacted footprint with XSTATE_BV = 0: {fp}");
        println!(
            "compacted XRSTOR with XSTATE_BV = 0 reads {fp} bytes ({})",
            if fp == full { "the whole XCOMP_BV extent" } else { "only up to the header" }
        );
    } else {
        skip!("no XSAVEC: compacted footprint not measured");
    }
}

#[test]
fn live_check_agrees() {
    let h = host();
    let checks = selfcheck::live_check(&h, 1);
    for c in &checks {
        println!("{} {}: {}", if c.ok { "ok  " } else { "FAIL" }, c.name, c.detail);
    }
    assert!(checks.iter().all(|c| c.ok));
    assert!(checks.len() >= 2);
}

#[test]
fn the_cpu_as_a_converter_loops_without_faulting() {
    let h = host();
    let xcr0 = h.xcr0();
    let size = h.layout().standard_size(xcr0).unwrap() as usize;
    let img = init_image(size);
    let t = std::time::Instant::now();
    h.restore_save_loop(&img, xcr0, SaveInstr::Xsave, 1000).unwrap();
    println!("XRSTOR+XSAVE x1000: {:?}", t.elapsed());
    let mut bad = img.clone();
    bad[520] = 1;
    assert!(h.restore_save_loop(&bad, xcr0, SaveInstr::Xsave, 1000).unwrap_err().is_general_protection());
    let x: f64 = std::hint::black_box(2.5);
    assert_eq!(x * 2.0, 5.0);
}
