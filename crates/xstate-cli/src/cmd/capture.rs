//! `xstate capture`: Reads a live process's extended state with ptrace. Not implemented yet: issue 6.

use clap::Args;

use crate::common::{CliError, CliResult};

/// Arguments of `xstate capture`.
#[derive(Args, Debug)]
pub struct CaptureArgs {
    /// Arguments, until the command is implemented.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub rest: Vec<String>,
}

/// Runs `xstate capture`.
pub fn run(_args: &CaptureArgs) -> CliResult {
    Err(CliError::usage("xstate capture: not implemented yet (issue 6)"))
}
