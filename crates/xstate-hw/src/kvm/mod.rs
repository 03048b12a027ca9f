//! A thin KVM backend over rust-vmm's kvm-ioctls: the XSAVE-related vCPU ioctls, with images
//! as byte slices.
//!
//! KVM's XSAVE ABI (Linux Documentation/virt/kvm/api.rst): `kvm_xsave` is a standard-format
//! image with the host's offsets, 4096 bytes, followed since 5.17 by a tail up to the size
//! KVM_CHECK_EXTENSION(KVM_CAP_XSAVE2) returns (11008 on AMX hosts whose process asked for guest
//! AMX permission). KVM_SET_XSAVE reads the vCPU's whole `uabi_size`; there is no SET_XSAVE2.

use std::io;

use kvm_bindings::{CpuId, KVM_MAX_CPUID_ENTRIES, Xsave, kvm_cpuid_entry2, kvm_xcr, kvm_xcrs};
use kvm_ioctls::{Cap, Kvm, VcpuFd, VmFd};
use xstate::Xfeatures;
use xstate::cpuid::{CpuidData, Format, Regs};

/// Size of the classic `struct kvm_xsave`.
pub const KVM_XSAVE_SIZE: usize = 4096;

fn errno(e: kvm_ioctls::Error) -> io::Error {
    io::Error::from_raw_os_error(e.errno())
}

/// The bytes of a run of u32 words (x86 is little-endian, so this is the wire layout).
fn words_as_bytes(w: &[u32]) -> &[u8] {
    // SAFETY: u32 has no padding and every byte pattern is a valid u8; the returned slice covers
    // exactly the words' memory and borrows it for the same lifetime.
    unsafe { std::slice::from_raw_parts(w.as_ptr() as *const u8, std::mem::size_of_val(w)) }
}

/// Mutable form of [`words_as_bytes`].
fn words_as_bytes_mut(w: &mut [u32]) -> &mut [u8] {
    // SAFETY: as in `words_as_bytes`; every byte pattern is also a valid u32, so writes through
    // the byte view cannot create an invalid value.
    unsafe { std::slice::from_raw_parts_mut(w.as_mut_ptr() as *mut u8, std::mem::size_of_val(w)) }
}

/// An open `/dev/kvm`.
pub struct KvmSystem {
    kvm: Kvm,
}

/// KVM's CPUID entries as [`CpuidData`] (leaf 0xD included).
fn cpuid_data(c: &CpuId) -> CpuidData {
    let mut d = CpuidData::new(Format::Host);
    for e in c.as_slice() {
        d.insert(e.function, e.index, Regs::new(e.eax, e.ebx, e.ecx, e.edx));
    }
    d
}

impl KvmSystem {
    /// Opens `/dev/kvm`; `Ok(None)` if it does not exist, an error if it exists but cannot be
    /// opened.
    pub fn open() -> io::Result<Option<KvmSystem>> {
        if !std::path::Path::new("/dev/kvm").exists() {
            return Ok(None);
        }
        Kvm::new().map(|kvm| Some(KvmSystem { kvm })).map_err(errno)
    }

    /// KVM_GET_SUPPORTED_CPUID as [`CpuidData`] (leaf 0xD included).
    pub fn supported_cpuid(&self) -> io::Result<CpuidData> {
        self.kvm.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES).map(|c| cpuid_data(&c)).map_err(errno)
    }

    /// The XCR0 bits KVM supports for guests: KVM_GET_SUPPORTED_CPUID 0xD.0 EDX:EAX.
    pub fn supported_xcr0(&self) -> io::Result<Xfeatures> {
        Ok(self.supported_cpuid()?.leaf0d().xcr0_supported())
    }

    /// Creates a VM with one vCPU (id 0).
    pub fn create_vcpu(&self) -> io::Result<Vcpu> {
        let vm = self.kvm.create_vm().map_err(errno)?;
        let vcpu = vm.create_vcpu(0).map_err(errno)?;
        Ok(Vcpu { vm, vcpu })
    }

    /// The underlying kvm-ioctls handle, for callers that need more than this module offers.
    pub fn raw(&self) -> &Kvm {
        &self.kvm
    }
}

/// One vCPU in its own VM.
pub struct Vcpu {
    vm: VmFd,
    vcpu: VcpuFd,
}

impl Vcpu {
    /// KVM_CHECK_EXTENSION(KVM_CAP_XSAVE2) on the VM: the size of the buffer GET_XSAVE2 fills
    /// and SET_XSAVE reads, at least 4096. 0 if the capability is missing (pre-5.17 kernels).
    pub fn xsave2_size(&self) -> usize {
        self.vm.check_extension_int(Cap::Xsave2).max(0) as usize
    }

    /// The buffer size for this vCPU's XSAVE ioctls: the larger of 4096 and KVM_CAP_XSAVE2.
    pub fn xsave_buffer_size(&self) -> usize {
        self.xsave2_size().max(KVM_XSAVE_SIZE)
    }

    fn fam(&self) -> io::Result<Xsave> {
        let n = (self.xsave_buffer_size() - KVM_XSAVE_SIZE).div_ceil(4);
        Xsave::new(n).map_err(|_| io::Error::from(io::ErrorKind::OutOfMemory))
    }

    /// KVM_SET_CPUID2 with every leaf of `data` (leaf 0xD's recorded subleaves included).
    pub fn set_cpuid(&self, data: &CpuidData) -> io::Result<()> {
        let flag_for = |leaf: u32| match leaf {
            // KVM_CPUID_FLAG_SIGNIFCANT_INDEX for leaves with subleaves.
            4 | 7 | 0xB | 0xD | 0xF | 0x10 | 0x12 | 0x14 | 0x17 | 0x18 | 0x1D | 0x1E | 0x1F | 0x20 | 0x23 | 0x24
            | 0x8000_001D | 0x8000_0020 | 0x8000_0026 => 1,
            _ => 0,
        };
        let leaf0d = data.leaf0d().iter().map(|(i, r)| ((0xD, u32::from(i)), r));
        let entries: Vec<kvm_cpuid_entry2> = data
            .entries()
            .chain(leaf0d)
            .map(|((leaf, sub), r)| kvm_cpuid_entry2 {
                function: leaf,
                index: sub,
                flags: flag_for(leaf),
                eax: r.eax,
                ebx: r.ebx,
                ecx: r.ecx,
                edx: r.edx,
                ..Default::default()
            })
            .collect();
        let c = CpuId::from_entries(&entries).map_err(|_| io::Error::from_raw_os_error(libc::E2BIG))?;
        self.vcpu.set_cpuid2(&c).map_err(errno)
    }

    /// KVM_GET_CPUID2: the vCPU's CPUID as set.
    pub fn cpuid(&self) -> io::Result<CpuidData> {
        self.vcpu.get_cpuid2(KVM_MAX_CPUID_ENTRIES).map(|c| cpuid_data(&c)).map_err(errno)
    }

    /// The vCPU's extended state: KVM_GET_XSAVE2 when KVM_CAP_XSAVE2 exists, else
    /// KVM_GET_XSAVE; [`Vcpu::xsave_buffer_size`] bytes of standard-format image.
    pub fn get_xsave(&self) -> io::Result<Vec<u8>> {
        if self.xsave2_size() == 0 {
            let x = self.vcpu.get_xsave().map_err(errno)?;
            return Ok(words_as_bytes(&x.region).to_vec());
        }
        let mut x = self.fam()?;
        // SAFETY: `x` was allocated for KVM_CAP_XSAVE2 bytes, queried on this VM after its vCPU
        // exists; guest permissions cannot grow once a vCPU exists (EBUSY), so the size KVM
        // copies cannot exceed it.
        unsafe { self.vcpu.get_xsave2(&mut x) }.map_err(errno)?;
        let mut out = Vec::with_capacity(self.xsave_buffer_size());
        out.extend_from_slice(words_as_bytes(&x.as_fam_struct_ref().xsave.region));
        out.extend_from_slice(words_as_bytes(x.as_slice()));
        out.truncate(self.xsave_buffer_size());
        Ok(out)
    }

    /// KVM_SET_XSAVE from a standard-format image. The image is copied into a buffer of
    /// [`Vcpu::xsave_buffer_size`] bytes, zero-padded; a longer image is refused with E2BIG
    /// rather than cut.
    pub fn set_xsave(&self, image: &[u8]) -> io::Result<()> {
        let size = self.xsave_buffer_size();
        if image.len() > size {
            return Err(io::Error::from_raw_os_error(libc::E2BIG));
        }
        let mut x = self.fam()?;
        let head = image.len().min(KVM_XSAVE_SIZE);
        // SAFETY: `as_mut_fam_struct` hands out the header struct; we write only its fixed
        // region, within its length.
        words_as_bytes_mut(unsafe { &mut x.as_mut_fam_struct().xsave.region })[..head].copy_from_slice(&image[..head]);
        if image.len() > KVM_XSAVE_SIZE {
            words_as_bytes_mut(x.as_mut_slice())[..image.len() - KVM_XSAVE_SIZE]
                .copy_from_slice(&image[KVM_XSAVE_SIZE..]);
        }
        // SAFETY: `x` holds KVM_CAP_XSAVE2 bytes (at least 4096), the most KVM reads for this
        // vCPU, for the reason given in `get_xsave`.
        unsafe { self.vcpu.set_xsave2(&x) }.map_err(errno)
    }

    /// KVM_GET_XCRS: the vCPU's XCR0.
    pub fn xcr0(&self) -> io::Result<Option<Xfeatures>> {
        let x = self.vcpu.get_xcrs().map_err(errno)?;
        Ok(x.xcrs[..(x.nr_xcrs as usize).min(x.xcrs.len())].iter().find(|e| e.xcr == 0).map(|e| Xfeatures(e.value)))
    }

    /// KVM_SET_XCRS with XCR0 = `value`.
    pub fn set_xcr0(&self, value: Xfeatures) -> io::Result<()> {
        let mut x = kvm_xcrs { nr_xcrs: 1, ..Default::default() };
        x.xcrs[0] = kvm_xcr { xcr: 0, value: value.bits(), ..Default::default() };
        self.vcpu.set_xcrs(&x).map_err(errno)
    }

    /// The kvm-ioctls VM and vCPU handles, for guests that run code (memory, registers, run).
    pub fn raw(&mut self) -> (&VmFd, &mut VcpuFd) {
        (&self.vm, &mut self.vcpu)
    }
}

pub mod guest;
pub mod migrate;
