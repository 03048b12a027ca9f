//! The fleet view of issue 15 as tests outside the repository drive it: `xstate policy
//! --baseline` over the corpus fleets (a Zen 4 + Sapphire Rapids pair, every Intel AVX-512 CPU,
//! the whole corpus), each baseline written as policy JSON and handed to `xstate compat --from`
//! against every host it covers: as is where it says the host shares the baseline's leaf 0xD,
//! after re-layout where it says the host is in another offset class; its inputs, requirements
//! and exit codes; and `compat` text leading with its answer.

#[macro_use]
mod common;

use std::path::{Path, PathBuf};

use serde_json::Value;

use common::{corpus, dumps_or_skip, json, mask, ok, s, shared_or_skip, tmpdir, xstate};

/// Writes the baseline JSON of `args` to `dir/name` and checks it against `compat` for every
/// host it covers. Returns the JSON.
fn baseline_checked(dir: &Path, name: &str, args: &[&str], resolve: impl Fn(&str) -> PathBuf) -> Value {
    let mut all = vec!["policy", "--baseline"];
    all.extend_from_slice(args);
    all.push("--json");
    let out = ok(&all);
    let file = dir.join(name);
    std::fs::write(&file, &out).unwrap();
    let v: Value = serde_json::from_str(&out).unwrap();
    let b = &v["baseline"];
    for h in b["hosts"].as_array().unwrap() {
        if h["dropped"].is_string() {
            continue;
        }
        let host = resolve(h["name"].as_str().unwrap());
        let (code, text, err) = xstate(&["compat", "--from", s(&file), "--to", s(&host)]);
        assert_eq!(code, 0, "{}: {err}", h["name"]);
        let first = text.lines().next().unwrap();
        if h["class"] == 0 {
            assert!(first.starts_with("compatible as is"), "{}: {first}", h["name"]);
            assert_eq!(mask(&h["gives_up"]["relayout"]), 0);
        } else {
            assert!(first.starts_with("compatible after re-layout"), "{}: {first}", h["name"]);
            assert_ne!(mask(&h["gives_up"]["relayout"]), 0);
        }
    }
    // The same file is a CPUID source everywhere: its leaf 0xD reads back as the baseline.
    let l = json(&["layout", "--cpuid", s(&file), "--json"]);
    assert_eq!(l["xcr0_supported"], v["xcr0_max"]);
    v
}

#[test]
fn zen4_and_sapphire_rapids_pair() {
    let Some(d) = dumps_or_skip() else { return };
    let zen4 = d.join("AuthenticAMD/AuthenticAMD0A10F11_K19_Genoa_01_CPUID.txt");
    let spr = d.join("GenuineIntel/GenuineIntel00806F8_SapphireRapids_05_CPUID.txt");
    let dir = tmpdir("baseline-pair");
    let v = baseline_checked(&dir, "pair.json", &[s(&zen4), s(&spr)], |n: &str| PathBuf::from(n));
    assert_eq!(v["xcr0_max"], "0x2e7");
    let b = &v["baseline"];
    assert_eq!(b["classes"].as_array().unwrap().len(), 2);
    assert_eq!(b["one_leaf"]["xcr0_max"], "0x7");
    let opmask = b["components"].as_array().unwrap().iter().find(|c| c["name"] == "opmask").unwrap();
    assert_eq!(opmask["same_on_every_host"], false);
    let amx = b["limits"].as_array().unwrap().iter().find(|l| l["feature"] == "amx").unwrap();
    assert_eq!(amx["lacked"][0], s(&zen4));
    // The text leads with the answer in one line.
    let text = ok(&["policy", "--baseline", s(&zen4), s(&spr)]);
    let first = text.lines().next().unwrap();
    assert!(first.starts_with("baseline of 2 hosts: XCR0 0x2e7"), "{first}");
    assert!(first.contains("one leaf 0xD is true on 1 of 2 hosts"), "{first}");
    // --require amx: Zen 4 drops out, named.
    let v = json(&["policy", "--baseline", s(&zen4), s(&spr), "--require", "amx", "--json"]);
    assert_eq!(v["xcr0_max"], "0x602e7");
    assert!(v["baseline"]["hosts"][0]["dropped"].as_str().unwrap().contains("lacks amx"), "{v}");
    let text = ok(&["policy", "--baseline", s(&zen4), s(&spr), "--require", "amx"]);
    assert!(text.lines().next().unwrap().contains("1 host drops out"), "{text}");
}

#[test]
fn every_intel_avx512_cpu() {
    let Some(shared) = shared_or_skip("the Intel AVX-512 baseline not checked") else { return };
    let dumps = shared.join("cpuid/dumps");
    let files: Vec<String> = corpus(&shared)
        .iter()
        .filter(|e| e["vendor"] == "GenuineIntel")
        .filter(|e| e["xcr0_supported"].as_str().is_some_and(|m| mask(&Value::from(m.to_lowercase())) & 0xE0 == 0xE0))
        .map(|e| dumps.join(e["file"].as_str().unwrap()).to_str().unwrap().to_string())
        .collect();
    assert!(files.len() >= 50);
    let dir = tmpdir("baseline-intel");
    let mut args: Vec<&str> = files.iter().map(String::as_str).collect();
    args.extend(["--require", "avx512"]);
    let v = baseline_checked(&dir, "intel.json", &args, |n: &str| PathBuf::from(n));
    assert_eq!(v["baseline"]["classes"].as_array().unwrap().len(), 1, "one leaf 0xD for every Intel AVX-512 CPU");
    assert_eq!(mask(&v["xcr0_max"]) & 0xE7, 0xE7);
}

#[test]
fn the_whole_corpus_folder() {
    let Some(d) = dumps_or_skip() else { return };
    let dir = tmpdir("baseline-corpus");
    let v = baseline_checked(&dir, "all.json", &[s(&d)], |name| d.join(name));
    assert_eq!(v["xcr0_max"], "0x3");
    let hosts = v["baseline"]["hosts"].as_array().unwrap();
    assert_eq!(hosts.len(), 352);
    let no_xsave = hosts.iter().filter(|h| h["dropped"].as_str().is_some_and(|r| r.starts_with("no XSAVE"))).count();
    assert_eq!(no_xsave, 9);
    // AVX-512 required: the rest drop out, Intel and AMD form two classes.
    let v = baseline_checked(&dir, "avx512.json", &[s(&d), "--require", "avx512"], |name| d.join(name));
    assert!(v["baseline"]["classes"].as_array().unwrap().len() >= 2);
    let text = ok(&["policy", "--baseline", s(&d), "--require", "avx512"]);
    let first = text.lines().next().unwrap();
    assert!(first.starts_with("baseline of 352 hosts: XCR0 0xe7"), "{first}");
}

#[test]
fn inputs_and_exit_codes() {
    let Some(d) = dumps_or_skip() else { return };
    let zen3 = d.join("AuthenticAMD/AuthenticAMD0A00F11_K19_Milan_02_CPUID.txt");
    let dir = tmpdir("baseline-inputs");
    // A policy JSON is a host like any other (here: Zen 3 without PKU).
    let pol = dir.join("zen3-avx.json");
    std::fs::write(&pol, ok(&["policy", "--cpuid", s(&zen3), "--features", "avx", "--json"])).unwrap();
    let v = json(&["policy", "--baseline", s(&zen3), s(&pol), "--json"]);
    assert_eq!(v["xcr0_max"], "0x7");
    let pku = v["baseline"]["limits"].as_array().unwrap().iter().find(|l| l["feature"] == "pku").unwrap();
    assert_eq!(pku["lacked"][0], s(&pol));
    // This host is a host.
    let (code, _, err) = xstate(&["policy", "--baseline", "host", s(&zen3)]);
    assert!(code == 0 || err.contains("OSXSAVE"), "{err}");
    // Usage: an unknown feature, a missing file, --baseline with --cpuid.
    assert_eq!(xstate(&["policy", "--baseline", s(&zen3), "--require", "avx1024"]).0, 2);
    assert_eq!(xstate(&["policy", "--baseline", "/nonexistent"]).0, 2);
    assert_eq!(xstate(&["policy", "--baseline", s(&zen3), "--cpuid", s(&zen3)]).0, 2);
    assert_eq!(xstate(&["policy", "--require", "avx512"]).0, 2);
    // Invalid: a file that is not a dump, a requirement no host meets.
    let junk = dir.join("junk.txt");
    std::fs::write(&junk, "hello\n").unwrap();
    let (code, _, err) = xstate(&["policy", "--baseline", s(&zen3), s(&junk)]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("junk.txt"), "{err}");
    let (code, _, err) = xstate(&["policy", "--baseline", s(&zen3), "--require", "amx"]);
    assert_eq!(code, 1);
    assert_eq!(err.lines().count(), 1);
    assert!(err.contains("amx"), "{err}");
}

/// Issue 15 item 4: `compat` text leads with the answer in one line, before the details.
#[test]
fn compat_text_leads_with_the_answer() {
    let Some(d) = dumps_or_skip() else { return };
    let skx = d.join("GenuineIntel/GenuineIntel0050654_SkylakeXeon_CPUID5.txt");
    let zen4 = d.join("AuthenticAMD/AuthenticAMD0A60F12_K19_Raphael_01_CPUID.txt");
    let (skx, zen4) = (s(&skx), s(&zen4));
    let first = |args: &[&str]| xstate(args).1.lines().next().unwrap_or_default().to_string();
    let l = first(&["compat", "--from", zen4, "--to", zen4]);
    assert_eq!(l, "compatible as is");
    let l = first(&["compat", "--from", skx, "--to", zen4, "--from-xcr0", "0x2e7"]);
    assert!(l.starts_with("compatible after re-layout: 4 components move (avx512, pku)"), "{l}");
    assert!(l.contains("mask avx512, pku for as is"), "{l}");
    let l = first(&["compat", "--from", skx, "--to", zen4]);
    assert!(l.starts_with("incompatible: bndregs (3) is missing on the destination"), "{l}");
    assert!(l.contains("mask mpx for re-layout"), "{l}");
    // The matrix: the pair counts first.
    let l = first(&["compat", "--matrix", s(&d)]);
    assert!(l.contains("% of CPU pairs move as is"), "{l}");
}
