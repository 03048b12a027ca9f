//! The toolstack blobs: Xen's get/setvcpuextstate blob `{xcr0, xcr0_accum, standard image}` and
//! the forward-compatible blob `{XCR0 | XSS, accumulated states, standard or compacted image}`
//! (docs/FORMATS.md), parsed with their consumers' rules and written for a target CPU.

use core::ffi::c_int;

use xstate::Layout;

use crate::adapt::{self, BlobKind, Parsed};
use crate::error::{Result, guard, xstate_error};
use crate::ffi;
use crate::layout::xstate_layout;

/// What Xen knows besides a blob: its enabled `xfeature_mask` (the largest blob it takes is 16
/// + standard_size(host)) and the domain policy's maximum.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct xstate_xen_host {
    /// The host's enabled XCR0 (for the forward-compatible blob XCR0 | XSS).
    pub host: u64,
    /// The domain policy's maximum.
    pub policy_max: u64,
}

/// A parsed blob. Its image stays in the caller's buffer: bytes `image_offset` ..
/// `image_offset + image_len` of the blob.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct xstate_blob_info {
    /// XCR0 (0 in the "no xsave state" form).
    pub xcr0: u64,
    /// IA32_XSS (always 0 for Xen's blob).
    pub xss: u64,
    /// The accumulated states the image is sized for (xcr0_accum, or xstates_accum): the RFBM
    /// to restore it with.
    pub accum: u64,
    /// Where the image starts in the blob (16), 0 without one.
    pub image_offset: usize,
    /// The image's length, 0 in the "no xsave state" form.
    pub image_len: usize,
    /// `XSTATE_FORM_STANDARD` or `XSTATE_FORM_COMPACTED`; -1 without an image.
    pub form: c_int,
}

type Parser = fn(&[u8], &Layout, adapt::Host) -> Result<Parsed>;

fn parse(
    parser: Parser,
    blob: *const u8,
    len: usize,
    layout: *const xstate_layout,
    host: *const xstate_xen_host,
    info: *mut xstate_blob_info,
    err: *mut xstate_error,
) -> c_int {
    guard(err, || {
        // SAFETY: the C contract: `blob` has `len` readable bytes, `layout` is a live handle,
        // `host` NULL or readable, `info` writable.
        let (b, l, h, info) = unsafe {
            (ffi::bytes(blob, len, "blob")?, ffi::get(layout, "layout")?, host.as_ref(), ffi::get_mut(info, "info")?)
        };
        let p = parser(b, &l.layout, h.map(|h| (h.host, h.policy_max)))?;
        let (image_offset, image_len, form) = match p.image {
            Some((o, n, f)) => (o, n, f),
            None => (0, 0, -1),
        };
        *info = xstate_blob_info { xcr0: p.xcr0, xss: p.xss, accum: p.accum, image_offset, image_len, form };
        Ok(())
    })
}

/// Parses a Xen domctl blob as XEN_DOMCTL_setvcpuextstate does, in its order: size bounds,
/// the 16-byte "no xsave state" form, no compacted image (`-EOPNOTSUPP`), Xen's
/// `validate_xstate()` (its errno), the exact size 16 + standard_size(xcr0_accum) (`-EINVAL`).
/// `layout` is the CPU whose layout the image is in (the host that wrote it); `host` NULL
/// means Xen on that host: xfeature_mask = CPUID ∩ XCNTXT_MASK and the largest policy maximum
/// Xen offers a guest there (HVM with HAP).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xstate_xen_domctl_parse(
    blob: *const u8,
    len: usize,
    layout: *const xstate_layout,
    host: *const xstate_xen_host,
    info: *mut xstate_blob_info,
    err: *mut xstate_error,
) -> c_int {
    parse(adapt::domctl_parse, blob, len, layout, host, info, err)
}

/// Parses a forward-compatible blob: every blob Xen's rules accept means the same here; a
/// compacted image (and so supervisor state) is accepted with its own size rule,
/// 16 + compacted_size(XCOMP_BV). `host` NULL: every user and supervisor state of `layout`
/// (the format is a proposal no Xen implements, so no Xen default applies).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xstate_fc_blob_parse(
    blob: *const u8,
    len: usize,
    layout: *const xstate_layout,
    host: *const xstate_xen_host,
    info: *mut xstate_blob_info,
    err: *mut xstate_error,
) -> c_int {
    parse(adapt::fc_blob_parse, blob, len, layout, host, info, err)
}

/// What Xen on a host of a layout enables, and offers a PV guest.
pub const XSTATE_XEN_GUEST_PV: c_int = 0;
/// ... an HVM guest on shadow paging.
pub const XSTATE_XEN_GUEST_HVM_SHADOW: c_int = 1;
/// ... an HVM guest with HAP (EPT/NPT): the largest maximum, Xen's default here.
pub const XSTATE_XEN_GUEST_HVM_HAP: c_int = 2;

/// Xen on a host of `layout`, as Xen derives it: `host` = its xfeature_mask (CPUID ∩
/// XCNTXT_MASK: x87, SSE, AVX, MPX, AVX-512, PKRU, AMX), `policy_max` = the largest XCR0 it
/// offers a guest of kind `guest` (`XSTATE_XEN_GUEST_*`; never AMX, LWP or supervisor state).
/// This is the `xstate_xen_host` the blob functions use when given NULL (with HVM HAP).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xstate_xen_host_for(
    layout: *const xstate_layout,
    guest: c_int,
    out: *mut xstate_xen_host,
    err: *mut xstate_error,
) -> c_int {
    guard(err, || {
        // SAFETY: the C contract: a live layout handle and a writable `xstate_xen_host`.
        let (l, out) = unsafe { (ffi::get(layout, "layout")?, ffi::get_mut(out, "out")?) };
        let (host, policy_max) = adapt::xen_host_for(&l.layout, guest)?;
        *out = xstate_xen_host { host, policy_max };
        Ok(())
    })
}

#[allow(clippy::too_many_arguments)] // the C signature: two masks, an image, two layouts, a host, a buffer
fn write(
    kind: BlobKind,
    active: u64,
    accum: u64,
    image: *const u8,
    image_len: usize,
    from: *const xstate_layout,
    to: *const xstate_layout,
    host: *const xstate_xen_host,
    out: *mut u8,
    out_len: *mut usize,
    err: *mut xstate_error,
) -> c_int {
    guard(err, || {
        // SAFETY: the C contract: `image` NULL or `image_len` readable bytes, live layout
        // handles, `host` NULL or readable, `out_len` a readable `size_t`.
        let (img, f, t, h) = unsafe {
            ffi::check_len(out_len)?;
            (ffi::bytes(image, image_len, "image")?, ffi::get(from, "from")?, ffi::get(to, "to")?, host.as_ref())
        };
        let img = (!image.is_null() || image_len != 0).then_some(img);
        let h = h.map(|h| (h.host, h.policy_max));
        let blob = adapt::blob_write(kind, active, accum, img, &f.layout, &t.layout, h)?;
        // SAFETY: the C contract: `out` is NULL or has `*out_len` writable bytes.
        unsafe { ffi::put_bytes(out, out_len, &blob) }
    })
}

/// Writes a Xen domctl blob for the CPU of `to` from an image (either form) laid out for
/// `from`: the image is converted to the standard form of `to` with RFBM `xcr0_accum`
/// (refusing state `to` cannot hold), and the blob is checked with Xen's rules for `to` and
/// `host` (NULL: Xen's own there, `xstate_xen_host_for` HVM HAP) before it is returned. `image` NULL with both masks 0 writes the 16-byte "no xsave state"
/// blob. Output: the caller-buffer protocol (size query with `out` NULL, `-ERANGE`).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xstate_xen_domctl_write(
    xcr0: u64,
    xcr0_accum: u64,
    image: *const u8,
    image_len: usize,
    from: *const xstate_layout,
    to: *const xstate_layout,
    host: *const xstate_xen_host,
    out: *mut u8,
    out_len: *mut usize,
    err: *mut xstate_error,
) -> c_int {
    write(BlobKind::XenDomctl, xcr0, xcr0_accum, image, image_len, from, to, host, out, out_len, err)
}

/// Writes a forward-compatible blob `{xstates, xstates_accum, image}` for `to`: a compacted
/// image stays compacted where `to` has the compacted form, else the standard form is written.
/// As `xstate_xen_domctl_write` otherwise (`host` NULL: every user and supervisor state of
/// `to`).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xstate_fc_blob_write(
    xstates: u64,
    xstates_accum: u64,
    image: *const u8,
    image_len: usize,
    from: *const xstate_layout,
    to: *const xstate_layout,
    host: *const xstate_xen_host,
    out: *mut u8,
    out_len: *mut usize,
    err: *mut xstate_error,
) -> c_int {
    write(BlobKind::ForwardCompatible, xstates, xstates_accum, image, image_len, from, to, host, out, out_len, err)
}
