//! CPUID policies and policy-sized save areas (docs/POLICY.md): a guest's leaf 0xD derived from
//! a host layout and a feature selection, the size of its save area, and the area itself with
//! XSETBV semantics, XRSTOR-like load, XSAVE-like store and the resize that refuses to drop
//! state the guest has enabled (Xen's -EBUSY).
//!
//! A policy is immutable and shared: the areas made from it hold it too, so it may be freed
//! before them. An area is one vCPU's: calls that change it must not run at the same time as
//! any other call on the same area.

use core::ffi::{c_char, c_int};
use std::sync::Arc;

use xstate::area::SaveArea;
use xstate::policy::Policy;

use crate::adapt;
use crate::error::{Result, guard, guard_value, xstate_error};
use crate::ffi;
use crate::layout::{xstate_cpuid_regs, xstate_layout};

/// A guest's CPUID policy (opaque).
pub struct xstate_policy {
    policy: Arc<Policy>,
    guest: xstate_layout,
}

/// One vCPU's save area (opaque).
pub struct xstate_area {
    area: SaveArea,
}

fn make_policy(out: *mut *mut xstate_policy, err: *mut xstate_error, body: impl FnOnce() -> Result<Policy>) -> c_int {
    guard(err, || {
        // SAFETY: the C contract: a non-NULL `out` points to a writable `xstate_policy *`.
        let slot = unsafe { ffi::out_slot(out) }?;
        let p = body()?;
        let guest = xstate_layout { layout: adapt::policy_layout(&p) };
        ffi::give(slot, xstate_policy { policy: Arc::new(p), guest });
        Ok(())
    })
}

/// A policy from the host's layout and a feature list: names separated by commas or spaces
/// (`"avx,avx512"`, `"all,-amx"`; names: avx, mpx, avx512, pku, amx, apx, lwp, pt, pasid, cet,
/// hdc, uintr, lbr, hwp, and the instruction features xsaveopt, xsavec, xgetbv1, xsaves, xfd,
/// whose default is the host's). `-EOPNOTSUPP` for a feature the host lacks, `-EINVAL` for an
/// unknown name, a missing prerequisite (`avx512` needs `avx`) or exclusive features.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xstate_policy_new(
    host: *const xstate_layout,
    features: *const c_char,
    out: *mut *mut xstate_policy,
    err: *mut xstate_error,
) -> c_int {
    make_policy(out, err, || {
        // SAFETY: the C contract: a live layout handle and a NUL-terminated string.
        let (h, list) = unsafe { (ffi::get(host, "host")?, ffi::string(features, "features")?) };
        adapt::policy_from_list(&h.layout, list)
    })
}

/// A policy from raw masks: the guest's maximum XCR0 and IA32_XSS, taken as given (checked
/// against the host and the XCR0/XSS rules).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xstate_policy_from_masks(
    host: *const xstate_layout,
    xcr0_max: u64,
    xss_max: u64,
    out: *mut *mut xstate_policy,
    err: *mut xstate_error,
) -> c_int {
    make_policy(out, err, || {
        // SAFETY: the C contract: a live layout handle.
        let h = unsafe { ffi::get(host, "host") }?;
        adapt::policy_from_masks(&h.layout, xcr0_max, xss_max)
    })
}

/// Frees a policy (NULL: nothing). Areas made from it keep it alive.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xstate_policy_free(policy: *mut xstate_policy) {
    // SAFETY: the C contract: NULL or a live policy handle no other thread uses.
    guard_value((), || unsafe { ffi::free(policy) })
}

/// The guest's maximum XCR0. 0 for NULL.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xstate_policy_xcr0_max(policy: *const xstate_policy) -> u64 {
    // SAFETY: the C contract: NULL or a live policy handle.
    unsafe { ffi::query(policy, 0, |p| adapt::policy_masks(&p.policy).0) }
}

/// The guest's maximum IA32_XSS. 0 for NULL.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xstate_policy_xss_max(policy: *const xstate_policy) -> u64 {
    // SAFETY: the C contract: NULL or a live policy handle.
    unsafe { ffi::query(policy, 0, |p| adapt::policy_masks(&p.policy).1) }
}

/// The guest's layout (its derived leaf 0xD), owned by the policy: valid until the policy is
/// freed; do not free it. NULL for NULL.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xstate_policy_layout(policy: *const xstate_policy) -> *const xstate_layout {
    // SAFETY: the C contract: NULL or a live policy handle.
    unsafe { ffi::query(policy, core::ptr::null(), |p| &p.guest as *const xstate_layout) }
}

/// The size of a save area for the policy in `form`: the guest's CPUID 0xD.0 ECX for the
/// standard form, the compacted size of its maximum XCR0 | IA32_XSS for the compacted form.
/// `-EINVAL` for a standard area of a policy with supervisor state, `-EOPNOTSUPP` for a
/// compacted one on a host without XSAVEC/XSAVES.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xstate_policy_area_size(
    policy: *const xstate_policy,
    form: c_int,
    size: *mut usize,
    err: *mut xstate_error,
) -> c_int {
    guard(err, || {
        // SAFETY: the C contract: a live policy handle and a writable `size_t`.
        let (p, size) = unsafe { (ffi::get(policy, "policy")?, ffi::get_mut(size, "size")?) };
        *size = adapt::area_size_for(&p.policy, adapt::form(form)?)?;
        Ok(())
    })
}

/// The guest's CPUID leaf 0xD with `xcr0` in XCR0 and `xss` in IA32_XSS (their sizes in 0xD.0
/// EBX and 0xD.1 EBX), all 64 subleaves into `out[0..64]`. `-EINVAL` if XSETBV/WRMSR would
/// refuse the values.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xstate_policy_leaf0d(
    policy: *const xstate_policy,
    xcr0: u64,
    xss: u64,
    out: *mut xstate_cpuid_regs,
    err: *mut xstate_error,
) -> c_int {
    guard(err, || {
        // SAFETY: the C contract: a live policy handle; `out` has 64 writable entries (its
        // first entry is checked for NULL here, the rest is the caller's promise).
        let p = unsafe { ffi::get(policy, "policy")? };
        unsafe { ffi::get_mut(out, "out") }?;
        let leaf = adapt::policy_leaf0d(&p.policy, xcr0, xss)?;
        for (i, r) in leaf.iter().enumerate() {
            // SAFETY: `out` has 64 entries (the C contract) and `i` < 64.
            let o = unsafe { &mut *out.add(i) };
            *o = xstate_cpuid_regs { eax: r[0], ebx: r[1], ecx: r[2], edx: r[3] };
        }
        Ok(())
    })
}

/// A fresh save area for the policy in `form`, in the init state (FCW 0x037F, MXCSR 0x1F80,
/// XSTATE_BV 0) with XCR0 = 1 (x87, its value after RESET) and IA32_XSS = 0.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xstate_area_new(
    policy: *const xstate_policy,
    form: c_int,
    out: *mut *mut xstate_area,
    err: *mut xstate_error,
) -> c_int {
    guard(err, || {
        // SAFETY: the C contract: a writable `xstate_area *` and a live policy handle.
        let (slot, p) = unsafe { (ffi::out_slot(out)?, ffi::get(policy, "policy")?) };
        ffi::give(slot, xstate_area { area: adapt::area_new(&p.policy, adapt::form(form)?)? });
        Ok(())
    })
}

/// Frees a save area (NULL: nothing).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xstate_area_free(area: *mut xstate_area) {
    // SAFETY: the C contract: NULL or a live area handle no other thread uses.
    guard_value((), || unsafe { ffi::free(area) })
}

/// The area's size in bytes (its policy's size for its form). 0 for NULL.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xstate_area_size(area: *const xstate_area) -> usize {
    // SAFETY: the C contract: NULL or a live area handle not being changed.
    unsafe { ffi::query(area, 0, |a| adapt::area_len(&a.area)) }
}

/// The vCPU's XCR0. 0 for NULL.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xstate_area_xcr0(area: *const xstate_area) -> u64 {
    // SAFETY: the C contract: NULL or a live area handle not being changed.
    unsafe { ffi::query(area, 0, |a| adapt::area_registers(&a.area).0) }
}

/// The vCPU's IA32_XSS. 0 for NULL.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xstate_area_xss(area: *const xstate_area) -> u64 {
    // SAFETY: the C contract: NULL or a live area handle not being changed.
    unsafe { ffi::query(area, 0, |a| adapt::area_registers(&a.area).1) }
}

/// Every XCR0 bit the vCPU ever set (Xen's xcr0_accum). 0 for NULL.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xstate_area_xcr0_accum(area: *const xstate_area) -> u64 {
    // SAFETY: the C contract: NULL or a live area handle not being changed.
    unsafe { ffi::query(area, 0, |a| adapt::area_registers(&a.area).2) }
}

/// Every IA32_XSS bit the vCPU ever set. 0 for NULL.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xstate_area_xss_accum(area: *const xstate_area) -> u64 {
    // SAFETY: the C contract: NULL or a live area handle not being changed.
    unsafe { ffi::query(area, 0, |a| adapt::area_registers(&a.area).3) }
}

fn area_change(area: *mut xstate_area, err: *mut xstate_error, f: impl FnOnce(&mut SaveArea) -> Result<()>) -> c_int {
    guard(err, || {
        // SAFETY: the C contract: a live area handle no other call uses meanwhile.
        let a = unsafe { ffi::get_mut(area, "area") }?;
        f(&mut a.area)
    })
}

/// XSETBV: sets XCR0, keeping the state. `-EINVAL` where the guest's XSETBV would raise #GP
/// (an XCR0 rule, a bit beyond the policy).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xstate_area_set_xcr0(area: *mut xstate_area, xcr0: u64, err: *mut xstate_error) -> c_int {
    area_change(area, err, |a| adapt::area_set_xcr0(a, xcr0))
}

/// WRMSR IA32_XSS: sets XSS, keeping the state; `-EINVAL` where it would raise #GP.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xstate_area_set_xss(area: *mut xstate_area, xss: u64, err: *mut xstate_error) -> c_int {
    area_change(area, err, |a| adapt::area_set_xss(a, xss))
}

/// The MXCSR mask loads are checked against, as the MXCSR_MASK field FXSAVE/XSAVE writes on
/// the host (0 means 0xFFBF). Default 0xFFFF.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xstate_area_set_mxcsr_mask(area: *mut xstate_area, field: u32) {
    let _ = area_change(area, core::ptr::null_mut(), |a| {
        adapt::area_set_mxcsr_mask(a, field);
        Ok(())
    });
}

/// XRSTOR into the area: an image of either form, checked as XRSTOR with RFBM = XCR0 (XRSTORS
/// with XCR0 | XSS for a compacted image when XSS ≠ 0) would check it; the components of RFBM
/// take the image's state, the others keep theirs. On failure nothing changes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xstate_area_load(
    area: *mut xstate_area,
    image: *const u8,
    len: usize,
    err: *mut xstate_error,
) -> c_int {
    area_change(area, err, |a| {
        // SAFETY: the C contract: `image` has `len` readable bytes.
        let img = unsafe { ffi::bytes(image, len, "image") }?;
        adapt::area_load(a, img)
    })
}

/// XSAVE from the area: an image of `form` as XSAVE (standard, RFBM = XCR0) or XSAVEC/XSAVES
/// (compacted, RFBM = XCR0 | XSS) would write it. Output: the caller-buffer protocol.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xstate_area_store(
    area: *const xstate_area,
    form: c_int,
    out: *mut u8,
    out_len: *mut usize,
    err: *mut xstate_error,
) -> c_int {
    guard(err, || {
        // SAFETY: the C contract: a live area handle, a readable `out_len`.
        let a = unsafe {
            ffi::check_len(out_len)?;
            ffi::get(area, "area")?
        };
        let img = adapt::area_store(&a.area, adapt::form(form)?)?;
        // SAFETY: the C contract: `out` is NULL or has `*out_len` writable bytes.
        unsafe { ffi::put_bytes(out, out_len, &img) }
    })
}

/// Moves the area to another policy, resized, its state kept. `-EBUSY` (Xen's) when the vCPU
/// has enabled state the new policy does not allow; on any failure nothing changes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xstate_area_set_policy(
    area: *mut xstate_area,
    policy: *const xstate_policy,
    err: *mut xstate_error,
) -> c_int {
    area_change(area, err, |a| {
        // SAFETY: the C contract: a live policy handle.
        let p = unsafe { ffi::get(policy, "policy") }?;
        adapt::area_set_policy(a, &p.policy)
    })
}
