//! Reader for the raw output of the Linux `cpuid` tool (`cpuid -r`):
//!
//! ```text
//! CPU 0:
//!    0x0000000d 0x00: eax=0x000002e7 ebx=0x00000a88 ecx=0x00000a88 edx=0x00000000
//! ```
//!
//! Only the first CPU is read.

use alloc::format;

use super::{CpuidData, CpuidFormat, ParseError, Regs};

fn hex_field(s: &str) -> Option<u32> {
    let h = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X"))?;
    if h.is_empty() || h.len() > 8 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(h, 16).ok()
}

fn is_data_line(line: &str) -> bool {
    let t = line.trim_start();
    let mut w = t.split_whitespace();
    matches!((w.next(), w.next(), w.next()), (Some(a), Some(b), Some(c))
        if hex_field(a).is_some() && b.ends_with(':') && hex_field(&b[..b.len() - 1]).is_some() && c.starts_with("eax="))
}

pub(super) fn looks_like_cpuid_tool(text: &str) -> bool {
    text.lines().take(4096).any(is_data_line)
}

/// Reads `cpuid -r` output. Errors name the 1-based line.
pub fn parse_cpuid_tool(text: &str) -> Result<CpuidData, ParseError> {
    let mut data = CpuidData::new(CpuidFormat::CpuidTool);
    let mut cpus = 0;
    let mut any = false;
    for (i, line) in text.lines().enumerate() {
        let lineno = i + 1;
        let t = line.trim();
        if t.starts_with("CPU ") && t.ends_with(':') {
            cpus += 1;
            if cpus > 1 {
                break;
            }
            continue;
        }
        if !t.starts_with("0x") {
            continue;
        }
        let mut w = t.split_whitespace();
        let (Some(leaf), Some(sub)) = (w.next(), w.next()) else {
            return Err(ParseError::at(lineno, "expected `0xLEAF 0xSUB: eax=0x... ebx=0x... ecx=0x... edx=0x...`"));
        };
        let leaf = hex_field(leaf).ok_or_else(|| ParseError::at(lineno, format!("bad leaf {leaf:?}")))?;
        let sub = sub
            .strip_suffix(':')
            .and_then(hex_field)
            .ok_or_else(|| ParseError::at(lineno, format!("bad subleaf {sub:?}")))?;
        let mut r = [0u32; 4];
        for (k, name) in ["eax=", "ebx=", "ecx=", "edx="].iter().enumerate() {
            let f = w.next().ok_or_else(|| ParseError::at(lineno, format!("missing {}", &name[..3])))?;
            let v = f
                .strip_prefix(name)
                .and_then(hex_field)
                .ok_or_else(|| ParseError::at(lineno, format!("expected {name}0x........, found {f:?}")))?;
            r[k] = v;
        }
        if let Some(extra) = w.next() {
            return Err(ParseError::at(lineno, format!("unexpected {extra:?} after edx")));
        }
        data.insert(leaf, sub, Regs::new(r[0], r[1], r[2], r[3]));
        any = true;
    }
    if !any {
        return Err(ParseError::whole("no `cpuid -r` data lines"));
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xfeatures::Xfeatures;

    const SAMPLE: &str = "CPU 0:\n   0x00000000 0x00: eax=0x00000016 ebx=0x756e6547 ecx=0x6c65746e edx=0x49656e69\n   0x0000000d 0x00: eax=0x000002e7 ebx=0x00000a88 ecx=0x00000a88 edx=0x00000000\n   0x0000000d 0x01: eax=0x0000000f ebx=0x00000998 ecx=0x00003900 edx=0x00000000\nCPU 1:\n   0x0000000d 0x00: eax=0x00000007 ebx=0x00000a88 ecx=0x00000a88 edx=0x00000000\n";

    #[test]
    fn reads_first_cpu() {
        assert!(looks_like_cpuid_tool(SAMPLE));
        let d = parse_cpuid_tool(SAMPLE).unwrap();
        assert_eq!(d.leaf0d().xcr0_supported(), Xfeatures(0x2E7));
        assert_eq!(d.leaf0d().xss_supported(), Xfeatures(0x3900));
        assert_eq!(d.vendor().as_deref(), Some("GenuineIntel"));
    }

    #[test]
    fn errors_name_the_line() {
        let e = parse_cpuid_tool("CPU 0:\n   0x0000000d 0x00: eax=0x2e7 ebx=zz ecx=0x0 edx=0x0\n").unwrap_err();
        assert_eq!(e.line, Some(2));
        let e = parse_cpuid_tool("CPU 0:\n   0x0000000d 0x00: eax=0x2e7\n").unwrap_err();
        assert_eq!(e.line, Some(2));
    }
}
