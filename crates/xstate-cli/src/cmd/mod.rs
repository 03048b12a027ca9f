//! One module per subcommand.

pub mod baseline;
pub mod capture;
pub mod compat;
pub mod container;
pub mod convert;
pub mod core;
pub mod criu;
pub mod host;
pub mod imageio;
pub mod inspect;
pub mod kvm;
pub mod layout;
pub mod policy;
pub mod regs;
pub mod restore;
pub mod validate;
