//! QEMU's migration stream (`migrate "file:..."`, `savevm` without the qcow2 wrapper), as
//! QEMU 10 writes it for x86 (docs/FORMATS.md "QEMU migration stream"; QEMU's
//! migration/savevm.c, migration/vmstate.c, migration/ram.c, target/i386/machine.c).
//!
//! The stream is big-endian and layout-free: QEMU never puts an XSAVE area on the wire but the
//! registers of `CPUX86State` one by one (the base `cpu` section: x87, MXCSR, XMM, `xcr0`,
//! `xstate_bv`, the YMM upper halves; subsections `cpu/fpop_ip_dp`, `cpu/avx512`, `cpu/pkru`,
//! `cpu/mpx`, `cpu/xss`, `cpu/intel_amx_xtile`, each sent only when its registers are not all
//! zero). So an image is built for whatever layout the caller names, and patching rewrites the
//! register fields in place.
//!
//! Device sections carry no length; the stream is walked with the vmdesc JSON QEMU appends
//! after `QEMU_VM_EOF` (every device field with its size, every subsection in stream order), and
//! every section must end in its footer where the vmdesc says. RAM sections are walked by their
//! own page records. Anything else (other iterative sections, mapped-ram, compression) is
//! refused, never skipped by guessing.
//!
//! Two conventions depend on the accelerator that wrote the stream ([`Accel`]), which the
//! stream does not name:
//! - x87 registers: QEMU+KVM copies the FXSAVE area's registers, in ST order, to `fpregs`; TCG
//!   keeps physical registers (ST(i) is `fpregs[(TOP + i) & 7]`). The tag byte is physical in
//!   both;
//! - `xstate_bv`: KVM's XSTATE_BV, which KVM_SET_XSAVE honours (a clear bit loads init); TCG
//!   does not track it and writes 0 with live registers.
//!
//! The accelerator is taken from the caller ([`super::Options::qemu_accel`]) or from evidence in
//! the stream: a `kvmclock` section exists only under KVM; a component whose registers are not
//! init while its `xstate_bv` bit is clear cannot come from KVM (the kernel writes init values
//! for clear bits), so it is TCG. Without either, a stream is read only where both readings give
//! the same state, else refused ([`Rule::Ambiguous`]).

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::ops::Range;

use super::json::{self, Value};
use super::{Detail, Format, RecordError, Rule, SizeBasis};
use crate::component::Component;
use crate::component::legacy::{FCW, FDP, FIP, FOP, FSW, FTW, MXCSR, ST0, XMM0};
use crate::image::{ImageBuf, MIN_SIZE};
use crate::layout::Layout;
use crate::xfeatures::Xfeatures;

const F: Format = Format::Qemu;

/// `QEMU_VM_FILE_MAGIC`, "QEVM".
pub const MAGIC: u32 = 0x5145_564d;
/// `QEMU_VM_FILE_VERSION`.
pub const VERSION: u32 = 3;

const EOF: u8 = 0x00;
const SECTION_START: u8 = 0x01;
const SECTION_PART: u8 = 0x02;
const SECTION_END: u8 = 0x03;
const SECTION_FULL: u8 = 0x04;
const SUBSECTION: u8 = 0x05;
const VMDESCRIPTION: u8 = 0x06;
const CONFIGURATION: u8 = 0x07;
const COMMAND: u8 = 0x08;
const FOOTER: u8 = 0x7e;

// RAM page record flags (migration/ram.c), in the low bits of the page address.
const RAM_ZERO: u64 = 0x02;
const RAM_MEM_SIZE: u64 = 0x04;
const RAM_PAGE: u64 = 0x08;
const RAM_EOS: u64 = 0x10;
const RAM_CONTINUE: u64 = 0x20;
const RAM_XBZRLE: u64 = 0x40;
const RAM_MULTIFD_FLUSH: u64 = 0x200;
const RAM_KNOWN: u64 = RAM_ZERO | RAM_MEM_SIZE | RAM_PAGE | RAM_EOS | RAM_CONTINUE | RAM_XBZRLE | RAM_MULTIFD_FLUSH;

/// Components whose registers the `cpu` section holds.
pub const HOLDS: Xfeatures = Xfeatures(0x6_02FF);

/// The accelerator whose conventions a stream's CPU state follows (module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Accel {
    /// KVM: `fpregs` in ST order, `xstate_bv` honoured.
    Kvm,
    /// TCG: `fpregs` physical, `xstate_bv` not tracked.
    Tcg,
}

impl Accel {
    /// `kvm` or `tcg`.
    pub const fn name(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }

    /// The accelerator of a name.
    pub fn from_name(s: &str) -> Option<Accel> {
        [Accel::Kvm, Accel::Tcg].into_iter().find(|a| a.name().eq_ignore_ascii_case(s))
    }
}

/// A field of the stream: its bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Place {
    /// Offset of its first byte in the stream.
    pub off: usize,
    /// Its length (all elements).
    pub len: usize,
}

impl Place {
    fn range(self) -> Range<usize> {
        self.off..self.off + self.len
    }
}

/// Where each extended-state register of one `cpu` section lies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CpuFields {
    /// `env.fpuc` (FCW), u16.
    pub fpuc: Place,
    /// `env.fpus_vmstate` (FSW with TOP), u16.
    pub fpus: Place,
    /// `env.fptag_vmstate` (the abridged tag byte: bit i set = physical register i valid), u16.
    pub fptag: Place,
    /// `env.fpregs`: 8 × {mantissa u64, sign and exponent u16}.
    pub fpregs: Place,
    /// `env.mxcsr`, u32.
    pub mxcsr: Place,
    /// `env.xmm_regs` low halves: n × {u64, u64}.
    pub xmm: Place,
    /// `env.xcr0`, u64.
    pub xcr0: Place,
    /// `env.xstate_bv`, u64.
    pub xstate_bv: Place,
    /// YMM upper halves: n × {u64, u64}.
    pub ymmh: Place,
    /// `cpu/fpop_ip_dp`: FOP u16, FIP u64, FDP u64.
    pub fpop: Option<[Place; 3]>,
    /// `cpu/avx512`: k0-7 (8 × u64), ZMM_Hi256 (16 × 4 u64), Hi16_ZMM (16 × 8 u64).
    pub avx512: Option<[Place; 3]>,
    /// `cpu/pkru`: u32.
    pub pkru: Option<Place>,
    /// `cpu/mpx`: bnd0-3 (4 × {lb, ub}), BNDCFGU u64, BNDSTATUS u64.
    pub mpx: Option<[Place; 3]>,
    /// `cpu/xss`: u64.
    pub xss: Option<Place>,
    /// `cpu/intel_amx_xtile`: TILECFG (64 bytes), TILEDATA (8192 bytes).
    pub amx: Option<[Place; 2]>,
}

/// One vCPU's `cpu` section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CpuSection {
    /// The section's instance id: the vCPU index.
    pub instance: u32,
    /// The section's version (12 for QEMU 2.x and later).
    pub version: u32,
    /// Its fields, from the first to the footer.
    pub range: Range<usize>,
    /// Where the extended-state registers lie.
    pub fields: CpuFields,
}

/// A migration stream walked from its header to the vmdesc.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stream<'a> {
    /// The bytes.
    pub bytes: &'a [u8],
    /// The vmdesc JSON.
    pub vmdesc: Range<usize>,
    /// The `cpu` sections in stream order.
    pub cpus: Vec<CpuSection>,
    /// Whether a `kvmclock` section is present (created only under KVM).
    pub kvmclock: bool,
}

/// A name read from the stream, for a message: at most 40 bytes of it (a damaged length would
/// quote the binary that follows).
fn shown(name: &[u8]) -> String {
    let cut = name.len().min(40);
    let mut s = String::from_utf8_lossy(&name[..cut]).into_owned();
    if name.len() > cut {
        s.push_str("...");
    }
    s
}

fn framing(at: usize, what: String) -> RecordError {
    RecordError::new(F, Rule::Framing, Some(at), Detail::Message(what))
}

fn cut(len: usize, need: usize) -> RecordError {
    RecordError::size(F, Rule::Truncated, len, need, SizeBasis::Fixed)
}

/// A big-endian reader over the stream; every read is bounds-checked.
struct Cursor<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], RecordError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.b.len())
            .ok_or_else(|| cut(self.b.len(), self.pos.saturating_add(n)))?;
        let s = &self.b[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, RecordError> {
        Ok(self.take(1)?[0])
    }
    fn be(&mut self, n: usize) -> Result<u64, RecordError> {
        Ok(self.take(n)?.iter().fold(0u64, |v, &b| v << 8 | u64::from(b)))
    }
    fn skip(&mut self, n: u64) -> Result<(), RecordError> {
        let n = usize::try_from(n).map_err(|_| cut(self.b.len(), usize::MAX))?;
        self.take(n).map(|_| ())
    }
    /// A u8-length-prefixed id string.
    fn idstr(&mut self) -> Result<&'a [u8], RecordError> {
        let n = self.u8()?;
        self.take(n.into())
    }
}

fn be_at(b: &[u8], p: Place) -> u64 {
    b.get(p.range()).map_or(0, |s| s.iter().fold(0u64, |v, &x| v << 8 | u64::from(x)))
}

/// Where the vmdesc JSON starts: the one offset `p` such that `p - 5` holds
/// `QEMU_VM_VMDESCRIPTION`, `p - 4..p` the JSON's be32 length reaching exactly the end, and `p`
/// a `{`. The walk later confirms that `QEMU_VM_EOF` sits at `p - 6`.
fn find_vmdesc(b: &[u8]) -> Result<usize, RecordError> {
    let len = b.len();
    let mut found = None;
    for p in (14..len).rev() {
        if b[p] != b'{' || b[p - 5] != VMDESCRIPTION {
            continue;
        }
        let n = u32::from_be_bytes([b[p - 4], b[p - 3], b[p - 2], b[p - 1]]) as usize;
        if p.checked_add(n) == Some(len) {
            if found.is_some() {
                return Err(RecordError::new(
                    F,
                    Rule::Ambiguous,
                    Some(p - 5),
                    Detail::Text("two places could start the vmdesc"),
                ));
            }
            found = Some(p);
        }
    }
    found.ok_or_else(|| {
        RecordError::new(
            F,
            Rule::Framing,
            None,
            Detail::Text("no vmdesc JSON at the end (QEMU_VM_VMDESCRIPTION, be32 length, JSON to the end of the file)"),
        )
    })
}

/// A field of a vmstate description, placed in the stream.
struct Placed<'d, 'j> {
    /// The subsection (`None`: the section's own fields).
    sub: Option<&'d str>,
    desc: &'d Value<'j>,
    place: Place,
    /// Bytes of one element.
    size: usize,
    /// Elements.
    n: usize,
}

fn desc_str<'d>(v: &'d Value<'_>, key: &str) -> Option<&'d str> {
    match &v.get(key)?.kind {
        json::Kind::String(s) => Some(s),
        _ => None,
    }
}

/// Walks the fields and subsections of one vmstate whose description is `desc`, from `cur`;
/// collects the placed fields when `out` is given.
fn walk_vmsd<'d, 'j>(
    cur: &mut Cursor<'_>,
    desc: &'d Value<'j>,
    sub: Option<&'d str>,
    depth: usize,
    out: &mut Option<&mut Vec<Placed<'d, 'j>>>,
) -> Result<(), RecordError> {
    if depth > 16 {
        return Err(framing(cur.pos, "vmdesc subsections nested too deep".into()));
    }
    let bad = |pos: usize, what: &str| framing(pos, format!("vmdesc: {what}"));
    if let Some(fields) = desc.get("fields") {
        let fields = fields.as_array().ok_or_else(|| bad(cur.pos, "\"fields\" is not an array"))?;
        for f in fields {
            let size = f.get("size").and_then(Value::as_u64).ok_or_else(|| bad(cur.pos, "a field without \"size\""))?;
            let n = match f.get("array_len") {
                Some(a) => a.as_u64().ok_or_else(|| bad(cur.pos, "\"array_len\" is not a count"))?,
                None => 1,
            };
            let total = size.checked_mul(n).ok_or_else(|| cut(cur.b.len(), usize::MAX))?;
            let off = cur.pos;
            cur.skip(total)?;
            if let Some(o) = out.as_deref_mut() {
                o.push(Placed {
                    sub,
                    desc: f,
                    place: Place { off, len: total as usize },
                    size: size as usize,
                    n: n as usize,
                });
            }
        }
    }
    if let Some(subs) = desc.get("subsections") {
        let subs = subs.as_array().ok_or_else(|| bad(cur.pos, "\"subsections\" is not an array"))?;
        for s in subs {
            let name = desc_str(s, "vmsd_name").ok_or_else(|| bad(cur.pos, "a subsection without \"vmsd_name\""))?;
            let at = cur.pos;
            if cur.u8()? != SUBSECTION {
                return Err(framing(at, format!("expected subsection {name} (QEMU_VM_SUBSECTION)")));
            }
            let id = cur.idstr()?;
            if id != name.as_bytes() {
                return Err(framing(at, format!("subsection {:?} where the vmdesc has {name}", shown(id))));
            }
            let version = cur.be(4)?;
            if s.get("version").and_then(Value::as_u64) != Some(version) {
                return Err(framing(at, format!("subsection {name}: version {version} differs from the vmdesc")));
            }
            walk_vmsd(cur, s, Some(name), depth + 1, out)?;
        }
    }
    Ok(())
}

/// The leaf fields of a field's description as (name, type, size), flattening structs.
fn leaves<'j>(f: &Value<'j>, out: &mut Vec<(String, String, u64)>, depth: usize) {
    if depth > 8 {
        return;
    }
    let inner = f.get("struct").and_then(|s| s.get("fields")).or_else(|| f.get("fields"));
    match inner.and_then(Value::as_array) {
        Some(fields) => {
            for x in fields {
                leaves(x, out, depth + 1);
            }
        }
        None => out.push((
            desc_str(f, "name").unwrap_or("").into(),
            desc_str(f, "type").unwrap_or("").into(),
            f.get("size").and_then(Value::as_u64).unwrap_or(0),
        )),
    }
}

/// What one register field must look like.
struct Want {
    sub: Option<&'static str>,
    name: &'static str,
    /// (leaf name or "" for a scalar, type, size) of one element.
    shape: &'static [(&'static str, &'static str, u64)],
    /// Elements: exactly, or any of these.
    n: &'static [usize],
}

const U16: &[(&str, &str, u64)] = &[("", "uint16", 2)];
const U32: &[(&str, &str, u64)] = &[("", "uint32", 4)];
const U64: &[(&str, &str, u64)] = &[("", "uint64", 8)];
const U8: &[(&str, &str, u64)] = &[("", "uint8", 1)];
const ONE: &[usize] = &[1];
const Q01: &[(&str, &str, u64)] = &[("_q_ZMMReg[0]", "uint64", 8), ("_q_ZMMReg[1]", "uint64", 8)];
const Q23: &[(&str, &str, u64)] = &[("_q_ZMMReg[2]", "uint64", 8), ("_q_ZMMReg[3]", "uint64", 8)];
const Q4_7: &[(&str, &str, u64)] = &[
    ("_q_ZMMReg[4]", "uint64", 8),
    ("_q_ZMMReg[5]", "uint64", 8),
    ("_q_ZMMReg[6]", "uint64", 8),
    ("_q_ZMMReg[7]", "uint64", 8),
];
const Q0_7: &[(&str, &str, u64)] = &[
    ("_q_ZMMReg[0]", "uint64", 8),
    ("_q_ZMMReg[1]", "uint64", 8),
    ("_q_ZMMReg[2]", "uint64", 8),
    ("_q_ZMMReg[3]", "uint64", 8),
    ("_q_ZMMReg[4]", "uint64", 8),
    ("_q_ZMMReg[5]", "uint64", 8),
    ("_q_ZMMReg[6]", "uint64", 8),
    ("_q_ZMMReg[7]", "uint64", 8),
];
const FPREG: &[(&str, &str, u64)] = &[("tmp_mant", "uint64", 8), ("tmp_exp", "uint16", 2)];
const BND: &[(&str, &str, u64)] = &[("lb", "uint64", 8), ("ub", "uint64", 8)];

const fn want(
    sub: Option<&'static str>,
    name: &'static str,
    shape: &'static [(&'static str, &'static str, u64)],
    n: &'static [usize],
) -> Want {
    Want { sub, name, shape, n }
}

/// Finds the field `w` among `placed`: its name (or `name[k]`, vmdesc's name for a repeated
/// one), its element shape and count. `Ok(None)` if absent; an error if present with another
/// shape (a QEMU this reader does not know).
fn find(placed: &[Placed<'_, '_>], w: &Want) -> Result<Option<Place>, RecordError> {
    let mut seen = None;
    for p in placed.iter().filter(|p| p.sub == w.sub) {
        let name = desc_str(p.desc, "name").unwrap_or("");
        let base = name.split('[').next().unwrap_or(name);
        if name != w.name && base != w.name {
            continue;
        }
        let mut l = Vec::new();
        leaves(p.desc, &mut l, 0);
        let shape_ok = l.len() == w.shape.len()
            && l.iter().zip(w.shape).all(|((ln, lt, ls), (wn, wt, ws))| {
                (wn.is_empty() || ln == wn) && (lt == wt || (*wt == "uint8" && lt == "buffer")) && ls == ws
            });
        let size: u64 = w.shape.iter().map(|s| s.2).sum();
        let buffer_ok = w.shape == U8 && desc_str(p.desc, "type") == Some("buffer") && w.n.contains(&p.size);
        if buffer_ok {
            return Ok(Some(p.place));
        }
        if !shape_ok {
            // Another field of the same name (the YMM halves are a second env.xmm_regs).
            seen = Some(p.place.off);
            continue;
        }
        if p.size as u64 != size || !w.n.contains(&p.n) {
            return Err(framing(
                p.place.off,
                format!("{}: {} × {} bytes, expected {:?} × {size}", w.name, p.n, p.size, w.n),
            ));
        }
        return Ok(Some(p.place));
    }
    match seen {
        Some(off) if w.sub.is_none() && w.name != "env.xmm_regs" => {
            Err(framing(off, format!("{}: not the shape this reader knows", w.name)))
        }
        _ => Ok(None),
    }
}

fn cpu_fields(placed: &[Placed<'_, '_>], at: usize) -> Result<CpuFields, RecordError> {
    let need = |w: Want| -> Result<Place, RecordError> {
        find(placed, &w)?.ok_or_else(|| framing(at, format!("cpu section without {} (cpu version 12 has it)", w.name)))
    };
    let opt = |w: Want| find(placed, &w);
    let xmm_n: &[usize] = &[8, 16];
    let fields = CpuFields {
        fpuc: need(want(None, "env.fpuc", U16, ONE))?,
        fpus: need(want(None, "env.fpus_vmstate", U16, ONE))?,
        fptag: need(want(None, "env.fptag_vmstate", U16, ONE))?,
        fpregs: need(want(None, "env.fpregs", FPREG, &[8]))?,
        mxcsr: need(want(None, "env.mxcsr", U32, ONE))?,
        xmm: need(want(None, "env.xmm_regs", Q01, xmm_n))?,
        xcr0: need(want(None, "env.xcr0", U64, ONE))?,
        xstate_bv: need(want(None, "env.xstate_bv", U64, ONE))?,
        ymmh: need(want(None, "env.xmm_regs", Q23, xmm_n))?,
        fpop: match (
            opt(want(Some("cpu/fpop_ip_dp"), "env.fpop", U16, ONE))?,
            opt(want(Some("cpu/fpop_ip_dp"), "env.fpip", U64, ONE))?,
            opt(want(Some("cpu/fpop_ip_dp"), "env.fpdp", U64, ONE))?,
        ) {
            (Some(a), Some(b), Some(c)) => Some([a, b, c]),
            _ => None,
        },
        avx512: match (
            opt(want(Some("cpu/avx512"), "env.opmask_regs", U64, &[8]))?,
            opt(want(Some("cpu/avx512"), "env.xmm_regs", Q4_7, &[16]))?,
            opt(want(Some("cpu/avx512"), "env.xmm_regs", Q0_7, &[16]))?,
        ) {
            (Some(a), Some(b), Some(c)) => Some([a, b, c]),
            _ => None,
        },
        pkru: opt(want(Some("cpu/pkru"), "env.pkru", U32, ONE))?,
        mpx: match (
            opt(want(Some("cpu/mpx"), "env.bnd_regs", BND, &[4]))?,
            opt(want(Some("cpu/mpx"), "env.bndcs_regs.cfgu", U64, ONE))?,
            opt(want(Some("cpu/mpx"), "env.bndcs_regs.sts", U64, ONE))?,
        ) {
            (Some(a), Some(b), Some(c)) => Some([a, b, c]),
            _ => None,
        },
        xss: opt(want(Some("cpu/xss"), "env.xss", U64, ONE))?,
        amx: match (
            opt(want(Some("cpu/intel_amx_xtile"), "env.xtilecfg", U8, &[64]))?,
            opt(want(Some("cpu/intel_amx_xtile"), "env.xtiledata", U8, &[8192]))?,
        ) {
            (Some(a), Some(b)) => Some([a, b]),
            _ => None,
        },
    };
    // A subsection present but not understood would be a register silently dropped.
    for (sub, have) in [
        ("cpu/fpop_ip_dp", fields.fpop.is_some()),
        ("cpu/avx512", fields.avx512.is_some()),
        ("cpu/pkru", fields.pkru.is_some()),
        ("cpu/mpx", fields.mpx.is_some()),
        ("cpu/xss", fields.xss.is_some()),
        ("cpu/intel_amx_xtile", fields.amx.is_some()),
    ] {
        if !have && let Some(p) = placed.iter().find(|p| p.sub == Some(sub)) {
            return Err(framing(p.place.off, format!("subsection {sub}: fields this reader does not know")));
        }
    }
    Ok(fields)
}

/// Walks RAM page records from `cur` to RAM_SAVE_FLAG_EOS; `setup` for the START section
/// (the block list).
fn walk_ram(cur: &mut Cursor<'_>, page_size: u64, setup: bool) -> Result<(), RecordError> {
    loop {
        let at = cur.pos;
        let word = cur.be(8)?;
        let flags = word & (page_size - 1);
        if flags & !RAM_KNOWN != 0 {
            return Err(framing(
                at,
                format!("RAM record flags {flags:#x}: compressed, RDMA or other pages this reader does not walk"),
            ));
        }
        if flags & RAM_MEM_SIZE != 0 {
            if !setup {
                return Err(framing(at, "RAM block list outside the setup section".into()));
            }
            let mut left = word & !(page_size - 1);
            while left > 0 {
                let id_at = cur.pos;
                let id = cur.idstr()?;
                if id.is_empty() || !id.iter().all(|b| b.is_ascii_graphic()) {
                    return Err(framing(
                        id_at,
                        "RAM block list: a block id expected (postcopy or ignore-shared streams are not walked)".into(),
                    ));
                }
                let used = cur.be(8)?;
                left = left
                    .checked_sub(used)
                    .ok_or_else(|| framing(id_at, "RAM block list: block lengths exceed the total".into()))?;
            }
            continue;
        }
        if flags & RAM_EOS != 0 {
            return Ok(());
        }
        if flags == RAM_MULTIFD_FLUSH {
            continue;
        }
        if flags & RAM_CONTINUE == 0 {
            cur.idstr()?;
        }
        match flags & !RAM_CONTINUE {
            RAM_ZERO => cur.skip(1)?,
            RAM_PAGE => cur.skip(page_size)?,
            RAM_XBZRLE => {
                cur.skip(1)?;
                let n = cur.be(2)?;
                cur.skip(n)?;
            }
            other => return Err(framing(at, format!("RAM record flags {other:#x} this reader does not walk"))),
        }
    }
}

fn footer(cur: &mut Cursor<'_>, id: u64) -> Result<(), RecordError> {
    let at = cur.pos;
    if cur.u8()? != FOOTER || cur.be(4)? != id {
        return Err(framing(at, format!("section {id} does not end in its footer (QEMU_VM_SECTION_FOOTER)")));
    }
    Ok(())
}

impl<'a> Stream<'a> {
    /// Walks a stream (module documentation); refuses anything it cannot walk exactly.
    pub fn parse(bytes: &'a [u8]) -> Result<Stream<'a>, RecordError> {
        let mut cur = Cursor { b: bytes, pos: 0 };
        let magic = cur.be(4)? as u32;
        if magic != MAGIC {
            return Err(RecordError::value(F, Rule::Magic, 0, "QEMU_VM_FILE_MAGIC", magic.into(), MAGIC.into()));
        }
        let version = cur.be(4)? as u32;
        if version != VERSION {
            return Err(RecordError::value(
                F,
                Rule::Version,
                4,
                "QEMU_VM_FILE_VERSION",
                version.into(),
                VERSION.into(),
            ));
        }
        let vm = find_vmdesc(bytes)?;
        let text = core::str::from_utf8(&bytes[vm..])
            .map_err(|e| framing(vm + e.valid_up_to(), "vmdesc: not UTF-8".into()))?;
        let desc =
            json::parse(text).map_err(|e| framing(vm + e.offset, format!("vmdesc: JSON: expected {}", e.what)))?;
        let page_size = desc.get("page_size").and_then(Value::as_u64).filter(|p| p.is_power_of_two() && *p >= 1024);
        let page_size = page_size.ok_or_else(|| framing(vm, "vmdesc: no page_size".into()))?;
        let devices = desc.get("devices").and_then(Value::as_array).unwrap_or(&[]);
        let mut next_device = devices.iter();
        let mut cpus = Vec::new();
        let mut kvmclock = false;
        let mut ram_id = None;
        loop {
            let at = cur.pos;
            if at >= vm.saturating_sub(6) && at != vm - 6 {
                return Err(framing(at, "sections run into the vmdesc".into()));
            }
            match cur.u8()? {
                EOF => {
                    if at != vm - 6 {
                        return Err(framing(at, "QEMU_VM_EOF before the vmdesc".into()));
                    }
                    if next_device.next().is_some() {
                        return Err(framing(at, "the vmdesc describes more devices than the stream holds".into()));
                    }
                    break;
                }
                CONFIGURATION => {
                    let d = desc.get("configuration").ok_or_else(|| framing(at, "vmdesc: no configuration".into()))?;
                    walk_vmsd(&mut cur, d, None, 0, &mut None)?;
                }
                COMMAND => {
                    cur.be(2)?;
                    let n = cur.be(2)?;
                    cur.skip(n)?;
                }
                t @ (SECTION_START | SECTION_FULL) => {
                    let id = cur.be(4)?;
                    let name = cur.idstr()?;
                    let instance = cur.be(4)? as u32;
                    let sversion = cur.be(4)? as u32;
                    if name == b"ram" {
                        if t != SECTION_START || ram_id.is_some() {
                            return Err(framing(at, "a second or non-iterative ram section".into()));
                        }
                        ram_id = Some(id);
                        walk_ram(&mut cur, page_size, true)?;
                    } else if t == SECTION_START {
                        return Err(framing(at, format!("iterative section {:?}: only ram is walked", shown(name))));
                    } else {
                        let d = next_device
                            .next()
                            .ok_or_else(|| framing(at, "a device section the vmdesc does not describe".into()))?;
                        let dn = desc_str(d, "name").unwrap_or("");
                        let di = d.get("instance_id").and_then(Value::as_u64);
                        if dn.as_bytes() != name || di != Some(instance.into()) {
                            return Err(framing(
                                at,
                                format!(
                                    "section {:?} instance {instance} where the vmdesc has {dn:?} instance {di:?}",
                                    shown(name)
                                ),
                            ));
                        }
                        kvmclock |= name == b"kvmclock";
                        let start = cur.pos;
                        if name == b"cpu" {
                            let mut placed = Vec::new();
                            walk_vmsd(&mut cur, d, None, 0, &mut Some(&mut placed))?;
                            let fields = cpu_fields(&placed, start)?;
                            cpus.push(CpuSection { instance, version: sversion, range: start..cur.pos, fields });
                        } else {
                            walk_vmsd(&mut cur, d, None, 0, &mut None)?;
                        }
                    }
                    footer(&mut cur, id)?;
                }
                SECTION_PART | SECTION_END => {
                    let id = cur.be(4)?;
                    if ram_id != Some(id) {
                        return Err(framing(
                            at,
                            format!("section {id} continues no iterative section this reader walks"),
                        ));
                    }
                    walk_ram(&mut cur, page_size, false)?;
                    footer(&mut cur, id)?;
                }
                t => return Err(framing(at, format!("section type {t:#x}"))),
            }
        }
        if cpus.is_empty() {
            return Err(RecordError::new(F, Rule::NoImage, None, Detail::Text("the stream has no cpu section")));
        }
        Ok(Stream { bytes, vmdesc: vm..bytes.len(), cpus, kvmclock })
    }

    /// The register values of one `cpu` section.
    pub fn registers(&self, cpu: &CpuSection) -> Registers {
        Registers::read(self.bytes, &cpu.fields)
    }

    /// The accelerator: `given`, else the stream's evidence (module documentation); `None`
    /// when neither says. A given accelerator the evidence contradicts is refused.
    pub fn accel(&self, given: Option<Accel>) -> Result<Option<Accel>, RecordError> {
        let tcg_at = self.cpus.iter().find(|c| !self.registers(c).kvm_consistent()).map(|c| c.fields.xstate_bv.off);
        let contradiction =
            |at: Option<usize>, what: &'static str| RecordError::new(F, Rule::Ambiguous, at, Detail::Text(what));
        match (given, self.kvmclock, tcg_at) {
            (_, true, Some(at)) => Err(contradiction(
                Some(at),
                "a kvmclock section (KVM) and registers in use with their xstate_bv bit clear (not KVM)",
            )),
            (Some(Accel::Tcg), true, _) => Err(contradiction(
                None,
                "TCG was given, but the stream has a kvmclock section (created only under KVM)",
            )),
            (Some(Accel::Kvm), _, Some(at)) => Err(contradiction(
                Some(at),
                "KVM was given, but registers in use have their xstate_bv bit clear (KVM writes init values there)",
            )),
            (Some(a), ..) => Ok(Some(a)),
            (None, true, None) => Ok(Some(Accel::Kvm)),
            (None, false, Some(_)) => Ok(Some(Accel::Tcg)),
            (None, false, None) => Ok(None),
        }
    }
}

/// The extended-state registers of one `cpu` section, as values.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Registers {
    /// FCW.
    pub fcw: u16,
    /// FSW with TOP.
    pub fsw: u16,
    /// The abridged tag byte (physical registers) and the field's high byte.
    pub ftw: u16,
    /// The eight x87 registers as stored (order: [`Accel`]), 10 bytes each, little-endian.
    pub fpregs: [[u8; 10]; 8],
    /// FOP, FIP, FDP (0 without `cpu/fpop_ip_dp`).
    pub fop: u16,
    /// FIP.
    pub fip: u64,
    /// FDP.
    pub fdp: u64,
    /// MXCSR.
    pub mxcsr: u32,
    /// XCR0.
    pub xcr0: Xfeatures,
    /// `xstate_bv`.
    pub xstate_bv: Xfeatures,
    /// IA32_XSS (0 without `cpu/xss`).
    pub xss: Xfeatures,
    /// Bytes of each component as an image holds them (little-endian): SSE the XMM registers
    /// (16 × 16), AVX the upper halves, opmask, ZMM_Hi256, Hi16_ZMM, PKRU, BNDREGS, BNDCSR (64
    /// bytes: BNDCFGU, BNDSTATUS, zeros), TILECFG, TILEDATA; absent subsections read as zero.
    pub components: Vec<(Component, Vec<u8>)>,
}

/// The BNDREGS component: bnd0-3, {lb, ub} each (ub in 1's complement, as XSAVE writes it and
/// as QEMU's `env.bnd_regs[i].ub` holds it).
const BNDREGS_SIZE: usize = 64;
/// The BNDCSR component: BNDCFGU, BNDSTATUS, 48 reserved bytes.
const BNDCSR_SIZE: usize = 64;

/// Big-endian u64 words of `p` as little-endian bytes: QEMU stores each u64 with
/// `qemu_put_be64`; the image holds the same register byte-reversed per u64.
fn words_le(b: &[u8], p: Place) -> Vec<u8> {
    let mut out = Vec::with_capacity(p.len);
    if let Some(s) = b.get(p.range()) {
        for w in s.chunks_exact(8) {
            out.extend(w.iter().rev());
        }
    }
    out
}

impl Registers {
    fn read(b: &[u8], f: &CpuFields) -> Registers {
        let mut fpregs = [[0u8; 10]; 8];
        if let Some(s) = b.get(f.fpregs.range()) {
            for (i, r) in s.chunks_exact(10).enumerate().take(8) {
                let mant = u64::from_be_bytes(r[..8].try_into().unwrap_or([0; 8]));
                let exp = u16::from_be_bytes([r[8], r[9]]);
                fpregs[i][..8].copy_from_slice(&mant.to_le_bytes());
                fpregs[i][8..].copy_from_slice(&exp.to_le_bytes());
            }
        }
        let [fop, fip, fdp] = match f.fpop {
            Some(p) => [be_at(b, p[0]), be_at(b, p[1]), be_at(b, p[2])],
            None => [0; 3],
        };
        let mut sse = words_le(b, f.xmm);
        sse.resize(256, 0);
        let mut avx = words_le(b, f.ymmh);
        avx.resize(256, 0);
        let mut components = alloc::vec![(Component::SSE, sse), (Component::AVX, avx)];
        let (k, zh, hi) = match f.avx512 {
            Some([k, zh, hi]) => (words_le(b, k), words_le(b, zh), words_le(b, hi)),
            None => (alloc::vec![0; 64], alloc::vec![0; 512], alloc::vec![0; 1024]),
        };
        components.push((Component::OPMASK, k));
        components.push((Component::ZMM_HI256, zh));
        components.push((Component::HI16_ZMM, hi));
        let pkru = f.pkru.map_or(0, |p| be_at(b, p) as u32);
        // The 8-byte component: PKRU, then 4 bytes XSAVE writes as zero.
        components.push((Component::PKRU, u64::from(pkru).to_le_bytes().to_vec()));
        // BNDCSR is a 64-byte component: BNDCFGU, BNDSTATUS, then 48 bytes no register holds.
        let (bnd, csr) = match f.mpx {
            Some([r, cfgu, sts]) => {
                let mut csr = be_at(b, cfgu).to_le_bytes().to_vec();
                csr.extend_from_slice(&be_at(b, sts).to_le_bytes());
                csr.resize(BNDCSR_SIZE, 0);
                let mut bnd = words_le(b, r);
                bnd.resize(BNDREGS_SIZE, 0);
                (bnd, csr)
            }
            None => (alloc::vec![0; BNDREGS_SIZE], alloc::vec![0; BNDCSR_SIZE]),
        };
        components.push((Component::BNDREGS, bnd));
        components.push((Component::BNDCSR, csr));
        let (cfg, data) = match f.amx {
            Some([c, d]) => (b.get(c.range()).unwrap_or(&[]).to_vec(), b.get(d.range()).unwrap_or(&[]).to_vec()),
            None => (alloc::vec![0; 64], alloc::vec![0; 8192]),
        };
        components.push((Component::TILECFG, cfg));
        components.push((Component::TILEDATA, data));
        Registers {
            fcw: be_at(b, f.fpuc) as u16,
            fsw: be_at(b, f.fpus) as u16,
            ftw: be_at(b, f.fptag) as u16,
            fpregs,
            fop: fop as u16,
            fip,
            fdp,
            mxcsr: be_at(b, f.mxcsr) as u32,
            xcr0: Xfeatures(be_at(b, f.xcr0)),
            xstate_bv: Xfeatures(be_at(b, f.xstate_bv)),
            xss: Xfeatures(f.xss.map_or(0, |p| be_at(b, p))),
            components,
        }
    }

    /// TOP, from FSW.
    pub fn top(&self) -> usize {
        usize::from(self.fsw >> 11 & 7)
    }

    /// The components whose registers are not at their init value (x87: FCW 0x037F, the rest
    /// zero; every other component zero).
    pub fn not_init(&self) -> Xfeatures {
        let mut m = Xfeatures::EMPTY;
        let x87 = self.fcw != 0x037F
            || self.fsw != 0
            || self.ftw & 0xff != 0
            || self.fop != 0
            || self.fip != 0
            || self.fdp != 0
            || self.fpregs.iter().any(|r| r.iter().any(|&x| x != 0));
        if x87 {
            m = m.with(Component::X87);
        }
        for (c, bytes) in &self.components {
            if bytes.iter().any(|&x| x != 0) {
                m = m.with(*c);
            }
        }
        m
    }

    /// Whether KVM could have written these registers: every component of XCR0, and x87 and
    /// SSE (always in the restore's RFBM), whose registers are not init has its `xstate_bv`
    /// bit (the kernel writes init values for every clear bit, the legacy ones included).
    pub fn kvm_consistent(&self) -> bool {
        (self.not_init() & (self.xcr0 | Xfeatures::LEGACY) & HOLDS).is_subset_of(self.xstate_bv)
    }

    /// Whether the two x87 register orders give the same ST registers.
    pub fn order_free(&self) -> bool {
        let t = self.top();
        (0..8).all(|i| self.fpregs[i] == self.fpregs[(t + i) & 7])
    }

    /// ST(i) under `accel`'s register order.
    pub fn st(&self, accel: Accel, i: usize) -> [u8; 10] {
        match accel {
            Accel::Kvm => self.fpregs[i & 7],
            Accel::Tcg => self.fpregs[(self.top() + i) & 7],
        }
    }

    /// The standard image these registers make on `layout` (XCR0's components laid out; x87
    /// and SSE always), with XSTATE_BV as `accel` means it: KVM's `xstate_bv` (within XCR0), or
    /// for TCG every component of XCR0 (TCG keeps no XINUSE, so the registers are the state).
    pub fn image(&self, layout: &Layout, accel: Accel, at: usize) -> Result<(ImageBuf, Xfeatures), RecordError> {
        // The field is XCR0 itself (QEMU's env.xcr0, KVM_GET_XCRS): it obeys XCR0's rules.
        crate::xcr0::check_xcr0(self.xcr0)
            .map_err(|m| RecordError::new(F, Rule::InvalidMask, Some(at), super::Detail::Mask(m)))?;
        let rfbm = self.xcr0 | Xfeatures::LEGACY;
        let extra = rfbm - HOLDS;
        if !extra.is_empty() {
            return Err(RecordError::bits(F, Rule::NotHeld, at, "xcr0", self.xcr0, extra));
        }
        let missing = rfbm - layout.user_supported();
        if !missing.is_empty() {
            return Err(RecordError::bits(F, Rule::UnknownComponent, at, "xcr0", self.xcr0, missing));
        }
        let size = layout.standard_size(rfbm).map_or(MIN_SIZE, |s| s as usize).max(MIN_SIZE);
        let mut img = ImageBuf::init(size, Xfeatures::EMPTY);
        img[FCW..FCW + 2].copy_from_slice(&self.fcw.to_le_bytes());
        img[FSW..FSW + 2].copy_from_slice(&self.fsw.to_le_bytes());
        img[FTW] = self.ftw as u8;
        img[FOP..FOP + 2].copy_from_slice(&self.fop.to_le_bytes());
        img[FIP..FIP + 8].copy_from_slice(&self.fip.to_le_bytes());
        img[FDP..FDP + 8].copy_from_slice(&self.fdp.to_le_bytes());
        img[MXCSR..MXCSR + 4].copy_from_slice(&self.mxcsr.to_le_bytes());
        for i in 0..8 {
            img[ST0 + 16 * i..ST0 + 16 * i + 10].copy_from_slice(&self.st(accel, i));
        }
        for (c, bytes) in &self.components {
            if *c == Component::SSE {
                img[XMM0..XMM0 + 256].copy_from_slice(&bytes[..256]);
            } else if rfbm.contains(*c)
                && let Some(r) = layout.standard_range(*c).filter(|r| r.len() == bytes.len() && r.end <= size)
            {
                img[r].copy_from_slice(bytes);
            } else if rfbm.contains(*c) {
                return Err(RecordError::bits(F, Rule::UnknownComponent, at, "xcr0", self.xcr0, Xfeatures::from(*c)));
            }
        }
        let bv = match accel {
            Accel::Kvm => self.xstate_bv & rfbm,
            Accel::Tcg => rfbm,
        };
        img.set_xstate_bv(bv);
        Ok((img, rfbm))
    }
}

/// Reads every vCPU of `bytes` into a state with an image laid out for `layout`.
pub(crate) fn read(bytes: &[u8], layout: &Layout, given: Option<Accel>) -> Result<super::Contents, RecordError> {
    use super::{Contents, State, StateId};
    let s = Stream::parse(bytes)?;
    let accel = s.accel(given)?;
    let mut states = Vec::with_capacity(s.cpus.len());
    for cpu in &s.cpus {
        let r = s.registers(cpu);
        let a = match accel {
            Some(a) => a,
            None if r.order_free() => Accel::Kvm,
            None => {
                return Err(RecordError::new(
                    F,
                    Rule::Ambiguous,
                    Some(cpu.fields.fpregs.off),
                    Detail::Text(
                        "the stream does not say which accelerator wrote it (no kvmclock section, xstate_bv agrees with \
                         the registers) and its x87 registers read differently in KVM's ST order and TCG's physical \
                         order (TOP != 0): give the accelerator (--qemu-accel kvm|tcg)",
                    ),
                ));
            }
        };
        let (img, rfbm) = r.image(layout, a, cpu.fields.xcr0.off)?;
        let st =
            State::new(Some(img), Some(rfbm)).with_xcr0(r.xcr0).with_xss(r.xss).with_id(StateId::Vcpu(cpu.instance));
        states.push(st);
    }
    let how = match (given, accel) {
        (Some(a), _) => format!("x87 registers and xstate_bv read as {} writes them (given)", a.name()),
        (None, Some(Accel::Kvm)) => "written under KVM (a kvmclock section): x87 registers in ST order, xstate_bv KVM's".into(),
        (None, Some(Accel::Tcg)) => {
            "written under TCG (registers in use with xstate_bv clear): x87 registers physical, xstate_bv not tracked (every \
             enabled component marked in use)"
                .into()
        }
        (None, None) => "accelerator not determined; KVM and TCG readings agree for this stream".into(),
    };
    let mut c = Contents { format: F, layout: None, states, notes: Vec::new() };
    c.notes.push(format!("QEMU migration stream: {} vCPU section(s); {how}", s.cpus.len()));
    Ok(c)
}

/// Writes `states` (images laid out for `layout`) into the stream `original`: each replaces
/// the registers of the `cpu` section of its vCPU (a stream with one vCPU takes a state without
/// one); every other byte stays. Refused: a state the stream's section cannot hold (XCR0 or
/// XSS other than the section's where the field is absent, a component in use whose subsection
/// QEMU did not send, XMM8-15 in a 32-bit stream), and x87 registers whose order matters when
/// the accelerator is not known.
pub(crate) fn patch(
    original: &[u8],
    states: &[super::State],
    layout: &Layout,
    given: Option<Accel>,
) -> Result<Vec<u8>, RecordError> {
    patch_stream(&Stream::parse(original)?, states, layout, given)
}

/// [`patch`] of a walked stream.
fn patch_stream(
    s: &Stream<'_>,
    states: &[super::State],
    layout: &Layout,
    given: Option<Accel>,
) -> Result<Vec<u8>, RecordError> {
    use crate::image::state::State as Loaded;
    let accel = s.accel(given)?;
    let mut out = s.bytes.to_vec();
    for st in states {
        let cpu = match st.vcpu() {
            Some(v) => s.cpus.iter().find(|c| c.instance == v).ok_or_else(|| {
                RecordError::value(F, Rule::NotHeld, 0, "vcpu", v.into(), s.cpus.len().saturating_sub(1) as u64)
            })?,
            None if s.cpus.len() == 1 => &s.cpus[0],
            None => return Err(RecordError::new(F, Rule::NeedsField, None, Detail::Field(super::Field::Vcpu))),
        };
        let f = &cpu.fields;
        let old = s.registers(cpu);
        let Some(buf) = &st.image else {
            return Err(RecordError::new(F, Rule::NoStateForm, None, Detail::None));
        };
        let img = buf.image();
        if img.form() != crate::image::Form::Standard {
            return Err(RecordError::new(F, Rule::CompactedNotAccepted, Some(f.xstate_bv.off), Detail::None));
        }
        let xcr0 = st.xcr0.unwrap_or(old.xcr0);
        let rfbm = (xcr0 | Xfeatures::LEGACY) & layout.user_supported();
        let values = Loaded::new(img, layout, rfbm).values().ok_or_else(|| {
            RecordError::size(
                F,
                Rule::Truncated,
                img.len(),
                layout.standard_size(rfbm).unwrap_or(0) as usize,
                SizeBasis::Fixed,
            )
        })?;
        let in_use = img.xstate_bv() & rfbm;
        let lost = (in_use | xcr0) - HOLDS;
        if !lost.is_empty() {
            return Err(RecordError::bits(F, Rule::NotHeld, f.xcr0.off, "xcr0", xcr0, lost));
        }
        if st.xss.is_some_and(|x| x != old.xss) && f.xss.is_none() {
            return Err(not_sent("cpu/xss", f.xcr0.off));
        }
        let mut w = Writer { out: &mut out };
        let comp = |c: Component| values.components.iter().find(|(k, _)| *k == c).map(|(_, v)| v.as_slice());
        // x87.
        let x87 = comp(Component::X87).unwrap_or(&[]);
        let le16 = |o: usize| x87.get(o..o + 2).map_or(0, |s| u16::from_le_bytes([s[0], s[1]]));
        let le64 = |o: usize| x87.get(o..o + 8).and_then(|s| s.try_into().ok()).map_or(0, u64::from_le_bytes);
        let fsw = le16(FSW);
        let top = usize::from(fsw >> 11 & 7);
        let st_of = |i: usize| -> [u8; 10] {
            let mut r = [0u8; 10];
            if let Some(s) = x87.get(ST0 + 16 * i..ST0 + 16 * i + 10) {
                r.copy_from_slice(s);
            }
            r
        };
        let a = match accel {
            Some(a) => a,
            None if (0..8).all(|i| st_of(i) == st_of((i + 8 - top) & 7)) || top == 0 => Accel::Kvm,
            None => {
                return Err(RecordError::new(
                    F,
                    Rule::Ambiguous,
                    Some(f.fpregs.off),
                    Detail::Text(
                        "the x87 registers' order depends on the accelerator, which the stream does not say: give it (--qemu-accel kvm|tcg)",
                    ),
                ));
            }
        };
        w.be(f.fpuc, le16(FCW).into());
        w.be(f.fpus, fsw.into());
        w.be(f.fptag, u64::from(old.ftw & 0xff00) | u64::from(x87.get(FTW).copied().unwrap_or(0)));
        // ST(i) lives in fpregs[i] (KVM) or fpregs[(TOP + i) & 7] (TCG).
        let mut stored = [[0u8; 10]; 8];
        for i in 0..8 {
            let slot = match a {
                Accel::Kvm => i,
                Accel::Tcg => (top + i) & 7,
            };
            stored[slot] = st_of(i);
        }
        let mut fp = Vec::with_capacity(80);
        for r in &stored {
            fp.extend_from_slice(&u64::from_le_bytes(r[..8].try_into().unwrap_or([0; 8])).to_be_bytes());
            fp.extend_from_slice(&u16::from_le_bytes([r[8], r[9]]).to_be_bytes());
        }
        w.bytes(f.fpregs, &fp);
        let (fop, fip, fdp) = (u64::from(le16(FOP)), le64(FIP), le64(FDP));
        match f.fpop {
            Some([p0, p1, p2]) => {
                w.be(p0, fop);
                w.be(p1, fip);
                w.be(p2, fdp);
            }
            None if fop | fip | fdp != 0 => return Err(not_sent("cpu/fpop_ip_dp", f.xcr0.off)),
            None => {}
        }
        w.be(f.mxcsr, values.mxcsr.unwrap_or(old.mxcsr).into());
        let n_xmm = f.xmm.len / 16;
        let sse = comp(Component::SSE).unwrap_or(&[]);
        if sse.get(16 * n_xmm..).is_some_and(|t| t.iter().any(|&x| x != 0)) {
            return Err(RecordError::new(
                F,
                Rule::NotHeld,
                Some(f.xmm.off),
                Detail::Text("XMM8-15 in a stream of 8 XMM registers"),
            ));
        }
        w.words(f.xmm, sse);
        if xcr0 != old.xcr0 {
            w.be(f.xcr0, xcr0.bits());
        }
        // Components outside the restore's RFBM are not in the image: their registers (and
        // xstate_bv bits) stay as the stream has them.
        if a == Accel::Kvm {
            w.be(f.xstate_bv, (in_use | (old.xstate_bv - rfbm)).bits());
        }
        let zero = |c: Component| comp(c).is_none_or(|v| v.iter().all(|&x| x == 0));
        if let Some(v) = comp(Component::AVX) {
            w.words(f.ymmh, v);
        }
        let avx512 = [Component::OPMASK, Component::ZMM_HI256, Component::HI16_ZMM];
        match f.avx512 {
            Some(places) => {
                for (p, c) in places.into_iter().zip(avx512) {
                    if let Some(v) = comp(c) {
                        w.words(p, v);
                    }
                }
            }
            None if avx512.into_iter().all(zero) => {}
            None => return Err(not_sent("cpu/avx512", f.xcr0.off)),
        }
        match (f.pkru, comp(Component::PKRU)) {
            (Some(p), Some(v)) => w.be(p, u32::from_le_bytes(v[..4].try_into().unwrap_or([0; 4])).into()),
            (Some(_), None) => {}
            (None, _) if zero(Component::PKRU) => {}
            (None, _) => return Err(not_sent("cpu/pkru", f.xcr0.off)),
        }
        match f.mpx {
            Some([r, cfgu, sts]) => {
                if let Some(v) = comp(Component::BNDREGS) {
                    w.words(r, v);
                }
                if let Some(csr) = comp(Component::BNDCSR) {
                    w.be(cfgu, csr.get(..8).and_then(|s| s.try_into().ok()).map_or(0, u64::from_le_bytes));
                    w.be(sts, csr.get(8..16).and_then(|s| s.try_into().ok()).map_or(0, u64::from_le_bytes));
                }
            }
            None if zero(Component::BNDREGS) && zero(Component::BNDCSR) => {}
            None => return Err(not_sent("cpu/mpx", f.xcr0.off)),
        }
        match f.amx {
            Some([c, d]) => {
                if let Some(v) = comp(Component::TILECFG) {
                    w.bytes(c, v);
                }
                if let Some(v) = comp(Component::TILEDATA) {
                    w.bytes(d, v);
                }
            }
            None if zero(Component::TILECFG) && zero(Component::TILEDATA) => {}
            None => return Err(not_sent("cpu/intel_amx_xtile", f.xcr0.off)),
        }
        if let (Some(p), Some(x)) = (f.xss, st.xss) {
            w.be(p, x.bits());
        }
    }
    Ok(out)
}

fn not_sent(sub: &'static str, at: usize) -> RecordError {
    RecordError::new(
        F,
        Rule::NotHeld,
        Some(at),
        Detail::Message(format!(
            "the stream has no {sub} subsection (QEMU sends it only when those registers are not all zero); \
             xstate does not insert subsections"
        )),
    )
}

/// Writes register values into the copy of the stream, in place.
struct Writer<'o> {
    out: &'o mut Vec<u8>,
}

impl Writer<'_> {
    fn be(&mut self, p: Place, v: u64) {
        let bytes = v.to_be_bytes();
        if let Some(d) = self.out.get_mut(p.range()) {
            let n = d.len().min(8);
            d.copy_from_slice(&bytes[8 - n..]);
        }
    }
    fn bytes(&mut self, p: Place, v: &[u8]) {
        if let Some(d) = self.out.get_mut(p.range()) {
            let n = d.len().min(v.len());
            d[..n].copy_from_slice(&v[..n]);
        }
    }
    /// Little-endian image bytes as the stream's big-endian u64 words.
    fn words(&mut self, p: Place, v: &[u8]) {
        if let Some(d) = self.out.get_mut(p.range()) {
            for (dw, sw) in d.chunks_exact_mut(8).zip(v.chunks_exact(8)) {
                for (x, y) in dw.iter_mut().zip(sw.iter().rev()) {
                    *x = *y;
                }
            }
        }
    }
}

#[cfg(all(test, feature = "fixtures"))]
mod tests {
    use super::*;

    /// A section name behind a damaged length is quoted short in the error (the whole of it
    /// was 255 bytes of binary on one line).
    #[test]
    fn names_in_messages_are_cut() {
        assert_eq!(shown(b"cpu"), "cpu");
        let long = [0xAAu8; 255];
        assert!(shown(&long).ends_with("...") && shown(&long).chars().count() == 43, "{}", shown(&long));
    }
    use crate::record::State;

    /// bnd i as the image holds it: {lb, ub in 1's complement}.
    fn bnd(i: u64) -> [u64; 2] {
        [0x1000 * (i + 1), !(0x2000 * (i + 1))]
    }
    const CFGU: u64 = 0x20_0003;
    const STS: u64 = 0x2;

    /// A `cpu` section of only the fields this test needs, big-endian as QEMU puts them:
    /// xcr0 at 0, xstate_bv at 8, then (with `mpx`) `env.bnd_regs` at 16, cfgu at 80, sts at 88.
    fn section(xcr0: u64, mpx: bool) -> (Vec<u8>, CpuFields) {
        let mut b = Vec::new();
        b.extend_from_slice(&xcr0.to_be_bytes());
        b.extend_from_slice(&0u64.to_be_bytes());
        let mut f =
            CpuFields { xcr0: Place { off: 0, len: 8 }, xstate_bv: Place { off: 8, len: 8 }, ..CpuFields::default() };
        if mpx {
            for i in 0..4 {
                for w in bnd(i) {
                    b.extend_from_slice(&w.to_be_bytes());
                }
            }
            b.extend_from_slice(&CFGU.to_be_bytes());
            b.extend_from_slice(&STS.to_be_bytes());
            f.mpx = Some([Place { off: 16, len: 64 }, Place { off: 80, len: 8 }, Place { off: 88, len: 8 }]);
        }
        (b, f)
    }

    fn stream(b: &[u8], fields: CpuFields) -> Stream<'_> {
        Stream {
            bytes: b,
            vmdesc: 0..0,
            cpus: alloc::vec![CpuSection { instance: 0, version: 12, range: 0..b.len(), fields }],
            kvmclock: false,
        }
    }

    fn le(b: &[u8], at: usize) -> u64 {
        u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
    }

    #[test]
    fn mpx_subsection_reads_into_full_size_bndregs_and_bndcsr() {
        // Skylake-SP: BNDREGS at 960, BNDCSR at 1024, both 64 bytes. BNDCSR used to be built
        // as 16 bytes, and every stream with XCR0 bits 3|4 was refused (UnknownComponent).
        let layout = crate::fixtures::layout(crate::fixtures::INTEL_SKYLAKE_SP);
        let (b, f) = section(0x1f, true);
        let r = Registers::read(&b, &f);
        let (img, rfbm) = r.image(&layout, Accel::Tcg, 0).unwrap();
        assert_eq!(rfbm, Xfeatures(0x1f));
        for i in 0..4 {
            assert_eq!([le(&img, 960 + 16 * i), le(&img, 968 + 16 * i)], bnd(i as u64), "bnd{i}");
        }
        assert_eq!(le(&img, 1024), CFGU);
        assert_eq!(le(&img, 1032), STS);
        assert!(img[1040..1088].iter().all(|&x| x == 0));
        assert_eq!(img.image().xstate_bv(), Xfeatures(0x1f));
        // Absent: init, still 64 bytes each.
        let (b, f) = section(0x1f, false);
        let (img, _) = Registers::read(&b, &f).image(&layout, Accel::Tcg, 0).unwrap();
        assert!(img[960..1088].iter().all(|&x| x == 0));
    }

    #[test]
    fn mpx_patch_rewrites_one_bound_in_place() {
        let layout = crate::fixtures::layout(crate::fixtures::INTEL_SKYLAKE_SP);
        let (b, f) = section(0x1f, true);
        let s = stream(&b, f);
        let (mut img, rfbm) = s.registers(&s.cpus[0]).image(&layout, Accel::Tcg, 0).unwrap();
        img[976..984].copy_from_slice(&0x0bad_cafe_0000_7000u64.to_le_bytes());
        let st = State::new(Some(img), Some(rfbm)).with_xcr0(Xfeatures(0x1f));
        let out = patch_stream(&s, &[st], &layout, Some(Accel::Tcg)).unwrap();
        let changed: Vec<usize> = (0..b.len()).filter(|&i| b[i] != out[i]).collect();
        // bnd1.lb: stream bytes 32..40, big-endian.
        assert_eq!(&out[32..40], &0x0bad_cafe_0000_7000u64.to_be_bytes());
        assert!(changed.iter().all(|i| (32..40).contains(i)), "{changed:?}");
        let back = Registers::read(&out, &f);
        let csr = &back.components.iter().find(|c| c.0 == Component::BNDCSR).unwrap().1;
        assert_eq!((le(csr, 0), le(csr, 8)), (CFGU, STS));
    }

    #[test]
    fn mpx_state_without_the_subsection_is_refused() {
        let layout = crate::fixtures::layout(crate::fixtures::INTEL_SKYLAKE_SP);
        let (b, f) = section(0x1f, false);
        let s = stream(&b, f);
        let (mut img, rfbm) = s.registers(&s.cpus[0]).image(&layout, Accel::Tcg, 0).unwrap();
        img[1024] = 1; // BNDCFGU.EN
        let st = State::new(Some(img), Some(rfbm)).with_xcr0(Xfeatures(0x1f));
        let e = patch_stream(&s, &[st], &layout, Some(Accel::Tcg)).unwrap_err();
        assert_eq!(e.rule, Rule::NotHeld, "{e}");
        assert!(format!("{e}").contains("cpu/mpx"), "{e}");
    }
}
