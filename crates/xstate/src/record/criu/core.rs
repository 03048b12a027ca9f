//! A thread's FPU state in a CRIU `core-<tid>.img`: `CoreEntry.thread_info` (a
//! `thread_info_x86`, field 2) `.fpregs` (a `user_x86_fpregs_entry`, field 3) with its
//! `.xsave` (a `user_x86_xsave_entry`, field 13).
//!
//! The rules mirrored are CRIU's x86 dump and restore (criu/arch/x86/crtools.c):
//! - the legacy region is the fxsave fields `cwd swd twd fop rip rdp mxcsr mxcsr_mask`
//!   (uint32/uint64, restored by a cast to the fxsave field's width) and `st_space` (32 u32)
//!   and `xmm_space` (64 u32), each needing at least that many elements;
//! - each extended component CRIU knows is one repeated field whose bytes are the component's
//!   bytes in order (`ymmh_space` AVX, `bndreg_state`, `bndcsr_state`, `opmask_reg`,
//!   `zmm_upper`, `hi16_zmm`, `pkru`); the dump writes one for every component of its
//!   `xfeatures_mask` ([`super::cpuinfo`]), the restore copies one only where the restoring
//!   CPU has the component and `xstate_bv` has its bit, and refuses one whose byte count is
//!   not the CPU's size for it;
//! - the restore loads x87 and SSE always (XSTATE_BV gets bits 0 and 1) and every other
//!   component it copied; a component whose `xstate_bv` bit is set but that has no field is
//!   lost (loaded as init). Reading refuses such a state rather than give a wrong image.
//!
//! Writing back is patching: the `fpregs` message is re-encoded field by field (a field whose
//! value is unchanged keeps its original bytes, its packed or unpacked form, and unknown fields
//! stay as they were), then only the lengths of the enclosing `thread_info` field and of the
//! entry change. Unchanged state gives the file back byte for byte.

use alloc::vec::Vec;

use super::super::protobuf::{self, Field as PbField, Value, put_bytes, put_varint, put_varint_field};
use super::{CORE_MAGIC, Entry, entries, wire};
use crate::component::Component;
use crate::component::legacy::{FCW_INIT, MXCSR_MASK};
use crate::image::{Form, Image, ImageBuf, MIN_SIZE};
use crate::layout::Layout;
use crate::record::{Detail, Format, RecordError, Rule};
use crate::xfeatures::Xfeatures;

const F: Format = Format::CriuCore;

/// `CoreEntry.mtype` for x86-64.
const MTYPE_X86_64: u64 = 1;
const CORE_MTYPE: u32 = 1;
const CORE_THREAD_INFO: u32 = 2;
const THREAD_INFO_FPREGS: u32 = 3;
const FPREGS_XSAVE: u32 = 13;
const XSAVE_XSTATE_BV: u32 = 1;

/// A repeated (or scalar) field of a fpregs or xsave message and where its bytes go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Spec {
    number: u32,
    name: &'static str,
    /// Bytes of each element in the image.
    width: usize,
    /// Elements CRIU needs.
    count: usize,
}

impl Spec {
    const fn bytes(self) -> usize {
        self.width * self.count
    }
}

const fn spec(number: u32, name: &'static str, width: usize, count: usize) -> Spec {
    Spec { number, name, width, count }
}

/// The fxsave fields of `user_x86_fpregs_entry` and their offsets in the legacy region.
const LEGACY: [(Spec, usize); 10] = [
    (spec(1, "cwd", 2, 1), 0),
    (spec(2, "swd", 2, 1), 2),
    (spec(3, "twd", 2, 1), 4),
    (spec(4, "fop", 2, 1), 6),
    (spec(5, "rip", 8, 1), 8),
    (spec(6, "rdp", 8, 1), 16),
    (spec(7, "mxcsr", 4, 1), 24),
    (spec(8, "mxcsr_mask", 4, 1), MXCSR_MASK),
    (spec(9, "st_space", 4, 32), 32),
    (spec(10, "xmm_space", 4, 64), 160),
];

/// The components `user_x86_xsave_entry` holds, one repeated field each.
const ARRAYS: [(Spec, Component); 7] = [
    (spec(2, "ymmh_space", 4, 64), Component::AVX),
    (spec(3, "bndreg_state", 8, 8), Component::BNDREGS),
    (spec(4, "bndcsr_state", 8, 2), Component::BNDCSR),
    (spec(5, "opmask_reg", 8, 8), Component::OPMASK),
    (spec(6, "zmm_upper", 8, 64), Component::ZMM_HI256),
    (spec(7, "hi16_zmm", 8, 128), Component::HI16_ZMM),
    (spec(8, "pkru", 4, 2), Component::PKRU),
];

/// The components a CRIU core image can hold.
pub fn holdable() -> Xfeatures {
    ARRAYS.iter().fold(Xfeatures::LEGACY, |m, (_, c)| m.with(*c))
}

/// The size in bytes of the CRIU field holding `c`: the component's size CRIU dumps and
/// restores (`images/core-x86.proto`), whatever the CPU.
pub fn field_size(c: Component) -> Option<u32> {
    field_of(c).map(|s| s.bytes() as u32)
}

/// The CRIU field holding `c`'s bytes, by its proto name.
pub fn field_name(c: Component) -> Option<&'static str> {
    field_of(c).map(|s| s.name)
}

fn field_of(c: Component) -> Option<Spec> {
    ARRAYS.iter().find(|(_, k)| *k == c).map(|(s, _)| *s)
}

fn value_error(at: usize, field: &'static str, value: u64, expected: u64) -> RecordError {
    RecordError::value(F, Rule::Wire, at, field, value, expected)
}

/// The elements of every occurrence of field `s` in `msg` (at file offset `base`), in order.
fn elements(msg: &[u8], base: usize, s: Spec) -> Result<Option<Vec<u64>>, RecordError> {
    let mut out: Option<Vec<u64>> = None;
    for field in protobuf::fields(msg) {
        let field = field.map_err(|e| wire(F, base, e))?;
        if field.number != s.number {
            continue;
        }
        let at = base + field.start;
        let vals = protobuf::varints(field.value, base + field.value_start).map_err(|e| wire(F, 0, e))?;
        let max = if s.width >= 8 { u64::MAX } else { u64::from(u32::MAX) };
        if let Some(&v) = vals.iter().find(|&&v| v > max) {
            return Err(value_error(at, s.name, v, max));
        }
        out.get_or_insert_with(Vec::new).extend(vals);
    }
    Ok(out)
}

/// The one occurrence of message field `number` in `msg`, if any (a second one is refused:
/// protobuf would merge them, and CRIU never writes two).
fn sub<'a>(msg: &'a [u8], base: usize, number: u32, name: &'static str) -> Result<Option<PbField<'a>>, RecordError> {
    let mut found = None;
    for field in protobuf::fields(msg) {
        let field = field.map_err(|e| wire(F, base, e))?;
        if field.number != number {
            continue;
        }
        if !matches!(field.value, Value::Bytes(_)) {
            return Err(RecordError::new(F, Rule::Wire, Some(base + field.start), Detail::Text(name)));
        }
        if found.is_some() {
            return Err(RecordError::new(F, Rule::Wire, Some(base + field.start), Detail::Text("field repeated")));
        }
        found = Some(field);
    }
    Ok(found)
}

fn payload<'a>(f: &PbField<'a>) -> &'a [u8] {
    match f.value {
        Value::Bytes(b) => b,
        _ => &[],
    }
}

fn put_le(out: &mut [u8], width: usize, v: u64) {
    out[..width].copy_from_slice(&v.to_le_bytes()[..width]);
}

fn get_le(b: &[u8], width: usize) -> u64 {
    let mut a = [0u8; 8];
    a[..width].copy_from_slice(&b[..width]);
    u64::from_le_bytes(a)
}

/// One thread's FPU state as a core image holds it, with where it lies in the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CoreFpu<'a> {
    file: &'a [u8],
    entry: Entry<'a>,
    thread_info: PbField<'a>,
    fpregs: PbField<'a>,
    /// The legacy region (bytes 0..416; 416..511 zero) as the fxsave fields give it.
    pub legacy: [u8; 512],
    /// `xsave.xstate_bv`; `None` when the image has no xsave entry (a dump without OSXSAVE).
    pub xstate_bv: Option<Xfeatures>,
    /// The components with a field, each with its bytes.
    pub components: Vec<(Component, Vec<u8>)>,
}

impl<'a> CoreFpu<'a> {
    /// Reads the FPU state of a `core-<tid>.img`.
    pub fn parse(file: &'a [u8]) -> Result<CoreFpu<'a>, RecordError> {
        let list = entries(F, file, CORE_MAGIC)?;
        let [entry] = list.as_slice() else {
            return Err(value_error(8, "entries", list.len() as u64, 1));
        };
        let entry = *entry;
        let base = entry.offset;
        match elements(entry.payload, base, spec(CORE_MTYPE, "mtype", 8, 1))?.as_deref() {
            Some([MTYPE_X86_64]) => {}
            other => {
                let v = other.and_then(|v| v.first().copied()).unwrap_or(0);
                return Err(RecordError::value(F, Rule::TypeCode, base, "mtype (X86_64)", v, MTYPE_X86_64));
            }
        }
        let missing =
            |what: &'static str, at: usize| RecordError::new(F, Rule::Truncated, Some(at), Detail::Text(what));
        let ti = sub(entry.payload, base, CORE_THREAD_INFO, "thread_info")?
            .ok_or_else(|| missing("no thread_info (field 2)", base))?;
        let ti_base = base + ti.value_start;
        let fp = sub(payload(&ti), ti_base, THREAD_INFO_FPREGS, "fpregs")?
            .ok_or_else(|| missing("no thread_info.fpregs (field 3)", ti_base))?;
        let fp_base = ti_base + fp.value_start;
        let fp_msg = payload(&fp);

        let mut legacy = [0u8; 512];
        for (s, off) in LEGACY {
            let v = elements(fp_msg, fp_base, s)?.ok_or_else(|| missing(s.name, fp_base))?;
            // A scalar occurs once (protobuf's last-wins would differ from a patch's first).
            if v.len() < s.count || (s.count == 1 && v.len() != 1) {
                return Err(value_error(fp_base, s.name, v.len() as u64, s.count as u64));
            }
            for (i, &e) in v.iter().take(s.count).enumerate() {
                put_le(&mut legacy[off + i * s.width..], s.width, e);
            }
        }

        let mut xstate_bv = None;
        let mut components = Vec::new();
        if let Some(xs) = sub(fp_msg, fp_base, FPREGS_XSAVE, "xsave")? {
            let xs_base = fp_base + xs.value_start;
            let xs_msg = payload(&xs);
            let bv = match elements(xs_msg, xs_base, spec(XSAVE_XSTATE_BV, "xstate_bv", 8, 1))?.as_deref() {
                Some(&[bv]) => bv,
                None => return Err(missing("no xsave.xstate_bv", xs_base)),
                Some(v) => return Err(value_error(xs_base, "xstate_bv", v.len() as u64, 1)),
            };
            xstate_bv = Some(Xfeatures(bv));
            for (s, c) in ARRAYS {
                let Some(v) = elements(xs_msg, xs_base, s)? else { continue };
                // CRIU's restore refuses a field of another size than the component's.
                if v.len() != s.count {
                    return Err(value_error(xs_base, s.name, v.len() as u64, s.count as u64));
                }
                let mut bytes = alloc::vec![0u8; s.bytes()];
                for (i, &e) in v.iter().enumerate() {
                    put_le(&mut bytes[i * s.width..], s.width, e);
                }
                components.push((c, bytes));
            }
        }
        Ok(CoreFpu { file, entry, thread_info: ti, fpregs: fp, legacy, xstate_bv, components })
    }

    /// The components with a field, plus x87 and SSE.
    pub fn held(&self) -> Xfeatures {
        self.components.iter().fold(Xfeatures::LEGACY, |m, (c, _)| m.with(*c))
    }

    /// The state as a standard image laid out for `layout`, and the components it is laid out
    /// for (x87, SSE and every component with a field that `layout` has at CRIU's size). The
    /// image is what CRIU's restore loads: XSTATE_BV is `xstate_bv` with x87 and SSE, which the
    /// restore loads from the fields whatever `xstate_bv` says.
    ///
    /// Refused, naming the bits: a component in `xstate_bv` with no field in the image (CRIU's
    /// restore would load it as init: BNDREGS on an MPX host, see [`super::cpuinfo`]), and a
    /// component in `xstate_bv` that `layout` lacks or sizes otherwise.
    pub fn to_image(&self, layout: &Layout) -> Result<(ImageBuf, Xfeatures), RecordError> {
        let bv = self.xstate_bv.unwrap_or(Xfeatures::LEGACY);
        let no_field = bv - self.held();
        if !no_field.is_empty() {
            return Err(RecordError::bits(F, Rule::NotHeld, self.fpregs_offset(), "xstate_bv", bv, no_field));
        }
        let fits = |c: Component, len: usize| {
            layout.user_supported().contains(c) && layout.standard_range(c).is_some_and(|r| r.len() == len)
        };
        let rfbm =
            self.components.iter().filter(|(c, b)| fits(*c, b.len())).fold(Xfeatures::LEGACY, |m, (c, _)| m.with(*c));
        let lost = bv - rfbm;
        if !lost.is_empty() {
            return Err(RecordError::bits(F, Rule::UnknownComponent, self.fpregs_offset(), "xstate_bv", bv, lost));
        }
        let size = layout.standard_size(rfbm).map_or(MIN_SIZE, |s| s as usize);
        let mut img = ImageBuf::init(size, Xfeatures(0));
        img[..416].copy_from_slice(&self.legacy[..416]);
        for (c, bytes) in &self.components {
            if let Some(r) = layout.standard_range(*c).filter(|_| rfbm.contains(*c)) {
                img[r].copy_from_slice(bytes);
            }
        }
        // CRIU's restore loads x87 and SSE from the fields whatever xstate_bv says.
        img.set_xstate_bv((bv | Xfeatures::LEGACY) & rfbm);
        Ok((img, rfbm))
    }

    /// Offset of the fpregs field in the file, for errors.
    fn fpregs_offset(&self) -> usize {
        self.entry.offset + self.thread_info.value_start + self.fpregs.start
    }

    /// The file with this thread's FPU state replaced by `image`, a standard image laid out for
    /// `layout` (module doc: patching). Refused: a compacted image, and a component in use
    /// that CRIU has no field for (AMX, APX, CET, ...), naming the bits.
    pub fn patch(&self, image: &Image<'_>, layout: &Layout) -> Result<Vec<u8>, RecordError> {
        if image.form() != Form::Standard {
            return Err(RecordError::new(F, Rule::CompactedNotAccepted, Some(512 + 8), Detail::None));
        }
        let bv = image.xstate_bv() - Xfeatures::BIT63;
        let unheld = bv - holdable();
        if !unheld.is_empty() {
            return Err(RecordError::bits(F, Rule::NotHeld, 512, "XSTATE_BV", bv, unheld));
        }
        let mut legacy = [0u8; 512];
        let n = image.len().min(512);
        legacy[..n].copy_from_slice(&image.bytes()[..n]);
        // CRIU's restore always loads x87 and SSE from the fields: write what XRSTOR of the
        // image loads for a component not in use (its init value).
        if !bv.contains(Component::X87) {
            legacy[..8].fill(0);
            legacy[..2].copy_from_slice(&FCW_INIT.to_le_bytes());
            legacy[8..24].fill(0);
            legacy[32..160].fill(0);
        }
        if !bv.contains(Component::SSE) {
            legacy[160..416].fill(0);
        }
        let bytes = image.bytes();
        let comp = |c: Component| -> Option<&[u8]> {
            let r = layout.standard_range(c)?;
            bytes.get(r)
        };
        let fp_msg = payload(&self.fpregs);
        // Bits 0 and 1 of xstate_bv mean nothing to CRIU's restore: keep the file's.
        let kept = self.xstate_bv.unwrap_or_default() & Xfeatures::LEGACY;
        let new_fp = rewrite_fpregs(fp_msg, &legacy, (bv - Xfeatures::LEGACY) | kept, &comp)?;
        if new_fp == fp_msg {
            return Ok(self.file.to_vec());
        }
        // thread_info with the new fpregs, then the entry with the new thread_info.
        let ti_msg = payload(&self.thread_info);
        let new_ti = splice(ti_msg, &self.fpregs, THREAD_INFO_FPREGS, &new_fp);
        let new_entry = splice(self.entry.payload, &self.thread_info, CORE_THREAD_INFO, &new_ti);
        let len = u32::try_from(new_entry.len()).map_err(|_| {
            RecordError::size(F, Rule::Oversized, new_entry.len(), u32::MAX as usize, super::super::SizeBasis::Fixed)
        })?;
        let start = self.entry.offset;
        let end = start + self.entry.payload.len();
        let mut out = Vec::with_capacity(self.file.len() + new_entry.len() - self.entry.payload.len());
        out.extend_from_slice(&self.file[..start - 4]);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&new_entry);
        out.extend_from_slice(&self.file[end..]);
        Ok(out)
    }
}

/// `msg` with the length-delimited field `old` replaced by one holding `new`.
fn splice(msg: &[u8], old: &PbField<'_>, number: u32, new: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(msg.len() + new.len());
    out.extend_from_slice(&msg[..old.start]);
    put_bytes(&mut out, number, new);
    out.extend_from_slice(&msg[old.end..]);
    out
}

/// The elements of field `s` taken from `bytes`.
fn values_of(bytes: &[u8], s: Spec) -> Vec<u64> {
    (0..s.count).map(|i| get_le(&bytes[i * s.width..], s.width)).collect()
}

/// Re-encodes the fields of `msg` numbered like a spec of `specs` with `values` (each
/// field's elements, taken in order across its occurrences), keeping every other field and
/// every occurrence whose elements are unchanged (compared at the image's width: CRIU casts on
/// restore) as its original bytes. Returns the message and the specs it had no field for.
fn rewrite(
    msg: &[u8],
    base: usize,
    specs: &[(Spec, Vec<u64>)],
    mut other: impl FnMut(&PbField<'_>, &mut Vec<u8>) -> Result<bool, RecordError>,
) -> Result<(Vec<u8>, Vec<usize>), RecordError> {
    let mut out = Vec::with_capacity(msg.len());
    let mut next = alloc::vec![0usize; specs.len()];
    for field in protobuf::fields(msg) {
        let field = field.map_err(|e| wire(F, base, e))?;
        let original = &msg[field.start..field.end];
        let Some(i) = specs.iter().position(|(s, _)| s.number == field.number) else {
            if !other(&field, &mut out)? {
                out.extend_from_slice(original);
            }
            continue;
        };
        let (s, vals) = &specs[i];
        let old = protobuf::varints(field.value, base + field.value_start).map_err(|e| wire(F, 0, e))?;
        let from = next[i];
        next[i] += old.len();
        let mask = if s.width >= 8 { u64::MAX } else { (1u64 << (8 * s.width)) - 1 };
        let new: Vec<u64> = old.iter().enumerate().map(|(k, &o)| vals.get(from + k).copied().unwrap_or(o)).collect();
        if old.iter().zip(&new).all(|(o, n)| o & mask == *n & mask) {
            out.extend_from_slice(original);
            continue;
        }
        match field.value {
            Value::Bytes(_) => {
                let mut packed = Vec::new();
                for v in &new {
                    put_varint(&mut packed, *v);
                }
                put_bytes(&mut out, field.number, &packed);
            }
            _ => put_varint_field(&mut out, field.number, new[0]),
        }
    }
    let absent = (0..specs.len()).filter(|&i| next[i] == 0).collect();
    Ok((out, absent))
}

/// Appends field `s` with `vals` unpacked, as CRIU's own writer does.
fn append(out: &mut Vec<u8>, s: Spec, vals: &[u64]) {
    for v in vals {
        put_varint_field(out, s.number, *v);
    }
}

fn rewrite_fpregs<'i>(
    fp_msg: &[u8],
    legacy: &[u8; 512],
    bv: Xfeatures,
    comp: &dyn Fn(Component) -> Option<&'i [u8]>,
) -> Result<Vec<u8>, RecordError> {
    let specs: Vec<(Spec, Vec<u64>)> = LEGACY.iter().map(|&(s, off)| (s, values_of(&legacy[off..], s))).collect();
    let mut xsave_seen = false;
    let mut failure = None;
    let (out, absent) = rewrite(fp_msg, 0, &specs, |field, out| {
        if field.number != FPREGS_XSAVE {
            return Ok(false);
        }
        xsave_seen = true;
        match rewrite_xsave(payload(field), bv, comp) {
            Ok(new) if new.as_slice() == payload(field) => Ok(false),
            Ok(new) => {
                put_bytes(out, FPREGS_XSAVE, &new);
                Ok(true)
            }
            Err(e) => {
                failure = Some(e);
                Ok(false)
            }
        }
    })?;
    if let Some(e) = failure {
        return Err(e);
    }
    if let Some(&i) = absent.first() {
        return Err(RecordError::new(F, Rule::Truncated, None, Detail::Text(specs[i].0.name)));
    }
    let extended = bv - Xfeatures::LEGACY;
    if !xsave_seen && !extended.is_empty() {
        return Err(RecordError::bits(F, Rule::NotHeld, 512, "XSTATE_BV (the image has no xsave entry)", bv, extended));
    }
    Ok(out)
}

fn rewrite_xsave<'i>(
    xs_msg: &[u8],
    bv: Xfeatures,
    comp: &dyn Fn(Component) -> Option<&'i [u8]>,
) -> Result<Vec<u8>, RecordError> {
    let mut specs: Vec<(Spec, Vec<u64>)> =
        alloc::vec![(spec(XSAVE_XSTATE_BV, "xstate_bv", 8, 1), alloc::vec![bv.bits()])];
    let mut wanted = Vec::new();
    for (s, c) in ARRAYS {
        // A component not in use: CRIU's restore does not read its field, so it stays as is.
        if !bv.contains(c) {
            continue;
        }
        match comp(c).filter(|b| b.len() == s.bytes()) {
            Some(b) => {
                specs.push((s, values_of(b, s)));
                wanted.push(true);
            }
            None => {
                return Err(RecordError::bits(F, Rule::UnknownComponent, 512, "XSTATE_BV", bv, Xfeatures::of(c)));
            }
        }
    }
    let (mut out, absent) = rewrite(xs_msg, 0, &specs, |_, _| Ok(false))?;
    for i in absent {
        let (s, vals) = &specs[i];
        // A component in use with no field: add it (CRIU's restore reads any field present).
        if i == 0 || wanted[i - 1] {
            append(&mut out, *s, vals);
        }
    }
    Ok(out)
}

/// Whether `bytes` start like a core image.
pub fn is_core(bytes: &[u8]) -> bool {
    use super::super::le::u32_at;
    u32_at(bytes, 0) == Some(super::IMG_COMMON_MAGIC) && u32_at(bytes, 4) == Some(CORE_MAGIC)
}
