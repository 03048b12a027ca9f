//! CPUID policies for extended state: a guest's leaf 0xD and XCR0/XSS setting rules.
//!
//! Not implemented yet: issue 4.
