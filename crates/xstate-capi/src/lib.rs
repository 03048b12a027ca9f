//! libxstate: the C library of xstate, for the C and C++ projects that handle x86 extended
//! state (Xen's toolstack, QEMU, CRIU, rr, gdb). The header is `include/xstate.h` (generated
//! from this crate by cbindgen; `tests/header.rs` fails when it drifts), the guide
//! `docs/C-API.md`, the install command `scripts/install-capi --prefix P`.
//!
//! C's idiom throughout:
//!
//! - opaque handles made by `xstate_*_new` / `xstate_layout_from_*` and released by
//!   `xstate_*_free` (NULL accepted);
//! - caller-owned buffers with explicit lengths; a call that produces bytes takes `out` and
//!   `size_t *out_len`, answers a size query when `out` is NULL, and refuses a buffer too
//!   small with `-ERANGE` and the size needed;
//! - 0 or a negative errno; the consumer's own errno where the library mirrors one (Xen's
//!   `-EOPNOTSUPP`, `-EIO`; Linux's `-EFAULT`), `-EBUSY` for a refused resize;
//! - an `xstate_error *` the caller owns, filled on failure with the rule, the byte offset and
//!   the message: nothing is kept between calls, so there is no global or thread-local state;
//! - no panic crosses the boundary: each entry point runs under `catch_unwind`, and a panic (a
//!   bug) returns `-ENOTRECOVERABLE`.
//!
//! Every function's contract for raw pointers is the C one: a non-NULL pointer is valid for
//! what the header says (a live handle, `len` readable bytes, a writable object) and NULL is
//! refused with `-EINVAL` where a value is required. Only this module tree dereferences them,
//! through the checked helpers of `ffi`. Calls into the `xstate` crate all go through `adapt`.
#![allow(non_camel_case_types)]
// the C names: xstate_layout, xstate_error, ...
// The extern "C" functions are `unsafe` to call only as every C function is: their pointer
// arguments must be valid. That contract is stated once, above and in docs/C-API.md.
#![allow(clippy::missing_safety_doc)]

mod adapt;
pub mod area;
pub mod compat;
pub mod error;
mod ffi;
pub mod image;
pub mod layout;
pub mod record;

use core::ffi::{CStr, c_char, c_int};

pub use error::xstate_error;

/// The major version: the SONAME is `libxstate.so.<major>`; it changes when the ABI breaks.
pub const XSTATE_VERSION_MAJOR: u32 = 0;
/// The minor version: new functions, same ABI.
pub const XSTATE_VERSION_MINOR: u32 = 1;
/// The patch version.
pub const XSTATE_VERSION_PATCH: u32 = 0;

/// The standard form (XSAVE): components at the CPU's fixed offsets, XCOMP_BV = 0.
pub const XSTATE_FORM_STANDARD: c_int = 0;
/// The compacted form (XSAVEC/XSAVES): XCOMP_BV bit 63 set, components packed in index order.
pub const XSTATE_FORM_COMPACTED: c_int = 1;

const VERSION: &CStr = match CStr::from_bytes_with_nul(concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes()) {
    Ok(v) => v,
    Err(_) => panic!("the package version has a NUL"),
};

/// The library's version, `"MAJOR.MINOR.PATCH"`: a static string.
#[unsafe(no_mangle)]
pub extern "C" fn xstate_version() -> *const c_char {
    VERSION.as_ptr()
}

/// The short name of state component `index` (`"tiledata"`, or `"component 23"` for one the
/// library does not know) into `buf` of `len` bytes, NUL-terminated. Returns the name's length
/// (without the NUL); `-ERANGE` if `len` is too small (an empty string is written when
/// `len` > 0); `-EINVAL` for an index outside 0..=62. With `buf` NULL and `len` 0, returns
/// the length only.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xstate_component_name(index: u32, buf: *mut c_char, len: usize) -> c_int {
    error::guard_value(-libc::ENOTRECOVERABLE, || match adapt::component_name(index) {
        // SAFETY: the C contract: a non-NULL `buf` has `len` writable bytes.
        Ok(name) => unsafe { ffi::put_c_string(buf, len, &name) },
        Err(f) => f.code,
    })
}

/// The threading rules of docs/C-API.md, checked by the compiler: layouts, policies and
/// reports are immutable and shared between threads; an area moves between threads and is
/// used by one at a time.
const _: () = {
    const fn shared<T: Send + Sync>() {}
    const fn movable<T: Send>() {}
    shared::<layout::xstate_layout>();
    shared::<area::xstate_policy>();
    shared::<compat::xstate_compat>();
    movable::<area::xstate_area>();
};

#[cfg(test)]
mod tests {
    #[test]
    fn version_constants_are_the_package_version() {
        let v =
            format!("{}.{}.{}", super::XSTATE_VERSION_MAJOR, super::XSTATE_VERSION_MINOR, super::XSTATE_VERSION_PATCH);
        assert_eq!(v, env!("CARGO_PKG_VERSION"));
        assert_eq!(super::VERSION.to_str().unwrap(), v);
    }
}
