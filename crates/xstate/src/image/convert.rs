//! Conversion between the standard and compacted forms and between CPUs' layouts, preserving
//! the architectural state XRSTOR would load (SDM Vol. 1 §13.8; the rules of XSAVE-FACTS §4).
//!
//! The source must be an image XRSTOR (or XRSTORS) with RFBM = `rfbm` would load on its CPU
//! ([`super::validate()`], hardware profile, MXCSR not checked: conversion carries MXCSR as it
//! is). The output is built from nothing: zero-filled, init values written for every component
//! whose XSTATE_BV bit is clear (FCW 0x037F, MXCSR 0x1F80, zeros), each component in use copied
//! from its source place to its target place, bytes 416..511 and the reserved header zero. A
//! component in use that the target cannot hold (missing there, another size, supervisor state
//! in a standard image, absent from the compaction mask) is refused, never dropped. A component
//! of RFBM in its init state is initialised by either image, so it may be missing on the target
//! or have another size there (Zen 2's 64-byte bit 9 against PKRU).
//!
//! MXCSR: the standard form loads it whenever RFBM\[1\] or RFBM\[2\] is set, the compacted form only
//! with XSTATE_BV\[1\] (and 0x1F80 otherwise). So standard → compacted with XSTATE_BV\[1\] = 0 and
//! MXCSR ≠ 0x1F80 sets XSTATE_BV\[1\] and writes zero XMM registers (what XSAVEC itself does,
//! docs/HARDWARE.md), and compacted → standard with XSTATE_BV\[1\] = 0 writes 0x1F80.

use alloc::vec::Vec;
use core::fmt;
use core::ops::Range;

use super::state::{XMM, effective_mxcsr};
use super::validate::{Context, Detail, Profile, Rule, ValidationError, validate_image};
use super::{Form, Header, Image, ImageBuf, MIN_SIZE, component_range};
use crate::aligned::AlignedBuilder;
use crate::component::Component;
use crate::component::legacy::{
    COMPACTED, EXTENDED_OFFSET, FCW_INIT, HEADER_OFFSET, HEADER_SIZE, MXCSR, MXCSR_INIT, MXCSR_MASK,
};
use crate::layout::{Geometry, Layout};
use crate::xcr0::{MaskError, check_xcr0};
use crate::xfeatures::Xfeatures;

/// The form to produce.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Target {
    /// Standard form, sized standard_size(RFBM) on the target layout.
    Standard,
    /// Compacted form with XCOMP_BV = bit 63 | `mask`.
    Compacted {
        /// The components to lay out; must cover every component in use and lie within RFBM.
        mask: Xfeatures,
    },
}

/// Why an image cannot be converted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConvertError {
    /// The source is not an image XRSTOR would load.
    Invalid(ValidationError),
    /// A component in use does not exist on the target layout.
    Missing {
        /// The component.
        component: Component,
    },
    /// A component in use exists on the target layout but the target's RFBM (its XCR0, or XCR0
    /// | XSS) does not enable it ([`convert_between()`]).
    NotEnabled {
        /// The component.
        component: Component,
        /// The target's RFBM.
        rfbm: Xfeatures,
    },
    /// A component in use has another size on the target layout.
    SizeDiffers {
        /// The component.
        component: Component,
        /// Size on the source layout.
        from: u32,
        /// Size on the target layout.
        to: u32,
    },
    /// A supervisor component in use cannot be expressed in a standard image.
    Supervisor {
        /// The component.
        component: Component,
    },
    /// The compaction mask lacks a component in use.
    NotInMask {
        /// The component.
        component: Component,
        /// The mask.
        mask: Xfeatures,
    },
    /// The compaction mask has bits outside RFBM on the target (XRSTOR would raise #GP).
    MaskOutsideRfbm {
        /// The bits.
        bits: Xfeatures,
    },
    /// MXCSR is not 0x1F80 but the compaction mask lacks SSE, so no compacted image can load it.
    MxcsrNeedsSse {
        /// The MXCSR the source loads.
        mxcsr: u32,
    },
    /// The target CPU has no compacted form (CPUID 0xD.1 EAX\[1\] = 0 and no XSAVES).
    NoCompaction,
    /// The XCR0 part of RFBM breaks an XCR0 rule (no CPU restores with it).
    BadXcr0(MaskError),
    /// A component's bytes lie beyond the end of the source or destination image
    /// ([`super::restore_into`], which does not validate lengths beforehand).
    OutOfBounds {
        /// The component.
        component: Component,
        /// True for the destination, false for the source.
        destination: bool,
    },
}

impl fmt::Display for ConvertError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConvertError::Invalid(e) => write!(f, "source image invalid: {e}"),
            ConvertError::Missing { component } => {
                write!(
                    f,
                    "component {} ({component}) is in use but the target layout has no such component",
                    component.index()
                )
            }
            ConvertError::NotEnabled { component, rfbm } => write!(
                f,
                "component {} ({component}) is in use but the target's XCR0|XSS {rfbm} does not enable it",
                component.index()
            ),
            ConvertError::SizeDiffers { component, from, to } => write!(
                f,
                "component {} ({component}) is in use and is {from} bytes on the source but {to} on the target",
                component.index()
            ),
            ConvertError::Supervisor { component } => write!(
                f,
                "supervisor component {} ({component}) is in use and cannot be held in a standard image",
                component.index()
            ),
            ConvertError::NotInMask { component, mask } => write!(
                f,
                "component {} ({component}) is in use but not in the compaction mask {mask}",
                component.index()
            ),
            ConvertError::MaskOutsideRfbm { bits } => {
                write!(
                    f,
                    "compaction mask bits {bits} ({}) are not enabled on the target (XRSTOR would #GP)",
                    bits.names()
                )
            }
            ConvertError::MxcsrNeedsSse { mxcsr } => {
                write!(f, "MXCSR {mxcsr:#x} is not the init value 0x1f80 but the compaction mask lacks SSE (bit 1)")
            }
            ConvertError::NoCompaction => f.write_str("the target CPU has no compacted form (no XSAVEC/XSAVES)"),
            ConvertError::BadXcr0(m) => write!(f, "{m}"),
            ConvertError::OutOfBounds { component, destination } => write!(
                f,
                "component {} ({component}) lies beyond the end of the {} image",
                component.index(),
                if *destination { "destination" } else { "source" }
            ),
        }
    }
}

impl core::error::Error for ConvertError {}

/// Converts `image`, restorable on the CPU of `from` with RFBM = `rfbm` (XCR0, or XCR0 | XSS for
/// an XRSTORS image), into `target` form for the CPU of `to`. The output restored with RFBM =
/// `rfbm` (less the components `to` does not enumerate, which must then be init) loads the
/// same registers as the source.
///
/// `rfbm` is read on each side against that side's layout: the source is checked with the
/// components of `rfbm` that `from` enumerates, the output is sized for those `to` enumerates,
/// and each part must keep the XCR0 rules (else `BadXcr0`). Components only `to` has are
/// written in their init state, so an image from a CPU without AMX converts, with RFBM 0x600e7,
/// to the full 11008-byte standard image (or a compacted one whose mask has the tiles) that an
/// AMX host restoring with that XCR0 reads.
pub fn convert(
    image: &[u8],
    from: &Layout,
    to: &Layout,
    rfbm: Xfeatures,
    target: Target,
) -> Result<ImageBuf, ConvertError> {
    Ok(assemble(&plan(image, from, rfbm, to, rfbm, target)?))
}

/// [`convert()`] where the two sides restore with different RFBMs: the source is an image XRSTOR
/// with RFBM = `from_rfbm` loads on `from`, the output is laid out for RFBM = `to_rfbm` on `to`
/// (a guest moving to a host that enables more, or fewer, components). Every component in use
/// must be enabled by `to_rfbm` (else [`ConvertError::NotEnabled`]); components of `to_rfbm`
/// the source does not enable are written in their init state, as XRSTOR loads them when
/// XSTATE_BV is clear. `convert(i, a, b, r, t)` is `convert_between(i, a, r, b, r, t)`.
pub fn convert_between(
    image: &[u8],
    from: &Layout,
    from_rfbm: Xfeatures,
    to: &Layout,
    to_rfbm: Xfeatures,
    target: Target,
) -> Result<ImageBuf, ConvertError> {
    Ok(assemble(&plan(image, from, from_rfbm, to, to_rfbm, target)?))
}

/// [`convert()`] into a buffer the caller keeps (resized to the output's length): no
/// allocation once the buffer is large enough. On a hot path (the same layouts, RFBM and target
/// each time) a [`Converter`] also keeps the plan: within 1.5x of memcpy on an 11008-byte AMX
/// image where this is about 2.3x (docs/BENCHMARKS.md). On error `out` is unchanged.
pub fn convert_into(
    image: &[u8],
    from: &Layout,
    to: &Layout,
    rfbm: Xfeatures,
    target: Target,
    out: &mut ImageBuf,
) -> Result<(), ConvertError> {
    let p = plan(image, from, rfbm, to, rfbm, target)?;
    out.resize(p.len);
    write_into(&p, out);
    Ok(())
}

/// Everything a conversion writes, decided and checked before a byte is written.
struct Plan<'a> {
    len: usize,
    legacy: Legacy,
    header: Header,
    /// Components in use above SSE; each has a checked place in source and output.
    in_use: Xfeatures,
    img: Image<'a>,
    from: &'a Layout,
    to: &'a Layout,
}

/// RFBM read on each side of a conversion (see [`convert()`]): the part each layout enumerates
/// must keep the XCR0 rules; returns the target's part.
fn target_rfbm(rfbm: Xfeatures, from: &Layout, to: &Layout) -> Result<Xfeatures, ConvertError> {
    sides(rfbm, from, rfbm, to)
}

/// Each side's RFBM, read against its layout, must keep the XCR0 rules; returns the target's.
fn sides(from_rfbm: Xfeatures, from: &Layout, to_rfbm: Xfeatures, to: &Layout) -> Result<Xfeatures, ConvertError> {
    check_xcr0(from_rfbm & from.user_supported()).map_err(ConvertError::BadXcr0)?;
    check_xcr0(to_rfbm & to.user_supported()).map_err(ConvertError::BadXcr0)?;
    Ok(to_rfbm & to.supported())
}

/// Checks a conversion and lays it out (see [`convert()`]).
#[inline(always)]
fn plan<'a>(
    image: &'a [u8],
    from: &'a Layout,
    rfbm: Xfeatures,
    to: &'a Layout,
    to_rfbm: Xfeatures,
    target: Target,
) -> Result<Plan<'a>, ConvertError> {
    let dst_rfbm = sides(rfbm, from, to_rfbm, to)?;
    let img = Image::new(image).map_err(|_| {
        ConvertError::Invalid(ValidationError {
            profile: Profile::Hardware,
            rule: Rule::TooShort,
            detail: Detail::Length { len: image.len(), needed: super::MIN_SIZE },
        })
    })?;
    let mut ctx = Context::new(rfbm & from.user_supported());
    if img.form() == Form::Compacted {
        ctx.xss = rfbm & from.supervisor_supported();
    }
    ctx.mxcsr_mask = u32::MAX;
    validate_image(&img, from, Profile::Hardware, &ctx).map_err(ConvertError::Invalid)?;
    let src_rfbm = ctx.xcr0 | ctx.xss;

    let bv = img.xstate_bv();
    let in_use = match img.form() {
        Form::Standard => bv & src_rfbm,
        Form::Compacted => bv & src_rfbm & img.header().compacted_components(),
    };
    for c in in_use.iter() {
        let Some(gt) = to.geometry(c) else { return Err(ConvertError::Missing { component: c }) };
        if !dst_rfbm.contains(c) {
            return Err(ConvertError::NotEnabled { component: c, rfbm: to_rfbm });
        }
        let gf = from.geometry(c).unwrap_or_default();
        if !c.is_legacy() && gf.size != gt.size {
            return Err(ConvertError::SizeDiffers { component: c, from: gf.size, to: gt.size });
        }
        if target == Target::Standard && gt.supervisor {
            return Err(ConvertError::Supervisor { component: c });
        }
    }
    let (xcomp_bv, len) = match target {
        Target::Standard => {
            let len = to.standard_size(dst_rfbm & to.user_supported()).unwrap_or(0) as usize;
            (Xfeatures(0), len)
        }
        Target::Compacted { mask } => {
            if !to.features().compaction() {
                return Err(ConvertError::NoCompaction);
            }
            let mask = mask - Xfeatures::BIT63;
            let outside = mask - dst_rfbm;
            if !outside.is_empty() {
                return Err(ConvertError::MaskOutsideRfbm { bits: outside });
            }
            if let Some(c) = (in_use - mask).iter().next() {
                return Err(ConvertError::NotInMask { component: c, mask });
            }
            let len = to.compacted_size(mask).unwrap_or(0) as usize;
            (Xfeatures(COMPACTED | mask.bits()), len)
        }
    };
    let (legacy, out_bv) = legacy_for(&img, src_rfbm, in_use, xcomp_bv)?;
    let src = img.bytes();
    let header = Header { xstate_bv: out_bv, xcomp_bv, ..Header::EMPTY };
    let p = Plan { len: len.max(MIN_SIZE), legacy, header, in_use: in_use - Xfeatures::LEGACY, img, from, to };
    // Every component in use has a place in the source (within its length) and in the output;
    // the validation and the sizing above guarantee it, and this keeps the writers panic-free.
    let mut bad = None;
    let mut placed = Xfeatures::EMPTY;
    p.each(|c, d, s| {
        placed = placed.with(c);
        if bad.is_none() && s.end > src.len() {
            bad = Some(ConvertError::OutOfBounds { component: c, destination: false });
        }
        if bad.is_none() && d.end > p.len {
            bad = Some(ConvertError::OutOfBounds { component: c, destination: true });
        }
    });
    match bad {
        Some(e) => Err(e),
        None if placed != p.in_use => {
            let c = (p.in_use - placed).iter().next().unwrap_or(Component::X87);
            Err(ConvertError::Missing { component: c })
        }
        None => Ok(p),
    }
}

/// The output's legacy region and XSTATE_BV for a source image whose components `in_use` (of
/// `src_rfbm`) are in use, for an output with XCOMP_BV `xcomp_bv` (0: standard).
///
/// MXCSR: the standard form loads it whenever RFBM\[1\] or RFBM\[2\] is set, the compacted form
/// only with XSTATE_BV\[1\]; a compacted output carries a non-init MXCSR by marking SSE in use
/// (its XMM bytes are then written as zeros, the init value), as XSAVEC itself does.
/// MXCSR_MASK is ignored by every restore; it is kept where the source's save wrote it.
fn legacy_for(
    img: &Image<'_>,
    src_rfbm: Xfeatures,
    in_use: Xfeatures,
    xcomp_bv: Xfeatures,
) -> Result<(Legacy, Xfeatures), ConvertError> {
    let mxcsr = effective_mxcsr(img, src_rfbm);
    let mut out_bv = in_use;
    if !xcomp_bv.is_empty()
        && let Some(m) = mxcsr.filter(|&m| m != MXCSR_INIT)
        && !out_bv.contains(Component::SSE)
    {
        if !xcomp_bv.contains(Component::SSE) {
            return Err(ConvertError::MxcsrNeedsSse { mxcsr: m });
        }
        out_bv = out_bv.with(Component::SSE);
    }
    let src = img.bytes();
    let mask_written = match img.form() {
        Form::Standard => !(src_rfbm & Xfeatures(0x6)).is_empty(),
        Form::Compacted => img.xstate_bv().contains(Component::SSE),
    };
    let mask_field: [u8; 4] = if mask_written {
        src.get(MXCSR_MASK..MXCSR_MASK + 4).and_then(|b| b.try_into().ok()).unwrap_or([0; 4])
    } else {
        [0; 4]
    };
    let legacy = Legacy {
        x87: in_use.contains(Component::X87),
        sse: in_use.contains(Component::SSE),
        mxcsr: mxcsr.unwrap_or(MXCSR_INIT),
        mask_field,
    };
    Ok((legacy, out_bv))
}

/// What the output's legacy region holds.
struct Legacy {
    x87: bool,
    sse: bool,
    mxcsr: u32,
    mask_field: [u8; 4],
}

/// The legacy region and header of the output, into `w` (which must be empty).
fn legacy_and_header(src: &[u8], legacy: &Legacy, header: &Header, w: &mut impl Sink) {
    if legacy.x87 {
        w.copy(&src[0..MXCSR]);
    } else {
        w.copy(&FCW_INIT.to_le_bytes());
        w.zeros_to(MXCSR);
    }
    w.copy(&legacy.mxcsr.to_le_bytes());
    w.copy(&legacy.mask_field);
    if legacy.x87 {
        w.copy(&src[32..XMM.start]);
    } else {
        w.zeros_to(XMM.start);
    }
    if legacy.sse {
        w.copy(&src[XMM]);
    } else {
        w.zeros_to(XMM.end);
    }
    w.zeros_to(HEADER_OFFSET);
    let mut raw = [0u8; HEADER_SIZE];
    header.write_raw(&mut raw);
    w.copy(&raw);
}

/// Writes the whole output front to back, each byte once: legacy region and header, then the
/// components in use at their destination offsets with zeros in between and after. Returns
/// false, having written the legacy region and header only, if destinations overlap (only a
/// hostile layout has them); the caller then zero-fills and copies.
fn stream(x: &Plan<'_>, w: &mut impl Sink) -> bool {
    let src = x.img.bytes();
    legacy_and_header(src, &x.legacy, &x.header, w);
    let mut ok = true;
    x.each(|_, dst, s| {
        if dst.start < w.pos() {
            ok = false;
        } else if ok {
            w.zeros_to(dst.start);
            w.copy(&src[s]);
        }
    });
    if ok {
        w.zeros_to(x.len);
    }
    ok
}

/// Copies the components in use over an output whose other bytes are already right.
fn overlay(x: &Plan<'_>, out: &mut [u8]) {
    let src = x.img.bytes();
    x.each(|_, dst, s| out[dst].copy_from_slice(&src[s]));
}

impl Plan<'_> {
    /// Calls `f(destination range, source range)` for each component in use, in destination
    /// order (index order in a compacted output, offset order in a standard one).
    ///
    /// Offsets come from one ascending walk that keeps running compacted offsets for a compacted
    /// source and a compacted output (SDM Vol. 1 §13.4.3), so the cost is a few operations per
    /// component. A standard output whose offsets are not in index order (LWP, APX) is visited
    /// in offset order with per-component lookups instead.
    fn each(&self, mut f: impl FnMut(Component, Range<usize>, Range<usize>)) {
        let (from, to) = (self.from, self.to);
        let dst_mask = self.header.xcomp_bv;
        let src_mask = self.img.header().xcomp_bv;
        let (src_packed, dst_packed) = (!src_mask.is_empty(), !dst_mask.is_empty());
        if !dst_packed && !to.standard_offsets_in_index_order() {
            for &c in to.standard_order().iter().filter(|c| self.in_use.contains(**c)) {
                if let (Some(s), Some(d)) = (self.img.component_range(from, c), component_range(to, dst_mask, c)) {
                    f(c, d, s);
                }
            }
            return;
        }
        let mut walk = self.in_use;
        if src_packed {
            walk |= src_mask;
        }
        if dst_packed {
            walk |= dst_mask;
        }
        let (mut s_off, mut d_off) = (EXTENDED_OFFSET, EXTENDED_OFFSET);
        for c in (walk - Xfeatures::LEGACY - Xfeatures::BIT63).iter() {
            // Each side advances over its own components, whether or not the other side has
            // them: a component the output lacks still takes room in a compacted source.
            let s = place(from.geometry(c), c, src_packed.then_some(src_mask), &mut s_off);
            let d = place(to.geometry(c), c, dst_packed.then_some(dst_mask), &mut d_off);
            if let (true, Some((s, ss)), Some((d, ds))) = (self.in_use.contains(c), s, d) {
                f(c, d..d + ds, s..s + ss);
            }
        }
    }
}

/// Where `c` (with geometry `g`) sits on one side of a conversion, as (offset, size): its
/// standard offset when `packed` is `None`, else the running compacted offset `off` for
/// XCOMP_BV `packed`, which advances past `c` whenever `c` is laid out there.
fn place(g: Option<Geometry>, c: Component, packed: Option<Xfeatures>, off: &mut usize) -> Option<(usize, usize)> {
    let g = g?;
    match packed {
        Some(mask) if mask.contains(c) => {
            if g.align64 {
                *off = off.next_multiple_of(64);
            }
            let at = *off;
            *off += g.size as usize;
            Some((at, g.size as usize))
        }
        Some(_) => None,
        None => (!g.supervisor).then_some((g.offset as usize, g.size as usize)),
    }
}

/// A destination written front to back.
trait Sink {
    fn pos(&self) -> usize;
    fn copy(&mut self, bytes: &[u8]);
    fn zeros_to(&mut self, len: usize);
}

impl Sink for AlignedBuilder {
    fn pos(&self) -> usize {
        self.len()
    }
    fn copy(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
    fn zeros_to(&mut self, len: usize) {
        AlignedBuilder::zeros_to(self, len);
    }
}

/// A slice written front to back.
struct Cursor<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

impl Sink for Cursor<'_> {
    fn pos(&self) -> usize {
        self.pos
    }
    fn copy(&mut self, bytes: &[u8]) {
        self.buf[self.pos..self.pos + bytes.len()].copy_from_slice(bytes);
        self.pos += bytes.len();
    }
    fn zeros_to(&mut self, len: usize) {
        if len > self.pos {
            self.buf[self.pos..len].fill(0);
            self.pos = len;
        }
    }
}

/// The output in a new buffer.
fn assemble(x: &Plan<'_>) -> ImageBuf {
    let mut w = AlignedBuilder::with_capacity(x.len);
    if stream(x, &mut w) {
        return ImageBuf::from_aligned(w.finish());
    }
    w.zeros_to(x.len);
    let mut out = w.finish();
    overlay(x, &mut out);
    ImageBuf::from_aligned(out)
}

/// The output into `out`, already `x.len` bytes long.
fn write_into(x: &Plan<'_>, out: &mut [u8]) {
    let mut c = Cursor { buf: out, pos: 0 };
    if !stream(x, &mut c) {
        c.zeros_to(x.len);
        overlay(x, out);
    }
}

/// A conversion prepared once for a pair of layouts, an RFBM and a target, then applied to many
/// images: what a VMM converting a vCPU's state on every exit wants. Everything that depends
/// only on the layouts (which components the target can hold, every offset, the output size)
/// is computed by [`Converter::new`]; [`Converter::convert_into`] then validates the image's
/// header and MXCSR and copies. An image the prepared plan does not cover (a compacted source
/// with another XCOMP_BV, a component in use the target cannot hold) goes through
/// [`convert_into()`], so the result, or the error, is always the one [`convert()`] gives.
#[derive(Clone, Debug)]
pub struct Converter<'a> {
    from: &'a Layout,
    to: &'a Layout,
    rfbm: Xfeatures,
    target: Target,
    /// Validation contexts for a standard and a compacted source.
    ctx_std: Context,
    ctx_cmp: Context,
    /// The source XCOMP_BV the compacted offsets were computed for (bit 63 included).
    src_xcomp: Xfeatures,
    /// Components that may be in use (x87 and SSE included).
    holdable: Xfeatures,
    xcomp_out: Xfeatures,
    len: usize,
    /// Components above SSE in destination order: (component, destination, standard source,
    /// compacted source, size). Empty with `fast` false if destinations overlap.
    pieces: Vec<(Component, usize, usize, usize, usize)>,
    fast: bool,
}

impl<'a> Converter<'a> {
    /// Prepares conversions of images restorable on `from` with RFBM `rfbm` into `target` form
    /// for `to` (see [`convert()`]). Compacted sources are expected with XCOMP_BV = bit 63 |
    /// `rfbm` (what XSAVEC and XSAVES write); others take the general path.
    pub fn new(
        from: &'a Layout,
        to: &'a Layout,
        rfbm: Xfeatures,
        target: Target,
    ) -> Result<Converter<'a>, ConvertError> {
        let dst_rfbm = target_rfbm(rfbm, from, to)?;
        let mut ctx_std = Context::new(rfbm & from.user_supported());
        ctx_std.mxcsr_mask = u32::MAX;
        let mut ctx_cmp = ctx_std;
        ctx_cmp.xss = rfbm & from.supervisor_supported();
        let src_rfbm = ctx_cmp.xcr0 | ctx_cmp.xss;
        let (xcomp_out, len, mask) = match target {
            Target::Standard => {
                (Xfeatures(0), to.standard_size(dst_rfbm & to.user_supported()).unwrap_or(0) as usize, None)
            }
            Target::Compacted { mask } => {
                if !to.features().compaction() {
                    return Err(ConvertError::NoCompaction);
                }
                let mask = mask - Xfeatures::BIT63;
                let outside = mask - dst_rfbm;
                if !outside.is_empty() {
                    return Err(ConvertError::MaskOutsideRfbm { bits: outside });
                }
                (Xfeatures(COMPACTED | mask.bits()), to.compacted_size(mask).unwrap_or(0) as usize, Some(mask))
            }
        };
        let holdable: Xfeatures = dst_rfbm
            .iter()
            .filter(|&c| {
                let (Some(gf), Some(gt)) = (from.geometry(c), to.geometry(c)) else { return false };
                (c.is_legacy() || gf.size == gt.size)
                    && !(target == Target::Standard && gt.supervisor)
                    && mask.is_none_or(|m| m.contains(c))
            })
            .collect();
        let src_xcomp = Xfeatures(COMPACTED | src_rfbm.bits());
        let mut pieces = Vec::new();
        for c in (holdable - Xfeatures::LEGACY).iter() {
            let (Some(d), Some(gf)) = (component_range(to, xcomp_out, c), from.geometry(c)) else { continue };
            let s_cmp = from.compacted_offset(c, src_xcomp).unwrap_or(0) as usize;
            pieces.push((c, d.start, gf.offset as usize, s_cmp, d.len()));
        }
        pieces.sort_by_key(|p| p.1);
        let fast = pieces.windows(2).all(|w| w[0].1 + w[0].4 <= w[1].1)
            && pieces.iter().all(|p| p.1 + p.4 <= len.max(MIN_SIZE));
        Ok(Converter {
            from,
            to,
            rfbm,
            target,
            ctx_std,
            ctx_cmp,
            src_xcomp,
            holdable,
            xcomp_out,
            len: len.max(MIN_SIZE),
            pieces,
            fast,
        })
    }

    /// Converts `image` into `out` (resized to the output's length). Same result and errors as
    /// [`convert_into()`]; on error `out` is unchanged.
    pub fn convert_into(&self, image: &[u8], out: &mut ImageBuf) -> Result<(), ConvertError> {
        let general = |out: &mut ImageBuf| convert_into(image, self.from, self.to, self.rfbm, self.target, out);
        let Ok(img) = Image::new(image) else { return general(out) };
        let compacted = img.form() == Form::Compacted;
        if !self.fast || (compacted && img.xcomp_bv() != self.src_xcomp) {
            return general(out);
        }
        let ctx = if compacted { &self.ctx_cmp } else { &self.ctx_std };
        validate_image(&img, self.from, Profile::Hardware, ctx).map_err(ConvertError::Invalid)?;
        let src_rfbm = ctx.xcr0 | ctx.xss;
        let in_use = img.xstate_bv() & src_rfbm;
        if !in_use.is_subset_of(self.holdable) {
            return general(out);
        }
        let (legacy, out_bv) = legacy_for(&img, src_rfbm, in_use, self.xcomp_out)?;
        let src = img.bytes();
        // The pieces lie within both images: the source was validated to hold its restore
        // footprint, which covers every component of its RFBM; the output is sized for them.
        if self.pieces.iter().any(|p| (if compacted { p.3 } else { p.2 }) + p.4 > src.len()) {
            return general(out);
        }
        out.resize(self.len);
        let mut w = Cursor { buf: out, pos: 0 };
        let header = Header { xstate_bv: out_bv, xcomp_bv: self.xcomp_out, ..Header::EMPTY };
        legacy_and_header(src, &legacy, &header, &mut w);
        for &(c, dst, s_std, s_cmp, size) in &self.pieces {
            if in_use.contains(c) {
                let s = if compacted { s_cmp } else { s_std };
                w.zeros_to(dst);
                w.copy(&src[s..s + size]);
            }
        }
        w.zeros_to(self.len);
        Ok(())
    }
}

#[cfg(test)]
mod tests;
