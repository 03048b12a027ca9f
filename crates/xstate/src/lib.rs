//! `xstate`: x86 extended processor state, the state XSAVE and XRSTOR save and load.
//!
//! For any CPU or CPUID policy it tells how big a save area is and where each component lives,
//! validates images as XRSTOR, Linux, KVM and Xen would, converts them between the standard
//! and compacted forms and between CPUs' layouts, reads and writes the records hypervisors and
//! tools keep them in, and says whether state can migrate from one CPU to another.
//!
//! Data flows one way: CPUID ([`cpuid`]) gives a [`Layout`], and every operation that depends
//! on geometry takes a `&Layout`. Nothing in this crate reads the running CPU; the `xstate-hw`
//! crate does that (and wraps KVM's ioctls) and hands over the same types. Above the layout,
//! [`policy`] derives a guest's CPUID from a host's and a feature selection, and [`area`] holds a
//! vCPU's save area sized from that policy.
//!
//! # Quick start
//!
//! ```
//! use xstate::image::{Context, Form, ImageBuf, Profile, Target, convert, validate};
//! use xstate::{Component, Layout, Leaf0d, Regs, Xfeatures};
//!
//! // CPUID leaf 0xD of an AMD EPYC 9654 (Zen 4): subleaf -> EAX, EBX, ECX, EDX. xstate-hw reads
//! // the running CPU's; KVM_GET_SUPPORTED_CPUID and CPUID dumps give the same table.
//! let mut leaf = Leaf0d::new();
//! for (i, r) in [
//!     (0, Regs::new(0x2E7, 0x980, 0x988, 0)),
//!     (1, Regs::new(0xF, 0x990, 0x1800, 0)),
//!     (2, Regs::new(0x100, 0x240, 0, 0)),
//!     (5, Regs::new(0x40, 0x340, 0, 0)),
//!     (6, Regs::new(0x200, 0x380, 0, 0)),
//!     (7, Regs::new(0x400, 0x580, 0, 0)),
//!     (9, Regs::new(0x8, 0x980, 0, 0)),
//!     (11, Regs::new(0x10, 0, 1, 0)),
//!     (12, Regs::new(0x18, 0, 1, 0)),
//! ] {
//!     leaf.set(i, r);
//! }
//! let zen4 = Layout::from_leaf0d(&leaf)?;
//! let xcr0 = Xfeatures(0x2E7); // x87, SSE, AVX, AVX-512, PKRU
//! assert_eq!(zen4.standard_size(xcr0), Some(2440));
//! assert_eq!(zen4.geometry(Component::OPMASK).map(|g| g.offset), Some(0x340)); // Intel: 0x440
//!
//! // An XSAVE image (here the init state), checked as XRSTOR with RFBM = XCR0 checks it, then
//! // converted to the compacted form XSAVEC writes.
//! let image = ImageBuf::init(2440, Xfeatures::EMPTY);
//! validate(&image, &zen4, Profile::Hardware, &Context::new(xcr0))?;
//! let compacted = convert(&image, &zen4, &zen4, xcr0, Target::Compacted { mask: xcr0 })?;
//! assert_eq!(compacted.image().form(), Form::Compacted);
//! # Ok::<(), Box<dyn core::error::Error>>(())
//! ```
//!
//! # What a VMM or toolstack does with it
//!
//! Each of these runs as a test of the crate (`cargo test --doc`):
//!
//! - start-up sizing of a vCPU's save area from its CPUID policy, and re-sizing when the policy
//!   changes, keeping the state: [`area`];
//! - a guest's whole CPUID table made consistent with its policy: [`policy::Policy::guest_cpuid`];
//! - migrating a `kvm_xsave` from an AMD host to an Intel one (the guest's XCR0 from
//!   KVM_GET_XCRS, the verdict, the re-layout): [`compat`];
//! - a Xen `getvcpuextstate` blob turned into the forward-compatible compacted blob:
//!   [`record::fc_blob`];
//! - the ZMM registers of every thread of a Linux core dump: [`image::regs`].
//!
//! # Features
//!
//! | feature | default | what |
//! |---|---|---|
//! | `json` | yes | CPUID data in the project's JSON form ([`cpuid::parse_json`]; `serde_json`) |
//! | `elf` | yes | the extended-state notes of ELF core dumps ([`record::elf`]; `object`) |
//! | `fixtures` | no | leaf 0xD of well-known CPUs, for tests and benchmarks; not a stable API |
//!
//! Without default features the crate needs nothing but `core` and `alloc` (it builds for
//! `x86_64-unknown-none`) and contains no `unsafe`.
//!
//! # Errors
//!
//! Every refusal is a typed error naming the rule broken and the offending bits, bytes or
//! sizes. Their `Display` is complete on its own (one line, as the `xstate` CLI prints it);
//! an error wrapping another also returns it from `source()`.
//!
//! References: the Intel SDM (Vol. 1 ch. 13, "Managing State Using the XSAVE Feature Set"),
//! the AMD APM (Vol. 2 §11.5, Vol. 3 Appendix E), the consumers mirrored (Linux, KVM, Xen, gdb,
//! CRIU), and the repository's docs: ARCHITECTURE.md, FORMATS.md, HARDWARE.md, POLICY.md.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;
#[cfg(test)]
extern crate std;

pub mod aligned;
pub mod area;
pub mod compat;
pub mod component;
pub mod cpuid;
#[cfg(any(test, feature = "fixtures"))]
pub mod fixtures;
pub mod fleet;
pub mod image;
pub mod layout;
pub mod policy;
pub mod record;
pub mod xcr0;
pub mod xfeatures;

pub use component::{Class, Component};
pub use cpuid::{CpuidData, Leaf0d, Regs, XsaveFeatures};
pub use layout::{Geometry, Layout, LayoutError};
pub use xfeatures::Xfeatures;
