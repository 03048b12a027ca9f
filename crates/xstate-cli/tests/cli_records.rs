//! `xstate convert --from-format F --to-format G` and `xstate inspect --format auto` over every
//! record format: chains of conversions end with the bytes they started from, auto-detection
//! names each format, and a re-layout between an Intel and an AMD dump keeps every register.

#[macro_use]
mod common;

use std::path::{Path, PathBuf};

use serde_json::Value;

use common::{dumps_or_skip, json, ok, s, tmpdir, xstate};

/// A standard image for XCR0 0x2e7 on `layout_of` dump: YMM, opmask, ZMM and PKRU filled.
fn image(dir: &Path, cpuid: &str) -> PathBuf {
    let v = json(&["layout", "--cpuid", cpuid, "--xcr0", "0x2e7", "--json"]);
    let size = v["standard_size"].as_u64().unwrap() as usize;
    let mut img = vec![0u8; size];
    img[0..2].copy_from_slice(&0x037Fu16.to_le_bytes());
    img[24..28].copy_from_slice(&0x1F80u32.to_le_bytes());
    for (i, b) in img.iter_mut().enumerate().take(416).skip(160) {
        *b = i as u8;
    }
    for c in v["components"].as_array().unwrap() {
        let idx = c["index"].as_u64().unwrap();
        if [2, 5, 6, 7, 9].contains(&idx) {
            let (off, sz) = (c["offset"].as_u64().unwrap() as usize, c["size"].as_u64().unwrap() as usize);
            for k in 0..sz {
                img[off + k] = (idx as usize * 37 + k) as u8 | 1;
            }
        }
    }
    img[512..520].copy_from_slice(&0x2E7u64.to_le_bytes());
    let p = dir.join("src.img");
    std::fs::write(&p, &img).unwrap();
    p
}

#[test]
fn every_format_round_trips_and_is_recognised() {
    let Some(d) = dumps_or_skip() else { return };
    let dir = tmpdir("records");
    let skx = d.join("GenuineIntel/GenuineIntel0050654_SkylakeXeon_CPUID5.txt");
    let skx = s(&skx);
    let src = image(&dir, skx);
    let src_bytes = std::fs::read(&src).unwrap();
    let formats =
        ["xen-domctl", "fc-blob", "xen-hvm", "xen-pv", "kvm-xsave", "kvm-xsave2", "nt-xstate", "sigframe", "portable"];
    for f in formats {
        let rec = dir.join(format!("r.{f}"));
        let back = dir.join(format!("b.{f}"));
        let opts = ["--cpuid", skx, "--xcr0", "0x2e7", "--to", "standard"];
        let mut a = vec!["convert", s(&src), "--to-format", f, "-o", s(&rec)];
        a.extend(opts);
        if f.starts_with("xen-hvm") || f.starts_with("xen-pv") {
            a.extend(["--vcpu", "0"]); // a bare image has no vCPU: the record needs one
        }
        ok(&a);
        let v = json(&["inspect", s(&rec), "--format", "auto", "--cpuid", skx, "--json"]);
        let seen = v["format"].as_str().unwrap();
        let same = seen == f || (f == "fc-blob" && seen == "xen-domctl") || (f == "kvm-xsave2" && seen == "kvm-xsave");
        assert!(same, "{f} detected as {seen}");
        assert_eq!(v["hardware"]["valid"], true, "{f}");
        let mut a = vec!["convert", s(&rec), "--from-format", f, "-o", s(&back)];
        a.extend(opts);
        // A bare image holds none of a record's fields: dropped by name.
        a.extend(["--drop", "xcr0,xss,xcr0-accum,vcpu"]);
        ok(&a);
        let got = std::fs::read(&back).unwrap();
        // The image comes back with the state it had; signal frames force FP|SSE in use and
        // Linux notes write XCR0 into 464..471, everything else byte for byte.
        let (mut g, mut w) = (got.clone(), src_bytes.clone());
        for b in [&mut g, &mut w] {
            b[464..512].fill(0);
            b[512] |= 0x3;
        }
        assert_eq!(g, w, "{f}: image after the round trip");
    }
    // Truncated records: exit 1, one line.
    let rec = std::fs::read(dir.join("r.xen-domctl")).unwrap();
    let cut = dir.join("cut");
    std::fs::write(&cut, &rec[..rec.len() - 1]).unwrap();
    let (code, _, err) = xstate(&["inspect", s(&cut), "--format", "xen-domctl", "--cpuid", skx]);
    assert_eq!(code, 1);
    assert_eq!(err.lines().count(), 1);
    assert!(err.contains("standard_size(xcr0_accum 0x2e7)"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn portable_record_relays_intel_state_onto_amd() {
    let Some(d) = dumps_or_skip() else { return };
    let dir = tmpdir("portable");
    let skx = d.join("GenuineIntel/GenuineIntel0050654_SkylakeXeon_CPUID5.txt");
    let zen4 = d.join("AuthenticAMD/AuthenticAMD0A60F12_K19_Raphael_01_CPUID.txt");
    let (skx, zen4) = (s(&skx), s(&zen4));
    let src = image(&dir, skx);
    let p = dir.join("state.portable");
    ok(&[
        "convert",
        s(&src),
        "--cpuid",
        skx,
        "--xcr0",
        "0x2e7",
        "--to",
        "standard",
        "--to-format",
        "portable",
        "-o",
        s(&p),
    ]);
    // A record that carries its own layout is read in it: --cpuid naming a CPU that places
    // its components elsewhere would answer for bytes laid out for another CPU (Zen 4 has no
    // AVX-512 at Intel's offsets), so it is refused in every command; the same CPU is fine.
    let conv = ["convert", "--to", "standard", "--to-format", "portable", "-o", "/dev/null"];
    for cmd in [&["validate"][..], &["inspect"], &conv] {
        let mut a = vec![cmd[0], s(&p)];
        a.extend_from_slice(&cmd[1..]);
        a.extend(["--cpuid", zen4]);
        let (code, _, err) = xstate(&a);
        assert_eq!((code, err.lines().count()), (1, 1), "{a:?}: {err}");
        assert!(err.contains("carries its own layout") && err.contains("--to-cpuid"), "{err}");
        a.pop();
        a.push(skx);
        let (code, _, err) = xstate(&a);
        assert_eq!(code, 0, "{a:?}: {err}");
    }
    // Moved onto "an AMD host": the record's own layout places the Intel offsets.
    let out = dir.join("amd.nt");
    ok(&[
        "convert",
        s(&p),
        "--from-format",
        "portable",
        "--to-cpuid",
        zen4,
        "--to",
        "standard",
        "--to-format",
        "nt-xstate",
        "--drop",
        "xcr0-accum",
        "-o",
        s(&out),
    ]);
    assert_eq!(std::fs::metadata(&out).unwrap().len(), 2440);
    let regs = |file: &str, fmt: &str, cpuid: &str| -> Value {
        let v = json(&["inspect", file, "--format", fmt, "--cpuid", cpuid, "--regs", "--json"]);
        v["registers"].clone()
    };
    let a = regs(s(&src), "raw", skx);
    let b = regs(s(&out), "nt-xstate", zen4);
    for r in ["ymm3", "k7", "zmm5", "zmm31", "pkru", "xmm15", "mxcsr"] {
        assert_eq!(a[r]["hex"], b[r]["hex"], "{r}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A CPUID dump whose AVX ends at byte u32::MAX makes sizes that overflow 32-bit arithmetic: a
/// signal frame read against it is refused in one line (exit 1), not a panic.
#[test]
fn hostile_layout_is_refused_not_a_panic() {
    let dir = tmpdir("hostile");
    let dump = dir.join("huge.txt");
    std::fs::write(
        &dump,
        "CPUID 0000000D: 00000007-00000340-FFFFFFFF-00000000 [SL 00]\n\
         CPUID 0000000D: 0000000F-00000340-00000000-00000000 [SL 01]\n\
         CPUID 0000000D: 000001FF-FFFFFE00-00000000-00000000 [SL 02]\n",
    )
    .unwrap();
    let mut frame = vec![0u8; 600];
    frame[0..2].copy_from_slice(&0x037Fu16.to_le_bytes());
    frame[24..28].copy_from_slice(&0x1F80u32.to_le_bytes());
    frame[464..468].copy_from_slice(&0x4650_5853u32.to_le_bytes()); // magic1
    frame[468..472].copy_from_slice(&3u32.to_le_bytes()); // extended_size: u32::MAX + 4, wrapped
    frame[472..480].copy_from_slice(&7u64.to_le_bytes()); // xfeatures
    frame[480..484].copy_from_slice(&u32::MAX.to_le_bytes()); // xstate_size
    let f = dir.join("frame");
    std::fs::write(&f, &frame).unwrap();
    for format in ["sigframe", "auto"] {
        let (code, _, err) = xstate(&["inspect", s(&f), "--cpuid", s(&dump), "--format", format]);
        assert!(code == 0 || code == 1, "--format {format}: exit {code}: {err}");
        assert!(err.lines().count() <= 1, "{err}");
    }
    let (code, _, err) = xstate(&["inspect", s(&f), "--cpuid", s(&dump), "--format", "sigframe"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("extended_size"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `--xss` on a bare image is the state's IA32_XSS: a record that holds it records it (a
/// compacted fc-blob's xstates = XCR0 | XSS), one that cannot hold it refuses unless
/// `--drop xss`, as for every other field. It was dropped without a word (exit 0 into
/// xen-domctl), and an fc-blob could not be made from a bare image with supervisor states.
#[test]
fn xss_of_a_bare_image_is_recorded_or_refused() {
    let Some(d) = dumps_or_skip() else { return };
    let dir = tmpdir("records-xss");
    let genoa = d.join("AuthenticAMD/AuthenticAMD0A10F11_K19_Genoa_01_CPUID.txt");
    let genoa = s(&genoa);
    let mut img = common::standard_image(2432, 0x3);
    img[160] = 0x42;
    let raw = dir.join("std.raw");
    std::fs::write(&raw, &img).unwrap();
    let conv = |to: &str, fmt: &str, out: &Path, extra: &[&str]| {
        let mut a = vec!["convert", s(&raw), "--cpuid", genoa, "--xcr0", "0xe7", "--xss", "0x800", "--to", to];
        a.extend(["--to-format", fmt, "-o", s(out)]);
        a.extend_from_slice(extra);
        xstate(&a)
    };
    let domctl = dir.join("a.domctl");
    let (code, _, err) = conv("standard", "xen-domctl", &domctl, &[]);
    assert_eq!((code, err.lines().count()), (1, 1), "{err}");
    assert!(err.contains("xss"), "{err}");
    assert!(!domctl.exists());
    let (code, _, err) = conv("standard", "xen-domctl", &domctl, &["--drop", "xss"]);
    assert_eq!(code, 0, "{err}");
    let blob = dir.join("b.fcblob");
    let (code, _, err) = conv("compacted", "fc-blob", &blob, &[]);
    assert_eq!(code, 0, "{err}");
    let v = json(&["inspect", s(&blob), "--cpuid", genoa, "--json"]);
    assert_eq!((v["xcr0"].as_str(), v["xss"].as_str()), (Some("0xe7"), Some("0x800")), "{v}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `convert`'s summary (text and JSON) says what the output holds, as `inspect` of it reads:
/// its image size and the XCR0 it records. It reported the converted image before the record
/// writer sized it (832 bytes for a 2432-byte image in the file) and the source's enabled
/// states as XCR0 (0xe7 for a record whose xcr0 is 0x7).
#[test]
fn convert_summary_says_what_the_output_holds() {
    let Some(d) = dumps_or_skip() else { return };
    let dir = tmpdir("records-summary");
    let genoa = d.join("AuthenticAMD/AuthenticAMD0A10F11_K19_Genoa_01_CPUID.txt");
    let genoa = s(&genoa);
    let img = common::standard_image(2432, 0x3);
    let raw = dir.join("bv3.raw");
    std::fs::write(&raw, &img).unwrap();
    let domctl = dir.join("bv3.domctl");
    ok(&[
        "convert",
        s(&raw),
        "--cpuid",
        genoa,
        "--xcr0",
        "0xe7",
        "--to",
        "standard",
        "--to-format",
        "xen-domctl",
        "-o",
        s(&domctl),
    ]);
    let mut x7 = std::fs::read(&domctl).unwrap();
    x7[0..8].copy_from_slice(&0x7u64.to_le_bytes());
    let x7p = dir.join("x7.domctl");
    std::fs::write(&x7p, &x7).unwrap();
    for (input, extra) in [(&x7p, &[][..]), (&domctl, &["--xcr0", "0x7"][..])] {
        let out = dir.join("out.domctl");
        let mut a = vec!["convert", s(input), "--cpuid", genoa, "--to", "standard", "--to-format", "xen-domctl"];
        a.extend_from_slice(extra);
        a.extend(["-o", s(&out), "--json"]);
        let said = json(&a);
        let read = json(&["inspect", s(&out), "--cpuid", genoa, "--json"]);
        assert_eq!(said["size"], read["size"], "{input:?} {extra:?}: {said}");
        assert_eq!(said["xcr0"], read["xcr0"], "{input:?} {extra:?}: {said}");
        assert_eq!(said["file_size"], std::fs::metadata(&out).unwrap().len(), "{said}");
        a.pop();
        let text = ok(&a);
        let want = format!("{} bytes, XSTATE_BV", read["size"]);
        assert!(text.contains(&want) && text.contains(&format!("XCR0 {}", read["xcr0"].as_str().unwrap())), "{text}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// `inspect` and `validate` give XRSTOR's verdict with the same masks: a non-zero `--xss`
/// means XRSTORS in both, which takes no standard image (inspect said "loads without #GP").
#[test]
fn inspect_and_validate_agree_with_xss() {
    let Some(d) = dumps_or_skip() else { return };
    let dir = tmpdir("records-inspect-xss");
    let genoa = d.join("AuthenticAMD/AuthenticAMD0A10F11_K19_Genoa_01_CPUID.txt");
    let genoa = s(&genoa);
    let img = common::standard_image(2432, 0x3);
    let raw = dir.join("std.raw");
    std::fs::write(&raw, &img).unwrap();
    let base = ["--cpuid", genoa, "--xcr0", "0xe7"];
    for xss in ["0x0", "0x800"] {
        let v = xstate(&[&["validate", s(&raw)][..], &base, &["--xss", xss]].concat());
        let i = xstate(&[&["inspect", s(&raw)][..], &base, &["--xss", xss]].concat());
        assert_eq!(v.0, i.0, "--xss {xss}: validate {} / inspect {} {}", v.2, i.1, i.2);
    }
    let (_, out, _) = xstate(&[&["inspect", s(&raw)][..], &base, &["--xss", "0x800"]].concat());
    assert!(out.contains("XRSTORS with RFBM 0x8e7: refused"), "{out}");
    let _ = std::fs::remove_dir_all(&dir);
}
