//! Which CPUID feature bits and leaves enumerate features that need a state component.
//!
//! An instruction set whose registers live in a user state component is *XSAVE-enabled*: its
//! instructions raise #UD unless XCR0 has that component (SDM Vol. 1 §13.1 and the section on
//! each component in §13.5; the detection procedures of §14.3 for AVX and §15.2-15.4 for
//! AVX-512, which test XCR0 before the CPUID flag). A guest that sees such a flag with the
//! component absent from its leaf 0xD cannot enable it: Linux warns and clears the feature,
//! other kernels fault. So when a policy hides a component, every flag below that needs it is
//! cleared, with the flags of the instruction sets built on it (AVX2 and the VEX extensions on
//! AVX, the AVX-512 subsets on AVX512F, the AMX extensions on AMX-TILE: the dependency trees of
//! Xen's `gen-cpuid.py` and Linux's `cpuid-deps.c`), and the leaves that describe the feature
//! (0x1D/0x1E for AMX, 0x24 for AVX10, 0x8000_001C for LWP) read zero.
//!
//! Supervisor components are *XSAVE-managed*, not XSAVE-enabled: Processor Trace, HDC, HWP,
//! Arch LBR, PASID and UINTR work through their MSRs whether or not XSAVES manages their state,
//! and KVM exposes INTEL_PT and ARCH_LBR without their IA32_XSS bits. Only CET is tied to its
//! components: KVM clears SHSTK and IBT when it cannot support CET_U and CET_S in IA32_XSS, and
//! Linux disables user shadow stacks without the CET_U component.
//!
//! [`crate::fleet`] reports one flag per feature (the catalogue's gate) for a fleet's baseline;
//! this table is every flag a policy clears.
//!
//! Bit positions: SDM Vol. 2A, CPUID (the feature-flag tables of leaves 1, 7.0, 7.1) and the
//! Intel ISE reference (319433) for AMX, AVX10 and APX; AMD APM Vol. 3, Appendix E, for leaf
//! 0x8000_0001 (XOP, FMA4, LWP) and the AMD Lightweight Profiling Specification for 0x8000_001C.

use crate::component::Reg;
use crate::xfeatures::Xfeatures;

/// A group of CPUID feature flags that need state components.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlagGroup {
    /// Leaf (EAX input).
    pub leaf: u32,
    /// Subleaf (ECX input).
    pub subleaf: u32,
    /// Output register.
    pub reg: Reg,
    /// The flags (a mask of the register's bits).
    pub bits: u32,
    /// The flags' names, in bit order.
    pub names: &'static str,
    /// The components the flags need: all of them must be exposed.
    pub needs: Xfeatures,
    /// Where the dependency is stated.
    pub source: &'static str,
}

/// A CPUID leaf that describes a feature, all of whose subleaves read zero without it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FeatureLeaf {
    /// The leaf.
    pub leaf: u32,
    /// What it describes.
    pub name: &'static str,
    /// The components the feature needs.
    pub needs: Xfeatures,
    /// Where it is specified.
    pub source: &'static str,
}

const SSE_AVX: Xfeatures = Xfeatures(0x6);
const AVX512: Xfeatures = Xfeatures(0xE6);
const MPX: Xfeatures = Xfeatures(0x18);
const PKRU: Xfeatures = Xfeatures(1 << 9);
const CET: Xfeatures = Xfeatures(0x1800);
const AMX: Xfeatures = Xfeatures(0x6_0000);
const APX: Xfeatures = Xfeatures(1 << 19);
const LWP: Xfeatures = Xfeatures(1 << 62);

const fn group(
    leaf: u32,
    subleaf: u32,
    reg: Reg,
    bits: u32,
    names: &'static str,
    needs: Xfeatures,
    source: &'static str,
) -> FlagGroup {
    FlagGroup { leaf, subleaf, reg, bits, names, needs, source }
}

const AVX_SRC: &str = "SDM Vol. 1 §13.5.3, §14.3: AVX and VEX-encoded instructions need XCR0[2:1] = 11b";
const AVX512_SRC: &str = "SDM Vol. 1 §13.5.5, §15.2-15.4: EVEX instructions need XCR0[7:5] = 111b and XCR0[2:1]";
const AMX_SRC: &str = "Intel ISE reference (319433), Intel AMX: tile instructions need XCR0[18:17] = 11b";

/// Every gated flag group, by leaf.
pub const FLAG_GROUPS: &[FlagGroup] = &[
    group(1, 0, Reg::Ecx, 1 << 12 | 1 << 28 | 1 << 29, "fma avx f16c", SSE_AVX, AVX_SRC),
    group(7, 0, Reg::Ebx, 1 << 5, "avx2", SSE_AVX, AVX_SRC),
    group(7, 0, Reg::Ecx, 1 << 9 | 1 << 10, "vaes vpclmulqdq", SSE_AVX, AVX_SRC),
    group(7, 1, Reg::Eax, 0x7 | 1 << 4 | 1 << 23, "sha512 sm3 sm4 avx_vnni avx_ifma", SSE_AVX, AVX_SRC),
    group(7, 1, Reg::Edx, 1 << 4 | 1 << 5 | 1 << 10, "avx_vnni_int8 avx_ne_convert avx_vnni_int16", SSE_AVX, AVX_SRC),
    group(
        0x8000_0001,
        0,
        Reg::Ecx,
        1 << 11 | 1 << 16,
        "xop fma4",
        SSE_AVX,
        "AMD APM Vol. 3, Appendix E: XOP and FMA4 are VEX-like and need YMM state (XCR0[2:1])",
    ),
    group(7, 0, Reg::Ebx, 1 << 14, "mpx", MPX, "SDM Vol. 1 §13.5.4: MPX instructions need XCR0[4:3] = 11b"),
    group(
        7,
        0,
        Reg::Ebx,
        1 << 16 | 1 << 17 | 1 << 21 | 1 << 26 | 1 << 27 | 1 << 28 | 1 << 30 | 1 << 31,
        "avx512f avx512dq avx512ifma avx512pf avx512er avx512cd avx512bw avx512vl",
        AVX512,
        AVX512_SRC,
    ),
    group(
        7,
        0,
        Reg::Ecx,
        1 << 1 | 1 << 6 | 1 << 11 | 1 << 12 | 1 << 14,
        "avx512vbmi avx512_vbmi2 avx512_vnni avx512_bitalg avx512_vpopcntdq",
        AVX512,
        AVX512_SRC,
    ),
    group(
        7,
        0,
        Reg::Edx,
        1 << 2 | 1 << 3 | 1 << 8 | 1 << 23,
        "avx512_4vnniw avx512_4fmaps avx512_vp2intersect avx512_fp16",
        AVX512,
        AVX512_SRC,
    ),
    group(7, 1, Reg::Eax, 1 << 5, "avx512_bf16", AVX512, AVX512_SRC),
    group(
        7,
        1,
        Reg::Edx,
        1 << 19,
        "avx10",
        AVX512,
        "Intel AVX10 architecture specification: AVX10 enumerates the AVX-512 state (opmask, ZMM)",
    ),
    group(
        7,
        0,
        Reg::Ecx,
        1 << 3 | 1 << 4,
        "pku ospke",
        PKRU,
        "SDM Vol. 1 §13.5.7, Vol. 3A §4.6.2: RDPKRU/WRPKRU state is XCR0[9]",
    ),
    group(
        7,
        0,
        Reg::Ecx,
        1 << 7,
        "shstk",
        CET,
        "SDM Vol. 1 §13.5.9: CET state is IA32_XSS[12:11]; KVM clears SHSTK/IBT without both",
    ),
    group(
        7,
        0,
        Reg::Edx,
        1 << 20,
        "ibt",
        CET,
        "SDM Vol. 1 §13.5.9: CET state is IA32_XSS[12:11]; KVM clears SHSTK/IBT without both",
    ),
    group(7, 0, Reg::Edx, 1 << 22 | 1 << 24 | 1 << 25, "amx_bf16 amx_tile amx_int8", AMX, AMX_SRC),
    group(7, 1, Reg::Eax, 1 << 21, "amx_fp16", AMX, AMX_SRC),
    group(7, 1, Reg::Edx, 1 << 8, "amx_complex", AMX, AMX_SRC),
    group(7, 1, Reg::Edx, 1 << 21, "apx_f", APX, "Intel APX architecture specification: R16-R31 are XCR0[19]"),
    group(
        0x8000_0001,
        0,
        Reg::Ecx,
        1 << 15,
        "lwp",
        LWP,
        "AMD Lightweight Profiling Specification (43724): LWP state is XCR0[62]",
    ),
];

/// Leaves that describe a gated feature.
pub const FEATURE_LEAVES: &[FeatureLeaf] = &[
    FeatureLeaf { leaf: 0x1D, name: "AMX tile palettes", needs: AMX, source: AMX_SRC },
    FeatureLeaf { leaf: 0x1E, name: "AMX TMUL information", needs: AMX, source: AMX_SRC },
    FeatureLeaf {
        leaf: 0x24,
        name: "AVX10 converged vector ISA",
        needs: AVX512,
        source: "Intel AVX10 architecture specification",
    },
    FeatureLeaf {
        leaf: 0x8000_001C,
        name: "LWP capabilities",
        needs: LWP,
        source: "AMD Lightweight Profiling Specification (43724)",
    },
];

/// The gates whose components are not all in `exposed`: the flags a CPU (or guest) exposing
/// only `exposed` must not report.
pub fn closed_by(exposed: Xfeatures) -> impl Iterator<Item = &'static FlagGroup> {
    FLAG_GROUPS.iter().filter(move |g| !g.needs.is_subset_of(exposed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::component::Component;

    /// Every component's catalogue gate is in the table, needing that component.
    #[test]
    fn catalogue_gates_are_in_the_table() {
        for c in (2..63u8).filter_map(Component::new) {
            let Some(g) = c.info().and_then(|i| i.gate) else { continue };
            let sup = c.class() == Some(crate::component::Class::Supervisor);
            let found = FLAG_GROUPS
                .iter()
                .find(|t| t.leaf == g.leaf && t.subleaf == g.subleaf && t.reg == g.reg && t.bits >> g.bit & 1 == 1);
            match found {
                Some(t) => assert!(t.needs.contains(c), "{c}: {} needs {}", t.names, t.needs),
                None => assert!(sup && c != Component::CET_U && c != Component::CET_S, "{c}: gate {} missing", g.name),
            }
        }
    }

    /// No flag is listed twice, and each name list counts the bits.
    #[test]
    fn flags_are_listed_once() {
        for (i, a) in FLAG_GROUPS.iter().enumerate() {
            assert_eq!(a.names.split(' ').count(), a.bits.count_ones() as usize, "{}", a.names);
            for b in &FLAG_GROUPS[i + 1..] {
                if (a.leaf, a.subleaf, a.reg) == (b.leaf, b.subleaf, b.reg) {
                    assert_eq!(a.bits & b.bits, 0, "{} / {}", a.names, b.names);
                }
            }
        }
    }
}
