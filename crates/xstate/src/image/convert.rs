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

use core::fmt;

use super::state::{XMM, effective_mxcsr};
use super::validate::{Context, Detail, Profile, Rule, ValidationError, validate};
use super::{Form, Header, Image, ImageBuf, component_range};
use crate::component::Component;
use crate::component::legacy::{COMPACTED, MXCSR, MXCSR_INIT, MXCSR_MASK};
use crate::layout::Layout;
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
pub fn convert(
    image: &[u8],
    from: &Layout,
    to: &Layout,
    rfbm: Xfeatures,
    target: Target,
) -> Result<ImageBuf, ConvertError> {
    check_xcr0(rfbm & from.user_supported()).map_err(ConvertError::BadXcr0)?;
    let form = Header::read(image).map_or(Form::Standard, |h| h.form());
    let mut ctx = Context::new(rfbm & from.user_supported());
    if form == Form::Compacted {
        ctx.xss = rfbm & from.supervisor_supported();
    }
    ctx.mxcsr_mask = u32::MAX;
    validate(image, from, Profile::Hardware, &ctx).map_err(ConvertError::Invalid)?;
    let img = Image::new(image).map_err(|_| {
        ConvertError::Invalid(ValidationError {
            profile: Profile::Hardware,
            rule: Rule::TooShort,
            detail: Detail::Length { len: image.len(), needed: super::MIN_SIZE },
        })
    })?;
    let src_rfbm = ctx.xcr0 | ctx.xss;

    let bv = img.xstate_bv();
    let in_use = match img.form() {
        Form::Standard => bv & src_rfbm,
        Form::Compacted => bv & src_rfbm & img.header().compacted_components(),
    };
    let dst_rfbm = src_rfbm & to.supported();
    for c in in_use.iter() {
        let Some(gt) = to.geometry(c) else { return Err(ConvertError::Missing { component: c }) };
        if !dst_rfbm.contains(c) {
            return Err(ConvertError::Missing { component: c });
        }
        let gf = from.geometry(c).unwrap_or_default();
        if !c.is_legacy() && gf.size != gt.size {
            return Err(ConvertError::SizeDiffers { component: c, from: gf.size, to: gt.size });
        }
        if target == Target::Standard && gt.supervisor {
            return Err(ConvertError::Supervisor { component: c });
        }
    }
    let mxcsr = effective_mxcsr(&img, src_rfbm);
    let mut out_bv = in_use;
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
            // The compacted form loads MXCSR only with XSTATE_BV[1]: carry a non-init MXCSR by
            // marking SSE in use (its XMM bytes are then written as zeros, the init value).
            if let Some(m) = mxcsr.filter(|&m| m != MXCSR_INIT)
                && !out_bv.contains(Component::SSE)
            {
                if !mask.contains(Component::SSE) {
                    return Err(ConvertError::MxcsrNeedsSse { mxcsr: m });
                }
                out_bv = out_bv.with(Component::SSE);
            }
            let len = to.compacted_size(mask).unwrap_or(0) as usize;
            (Xfeatures(COMPACTED | mask.bits()), len)
        }
    };
    let mut out = ImageBuf::init(len, xcomp_bv);
    let src = img.bytes();
    // x87: bytes 0..24 and 32..160 when in use; init values (from ImageBuf::init) otherwise.
    if in_use.contains(Component::X87) {
        out[0..24].copy_from_slice(&src[0..24]);
        out[32..160].copy_from_slice(&src[32..160]);
    }
    if in_use.contains(Component::SSE) {
        out[XMM].copy_from_slice(&src[XMM]);
    }
    out[MXCSR..MXCSR + 4].copy_from_slice(&mxcsr.unwrap_or(MXCSR_INIT).to_le_bytes());
    // MXCSR_MASK is ignored by every restore; keep it where the source's save wrote it.
    let mask_written = match img.form() {
        Form::Standard => !(src_rfbm & Xfeatures(0x6)).is_empty(),
        Form::Compacted => bv.contains(Component::SSE),
    };
    let mask_field = if mask_written { &src[MXCSR_MASK..MXCSR_MASK + 4] } else { &[0u8; 4][..] };
    out[MXCSR_MASK..MXCSR_MASK + 4].copy_from_slice(mask_field);
    for c in in_use.iter().filter(|c| !c.is_legacy()) {
        // Both ranges exist: the source was validated to hold its footprint, and the target
        // was sized for its mask, which contains `c`.
        let (Some(rs), Some(rd)) = (img.component_range(from, c), component_range(to, xcomp_bv, c)) else {
            return Err(ConvertError::Missing { component: c });
        };
        let (Some(s), Some(d)) = (src.get(rs), out.get_mut(rd)) else {
            return Err(ConvertError::Missing { component: c });
        };
        d.copy_from_slice(s);
    }
    out.set_header(&Header { xstate_bv: out_bv, xcomp_bv, ..Header::EMPTY });
    Ok(out)
}

#[cfg(test)]
mod tests;
