//! `xstate-hw`: the running machine, for `xstate`.
//!
//! CPUID and XGETBV ([`cpu`]), the XSAVE family on buffers with #GP/#PF caught ([`xsave`],
//! [`fault`]; [`Host::probe`] installs the process-wide SIGSEGV/SIGILL handler that catches
//! them, chaining to the previous one, and nothing else here installs a handler), Linux's
//! `arch_prctl` permissions for AMX ([`perm`]), ptrace of NT_X86_XSTATE ([`ptrace`]) and, with
//! the `kvm` feature (default), KVM glue over a VMM's own kvm-ioctls handles (`kvm`). This is
//! the only crate of the project with `unsafe`; each block states why it is sound.
//!
//! The `testing` feature adds this project's test harness (the live self-check, random states,
//! a tracee child, KVM guest code and a VM of its own); it is not a stable API.
#![cfg(all(target_arch = "x86_64", target_os = "linux"))]

pub mod cpu;
pub mod fault;
#[cfg(feature = "kvm")]
pub mod kvm;
pub mod perm;
pub mod process;
pub mod ptrace;
#[cfg(feature = "testing")]
pub mod selfcheck;
#[cfg(feature = "testing")]
pub mod stategen;
#[cfg(feature = "testing")]
pub mod tracee;
pub mod xsave;

pub use fault::Fault;
pub use xsave::{Host, HostError, OperandError, SaveInstr};
