//! A live process's extended state through ptrace: PTRACE_GETREGSET / PTRACE_SETREGSET with
//! NT_X86_XSTATE (Linux `arch/x86/kernel/fpu/regset.c`; byte layout in docs/FORMATS.md, "Linux").
//!
//! The kernel hands out a standard-format image of the task's user features at the task's
//! user size, with XCR0 at byte 464, and takes one back only at exactly that size (EFAULT
//! otherwise) after its own validation (EINVAL for XCOMP_BV ≠ 0, bad MXCSR, reserved bytes).
//!
//! Attaching uses PTRACE_SEIZE + PTRACE_INTERRUPT, so a process that is already stopped (group
//! stop) stays stopped after the detach, and a running one is stopped only for the access.

use std::io;

/// The regset note type of the XSAVE area.
pub const NT_X86_XSTATE: libc::c_int = 0x202;

/// Largest buffer offered to PTRACE_GETREGSET; the kernel returns the real size.
const MAX_XSTATE: usize = 64 * 1024;

fn check(r: libc::c_long) -> io::Result<libc::c_long> {
    if r < 0 { Err(io::Error::last_os_error()) } else { Ok(r) }
}

/// A process seized with PTRACE_SEIZE and stopped with PTRACE_INTERRUPT; detached on drop. Use
/// it to read or write the state many times without re-attaching.
pub struct Seized {
    pid: libc::pid_t,
}

impl Seized {
    /// Seizes and interrupts process `pid`, waiting until it is stopped.
    pub fn new(pid: libc::pid_t) -> io::Result<Seized> {
        // SAFETY: PTRACE_SEIZE and PTRACE_INTERRUPT take no memory arguments (addr and data are
        // null/0); waitpid writes into a local int.
        unsafe {
            check(libc::ptrace(libc::PTRACE_SEIZE, pid, std::ptr::null_mut::<libc::c_void>(), 0 as libc::c_long))?;
            let s = Seized { pid };
            check(libc::ptrace(libc::PTRACE_INTERRUPT, pid, std::ptr::null_mut::<libc::c_void>(), 0 as libc::c_long))?;
            let mut status = 0;
            loop {
                let r = libc::waitpid(pid, &mut status, libc::__WALL);
                if r == pid {
                    break;
                }
                let e = io::Error::last_os_error();
                if e.raw_os_error() != Some(libc::EINTR) {
                    return Err(e);
                }
            }
            if !libc::WIFSTOPPED(status) {
                return Err(io::Error::other(format!("process {pid} did not stop (wait status {status:#x})")));
            }
            Ok(s)
        }
    }

    /// PTRACE_GETREGSET(NT_X86_XSTATE): the tracee's standard-format image.
    pub fn get(&self) -> io::Result<Vec<u8>> {
        let mut buf = vec![0u8; MAX_XSTATE];
        let n = self.get_into(&mut buf)?;
        buf.truncate(n);
        Ok(buf)
    }

    /// PTRACE_GETREGSET into `buf`; returns the number of bytes the kernel wrote.
    pub fn get_into(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.regset(libc::PTRACE_GETREGSET, buf)
    }

    /// PTRACE_SETREGSET(NT_X86_XSTATE); the kernel wants exactly the task's user size.
    pub fn set(&self, image: &[u8]) -> io::Result<()> {
        // The iovec takes a mutable pointer; SETREGSET only reads, but hand it a copy.
        self.regset(libc::PTRACE_SETREGSET, &mut image.to_vec()).map(|_| ())
    }

    /// `request` (PTRACE_GETREGSET or PTRACE_SETREGSET) for NT_X86_XSTATE with an iovec over
    /// `buf`; returns the iovec length after the call (the bytes written, for GETREGSET).
    fn regset(&self, request: libc::c_uint, buf: &mut [u8]) -> io::Result<usize> {
        let mut iov = libc::iovec { iov_base: buf.as_mut_ptr() as *mut libc::c_void, iov_len: buf.len() };
        // SAFETY: the iovec describes `buf`, which lives across the call. GETREGSET writes at
        // most iov_len bytes into it and updates iov_len to the amount written; SETREGSET only
        // reads iov_len bytes from it.
        unsafe {
            check(libc::ptrace(request, self.pid, NT_X86_XSTATE as usize as *mut libc::c_void, &mut iov))?;
        }
        Ok(iov.iov_len)
    }
}

impl Drop for Seized {
    fn drop(&mut self) {
        // SAFETY: PTRACE_DETACH with no signal; takes no memory arguments.
        unsafe {
            libc::ptrace(libc::PTRACE_DETACH, self.pid, std::ptr::null_mut::<libc::c_void>(), 0 as libc::c_long);
        }
    }
}

/// Reads process `pid`'s (main thread's) extended state: a standard-format image of the
/// kernel's user size for the task, XCR0 at 464.
pub fn get_xstate(pid: i32) -> io::Result<Vec<u8>> {
    Seized::new(pid)?.get()
}

/// Writes process `pid`'s extended state. The kernel requires `image.len()` to equal the task's
/// user size exactly (EFAULT otherwise) and validates the header and MXCSR (EINVAL).
pub fn set_xstate(pid: i32, image: &[u8]) -> io::Result<()> {
    Seized::new(pid)?.set(image)
}
