//! The `kvm` validation profile against KVM_SET_XSAVE itself (EINVAL = refused) on mutated
//! images of the vCPU's XSAVE buffer size (4096 bytes where KVM_CAP_XSAVE2 says so).

mod common;

use std::collections::BTreeMap;

use xstate::Xfeatures;
use xstate::image::validate::Context;
use xstate::image::{Profile, validate};
use xstate_hw::kvm::KvmSystem;
use xstate_hw::selfcheck::Rng;
use xstate_hw::stategen::StateGen;

use common::{bv, host, mutate, mxcsr_mask};

#[test]
fn kvm_profile_agrees_with_kvm_set_xsave() {
    let kvm = match KvmSystem::open() {
        Ok(Some(k)) => k,
        Ok(None) => {
            println!("SKIP: /dev/kvm does not exist");
            return;
        }
        Err(e) => {
            println!("SKIP: /dev/kvm cannot be opened: {e}");
            return;
        }
    };
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
    let mut verdicts: BTreeMap<String, usize> = BTreeMap::new();
    let mut disagreements = Vec::new();
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
        *verdicts.entry(lib.as_ref().map_or_else(|e| format!("{:?}", e.rule), |_| "valid".into())).or_default() += 1;
        if lib.is_ok() != k.is_ok() {
            disagreements.push(format!(
                "case {case} [{}] XSTATE_BV {:#x} XCOMP_BV {:#x} MXCSR {:#x}: library {:?}, KVM {:?}",
                what.join(", "),
                bv(&img, 512),
                bv(&img, 520),
                u32::from_le_bytes(img[24..28].try_into().unwrap()),
                lib.map_err(|e| e.to_string()),
                k.map_err(|e| e.to_string())
            ));
        }
    }
    println!("{n_cases} images; library verdicts: {verdicts:?}");
    for d in disagreements.iter().take(10) {
        println!("DISAGREE {d}");
    }
    assert!(disagreements.is_empty(), "{} of {n_cases} verdicts disagree with KVM_SET_XSAVE", disagreements.len());
    assert!(verdicts.get("valid").copied().unwrap_or(0) > n_cases / 10);
    let _ = Xfeatures::EMPTY;
}
