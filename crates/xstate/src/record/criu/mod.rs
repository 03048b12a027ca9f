//! CRIU checkpoint images (CRIU 4.x, `images/*.proto`; facts in docs/FORMATS.md "CRIU").
//!
//! An image file is a u32 `IMG_COMMON_MAGIC`, a u32 magic naming the image (`CORE_MAGIC`,
//! `CPUINFO_MAGIC`), then entries: each a u32 little-endian length and that many bytes of one
//! protobuf message. A checkpoint holds one `core-<tid>.img` per thread ([`core`]) and one
//! `cpuinfo.img` ([`cpuinfo`]).
//!
//! CRIU keeps no XSAVE layout: the FPU state is a list of per-component arrays
//! (`user_x86_xsave_entry`), copied at dump from the dumping CPU's standard offsets and at
//! restore to the restoring CPU's. So a core image reads into an image laid out for any CPU
//! that has the components it holds, and writing back needs none of the dumping CPU's
//! geometry.

pub mod core;
pub mod cpuinfo;

use alloc::vec::Vec;

use super::protobuf::WireError;
use super::{Detail, Format, RecordError, Rule};

/// First word of every CRIU image but the service files.
pub const IMG_COMMON_MAGIC: u32 = 0x5456_4319;
/// Second word of a `core-*.img`.
pub const CORE_MAGIC: u32 = 0x5505_3847;
/// Second word of `cpuinfo.img`.
pub const CPUINFO_MAGIC: u32 = 0x6140_4013;

/// One entry of an image file: where its payload starts and the payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry<'a> {
    /// Offset of the payload in the file (its u32 length is the 4 bytes before).
    pub offset: usize,
    /// The protobuf message.
    pub payload: &'a [u8],
}

/// The entries of an image file whose second magic is `magic`.
pub fn entries(format: Format, bytes: &[u8], magic: u32) -> Result<Vec<Entry<'_>>, RecordError> {
    use super::le::u32_at;
    let f = format;
    for (off, field, want) in [(0, "IMG_COMMON_MAGIC", IMG_COMMON_MAGIC), (4, "image magic", magic)] {
        match u32_at(bytes, off) {
            None => return Err(RecordError::size(f, Rule::Truncated, bytes.len(), 8, super::SizeBasis::Fixed)),
            Some(v) if v != want => return Err(RecordError::value(f, Rule::Magic, off, field, v.into(), want.into())),
            Some(_) => {}
        }
    }
    let mut out = Vec::new();
    let mut pos = 8;
    while pos < bytes.len() {
        let len = u32_at(bytes, pos)
            .ok_or_else(|| RecordError::new(f, Rule::Truncated, Some(pos), Detail::Text("entry length cut short")))?;
        let start = pos + 4;
        let end = start.checked_add(len as usize).filter(|&e| e <= bytes.len()).ok_or_else(|| {
            RecordError::value(f, Rule::LengthField, pos, "entry length", len.into(), (bytes.len() - start) as u64)
        })?;
        out.push(Entry { offset: start, payload: &bytes[start..end] });
        pos = end;
    }
    Ok(out)
}

/// A wire error at `base` + its offset.
pub(crate) fn wire(format: Format, base: usize, e: WireError) -> RecordError {
    RecordError::new(format, Rule::Wire, Some(base + e.offset), Detail::Text(e.what))
}
