//! The features a guest policy is built from, by name: groups of state components (what a
//! hypervisor exposes through CPUID leaves 1, 7 and 0x8000_0001) and the XSAVE instruction
//! features of CPUID 0xD.1 EAX.
//!
//! The dependencies are those the hypervisors enforce when they derive a guest's leaf 0xD (Xen's
//! `recalculate_xstate` and feature deps, KVM's `kvm_get_filtered_xcr0`; docs/POLICY.md)
//! and the XCR0 rules of [`crate::xcr0`]: component groups go all or nothing (AVX-512's three,
//! MPX's two, AMX's two, CET's user and supervisor parts); AVX-512 needs AVX; APX and MPX exclude
//! each other (they share standard-format space); supervisor components need XSAVES (Linux
//! refuses a supervisor component without it); XSAVES needs XSAVEC (every CPU that has XSAVES
//! has XSAVEC: 281 of 281 complete dumps, and the compacted XRSTOR is enumerated by XSAVEC).

use core::fmt;

use crate::cpuid::XsaveFeatures;
use crate::xfeatures::Xfeatures;

/// A feature a policy can expose.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Feature {
    /// AVX: YMM_Hi128 (component 2).
    Avx,
    /// MPX: BNDREGS and BNDCSR (3, 4).
    Mpx,
    /// AVX-512: opmask, ZMM_Hi256, Hi16_ZMM (5, 6, 7).
    Avx512,
    /// Processor Trace (8, supervisor).
    Pt,
    /// Protection keys: PKRU (9).
    Pku,
    /// ENQCMD PASID (10, supervisor).
    Pasid,
    /// CET: CET_U and CET_S (11, 12, supervisor).
    Cet,
    /// Hardware duty cycling (13, supervisor).
    Hdc,
    /// User interrupts (14, supervisor).
    Uintr,
    /// Architectural LBRs (15, supervisor).
    Lbr,
    /// HWP request (16, supervisor).
    Hwp,
    /// AMX: TILECFG and TILEDATA (17, 18).
    Amx,
    /// APX extended GPRs (19).
    Apx,
    /// AMD lightweight profiling (62).
    Lwp,
    /// CPUID 0xD.1 EAX\[0\]: XSAVEOPT.
    Xsaveopt,
    /// CPUID 0xD.1 EAX\[1\]: XSAVEC and the compacted form of XRSTOR.
    Xsavec,
    /// CPUID 0xD.1 EAX\[2\]: XGETBV with ECX = 1.
    Xgetbv1,
    /// CPUID 0xD.1 EAX\[3\]: XSAVES/XRSTORS and IA32_XSS.
    Xsaves,
    /// CPUID 0xD.1 EAX\[4\]: extended feature disable (IA32_XFD).
    Xfd,
}

use Feature::*;

impl Feature {
    /// Every feature, in component order, then the instruction features.
    pub const ALL: [Feature; 19] = [
        Avx, Mpx, Avx512, Pt, Pku, Pasid, Cet, Hdc, Uintr, Lbr, Hwp, Amx, Apx, Lwp, Xsaveopt, Xsavec, Xgetbv1, Xsaves,
        Xfd,
    ];

    /// The name used in feature lists (`"avx512"`).
    pub const fn name(self) -> &'static str {
        match self {
            Avx => "avx",
            Mpx => "mpx",
            Avx512 => "avx512",
            Pt => "pt",
            Pku => "pku",
            Pasid => "pasid",
            Cet => "cet",
            Hdc => "hdc",
            Uintr => "uintr",
            Lbr => "lbr",
            Hwp => "hwp",
            Amx => "amx",
            Apx => "apx",
            Lwp => "lwp",
            Xsaveopt => "xsaveopt",
            Xsavec => "xsavec",
            Xgetbv1 => "xgetbv1",
            Xsaves => "xsaves",
            Xfd => "xfd",
        }
    }

    /// The feature of a name (case-insensitive). `avx512f`, `intel_pt`, `pkru`, `amx_tile`,
    /// `shstk` and `apx_f` are accepted as aliases.
    pub fn from_name(name: &str) -> Option<Feature> {
        let n = name.trim();
        let alias = match n.to_ascii_lowercase().as_str() {
            "avx512f" => Some(Avx512),
            "intel_pt" => Some(Pt),
            "pkru" => Some(Pku),
            "amx_tile" => Some(Amx),
            "shstk" => Some(Cet),
            "apx_f" => Some(Apx),
            "arch_lbr" => Some(Lbr),
            _ => None,
        };
        alias.or_else(|| Feature::ALL.into_iter().find(|f| f.name().eq_ignore_ascii_case(n)))
    }

    /// The state components the feature exposes (empty for instruction features).
    pub const fn components(self) -> Xfeatures {
        Xfeatures(match self {
            Avx => 1 << 2,
            Mpx => 0x18,
            Avx512 => 0xE0,
            Pt => 1 << 8,
            Pku => 1 << 9,
            Pasid => 1 << 10,
            Cet => 0x1800,
            Hdc => 1 << 13,
            Uintr => 1 << 14,
            Lbr => 1 << 15,
            Hwp => 1 << 16,
            Amx => 0x6_0000,
            Apx => 1 << 19,
            Lwp => 1 << 62,
            _ => 0,
        })
    }

    /// The CPUID 0xD.1 EAX bit of an instruction feature (empty for component features).
    pub const fn instructions(self) -> XsaveFeatures {
        XsaveFeatures(match self {
            Xsaveopt => 1,
            Xsavec => 2,
            Xgetbv1 => 4,
            Xsaves => 8,
            Xfd => 16,
            _ => 0,
        })
    }

    /// True for the CPUID 0xD.1 EAX features.
    pub const fn is_instruction(self) -> bool {
        self.instructions().0 != 0
    }

    /// True if the feature's components are supervisor components (IA32_XSS).
    pub const fn is_supervisor(self) -> bool {
        matches!(self, Pt | Pasid | Cet | Hdc | Uintr | Lbr | Hwp)
    }

    /// Features that must be exposed with this one.
    pub const fn requires(self) -> &'static [Feature] {
        match self {
            Avx512 => &[Avx],
            Xsaves => &[Xsavec],
            f if f.is_supervisor() => &[Xsaves],
            _ => &[],
        }
    }

    /// A feature that cannot be exposed together with this one.
    pub const fn excludes(self) -> Option<Feature> {
        match self {
            Apx => Some(Mpx),
            Mpx => Some(Apx),
            _ => None,
        }
    }

    /// The component feature that exposes component `index`, if any.
    pub fn of_component(index: u8) -> Option<Feature> {
        let bit = 1u64.checked_shl(index as u32)?;
        Feature::ALL.into_iter().find(|f| f.components().bits() & bit != 0)
    }
}

impl fmt::Display for Feature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}

/// A set of [`Feature`]s.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FeatureSet(u32);

impl FeatureSet {
    /// No feature.
    pub const EMPTY: FeatureSet = FeatureSet(0);

    const fn bit(f: Feature) -> u32 {
        1 << f as u32
    }

    /// The set with `f` added.
    pub const fn with(self, f: Feature) -> FeatureSet {
        FeatureSet(self.0 | Self::bit(f))
    }

    /// The set with `f` removed.
    pub const fn without(self, f: Feature) -> FeatureSet {
        FeatureSet(self.0 & !Self::bit(f))
    }

    /// Both sets' members.
    pub const fn union(self, other: FeatureSet) -> FeatureSet {
        FeatureSet(self.0 | other.0)
    }

    /// True if `f` is in the set.
    pub const fn contains(self, f: Feature) -> bool {
        self.0 & Self::bit(f) != 0
    }

    /// True if the set is empty.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The members, in [`Feature::ALL`] order.
    pub fn iter(self) -> impl Iterator<Item = Feature> {
        Feature::ALL.into_iter().filter(move |f| self.contains(*f))
    }

    /// The components of the member features.
    pub fn components(self) -> Xfeatures {
        self.iter().fold(Xfeatures::EMPTY, |m, f| m | f.components())
    }

    /// The CPUID 0xD.1 EAX bits of the member features.
    pub fn instructions(self) -> XsaveFeatures {
        XsaveFeatures(self.iter().fold(0, |m, f| m | f.instructions().0))
    }

    /// The instruction features of a CPUID 0xD.1 EAX value (bits above 4 are dropped).
    pub fn from_instructions(eax: XsaveFeatures) -> FeatureSet {
        Feature::ALL
            .into_iter()
            .filter(|f| f.is_instruction() && f.instructions().0 & eax.0 != 0)
            .fold(FeatureSet::EMPTY, FeatureSet::with)
    }
}

impl FromIterator<Feature> for FeatureSet {
    fn from_iter<I: IntoIterator<Item = Feature>>(iter: I) -> Self {
        iter.into_iter().fold(FeatureSet::EMPTY, FeatureSet::with)
    }
}

impl fmt::Display for FeatureSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("none");
        }
        for (i, x) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(x.name())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::component::{Class, Component};

    #[test]
    fn names_round_trip_and_aliases() {
        for f in Feature::ALL {
            assert_eq!(Feature::from_name(f.name()), Some(f));
            assert_eq!(Feature::from_name(&f.name().to_ascii_uppercase()), Some(f));
        }
        assert_eq!(Feature::from_name("avx512f"), Some(Avx512));
        assert_eq!(Feature::from_name("sse"), None);
        assert_eq!(Feature::from_name(""), None);
    }

    #[test]
    fn component_features_partition_the_known_components_above_sse() {
        let mut seen = Xfeatures::EMPTY;
        for f in Feature::ALL {
            let c = f.components();
            assert!((seen & c).is_empty(), "{f} overlaps");
            seen |= c;
            assert_eq!(f.is_instruction(), c.is_empty());
            for comp in c.iter() {
                assert_eq!(comp.class() == Some(Class::Supervisor), f.is_supervisor(), "{f}");
                assert_eq!(Feature::of_component(comp.index()), Some(f));
            }
        }
        let known: Xfeatures = (2..63u8)
            .filter_map(Component::new)
            .filter(|c| c.info().is_some())
            .fold(Xfeatures::EMPTY, |m, c| m.with(c));
        assert_eq!(seen, known);
        assert_eq!(Feature::of_component(1), None);
        assert_eq!(Feature::of_component(200), None);
    }

    #[test]
    fn sets() {
        let s: FeatureSet = [Avx, Avx512, Xsavec].into_iter().collect();
        assert_eq!(s.components(), Xfeatures(0xE4));
        assert_eq!(s.instructions(), XsaveFeatures(2));
        assert_eq!(alloc::format!("{s}"), "avx,avx512,xsavec");
        assert_eq!(FeatureSet::from_instructions(XsaveFeatures(0x1F)).instructions(), XsaveFeatures(0x1F));
        assert!(!s.without(Avx).contains(Avx));
    }
}
