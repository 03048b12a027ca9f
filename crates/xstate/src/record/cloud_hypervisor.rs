//! Cloud Hypervisor's snapshot `state.json` (`vm.snapshot`; docs/FORMATS.md "Cloud
//! Hypervisor snapshot"), for the KVM backend, as Cloud Hypervisor v53 writes it.
//!
//! The snapshot is a JSON tree of `{"snapshots": {id: Snapshot}, "snapshot_data": {"state":
//! String}}`; each vCPU is `.snapshots["cpu-manager"].snapshots[<vCPU id>]`, and its state is a
//! second JSON document inside that string: `{"Kvm": {"cpuid": [kvm_cpuid_entry2 as objects],
//! "fpu": {...}, "xsave": {"region": [1024 u32], "extra": [u32, omitted when empty]}, "xcrs":
//! [392 bytes of kvm_xcrs], ...}}` (hypervisor/src/arch/x86/mod.rs `XsaveState`, `FpuState`).
//!
//! - The layout: the snapshot's own CPUID leaf 0xD (Cloud Hypervisor on KVM takes both it and
//!   the xsave region from the saving host), unless the caller says the region is laid out for
//!   its layout ([`super::Options::layout_given`]: a snapshot xstate retargeted for another host
//!   keeps its guest's CPUID).
//! - The image: `region` then `extra`, a KVM_GET_XSAVE(2) buffer, checked with KVM_SET_XSAVE's
//!   rules; XCR0 from `xcrs`.
//! - `fpu` (KVM_GET_FPU) repeats the x87/SSE registers, and Cloud Hypervisor's restore sets it
//!   *after* the xsave region (`set_state`: `set_xsave2` then `set_fpu`), so its values are the
//!   ones a restored guest runs with: reading refuses a snapshot where the two disagree, and
//!   writing patches both.
//! - Writing is patching: only the number tokens whose values change are replaced (in the inner
//!   document, which is then escaped back into its string), so an unchanged state gives the file
//!   back byte for byte.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::ops::Range;

use super::json::{self, Value};
use super::kvm::{KVM_XCRS_SIZE, KVM_XSAVE_SIZE, KvmXcrs, KvmXsave};
use super::{Contents, Detail, Format, Options, RecordError, Rule, State, StateId};
use crate::component::legacy::mxcsr_mask_proven_by;
use crate::cpuid::{Leaf0d, Regs};
use crate::image::{Image, ImageBuf};
use crate::layout::Layout;

const F: Format = Format::CloudHypervisor;

fn framing(at: usize, what: String) -> RecordError {
    RecordError::new(F, Rule::Framing, Some(at), Detail::Message(what))
}

/// The member path of one vCPU's state string, for messages.
fn path(id: &str) -> String {
    format!(".snapshots[\"cpu-manager\"].snapshots[\"{id}\"].snapshot_data.state")
}

/// One vCPU of a snapshot: where its state string is, and its inner document.
struct Vcpu {
    id: u32,
    key: String,
    /// The state string's span in the outer document (quotes included).
    string: Range<usize>,
    /// The inner document (escapes resolved).
    inner: String,
}

/// Where the fields of one inner document lie (spans in the inner text).
struct Fields<'i> {
    region: &'i [Value<'i>],
    region_span: Range<usize>,
    extra: Option<(&'i [Value<'i>], Range<usize>)>,
    xcrs: &'i [Value<'i>],
    cpuid: &'i [Value<'i>],
    fpu: &'i Value<'i>,
}

fn u32s(vals: &[Value<'_>], what: &str, at: usize) -> Result<Vec<u32>, RecordError> {
    vals.iter()
        .map(|v| v.as_u64().and_then(|x| u32::try_from(x).ok()))
        .collect::<Option<Vec<u32>>>()
        .ok_or_else(|| framing(at, format!("{what}: not all u32 numbers")))
}

fn bytes_of(vals: &[Value<'_>], what: &str, at: usize) -> Result<Vec<u8>, RecordError> {
    vals.iter()
        .map(|v| v.as_u64().and_then(|x| u8::try_from(x).ok()))
        .collect::<Option<Vec<u8>>>()
        .ok_or_else(|| framing(at, format!("{what}: not all byte values")))
}

fn fields<'i>(doc: &'i Value<'i>, id: &str) -> Result<Fields<'i>, RecordError> {
    let at = doc.span.start;
    let kvm = doc.get("Kvm").ok_or_else(|| {
        let other = doc.as_object().and_then(|m| m.first()).map_or("none".into(), |(k, _)| k.clone().into_owned());
        framing(at, format!("{}: a {other} vCPU state; only the KVM backend (\"Kvm\") is read", path(id)))
    })?;
    let arr = |v: Option<&'i Value<'i>>, name: &str| -> Result<&'i [Value<'i>], RecordError> {
        v.and_then(Value::as_array).ok_or_else(|| framing(at, format!("{}: no {name} array", path(id))))
    };
    let xsave = kvm.get("xsave").ok_or_else(|| framing(at, format!("{}: no xsave", path(id))))?;
    let region_v = xsave.get("region").ok_or_else(|| framing(at, format!("{}: no xsave.region", path(id))))?;
    let region = arr(Some(region_v), "xsave.region")?;
    if region.len() != KVM_XSAVE_SIZE / 4 {
        return Err(framing(region_v.span.start, format!("xsave.region holds {} words, not 1024", region.len())));
    }
    let extra = match xsave.get("extra") {
        None => None,
        Some(e) => Some((arr(Some(e), "xsave.extra")?, e.span.clone())),
    };
    Ok(Fields {
        region,
        region_span: region_v.span.clone(),
        extra,
        xcrs: arr(kvm.get("xcrs"), "xcrs")?,
        cpuid: arr(kvm.get("cpuid"), "cpuid")?,
        fpu: kvm.get("fpu").ok_or_else(|| framing(at, format!("{}: no fpu", path(id))))?,
    })
}

/// The vCPUs of the outer document, in key order.
fn vcpus(outer: &Value<'_>) -> Result<Vec<Vcpu>, RecordError> {
    let cm = outer
        .get("snapshots")
        .and_then(|s| s.get("cpu-manager"))
        .and_then(|c| c.get("snapshots"))
        .and_then(Value::as_object)
        .ok_or_else(|| {
            framing(0, "no .snapshots[\"cpu-manager\"].snapshots: not a Cloud Hypervisor state.json".into())
        })?;
    let mut out = Vec::with_capacity(cm.len());
    for (key, snap) in cm {
        let id: u32 =
            key.parse().map_err(|_| framing(snap.span.start, format!("vCPU snapshot id {key:?} is not a number")))?;
        let s = snap
            .get("snapshot_data")
            .and_then(|d| d.get("state"))
            .ok_or_else(|| framing(snap.span.start, format!("{}: missing", path(key))))?;
        let inner = s.as_str().ok_or_else(|| framing(s.span.start, format!("{}: not a JSON string", path(key))))?;
        out.push(Vcpu { id, key: key.clone().into_owned(), string: s.span.clone(), inner: inner.into_owned() });
    }
    if out.is_empty() {
        return Err(RecordError::new(F, Rule::NoImage, None, Detail::Text("the cpu-manager holds no vCPU")));
    }
    out.sort_by_key(|v| v.id);
    Ok(out)
}

fn parse_outer(bytes: &[u8]) -> Result<(&str, Value<'_>), RecordError> {
    let text = core::str::from_utf8(bytes).map_err(|e| framing(e.valid_up_to(), "not UTF-8".into()))?;
    let v = json::parse(text).map_err(|e| framing(e.offset, format!("JSON: expected {}", e.what)))?;
    Ok((text, v))
}

fn parse_inner(v: &Vcpu) -> Result<Value<'_>, RecordError> {
    json::parse(&v.inner).map_err(|e| {
        framing(v.string.start, format!("{}: inner JSON at its byte {}: expected {}", path(&v.key), e.offset, e.what))
    })
}

/// Leaf 0xD of a `cpuid` array (kvm_cpuid_entry2 objects).
fn leaf0d(cpuid: &[Value<'_>], at: usize) -> Result<Leaf0d, RecordError> {
    let mut l = Leaf0d::new();
    for e in cpuid {
        let n = |k: &str| e.get(k).and_then(Value::as_u64).and_then(|x| u32::try_from(x).ok());
        let (Some(func), Some(index)) = (n("function"), n("index")) else {
            return Err(framing(e.span.start, "a cpuid entry without function/index".into()));
        };
        if func != 0xD || index > 63 {
            continue;
        }
        let (Some(a), Some(b), Some(c), Some(d)) = (n("eax"), n("ebx"), n("ecx"), n("edx")) else {
            return Err(framing(e.span.start, "a cpuid entry without eax..edx".into()));
        };
        l.set(index as u8, Regs::new(a, b, c, d));
    }
    if !l.recorded(0) {
        return Err(framing(at, "the vCPU's cpuid has no leaf 0xD".into()));
    }
    Ok(l)
}

/// The x87/SSE registers of `fpu` (KVM_GET_FPU) as the legacy region's bytes 0..416 (MXCSR_MASK
/// and bytes 28..32 zero).
fn fpu_legacy(fpu: &Value<'_>, at: usize) -> Result<[u8; 416], RecordError> {
    let mut out = [0u8; 416];
    let num = |k: &str| fpu.get(k).and_then(Value::as_u64).ok_or_else(|| framing(at, format!("fpu.{k}: not a number")));
    out[0..2].copy_from_slice(&(num("fcw")? as u16).to_le_bytes());
    out[2..4].copy_from_slice(&(num("fsw")? as u16).to_le_bytes());
    out[4] = num("ftwx")? as u8;
    out[6..8].copy_from_slice(&(num("last_opcode")? as u16).to_le_bytes());
    out[8..16].copy_from_slice(&num("last_ip")?.to_le_bytes());
    out[16..24].copy_from_slice(&num("last_dp")?.to_le_bytes());
    out[24..28].copy_from_slice(&(num("mxcsr")? as u32).to_le_bytes());
    for (name, base, n) in [("fpr", 32, 8), ("xmm", 160, 16)] {
        let rows = fpu.get(name).and_then(Value::as_array).filter(|r| r.len() == n);
        let rows = rows.ok_or_else(|| framing(at, format!("fpu.{name}: not {n} registers")))?;
        for (i, r) in rows.iter().enumerate() {
            let b = bytes_of(r.as_array().unwrap_or(&[]), name, r.span.start)?;
            if b.len() != 16 {
                return Err(framing(r.span.start, format!("fpu.{name}[{i}]: not 16 bytes")));
            }
            out[base + 16 * i..base + 16 * i + 16].copy_from_slice(&b);
        }
    }
    Ok(out)
}

/// Legacy bytes KVM_SET_FPU writes: all of 0..416 but byte 5 (FTW's pad) and 24..32. KVM's
/// fpu ioctls do not carry MXCSR (kvm_arch_vcpu_ioctl_get_fpu leaves `mxcsr` 0, as this
/// fixture's `fpu.mxcsr` shows, and the set ignores it), so MXCSR comes from the region alone.
fn fpu_covers(i: usize) -> bool {
    i != 5 && !(24..32).contains(&i)
}

/// One vCPU read: the state and the snapshot layout.
struct Read {
    state: State,
    layout: Layout,
}

fn read_vcpu(v: &Vcpu, given: Option<&Layout>, opts: &Options) -> Result<Read, RecordError> {
    let doc = parse_inner(v)?;
    let f = fields(&doc, &v.key)?;
    let at = v.string.start;
    let own = Layout::from_leaf0d(&leaf0d(f.cpuid, at)?)
        .map_err(|e| RecordError::new(F, Rule::LayoutDescriptor, Some(at), Detail::Layout(e)))?;
    let mut bytes = Vec::with_capacity(KVM_XSAVE_SIZE);
    for w in u32s(f.region, "xsave.region", at)? {
        bytes.extend_from_slice(&w.to_le_bytes());
    }
    if let Some((e, span)) = f.extra {
        for w in u32s(e, "xsave.extra", span.start)? {
            bytes.extend_from_slice(&w.to_le_bytes());
        }
    }
    let layout = super::relayout::region_layout(&bytes, &own, given)
        .map_err(|why| {
            RecordError::new(F, Rule::Ambiguous, Some(at), Detail::Message(format!("{}: {why}", path(&v.key))))
        })?
        .clone();
    let supported = opts.kvm_supported.unwrap_or(layout.user_supported());
    let mask =
        opts.mxcsr_mask.unwrap_or_else(|| Image::new(&bytes).map_or(0xFFFF, |i| mxcsr_mask_proven_by(i.mxcsr_mask())));
    let len = bytes.len();
    let k = KvmXsave::parse(F, &bytes, len, &layout, supported, mask).map_err(|mut e| {
        e.offset = Some(at);
        e
    })?;
    // Cloud Hypervisor sets fpu after the xsave region: the two must agree.
    let legacy = fpu_legacy(f.fpu, at)?;
    if let Some(i) = (0..416).find(|&i| fpu_covers(i) && legacy[i] != bytes[i]) {
        return Err(RecordError::new(
            F,
            Rule::Ambiguous,
            Some(at),
            Detail::Message(format!(
                "{}: fpu and xsave.region disagree at legacy byte {i} (Cloud Hypervisor restores fpu last, so a \
                 guest would run with fpu's value)",
                path(&v.key)
            )),
        ));
    }
    let xcrs = bytes_of(f.xcrs, "xcrs", at)?;
    if xcrs.len() != KVM_XCRS_SIZE {
        return Err(framing(at, format!("xcrs: {} bytes, not {KVM_XCRS_SIZE}", xcrs.len())));
    }
    let xcr0 = KvmXcrs::parse(&xcrs, &layout, supported)
        .map_err(|mut e| {
            e.format = F;
            e.offset = Some(at);
            e
        })?
        .xcr0();
    let extent = super::any::standard_extent(&layout, k.image, k.sw_mask & supported).ok_or_else(|| {
        RecordError::new(
            F,
            Rule::Ambiguous,
            Some(at),
            Detail::Message(format!(
                "{}: XSTATE_BV has state in use that the {len}-byte xsave buffer cannot hold in the layout it is read \
                 with: the region and the CPUID contradict each other",
                path(&v.key)
            )),
        )
    })?;
    let mut state = State::new(ImageBuf::from_bytes(k.image).ok(), Some(extent)).with_id(StateId::Vcpu(v.id));
    state.xcr0 = xcr0;
    Ok(Read { state, layout: own })
}

/// Reads every vCPU of a `state.json`.
pub(crate) fn read(bytes: &[u8], layout: &Layout, opts: &Options) -> Result<Contents, RecordError> {
    let (_, outer) = parse_outer(bytes)?;
    let given = opts.layout_given.then_some(layout);
    let mut states = Vec::new();
    let mut snapshot_layout: Option<Layout> = None;
    for v in vcpus(&outer)? {
        let r = read_vcpu(&v, given, opts)?;
        match &snapshot_layout {
            None => snapshot_layout = Some(r.layout),
            Some(l) if !l.same_geometry(&r.layout) => {
                return Err(RecordError::new(
                    F,
                    Rule::Ambiguous,
                    Some(v.string.start),
                    Detail::Message(format!("{}: its CPUID leaf 0xD gives another layout than vCPU 0's", path(&v.key))),
                ));
            }
            Some(_) => {}
        }
        states.push(r.state);
    }
    let own = snapshot_layout.unwrap_or_else(|| layout.clone());
    let mut c = Contents { format: F, layout: None, states, notes: Vec::new() };
    if given.is_some() {
        if !own.same_geometry(layout) {
            c.notes.push(
                "the xsave regions are read in the given layout, not the one of the snapshot's CPUID (which the \
                 guest was told)"
                    .into(),
            );
        }
    } else {
        c.notes.push(format!(
            "Cloud Hypervisor snapshot: {} vCPU(s); xsave regions read in the layout of the snapshot's own CPUID leaf 0xD",
            c.states.len()
        ));
        c.layout = Some(own);
    }
    Ok(c)
}

/// Replacements in a text: (span, new text), applied in order.
struct Edits(Vec<(Range<usize>, String)>);

impl Edits {
    fn number(&mut self, v: &Value<'_>, old: u64, new: u64) {
        if old != new {
            self.0.push((v.span.clone(), format!("{new}")));
        }
    }
    fn apply(mut self, text: &str) -> String {
        self.0.sort_by_key(|(r, _)| r.start);
        let mut out = String::with_capacity(text.len());
        let mut pos = 0;
        for (r, t) in self.0 {
            out.push_str(&text[pos..r.start]);
            out.push_str(&t);
            pos = r.end;
        }
        out.push_str(&text[pos..]);
        out
    }
}

fn list(words: &[u32]) -> String {
    let mut s = String::from("[");
    for (i, w) in words.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&format!("{w}"));
    }
    s.push(']');
    s
}

/// Writes `states` (standard images in `layout`, the restoring host's) into `original`; module
/// documentation. A region laid out otherwise than the snapshot's CPUID says is marked
/// ([`super::relayout`]).
pub(crate) fn patch(
    original: &[u8],
    states: &[State],
    layout: &Layout,
    opts: &Options,
) -> Result<Vec<u8>, RecordError> {
    let (text, outer) = parse_outer(original)?;
    let cpus = vcpus(&outer)?;
    let mut outer_edits = Edits(Vec::new());
    for st in states {
        let v = match st.vcpu() {
            Some(id) => cpus.iter().find(|c| c.id == id).ok_or_else(|| {
                RecordError::value(F, Rule::NotHeld, 0, "vcpu", id.into(), cpus.len().saturating_sub(1) as u64)
            })?,
            None if cpus.len() == 1 => &cpus[0],
            None => return Err(RecordError::new(F, Rule::NeedsField, None, Detail::Field(super::Field::Vcpu))),
        };
        let at = v.string.start;
        let doc = parse_inner(v)?;
        let f = fields(&doc, &v.key)?;
        let Some(img) = &st.image else {
            return Err(RecordError::new(F, Rule::NoStateForm, None, Detail::None));
        };
        let mut inner = Edits(Vec::new());
        // The buffer: the original's size on the same layout, else what the state needs.
        let old_extra = f.extra.as_ref().map_or(0, |(e, _)| e.len());
        let old_len = KVM_XSAVE_SIZE + 4 * old_extra;
        let want =
            opts.kvm_xsave2_size.unwrap_or(if img.len() <= old_len { old_len } else { img.len().div_ceil(4) * 4 });
        if img.len() > want || !want.is_multiple_of(4) || want < KVM_XSAVE_SIZE {
            return Err(RecordError::size(F, Rule::Oversized, img.len(), want, super::SizeBasis::Fixed));
        }
        let old_region = u32s(f.region, "xsave.region", at)?;
        let mut buf = alloc::vec![0u8; want];
        buf[..img.len()].copy_from_slice(img);
        // Bytes 464..511 hold KVM's own mask; KVM_SET_XSAVE ignores them: kept as found.
        for (i, w) in old_region.iter().enumerate().skip(464 / 4).take(48 / 4) {
            buf[4 * i..4 * i + 4].copy_from_slice(&w.to_le_bytes());
        }
        let own = Layout::from_leaf0d(&leaf0d(f.cpuid, at)?)
            .map_err(|e| RecordError::new(F, Rule::LayoutDescriptor, Some(at), Detail::Layout(e)))?;
        super::relayout::write(&mut buf, (!own.same_geometry(layout)).then_some(layout));
        let word = |i: usize| u32::from_le_bytes([buf[4 * i], buf[4 * i + 1], buf[4 * i + 2], buf[4 * i + 3]]);
        for (i, tok) in f.region.iter().enumerate() {
            inner.number(tok, old_region[i].into(), word(i).into());
        }
        let new_extra: Vec<u32> = (KVM_XSAVE_SIZE / 4..want / 4).map(word).collect();
        match f.extra {
            Some((e, span)) if e.len() == new_extra.len() => {
                let old = u32s(e, "xsave.extra", span.start)?;
                for (i, tok) in e.iter().enumerate() {
                    inner.number(tok, old[i].into(), new_extra[i].into());
                }
            }
            Some((_, span)) if new_extra.is_empty() => {
                // `,"extra":[...]` after `region` goes: Cloud Hypervisor omits an empty extra.
                let between = &v.inner[f.region_span.end..span.start];
                if !between.trim_start().starts_with(',') {
                    return Err(framing(at, "xsave: extra does not follow region".into()));
                }
                inner.0.push((f.region_span.end..span.end, String::new()));
            }
            Some((_, span)) => inner.0.push((span, list(&new_extra))),
            None if new_extra.is_empty() => {}
            None => inner.0.push((f.region_span.end..f.region_span.end, format!(",\"extra\":{}", list(&new_extra)))),
        }
        // fpu: KVM_SET_FPU's registers from the same legacy bytes (its mxcsr, which KVM
        // ignores, kept as found).
        let old_fpu = fpu_legacy(f.fpu, at)?;
        let le = |b: &[u8], o: usize, n: usize| b[o..o + n].iter().rev().fold(0u64, |x, &y| x << 8 | u64::from(y));
        for (k, o, n) in
            [("fcw", 0, 2), ("fsw", 2, 2), ("ftwx", 4, 1), ("last_opcode", 6, 2), ("last_ip", 8, 8), ("last_dp", 16, 8)]
        {
            if let Some(tok) = f.fpu.get(k) {
                inner.number(tok, le(&old_fpu, o, n), le(&buf, o, n));
            }
        }
        for (name, base) in [("fpr", 32), ("xmm", 160)] {
            for (i, row) in f.fpu.get(name).and_then(Value::as_array).unwrap_or(&[]).iter().enumerate() {
                for (b, tok) in row.as_array().unwrap_or(&[]).iter().enumerate() {
                    let o = base + 16 * i + b;
                    inner.number(tok, old_fpu[o].into(), buf[o].into());
                }
            }
        }
        // xcrs: XCR0's value bytes, where the state's XCR0 differs.
        let xcrs = bytes_of(f.xcrs, "xcrs", at)?;
        if let Some(x) = st.xcr0 {
            let nr = (xcrs[0] as usize).min(16);
            let entry = (0..nr).map(|i| 8 + 16 * i).find(|&o| xcrs[o..o + 4] == [0; 4]);
            let Some(o) = entry else {
                return Err(framing(at, "xcrs has no XCR0 entry to write".into()));
            };
            for (b, nb) in x.bits().to_le_bytes().iter().enumerate() {
                inner.number(&f.xcrs[o + 8 + b], xcrs[o + 8 + b].into(), (*nb).into());
            }
        }
        let new_inner = inner.apply(&v.inner);
        if new_inner != v.inner {
            outer_edits.0.push((v.string.clone(), json::escape(&new_inner)));
        }
    }
    Ok(outer_edits.apply(text).into_bytes())
}

/// Whether `bytes` look like a Cloud Hypervisor `state.json` (for `--format auto`).
pub fn looks_like(bytes: &[u8]) -> bool {
    bytes.starts_with(b"{\"snapshots\":") && bytes.windows(13).any(|w| w == b"\"cpu-manager\"")
}

/// The CPUID vCPU 0 of a `state.json` carries (every `kvm_cpuid_entry2`).
pub fn cpuid(bytes: &[u8]) -> Result<crate::cpuid::CpuidData, RecordError> {
    let (_, outer) = parse_outer(bytes)?;
    let cpus = vcpus(&outer)?;
    let v = &cpus[0];
    let doc = parse_inner(v)?;
    let f = fields(&doc, &v.key)?;
    let mut d = crate::cpuid::CpuidData::new(crate::cpuid::CpuidFormat::Snapshot);
    for e in f.cpuid {
        let n = |k: &str| e.get(k).and_then(Value::as_u64).and_then(|x| u32::try_from(x).ok());
        let (Some(func), Some(index), Some(a), Some(b), Some(c), Some(dd)) =
            (n("function"), n("index"), n("eax"), n("ebx"), n("ecx"), n("edx"))
        else {
            return Err(framing(e.span.start, "a cpuid entry without function/index/eax..edx".into()));
        };
        d.insert(func, index, Regs::new(a, b, c, dd));
    }
    leaf0d(f.cpuid, v.string.start)?;
    Ok(d)
}
