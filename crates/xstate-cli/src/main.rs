//! `xstate`: x86 extended processor state on the command line.
//!
//! Exit codes: 0 success/valid/compatible; 1 the input is invalid or incompatible (one line on
//! stderr naming the rule and the offending bits or bytes); 2 usage, unreadable file or I/O.

mod cmd;
mod common;
mod output;
mod picture;

use std::io::Write as _;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// x86 extended processor state (XSAVE): layouts, images, records.
#[derive(Parser, Debug)]
#[command(name = "xstate", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// This machine's XSAVE layout, checked against the hardware.
    Host(cmd::host::HostArgs),
    /// One CPU's XSAVE geometry, from this host or a CPUID dump.
    Layout(cmd::layout::LayoutArgs),
    /// Would a consumer (the CPU, Linux, KVM, Xen) accept this XSAVE image?
    Validate(cmd::validate::ValidateArgs),
    /// Converts an XSAVE image between standard and compacted formats, layouts and records.
    Convert(cmd::convert::ConvertArgs),
    /// Shows an XSAVE image or record: header, components, registers.
    Inspect(cmd::inspect::InspectArgs),
    /// Derives a guest's CPUID leaf 0xD from a host and a feature selection.
    Policy(cmd::policy::PolicyArgs),
    /// Can state move from one CPU or policy to another?
    Compat(cmd::compat::CompatArgs),
    /// Reads the extended state notes of an ELF core dump.
    Core(cmd::core::CoreArgs),
    /// Reads, checks and patches the FPU/XSAVE state of a CRIU checkpoint.
    Criu(cmd::criu::CriuArgs),
    /// Reads a live process's extended state (ptrace).
    Capture(cmd::capture::CaptureArgs),
    /// Writes a live process's extended state (ptrace).
    Restore(cmd::restore::RestoreArgs),
    /// KVM's XSAVE capabilities and a guest round trip.
    Kvm(cmd::kvm::KvmArgs),
}

fn main() -> ExitCode {
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    xstate_hw::process::default_sigpipe();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // --help, --version (exit 0) and a bare `xstate` (the command list, exit 2) in full.
        Err(e) if !e.use_stderr() || e.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            e.exit()
        }
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "xstate: {}", one_line(&e));
            return ExitCode::from(2);
        }
    };
    let result = match &cli.command {
        Command::Host(a) => cmd::host::run(a),
        Command::Layout(a) => cmd::layout::run(a),
        Command::Validate(a) => cmd::validate::run(a),
        Command::Convert(a) => cmd::convert::run(a),
        Command::Inspect(a) => cmd::inspect::run(a),
        Command::Policy(a) => cmd::policy::run(a),
        Command::Compat(a) => cmd::compat::run(a),
        Command::Core(a) => cmd::core::run(a),
        Command::Criu(a) => cmd::criu::run(a),
        Command::Capture(a) => cmd::capture::run(a),
        Command::Restore(a) => cmd::restore::run(a),
        Command::Kvm(a) => cmd::kvm::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // A failing stderr has nowhere left to report to; the exit code still tells.
            let _ = writeln!(std::io::stderr(), "xstate: {}", e.message);
            ExitCode::from(e.code)
        }
    }
}

/// A parser error as one line, as every other error: clap's text less its `error:` prefix,
/// usage and help pointer, its lines (a list of missing flags, a tip) joined.
fn one_line(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let parts: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("Usage:") && !l.starts_with("For more information"))
        .map(|l| l.strip_prefix("error: ").unwrap_or(l))
        .collect();
    let mut line = String::new();
    for p in parts {
        if !line.is_empty() {
            line.push_str(if p.starts_with("tip:") { "; " } else { " " });
        }
        line.push_str(p);
    }
    format!("{line} (see --help)")
}
