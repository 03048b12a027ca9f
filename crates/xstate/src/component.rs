//! The catalogue of XSAVE state components.
//!
//! A state component is one bit of XCR0 (user components) or IA32_XSS (supervisor components).
//! The catalogue records what the architecture fixes about each known component: its name, its
//! class, the size every CPU so far has reported for it, its gating CPUID feature and its init
//! value. Where a component lives is *not* fixed by the architecture: that comes from CPUID leaf
//! 0xD through [`crate::layout::Layout`]. Component numbers the catalogue does not know are
//! carried as "component N", never dropped (SDM Vol. 1 §13.1).

use core::fmt;
use core::ops::Range;

/// One XSAVE state component, by its bit number in XCR0/IA32_XSS/XSTATE_BV (0..=62).
///
/// Bit 63 is never a component: in XCOMP_BV it selects the compacted format and in XCR0 it is
/// reserved. [`Component::new`] refuses it.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Component(u8);

/// Whether a component is enabled through XCR0 or IA32_XSS.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Class {
    /// Enabled in XCR0; has a standard-format offset (CPUID 0xD.i ECX\[0\] = 0).
    User,
    /// Enabled in IA32_XSS; lives only in compacted images written by XSAVES (ECX\[0\] = 1).
    Supervisor,
}

/// A CPUID register, for naming feature bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reg {
    /// EAX
    Eax,
    /// EBX
    Ebx,
    /// ECX
    Ecx,
    /// EDX
    Edx,
}

/// A CPUID feature bit: `CPUID.(leaf, subleaf).reg[bit]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FeatureBit {
    /// Leaf (EAX input).
    pub leaf: u32,
    /// Subleaf (ECX input).
    pub subleaf: u32,
    /// Output register.
    pub reg: Reg,
    /// Bit number within the register.
    pub bit: u8,
    /// The feature's usual name (Linux /proc/cpuinfo style where one exists).
    pub name: &'static str,
}

/// What the architecture says about a known component.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ComponentInfo {
    /// Short identifier, used in tables, JSON and feature lists (`"zmm_hi256"`).
    pub id: &'static str,
    /// Human-readable description.
    pub description: &'static str,
    /// User (XCR0) or supervisor (IA32_XSS).
    pub class: Class,
    /// The size every enumerating CPU reports, where the architecture fixes it. `None` where it
    /// varies (Arch LBR with its depth, TILEDATA with the palette, the legacy components).
    pub size: Option<u32>,
    /// The CPUID feature that gates the component (the first one where several do).
    pub gate: Option<FeatureBit>,
}

const fn fb(leaf: u32, subleaf: u32, reg: Reg, bit: u8, name: &'static str) -> Option<FeatureBit> {
    Some(FeatureBit { leaf, subleaf, reg, bit, name })
}

const fn info(
    id: &'static str,
    description: &'static str,
    class: Class,
    size: Option<u32>,
    gate: Option<FeatureBit>,
) -> Option<ComponentInfo> {
    Some(ComponentInfo { id, description, class, size, gate })
}

use Class::{Supervisor as S, User as U};
use Reg::{Eax, Ebx, Ecx, Edx};

/// The catalogue, indexed by component number (SDM Vol. 1 Table 13-1; AMD APM Vol. 2 §11.5 for
/// LWP; the APX architecture specification for component 19).
const CATALOGUE: [Option<ComponentInfo>; 64] = {
    let mut t: [Option<ComponentInfo>; 64] = [None; 64];
    t[0] = info("x87", "x87 FPU registers", U, None, fb(1, 0, Edx, 0, "fpu"));
    t[1] = info("sse", "SSE: XMM registers and MXCSR", U, None, fb(1, 0, Edx, 25, "sse"));
    t[2] = info("avx", "AVX: upper halves of YMM0-15", U, Some(256), fb(1, 0, Ecx, 28, "avx"));
    t[3] = info("bndregs", "MPX bounds registers BND0-3", U, Some(64), fb(7, 0, Ebx, 14, "mpx"));
    t[4] = info("bndcsr", "MPX BNDCFGU and BNDSTATUS", U, Some(64), fb(7, 0, Ebx, 14, "mpx"));
    t[5] = info("opmask", "AVX-512 opmask registers k0-7", U, Some(64), fb(7, 0, Ebx, 16, "avx512f"));
    t[6] = info("zmm_hi256", "AVX-512 upper halves of ZMM0-15", U, Some(512), fb(7, 0, Ebx, 16, "avx512f"));
    t[7] = info("hi16_zmm", "AVX-512 ZMM16-31", U, Some(1024), fb(7, 0, Ebx, 16, "avx512f"));
    t[8] = info("pt", "Processor Trace", S, Some(128), fb(7, 0, Ebx, 25, "intel_pt"));
    t[9] = info("pkru", "Protection-key rights register", U, Some(8), fb(7, 0, Ecx, 3, "pku"));
    t[10] = info("pasid", "ENQCMD PASID", S, Some(8), fb(7, 0, Ecx, 29, "enqcmd"));
    t[11] = info("cet_u", "CET user state", S, Some(16), fb(7, 0, Ecx, 7, "shstk"));
    t[12] = info("cet_s", "CET supervisor shadow-stack pointers", S, Some(24), fb(7, 0, Ecx, 7, "shstk"));
    t[13] = info("hdc", "Hardware duty cycling", S, Some(8), fb(6, 0, Eax, 13, "hdc"));
    t[14] = info("uintr", "User interrupts", S, Some(48), fb(7, 0, Edx, 5, "uintr"));
    t[15] = info("lbr", "Architectural LBRs", S, None, fb(7, 0, Edx, 19, "arch_lbr"));
    t[16] = info("hwp", "HWP request", S, Some(8), fb(6, 0, Eax, 7, "hwp"));
    t[17] = info("tilecfg", "AMX tile configuration", U, Some(64), fb(7, 0, Edx, 24, "amx_tile"));
    t[18] = info("tiledata", "AMX tile data TMM0-7", U, None, fb(7, 0, Edx, 24, "amx_tile"));
    t[19] = info("apx", "APX extended GPRs R16-R31", U, Some(128), fb(7, 1, Edx, 21, "apx_f"));
    t[62] = info("lwp", "AMD lightweight profiling", U, Some(128), fb(0x8000_0001, 0, Ecx, 15, "lwp"));
    t
};

/// The catalogue's components of one class, as a mask (computed at compile time).
const fn class_mask(class: Class) -> u64 {
    let mut m = 0u64;
    let mut i = 0;
    while i < 63 {
        if let Some(info) = &CATALOGUE[i] {
            let same =
                matches!((info.class, class), (Class::User, Class::User) | (Class::Supervisor, Class::Supervisor));
            if same {
                m |= 1 << i;
            }
        }
        i += 1;
    }
    m
}

/// Every known supervisor component (PT, PASID, CET_U, CET_S, HDC, UINTR, LBR, HWP).
pub const CATALOGUE_SUPERVISOR: u64 = class_mask(Class::Supervisor);
/// Every known user component.
pub const CATALOGUE_USER: u64 = class_mask(Class::User);

impl Component {
    /// x87 FPU state (legacy region).
    pub const X87: Component = Component(0);
    /// SSE state: XMM registers and MXCSR (legacy region).
    pub const SSE: Component = Component(1);
    /// AVX: upper 128 bits of YMM0-15 ("YMM_Hi128").
    pub const AVX: Component = Component(2);
    /// MPX BND0-3.
    pub const BNDREGS: Component = Component(3);
    /// MPX BNDCFGU/BNDSTATUS.
    pub const BNDCSR: Component = Component(4);
    /// AVX-512 opmask registers.
    pub const OPMASK: Component = Component(5);
    /// AVX-512 upper 256 bits of ZMM0-15.
    pub const ZMM_HI256: Component = Component(6);
    /// AVX-512 ZMM16-31.
    pub const HI16_ZMM: Component = Component(7);
    /// Intel Processor Trace (supervisor).
    pub const PT: Component = Component(8);
    /// PKRU.
    pub const PKRU: Component = Component(9);
    /// PASID (supervisor).
    pub const PASID: Component = Component(10);
    /// CET user state (supervisor).
    pub const CET_U: Component = Component(11);
    /// CET supervisor state (supervisor).
    pub const CET_S: Component = Component(12);
    /// Hardware duty cycling (supervisor).
    pub const HDC: Component = Component(13);
    /// User interrupts (supervisor).
    pub const UINTR: Component = Component(14);
    /// Architectural LBRs (supervisor).
    pub const LBR: Component = Component(15);
    /// HWP request (supervisor).
    pub const HWP: Component = Component(16);
    /// AMX tile configuration.
    pub const TILECFG: Component = Component(17);
    /// AMX tile data.
    pub const TILEDATA: Component = Component(18);
    /// APX extended general-purpose registers.
    pub const APX: Component = Component(19);
    /// AMD lightweight profiling.
    pub const LWP: Component = Component(62);

    /// The component with bit number `index`, or `None` for 63 and above.
    pub const fn new(index: u8) -> Option<Component> {
        if index < 63 { Some(Component(index)) } else { None }
    }

    /// The bit number.
    pub const fn index(self) -> u8 {
        self.0
    }

    /// The component's bit as a mask.
    pub const fn bit(self) -> u64 {
        1u64 << self.0
    }

    /// What the catalogue knows, or `None` for a component it does not know.
    pub fn info(self) -> Option<&'static ComponentInfo> {
        CATALOGUE[self.0 as usize].as_ref()
    }

    /// The short identifier (`"opmask"`), or `"component N"` for an unknown one.
    pub fn name(self) -> ComponentName {
        ComponentName(self)
    }

    /// Looks a component up by its short identifier (`"tiledata"`) or its number (`"18"`).
    pub fn from_name(name: &str) -> Option<Component> {
        let lower = name.trim();
        if let Ok(n) = lower.parse::<u8>() {
            return Component::new(n);
        }
        if let Some(rest) = lower.strip_prefix("component ") {
            return rest.trim().parse::<u8>().ok().and_then(Component::new);
        }
        (0..63u8).filter_map(Component::new).find(|c| c.info().is_some_and(|i| i.id.eq_ignore_ascii_case(lower)))
    }

    /// The catalogue class, if the component is known. The class a CPU gives a component comes
    /// from CPUID 0xD.i ECX\[0\]; see [`crate::layout::Layout`].
    pub fn class(self) -> Option<Class> {
        self.info().map(|i| i.class)
    }

    /// True for x87 and SSE, which live in the 512-byte legacy region at fixed offsets.
    pub const fn is_legacy(self) -> bool {
        self.0 < 2
    }

    /// Byte ranges of a legacy component inside the 512-byte legacy region (SDM Vol. 1
    /// §13.4.1): x87 is bytes 0..24 and 32..160, SSE is 24..32 (MXCSR, MXCSR_MASK) and 160..416.
    /// Empty for every other component.
    pub const fn legacy_ranges(self) -> &'static [Range<usize>] {
        match self.0 {
            0 => &[0..24, 32..160],
            1 => &[24..32, 160..416],
            _ => &[],
        }
    }

    /// True when the component's init value is all zero bytes. Only x87 (FCW 0x037F) and SSE
    /// (MXCSR 0x1F80) are not (SDM Vol. 1 §13.6).
    pub const fn init_is_zero(self) -> bool {
        !self.is_legacy()
    }
}

impl fmt::Debug for Component {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Component({}: {})", self.0, self.name())
    }
}

impl fmt::Display for Component {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.name(), f)
    }
}

/// A component's display name: its catalogue identifier or `component N`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ComponentName(Component);

impl fmt::Display for ComponentName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.info() {
            Some(i) => f.pad(i.id),
            None => f.pad(&alloc::format!("component {}", self.0.0)),
        }
    }
}

/// Legacy-region and header geometry fixed by the architecture (SDM Vol. 1 §13.4).
pub mod legacy {
    /// Size of the legacy (FXSAVE-format) region.
    pub const LEGACY_SIZE: usize = 512;
    /// Offset of the XSAVE header.
    pub const HEADER_OFFSET: usize = 512;
    /// Size of the XSAVE header.
    pub const HEADER_SIZE: usize = 64;
    /// Offset of the extended region; also the smallest image.
    pub const EXTENDED_OFFSET: usize = 576;
    /// Offset of FCW.
    pub const FCW: usize = 0;
    /// Offset of FSW.
    pub const FSW: usize = 2;
    /// Offset of the abridged FTW byte.
    pub const FTW: usize = 4;
    /// Offset of FOP.
    pub const FOP: usize = 6;
    /// Offset of FIP (64-bit format).
    pub const FIP: usize = 8;
    /// Offset of FDP (64-bit format).
    pub const FDP: usize = 16;
    /// Offset of MXCSR.
    pub const MXCSR: usize = 24;
    /// Offset of MXCSR_MASK.
    pub const MXCSR_MASK: usize = 28;
    /// Offset of ST0/MM0; eight 16-byte slots.
    pub const ST0: usize = 32;
    /// Offset of XMM0; sixteen 16-byte registers.
    pub const XMM0: usize = 160;
    /// Bytes 464..512 are available to software; no XSAVE instruction touches them.
    pub const SOFTWARE: core::ops::Range<usize> = 464..512;
    /// Init value of FCW (SDM Vol. 1 §13.6).
    pub const FCW_INIT: u16 = 0x037F;
    /// Init value of MXCSR.
    pub const MXCSR_INIT: u32 = 0x1F80;
    /// The MXCSR mask an MXCSR_MASK field states: the field itself, or 0xFFBF where it is 0
    /// (processors that do not report a mask; SDM Vol. 1 §11.6.6).
    pub const fn mxcsr_mask_of_field(field: u32) -> u32 {
        if field == 0 { 0xFFBF } else { field }
    }
    /// The MXCSR mask a record's MXCSR_MASK field proves about the CPU that saved it: the
    /// field where it is non-zero (FXSAVE and XSAVE write the CPU's mask, and every x86-64 CPU
    /// has one), else none (`u32::MAX`): a zero field was written by software (QEMU builds
    /// its buffers so, gdb's gcore too) and says nothing, and Linux and KVM check MXCSR
    /// against the restoring host's mask, never the field (docs/HARDWARE.md).
    pub const fn mxcsr_mask_proven_by(field: u32) -> u32 {
        if field == 0 { u32::MAX } else { field }
    }
    /// Offset of XSTATE_BV in an image.
    pub const XSTATE_BV: usize = 512;
    /// Offset of XCOMP_BV in an image.
    pub const XCOMP_BV: usize = 520;
    /// XCOMP_BV bit 63: the image is in the compacted format.
    pub const COMPACTED: u64 = 1 << 63;
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    #[test]
    fn names_and_unknowns() {
        assert_eq!(Component::TILEDATA.name().to_string(), "tiledata");
        assert_eq!(Component::LWP.name().to_string(), "lwp");
        assert_eq!(Component::new(20).unwrap().name().to_string(), "component 20");
        assert_eq!(Component::new(61).unwrap().info(), None);
        assert_eq!(Component::new(63), None);
        assert_eq!(Component::from_name("ZMM_Hi256"), Some(Component::ZMM_HI256));
        assert_eq!(Component::from_name("40"), Component::new(40));
        assert_eq!(Component::from_name("component 40"), Component::new(40));
        assert_eq!(Component::from_name("nonsense"), None);
    }

    #[test]
    fn classes_follow_the_sdm() {
        let sup: u64 = (0..63u8)
            .filter_map(Component::new)
            .filter(|c| c.class() == Some(Class::Supervisor))
            .fold(0, |m, c| m | c.bit());
        // PT, PASID, CET_U, CET_S, HDC, UINTR, LBR, HWP.
        assert_eq!(sup, 0x1FD00);
    }

    #[test]
    fn legacy_geometry_partitions_bytes_0_to_416() {
        let mut owner = [0u8; 512];
        for c in [Component::X87, Component::SSE] {
            for r in c.legacy_ranges() {
                for b in r.clone() {
                    assert_eq!(owner[b], 0, "byte {b} owned twice");
                    owner[b] = c.index() + 1;
                }
            }
        }
        assert!(owner[..416].iter().all(|&o| o != 0));
        assert!(owner[416..].iter().all(|&o| o == 0));
        assert_eq!(owner[legacy::MXCSR], 2);
        assert_eq!(owner[legacy::FCW], 1);
    }

    #[test]
    fn gating_features() {
        assert_eq!(Component::AVX.info().unwrap().gate.unwrap().name, "avx");
        assert_eq!(Component::TILEDATA.info().unwrap().gate.unwrap().bit, 24);
        assert_eq!(Component::LWP.info().unwrap().gate.unwrap().leaf, 0x8000_0001);
    }
}
