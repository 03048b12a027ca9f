//! CRIU's `cpuinfo.img` (`cpuinfo_entry` with one `cpuinfo_x86_entry` per CPU kind) and the
//! check `criu restore --cpu-cap=fpu` (and `criu cpuinfo check`) makes with it.
//!
//! What CRIU records (compel's `compel_cpuid`/`compel_fpuid`), so what [`X86Entry::of_cpuid`]
//! computes for a host:
//! - `capability`: Linux's cpufeature words (word 0 CPUID 1 EDX, 4 CPUID 1 ECX, 6 0x80000001
//!   ECX, 9 7.0 EBX, 10 0xD.1 EAX, 11 7.0 ECX, 14 6 EAX, 18 7.0 EDX, ...);
//! - `xfeatures_mask`: CPUID 0xD.0 EDX:EAX (what the CPU supports, not XCR0), less each of
//!   components 0..=10 whose CPUID feature (FPU, SSE, AVX, MPX, MPX, AVX512F ×3, PT, PKU, HDC)
//!   is absent, kept to CRIU's user components (x87, SSE, AVX, MPX, AVX-512, PKRU), then less
//!   `XFEATURE_MASK_SUPERVISOR`, which CRIU defines as `XFEATURE_MASK_PT | XFEATURE_HDC`:
//!   the enum value 10 (bits 1 and 3) where the mask 1 << 10 was meant. So every dump lacks
//!   SSE and BNDREGS in `xfeatures_mask` (0xe5 on XCR0 0xe7), and on an MPX host no thread's
//!   BNDREGS (bnd0-3) is ever dumped ([`Quirk`]);
//! - `xsave_size`, `xsave_size_max`: CPUID 0xD.0 EBX (the standard size for the dumping
//!   process's XCR0) and ECX (for every supported component).
//!
//! The restore check with `--cpu-cap=fpu` (criu/arch/x86/cpu.c `cpu_validate_features`), in
//! order, stopping at the first failure: FPU, FXSR, OSXSAVE and XSAVES of the image's
//! capability words present on the host; the image's `xfeatures_mask` within the host's; equal
//! `xsave_size`; equal `xsave_size_max`. A field the image lacks takes the host's value.

use alloc::string::String;
use alloc::vec::Vec;

use super::super::protobuf::{self, Value, put_bytes, put_varint_field};
use super::{CPUINFO_MAGIC, entries, wire};
use crate::cpuid::CpuidData;
use crate::record::{Detail, Format, RecordError, Rule};
use crate::xfeatures::Xfeatures;

const F: Format = Format::CriuCpuinfo;

/// CRIU's user components (`XFEATURE_MASK_USER`).
pub const CRIU_USER: Xfeatures = Xfeatures(0x2ff);
/// CRIU's `XFEATURE_MASK_SUPERVISOR` as compiled: PT (bit 8) | the enum value 10 (bits 1, 3).
pub const CRIU_SUPERVISOR_AS_COMPILED: Xfeatures = Xfeatures(1 << 8 | 10);

/// A cpufeature bit: word and bit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cap(pub u8, pub u8);

impl Cap {
    /// Onboard FPU.
    pub const FPU: Cap = Cap(0, 0);
    /// FXSAVE/FXRSTOR.
    pub const FXSR: Cap = Cap(0, 24);
    /// SSE.
    pub const XMM: Cap = Cap(0, 25);
    /// XSAVE enabled by the OS.
    pub const OSXSAVE: Cap = Cap(4, 27);
    /// AVX.
    pub const AVX: Cap = Cap(4, 28);
    /// MPX.
    pub const MPX: Cap = Cap(9, 14);
    /// AVX-512 Foundation.
    pub const AVX512F: Cap = Cap(9, 16);
    /// Intel PT.
    pub const INTEL_PT: Cap = Cap(9, 25);
    /// XSAVES.
    pub const XSAVES: Cap = Cap(10, 3);
    /// PKU.
    pub const PKU: Cap = Cap(11, 3);
    /// HDC.
    pub const HDC: Cap = Cap(14, 13);

    /// The name CRIU prints.
    pub const fn name(self) -> &'static str {
        match (self.0, self.1) {
            (0, 0) => "fpu",
            (0, 24) => "fxsr",
            (4, 27) => "osxsave",
            (10, 3) => "xsaves",
            _ => "feature",
        }
    }
}

/// The CPUID feature gating each of components 0..=10 (compel's `xsave_cpuid_features`).
const GATES: [Cap; 11] = [
    Cap::FPU,
    Cap::XMM,
    Cap::AVX,
    Cap::MPX,
    Cap::MPX,
    Cap::AVX512F,
    Cap::AVX512F,
    Cap::AVX512F,
    Cap::INTEL_PT,
    Cap::PKU,
    Cap::HDC,
];

/// One `cpuinfo_x86_entry`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct X86Entry {
    /// 0 unknown, 1 Intel, 2 AMD.
    pub vendor_id: u32,
    /// CPU family.
    pub cpu_family: u32,
    /// Model.
    pub model: u32,
    /// Stepping.
    pub stepping: u32,
    /// Capability layout version.
    pub capability_ver: u32,
    /// cpufeature words.
    pub capability: Vec<u32>,
    /// Model name.
    pub model_id: Option<String>,
    /// xfeatures_mask as recorded (see the module doc for what it is).
    pub xfeatures_mask: Option<Xfeatures>,
    /// CPUID 0xD.0 EBX of the dumping process.
    pub xsave_size: Option<u32>,
    /// CPUID 0xD.0 ECX.
    pub xsave_size_max: Option<u32>,
}

/// Why `criu restore --cpu-cap=fpu` refuses, in CRIU's order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// A capability of the image (FPU, FXSR, OSXSAVE, XSAVES) the host lacks.
    Capability(Cap),
    /// xfeatures of the image the host lacks.
    Xfeatures(Xfeatures),
    /// `xsave_size` differs: image, host.
    XsaveSize(u32, u32),
    /// `xsave_size_max` differs: image, host.
    XsaveSizeMax(u32, u32),
}

impl core::fmt::Display for Refusal {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Refusal::Capability(c) => {
                write!(f, "FPU feature required by image is not supported on host ({})", c.name())
            }
            Refusal::Xfeatures(m) => write!(f, "CPU xfeatures has unsupported bits ({:#x}: {})", m.bits(), m.names()),
            Refusal::XsaveSize(a, b) => write!(f, "CPU xsave size mismatch ({a}/{b})"),
            Refusal::XsaveSizeMax(a, b) => write!(f, "CPU xsave max size mismatch ({a}/{b})"),
        }
    }
}

/// CRIU's dump quirk as it shows in a recorded `xfeatures_mask`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quirk {
    /// The mask lacks SSE and BNDREGS although it has x87 (the dump CRIU has the bug).
    pub present: bool,
    /// The mask has BNDCSR: the dumping CPU had MPX, so BNDREGS (bnd0-3) of every thread were
    /// not dumped and restore loads them as init.
    pub bndregs_lost: bool,
}

fn bit(words: &[u32], c: Cap) -> bool {
    words.get(usize::from(c.0)).is_some_and(|w| w >> c.1 & 1 != 0)
}

impl X86Entry {
    /// Whether the capability words have `c`.
    pub fn has(&self, c: Cap) -> bool {
        bit(&self.capability, c)
    }

    /// What CRIU on a host with this CPUID records (module doc). `xsave_size` is the dump's
    /// 0xD.0 EBX, which depends on the XCR0 of whoever read it.
    pub fn of_cpuid(c: &CpuidData) -> X86Entry {
        let r = |l, s| c.get(l, s).unwrap_or_default();
        let mut words = alloc::vec![0u32; 19];
        words[0] = r(1, 0).edx;
        words[4] = r(1, 0).ecx;
        words[6] = r(0x8000_0001, 0).ecx;
        words[9] = r(7, 0).ebx;
        words[10] = r(0xd, 1).eax;
        words[11] = r(7, 0).ecx;
        words[14] = r(6, 0).eax;
        words[18] = r(7, 0).edx;
        let d0 = r(0xd, 0);
        let mut mask = Xfeatures(u64::from(d0.eax) | u64::from(d0.edx) << 32);
        for (i, gate) in GATES.iter().enumerate() {
            if !bit(&words, *gate) {
                mask = Xfeatures(mask.bits() & !(1 << i));
            }
        }
        let mask = (mask & CRIU_USER) - CRIU_SUPERVISOR_AS_COMPILED;
        let eax1 = r(1, 0).eax;
        let family = (eax1 >> 8) & 0xf;
        let family = if family == 0xf { family + ((eax1 >> 20) & 0xff) } else { family };
        let model = ((eax1 >> 4) & 0xf) | if family >= 6 { (eax1 >> 12) & 0xf0 } else { 0 };
        let vendor_id = match c.vendor().as_deref() {
            Some("GenuineIntel") => 1,
            Some("AuthenticAMD") => 2,
            _ => 0,
        };
        X86Entry {
            vendor_id,
            cpu_family: family,
            model,
            stepping: eax1 & 0xf,
            capability_ver: 2,
            capability: words,
            model_id: c.brand(),
            xfeatures_mask: Some(mask),
            xsave_size: Some(d0.ebx),
            xsave_size_max: Some(d0.ecx),
        }
    }

    /// Every reason `criu restore --cpu-cap=fpu` on `host` refuses this image's CPU, in CRIU's
    /// order (CRIU stops at the first). Empty: CRIU's FPU check passes.
    pub fn cpu_cap_fpu(&self, host: &X86Entry) -> Vec<Refusal> {
        let mut out = Vec::new();
        for c in [Cap::FPU, Cap::FXSR, Cap::OSXSAVE, Cap::XSAVES] {
            if self.has(c) && !host.has(c) {
                out.push(Refusal::Capability(c));
            }
        }
        let hm = host.xfeatures_mask.unwrap_or_default();
        let missing = self.xfeatures_mask.unwrap_or(hm) - hm;
        if !missing.is_empty() {
            out.push(Refusal::Xfeatures(missing));
        }
        let (hs, hmax) = (host.xsave_size.unwrap_or(0), host.xsave_size_max.unwrap_or(0));
        let s = self.xsave_size.unwrap_or(hs);
        if s != hs {
            out.push(Refusal::XsaveSize(s, hs));
        }
        let m = self.xsave_size_max.unwrap_or(hmax);
        if m != hmax {
            out.push(Refusal::XsaveSizeMax(m, hmax));
        }
        out
    }

    /// The dump quirk as this entry shows it.
    pub fn quirk(&self) -> Quirk {
        let m = self.xfeatures_mask.unwrap_or_default();
        let present = m.bits() & 1 != 0 && m.bits() & 0b1010 == 0;
        Quirk { present, bndregs_lost: present && m.bits() & 1 << 4 != 0 }
    }
}

/// A `cpuinfo.img`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CpuInfo {
    /// The x86 entries (one per CPU kind; CRIU writes one).
    pub x86: Vec<X86Entry>,
}

fn scalar(v: Value<'_>, at: usize) -> Result<u64, RecordError> {
    match v {
        Value::Varint(x) => Ok(x),
        _ => Err(RecordError::new(F, Rule::Wire, Some(at), Detail::Text("expected a varint"))),
    }
}

impl CpuInfo {
    /// Reads a `cpuinfo.img`.
    pub fn parse(bytes: &[u8]) -> Result<CpuInfo, RecordError> {
        let mut out = CpuInfo::default();
        for e in entries(F, bytes, CPUINFO_MAGIC)? {
            for field in protobuf::fields(e.payload) {
                let field = field.map_err(|x| wire(F, e.offset, x))?;
                let (Value::Bytes(msg), 1) = (field.value, field.number) else { continue };
                let base = e.offset + field.value_start;
                let mut x = X86Entry::default();
                for g in protobuf::fields(msg) {
                    let g = g.map_err(|w| wire(F, base, w))?;
                    let at = base + g.start;
                    let u32_of = |v: u64| {
                        u32::try_from(v)
                            .map_err(|_| RecordError::value(F, Rule::Wire, at, "uint32", v, u32::MAX.into()))
                    };
                    match g.number {
                        1 => x.vendor_id = u32_of(scalar(g.value, at)?)?,
                        2 => x.cpu_family = u32_of(scalar(g.value, at)?)?,
                        3 => x.model = u32_of(scalar(g.value, at)?)?,
                        4 => x.stepping = u32_of(scalar(g.value, at)?)?,
                        5 => x.capability_ver = u32_of(scalar(g.value, at)?)?,
                        6 => {
                            for v in protobuf::varints(g.value, base + g.value_start).map_err(|w| wire(F, 0, w))? {
                                x.capability.push(u32_of(v)?);
                            }
                        }
                        7 => {
                            let Value::Bytes(s) = g.value else {
                                return Err(RecordError::new(F, Rule::Wire, Some(at), Detail::Text("model_id")));
                            };
                            x.model_id = Some(String::from_utf8_lossy(s).into_owned());
                        }
                        8 => x.xfeatures_mask = Some(Xfeatures(scalar(g.value, at)?)),
                        9 => x.xsave_size = Some(u32_of(scalar(g.value, at)?)?),
                        10 => x.xsave_size_max = Some(u32_of(scalar(g.value, at)?)?),
                        _ => {}
                    }
                }
                out.x86.push(x);
            }
        }
        if out.x86.is_empty() {
            return Err(RecordError::new(F, Rule::Truncated, None, Detail::Text("no cpuinfo_x86_entry")));
        }
        Ok(out)
    }
}

/// `bytes` (a `cpuinfo.img`) with its first x86 entry's `xfeatures_mask`, `xsave_size` and
/// `xsave_size_max` set to `to`'s (a field `to` lacks stays as it is): only those fields, the
/// enclosing `x86_entry` length and the entry's u32 length change. This is what lets
/// `criu restore --cpu-cap=fpu` run on a host whose sizes differ, once xstate has found the
/// state moves safely (the caller's check, not this function's).
pub fn patch(bytes: &[u8], to: &X86Entry) -> Result<Vec<u8>, RecordError> {
    CpuInfo::parse(bytes)?;
    let list = entries(F, bytes, CPUINFO_MAGIC)?;
    let e = list[0];
    let mut fields_out = Vec::with_capacity(e.payload.len());
    let mut done = false;
    for field in protobuf::fields(e.payload) {
        let field = field.map_err(|x| wire(F, e.offset, x))?;
        let original = &e.payload[field.start..field.end];
        let (Value::Bytes(msg), 1, false) = (field.value, field.number, done) else {
            fields_out.extend_from_slice(original);
            continue;
        };
        done = true;
        let new: [(u32, Option<u64>); 3] = [
            (8, to.xfeatures_mask.map(|m| m.bits())),
            (9, to.xsave_size.map(u64::from)),
            (10, to.xsave_size_max.map(u64::from)),
        ];
        let mut m = Vec::with_capacity(msg.len() + 16);
        let mut seen = [false; 3];
        for g in protobuf::fields(msg) {
            let g = g.map_err(|w| wire(F, e.offset + field.value_start, w))?;
            match new.iter().position(|(n, _)| *n == g.number) {
                Some(i) if new[i].1.is_some() => {
                    if !seen[i] {
                        put_varint_field(&mut m, g.number, new[i].1.unwrap_or(0));
                    }
                    seen[i] = true;
                }
                _ => m.extend_from_slice(&msg[g.start..g.end]),
            }
        }
        for (i, (n, v)) in new.iter().enumerate() {
            if let (false, Some(v)) = (seen[i], v) {
                put_varint_field(&mut m, *n, *v);
            }
        }
        if m.as_slice() == msg {
            fields_out.extend_from_slice(original);
        } else {
            put_bytes(&mut fields_out, 1, &m);
        }
    }
    let mut out = Vec::with_capacity(bytes.len() + 16);
    out.extend_from_slice(&bytes[..e.offset - 4]);
    out.extend_from_slice(&(fields_out.len() as u32).to_le_bytes());
    out.extend_from_slice(&fields_out);
    out.extend_from_slice(&bytes[e.offset + e.payload.len()..]);
    CpuInfo::parse(&out)?;
    Ok(out)
}
