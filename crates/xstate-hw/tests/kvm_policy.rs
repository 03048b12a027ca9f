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

/// Issue 12 item 2: KVM_GET_SUPPORTED_CPUID and this CPU's own CPUID are whole tables their
/// makers keep consistent: neither reports a flag whose state its leaf 0xD lacks, so the policy
/// of everything they support changes none of their flags. Smaller policies applied to them
/// clear exactly the gated flags they report; KVM_SET_CPUID2 takes the result; the table KVM
/// then gives the guest (KVM_GET_CPUID2) is the one set, with XCR0 values naming a hidden
/// component refused, or (kvm_pvm replaces the guest's CPUID) one that is itself consistent.
#[test]
fn whole_cpuid_against_kvm_and_the_cpu() {
    use std::io::Write;
    use xstate::cpuid::gating;
    let (Some(kvm), Some(host)) = (kvm_or_skip(), host_layout()) else { return };
    let supported = kvm.supported_cpuid().unwrap();
    if !supported.leaf0d().xsave_enumerated() {
        let _ = writeln!(std::io::stderr(), "SKIP: KVM_GET_SUPPORTED_CPUID reports no leaf 0xD");
        return;
    }
    let kvm_xcr0 = supported.leaf0d().xcr0_supported();
    let kl = Layout::from_leaf0d(supported.leaf0d()).expect("KVM's leaf 0xD is a layout");
    let (mut cleared, mut kept, mut replaced, mut advertised) = (0, 0, 0, 0);
    for (source, table, layout) in [
        ("KVM_GET_SUPPORTED_CPUID", supported.clone(), kl.clone()),
        ("this CPU's CPUID", xstate_hw::cpu::host_cpuid(), host.clone()),
    ] {
        let everything = Policy::derive(&layout, &Selection::all()).unwrap();
        let exposed = everything.xcr0_max() | everything.xss_max();
        let own = everything.guest_cpuid(&table);
        let diffs: Vec<String> = table
            .entries()
            .filter(|(k, r)| own.get(k.0, k.1) != Some(*r))
            .map(|(k, r)| format!("{:#x}.{}: {r:?} -> {:?}", k.0, k.1, own.get(k.0, k.1)))
            .collect();
        assert!(diffs.is_empty(), "{source} reports flags without their state (XCR0|XSS {exposed}): {diffs:?}");
        for g in gating::FLAG_GROUPS {
            if table.get(g.leaf, g.subleaf).is_some_and(|r| r.get(g.reg) & g.bits != 0) {
                advertised += 1;
            }
        }
        let mut lists = vec!["x87", "avx"];
        if kvm_xcr0.bits() & 0xE0 == 0xE0 && exposed.bits() & 0xE0 == 0xE0 {
            lists.push("avx,avx512");
        }
        for list in lists {
            let sel = if list == "x87" {
                Selection::masks(Xfeatures(3), Xfeatures::EMPTY)
            } else {
                Selection::parse(list).unwrap()
            };
            let p = Policy::derive(&layout, &sel).unwrap();
            let g = p.guest_cpuid(&table);
            let hidden = exposed - p.xcr0_max() - p.xss_max();
            for gate in gating::FLAG_GROUPS {
                let (Some(k), Some(o)) = (table.get(gate.leaf, gate.subleaf), g.get(gate.leaf, gate.subleaf)) else {
                    continue;
                };
                let want =
                    if gate.needs.is_subset_of(p.xcr0_max() | p.xss_max()) { k.get(gate.reg) & gate.bits } else { 0 };
                assert_eq!(o.get(gate.reg) & gate.bits, want, "{source} {list}: {}", gate.names);
                cleared += ((k.get(gate.reg) ^ o.get(gate.reg)) & gate.bits).count_ones();
            }
            let vcpu = kvm.create_vcpu().unwrap();
            vcpu.set_cpuid(&g)
                .unwrap_or_else(|e| panic!("{source} {list}: KVM_SET_CPUID2 refused the guest table: {e}"));
            let back = vcpu.cpuid().unwrap();
            // OSXSAVE (1 ECX[27]) and OSPKE (7.0 ECX[4]) are KVM's to set from CR4.
            let flags = |t: &CpuidData| -> Vec<(u32, u32, u32, u32)> {
                [(1, 0, 1u32 << 27), (7, 0, 1 << 4), (7, 1, 0), (0x1D, 0, 0), (0x1D, 1, 0), (0x1E, 0, 0)]
                    .iter()
                    .map(|&(l, s, dynamic)| {
                        let r = t.get(l, s).unwrap_or_default();
                        (r.eax, r.ebx, r.ecx & !dynamic, r.edx)
                    })
                    .collect()
            };
            if flags(&back) == flags(&g) && back.leaf0d().xcr0_supported() == p.xcr0_max() {
                vcpu.set_xcr0(p.xcr0_max()).unwrap_or_else(|e| panic!("{list}: XCR0 {}: {e}", p.xcr0_max()));
                for c in hidden.iter().filter(|c| (kvm_xcr0 & layout.user_supported()).contains(*c)) {
                    let group =
                        xstate::policy::Feature::of_component(c.index()).map_or(Xfeatures(c.bit()), |f| f.components());
                    let v = p.xcr0_max() | group;
                    assert!(vcpu.set_xcr0(v).is_err(), "{source} {list}: KVM accepted XCR0 {v} with hidden {c}");
                }
                kept += 1;
            } else {
                // This KVM (kvm_pvm) gives the guest its own table instead of the one set: that
                // table must be consistent by the same rules.
                let applied = back.leaf0d().xcr0_supported() | back.leaf0d().xss_supported();
                for gate in gating::closed_by(applied) {
                    let r = back.get(gate.leaf, gate.subleaf).unwrap_or_default();
                    assert_eq!(
                        r.get(gate.reg) & gate.bits,
                        0,
                        "{list}: KVM applied {} without {}",
                        gate.names,
                        gate.needs - applied
                    );
                }
                let leaf =
                    Layout::from_leaf0d(back.leaf0d()).err().map_or(String::new(), |e| format!(" (its leaf 0xD: {e})"));
                let _ = writeln!(
                    std::io::stderr(),
                    "note: {source} {list}: KVM_GET_CPUID2 does not return the table KVM_SET_CPUID2 was given (7.0 {:x?}, \
                     XCR0 {}): this KVM replaces the guest's CPUID; no flag of the replacement lacks its state{leaf}",
                    back.get(7, 0).unwrap_or_default(),
                    back.leaf0d().xcr0_supported()
                );
                replaced += 1;
            }
        }
    }
    println!(
        "whole CPUID: {advertised} gated flag groups reported by KVM and the CPU, all with their state; {cleared} flag \
         bits cleared by smaller policies; {kept} guest tables kept by KVM as given, {replaced} replaced by a consistent one"
    );
    assert!(cleared > 0, "no gated flag was cleared: the smaller policies tested nothing");
}
