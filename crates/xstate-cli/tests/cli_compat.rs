//! `xstate compat` as tests outside the repository drive it: the Skylake-X -> Zen 4 verdict, a
//! policy as input, images, exit codes, and the fleet matrix over the whole corpus.

#[macro_use]
mod common;

use std::time::Instant;

use serde_json::Value;

use common::{dumps_or_skip, ok, s, tmpdir, xstate};

#[test]
fn skylake_x_to_zen4_names_offset_differences() {
    let Some(d) = dumps_or_skip() else { return };
    let skx = d.join("GenuineIntel/GenuineIntel0050654_SkylakeXeon_CPUID5.txt");
    let zen4 = d.join("AuthenticAMD/AuthenticAMD0A60F12_K19_Raphael_01_CPUID.txt");
    let (skx, zen4) = (s(&skx), s(&zen4));
    // Every user state: MPX is missing on AMD, AVX-512 and PKRU move.
    let (code, out, err) = xstate(&["compat", "--from", skx, "--to", zen4, "--json"]);
    assert_eq!(code, 1, "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("bndregs (3) is missing"), "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["verdict"], "incompatible");
    assert_eq!(v["mask"], "0x18");
    assert_eq!(v["mask_features"][0], "mpx");
    let offsets: Vec<(String, u64, u64)> = v["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["kind"] == "offset_differs")
        .map(|r| (r["component"].as_str().unwrap().to_string(), r["from"].as_u64().unwrap(), r["to"].as_u64().unwrap()))
        .collect();
    for want in
        [("opmask", 0x440, 0x340), ("zmm_hi256", 0x480, 0x380), ("hi16_zmm", 0x680, 0x580), ("pkru", 0xA80, 0x980)]
    {
        assert!(offsets.contains(&(want.0.to_string(), want.1, want.2)), "{want:?} in {offsets:?}");
    }
    // With AVX-512 and PKRU only: compatible after re-layout, exit 0, offsets named in text.
    let (code, out, err) = xstate(&["compat", "--from", skx, "--to", zen4, "--from-xcr0", "0x2e7"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("verdict: compatible after re-layout"), "{out}");
    assert!(out.contains("opmask (5) is at standard offset 0x440 on the source, 0x340 on the destination"), "{out}");
    // Same CPU: compatible as is.
    let (code, out, _) = xstate(&["compat", "--from", zen4, "--to", zen4]);
    assert_eq!(code, 0);
    assert!(out.contains("verdict: compatible\n"), "{out}");
    // Usage and invalid input.
    assert_eq!(xstate(&["compat", "--from", skx]).0, 2);
    assert_eq!(xstate(&["compat", "--from", "/nonexistent", "--to", zen4]).0, 2);
    assert_eq!(xstate(&["compat", "--from", skx, "--to", zen4, "--from-xcr0", "0x60000"]).0, 1);
}

#[test]
fn image_and_policy_inputs() {
    let Some(d) = dumps_or_skip() else { return };
    let spr = d.join("GenuineIntel/GenuineIntel00806F8_SapphireRapids_05_CPUID.txt");
    let zen4 = d.join("AuthenticAMD/AuthenticAMD0A60F12_K19_Raphael_01_CPUID.txt");
    let (spr, zen4) = (s(&spr), s(&zen4));
    let dir = tmpdir("compat");
    // A policy derived from SPR without AMX is compatible with Zen 4 after re-layout.
    let out = ok(&["policy", "--cpuid", spr, "--features", "avx,avx512,pku,xsavec", "--json"]);
    let pol = dir.join("policy.json");
    std::fs::write(&pol, out).unwrap();
    let (code, text, err) = xstate(&["compat", "--from", s(&pol), "--to", zen4]);
    assert_eq!(code, 0, "{err}");
    assert!(text.contains("after re-layout"), "{text}");
    // The full SPR needs AMX masked for Zen 4 ...
    let (code, _, err) = xstate(&["compat", "--from", spr, "--to", zen4]);
    assert_eq!(code, 1);
    assert!(err.contains("mask 0x60000 (amx)"), "{err}");
    // ... but an image that uses only x87/SSE/AVX, from a guest that has not enabled AMX, moves.
    let mut img = vec![0u8; 11008];
    img[0] = 0x7f;
    img[1] = 0x03;
    img[24..28].copy_from_slice(&0x1f80u32.to_le_bytes());
    img[512] = 0x7;
    let p = dir.join("img");
    std::fs::write(&p, &img).unwrap();
    let with_image =
        |xcr0: &str| xstate(&["compat", "--from", spr, "--to", zen4, "--image", s(&p), "--from-xcr0", xcr0]);
    let (code, text, err) = with_image("0x2e7");
    assert_eq!(code, 0, "{err}");
    assert!(text.contains("verdict: compatible"), "{text}");
    // A guest running with AMX enabled (the default XCR0: every user state) cannot move, even
    // with its tiles init.
    let (code, _, err) = with_image("0x602e7");
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("tilecfg (17) is missing"), "{err}");
    let (code, _, err) = xstate(&["compat", "--from", spr, "--to", zen4, "--image", s(&p)]);
    assert_eq!(code, 1, "{err}");
    img[514] = 0x4; // TILEDATA in use
    std::fs::write(&p, &img).unwrap();
    let (code, out, err) = with_image("0x602e7");
    assert_eq!(code, 1, "{err}");
    assert!(out.contains("components in use 0x40007"), "{out}");
    assert!(out.contains("tiledata (18) is missing"), "{out}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Issue 10 item 15 / issue 12 item 1: a Genoa guest running with XCR0 0x2e7 whose AVX-512
/// state is init cannot move to Haswell (no AVX-512, no PKRU): the destination cannot enable
/// that XCR0. The XCR0 comes from `--from-xcr0`, or from the record when the image is one.
#[test]
fn enabled_but_init_state_needs_the_destination() {
    let Some(d) = dumps_or_skip() else { return };
    let genoa = d.join("AuthenticAMD/AuthenticAMD0A10F11_K19_Genoa_01_CPUID.txt");
    let haswell = d.join("GenuineIntel/GenuineIntel00306C3_Haswell_CPUID.txt");
    let milan = d.join("AuthenticAMD/AuthenticAMD0A00F11_K19_Milan_02_CPUID.txt");
    let (genoa, haswell, milan) = (s(&genoa), s(&haswell), s(&milan));
    let dir = tmpdir("compat-xcr0");
    // Genoa's standard image for XCR0 0x2e7 (PKRU ends at 0x988), x87 and SSE in use.
    let mut img = vec![0u8; 0x988];
    img[0] = 0x7f;
    img[1] = 0x03;
    img[24..28].copy_from_slice(&0x1f80u32.to_le_bytes());
    img[512] = 0x3;
    let p = dir.join("img");
    std::fs::write(&p, &img).unwrap();
    let (code, out, err) =
        xstate(&["compat", "--from", genoa, "--to", haswell, "--image", s(&p), "--from-xcr0", "0x2e7"]);
    assert_eq!(code, 1, "{out}{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("opmask (5) is missing"), "{err}");
    // Without AVX-512 in XCR0 the same image moves to Milan (PKRU there), not to Haswell.
    let (code, out, err) =
        xstate(&["compat", "--from", genoa, "--to", milan, "--image", s(&p), "--from-xcr0", "0x207"]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, _, err) = xstate(&["compat", "--from", genoa, "--to", milan, "--image", s(&p), "--from-xcr0", "0x2e7"]);
    assert_eq!(code, 1, "{err}");
    // A Xen blob carries the guest's XCR0: {xcr0, xcr0_accum, standard image}.
    for (xcr0, want) in [(0x2e7u64, 1), (0x207, 0)] {
        let mut blob = Vec::new();
        blob.extend_from_slice(&xcr0.to_le_bytes());
        blob.extend_from_slice(&0x2e7u64.to_le_bytes());
        blob.extend_from_slice(&img);
        let b = dir.join("blob");
        std::fs::write(&b, &blob).unwrap();
        let (code, out, err) = xstate(&["compat", "--from", genoa, "--to", milan, "--image", s(&b), "--json"]);
        assert_eq!(code, want, "xcr0 {xcr0:#x}: {out}{err}");
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["from"]["xcr0"], format!("{xcr0:#x}"), "the record's XCR0 is the source's");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn matrix_over_the_whole_corpus() {
    let Some(d) = dumps_or_skip() else { return };
    let t = Instant::now();
    let (code, out, err) = xstate(&["compat", "--matrix", s(&d), "--json"]);
    let elapsed = t.elapsed();
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    let n = v["cpus"].as_array().unwrap().len();
    println!(
        "matrix: {n} CPUs, {} classes, {elapsed:?} (including process start)",
        v["classes"].as_array().unwrap().len()
    );
    // Every dump is accounted for (issue 10 item 12): in the matrix, incomplete (a user
    // component's subleaf missing: no verdict claimed), or without XSAVE, said plainly.
    let incomplete = v["incomplete"].as_array().unwrap();
    let unusable = v["unusable"].as_array().unwrap();
    assert_eq!(n + incomplete.len() + unusable.len(), 352, "every dump is accounted for");
    assert_eq!(unusable.len(), 9, "{unusable:?}");
    // 7 without XSAVE, 2 broken (leaf 1 says XSAVE, leaf 0xD is all zero).
    let said = |what: &str| unusable.iter().filter(|u| u["error"].as_str().unwrap().contains(what)).count();
    assert_eq!((said("does not enumerate XSAVE"), said("bit 26 (XSAVE) is set")), (7, 2), "{unusable:?}");
    let names: Vec<&str> = v["cpus"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    for i in incomplete {
        assert!(!names.contains(&i["name"].as_str().unwrap()), "{i} is incomplete but has verdicts");
        assert_ne!(i["unknown"], "0x0");
    }
    // A CPU whose AVX subleaf is missing is not classed as x87|sse-only and compatible.
    assert!(incomplete.iter().any(|i| i["unknown_names"] == "avx"), "{incomplete:?}");
    let m = v["matrix"].as_array().unwrap();
    assert_eq!(m.len(), n);
    assert!(m.iter().all(|r| r.as_array().unwrap().len() == n));
    // The diagonal is compatible as is.
    for (i, r) in m.iter().enumerate() {
        assert_eq!(r[i], 0, "cpu {i}");
    }
    let c = &v["counts"];
    assert_eq!(
        c["compatible"].as_u64().unwrap() + c["relayout"].as_u64().unwrap() + c["incompatible"].as_u64().unwrap(),
        (n * n) as u64
    );
}

/// `compat`'s masks follow the XCR0 and XSS rules `layout --xcr0/--xss` and `policy` enforce
/// (exit 1 naming the rule, as `layout` does); with `--matrix`, which takes no masks, they are
/// usage errors.
#[test]
fn compat_masks_follow_the_xcr0_and_xss_rules() {
    let Some(d) = dumps_or_skip() else { return };
    let genoa = d.join("AuthenticAMD/AuthenticAMD0A10F11_K19_Genoa_01_CPUID.txt");
    let spr = d.join("GenuineIntel/GenuineIntel00806F8_SapphireRapids_05_CPUID.txt");
    for (flag, value, layout_flag, rule) in [
        ("--from-xcr0", "0x0", "--xcr0", "x87 (bit 0) must always be set"),
        ("--from-xcr0", "0x5", "--xcr0", "AVX (bit 2) requires SSE"),
        ("--to-xcr0", "0x5", "--xcr0", "AVX (bit 2) requires SSE"),
        ("--to-xss", "0x1", "--xss", "user components cannot be set in IA32_XSS"),
        ("--from-xss", "0x1", "--xss", "user components cannot be set in IA32_XSS"),
    ] {
        let cpu = if flag.starts_with("--from") { &genoa } else { &spr };
        let (lcode, _, lerr) = xstate(&["layout", "--cpuid", s(cpu), layout_flag, value]);
        assert_eq!(lcode, 1, "{lerr}");
        assert!(lerr.contains(rule), "{lerr}");
        let (code, out, err) = xstate(&["compat", "--from", s(&genoa), "--to", s(&spr), flag, value]);
        assert_eq!(code, 1, "{flag} {value}: {out}{err}");
        assert!(err.contains(rule) && err.contains(flag), "{flag} {value}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        let (code, _, err) = xstate(&["compat", "--matrix", s(&d.join("AuthenticAMD")), flag, value]);
        assert_eq!(code, 2, "--matrix {flag}: {err}");
        assert!(err.contains(flag) && err.contains("--matrix"), "{err}");
    }
    // Valid masks still give the verdict.
    let (code, out, err) = xstate(&["compat", "--from", s(&genoa), "--to", s(&spr), "--from-xcr0", "0x7"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("compatible as is"), "{out}");
}

/// `compat --matrix DIR` reads each file once: a symbolic link to a directory is not followed
/// (a link to `.` counted one CPU 41 times, until ELOOP), and a folder with files but no
/// CPUID dump among them is refused (exit 1) as `policy --baseline` refuses it; it gave a
/// matrix of 0 CPUs, exit 0.
#[test]
fn matrix_reads_each_dump_once_and_needs_one() {
    let Some(d) = dumps_or_skip() else { return };
    let dir = tmpdir("compat-matrix-dir");
    let genoa = d.join("AuthenticAMD/AuthenticAMD0A10F11_K19_Genoa_01_CPUID.txt");
    let one = dir.join("one");
    std::fs::create_dir(&one).unwrap();
    std::fs::copy(&genoa, one.join("genoa.txt")).unwrap();
    std::os::unix::fs::symlink(".", one.join("me")).unwrap();
    let (code, out, err) = xstate(&["compat", "--matrix", s(&one), "--json"]);
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["cpus"].as_array().unwrap().len(), 1, "{v}");
    let unusable = v["unusable"].as_array().unwrap();
    assert_eq!(unusable.len(), 1, "{unusable:?}");
    assert!(unusable[0]["error"].as_str().unwrap().contains("not followed"), "{unusable:?}");
    let junk = dir.join("junk");
    std::fs::create_dir(&junk).unwrap();
    std::fs::write(junk.join("empty.txt"), b"").unwrap();
    std::fs::write(junk.join("readme.md"), b"hi\n").unwrap();
    let (code, _, err) = xstate(&["compat", "--matrix", s(&junk)]);
    assert_eq!((code, err.lines().count()), (1, 1), "{err}");
    assert!(err.contains("no CPUID dump"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
