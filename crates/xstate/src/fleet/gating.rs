//! The CPUID feature flags a baseline's components gate: a guest shown a flag whose state
//! component its leaf 0xD leaves out cannot enable what the flag promises (the instructions
//! raise #UD unless XCR0 has the component: SDM Vol. 1 §13.1, and the detection procedures of
//! §14.3 for AVX and §15.2 for AVX-512, which test XCR0 before the flag), so the flag must read
//! 0, and so must the leaves describing such a feature (0x1D/0x1E without AMX).
//!
//! The flags are the catalogue's gating bits ([`crate::component::ComponentInfo::gate`]) of
//! each component feature: AVX, MPX, AVX512F, PKU, CET's SHSTK, AMX-TILE, APX_F and LWP. The
//! supervisor features other than CET (PT, PASID, HDC, UINTR, Arch LBR, HWP) are left out:
//! they work through their MSRs whether or not XSAVES manages their state, and KVM exposes
//! INTEL_PT and ARCH_LBR without their IA32_XSS bits. Instruction sets built on these flags
//! (AVX2 and the VEX sets on AVX, the AVX-512 subsets on AVX512F) go with them, as Xen's and
//! Linux's dependency trees have it; a whole-CPUID policy that clears those too replaces
//! [`gates`] without changing its callers.

use alloc::vec::Vec;

use crate::component::FeatureBit;
use crate::policy::Feature;
use crate::xfeatures::Xfeatures;

/// A CPUID feature flag and the components it needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gate {
    /// The flag.
    pub flag: FeatureBit,
    /// The components every one of which the guest must have for the flag to be shown.
    pub needs: Xfeatures,
    /// The feature whose components these are.
    pub feature: Feature,
}

/// A CPUID leaf that describes a gated feature and reads zero without it: the whole-CPUID
/// policy's table ([`crate::cpuid::gating::FEATURE_LEAVES`]: 0x1D/0x1E for AMX, 0x24 for AVX10,
/// 0x8000_001C for LWP), so a baseline and [`crate::policy::Policy::guest_cpuid`] agree.
pub type GatedLeaf = crate::cpuid::gating::FeatureLeaf;

/// Every gated leaf (see [`GatedLeaf`]).
pub const GATED_LEAVES: &[GatedLeaf] = crate::cpuid::gating::FEATURE_LEAVES;

/// The gating flags, one per component feature that has one (see the module documentation),
/// in [`Feature::ALL`] order. A feature's flag needs its components and those of the features
/// it requires (AVX512F needs AVX's too).
pub fn gates() -> Vec<Gate> {
    Feature::ALL
        .into_iter()
        .filter(|f| !f.is_instruction() && (!f.is_supervisor() || *f == Feature::Cet))
        .filter_map(|f| {
            let first = f.components().iter().next()?;
            let flag = first.info()?.gate?;
            let needs = f
                .requires()
                .iter()
                .filter(|p| !p.is_instruction())
                .fold(f.components() | Xfeatures::LEGACY, |m, p| m | p.components());
            Some(Gate { flag, needs, feature: f })
        })
        .collect()
}

/// A gating flag in a baseline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GateState {
    /// The flag.
    pub gate: Gate,
    /// True when the baseline exposes every component the flag needs: the guest may show it
    /// (where every host has it); false: it must read 0.
    pub exposed: bool,
    /// Whether every host of the baseline has the flag set; `None` when a host's source did
    /// not record its leaf.
    pub on_every_host: Option<bool>,
    /// How many hosts of the baseline have it set.
    pub hosts_with: usize,
}

/// A gated leaf in a baseline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GatedLeafState {
    /// The leaf.
    pub leaf: u32,
    /// What it describes.
    pub name: &'static str,
    /// True when the baseline has the components; false: every subleaf reads zero.
    pub exposed: bool,
}
