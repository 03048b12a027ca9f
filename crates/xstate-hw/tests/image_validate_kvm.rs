//! The `kvm` validation profile against KVM_SET_XSAVE itself (EINVAL = refused) on mutated
//! images of the vCPU's XSAVE buffer size (4096 bytes where KVM_CAP_XSAVE2 says so).

#[macro_use]
mod common;

use xstate::image::validate::Context;
use xstate::image::{Profile, validate};
use xstate_hw::selfcheck::Rng;
use xstate_hw::stategen::StateGen;

use common::{Tally, host, kvm_or_skip, mutate, mxcsr_mask};

#[test]
fn kvm_profile_agrees_with_kvm_set_xsave() {
    let Some(kvm) = kvm_or_skip() else { return };
    let h = host();
    let l = h.layout().clone();
    let mask = mxcsr_mask(&h);
    let vcpu = kvm.create_vcpu().expect("KVM_CREATE_VCPU");
    vcpu.set_cpuid(&kvm.supported_cpuid().unwrap()).expect("KVM_SET_CPUID2");
    let supported = kvm.supported_xcr0().unwrap() & l.user_supported();
    let n = vcpu.xsave_buffer_size();
    println!("KVM supported XCR0 {supported}, buffer {n} bytes, MXCSR mask {mask:#x}");
    let mut ctx = Context::new(supported).with_mxcsr_mask_field(mask);
    ctx.kvm_supported = Some(supported);
    let g = StateGen::new(&l, supported, mask);
    let mut rng = Rng::new(common::seed(0x5EED));
    let n_cases = common::cases(1200);
    let first = vcpu.get_xsave().unwrap();
    let mut tally = Tally::default();
    for case in 0..n_cases {
        let mut img = if case % 5 == 0 { first.clone() } else { g.standard(&mut rng) };
        img.resize(n, 0);
        let mut what = Vec::new();
        for _ in 0..rng.next_u64() % 3 {
            what.push(mutate(&mut img, supported, mask, &mut rng));
        }
        let lib = validate(&img, &l, Profile::Kvm, &ctx);
        let k = vcpu.set_xsave(&img);
        if let Err(e) = &k {
            assert_eq!(e.raw_os_error(), Some(libc::EINVAL), "case {case}: KVM_SET_XSAVE failed otherwise: {e}");
        }
        tally.record(case, &what, &img, &lib, "KVM", &k);
    }
    println!("{n_cases} images; library verdicts: {:?}", tally.verdicts);
    tally.assert_agreement(n_cases, "KVM_SET_XSAVE");
}
