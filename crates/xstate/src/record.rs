//! Wire and file formats of extended state (Xen, KVM, Linux, portable).
//!
//! Not implemented yet: issue 5.
