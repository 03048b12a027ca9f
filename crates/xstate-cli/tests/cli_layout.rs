//! The `xstate` binary as tests outside the repository drive it: `layout` and `host`.

#[macro_use]
mod common;

use serde_json::Value;

use common::{corpus, s, shared_or_skip, tmpdir, xstate};

#[test]
fn layout_json_agrees_with_every_ok_dump() {
    let Some(shared) = shared_or_skip("layout --cpuid not checked against the corpus") else { return };
    let corpus = corpus(&shared);
    let mut checked = 0;
    for e in corpus.iter().filter(|e| e["status"] == "ok") {
        let path = shared.join("cpuid/dumps").join(e["file"].as_str().unwrap());
        let (code, out, err) = xstate(&["layout", "--cpuid", s(&path), "--json"]);
        assert_eq!(code, 0, "{}: {err}", path.display());
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["standard_size_max"], e["expected"]["standard_size_max"], "{}", path.display());
        for k in ["xcr0_supported", "xss_supported", "standard_size", "compacted_size", "components"] {
            assert!(!v[k].is_null(), "{k} missing");
        }
        for c in v["components"].as_array().unwrap() {
            for k in ["index", "name", "size", "offset", "compacted_offset", "supervisor", "align64", "xfd"] {
                assert!(c.get(k).is_some(), "component key {k} missing");
            }
        }
        checked += 1;
    }
    println!("xstate layout --json agreed with SL0.ECX for {checked} dumps");
    assert!(checked >= 280);
}

#[test]
fn layout_exit_codes() {
    let dir = tmpdir("layout");
    let garbage = dir.join("garbage.txt");
    std::fs::write(&garbage, "CPUID 0000000D: 00000007-zzzzzzzz-00000340-00000000\n").unwrap();
    let (code, out, err) = xstate(&["layout", "--cpuid", s(&garbage)]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("garbage.txt") && err.contains("line 1"), "{err}");
    assert_eq!(err.trim().lines().count(), 1);
    let (code, _, err) = xstate(&["layout", "--cpuid", dir.join("missing").to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    let (code, _, _) = xstate(&["layout", "--xcr0", "0xzz"]);
    assert_eq!(code, 2);
    let (code, _, _) = xstate(&["layout", "--bogus"]);
    assert_eq!(code, 2);
    let avx = dir.join("avx.txt");
    std::fs::write(
        &avx,
        "CPUID 0000000D: 00000007-00000340-00000340-00000000 [SL 00]\nCPUID 0000000D: 00000100-00000240-00000000-00000000 [SL 02]\n",
    )
    .unwrap();
    let (code, out, _) = xstate(&["layout", "--cpuid", s(&avx), "--json"]);
    assert_eq!(code, 0);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["standard_size"], 832);
    // An XCR0 that breaks a rule or names an unsupported bit is invalid input.
    let (code, _, err) = xstate(&["layout", "--cpuid", s(&avx), "--xcr0", "0x5"]);
    assert_eq!(code, 1);
    assert!(err.contains("AVX (bit 2) requires SSE"), "{err}");
    let (code, _, err) = xstate(&["layout", "--cpuid", s(&avx), "--xcr0", "0xe7"]);
    assert_eq!(code, 1);
    assert!(err.contains("0xe0"), "{err}");
    // A dump with a supported component's subleaf missing gives the layout of the others, with
    // a note naming it; a mask that needs it is refused, naming it (issue 10 item 12).
    let inc = dir.join("incomplete.txt");
    std::fs::write(&inc, "CPUID 0000000D: 00000007-00000340-00000340-00000000 [SL 00]\n").unwrap();
    let (code, out, err) = xstate(&["layout", "--cpuid", s(&inc)]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("subleaf 2 is missing"), "{out}");
    let (code, _, err) = xstate(&["layout", "--cpuid", s(&inc), "--xcr0", "0x7"]);
    assert_eq!(code, 1);
    assert!(err.contains("component 2 (avx)"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn host_checks_agree_and_round_trip_as_a_dump() {
    let (code, out, err) = xstate(&["host", "--json"]);
    assert_eq!(code, 0, "{out}{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["ok"], true);
    let live = v["live_checks"].as_array().unwrap();
    assert!(live.iter().any(|c| c["name"].as_str().unwrap().starts_with("XSAVE writes")), "live check did not run");
    let xsavec = live.iter().any(|c| c["name"].as_str().unwrap().starts_with("XSAVEC writes"));
    if !xsavec {
        skip!("this CPU has no XSAVEC; only the XSAVE live check ran");
    }
    // The JSON is itself a CPUID source.
    let dir = tmpdir("host");
    let f = dir.join("host.json");
    std::fs::write(&f, &out).unwrap();
    let (code, out2, err) = xstate(&["layout", "--cpuid", s(&f), "--json", "--xcr0", v["xcr0"].as_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let v2: Value = serde_json::from_str(&out2).unwrap();
    assert_eq!(v2["components"], v["components"]);
    assert_eq!(v2["standard_size"], v["standard_size"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A dump without any leaf 0xD line, whose leaf 1 ECX shows XSAVE or whose maximum leaf is
/// at least 0xD, is a dump missing leaf 0xD (exit 1, saying so), not a CPU without XSAVE; a
/// CPU whose maximum leaf is below 0xD and which lacks the XSAVE flag still has none.
#[test]
fn a_dump_missing_leaf_0xd_is_refused_as_such() {
    let Some(d) = common::dumps_or_skip() else { return };
    let spr = std::fs::read_to_string(d.join("GenuineIntel/GenuineIntel00806F8_SapphireRapids_05_CPUID.txt")).unwrap();
    let dir = tmpdir("nold");
    let no_0d: String = spr.lines().filter(|l| !l.contains("0000000D")).map(|l| format!("{l}\n")).collect();
    assert!(no_0d.contains("CPUID 00000001: 000806F8-00800800-7FFEFBFF"), "leaf 1 with XSAVE (ECX bit 26)");
    // Leaf 1 without the XSAVE flag: the maximum leaf 0x20 still says leaf 0xD exists.
    let no_flag = no_0d.replace("000806F8-00800800-7FFEFBFF", "000806F8-00800800-7BFEFBFF");
    for (name, text) in [("nold.txt", &no_0d), ("noflag.txt", &no_flag)] {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        let (code, out, err) = xstate(&["layout", "--cpuid", s(&p)]);
        assert_eq!(code, 1, "{name}: {out}{err}");
        assert!(err.contains(name) && err.contains("missing leaf 0xD"), "{name}: {err}");
        assert!(!err.contains("does not enumerate XSAVE"), "{name}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }
    // A CPU from before XSAVE: maximum leaf 0xB, no XSAVE flag, no leaf 0xD.
    let old = dir.join("old.txt");
    std::fs::write(
        &old,
        "CPUID 00000000: 0000000B-756E6547-6C65746E-49656E69\nCPUID 00000001: 000106A5-00100800-009CE3BD-BFEBFBFF\n",
    )
    .unwrap();
    let (code, _, err) = xstate(&["layout", "--cpuid", s(&old)]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("does not enumerate XSAVE"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
