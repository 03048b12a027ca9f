//! Wire and file formats that carry extended state between hypervisors, hosts and tools, as
//! typed parse/serialize pairs (byte layouts: docs/FORMATS.md).
//!
//! Records sit above images: a parser checks the record's own framing and exact size rules,
//! then hands the embedded image to [`crate::image::validate()`] with the profile of the consumer
//! the format belongs to (Xen's `validate_xstate()`, KVM_SET_XSAVE, the Linux UABI checks). Every
//! failure is a [`RecordError`] naming the format, the rule, and the offending byte offset,
//! bits or sizes; nothing here panics on untrusted bytes.
//!
//! | module | formats |
//! |---|---|
//! | [`xen`] | the get/setvcpuextstate blob, the HVM `CPU_XSAVE` record, the PV `X86_PV_VCPU_XSAVE` record |
//! | [`fc_blob`] | the forward-compatible blob (first word XCR0 \| XSS, standard or compacted image) |
//! | [`kvm`] | `struct kvm_xsave` (4096 bytes), the KVM_GET_XSAVE2 buffer, `struct kvm_xcrs` |
//! | [`linux`] | NT_X86_XSTATE, NT_X86_XSAVE_LAYOUT, the x86-64 signal-frame fpstate |
//! | [`portable`] | xstate's versioned record carrying its own layout descriptor |
//! | [`elf`] | the extended-state notes of an ELF core dump |
//! | [`criu`] | CRIU checkpoint images: a thread's `core-<tid>.img`, `cpuinfo.img` |
//! | [`qemu`] | QEMU's migration stream: every vCPU's `cpu` section (containers: [`patch()`]) |
//! | [`cloud_hypervisor`] | Cloud Hypervisor's snapshot `state.json`: every vCPU's xsave, fpu, xcrs, CPUID |
//! | [`firecracker`] | Firecracker's `vmstate`: every vCPU's kvm_xsave, kvm_xcrs, CPUID, located by content; CRC-64 |
//!
//! [`read()`] and [`write()`] move any of them through one intermediate, [`Contents`] (the
//! file-level facts and one [`State`] per vCPU or thread, each saying only what the record
//! says), so that `xstate convert --from-format F --to-format G` is a read, an image
//! conversion ([`crate::image::convert()`]) and a write that neither loses nor invents a field.

mod any;
pub mod cloud_hypervisor;
mod contents;
pub mod criu;
#[cfg(feature = "elf")]
pub mod elf;
mod error;
pub mod fc_blob;
pub mod firecracker;
pub mod json;
pub mod kvm;
pub mod linux;
pub mod portable;
mod protobuf;
pub mod qemu;
pub mod relayout;
pub mod xen;

pub use any::{FieldSet, Format, Options, carried_cpuid, detect, patch, read, write};
pub use contents::{Contents, Field, State, StateId, Uninterpreted};
pub use error::{Detail, RecordError, Rule, SizeBasis};

/// Little-endian field readers over untrusted bytes: `None` past the end, never a panic.
pub(crate) mod le {
    pub fn u16_at(b: &[u8], off: usize) -> Option<u16> {
        b.get(off..off.checked_add(2)?).map(|s| u16::from_le_bytes([s[0], s[1]]))
    }
    pub fn u32_at(b: &[u8], off: usize) -> Option<u32> {
        b.get(off..off.checked_add(4)?).map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }
    pub fn u64_at(b: &[u8], off: usize) -> Option<u64> {
        b.get(off..off.checked_add(8)?).and_then(|s| s.try_into().ok()).map(u64::from_le_bytes)
    }
}

#[cfg(test)]
mod tests;
