use super::*;
use crate::fixtures::{self, layout};
use alloc::vec;

/// A single hole, as `holes` returns it.
fn one(r: Range<u32>) -> Option<Vec<Range<u32>>> {
    Some(core::iter::once(r).collect())
}

fn x(v: u64) -> Xfeatures {
    Xfeatures(v)
}

#[test]
fn intel_avx512_pkru() {
    let l = layout(fixtures::INTEL_SKYLAKE_SP);
    assert_eq!(l.standard_size_max(), 2696);
    assert_eq!(l.geometry(Component::PKRU).unwrap().offset, 0xA80);
    assert_eq!(l.standard_size(x(0x2FF)), Some(2696));
    assert_eq!(l.standard_size(x(0x2E7)), Some(2696));
    assert_eq!(l.standard_size(x(0xFF)), Some(2688));
    assert_eq!(l.standard_size(x(0x1F)), Some(1088));
    assert_eq!(l.standard_size(x(0x7)), Some(832));
    assert_eq!(l.standard_size(x(0x3)), Some(576));
    assert_eq!(l.standard_size(x(0x1)), Some(576));
    assert_eq!(l.standard_size(x(0)), Some(0));
    // Supervisor PT never counts in the standard format.
    assert_eq!(l.standard_size(x(0x107)), Some(832));
    // Compacted sizes, XSAVE-FACTS 9.3.
    assert_eq!(l.compacted_size(x(0x1F)), Some(960));
    assert_eq!(l.compacted_size(x(0xE7)), Some(2432));
    assert_eq!(l.compacted_size(x(0xFF)), Some(2560));
    assert_eq!(l.compacted_size(x(0x2E7)), Some(2440));
    assert_eq!(l.compacted_size(x(0x2FF)), Some(2568));
    assert_eq!(l.compacted_size(x(1 << 63 | 0x2FF)), Some(2568));
    // PT falls between Hi16_ZMM and PKRU in compacted order.
    assert_eq!(l.compacted_offset(Component::PT, x(0x3FF)), Some(2560));
    assert_eq!(l.compacted_offset(Component::PKRU, x(0x3FF)), Some(2688));
    assert_eq!(l.holes(x(0x2FF)), one(0x340..0x3C0));
    assert_eq!(l.holes(x(0x2E7)), one(0x340..0x440));
    assert_eq!(l.holes(x(0x207)), one(0x340..0xA80));
    assert!(l.anomalies().is_empty());
    // Unsupported bits give no answer rather than a wrong one.
    assert_eq!(l.standard_size(x(0x600E7)), None);
    assert_eq!(l.compacted_size(x(1 << 62 | 3)), None);
    assert_eq!(l.compacted_offset(Component::AVX, x(0x3)), None);
}

#[test]
fn amd_zen4() {
    let l = layout(fixtures::AMD_ZEN4);
    let off = |c| l.geometry(c).unwrap().offset;
    assert_eq!(off(Component::OPMASK), 0x340);
    assert_eq!(off(Component::ZMM_HI256), 0x380);
    assert_eq!(off(Component::HI16_ZMM), 0x580);
    assert_eq!(off(Component::PKRU), 0x980);
    assert_eq!(l.standard_size_max(), 2440);
    assert_eq!(l.standard_size(x(0x2E7)), Some(2440));
    assert_eq!(l.compacted_size(x(0x2E7)), Some(2440));
    assert_eq!(l.holes(x(0x2E7)), Some(vec![]));
    assert_eq!(l.supervisor_supported(), x(0x1800));
    assert!(l.geometry(Component::CET_U).unwrap().supervisor);
    assert_eq!(l.standard_range(Component::CET_U), None);
}

#[test]
fn amd_milan_cet_sizes() {
    // XSAVE-FACTS 9.2: sizes measured on AMD Milan with CET.
    let l = layout(fixtures::AMD_ZEN3);
    for (m, std, cmp) in [
        (0x1, 0x240, 0x240),
        (0x3, 0x240, 0x240),
        (0x7, 0x340, 0x340),
        (0x207, 0x988, 0x348),
        (0xA07, 0x988, 0x358),
        (0x1A07, 0x988, 0x370),
    ] {
        assert_eq!(l.standard_size(x(m)), Some(std), "standard {m:#x}");
        assert_eq!(l.compacted_size(x(m)), Some(cmp), "compacted {m:#x}");
    }
    assert_eq!(l.holes(x(0x207)), one(0x340..0x980));
}

#[test]
fn amd_fam15h_lwp_out_of_order() {
    let l = layout(fixtures::AMD_FAM15H_LWP);
    assert_eq!(l.user_supported(), x(0x4000_0000_0000_0007));
    assert_eq!(l.geometry(Component::LWP).unwrap().offset, 0x340);
    assert_eq!(l.standard_size_max(), 960);
    assert_eq!(l.standard_size(x(0x4000_0000_0000_0007)), Some(960));
    assert_eq!(l.standard_size(x(0x7)), Some(832));
    assert_eq!(l.standard_size(x(0x4000_0000_0000_0003)), Some(960));
    assert_eq!(l.holes(x(0x4000_0000_0000_0003)), one(0x240..0x340));
    assert_eq!(l.compacted_size(x(0x4000_0000_0000_0007)), Some(960));
    assert_eq!(l.compacted_offset(Component::LWP, x(0x4000_0000_0000_0007)), Some(832));
    assert_eq!(l.compacted_offset(Component::LWP, x(0x4000_0000_0000_0003)), Some(576));
    let checks = l.cross_check(None, None);
    assert!(checks.iter().all(|c| c.outcome.is_ok()), "{checks:?}");
}

#[test]
fn intel_amx_guest_this_project_machine() {
    let l = layout(fixtures::INTEL_AMX_GUEST);
    let m = x(0x600E7);
    assert_eq!(l.standard_size(m), Some(11008));
    assert_eq!(l.compacted_size(m), Some(10688));
    assert_eq!(l.compacted_offset(Component::TILEDATA, m), Some(2496));
    assert_eq!(l.compacted_offset(Component::TILECFG, m), Some(2432));
    assert_eq!(l.compacted_offset(Component::OPMASK, m), Some(832));
    assert_eq!(l.compacted_offset(Component::ZMM_HI256, m), Some(896));
    assert_eq!(l.compacted_offset(Component::HI16_ZMM, m), Some(1408));
    assert_eq!(l.standard_size(x(0x200E7)), Some(2816));
    assert_eq!(l.compacted_size(x(0x200E7)), Some(2496));
    assert_eq!(l.holes(m), Some(vec![0x340..0x440, 0xA80..0xAC0]));
    let g = l.geometry(Component::TILEDATA).unwrap();
    assert!(g.align64 && g.xfd && !g.supervisor);
    let checks = l.cross_check(Some(m), Some(Xfeatures::EMPTY));
    assert!(checks.iter().all(|c| c.outcome == Outcome::Agrees), "{checks:?}");
}

#[test]
fn amx_alignment_matters_with_pkru() {
    let l = layout(fixtures::INTEL_SAPPHIRE_RAPIDS);
    // 0x602E7: PKRU ends at 0x988 and TILECFG rounds up to 0x9C0; with PT, PKRU ends at 0xA08
    // and TILECFG rounds up to 0xA40 (XSAVE-FACTS 2.3).
    assert_eq!(l.compacted_offset(Component::TILECFG, x(0x602E7)), Some(0x9C0));
    assert_eq!(l.compacted_offset(Component::TILECFG, x(0x602E7 | 0x100)), Some(0xA40));
    assert_eq!(l.compacted_size(x(0x602E7)), Some(10752));
    assert_eq!(l.compacted_size(x(0x602E7 | 0x100)), Some(0x2A80));
    assert_eq!(l.compacted_size(x(0x602E7 | 0x100)), Some(10880));
    assert_eq!(l.standard_size(x(0x602E7)), Some(11008));
    // 10696 is what a peer that ignores align64 computes: the checker names that bug.
    let mut leaf = fixtures::leaf0d(fixtures::INTEL_SAPPHIRE_RAPIDS);
    let r = leaf.get(1);
    leaf.set(1, Regs::new(r.eax, 10696, r.ecx, r.edx));
    let bad = Layout::from_leaf0d(&leaf).unwrap();
    let c = &bad.cross_check(Some(x(0x602E7)), Some(x(0)))[2];
    match &c.outcome {
        Outcome::Mismatch(why) => assert!(why.contains("ignoring the 64-byte alignment"), "{why}"),
        o => panic!("{o:?}"),
    }
    // The dump's own report is explained by XCR0 0x602E7 and XSS = PT.
    let checks = l.cross_check(None, None);
    assert!(checks.iter().all(|c| c.outcome.is_ok()), "{checks:?}");
    assert_eq!(checks[2].mask, Some(x(0x602E7 | 0x100)));
}

#[test]
fn zen2_bit9_is_not_pkru() {
    let l = layout(fixtures::AMD_ZEN2);
    assert_eq!(l.standard_size(x(0x207)), Some(896));
    assert!(!l.recognised(Component::PKRU));
    assert_eq!(l.name(Component::PKRU), "component 9");
    assert_eq!(l.name(Component::AVX), "avx");
    assert!(matches!(l.anomalies(), [Anomaly::CatalogueSize { size: 64, expected: 8, .. }]));
}

#[test]
fn cross_check_explains_mismatches() {
    // VirtualBox-style: EBX reports 0x340 for XCR0 = 3.
    let l = layout(fixtures::AVX_ONLY);
    let c = &l.cross_check(Some(x(0x3)), Some(x(0)))[1];
    match &c.outcome {
        Outcome::Mismatch(why) => assert!(why.contains("XCR0 = 0x7"), "{why}"),
        o => panic!("{o:?}"),
    }
    // Xen-style LWP loss: ECX reports the size without bit 62.
    let mut leaf = fixtures::leaf0d(fixtures::AMD_FAM15H_LWP);
    leaf.set(0, Regs::new(0x7, 0x340, 0x340, 0x4000_0000));
    let c = &Layout::from_leaf0d(&leaf).unwrap().cross_check(None, None)[0];
    match &c.outcome {
        Outcome::Mismatch(why) => assert!(why.contains("above bit 31"), "{why}"),
        o => panic!("{o:?}"),
    }
    // CPUs without compaction report 0.
    let c = &l.cross_check(None, None)[2];
    assert_eq!(c.outcome, Outcome::NotApplicable("no XSAVEC/XSAVES"));
}

#[test]
fn bad_enumerations_are_refused() {
    let bad = |rows: fixtures::Rows| Layout::from_leaf0d(&fixtures::leaf0d(rows)).unwrap_err();
    assert_eq!(bad(&[(0, 0, 0, 0, 0)]), LayoutError::XsaveNotEnumerated);
    assert_eq!(Layout::from_leaf0d(&Leaf0d::new()).unwrap_err(), LayoutError::XsaveNotEnumerated);
    assert_eq!(bad(&[(0, 0x6, 0x340, 0x340, 0)]), LayoutError::X87NotSupported);
    assert_eq!(bad(&[(0, 0x7, 0x340, 0x340, 0)]), LayoutError::MissingSubleaf { component: Component::AVX });
    assert_eq!(
        bad(&[(0, 0x7, 0x340, 0x340, 0), (2, 0, 0, 0, 0)]),
        LayoutError::MissingSubleaf { component: Component::AVX }
    );
    assert_eq!(
        bad(&[(0, 0x7, 0x340, 0x340, 0), (2, 0x100, 0x200, 0, 0)]),
        LayoutError::OffsetInLegacy { component: Component::AVX, offset: 0x200 }
    );
    assert_eq!(
        bad(&[(0, 0x7, 0x340, 0x340, 0), (2, 0x100, 0x240, 1, 0)]),
        LayoutError::ClassFlag { component: Component::AVX, in_xss: false }
    );
    assert_eq!(
        bad(&[(0, 0x3, 0x240, 0x240, 0), (1, 0xF, 0x240, 0x100, 0), (8, 0x80, 0, 0, 0)]),
        LayoutError::ClassFlag { component: Component::PT, in_xss: true }
    );
    assert_eq!(
        bad(&[(0, 0x3, 0x240, 0x240, 0), (1, 0xF, 0x240, 0x100, 0), (8, 0x80, 0x240, 1, 0)]),
        LayoutError::SupervisorOffset { component: Component::PT, offset: 0x240 }
    );
    assert_eq!(
        bad(&[(0, 0x7, 0x340, 0x340, 0), (1, 0xF, 0x240, 0x4, 0), (2, 0x100, 0x240, 0, 0)]),
        LayoutError::BothClasses { component: Component::AVX }
    );
    assert_eq!(
        bad(&[(0, 0x7, 0x340, 0x340, 0), (2, 0xFFFF_FF00, 0x240, 0, 0)]),
        LayoutError::Overflow { component: Component::AVX }
    );
    assert_eq!(bad(&[(0, 0x3, 0x240, 0x240, 0x8000_0000)]), LayoutError::Bit63 { register: "XCR0" });
}

#[test]
fn unsupported_subleaves_are_masked() {
    // Centaur CNS: CET subleaves although SL1.ECX = 0.
    let mut rows = vec![(0u8, 0x7u32, 0x340u32, 0x340u32, 0u32), (1, 0xF, 0x340, 0, 0), (2, 0x100, 0x240, 0, 0)];
    rows.push((11, 0x10, 0, 1, 0));
    rows.push((12, 0x18, 0, 1, 0));
    let mut leaf = Leaf0d::new();
    for (i, a, b, c, d) in rows {
        leaf.set(i, Regs::new(a, b, c, d));
    }
    let l = Layout::from_leaf0d(&leaf).unwrap();
    assert_eq!(l.supported(), x(0x7));
    assert_eq!(l.geometry(Component::CET_U), None);
    assert_eq!(l.anomalies(), &[Anomaly::UnsupportedSubleaf(11), Anomaly::UnsupportedSubleaf(12)]);
}

#[test]
fn synthetic_layouts_round_trip_through_leaf0d() {
    let l = layout(fixtures::INTEL_SAPPHIRE_RAPIDS);
    let comps: Vec<(Component, Geometry)> = l.supported().iter().map(|c| (c, l.geometry(c).unwrap())).collect();
    let s = Layout::from_components(l.features(), comps).unwrap();
    assert_eq!(s.supported(), l.supported());
    for c in l.supported() {
        assert_eq!(s.geometry(c), l.geometry(c));
    }
    assert_eq!(s.reported().standard_size_max, 11008);
    assert_eq!(s.reported().compacted_size_enabled, l.compacted_size(l.supported()).unwrap());
    let leaf = l.to_leaf0d(x(0x602E7), x(0x100));
    assert_eq!(leaf.get(0), Regs::new(0x602E7, 0x2B00, 0x2B00, 0));
    assert_eq!(leaf.get(1), Regs::new(0x1F, 0x2A80, 0xDD00, 0));
    assert_eq!(leaf.get(18), Regs::new(0x2000, 0xB00, 6, 0));
    assert_eq!(Layout::from_leaf0d(&leaf).unwrap(), {
        let mut a = l.clone();
        a.reported =
            Reported { standard_size_enabled: 0x2B00, standard_size_max: 0x2B00, compacted_size_enabled: 0x2A80 };
        a
    });
}

/// The reference: pack one component at a time (SDM Vol. 1 §13.4.3).
fn naive_compacted(l: &Layout, m: Xfeatures, upto: Option<Component>) -> u32 {
    let mut off = 576u32;
    for c in m.iter().filter(|c| !c.is_legacy()) {
        let g = l.geometry(c).unwrap();
        if g.align64 {
            off = (off + 63) & !63;
        }
        if Some(c) == upto {
            return off;
        }
        off += g.size;
    }
    off
}

#[test]
fn table_driven_compaction_matches_the_reference_on_every_subset() {
    for rows in [
        fixtures::INTEL_SAPPHIRE_RAPIDS,
        fixtures::INTEL_SKYLAKE_SP,
        fixtures::AMD_ZEN4,
        fixtures::AMD_FAM15H_LWP,
        fixtures::INTEL_AMX_GUEST,
    ] {
        let l = layout(rows);
        let bits: Vec<Component> = l.supported().iter().collect();
        for k in 0u32..(1 << bits.len()) {
            let m: Xfeatures = bits.iter().enumerate().filter(|(i, _)| k >> i & 1 != 0).map(|(_, c)| *c).collect();
            assert_eq!(l.compacted_size(m), Some(naive_compacted(&l, m, None)), "size {m}");
            for c in m.iter() {
                let want = if c.is_legacy() { l.geometry(c).unwrap().offset } else { naive_compacted(&l, m, Some(c)) };
                assert_eq!(l.compacted_offset(c, m), Some(want), "offset of {c} in {m}");
            }
        }
    }
}

#[test]
fn same_geometry_ignores_only_the_sizes_of_the_enabled_masks() {
    // Zen 4 as one vCPU reports it and as a vCPU still in its reset state (XCR0 0x1) does:
    // 0xD.0 EBX and 0xD.1 EBX follow the enabled masks; the layout is the same.
    let running = fixtures::leaf0d(fixtures::AMD_ZEN4);
    let mut reset = running;
    let r0 = reset.get(0);
    reset.set(0, crate::cpuid::Regs::new(r0.eax, 576, r0.ecx, r0.edx));
    let r1 = reset.get(1);
    reset.set(1, crate::cpuid::Regs::new(r1.eax, 576, r1.ecx, r1.edx));
    let (a, b) = (Layout::from_leaf0d(&running).unwrap(), Layout::from_leaf0d(&reset).unwrap());
    assert!(a != b && a.same_geometry(&b) && b.same_geometry(&a));
    // Another offset, or another maximum size (0xD.0 ECX), is another layout.
    let mut moved = running;
    let r5 = moved.get(5);
    moved.set(5, crate::cpuid::Regs::new(r5.eax, r5.ebx + 0x100, r5.ecx, r5.edx));
    assert!(!a.same_geometry(&Layout::from_leaf0d(&moved).unwrap()));
    let mut max = running;
    max.set(0, crate::cpuid::Regs::new(r0.eax, r0.ebx, r0.ecx + 64, r0.edx));
    assert!(!a.same_geometry(&Layout::from_leaf0d(&max).unwrap()));
    assert!(!a.same_geometry(&layout(fixtures::INTEL_SKYLAKE_SP)));
}
