//! Xen's side of a guest's extended state, derived from a host layout as Xen derives it: the
//! host's enabled `xfeature_mask`, and the maximum XCR0 of each kind of guest.
//!
//! - Host mask: `xstate_init()` (xen/arch/x86/xstate.c) enables CPUID 0xD.0 EDX:EAX ∩
//!   `XCNTXT_MASK` (xen/arch/x86/include/asm/xstate.h): x87, SSE, AVX, MPX, AVX-512, PKRU and
//!   AMX. LWP (62), APX (19) and every supervisor component are never enabled.
//! - Guest maxima: `calculate_{pv,hvm}_max_policy()` (xen/arch/x86/cpu-policy.c) mask the host
//!   features with the featureset attributes of xen/include/public/arch-x86/cpufeatureset.h
//!   (`A` every guest, `S`/`s` HVM, `H` HVM with HAP; lower case: opt-in, still in the maximum;
//!   no attribute: never), then `recalculate_xstate()` turns features into components:
//!   x87|SSE always, AVX → YMM, MPX → BNDREGS|BNDCSR, AVX512F → the AVX-512 trio, PKU → PKRU,
//!   AMX_TILE → TILECFG|TILEDATA. AVX (`A`), AVX512F (`A`, a dependent of AVX2 and so of AVX in
//!   xen/tools/gen-cpuid.py), MPX (`s`), PKU (`H`), AMX_TILE (no attribute), LWP (no attribute).

use core::fmt;

use crate::component::Component;
use crate::layout::Layout;
use crate::xfeatures::Xfeatures;

/// Xen's `XCNTXT_MASK`: the user components Xen ever enables in XCR0 (x87, SSE, AVX,
/// BNDREGS, BNDCSR, opmask, ZMM_Hi256, Hi16_ZMM, PKRU, TILECFG, TILEDATA).
pub const XCNTXT_MASK: Xfeatures = Xfeatures(0x6_02FF);

/// The `xfeature_mask` Xen enables on a host of `layout`: CPUID 0xD.0 EDX:EAX ∩ `XCNTXT_MASK`
/// (`xstate_init()`). The largest blob `XEN_DOMCTL_setvcpuextstate` takes is
/// 16 + standard_size(this).
pub fn xen_host_mask(layout: &Layout) -> Xfeatures {
    layout.user_supported() & XCNTXT_MASK
}

/// A kind of Xen guest, whose maximum CPUID policy bounds `xcr0_accum` in `validate_xstate()`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum XenGuest {
    /// A PV guest (`pv_max_cpu_policy`): features with attribute `A`.
    Pv,
    /// An HVM guest on shadow paging (`hvm_max_cpu_policy` without HAP): `A`, `S` and `s`.
    HvmShadow,
    /// An HVM guest with HAP (EPT/NPT; `hvm_max_cpu_policy` with HAP): `A`, `S`, `s`, `H`, `h`.
    HvmHap,
}

impl XenGuest {
    /// Every kind, smallest maximum first.
    pub const ALL: [XenGuest; 3] = [XenGuest::Pv, XenGuest::HvmShadow, XenGuest::HvmHap];

    /// `"pv"`, `"hvm-shadow"` or `"hvm-hap"`.
    pub const fn name(self) -> &'static str {
        match self {
            XenGuest::Pv => "pv",
            XenGuest::HvmShadow => "hvm-shadow",
            XenGuest::HvmHap => "hvm-hap",
        }
    }

    /// The kind of a name.
    pub fn from_name(s: &str) -> Option<XenGuest> {
        XenGuest::ALL.into_iter().find(|g| g.name().eq_ignore_ascii_case(s))
    }

    /// The maximum XCR0 Xen offers this kind of guest on a host of `host`
    /// (`cpu_policy_xcr0_max()` of its max policy), each component as `recalculate_xstate()`
    /// adds it:
    ///
    /// - x87 | SSE always (`XSTATE_FP_SSE`);
    /// - YMM when the host has AVX (`A`);
    /// - the AVX-512 trio when the host has AVX512F (`A`; it depends on AVX2, so on AVX);
    /// - BNDREGS | BNDCSR for HVM guests when the host has MPX (`s`: opt-in, so in the maximum
    ///   but not the default policy). Xen also drops MPX where VMX lacks the BNDCFGS entry/exit
    ///   controls (`cpu_has_vmx_mpx`); CPUID does not say, so a host without them needs its
    ///   mask given explicitly;
    /// - PKRU for HVM guests with HAP when the host has PKU (`H`). PKU is read from the
    ///   layout: bit 9 counts only with PKRU's 8-byte size, so Zen 2's 64-byte bit-9 component
    ///   is never offered;
    /// - never AMX (AMX_TILE has no attribute), LWP (no attribute, and not in `XCNTXT_MASK`),
    ///   APX or any supervisor component (`XSTATE_XSAVES_ONLY` is 0).
    ///
    /// Host features are the components Xen enables ([`xen_host_mask`]): a component Xen does
    /// not enable cannot be in any guest's XCR0.
    pub fn max_xcr0(self, host: &Layout) -> Xfeatures {
        let enabled = xen_host_mask(host);
        let has = |m: Xfeatures| m.is_subset_of(enabled);
        let mut x = Xfeatures::LEGACY;
        let avx = has(Xfeatures::of(Component::AVX));
        if avx {
            x = x.with(Component::AVX);
            if has(Xfeatures::AVX512) {
                x |= Xfeatures::AVX512;
            }
        }
        let hvm = matches!(self, XenGuest::HvmShadow | XenGuest::HvmHap);
        if hvm && has(Xfeatures::MPX) {
            x |= Xfeatures::MPX;
        }
        if self == XenGuest::HvmHap && has(Xfeatures::of(Component::PKRU)) && host.recognised(Component::PKRU) {
            x = x.with(Component::PKRU);
        }
        x
    }
}

impl fmt::Display for XenGuest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;

    #[test]
    fn host_mask_is_cpuid_and_xcntxt_mask() {
        let k15 = fixtures::layout(fixtures::AMD_FAM15H_LWP);
        assert!(k15.user_supported().contains(Component::LWP));
        assert_eq!(xen_host_mask(&k15), Xfeatures(0x7), "LWP is never enabled by Xen");
        let spr = fixtures::layout(fixtures::INTEL_SAPPHIRE_RAPIDS);
        assert_eq!(xen_host_mask(&spr), Xfeatures(0x602E7), "AMX is enabled on the host");
    }

    #[test]
    fn guest_maxima_follow_the_attributes() {
        let skx = fixtures::layout(fixtures::INTEL_SKYLAKE_SP);
        assert_eq!(XenGuest::Pv.max_xcr0(&skx), Xfeatures(0xE7));
        assert_eq!(XenGuest::HvmShadow.max_xcr0(&skx), Xfeatures(0xFF));
        assert_eq!(XenGuest::HvmHap.max_xcr0(&skx), Xfeatures(0x2FF));
        let spr = fixtures::layout(fixtures::INTEL_SAPPHIRE_RAPIDS);
        for g in XenGuest::ALL {
            assert!((g.max_xcr0(&spr) & Xfeatures::AMX).is_empty(), "{g}: no guest is offered AMX");
        }
        assert_eq!(XenGuest::HvmHap.max_xcr0(&spr), Xfeatures(0x2E7));
        let zen2 = fixtures::layout(fixtures::AMD_ZEN2);
        assert_eq!(XenGuest::HvmHap.max_xcr0(&zen2), Xfeatures(0x7), "Zen 2's bit 9 is not PKRU");
        let k15 = fixtures::layout(fixtures::AMD_FAM15H_LWP);
        assert_eq!(XenGuest::HvmHap.max_xcr0(&k15), Xfeatures(0x7));
    }
}
