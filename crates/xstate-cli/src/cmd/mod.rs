//! One module per subcommand.

pub mod host;
pub mod layout;
