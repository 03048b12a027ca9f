//! `xstate restore --pid PID IMAGE [--format F] [--cpuid FILE]`: writes a live process's
//! extended state with PTRACE_SETREGSET(NT_X86_XSTATE).
//!
//! The input (any record format, recognised with `--format auto`) is re-laid-out for this host
//! (a portable record or a core with a layout note carries its own source layout; `--cpuid`
//! names it otherwise), sized to exactly the task's user size — the kernel refuses any other
//! length with EFAULT — and checked with the `linux` profile against the task's XCR0 before the
//! kernel sees it: the kernel's own checks give EINVAL without saying which rule.

use std::path::PathBuf;

use clap::Args;
use xstate::image::validate::{Context, Profile, validate};
use xstate::image::{Target, convert};
use xstate::record::{self, Options};
use xstate::{Layout, Xfeatures};

use crate::cmd::imageio::ImageFormat;
use crate::cmd::imageio::host_mxcsr_mask;
use crate::common::{CliError, CliResult, file_source, host_source, read_file};
use crate::output::outln;

/// Arguments of `xstate restore`.
#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// The process to write.
    #[arg(long)]
    pub pid: i32,
    /// The state to load.
    pub image: PathBuf,
    /// File format of IMAGE (`auto` recognises it).
    #[arg(long, value_enum, default_value = "auto")]
    pub format: ImageFormat,
    /// CPUID dump of the CPU IMAGE was saved on, if the record does not carry its layout;
    /// default: this host.
    #[arg(long, value_name = "FILE")]
    pub cpuid: Option<PathBuf>,
}

/// Runs `xstate restore`.
pub fn run(args: &RestoreArgs) -> CliResult {
    let host = host_source()?;
    let bytes = read_file(&args.image)?;
    let name = args.image.display().to_string();
    let saved_on: Layout = match &args.cpuid {
        Some(p) => file_source(p)?.layout,
        None => host.layout.clone(),
    };
    let format = if let Some(f) = args.format.as_record() {
        f
    } else {
        record::detect(&bytes, &saved_on)
            .ok_or_else(|| CliError::invalid(format!("{name}: not a recognised record")))?
    };
    // A bare image does not record its XCR0: the saving CPU's default (XGETBV here, every user
    // component of a dump).
    let mut opts = Options::default();
    opts.xcr0 = Some(if args.cpuid.is_some() { saved_on.user_supported() } else { host.default_xcr0 });
    let contents =
        record::read(format, &bytes, &saved_on, &opts).map_err(|e| CliError::invalid(format!("{name}: {e}")))?;
    let from = contents.layout.clone().unwrap_or(saved_on);
    let Some((state, image)) = contents.state().and_then(|s| s.image.as_ref().map(|i| (s, i))) else {
        return Err(CliError::invalid(format!("{name}: the {format} record holds no XSAVE image")));
    };
    let session = Session::open(args.pid)?;
    let task = session.current()?;
    let task_xcr0 = Xfeatures(task.get(464..472).map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8]))));
    let Some(rfbm) = state.rfbm.map(|r| r & from.user_supported()) else {
        return Err(CliError::invalid(format!("{name}: the {format} record does not say its XCR0")));
    };
    let mut out = convert(image.image().bytes(), &from, &host.layout, rfbm, Target::Standard)
        .map_err(|e| CliError::invalid(format!("{name}: for this host: {e}")))?
        .into_inner()
        .to_vec();
    if out.len() > task.len() {
        return Err(CliError::invalid(format!(
            "{name}: the state needs {} bytes but process {}'s buffer is {} (XCR0 {task_xcr0}): it uses states the task has not enabled",
            out.len(),
            args.pid,
            task.len()
        )));
    }
    out.resize(task.len(), 0);
    // NT_X86_XSTATE carries XCR0 at 464; the kernel ignores it on write, keep it truthful.
    out[464..472].copy_from_slice(&task_xcr0.bits().to_le_bytes());
    let ctx = Context::new(task_xcr0).with_mxcsr_mask_field(host_mxcsr_mask());
    validate(&out, &host.layout, Profile::Linux, &ctx)
        .map_err(|e| CliError::invalid(format!("{name}: process {} would refuse it: {e}", args.pid)))?;
    session.set(&out)?;
    outln!(
        "process {}: {} bytes written (XCR0 {task_xcr0}, in use {})",
        args.pid,
        out.len(),
        image.image().xstate_bv()
    );
    Ok(())
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
struct Session {
    pid: i32,
    seized: xstate_hw::ptrace::Seized,
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
impl Session {
    fn open(pid: i32) -> CliResult<Session> {
        let seized =
            xstate_hw::ptrace::Seized::new(pid).map_err(|e| CliError::usage(format!("process {pid}: ptrace: {e}")))?;
        Ok(Session { pid, seized })
    }
    fn current(&self) -> CliResult<Vec<u8>> {
        self.seized
            .get()
            .map_err(|e| CliError::usage(format!("process {}: PTRACE_GETREGSET(NT_X86_XSTATE): {e}", self.pid)))
    }
    fn set(&self, image: &[u8]) -> CliResult {
        self.seized.set(image).map_err(|e| {
            let msg = format!("process {}: PTRACE_SETREGSET(NT_X86_XSTATE): {e}", self.pid);
            // EINVAL/EFAULT: the kernel refused the bytes (invalid input); others: I/O.
            const EFAULT: i32 = 14;
            const EINVAL: i32 = 22;
            match e.raw_os_error() {
                Some(EINVAL | EFAULT) => CliError::invalid(msg),
                _ => CliError::usage(msg),
            }
        })
    }
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
struct Session;

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
impl Session {
    fn open(_pid: i32) -> CliResult<Session> {
        Err(CliError::usage("xstate restore needs x86_64 Linux"))
    }
    fn current(&self) -> CliResult<Vec<u8>> {
        unreachable!()
    }
    fn set(&self, _image: &[u8]) -> CliResult {
        unreachable!()
    }
}
