//! A VM of its own with one vCPU, for this project's tests, benchmarks and `xstate kvm` (the
//! `testing` feature). A VMM uses the functions of [`super`] on its own handles instead.

use std::io;

use kvm_ioctls::{Kvm, VcpuFd, VmFd};
use xstate::Xfeatures;
use xstate::cpuid::CpuidData;

/// An open `/dev/kvm`.
pub struct KvmSystem {
    kvm: Kvm,
}

impl KvmSystem {
    /// Opens `/dev/kvm`; `Ok(None)` if it does not exist, an error if it exists but cannot be
    /// opened.
    pub fn open() -> io::Result<Option<KvmSystem>> {
        if !std::path::Path::new("/dev/kvm").exists() {
            return Ok(None);
        }
        Kvm::new().map(|kvm| Some(KvmSystem { kvm })).map_err(|e| io::Error::from_raw_os_error(e.errno()))
    }

    /// KVM_GET_SUPPORTED_CPUID as [`CpuidData`] (leaf 0xD included).
    pub fn supported_cpuid(&self) -> io::Result<CpuidData> {
        super::supported_cpuid(&self.kvm)
    }

    /// The XCR0 bits KVM supports for guests: KVM_GET_SUPPORTED_CPUID 0xD.0 EDX:EAX.
    pub fn supported_xcr0(&self) -> io::Result<Xfeatures> {
        Ok(self.supported_cpuid()?.leaf0d().xcr0_supported())
    }

    /// Creates a VM with one vCPU (id 0).
    pub fn create_vcpu(&self) -> io::Result<Vcpu> {
        let errno = |e: kvm_ioctls::Error| io::Error::from_raw_os_error(e.errno());
        let vm = self.kvm.create_vm().map_err(errno)?;
        let vcpu = vm.create_vcpu(0).map_err(errno)?;
        let kvm = Kvm::new().map_err(errno)?;
        Ok(Vcpu { kvm, vm, vcpu })
    }

    /// The kvm-ioctls handle.
    pub fn raw(&self) -> &Kvm {
        &self.kvm
    }
}

/// One vCPU in its own VM.
pub struct Vcpu {
    kvm: Kvm,
    vm: VmFd,
    vcpu: VcpuFd,
}

impl Vcpu {
    /// KVM_CAP_XSAVE2 ([`super::cap_xsave2`]).
    pub fn xsave2_size(&self) -> usize {
        super::cap_xsave2(&self.kvm)
    }

    /// The buffer size of the XSAVE ioctls ([`super::xsave_size`]).
    pub fn xsave_buffer_size(&self) -> usize {
        super::xsave_size(&self.kvm)
    }

    /// KVM_SET_CPUID2 ([`super::set_cpuid`]).
    pub fn set_cpuid(&self, data: &CpuidData) -> io::Result<()> {
        super::set_cpuid(&self.vcpu, data)
    }

    /// KVM_GET_CPUID2 ([`super::cpuid`]).
    pub fn cpuid(&self) -> io::Result<CpuidData> {
        super::cpuid(&self.vcpu)
    }

    /// KVM_GET_XSAVE(2) ([`super::get_xsave`]).
    pub fn get_xsave(&self) -> io::Result<Vec<u8>> {
        super::get_xsave(&self.kvm, &self.vcpu)
    }

    /// KVM_SET_XSAVE ([`super::set_xsave`]).
    pub fn set_xsave(&self, image: &[u8]) -> io::Result<()> {
        super::set_xsave(&self.kvm, &self.vcpu, image)
    }

    /// KVM_GET_XCRS: the vCPU's XCR0.
    pub fn xcr0(&self) -> io::Result<Option<Xfeatures>> {
        super::xcr0(&self.vcpu)
    }

    /// KVM_SET_XCRS with XCR0 = `value`.
    pub fn set_xcr0(&self, value: Xfeatures) -> io::Result<()> {
        super::set_xcr0(&self.vcpu, value)
    }

    /// The `/dev/kvm` and vCPU handles, as a VMM holds them.
    pub fn fds(&self) -> (&Kvm, &VcpuFd) {
        (&self.kvm, &self.vcpu)
    }

    /// The kvm-ioctls VM and vCPU handles, for guests that run code (memory, registers, run).
    pub fn raw(&mut self) -> (&VmFd, &mut VcpuFd) {
        (&self.vm, &mut self.vcpu)
    }
}
