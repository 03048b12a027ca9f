//! Errors across the boundary: every fallible function returns 0 or a negative errno and, when
//! the caller passes one, fills an [`xstate_error`] it owns. Nothing is kept between calls (no
//! thread-local "last error", no global state), so any number of threads can call at once.

use core::ffi::{c_char, c_int};
use core::fmt;
#[cfg(test)]
use core::fmt::Write;
use std::panic::{AssertUnwindSafe, catch_unwind};

/// Bytes in `xstate_error.message`, the terminating NUL included.
pub const XSTATE_ERROR_MESSAGE_SIZE: usize = 512;
/// Bytes in `xstate_error.rule`, the terminating NUL included.
pub const XSTATE_ERROR_RULE_SIZE: usize = 128;

/// Why a call failed, written into a buffer the caller owns (it may be NULL: nothing is
/// written then). Written only when the call fails; on success it is left as it was.
#[repr(C)]
pub struct xstate_error {
    /// The negative errno the call returned.
    pub code: i32,
    /// Byte offset in the caller's input (image or record) of the field at fault; -1 if none.
    pub offset: i64,
    /// The rule broken, a short fixed sentence (`"XSTATE_BV must be a subset of XCR0"`),
    /// NUL-terminated.
    pub rule: [c_char; XSTATE_ERROR_RULE_SIZE],
    /// The whole message: the rule and the offending bits, bytes or sizes, NUL-terminated,
    /// cut at a character boundary if longer than the buffer.
    pub message: [c_char; XSTATE_ERROR_MESSAGE_SIZE],
}

/// A failed call before it reaches the caller.
#[derive(Debug)]
pub(crate) struct Failure {
    /// Negative errno.
    pub code: c_int,
    /// Byte offset in the input, if one is at fault.
    pub offset: Option<usize>,
    /// The rule broken.
    pub rule: &'static str,
    /// The message.
    pub message: String,
}

impl Failure {
    pub(crate) fn new(errno: c_int, rule: &'static str, message: impl fmt::Display) -> Failure {
        Failure { code: -errno, offset: None, rule, message: message.to_string() }
    }

    /// A caller's argument breaks the API's own rules (NULL, an unknown constant, a length).
    pub(crate) fn arg(message: impl fmt::Display) -> Failure {
        Failure::new(libc::EINVAL, "arguments must follow the API's documented rules", message)
    }

    pub(crate) fn at(mut self, offset: Option<usize>) -> Failure {
        self.offset = offset;
        self
    }
}

pub(crate) type Result<T> = core::result::Result<T, Failure>;

/// Copies `s` into a C buffer, NUL-terminated, cut at a character boundary.
fn put_str(buf: &mut [c_char], s: &str) {
    let Some(room) = buf.len().checked_sub(1) else { return };
    let mut end = s.len().min(room);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    for (d, &b) in buf.iter_mut().zip(&s.as_bytes()[..end]) {
        *d = b as c_char;
    }
    buf[end] = 0;
}

fn report(err: *mut xstate_error, f: &Failure) {
    // SAFETY: `err` is NULL or points to an `xstate_error` the caller owns and lets this call
    // write (the C API's contract for every `xstate_error *` argument).
    let Some(e) = (unsafe { err.as_mut() }) else { return };
    e.code = f.code;
    e.offset = f.offset.and_then(|o| i64::try_from(o).ok()).unwrap_or(-1);
    put_str(&mut e.rule, f.rule);
    put_str(&mut e.message, &f.message);
}

/// Runs one call of the C API: its result as 0 or a negative errno, the failure reported into
/// `err`, and a panic (a bug in libxstate) caught so it never unwinds into C: it becomes
/// `-ENOTRECOVERABLE`.
pub(crate) fn guard(err: *mut xstate_error, body: impl FnOnce() -> Result<()>) -> c_int {
    let f = match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => return 0,
        Ok(Err(f)) => f,
        Err(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Failure::new(
                libc::ENOTRECOVERABLE,
                "libxstate must not panic (this is a bug in libxstate)",
                format_args!("internal error: {what}"),
            )
        }
    };
    report(err, &f);
    f.code
}

/// Like [`guard`] for calls that cannot fail but return a value: a panic gives `fallback`.
pub(crate) fn guard_value<T>(fallback: T, body: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(body)).unwrap_or(fallback)
}

/// A `fmt::Write` into a fixed buffer that cuts what does not fit (for tests of `put_str`).
#[cfg(test)]
struct Fixed<'a>(&'a mut [c_char]);

#[cfg(test)]
impl Write for Fixed<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        put_str(self.0, s);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(buf: &[c_char]) -> String {
        let bytes: Vec<u8> = buf.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn messages_are_cut_at_a_character_boundary() {
        let mut buf = [0x55 as c_char; 6];
        let _ = write!(Fixed(&mut buf), "abcd\u{e9}f");
        assert_eq!(text(&buf), "abcd");
        put_str(&mut buf, "ab");
        assert_eq!(text(&buf), "ab");
        put_str(&mut [], "ab");
    }

    #[test]
    fn a_panic_becomes_enotrecoverable() {
        let mut e = xstate_error { code: 0, offset: 0, rule: [0; 128], message: [0; 512] };
        let rc = guard(&mut e, || panic!("boom"));
        assert_eq!(rc, -libc::ENOTRECOVERABLE);
        assert_eq!(e.code, rc);
        assert_eq!(e.offset, -1);
        assert!(text(&e.message).contains("boom"));
        assert_eq!(guard(core::ptr::null_mut(), || Err(Failure::arg("x"))), -libc::EINVAL);
    }
}
