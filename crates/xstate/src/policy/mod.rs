//! CPUID policies for extended state: a guest's leaf 0xD derived from a host's and a feature
//! selection, and the rules for setting the guest's XCR0 and IA32_XSS.
//!
//! A [`Policy`] sits above [`Layout`]: it takes the host's layout (from any leaf 0xD source:
//! the running CPU, a dump, KVM_GET_SUPPORTED_CPUID) and a [`Selection`], and produces every
//! subleaf of the guest's leaf 0xD as the CPU would report it (docs/POLICY.md, mirroring
//! Xen's `recalculate_xstate` and KVM's `__do_cpuid_func`):
//!
//! - 0xD.0: EDX:EAX the guest's maximum XCR0; ECX its standard size; EBX the standard size of
//!   the *current* XCR0.
//! - 0xD.1: EAX the exposed instruction features; EBX the compacted size of the current
//!   XCR0 | IA32_XSS when XSAVEC or XSAVES is exposed, else 0; EDX:ECX the maximum IA32_XSS.
//! - 0xD.i for each exposed component: EAX (size) and EBX (standard offset; 0 for supervisor
//!   components) from the host, never recomputed; ECX\[0\] (supervisor) only with XSAVES,
//!   ECX\[1\] (align64) only with XSAVEC, ECX\[2\] (XFD) only with XFD; EDX 0. Every other
//!   subleaf reads zero.
//!
//! Sizes use the host's geometry, so a guest's sizes are exactly what the hardware will use.
//! The policy refuses a selection the host cannot honour or that breaks a dependency, naming the
//! feature ([`PolicyError`]), and checks XSETBV / WRMSR IA32_XSS values against its maxima
//! ([`SetError`]).

mod feature;
mod guest_cpuid;
mod selection;
pub mod xen;
mod xsetbv;

use alloc::string::String;
use core::fmt;

pub use feature::{Feature, FeatureSet};
pub use selection::{Components, Selection};
pub use xen::{XCNTXT_MASK, XenGuest, xen_host_mask};
pub use xsetbv::SetError;

use crate::component::Component;
use crate::cpuid::{Leaf0d, Regs, XsaveFeatures};
use crate::layout::{Layout, LayoutError};
use crate::xcr0::{MaskError, check_xcr0_supported, check_xss};
use crate::xfeatures::Xfeatures;

/// Why a selection cannot become a policy.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PolicyError {
    /// A feature list that names nothing (empty, or only separators): no selection.
    EmptyList,
    /// A name in a feature list that is not a feature.
    UnknownFeature {
        /// The name.
        name: String,
    },
    /// x87 or SSE was taken away; they are always exposed.
    AlwaysOn {
        /// The name.
        name: String,
    },
    /// The host does not enumerate (all of) a feature's components.
    HostLacks {
        /// The feature.
        feature: Feature,
        /// Its components the host lacks (in CPUID 0xD.0 EDX:EAX for user components, 0xD.1
        /// EDX:ECX for supervisor components).
        missing: Xfeatures,
    },
    /// The host does not report an instruction feature in CPUID 0xD.1 EAX.
    HostLacksInstruction {
        /// The feature.
        feature: Feature,
    },
    /// The host enumerates the component, but not with the size that identifies the feature
    /// (AMD Zen 2's 64-byte bit 9 is not PKRU).
    NotRecognised {
        /// The feature.
        feature: Feature,
        /// The component.
        component: Component,
        /// Its size on the host.
        size: u32,
    },
    /// A feature is selected without one it depends on.
    Requires {
        /// The feature.
        feature: Feature,
        /// The missing prerequisite.
        prerequisite: Feature,
    },
    /// Two features that exclude each other are both selected.
    Excludes {
        /// The feature.
        feature: Feature,
        /// The other.
        other: Feature,
    },
    /// Supervisor components were selected by mask without XSAVES.
    SupervisorNeedsXsaves {
        /// The supervisor components.
        bits: Xfeatures,
    },
    /// A mask breaks an XCR0/XSS rule or names a component the host lacks.
    Mask(MaskError),
    /// The derived leaf 0xD does not make a layout (a host layout this module cannot reduce).
    Layout(LayoutError),
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PolicyError::UnknownFeature { name } => write!(
                f,
                "unknown feature {name:?} (known: all, x87, sse, {})",
                Feature::ALL.iter().map(|f| f.name()).collect::<alloc::vec::Vec<_>>().join(", ")
            ),
            PolicyError::EmptyList => {
                f.write_str("an empty feature list (name features, `all`, or `-name` to take one away)")
            }
            PolicyError::AlwaysOn { name } => write!(f, "{name} is always exposed and cannot be taken away"),
            PolicyError::HostLacks { feature, missing } => write!(
                f,
                "{feature}: the host does not enumerate component(s) {missing} ({}) in CPUID 0xD.{}",
                missing.names(),
                if feature.is_supervisor() { "1 EDX:ECX" } else { "0 EDX:EAX" }
            ),
            PolicyError::HostLacksInstruction { feature } => write!(
                f,
                "{feature}: the host does not report it in CPUID 0xD.1 EAX (bit {})",
                feature.instructions().0.trailing_zeros()
            ),
            PolicyError::NotRecognised { feature, component, size } => write!(
                f,
                "{feature}: the host's component {} is {size} bytes, not {}: it is not {feature}",
                component.index(),
                component.info().and_then(|i| i.size).unwrap_or(0)
            ),
            PolicyError::Requires { feature, prerequisite } => {
                write!(f, "{feature} requires {prerequisite}, which is not selected")
            }
            PolicyError::Excludes { feature, other } => {
                write!(f, "{feature} and {other} cannot both be exposed (they share standard-format space)")
            }
            PolicyError::SupervisorNeedsXsaves { bits } => {
                write!(f, "IA32_XSS mask {bits} ({}) needs xsaves, which is not exposed", bits.names())
            }
            PolicyError::Mask(m) => fmt::Display::fmt(m, f),
            PolicyError::Layout(e) => write!(f, "derived leaf 0xD: {e}"),
        }
    }
}

impl core::error::Error for PolicyError {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match self {
            PolicyError::Mask(m) => Some(m),
            PolicyError::Layout(e) => Some(e),
            _ => None,
        }
    }
}

impl From<MaskError> for PolicyError {
    fn from(m: MaskError) -> Self {
        PolicyError::Mask(m)
    }
}

/// A guest's extended-state CPUID policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    host: Layout,
    guest: Layout,
    xcr0_max: Xfeatures,
    xss_max: Xfeatures,
    instructions: XsaveFeatures,
}

impl Policy {
    /// Derives the policy `selection` asks for from the host's layout. Refuses a feature the
    /// host lacks, a feature without its prerequisite, exclusive features together, and masks
    /// that break the XCR0/XSS rules, naming what is at fault.
    pub fn derive(host: &Layout, selection: &Selection) -> Result<Policy, PolicyError> {
        let host_instr = FeatureSet::from_instructions(host.features());
        let mut instr = selection.instructions.unwrap_or(host_instr);
        for f in selection.without.iter().filter(|f| f.is_instruction()) {
            instr = instr.without(f);
        }
        if let Some(feature) = instr.iter().find(|f| !host_instr.contains(*f)) {
            return Err(PolicyError::HostLacksInstruction { feature });
        }
        let removed = selection.without.components();
        let legacy = Xfeatures::LEGACY & host.user_supported();
        let (xcr0, xss) = match selection.components {
            Components::All => {
                let xss = if instr.contains(Feature::Xsaves) { host.supervisor_supported() } else { Xfeatures::EMPTY };
                (host.user_supported() - removed, xss - removed)
            }
            Components::Features(set) => {
                let mut xcr0 = legacy;
                let mut xss = Xfeatures::EMPTY;
                for f in set.iter().filter(|f| !selection.without.contains(*f)) {
                    let comps = f.components();
                    let have = if f.is_supervisor() { host.supervisor_supported() } else { host.user_supported() };
                    let missing = comps - have;
                    if !missing.is_empty() {
                        return Err(PolicyError::HostLacks { feature: f, missing });
                    }
                    if let Some(c) = comps.iter().find(|c| !host.recognised(*c)) {
                        let size = host.geometry(c).map_or(0, |g| g.size);
                        return Err(PolicyError::NotRecognised { feature: f, component: c, size });
                    }
                    if f.is_supervisor() {
                        xss |= comps;
                    } else {
                        xcr0 |= comps;
                    }
                }
                (xcr0, xss)
            }
            Components::Masks { xcr0, xss } => (xcr0, xss),
        };
        // Dependencies between the features present, named.
        let present: FeatureSet = Feature::ALL
            .into_iter()
            .filter(|f| !f.is_instruction() && !(f.components() & (xcr0 | xss)).is_empty())
            .collect();
        let all = present.union(instr);
        let named = !matches!(selection.components, Components::Masks { .. });
        for f in instr.iter().chain(present.iter().filter(|_| named)) {
            if let Some(&p) = f.requires().iter().find(|p| !all.contains(**p)) {
                return Err(PolicyError::Requires { feature: f, prerequisite: p });
            }
            if let Some(o) = f.excludes().filter(|o| all.contains(*o)) {
                return Err(PolicyError::Excludes { feature: f, other: o });
            }
        }
        check_xcr0_supported(xcr0, host.user_supported(), host.supervisor_supported())?;
        check_xss(xss, host.user_supported(), host.supervisor_supported())?;
        if !xss.is_empty() && !instr.contains(Feature::Xsaves) {
            return Err(PolicyError::SupervisorNeedsXsaves { bits: xss });
        }
        let mut p = Policy {
            host: host.clone(),
            guest: host.clone(),
            xcr0_max: xcr0,
            xss_max: xss,
            instructions: instr.instructions(),
        };
        p.guest = Layout::from_leaf0d(&p.build_leaf(xcr0, xss)).map_err(PolicyError::Layout)?;
        Ok(p)
    }

    /// The host layout the policy was derived from.
    pub fn host_layout(&self) -> &Layout {
        &self.host
    }

    /// The guest's layout: [`Layout::from_leaf0d`] of the derived leaf. Its offsets and sizes are
    /// the host's; its flags are what the guest sees.
    pub fn layout(&self) -> &Layout {
        &self.guest
    }

    /// The guest's maximum XCR0 (CPUID 0xD.0 EDX:EAX).
    pub fn xcr0_max(&self) -> Xfeatures {
        self.xcr0_max
    }

    /// The guest's maximum IA32_XSS (CPUID 0xD.1 EDX:ECX).
    pub fn xss_max(&self) -> Xfeatures {
        self.xss_max
    }

    /// The exposed instruction features (CPUID 0xD.1 EAX).
    pub fn instructions(&self) -> XsaveFeatures {
        self.instructions
    }

    /// The features the policy exposes: the component features whose components it has, and
    /// the instruction features.
    pub fn features(&self) -> FeatureSet {
        let m = self.xcr0_max | self.xss_max;
        Feature::ALL
            .into_iter()
            .filter(|f| {
                if f.is_instruction() {
                    f.instructions().0 & self.instructions.0 != 0
                } else {
                    // A component the host has at another size is not the feature's (Zen 2's
                    // 64-byte bit 9 is no PKRU): passed through by `all`, never named.
                    f.components().is_subset_of(m)
                        && !f.components().is_empty()
                        && f.components().iter().all(|c| self.host.recognised(c))
                }
            })
            .collect()
    }

    /// True if the guest sees a compacted form (XSAVEC or XSAVES exposed).
    pub fn compaction(&self) -> bool {
        self.instructions.compaction()
    }

    /// Standard size with every component of the maximum XCR0 (CPUID 0xD.0 ECX): the largest
    /// offset + size over them, at least 576.
    pub fn standard_size_max(&self) -> u32 {
        self.host.standard_size(self.xcr0_max).unwrap_or(0)
    }

    /// Compacted size of the maximum XCR0 | IA32_XSS, with the host's alignment (what XSAVES
    /// with every policy component writes), whether or not the guest sees compaction.
    pub fn compacted_size_max(&self) -> u32 {
        self.host.compacted_size(self.xcr0_max | self.xss_max).unwrap_or(0)
    }

    /// Standard size for an XCR0 (`None` if it has bits beyond the policy).
    pub fn standard_size(&self, xcr0: Xfeatures) -> Option<u32> {
        if !xcr0.is_subset_of(self.xcr0_max) {
            return None;
        }
        self.host.standard_size(xcr0)
    }

    /// Compacted size for XCR0 | IA32_XSS (`None` if it has bits beyond the policy).
    pub fn compacted_size(&self, mask: Xfeatures) -> Option<u32> {
        if !mask.is_subset_of(self.xcr0_max | self.xss_max) {
            return None;
        }
        self.host.compacted_size(mask)
    }

    /// Checks a value for XCR0 (XSETBV with ECX = 0 at CPL 0): the XCR0 rules and the policy's
    /// maximum.
    pub fn check_xcr0(&self, value: Xfeatures) -> Result<(), SetError> {
        check_xcr0_supported(value, self.xcr0_max, self.xss_max | self.host.supervisor_supported())?;
        Ok(())
    }

    /// Checks a value for IA32_XSS (WRMSR 0xDA0): the MSR exists only with XSAVES; no user
    /// components, nothing beyond the policy's maximum.
    pub fn check_xss(&self, value: Xfeatures) -> Result<(), SetError> {
        if !self.instructions.xsaves() {
            return Err(SetError::XssWithoutXsaves { value });
        }
        check_xss(value, self.xcr0_max | self.host.user_supported(), self.xss_max)?;
        Ok(())
    }

    /// XSETBV as the guest would execute it: `cpl`, ECX = `index`, EDX:EAX = `value`. Returns
    /// the new XCR0, or the reason for the #GP.
    pub fn xsetbv(&self, cpl: u8, index: u32, value: u64) -> Result<Xfeatures, SetError> {
        if cpl != 0 {
            return Err(SetError::Cpl { cpl });
        }
        if index != 0 {
            return Err(SetError::XcrIndex { index });
        }
        self.check_xcr0(Xfeatures(value))?;
        Ok(Xfeatures(value))
    }

    /// The guest's leaf 0xD with `xcr0` in XCR0 and `xss` in IA32_XSS (both checked; `xss` must
    /// be empty when XSAVES is not exposed).
    pub fn leaf0d(&self, xcr0: Xfeatures, xss: Xfeatures) -> Result<Leaf0d, SetError> {
        self.check_xcr0(xcr0)?;
        if !xss.is_empty() {
            self.check_xss(xss)?;
        }
        Ok(self.build_leaf(xcr0, xss))
    }

    fn build_leaf(&self, xcr0: Xfeatures, xss: Xfeatures) -> Leaf0d {
        let i = self.instructions;
        let u = self.xcr0_max.bits();
        let s = self.xss_max.bits();
        let ebx0 = self.host.standard_size(xcr0).unwrap_or(0);
        let ebx1 = if i.compaction() { self.host.compacted_size(xcr0 | xss).unwrap_or(0) } else { 0 };
        let mut leaf = Leaf0d::new();
        leaf.set(0, Regs::new(u as u32, ebx0, self.standard_size_max(), (u >> 32) as u32));
        leaf.set(1, Regs::new(i.0, ebx1, s as u32, (s >> 32) as u32));
        for c in (self.xcr0_max | self.xss_max).iter().filter(|c| !c.is_legacy()) {
            let g = self.host.geometry(c).unwrap_or_default();
            let ecx = u32::from(g.supervisor && i.xsaves())
                | u32::from(g.align64 && i.xsavec()) << 1
                | u32::from(g.xfd && i.xfd()) << 2;
            leaf.set(c.index(), Regs::new(g.size, if g.supervisor { 0 } else { g.offset }, ecx, 0));
        }
        leaf
    }
}

#[cfg(test)]
mod tests;
