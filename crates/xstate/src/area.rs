//! SaveArea: a policy-sized, resizable save area.
//!
//! Not implemented yet: issue 4.
