//! Heap buffers whose first byte sits on a 64-byte boundary.
//!
//! XSAVE, XSAVEC, XSAVES and the XRSTORs raise #GP on an operand that is not 64-byte aligned
//! (SDM Vol. 1 §13.7-13.12), so every save area the library hands out is aligned, even though
//! wire images need no alignment. The alignment is obtained without `unsafe`: the storage is
//! over-allocated by 63 bytes and the view starts at the first aligned byte.

use alloc::vec;
use alloc::vec::Vec;
use core::fmt;
use core::ops::{Deref, DerefMut};

/// The alignment XSAVE instructions require.
pub const XSAVE_ALIGN: usize = 64;

/// A zero-initialised, resizable byte buffer whose data starts 64-byte aligned.
pub struct AlignedBuf {
    storage: Vec<u8>,
    offset: usize,
    len: usize,
}

fn aligned_storage(len: usize) -> (Vec<u8>, usize) {
    let storage = vec![0u8; len + XSAVE_ALIGN - 1];
    let offset = storage.as_ptr().align_offset(XSAVE_ALIGN);
    // `align_offset` may in principle decline to answer (usize::MAX); fall back to offset 0
    // and let `is_aligned` report it.
    let offset = if offset < XSAVE_ALIGN { offset } else { 0 };
    (storage, offset)
}

impl AlignedBuf {
    /// A buffer of `len` zero bytes.
    pub fn zeroed(len: usize) -> AlignedBuf {
        let (storage, offset) = aligned_storage(len);
        AlignedBuf { storage, offset, len }
    }

    /// A buffer holding a copy of `bytes`.
    pub fn from_slice(bytes: &[u8]) -> AlignedBuf {
        let mut b = AlignedBuf::zeroed(bytes.len());
        b.copy_from_slice(bytes);
        b
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Heap bytes held: the length, the up-to-63 bytes of alignment slack, and any capacity
    /// kept by an earlier shrink.
    pub fn allocated(&self) -> usize {
        self.storage.capacity()
    }

    /// True if the buffer holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// True if the first byte is 64-byte aligned (always, in practice).
    pub fn is_aligned(&self) -> bool {
        (self.as_ptr() as usize).is_multiple_of(XSAVE_ALIGN)
    }

    /// Changes the length, keeping the first `min(old, new)` bytes; new bytes are zero.
    pub fn resize(&mut self, new_len: usize) {
        if new_len <= self.len {
            self.storage[self.offset + new_len..self.offset + self.len].fill(0);
            self.len = new_len;
            return;
        }
        if self.offset + new_len <= self.storage.len() {
            self.len = new_len;
            return;
        }
        let mut grown = AlignedBuf::zeroed(new_len);
        grown[..self.len].copy_from_slice(self);
        *self = grown;
    }
}

/// Builds an [`AlignedBuf`] front to back, writing each byte once: pieces copied in, runs of
/// zeros, nothing zero-filled first and overwritten later. Converters use it to run at memcpy
/// speed.
pub(crate) struct AlignedBuilder {
    storage: Vec<u8>,
    offset: usize,
}

impl AlignedBuilder {
    /// A builder for a buffer of (at most) `len` bytes.
    pub fn with_capacity(len: usize) -> AlignedBuilder {
        let mut storage: Vec<u8> = Vec::with_capacity(len + XSAVE_ALIGN - 1);
        let offset = storage.as_ptr().align_offset(XSAVE_ALIGN);
        let offset = if offset < XSAVE_ALIGN { offset } else { 0 };
        // The capacity is reserved: later pushes never move the data, so the offset stays right.
        storage.resize(offset, 0);
        AlignedBuilder { storage, offset }
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.storage.len() - self.offset
    }

    /// Appends `bytes`.
    pub fn extend_from_slice(&mut self, bytes: &[u8]) {
        self.storage.extend_from_slice(bytes);
    }

    /// Appends `n` zero bytes.
    pub fn zeros(&mut self, n: usize) {
        self.storage.resize(self.storage.len() + n, 0);
    }

    /// Appends zeros up to length `len` (nothing if already there).
    pub fn zeros_to(&mut self, len: usize) {
        if len > self.len() {
            self.zeros(len - self.len());
        }
    }

    /// The bytes written so far.
    pub fn written_mut(&mut self) -> &mut [u8] {
        &mut self.storage[self.offset..]
    }

    /// The buffer written.
    pub fn finish(self) -> AlignedBuf {
        let len = self.len();
        let mut b = AlignedBuf { storage: self.storage, offset: self.offset, len };
        if !b.is_aligned() {
            // Only if the reservation did not hold (it always does): realign by copying.
            b = AlignedBuf::from_slice(&b);
        }
        b
    }
}

impl Deref for AlignedBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.storage[self.offset..self.offset + self.len]
    }
}

impl DerefMut for AlignedBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.storage[self.offset..self.offset + self.len]
    }
}

impl Clone for AlignedBuf {
    fn clone(&self) -> Self {
        AlignedBuf::from_slice(self)
    }
}

impl PartialEq for AlignedBuf {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl Eq for AlignedBuf {}

impl fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AlignedBuf({} bytes)", self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_and_resizable() {
        for len in [0, 1, 576, 11008] {
            let mut b = AlignedBuf::zeroed(len);
            assert!(b.is_aligned());
            assert_eq!(b.len(), len);
            if len > 0 {
                b[0] = 7;
            }
            b.resize(len + 100);
            assert!(b.is_aligned());
            assert_eq!(b.len(), len + 100);
            if len > 0 {
                assert_eq!(b[0], 7);
            }
            assert!(b[len.max(1)..].iter().all(|&x| x == 0));
            let c = b.clone();
            assert!(c.is_aligned());
            assert_eq!(c, b);
        }
        let mut w = AlignedBuilder::with_capacity(100);
        w.extend_from_slice(&[1, 2, 3]);
        w.zeros(2);
        w.zeros_to(10);
        w.zeros_to(4);
        w.extend_from_slice(&[9]);
        let b = w.finish();
        assert!(b.is_aligned());
        assert_eq!(&b[..], &[1, 2, 3, 0, 0, 0, 0, 0, 0, 0, 9]);
        let mut b = AlignedBuf::from_slice(&[1, 2, 3, 4]);
        b.resize(2);
        b.resize(4);
        assert_eq!(&b[..], &[1, 2, 0, 0]);
    }
}
