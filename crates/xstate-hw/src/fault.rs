//! Catching the fault an instruction raises, so the CPU can be asked "would this fault?".
//!
//! XRSTOR reports an invalid image with #GP, which Linux delivers as SIGSEGV (si_code
//! SI_KERNEL); a read past an accessible page is #PF (SIGSEGV, SEGV_ACCERR/MAPERR); an
//! instruction the CPU or kernel refuses is #UD or an XFD #NM the kernel turns into SIGILL.
//!
//! The protocol: code that may fault runs inside one `asm!` block that loads a recovery address
//! into R12 and a cookie value into R13 first. The handler recognises the cookie in the interrupted
//! context, writes the signal number, si_code and si_addr into RAX, RDX and RSI, and resumes at
//! R12. Any other signal goes to the handler that was installed before ours (Rust's stack
//! overflow handler, for one), or to the default action.

use std::sync::OnceLock;

/// si_code of a #PF on an unmapped address (asm-generic/siginfo.h).
const SEGV_MAPERR: i32 = 1;
/// si_code of a #PF on a mapped but inaccessible address.
const SEGV_ACCERR: i32 = 2;

/// The value R13 holds while a guarded instruction runs.
pub(crate) const COOKIE: u64 = 0x5853_5441_5445_4658;

/// A fault taken by a guarded instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fault {
    /// The signal: SIGSEGV for #GP and #PF, SIGILL for #UD or a refused XFD #NM.
    pub signal: i32,
    /// `si_code`: SI_KERNEL (0x80) for #GP, SEGV_MAPERR/SEGV_ACCERR for #PF.
    pub code: i32,
    /// `si_addr`: the faulting data address for #PF, 0 for #GP.
    pub addr: u64,
}

impl Fault {
    /// A general-protection fault (#GP): SIGSEGV with si_code SI_KERNEL.
    pub fn is_general_protection(&self) -> bool {
        self.signal == libc::SIGSEGV && self.code == libc::SI_KERNEL
    }

    /// A page fault (#PF) on an inaccessible address: SIGSEGV with SEGV_MAPERR or SEGV_ACCERR.
    pub fn is_page_fault(&self) -> bool {
        self.signal == libc::SIGSEGV && (self.code == SEGV_MAPERR || self.code == SEGV_ACCERR)
    }
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_general_protection() {
            f.write_str("#GP (SIGSEGV, SI_KERNEL)")
        } else if self.is_page_fault() {
            write!(f, "#PF at {:#x} (SIGSEGV)", self.addr)
        } else if self.signal == libc::SIGILL {
            write!(f, "SIGILL (code {}) at {:#x}", self.code, self.addr)
        } else {
            write!(f, "signal {} (code {}) at {:#x}", self.signal, self.code, self.addr)
        }
    }
}

impl std::error::Error for Fault {}

struct Previous {
    segv: libc::sigaction,
    ill: libc::sigaction,
}

// SAFETY: `libc::sigaction` is plain data (a handler address, flags and a signal mask); sharing
// it between threads read-only is sound.
unsafe impl Sync for Previous {}
// SAFETY: as above; it owns nothing.
unsafe impl Send for Previous {}

static PREVIOUS: OnceLock<Previous> = OnceLock::new();

extern "C" fn on_fault(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: installed with SA_SIGINFO, so the kernel passes a valid siginfo_t and a
    // ucontext_t for the interrupted thread; both live for the duration of the handler. We only
    // read and write register slots of that context, which is async-signal-safe.
    unsafe {
        let uc = &mut *(ctx as *mut libc::ucontext_t);
        let g = &mut uc.uc_mcontext.gregs;
        if g[libc::REG_R13 as usize] as u64 == COOKIE && g[libc::REG_R12 as usize] != 0 {
            g[libc::REG_RAX as usize] = sig as i64;
            g[libc::REG_RDX as usize] = (*info).si_code as i64;
            g[libc::REG_RSI as usize] = (*info).si_addr() as i64;
            g[libc::REG_RIP as usize] = g[libc::REG_R12 as usize];
            g[libc::REG_R13 as usize] = 0;
            return;
        }
        let Some(prev) = PREVIOUS.get() else {
            libc::signal(sig, libc::SIG_DFL);
            return;
        };
        let old = if sig == libc::SIGSEGV { &prev.segv } else { &prev.ill };
        let h = old.sa_sigaction;
        if h == libc::SIG_DFL || h == libc::SIG_IGN {
            // Put the old disposition back; the instruction re-executes and takes it.
            libc::sigaction(sig, old, std::ptr::null_mut());
        } else if old.sa_flags & libc::SA_SIGINFO != 0 {
            let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) = std::mem::transmute(h);
            f(sig, info, ctx);
        } else {
            let f: extern "C" fn(libc::c_int) = std::mem::transmute(h);
            f(sig);
        }
    }
}

/// Installs the handler for SIGSEGV and SIGILL once per process, keeping the previous ones.
pub(crate) fn install() {
    PREVIOUS.get_or_init(|| {
        // SAFETY: sigaction with a zeroed struct plus handler, SA_SIGINFO | SA_ONSTACK
        // flags and an empty mask is the documented way to install a handler; the old actions are
        // written into locals we own.
        unsafe {
            let mut act: libc::sigaction = std::mem::zeroed();
            act.sa_sigaction = on_fault as *const () as usize;
            act.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
            libc::sigemptyset(&mut act.sa_mask);
            let mut segv: libc::sigaction = std::mem::zeroed();
            let mut ill: libc::sigaction = std::mem::zeroed();
            libc::sigaction(libc::SIGSEGV, &act, &mut segv);
            libc::sigaction(libc::SIGILL, &act, &mut ill);
            Previous { segv, ill }
        }
    });
}
