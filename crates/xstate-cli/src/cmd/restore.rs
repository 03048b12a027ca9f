//! `xstate restore`: Writes a live process's extended state with ptrace. Not implemented yet: issue 6.

use clap::Args;

use crate::common::{CliError, CliResult};

/// Arguments of `xstate restore`.
#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// Arguments, until the command is implemented.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub rest: Vec<String>,
}

/// Runs `xstate restore`.
pub fn run(_args: &RestoreArgs) -> CliResult {
    Err(CliError::usage("xstate restore: not implemented yet (issue 6)"))
}
