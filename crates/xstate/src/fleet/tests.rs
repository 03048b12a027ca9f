//! The baseline on well-known CPUs, each answer held against `compat::check`.

use alloc::string::ToString;
use alloc::vec::Vec;

use super::*;
use crate::compat::{Side, Verdict, check};
use crate::component::Component;
use crate::cpuid::{CpuidData, CpuidFormat, Regs};
use crate::fixtures::{
    self, AMD_ZEN2, AMD_ZEN3, AMD_ZEN4, INTEL_ICELAKE, INTEL_SAPPHIRE_RAPIDS, INTEL_SKYLAKE_SP, Rows,
};
use crate::policy::Feature;

fn host(name: &str, rows: Rows) -> Host {
    Host::from_cpuid(name, &CpuidData::from_leaf0d(CpuidFormat::Synthetic, fixtures::leaf0d(rows))).unwrap()
}

/// Every kept host runs a guest of the baseline: as is on the hosts of the chosen class (from
/// the guest's own leaf 0xD), after re-layout only on the others; and between two hosts with the
/// baseline's masks, as is within a class and after re-layout across classes. Never incompatible.
fn check_against_compat(b: &Baseline, hosts: &[Host]) {
    let guest = Side { layout: b.policy().layout(), xcr0: b.xcr0, xss: b.xss };
    for (i, h) in hosts.iter().enumerate() {
        let Some(class) = b.class_of(i) else { continue };
        let to = Side { layout: h.layout.as_ref().unwrap(), xcr0: h.offer().xcr0, xss: h.offer().xss };
        let r = check(&guest, &to);
        let want = if class == 0 { Verdict::Compatible } else { Verdict::AfterRelayout };
        assert_eq!(r.verdict, want, "guest -> {}: {:?}", h.name, r.reasons);
        for (j, g) in hosts.iter().enumerate() {
            let Some(other) = b.class_of(j) else { continue };
            let from = Side { layout: h.layout.as_ref().unwrap(), xcr0: b.xcr0, xss: b.xss };
            let to = Side { layout: g.layout.as_ref().unwrap(), xcr0: g.offer().xcr0, xss: g.offer().xss };
            let r = check(&from, &to);
            let want = if class == other { Verdict::Compatible } else { Verdict::AfterRelayout };
            assert_eq!(r.verdict, want, "{} -> {}: {:?}", h.name, g.name, r.reasons);
        }
    }
}

#[test]
fn zen4_and_sapphire_rapids_share_avx512_at_two_offsets() {
    let hosts = [host("spr", INTEL_SAPPHIRE_RAPIDS), host("zen4", AMD_ZEN4)];
    let b = baseline(&hosts, FeatureSet::EMPTY).unwrap();
    assert_eq!(b.xcr0, Xfeatures(0x2E7));
    assert_eq!(b.xss, Xfeatures(0x1800), "CET_U and CET_S are on both");
    assert_eq!(b.instructions, FeatureSet::from_instructions(crate::XsaveFeatures(0xF)));
    // AVX sits at 0x240 on both; AVX-512 and PKRU move: two classes of one host each.
    let avx = b.placement(Component::AVX).unwrap();
    assert_eq!(avx.places.len(), 1);
    assert_eq!(avx.places[0].offset, Some(0x240));
    let opmask = b.placement(Component::OPMASK).unwrap();
    let offsets: Vec<Option<u32>> = opmask.places.iter().map(|p| p.offset).collect();
    assert_eq!(offsets, [Some(0x440), Some(0x340)]);
    assert_eq!(b.classes.len(), 2);
    assert_eq!(b.classes[1].moved, Xfeatures(0x2E0), "AVX-512 and PKRU");
    // One leaf 0xD for both: without AVX-512 and PKRU.
    assert_eq!(b.one_leaf.xcr0, Xfeatures(0x7));
    assert_eq!(b.one_leaf.xss, Xfeatures(0x1800));
    // What each gives up.
    let HostResult::Kept { gives_up, .. } = &b.hosts[0] else { panic!() };
    assert_eq!(
        gives_up.components,
        Xfeatures(0x6_0000 | 0x100 | 0x400 | 0x4000 | 0x8000),
        "amx, pt, pasid, uintr, lbr"
    );
    assert_eq!(gives_up.instructions.iter().collect::<Vec<_>>(), [Feature::Xfd]);
    let HostResult::Kept { gives_up, .. } = &b.hosts[1] else { panic!() };
    assert!(gives_up.components.is_empty() && gives_up.instructions.is_empty());
    assert_eq!(gives_up.relayout, Xfeatures(0x2E0));
    // Why AMX is not in the baseline: Zen 4 lacks it.
    let amx = b.limits.iter().find(|l| l.feature == Some(Feature::Amx)).unwrap();
    assert_eq!(amx.lacked, [1]);
    // The guest's leaf 0xD is Sapphire Rapids' geometry for the baseline's masks.
    assert_eq!(b.policy().layout().standard_range(Component::OPMASK), Some(0x440..0x480));
    assert_eq!(b.policy().xcr0_max(), Xfeatures(0x2E7));
    check_against_compat(&b, &hosts);
}

#[test]
fn a_required_feature_drops_the_hosts_without_it() {
    let hosts = [host("spr", INTEL_SAPPHIRE_RAPIDS), host("zen4", AMD_ZEN4), host("zen3", AMD_ZEN3)];
    let b = baseline(&hosts, [Feature::Avx512].into_iter().collect()).unwrap();
    assert!(matches!(b.hosts[2], HostResult::Dropped(Drop::Lacks { feature: Feature::Avx512, .. })));
    assert_eq!(b.xcr0, Xfeatures(0x2E7));
    let b = baseline(&hosts, [Feature::Amx].into_iter().collect()).unwrap();
    assert_eq!(b.kept().count(), 1);
    assert_eq!(b.xcr0, Xfeatures(0x602E7));
    assert_eq!(b.classes.len(), 1);
    check_against_compat(&b, &hosts);
    // Without requirements, Zen 3 limits AVX-512.
    let b = baseline(&hosts, FeatureSet::EMPTY).unwrap();
    assert_eq!(b.xcr0, Xfeatures(0x207));
    let l = b.limits.iter().find(|l| l.feature == Some(Feature::Avx512)).unwrap();
    assert_eq!(l.lacked, [2]);
    check_against_compat(&b, &hosts);
    // A requirement no host meets is an error naming it.
    let e = baseline(&hosts[1..], [Feature::Amx].into_iter().collect()).unwrap_err();
    assert!(e.to_string().contains("amx"), "{e}");
    assert_eq!(baseline(&[], FeatureSet::EMPTY).unwrap_err(), BaselineError::NoHosts);
}

#[test]
fn sizes_that_differ_keep_a_component_out() {
    // Zen 2's bit 9 is 64 bytes, Zen 3's PKRU 8: neither is in the baseline.
    let hosts = [host("zen2", AMD_ZEN2), host("zen3", AMD_ZEN3)];
    let b = baseline(&hosts, FeatureSet::EMPTY).unwrap();
    assert_eq!(b.xcr0, Xfeatures(0x7));
    let l = b.limits.iter().find(|l| l.components.contains(Component::PKRU)).unwrap();
    assert_eq!(l.sizes, [(Component::PKRU, 64, alloc::vec![0]), (Component::PKRU, 8, alloc::vec![1])]);
    check_against_compat(&b, &hosts);
    // Requiring pku drops Zen 2: its bit 9 is not PKRU.
    let b = baseline(&hosts, [Feature::Pku].into_iter().collect()).unwrap();
    assert!(matches!(b.hosts[0], HostResult::Dropped(Drop::NotRecognised { feature: Feature::Pku, .. })));
}

#[test]
fn one_class_when_offsets_agree_and_unplaced_components_named() {
    // Ice Lake keeps MPX's space: AVX-512 sits where Skylake-SP has it.
    let hosts = [host("skx", INTEL_SKYLAKE_SP), host("icl", INTEL_ICELAKE)];
    let b = baseline(&hosts, FeatureSet::EMPTY).unwrap();
    assert_eq!(b.xcr0, Xfeatures(0x2E7));
    assert_eq!(b.xss, Xfeatures(0x100));
    assert_eq!(b.classes.len(), 1);
    assert_eq!(b.one_leaf.xcr0, b.xcr0);
    assert!(b.limits.iter().any(|l| l.feature == Some(Feature::Mpx) && l.lacked == [1]));
    check_against_compat(&b, &hosts);
    // A dump that lost BNDREGS' subleaf: MPX's place is unknown there, and the baseline says so.
    let mut leaf = fixtures::leaf0d(INTEL_SKYLAKE_SP);
    leaf.set(3, Regs::default());
    let partial = Host::from_cpuid("old-dump", &CpuidData::from_leaf0d(CpuidFormat::Aida, leaf)).unwrap();
    assert_eq!(partial.omitted, Xfeatures(0x8));
    let hosts = [host("skx", INTEL_SKYLAKE_SP), partial];
    let b = baseline(&hosts, FeatureSet::EMPTY).unwrap();
    assert_eq!(b.xcr0, Xfeatures(0x2E7));
    let l = b.limits.iter().find(|l| l.feature == Some(Feature::Mpx)).unwrap();
    assert_eq!((l.lacked.as_slice(), l.unplaced.as_slice()), (&[][..], &[1][..]));
    // Requiring MPX drops it as unknown, not as lacking.
    let b = baseline(&hosts, [Feature::Mpx].into_iter().collect()).unwrap();
    assert!(matches!(b.hosts[1], HostResult::Dropped(Drop::Unplaced { feature: Feature::Mpx, .. })));
}

#[test]
fn a_host_without_xsave_drops_out_named() {
    let mut none = CpuidData::new(CpuidFormat::Synthetic);
    none.insert(0xD, 0, Regs::default());
    let hosts = [Host::from_cpuid("core2", &none).unwrap(), host("zen3", AMD_ZEN3)];
    assert!(hosts[0].layout.is_none());
    let b = baseline(&hosts, FeatureSet::EMPTY).unwrap();
    assert!(matches!(b.hosts[0], HostResult::Dropped(Drop::NoXsave)));
    assert_eq!(b.xcr0, Xfeatures(0x207));
    assert_eq!(
        baseline(&hosts[..1], FeatureSet::EMPTY).unwrap_err(),
        BaselineError::AllDropped { require: FeatureSet::EMPTY }
    );
}

#[test]
fn gating_flags_follow_the_components() {
    // Leaf 7 of a host with AVX512F and PKU, leaf 1 with AVX.
    let with_flags = |rows: Rows, ebx7: u32, ecx7: u32| {
        let mut d = CpuidData::from_leaf0d(CpuidFormat::Synthetic, fixtures::leaf0d(rows));
        d.insert(1, 0, Regs::new(0, 0, 1 << 28, 0));
        d.insert(7, 0, Regs::new(0, ebx7, ecx7, 0));
        Host::from_cpuid("h", &d).unwrap()
    };
    let hosts = [with_flags(INTEL_ICELAKE, 1 << 16, 1 << 3), with_flags(AMD_ZEN3, 0, 1 << 3)];
    let b = baseline(&hosts, FeatureSet::EMPTY).unwrap();
    let avx512f = b.gates.iter().find(|g| g.gate.flag.name == "avx512f").unwrap();
    assert!(!avx512f.exposed, "AVX-512 is not in the baseline: AVX512F must read 0");
    let pku = b.gates.iter().find(|g| g.gate.flag.name == "pku").unwrap();
    assert!(pku.exposed);
    assert_eq!(pku.on_every_host, Some(true));
    let HostResult::Kept { gives_up, .. } = &b.hosts[0] else { panic!() };
    assert!(gives_up.flags.iter().any(|&g| b.gates[g].gate.flag.name == "avx512f"));
    // A host whose source has no leaf 7 (a policy file): unknown, not "off".
    let hosts = [with_flags(AMD_ZEN3, 0, 1 << 3), host("policy", AMD_ZEN3)];
    let b = baseline(&hosts, FeatureSet::EMPTY).unwrap();
    let pku = b.gates.iter().find(|g| g.gate.flag.name == "pku").unwrap();
    assert_eq!(pku.on_every_host, None);
    assert!(b.gated_leaves.iter().any(|l| l.leaf == 0x1D && !l.exposed));
}
