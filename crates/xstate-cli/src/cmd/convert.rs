//! `xstate convert`: Converts an XSAVE image between formats and layouts. Not implemented yet: issue 3.

use clap::Args;

use crate::common::{CliError, CliResult};

/// Arguments of `xstate convert`.
#[derive(Args, Debug)]
pub struct ConvertArgs {
    /// Arguments, until the command is implemented.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub rest: Vec<String>,
}

/// Runs `xstate convert`.
pub fn run(_args: &ConvertArgs) -> CliResult {
    Err(CliError::usage("xstate convert: not implemented yet (issue 3)"))
}
