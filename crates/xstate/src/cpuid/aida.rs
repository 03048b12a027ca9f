//! Reader for AIDA64 / InstLatX64 text dumps (`CPUID 0000000D: EAX-EBX-ECX-EDX [SL nn]` lines).
//!
//! Data lines look like `CPUID 0000000D: 000602E7-00002B00-00002B00-00000000 [SL 00] [x87]`;
//! older tools put spaces and a tab instead of `: `, print lower-case hex, or leave out the
//! `[SL nn]` label. Only the first logical CPU is read: a second leaf-0 line ends it.

use alloc::format;
use alloc::vec::Vec;

use super::{CpuidData, CpuidFormat, ParseError, Regs};

fn hex8(s: &str) -> Option<u32> {
    if s.len() == 8 && s.bytes().all(|b| b.is_ascii_hexdigit()) { u32::from_str_radix(s, 16).ok() } else { None }
}

/// One data line: leaf, registers, and the `[SL nn]` subleaf if labelled.
fn parse_line(rest: &str, lineno: usize) -> Result<(u32, Regs, Option<u32>), ParseError> {
    // `rest` starts right after "CPUID" and at least one whitespace character.
    let rest = rest.trim_start();
    let leaf_str = rest.get(..8).ok_or_else(|| ParseError::at(lineno, "truncated CPUID line"))?;
    let leaf = hex8(leaf_str).ok_or_else(|| ParseError::at(lineno, format!("bad leaf number {leaf_str:?}")))?;
    let after = rest[8..].trim_start_matches([':', ' ', '\t']);
    let regs_str = after.get(..35).ok_or_else(|| {
        ParseError::at(lineno, format!("leaf {leaf:08X}: expected EAX-EBX-ECX-EDX as 8 hex digits each"))
    })?;
    let parts: Vec<&str> = regs_str.split('-').collect();
    if parts.len() != 4 {
        return Err(ParseError::at(lineno, format!("leaf {leaf:08X}: expected EAX-EBX-ECX-EDX, found {regs_str:?}")));
    }
    let mut r = [0u32; 4];
    for (k, p) in parts.iter().enumerate() {
        r[k] = hex8(p).ok_or_else(|| {
            ParseError::at(
                lineno,
                format!("leaf {leaf:08X}: register {} is not 8 hex digits: {p:?}", ["EAX", "EBX", "ECX", "EDX"][k]),
            )
        })?;
    }
    let tail = &after[35..];
    if tail.starts_with(|c: char| c.is_ascii_hexdigit() || c == '-') {
        return Err(ParseError::at(lineno, format!("leaf {leaf:08X}: trailing characters after EDX")));
    }
    let sl = match tail.find("[SL ") {
        Some(p) => {
            let t = &tail[p + 4..];
            let end = t.find(']').ok_or_else(|| ParseError::at(lineno, "unterminated [SL ..] label"))?;
            let v = u32::from_str_radix(t[..end].trim(), 16)
                .map_err(|_| ParseError::at(lineno, format!("bad subleaf label [SL {}]", &t[..end])))?;
            Some(v)
        }
        None => None,
    };
    Ok((leaf, Regs::new(r[0], r[1], r[2], r[3]), sl))
}

/// Reads an AIDA64/InstLatX64 text dump. Errors name the 1-based line.
///
/// Unlabelled leaf 0xD lines (33 old dumps) are assigned to subleaves as the tools printed
/// them: the first is subleaf 0; the next is subleaf 1 if it looks like one (EAX holds only
/// the five feature bits); the rest go to the supported components in ascending order when
/// their number matches, and to subleaves 2, 3, ... otherwise (tools that printed 0-2 only).
pub fn parse_aida(text: &str) -> Result<CpuidData, ParseError> {
    let mut data = CpuidData::new(CpuidFormat::Aida);
    let mut seen_leaf0 = false;
    let mut any = false;
    let mut unlabelled_count: Vec<(u32, u32)> = Vec::new();
    let mut unlabelled_0d: Vec<(Regs, usize)> = Vec::new();
    let mut labelled: Vec<((u32, u32), Regs)> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let lineno = i + 1;
        let t = line.trim_start();
        let Some(rest) = t.strip_prefix("CPUID") else { continue };
        // "CPUID Registers (CPU #1):" and similar headers are not data.
        if !rest.starts_with([' ', '\t']) || !rest.trim_start().starts_with(|c: char| c.is_ascii_hexdigit()) {
            continue;
        }
        let head = rest.trim_start();
        if head.len() < 8 || !head.as_bytes()[..8].iter().all(u8::is_ascii_hexdigit) {
            continue;
        }
        let (leaf, regs, sl) = parse_line(rest, lineno)?;
        if leaf == 0 {
            if seen_leaf0 {
                break; // the next logical CPU
            }
            seen_leaf0 = true;
        }
        any = true;
        match sl {
            Some(s) => {
                if let Some((_, old)) = labelled.iter().find(|(k, _)| *k == (leaf, s)) {
                    if *old != regs {
                        return Err(ParseError::at(
                            lineno,
                            format!("leaf {leaf:08X} subleaf {s:02X} given twice with different values"),
                        ));
                    }
                    continue;
                }
                labelled.push(((leaf, s), regs));
            }
            None if leaf == 0xD => unlabelled_0d.push((regs, lineno)),
            None => {
                let n = match unlabelled_count.iter_mut().find(|(l, _)| *l == leaf) {
                    Some((_, n)) => {
                        *n += 1;
                        *n
                    }
                    None => {
                        unlabelled_count.push((leaf, 0));
                        0
                    }
                };
                labelled.push(((leaf, n), regs));
            }
        }
    }
    if !any {
        return Err(ParseError::whole("no CPUID data lines (expected `CPUID LLLLLLLL: EAX-EBX-ECX-EDX`)"));
    }
    for ((leaf, sub), regs) in labelled {
        if leaf == 0xD && sub >= 64 {
            continue;
        }
        data.insert(leaf, sub, regs);
    }
    if !unlabelled_0d.is_empty() {
        if data.leaf0d().recorded_mask() != 0 {
            return Err(ParseError::at(unlabelled_0d[0].1, "leaf 0000000D mixes labelled and unlabelled subleaves"));
        }
        for (sub, regs) in assign_unlabelled(&unlabelled_0d.iter().map(|(r, _)| *r).collect::<Vec<_>>()) {
            data.insert(0xD, sub, regs);
        }
    }
    Ok(data)
}

/// The subleaf numbers of unlabelled leaf 0xD lines, in print order (see [`parse_aida`]).
fn assign_unlabelled(lines: &[Regs]) -> Vec<(u32, Regs)> {
    let mut out = Vec::new();
    let Some(&sl0) = lines.first() else { return out };
    out.push((0, sl0));
    let mut rest = &lines[1..];
    let mut supported = (sl0.edx as u64) << 32 | sl0.eax as u64;
    // Subleaf 1's EAX holds feature flags only (bits 0..4); a component subleaf's EAX is a
    // size of at least 8 bytes.
    if let Some(&sl1) = rest.first()
        && sl1.eax < 0x20
        && (sl1.ebx == 0 || sl1.ebx >= 0x240)
    {
        out.push((1, sl1));
        supported |= (sl1.edx as u64) << 32 | sl1.ecx as u64;
        rest = &rest[1..];
    }
    let comps: Vec<u32> = (2..63).filter(|i| supported >> i & 1 != 0).collect();
    if comps.len() == rest.len() {
        out.extend(comps.into_iter().zip(rest.iter().copied()));
    } else {
        out.extend((2u32..).zip(rest.iter().copied()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xfeatures::Xfeatures;

    #[test]
    fn labelled_dump() {
        let t = "------[ CPUID Registers / Logical CPU #0 ]------\n\
                 CPUID 00000000: 00000024-756E6547-6C65746E-49656E69 [GenuineIntel]\n\
                 CPUID 0000000D: 000600E7-00002B00-00002B00-00000000 [SL 00] [x87]\n\
                 CPUID 0000000D: 0000001F-000029C0-00000000-00000000 [SL 01] [SSE] \n\
                 CPUID 0000000D: 00002000-00000B00-00000006-00000000 [SL 12] [TILEDATA]\n\
                 CPUID 00000000: 00000024-756E6547-6C65746E-49656E69 [GenuineIntel]\n\
                 CPUID 0000000D: 00000000-00000000-00000000-00000000 [SL 00]\n";
        let d = parse_aida(t).unwrap();
        assert_eq!(d.vendor().as_deref(), Some("GenuineIntel"));
        assert_eq!(d.leaf0d().xcr0_supported(), Xfeatures(0x600E7));
        assert_eq!(d.leaf0d().get(18).eax, 0x2000);
        assert_eq!(d.leaf0d().recorded_mask(), 1 << 18 | 3);
    }

    #[test]
    fn tab_separated_and_lower_case() {
        let t = "CPUID Registers (CPU #1):\nCPUID 0000000D  \t00000007-00000240-00000340-00000000\nCPUID 0000000d: 00000100-00000240-00000000-00000000\n";
        let d = parse_aida(t).unwrap();
        assert_eq!(d.leaf0d().get(0).ecx, 0x340);
        assert_eq!(d.leaf0d().get(2).eax, 0x100);
        assert!(!d.leaf0d().recorded(1));
    }

    #[test]
    fn unlabelled_in_supported_order() {
        let lines = [
            Regs::new(0x2FF, 0xA88, 0xA88, 0),
            Regs::new(0xF, 0xA08, 0x100, 0),
            Regs::new(0x100, 0x240, 0, 0),
            Regs::new(0x40, 0x3C0, 0, 0),
            Regs::new(0x40, 0x400, 0, 0),
            Regs::new(0x40, 0x440, 0, 0),
            Regs::new(0x200, 0x480, 0, 0),
            Regs::new(0x400, 0x680, 0, 0),
            Regs::new(0x80, 0, 1, 0),
            Regs::new(0x8, 0xA80, 0, 0),
        ];
        let idx: Vec<u32> = assign_unlabelled(&lines).iter().map(|(i, _)| *i).collect();
        assert_eq!(idx, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
        // SL0, SL1, SL2 of a CPU with more components: printed literally.
        let idx: Vec<u32> = assign_unlabelled(&lines[..3]).iter().map(|(i, _)| *i).collect();
        assert_eq!(idx, [0, 1, 2]);
        // No SL1 line.
        let lines = [Regs::new(0x7, 0x340, 0x340, 0), Regs::new(0x100, 0x240, 0, 0)];
        let idx: Vec<u32> = assign_unlabelled(&lines).iter().map(|(i, _)| *i).collect();
        assert_eq!(idx, [0, 2]);
    }

    #[test]
    fn errors_name_the_line() {
        let e = parse_aida("x\nCPUID 0000000D: 0000000G-00000240-00000340-00000000\n").unwrap_err();
        assert_eq!(e.line, Some(2));
        let e = parse_aida("CPUID 0000000D: 00000007-00000240\n").unwrap_err();
        assert_eq!(e.line, Some(1));
        let e = parse_aida("nothing here\n").unwrap_err();
        assert_eq!(e.line, None);
        let e = parse_aida("CPUID 0000000D: 00000007-00000240-00000340-00000000 [SL zz]\n").unwrap_err();
        assert_eq!(e.line, Some(1));
    }
}
