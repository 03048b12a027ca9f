//! Sets of state components: the type of XCR0, IA32_XSS, XSTATE_BV, XCOMP_BV and RFBM.

use core::fmt;
use core::ops::{BitAnd, BitAndAssign, BitOr, BitOrAssign, Not, Sub};
use core::str::FromStr;

use crate::component::Component;

/// A set of state components, as a 64-bit mask in the layout of XCR0.
///
/// Bit 63 can be held (an image's XCOMP_BV carries it, a hostile XSTATE_BV may), but it is never
/// yielded as a [`Component`] by [`Xfeatures::iter`].
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Xfeatures(pub u64);

impl Xfeatures {
    /// The empty set.
    pub const EMPTY: Xfeatures = Xfeatures(0);
    /// x87 only.
    pub const X87: Xfeatures = Xfeatures(0x1);
    /// x87 and SSE, the legacy region.
    pub const LEGACY: Xfeatures = Xfeatures(0x3);
    /// The MPX pair BNDREGS and BNDCSR.
    pub const MPX: Xfeatures = Xfeatures(0x18);
    /// The AVX-512 trio: opmask, ZMM_Hi256, Hi16_ZMM.
    pub const AVX512: Xfeatures = Xfeatures(0xE0);
    /// The AMX pair TILECFG and TILEDATA.
    pub const AMX: Xfeatures = Xfeatures(0x6_0000);
    /// The CET pair CET_U and CET_S.
    pub const CET: Xfeatures = Xfeatures(0x1800);
    /// Bit 63: "compacted" in XCOMP_BV, reserved everywhere else.
    pub const BIT63: Xfeatures = Xfeatures(1 << 63);
    /// Bits 0..=62, every bit that can name a component.
    pub const ALL_COMPONENTS: Xfeatures = Xfeatures(!(1 << 63));

    /// The raw mask.
    pub const fn bits(self) -> u64 {
        self.0
    }

    /// True if no bit is set.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// True if `c` is in the set.
    pub const fn contains(self, c: Component) -> bool {
        self.0 & c.bit() != 0
    }

    /// True if every bit of `self` is in `other`.
    pub const fn is_subset_of(self, other: Xfeatures) -> bool {
        self.0 & !other.0 == 0
    }

    /// The set with `c` added.
    pub const fn with(self, c: Component) -> Xfeatures {
        Xfeatures(self.0 | c.bit())
    }

    /// The set with `c` removed.
    pub const fn without(self, c: Component) -> Xfeatures {
        Xfeatures(self.0 & !c.bit())
    }

    /// Number of bits set.
    pub const fn len(self) -> u32 {
        self.0.count_ones()
    }

    /// The components in ascending bit order (bit 63 excluded).
    pub fn iter(self) -> Iter {
        Iter(self.0 & !(1 << 63))
    }

    /// The set of a single component.
    pub const fn of(c: Component) -> Xfeatures {
        Xfeatures(c.bit())
    }

    /// Displays the set as component names joined by `|` (`x87|sse|avx`), for messages.
    pub fn names(self) -> Names {
        Names(self)
    }
}

impl From<u64> for Xfeatures {
    fn from(v: u64) -> Self {
        Xfeatures(v)
    }
}

impl From<Xfeatures> for u64 {
    fn from(v: Xfeatures) -> Self {
        v.0
    }
}

impl From<Component> for Xfeatures {
    fn from(c: Component) -> Self {
        Xfeatures(c.bit())
    }
}

impl FromIterator<Component> for Xfeatures {
    fn from_iter<I: IntoIterator<Item = Component>>(iter: I) -> Self {
        iter.into_iter().fold(Xfeatures::EMPTY, |m, c| m.with(c))
    }
}

impl IntoIterator for Xfeatures {
    type Item = Component;
    type IntoIter = Iter;
    fn into_iter(self) -> Iter {
        self.iter()
    }
}

/// Iterator over the components of an [`Xfeatures`], ascending.
#[derive(Clone, Debug)]
pub struct Iter(u64);

impl Iterator for Iter {
    type Item = Component;
    #[inline]
    fn next(&mut self) -> Option<Component> {
        if self.0 == 0 {
            return None;
        }
        let i = self.0.trailing_zeros() as u8;
        self.0 &= self.0 - 1;
        Component::new(i)
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.0.count_ones() as usize;
        (n, Some(n))
    }
}

impl ExactSizeIterator for Iter {}

macro_rules! binop {
    ($tr:ident, $f:ident, $op:tt, $tra:ident, $fa:ident) => {
        impl $tr for Xfeatures {
            type Output = Xfeatures;
            #[inline]
            fn $f(self, rhs: Xfeatures) -> Xfeatures {
                Xfeatures(self.0 $op rhs.0)
            }
        }
        impl $tra for Xfeatures {
            #[inline]
            fn $fa(&mut self, rhs: Xfeatures) {
                self.0 = self.0 $op rhs.0;
            }
        }
    };
}
binop!(BitOr, bitor, |, BitOrAssign, bitor_assign);
binop!(BitAnd, bitand, &, BitAndAssign, bitand_assign);

impl Sub for Xfeatures {
    type Output = Xfeatures;
    /// Set difference.
    #[inline]
    fn sub(self, rhs: Xfeatures) -> Xfeatures {
        Xfeatures(self.0 & !rhs.0)
    }
}

impl Not for Xfeatures {
    type Output = Xfeatures;
    #[inline]
    fn not(self) -> Xfeatures {
        Xfeatures(!self.0)
    }
}

impl fmt::Debug for Xfeatures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Xfeatures({:#x}: {})", self.0, self.names())
    }
}

impl fmt::Display for Xfeatures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

impl fmt::LowerHex for Xfeatures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::LowerHex::fmt(&self.0, f)
    }
}

/// Display adapter of [`Xfeatures::names`].
#[derive(Clone, Copy, Debug)]
pub struct Names(Xfeatures);

impl fmt::Display for Names {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("none");
        }
        let mut first = true;
        for c in self.0.iter() {
            if !first {
                f.write_str("|")?;
            }
            first = false;
            write!(f, "{}", c.name())?;
        }
        if self.0.0 & (1 << 63) != 0 {
            if !first {
                f.write_str("|")?;
            }
            f.write_str("bit63")?;
        }
        Ok(())
    }
}

/// A mask that could not be parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseMaskError;

impl fmt::Display for ParseMaskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not a mask: expected hex (0x600e7) or decimal")
    }
}

impl FromStr for Xfeatures {
    type Err = ParseMaskError;
    /// Parses `0x600e7` (hex, `0x`/`0X` prefix, `_` allowed) or `393447` (decimal).
    fn from_str(s: &str) -> Result<Self, ParseMaskError> {
        parse_u64(s).map(Xfeatures).ok_or(ParseMaskError)
    }
}

/// Parses an unsigned integer written in hex with a `0x` prefix or in decimal; `_` separators
/// are allowed. Shared by every reader of masks and register values.
pub(crate) fn parse_u64(s: &str) -> Option<u64> {
    let s = s.trim();
    let (digits, radix) = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) => (h, 16),
        None => (s, 10),
    };
    if digits.is_empty() || digits.starts_with('_') {
        return None;
    }
    let mut v: u64 = 0;
    for ch in digits.chars() {
        if ch == '_' {
            continue;
        }
        let d = ch.to_digit(radix)? as u64;
        v = v.checked_mul(radix as u64)?.checked_add(d)?;
    }
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::format;
    use alloc::vec::Vec;

    #[test]
    fn parse_and_display() {
        assert_eq!("0x600e7".parse::<Xfeatures>(), Ok(Xfeatures(0x600e7)));
        assert_eq!("0X600E7".parse::<Xfeatures>(), Ok(Xfeatures(0x600e7)));
        assert_eq!("393447".parse::<Xfeatures>(), Ok(Xfeatures(0x600e7)));
        assert_eq!("0x4000_0000_0000_0007".parse::<Xfeatures>(), Ok(Xfeatures(0x4000000000000007)));
        assert!("0x".parse::<Xfeatures>().is_err());
        assert!("0x1_0000_0000_0000_0000".parse::<Xfeatures>().is_err());
        assert!("-1".parse::<Xfeatures>().is_err());
        assert!("e7".parse::<Xfeatures>().is_err());
        assert_eq!(format!("{}", Xfeatures(0x600e7)), "0x600e7");
        assert_eq!(format!("{}", Xfeatures(0x600e7).names()), "x87|sse|avx|opmask|zmm_hi256|hi16_zmm|tilecfg|tiledata");
        assert_eq!(format!("{}", Xfeatures(1 << 63 | 1 << 40).names()), "component 40|bit63");
    }

    #[test]
    fn iteration_skips_bit63() {
        let v: Vec<u8> = Xfeatures(1 << 63 | 1 << 62 | 0x5).iter().map(|c| c.index()).collect();
        assert_eq!(v, [0, 2, 62]);
    }

    #[test]
    fn set_algebra() {
        let a = Xfeatures(0xE7);
        assert!(Xfeatures::AVX512.is_subset_of(a));
        assert!(!Xfeatures::AMX.is_subset_of(a));
        assert_eq!(a - Xfeatures::AVX512, Xfeatures(0x7));
        assert_eq!((a | Xfeatures::AMX).bits(), 0x600E7);
        assert_eq!(a.len(), 6);
    }
}
