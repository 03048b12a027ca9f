//! Setting XCR0 and IA32_XSS on a vCPU with a policy: the #GP conditions of XSETBV (SDM Vol. 2
//! XSETBV; Vol. 1 §13.3) and of WRMSR to IA32_XSS (Vol. 4, MSR 0xDA0), checked against the
//! policy's maxima rather than the host's, as KVM's `__kvm_set_xcr` and Xen's
//! `handle_xsetbv` do.

use core::fmt;

use crate::xcr0::MaskError;
use crate::xfeatures::Xfeatures;

/// Why setting XCR0 or IA32_XSS would raise #GP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SetError {
    /// XSETBV at CPL > 0.
    Cpl {
        /// The current privilege level.
        cpl: u8,
    },
    /// XSETBV with ECX ≠ 0: XCR0 is the only writable XCR (XCR1 is read through XGETBV only).
    XcrIndex {
        /// ECX.
        index: u32,
    },
    /// WRMSR to IA32_XSS while XSAVES is not exposed (CPUID 0xD.1 EAX\[3\] = 0): the MSR does
    /// not exist for the guest.
    XssWithoutXsaves {
        /// The value written.
        value: Xfeatures,
    },
    /// The value breaks an XCR0/XSS rule or sets a bit beyond the policy's maximum.
    Mask(MaskError),
}

impl fmt::Display for SetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SetError::Cpl { cpl } => write!(f, "XSETBV at CPL {cpl}: only CPL 0 may write XCR0 (#GP)"),
            SetError::XcrIndex { index } => {
                write!(f, "XSETBV with ECX = {index}: only XCR0 (ECX = 0) is writable (#GP)")
            }
            SetError::XssWithoutXsaves { value } => write!(
                f,
                "IA32_XSS {value}: the policy does not expose XSAVES (CPUID 0xD.1 EAX[3]), so the MSR does not exist (#GP)"
            ),
            SetError::Mask(m) => write!(f, "{m} (#GP)"),
        }
    }
}

impl core::error::Error for SetError {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match self {
            SetError::Mask(m) => Some(m),
            _ => None,
        }
    }
}

impl From<MaskError> for SetError {
    fn from(m: MaskError) -> Self {
        SetError::Mask(m)
    }
}
