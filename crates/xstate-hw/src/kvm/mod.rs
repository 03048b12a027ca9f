//! KVM glue for a VMM's own handles: the XSAVE-related ioctls as functions over the caller's
//! `&Kvm` and `&VcpuFd` (rust-vmm's kvm-ioctls), with images as byte slices and CPUID as the
//! library's [`CpuidData`]. Nothing here creates a VM or installs a signal handler.
//!
//! KVM's XSAVE ABI (Linux Documentation/virt/kvm/api.rst): `kvm_xsave` is a standard-format
//! image with the host's offsets, 4096 bytes, followed since 5.17 by a tail up to the size
//! KVM_CHECK_EXTENSION(KVM_CAP_XSAVE2) returns (11008 on AMX hosts whose process asked for guest
//! AMX permission). KVM_SET_XSAVE reads the vCPU's whole `uabi_size`; there is no SET_XSAVE2.
//! The size is the process's (its guest permissions, fixed once it has a vCPU), so
//! [`xsave_size`] asks `/dev/kvm` each time rather than trusting a size cached earlier.
//!
//! ```
//! use kvm_ioctls::Kvm;
//! use xstate::record::{self, Format, Options};
//! use xstate::{Layout, Xfeatures};
//! use xstate_hw::kvm;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! if !std::path::Path::new("/dev/kvm").exists() {
//!     return Ok(()); // nothing to show without KVM
//! }
//! // The VMM's own handles.
//! let kvm_fd = Kvm::new()?;
//! let vm = kvm_fd.create_vm()?;
//! let vcpu = vm.create_vcpu(0)?;
//! // CPUID as the library's table: KVM's supported leaf 0xD is a layout, and a policy applied
//! // to the whole table goes back with KVM_SET_CPUID2.
//! let supported = kvm::supported_cpuid(&kvm_fd)?;
//! let host = Layout::from_leaf0d(supported.leaf0d())?;
//! kvm::set_cpuid(&vcpu, &supported)?;
//! // The state: a buffer of KVM_CAP_XSAVE2 bytes, and the guest's XCR0 from KVM_GET_XCRS.
//! let xsave = kvm::get_xsave(&kvm_fd, &vcpu)?;
//! assert_eq!(xsave.len(), kvm::xsave_size(&kvm_fd));
//! let mut opts = Options::default();
//! opts.xcr0 = kvm::xcr0(&vcpu)?;
//! opts.kvm_xsave2_size = Some(xsave.len());
//! let format = if kvm::cap_xsave2(&kvm_fd) == 0 { Format::KvmXsave } else { Format::KvmXsave2 };
//! let contents = record::read(format, &xsave, &host, &opts)?;
//! assert_eq!(contents.state().and_then(|s| s.xcr0), Some(Xfeatures::X87)); // a new vCPU's
//! kvm::set_xsave(&kvm_fd, &vcpu, &xsave)?;
//! # Ok(())
//! # }
//! ```

use std::io;

use kvm_bindings::{CpuId, KVM_MAX_CPUID_ENTRIES, Xsave, kvm_cpuid_entry2, kvm_xcr, kvm_xcrs};
use kvm_ioctls::{Cap, Kvm, VcpuFd};
use xstate::Xfeatures;
use xstate::cpuid::{CpuidData, CpuidFormat, Regs};

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

/// KVM_CHECK_EXTENSION(KVM_CAP_XSAVE2): the bytes KVM_GET_XSAVE2 fills and KVM_SET_XSAVE reads
/// for this process's vCPUs; 0 where the capability is missing (kernels before 5.17).
pub fn cap_xsave2(kvm: &Kvm) -> usize {
    kvm.check_extension_int(Cap::Xsave2).max(0) as usize
}

/// The buffer size of this process's XSAVE ioctls: the larger of 4096 and KVM_CAP_XSAVE2.
pub fn xsave_size(kvm: &Kvm) -> usize {
    cap_xsave2(kvm).max(KVM_XSAVE_SIZE)
}

fn fam(size: usize) -> io::Result<Xsave> {
    Xsave::new((size - KVM_XSAVE_SIZE).div_ceil(4)).map_err(|_| io::Error::from(io::ErrorKind::OutOfMemory))
}

/// The vCPU's extended state: KVM_GET_XSAVE2 when KVM_CAP_XSAVE2 exists, else KVM_GET_XSAVE;
/// [`xsave_size`] bytes of standard-format image in the host's layout (KVM writes its supported
/// XCR0 at bytes 464..471, not the guest's; the guest's XCR0 is [`xcr0`]).
pub fn get_xsave(kvm: &Kvm, vcpu: &VcpuFd) -> io::Result<Vec<u8>> {
    let cap = cap_xsave2(kvm);
    if cap == 0 {
        let x = vcpu.get_xsave().map_err(errno)?;
        return Ok(words_as_bytes(&x.region).to_vec());
    }
    let size = cap.max(KVM_XSAVE_SIZE);
    let mut x = fam(size)?;
    // SAFETY: `x` holds KVM_CAP_XSAVE2 bytes, asked of KVM just now for this process; the vCPU's
    // buffer size is the process's and cannot grow once a vCPU exists (guest permissions are
    // then locked: EBUSY), so KVM copies no more than `x` holds.
    unsafe { vcpu.get_xsave2(&mut x) }.map_err(errno)?;
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(words_as_bytes(&x.as_fam_struct_ref().xsave.region));
    out.extend_from_slice(words_as_bytes(x.as_slice()));
    out.truncate(size);
    Ok(out)
}

/// KVM_SET_XSAVE from a standard-format image in the host's layout. The image is copied into a
/// buffer of [`xsave_size`] bytes, zero-padded; a longer image is refused with E2BIG rather
/// than cut. (Validate it first: `xstate::record::read(Format::KvmXsave2, ..)` applies
/// KVM_SET_XSAVE's rules.)
pub fn set_xsave(kvm: &Kvm, vcpu: &VcpuFd, image: &[u8]) -> io::Result<()> {
    let size = xsave_size(kvm);
    if image.len() > size {
        return Err(io::Error::from_raw_os_error(libc::E2BIG));
    }
    let mut x = fam(size)?;
    let head = image.len().min(KVM_XSAVE_SIZE);
    // SAFETY: `as_mut_fam_struct` hands out the header struct; we write only its fixed region,
    // within its length.
    words_as_bytes_mut(unsafe { &mut x.as_mut_fam_struct().xsave.region })[..head].copy_from_slice(&image[..head]);
    if image.len() > KVM_XSAVE_SIZE {
        words_as_bytes_mut(x.as_mut_slice())[..image.len() - KVM_XSAVE_SIZE].copy_from_slice(&image[KVM_XSAVE_SIZE..]);
    }
    // SAFETY: `x` holds KVM_CAP_XSAVE2 bytes (at least 4096), the most KVM reads for this
    // process's vCPUs, for the reason given in `get_xsave`.
    unsafe { vcpu.set_xsave2(&x) }.map_err(errno)
}

/// KVM_GET_XCRS: the vCPU's XCR0, `None` if KVM reports none.
pub fn xcr0(vcpu: &VcpuFd) -> io::Result<Option<Xfeatures>> {
    let x = vcpu.get_xcrs().map_err(errno)?;
    Ok(x.xcrs[..(x.nr_xcrs as usize).min(x.xcrs.len())].iter().find(|e| e.xcr == 0).map(|e| Xfeatures(e.value)))
}

/// KVM_SET_XCRS with XCR0 = `value` (KVM refuses what XSETBV in the guest would: EINVAL).
pub fn set_xcr0(vcpu: &VcpuFd, value: Xfeatures) -> io::Result<()> {
    let mut x = kvm_xcrs { nr_xcrs: 1, ..Default::default() };
    x.xcrs[0] = kvm_xcr { xcr: 0, value: value.bits(), ..Default::default() };
    vcpu.set_xcrs(&x).map_err(errno)
}

/// KVM's CPUID entries as [`CpuidData`] (leaf 0xD included).
pub fn cpuid_data(c: &CpuId) -> CpuidData {
    let mut d = CpuidData::new(CpuidFormat::Host);
    for e in c.as_slice() {
        d.insert(e.function, e.index, Regs::new(e.eax, e.ebx, e.ecx, e.edx));
    }
    d
}

/// [`CpuidData`] as KVM's CPUID entries, every recorded leaf (leaf 0xD's recorded subleaves
/// included), with KVM_CPUID_FLAG_SIGNIFCANT_INDEX on the leaves that have subleaves. E2BIG
/// beyond KVM_MAX_CPUID_ENTRIES.
pub fn to_kvm_cpuid(data: &CpuidData) -> io::Result<CpuId> {
    let flag_for = |leaf: u32| match leaf {
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
    CpuId::from_entries(&entries).map_err(|_| io::Error::from_raw_os_error(libc::E2BIG))
}

/// KVM_GET_SUPPORTED_CPUID as [`CpuidData`] (leaf 0xD included).
pub fn supported_cpuid(kvm: &Kvm) -> io::Result<CpuidData> {
    kvm.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES).map(|c| cpuid_data(&c)).map_err(errno)
}

/// KVM_SET_CPUID2 with every leaf of `data` ([`to_kvm_cpuid`]).
pub fn set_cpuid(vcpu: &VcpuFd, data: &CpuidData) -> io::Result<()> {
    vcpu.set_cpuid2(&to_kvm_cpuid(data)?).map_err(errno)
}

/// KVM_GET_CPUID2: the vCPU's CPUID as KVM holds it.
pub fn cpuid(vcpu: &VcpuFd) -> io::Result<CpuidData> {
    vcpu.get_cpuid2(KVM_MAX_CPUID_ENTRIES).map(|c| cpuid_data(&c)).map_err(errno)
}

#[cfg(feature = "testing")]
mod harness;
#[cfg(feature = "testing")]
pub use harness::{KvmSystem, Vcpu};

#[cfg(feature = "testing")]
pub mod guest;
pub mod migrate;
