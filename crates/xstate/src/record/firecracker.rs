//! Firecracker's snapshot `vmstate` (`PUT /snapshot/create`; docs/FORMATS.md "Firecracker
//! vmstate"), x86_64.
//!
//! The file is a header (`SNAPSHOT_MAGIC_ID` 0x0710_1984_8664_0000, a version string) and the
//! `MicrovmState`, encoded with bitcode 0.6 since Firecracker 1.15 (bincode with fixed-width
//! little-endian integers before), then a little-endian CRC-64 (the crc64 crate's: reflected
//! polynomial 0x95ac9329ac4bc9b5, initial value 0, no final xor) of every byte before it.
//!
//! **bincode files** (Firecracker up to 1.14, snapshot format up to 8.0.0) are read by
//! structure: `MicrovmState.vcpu_states` (`Vec<VcpuState>`) is walked field by field as serde's
//! derive and bincode's fixed-int encoding lay out Firecracker 1.14's types (kvm-bindings
//! structures as u64-length-prefixed bytes, so the `kvm_cpuid_entry2` records are 48 bytes
//! apart), every length checked; exactly one byte range must parse as it. The fields before it
//! (`vm_info`, `kvm_state`, `vm_state`) are not walked: the vector starts where a `CpuId`
//! header stands behind its count. The `kvm_xsave` found must still carry KVM's marks (below).
//!
//! **bitcode files** (1.15 and later): bitcode is columnar and not self-describing: without
//! Firecracker's types the state cannot be parsed. What it keeps whole are the kvm-bindings
//! structures serialized as bytes, so each vCPU's state is **located by content**:
//! - `kvm_xsave` (4096 bytes, inside kvm-bindings' `Xsave`, whose 8-byte FAM length before it
//!   must be 0): KVM_GET_XSAVE's own marks: the CPU's MXCSR_MASK at 28 (the kernel's copy always
//!   writes it: 0xFFBF or more) with MXCSR within it, a valid XCR0-like mask at 464 (the host's,
//!   as KVM writes it), zeros at 472..511 (or xstate's re-layout mark, [`super::relayout`]),
//!   XCOMP_BV 0, reserved header zero, XSTATE_BV within the mask;
//! - `kvm_xcrs` (392 bytes): 1..=16 entries, flags 0, an XCR0 entry first with a valid value,
//!   every byte after the entries zero;
//! - the CPUID: runs of 40-byte `kvm_cpuid_entry2` records (padding zero), one run per vCPU
//!   starting at leaf 0, holding leaf 0xD.
//!
//! Each kind must be found the same number of times (the vCPUs, paired in file order). Either
//! way, each vCPU's pieces must confirm each other: XCR0 within the CPUID's leaf 0xD and within
//! the mask at 464, XSTATE_BV within XCR0, the image valid for KVM_SET_XSAVE on the CPUID's
//! layout. Anything else (no candidate, unequal counts, overlapping candidates, a non-zero FAM length: AMX state
//! beyond 4096 bytes is encoded in bitcode columns this reader does not decode) is refused as
//! ambiguous. [`Located::found`] (and `inspect`'s note) says which way each state was found.
//! Patching rewrites the located bytes in place and recomputes the CRC.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::ops::Range;

use super::kvm::{KVM_XCRS_SIZE, KVM_XSAVE_SIZE, KvmXcrs, KvmXsave};
use super::le::{u32_at, u64_at};
use super::{Contents, Detail, Format, Options, RecordError, Rule, State, StateId};
use crate::component::legacy::mxcsr_mask_proven_by;
use crate::cpuid::{Leaf0d, Regs};
use crate::image::{Image, ImageBuf};
use crate::layout::Layout;
use crate::xcr0::check_xcr0_supported;
use crate::xfeatures::Xfeatures;

const F: Format = Format::Firecracker;

/// `SNAPSHOT_MAGIC_ID` for x86_64.
pub const MAGIC: u64 = 0x0710_1984_8664_0000;

/// Bytes of one `kvm_cpuid_entry2`.
const CPUID_ENTRY: usize = 40;

/// The crc64 crate's CRC-64: reflected polynomial 0x95ac9329ac4bc9b5 (the Jones polynomial),
/// initial value 0, no final xor.
pub fn crc64(bytes: &[u8]) -> u64 {
    const TABLE: [u64; 256] = {
        let mut t = [0u64; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u64;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 { (c >> 1) ^ 0x95ac_9329_ac4b_c9b5 } else { c >> 1 };
                k += 1;
            }
            t[i] = c;
            i += 1;
        }
        t
    };
    bytes.iter().fold(0u64, |c, &b| TABLE[((c ^ u64::from(b)) & 0xff) as usize] ^ (c >> 8))
}

/// The serialization of a vmstate, from its header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Era {
    /// bitcode (Firecracker 1.15 and later): the magic after bitcode's one-byte packing tag.
    Bitcode,
    /// bincode (up to 1.14): the magic in the first 8 bytes.
    Bincode,
}

/// How a vCPU's state was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Found {
    /// By content (bitcode): the kvm-bindings structures recognised by their values.
    Content,
    /// By structure (bincode): `MicrovmState.vcpu_states` walked field by field.
    Structure,
}

/// One vCPU's state as located.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Located {
    /// How it was found.
    pub found: Found,
    /// Offset of the 4096-byte `kvm_xsave`.
    pub xsave: usize,
    /// Offset of the 392-byte `kvm_xcrs`.
    pub xcrs: usize,
    /// The `kvm_cpuid_entry2` records: the first at `cpuid.start`, one every `cpuid_step` bytes
    /// (40 where they are contiguous; 48 under bincode, each behind its u64 byte length).
    pub cpuid: Range<usize>,
    /// Bytes from one `kvm_cpuid_entry2` to the next.
    pub cpuid_step: usize,
    /// Leaf 0xD of that run.
    pub leaf0d: Leaf0d,
    /// XCR0 from `kvm_xcrs`.
    pub xcr0: Xfeatures,
}

/// A vmstate with its vCPUs located.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vmstate<'a> {
    /// The bytes.
    pub bytes: &'a [u8],
    /// The serialization.
    pub era: Era,
    /// The header's version string, where found.
    pub version: Option<String>,
    /// The vCPUs in file order.
    pub vcpus: Vec<Located>,
}

fn ambiguous(at: Option<usize>, what: String) -> RecordError {
    RecordError::new(F, Rule::Ambiguous, at, Detail::Message(what))
}

/// A byte window that is `kvm_xcrs` as KVM_GET_XCRS writes it; its XCR0.
fn xcrs_at(b: &[u8], p: usize) -> Option<Xfeatures> {
    let w = b.get(p..p + KVM_XCRS_SIZE)?;
    let nr = u32_at(w, 0)? as usize;
    if !(1..=16).contains(&nr) || u32_at(w, 4)? != 0 || u32_at(w, 8)? != 0 || u32_at(w, 12)? != 0 {
        return None;
    }
    let xcr0 = Xfeatures(u64_at(w, 16)?);
    if !xcr0.contains(crate::Component::X87)
        || check_xcr0_supported(xcr0, Xfeatures::ALL_COMPONENTS, Xfeatures::EMPTY).is_err()
    {
        return None;
    }
    w[8 + 16 * nr..].iter().all(|&x| x == 0).then_some(xcr0)
}

/// A byte window that is `kvm_xsave` as KVM_GET_XSAVE writes it (module documentation).
fn xsave_at(b: &[u8], p: usize) -> bool {
    let Some(w) = b.get(p..p + KVM_XSAVE_SIZE) else { return false };
    let Some(mask) = u64_at(w, 464).map(Xfeatures) else { return false };
    if mask.bits() & 3 != 3 || check_xcr0_supported(mask, Xfeatures::ALL_COMPONENTS, Xfeatures::EMPTY).is_err() {
        return false;
    }
    let sw_clear = w[472..512].iter().enumerate().all(|(i, &x)| x == 0 || super::relayout::AT.contains(&(472 + i)));
    let marked_ok = super::relayout::read(w).is_some() || w[super::relayout::AT].iter().all(|&x| x == 0);
    let bv = Xfeatures(u64_at(w, 512).unwrap_or(u64::MAX));
    // The kernel's copy always carries the CPU's MXCSR_MASK (0xFFBF or more; 0x2FFFF on Zen 4),
    // and MXCSR within it.
    let mxcsr_mask = u32_at(w, 28).unwrap_or(0);
    let mxcsr = u32_at(w, 24).unwrap_or(u32::MAX);
    let legacy_ok = mxcsr_mask & 0xFFBF == 0xFFBF && mxcsr & !mxcsr_mask == 0;
    legacy_ok && sw_clear && marked_ok && bv.is_subset_of(mask) && w[520..576].iter().all(|&x| x == 0)
}

/// A plausible `kvm_cpuid_entry2` at `p`: padding zero, flags within KVM's three, a leaf of the
/// basic, hypervisor or extended ranges.
fn cpuid_entry_at(b: &[u8], p: usize) -> Option<(u32, u32, Regs)> {
    let w = b.get(p..p + CPUID_ENTRY)?;
    let f = u32_at(w, 0)?;
    let plausible = f < 0x100 || (0x4000_0000..0x4000_0200).contains(&f) || (0x8000_0000..0x8000_0100).contains(&f);
    if !plausible || u32_at(w, 8)? > 7 || w[28..40].iter().any(|&x| x != 0) {
        return None;
    }
    let r = Regs::new(u32_at(w, 12)?, u32_at(w, 16)?, u32_at(w, 20)?, u32_at(w, 24)?);
    Some((f, u32_at(w, 4)?, r))
}

/// The CPUID runs: each starts at a leaf-0 entry and extends while entries stay plausible,
/// ending before the next leaf 0; only runs holding leaf 0xD subleaf 0 count.
fn cpuid_runs(b: &[u8]) -> Vec<(Range<usize>, Leaf0d)> {
    let mut out: Vec<(Range<usize>, Leaf0d)> = Vec::new();
    let mut p = 0;
    while p + CPUID_ENTRY <= b.len() {
        if let Some((0, 0, r)) = cpuid_entry_at(b, p)
            && r.eax >= 0xD
            && out.last().is_none_or(|(run, _)| p >= run.end)
        {
            let mut end = p + CPUID_ENTRY;
            let mut l = Leaf0d::new();
            while let Some((f, i, regs)) = cpuid_entry_at(b, end) {
                if f == 0 {
                    break;
                }
                if f == 0xD && i < 64 {
                    l.set(i as u8, regs);
                }
                end += CPUID_ENTRY;
            }
            if l.recorded(0) {
                out.push((p..end, l));
                p = end;
                continue;
            }
        }
        p += 1;
    }
    out
}

/// A cursor over bincode 2 with fixed-width little-endian integers, as Firecracker up to 1.14
/// configured it: integers at their width, `serialize_bytes` and sequences behind a u64 length,
/// tuples and structs as their fields in order, `Option` behind a one-byte tag.
struct Bincode<'b> {
    b: &'b [u8],
    p: usize,
}

impl Bincode<'_> {
    fn u32(&mut self) -> Option<u32> {
        let v = u32_at(self.b, self.p)?;
        self.p += 4;
        Some(v)
    }

    fn u64(&mut self) -> Option<u64> {
        let v = u64_at(self.b, self.p)?;
        self.p += 8;
        Some(v)
    }

    /// A sequence length of at most `max`.
    fn len(&mut self, max: usize) -> Option<usize> {
        let n = self.u64()?;
        (n <= max as u64).then_some(n as usize)
    }

    /// A kvm-bindings structure (its bytes, `serialize_bytes`) of exactly `size` bytes: the
    /// offset of its first byte.
    fn raw(&mut self, size: usize) -> Option<usize> {
        if self.u64()? != size as u64 {
            return None;
        }
        let at = self.p;
        self.b.get(at..at.checked_add(size)?)?;
        self.p = at + size;
        Some(at)
    }

    /// A vmm-sys-util `FamStructWrapper`: a tuple of the header structure (`header` bytes, whose
    /// first field is the entry count as `count_width` bytes) and the entries as a sequence of
    /// `entry` (each read by `f`). The header offset, the entry offsets.
    fn fam(
        &mut self,
        header: usize,
        max: usize,
        mut f: impl FnMut(&mut Self) -> Option<usize>,
    ) -> Option<(usize, Vec<usize>)> {
        let h = self.raw(header)?;
        let n = self.len(max)?;
        let mut at = Vec::with_capacity(n.min(64));
        for _ in 0..n {
            at.push(f(self)?);
        }
        Some((h, at))
    }
}

/// Sizes of the kvm-bindings structures of `VcpuState` on x86_64.
const KVM_DEBUGREGS: usize = 128;
const KVM_LAPIC_STATE: usize = 1024;
const KVM_MP_STATE: usize = 4;
const KVM_REGS: usize = 144;
const KVM_SREGS: usize = 312;
const KVM_VCPU_EVENTS: usize = 64;
const KVM_MSR_ENTRY: usize = 16;
/// `kvm_xsave2`: a `usize` FAM length, then the 4096-byte `kvm_xsave`.
const KVM_XSAVE2: usize = 8 + KVM_XSAVE_SIZE;

/// One `VcpuState` at the cursor (Firecracker 1.14, x86_64: `cpuid: CpuId`, `saved_msrs:
/// Vec<Msrs>`, `debug_regs`, `lapic`, `mp_state`, `regs`, `sregs`, `vcpu_events`, `xcrs`,
/// `xsave: Xsave`, `tsc_khz: Option<u32>`), every length checked against what KVM's structures
/// are; the vCPU located, with its leaf 0xD.
fn bincode_vcpu(c: &mut Bincode<'_>) -> Option<Located> {
    let (h, entries) = c.fam(8, 256, |c| c.raw(CPUID_ENTRY))?;
    // kvm_cpuid2: nent, padding; the count the entries' sequence has.
    if u32_at(c.b, h)? as usize != entries.len() || u32_at(c.b, h + 4)? != 0 {
        return None;
    }
    let first = *entries.first()?;
    if entries.windows(2).any(|w| w[1] != w[0] + CPUID_ENTRY + 8) {
        return None;
    }
    let mut leaf = Leaf0d::new();
    for &e in &entries {
        let (f, i, r) = cpuid_entry_at(c.b, e)?;
        if f == 0xD && i < 64 {
            leaf.set(i as u8, r);
        }
    }
    if !leaf.recorded(0) {
        return None;
    }
    let msrs = c.len(64)?;
    for _ in 0..msrs {
        let (h, e) = c.fam(8, 4096, |c| c.raw(KVM_MSR_ENTRY))?;
        if u32_at(c.b, h)? as usize != e.len() {
            return None;
        }
    }
    for size in [KVM_DEBUGREGS, KVM_LAPIC_STATE, KVM_MP_STATE, KVM_REGS, KVM_SREGS, KVM_VCPU_EVENTS] {
        c.raw(size)?;
    }
    let xcrs = c.raw(KVM_XCRS_SIZE)?;
    let xcr0 = xcrs_at(c.b, xcrs)?;
    let (x2, extra) = c.fam(KVM_XSAVE2, 1 << 20, |c| {
        c.u32()?;
        Some(0)
    })?;
    if u64_at(c.b, x2)? != extra.len() as u64 {
        return None;
    }
    match c.b.get(c.p)? {
        0 => c.p += 1,
        1 => {
            c.p += 1;
            c.u32()?;
        }
        _ => return None,
    }
    Some(Located {
        found: Found::Structure,
        xsave: x2 + 8,
        xcrs,
        cpuid: first..first + entries.len() * (CPUID_ENTRY + 8),
        cpuid_step: CPUID_ENTRY + 8,
        leaf0d: leaf,
        xcr0,
    })
}

/// `MicrovmState.vcpu_states` of a bincode vmstate: a `Vec<VcpuState>` (u64 count, then each
/// state, [`bincode_vcpu`]) that parses whole. Its start is where a `CpuId` begins (u64 8, the
/// 8-byte `kvm_cpuid2` header, u64 entry count, u64 40) behind a count of 1..=256. Every walk
/// that completes is a candidate; exactly one must.
fn bincode_vcpus(b: &[u8]) -> Result<Vec<Located>, RecordError> {
    let mut walks: Vec<(usize, Vec<Located>)> = Vec::new();
    let mut q = 8;
    while q + 32 <= b.len() {
        let head = u64_at(b, q) == Some(8)
            && u32_at(b, q + 12) == Some(0)
            && u32_at(b, q + 8).map(u64::from) == u64_at(b, q + 16)
            && u64_at(b, q + 24) == Some(CPUID_ENTRY as u64);
        let n = u64_at(b, q - 8).unwrap_or(0);
        if head && (1..=256).contains(&n) && walks.last().is_none_or(|(end, _)| q >= *end) {
            let mut c = Bincode { b, p: q };
            let vcpus: Option<Vec<Located>> = (0..n).map(|_| bincode_vcpu(&mut c)).collect();
            if let Some(v) = vcpus {
                walks.push((c.p, v));
                q = c.p;
                continue;
            }
        }
        q += 1;
    }
    match walks.len() {
        1 => Ok(walks.pop().map(|(_, v)| v).unwrap_or_default()),
        0 => Err(ambiguous(
            None,
            "bincode vmstate: no MicrovmState.vcpu_states (Vec<VcpuState> of Firecracker 1.14) parses here".into(),
        )),
        n => Err(ambiguous(None, format!("bincode vmstate: {n} byte ranges parse as MicrovmState.vcpu_states"))),
    }
}

/// kvm-bindings' `Xsave`: the 8-byte FAM length before the region must be 0; non-zero means
/// state beyond 4096 bytes (AMX), which this reader does not take.
fn fam_empty(data: &[u8], x: usize) -> Result<(), RecordError> {
    if u64_at(data, x.wrapping_sub(8)) == Some(0) {
        return Ok(());
    }
    Err(ambiguous(
        Some(x.saturating_sub(8)),
        "the Xsave's FAM length before the kvm_xsave is not 0: state beyond 4096 bytes (AMX) is not read here (under \
         bitcode it is encoded in columns this reader does not decode)"
            .into(),
    ))
}

impl<'a> Vmstate<'a> {
    /// Checks the CRC and the header, then locates every vCPU (module documentation).
    pub fn parse(bytes: &'a [u8]) -> Result<Vmstate<'a>, RecordError> {
        let len = bytes.len();
        if len < 17 {
            return Err(RecordError::size(F, Rule::Truncated, len, 17, super::SizeBasis::Fixed));
        }
        let body = len - 8;
        let stored = u64_at(bytes, body).unwrap_or(0);
        let computed = crc64(&bytes[..body]);
        if stored != computed {
            return Err(RecordError::value(F, Rule::Checksum, body, "CRC-64", stored, computed));
        }
        let (era, vat) = if bytes[0] == 0 && u64_at(bytes, 1) == Some(MAGIC) {
            (Era::Bitcode, 9)
        } else if u64_at(bytes, 0) == Some(MAGIC) {
            (Era::Bincode, 8)
        } else {
            return Err(RecordError::value(
                F,
                Rule::Magic,
                0,
                "SNAPSHOT_MAGIC_ID",
                u64_at(bytes, 0).unwrap_or(0),
                MAGIC,
            ));
        };
        let version = match era {
            Era::Bitcode => bytes.get(vat).map(|&n| (vat + 1, usize::from(n))),
            Era::Bincode => u64_at(bytes, vat).map(|n| (vat + 8, n as usize)),
        }
        .and_then(|(s, n)| bytes.get(s..s.checked_add(n)?))
        .filter(|v| !v.is_empty() && v.iter().all(|c| c.is_ascii_digit() || *c == b'.'))
        .map(|v| String::from_utf8_lossy(v).into_owned());
        // The header is the tool's: a version string it did not write means a damaged file,
        // whatever the state's evidence further on says.
        if version.is_none() {
            return Err(RecordError::new(
                F,
                Rule::Framing,
                Some(vat),
                Detail::Text("the header's version string (a length, then digits and dots) does not read"),
            ));
        }
        let data = &bytes[..body];
        if era == Era::Bincode {
            let vcpus = bincode_vcpus(data)?;
            for (i, v) in vcpus.iter().enumerate() {
                if !xsave_at(data, v.xsave) {
                    return Err(ambiguous(
                        Some(v.xsave),
                        format!("vCPU {i}: the kvm_xsave the structure gives does not carry KVM_GET_XSAVE's marks"),
                    ));
                }
                fam_empty(data, v.xsave)?;
            }
            return Ok(Vmstate { bytes, era, version, vcpus });
        }
        let xcrs: Vec<(usize, Xfeatures)> = (0..data.len().saturating_sub(KVM_XCRS_SIZE - 1))
            .filter_map(|p| xcrs_at(data, p).map(|x| (p, x)))
            .collect();
        let xsaves: Vec<usize> =
            (0..data.len().saturating_sub(KVM_XSAVE_SIZE - 1)).filter(|&p| xsave_at(data, p)).collect();
        let runs = cpuid_runs(data);
        let counts = format!("{} kvm_xsave, {} kvm_xcrs, {} CPUID with leaf 0xD", xsaves.len(), xcrs.len(), runs.len());
        if xsaves.is_empty() || xsaves.len() != xcrs.len() || xcrs.len() != runs.len() {
            return Err(ambiguous(None, format!("the vCPU states located by content do not pair up ({counts})")));
        }
        for w in xsaves.windows(2) {
            if w[1] < w[0] + KVM_XSAVE_SIZE {
                return Err(ambiguous(
                    Some(w[1]),
                    format!("overlapping kvm_xsave candidates at {} and {}", w[0], w[1]),
                ));
            }
        }
        for w in xcrs.windows(2) {
            if w[1].0 < w[0].0 + KVM_XCRS_SIZE {
                return Err(ambiguous(Some(w[1].0), "overlapping kvm_xcrs candidates".into()));
            }
        }
        let mut vcpus = Vec::with_capacity(xsaves.len());
        for ((&x, &(c, xcr0)), (run, leaf)) in xsaves.iter().zip(&xcrs).zip(runs) {
            fam_empty(data, x)?;
            vcpus.push(Located {
                found: Found::Content,
                xsave: x,
                xcrs: c,
                cpuid: run,
                cpuid_step: CPUID_ENTRY,
                leaf0d: leaf,
                xcr0,
            });
        }
        Ok(Vmstate { bytes, era, version, vcpus })
    }
}

/// The layout of one located vCPU's CPUID, with the first confirmation: XCR0 within its leaf
/// 0xD.
fn confirm(v: &Located, i: usize) -> Result<(State, Layout), RecordError> {
    let own = Layout::from_leaf0d(&v.leaf0d)
        .map_err(|e| RecordError::new(F, Rule::LayoutDescriptor, Some(v.cpuid.start), Detail::Layout(e)))?;
    let cpu_xcr0 = own.user_supported();
    if !v.xcr0.is_subset_of(cpu_xcr0) {
        return Err(ambiguous(
            Some(v.xcrs + 16),
            format!("vCPU {i}: XCR0 {} is not within the CPUID's leaf 0xD {cpu_xcr0}", v.xcr0),
        ));
    }
    Ok((State::new(None, None).with_xcr0(v.xcr0), own))
}

/// Reads every vCPU of a vmstate.
pub(crate) fn read(bytes: &[u8], layout: &Layout, opts: &Options) -> Result<Contents, RecordError> {
    let vm = Vmstate::parse(bytes)?;
    let given = opts.layout_given.then_some(layout);
    let mut states = Vec::with_capacity(vm.vcpus.len());
    let mut own_layout: Option<Layout> = None;
    for (i, v) in vm.vcpus.iter().enumerate() {
        let (mut st, own_l) = confirm(v, i)?;
        let own = Layout::from_leaf0d(&v.leaf0d)
            .map_err(|e| RecordError::new(F, Rule::LayoutDescriptor, Some(v.cpuid.start), Detail::Layout(e)))?;
        match &own_layout {
            None => own_layout = Some(own),
            Some(o) if !o.same_geometry(&own) => {
                return Err(ambiguous(
                    Some(v.cpuid.start),
                    format!("vCPU {i}: its CPUID leaf 0xD gives another layout than vCPU 0's"),
                ));
            }
            Some(_) => {}
        }
        let region = &bytes[v.xsave..v.xsave + KVM_XSAVE_SIZE];
        let l = super::relayout::region_layout(region, &own_l, given)
            .map_err(|why| ambiguous(Some(v.xsave), format!("vCPU {i}: {why}")))?
            .clone();
        let supported = opts.kvm_supported.unwrap_or(l.user_supported());
        let mask = opts
            .mxcsr_mask
            .unwrap_or_else(|| Image::new(region).map_or(0xFFFF, |i| mxcsr_mask_proven_by(i.mxcsr_mask())));
        let k = KvmXsave::parse(F, region, KVM_XSAVE_SIZE, &l, supported, mask).map_err(|mut e| {
            e.offset = Some(v.xsave + e.offset.unwrap_or(0));
            e
        })?;
        let bv = k
            .image
            .get(512..520)
            .and_then(|s| s.try_into().ok())
            .map_or(Xfeatures::EMPTY, |s| Xfeatures(u64::from_le_bytes(s)));
        if !(bv - Xfeatures::BIT63).is_subset_of(v.xcr0) {
            return Err(ambiguous(
                Some(v.xsave + 512),
                format!("vCPU {i}: XSTATE_BV {bv} is not within XCR0 {} of its kvm_xcrs", v.xcr0),
            ));
        }
        if !v.xcr0.is_subset_of(k.sw_mask) {
            return Err(ambiguous(
                Some(v.xsave + 464),
                format!("vCPU {i}: XCR0 {} is not within the host mask {} KVM wrote at byte 464", v.xcr0, k.sw_mask),
            ));
        }
        KvmXcrs::parse(&bytes[v.xcrs..v.xcrs + KVM_XCRS_SIZE], &l, supported).map_err(|mut e| {
            e.format = F;
            e.offset = Some(v.xcrs + e.offset.unwrap_or(0));
            e
        })?;
        let extent = super::any::standard_extent(&l, k.image, k.sw_mask & supported).ok_or_else(|| {
            ambiguous(
                Some(v.xsave + 512),
                format!(
                    "vCPU {i}: XSTATE_BV {bv} has state in use that the 4096-byte kvm_xsave cannot hold in the layout it \
                     is read with: the region and the CPUID contradict each other"
                ),
            )
        })?;
        st.image = ImageBuf::from_bytes(k.image).ok();
        st.rfbm = Some(extent);
        st.id = Some(StateId::Vcpu(i as u32));
        states.push(st);
    }
    let own = own_layout.unwrap_or_else(|| layout.clone());
    let mut c = Contents { format: F, layout: None, states, notes: Vec::new() };
    let where_: Vec<String> = vm
        .vcpus
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let how = match v.found {
                Found::Content => "by content",
                Found::Structure => "by structure",
            };
            format!(
                "vCPU {i} ({how}): kvm_xsave at byte {}, kvm_xcrs at {}, CPUID at {}",
                v.xsave, v.xcrs, v.cpuid.start
            )
        })
        .collect();
    let how = match vm.era {
        Era::Bitcode => "the state is located by content, not parsed (bitcode is not self-describing)",
        Era::Bincode => {
            "the state is found by structure (MicrovmState.vcpu_states walked field by field as bincode lays it out)"
        }
    };
    c.notes.push(format!(
        "Firecracker vmstate ({:?}{}, CRC-64 checked): {how}, and confirmed against the recorded kvm_xcrs and CPUID: {}",
        vm.era,
        vm.version.as_deref().map(|v| format!(" {v}")).unwrap_or_default(),
        where_.join("; ")
    ));
    if given.is_none() {
        c.layout = Some(own);
    } else if !own.same_geometry(layout) {
        c.notes.push("the kvm_xsave regions are read in the given layout, not the one of the vmstate's CPUID (which the guest was told)".into());
    }
    Ok(c)
}

/// Writes `states` (standard images in `layout`) into the located places of `original`, then
/// the CRC. A region laid out otherwise than the vmstate's CPUID says is marked
/// ([`super::relayout`]).
pub(crate) fn patch(original: &[u8], states: &[State], layout: &Layout) -> Result<Vec<u8>, RecordError> {
    let vm = Vmstate::parse(original)?;
    let mut out = original.to_vec();
    for st in states {
        let i = match st.vcpu() {
            Some(v) if (v as usize) < vm.vcpus.len() => v as usize,
            Some(v) => {
                return Err(RecordError::value(
                    F,
                    Rule::NotHeld,
                    0,
                    "vcpu",
                    v.into(),
                    vm.vcpus.len().saturating_sub(1) as u64,
                ));
            }
            None if vm.vcpus.len() == 1 => 0,
            None => return Err(RecordError::new(F, Rule::NeedsField, None, Detail::Field(super::Field::Vcpu))),
        };
        let v = &vm.vcpus[i];
        let Some(img) = &st.image else {
            return Err(RecordError::new(F, Rule::NoStateForm, None, Detail::None));
        };
        if img.len() > KVM_XSAVE_SIZE && img[KVM_XSAVE_SIZE..].iter().any(|&x| x != 0) {
            return Err(RecordError::size(F, Rule::Oversized, img.len(), KVM_XSAVE_SIZE, super::SizeBasis::Fixed));
        }
        let mut region = alloc::vec![0u8; KVM_XSAVE_SIZE];
        let n = img.len().min(KVM_XSAVE_SIZE);
        region[..n].copy_from_slice(&img[..n]);
        // KVM_SET_XSAVE ignores MXCSR_MASK (bytes 28..31) and bytes 464..511; KVM_GET_XSAVE
        // wrote the host's MXCSR_MASK and supported mask there, which is how the region is
        // located again (module documentation): both kept as found, then the mark.
        region[28..32].copy_from_slice(&original[v.xsave + 28..v.xsave + 32]);
        region[464..512].copy_from_slice(&original[v.xsave + 464..v.xsave + 512]);
        let own = Layout::from_leaf0d(&v.leaf0d)
            .map_err(|e| RecordError::new(F, Rule::LayoutDescriptor, Some(v.cpuid.start), Detail::Layout(e)))?;
        super::relayout::write(&mut region, (!own.same_geometry(layout)).then_some(layout));
        out[v.xsave..v.xsave + KVM_XSAVE_SIZE].copy_from_slice(&region);
        if let Some(x) = st.xcr0
            && x != v.xcr0
        {
            out[v.xcrs + 16..v.xcrs + 24].copy_from_slice(&x.bits().to_le_bytes());
        }
    }
    let body = out.len() - 8;
    let crc = crc64(&out[..body]);
    out[body..].copy_from_slice(&crc.to_le_bytes());
    Ok(out)
}

/// Whether `bytes` start like a Firecracker x86_64 snapshot (for `--format auto`).
pub fn looks_like(bytes: &[u8]) -> bool {
    (bytes.first() == Some(&0) && u64_at(bytes, 1) == Some(MAGIC)) || u64_at(bytes, 0) == Some(MAGIC)
}

/// The CPUID vCPU 0 of a vmstate carries (its `kvm_cpuid_entry2` run, located by content).
pub fn cpuid(bytes: &[u8]) -> Result<crate::cpuid::CpuidData, RecordError> {
    let vm = Vmstate::parse(bytes)?;
    let run = vm.vcpus[0].cpuid.clone();
    let mut d = crate::cpuid::CpuidData::new(crate::cpuid::CpuidFormat::Snapshot);
    let mut p = run.start;
    while p < run.end {
        if let Some((f, i, r)) = cpuid_entry_at(bytes, p) {
            d.insert(f, i, r);
        }
        p += vm.vcpus[0].cpuid_step;
    }
    Ok(d)
}
