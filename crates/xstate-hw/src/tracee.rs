//! A child process that holds a known extended state, for tests against the kernel and gdb.
//!
//! The child loads a standard-format image with XRSTOR (so its ZMM, opmask, x87, tile... registers
//! hold exactly the image's values), then either stops itself with SIGSTOP — a debugger or
//! `xstate capture` can read and change its state — and, once continued, saves its registers with
//! XSAVE and writes them to a pipe for the parent to check; or it aborts with SIGABRT so the kernel
//! writes a core dump of that state.
//!
//! Between the XRSTOR and the stop the child runs nothing but a `kill` system call, inside the same
//! `asm!` block, so no compiled code can disturb the registers.

use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use xstate::aligned::AlignedBuf;
use xstate::{Component, Xfeatures};

use crate::perm;
use crate::xsave::Host;

/// What the child does once its state is loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// SIGSTOP itself; when continued, XSAVE (RFBM = XCR0) and report the image to the parent.
    StopThenReport,
    /// SIGABRT with RLIMIT_CORE raised, so the kernel writes a core dump.
    Abort,
}

/// The child process.
#[derive(Debug)]
pub struct Tracee {
    pid: libc::pid_t,
    report: Option<File>,
    core_dir: Option<PathBuf>,
    reaped: bool,
    report_len: usize,
}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 { Err(io::Error::last_os_error()) } else { Ok(r) }
}

/// Starts a child that XRSTORs `image` (standard format, RFBM = XCR0) and then does `ending`.
/// For [`Ending::Abort`], the child first changes into `core_dir` (where a `core_pattern` of
/// "core" puts the dump). TILEDATA permission is requested first when the image uses it.
pub fn spawn(host: &Host, image: &[u8], ending: Ending, core_dir: Option<&Path>) -> io::Result<Tracee> {
    let bv = image.get(512..520).map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])));
    if Xfeatures(bv).contains(Component::TILEDATA) {
        perm::ensure_amx()?;
    }
    let mut img = AlignedBuf::zeroed(image.len().max(host.area_size()));
    img[..image.len()].copy_from_slice(image);
    let mut out = AlignedBuf::zeroed(host.area_size());
    let report_len = host.layout().standard_size(host.xcr0()).unwrap_or(576) as usize;
    let dir = match core_dir {
        Some(d) => Some(CString::new(d.as_os_str().as_encoded_bytes()).map_err(io::Error::other)?),
        None => None,
    };
    let sig = match ending {
        Ending::StopThenReport => libc::SIGSTOP,
        Ending::Abort => libc::SIGABRT,
    };
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into the array.
    cvt(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: the descriptors were just created and are owned by nobody else.
    let (rd, wr) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let img_ptr = img.as_ptr();
    let out_ptr = out.as_mut_ptr();
    // SAFETY: fork in a possibly multi-threaded process. The child calls only async-signal-safe
    // system calls (chdir, setrlimit, getpid, kill, write, _exit) and runs one asm block; it
    // allocates nothing and takes no locks. `img` and `out` were allocated before the fork, are
    // 64-byte aligned and `host.area_size()` bytes long, enough for XRSTOR/XSAVE with RFBM = XCR0.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        // SAFETY: see above; this is the child and it never returns.
        unsafe {
            use std::os::fd::AsRawFd;
            if let Some(d) = &dir {
                libc::chdir(d.as_ptr());
            }
            if ending == Ending::Abort {
                let lim = libc::rlimit { rlim_cur: libc::RLIM_INFINITY, rlim_max: libc::RLIM_INFINITY };
                if libc::setrlimit(libc::RLIMIT_CORE, &lim) != 0 {
                    let lim = libc::rlimit { rlim_cur: 64 << 20, rlim_max: 64 << 20 };
                    libc::setrlimit(libc::RLIMIT_CORE, &lim);
                }
                libc::signal(libc::SIGABRT, libc::SIG_DFL);
            }
            let me = libc::getpid();
            core::arch::asm!(
                "mov eax, -1",
                "mov edx, -1",
                "xrstor64 [{img}]",
                "mov eax, 62", // SYS_kill
                "mov rdi, {pid}",
                "mov rsi, {sig}",
                "syscall",
                "mov eax, -1",
                "mov edx, -1",
                "xsave64 [{out}]",
                img = in(reg) img_ptr,
                out = in(reg) out_ptr,
                pid = in(reg) me as i64,
                sig = in(reg) sig as i64,
                out("rax") _, out("rdx") _, out("rdi") _, out("rsi") _, out("rcx") _, out("r11") _,
                clobber_abi("C"),
            );
            let mut off = 0;
            while off < report_len {
                let n = libc::write(wr.as_raw_fd(), out_ptr.add(off) as *const libc::c_void, report_len - off);
                if n <= 0 {
                    libc::_exit(3);
                }
                off += n as usize;
            }
            libc::_exit(0);
        }
    }
    drop(wr);
    drop(img);
    drop(out);
    Ok(Tracee {
        pid,
        report: Some(File::from(rd)),
        core_dir: core_dir.map(Path::to_path_buf),
        reaped: false,
        report_len,
    })
}

/// Starts a child that XRSTORs `image` and stops itself ([`Ending::StopThenReport`]), and
/// waits until it has stopped: its registers hold the image's state, ready to be read.
pub fn spawn_stopped(host: &Host, image: &[u8]) -> io::Result<Tracee> {
    let mut child = spawn(host, image, Ending::StopThenReport, None)?;
    child.wait_stopped()?;
    Ok(child)
}

impl Tracee {
    /// The child's process id.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    fn wait(&mut self, flags: libc::c_int) -> io::Result<libc::c_int> {
        let mut status = 0;
        loop {
            // SAFETY: waitpid writes the status into a local int.
            let r = unsafe { libc::waitpid(self.pid, &mut status, flags) };
            if r == self.pid {
                if libc::WIFEXITED(status) || libc::WIFSIGNALED(status) {
                    self.reaped = true;
                }
                return Ok(status);
            }
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EINTR) {
                return Err(e);
            }
        }
    }

    /// Waits until the child has stopped itself (its state is loaded).
    pub fn wait_stopped(&mut self) -> io::Result<()> {
        let status = self.wait(libc::WUNTRACED)?;
        if libc::WIFSTOPPED(status) {
            Ok(())
        } else {
            Err(io::Error::other(format!("child {} ended before stopping (wait status {status:#x})", self.pid)))
        }
    }

    /// Continues a stopped child and returns the image it saved (XSAVE, RFBM = XCR0, standard
    /// size of XCR0 bytes) after being continued.
    pub fn resume_and_report(mut self) -> io::Result<Vec<u8>> {
        // SAFETY: kill with a valid signal number.
        cvt(unsafe { libc::kill(self.pid, libc::SIGCONT) })?;
        let mut buf = Vec::new();
        if let Some(mut f) = self.report.take() {
            f.read_to_end(&mut buf)?;
        }
        let status = self.wait(0)?;
        if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 || buf.len() != self.report_len {
            return Err(io::Error::other(format!(
                "child {} failed to report (wait status {status:#x}, {} of {} bytes)",
                self.pid,
                buf.len(),
                self.report_len
            )));
        }
        Ok(buf)
    }

    /// Waits for an aborting child and returns the core file it left, if the kernel wrote one
    /// into the core directory (`core` or `core.PID`).
    pub fn wait_core(mut self) -> io::Result<Option<PathBuf>> {
        let status = self.wait(0)?;
        if !libc::WIFSIGNALED(status) || !libc::WCOREDUMP(status) {
            return Ok(None);
        }
        let dir = self.core_dir.clone().unwrap_or_else(|| PathBuf::from("."));
        for name in [format!("core.{}", self.pid), "core".to_string()] {
            let p = dir.join(name);
            if p.is_file() {
                return Ok(Some(p));
            }
        }
        Ok(None)
    }
}

impl Drop for Tracee {
    fn drop(&mut self) {
        if !self.reaped {
            // SAFETY: signalling and reaping our own child.
            unsafe {
                libc::kill(self.pid, libc::SIGKILL);
                let mut s = 0;
                libc::waitpid(self.pid, &mut s, 0);
            }
        }
    }
}
