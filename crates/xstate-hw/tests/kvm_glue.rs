//! Issue 12 item 3: the KVM glue over a VMM's own handles. The test opens `/dev/kvm`, creates
//! its VM and vCPU with kvm-ioctls as a VMM does, and hands `&Kvm` / `&VcpuFd` to
//! `xstate_hw::kvm`: buffers sized from KVM_CAP_XSAVE2, the state round-trips through the
//! library's KVM record parser, XCR0 through KVM_GET/SET_XCRS, CPUID through `CpuidData`.

use std::io::Write;

use kvm_ioctls::Kvm;
use xstate::record::{self, Format, Options};
use xstate::{Layout, Xfeatures};
use xstate_hw::kvm;

#[test]
fn glue_over_the_callers_own_handles() {
    if !std::path::Path::new("/dev/kvm").exists() {
        let _ = writeln!(std::io::stderr(), "SKIP: /dev/kvm does not exist: the KVM glue is not exercised");
        return;
    }
    let k = Kvm::new().expect("open /dev/kvm");
    let vm = k.create_vm().unwrap();
    let vcpu = vm.create_vcpu(0).unwrap();
    let size = kvm::xsave_size(&k);
    assert_eq!(size, kvm::cap_xsave2(&k).max(4096));
    // CPUID: KVM's table, through CpuidData and back, onto the vCPU.
    let supported = kvm::supported_cpuid(&k).unwrap();
    let entries = kvm::to_kvm_cpuid(&supported).unwrap();
    assert_eq!(kvm::cpuid_data(&entries), supported);
    kvm::set_cpuid(&vcpu, &supported).unwrap();
    assert!(kvm::cpuid(&vcpu).unwrap().leaf0d().xsave_enumerated());
    // XCR0.
    let xcr0 = Xfeatures(0x7) & supported.leaf0d().xcr0_supported();
    kvm::set_xcr0(&vcpu, xcr0).unwrap();
    assert_eq!(kvm::xcr0(&vcpu).unwrap(), Some(xcr0));
    assert!(kvm::set_xcr0(&vcpu, Xfeatures(0x5)).is_err(), "YMM without SSE");
    // XSAVE: a buffer of KVM_CAP_XSAVE2 bytes the library reads as KVM's record, changed and
    // written back.
    let host = Layout::from_leaf0d(xstate_hw::cpu::host_cpuid().leaf0d()).unwrap();
    let mut buf = kvm::get_xsave(&k, &vcpu).unwrap();
    assert_eq!(buf.len(), size);
    let format = if kvm::cap_xsave2(&k) == 0 { Format::KvmXsave } else { Format::KvmXsave2 };
    let mut opts = Options::default();
    opts.xcr0 = Some(xcr0);
    opts.kvm_xsave2_size = Some(size);
    opts.kvm_supported = Some(supported.leaf0d().xcr0_supported());
    record::read(format, &buf, &host, &opts).unwrap_or_else(|e| panic!("KVM's own buffer: {e}"));
    buf[160..176].copy_from_slice(&[0xA5; 16]); // XMM0
    buf[512] |= 0x2; // SSE in use
    kvm::set_xsave(&k, &vcpu, &buf).unwrap();
    let back = kvm::get_xsave(&k, &vcpu).unwrap();
    assert_eq!(&back[160..176], &[0xA5; 16]);
    // A shorter image is zero-padded; a longer one is refused, never cut.
    kvm::set_xsave(&k, &vcpu, &buf[..576]).unwrap();
    let long = vec![0u8; size + 64];
    assert_eq!(kvm::set_xsave(&k, &vcpu, &long).unwrap_err().raw_os_error(), Some(libc::E2BIG));
    println!("KVM glue over the caller's handles: {size}-byte buffers (KVM_CAP_XSAVE2 {})", kvm::cap_xsave2(&k));
}
