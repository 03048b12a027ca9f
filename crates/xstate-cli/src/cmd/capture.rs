//! `xstate capture --pid PID [-o OUT] [--format F] [--json]`: a live process's extended state,
//! read with PTRACE_GETREGSET(NT_X86_XSTATE).
//!
//! The process is seized and interrupted for the read (PTRACE_SEIZE + PTRACE_INTERRUPT) and
//! left as it was: running, or stopped if it was stopped. The kernel hands out a standard image
//! of the task's user size with XCR0 at byte 464; `--format` re-expresses it in any writable
//! record format (default `nt-xstate`, the kernel's own bytes); `--vcpu` gives the vCPU a
//! Xen record needs.

use std::path::PathBuf;

use clap::Args;
use serde_json::json;
use xstate::record::{self, Format, Options};

use crate::cmd::imageio::ImageFormat;
use crate::common::{CliError, CliResult, host_source, mask_json, write_output};
use crate::output::{emit, summary};

/// Arguments of `xstate capture`.
#[derive(Args, Debug)]
pub struct CaptureArgs {
    /// The process to read.
    #[arg(long)]
    pub pid: i32,
    /// Write the state here (atomically; `-`: stdout, the summary then on stderr); without it,
    /// print a summary only.
    #[arg(short = 'o', long, value_name = "OUT")]
    pub output: Option<PathBuf>,
    /// File format of OUT; default nt-xstate (the kernel's own bytes).
    #[arg(long, value_enum, requires = "output")]
    pub format: Option<ImageFormat>,
    /// Fields the output format cannot hold, to drop rather than refuse (as `convert --drop`):
    /// xcr0. Not needed when the task's XCR0 is this host's, which a reader assumes anyway.
    #[arg(long, value_name = "FIELDS", value_delimiter = ',', requires = "output")]
    pub drop: Vec<String>,
    /// The vCPU to record, for a format that records one (xen-hvm instance, xen-pv vcpu_id),
    /// as `convert --vcpu`: a process has none of its own.
    #[arg(long, value_name = "N", requires = "output")]
    pub vcpu: Option<u32>,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs `xstate capture`.
pub fn run(args: &CaptureArgs) -> CliResult {
    let given = args.format.unwrap_or(ImageFormat::NtXstate);
    let format = match given.as_record() {
        Some(f) if f.writable() => f,
        _ => return Err(CliError::usage(format!("--format {} cannot be written", given.name()))),
    };
    // A flag without effect is a usage error: only Xen's per-vCPU records hold a vCPU.
    if args.vcpu.is_some() && !matches!(format, Format::XenHvm | Format::XenPv) {
        return Err(CliError::usage(format!(
            "--vcpu applies to formats that record a vCPU (xen-hvm, xen-pv), not {}",
            given.name()
        )));
    }
    let mut drop = xstate::record::FieldSet::NONE;
    for d in &args.drop {
        match xstate::record::Field::from_name(d) {
            Some(f) => drop = drop.with(f),
            None => {
                return Err(CliError::usage(format!("--drop {d:?}: expected xcr0, xss, xcr0-accum, vcpu or image")));
            }
        }
    }
    let host = host_source()?;
    let bytes = ptrace_get(args.pid)?;
    let contents = record::read(Format::NtXstate, &bytes, &host.layout, &Options::default())
        .map_err(|e| CliError::invalid(format!("process {}: the kernel's NT_X86_XSTATE: {e}", args.pid)))?;
    let state = contents.state().cloned().unwrap_or_else(xstate::record::State::no_xsave_state);
    let in_use = state.image.as_ref().map(|i| i.image().xstate_bv()).unwrap_or_default();
    let xcr0 = state.xcr0.unwrap_or_default();
    if let Some(out) = &args.output {
        let data = if format == Format::NtXstate {
            bytes.clone()
        } else {
            // A format without an XCR0 field loses nothing when the task's XCR0 is the one its
            // readers assume (this host's); otherwise it is dropped only when asked.
            let mut opts = Options::default();
            opts.drop = drop;
            opts.vcpu = args.vcpu;
            if Some(host.default_xcr0) == state.xcr0 {
                opts.drop = opts.drop.with(xstate::record::Field::Xcr0);
            }
            record::write(format, &contents, &host.layout, &host.layout, &opts)
                .map_err(|e| CliError::invalid(format!("process {}: as {format}: {e}", args.pid)))?
        };
        write_output(out, &data)?;
    }
    let text = if args.json {
        let v = json!({
            "pid": args.pid,
            "size": bytes.len(),
            "xcr0": mask_json(xcr0),
            "xstate_bv": mask_json(in_use),
            "in_use": in_use.names().to_string(),
            "format": crate::cmd::imageio::format_name(format),
            "output": args.output.as_ref().map(|p| p.display().to_string()),
        });
        serde_json::to_string_pretty(&v).unwrap_or_default() + "\n"
    } else {
        format!(
            "process {}: {} bytes, XCR0 {} ({}), in use {} ({}){}\n",
            args.pid,
            bytes.len(),
            xcr0,
            xcr0.names(),
            in_use,
            in_use.names(),
            args.output.as_ref().map(|p| format!(", written to {} as {format}", p.display())).unwrap_or_default()
        )
    };
    // With `-o -` the record is stdout; the summary then goes to stderr so it cannot corrupt it.
    match &args.output {
        Some(out) => summary(out, &text),
        None => emit(&text),
    }
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn ptrace_get(pid: i32) -> CliResult<Vec<u8>> {
    xstate_hw::ptrace::get_xstate(pid)
        .map_err(|e| CliError::usage(format!("process {pid}: PTRACE_GETREGSET(NT_X86_XSTATE): {e}")))
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
fn ptrace_get(_pid: i32) -> CliResult<Vec<u8>> {
    Err(CliError::usage("xstate capture needs x86_64 Linux"))
}
