//! Cross-checks of the sizes a CPUID source reports (0xD.0 EBX/ECX, 0xD.1 EBX) against the ones
//! computed from the component table, with an explanation for each mismatch.
//!
//! Linux does this at boot and disables XSAVE on a mismatch ("XSAVE consistency problem");
//! Xen's self-test panics. The explanations name the peer bugs seen in the field: alignment
//! ignored (QEMU, openvmm#708), EBX not recomputed for the current XCR0 (VirtualBox under
//! Xen), 32-bit truncation of the mask (Xen's old `fls()` lost LWP).

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use super::Layout;
use crate::component::legacy::EXTENDED_OFFSET;
use crate::xcr0::valid_xcr0_values;
use crate::xfeatures::Xfeatures;

/// Which reported size a check is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SizeField {
    /// 0xD.0 ECX: standard size with every supported user component.
    StandardMax,
    /// 0xD.0 EBX: standard size for the current XCR0.
    StandardEnabled,
    /// 0xD.1 EBX: compacted size for the current XCR0 | IA32_XSS.
    CompactedEnabled,
}

impl SizeField {
    /// The register it is reported in, e.g. `"CPUID 0xD.0 ECX"`.
    pub fn register(self) -> &'static str {
        match self {
            SizeField::StandardMax => "CPUID 0xD.0 ECX",
            SizeField::StandardEnabled => "CPUID 0xD.0 EBX",
            SizeField::CompactedEnabled => "CPUID 0xD.1 EBX",
        }
    }

    /// A short description, e.g. `"standard size, all supported"`.
    pub fn description(self) -> &'static str {
        match self {
            SizeField::StandardMax => "standard size, all supported components",
            SizeField::StandardEnabled => "standard size, current XCR0",
            SizeField::CompactedEnabled => "compacted size, current XCR0|XSS",
        }
    }
}

/// The verdict of one check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The reported size equals the one computed for the known mask.
    Agrees,
    /// The mask in force was not known; [`SizeCheck::mask`] is one that reproduces the report.
    Explained,
    /// The field carries no size here (0xD.1 EBX = 0 on a CPU without compaction).
    NotApplicable(&'static str),
    /// The reported size is not the computed one; the text says what it matches instead, if
    /// anything.
    Mismatch(String),
}

impl Outcome {
    /// True unless the outcome is a mismatch.
    pub fn is_ok(&self) -> bool {
        !matches!(self, Outcome::Mismatch(_))
    }
}

/// One reported size held against the computed one.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SizeCheck {
    /// Which field.
    pub field: SizeField,
    /// What the source reported.
    pub reported: u32,
    /// What the layout computes for [`SizeCheck::mask`], where there is one.
    pub computed: Option<u32>,
    /// The mask the size was computed for: known (XGETBV), inferred, or the supported maximum.
    pub mask: Option<Xfeatures>,
    /// The verdict.
    pub outcome: Outcome,
}

impl fmt::Display for SizeCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}): reported {:#x}", self.field.register(), self.field.description(), self.reported)?;
        if let Some(c) = self.computed {
            write!(f, ", computed {c:#x}")?;
        }
        if let Some(m) = self.mask {
            write!(f, " for {m} ({})", m.names())?;
        }
        match &self.outcome {
            Outcome::Agrees => f.write_str(": agrees"),
            Outcome::Explained => f.write_str(": explained by the inferred mask"),
            Outcome::NotApplicable(why) => write!(f, ": not applicable ({why})"),
            Outcome::Mismatch(why) => write!(f, ": MISMATCH: {why}"),
        }
    }
}

fn unaligned_compacted(l: &Layout, m: Xfeatures) -> u32 {
    (m & l.supported())
        .iter()
        .filter(|c| !c.is_legacy())
        .fold(EXTENDED_OFFSET as u32, |s, c| s + l.geometry[c.index() as usize].size)
}

/// Subsets of `m` in ascending order of size (then value); capped at 2^14 subsets.
fn subsets(m: Xfeatures) -> Vec<Xfeatures> {
    let bits: Vec<u64> = m.iter().map(|c| c.bit()).collect();
    if bits.len() > 14 {
        return alloc::vec![Xfeatures::EMPTY];
    }
    let mut out: Vec<Xfeatures> = (0u32..1 << bits.len())
        .map(|k| Xfeatures(bits.iter().enumerate().filter(|(i, _)| k >> i & 1 != 0).fold(0, |a, (_, b)| a | b)))
        .collect();
    out.sort_by_key(|x| (x.len(), x.bits()));
    out
}

fn explain_standard_max(l: &Layout, reported: u32) -> String {
    let low: u32 = l
        .user
        .iter()
        .filter(|c| c.index() < 32 && !c.is_legacy())
        .map(|c| l.geometry[c.index() as usize].offset + l.geometry[c.index() as usize].size)
        .max()
        .unwrap_or(EXTENDED_OFFSET as u32)
        .max(EXTENDED_OFFSET as u32);
    if l.user.bits() >> 32 != 0 && reported == low {
        return String::from("equals the size without components above bit 31: a 32-bit mask lost them");
    }
    if let Some(top) = l.user.iter().last().filter(|c| !c.is_legacy()) {
        let g = l.geometry[top.index() as usize];
        if reported == g.offset + g.size {
            return format!("equals the end of the highest-numbered component {top}, not the largest end");
        }
    }
    if reported == unaligned_compacted(l, l.user) {
        return String::from("equals the sum of the component sizes, not the largest offset + size");
    }
    let (i, end) = l.by_end.first().copied().unwrap_or((0, EXTENDED_OFFSET as u32));
    format!("the largest offset + size is {end:#x} (component {i}); no enumerated component ends at the reported size")
}

fn explain_standard_enabled(l: &Layout, reported: u32, valid: &[Xfeatures]) -> String {
    if reported == 0 {
        return String::from("0: not computed for the current XCR0 (Xen reports 0 before a guest's first XSETBV)");
    }
    match valid.iter().rev().find(|m| l.standard_size(**m) == Some(reported)) {
        Some(m) => format!("equals the size for XCR0 = {m} ({}): not recomputed for the current XCR0", m.names()),
        None => String::from("no valid XCR0 within the supported mask has this standard size"),
    }
}

fn explain_compacted(l: &Layout, reported: u32, xcr0: Xfeatures, xss: Xfeatures) -> String {
    let all = xcr0 | xss;
    if reported == 0 {
        return String::from("0 although XSAVEC/XSAVES is enumerated: not computed");
    }
    if reported == unaligned_compacted(l, all) {
        let a: Xfeatures = Xfeatures(l.align64 & all.bits());
        return format!("equals the compacted size ignoring the 64-byte alignment of {}", a.names());
    }
    if reported == l.compacted_size(xcr0).unwrap_or(0) {
        return String::from("equals the compacted size of XCR0 alone: IA32_XSS components not counted");
    }
    if Some(reported) == l.standard_size(xcr0) {
        return String::from("equals the standard size of XCR0, not the compacted size");
    }
    for x in subsets(l.supervisor) {
        if l.compacted_size(xcr0 | x) == Some(reported) {
            return format!("equals the compacted size with IA32_XSS = {x} ({})", x.names());
        }
    }
    String::from("no IA32_XSS within the supported mask reproduces it")
}

pub(super) fn cross_check(l: &Layout, xcr0: Option<Xfeatures>, xss: Option<Xfeatures>) -> Vec<SizeCheck> {
    let rep = l.reported;
    let mut out = Vec::with_capacity(3);
    // 0xD.0 ECX.
    let computed = l.max_standard;
    out.push(SizeCheck {
        field: SizeField::StandardMax,
        reported: rep.standard_size_max,
        computed: Some(computed),
        mask: Some(l.user),
        outcome: if computed == rep.standard_size_max {
            Outcome::Agrees
        } else {
            Outcome::Mismatch(explain_standard_max(l, rep.standard_size_max))
        },
    });
    // 0xD.0 EBX.
    let valid = valid_xcr0_values(l.user);
    let mut xcr0_candidates: Vec<Xfeatures> = Vec::new();
    match xcr0 {
        Some(x) => {
            let computed = l.standard_size(x);
            out.push(SizeCheck {
                field: SizeField::StandardEnabled,
                reported: rep.standard_size_enabled,
                computed,
                mask: Some(x),
                outcome: match computed {
                    Some(c) if c == rep.standard_size_enabled => Outcome::Agrees,
                    Some(_) => Outcome::Mismatch(explain_standard_enabled(l, rep.standard_size_enabled, &valid)),
                    None => Outcome::Mismatch(format!("XCR0 {x} holds bits the CPU does not enumerate")),
                },
            });
            xcr0_candidates.push(x);
        }
        None => {
            // Largest valid XCR0 first: the greedy choice.
            xcr0_candidates = valid
                .iter()
                .rev()
                .copied()
                .filter(|m| l.standard_size(*m) == Some(rep.standard_size_enabled))
                .collect();
            out.push(SizeCheck {
                field: SizeField::StandardEnabled,
                reported: rep.standard_size_enabled,
                computed: xcr0_candidates.first().and_then(|m| l.standard_size(*m)),
                mask: xcr0_candidates.first().copied(),
                outcome: if xcr0_candidates.is_empty() {
                    Outcome::Mismatch(explain_standard_enabled(l, rep.standard_size_enabled, &valid))
                } else {
                    Outcome::Explained
                },
            });
            if xcr0_candidates.is_empty() {
                xcr0_candidates = valid.iter().rev().copied().collect();
            }
        }
    }
    // 0xD.1 EBX.
    let reported = rep.compacted_size_enabled;
    let check = if !l.features.compaction() {
        SizeCheck {
            field: SizeField::CompactedEnabled,
            reported,
            computed: None,
            mask: None,
            outcome: if reported == 0 {
                Outcome::NotApplicable("no XSAVEC/XSAVES")
            } else {
                Outcome::Mismatch(String::from("non-zero although neither XSAVEC nor XSAVES is enumerated"))
            },
        }
    } else if let (Some(x), Some(s)) = (xcr0, xss) {
        let computed = l.compacted_size(x | s);
        SizeCheck {
            field: SizeField::CompactedEnabled,
            reported,
            computed,
            mask: Some(x | s),
            outcome: if computed == Some(reported) {
                Outcome::Agrees
            } else {
                Outcome::Mismatch(explain_compacted(l, reported, x, s))
            },
        }
    } else {
        let xss_candidates = match xss {
            Some(s) => alloc::vec![s],
            None => subsets(l.supervisor),
        };
        let found = xcr0_candidates
            .iter()
            .flat_map(|x| xss_candidates.iter().map(move |s| *x | *s))
            .find(|m| l.compacted_size(*m) == Some(reported));
        SizeCheck {
            field: SizeField::CompactedEnabled,
            reported,
            computed: found.and_then(|m| l.compacted_size(m)),
            mask: found,
            outcome: match found {
                Some(_) => Outcome::Explained,
                None => Outcome::Mismatch(explain_compacted(
                    l,
                    reported,
                    xcr0_candidates.first().copied().unwrap_or(Xfeatures::X87),
                    Xfeatures::EMPTY,
                )),
            },
        }
    };
    out.push(check);
    out
}
