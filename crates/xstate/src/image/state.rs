//! The architectural state XRSTOR loads from an image (SDM Vol. 1 §13.8): for each component of
//! RFBM, the image's bytes if its XSTATE_BV bit is set, else the init value; and MXCSR, which
//! the two forms load differently.
//!
//! This is what "the same state" means for conversion and comparison: two images are
//! equivalent for an RFBM when [`State::values`] are equal. XSTATE_BV itself is not state: a
//! set bit with init-valued data loads the same registers as a clear bit (the processor may
//! report either in XINUSE, SDM §13.6).

use alloc::vec::Vec;

use super::{Form, Image};
use crate::component::Component;
use crate::component::legacy::{FCW_INIT, MXCSR_INIT, XMM0};
use crate::layout::Layout;
use crate::xfeatures::Xfeatures;

/// Bytes 160..416: XMM0-15.
const XMM_END: usize = 416;

/// The MXCSR value XRSTOR with RFBM = `rfbm` loads from `img`, or `None` if it leaves MXCSR
/// alone. Standard form: the field, whenever RFBM\[1\] or RFBM\[2\] is set, whatever XSTATE_BV
/// says. Compacted form (and XRSTORS): the field if XSTATE_BV\[1\] = 1, else 0x1F80, when
/// RFBM\[1\] is set (SDM Vol. 1 §13.8.1, §13.8.2; measured on Intel and AMD).
pub fn effective_mxcsr(img: &Image<'_>, rfbm: Xfeatures) -> Option<u32> {
    match img.form() {
        Form::Standard => (!(rfbm & Xfeatures(0x6)).is_empty()).then(|| img.mxcsr()),
        Form::Compacted => rfbm
            .contains(Component::SSE)
            .then(|| if img.xstate_bv().contains(Component::SSE) { img.mxcsr() } else { MXCSR_INIT }),
    }
}

/// One component's contribution to the state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ComponentData<'a> {
    /// Initialised (XSTATE_BV bit clear).
    Init,
    /// Loaded from these bytes (for x87 and SSE the whole legacy extent, 0..160 or 160..416;
    /// MXCSR is separate, see [`effective_mxcsr`]).
    Loaded(&'a [u8]),
}

/// Register values, component by component, as XRSTOR would leave them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Values {
    /// MXCSR if the restore loads it.
    pub mxcsr: Option<u32>,
    /// For each component of RFBM the layout places, its bytes with init values substituted:
    /// x87 is the 160 bytes 0..160 with the MXCSR field (24..32) zeroed, SSE the 256 XMM bytes.
    pub components: Vec<(Component, Vec<u8>)>,
}

/// What XRSTOR with RFBM = `rfbm` loads from an image, assuming the image is valid for it (see
/// [`super::validate()`]).
#[derive(Clone, Copy, Debug)]
pub struct State<'a> {
    img: Image<'a>,
    layout: &'a Layout,
    rfbm: Xfeatures,
}

impl<'a> State<'a> {
    /// The state `img` holds for RFBM = `rfbm` under `layout`.
    pub fn new(img: Image<'a>, layout: &'a Layout, rfbm: Xfeatures) -> State<'a> {
        State { img, layout, rfbm: rfbm & layout.supported() }
    }

    /// RFBM, limited to the components the layout enumerates.
    pub fn rfbm(&self) -> Xfeatures {
        self.rfbm
    }

    /// Components loaded from the image rather than initialised: XSTATE_BV & RFBM (in the
    /// compacted form also within XCOMP_BV, which a valid image guarantees).
    pub fn in_use(&self) -> Xfeatures {
        let bv = self.img.xstate_bv() & self.rfbm;
        match self.img.form() {
            Form::Standard => bv,
            Form::Compacted => bv & self.img.header().compacted_components(),
        }
    }

    /// MXCSR as loaded (see [`effective_mxcsr`]).
    pub fn mxcsr(&self) -> Option<u32> {
        effective_mxcsr(&self.img, self.rfbm)
    }

    /// Component `c`'s data: `None` if `c` is not in RFBM, or its bytes lie outside the image.
    pub fn data(&self, c: Component) -> Option<ComponentData<'a>> {
        if !self.rfbm.contains(c) {
            return None;
        }
        if !self.in_use().contains(c) {
            return Some(ComponentData::Init);
        }
        self.img.component(self.layout, c).map(ComponentData::Loaded)
    }

    /// Every component's register bytes with init values in place of clear components; `None`
    /// if a loaded component lies outside the image.
    pub fn values(&self) -> Option<Values> {
        let mut components = Vec::new();
        for c in self.rfbm.iter() {
            let mut v = match self.data(c)? {
                ComponentData::Loaded(b) => b.to_vec(),
                ComponentData::Init => {
                    let size = self.layout.geometry(c).map_or(0, |g| g.size as usize);
                    let mut v = alloc::vec![0u8; size];
                    if c == Component::X87 {
                        v[..2].copy_from_slice(&FCW_INIT.to_le_bytes());
                    }
                    v
                }
            };
            if c == Component::X87 {
                // MXCSR and MXCSR_MASK belong to SSE and are compared separately.
                if let Some(m) = v.get_mut(24..32) {
                    m.fill(0);
                }
            }
            components.push((c, v));
        }
        Some(Values { mxcsr: self.mxcsr(), components })
    }
}

/// The XMM bytes of the legacy region.
pub(crate) const XMM: core::ops::Range<usize> = XMM0..XMM_END;
