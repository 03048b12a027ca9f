//! Policies on fixture hosts, with sizes computed by hand in the comments.

use super::*;
use crate::fixtures::{
    self, AMD_FAM15H_LWP, AMD_ZEN2, AMD_ZEN4, INTEL_AMX_GUEST, INTEL_SAPPHIRE_RAPIDS, INTEL_SKYLAKE_SP,
};
use crate::xcr0::MaskRule;
use Feature::*;
use alloc::string::ToString;

fn policy(rows: fixtures::Rows, list: &str) -> Result<Policy, PolicyError> {
    Policy::derive(&fixtures::layout(rows), &Selection::parse(list).unwrap())
}

fn sizes(rows: fixtures::Rows, list: &str) -> (u64, u32, u32) {
    let p = policy(rows, list).unwrap_or_else(|e| panic!("{list}: {e}"));
    (p.xcr0_max().bits(), p.standard_size_max(), p.compacted_size_max())
}

fn regs(l: &Leaf0d, i: u8) -> (u32, u32, u32, u32) {
    let r = l.get(i);
    (r.eax, r.ebx, r.ecx, r.edx)
}

#[test]
fn intel_avx512_host_by_hand() {
    // Skylake-SP: AVX 576+256, MPX 960/1024 (64 each), opmask 1088, ZMM_Hi256 1152, Hi16_ZMM
    // 1664 (+1024 = 2688), PKRU 2688 (+8 = 2696).
    let h = INTEL_SKYLAKE_SP;
    assert_eq!(sizes(h, "avx"), (0x7, 832, 832));
    // Compacted: 576 + 256 + 64 + 512 + 1024.
    assert_eq!(sizes(h, "avx,avx512"), (0xE7, 2688, 2432));
    assert_eq!(sizes(h, "avx,avx512,pku"), (0x2E7, 2696, 2440));
    // MPX: standard ends at 1024 + 64; compacted 576 + 256 + 128.
    assert_eq!(sizes(h, "avx,mpx"), (0x1F, 1088, 960));
    assert_eq!(sizes(h, "mpx"), (0x1B, 1088, 704));
    // Everything: 2560 + PT 128 + PKRU 8 compacted; PT never counts in the standard size.
    let p = policy(h, "all").unwrap();
    assert_eq!((p.xcr0_max(), p.xss_max()), (Xfeatures(0x2FF), Xfeatures(0x100)));
    assert_eq!((p.standard_size_max(), p.compacted_size_max()), (2696, 2696));
    let l = p.leaf0d(Xfeatures(0x2FF), Xfeatures::EMPTY).unwrap();
    assert_eq!(regs(&l, 0), (0x2FF, 0xA88, 0xA88, 0));
    assert_eq!(regs(&l, 1), (0xF, 0xA08, 0x100, 0), "the dump's own 0xD.1 at XSS = 0");
    assert_eq!(regs(&l, 8), (0x80, 0, 1, 0));
    assert_eq!(p.leaf0d(Xfeatures(0x7), Xfeatures(0x100)).unwrap().get(1).ebx, 832 + 128);
}

#[test]
fn amd_zen4_by_hand() {
    // Zen 4 packs AVX-512 straight after AVX: opmask 832, ZMM_Hi256 896, Hi16_ZMM 1408
    // (+1024 = 2432), PKRU 2432 (+8 = 2440); no holes, so standard = compacted.
    let h = AMD_ZEN4;
    assert_eq!(sizes(h, "avx"), (0x7, 832, 832));
    assert_eq!(sizes(h, "avx,avx512"), (0xE7, 2432, 2432));
    assert_eq!(sizes(h, "avx,avx512,pku"), (0x2E7, 2440, 2440));
    // CET_U 16 + CET_S 24 only in the compacted form.
    let p = policy(h, "avx,avx512,pku,cet").unwrap();
    assert_eq!((p.xss_max(), p.standard_size_max(), p.compacted_size_max()), (Xfeatures(0x1800), 2440, 2480));
    assert_eq!(p.leaf0d(Xfeatures(0xE7), Xfeatures(0x800)).unwrap().get(1).ebx, 2432 + 16);
    let l = p.leaf0d(Xfeatures(0x2E7), Xfeatures(0x1800)).unwrap();
    assert_eq!(regs(&l, 0), (0x2E7, 2440, 2440, 0));
    assert_eq!(regs(&l, 1), (0xF, 2480, 0x1800, 0));
    assert_eq!(regs(&l, 5), (0x40, 0x340, 0, 0));
    assert_eq!(regs(&l, 11), (0x10, 0, 1, 0));
    assert_eq!(regs(&l, 12), (0x18, 0, 1, 0));
    assert_eq!(policy(h, "mpx").unwrap_err(), PolicyError::HostLacks { feature: Mpx, missing: Xfeatures(0x18) });
    assert_eq!(policy(h, "amx").unwrap_err(), PolicyError::HostLacks { feature: Amx, missing: Xfeatures(0x60000) });
}

#[test]
fn intel_amx_by_hand() {
    let h = INTEL_SAPPHIRE_RAPIDS;
    // AVX-512 without AMX: the Intel AVX-512 numbers, not 11008.
    assert_eq!(sizes(h, "avx,avx512"), (0xE7, 2688, 2432));
    // AMX without AVX-512: TILEDATA ends at 0xB00 + 0x2000 = 11008. Compacted: 832 is already
    // a multiple of 64, TILECFG 832..896, TILEDATA 896..9088.
    assert_eq!(sizes(h, "avx,amx"), (0x60007, 11008, 9088));
    // With PKRU the alignment matters: 832 + 8 = 840 -> 896, TILECFG to 960, TILEDATA to 9152.
    assert_eq!(sizes(h, "avx,pku,amx"), (0x60207, 11008, 9152));
    // Everything: 2432 + PT 128 + PKRU 8 + PASID 8 + CET 16 + 24 + UINTR 48 + LBR 808 = 3472,
    // -> 3520 + 64 = 3584, + 8192 = 11776.
    let p = policy(h, "all").unwrap();
    assert_eq!((p.xcr0_max(), p.xss_max()), (Xfeatures(0x602E7), Xfeatures(0xDD00)));
    assert_eq!((p.standard_size_max(), p.compacted_size_max()), (11008, 11776));
    let l = p.leaf0d(Xfeatures(0x602E7), Xfeatures(0x100)).unwrap();
    assert_eq!(regs(&l, 1), (0x1F, 0x2A80, 0xDD00, 0), "the dump's XCR0 0x602E7 / XSS PT");
    assert_eq!(regs(&l, 17), (0x40, 0xAC0, 2, 0));
    assert_eq!(regs(&l, 18), (0x2000, 0xB00, 6, 0));
    // The flags follow what is exposed: no XFD, no align64 without XSAVEC.
    let l = policy(h, "avx,amx,-xfd").unwrap().leaf0d(Xfeatures(0x60007), Xfeatures::EMPTY).unwrap();
    assert_eq!(regs(&l, 1), (0xF, 9088, 0, 0));
    assert_eq!(regs(&l, 18), (0x2000, 0xB00, 2, 0));
    let p = policy(h, "avx,amx,-xsaves,-xsavec").unwrap();
    let l = p.leaf0d(Xfeatures(0x60007), Xfeatures::EMPTY).unwrap();
    assert_eq!(regs(&l, 1), (0x15, 0, 0, 0), "no compaction: 0xD.1 EBX is 0");
    assert_eq!(regs(&l, 17), (0x40, 0xAC0, 0, 0));
    assert_eq!(regs(&l, 18), (0x2000, 0xB00, 4, 0));
    assert_eq!(p.compacted_size_max(), 9088, "the hardware's compacted size keeps the alignment");
    // The measured AMX guest: 0x600E7, standard 11008, compacted 10688.
    assert_eq!(sizes(INTEL_AMX_GUEST, "all"), (0x600E7, 11008, 10688));
    assert_eq!(sizes(INTEL_AMX_GUEST, "avx,avx512"), (0xE7, 2688, 2432));
}

#[test]
fn amd_lwp_by_hand() {
    // Family 15h: LWP at 0x340 (128 bytes) right after AVX, no 0xD.1 at all.
    let h = AMD_FAM15H_LWP;
    let p = policy(h, "all").unwrap();
    assert_eq!((p.xcr0_max(), p.standard_size_max()), (Xfeatures(0x4000_0000_0000_0007), 960));
    assert_eq!(p.instructions(), XsaveFeatures(0));
    let l = p.leaf0d(p.xcr0_max(), Xfeatures::EMPTY).unwrap();
    assert_eq!(regs(&l, 0), (0x7, 0x3C0, 0x3C0, 0x4000_0000));
    assert_eq!(regs(&l, 1), (0, 0, 0, 0));
    assert_eq!(regs(&l, 62), (0x80, 0x340, 0, 0));
    assert_eq!(p.leaf0d(Xfeatures(0x7), Xfeatures::EMPTY).unwrap().get(0).ebx, 832);
    assert_eq!(sizes(h, "avx"), (0x7, 832, 832));
    // LWP without AVX still ends at 0x340 + 0x80: the size is not the end of the highest bit.
    assert_eq!(sizes(h, "lwp").1, 960);
    assert_eq!(policy(h, "avx,xsaveopt").unwrap_err(), PolicyError::HostLacksInstruction { feature: Xsaveopt });
}

#[test]
fn refusals_name_the_feature() {
    let h = INTEL_SKYLAKE_SP;
    assert_eq!(policy(h, "avx512").unwrap_err(), PolicyError::Requires { feature: Avx512, prerequisite: Avx });
    assert_eq!(policy(h, "avx,pt,-xsaves").unwrap_err(), PolicyError::Requires { feature: Pt, prerequisite: Xsaves });
    assert_eq!(policy(h, "avx,-xsavec").unwrap_err(), PolicyError::Requires { feature: Xsaves, prerequisite: Xsavec });
    assert_eq!(policy(h, "all,-avx").unwrap_err(), PolicyError::Requires { feature: Avx512, prerequisite: Avx });
    assert_eq!(
        policy(h, "amx").unwrap_err().to_string(),
        "amx: the host does not enumerate component(s) 0x60000 (tilecfg|tiledata) in CPUID 0xD.0 EDX:EAX"
    );
    // APX and MPX share space: a host with both is refused by name.
    let mut both = fixtures::leaf0d(h);
    both.set(0, Regs::new(0x802FF, 0xA88, 0xA88, 0));
    both.set(19, Regs::new(0x80, 0x3C0, 0, 0));
    let host = Layout::from_leaf0d(&both).unwrap();
    let e = Policy::derive(&host, &Selection::parse("avx,mpx,apx").unwrap()).unwrap_err();
    assert!(matches!(e, PolicyError::Excludes { .. }), "{e}");
    assert!(Policy::derive(&host, &Selection::parse("avx,apx").unwrap()).is_ok());
    // Zen 2's bit 9 is not PKRU.
    let e = policy(AMD_ZEN2, "avx,pku").unwrap_err();
    assert_eq!(e, PolicyError::NotRecognised { feature: Pku, component: Component::PKRU, size: 64 });
    assert_eq!(sizes(AMD_ZEN2, "all"), (0x207, 0x380, 0x380), "by mask it is just component 9");
    // Raw masks go through the XCR0/XSS rules.
    let host = fixtures::layout(AMD_ZEN4);
    let m = |x, s| Policy::derive(&host, &Selection::masks(Xfeatures(x), Xfeatures(s)));
    assert_eq!(m(0x67, 0).unwrap_err(), PolicyError::Mask(crate::xcr0::check_xcr0(Xfeatures(0x67)).unwrap_err()));
    assert!(matches!(m(0x60007, 0), Err(PolicyError::Mask(e)) if e.rule == MaskRule::Unsupported));
    assert!(matches!(m(0x7, 0x4), Err(PolicyError::Mask(e)) if e.rule == MaskRule::UserInXss));
    assert_eq!(m(0x1, 0).unwrap().standard_size_max(), 576);
    let no_xsaves = Selection::masks(Xfeatures(0x7), Xfeatures(0x800)).without(Xsaves);
    assert_eq!(
        Policy::derive(&host, &no_xsaves).unwrap_err(),
        PolicyError::SupervisorNeedsXsaves { bits: Xfeatures(0x800) }
    );
}

#[test]
fn xsetbv_rules_against_the_policy() {
    let p = policy(INTEL_SAPPHIRE_RAPIDS, "avx,avx512,pt").unwrap();
    let rule = |v: u64| match p.check_xcr0(Xfeatures(v)) {
        Ok(()) => None,
        Err(SetError::Mask(m)) => Some((m.rule, m.bits.bits())),
        Err(e) => panic!("{e}"),
    };
    assert_eq!(rule(0xE7), None);
    assert_eq!(rule(0x7), None);
    assert_eq!(rule(0x1), None);
    // PKRU and AMX exist on the host but not in the policy.
    assert_eq!(rule(0x2E7), Some((MaskRule::Unsupported, 0x200)));
    assert_eq!(rule(0x600E7), Some((MaskRule::Unsupported, 0x60000)));
    assert_eq!(rule(0x0), Some((MaskRule::X87Required, 1)));
    assert_eq!(rule(0x5), Some((MaskRule::AvxRequiresSse, 4)));
    assert_eq!(rule(0x67), Some((MaskRule::Avx512Together, 0x60)));
    assert_eq!(rule(0xE3), Some((MaskRule::Avx512RequiresAvx, 0xE0)));
    assert_eq!(rule(0x107), Some((MaskRule::SupervisorInXcr0, 0x100)));
    assert_eq!(rule(0x407), Some((MaskRule::SupervisorInXcr0, 0x400)), "PASID: supervisor on the host");
    assert_eq!(rule(1 << 63 | 7), Some((MaskRule::Bit63Reserved, 1 << 63)));
    assert_eq!(p.xsetbv(0, 0, 0xE7), Ok(Xfeatures(0xE7)));
    assert_eq!(p.xsetbv(3, 0, 0xE7), Err(SetError::Cpl { cpl: 3 }));
    assert_eq!(p.xsetbv(0, 1, 0xE7), Err(SetError::XcrIndex { index: 1 }));
    assert!(p.check_xss(Xfeatures(0x100)).is_ok());
    assert!(p.check_xss(Xfeatures(0)).is_ok());
    let xss_rule = |v: u64| match p.check_xss(Xfeatures(v)) {
        Err(SetError::Mask(m)) => Some(m.rule),
        _ => None,
    };
    assert_eq!(xss_rule(0x800), Some(MaskRule::Unsupported), "CET_U is on the host, not in the policy");
    assert_eq!(xss_rule(0x4), Some(MaskRule::UserInXss));
    assert_eq!(xss_rule(0x20000), Some(MaskRule::UserInXss), "TILECFG: user on the host");
    let q = policy(INTEL_SAPPHIRE_RAPIDS, "avx,-xsaves").unwrap();
    assert_eq!(q.check_xss(Xfeatures(0)), Err(SetError::XssWithoutXsaves { value: Xfeatures(0) }));
    assert!(p.leaf0d(Xfeatures(0x2E7), Xfeatures::EMPTY).is_err());
    assert!(q.leaf0d(Xfeatures(0x7), Xfeatures(0x100)).is_err());
    assert!(q.leaf0d(Xfeatures(0x7), Xfeatures::EMPTY).is_ok());
}

#[test]
fn all_reproduces_the_host_and_the_guest_layout_is_consistent() {
    for rows in [INTEL_SKYLAKE_SP, INTEL_SAPPHIRE_RAPIDS, INTEL_AMX_GUEST, AMD_ZEN4, AMD_ZEN2, AMD_FAM15H_LWP] {
        let host_leaf = fixtures::leaf0d(rows);
        let host = Layout::from_leaf0d(&host_leaf).unwrap();
        let p = Policy::derive(&host, &Selection::all()).unwrap();
        let l = p.leaf0d(p.xcr0_max(), Xfeatures::EMPTY).unwrap();
        for i in 0..64u8 {
            let (h, g) = (host_leaf.get(i), l.get(i));
            // EBX of 0 and 1 is dynamic; every static field must be the host's.
            if i < 2 {
                assert_eq!((h.eax, h.ecx, h.edx), (g.eax, g.ecx, g.edx), "{rows:?} subleaf {i}");
            } else {
                assert_eq!(h, g, "subleaf {i}");
            }
        }
        let guest = p.layout();
        assert_eq!(guest.user_supported(), p.xcr0_max());
        assert_eq!(guest.supervisor_supported(), p.xss_max());
        assert_eq!(guest.standard_size_max(), p.standard_size_max());
        assert!(guest.cross_check(Some(p.xcr0_max()), Some(p.xss_max())).iter().all(|c| c.outcome.is_ok()));
        for c in (p.xcr0_max() | p.xss_max()).iter() {
            assert_eq!(guest.geometry(c), host.geometry(c));
        }
    }
}

#[test]
fn features_reported() {
    let p = policy(INTEL_SAPPHIRE_RAPIDS, "avx,avx512,cet,-xfd").unwrap();
    assert_eq!(p.features().to_string(), "avx,avx512,cet,xsaveopt,xsavec,xgetbv1,xsaves");
    assert_eq!(p.instructions(), XsaveFeatures(0xF));
    assert!(p.compaction());
    assert_eq!(p.standard_size(Xfeatures(0x7)), Some(832));
    assert_eq!(p.standard_size(Xfeatures(0x207)), None);
    assert_eq!(p.compacted_size(Xfeatures(0x1807)), Some(832 + 40));
    assert_eq!(p.compacted_size(Xfeatures(0x107)), None);
}

/// Sapphire Rapids' leaves 1, 7, 0x1D, 0x1E and 0x8000_0001 (InstLatx64
/// `GenuineIntel00806F8_SapphireRapids_05_CPUID.txt`) with the fixture's leaf 0xD.
fn spr_table() -> crate::cpuid::CpuidData {
    let mut t = crate::cpuid::CpuidData::new(crate::cpuid::CpuidFormat::Synthetic);
    for (leaf, sub, r) in [
        (1, 0, Regs::new(0x000806F8, 0x00800800, 0x7FFEFBFF, 0xBFEBFBFF)),
        (7, 0, Regs::new(0x2, 0xF3BFBFFB, 0xBB417FEE, 0xFFDD4430)),
        (7, 1, Regs::new(0x1C30, 0, 0, 0)),
        (7, 2, Regs::new(0, 0, 0, 0x17)),
        (0x1D, 0, Regs::new(1, 0, 0, 0)),
        (0x1D, 1, Regs::new(0x04002000, 0x00080040, 0x10, 0)),
        (0x1E, 0, Regs::new(0, 0x4010, 0, 0)),
        (0x8000_0001, 0, Regs::new(0, 0, 0x121, 0x2C100000)),
    ] {
        t.insert(leaf, sub, r);
    }
    *t.leaf0d_mut() = fixtures::leaf0d(INTEL_SAPPHIRE_RAPIDS);
    t
}

fn reg(t: &crate::cpuid::CpuidData, leaf: u32, sub: u32) -> (u32, u32, u32, u32) {
    let r = t.get(leaf, sub).unwrap();
    (r.eax, r.ebx, r.ecx, r.edx)
}

/// Issue 12 item 2: a policy hides the CPUID flags of what it hides, everywhere, not only in
/// leaf 0xD (values computed by hand from the Sapphire Rapids dump above).
#[test]
fn whole_cpuid_of_sapphire_rapids_by_hand() {
    let host = spr_table();
    // Everything (CET included, since XSAVES is exposed): only leaf 0xD is rebuilt.
    let all = policy(INTEL_SAPPHIRE_RAPIDS, "all").unwrap().guest_cpuid(&host);
    assert_eq!(all.entries().collect::<alloc::vec::Vec<_>>(), host.entries().collect::<alloc::vec::Vec<_>>());
    // avx,avx512: no AMX (7.0 EDX[22,24,25], leaves 0x1D/0x1E), no PKU/OSPKE (7.0 ECX[3,4]),
    // no CET (SHSTK 7.0 ECX[7], IBT 7.0 EDX[20]).
    let p = policy(INTEL_SAPPHIRE_RAPIDS, "avx,avx512").unwrap();
    let g = p.guest_cpuid(&host);
    assert_eq!(reg(&g, 7, 0), (0x2, 0xF3BFBFFB, 0xBB417F66, 0xFC8D4430));
    assert_eq!(reg(&g, 7, 1), (0x1C30, 0, 0, 0));
    for (leaf, sub) in [(0x1D, 0), (0x1D, 1), (0x1E, 0)] {
        assert_eq!(reg(&g, leaf, sub), (0, 0, 0, 0), "{leaf:#x}.{sub}");
    }
    assert_eq!(reg(&g, 1, 0), reg(&host, 1, 0));
    assert_eq!(g.leaf0d(), &p.leaf0d(p.xcr0_max(), p.xss_max()).unwrap());
    assert_eq!(g.leaf0d().xcr0_supported(), Xfeatures(0xE7));
    // avx: AVX-512 goes too (7.0 EBX[16,17,21,26,27,28,30,31], ECX[1,6,11,12,14],
    // EDX[2,3,8,23], 7.1 EAX[5] AVX512_BF16).
    let g = policy(INTEL_SAPPHIRE_RAPIDS, "avx").unwrap().guest_cpuid(&host);
    assert_eq!(reg(&g, 7, 0), (0x2, 0x239CBFFB, 0xBB412724, 0xFC0D4430));
    assert_eq!(reg(&g, 7, 1), (0x1C10, 0, 0, 0));
    // x87 and SSE only: AVX, FMA, F16C (1 ECX[28,12,29]), AVX2, VAES, VPCLMULQDQ, AVX-VNNI.
    let none = Policy::derive(&fixtures::layout(INTEL_SAPPHIRE_RAPIDS), &Selection::masks(Xfeatures(3), Xfeatures(0)));
    let g = none.unwrap().guest_cpuid(&host);
    assert_eq!(reg(&g, 1, 0), (0x000806F8, 0x00800800, 0x4FFEEBFF, 0xBFEBFBFF));
    assert_eq!(reg(&g, 7, 0), (0x2, 0x239CBFDB, 0xBB412124, 0xFC0D4430));
    assert_eq!(reg(&g, 7, 1), (0x1C00, 0, 0, 0));
    assert_eq!(reg(&g, 7, 2), reg(&host, 7, 2));
    assert_eq!(reg(&g, 0x8000_0001, 0), reg(&host, 0x8000_0001, 0));
    // Applying twice changes nothing more.
    assert_eq!(none_twice(&host), none_once(&host));
}

fn none_policy() -> Policy {
    Policy::derive(&fixtures::layout(INTEL_SAPPHIRE_RAPIDS), &Selection::masks(Xfeatures(3), Xfeatures(0))).unwrap()
}

fn none_once(host: &crate::cpuid::CpuidData) -> crate::cpuid::CpuidData {
    none_policy().guest_cpuid(host)
}

fn none_twice(host: &crate::cpuid::CpuidData) -> crate::cpuid::CpuidData {
    none_policy().guest_cpuid(&none_once(host))
}

/// AMD: without AVX, XOP and FMA4 (0x8000_0001 ECX[11,16]) go; LWP (ECX[15]) goes with its
/// component on family 15h.
#[test]
fn whole_cpuid_of_amd_by_hand() {
    let mut host = crate::cpuid::CpuidData::new(crate::cpuid::CpuidFormat::Synthetic);
    // Family 15h (InstLatx64 `AuthenticAMD0600F12_Interlagos_CPUID.txt`): AVX, XOP, LWP, FMA4.
    host.insert(0x8000_0001, 0, Regs::new(0x00600F12, 0x30000000, 0x01C9BFFF, 0x2FD3FBFF));
    host.insert(0x8000_001C, 0, Regs::new(0, 0x80032013, 0x00010200, 0x8000000F));
    *host.leaf0d_mut() = fixtures::leaf0d(AMD_FAM15H_LWP);
    let l = fixtures::layout(AMD_FAM15H_LWP);
    let g = Policy::derive(&l, &Selection::parse("avx").unwrap()).unwrap().guest_cpuid(&host);
    assert_eq!(reg(&g, 0x8000_0001, 0).2, 0x01C9BFFF & !(1 << 15));
    assert_eq!(reg(&g, 0x8000_001C, 0), (0, 0, 0, 0));
    let g = Policy::derive(&l, &Selection::masks(Xfeatures(3), Xfeatures(0))).unwrap().guest_cpuid(&host);
    assert_eq!(reg(&g, 0x8000_0001, 0).2, 0x01C9BFFF & !(1 << 15 | 1 << 11 | 1 << 16));
    let g = Policy::derive(&l, &Selection::all()).unwrap().guest_cpuid(&host);
    assert_eq!(reg(&g, 0x8000_0001, 0), reg(&host, 0x8000_0001, 0));
    assert_eq!(reg(&g, 0x8000_001C, 0), reg(&host, 0x8000_001C, 0));
}

/// Zen 2's 64-byte bit 9 is not PKRU (XSAVE-FACTS 8.2): `all` may pass it through as the
/// unknown component it is, but the policy never calls it `pku` (it did, while `pku` asked by
/// name is refused with "it is not pku").
#[test]
fn an_unrecognised_component_is_never_named_as_its_feature() {
    let p = policy(AMD_ZEN2, "all").unwrap();
    assert!(p.xcr0_max().contains(Component::PKRU), "passed through as bit 9");
    assert!(!p.features().contains(Pku), "{:?}", p.features());
    assert!(matches!(policy(AMD_ZEN2, "pku"), Err(PolicyError::NotRecognised { .. })));
    assert!(policy(AMD_ZEN4, "all").unwrap().features().contains(Pku));
}
