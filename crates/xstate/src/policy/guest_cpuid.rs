//! A policy applied to a whole CPUID table, not only leaf 0xD.
//!
//! A guest that sees AVX512F in leaf 7 with no ZMM state in its leaf 0xD, or AMX-TILE without
//! the tile components, cannot enable what its CPUID promises (guest kernels warn, clear the
//! feature or fault). [`Policy::guest_cpuid`] takes the table a VMM starts from (the host's, a
//! dump, KVM_GET_SUPPORTED_CPUID) and returns it with leaf 0xD replaced by the policy's and
//! every flag of [`crate::cpuid::gating`] whose components the policy hides cleared, together
//! with the flags built on them, and the leaves describing hidden features zeroed (0x1D/0x1E
//! without AMX). It only ever clears: a flag the host lacks is never set. The XSAVE instruction
//! features of 0xD.1 EAX (XSAVEOPT, XSAVEC, XGETBV1, XSAVES, XFD) are the policy's, as in
//! [`Policy::leaf0d`]; OSXSAVE and OSPKE are left as found where their feature is exposed (the
//! CPU derives them from CR4 at run time, and KVM and Xen recompute them).

use super::Policy;
use crate::cpuid::{CpuidData, Regs, gating};

impl Policy {
    /// `host` with this policy applied: leaf 0xD is [`Policy::leaf0d`] for the maximum XCR0 and
    /// IA32_XSS (subleaf 0 and 1 EBX sized for them, as KVM_GET_SUPPORTED_CPUID reports; KVM and
    /// Xen recompute both from the guest's XCR0 and XSS at run time), every flag gated on a
    /// component outside the policy is cleared ([`gating::GATES`]) and every leaf describing such
    /// a feature reads zero ([`gating::GATED_LEAVES`]). Everything else is `host`'s.
    pub fn guest_cpuid(&self, host: &CpuidData) -> CpuidData {
        let exposed = self.xcr0_max | self.xss_max;
        let mut out = CpuidData::new(host.format);
        for ((leaf, sub), mut r) in host.entries() {
            if gating::GATED_LEAVES.iter().any(|g| g.leaf == leaf && !g.needs.is_subset_of(exposed)) {
                r = Regs::default();
            }
            for g in gating::closed_by(exposed).filter(|g| (g.leaf, g.subleaf) == (leaf, sub)) {
                let reg = match g.reg {
                    crate::component::Reg::Eax => &mut r.eax,
                    crate::component::Reg::Ebx => &mut r.ebx,
                    crate::component::Reg::Ecx => &mut r.ecx,
                    crate::component::Reg::Edx => &mut r.edx,
                };
                *reg &= !g.bits;
            }
            out.insert(leaf, sub, r);
        }
        *out.leaf0d_mut() = self.build_leaf(self.xcr0_max, self.xss_max);
        out
    }
}
