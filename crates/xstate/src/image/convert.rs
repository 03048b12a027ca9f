//! Conversion between the standard and compacted forms and between CPUs' layouts, preserving
//! the architectural state XRSTOR would load (SDM Vol. 1 §13.4, §13.8; docs/ARCHITECTURE.md,
//! "Images").
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

use super::state::{XMM, effective_mxcsr};
use super::validate::{Context, Profile, ValidationDetail, ValidationError, ValidationRule, validate_image};
use super::{Form, Image, ImageBuf, MIN_SIZE, component_range};
use crate::aligned::AlignedBuilder;
use crate::component::Component;
use crate::component::legacy::{COMPACTED, EXTENDED_OFFSET, FCW_INIT, HEADER_OFFSET, MXCSR, MXCSR_INIT, MXCSR_MASK};
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
#[non_exhaustive]
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
    /// The caller's output buffer is shorter than the converted image.
    OutputTooShort {
        /// The buffer's length.
        len: usize,
        /// The converted image's length.
        needed: usize,
    },
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
            ConvertError::OutputTooShort { len, needed } => {
                write!(f, "the output buffer is {len} bytes, the converted image {needed}")
            }
            ConvertError::OutOfBounds { component, destination } => write!(
                f,
                "component {} ({component}) lies beyond the end of the {} image",
                component.index(),
                if *destination { "destination" } else { "source" }
            ),
        }
    }
}

impl core::error::Error for ConvertError {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match self {
            ConvertError::Invalid(e) => Some(e),
            ConvertError::BadXcr0(m) => Some(m),
            _ => None,
        }
    }
}

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
    convert_between(image, from, rfbm, to, rfbm, target)
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
    let p = plan(image, from, from_rfbm, to, to_rfbm, target)?;
    let mut w = AlignedBuilder::with_capacity(p.len);
    p.write(&mut w)?;
    Ok(ImageBuf::from_aligned(w.finish()))
}

/// The length of the image [`convert()`] writes for `target` on `to` with RFBM `rfbm`:
/// standard_size(RFBM) or compacted_size(mask), at least 576. `None` if `rfbm` or the mask
/// names a component `to` does not enumerate (beyond what [`convert()`] ignores).
pub fn output_len(to: &Layout, rfbm: Xfeatures, target: Target) -> Option<usize> {
    let len = match target {
        Target::Standard => to.standard_size(rfbm & to.user_supported())?,
        Target::Compacted { mask } => to.compacted_size(mask - Xfeatures::BIT63)?,
    };
    Some((len as usize).max(MIN_SIZE))
}

/// [`convert()`] into memory the caller owns: a buffer kept across conversions, the `region`
/// of a `struct kvm_xsave`, guest memory. The output is written to `out[..n]`, and `n` is
/// returned ([`output_len`]); bytes of `out` past `n` are not touched, and no alignment is
/// needed (XRSTOR of the result, if any, needs 64-byte alignment: [`ImageBuf`] has it). A
/// shorter `out` is refused ([`ConvertError::OutputTooShort`]). On error nothing is written.
///
/// No allocation: the conversion is checked first, then the output written front to back once.
/// About 1.7x an aligned memcpy of the image on an 11008-byte AMX image (docs/BENCHMARKS.md); a
/// [`Converter`] prepared once per (layouts, RFBM, target) saves the checks and the walk
/// (about 1.4x).
pub fn convert_into(
    image: &[u8],
    from: &Layout,
    to: &Layout,
    rfbm: Xfeatures,
    target: Target,
    out: &mut [u8],
) -> Result<usize, ConvertError> {
    let p = plan(image, from, rfbm, to, rfbm, target)?;
    let Some(dst) = out.get_mut(..p.len) else {
        return Err(ConvertError::OutputTooShort { len: out.len(), needed: p.len });
    };
    p.write(&mut Cursor { buf: dst, pos: 0 })?;
    Ok(p.len)
}

/// Everything a conversion writes, decided and checked before a byte is written.
struct Plan<'a> {
    len: usize,
    legacy: Legacy,
    /// The output's XSTATE_BV and XCOMP_BV.
    out_bv: Xfeatures,
    out_xcomp: Xfeatures,
    src: &'a [u8],
    src_xcomp: Xfeatures,
    from: &'a Layout,
    to: &'a Layout,
    /// Components in use above SSE.
    in_use: Xfeatures,
}

/// RFBM read on each side of a conversion (see [`convert()`]): the part each layout enumerates
/// must keep the XCR0 rules; returns the target's part.
fn target_rfbm(rfbm: Xfeatures, from: &Layout, to: &Layout) -> Result<Xfeatures, ConvertError> {
    sides(rfbm, from, rfbm, to)
}

/// Each side's RFBM, read against its layout, must keep the XCR0 rules; returns the target's.
#[inline(always)]
fn sides(from_rfbm: Xfeatures, from: &Layout, to_rfbm: Xfeatures, to: &Layout) -> Result<Xfeatures, ConvertError> {
    // Bit 63 is reserved in XCR0 and IA32_XSS alike: never read as "less the unknown bits".
    if (from_rfbm | to_rfbm).bits() & COMPACTED != 0 {
        let r = if from_rfbm.bits() & COMPACTED != 0 { from_rfbm } else { to_rfbm };
        check_xcr0(r).map_err(ConvertError::BadXcr0)?;
    }
    let (f, t) = (from_rfbm & from.user_supported(), to_rfbm & to.user_supported());
    check_xcr0(f).map_err(ConvertError::BadXcr0)?;
    if t != f {
        check_xcr0(t).map_err(ConvertError::BadXcr0)?;
    }
    Ok(to_rfbm & to.supported())
}

/// Checks that every component in use can be held by the target (see [`convert()`]), naming
/// the first one that cannot, in index order.
#[inline(always)]
fn check_holdable(
    in_use: Xfeatures,
    from: &Layout,
    to: &Layout,
    dst_rfbm: Xfeatures,
    to_rfbm: Xfeatures,
    target: Target,
) -> Result<(), ConvertError> {
    let supervisor = if target == Target::Standard { in_use & to.supervisor_supported() } else { Xfeatures::EMPTY };
    if (in_use - dst_rfbm).is_empty() && supervisor.is_empty() && core::ptr::eq(from, to) {
        return Ok(());
    }
    for c in in_use.iter() {
        if !dst_rfbm.contains(c) {
            return Err(if to.supported().contains(c) {
                ConvertError::NotEnabled { component: c, rfbm: to_rfbm }
            } else {
                ConvertError::Missing { component: c }
            });
        }
        let (gf, gt) = (from.geometry_of(c), to.geometry_of(c));
        if !c.is_legacy() && gf.size != gt.size {
            return Err(ConvertError::SizeDiffers { component: c, from: gf.size, to: gt.size });
        }
        if supervisor.contains(c) {
            return Err(ConvertError::Supervisor { component: c });
        }
    }
    Ok(())
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
            rule: ValidationRule::TooShort,
            detail: ValidationDetail::Length { len: image.len(), needed: super::MIN_SIZE },
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
    check_holdable(in_use, from, to, dst_rfbm, to_rfbm, target)?;
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
    let len = len.max(MIN_SIZE);
    let (legacy, out_bv) = legacy_for(&img, src_rfbm, in_use, xcomp_bv, to_rfbm)?;
    // Every place of a component in use lies within both images: the validation made the
    // source hold its restore footprint (standard_size(RFBM), or compacted_size(XCOMP_BV), which
    // covers every component it lays out), and the output is sized for every component the
    // target's RFBM or mask has. The layout's sizes and the walk in `Plan::write` use the same
    // arithmetic; the writer still checks each copy, so no layout can make it panic.
    Ok(Plan {
        len,
        legacy,
        out_bv,
        out_xcomp: xcomp_bv,
        src: img.bytes(),
        src_xcomp: img.xcomp_bv(),
        from,
        to,
        in_use: in_use - Xfeatures::LEGACY,
    })
}

impl Plan<'_> {
    /// Writes the whole output front to back, each byte once: the legacy region and header,
    /// then each component in use at its destination offset with zeros in between and after.
    ///
    /// Offsets come from one ascending walk that keeps running compacted offsets for a
    /// compacted source and a compacted output (SDM Vol. 1 §13.4.3), so the cost is a few
    /// operations per component. A standard output whose offsets are not in index order (LWP,
    /// APX) is visited in offset order with per-component lookups instead. Destinations that
    /// overlap (only a hostile layout has them) are written over each other in that order.
    #[inline(always)]
    fn write(&self, w: &mut impl Sink) -> Result<(), ConvertError> {
        let (from, to, in_use) = (self.from, self.to, self.in_use);
        let src = self.src;
        legacy_and_header(src, &self.legacy, self.out_bv, self.out_xcomp, w);
        let (src_mask, dst_mask) = (self.src_xcomp, self.out_xcomp);
        let (src_packed, dst_packed) = (!src_mask.is_empty(), !dst_mask.is_empty());
        // Components adjacent on both sides are copied as one run.
        let mut run = Run::default();
        if !dst_packed && !to.standard_offsets_in_index_order() {
            for &c in to.standard_order().iter().filter(|c| in_use.contains(**c)) {
                let (Some(s), Some(d)) = (component_range(from, src_mask, c), component_range(to, dst_mask, c)) else {
                    return Err(ConvertError::Missing { component: c });
                };
                run.add(w, src, self.len, c, d.start, s.start, d.len())?;
            }
        } else {
            let mut walk = in_use;
            if src_packed {
                walk |= src_mask;
            }
            if dst_packed {
                walk |= dst_mask;
            }
            let (mut s_off, mut d_off) = (EXTENDED_OFFSET, EXTENDED_OFFSET);
            // Tables of the usual masks (everything enabled) spare the running offsets.
            let s_tab = if src_packed { from.compacted_offsets(src_mask) } else { None };
            let d_tab = if dst_packed { to.compacted_offsets(dst_mask) } else { None };
            if s_tab.is_some() && (d_tab.is_some() || !dst_packed) {
                walk = in_use;
            }
            for c in (walk - Xfeatures::LEGACY - Xfeatures::BIT63).iter() {
                // Each side advances over its own components, whether or not the other side
                // has them: a component the output lacks still takes room in a compacted
                // source. (Every component of the walk is supported where it is laid out: the
                // validation bounds the source's XCOMP_BV, the target's mask is within its
                // RFBM, and the components in use are on both sides.)
                let (gf, gt) = (from.geometry_of(c), to.geometry_of(c));
                let s = match s_tab {
                    Some(t) => t[c.index() as usize] as usize,
                    None if src_packed => packed(gf, c, src_mask, &mut s_off),
                    None => gf.offset as usize,
                };
                let d = match d_tab {
                    Some(t) => t[c.index() as usize] as usize,
                    None if dst_packed => packed(gt, c, dst_mask, &mut d_off),
                    None => gt.offset as usize,
                };
                if in_use.contains(c) {
                    run.add(w, src, self.len, c, d, s, gt.size as usize)?;
                }
            }
        }
        run.flush(w, src, self.len)?;
        w.zeros_to(self.len);
        Ok(())
    }
}

/// The output's legacy region and XSTATE_BV for a source image whose components `in_use` (of
/// `src_rfbm`) are in use, for an output with XCOMP_BV `xcomp_bv` (0: standard).
///
/// MXCSR: the standard form loads it whenever RFBM\[1\] or RFBM\[2\] is set, the compacted form
/// only with XSTATE_BV\[1\]; a compacted output carries a non-init MXCSR by marking SSE in use
/// (its XMM bytes are then written as zeros, the init value), as XSAVEC itself does.
/// MXCSR_MASK is ignored by every restore; it is kept where the source's save wrote it. A
/// standard output restored with `dst_rfbm` lacking SSE and AVX never loads MXCSR, so a source
/// MXCSR other than 0x1F80 is refused (`NotEnabled` SSE).
fn legacy_for(
    img: &Image<'_>,
    src_rfbm: Xfeatures,
    in_use: Xfeatures,
    xcomp_bv: Xfeatures,
    dst_rfbm: Xfeatures,
) -> Result<(Legacy, Xfeatures), ConvertError> {
    let mxcsr = effective_mxcsr(img, src_rfbm);
    // A standard output restored with neither SSE nor AVX never loads MXCSR: a source MXCSR
    // other than its init value is state the target cannot hold.
    if xcomp_bv.is_empty() && (dst_rfbm & Xfeatures(0x6)).is_empty() && mxcsr.is_some_and(|m| m != MXCSR_INIT) {
        return Err(ConvertError::NotEnabled { component: Component::SSE, rfbm: dst_rfbm });
    }
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
fn legacy_and_header(src: &[u8], legacy: &Legacy, xstate_bv: Xfeatures, xcomp_bv: Xfeatures, w: &mut impl Sink) {
    if legacy.x87 && legacy.sse {
        // Both in use (the common case): one copy of the state bytes, then MXCSR and
        // MXCSR_MASK as decided and bytes 416..576 (zeros, the header) in one block.
        w.copy(&src[..XMM.end]);
        let mut m = [0u8; 8];
        m[..4].copy_from_slice(&legacy.mxcsr.to_le_bytes());
        m[4..].copy_from_slice(&legacy.mask_field);
        w.overwrite(MXCSR, &m);
        let mut tail = [0u8; EXTENDED_OFFSET - XMM.end];
        let h = HEADER_OFFSET - XMM.end;
        tail[h..h + 8].copy_from_slice(&xstate_bv.bits().to_le_bytes());
        tail[h + 8..h + 16].copy_from_slice(&xcomp_bv.bits().to_le_bytes());
        w.copy(&tail);
        return;
    }
    w.prefix(|out: &mut [u8; EXTENDED_OFFSET]| {
        // Fixed sizes throughout, so the compiler writes all of it inline.
        let (x87, sse) = (legacy.x87.then_some(src), legacy.sse.then_some(src));
        match x87 {
            Some(s) => {
                out[..MXCSR].copy_from_slice(&s[..MXCSR]);
                out[32..XMM.start].copy_from_slice(&s[32..XMM.start]);
            }
            None => {
                out[..MXCSR].fill(0);
                out[..2].copy_from_slice(&FCW_INIT.to_le_bytes());
                out[32..XMM.start].fill(0);
            }
        }
        out[MXCSR..MXCSR + 4].copy_from_slice(&legacy.mxcsr.to_le_bytes());
        out[MXCSR + 4..MXCSR + 8].copy_from_slice(&legacy.mask_field);
        match sse {
            Some(s) => out[XMM].copy_from_slice(&s[XMM]),
            None => out[XMM].fill(0),
        }
        out[XMM.end..HEADER_OFFSET].fill(0);
        out[HEADER_OFFSET..HEADER_OFFSET + 8].copy_from_slice(&xstate_bv.bits().to_le_bytes());
        out[HEADER_OFFSET + 8..HEADER_OFFSET + 16].copy_from_slice(&xcomp_bv.bits().to_le_bytes());
        out[HEADER_OFFSET + 16..].fill(0);
    });
}

/// Pieces to copy, gathered while they are adjacent in both the source and the output:
/// (component of the first piece, destination, source, size).
#[derive(Default)]
struct Run(Option<(Component, usize, usize, usize)>);

impl Run {
    /// Adds a piece: extends the run when it continues it on both sides, else copies the run.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn add(
        &mut self,
        w: &mut impl Sink,
        src: &[u8],
        len: usize,
        c: Component,
        d: usize,
        s: usize,
        size: usize,
    ) -> Result<(), ConvertError> {
        if let Some((_, rd, rs, rn)) = &mut self.0
            && *rd + *rn == d
            && *rs + *rn == s
        {
            *rn += size;
            return Ok(());
        }
        self.flush(w, src, len)?;
        self.0 = Some((c, d, s, size));
        Ok(())
    }

    /// Copies the run gathered so far.
    #[inline(always)]
    fn flush(&mut self, w: &mut impl Sink, src: &[u8], len: usize) -> Result<(), ConvertError> {
        match self.0.take() {
            Some((c, d, s, n)) => put(w, src, len, c, d, s, n),
            None => Ok(()),
        }
    }
}

/// Copies `size` source bytes from `s` to output offset `d` (of an output of `len` bytes),
/// refusing a place outside either image.
#[inline(always)]
fn put(
    w: &mut impl Sink,
    src: &[u8],
    len: usize,
    c: Component,
    d: usize,
    s: usize,
    size: usize,
) -> Result<(), ConvertError> {
    let Some(bytes) = src.get(s..s.saturating_add(size)) else {
        return Err(ConvertError::OutOfBounds { component: c, destination: false });
    };
    if d.saturating_add(size) > len {
        return Err(ConvertError::OutOfBounds { component: c, destination: true });
    }
    w.put(d, bytes);
    Ok(())
}

/// The running compacted offset `off` of `c` (geometry `g`) for XCOMP_BV `mask`, advanced past
/// `c` when `mask` lays it out (SDM Vol. 1 §13.4.3: each align64 component starts on a 64-byte
/// boundary); for a component `mask` lacks, the offset it would have.
#[inline(always)]
fn packed(g: &Geometry, c: Component, mask: Xfeatures, off: &mut usize) -> usize {
    if !mask.contains(c) {
        return *off;
    }
    if g.align64 {
        *off = off.next_multiple_of(64);
    }
    let at = *off;
    *off += g.size as usize;
    at
}

/// A destination written front to back.
trait Sink {
    fn copy(&mut self, bytes: &[u8]);
    fn zeros_to(&mut self, len: usize);
    /// Bytes written so far.
    fn pos(&self) -> usize;
    /// Overwrites written bytes from `at` on (never past what is written).
    fn overwrite(&mut self, at: usize, bytes: &[u8]);
    /// Writes the first 576 bytes (the sink is empty) with `f`.
    fn prefix(&mut self, f: impl FnOnce(&mut [u8; EXTENDED_OFFSET]));
    /// `bytes` at offset `at`: zeros up to it, or over what is written when `at` lies behind
    /// (overlapping destinations of a hostile layout).
    #[inline(always)]
    fn put(&mut self, at: usize, bytes: &[u8]) {
        let pos = self.pos();
        if at >= pos {
            self.zeros_to(at);
            self.copy(bytes);
        } else {
            let head = bytes.len().min(pos - at);
            self.overwrite(at, &bytes[..head]);
            self.copy(&bytes[head..]);
        }
    }
}

impl Sink for AlignedBuilder {
    fn prefix(&mut self, f: impl FnOnce(&mut [u8; EXTENDED_OFFSET])) {
        let mut b = [0u8; EXTENDED_OFFSET];
        f(&mut b);
        self.extend_from_slice(&b);
    }
    fn pos(&self) -> usize {
        self.len()
    }
    fn overwrite(&mut self, at: usize, bytes: &[u8]) {
        self.written_mut()[at..at + bytes.len()].copy_from_slice(bytes);
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
    #[inline(always)]
    fn prefix(&mut self, f: impl FnOnce(&mut [u8; EXTENDED_OFFSET])) {
        // Outputs are at least 576 bytes (`plan`); a shorter buffer writes nothing here.
        if let Some(head) =
            self.buf.get_mut(..EXTENDED_OFFSET).and_then(|h| <&mut [u8; EXTENDED_OFFSET]>::try_from(h).ok())
        {
            f(head);
            self.pos = EXTENDED_OFFSET;
        }
    }
    #[inline(always)]
    fn pos(&self) -> usize {
        self.pos
    }
    fn overwrite(&mut self, at: usize, bytes: &[u8]) {
        self.buf[at..at + bytes.len()].copy_from_slice(bytes);
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

    /// The length of every output: [`output_len`] for the prepared target.
    pub fn output_len(&self) -> usize {
        self.len
    }

    /// Converts `image` into `out[..n]`, returning `n` ([`Converter::output_len`]); the same
    /// result and errors as [`convert_into()`] (a shorter `out` is refused; bytes past `n` are
    /// not touched; on error nothing is written).
    pub fn convert_into(&self, image: &[u8], out: &mut [u8]) -> Result<usize, ConvertError> {
        let general = |out: &mut [u8]| convert_into(image, self.from, self.to, self.rfbm, self.target, out);
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
        let (legacy, out_bv) = legacy_for(&img, src_rfbm, in_use, self.xcomp_out, self.rfbm)?;
        let src = img.bytes();
        // The pieces lie within both images: the source was validated to hold its restore
        // footprint, which covers every component of its RFBM; the output is sized for them.
        if self.pieces.iter().any(|p| (if compacted { p.3 } else { p.2 }) + p.4 > src.len()) {
            return general(out);
        }
        let Some(dst) = out.get_mut(..self.len) else {
            return Err(ConvertError::OutputTooShort { len: out.len(), needed: self.len });
        };
        let mut w = Cursor { buf: dst, pos: 0 };
        legacy_and_header(src, &legacy, out_bv, self.xcomp_out, &mut w);
        for &(c, dst, s_std, s_cmp, size) in &self.pieces {
            if in_use.contains(c) {
                let s = if compacted { s_cmp } else { s_std };
                w.zeros_to(dst);
                w.copy(&src[s..s + size]);
            }
        }
        w.zeros_to(self.len);
        Ok(self.len)
    }
}

#[cfg(test)]
mod tests;
