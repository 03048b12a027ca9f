//! `xstate policy` as tests outside the repository drive it: JSON keys, the corpus, sizes
//! computed by hand for a few hosts, and exit codes.

#[macro_use]
mod common;

use serde_json::Value;

use common::{corpus, json, mask, s, shared_or_skip, xstate};

fn subleaf(v: &Value, i: u64) -> [u64; 4] {
    let s = v["leaf0d"].as_array().unwrap().iter().find(|s| s["index"] == i).unwrap_or_else(|| panic!("{i}"));
    ["eax", "ebx", "ecx", "edx"].map(|k| s[k].as_u64().unwrap())
}

#[test]
fn every_ok_dump_reproduces_subleaf_0_ecx() {
    let Some(shared) = shared_or_skip("policy --cpuid not checked against the corpus") else { return };
    let corpus = corpus(&shared);
    let mut checked = 0;
    for e in corpus.iter().filter(|e| e["status"] == "ok") {
        let path = shared.join("cpuid/dumps").join(e["file"].as_str().unwrap());
        let v = json(&["policy", "--cpuid", s(&path), "--json"]);
        for k in ["xcr0_max", "xss_max", "standard_size_max", "compacted_size_max", "leaf0d"] {
            assert!(!v[k].is_null(), "{k} missing");
        }
        assert_eq!(subleaf(&v, 0)[2], e["expected"]["standard_size_max"].as_u64().unwrap(), "{}", path.display());
        assert_eq!(v["standard_size_max"], e["expected"]["standard_size_max"]);
        checked += 1;
    }
    println!("xstate policy --json reproduced SL0.ECX for {checked} dumps");
    assert!(checked >= 280);
}

#[test]
fn sizes_by_hand() {
    let Some(shared) = shared_or_skip("policy sizes not checked") else { return };
    let dump = |f: &str| shared.join("cpuid/dumps").join(f).to_str().unwrap().to_string();
    let amx_guest = shared.join("cpuid/host-intel-amx-kvm.txt").to_str().unwrap().to_string();
    let spr = dump("GenuineIntel/GenuineIntel00806F8_SapphireRapids_05_CPUID.txt");
    let genoa = dump("AuthenticAMD/AuthenticAMD0A10F11_K19_Genoa_01_CPUID.txt");
    let fam15h = dump("AuthenticAMD/AuthenticAMD0600F12_K15_Interlagos_CPUID2.txt");
    let sizes = |host: &str, features: &str| {
        let v = json(&["policy", "--cpuid", host, "--features", features, "--json"]);
        (mask(&v["xcr0_max"]), v["standard_size_max"].as_u64().unwrap(), v["compacted_size_max"].as_u64().unwrap())
    };
    // The AMX guest with an AVX-512 policy: 2688 standard, 576 + 256 + 64 + 512 + 1024 compacted.
    assert_eq!(sizes(&amx_guest, "avx,avx512"), (0xE7, 2688, 2432));
    assert_eq!(sizes(&amx_guest, "all"), (0x600E7, 11008, 10688));
    // AMX without AVX-512 on Sapphire Rapids, PKRU forcing the 64-byte alignment of TILECFG.
    assert_eq!(sizes(&spr, "avx,pku,amx"), (0x60207, 11008, 9152));
    // Zen 4: AVX-512 right after AVX; CET only in the compacted size.
    assert_eq!(sizes(&genoa, "avx,avx512"), (0xE7, 2432, 2432));
    assert_eq!(sizes(&genoa, "avx,avx512,pku,cet"), (0x2E7, 2440, 2480));
    // Family 15h: LWP at 0x340.
    assert_eq!(sizes(&fam15h, "avx,lwp"), (0x4000_0000_0000_0007, 960, 960));
    assert_eq!(sizes(&fam15h, "avx"), (0x7, 832, 832));
    let v = json(&["policy", "--cpuid", &fam15h, "--features", "avx,lwp", "--json"]);
    assert_eq!(subleaf(&v, 0), [0x7, 0x3C0, 0x3C0, 0x4000_0000]);
    assert_eq!(subleaf(&v, 62), [0x80, 0x340, 0, 0]);
    // Current XCR0/XSS move only the EBX fields.
    let v = json(&[
        "policy",
        "--cpuid",
        &genoa,
        "--xcr0",
        "0x2e7",
        "--xss",
        "0x1800",
        "--current-xcr0",
        "0x7",
        "--current-xss",
        "0x800",
        "--json",
    ]);
    assert_eq!(subleaf(&v, 0), [0x2E7, 832, 2440, 0]);
    assert_eq!(subleaf(&v, 1), [0xF, 832 + 16, 0x1800, 0]);
    assert_eq!(subleaf(&v, 11), [16, 0, 1, 0]);
    // AMX flags follow the instruction features exposed.
    let v = json(&["policy", "--cpuid", &spr, "--features", "avx,amx,-xfd", "--json"]);
    assert_eq!(subleaf(&v, 18), [0x2000, 0xB00, 2, 0]);
    let v = json(&["policy", "--cpuid", &spr, "--xcr0", "0x60007", "--features", "xsaveopt", "--json"]);
    assert_eq!(subleaf(&v, 1), [1, 0, 0, 0]);
    assert_eq!(subleaf(&v, 18), [0x2000, 0xB00, 0, 0]);
}

#[test]
fn exit_codes() {
    let Some(shared) = shared_or_skip("policy exit codes not checked") else { return };
    let genoa = shared.join("cpuid/dumps/AuthenticAMD/AuthenticAMD0A10F11_K19_Genoa_01_CPUID.txt");
    let genoa = s(&genoa);
    for (args, want, needle) in [
        (vec!["--features", "avx,amx"], 1, "amx: the host does not enumerate"),
        (vec!["--features", "avx512"], 1, "avx512 requires avx"),
        (vec!["--features", "avx,cet,-xsaves"], 1, "cet requires xsaves"),
        (vec!["--xcr0", "0x67"], 1, "AVX-512"),
        (vec!["--xcr0", "0x7", "--xss", "0x4"], 1, "user components cannot be set in IA32_XSS"),
        (vec!["--features", "avx", "--current-xcr0", "0xe7"], 1, "0xe0"),
        (vec!["--features", "avx,nonsense"], 2, "unknown feature \"nonsense\""),
        (vec!["--xcr0", "0x7", "--features", "avx"], 2, "use one or the other"),
        (vec!["--xcr0", "banana"], 2, "banana"),
    ] {
        let mut a = vec!["policy", "--cpuid", genoa];
        a.extend(&args);
        let (code, out, err) = xstate(&a);
        assert_eq!(code, want, "{args:?}: {err}");
        assert!(out.is_empty(), "{args:?} printed {out}");
        assert!(err.contains(needle), "{args:?}: {err}");
        if want == 1 {
            assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        }
    }
    let (code, _, err) = xstate(&["policy", "--cpuid", "/nonexistent/dump.txt"]);
    assert_eq!(code, 2, "{err}");
}

#[test]
fn this_host() {
    let (code, out, err) = xstate(&["policy", "--json"]);
    if code == 2 && err.contains("OSXSAVE") {
        skip!("this host has no OS-enabled XSAVE");
        return;
    }
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    let (code, out, _) = xstate(&["layout", "--json"]);
    assert_eq!(code, 0);
    let l: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["xcr0_max"], l["xcr0_supported"]);
    assert_eq!(v["standard_size_max"], l["standard_size_max"]);
}

/// `--features -avx512` takes AVX-512 from everything the host has, as `all,-avx512` does (it
/// gave x87 and SSE only, exit 0); an empty list is a usage error.
#[test]
fn removals_alone_take_from_every_feature() {
    let Some(d) = common::dumps_or_skip() else { return };
    let genoa = d.join("AuthenticAMD/AuthenticAMD0A10F11_K19_Genoa_01_CPUID.txt");
    let genoa = common::s(&genoa);
    for (alone, with_all) in [("-avx512", "all,-avx512"), ("no-pku,-xsaves", "all,no-pku,-xsaves")] {
        let a = common::json(&["policy", "--cpuid", genoa, &format!("--features={alone}"), "--json"]);
        let b = common::json(&["policy", "--cpuid", genoa, "--features", with_all, "--json"]);
        assert_eq!(a, b, "{alone}");
    }
    let v = common::json(&["policy", "--cpuid", genoa, "--features=-avx512", "--json"]);
    assert_eq!(v["xcr0_max"], "0x207", "{v}");
    let (code, _, err) = common::xstate(&["policy", "--cpuid", genoa, "--features", ""]);
    assert_eq!((code, err.lines().count()), (2, 1), "{err}");
}
