//! Linux `arch_prctl` permissions for dynamically enabled components (AMX TILEDATA).
//!
//! Linux arms XFD for TILEDATA until a process asks for it: a tile instruction or an XRSTOR
//! with XSTATE_BV\[18\] = 1 before `ARCH_REQ_XCOMP_PERM` kills the process with SIGILL.
//! Permission is per process, inherited on fork and reset on exec.

use std::io;

use xstate::{Component, Xfeatures};

const ARCH_GET_XCOMP_SUPP: libc::c_int = 0x1021;
const ARCH_GET_XCOMP_PERM: libc::c_int = 0x1022;
const ARCH_REQ_XCOMP_PERM: libc::c_int = 0x1023;
const ARCH_GET_XCOMP_GUEST_PERM: libc::c_int = 0x1024;
const ARCH_REQ_XCOMP_GUEST_PERM: libc::c_int = 0x1025;

fn get(code: libc::c_int) -> io::Result<Xfeatures> {
    let mut v: u64 = 0;
    // SAFETY: the ARCH_GET_XCOMP_* codes write one u64 through the pointer, which points to a
    // live, writable u64.
    let r = unsafe { libc::syscall(libc::SYS_arch_prctl, code, &mut v as *mut u64) };
    if r == 0 { Ok(Xfeatures(v)) } else { Err(io::Error::last_os_error()) }
}

fn request(code: libc::c_int, c: Component) -> io::Result<()> {
    // SAFETY: ARCH_REQ_XCOMP_* takes the component number by value and touches no memory.
    let r = unsafe { libc::syscall(libc::SYS_arch_prctl, code, c.index() as libc::c_ulong) };
    if r == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// The components the kernel supports for this process, FP|SSE included (ARCH_GET_XCOMP_SUPP).
pub fn supported() -> io::Result<Xfeatures> {
    get(ARCH_GET_XCOMP_SUPP)
}

/// The components this process may use (ARCH_GET_XCOMP_PERM).
pub fn permitted() -> io::Result<Xfeatures> {
    get(ARCH_GET_XCOMP_PERM)
}

/// The components this process's KVM guests may use (ARCH_GET_XCOMP_GUEST_PERM).
pub fn guest_permitted() -> io::Result<Xfeatures> {
    get(ARCH_GET_XCOMP_GUEST_PERM)
}

/// Asks for a dynamic component for this process. Only TILEDATA (18) can be requested; other
/// components below 20 give EOPNOTSUPP, even TILECFG.
pub fn request_permission(c: Component) -> io::Result<()> {
    request(ARCH_REQ_XCOMP_PERM, c)
}

/// Asks for a dynamic component for this process's KVM guests; EBUSY once a vCPU exists.
pub fn request_guest_permission(c: Component) -> io::Result<()> {
    request(ARCH_REQ_XCOMP_GUEST_PERM, c)
}

/// Makes sure this process may use AMX: requests TILEDATA if the kernel supports it and it is
/// not yet permitted. Returns the permitted mask afterwards; `Ok` with AMX absent where the
/// kernel or CPU lacks it.
pub fn ensure_amx() -> io::Result<Xfeatures> {
    let supp = match supported() {
        Ok(s) => s,
        // Kernels before 5.16 have no XCOMP codes and no dynamic features.
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => return Ok(Xfeatures::EMPTY),
        Err(e) => return Err(e),
    };
    if supp.contains(Component::TILEDATA) && !permitted()?.contains(Component::TILEDATA) {
        request_permission(Component::TILEDATA)?;
    }
    permitted()
}
