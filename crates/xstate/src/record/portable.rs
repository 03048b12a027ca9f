//! xstate's portable record: versioned, self-describing, carrying the saving CPU's layout so
//! the state can be read and re-laid-out on any CPU (docs/FORMATS.md has the byte layout).
//!
//! ```text
//! 0    8  magic "XSTATEPR"
//! 8    2  version (1)
//! 10   2  header_size (64; readers skip extra header bytes of later minor revisions)
//! 12   4  flags (0; a reader refuses bits it does not know)
//! 16   8  xcr0
//! 24   8  xss
//! 32   8  xstates_accum (accumulated XCR0 | XSS; what the image is sized for)
//! 40   4  xsave_features (CPUID 0xD.1 EAX of the saving CPU)
//! 44   4  mxcsr_mask (the saving CPU's; 0 = unknown)
//! 48   2  n (number of component descriptors)
//! 50   2  reserved (0)
//! 52   4  image_size
//! 56   4  reserved (0)
//! 60   4  CRC-32 (IEEE) of the whole record with these 4 bytes zero
//! 64   16 x n  descriptors {u8 index, u8 flags (b0 supervisor, b1 align64, b2 xfd),
//!              u16 0, u32 size, u32 standard offset (0 for supervisor), u32 0}, ascending
//! ...  image_size bytes: the XSAVE image, standard or compacted (XCOMP_BV[63])
//! ```

use alloc::vec::Vec;

use super::fc_blob::{AccumAt, accum_image_size};
use super::le::{u16_at, u32_at, u64_at};
use super::{Detail, Format, RecordError, Rule, SizeBasis};
use crate::component::Component;
use crate::cpuid::XsaveFeatures;
use crate::image::validate::{Context, Profile};
use crate::image::{Form, Header, MIN_SIZE, validate};
use crate::layout::{Geometry, Layout};
use crate::xcr0::{check_xcr0, check_xss};
use crate::xfeatures::Xfeatures;

/// The magic at offset 0.
pub const MAGIC: [u8; 8] = *b"XSTATEPR";
/// The version this reader writes and understands.
pub const VERSION: u16 = 1;
/// Size of the version-1 header.
pub const HEADER_SIZE: usize = 64;
/// Size of one component descriptor.
pub const DESCRIPTOR_SIZE: usize = 16;
const CRC_OFFSET: usize = 60;

const CRC_TABLE: [u32; 256] = {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 { 0xEDB8_8320 ^ (c >> 1) } else { c >> 1 };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
};

/// CRC-32 (IEEE 802.3, as zlib's `crc32`) of `parts` in sequence.
pub(crate) fn crc32(parts: &[&[u8]]) -> u32 {
    let mut c = !0u32;
    for p in parts {
        for &b in *p {
            c = CRC_TABLE[((c ^ b as u32) & 0xFF) as usize] ^ (c >> 8);
        }
    }
    !c
}

/// A portable record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Portable<'a> {
    /// XCR0 at save time.
    pub xcr0: Xfeatures,
    /// IA32_XSS at save time.
    pub xss: Xfeatures,
    /// The accumulated XCR0 | XSS the image is sized for.
    pub xstates_accum: Xfeatures,
    /// The saving CPU's MXCSR mask (0 = unknown).
    pub mxcsr_mask: u32,
    /// The saving CPU's layout, rebuilt from the descriptors.
    pub layout: Layout,
    /// The image in that layout.
    pub image: &'a [u8],
}

fn descriptor_flags(g: &Geometry) -> u8 {
    u8::from(g.supervisor) | u8::from(g.align64) << 1 | u8::from(g.xfd) << 2
}

impl<'a> Portable<'a> {
    /// Parses and checks a record: magic, version, flags, CRC, descriptors (a layout
    /// [`Layout::from_components`] accepts), masks (XCR0 and XSS valid for that layout, within
    /// the accumulated states), the exact image size (standard_size(accumulated user states)
    /// for a standard image, which holds no supervisor state; compacted_size(XCOMP_BV) with
    /// XCOMP_BV\[62:0\] within the accumulated states for a compacted one), and the image as
    /// XRSTOR(S) with RFBM = the accumulated states would take it on the saving CPU.
    pub fn parse(bytes: &'a [u8]) -> Result<Portable<'a>, RecordError> {
        let f = Format::Portable;
        let len = bytes.len();
        if len < HEADER_SIZE {
            return Err(RecordError::size(f, Rule::Truncated, len, HEADER_SIZE, SizeBasis::Fixed));
        }
        if bytes[..8] != MAGIC {
            let found = u64_at(bytes, 0).unwrap_or(0);
            return Err(RecordError::value(f, Rule::Magic, 0, "magic", found, u64::from_le_bytes(MAGIC)));
        }
        let version = u16_at(bytes, 8).unwrap_or(0);
        if version != VERSION {
            return Err(RecordError::value(f, Rule::Version, 8, "version", version.into(), VERSION.into()));
        }
        let header_size = u16_at(bytes, 10).unwrap_or(0) as usize;
        if header_size < HEADER_SIZE {
            return Err(RecordError::value(
                f,
                Rule::LengthField,
                10,
                "header_size",
                header_size as u64,
                HEADER_SIZE as u64,
            ));
        }
        let flags = u32_at(bytes, 12).unwrap_or(0);
        if flags != 0 {
            return Err(RecordError::value(f, Rule::Reserved, 12, "flags", flags.into(), 0));
        }
        for (off, width) in [(50usize, 2usize), (56, 4)] {
            if bytes[off..off + width].iter().any(|&b| b != 0) {
                return Err(RecordError::value(
                    f,
                    Rule::Reserved,
                    off,
                    "reserved",
                    u32_at(bytes, off).unwrap_or(0).into(),
                    0,
                ));
            }
        }
        let n = u16_at(bytes, 48).unwrap_or(0) as usize;
        let image_size = u32_at(bytes, 52).unwrap_or(0) as usize;
        let image_at = header_size + DESCRIPTOR_SIZE * n;
        // At most 64 KiB + 1 MiB + 4 GiB: saturating keeps 32-bit targets from overflowing.
        let total = image_at.saturating_add(image_size);
        if len != total {
            let rule = if len < total { Rule::Truncated } else { Rule::SizeMismatch };
            return Err(RecordError::size(f, rule, len, total, SizeBasis::Field("header_size + 16 * n + image_size")));
        }
        let stored = u32_at(bytes, CRC_OFFSET).unwrap_or(0);
        let crc = crc32(&[&bytes[..CRC_OFFSET], &[0; 4], &bytes[CRC_OFFSET + 4..]]);
        if stored != crc {
            return Err(RecordError::value(f, Rule::Checksum, CRC_OFFSET, "crc32", stored.into(), crc.into()));
        }
        let xcr0 = Xfeatures(u64_at(bytes, 16).unwrap_or(0));
        let xss = Xfeatures(u64_at(bytes, 24).unwrap_or(0));
        let accum = Xfeatures(u64_at(bytes, 32).unwrap_or(0));
        let features = XsaveFeatures(u32_at(bytes, 40).unwrap_or(0));
        let mxcsr_mask = u32_at(bytes, 44).unwrap_or(0);
        let mut comps = Vec::with_capacity(n + 1);
        comps.push((Component::SSE, Geometry::default()));
        let mut last = 1u8;
        for i in 0..n {
            let d = header_size + DESCRIPTOR_SIZE * i;
            let index = bytes[d];
            let fl = bytes[d + 1];
            let c = Component::new(index).filter(|_| index > last && index <= 62);
            let Some(c) = c else {
                return Err(RecordError::value(
                    f,
                    Rule::LayoutDescriptor,
                    d,
                    "component index (ascending, 2..=62)",
                    index.into(),
                    (last + 1).into(),
                ));
            };
            if fl & !7 != 0 {
                return Err(RecordError::value(
                    f,
                    Rule::Reserved,
                    d + 1,
                    "descriptor flags",
                    fl.into(),
                    (fl & 7).into(),
                ));
            }
            if u16_at(bytes, d + 2) != Some(0) || u32_at(bytes, d + 12) != Some(0) {
                return Err(RecordError::new(f, Rule::Reserved, Some(d), Detail::Text("descriptor reserved bytes")));
            }
            let g = Geometry {
                size: u32_at(bytes, d + 4).unwrap_or(0),
                offset: u32_at(bytes, d + 8).unwrap_or(0),
                supervisor: fl & 1 != 0,
                align64: fl & 2 != 0,
                xfd: fl & 4 != 0,
            };
            comps.push((c, g));
            last = index;
        }
        let layout = Layout::from_components(features, comps)
            .map_err(|e| RecordError::new(f, Rule::LayoutDescriptor, Some(header_size), Detail::Layout(e)))?;
        let (user, sup) = (layout.user_supported(), layout.supervisor_supported());
        for (off, field, v) in [(16, "xcr0", xcr0), (24, "xss", xss), (32, "xstates_accum", accum)] {
            let unknown = v - layout.supported();
            if !unknown.is_empty() {
                return Err(RecordError::bits(f, Rule::UnknownComponent, off, field, v, unknown));
            }
        }
        let m = check_xcr0(xcr0)
            .and_then(|()| check_xcr0(accum & user))
            .and_then(|()| check_xss(xss, user, sup))
            .and_then(|()| check_xss(accum & sup, user, sup));
        if let Err(m) = m {
            return Err(RecordError::new(f, Rule::InvalidMask, Some(16), Detail::Mask(m)));
        }
        let outside = (xcr0 | xss) - accum;
        if !outside.is_empty() {
            return Err(RecordError::bits(f, Rule::ActiveOutsideAccum, 32, "xstates_accum", accum, outside));
        }
        let image = &bytes[image_at..];
        let Some(h) = Header::read(image) else {
            return Err(RecordError::size(f, Rule::Truncated, image.len(), MIN_SIZE, SizeBasis::Field("image_size")));
        };
        let at = AccumAt { accum_field: 32, image: image_at, size_fixed: 0 };
        let (expected, basis) = accum_image_size(f, &h, accum, &layout, at)?;
        if image.len() != expected.max(MIN_SIZE) {
            return Err(RecordError::size(f, Rule::SizeMismatch, image.len(), expected.max(MIN_SIZE), basis));
        }
        let mut ctx = Context::new(accum & user);
        if h.form() == Form::Compacted {
            ctx.xss = accum & sup;
        }
        ctx.mxcsr_mask = if mxcsr_mask == 0 { u32::MAX } else { mxcsr_mask };
        validate(image, &layout, Profile::Hardware, &ctx).map_err(|e| RecordError::image(f, image_at, e))?;
        Ok(Portable { xcr0, xss, xstates_accum: accum, mxcsr_mask, layout, image })
    }

    /// The record's bytes: descriptors for every component of the accumulated states (and of
    /// XCOMP_BV) above SSE, then the image, CRC filled in.
    pub fn to_bytes(&self) -> Vec<u8> {
        let xcomp = Header::read(self.image).map_or(Xfeatures(0), |h| h.compacted_components());
        let described: Vec<(Component, Geometry)> = ((self.xstates_accum | xcomp) & self.layout.supported())
            .iter()
            .filter(|c| !c.is_legacy())
            .filter_map(|c| Some((c, self.layout.geometry(c)?)))
            .collect();
        let mut out = Vec::with_capacity(HEADER_SIZE + DESCRIPTOR_SIZE * described.len() + self.image.len());
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&(HEADER_SIZE as u16).to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&self.xcr0.bits().to_le_bytes());
        out.extend_from_slice(&self.xss.bits().to_le_bytes());
        out.extend_from_slice(&self.xstates_accum.bits().to_le_bytes());
        out.extend_from_slice(&self.layout.features().0.to_le_bytes());
        out.extend_from_slice(&self.mxcsr_mask.to_le_bytes());
        out.extend_from_slice(&(described.len() as u16).to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(&(self.image.len() as u32).to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        for (c, g) in &described {
            out.push(c.index());
            out.push(descriptor_flags(g));
            out.extend_from_slice(&0u16.to_le_bytes());
            out.extend_from_slice(&g.size.to_le_bytes());
            out.extend_from_slice(&(if g.supervisor { 0 } else { g.offset }).to_le_bytes());
            out.extend_from_slice(&0u32.to_le_bytes());
        }
        out.extend_from_slice(self.image);
        let crc = crc32(&[&out]);
        out[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_le_bytes());
        out
    }
}
