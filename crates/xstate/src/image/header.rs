//! The 64-byte XSAVE header at image offset 512 (SDM Vol. 1 §13.4.2): XSTATE_BV, XCOMP_BV and
//! 48 reserved bytes.

use crate::component::legacy::{COMPACTED, HEADER_OFFSET, HEADER_SIZE, XCOMP_BV, XSTATE_BV};
use crate::xfeatures::Xfeatures;

/// Image offset of the first reserved header byte (header bytes 16..63).
pub const RESERVED_OFFSET: usize = 528;
/// Number of reserved header bytes.
pub const RESERVED_SIZE: usize = 48;

/// The two images formats, chosen by XCOMP_BV\[63\] (SDM Vol. 1 §13.4.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Form {
    /// XCOMP_BV\[63\] = 0: components at their CPUID standard offsets (XSAVE, XSAVEOPT).
    Standard,
    /// XCOMP_BV\[63\] = 1: the components of XCOMP_BV\[62:0\] packed in index order (XSAVEC,
    /// XSAVES). Xen calls it "compressed".
    Compacted,
}

impl Form {
    /// The form an XCOMP_BV value selects.
    pub const fn of(xcomp_bv: Xfeatures) -> Form {
        if xcomp_bv.0 & COMPACTED != 0 { Form::Compacted } else { Form::Standard }
    }

    /// `"standard"` or `"compacted"`.
    pub const fn name(self) -> &'static str {
        match self {
            Form::Standard => "standard",
            Form::Compacted => "compacted",
        }
    }
}

impl core::fmt::Display for Form {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

/// A decoded XSAVE header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Header {
    /// XSTATE_BV: components whose saved data is not their init value.
    pub xstate_bv: Xfeatures,
    /// XCOMP_BV: bit 63 selects the compacted form, bits 62:0 the components laid out.
    pub xcomp_bv: Xfeatures,
    /// Header bytes 16..63 (image bytes 528..575), which every consumer wants zero.
    pub reserved: [u8; RESERVED_SIZE],
}

fn u64_at(bytes: &[u8], off: usize) -> Option<u64> {
    bytes.get(off..off + 8).and_then(|b| b.try_into().ok()).map(u64::from_le_bytes)
}

impl Header {
    /// An all-zero header: a standard image with every component in its init state.
    pub const EMPTY: Header = Header { xstate_bv: Xfeatures(0), xcomp_bv: Xfeatures(0), reserved: [0; RESERVED_SIZE] };

    /// Reads the header of an image; `None` if the image is shorter than 576 bytes.
    pub fn read(image: &[u8]) -> Option<Header> {
        let raw = image.get(HEADER_OFFSET..HEADER_OFFSET + HEADER_SIZE)?;
        let mut reserved = [0u8; RESERVED_SIZE];
        reserved.copy_from_slice(raw.get(16..)?);
        Some(Header {
            xstate_bv: Xfeatures(u64_at(image, XSTATE_BV)?),
            xcomp_bv: Xfeatures(u64_at(image, XCOMP_BV)?),
            reserved,
        })
    }

    /// The header's 64 bytes as they sit at image offset 512.
    pub fn write_raw(&self, raw: &mut [u8; HEADER_SIZE]) {
        raw[..8].copy_from_slice(&self.xstate_bv.bits().to_le_bytes());
        raw[8..16].copy_from_slice(&self.xcomp_bv.bits().to_le_bytes());
        raw[16..].copy_from_slice(&self.reserved);
    }

    /// Writes the header into image bytes 512..575; `false` (and nothing written) if the image
    /// is shorter than 576 bytes.
    pub fn write(&self, image: &mut [u8]) -> bool {
        let Some(raw) = image.get_mut(HEADER_OFFSET..HEADER_OFFSET + HEADER_SIZE) else { return false };
        raw[..8].copy_from_slice(&self.xstate_bv.bits().to_le_bytes());
        raw[8..16].copy_from_slice(&self.xcomp_bv.bits().to_le_bytes());
        raw[16..].copy_from_slice(&self.reserved);
        true
    }

    /// The form XCOMP_BV\[63\] selects.
    pub const fn form(&self) -> Form {
        Form::of(self.xcomp_bv)
    }

    /// XCOMP_BV\[62:0\]: the components a compacted image lays out.
    pub const fn compacted_components(&self) -> Xfeatures {
        Xfeatures(self.xcomp_bv.0 & !COMPACTED)
    }

    /// Image offset and value of the first non-zero reserved byte at or after image offset
    /// `from` (clamped to 528..576).
    pub fn first_reserved_nonzero(&self, from: usize) -> Option<(usize, u8)> {
        let start = from.clamp(RESERVED_OFFSET, RESERVED_OFFSET + RESERVED_SIZE) - RESERVED_OFFSET;
        // Every consumer checks these bytes on every restore: test them as words first.
        let zero = self.reserved.get(start..).is_some_and(|r| {
            let mut words = r.chunks_exact(8);
            words.all(|w| u64::from_le_bytes(w.try_into().unwrap_or([1; 8])) == 0)
                && words.remainder().iter().all(|&b| b == 0)
        });
        if zero {
            return None;
        }
        self.reserved
            .get(start..)?
            .iter()
            .position(|&b| b != 0)
            .map(|i| (RESERVED_OFFSET + start + i, self.reserved[start + i]))
    }

    /// Image offset and value of the first non-zero reserved byte in `range` (image offsets).
    pub fn first_reserved_nonzero_in(&self, range: core::ops::Range<usize>) -> Option<(usize, u8)> {
        self.first_reserved_nonzero(range.start).filter(|(o, _)| *o < range.end)
    }
}

/// Image offset and value of the first non-zero byte of `image` in `range`, a part of the
/// reserved header bytes 528..576 (clamped to them). Every consumer checks these bytes on every
/// restore, so they are read in place, a qword at a time, not from a copied [`Header`].
pub(crate) fn first_reserved_nonzero_in(image: &[u8], range: core::ops::Range<usize>) -> Option<(usize, u8)> {
    let (a, b) = (range.start.max(RESERVED_OFFSET), range.end.min(RESERVED_OFFSET + RESERVED_SIZE));
    let part = image.get(a..b)?;
    let zero = if a % 8 == 0 && b % 8 == 0 {
        part.chunks_exact(8).fold(0u64, |or, c| or | u64::from_le_bytes(c.try_into().unwrap_or([1; 8]))) == 0
    } else {
        part.iter().all(|&x| x == 0)
    };
    if zero {
        return None;
    }
    part.iter().position(|&x| x != 0).map(|i| (a + i, part[i]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_write_round_trip() {
        let mut img = [0u8; 600];
        assert_eq!(Header::read(&img[..575]), None);
        let mut h = Header::EMPTY;
        h.xstate_bv = Xfeatures(0xe7);
        h.xcomp_bv = Xfeatures(COMPACTED | 0xe7);
        h.reserved[40] = 9;
        assert!(h.write(&mut img));
        assert!(!h.write(&mut [0u8; 100]));
        let back = Header::read(&img).unwrap();
        assert_eq!(back, h);
        assert_eq!(back.form(), Form::Compacted);
        assert_eq!(back.compacted_components(), Xfeatures(0xe7));
        assert_eq!(back.first_reserved_nonzero(0), Some((568, 9)));
        assert_eq!(back.first_reserved_nonzero_in(528..536), None);
        assert_eq!(img[568], 9);
    }
}
