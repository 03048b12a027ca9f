//! `xstate compat`: Migration compatibility between two CPUs or policies. Not implemented yet: issue 5.

use clap::Args;

use crate::common::{CliError, CliResult};

/// Arguments of `xstate compat`.
#[derive(Args, Debug)]
pub struct CompatArgs {
    /// Arguments, until the command is implemented.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub rest: Vec<String>,
}

/// Runs `xstate compat`.
pub fn run(_args: &CompatArgs) -> CliResult {
    Err(CliError::usage("xstate compat: not implemented yet (issue 5)"))
}
