//! `xstate inspect`: Shows an XSAVE image's header, components and registers. Not implemented yet: issue 3.

use clap::Args;

use crate::common::{CliError, CliResult};

/// Arguments of `xstate inspect`.
#[derive(Args, Debug)]
pub struct InspectArgs {
    /// Arguments, until the command is implemented.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub rest: Vec<String>,
}

/// Runs `xstate inspect`.
pub fn run(_args: &InspectArgs) -> CliResult {
    Err(CliError::usage("xstate inspect: not implemented yet (issue 3)"))
}
