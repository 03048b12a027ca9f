//! Validity rules for XCR0 and IA32_XSS values.
//!
//! These are the rules a value must satisfy whatever the CPU (SDM Vol. 1 §13.3, with the
//! pairings KVM and Xen enforce): x87 is always on; AVX needs SSE; the AVX-512 trio goes
//! together and needs AVX; the MPX pair goes together; the AMX pair goes together; APX excludes
//! MPX (they share standard-format space: Linux disables XSAVE and QEMU refuses to expose both).
//! Checks against what a particular CPU or policy supports take the supported masks as
//! arguments.

use core::fmt;

use crate::component::{CATALOGUE_SUPERVISOR, CATALOGUE_USER};
use crate::xfeatures::Xfeatures;

/// The rule a mask breaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MaskRule {
    /// XCR0\[0\] (x87) must be 1.
    X87Required,
    /// XCR0\[2\] (AVX) requires XCR0\[1\] (SSE).
    AvxRequiresSse,
    /// XCR0\[7:5\] (AVX-512) must be all set or all clear.
    Avx512Together,
    /// XCR0\[7:5\] (AVX-512) requires XCR0\[2\] (AVX).
    Avx512RequiresAvx,
    /// XCR0\[3\] (BNDREGS) must equal XCR0\[4\] (BNDCSR).
    MpxTogether,
    /// XCR0\[17\] (TILECFG) must equal XCR0\[18\] (TILEDATA).
    AmxTogether,
    /// XCR0\[19\] (APX) excludes XCR0\[4:3\] (MPX): they share standard-format space.
    ApxExcludesMpx,
    /// Bit 63 is reserved in XCR0 and IA32_XSS.
    Bit63Reserved,
    /// A supervisor component was put in XCR0.
    SupervisorInXcr0,
    /// A user component was put in IA32_XSS.
    UserInXss,
    /// A bit the CPU or policy does not support (CPUID 0xD.0 EDX:EAX / 0xD.1 EDX:ECX).
    Unsupported,
}

impl MaskRule {
    /// A short statement of the rule, for messages.
    pub fn text(self) -> &'static str {
        match self {
            MaskRule::X87Required => "x87 (bit 0) must always be set",
            MaskRule::AvxRequiresSse => "AVX (bit 2) requires SSE (bit 1)",
            MaskRule::Avx512Together => "the AVX-512 components (bits 5-7) must be set together",
            MaskRule::Avx512RequiresAvx => "AVX-512 (bits 5-7) requires AVX (bit 2)",
            MaskRule::MpxTogether => "BNDREGS (bit 3) and BNDCSR (bit 4) must be set together",
            MaskRule::AmxTogether => "TILECFG (bit 17) and TILEDATA (bit 18) must be set together",
            MaskRule::ApxExcludesMpx => "APX (bit 19) and MPX (bits 3-4) cannot both be set",
            MaskRule::Bit63Reserved => "bit 63 is reserved",
            MaskRule::SupervisorInXcr0 => "supervisor components cannot be set in XCR0",
            MaskRule::UserInXss => "user components cannot be set in IA32_XSS",
            MaskRule::Unsupported => "bits not supported",
        }
    }
}

/// Which register a mask is destined for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MaskRegister {
    /// XCR0 (user components).
    Xcr0,
    /// IA32_XSS (supervisor components).
    Xss,
}

impl fmt::Display for MaskRegister {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MaskRegister::Xcr0 => "XCR0",
            MaskRegister::Xss => "IA32_XSS",
        })
    }
}

/// A mask that breaks a rule: which register, which rule, the value and the offending bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct MaskError {
    /// The register the value was meant for.
    pub register: MaskRegister,
    /// The rule broken.
    pub rule: MaskRule,
    /// The whole value.
    pub value: Xfeatures,
    /// The bits at fault.
    pub bits: Xfeatures,
}

impl fmt::Display for MaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}: {} (offending bits {} = {})",
            self.register,
            self.value,
            self.rule.text(),
            self.bits,
            self.bits.names()
        )
    }
}

impl core::error::Error for MaskError {}

fn err(register: MaskRegister, rule: MaskRule, value: Xfeatures, bits: u64) -> Result<(), MaskError> {
    Err(MaskError { register, rule, value, bits: Xfeatures(bits) })
}

/// The known supervisor components of the catalogue.
pub const fn catalogue_supervisor() -> Xfeatures {
    Xfeatures(CATALOGUE_SUPERVISOR)
}

/// Checks the CPU-independent XCR0 rules (see the module documentation). Supervisor bits are
/// recognised by the catalogue; pass a CPU's own classification to [`check_xcr0_supported`].
pub fn check_xcr0(value: Xfeatures) -> Result<(), MaskError> {
    let r = MaskRegister::Xcr0;
    let v = value.bits();
    if v & (1 << 63) != 0 {
        return err(r, MaskRule::Bit63Reserved, value, 1 << 63);
    }
    if v & 1 == 0 {
        return err(r, MaskRule::X87Required, value, 1);
    }
    if v & 0x4 != 0 && v & 0x2 == 0 {
        return err(r, MaskRule::AvxRequiresSse, value, 0x4);
    }
    let avx512 = v & 0xE0;
    if avx512 != 0 && avx512 != 0xE0 {
        return err(r, MaskRule::Avx512Together, value, avx512);
    }
    if avx512 != 0 && v & 0x4 == 0 {
        return err(r, MaskRule::Avx512RequiresAvx, value, avx512);
    }
    let mpx = v & 0x18;
    if mpx != 0 && mpx != 0x18 {
        return err(r, MaskRule::MpxTogether, value, mpx);
    }
    let amx = v & 0x6_0000;
    if amx != 0 && amx != 0x6_0000 {
        return err(r, MaskRule::AmxTogether, value, amx);
    }
    if v & (1 << 19) != 0 && mpx != 0 {
        return err(r, MaskRule::ApxExcludesMpx, value, (1 << 19) | mpx);
    }
    let sup = v & catalogue_supervisor().bits();
    if sup != 0 {
        return err(r, MaskRule::SupervisorInXcr0, value, sup);
    }
    Ok(())
}

/// The largest XCR0 within `mask` that keeps the rules of [`check_xcr0`]: groups that must be
/// set together are dropped whole when one member is missing (a dump that lost BNDCSR's
/// subleaf still enables x87..AVX-512, not BNDREGS alone), AVX without SSE and AVX-512 without
/// AVX are dropped, and so is APX beside MPX. For a CPU's complete supported mask it is the mask
/// itself (less bit 63 and supervisor bits).
pub fn largest_valid_xcr0(mask: Xfeatures) -> Xfeatures {
    let mut v = mask.bits() & !(1 << 63) & !catalogue_supervisor().bits() | 1;
    if v & 0x2 == 0 {
        v &= !0x4;
    }
    if v & 0xE0 != 0xE0 || v & 0x4 == 0 {
        v &= !0xE0;
    }
    if v & 0x18 != 0x18 {
        v &= !0x18;
    }
    if v & 0x6_0000 != 0x6_0000 {
        v &= !0x6_0000;
    }
    if v & 0x18 != 0 {
        v &= !(1 << 19);
    }
    Xfeatures(v)
}

/// Checks an XCR0 value against the rules and a CPU's supported user and supervisor masks
/// (CPUID 0xD.0 EDX:EAX and 0xD.1 EDX:ECX).
pub fn check_xcr0_supported(
    value: Xfeatures,
    user_supported: Xfeatures,
    supervisor_supported: Xfeatures,
) -> Result<(), MaskError> {
    let r = MaskRegister::Xcr0;
    let sup = value & supervisor_supported;
    if !sup.is_empty() {
        return err(r, MaskRule::SupervisorInXcr0, value, sup.bits());
    }
    check_xcr0(value)?;
    let extra = value - user_supported;
    if !extra.is_empty() {
        return err(r, MaskRule::Unsupported, value, extra.bits());
    }
    Ok(())
}

/// Checks an IA32_XSS value: bit 63 reserved, no user components (by the CPU's classification
/// and by the catalogue), nothing outside the supported supervisor mask.
pub fn check_xss(
    value: Xfeatures,
    user_supported: Xfeatures,
    supervisor_supported: Xfeatures,
) -> Result<(), MaskError> {
    let r = MaskRegister::Xss;
    let v = value.bits();
    if v & (1 << 63) != 0 {
        return err(r, MaskRule::Bit63Reserved, value, 1 << 63);
    }
    let user = v & (user_supported.bits() | CATALOGUE_USER);
    if user != 0 {
        return err(r, MaskRule::UserInXss, value, user);
    }
    let extra = value - supervisor_supported;
    if !extra.is_empty() {
        return err(r, MaskRule::Unsupported, value, extra.bits());
    }
    Ok(())
}

/// The groups of user components that the rules switch on and off together.
const GROUPS: [u64; 8] = [0x2, 0x4, 0x18, 0xE0, 1 << 9, 0x6_0000, 1 << 19, 1 << 62];

/// Every XCR0 value within `supported` that passes [`check_xcr0`], in ascending order of the
/// group combination. At most a few thousand values on any real CPU; used to explain reported
/// sizes whose XCR0 is unknown (dumps record the dumping OS's XCR0 in CPUID 0xD.0 EBX).
pub(crate) fn valid_xcr0_values(supported: Xfeatures) -> alloc::vec::Vec<Xfeatures> {
    let s = supported.bits() & !(1 << 63) & !catalogue_supervisor().bits();
    let mut groups: alloc::vec::Vec<u64> = GROUPS.iter().map(|g| g & s).filter(|&g| g != 0).collect();
    let grouped: u64 = GROUPS.iter().fold(1, |m, g| m | g);
    let mut rest = s & !grouped;
    while rest != 0 {
        let b = rest & rest.wrapping_neg();
        groups.push(b);
        rest &= rest - 1;
    }
    let mut out = alloc::vec::Vec::new();
    if s & 1 == 0 {
        return out;
    }
    if groups.len() > 16 {
        // Not a real CPU; refuse to enumerate 2^n combinations.
        return out;
    }
    for combo in 0u32..(1 << groups.len()) {
        let mut m = 1u64;
        for (i, g) in groups.iter().enumerate() {
            if combo & (1 << i) != 0 {
                m |= g;
            }
        }
        if check_xcr0(Xfeatures(m)).is_ok() {
            out.push(Xfeatures(m));
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn largest_valid_xcr0_drops_broken_groups() {
        assert_eq!(largest_valid_xcr0(Xfeatures(0xF)), Xfeatures(0x7), "BNDREGS without BNDCSR");
        assert_eq!(largest_valid_xcr0(Xfeatures(0x2FF)), Xfeatures(0x2FF));
        assert_eq!(largest_valid_xcr0(Xfeatures(0x63)), Xfeatures(0x3), "AVX-512 without AVX");
        assert_eq!(largest_valid_xcr0(Xfeatures(0x200C7)), Xfeatures(0x7), "half of AVX-512 and of AMX");
        for m in [0x0u64, 0x1, 0x5, 0x7, 0xF, 0xE7, 0x2FF, 0x602E7, 0x80007, 0x8001F, u64::MAX] {
            assert!(check_xcr0(largest_valid_xcr0(Xfeatures(m))).is_ok(), "{m:#x}");
            assert!(largest_valid_xcr0(Xfeatures(m)).is_subset_of(Xfeatures(m | 1)));
        }
    }
    use alloc::string::ToString;

    fn rule(v: u64) -> Option<MaskRule> {
        check_xcr0(Xfeatures(v)).err().map(|e| e.rule)
    }

    #[test]
    fn xcr0_rules() {
        assert_eq!(rule(0x1), None);
        assert_eq!(rule(0x3), None);
        assert_eq!(rule(0x600E7), None);
        assert_eq!(rule(0x2FF), None);
        assert_eq!(rule(0x4000000000000007), None);
        assert_eq!(rule(0x0), Some(MaskRule::X87Required));
        assert_eq!(rule(0x2), Some(MaskRule::X87Required));
        assert_eq!(rule(0x5), Some(MaskRule::AvxRequiresSse));
        assert_eq!(rule(0x67), Some(MaskRule::Avx512Together));
        assert_eq!(rule(0xE3), Some(MaskRule::Avx512RequiresAvx));
        assert_eq!(rule(0xF), Some(MaskRule::MpxTogether));
        assert_eq!(rule(0x17), Some(MaskRule::MpxTogether));
        assert_eq!(rule(0x200E7), Some(MaskRule::AmxTogether));
        assert_eq!(rule(0x400E7), Some(MaskRule::AmxTogether));
        assert_eq!(rule(0x8001F), Some(MaskRule::ApxExcludesMpx));
        assert_eq!(rule(0x80007), None);
        assert_eq!(rule(1 << 63 | 1), Some(MaskRule::Bit63Reserved));
        assert_eq!(rule(0x107), Some(MaskRule::SupervisorInXcr0));
    }

    #[test]
    fn errors_name_the_bits() {
        let e = check_xcr0(Xfeatures(0x400E7)).unwrap_err();
        assert_eq!(e.bits, Xfeatures(0x40000));
        let s = e.to_string();
        assert!(s.contains("TILECFG (bit 17)"), "{s}");
        assert!(s.contains("0x40000 = tiledata"), "{s}");
    }

    #[test]
    fn supported_masks() {
        let user = Xfeatures(0x2E7);
        let sup = Xfeatures(0x1800);
        assert!(check_xcr0_supported(Xfeatures(0x2E7), user, sup).is_ok());
        assert_eq!(check_xcr0_supported(Xfeatures(0x600E7), user, sup).unwrap_err().rule, MaskRule::Unsupported);
        assert_eq!(check_xcr0_supported(Xfeatures(0x807), user, sup).unwrap_err().rule, MaskRule::SupervisorInXcr0);
        assert!(check_xss(Xfeatures(0x800), user, sup).is_ok());
        assert!(check_xss(Xfeatures(0), user, sup).is_ok());
        assert_eq!(check_xss(Xfeatures(0x4), user, sup).unwrap_err().rule, MaskRule::UserInXss);
        assert_eq!(check_xss(Xfeatures(0x100), user, sup).unwrap_err().rule, MaskRule::Unsupported);
        assert_eq!(check_xss(Xfeatures(1 << 63), user, sup).unwrap_err().rule, MaskRule::Bit63Reserved);
    }

    #[test]
    fn enumerates_valid_values() {
        let v = valid_xcr0_values(Xfeatures(0x602E7));
        // groups: sse, avx, avx512, pkru, amx -> 32 combinations, of which valid:
        // sse on/off x avx (needs sse) x avx512 (needs avx) x pkru x amx
        assert!(v.contains(&Xfeatures(0x1)));
        assert!(v.contains(&Xfeatures(0x602E7)));
        assert!(v.contains(&Xfeatures(0x60003)));
        assert!(!v.contains(&Xfeatures(0x605)));
        assert!(v.iter().all(|m| check_xcr0(*m).is_ok()));
        assert_eq!(v.len(), 4 * 2 * 2); // {x87, +sse, +avx, +avx512} x pkru x amx
        assert!(valid_xcr0_values(Xfeatures(0)).is_empty());
    }
}
