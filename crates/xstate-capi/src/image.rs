//! XSAVE images in caller buffers: validation under a consumer's rules, conversion between the
//! standard and compacted forms and between CPUs' layouts.

use core::ffi::c_int;

use crate::adapt;
use crate::error::{guard, xstate_error};
use crate::ffi;
use crate::layout::xstate_layout;

/// XRSTOR (XRSTORS when `xss` ≠ 0) on the CPU of the layout: its #GP conditions as measured on
/// Intel and AMD; `-EINVAL` for a #GP, `-EFAULT` for an image shorter than the restore reads.
pub const XSTATE_PROFILE_HARDWARE: c_int = 0;
/// The Linux kernel's checks of a user buffer (ptrace NT_X86_XSTATE): `-EINVAL`, or `-EFAULT`
/// for an image shorter than the components it holds.
pub const XSTATE_PROFILE_LINUX: c_int = 1;
/// KVM_SET_XSAVE: the Linux checks with XSTATE_BV bounded by KVM's supported XCR0.
pub const XSTATE_PROFILE_KVM: c_int = 2;
/// Xen's `validate_xstate()` and its callers: `-EINVAL`, `-EOPNOTSUPP` (state the host lacks,
/// compacted image) or `-EIO` (reserved header bytes), in Xen's order.
pub const XSTATE_PROFILE_XEN: c_int = 3;

/// Xen's `XEN_DOMCTL_setvcpuextstate` size rule: no image larger than the host's maximum, and
/// exactly standard_size(xcr0_accum) bytes (`-EINVAL`).
pub const XSTATE_XEN_CALLER_DOMCTL: u32 = 0;
/// Xen's `hvm_load_cpu_xsave_states()` size rule: a longer image only if every byte past
/// standard_size(xcr0_accum) is zero (`-EOPNOTSUPP`), no shorter one (`-EINVAL`).
pub const XSTATE_XEN_CALLER_HVM: u32 = 1;

/// What the consumer knows besides the image. Zero every field you do not set
/// (`memset(&ctx, 0, sizeof ctx)`): 0 means the default given for each.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct xstate_context {
    /// XCR0 of the restoring context (the task's user features for the Linux profile).
    pub xcr0: u64,
    /// IA32_XSS: non-zero makes the hardware profile XRSTORS (compacted images only, RFBM =
    /// XCR0 | XSS).
    pub xss: u64,
    /// The restoring CPU's MXCSR mask (the MXCSR_MASK field its FXSAVE/XSAVE writes at byte 28,
    /// 0xFFBF where that field is 0). 0: 0xFFFF.
    pub mxcsr_mask: u32,
    /// Xen: whose size rule applies after `validate_xstate()`: `XSTATE_XEN_CALLER_DOMCTL`
    /// (0, the default) or `XSTATE_XEN_CALLER_HVM`; `-EINVAL` for another value.
    pub xen_caller: u32,
    /// KVM's supported XCR0 (KVM_GET_SUPPORTED_CPUID 0xD.0). 0: `xcr0`.
    pub kvm_supported: u64,
    /// The bytes KVM_SET_XSAVE reads: the vCPU's buffer, 4096 (`struct kvm_xsave`) or
    /// KVM_CAP_XSAVE2's size once the guest may use more. 0: the larger of 4096 and the
    /// standard size of the KVM-supported XCR0.
    pub kvm_buffer: u64,
    /// Xen: the vCPU's xcr0_accum. 0: `xcr0`.
    pub xen_xcr0_accum: u64,
    /// Xen: the domain policy's maximum XCR0 (`cpu_policy_xcr0_max()`). 0: the largest Xen
    /// offers any guest on this layout's host (HVM with HAP).
    pub xen_policy_max: u64,
    /// Xen: the host's enabled xfeature_mask. 0: Xen's on this layout, CPUID ∩ XCNTXT_MASK.
    pub xen_host: u64,
}

/// Would `profile`'s consumer accept the image of `len` bytes, on the CPU of `layout`? 0 if
/// so; else the consumer's negative errno, and in `err` the rule, the offending bits or byte
/// (its offset in `err->offset`) and the message.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xstate_validate(
    image: *const u8,
    len: usize,
    layout: *const xstate_layout,
    profile: c_int,
    ctx: *const xstate_context,
    err: *mut xstate_error,
) -> c_int {
    guard(err, || {
        // SAFETY: the C contract: `image` has `len` readable bytes, `layout` is a live handle,
        // `ctx` a readable context.
        let (img, l, c) =
            unsafe { (ffi::bytes(image, len, "image")?, ffi::get(layout, "layout")?, ffi::get(ctx, "ctx")?) };
        let known = adapt::Known {
            xcr0: c.xcr0,
            xss: c.xss,
            mxcsr_mask: c.mxcsr_mask,
            xen_caller: c.xen_caller,
            kvm_supported: c.kvm_supported,
            kvm_buffer: c.kvm_buffer,
            xen_xcr0_accum: c.xen_xcr0_accum,
            xen_policy_max: c.xen_policy_max,
            xen_host: c.xen_host,
        };
        adapt::validate(img, &l.layout, adapt::profile(profile)?, &known)
    })
}

/// Converts an image restorable on the CPU of `from` with RFBM `rfbm` (XCR0, or XCR0 | XSS for
/// an XRSTORS image) into `form` for the CPU of `to`: restored there with `rfbm` it loads the
/// same registers. Components of `rfbm` only `to` has are written in their init state; state
/// in use that `to` cannot hold (missing, another size, supervisor state in a standard image)
/// is refused (`-EINVAL`), never dropped. A compacted output lays out `compaction_mask`
/// (XCOMP_BV without bit 63; 0: every component of `rfbm` that `to` has); it must be 0 for
/// the standard form.
///
/// Output: the caller-buffer protocol (`out` NULL: `*out_len` gets the size; too small:
/// `-ERANGE` and the size). XRSTOR needs the buffer 64-byte aligned; that is the caller's.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xstate_convert(
    image: *const u8,
    len: usize,
    from: *const xstate_layout,
    to: *const xstate_layout,
    rfbm: u64,
    form: c_int,
    compaction_mask: u64,
    out: *mut u8,
    out_len: *mut usize,
    err: *mut xstate_error,
) -> c_int {
    guard(err, || {
        // SAFETY: the C contract: `image` has `len` readable bytes, `from` and `to` are live
        // handles, `out_len` is a readable `size_t`.
        let (img, f, t) = unsafe {
            ffi::check_len(out_len)?;
            (ffi::bytes(image, len, "image")?, ffi::get(from, "from")?, ffi::get(to, "to")?)
        };
        let converted = adapt::convert(img, &f.layout, &t.layout, rfbm, adapt::form(form)?, compaction_mask)?;
        // SAFETY: the C contract: `out` is NULL or has `*out_len` writable bytes.
        unsafe { ffi::put_bytes(out, out_len, &converted) }
    })
}
