//! `xstate-hw`: the running machine, for `xstate`.
//!
//! CPUID and XGETBV ([`cpu`]), the XSAVE family on buffers with #GP/#PF caught ([`xsave`],
//! [`fault`]), and Linux's `arch_prctl` permissions for AMX ([`perm`]). This is the only crate
//! of the project with `unsafe`; each block states why it is sound.
#![cfg(all(target_arch = "x86_64", target_os = "linux"))]

pub mod cpu;
pub mod fault;
pub mod kvm;
pub mod perm;
pub mod process;
pub mod ptrace;
pub mod selfcheck;
pub mod stategen;
pub mod tracee;
pub mod xsave;

pub use fault::Fault;
pub use xsave::{Host, HostError, OperandError, SaveInstr};
