//! `xstate core`: Reads extended state from an ELF core dump. Not implemented yet: issue 5.

use clap::Args;

use crate::common::{CliError, CliResult};

/// Arguments of `xstate core`.
#[derive(Args, Debug)]
pub struct CoreArgs {
    /// Arguments, until the command is implemented.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub rest: Vec<String>,
}

/// Runs `xstate core`.
pub fn run(_args: &CoreArgs) -> CliResult {
    Err(CliError::usage("xstate core: not implemented yet (issue 5)"))
}
