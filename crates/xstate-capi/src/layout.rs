//! `xstate_layout`: one CPU's XSAVE geometry, from CPUID leaf 0xD (subleaf registers, the host,
//! or a dump), and its size and offset queries. Immutable once made: any number of threads may
//! query one layout at once.

use core::ffi::{c_char, c_int};

use xstate::Layout;

use crate::adapt;
use crate::error::{Failure, guard, guard_value, xstate_error};
use crate::ffi;

/// One CPU's layout (opaque).
pub struct xstate_layout {
    pub(crate) layout: Layout,
}

/// The registers of one CPUID subleaf.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct xstate_cpuid_regs {
    /// EAX.
    pub eax: u32,
    /// EBX.
    pub ebx: u32,
    /// ECX.
    pub ecx: u32,
    /// EDX.
    pub edx: u32,
}

/// Where a state component sits in the standard form, and how it compacts (CPUID 0xD.i).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct xstate_component_info {
    /// Size in bytes (0xD.i EAX).
    pub size: u32,
    /// Offset in a standard image (0xD.i EBX); 0 for supervisor components, which have none.
    pub offset: u32,
    /// 1 for a supervisor component (IA32_XSS; 0xD.i ECX bit 0).
    pub supervisor: u8,
    /// 1 if it starts 64-byte aligned in a compacted image (0xD.i ECX bit 1).
    pub align64: u8,
    /// 1 if it supports extended feature disable (0xD.i ECX bit 2).
    pub xfd: u8,
    /// Zero.
    pub reserved: u8,
}

fn make(
    out: *mut *mut xstate_layout,
    err: *mut xstate_error,
    body: impl FnOnce() -> crate::error::Result<Layout>,
) -> c_int {
    guard(err, || {
        // SAFETY: the C contract: a non-NULL `out` points to a writable `xstate_layout *`.
        let slot = unsafe { ffi::out_slot(out) }?;
        ffi::give(slot, xstate_layout { layout: body()? });
        Ok(())
    })
}

/// A layout from CPUID leaf 0xD: `subleaves[i]` is subleaf i (ECX = i), `count` of them
/// (at most 64; subleaves past `count` count as not read). Refuses (`-EINVAL`) an enumeration
/// no CPU could have: a supported component without its subleaf, offsets inside the legacy
/// region, classes that disagree with the masks. `-EOPNOTSUPP` if subleaf 0 is all zero.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xstate_layout_from_cpuid(
    subleaves: *const xstate_cpuid_regs,
    count: usize,
    out: *mut *mut xstate_layout,
    err: *mut xstate_error,
) -> c_int {
    make(out, err, || {
        if count > 64 {
            return Err(Failure::arg(format_args!("{count} subleaves: leaf 0xD has 64")));
        }
        // SAFETY: the C contract: `subleaves` points to `count` readable entries (a non-NULL
        // pointer with count 0 reads nothing).
        let regs = unsafe { ffi::slice(subleaves, count, "subleaves") }?;
        let regs: Vec<[u32; 4]> = regs.iter().map(|r| [r.eax, r.ebx, r.ecx, r.edx]).collect();
        adapt::layout_from_subleaves(&regs)
    })
}

/// The running CPU's layout, read with CPUID (x86-64 Linux; `-EOPNOTSUPP` elsewhere or
/// without XSAVE). Each call executes CPUID 64 times (a VM exit each in a guest): make it
/// once and share it.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xstate_layout_from_host(out: *mut *mut xstate_layout, err: *mut xstate_error) -> c_int {
    make(out, err, adapt::host_layout)
}

/// A layout from a CPUID dump file: AIDA64/InstLatX64 text, the output of `cpuid -r`, or
/// xstate's JSON (`xstate host --json`). An unreadable file gives its negative errno
/// (`-ENOENT`, `-EACCES`, ...), an unusable dump `-EINVAL`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xstate_layout_from_dump(
    path: *const c_char,
    out: *mut *mut xstate_layout,
    err: *mut xstate_error,
) -> c_int {
    make(out, err, || {
        // SAFETY: the C contract: `path` is a NUL-terminated string.
        let path = unsafe { ffi::string(path, "path") }?;
        adapt::layout_from_text(&read_dump(path)?, path)
    })
}

/// A layout from a CPUID dump file whose leaf 0xD may lack the subleaf of a component its CPU
/// enumerates (old AIDA64 builds omit PT, MPX, PKRU or LWP): those components are left out of
/// the layout, as if masked, and named in `*omitted` (0 for a complete dump; required).
/// Anything that names one of them afterwards is refused as a component the layout does not
/// enumerate. Otherwise as `xstate_layout_from_dump`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xstate_layout_from_dump_partial(
    path: *const c_char,
    out: *mut *mut xstate_layout,
    omitted: *mut u64,
    err: *mut xstate_error,
) -> c_int {
    make(out, err, || {
        // SAFETY: the C contract: `path` is a NUL-terminated string, `omitted` a writable u64.
        let (path, omitted) = unsafe { (ffi::string(path, "path")?, ffi::get_mut(omitted, "omitted")?) };
        let (layout, left_out) = adapt::layout_from_text_partial(&read_dump(path)?, path)?;
        *omitted = left_out;
        Ok(layout)
    })
}

fn read_dump(path: &str) -> crate::error::Result<String> {
    let bytes = std::fs::read(path).map_err(|e| {
        Failure::new(
            e.raw_os_error().unwrap_or(libc::EIO),
            "the dump file must be readable",
            format_args!("{path}: {e}"),
        )
    })?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// A layout from a CPUID dump held in memory: `len` bytes of text (no NUL needed), in any
/// format `xstate_layout_from_dump` reads.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xstate_layout_from_dump_text(
    text: *const c_char,
    len: usize,
    out: *mut *mut xstate_layout,
    err: *mut xstate_error,
) -> c_int {
    make(out, err, || {
        // SAFETY: the C contract: `text` points to `len` readable bytes.
        let b = unsafe { ffi::bytes(text.cast::<u8>(), len, "text") }?;
        adapt::layout_from_text(&String::from_utf8_lossy(b), "the dump")
    })
}

/// Frees a layout (NULL: nothing). Handles made from it (policies, areas) keep their own copy.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xstate_layout_free(layout: *mut xstate_layout) {
    // SAFETY: the C contract: NULL or a live layout handle no other thread uses.
    guard_value((), || unsafe { ffi::free(layout) })
}

/// The user components the CPU supports (CPUID 0xD.0 EDX:EAX): the largest valid XCR0. 0 for
/// a NULL layout.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xstate_layout_xcr0_supported(layout: *const xstate_layout) -> u64 {
    // SAFETY: the C contract: NULL or a live layout handle.
    unsafe { ffi::query(layout, 0, |l| adapt::xcr0_supported(&l.layout)) }
}

/// The supervisor components the CPU supports (CPUID 0xD.1 EDX:ECX). 0 for a NULL layout.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xstate_layout_xss_supported(layout: *const xstate_layout) -> u64 {
    // SAFETY: the C contract: NULL or a live layout handle.
    unsafe { ffi::query(layout, 0, |l| adapt::xss_supported(&l.layout)) }
}

/// CPUID 0xD.1 EAX: bit 0 XSAVEOPT, 1 XSAVEC, 2 XGETBV1, 3 XSAVES, 4 XFD. 0 for a NULL layout.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xstate_layout_xsave_features(layout: *const xstate_layout) -> u32 {
    // SAFETY: the C contract: NULL or a live layout handle.
    unsafe { ffi::query(layout, 0, |l| adapt::xsave_features(&l.layout)) }
}

fn size_query(
    layout: *const xstate_layout,
    out: *mut usize,
    err: *mut xstate_error,
    f: impl FnOnce(&Layout) -> crate::error::Result<usize>,
) -> c_int {
    guard(err, || {
        // SAFETY: the C contract: a live layout handle and a writable `size_t`.
        let (l, out) = unsafe { (ffi::get(layout, "layout")?, ffi::get_mut(out, "out")?) };
        *out = f(&l.layout)?;
        Ok(())
    })
}

/// The size of a standard-format image for XCR0 `xcr0` (SDM Vol. 1 §13.4.3): the largest
/// offset + size over its user components (holes included), at least 576; 0 for `xcr0` = 0
/// (Xen's "no state"). Supported supervisor bits are ignored (a standard image holds none);
/// `-EINVAL` for a bit the CPU does not enumerate.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xstate_layout_standard_size(
    layout: *const xstate_layout,
    xcr0: u64,
    size: *mut usize,
    err: *mut xstate_error,
) -> c_int {
    size_query(layout, size, err, |l| adapt::standard_size(l, xcr0))
}

/// The size of a compacted image laying out `mask` (XCR0 | IA32_XSS, what XSAVEC/XSAVES write
/// with that RFBM; bit 63 ignored): components packed from 576 in index order, 64-byte aligned
/// where CPUID says so. `-EINVAL` for a bit the CPU does not enumerate, `-EOPNOTSUPP` if the
/// CPU has no compacted form.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xstate_layout_compacted_size(
    layout: *const xstate_layout,
    mask: u64,
    size: *mut usize,
    err: *mut xstate_error,
) -> c_int {
    size_query(layout, size, err, |l| adapt::compacted_size(l, mask))
}

/// The offset of component `index` in a compacted image whose XCOMP_BV is `xcomp_bv` (bit 63
/// ignored). `-ENOENT` if the component is not in XCOMP_BV, `-EINVAL` for an index outside
/// 0..=62 or bits the CPU does not enumerate, `-EOPNOTSUPP` without a compacted form.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xstate_layout_compacted_offset(
    layout: *const xstate_layout,
    index: u32,
    xcomp_bv: u64,
    offset: *mut usize,
    err: *mut xstate_error,
) -> c_int {
    size_query(layout, offset, err, |l| adapt::compacted_offset(l, index, xcomp_bv))
}

/// Component `index`'s size, standard offset and flags. `-ENOENT` if the CPU does not
/// enumerate it, `-EINVAL` for an index outside 0..=62.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn xstate_layout_component(
    layout: *const xstate_layout,
    index: u32,
    info: *mut xstate_component_info,
    err: *mut xstate_error,
) -> c_int {
    guard(err, || {
        // SAFETY: the C contract: a live layout handle and a writable `xstate_component_info`.
        let (l, info) = unsafe { (ffi::get(layout, "layout")?, ffi::get_mut(info, "info")?) };
        let (size, offset, supervisor, align64, xfd) = adapt::geometry(&l.layout, index)?;
        *info = xstate_component_info {
            size,
            offset,
            supervisor: supervisor.into(),
            align64: align64.into(),
            xfd: xfd.into(),
            reserved: 0,
        };
        Ok(())
    })
}
