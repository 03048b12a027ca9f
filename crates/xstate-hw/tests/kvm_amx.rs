//! AMX for KVM guests, where the host has it. Linux offers TILECFG/TILEDATA to a process's
//! guests only after ARCH_REQ_XCOMP_GUEST_PERM, asked before the process's first vCPU (so this
//! test lives in its own binary): KVM_GET_SUPPORTED_CPUID's leaf 0xD and KVM_CAP_XSAVE2 follow
//! the permission (XSAVE-FACTS §7.4). After it:
//!
//! 1. the supported XCR0 stays within the permission, and the supported leaf 0xD (AMX subleaves
//!    included where offered) is the policy derived from this host;
//! 2. KVM_CAP_XSAVE2 is the standard size of the supported XCR0, at least 4096 (the fixed
//!    `struct kvm_xsave`): 11008 where guests get AMX;
//! 3. where KVM offers AMX, KVM_SET_XSAVE takes a standard image with tiles in use, which the
//!    `kvm` profile (given the supported mask) accepts too, and KVM_GET_XSAVE2 gives every
//!    component byte back. A KVM that keeps AMX from guests even with the permission (the
//!    `kvm_pvm` module does) skips this part with a printed reason.

#[macro_use]
mod common;

use xstate::image::validate::Context;
use xstate::image::{Image, Profile, validate};
use xstate::policy::{Policy, Selection};
use xstate::{Component, Xfeatures};
use xstate_hw::perm;
use xstate_hw::selfcheck::{Rng, crafted_image};

use common::kvm_or_skip;

#[test]
fn amx_for_guests_follows_the_guest_permission() {
    let Some(kvm) = kvm_or_skip() else { return };
    let h = common::host();
    let host = h.layout().clone();
    let amx = Xfeatures::EMPTY.with(Component::TILECFG).with(Component::TILEDATA);
    if !amx.is_subset_of(host.user_supported()) {
        return skip!("this host has no AMX (supported XCR0 {})", host.user_supported());
    }
    let before = kvm.supported_xcr0().unwrap();
    if let Err(e) = perm::request_guest_permission(Component::TILEDATA) {
        return skip!("ARCH_REQ_XCOMP_GUEST_PERM(TILEDATA) refused: {e}");
    }
    let supported = kvm.supported_cpuid().unwrap();
    let k = supported.leaf0d();
    let xcr0 = k.xcr0_supported();
    println!(
        "KVM supported XCR0 {before} before ARCH_REQ_XCOMP_GUEST_PERM, {xcr0} after (guest permission {})",
        perm::guest_permitted().unwrap()
    );
    assert!(xcr0.is_subset_of(perm::guest_permitted().unwrap()), "KVM offers more than the permission");

    // 1. The leaf.
    let compared = common::assert_leaf0d_is_derived_policy(k, &host);
    assert!(compared >= 3);

    // 2. The buffer size.
    let vcpu = kvm.create_vcpu().unwrap();
    let std_size = host.standard_size(xcr0).unwrap() as usize;
    println!("KVM_CAP_XSAVE2 {} bytes; standard size of {xcr0}: {std_size}", vcpu.xsave2_size());
    assert_eq!(vcpu.xsave2_size(), std_size.max(4096));

    // 3. Tiles through KVM_SET_XSAVE / KVM_GET_XSAVE2 on a vCPU whose policy has AMX.
    if !amx.is_subset_of(xcr0) {
        return skip!(
            "tiles through KVM_SET_XSAVE: this KVM offers guests XCR0 {xcr0} even with guest permission {}",
            perm::guest_permitted().unwrap()
        );
    }
    assert!(k.get(17) != Default::default() && k.get(18) != Default::default());
    let p = Policy::derive(&host, &Selection::parse("avx,avx512,amx").unwrap()).unwrap();
    let mut cpuid = supported.clone();
    *cpuid.leaf0d_mut() = p.leaf0d(xcr0, Xfeatures::EMPTY).unwrap();
    vcpu.set_cpuid(&cpuid).unwrap();
    let mut ctx = Context::new(xcr0).with_mxcsr_mask_field(common::mxcsr_mask(&h));
    ctx.kvm_supported = Some(xcr0);
    let mut rng = Rng::new(common::seed(0xa3c));
    let rounds = 20;
    for round in 0..rounds {
        let img = crafted_image(&host, xcr0, &mut rng);
        assert_eq!(img.len(), std_size);
        validate(&img, &host, Profile::Kvm, &ctx).unwrap_or_else(|e| panic!("round {round}: kvm profile: {e}"));
        vcpu.set_xsave(&img).unwrap_or_else(|e| panic!("round {round}: KVM_SET_XSAVE: {e}"));
        let back = vcpu.get_xsave().unwrap();
        let v = Image::new(&back).unwrap();
        assert_eq!(v.xstate_bv(), xcr0, "round {round}: XSTATE_BV");
        for c in xcr0.iter().filter(|c| !c.is_legacy()) {
            let r = host.standard_range(c).unwrap();
            assert_eq!(back[r.clone()], img[r], "round {round}: {} bytes differ", c.name());
        }
    }
    println!("{rounds} images with TILECFG/TILEDATA in use went through KVM_SET_XSAVE and came back byte for byte");
}
