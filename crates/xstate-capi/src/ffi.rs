//! Raw pointers from C into Rust references, each check in one place: NULL is refused with
//! `-EINVAL` naming the argument, lengths come with their pointers, handles are the boxes this
//! library handed out.
//!
//! Every function here is `unsafe` for one reason: a non-NULL pointer must be what the C API
//! documents for that argument (a handle from this library not yet freed, `len` readable bytes,
//! a writable object). NULL is the one bad value it can detect.

use core::ffi::{c_char, c_int};
use std::ffi::CStr;

use crate::error::{Failure, Result};

/// `len` values at `p`; NULL is allowed only with `len` = 0.
///
/// # Safety
/// A non-NULL `p` points to `len` readable, initialised `T`s (aligned for `T`) that stay
/// unchanged during the call.
pub(crate) unsafe fn slice<'a, T>(p: *const T, len: usize, name: &str) -> Result<&'a [T]> {
    if p.is_null() {
        return if len == 0 { Ok(&[]) } else { Err(Failure::arg(format_args!("`{name}` is NULL"))) };
    }
    // No object is longer than PTRDIFF_MAX bytes (nor may a Rust slice be): such a length is
    // a caller's error, refused before anything is read.
    if len.checked_mul(core::mem::size_of::<T>()).is_none_or(|n| n > isize::MAX as usize) {
        return Err(Failure::arg(format_args!("`{name}`: a length of {len} is past PTRDIFF_MAX")));
    }
    // SAFETY: non-NULL, and by this function's contract `len` readable values.
    Ok(unsafe { core::slice::from_raw_parts(p, len) })
}

/// `len` bytes at `p`; NULL is allowed only with `len` = 0.
///
/// # Safety
/// As [`slice`].
pub(crate) unsafe fn bytes<'a>(p: *const u8, len: usize, name: &str) -> Result<&'a [u8]> {
    // SAFETY: this function's contract is `slice`'s.
    unsafe { slice(p, len, name) }
}

/// The object behind a `const` pointer argument.
///
/// # Safety
/// A non-NULL `p` points to a valid `T` (for handles: one this library made and has not freed)
/// that no other thread mutates during the call.
pub(crate) unsafe fn get<'a, T>(p: *const T, name: &str) -> Result<&'a T> {
    // SAFETY: by this function's contract a non-NULL `p` points to a valid `T`.
    unsafe { p.as_ref() }.ok_or_else(|| Failure::arg(format_args!("`{name}` is NULL")))
}

/// The object behind a mutable pointer argument (a handle to change, or an output).
///
/// # Safety
/// A non-NULL `p` points to a valid, writable `T` that nothing else uses during the call.
pub(crate) unsafe fn get_mut<'a, T>(p: *mut T, name: &str) -> Result<&'a mut T> {
    // SAFETY: by this function's contract a non-NULL `p` is valid, writable and not aliased.
    unsafe { p.as_mut() }.ok_or_else(|| Failure::arg(format_args!("`{name}` is NULL")))
}

/// A NUL-terminated UTF-8 string argument.
///
/// # Safety
/// A non-NULL `p` points to a NUL-terminated string.
pub(crate) unsafe fn string<'a>(p: *const c_char, name: &str) -> Result<&'a str> {
    if p.is_null() {
        return Err(Failure::arg(format_args!("`{name}` is NULL")));
    }
    // SAFETY: non-NULL and, by this function's contract, NUL-terminated.
    let s = unsafe { CStr::from_ptr(p) };
    s.to_str().map_err(|_| Failure::arg(format_args!("`{name}` is not UTF-8")))
}

/// Stores a new handle in `*out`. `out` was checked before any work was done ([`out_slot`]).
pub(crate) fn give<T>(out: &mut *mut T, value: T) {
    *out = Box::into_raw(Box::new(value));
}

/// The `T **out` of a constructor, set to NULL first so that a failed call leaves NULL.
///
/// # Safety
/// A non-NULL `out` points to a writable `T *`.
pub(crate) unsafe fn out_slot<'a, T>(out: *mut *mut T) -> Result<&'a mut *mut T> {
    // SAFETY: by this function's contract.
    let slot = unsafe { get_mut(out, "out") }?;
    *slot = core::ptr::null_mut();
    Ok(slot)
}

/// Frees a handle made by [`give`]; NULL is a no-op.
///
/// # Safety
/// A non-NULL `p` is a handle this library made, not yet freed, used by no other thread.
pub(crate) unsafe fn free<T>(p: *mut T) {
    if !p.is_null() {
        // SAFETY: by this function's contract `p` came from `Box::into_raw` and is freed once.
        drop(unsafe { Box::from_raw(p) });
    }
}

/// The caller-buffer protocol of every call that produces bytes: `*out_len` holds the buffer's
/// size; with `out` NULL (a size query) only `*out_len` is set to the size needed; a buffer too
/// small is refused with `-ERANGE`, `*out_len` set to the size needed and the buffer untouched;
/// otherwise the bytes are copied and `*out_len` is their length.
///
/// # Safety
/// `out_len` points to a writable `size_t`; a non-NULL `out` to `*out_len` writable bytes.
pub(crate) unsafe fn put_bytes(out: *mut u8, out_len: *mut usize, data: &[u8]) -> Result<()> {
    // SAFETY: by this function's contract.
    let len = unsafe { get_mut(out_len, "out_len") }?;
    let room = *len;
    *len = data.len();
    if out.is_null() {
        return Ok(());
    }
    if room < data.len() {
        return Err(Failure::new(
            libc::ERANGE,
            "the output buffer must hold the whole result",
            format_args!("the output needs {} bytes, the buffer holds {room}", data.len()),
        ));
    }
    // SAFETY: `out` has `room` >= `data.len()` writable bytes (this function's contract), and
    // cannot overlap `data`, which this library allocated.
    unsafe { core::ptr::copy_nonoverlapping(data.as_ptr(), out, data.len()) };
    Ok(())
}

/// Checks the `*out_len` argument before a long computation, so a NULL is refused first.
///
/// # Safety
/// A non-NULL `out_len` points to a readable `size_t`.
pub(crate) unsafe fn check_len(out_len: *mut usize) -> Result<()> {
    // SAFETY: by this function's contract.
    unsafe { get(out_len, "out_len") }.map(|_| ())
}

/// Writes a string into a caller buffer of `len` bytes, NUL-terminated: its length, or
/// `-ERANGE` (with an empty string written when `len` > 0) if it does not fit.
///
/// # Safety
/// A non-NULL `buf` points to `len` writable bytes.
pub(crate) unsafe fn put_c_string(buf: *mut c_char, len: usize, s: &str) -> c_int {
    if buf.is_null() {
        return if len == 0 { s.len() as c_int } else { -libc::EINVAL };
    }
    if len > isize::MAX as usize {
        return -libc::EINVAL;
    }
    // SAFETY: `buf` has `len` writable bytes (this function's contract).
    let dst = unsafe { core::slice::from_raw_parts_mut(buf, len) };
    match dst.split_first_mut() {
        None => -libc::ERANGE,
        Some((first, _)) if s.len() >= len => {
            *first = 0;
            -libc::ERANGE
        }
        Some(_) => {
            for (d, &b) in dst.iter_mut().zip(s.as_bytes()) {
                *d = b as c_char;
            }
            dst[s.len()] = 0;
            s.len() as c_int
        }
    }
}

/// A query of a handle that cannot fail: `f` of the handle, or `fallback` for NULL (and for a
/// panic, which [`crate::error::guard_value`] catches).
///
/// # Safety
/// A non-NULL `p` is a live handle that no other thread changes during the call.
pub(crate) unsafe fn query<H, T: Copy>(p: *const H, fallback: T, f: impl FnOnce(&H) -> T) -> T {
    crate::error::guard_value(fallback, || {
        // SAFETY: by this function's contract.
        match unsafe { p.as_ref() } {
            Some(h) => f(h),
            None => fallback,
        }
    })
}
