//! XSAVE images: a borrowed view over bytes ([`Image`]), an owned 64-byte-aligned buffer
//! ([`ImageBuf`]), the header ([`Header`], [`Form`]), validation as each consumer applies it
//! ([`mod@validate`]), conversion between forms and layouts ([`mod@convert`]), in-place restores
//! ([`restore_into`]), the architectural state an image loads ([`state`]) and register decoding
//! ([`regs`]).
//!
//! An image is the memory operand of XSAVE/XRSTOR: a 512-byte legacy region, a 64-byte header
//! and the extended region (SDM Vol. 1 §13.4). Where a component lives depends on the form
//! (XCOMP_BV\[63\]) and on the CPU's layout, so every geometry question takes a `&Layout`.
//! Nothing here trusts the bytes: every read is bounds-checked and a short image is an error,
//! never a panic.

pub mod convert;
mod header;
pub mod regs;
mod restore;
pub mod state;
pub mod validate;

use core::fmt;
use core::ops::{Deref, DerefMut, Range};

pub use convert::{ConvertError, Converter, Target, convert, convert_between, convert_into, output_len};
pub use header::{Form, Header, RESERVED_OFFSET, RESERVED_SIZE};
pub use restore::restore_into;
pub use validate::{Context, Profile, ValidationDetail, ValidationError, ValidationRule, validate};

use crate::aligned::AlignedBuf;
use crate::component::Component;
use crate::component::legacy::{EXTENDED_OFFSET, MXCSR, MXCSR_MASK};
use crate::layout::Layout;
use crate::xfeatures::Xfeatures;

/// The smallest image: legacy region and header (576 bytes).
pub const MIN_SIZE: usize = EXTENDED_OFFSET;

/// Bytes that cannot be an image at all.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ImageError {
    /// Shorter than the 576 bytes of legacy region and header.
    TooShort {
        /// The length given.
        len: usize,
    },
}

impl fmt::Display for ImageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImageError::TooShort { len } => {
                write!(f, "image is {len} bytes, shorter than the {MIN_SIZE} bytes of legacy region and header")
            }
        }
    }
}

impl core::error::Error for ImageError {}

/// A borrowed XSAVE image: at least 576 bytes, the header decoded once. No other property is
/// assumed; see [`validate()`] for what a consumer would accept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Image<'a> {
    bytes: &'a [u8],
    header: Header,
}

impl<'a> Image<'a> {
    /// A view over `bytes`; fails only if they cannot hold the legacy region and header.
    pub fn new(bytes: &'a [u8]) -> Result<Image<'a>, ImageError> {
        let header = Header::read(bytes).ok_or(ImageError::TooShort { len: bytes.len() })?;
        Ok(Image { bytes, header })
    }

    /// All the bytes.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Always false: an image has at least 576 bytes.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Standard or compacted, from XCOMP_BV\[63\].
    pub fn form(&self) -> Form {
        self.header.form()
    }

    /// XSTATE_BV.
    pub fn xstate_bv(&self) -> Xfeatures {
        self.header.xstate_bv
    }

    /// XCOMP_BV.
    pub fn xcomp_bv(&self) -> Xfeatures {
        self.header.xcomp_bv
    }

    /// The MXCSR field (bytes 24..27). Whether XRSTOR loads it depends on the form; see
    /// [`state::effective_mxcsr`].
    pub fn mxcsr(&self) -> u32 {
        u32_at(self.bytes, MXCSR)
    }

    /// The MXCSR_MASK field (bytes 28..31), written by saves and ignored by every restore.
    pub fn mxcsr_mask(&self) -> u32 {
        u32_at(self.bytes, MXCSR_MASK)
    }

    /// Byte range of component `c` in this image under `layout`: for the standard form its
    /// CPUID standard offset, for the compacted form its offset computed from XCOMP_BV. x87 and
    /// SSE give their legacy extents (see [`Component::legacy_ranges`] for the exact bytes).
    /// `None` if the component has no place in this image (not enumerated, supervisor in a
    /// standard image, absent from XCOMP_BV) or the range lies beyond the image's end.
    pub fn component_range(&self, layout: &Layout, c: Component) -> Option<Range<usize>> {
        let r = component_range(layout, self.header.xcomp_bv, c)?;
        (r.end <= self.bytes.len()).then_some(r)
    }

    /// The bytes of component `c` (see [`Image::component_range`]).
    pub fn component(&self, layout: &Layout, c: Component) -> Option<&'a [u8]> {
        self.component_range(layout, c).and_then(|r| self.bytes.get(r))
    }

    /// How many bytes XRSTOR with RFBM = `rfbm` may read from this image (SDM Vol. 1 §13.8,
    /// measured in docs/HARDWARE.md): standard_size(RFBM) for the standard form; for the
    /// compacted form compacted_size(XCOMP_BV & RFBM), the Intel rule (AMD Zen 4 stops after the
    /// last component it loads, which is never more). `None` if the masks hold bits the layout
    /// does not enumerate.
    pub fn restore_footprint(&self, layout: &Layout, rfbm: Xfeatures) -> Option<usize> {
        match self.form() {
            Form::Standard => layout.standard_size(rfbm & layout.user_supported()).map(|s| (s as usize).max(MIN_SIZE)),
            Form::Compacted => layout.compacted_size(self.header.compacted_components() & rfbm).map(|s| s as usize),
        }
    }
}

/// Byte range of `c` in an image whose XCOMP_BV is `xcomp_bv` (see [`Image::component_range`];
/// no length check).
pub fn component_range(layout: &Layout, xcomp_bv: Xfeatures, c: Component) -> Option<Range<usize>> {
    if c.is_legacy() {
        let g = layout.geometry(c)?;
        return Some(g.offset as usize..(g.offset + g.size) as usize);
    }
    let g = layout.geometry(c)?;
    let start = match Form::of(xcomp_bv) {
        Form::Standard => {
            if g.supervisor {
                return None;
            }
            g.offset
        }
        Form::Compacted => layout.compacted_offset(c, xcomp_bv)?,
    };
    Some(start as usize..start as usize + g.size as usize)
}

pub(crate) fn u32_at(bytes: &[u8], off: usize) -> u32 {
    bytes.get(off..off + 4).and_then(|b| b.try_into().ok()).map_or(0, u32::from_le_bytes)
}

/// An owned image in a 64-byte-aligned buffer, so it can be the operand of XSAVE/XRSTOR as is.
#[derive(Clone, PartialEq, Eq)]
pub struct ImageBuf {
    buf: AlignedBuf,
}

impl fmt::Debug for ImageBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let h = Header::read(&self.buf);
        write!(f, "ImageBuf({} bytes, {:?})", self.buf.len(), h)
    }
}

impl ImageBuf {
    /// A copy of `bytes`; fails if they cannot hold the legacy region and header.
    pub fn from_bytes(bytes: &[u8]) -> Result<ImageBuf, ImageError> {
        Image::new(bytes)?;
        Ok(ImageBuf { buf: AlignedBuf::from_slice(bytes) })
    }

    /// An image of `len` bytes (at least 576) in which every component is in its init state:
    /// all zero except FCW = 0x037F and MXCSR = 0x1F80, so that consumers that ignore
    /// XSTATE_BV read init values too (SDM Vol. 1 §13.6). XCOMP_BV is `xcomp_bv`.
    pub fn init(len: usize, xcomp_bv: Xfeatures) -> ImageBuf {
        use crate::component::legacy::{FCW, FCW_INIT, MXCSR_INIT};
        let mut buf = AlignedBuf::zeroed(len.max(MIN_SIZE));
        buf[FCW..FCW + 2].copy_from_slice(&FCW_INIT.to_le_bytes());
        buf[MXCSR..MXCSR + 4].copy_from_slice(&MXCSR_INIT.to_le_bytes());
        Header { xcomp_bv, ..Header::EMPTY }.write(&mut buf);
        ImageBuf { buf }
    }

    /// Wraps an aligned buffer the caller filled; it must hold at least 576 bytes (shorter ones
    /// are zero-extended to 576).
    pub(crate) fn from_aligned(mut buf: AlignedBuf) -> ImageBuf {
        if buf.len() < MIN_SIZE {
            buf.resize(MIN_SIZE);
        }
        ImageBuf { buf }
    }

    /// The borrowed view.
    pub fn image(&self) -> Image<'_> {
        Image::new(&self.buf).expect("an ImageBuf holds at least 576 bytes")
    }

    /// The header.
    pub fn header(&self) -> Header {
        Header::read(&self.buf).expect("an ImageBuf holds at least 576 bytes")
    }

    /// Replaces the header.
    pub fn set_header(&mut self, h: &Header) {
        h.write(&mut self.buf);
    }

    /// Sets XSTATE_BV.
    pub fn set_xstate_bv(&mut self, v: Xfeatures) {
        self.buf[512..520].copy_from_slice(&v.bits().to_le_bytes());
    }

    /// Sets XCOMP_BV.
    pub fn set_xcomp_bv(&mut self, v: Xfeatures) {
        self.buf[520..528].copy_from_slice(&v.bits().to_le_bytes());
    }

    /// Changes the length (at least 576), keeping the bytes that remain; new bytes are zero.
    pub fn resize(&mut self, len: usize) {
        self.buf.resize(len.max(MIN_SIZE));
    }

    /// The aligned buffer.
    pub fn into_inner(self) -> AlignedBuf {
        self.buf
    }
}

impl Deref for ImageBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.buf
    }
}

impl DerefMut for ImageBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.buf
    }
}

impl AsRef<[u8]> for ImageBuf {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

#[cfg(test)]
mod tests;
