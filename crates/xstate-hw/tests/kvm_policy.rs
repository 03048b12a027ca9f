//! Policies against KVM, where /dev/kvm exists.
//!
//! 1. KVM_GET_SUPPORTED_CPUID's leaf 0xD equals the policy derived from this host's CPUID for
//!    the XCR0, IA32_XSS and instruction features KVM reports (KVM's rules, XSAVE-FACTS §7.4:
//!    0xD.0 EBX = ECX = standard size of the supported XCR0; 0xD.1 EBX = compacted size of
//!    XCR0 | XSS when XSAVEC or XSAVES is reported, else 0; component subleaves the host's, EDX 0).
//! 2. A vCPU given a derived leaf accepts exactly the XCR0 values the policy's XSETBV rules
//!    accept (KVM_SET_XCRS runs KVM's `__kvm_set_xcr` against the guest CPUID), and the EBX
//!    fields KVM recomputes for each accepted XCR0 equal the policy's.

#[macro_use]
mod common;

use xstate::Xfeatures;
use xstate::cpuid::CpuidData;
use xstate::layout::Layout;
use xstate::policy::{FeatureSet, Policy, Selection};

use common::kvm_or_skip;

fn host_layout() -> Option<Layout> {
    if !xstate_hw::cpu::osxsave() {
        skip!("this host has no OS-enabled XSAVE");
        return None;
    }
    Some(Layout::from_leaf0d(xstate_hw::cpu::host_cpuid().leaf0d()).expect("host layout"))
}

#[test]
fn supported_cpuid_leaf_0xd_is_the_derived_policy() {
    let (Some(kvm), Some(host)) = (kvm_or_skip(), host_layout()) else { return };
    let supported = kvm.supported_cpuid().unwrap();
    let k = supported.leaf0d();
    if !k.xsave_enumerated() {
        skip!("KVM_GET_SUPPORTED_CPUID reports no leaf 0xD");
        return;
    }
    let compared = common::assert_leaf0d_is_derived_policy(k, &host);
    assert!(compared >= 3);
}

/// Every combination of the bits that matter, valid and invalid.
fn candidates(host: &Layout) -> Vec<Xfeatures> {
    let extras = [0u64, 1 << 3, 1 << 4, 1 << 9, 1 << 11, 1 << 17, 1 << 18, 1 << 62, 1 << 63];
    let mut out = Vec::new();
    for low in 0..256u64 {
        for e in extras {
            let v = (low | e) & (host.user_supported().bits() | 0xFF | e);
            out.push(Xfeatures(v));
        }
    }
    out.sort();
    out.dedup();
    out
}

#[test]
fn vcpu_xcr0_rules_and_dynamic_ebx_follow_the_policy() {
    let (Some(kvm), Some(host)) = (kvm_or_skip(), host_layout()) else { return };
    let supported = kvm.supported_cpuid().unwrap();
    let kvm_xcr0 = supported.leaf0d().xcr0_supported();
    if !supported.leaf0d().xsave_enumerated() {
        skip!("KVM_GET_SUPPORTED_CPUID reports no leaf 0xD");
        return;
    }
    let mut lists = vec!["x87", "avx"];
    if kvm_xcr0.bits() & 0xE0 == 0xE0 {
        lists.push("avx,avx512");
    } else {
        println!("note: KVM does not support AVX-512 here; AVX-512 policy not tried");
    }
    lists.push("all");
    let (mut accepted, mut refused, mut ebx_checked, mut replaced) = (0, 0, 0, 0);
    for list in lists {
        // Within what KVM can give a guest: KVM's supported XCR0, no supervisor state (KVM
        // carries XSS outside leaf 0xD's XSAVE image).
        let sel = if list == "all" {
            Selection::masks(kvm_xcr0 & host.user_supported(), Xfeatures::EMPTY)
        } else {
            Selection::parse(list).unwrap()
        };
        let p = Policy::derive(&host, &sel).unwrap();
        let p = Policy::derive(&host, &Selection::masks(p.xcr0_max() & kvm_xcr0, Xfeatures::EMPTY)).unwrap();
        let vcpu = kvm.create_vcpu().unwrap();
        let mut cpuid: CpuidData = supported.clone();
        *cpuid.leaf0d_mut() = p.leaf0d(Xfeatures::X87, Xfeatures::EMPTY).unwrap();
        vcpu.set_cpuid(&cpuid).unwrap();
        // KVM stores the leaf as given (upstream); a KVM that rewrites it is compared with the
        // policy of the leaf it actually applied, derived from this host the same way.
        let applied = vcpu.cpuid().unwrap();
        let a = applied.leaf0d();
        let p =
            if (a.xcr0_supported(), a.xss_supported(), a.features()) == (p.xcr0_max(), p.xss_max(), p.instructions()) {
                p
            } else {
                println!(
                    "note: policy {list}: KVM_SET_CPUID2 was given 0xD.0 EAX {} / 0xD.1 EAX {:#x}, but KVM_GET_CPUID2 \
                 returns {} / {:#x}: this KVM replaces leaf 0xD, so its XCR0 rules are compared with the applied leaf",
                    p.xcr0_max(),
                    p.instructions().0,
                    a.xcr0_supported(),
                    a.features().0
                );
                replaced += 1;
                let sel = Selection::masks(a.xcr0_supported(), a.xss_supported())
                    .with_instructions(FeatureSet::from_instructions(a.features()));
                Policy::derive(&host, &sel).unwrap_or_else(|e| panic!("the applied leaf is not a policy: {e}"))
            };
        let want = p.leaf0d(Xfeatures::X87, Xfeatures::EMPTY).unwrap();
        for (i, r) in a.iter().filter(|(i, _)| *i >= 2) {
            assert_eq!(r, want.get(i), "applied subleaf {i}");
        }
        for v in candidates(&host) {
            let ours = p.check_xcr0(v);
            let theirs = vcpu.set_xcr0(v);
            assert_eq!(
                ours.is_ok(),
                theirs.is_ok(),
                "policy {list} ({}): XCR0 {v}: policy says {ours:?}, KVM_SET_XCRS says {theirs:?}",
                p.xcr0_max()
            );
            if theirs.is_err() {
                refused += 1;
                continue;
            }
            accepted += 1;
            assert_eq!(vcpu.xcr0().unwrap(), Some(v));
            let leaf = vcpu.cpuid().unwrap();
            let want = p.leaf0d(v, Xfeatures::EMPTY).unwrap();
            let got = leaf.leaf0d();
            assert_eq!(got.get(0).ebx, want.get(0).ebx, "policy {list}: 0xD.0 EBX at XCR0 {v}");
            if got.features().compaction() {
                assert_eq!(got.get(1).ebx, want.get(1).ebx, "policy {list}: 0xD.1 EBX at XCR0 {v}");
            }
            ebx_checked += 1;
        }
    }
    println!(
        "KVM_SET_XCRS agreed with the policies' XSETBV rules on {} values ({accepted} accepted, {refused} refused); \
         0xD.0 EBX recomputed by KVM matched for {ebx_checked}; {replaced} of the policies' leaves were replaced by KVM",
        accepted + refused
    );
    assert!(accepted > 0 && refused > 0);
}
