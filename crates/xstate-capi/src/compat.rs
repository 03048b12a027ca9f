//! Migration compatibility of two layouts or policies: compatible as is, after re-layout, or
//! incompatible, with each reason as a string and the source components to mask.

use core::ffi::{CStr, c_char, c_int};
use std::ffi::CString;

use crate::adapt;
use crate::error::{guard, guard_value, xstate_error};
use crate::ffi;
use crate::layout::xstate_layout;

/// Raw images and records move byte for byte.
pub const XSTATE_COMPAT_AS_IS: c_int = 0;
/// The state moves once re-laid out component by component (`xstate_convert`).
pub const XSTATE_COMPAT_AFTER_RELAYOUT: c_int = 1;
/// Some state cannot be restored on the destination.
pub const XSTATE_COMPAT_INCOMPATIBLE: c_int = 2;

/// One side of a migration: a layout (a CPU's, or a policy's from `xstate_policy_layout`) and
/// the states enabled there (on the source: those the guest may use; on the destination:
/// those it can enable).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct xstate_side {
    /// The layout.
    pub layout: *const xstate_layout,
    /// XCR0.
    pub xcr0: u64,
    /// IA32_XSS.
    pub xss: u64,
}

/// A compatibility report (opaque); its strings live as long as it does.
pub struct xstate_compat {
    verdict: c_int,
    reasons: Vec<(CString, CString)>,
    mask: u64,
    mask_as_is: u64,
}

fn c_string(s: &str) -> CString {
    CString::new(s.replace('\0', " ")).unwrap_or_default()
}

/// Can state saved on `from` be restored on `to`? With `image` (`len` bytes, restorable on
/// the source with its XCR0 | XSS) where state sits counts for the components it uses, and its
/// size (standard_size of the enabled states) must be the destination's to move as is; NULL
/// with `len` 0 for every state the source may use. Masks a side's CPU cannot hold are
/// `-EINVAL`; an image the source itself would not restore is refused with the hardware
/// profile's errno.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xstate_compat_check(
    from: *const xstate_side,
    to: *const xstate_side,
    image: *const u8,
    len: usize,
    out: *mut *mut xstate_compat,
    err: *mut xstate_error,
) -> c_int {
    guard(err, || {
        // SAFETY: the C contract: `out` writable, `from` and `to` readable sides holding live
        // layout handles, `image` NULL or `len` readable bytes.
        let (slot, f, t, img) = unsafe {
            let slot = ffi::out_slot(out)?;
            let (f, t) = (ffi::get(from, "from")?, ffi::get(to, "to")?);
            let (fl, tl) = (ffi::get(f.layout, "from->layout")?, ffi::get(t.layout, "to->layout")?);
            let img = ffi::bytes(image, len, "image")?;
            let f = adapt::Sided { layout: &fl.layout, xcr0: f.xcr0, xss: f.xss };
            let t = adapt::Sided { layout: &tl.layout, xcr0: t.xcr0, xss: t.xss };
            (slot, f, t, img)
        };
        let image = (!image.is_null() || len != 0).then_some(img);
        let v = adapt::compat_check(&f, &t, image)?;
        let reasons = v.reasons.iter().map(|(kind, text)| (c_string(kind), c_string(text))).collect();
        ffi::give(slot, xstate_compat { verdict: v.verdict, reasons, mask: v.mask, mask_as_is: v.mask_as_is });
        Ok(())
    })
}

/// Frees a report (NULL: nothing) and its strings.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xstate_compat_free(report: *mut xstate_compat) {
    // SAFETY: the C contract: NULL or a live report no other thread uses.
    guard_value((), || unsafe { ffi::free(report) })
}

/// `XSTATE_COMPAT_AS_IS`, `_AFTER_RELAYOUT` or `_INCOMPATIBLE`; -EINVAL for NULL.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xstate_compat_verdict(report: *const xstate_compat) -> c_int {
    // SAFETY: the C contract: NULL or a live report.
    unsafe { ffi::query(report, -libc::EINVAL, |r| r.verdict) }
}

/// `"compatible"`, `"compatible after re-layout"` or `"incompatible"`: a static string; NULL
/// for NULL.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xstate_compat_verdict_text(report: *const xstate_compat) -> *const c_char {
    let text: Option<&'static CStr> = // SAFETY: the C contract: NULL or a live report.
    unsafe { ffi::query(report, None, |r| {
        Some(match r.verdict {
            XSTATE_COMPAT_AS_IS => c"compatible",
            XSTATE_COMPAT_AFTER_RELAYOUT => c"compatible after re-layout",
            _ => c"incompatible",
        })
    }) };
    text.map_or(core::ptr::null(), CStr::as_ptr)
}

/// How many reasons the report gives.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xstate_compat_reason_count(report: *const xstate_compat) -> usize {
    // SAFETY: the C contract: NULL or a live report.
    unsafe { ffi::query(report, 0, |r| r.reasons.len()) }
}

/// Reason `i` as a sentence naming the component and both values (`"opmask (5) is at standard
/// offset 0x340 on the source, 0x440 on the destination"`), owned by the report; NULL past
/// the end.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xstate_compat_reason(report: *const xstate_compat, i: usize) -> *const c_char {
    // SAFETY: the C contract: NULL or a live report.
    unsafe {
        ffi::query(report, core::ptr::null(), |r| r.reasons.get(i).map_or(core::ptr::null(), |(_, t)| t.as_ptr()))
    }
}

/// Reason `i`'s kind, a short key (`"component_missing"`, `"size_differs"`,
/// `"offset_differs"`, `"align_differs"`, `"destination_maximum_smaller"`,
/// `"standard_size_differs"`, `"amx_permission_needed"`, `"supervisor_state_unsupported"`,
/// `"compaction_unsupported"`), owned by the report; NULL past the end.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xstate_compat_reason_kind(report: *const xstate_compat, i: usize) -> *const c_char {
    // SAFETY: the C contract: NULL or a live report.
    unsafe {
        ffi::query(report, core::ptr::null(), |r| r.reasons.get(i).map_or(core::ptr::null(), |(k, _)| k.as_ptr()))
    }
}

/// The source components to mask (whole feature groups, with what depends on them) for the
/// migration to become at least "after re-layout".
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xstate_compat_mask(report: *const xstate_compat) -> u64 {
    // SAFETY: the C contract: NULL or a live report.
    unsafe { ffi::query(report, 0, |r| r.mask) }
}

/// The source components to mask for the migration to become "as is".
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xstate_compat_mask_as_is(report: *const xstate_compat) -> u64 {
    // SAFETY: the C contract: NULL or a live report.
    unsafe { ffi::query(report, 0, |r| r.mask_as_is) }
}
