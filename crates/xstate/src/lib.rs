//! `xstate`: x86 extended processor state, the state XSAVE and XRSTOR save and load.
//!
//! Data flows one way: CPUID ([`cpuid`]) gives a [`layout::Layout`], and every operation that
//! depends on geometry takes a `&Layout`. Nothing in this crate reads the running CPU; the
//! `xstate-hw` crate does that and hands over the same types. Above the layout, [`policy`]
//! derives a guest's leaf 0xD from a host's and a feature selection, and [`area`] holds a
//! vCPU's save area sized from that policy.
//!
//! The crate is `no_std` + `alloc` and contains no `unsafe`.
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
