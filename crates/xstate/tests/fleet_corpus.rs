//! Baselines of real fleets from the CPUID corpus (`../shared/cpuid`): a Zen 4 + Sapphire
//! Rapids pair, every Intel CPU that enumerates AVX-512, and the whole corpus (with and without
//! `avx512` required). Each is held against `compat`: every host accepts a guest of the
//! baseline (its own leaf 0xD) as is where the baseline puts it in the chosen offset class, after
//! re-layout where it says the host is in another class, and never "incompatible"; and between
//! any two hosts with the baseline's masks, as is within a class and after re-layout across.

#[macro_use]
mod common;

use xstate::compat::{Side, Verdict, check, verdict};
use xstate::cpuid;
use xstate::fleet::{Baseline, Drop, Host, HostResult, baseline};
use xstate::layout::LayoutError;
use xstate::policy::{Feature, FeatureSet};
use xstate::{Component, Xfeatures};

use common::{Corpus, corpus_or_skip};

fn host(corpus: &Corpus, file: &str) -> Host {
    Host::from_cpuid(file, &cpuid::parse(&corpus.dump(file)).unwrap()).unwrap()
}

/// Every host of the corpus but the two broken dumps (leaf 1 says XSAVE, leaf 0xD is all zero:
/// the corpus README's section 5), which `Host::from_cpuid` refuses.
fn every_host(corpus: &Corpus) -> Vec<Host> {
    let mut broken = 0;
    let hosts: Vec<Host> = corpus
        .entries
        .iter()
        .filter_map(|e| {
            let file = e["file"].as_str().unwrap();
            match Host::from_cpuid(file, &cpuid::parse(&corpus.dump(file)).unwrap()) {
                Ok(h) => Some(h),
                Err(LayoutError::Leaf0dEmpty) => {
                    broken += 1;
                    None
                }
                Err(e) => panic!("{file}: {e}"),
            }
        })
        .collect();
    assert_eq!(broken, 2, "the corpus's two broken dumps");
    hosts
}

/// The checks of the module documentation; returns (hosts covered, host pairs checked).
fn check_against_compat(b: &Baseline, hosts: &[Host]) -> (usize, usize) {
    let guest = Side { layout: b.policy().layout(), xcr0: b.xcr0, xss: b.xss };
    let kept: Vec<usize> = b.kept().collect();
    let mut pairs = 0;
    for &i in &kept {
        let h = &hosts[i];
        let class = b.class_of(i).unwrap();
        let l = h.layout.as_ref().unwrap();
        let dest = Side { layout: l, xcr0: h.offer().xcr0, xss: h.offer().xss };
        let r = check(&guest, &dest);
        let want = if class == 0 { Verdict::Compatible } else { Verdict::AfterRelayout };
        assert_eq!(r.verdict, want, "baseline guest -> {}: {:?}", h.name, r.reasons);
        // The class's own leaf 0xD is as is on its hosts.
        let own = &b.classes[class].policy;
        let r = check(&Side { layout: own.layout(), xcr0: b.xcr0, xss: b.xss }, &dest);
        assert_eq!(r.verdict, Verdict::Compatible, "class {class} guest -> {}: {:?}", h.name, r.reasons);
        let HostResult::Kept { gives_up, .. } = &b.hosts[i] else { unreachable!() };
        assert_eq!(gives_up.relayout.is_empty(), class == 0, "{}", h.name);
        let from = Side { layout: l, xcr0: b.xcr0, xss: b.xss };
        for &j in &kept {
            let g = &hosts[j];
            let to = Side { layout: g.layout.as_ref().unwrap(), xcr0: g.offer().xcr0, xss: g.offer().xss };
            let want = if b.class_of(j) == Some(class) { Verdict::Compatible } else { Verdict::AfterRelayout };
            let got = verdict(&from, &to);
            if got != want {
                panic!("{} -> {}: {got:?}, want {want:?}: {:?}", h.name, g.name, check(&from, &to).reasons);
            }
            pairs += 1;
        }
    }
    (kept.len(), pairs)
}

#[test]
fn zen4_and_sapphire_rapids() {
    let Some(corpus) = corpus_or_skip("the Zen 4 + Sapphire Rapids baseline not checked") else { return };
    let hosts = [
        host(&corpus, "AuthenticAMD/AuthenticAMD0A10F11_K19_Genoa_01_CPUID.txt"),
        host(&corpus, "GenuineIntel/GenuineIntel00806F8_SapphireRapids_05_CPUID.txt"),
    ];
    let b = baseline(&hosts, FeatureSet::EMPTY).unwrap();
    assert_eq!(b.xcr0, Xfeatures(0x2E7), "x87, SSE, AVX, AVX-512, PKRU; no AMX");
    assert_eq!(b.classes.len(), 2, "AMD and Intel put AVX-512 and PKRU at different offsets");
    assert_eq!(b.classes[1].moved, Xfeatures(0x2E0));
    let opmask = b.placement(Component::OPMASK).unwrap();
    let mut offsets: Vec<u32> = opmask.places.iter().map(|p| p.offset.unwrap()).collect();
    offsets.sort();
    assert_eq!(offsets, [0x340, 0x440]);
    assert_eq!(b.one_leaf.xcr0, Xfeatures(0x7));
    assert_eq!(check_against_compat(&b, &hosts), (2, 4));
    // Requiring AMX leaves Sapphire Rapids alone.
    let b = baseline(&hosts, [Feature::Amx].into_iter().collect()).unwrap();
    assert!(matches!(b.hosts[0], HostResult::Dropped(Drop::Lacks { feature: Feature::Amx, .. })));
    assert_eq!(b.xcr0, Xfeatures(0x602E7));
    check_against_compat(&b, &hosts);
}

#[test]
fn every_intel_avx512_cpu() {
    let Some(corpus) = corpus_or_skip("the Intel AVX-512 baseline not checked") else { return };
    let hosts: Vec<Host> = every_host(&corpus)
        .into_iter()
        .filter(|h| h.name.starts_with("GenuineIntel/"))
        .filter(|h| h.layout.as_ref().is_some_and(|l| (l.user_supported() | h.omitted).bits() & 0xE0 == 0xE0))
        .collect();
    assert!(hosts.len() >= 50, "{}", hosts.len());
    let b = baseline(&hosts, [Feature::Avx512].into_iter().collect()).unwrap();
    let dropped: Vec<&str> = (0..hosts.len()).filter(|&i| b.class_of(i).is_none()).map(|i| &*hosts[i].name).collect();
    // Intel kept MPX's space when it dropped MPX: AVX-512 sits at 0x440 on every Intel CPU.
    for c in [Component::OPMASK, Component::ZMM_HI256, Component::HI16_ZMM] {
        let p = b.placement(c).unwrap();
        assert_eq!(p.places.len(), 1, "{c}: {:?}", p.places);
    }
    let (kept, pairs) = check_against_compat(&b, &hosts);
    common::note(&format!(
        "Intel AVX-512: {} CPUs, {kept} covered ({} dropped: {dropped:?}), XCR0 {:#x}, {} classes, {pairs} pairs checked",
        hosts.len(),
        dropped.len(),
        b.xcr0.bits(),
        b.classes.len()
    ));
    assert!(b.xcr0.bits() & 0xE7 == 0xE7);
}

#[test]
fn the_whole_corpus() {
    let Some(corpus) = corpus_or_skip("the whole-corpus baseline not checked") else { return };
    let hosts = every_host(&corpus);
    let b = baseline(&hosts, FeatureSet::EMPTY).unwrap();
    let no_xsave = b.hosts.iter().filter(|r| matches!(r, HostResult::Dropped(Drop::NoXsave))).count();
    assert_eq!(no_xsave, 7);
    assert_eq!(b.kept().count(), hosts.len() - 7);
    // Penryn-era CPUs enumerate x87 and SSE only: that is the whole fleet's baseline.
    assert_eq!(b.xcr0, Xfeatures(0x3));
    assert_eq!(b.classes.len(), 1);
    let (kept, pairs) = check_against_compat(&b, &hosts);
    assert_eq!((kept, pairs), (343, 343 * 343));
    // With AVX-512 required: the AVX-512 hosts, Intel and AMD in two classes.
    let b = baseline(&hosts, [Feature::Avx512].into_iter().collect()).unwrap();
    assert!(b.classes.len() >= 2, "{}", b.classes.len());
    assert!(b.xcr0.bits() & 0xE7 == 0xE7);
    let (kept, pairs) = check_against_compat(&b, &hosts);
    let sizes: Vec<usize> = b.classes.iter().map(|c| c.hosts.len()).collect();
    common::note(&format!(
        "whole corpus with avx512 required: {kept} covered, XCR0 {:#x}, classes {sizes:?}, {pairs} pairs checked",
        b.xcr0.bits()
    ));
}
