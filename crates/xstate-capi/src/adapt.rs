//! The one module that calls the `xstate` crate's Rust API and reads its error types: each C
//! entry point goes through a function here, so a change of the Rust API is an edit of this
//! file only. Each error becomes a [`Failure`]: the errno the consumer mirrored would return
//! (Xen's, Linux's, KVM's), the rule's sentence, the byte offset, the library's message.

use std::sync::Arc;

use libc::{EBUSY, EFAULT, EINVAL, EIO, ENODATA, ENOENT, EOPNOTSUPP};
use xstate::area::{AreaError, SaveArea};
use xstate::compat::{self, Report, Side};
use xstate::cpuid::{self, Leaf0d, Regs};
use xstate::image::validate::{
    Context, Errno, Profile, ValidationDetail as Detail, ValidationError, ValidationRule as Rule, XenCaller,
};
use xstate::image::{self, ConvertError, Form, ImageBuf, Target};
use xstate::layout::LayoutError;
use xstate::policy::{Policy, PolicyError, Selection, SetError, XenGuest};
use xstate::record::fc_blob::FcBlob;
use xstate::record::xen::{DomctlBlob, XenHost};
use xstate::record::{self, Contents, Format, Options, RecordError, State};
use xstate::{Component, Layout, Xfeatures};

use crate::error::{Failure, Result};

// ---- errors ------------------------------------------------------------------------------

/// The errno of a consumer's verdict: the consumer's own (Linux, KVM, Xen); for the hardware
/// profile `EFAULT` where XRSTOR would read past the image (#PF) and `EINVAL` for its #GP.
fn validation_errno(e: &ValidationError) -> i32 {
    match e.errno() {
        Some(n) => errno(n),
        None if matches!(e.rule, Rule::Truncated | Rule::TooShort) => EFAULT,
        None => EINVAL,
    }
}

fn errno(e: Errno) -> i32 {
    match e {
        Errno::Einval => EINVAL,
        Errno::Efault => EFAULT,
        Errno::Eopnotsupp => EOPNOTSUPP,
        Errno::Eio => EIO,
        Errno::Enodata => ENODATA,
        // A consumer's errno added later; EINVAL is what every consumer returns by default.
        _ => EINVAL,
    }
}

fn validation_offset(e: &ValidationError) -> Option<usize> {
    match e.detail {
        Detail::Byte { offset, .. } => Some(offset),
        _ => None,
    }
}

pub(crate) fn validation_failure(e: &ValidationError) -> Failure {
    Failure::new(validation_errno(e), e.rule.text(), e).at(validation_offset(e))
}

fn convert_failure(e: &ConvertError) -> Failure {
    match e {
        ConvertError::Invalid(v) => {
            let f = validation_failure(v);
            Failure { message: e.to_string(), ..f }
        }
        ConvertError::NoCompaction => {
            Failure::new(EOPNOTSUPP, "a compacted image needs a CPU with XSAVEC or XSAVES", e)
        }
        _ => Failure::new(EINVAL, "the converted image must hold the state the source loads", e),
    }
}

/// A record's errno: the one its consumer returns (`RecordError::errno`: the embedded image's,
/// Xen's -EOPNOTSUPP for a compacted image, ...), -EINVAL where the consumer has none (a
/// conversion the target format cannot take). The offset is the byte in the record.
fn record_failure(e: &RecordError) -> Failure {
    use record::Detail as RDetail;
    match &e.detail {
        RDetail::Image(v) => {
            let inner = validation_offset(v).map(|o| o + e.offset.unwrap_or(0)).or(e.offset);
            Failure::new(validation_errno(v), v.rule.text(), e).at(inner)
        }
        RDetail::Convert(c) => Failure { message: e.to_string(), ..convert_failure(c) },
        _ => Failure::new(e.errno().map_or(EINVAL, errno), e.rule.text(), e).at(e.offset),
    }
}

fn layout_failure(e: &LayoutError) -> Failure {
    Failure::new(EINVAL, "CPUID leaf 0xD must describe a usable layout", format_args!("CPUID leaf 0xD: {e}"))
}

fn policy_failure(e: &PolicyError) -> Failure {
    match e {
        PolicyError::HostLacks { .. }
        | PolicyError::HostLacksInstruction { .. }
        | PolicyError::NotRecognised { .. } => Failure::new(EOPNOTSUPP, "a policy exposes only what the host has", e),
        _ => Failure::new(EINVAL, "a policy's features must be known, complete and compatible", e),
    }
}

fn set_failure(e: &SetError) -> Failure {
    Failure::new(EINVAL, "XSETBV / WRMSR IA32_XSS must not raise #GP under the policy", e)
}

fn area_failure(e: &AreaError) -> Failure {
    match e {
        AreaError::Busy { .. } => Failure::new(EBUSY, "a policy change must keep every state the guest has enabled", e),
        AreaError::NoCompaction => Failure::new(EOPNOTSUPP, "a compacted area needs a host with XSAVEC or XSAVES", e),
        AreaError::Set(s) => set_failure(s),
        AreaError::Invalid(v) => validation_failure(v),
        AreaError::Restore(c) => convert_failure(c),
        _ => Failure::new(EINVAL, "the save area's rules (form, policy, RFBM)", e),
    }
}

// ---- layouts -----------------------------------------------------------------------------

/// A layout from CPUID 0xD subleaves 0..regs.len(), each `[eax, ebx, ecx, edx]`.
pub(crate) fn layout_from_subleaves(regs: &[[u32; 4]]) -> Result<Layout> {
    let mut leaf = Leaf0d::new();
    for (i, r) in regs.iter().enumerate() {
        leaf.set(i as u8, Regs::new(r[0], r[1], r[2], r[3]));
    }
    layout_from_leaf(&leaf)
}

fn layout_from_leaf(leaf: &Leaf0d) -> Result<Layout> {
    if !leaf.xsave_enumerated() {
        return Err(Failure::new(
            EOPNOTSUPP,
            "CPUID leaf 0xD must enumerate XSAVE",
            "CPUID 0xD.0 is all zero: this CPU has no XSAVE (or the dump lacks it)",
        ));
    }
    Layout::from_leaf0d(leaf).map_err(|e| layout_failure(&e))
}

/// A layout from a CPUID dump's text: AIDA64/InstLatX64, `cpuid -r`, or xstate's JSON.
pub(crate) fn layout_from_text(text: &str, source: &str) -> Result<Layout> {
    let data = cpuid::parse(text).map_err(|e| {
        Failure::new(
            EINVAL,
            "a CPUID dump in a known format (AIDA64, cpuid -r, xstate JSON)",
            format_args!("{source}: {e}"),
        )
    })?;
    if let Some(e) = data.missing_leaf0d() {
        return Err(layout_failure(&e));
    }
    layout_from_leaf(data.leaf0d())
}

/// A layout from a CPUID dump's text with the enumerated components whose subleaf the dump
/// lacks left out (old AIDA64 builds omit PT, MPX, LWP, ...), and those components.
pub(crate) fn layout_from_text_partial(text: &str, source: &str) -> Result<(Layout, u64)> {
    let data = cpuid::parse(text).map_err(|e| {
        Failure::new(
            EINVAL,
            "a CPUID dump in a known format (AIDA64, cpuid -r, xstate JSON)",
            format_args!("{source}: {e}"),
        )
    })?;
    // A dump missing leaf 0xD, or with it empty under XSAVE, is no CPU without XSAVE here either.
    if let Some(e) = data.missing_leaf0d() {
        return Err(layout_failure(&e));
    }
    let leaf = data.leaf0d();
    layout_from_leaf(leaf).map(|l| (l, 0)).or_else(|strict| {
        if strict.code != -EINVAL {
            return Err(strict);
        }
        let p = Layout::from_leaf0d_partial(leaf).map_err(|e| layout_failure(&e))?;
        Ok((p.layout, p.omitted.bits()))
    })
}

/// The running CPU's layout (CPUID leaf 0xD).
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
pub(crate) fn host_layout() -> Result<Layout> {
    layout_from_leaf(xstate_hw::cpu::host_cpuid().leaf0d())
}

/// The running CPU's layout: only x86-64 Linux can read it.
#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
pub(crate) fn host_layout() -> Result<Layout> {
    Err(Failure::new(EOPNOTSUPP, "the host layout is read on x86-64 Linux", "not an x86-64 Linux host"))
}

pub(crate) fn component(index: u32) -> Result<Component> {
    u8::try_from(index)
        .ok()
        .and_then(Component::new)
        .ok_or_else(|| Failure::arg(format_args!("component index {index} is not 0..=62")))
}

fn unknown_bits(layout: &Layout, field: &str, mask: u64) -> Failure {
    let bits = Xfeatures(mask) - layout.supported();
    Failure::new(
        EINVAL,
        "every component named must be enumerated by the layout",
        format_args!("{field} {:#x} has bits {bits} ({}) the layout does not enumerate", mask, bits.names()),
    )
}

pub(crate) fn standard_size(layout: &Layout, xcr0: u64) -> Result<usize> {
    layout.standard_size(Xfeatures(xcr0)).map(|s| s as usize).ok_or_else(|| unknown_bits(layout, "XCR0", xcr0))
}

fn needs_compaction(layout: &Layout) -> Result<()> {
    if layout.features().compaction() {
        Ok(())
    } else {
        Err(Failure::new(
            EOPNOTSUPP,
            "the compacted form needs XSAVEC or XSAVES (CPUID 0xD.1 EAX[1] or [3])",
            "this layout's CPU has no compacted form",
        ))
    }
}

pub(crate) fn compacted_size(layout: &Layout, mask: u64) -> Result<usize> {
    needs_compaction(layout)?;
    let m = Xfeatures(mask) - Xfeatures::BIT63;
    layout.compacted_size(m).map(|s| s as usize).ok_or_else(|| unknown_bits(layout, "XCR0|XSS", mask))
}

pub(crate) fn compacted_offset(layout: &Layout, index: u32, xcomp_bv: u64) -> Result<usize> {
    let c = component(index)?;
    needs_compaction(layout)?;
    let m = Xfeatures(xcomp_bv) - Xfeatures::BIT63;
    if !m.is_subset_of(layout.supported()) {
        return Err(unknown_bits(layout, "XCOMP_BV", xcomp_bv));
    }
    if !m.contains(c) {
        return Err(Failure::new(
            ENOENT,
            "a compacted image holds only the components of XCOMP_BV",
            format_args!("component {index} ({}) is not in XCOMP_BV {xcomp_bv:#x}", c.name()),
        ));
    }
    layout.compacted_offset(c, m).map(|o| o as usize).ok_or_else(|| unknown_bits(layout, "XCOMP_BV", xcomp_bv))
}

/// (size, standard offset, supervisor, align64, xfd) of an enumerated component.
pub(crate) fn geometry(layout: &Layout, index: u32) -> Result<(u32, u32, bool, bool, bool)> {
    let c = component(index)?;
    let g = layout.geometry(c).ok_or_else(|| {
        Failure::new(
            ENOENT,
            "a component must be enumerated by the layout",
            format_args!("component {index} ({}) is not enumerated by this layout", c.name()),
        )
    })?;
    Ok((g.size, if g.supervisor { 0 } else { g.offset }, g.supervisor, g.align64, g.xfd))
}

pub(crate) fn xcr0_supported(layout: &Layout) -> u64 {
    layout.user_supported().bits()
}

pub(crate) fn xss_supported(layout: &Layout) -> u64 {
    layout.supervisor_supported().bits()
}

pub(crate) fn xsave_features(layout: &Layout) -> u32 {
    layout.features().0
}

pub(crate) fn component_name(index: u32) -> Result<String> {
    Ok(component(index)?.name().to_string())
}

// ---- images ------------------------------------------------------------------------------

pub(crate) fn profile(code: i32) -> Result<Profile> {
    match code {
        0 => Ok(Profile::Hardware),
        1 => Ok(Profile::Linux),
        2 => Ok(Profile::Kvm),
        3 => Ok(Profile::Xen),
        _ => Err(Failure::arg(format_args!("profile {code} is not an XSTATE_PROFILE_* value"))),
    }
}

pub(crate) fn form(code: i32) -> Result<Form> {
    match code {
        0 => Ok(Form::Standard),
        1 => Ok(Form::Compacted),
        _ => Err(Failure::arg(format_args!("form {code} is not an XSTATE_FORM_* value"))),
    }
}

/// What the consumer knows besides the image; 0 means "the library's default" for every
/// optional field (see `xstate_context`).
pub(crate) struct Known {
    pub xcr0: u64,
    pub xss: u64,
    pub mxcsr_mask: u32,
    /// 0: XEN_DOMCTL_setvcpuextstate's size rule, 1: hvm_load_cpu_xsave_states()'.
    pub xen_caller: u32,
    pub kvm_supported: u64,
    pub kvm_buffer: u64,
    pub xen_xcr0_accum: u64,
    pub xen_policy_max: u64,
    pub xen_host: u64,
}

fn opt(v: u64) -> Option<Xfeatures> {
    (v != 0).then_some(Xfeatures(v))
}

pub(crate) fn validate(image: &[u8], layout: &Layout, profile: Profile, k: &Known) -> Result<()> {
    let mut ctx = Context::new(Xfeatures(k.xcr0));
    ctx.xss = Xfeatures(k.xss);
    if k.mxcsr_mask != 0 {
        ctx.mxcsr_mask = k.mxcsr_mask;
    }
    ctx.kvm_supported = opt(k.kvm_supported);
    ctx.kvm_buffer = match k.kvm_buffer {
        0 => None,
        n => Some(usize::try_from(n).map_err(|_| Failure::arg(format_args!("kvm_buffer {n} does not fit")))?),
    };
    ctx.xen.xcr0_accum = opt(k.xen_xcr0_accum);
    ctx.xen.policy_max = opt(k.xen_policy_max);
    ctx.xen.host = opt(k.xen_host);
    ctx.xen.caller = match k.xen_caller {
        0 => XenCaller::Domctl,
        1 => XenCaller::HvmLoad,
        c => return Err(Failure::arg(format_args!("xen_caller {c} is not an XSTATE_XEN_CALLER_* value"))),
    };
    image::validate(image, layout, profile, &ctx).map_err(|e| validation_failure(&e))
}

/// Converts `img` (restorable on `from` with `rfbm`) to `form` for `to`; a compacted output
/// lays out `mask`, or every component of `rfbm` that `to` has when `mask` is 0.
pub(crate) fn convert(img: &[u8], from: &Layout, to: &Layout, rfbm: u64, form: Form, mask: u64) -> Result<ImageBuf> {
    let target = match form {
        Form::Standard if mask != 0 => {
            return Err(Failure::arg(format_args!("a compaction mask ({mask:#x}) with the standard form")));
        }
        Form::Standard => Target::Standard,
        Form::Compacted => {
            let m = if mask == 0 { Xfeatures(rfbm) & to.supported() } else { Xfeatures(mask) - Xfeatures::BIT63 };
            Target::Compacted { mask: m }
        }
    };
    image::convert(img, from, to, Xfeatures(rfbm), target).map_err(|e| convert_failure(&e))
}

// ---- records -----------------------------------------------------------------------------

/// A blob's meaning: XCR0, IA32_XSS, the accumulated states, and where its image is.
pub(crate) struct Parsed {
    pub xcr0: u64,
    pub xss: u64,
    pub accum: u64,
    /// (offset in the blob, length, `XSTATE_FORM_*`).
    pub image: Option<(usize, usize, i32)>,
}

fn image_at(bytes: &[u8], image: Option<&[u8]>) -> Option<(usize, usize, i32)> {
    let img = image?;
    let offset = img.as_ptr() as usize - bytes.as_ptr() as usize;
    let form = match image::Header::read(img).map(|h| h.form()) {
        Some(Form::Compacted) => 1,
        _ => 0,
    };
    Some((offset, img.len(), form))
}

/// Xen's host: its enabled mask and the policy maximum; `None`: Xen's own on the layout.
pub(crate) type Host = Option<(u64, u64)>;

/// What Xen enables on a host of `layout` and offers a guest of kind `guest` (0 PV, 1 HVM
/// with shadow paging, 2 HVM with HAP): (xfeature_mask, the guest's maximum XCR0).
pub(crate) fn xen_host_for(layout: &Layout, guest: i32) -> Result<(u64, u64)> {
    let g = match guest {
        0 => XenGuest::Pv,
        1 => XenGuest::HvmShadow,
        2 => XenGuest::HvmHap,
        _ => return Err(Failure::arg(format_args!("guest {guest} is not an XSTATE_XEN_GUEST_* value"))),
    };
    let h = XenHost::for_guest(layout, g);
    Ok((h.host.bits(), h.policy_max.bits()))
}

pub(crate) fn domctl_parse(bytes: &[u8], layout: &Layout, host: Host) -> Result<Parsed> {
    let host = host.map_or_else(|| XenHost::of(layout), |(h, p)| XenHost::new(Xfeatures(h), Xfeatures(p)));
    let b = DomctlBlob::parse(bytes, layout, &host).map_err(|e| record_failure(&e))?;
    Ok(Parsed { xcr0: b.xcr0.bits(), xss: 0, accum: b.xcr0_accum.bits(), image: image_at(bytes, b.image) })
}

pub(crate) fn fc_blob_parse(bytes: &[u8], layout: &Layout, host: Host) -> Result<Parsed> {
    let host = host.map_or_else(|| FcBlob::host_of(layout), |(h, p)| XenHost::new(Xfeatures(h), Xfeatures(p)));
    let b = FcBlob::parse(bytes, layout, &host).map_err(|e| record_failure(&e))?;
    Ok(Parsed {
        xcr0: b.xcr0(layout).bits(),
        xss: b.xss(layout).bits(),
        accum: b.xstates_accum.bits(),
        image: image_at(bytes, b.image),
    })
}

/// Which blob to write.
#[derive(Clone, Copy)]
pub(crate) enum BlobKind {
    XenDomctl,
    ForwardCompatible,
}

/// Writes a blob for `to` from an image laid out for `from`: `active` (XCR0, or XCR0 | XSS for
/// the forward-compatible blob) and `accum`, the RFBM the image is restored with; no image for
/// "no xsave state" (both masks 0). The image is converted (form, layout) and the blob read
/// back with its own rules for `to` before it is returned.
pub(crate) fn blob_write(
    kind: BlobKind,
    active: u64,
    accum: u64,
    img: Option<&[u8]>,
    from: &Layout,
    to: &Layout,
    host: Host,
) -> Result<Vec<u8>> {
    let format = match kind {
        BlobKind::XenDomctl => Format::XenDomctl,
        BlobKind::ForwardCompatible => Format::FcBlob,
    };
    let image = match (img, accum) {
        (None, 0) if active == 0 => None,
        (None, _) | (Some(_), 0) => {
            return Err(Failure::new(
                EINVAL,
                "with no accumulated state the record is 16 zero bytes",
                format_args!("an image needs a non-zero accumulated mask, and the reverse (accum {accum:#x})"),
            ));
        }
        (Some(i), _) => Some(ImageBuf::from_bytes(i).map_err(|_| {
            Failure::new(
                EINVAL,
                "an image holds at least the 576 bytes of legacy region and header",
                format_args!("the image is {} bytes, 576 needed", i.len()),
            )
        })?),
    };
    let unknown = (Xfeatures(active) | Xfeatures(accum)) - from.supported();
    if image.is_some() && !unknown.is_empty() {
        return Err(unknown_bits(from, "the masks", unknown.bits()));
    }
    let (user, sup) = (from.user_supported(), from.supervisor_supported());
    let state = match image {
        None => State::no_xsave_state(),
        Some(img) => State::new(Some(img), Some(Xfeatures(accum)))
            .with_xcr0(Xfeatures(active) & user)
            .with_xss(Xfeatures(active) & sup)
            .with_accum(Xfeatures(accum)),
    };
    let contents = Contents::one(format, state);
    let mut opts = Options::default();
    opts.xen = host.map(|(h, p)| XenHost::new(Xfeatures(h), Xfeatures(p)));
    record::write(format, &contents, from, to, &opts).map_err(|e| record_failure(&e))
}

// ---- policies and save areas --------------------------------------------------------------

pub(crate) fn policy_from_list(host: &Layout, list: &str) -> Result<Policy> {
    let s = Selection::parse(list).map_err(|e| policy_failure(&e))?;
    Policy::derive(host, &s).map_err(|e| policy_failure(&e))
}

pub(crate) fn policy_from_masks(host: &Layout, xcr0: u64, xss: u64) -> Result<Policy> {
    Policy::derive(host, &Selection::masks(Xfeatures(xcr0), Xfeatures(xss))).map_err(|e| policy_failure(&e))
}

pub(crate) fn policy_layout(p: &Policy) -> Layout {
    p.layout().clone()
}

pub(crate) fn policy_masks(p: &Policy) -> (u64, u64) {
    (p.xcr0_max().bits(), p.xss_max().bits())
}

/// The size of a save area for `p` in `form`, refused where no such area exists (the checks of
/// `SaveArea::new`).
pub(crate) fn area_size_for(p: &Policy, form: Form) -> Result<usize> {
    match form {
        Form::Standard if !p.xss_max().is_empty() => {
            Err(area_failure(&AreaError::SupervisorNeedsCompacted { xss_max: p.xss_max() }))
        }
        Form::Compacted if !p.host_layout().features().compaction() => Err(area_failure(&AreaError::NoCompaction)),
        _ => Ok(SaveArea::size_for(p, form)),
    }
}

pub(crate) fn policy_leaf0d(p: &Policy, xcr0: u64, xss: u64) -> Result<[[u32; 4]; 64]> {
    let leaf = p.leaf0d(Xfeatures(xcr0), Xfeatures(xss)).map_err(|e| set_failure(&e))?;
    let mut out = [[0u32; 4]; 64];
    for (i, o) in out.iter_mut().enumerate() {
        let r = leaf.get(i as u8);
        *o = [r.eax, r.ebx, r.ecx, r.edx];
    }
    Ok(out)
}

pub(crate) fn area_new(p: &Arc<Policy>, form: Form) -> Result<SaveArea> {
    // The C API's areas start with Intel's mask, 0xFFFF, as documented for xstate_area_new;
    // xstate_area_set_mxcsr_mask gives the host's.
    SaveArea::new(Arc::clone(p), form, 0xFFFF).map_err(|e| area_failure(&e))
}

/// (XCR0, IA32_XSS, xcr0_accum, xss_accum) of an area.
pub(crate) fn area_registers(a: &SaveArea) -> (u64, u64, u64, u64) {
    (a.xcr0().bits(), a.xss().bits(), a.xcr0_accum().bits(), a.xss_accum().bits())
}

pub(crate) fn area_len(a: &SaveArea) -> usize {
    a.len()
}

pub(crate) fn area_set_xcr0(a: &mut SaveArea, v: u64) -> Result<()> {
    a.set_xcr0(Xfeatures(v)).map_err(|e| area_failure(&e))
}

pub(crate) fn area_set_xss(a: &mut SaveArea, v: u64) -> Result<()> {
    a.set_xss(Xfeatures(v)).map_err(|e| area_failure(&e))
}

pub(crate) fn area_set_mxcsr_mask(a: &mut SaveArea, field: u32) {
    a.set_mxcsr_mask(field);
}

pub(crate) fn area_load(a: &mut SaveArea, img: &[u8]) -> Result<()> {
    a.load(img).map_err(|e| area_failure(&e))
}

pub(crate) fn area_store(a: &SaveArea, form: Form) -> Result<ImageBuf> {
    a.store(form).map_err(|e| area_failure(&e))
}

pub(crate) fn area_set_policy(a: &mut SaveArea, p: &Arc<Policy>) -> Result<()> {
    a.set_policy(Arc::clone(p)).map_err(|e| area_failure(&e))
}

// ---- compatibility -----------------------------------------------------------------------

/// One side of a migration.
pub(crate) struct Sided<'a> {
    pub layout: &'a Layout,
    pub xcr0: u64,
    pub xss: u64,
}

/// The verdict (0 as is, 1 after re-layout, 2 incompatible), each reason as (kind, text), and
/// the masks to reach "after re-layout" and "as is".
pub(crate) struct Verdict {
    pub verdict: i32,
    pub reasons: Vec<(&'static str, String)>,
    pub mask: u64,
    pub mask_as_is: u64,
}

pub(crate) fn compat_check(from: &Sided<'_>, to: &Sided<'_>, img: Option<&[u8]>) -> Result<Verdict> {
    let f = Side { layout: from.layout, xcr0: Xfeatures(from.xcr0), xss: Xfeatures(from.xss) };
    let t = Side { layout: to.layout, xcr0: Xfeatures(to.xcr0), xss: Xfeatures(to.xss) };
    // A verdict is about masks each CPU can hold (as the CLI's compat asks).
    for (side, which) in [(&f, "from"), (&t, "to")] {
        let (user, sup) = (side.layout.user_supported(), side.layout.supervisor_supported());
        xstate::xcr0::check_xcr0_supported(side.xcr0, user, sup)
            .and_then(|()| xstate::xcr0::check_xss(side.xss, user, sup))
            .map_err(|m| {
                Failure::new(EINVAL, "XCR0 and XSS must be values the CPU can hold", format_args!("{which}: {m}"))
            })?;
    }
    let r: Report = match img {
        None => compat::check(&f, &t),
        Some(i) => compat::check_image(&f, &t, i).map_err(|e| validation_failure(&e))?,
    };
    Ok(Verdict {
        verdict: match r.verdict {
            compat::Verdict::Compatible => 0,
            compat::Verdict::AfterRelayout => 1,
            compat::Verdict::Incompatible => 2,
        },
        reasons: r.reasons.iter().map(|x| (x.kind(), x.to_string())).collect(),
        mask: r.mask.bits(),
        mask_as_is: r.mask_as_is.bits(),
    })
}
