//! `xstate kvm`: KVM's XSAVE capabilities and a guest round trip. Not implemented yet: issue 6.

use clap::Args;

use crate::common::{CliError, CliResult};

/// Arguments of `xstate kvm`.
#[derive(Args, Debug)]
pub struct KvmArgs {
    /// Arguments, until the command is implemented.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub rest: Vec<String>,
}

/// Runs `xstate kvm`.
pub fn run(_args: &KvmArgs) -> CliResult {
    Err(CliError::usage("xstate kvm: not implemented yet (issue 6)"))
}
