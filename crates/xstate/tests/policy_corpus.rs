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
use xstate::cpuid;
use xstate::layout::{Layout, Outcome};
use xstate::policy::{Policy, Selection};
use xstate::xcr0::valid_xcr0_values;
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
