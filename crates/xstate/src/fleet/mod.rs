//! The fleet view: what one guest policy every host of a fleet can run, and where the hosts'
//! layouts part ways.
//!
//! Operators level CPU features across hosts (libvirt's `cpu-baseline`, Xen's policy levelling,
//! Firecracker's templates, Cloud Hypervisor's profiles) by feature names only. A guest's leaf
//! 0xD also fixes where each state component sits in a standard XSAVE image, and the hardware
//! of every host writes it at *its* offset: a guest told AVX-512 is at 0x440 (Intel) that runs
//! on an AMD host, which puts it at 0x340, reads its own XSAVE images wrongly. So a
//! [`Baseline`] has two dimensions:
//!
//! - **features**: the largest XCR0 / IA32_XSS every host supports with the same component
//!   sizes, within the XCR0 rules (SDM Vol. 1 §13.3), and the XSAVE instruction features of
//!   CPUID 0xD.1 EAX every host has, with their dependencies ([`crate::policy::Feature`]); the
//!   feature flags of leaves 1, 7 and 0x8000_0001 gated on components it leaves out must read 0
//!   ([`gating`]);
//! - **layout**: for each component of the baseline, the hosts grouped by its standard offset
//!   (and, where the guest sees XSAVEC, its 64-byte alignment, which moves compacted offsets):
//!   one group means one leaf 0xD is true on every host. The hosts grouped by all components
//!   at once are the [`OffsetClass`]es; the largest is the one the baseline's leaf 0xD is
//!   derived for, and the others need their own leaf 0xD and a re-layout to migrate across.
//!
//! Everything here is computed from layouts and CPUID data handed in; nothing reads a CPU.

mod baseline;
pub mod gating;

pub use baseline::{
    Baseline, BaselineError, Drop, GiveUp, HostResult, Limit, OffsetClass, OneLeaf, Place, Placement, baseline,
};
pub use gating::{Gate, GateState, GatedLeaf, GatedLeafState};

use alloc::string::String;
use alloc::vec::Vec;

use crate::cpuid::CpuidData;
use crate::layout::{Layout, LayoutError};
use crate::policy::{Feature, FeatureSet};
use crate::xcr0::largest_valid_xcr0;
use crate::xfeatures::Xfeatures;

/// One host of a fleet: its name, its layout and what its CPUID source could not place.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Host {
    /// How to name it (a file name, `this host`).
    pub name: String,
    /// Its layout; `None` when the CPU does not enumerate XSAVE (CPUID 0xD.0 all zero).
    pub layout: Option<Layout>,
    /// Components the CPU enumerates whose CPUID 0xD subleaf the source lacks: not in `layout`,
    /// their place unknown ([`Layout::from_leaf0d_partial`]).
    pub omitted: Xfeatures,
    /// The gating flags of [`gating::gates`], in that order: set, clear, or `None` where the
    /// source did not record the leaf (a policy file has leaf 0xD only).
    pub flags: Vec<Option<bool>>,
}

/// What a host can give a guest: its components within the XCR0 rules and its instruction
/// features.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Offer {
    /// The largest valid XCR0 within the supported user components.
    pub xcr0: Xfeatures,
    /// The supported supervisor components (empty without XSAVES, which alone reaches them).
    pub xss: Xfeatures,
    /// The CPUID 0xD.1 EAX instruction features.
    pub instructions: FeatureSet,
}

impl Host {
    /// A host from its CPUID data: the layout with unplaceable components left out and named
    /// (`omitted`), no layout for a CPU without XSAVE, and the gating flags. Any other defect
    /// of leaf 0xD is the layout's error, and so is a source missing leaf 0xD
    /// ([`CpuidData::missing_leaf0d`]): that host is not one without XSAVE.
    pub fn from_cpuid(name: impl Into<String>, cpuid: &CpuidData) -> Result<Host, LayoutError> {
        if let Some(e) = cpuid.missing_leaf0d() {
            return Err(e);
        }
        let (layout, omitted) = match Layout::from_leaf0d_partial(cpuid.leaf0d()) {
            Ok(p) => (Some(p.layout), p.omitted),
            Err(LayoutError::XsaveNotEnumerated) => (None, Xfeatures::EMPTY),
            Err(e) => return Err(e),
        };
        let flags = gating::gates().iter().map(|g| cpuid.feature(g.flag)).collect();
        Ok(Host { name: name.into(), layout, omitted, flags })
    }

    /// What the host offers; nothing for a host without XSAVE.
    pub fn offer(&self) -> Offer {
        let Some(l) = &self.layout else { return Offer::default() };
        let instructions = FeatureSet::from_instructions(l.features());
        let xss = if instructions.contains(Feature::Xsaves) { l.supervisor_supported() } else { Xfeatures::EMPTY };
        Offer { xcr0: largest_valid_xcr0(l.user_supported()), xss, instructions }
    }
}

#[cfg(test)]
mod tests;
