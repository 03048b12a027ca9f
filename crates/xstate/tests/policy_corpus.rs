//! Policies derived from the CPUID leaf 0xD of 281 real processors (`../shared/cpuid`).
//!
//! For every dump the corpus marks "ok": the policy with all of the CPU's features reproduces
//! its subleaf 0 ECX and every static field of its leaf (sizes, offsets, flags, masks); where the
//! corpus inferred the XCR0 / IA32_XSS in force when the dump was taken, the policy's dynamic
//! 0xD.0 EBX and 0xD.1 EBX for those values equal what the CPU reported. And for every valid
//! smaller XCR0 the derived leaf is self-consistent: read back as a layout, its reported sizes
//! agree with the sizes computed from its subleaves (the check Linux and Xen run at boot).

#[macro_use]
mod common;

use serde_json::Value;
use xstate::component::Reg;
use xstate::cpuid::{self, gating};
use xstate::fixtures::valid_xcr0_values;
use xstate::layout::{Layout, Outcome};
use xstate::policy::{Policy, Selection};
use xstate::{Xfeatures, XsaveFeatures};

use common::{corpus_or_skip, hex64};

#[test]
fn every_ok_cpu_reproduces_its_leaf() {
    let Some(corpus) = corpus_or_skip("policies not checked") else { return };
    let (mut cpus, mut dynamic, mut subsets) = (0, 0, 0);
    let mut failures = Vec::new();
    for e in corpus.entries.iter().filter(|e| e["status"] == "ok") {
        let file = e["file"].as_str().unwrap();
        let text = corpus.dump(file);
        let data = cpuid::parse(&text).unwrap();
        let dump = data.leaf0d();
        let host = Layout::from_leaf0d(dump).unwrap();
        let p = match Policy::derive(&host, &Selection::all()) {
            Ok(p) => p,
            Err(err) => {
                failures.push(format!("{file}: {err}"));
                continue;
            }
        };
        cpus += 1;
        let xsaves = host.features().xsaves();
        let leaf = p.leaf0d(p.xcr0_max(), Xfeatures::EMPTY).unwrap();
        let ecx = e["expected"]["standard_size_max"].as_u64().unwrap() as u32;
        if leaf.get(0).ecx != ecx || leaf.get(0).ecx != dump.get(0).ecx {
            failures.push(format!("{file}: SL0.ECX {:#x}, dump {ecx:#x}", leaf.get(0).ecx));
        }
        for i in 0..64u8 {
            let (d, g) = (dump.get(i), leaf.get(i));
            let supported = i < 2 || (host.supported() & Xfeatures(1 << i)).bits() != 0;
            let sup_dropped = !xsaves && (host.supervisor_supported() & Xfeatures(1 << i)).bits() != 0;
            let want = match i {
                0 => (d.eax, d.ecx, d.edx),
                // Without XSAVES the supervisor components are not exposed.
                1 if !xsaves => (d.eax, 0, 0),
                1 => (d.eax, d.ecx, d.edx),
                _ if !supported || sup_dropped => (0, 0, 0),
                _ => (d.eax, d.ecx, d.edx),
            };
            let got = (g.eax, g.ecx, g.edx);
            let ebx_ok = i < 2 || g.ebx == if supported && !sup_dropped { d.ebx } else { 0 };
            if got != want || !ebx_ok {
                failures.push(format!("{file}: subleaf {i}: derived {g:?}, dump {d:?}"));
            }
        }
        // The dynamic fields for the XCR0 / XSS the dump was taken with.
        let cc = &e["expected"]["compacted_check"];
        if cc["match"] == Value::Bool(true)
            && let (Some(x), Some(s)) = (hex64(&cc["inferred_xcr0"]), hex64(&cc["inferred_xss"]))
            && (s == 0 || xsaves)
        {
            match p.leaf0d(Xfeatures(x), Xfeatures(s)) {
                Ok(l) => {
                    if l.get(1).ebx != dump.get(1).ebx || l.get(0).ebx != dump.get(0).ebx {
                        failures.push(format!(
                            "{file}: EBX at XCR0 {x:#x} XSS {s:#x}: derived {:#x}/{:#x}, dump {:#x}/{:#x}",
                            l.get(0).ebx,
                            l.get(1).ebx,
                            dump.get(0).ebx,
                            dump.get(1).ebx
                        ));
                    }
                    dynamic += 1;
                }
                Err(err) => failures.push(format!("{file}: inferred XCR0 {x:#x} XSS {s:#x}: {err}")),
            }
        }
        // Fewer features: every valid XCR0 as the maximum gives a self-consistent leaf.
        for x in valid_xcr0_values(host.user_supported()) {
            let sel = Selection::masks(x, Xfeatures::EMPTY);
            let q = match Policy::derive(&host, &sel) {
                Ok(q) => q,
                Err(err) => {
                    failures.push(format!("{file}: XCR0 {x}: {err}"));
                    continue;
                }
            };
            let l = q.leaf0d(x, Xfeatures::EMPTY).unwrap();
            let back = Layout::from_leaf0d(&l).unwrap();
            let checks = back.cross_check(Some(x), Some(Xfeatures::EMPTY));
            if q.standard_size_max() != host.standard_size(x).unwrap()
                || checks.iter().any(|c| !matches!(c.outcome, Outcome::Agrees | Outcome::NotApplicable(_)))
            {
                failures.push(format!("{file}: XCR0 {x}: {checks:?}"));
            }
            if q.instructions() != XsaveFeatures(host.features().0 & 0x1F) {
                failures.push(format!("{file}: instruction features changed"));
            }
            subsets += 1;
        }
    }
    println!(
        "policy corpus: {cpus} \"ok\" CPUs reproduce SL0.ECX and every static field, {dynamic} reproduce 0xD.0/0xD.1 EBX \
         for the dump's XCR0/XSS, {subsets} smaller policies are self-consistent"
    );
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
    assert!(cpus >= 280, "only {cpus} CPUs");
    assert!(dynamic >= 200, "only {dynamic} dynamic checks");
}

/// The components a CPUID table's flags say a guest can use, read the way Xen's
/// `recalculate_xstate` builds a guest's XCR0 from its featureset (XSAVE-FACTS §7.5): AVX, MPX,
/// AVX512F, PKU, AMX-TILE, plus APX and LWP. Written from that rule, not from the library's
/// gating table, so the two check each other.
fn components_implied(t: &cpuid::CpuidData) -> Xfeatures {
    let bit = |leaf, sub, f: fn(&cpuid::Regs) -> u32, b: u32| t.get(leaf, sub).is_some_and(|r| f(&r) >> b & 1 == 1);
    let mut m = 0u64;
    for (on, comps) in [
        (bit(1, 0, |r| r.ecx, 28), 0x4u64),
        (bit(7, 0, |r| r.ebx, 14), 0x18),
        (bit(7, 0, |r| r.ebx, 16), 0xE0),
        (bit(7, 0, |r| r.ecx, 3), 0x200),
        (bit(7, 0, |r| r.edx, 24), 0x6_0000),
        (bit(7, 1, |r| r.edx, 21), 1 << 19),
        (bit(0x8000_0001, 0, |r| r.ecx, 15), 1 << 62),
    ] {
        if on {
            m |= comps;
        }
    }
    Xfeatures(m)
}

/// Issue 12 item 2: a policy applied to the whole CPUID table of every corpus dump whose leaf
/// 0xD gives a layout, for the `all` policy, every valid smaller XCR0 and a few feature lists:
/// leaf 0xD is the policy's; no flag gated on a hidden component survives; no flag claims a
/// component the policy hides (by Xen's rule, independently); every other register bit and
/// leaf is the dump's; applying twice changes nothing.
#[test]
fn whole_cpuid_over_every_dump() {
    use std::io::Write;
    let Some(corpus) = corpus_or_skip("whole-CPUID policies not checked") else { return };
    let (mut dumps, mut policies, mut cleared, mut unusable, mut partial) = (0, 0, 0usize, Vec::new(), 0);
    let mut host_inconsistent = Vec::new();
    let mut failures = Vec::new();
    for e in &corpus.entries {
        let file = e["file"].as_str().unwrap();
        let data = cpuid::parse(&corpus.dump(file)).unwrap();
        // A dump missing a component's subleaf (70 of the corpus: old AIDA64 dumps of Skylake to
        // Zen 2) is read with that component left out, as `layout` reads it: the policy then
        // hides it, and its flags must go with it.
        let host = match Layout::from_leaf0d(data.leaf0d()) {
            Ok(l) => l,
            Err(_) => match Layout::from_leaf0d_partial(data.leaf0d()) {
                Ok(p) => {
                    partial += 1;
                    p.layout
                }
                Err(_) => {
                    unusable.push(file.to_string());
                    continue;
                }
            },
        };
        dumps += 1;
        let mut selections = vec![Selection::all()];
        for x in valid_xcr0_values(host.user_supported()) {
            selections.push(Selection::masks(x, Xfeatures::EMPTY));
        }
        for list in ["avx", "avx,avx512", "avx,pku", "avx,avx512,amx"] {
            selections.push(Selection::parse(list).unwrap());
        }
        for sel in &selections {
            let Ok(p) = Policy::derive(&host, sel) else { continue };
            policies += 1;
            let g = p.guest_cpuid(&data);
            let exposed = p.xcr0_max() | p.xss_max();
            if g.leaf0d() != &p.leaf0d(p.xcr0_max(), p.xss_max()).unwrap() {
                failures.push(format!("{file} {sel:?}: leaf 0xD is not the policy's"));
            }
            let implied = components_implied(&g);
            if !implied.is_subset_of(exposed) {
                failures.push(format!("{file} {sel:?}: flags claim {} outside {exposed}", implied - exposed));
            }
            for ((leaf, sub), h) in data.entries() {
                let r = g.get(leaf, sub).unwrap();
                let gated_leaf =
                    gating::FEATURE_LEAVES.iter().any(|l| l.leaf == leaf && !l.needs.is_subset_of(exposed));
                if gated_leaf {
                    if !r.is_zero() {
                        failures.push(format!("{file}: leaf {leaf:#x}.{sub} not zeroed"));
                    }
                    continue;
                }
                for (reg, hv, gv) in [
                    (Reg::Eax, h.eax, r.eax),
                    (Reg::Ebx, h.ebx, r.ebx),
                    (Reg::Ecx, h.ecx, r.ecx),
                    (Reg::Edx, h.edx, r.edx),
                ] {
                    let closed: u32 = gating::closed_by(exposed)
                        .filter(|x| (x.leaf, x.subleaf, x.reg) == (leaf, sub, reg))
                        .fold(0, |m, x| m | x.bits);
                    if gv != hv & !closed {
                        failures
                            .push(format!("{file} {sel:?}: {leaf:#x}.{sub} {reg:?} {gv:#x}, want {:#x}", hv & !closed));
                    }
                    cleared += (hv & closed).count_ones() as usize;
                }
            }
            if g.entries().count() != data.entries().count() {
                failures.push(format!("{file}: leaves added or lost"));
            }
            if p.guest_cpuid(&g) != g {
                failures.push(format!("{file} {sel:?}: not idempotent"));
            }
            if matches!(sel.components, xstate::policy::Components::All)
                && g.entries().ne(data.entries())
                && !host_inconsistent.contains(&file)
            {
                host_inconsistent.push(file);
            }
        }
    }
    let _ = writeln!(
        std::io::stderr(),
        "whole CPUID: {dumps} dumps ({partial} with a component left out for its missing subleaf), {policies} \
         policies, {cleared} flag bits cleared; {} dumps whose own flags name state their leaf 0xD lacks (cleared \
         by the `all` policy): {}; {} dumps without XSAVE not checked",
        host_inconsistent.len(),
        host_inconsistent.join(", "),
        unusable.len()
    );
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures[..failures.len().min(40)].join("\n"));
    assert!(dumps >= 343 && partial >= 61, "only {dumps} dumps ({partial} partial)");
}
