//! Migration compatibility: can extended state saved on one CPU (or under one guest policy) be
//! restored on another, and if not, why and what to mask.
//!
//! The verdict is Layout-only (plus, optionally, one concrete image, whose components in use
//! are then the only ones that matter):
//!
//! - **compatible as is**: every state the source may use exists on the destination with the
//!   same size, standard offset and (where both compact) 64-byte alignment, and the
//!   destination's largest standard image is at least the source's, so a raw image or record
//!   moves byte for byte;
//! - **compatible after re-layout**: every state exists with the same size, but offsets,
//!   alignment or sizes of whole images differ, so standard-format consumers (kvm_xsave, Xen's
//!   blob, NT_X86_XSTATE) need the image moved component by component
//!   ([`crate::image::convert()`]; the portable record carries its own layout for that);
//! - **incompatible**: a state in use is missing on the destination or has another size
//!   (rr's rule), or supervisor state cannot be restored there.
//!
//! Each [`Reason`] names the component and both values. [`Report::mask`] lists the source
//! components (whole policy feature groups, with what depends on them: AVX-512 goes with AVX)
//! to remove from the source policy to reach "after re-layout", [`Report::mask_as_is`] those to
//! reach "as is". The hypervisors' and tools' rules mirrored: rr (size/offset/alignment per
//! enabled feature), CRIU (`xsave_size` equality), KVM (TILEDATA needs the guest AMX permission
//! of `arch_prctl(ARCH_REQ_XCOMP_GUEST_PERM)`); docs/ARCHITECTURE.md, "Records and compatibility".
//!
//! # Example: a `kvm_xsave` from an AMD host to an Intel one
//!
//! The source VMM took the vCPU's state with KVM_GET_XSAVE (a 4096-byte `kvm_xsave` in the
//! AMD host's layout) and its XCR0 with KVM_GET_XCRS. The guest's XCR0, not the buffer,
//! decides what the destination must be able to enable; the components in use decide what
//! moves. AVX-512 sits 256 bytes higher on Intel, so the state moves after a re-layout.
//!
//! ```
//! use xstate::compat::{Reason, Side, Verdict, check_image};
//! use xstate::image::ImageBuf;
//! use xstate::record::{self, Field, FieldSet, Format, Options};
//! use xstate::{Component, Layout, Leaf0d, Regs, Xfeatures};
//!
//! # fn layout(rows: &[(u8, u32, u32, u32, u32)]) -> Layout {
//! #     let mut leaf = Leaf0d::new();
//! #     for &(i, a, b, c, d) in rows {
//! #         leaf.set(i, Regs::new(a, b, c, d));
//! #     }
//! #     Layout::from_leaf0d(&leaf).unwrap()
//! # }
//! // Leaf 0xD of the two hosts (AMD EPYC 9654, Intel Xeon w7-2475X).
//! # let zen4 = layout(&[
//! #     (0, 0x2E7, 0x980, 0x988, 0), (1, 0xF, 0x990, 0x1800, 0), (2, 0x100, 0x240, 0, 0),
//! #     (5, 0x40, 0x340, 0, 0), (6, 0x200, 0x380, 0, 0), (7, 0x400, 0x580, 0, 0),
//! #     (9, 0x8, 0x980, 0, 0), (11, 0x10, 0, 1, 0), (12, 0x18, 0, 1, 0),
//! # ]);
//! # let spr = layout(&[
//! #     (0, 0x602E7, 0x2B00, 0x2B00, 0), (1, 0x1F, 0x2A80, 0xDD00, 0), (2, 0x100, 0x240, 0, 0),
//! #     (5, 0x40, 0x440, 0, 0), (6, 0x200, 0x480, 0, 0), (7, 0x400, 0x680, 0, 0), (8, 0x80, 0, 1, 0),
//! #     (9, 0x8, 0xA80, 0, 0), (10, 0x8, 0, 1, 0), (11, 0x10, 0, 1, 0), (12, 0x18, 0, 1, 0),
//! #     (14, 0x30, 0, 1, 0), (15, 0x328, 0, 1, 0), (17, 0x40, 0xAC0, 2, 0), (18, 0x2000, 0xB00, 6, 0),
//! # ]);
//! // What KVM_GET_XSAVE gave on the AMD host: k1 = 0x1234 (opmask at 0x340 there).
//! # let kvm_xsave = {
//! #     let mut b = ImageBuf::init(4096, Xfeatures::EMPTY);
//! #     b[0x340 + 8..0x340 + 16].copy_from_slice(&0x1234u64.to_le_bytes());
//! #     b.set_xstate_bv(Xfeatures(0x23));
//! #     b[464..472].copy_from_slice(&0x2E7u64.to_le_bytes()); // KVM writes its supported XCR0 here
//! #     b.to_vec()
//! # };
//! let xcr0 = Xfeatures(0xE7); // KVM_GET_XCRS on the source
//! let mut opts = Options::default();
//! opts.xcr0 = Some(xcr0); // a kvm_xsave does not record the guest's XCR0
//! let contents = record::read(Format::KvmXsave, &kvm_xsave, &zen4, &opts)?;
//! let image = contents.state().and_then(|s| s.image.as_ref()).ok_or("no image")?;
//!
//! let from = Side { layout: &zen4, xcr0, xss: Xfeatures::EMPTY };
//! let report = check_image(&from, &Side::user_max(&spr), image)?;
//! assert_eq!(report.verdict, Verdict::AfterRelayout);
//! assert!(report.reasons.contains(&Reason::OffsetDiffers { component: Component::OPMASK, from: 0x340, to: 0x440 }));
//!
//! // The destination's kvm_xsave, in the Intel host's layout, for KVM_SET_XSAVE there
//! // (xstate_hw::kvm::set_xsave). It cannot hold XCR0: that goes to KVM_SET_XCRS.
//! opts.drop = FieldSet::NONE.with(Field::Xcr0);
//! let out = record::write(Format::KvmXsave, &contents, &zen4, &spr, &opts)?;
//! assert_eq!(out.len(), 4096);
//! assert_eq!(&out[0x440 + 8..0x440 + 16], &0x1234u64.to_le_bytes());
//!
//! // A guest that enabled AVX-512 cannot go to a CPU without it, even with its AVX-512 state
//! // init: the destination's XSETBV would refuse that XCR0.
//! # let haswell = layout(&[(0, 0x7, 0x340, 0x340, 0), (1, 0x1, 0, 0, 0), (2, 0x100, 0x240, 0, 0)]);
//! let mut init = ImageBuf::init(2440, Xfeatures::EMPTY);
//! init.set_xstate_bv(Xfeatures(0x3));
//! assert_eq!(check_image(&from, &Side::user_max(&haswell), &init)?.verdict, Verdict::Incompatible);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use alloc::vec::Vec;
use core::fmt;

use crate::component::Component;
use crate::image::validate::{Context, Profile, validate};
use crate::image::{Form, Image, ValidationError};
use crate::layout::Layout;
use crate::policy::Feature;
use crate::xfeatures::Xfeatures;

/// One side of a migration: a layout and the states enabled (or allowed) there.
#[derive(Clone, Copy, Debug)]
pub struct Side<'a> {
    /// The CPU's (or policy's) layout.
    pub layout: &'a Layout,
    /// XCR0: on the source the XCR0 the guest runs with (KVM_GET_XCRS, or the record's), which
    /// the destination must be able to enable; on the destination the states it can enable.
    pub xcr0: Xfeatures,
    /// IA32_XSS, likewise.
    pub xss: Xfeatures,
}

impl<'a> Side<'a> {
    /// Every user state of the layout, no supervisor state.
    pub fn user_max(layout: &'a Layout) -> Side<'a> {
        Side { layout, xcr0: layout.user_supported(), xss: Xfeatures(0) }
    }
}

/// The three answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Verdict {
    /// Raw images and records move byte for byte.
    Compatible,
    /// The state moves once re-laid out component by component.
    AfterRelayout,
    /// Some state cannot be restored on the destination.
    Incompatible,
}

impl Verdict {
    /// `"compatible"`, `"compatible after re-layout"`, `"incompatible"`.
    pub const fn text(self) -> &'static str {
        match self {
            Verdict::Compatible => "compatible",
            Verdict::AfterRelayout => "compatible after re-layout",
            Verdict::Incompatible => "incompatible",
        }
    }

    /// A short key: `"compatible"`, `"relayout"`, `"incompatible"`.
    pub const fn key(self) -> &'static str {
        match self {
            Verdict::Compatible => "compatible",
            Verdict::AfterRelayout => "relayout",
            Verdict::Incompatible => "incompatible",
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.text())
    }
}

/// Why a migration is not compatible as is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Reason {
    /// A user state the source uses does not exist (or is not enabled) on the destination.
    Missing {
        /// The component.
        component: Component,
    },
    /// A state has another size on the destination (rr refuses; e.g. Zen 2's 64-byte bit 9
    /// against an 8-byte PKRU).
    SizeDiffers {
        /// The component.
        component: Component,
        /// Size on the source.
        from: u32,
        /// Size on the destination.
        to: u32,
    },
    /// A user state sits at another standard offset (Intel keeps MPX space that AMD does not:
    /// opmask 0x440 vs 0x340, ...). Standard-format consumers need a re-layout.
    OffsetDiffers {
        /// The component.
        component: Component,
        /// Standard offset on the source.
        from: u32,
        /// Standard offset on the destination.
        to: u32,
    },
    /// The 64-byte alignment flag differs, so compacted offsets differ (both CPUs compact).
    AlignDiffers {
        /// The component.
        component: Component,
        /// align64 on the source.
        from: bool,
        /// align64 on the destination.
        to: bool,
    },
    /// The destination's largest standard image is smaller than the source's image, so a raw
    /// source image does not fit its buffers (CRIU compares `xsave_size`; Xen refuses blobs
    /// over 16 + its maximum).
    DestinationSmaller {
        /// Standard size of the source's states on the source.
        from: u32,
        /// The destination's largest standard size.
        to: u32,
    },
    /// The standard image sizes of the enabled states differ: an image moves only re-laid out
    /// (and CRIU requires equality because glibc caches the size at startup).
    StandardSizeDiffers {
        /// Standard size on the source.
        from: u32,
        /// Standard size on the destination for the same states.
        to: u32,
    },
    /// TILEDATA is in use: the destination VMM must hold the guest AMX permission
    /// (`arch_prctl(ARCH_REQ_XCOMP_GUEST_PERM, 18)`) before creating vCPUs, and KVM_GET_XSAVE2
    /// buffers of 11008+ bytes.
    AmxPermission,
    /// A supervisor state the source uses is not supported (or not enabled in XSS) on the
    /// destination.
    SupervisorUnsupported {
        /// The component.
        component: Component,
    },
    /// Supervisor state needs XSAVES/XRSTORS, which the destination lacks.
    NoXsaves,
    /// The source uses the compacted form but the destination has no XSAVEC/XSAVES: images must
    /// be converted to the standard form.
    NoCompaction,
    /// A re-layout moves the saved state, not what software on the source read from CPUID
    /// leaf 0xD: a guest (its kernel and programs) or a checkpointed process keeps the source's
    /// offsets and may misread standard-format (or, for an align64 change, compacted) XSAVE data
    /// written on the destination: signal frames, ptrace and core notes, its own XSAVE buffers.
    /// A snapshot's guest CPUID is not rewritten (the running guest already read it).
    GuestLayoutStale,
}

impl Reason {
    /// The verdict this reason alone forces.
    pub const fn severity(&self) -> Verdict {
        match self {
            Reason::Missing { .. }
            | Reason::SizeDiffers { .. }
            | Reason::SupervisorUnsupported { .. }
            | Reason::NoXsaves => Verdict::Incompatible,
            Reason::OffsetDiffers { .. }
            | Reason::AlignDiffers { .. }
            | Reason::DestinationSmaller { .. }
            | Reason::NoCompaction
            | Reason::GuestLayoutStale
            // An image of one size is not an image of the other: a byte-for-byte move is short
            // or long by the difference, so it is re-laid out (with every component in place, it
            // comes with an offset or alignment reason; alone, enabled-but-init states moved).
            | Reason::StandardSizeDiffers { .. } => Verdict::AfterRelayout,
            Reason::AmxPermission => Verdict::Compatible,
        }
    }

    /// A short machine-readable kind.
    pub const fn kind(&self) -> &'static str {
        match self {
            Reason::Missing { .. } => "component_missing",
            Reason::SizeDiffers { .. } => "size_differs",
            Reason::OffsetDiffers { .. } => "offset_differs",
            Reason::AlignDiffers { .. } => "align_differs",
            Reason::DestinationSmaller { .. } => "destination_maximum_smaller",
            Reason::StandardSizeDiffers { .. } => "standard_size_differs",
            Reason::AmxPermission => "amx_permission_needed",
            Reason::SupervisorUnsupported { .. } => "supervisor_state_unsupported",
            Reason::NoXsaves => "supervisor_state_unsupported",
            Reason::NoCompaction => "compaction_unsupported",
            Reason::GuestLayoutStale => "guest_layout_stale",
        }
    }

    /// The component concerned, if one.
    pub const fn component(&self) -> Option<Component> {
        match *self {
            Reason::Missing { component }
            | Reason::SizeDiffers { component, .. }
            | Reason::OffsetDiffers { component, .. }
            | Reason::AlignDiffers { component, .. }
            | Reason::SupervisorUnsupported { component } => Some(component),
            _ => None,
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Reason::Missing { component: c } => {
                write!(f, "{} ({}) is missing on the destination", c.name(), c.index())
            }
            Reason::SizeDiffers { component: c, from, to } => {
                write!(f, "{} ({}) is {from} bytes on the source, {to} on the destination", c.name(), c.index())
            }
            Reason::OffsetDiffers { component: c, from, to } => write!(
                f,
                "{} ({}) is at standard offset {from:#x} on the source, {to:#x} on the destination",
                c.name(),
                c.index()
            ),
            Reason::AlignDiffers { component: c, from, to } => write!(
                f,
                "{} ({}) is {}64-byte aligned in compacted images on the source, {}on the destination",
                c.name(),
                c.index(),
                if from { "" } else { "not " },
                if to { "" } else { "not " }
            ),
            Reason::DestinationSmaller { from, to } => {
                write!(f, "the source's standard image is {from} bytes, the destination's largest is {to}")
            }
            Reason::StandardSizeDiffers { from, to } => {
                write!(f, "standard image size {from} on the source, {to} on the destination for the same states")
            }
            Reason::AmxPermission => {
                f.write_str("TILEDATA needs the guest AMX permission (ARCH_REQ_XCOMP_GUEST_PERM) on the destination")
            }
            Reason::SupervisorUnsupported { component: c } => {
                write!(f, "supervisor state {} ({}) is not supported on the destination", c.name(), c.index())
            }
            Reason::NoXsaves => f.write_str("supervisor state needs XSAVES, which the destination lacks"),
            Reason::NoCompaction => {
                f.write_str("the source image is compacted and the destination has no XSAVEC/XSAVES")
            }
            Reason::GuestLayoutStale => f.write_str(
                "not fixed by a re-layout: software that read the source's CPUID leaf 0xD (a guest kernel and its \
                 programs, a checkpointed process) keeps its offsets and may misread XSAVE data written on the \
                 destination (signal frames, ptrace and core notes, its own XSAVE buffers)",
            ),
        }
    }
}

/// The answer with its reasons.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Report {
    /// The verdict: the worst severity among the reasons.
    pub verdict: Verdict,
    /// Every reason found, components ascending.
    pub reasons: Vec<Reason>,
    /// The states that matter: the source's XCR0 | XSS, or with an image its components in use.
    pub considered: Xfeatures,
    /// The states the destination must be able to enable: the source's XCR0 | XSS (within its
    /// layout), whether or not an image has them in use.
    pub enabled: Xfeatures,
    /// Source components to mask (whole feature groups and dependents) to reach at least
    /// "compatible after re-layout".
    pub mask: Xfeatures,
    /// Source components to mask to reach "compatible as is".
    pub mask_as_is: Xfeatures,
}

impl Report {
    /// The policy features behind [`Report::mask`] (`avx512`, `mpx`, `pku`, ...).
    pub fn mask_features(&self) -> Vec<Feature> {
        features_of(self.mask)
    }

    /// The policy features behind [`Report::mask_as_is`].
    pub fn mask_as_is_features(&self) -> Vec<Feature> {
        features_of(self.mask_as_is)
    }
}

fn features_of(mask: Xfeatures) -> Vec<Feature> {
    let mut out: Vec<Feature> = Vec::new();
    for c in mask.iter() {
        if let Some(f) = Feature::of_component(c.index())
            && !out.contains(&f)
        {
            out.push(f);
        }
    }
    out
}

/// Widens a set of components to whole feature groups and what depends on them (AVX-512 and
/// AMX go with AVX, per the XCR0 rules and the hypervisors' feature dependencies).
fn close(mask: Xfeatures) -> Xfeatures {
    let mut m = mask;
    for c in mask.iter() {
        if let Some(f) = Feature::of_component(c.index()) {
            m |= f.components();
        }
    }
    if m.contains(Component::AVX) {
        m |= Feature::Avx512.components();
    }
    m - Xfeatures::LEGACY
}

/// Compares a source and a destination. Every state the source has enabled (its XCR0 | XSS)
/// must be one the destination can enable, at the same size: XSETBV (and KVM_SET_XCRS, Xen's
/// `validate_xstate`) refuse an XCR0 naming a component the CPU lacks, and a component of
/// another size is another feature. Where the state sits matters only for the states in use
/// (`in_use`, from an image; all enabled states without one): init state is written init on
/// the destination whatever its offset.
/// `laid_out`: the components a compacted source image lays out (XCOMP_BV), in use or not:
/// each one's align64 flag moves the ones after it (SDM Vol. 1 §13.4.3).
fn compare(from: &Side<'_>, to: &Side<'_>, in_use: Option<Xfeatures>, laid_out: Option<Xfeatures>) -> Report {
    let compacted_source = laid_out.is_some();
    let (fl, tl) = (from.layout, to.layout);
    let enabled = (from.xcr0 & fl.user_supported()) | (from.xss & fl.supervisor_supported());
    let considered = in_use.map_or(enabled, |u| u & enabled);
    let laid_out = laid_out.unwrap_or_default() & enabled;
    let mut reasons = Vec::new();
    let mut bad = Xfeatures(0);
    let mut moved = Xfeatures(0);
    let both_compact = fl.features().compaction() && tl.features().compaction();
    let dst_user = to.xcr0 & tl.user_supported();
    let dst_sup = to.xss & tl.supervisor_supported();
    for c in enabled.iter().filter(|c| !c.is_legacy()) {
        let Some(gf) = fl.geometry(c) else { continue };
        if gf.supervisor {
            if !dst_sup.contains(c) {
                reasons.push(Reason::SupervisorUnsupported { component: c });
                bad = bad.with(c);
                continue;
            }
        } else if !dst_user.contains(c) {
            reasons.push(Reason::Missing { component: c });
            bad = bad.with(c);
            continue;
        }
        let Some(gt) = tl.geometry(c) else { continue };
        if gf.size != gt.size {
            reasons.push(Reason::SizeDiffers { component: c, from: gf.size, to: gt.size });
            bad = bad.with(c);
            continue;
        }
        if both_compact && gf.align64 != gt.align64 && (considered.contains(c) || laid_out.contains(c)) {
            reasons.push(Reason::AlignDiffers { component: c, from: gf.align64, to: gt.align64 });
            moved = moved.with(c);
        }
        if !considered.contains(c) {
            continue;
        }
        if !gf.supervisor && gf.offset != gt.offset {
            reasons.push(Reason::OffsetDiffers { component: c, from: gf.offset, to: gt.offset });
            moved = moved.with(c);
        }
    }
    let sup_enabled = enabled & fl.supervisor_supported();
    if !sup_enabled.is_empty() && !tl.features().xsaves() {
        reasons.push(Reason::NoXsaves);
        bad |= sup_enabled;
    }
    if compacted_source && !tl.features().compaction() {
        reasons.push(Reason::NoCompaction);
    }
    if !moved.is_empty() {
        reasons.push(Reason::GuestLayoutStale);
    }
    // Whole-image sizes: an image is standard_size(XCR0) bytes, over every enabled user state,
    // in use or init (an image's length is what a byte-for-byte move carries).
    let user = enabled & fl.user_supported();
    if let (Some(s_from), Some(s_to)) = (fl.standard_size(user), tl.standard_size(user & tl.user_supported())) {
        let dst_max = tl.standard_size(dst_user).unwrap_or(0);
        if s_from > dst_max {
            reasons.push(Reason::DestinationSmaller { from: s_from, to: dst_max });
        } else if s_from != s_to && bad.is_empty() {
            reasons.push(Reason::StandardSizeDiffers { from: s_from, to: s_to });
        }
    }
    // KVM refuses an XCR0 with TILEDATA without the permission, in use or not.
    if enabled.contains(Component::TILEDATA) && tl.geometry(Component::TILEDATA).is_some_and(|g| g.xfd) {
        reasons.push(Reason::AmxPermission);
    }
    let verdict = reasons.iter().map(Reason::severity).max().unwrap_or(Verdict::Compatible);
    let mask = close(bad) & enabled;
    let mut as_is = bad | moved;
    if reasons.iter().any(|r| matches!(r, Reason::StandardSizeDiffers { .. })) {
        // The enabled states placed elsewhere, in use or not, make the sizes differ.
        for c in user.iter().filter(|c| !c.is_legacy()) {
            if fl.geometry(c).map(|g| g.offset) != tl.geometry(c).map(|g| g.offset) {
                as_is = as_is.with(c);
            }
        }
    }
    if reasons.iter().any(|r| matches!(r, Reason::DestinationSmaller { .. })) && as_is.is_empty() {
        // Only size: the states the destination lacks room for are those ending past its max.
        let dst_max = tl.standard_size(dst_user).unwrap_or(0);
        for c in user.iter().filter(|c| !c.is_legacy()) {
            if fl.geometry(c).is_some_and(|g| g.offset + g.size > dst_max) {
                as_is = as_is.with(c);
            }
        }
    }
    Report { verdict, reasons, considered, enabled, mask, mask_as_is: close(as_is) & enabled }
}

/// CPU-to-CPU (or policy-to-policy) compatibility over every state the source may use.
pub fn check(from: &Side<'_>, to: &Side<'_>) -> Report {
    compare(from, to, None, None)
}

/// Compatibility of one concrete image saved on the source, which runs with `from.xcr0` and
/// `from.xss` (the guest's XCR0 from KVM_GET_XCRS or the record, never guessed from the
/// image's XSTATE_BV). Every enabled state must exist on the destination at the same size, in
/// use or init (the destination must accept that XCR0, as [`check`] requires); where state
/// sits matters only for the components in use, but the image's length (standard_size of the
/// enabled states) and, for a compacted image, the alignment of every component it lays out
/// must be the destination's for it to move byte for byte. Fails if the masks are none the
/// source can hold, or the image is not one XRSTOR with RFBM = that XCR0 (| XSS for a
/// compacted image) loads on the source (MXCSR not checked).
pub fn check_image(from: &Side<'_>, to: &Side<'_>, image: &[u8]) -> Result<Report, ValidationError> {
    let img = Image::new(image).map_err(|_| ValidationError {
        profile: Profile::Hardware,
        rule: crate::image::ValidationRule::TooShort,
        detail: crate::image::ValidationDetail::Length { len: image.len(), needed: crate::image::MIN_SIZE },
    })?;
    let mut ctx = Context::new(from.xcr0);
    if img.form() == Form::Compacted {
        ctx.xss = from.xss;
    }
    ctx.mxcsr_mask = u32::MAX;
    validate(image, from.layout, Profile::Hardware, &ctx)?;
    let mut in_use = img.xstate_bv();
    let laid_out = (img.form() == Form::Compacted).then(|| img.header().compacted_components());
    if let Some(l) = laid_out {
        in_use &= l;
    }
    Ok(compare(from, to, Some(in_use), laid_out))
}

/// The verdict alone, without allocating: for fleet matrices.
pub fn verdict(from: &Side<'_>, to: &Side<'_>) -> Verdict {
    let (fl, tl) = (from.layout, to.layout);
    let enabled = (from.xcr0 & fl.user_supported()) | (from.xss & fl.supervisor_supported());
    let dst = (to.xcr0 & tl.user_supported()) | (to.xss & tl.supervisor_supported());
    let both_compact = fl.features().compaction() && tl.features().compaction();
    let mut v = Verdict::Compatible;
    for c in enabled.iter().filter(|c| !c.is_legacy()) {
        let (Some(gf), Some(gt)) = (fl.geometry(c), tl.geometry(c)) else { return Verdict::Incompatible };
        if !dst.contains(c) || gf.size != gt.size || gf.supervisor != gt.supervisor {
            return Verdict::Incompatible;
        }
        if (!gf.supervisor && gf.offset != gt.offset) || (both_compact && gf.align64 != gt.align64) {
            v = Verdict::AfterRelayout;
        }
    }
    if !(enabled & fl.supervisor_supported()).is_empty() && !tl.features().xsaves() {
        return Verdict::Incompatible;
    }
    let user = enabled & fl.user_supported();
    if v == Verdict::Compatible
        && fl.standard_size(user).unwrap_or(0) > tl.standard_size(to.xcr0 & tl.user_supported()).unwrap_or(0)
    {
        v = Verdict::AfterRelayout;
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{
        self, AMD_ZEN2, AMD_ZEN3, AMD_ZEN4, AVX_ONLY, INTEL_ICELAKE, INTEL_SAPPHIRE_RAPIDS, INTEL_SKYLAKE_SP,
    };

    #[test]
    fn skylake_to_zen4_names_offsets_and_masks_mpx() {
        let (skx, zen4) = (fixtures::layout(INTEL_SKYLAKE_SP), fixtures::layout(AMD_ZEN4));
        let r = check(&Side::user_max(&skx), &Side::user_max(&zen4));
        assert_eq!(r.verdict, Verdict::Incompatible);
        assert!(r.reasons.contains(&Reason::Missing { component: Component::BNDREGS }));
        assert!(r.reasons.contains(&Reason::OffsetDiffers { component: Component::OPMASK, from: 0x440, to: 0x340 }));
        assert!(r.reasons.contains(&Reason::OffsetDiffers { component: Component::ZMM_HI256, from: 0x480, to: 0x380 }));
        assert!(r.reasons.contains(&Reason::OffsetDiffers { component: Component::HI16_ZMM, from: 0x680, to: 0x580 }));
        assert!(r.reasons.contains(&Reason::OffsetDiffers { component: Component::PKRU, from: 0xA80, to: 0x980 }));
        assert_eq!(r.mask, Xfeatures(0x18));
        assert_eq!(r.mask_features(), [Feature::Mpx]);
        assert_eq!(r.mask_as_is, Xfeatures(0x2F8));
        // With MPX masked: after re-layout; verdict() agrees.
        let masked = Side { layout: &skx, xcr0: Xfeatures(0x2E7), xss: Xfeatures(0) };
        let r = check(&masked, &Side::user_max(&zen4));
        assert_eq!(r.verdict, Verdict::AfterRelayout, "{:?}", r.reasons);
        assert_eq!(verdict(&masked, &Side::user_max(&zen4)), Verdict::AfterRelayout);
        assert_eq!(r.mask, Xfeatures(0));
        // Zen 4 -> Skylake-SP: everything exists, offsets differ, the source image is smaller.
        let back = check(&Side::user_max(&zen4), &Side::user_max(&skx));
        assert_eq!(back.verdict, Verdict::AfterRelayout);
        assert_eq!(verdict(&Side::user_max(&zen4), &Side::user_max(&skx)), Verdict::AfterRelayout);
    }

    #[test]
    fn relayout_names_the_guest_layout_it_cannot_fix() {
        // Issue 13: a re-layout moves the saved state, not what software on the source read
        // from CPUID; the verdict says so rather than leave "compatible after re-layout" bare.
        let (skx, zen4) = (fixtures::layout(INTEL_SKYLAKE_SP), fixtures::layout(AMD_ZEN4));
        let r = check(&Side::user_max(&zen4), &Side::user_max(&skx));
        assert!(r.reasons.contains(&Reason::GuestLayoutStale), "{:?}", r.reasons);
        assert_eq!(Reason::GuestLayoutStale.severity(), Verdict::AfterRelayout);
        assert!(alloc::format!("{}", Reason::GuestLayoutStale).contains("signal frames"));
        // Same offsets: nothing to say.
        let same = check(&Side::user_max(&zen4), &Side::user_max(&zen4));
        assert!(!same.reasons.contains(&Reason::GuestLayoutStale));
        // An image using only x87/SSE/AVX moves nothing, so no stale layout either.
        let mut img = alloc::vec![0u8; 832];
        img[512..520].copy_from_slice(&7u64.to_le_bytes());
        let avx = Side { layout: &zen4, xcr0: Xfeatures(0x7), xss: Xfeatures(0) };
        let r = check_image(&avx, &Side::user_max(&skx), &img).unwrap();
        assert!(!r.reasons.contains(&Reason::GuestLayoutStale), "{:?}", r.reasons);
    }

    #[test]
    fn sizes_supervisor_and_images() {
        let (zen2, zen3, icl, spr) = (
            fixtures::layout(AMD_ZEN2),
            fixtures::layout(AMD_ZEN3),
            fixtures::layout(INTEL_ICELAKE),
            fixtures::layout(INTEL_SAPPHIRE_RAPIDS),
        );
        // Zen 2's 64-byte bit 9 is not an 8-byte PKRU.
        let r = check(&Side::user_max(&zen2), &Side::user_max(&zen3));
        assert!(r.reasons.contains(&Reason::SizeDiffers { component: Component::PKRU, from: 64, to: 8 }));
        assert_eq!(r.mask, Xfeatures(0x200));
        // Same layout: compatible as is.
        assert_eq!(check(&Side::user_max(&icl), &Side::user_max(&icl)).verdict, Verdict::Compatible);
        assert_eq!(verdict(&Side::user_max(&spr), &Side::user_max(&spr)), Verdict::Compatible);
        // AMX needs permission; to a CPU without AMX it is missing and masked as a group.
        let r = check(&Side::user_max(&spr), &Side::user_max(&spr));
        assert_eq!(r.reasons, [Reason::AmxPermission]);
        let r = check(&Side::user_max(&spr), &Side::user_max(&icl));
        assert_eq!(r.verdict, Verdict::Incompatible);
        assert_eq!(r.mask, Xfeatures(0x60000));
        // Supervisor state (PT) to a CPU without it.
        let from = Side { layout: &spr, xcr0: Xfeatures(0xE7), xss: Xfeatures(0x100) };
        let r = check(&from, &Side::user_max(&icl));
        assert!(r.reasons.contains(&Reason::SupervisorUnsupported { component: Component::PT }));
        // With an image that uses only AVX, from a guest that has not enabled AMX, AMX does not
        // matter ...
        let img = crate::image::ImageBuf::init(spr.standard_size(Xfeatures(0x602E7)).unwrap() as usize, Xfeatures(0));
        let mut img = img;
        img.set_xstate_bv(Xfeatures(0x7));
        let no_amx = Side { layout: &spr, xcr0: Xfeatures(0x2E7), xss: Xfeatures(0) };
        let r = check_image(&no_amx, &Side::user_max(&icl), &img).unwrap();
        assert_eq!(r.considered, Xfeatures(0x7));
        assert_eq!(r.verdict, Verdict::Compatible, "{:?}", r.reasons);
        // ... but a guest running with AMX enabled cannot move to a CPU without it.
        let r = check_image(&Side::user_max(&spr), &Side::user_max(&icl), &img).unwrap();
        assert_eq!(r.verdict, Verdict::Incompatible, "{:?}", r.reasons);
        img.set_xstate_bv(Xfeatures(0x40007));
        let r = check_image(&Side::user_max(&spr), &Side::user_max(&icl), &img).unwrap();
        assert_eq!(r.verdict, Verdict::Incompatible);
        img.set_xstate_bv(Xfeatures(1 << 8));
        assert!(check_image(&Side::user_max(&spr), &Side::user_max(&icl), &img).is_err());
    }

    /// Issue 12 item 1 / issue 10 item 15: a Genoa guest running with XCR0 0x2e7 whose AVX-512
    /// state is init cannot move to a CPU without AVX-512: the destination cannot enable that
    /// XCR0 (XSETBV and KVM_SET_XCRS refuse it), whatever the image holds.
    #[test]
    fn enabled_but_init_components_must_exist_on_the_destination() {
        let (zen4, zen3, avx) = (fixtures::layout(AMD_ZEN4), fixtures::layout(AMD_ZEN3), fixtures::layout(AVX_ONLY));
        let xcr0 = Xfeatures(0x2E7);
        let from = Side { layout: &zen4, xcr0, xss: Xfeatures(0) };
        let mut img = crate::image::ImageBuf::init(zen4.standard_size(xcr0).unwrap() as usize, Xfeatures(0));
        img.set_xstate_bv(Xfeatures(0x3)); // x87 and SSE in use, AVX-512 and PKRU init
        for to in [&zen3, &avx] {
            let to = Side::user_max(to);
            let r = check_image(&from, &to, &img).unwrap();
            assert_eq!(r.verdict, Verdict::Incompatible, "{:?}", r.reasons);
            assert_eq!(r.verdict, check(&from, &to).verdict);
            assert!(r.reasons.contains(&Reason::Missing { component: Component::OPMASK }), "{:?}", r.reasons);
            assert!(r.mask.contains(Component::ZMM_HI256), "{}", r.mask);
            assert_eq!(r.enabled, xcr0);
        }
        // The same image from a guest whose XCR0 leaves AVX-512 out moves to Zen 3.
        let narrow = Side { layout: &zen4, xcr0: Xfeatures(0x207), xss: Xfeatures(0) };
        let r = check_image(&narrow, &Side::user_max(&zen3), &img).unwrap();
        assert_ne!(r.verdict, Verdict::Incompatible, "{:?}", r.reasons);
        // An enabled TILEDATA needs the guest AMX permission even when init.
        let spr = fixtures::layout(INTEL_SAPPHIRE_RAPIDS);
        let amx = Side { layout: &spr, xcr0: Xfeatures(0x602E7), xss: Xfeatures(0) };
        let mut img = crate::image::ImageBuf::init(spr.standard_size(amx.xcr0).unwrap() as usize, Xfeatures(0));
        img.set_xstate_bv(Xfeatures(0x3));
        let r = check_image(&amx, &Side::user_max(&spr), &img).unwrap();
        assert_eq!(r.reasons, [Reason::AmxPermission]);
    }

    /// An image's size is standard_size of the guest's XCR0, in use or init: Zen 4's 2440-byte
    /// image for XCR0 0x2e7 does not move byte for byte to Skylake-SP (2696 for that XCR0),
    /// nor back; `check_image` said Compatible while `check` said after re-layout.
    #[test]
    fn an_image_of_another_size_is_never_compatible_as_is() {
        let (skx, zen4) = (fixtures::layout(INTEL_SKYLAKE_SP), fixtures::layout(AMD_ZEN4));
        let x = Xfeatures(0x2E7);
        for (a, b) in [(&zen4, &skx), (&skx, &zen4)] {
            let mut img = crate::image::ImageBuf::init(a.standard_size(x).unwrap() as usize, Xfeatures(0));
            img.set_xstate_bv(Xfeatures(0x7));
            let (from, to) =
                (Side { layout: a, xcr0: x, xss: Xfeatures(0) }, Side { layout: b, xcr0: x, xss: Xfeatures(0) });
            let r = check_image(&from, &to, &img).unwrap();
            assert_ne!(r.verdict, Verdict::Compatible, "{:?}", r.reasons);
            assert!(r.verdict >= check(&from, &to).verdict.min(Verdict::AfterRelayout), "{:?}", r.reasons);
        }
    }

    /// Compacted offsets follow every laid-out component's align64 flag (SDM Vol. 1 §13.4.3),
    /// in use or init: a compacted image whose init CET_U is align64 on one side only moves CET_S.
    #[test]
    fn compacted_images_see_the_alignment_of_every_laid_out_component() {
        let zen4 = fixtures::layout(AMD_ZEN4);
        let mut leaf = fixtures::leaf0d(AMD_ZEN4);
        let mut aligned = leaf.get(11);
        aligned.ecx |= 0x2;
        leaf.set(11, aligned);
        let other = Layout::from_leaf0d(&leaf).unwrap();
        let xss = Xfeatures(0x1800);
        let xcomp = Xfeatures(0x2E7) | xss; // CET_U follows PKRU at 2440, or 2496 when align64
        let mut img = crate::image::ImageBuf::init(zen4.compacted_size(xcomp).unwrap() as usize, Xfeatures(0));
        img.set_xcomp_bv(Xfeatures(xcomp.bits() | 1 << 63));
        img.set_xstate_bv(Xfeatures(0x1003)); // CET_S in use, CET_U laid out and init
        let from = Side { layout: &zen4, xcr0: Xfeatures(0x2E7), xss };
        let to = Side { layout: &other, xcr0: Xfeatures(0x2E7), xss };
        assert_ne!(zen4.compacted_offset(Component::CET_S, xcomp), other.compacted_offset(Component::CET_S, xcomp));
        let r = check_image(&from, &to, &img).unwrap();
        assert!(
            r.reasons.contains(&Reason::AlignDiffers { component: Component::CET_U, from: false, to: true }),
            "{:?}",
            r.reasons
        );
        assert_eq!(r.verdict, Verdict::AfterRelayout);
    }

    /// A verdict about an XCR0 the source cannot hold is refused, not given about the
    /// components it does have (TILEDATA "in use" on Zen 4 vanished from the verdict).
    #[test]
    fn an_impossible_source_xcr0_is_refused() {
        let zen4 = fixtures::layout(AMD_ZEN4);
        let mut img = crate::image::ImageBuf::init(2440, Xfeatures(0));
        img.set_xstate_bv(Xfeatures(0x60003));
        for x in [0x602E7u64, 0x5, 0x0] {
            let from = Side { layout: &zen4, xcr0: Xfeatures(x), xss: Xfeatures(0) };
            assert!(check_image(&from, &Side::user_max(&zen4), &img).is_err(), "{x:#x}");
        }
    }
}
