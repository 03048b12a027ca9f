//! `xstate`: x86 extended processor state on the command line.
//!
//! Exit codes: 0 success/valid/compatible; 1 the input is invalid or incompatible (one line on
//! stderr naming the rule and the offending bits or bytes); 2 usage, unreadable file or I/O.

mod cmd;
mod common;

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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Host(a) => cmd::host::run(a),
        Command::Layout(a) => cmd::layout::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xstate: {}", e.message);
            ExitCode::from(e.code)
        }
    }
}
