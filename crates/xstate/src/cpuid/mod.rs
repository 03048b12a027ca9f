//! CPUID as data: leaf 0xD (all 64 subleaves) as typed views, the other leaves a consumer may
//! want (vendor, feature bits), and readers for dump formats.
//!
//! Nothing here executes CPUID: the host reader lives in the hardware crate and produces the
//! same [`CpuidData`] the dump readers do.

mod aida;
pub mod gating;
#[cfg(feature = "json")]
mod json;
mod leaf0d;
mod tool;

use alloc::collections::BTreeMap;
use alloc::string::String;
use core::fmt;

pub use aida::parse_aida;
#[cfg(feature = "json")]
pub use json::{parse_json, to_json_value};
pub use leaf0d::{ComponentLeaf, Leaf0d, XsaveFeatures};
pub use tool::parse_cpuid_tool;

use crate::component::{FeatureBit, Reg};

/// The four output registers of one CPUID query.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Regs {
    /// EAX
    pub eax: u32,
    /// EBX
    pub ebx: u32,
    /// ECX
    pub ecx: u32,
    /// EDX
    pub edx: u32,
}

impl Regs {
    /// Builds from the four registers in EAX, EBX, ECX, EDX order.
    pub const fn new(eax: u32, ebx: u32, ecx: u32, edx: u32) -> Regs {
        Regs { eax, ebx, ecx, edx }
    }

    /// True if all four registers are zero.
    pub const fn is_zero(&self) -> bool {
        self.eax | self.ebx | self.ecx | self.edx == 0
    }

    /// One register by name.
    pub const fn get(&self, reg: Reg) -> u32 {
        match reg {
            Reg::Eax => self.eax,
            Reg::Ebx => self.ebx,
            Reg::Ecx => self.ecx,
            Reg::Edx => self.edx,
        }
    }
}

/// Where a [`CpuidData`] came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CpuidFormat {
    /// AIDA64 / InstLatX64 text dump (`CPUID 0000000D: ...-...-...-... [SL 00]`).
    Aida,
    /// Output of the Linux `cpuid -r` tool (`0x0000000d 0x00: eax=0x... ebx=...`).
    CpuidTool,
    /// The project's JSON (`parse_json`, with the `json` feature).
    Json,
    /// The CPUID instruction on the running CPU.
    Host,
    /// Built in code.
    Synthetic,
    /// The guest CPUID a VMM snapshot carries (Cloud Hypervisor's `cpuid`, Firecracker's
    /// `kvm_cpuid_entry2` records; [`crate::record::carried_cpuid`]).
    Snapshot,
}

/// The CPUID leaves of one logical CPU, as read from some source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CpuidData {
    /// Where it came from.
    pub format: CpuidFormat,
    entries: BTreeMap<(u32, u32), Regs>,
    leaf0d: Leaf0d,
}

impl CpuidData {
    /// An empty set of leaves.
    pub fn new(format: CpuidFormat) -> CpuidData {
        CpuidData { format, entries: BTreeMap::new(), leaf0d: Leaf0d::new() }
    }

    /// Builds from a leaf 0xD alone (no vendor or feature leaves).
    pub fn from_leaf0d(format: CpuidFormat, leaf0d: Leaf0d) -> CpuidData {
        let mut d = CpuidData::new(format);
        d.leaf0d = leaf0d;
        d
    }

    /// Records one query's result. Leaf 0xD goes into [`CpuidData::leaf0d`]; subleaves above
    /// 63 of leaf 0xD are ignored (the architecture defines none).
    pub fn insert(&mut self, leaf: u32, subleaf: u32, regs: Regs) {
        if leaf == 0xD {
            if subleaf < 64 {
                self.leaf0d.set(subleaf as u8, regs);
            }
        } else {
            self.entries.insert((leaf, subleaf), regs);
        }
    }

    /// The result of a query other than leaf 0xD, if the source recorded it.
    pub fn get(&self, leaf: u32, subleaf: u32) -> Option<Regs> {
        if leaf == 0xD {
            return (subleaf < 64 && self.leaf0d.recorded(subleaf as u8)).then(|| self.leaf0d.get(subleaf as u8));
        }
        self.entries.get(&(leaf, subleaf)).copied()
    }

    /// Leaf 0xD.
    pub fn leaf0d(&self) -> &Leaf0d {
        &self.leaf0d
    }

    /// Mutable leaf 0xD.
    pub fn leaf0d_mut(&mut self) -> &mut Leaf0d {
        &mut self.leaf0d
    }

    /// Every recorded query other than leaf 0xD, ascending.
    pub fn entries(&self) -> impl Iterator<Item = ((u32, u32), Regs)> + '_ {
        self.entries.iter().map(|(k, v)| (*k, *v))
    }

    /// The 12-byte vendor string of leaf 0 (`GenuineIntel`), if recorded.
    pub fn vendor(&self) -> Option<String> {
        let r = self.get(0, 0)?;
        let mut s = String::new();
        for w in [r.ebx, r.edx, r.ecx] {
            for b in w.to_le_bytes() {
                s.push(if b.is_ascii_graphic() || b == b' ' { b as char } else { '?' });
            }
        }
        Some(s)
    }

    /// The brand string of leaves 0x8000_0002..4, trimmed, if recorded.
    pub fn brand(&self) -> Option<String> {
        let mut bytes = alloc::vec::Vec::new();
        for leaf in 0x8000_0002..=0x8000_0004u32 {
            let r = self.get(leaf, 0)?;
            for w in [r.eax, r.ebx, r.ecx, r.edx] {
                bytes.extend_from_slice(&w.to_le_bytes());
            }
        }
        let s: String =
            bytes.iter().take_while(|&&b| b != 0).map(|&b| if b.is_ascii() { b as char } else { '?' }).collect();
        let t = s.trim();
        (!t.is_empty()).then(|| String::from(t))
    }

    /// A source that records no subleaf of leaf 0xD although it shows the CPU has the leaf
    /// (leaf 1 ECX bit 26, XSAVE, set; or a maximum basic leaf of at least 0xD) is a dump
    /// missing leaf 0xD: [`LayoutError::Leaf0dMissing`](crate::layout::LayoutError::Leaf0dMissing),
    /// never read as a CPU without XSAVE. So is one whose 0xD.0 is all zero while leaf 1 says
    /// XSAVE ([`LayoutError::Leaf0dEmpty`](crate::layout::LayoutError::Leaf0dEmpty)): a CPU with
    /// XSAVE enumerates x87 and SSE there (SDM Vol. 1 §13.2). `None` when leaf 0xD is recorded
    /// or the CPU has none.
    pub fn missing_leaf0d(&self) -> Option<crate::layout::LayoutError> {
        let xsave_flag = self.get(1, 0).map(|r| r.ecx >> 26 & 1 != 0);
        if self.leaf0d.recorded_mask() != 0 {
            let empty = !self.leaf0d.xsave_enumerated();
            return (empty && xsave_flag == Some(true)).then_some(crate::layout::LayoutError::Leaf0dEmpty);
        }
        let max_leaf = self.get(0, 0).map(|r| r.eax);
        (xsave_flag == Some(true) || max_leaf.is_some_and(|m| m >= 0xD))
            .then_some(crate::layout::LayoutError::Leaf0dMissing { xsave_flag, max_leaf })
    }

    /// The value of a feature bit, or `None` if its leaf was not recorded.
    pub fn feature(&self, f: FeatureBit) -> Option<bool> {
        self.get(f.leaf, f.subleaf).map(|r| r.get(f.reg) >> f.bit & 1 != 0)
    }
}

/// A dump that could not be read: the 1-based line (where there is one) and what was wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ParseError {
    /// 1-based line number of the offending line, if the problem has one.
    pub line: Option<usize>,
    /// What was wrong.
    pub message: String,
}

impl ParseError {
    pub(crate) fn at(line: usize, message: impl Into<String>) -> ParseError {
        ParseError { line: Some(line), message: message.into() }
    }
    pub(crate) fn whole(message: impl Into<String>) -> ParseError {
        ParseError { line: None, message: message.into() }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(l) => write!(f, "line {l}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl core::error::Error for ParseError {}

/// Reads a CPUID dump in any supported format, recognised by its content: JSON (starts with
/// `{`), `cpuid -r` (lines `0x... 0x..: eax=...`), or AIDA64/InstLatX64 text.
pub fn parse(text: &str) -> Result<CpuidData, ParseError> {
    let t = text.trim_start_matches('\u{feff}').trim_start();
    if t.starts_with('{') || t.starts_with('[') {
        #[cfg(feature = "json")]
        return parse_json(t);
        #[cfg(not(feature = "json"))]
        return Err(ParseError::whole("JSON CPUID data needs xstate's `json` feature"));
    }
    if tool::looks_like_cpuid_tool(text) {
        return parse_cpuid_tool(text);
    }
    parse_aida(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vendor_and_brand() {
        let mut d = CpuidData::new(CpuidFormat::Synthetic);
        d.insert(0, 0, Regs::new(0xd, 0x756E6547, 0x6C65746E, 0x49656E69));
        assert_eq!(d.vendor().as_deref(), Some("GenuineIntel"));
        assert_eq!(d.brand(), None);
        let b = b"  Intel(R) Xeon(R) Processor\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0";
        for (i, leaf) in (0x8000_0002..=0x8000_0004u32).enumerate() {
            let w = |k: usize| u32::from_le_bytes(b[i * 16 + k * 4..i * 16 + k * 4 + 4].try_into().unwrap());
            d.insert(leaf, 0, Regs::new(w(0), w(1), w(2), w(3)));
        }
        assert_eq!(d.brand().as_deref(), Some("Intel(R) Xeon(R) Processor"));
    }

    /// Leaf 0xD present but all zero: a CPU without XSAVE only where leaf 1 agrees (the
    /// corpus's broken Sandy Bridge sample has XSAVE set there).
    #[test]
    fn an_empty_leaf_0xd_under_xsave_is_a_broken_dump() {
        let mut d = CpuidData::new(CpuidFormat::Synthetic);
        d.insert(0xd, 0, Regs::new(0, 0, 0, 0));
        assert_eq!(d.missing_leaf0d(), None, "no leaf 1: nothing says XSAVE");
        d.insert(1, 0, Regs::new(0x206a2, 0, 0x1fbaebff & !(1 << 26), 0));
        assert_eq!(d.missing_leaf0d(), None, "leaf 1 without XSAVE: a CPU without it");
        d.insert(1, 0, Regs::new(0x206a2, 0, 0x1fbaebff, 0));
        assert_eq!(d.missing_leaf0d(), Some(crate::layout::LayoutError::Leaf0dEmpty));
        d.insert(0xd, 0, Regs::new(0x7, 0x340, 0x340, 0));
        assert_eq!(d.missing_leaf0d(), None, "an enumerated leaf 0xD");
    }
}
