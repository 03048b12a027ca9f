//! Random valid extended states for hardware tests: standard-format images that XRSTOR (RFBM =
//! XCR0) loads without a fault, with a random subset of components in use and contents that
//! exercise the corners conversions must get right (MXCSR with zero XMM registers, in-use
//! components holding init values, random x87 tags and pointers).

use xstate::component::legacy::{FCW, FDP, FIP, FOP, FSW, FTW, MXCSR, XSTATE_BV};
use xstate::{Component, Layout, Xfeatures};

use crate::selfcheck::{Rng, crafted_image};

/// Generates random states for one layout and XCR0.
#[derive(Clone, Debug)]
pub struct StateGen<'a> {
    layout: &'a Layout,
    xcr0: Xfeatures,
    mxcsr_mask: u32,
}

impl<'a> StateGen<'a> {
    /// A generator for `layout` and `xcr0`, with MXCSR values within `mxcsr_mask` (the running
    /// CPU's, from an XSAVE'd MXCSR_MASK field).
    pub fn new(layout: &'a Layout, xcr0: Xfeatures, mxcsr_mask: u32) -> StateGen<'a> {
        StateGen { layout, xcr0: xcr0 & layout.user_supported(), mxcsr_mask }
    }

    /// A random subset of XCR0: each component in use with probability 1/2 (x87 and SSE 3/4).
    pub fn random_mask(&self, rng: &mut Rng) -> Xfeatures {
        let r = rng.next_u64();
        let mut m = Xfeatures::EMPTY;
        for (k, c) in self.xcr0.iter().enumerate() {
            let p = if c.is_legacy() { r >> (2 * k) & 3 != 0 } else { r >> (2 * k) & 1 != 0 };
            if p {
                m = m.with(c);
            }
        }
        m
    }

    /// A standard image of standard_size(XCR0) bytes with the components of a random subset of
    /// XCR0 in use.
    pub fn standard(&self, rng: &mut Rng) -> Vec<u8> {
        let mask = self.random_mask(rng);
        self.standard_with(mask, rng)
    }

    /// A standard image with exactly `mask` (within XCR0) in use.
    pub fn standard_with(&self, mask: Xfeatures, rng: &mut Rng) -> Vec<u8> {
        let mask = mask & self.xcr0;
        let mut img = crafted_image(self.layout, self.xcr0, rng);
        let size = self.layout.standard_size(self.xcr0).unwrap_or(576).max(576) as usize;
        img.resize(size, 0);
        let r = rng.next_u64();
        // x87: precision/rounding control and exception masks vary; TOP, tags, FOP and the
        // pointers are random (FIP canonical, as XRSTOR makes it anyway).
        let fcw: u16 = 0x0040 | (r as u16 & 0x0F3F);
        img[FCW..FCW + 2].copy_from_slice(&fcw.to_le_bytes());
        let fsw: u16 = (r >> 16) as u16 & 0x3800;
        img[FSW..FSW + 2].copy_from_slice(&fsw.to_le_bytes());
        img[FTW] = (r >> 32) as u8;
        img[FOP..FOP + 2].copy_from_slice(&((r >> 40) as u16 & 0x7FF).to_le_bytes());
        let fip = rng.next_u64() & 0x0000_7FFF_FFFF_FFFF;
        img[FIP..FIP + 8].copy_from_slice(&fip.to_le_bytes());
        let fdp = rng.next_u64() & 0x0000_7FFF_FFFF_FFFF;
        img[FDP..FDP + 8].copy_from_slice(&fdp.to_le_bytes());
        // MXCSR: the init value, or random flags, masks, rounding, FZ/DAZ within the mask.
        let mxcsr = match rng.next_u64() % 3 {
            0 => 0x1F80,
            _ => rng.next_u64() as u32 & self.mxcsr_mask & 0xFFFF,
        };
        img[MXCSR..MXCSR + 4].copy_from_slice(&mxcsr.to_le_bytes());
        // Sometimes zero XMM (SSE then looks init while MXCSR does not).
        if rng.next_u64().is_multiple_of(4) {
            img[160..416].fill(0);
        }
        // Sometimes an in-use component holds its init value (zeros).
        for c in mask.iter().filter(|c| !c.is_legacy()) {
            if rng.next_u64().is_multiple_of(8)
                && c != Component::TILECFG
                && let Some(r) = self.layout.standard_range(c)
            {
                img[r].fill(0);
            }
        }
        // Components not in use: XRSTOR initialises them, so their bytes are free; put garbage
        // there, and in the software area 464..511, to catch converters that copy them.
        for c in (self.xcr0 - mask).iter().filter(|c| !c.is_legacy()) {
            if let Some(r) = self.layout.standard_range(c) {
                rng.fill(&mut img[r]);
            }
        }
        rng.fill(&mut img[416..512]);
        img[XSTATE_BV..XSTATE_BV + 8].copy_from_slice(&mask.bits().to_le_bytes());
        img
    }
}
