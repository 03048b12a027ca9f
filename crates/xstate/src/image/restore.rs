//! XRSTOR into memory: the state an image loads for an RFBM, written in place into another
//! image of either form on either layout, with every component outside RFBM left as it was
//! (SDM Vol. 1 §13.8: XRSTOR does not modify components outside RFBM).
//!
//! This is what a save area needs on both sides: taking an image in ([`restore_into`] from the
//! image into the area) and handing one out (from the area into a fresh image). Unlike
//! [`super::convert()`], it does not validate the source (the caller does, with the rules of its
//! consumer) and it keeps the destination's other components and its XCOMP_BV.
//!
//! For each component of RFBM: if the source has it in use, its bytes are copied and its
//! XSTATE_BV bit set in the destination; otherwise its init value is written and the bit
//! cleared. MXCSR is written when the source's restore would load it ([`effective_mxcsr`]); a
//! compacted destination carries a non-init MXCSR by setting XSTATE_BV\[1\] with init (zero) XMM
//! registers, as XSAVEC does. Nothing is written unless every component fits.

use super::state::{ComponentData, State, XMM, effective_mxcsr};
use super::{ConvertError, Form, Header, Image, component_range};
use crate::component::Component;
use crate::component::legacy::{FCW, FCW_INIT, MXCSR, MXCSR_INIT};
use crate::layout::Layout;
use crate::xfeatures::Xfeatures;

/// Bytes 0..24 and 32..160: x87 (MXCSR and MXCSR_MASK at 24..32 belong to SSE).
const X87_RANGES: [core::ops::Range<usize>; 2] = [0..24, 32..160];

enum Write<'a> {
    Copy(Component, core::ops::Range<usize>, &'a [u8]),
    Init(Component, core::ops::Range<usize>),
}

/// Writes into `dst` (an image under `dst_layout`, its form and XCOMP_BV kept) the state XRSTOR
/// with RFBM = `rfbm` loads from `src` (under `src_layout`); components outside RFBM keep their
/// bytes and XSTATE_BV bits. The source is assumed valid for `rfbm` (see
/// [`super::validate()`]); the destination is left unchanged on error.
pub fn restore_into(
    src: &Image<'_>,
    src_layout: &Layout,
    rfbm: Xfeatures,
    dst: &mut [u8],
    dst_layout: &Layout,
) -> Result<(), ConvertError> {
    let Some(mut header) = Header::read(dst) else {
        return Err(ConvertError::OutOfBounds { component: Component::X87, destination: true });
    };
    let dst_form = header.form();
    let laid_out = header.compacted_components();
    let state = State::new(*src, src_layout, rfbm);
    let rfbm = state.rfbm();
    let in_use = state.in_use();
    let mut bv = header.xstate_bv;
    let mut writes = alloc::vec::Vec::new();
    for c in rfbm.iter() {
        let used = in_use.contains(c);
        let place = if c.is_legacy() {
            let fits = dst_form == Form::Standard || laid_out.contains(c);
            (dst_layout.supported().contains(c) && fits).then(|| component_range(dst_layout, header.xcomp_bv, c))
        } else {
            Some(component_range(dst_layout, header.xcomp_bv, c))
        };
        let range = match place.flatten() {
            Some(r) => r,
            None if !used => {
                // Nothing to write: init state and no place for it. The bit must read 0.
                bv = bv.without(c);
                continue;
            }
            None => {
                let g = dst_layout.geometry(c);
                return Err(match (g, dst_form) {
                    (None, _) => ConvertError::Missing { component: c },
                    (Some(g), Form::Standard) if g.supervisor => ConvertError::Supervisor { component: c },
                    _ => ConvertError::NotInMask { component: c, mask: laid_out },
                });
            }
        };
        if range.end > dst.len() {
            return Err(ConvertError::OutOfBounds { component: c, destination: true });
        }
        if used {
            let Some(ComponentData::Loaded(bytes)) = state.data(c) else {
                return Err(ConvertError::OutOfBounds { component: c, destination: false });
            };
            if bytes.len() != range.len() {
                return Err(ConvertError::SizeDiffers {
                    component: c,
                    from: bytes.len() as u32,
                    to: range.len() as u32,
                });
            }
            writes.push(Write::Copy(c, range, bytes));
            bv = bv.with(c);
        } else {
            writes.push(Write::Init(c, range));
            bv = bv.without(c);
        }
    }
    let mxcsr = effective_mxcsr(src, rfbm);
    if let Some(m) = mxcsr
        && dst_form == Form::Compacted
        && m != MXCSR_INIT
        && !bv.contains(Component::SSE)
    {
        // SSE is then in RFBM and was written as init (zero XMM), or it has no place.
        if !(rfbm.contains(Component::SSE) && laid_out.contains(Component::SSE)) {
            return Err(ConvertError::MxcsrNeedsSse { mxcsr: m });
        }
        bv = bv.with(Component::SSE);
    }
    for w in writes {
        match w {
            Write::Copy(Component::X87, _, bytes) => {
                for r in X87_RANGES {
                    dst[r.clone()].copy_from_slice(&bytes[r]);
                }
            }
            Write::Copy(_, range, bytes) => dst[range].copy_from_slice(bytes),
            Write::Init(Component::X87, _) => {
                for r in X87_RANGES {
                    dst[r].fill(0);
                }
                dst[FCW..FCW + 2].copy_from_slice(&FCW_INIT.to_le_bytes());
            }
            Write::Init(Component::SSE, _) => dst[XMM].fill(0),
            Write::Init(_, range) => dst[range].fill(0),
        }
    }
    if let Some(m) = mxcsr {
        dst[MXCSR..MXCSR + 4].copy_from_slice(&m.to_le_bytes());
    }
    header.xstate_bv = bv;
    header.write(dst);
    Ok(())
}

#[cfg(test)]
mod tests;
