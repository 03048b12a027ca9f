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
    /// component outside the policy is cleared ([`gating::FLAG_GROUPS`]) and every leaf describing such
    /// a feature reads zero ([`gating::FEATURE_LEAVES`]). Everything else is `host`'s.
    ///
    /// ```
    /// use xstate::cpuid::{CpuidData, CpuidFormat, Regs};
    /// use xstate::policy::{Policy, Selection};
    /// use xstate::Layout;
    ///
    /// // Part of a Sapphire Rapids host's CPUID: leaf 7 (AVX-512, AMX, PKU flags) and leaf 0xD.
    /// let mut host = CpuidData::new(CpuidFormat::Host);
    /// host.insert(7, 0, Regs::new(0x2, 0xF3BF_BFFB, 0xBB41_7FEE, 0xFFDD_4430));
    /// host.insert(0x1D, 1, Regs::new(0x0400_2000, 0x0008_0040, 0x10, 0)); // AMX tile palette 1
    /// # for (i, a, b, c, d) in [
    /// #     (0, 0x602E7, 0x2B00, 0x2B00, 0), (1, 0x1F, 0x2A80, 0xDD00, 0), (2, 0x100, 0x240, 0, 0),
    /// #     (5, 0x40, 0x440, 0, 0), (6, 0x200, 0x480, 0, 0), (7, 0x400, 0x680, 0, 0), (8, 0x80, 0, 1, 0),
    /// #     (9, 0x8, 0xA80, 0, 0), (10, 0x8, 0, 1, 0), (11, 0x10, 0, 1, 0), (12, 0x18, 0, 1, 0),
    /// #     (14, 0x30, 0, 1, 0), (15, 0x328, 0, 1, 0), (17, 0x40, 0xAC0, 2, 0), (18, 0x2000, 0xB00, 6, 0),
    /// # ] {
    /// #     host.insert(0xD, i, Regs::new(a, b, c, d));
    /// # }
    /// let layout = Layout::from_leaf0d(host.leaf0d())?;
    /// let avx = Policy::derive(&layout, &Selection::parse("avx")?)?;
    /// let guest = avx.guest_cpuid(&host);
    /// let leaf7 = guest.get(7, 0).unwrap();
    /// assert_eq!(leaf7.ebx & 1 << 16, 0); // AVX512F
    /// assert_eq!(leaf7.edx & 1 << 24, 0); // AMX-TILE
    /// assert_eq!(leaf7.ecx & 1 << 3, 0); // PKU
    /// assert_ne!(leaf7.ebx & 1 << 5, 0); // AVX2 stays: AVX is exposed
    /// assert!(guest.get(0x1D, 1).unwrap().is_zero());
    /// assert_eq!(guest.leaf0d().xcr0_supported().bits(), 0x7);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn guest_cpuid(&self, host: &CpuidData) -> CpuidData {
        let exposed = self.xcr0_max | self.xss_max;
        let mut out = CpuidData::new(host.format);
        for ((leaf, sub), mut r) in host.entries() {
            if gating::FEATURE_LEAVES.iter().any(|g| g.leaf == leaf && !g.needs.is_subset_of(exposed)) {
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
