//! `xstate validate`: Validates an XSAVE image as a consumer would. Not implemented yet: issue 3.

use clap::Args;

use crate::common::{CliError, CliResult};

/// Arguments of `xstate validate`.
#[derive(Args, Debug)]
pub struct ValidateArgs {
    /// Arguments, until the command is implemented.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub rest: Vec<String>,
}

/// Runs `xstate validate`.
pub fn run(_args: &ValidateArgs) -> CliResult {
    Err(CliError::usage("xstate validate: not implemented yet (issue 3)"))
}
