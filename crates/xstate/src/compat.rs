//! Migration compatibility between CPUs and policies.
//!
//! Not implemented yet: issue 5.
