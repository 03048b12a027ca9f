//! `xstate restore --pid PID IMAGE [--format F] [--cpuid FILE]`: writes a live process's
//! extended state with PTRACE_SETREGSET(NT_X86_XSTATE).
//!
//! The input (any record format, recognised by default) is read on the CPU it was saved on (a
//! portable record or a core with a layout note carries its own layout; `--cpuid` names it
//! otherwise, default this host; required for a record that says neither the layout nor a
//! length that fixes it: kvm-xsave, kvm-xsave2, xen-hvm) with the XCR0 it was saved with (`--xcr0`, else the record's,
//! else that CPU's default; never guessed from XSTATE_BV). A bare image must be exactly the
//! size that XCR0 gives there, so an image of another CPU or XCR0 is refused rather than read
//! with the wrong offsets. It is then re-laid-out for this host and the task's XCR0, sized to
//! exactly the task's user size (the kernel refuses a shorter buffer with EFAULT) and checked
//! with the `linux` profile before the kernel sees it: the kernel's own checks give EINVAL
//! without saying which rule. Nothing is written unless every check passes.

use std::path::PathBuf;

use clap::Args;
use serde_json::json;
use xstate::image::validate::{Context, Profile, validate};
use xstate::image::{Target, convert_between};
use xstate::record::{Format, Options};
use xstate::{Layout, Xfeatures};

use crate::cmd::imageio::{ImageFormat, Loaded, check_image_size, host_mxcsr_mask, load};
use crate::common::{
    CliError, CliResult, CpuArgs, Source, checked_masks, host_source, mask_json, placeable, print_json,
};
use crate::output::outln;

/// Arguments of `xstate restore`.
#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// The process to write.
    #[arg(long)]
    pub pid: i32,
    /// The state to load (`-`: standard input).
    pub image: PathBuf,
    /// File format of IMAGE (`auto` recognises records; other bytes are a bare image).
    #[arg(long, value_enum, default_value = "auto")]
    pub format: ImageFormat,
    /// The CPU IMAGE was saved on, and the XCR0 | XSS it was saved with (a record's own
    /// layout and XCR0 win over the defaults): `--cpuid` default this host (required for a
    /// kvm-xsave, kvm-xsave2 or xen-hvm record, which do not say), `--xcr0` default the
    /// record's, else the CPU's default.
    #[command(flatten)]
    pub cpu: CpuArgs,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs `xstate restore`.
pub fn run(args: &RestoreArgs) -> CliResult {
    let host = host_source()?;
    let src = args.cpu.source()?;
    let name = args.image.display().to_string();
    // --cpuid names the CPU the input was saved on: a file with its own layout must agree.
    let mut opts = Options::default();
    opts.layout_given = args.cpu.cpuid.is_some();
    let loaded = load(&args.image, args.format, &src.layout, &opts)?;
    let Some(image) = loaded.image.as_deref() else {
        // Xen's reading of the same record: "no xsave state" restores nothing, successfully.
        outln!("process {}: {name} ({}) holds no xsave state: nothing written", args.pid, loaded.format);
        return Ok(());
    };
    if loaded.layout.is_none() {
        saved_on_named_cpu(&args.cpu, &src, &loaded, image, &name)?;
    }
    let from: &Layout = loaded.layout.as_ref().unwrap_or(&src.layout);
    let (xcr0, xss) = args.cpu.masks(&src, (loaded.xcr0, loaded.xss));
    if loaded.layout.is_none() {
        placeable(&src, xcr0 | xss)?;
    }
    checked_masks(from, xcr0, xss)?;
    if loaded.format == Format::Image {
        check_image_size(image, from, xcr0, &name, &src.name)?;
    }
    let session = Session::open(args.pid)?;
    let task = session.current()?;
    let task_xcr0 = Xfeatures(task.get(464..472).map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8]))));
    // The image restored with its own RFBM on its CPU, laid out for the task's XCR0 here.
    let mut out = convert_between(image, from, xcr0 | xss, &host.layout, task_xcr0, Target::Standard)
        .map_err(|e| CliError::invalid(format!("{name}: for process {}: {e}", args.pid)))?
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
    let in_use = xstate::image::Header::read(&out).map(|h| h.xstate_bv).unwrap_or_default();
    if args.json {
        print_json(&json!({
            "pid": args.pid,
            "input": name,
            "format": crate::cmd::imageio::format_name(loaded.format),
            "size": out.len(),
            "xcr0": mask_json(xcr0),
            "task_xcr0": mask_json(task_xcr0),
            "xstate_bv": mask_json(in_use),
        }))
    } else {
        outln!(
            "process {}: {} bytes written (XCR0 {task_xcr0}, in use {in_use} ({}))",
            args.pid,
            out.len(),
            in_use.names()
        );
        Ok(())
    }
}

/// What a record of `f` is called when it records neither the CPU its image is laid out for
/// nor a length that fixes the layout (a kvm_xsave is 4096 bytes whatever it holds; a Xen HVM
/// record may end in zeros); `None` for the formats whose layout or exact length says.
fn layout_unrecorded(f: Format) -> Option<&'static str> {
    match f {
        Format::KvmXsave => Some("a kvm_xsave"),
        Format::KvmXsave2 => Some("a KVM_GET_XSAVE2 buffer"),
        Format::XenHvm => Some("a Xen HVM CPU_XSAVE record (its length may include a zero tail)"),
        _ => None,
    }
}

/// A record that does not say which CPU it was saved on is never read with a guessed layout:
/// `--cpuid` is required (exit 2), and the saving host's mask the record carries (KVM's
/// supported XCR0 at bytes 464..471, Xen's `xfeature_mask`) must be within what that CPU
/// supports (exit 1), or the record was saved elsewhere.
fn saved_on_named_cpu(cpu: &CpuArgs, src: &Source, loaded: &Loaded, image: &[u8], name: &str) -> CliResult {
    let Some(what) = layout_unrecorded(loaded.format) else {
        return Ok(());
    };
    if cpu.cpuid.is_none() {
        return Err(CliError::usage(format!(
            "{name}: {what} does not record the CPU it was saved on; give --cpuid (host for this machine)"
        )));
    }
    let (mask, field) = match loaded.format {
        Format::XenHvm => (loaded.state.as_ref().and_then(|s| s.uninterpreted.xfeature_mask), "xfeature_mask"),
        _ => (
            image.get(464..472).map(|b| Xfeatures(u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))),
            "supported XCR0 at bytes 464..471",
        ),
    };
    let lacking = mask.unwrap_or_default() & !src.layout.user_supported();
    if lacking.is_empty() {
        return Ok(());
    }
    Err(CliError::invalid(format!(
        "{name}: the saving host's {field} is {}, with {lacking} ({}) that {} does not support: saved on another \
         CPU than --cpuid names",
        mask.unwrap_or_default(),
        lacking.names(),
        src.name
    )))
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
