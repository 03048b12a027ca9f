//! The layout engine against CPUID leaf 0xD of 352 real processors (`../shared/cpuid`).
//!
//! For every dump the corpus marks "ok": our reader gives the same subleaves the corpus
//! normalised; the computed maximum standard size equals 0xD.0 ECX; 0xD.0 EBX is the standard
//! size of some valid XCR0 within the supported mask; and where the corpus could check 0xD.1
//! EBX, an XCR0 | IA32_XSS reproduces it. Dumps the corpus marks incomplete, dump_artifact or
//! xsave_not_enumerated must be refused with the matching error, and the anomalous one read with
//! its anomaly noted.

#[macro_use]
mod common;

use serde_json::Value;
use xstate::cpuid::{self, Regs};
use xstate::layout::{Anomaly, Layout, LayoutError, Outcome, SizeField};

use common::{corpus_or_skip, hex64, shared};

fn hex(v: &Value) -> u32 {
    u32::from_str_radix(v.as_str().unwrap(), 16).unwrap()
}

#[test]
fn every_ok_dump_reproduces_its_sizes() {
    let Some(corpus) = corpus_or_skip("corpus not checked") else { return };
    let (mut ok_checked, mut sl1_checked, mut refused, mut anomalous) = (0, 0, 0, 0);
    let mut failures = Vec::new();
    for e in &corpus.entries {
        let file = e["file"].as_str().unwrap();
        let status = e["status"].as_str().unwrap();
        let text = corpus.dump(file);
        let data = match cpuid::parse(&text) {
            Ok(d) => d,
            Err(err) => {
                failures.push(format!("{file}: parse: {err}"));
                continue;
            }
        };
        // Our reader agrees with the corpus's normalised subleaves, label-less dumps included.
        let leaf = data.leaf0d();
        let want: Vec<(u8, Regs)> = e["leaf0d"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                let i = s["index"].as_u64().unwrap() as u8;
                (i, Regs::new(hex(&s["eax"]), hex(&s["ebx"]), hex(&s["ecx"]), hex(&s["edx"])))
            })
            .collect();
        let got: Vec<(u8, Regs)> = leaf.iter().collect();
        if got != want {
            failures.push(format!("{file}: subleaves differ from corpus.json:\n got {got:?}\nwant {want:?}"));
            continue;
        }
        let layout = Layout::from_leaf0d(leaf);
        match status {
            "ok" => {
                let l = match layout {
                    Ok(l) => l,
                    Err(err) => {
                        failures.push(format!("{file}: layout: {err}"));
                        continue;
                    }
                };
                let ecx = e["expected"]["standard_size_max"].as_u64().unwrap() as u32;
                if l.standard_size_max() != ecx || leaf.standard_size_max() != ecx {
                    failures.push(format!("{file}: standard max {} != SL0.ECX {ecx}", l.standard_size_max()));
                }
                if hex64(&e["xcr0_supported"]) != Some(l.user_supported().bits()) {
                    failures.push(format!("{file}: supported XCR0 differs"));
                }
                let checks = l.cross_check(None, None);
                for c in &checks {
                    let must = match c.field {
                        SizeField::CompactedEnabled => e["expected"]["compacted_check"]["match"] == Value::Bool(true),
                        _ => true,
                    };
                    if c.field == SizeField::CompactedEnabled && must {
                        sl1_checked += 1;
                    }
                    if must && !c.outcome.is_ok() {
                        failures.push(format!("{file}: {c}"));
                    }
                    if c.field == SizeField::StandardEnabled && c.outcome != Outcome::Explained {
                        failures.push(format!("{file}: SL0.EBX not explained: {c}"));
                    }
                }
                ok_checked += 1;
            }
            "incomplete" | "dump_artifact" => match layout {
                Err(LayoutError::MissingSubleaf { .. }) => refused += 1,
                other => failures.push(format!("{file}: {status} dump gave {other:?}")),
            },
            "xsave_not_enumerated" => match layout {
                Err(LayoutError::XsaveNotEnumerated) => refused += 1,
                other => failures.push(format!("{file}: {status} dump gave {other:?}")),
            },
            "anomalous" => match layout {
                Ok(l) if l.anomalies().iter().any(|a| matches!(a, Anomaly::UnsupportedSubleaf(_))) => anomalous += 1,
                other => failures.push(format!("{file}: anomalous dump gave {other:?}")),
            },
            s => failures.push(format!("{file}: unknown status {s}")),
        }
    }
    println!(
        "corpus: {} dumps; {ok_checked} \"ok\" layouts checked (SL0.ECX, SL0.EBX), {sl1_checked} SL1.EBX reproduced, \
         {refused} incomplete/artifact/no-XSAVE dumps refused as expected, {anomalous} anomalous read with a note",
        corpus.entries.len()
    );
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
    assert!(ok_checked >= 280, "only {ok_checked} ok dumps checked");
    // 229 corpus entries have a checkable SL1.EBX; 207 of them are "ok" (the rest lack subleaves).
    assert!(sl1_checked >= 200, "only {sl1_checked} SL1.EBX values checked");
}

#[test]
fn this_machines_own_dump() {
    let Some(shared) = shared() else {
        skip!("../shared/cpuid not found: host-intel-amx-kvm.txt not checked");
        return;
    };
    let text = std::fs::read_to_string(shared.join("cpuid/host-intel-amx-kvm.txt")).unwrap();
    let d = cpuid::parse(&text).unwrap();
    let l = Layout::from_leaf0d(d.leaf0d()).unwrap();
    let m = xstate::Xfeatures(0x600E7);
    assert_eq!(l.standard_size(m), Some(11008));
    assert_eq!(l.compacted_size(m), Some(10688));
    assert_eq!(l.compacted_offset(xstate::Component::TILEDATA, m), Some(2496));
    let checks = l.cross_check(Some(m), Some(xstate::Xfeatures(0)));
    assert!(checks.iter().all(|c| c.outcome == Outcome::Agrees), "{checks:?}");
}
