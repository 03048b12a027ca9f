//! `xstate policy`: Derives a guest CPUID policy (leaf 0xD) and its sizes. Not implemented yet: issue 4.

use clap::Args;

use crate::common::{CliError, CliResult};

/// Arguments of `xstate policy`.
#[derive(Args, Debug)]
pub struct PolicyArgs {
    /// Arguments, until the command is implemented.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub rest: Vec<String>,
}

/// Runs `xstate policy`.
pub fn run(_args: &PolicyArgs) -> CliResult {
    Err(CliError::usage("xstate policy: not implemented yet (issue 4)"))
}
