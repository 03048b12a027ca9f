//! The KVM backend's XSAVE ioctls, where /dev/kvm exists.

#[macro_use]
mod common;

use xstate::Xfeatures;

use common::kvm_or_skip;

#[test]
fn xsave_round_trip_and_refusal() {
    let Some(kvm) = kvm_or_skip() else { return };
    let vcpu = kvm.create_vcpu().unwrap();
    let supported = kvm.supported_xcr0().unwrap();
    println!("KVM supported XCR0 {supported}, KVM_CAP_XSAVE2 {}", vcpu.xsave2_size());
    let img = vcpu.get_xsave().unwrap();
    assert_eq!(img.len(), vcpu.xsave_buffer_size());
    assert_eq!(u32::from_le_bytes(img[24..28].try_into().unwrap()), 0x1F80, "MXCSR of a new vCPU");
    vcpu.set_xsave(&img).unwrap();
    let mut bad = img.clone();
    bad[520..528].copy_from_slice(&(1u64 << 63 | 3).to_le_bytes());
    assert_eq!(vcpu.set_xsave(&bad).unwrap_err().raw_os_error(), Some(libc::EINVAL));
    assert_eq!(vcpu.xcr0().unwrap(), Some(Xfeatures(1)));
    // Without KVM_SET_CPUID2 the guest supports only x87; give it what KVM supports.
    assert!(vcpu.set_xcr0(Xfeatures(0x7)).is_err());
    vcpu.set_cpuid(&kvm.supported_cpuid().unwrap()).unwrap();
    vcpu.set_xcr0(Xfeatures(0x7) & supported).unwrap();
    assert_eq!(vcpu.xcr0().unwrap(), Some(Xfeatures(0x7) & supported));
    assert!(vcpu.set_xcr0(Xfeatures(0x5)).is_err(), "YMM without SSE must be refused");
}
