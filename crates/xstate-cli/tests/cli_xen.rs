//! Issue 11: every Xen path agrees with Xen's own code, and nothing a record says is lost.
//! Each test names the item it pins; the CPUs are written from leaf 0xD rows, so no test needs
//! `../shared`.

mod common;

use std::path::{Path, PathBuf};

use serde_json::Value;

use common::{json, mask, ok, s, tmpdir, xstate};

use xstate::fixtures::{AMD_FAM15H_LWP, AMD_ZEN2, AVX_ONLY, INTEL_SKYLAKE_SP, Rows};

/// Sapphire Rapids user part: AVX-512, PKRU, AMX; standard size 11008.
const SAPPHIRE_RAPIDS: Rows = &[
    (0, 0x602E7, 0x2B00, 0x2B00, 0),
    (1, 0xF, 0x2A80, 0, 0),
    (2, 0x100, 0x240, 0, 0),
    (5, 0x40, 0x440, 0, 0),
    (6, 0x200, 0x480, 0, 0),
    (7, 0x400, 0x680, 0, 0),
    (9, 0x8, 0xA80, 0, 0),
    (17, 0x40, 0xAC0, 2, 0),
    (18, 0x2000, 0xB00, 6, 0),
];

/// Writes `rows` as an xstate JSON CPUID file.
fn cpu(dir: &Path, name: &str, rows: Rows) -> PathBuf {
    let leaf: Vec<Value> = rows
        .iter()
        .map(|&(i, a, b, c, d)| serde_json::json!({"index": i, "eax": a, "ebx": b, "ecx": c, "edx": d}))
        .collect();
    let p = dir.join(format!("{name}.json"));
    std::fs::write(&p, serde_json::json!({ "leaf0d": leaf }).to_string()).unwrap();
    p
}

/// A standard image of `size` bytes with XSTATE_BV `bv`, MXCSR at its default.
fn image(size: usize, bv: u64) -> Vec<u8> {
    let mut img = vec![0u8; size];
    img[0..2].copy_from_slice(&0x037Fu16.to_le_bytes());
    img[24..28].copy_from_slice(&0x1F80u32.to_le_bytes());
    img[512..520].copy_from_slice(&bv.to_le_bytes());
    for (i, b) in img.iter_mut().enumerate().skip(576) {
        *b = (i % 251) as u8 | 1;
    }
    img
}

fn domctl(xcr0: u64, accum: u64, img: &[u8]) -> Vec<u8> {
    let mut b = xcr0.to_le_bytes().to_vec();
    b.extend_from_slice(&accum.to_le_bytes());
    b.extend_from_slice(img);
    b
}

fn hvm(instance: u16, xcr0: u64, accum: u64, img: &[u8]) -> Vec<u8> {
    let mut b = 16u16.to_le_bytes().to_vec();
    b.extend_from_slice(&instance.to_le_bytes());
    b.extend_from_slice(&((24 + img.len()) as u32).to_le_bytes());
    b.extend_from_slice(&accum.to_le_bytes()); // xfeature_mask: any value, ignored on load
    b.extend_from_slice(&xcr0.to_le_bytes());
    b.extend_from_slice(&accum.to_le_bytes());
    b.extend_from_slice(img);
    b
}

fn pv(vcpu: u32, blob: &[u8]) -> Vec<u8> {
    let mut b = 6u32.to_le_bytes().to_vec();
    b.extend_from_slice(&((8 + blob.len()) as u32).to_le_bytes());
    b.extend_from_slice(&vcpu.to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes());
    b.extend_from_slice(blob);
    b.resize(8 + (8 + blob.len()).div_ceil(8) * 8, 0);
    b
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

/// Item 1: the image-level xen profile applies its caller's size rule exactly: the domctl path
/// takes exactly standard_size(xcr0_accum) bytes (EINVAL otherwise), the HVM loader a longer
/// image only with a zero tail (EOPNOTSUPP "non-zero data").
#[test]
fn item1_xen_profile_size_rule_is_the_callers() {
    let dir = tmpdir("xen-item1");
    let hsw = cpu(&dir, "hsw", AVX_ONLY);
    let mut long = image(577, 0x1);
    long[576] = 0x01;
    let long = write(&dir, "long.img", &long);
    let zero_tail = write(&dir, "zt.img", &{
        let mut i = image(576, 0x1);
        i.push(0);
        i
    });
    let exact = write(&dir, "exact.img", &image(576, 0x1));
    let base = |img: &Path, caller: Option<&str>| {
        let mut a = vec!["validate", s(img), "--cpuid", s(&hsw), "--xcr0", "0x1", "--xcr0-accum", "0x1"];
        a.extend(["--profile", "xen"]);
        let v: Vec<String> = a.iter().map(|x| x.to_string()).collect();
        let mut v = v;
        if let Some(c) = caller {
            v.extend(["--xen-caller".to_string(), c.to_string()]);
        }
        let r: Vec<&str> = v.iter().map(String::as_str).collect();
        xstate(&r)
    };
    let (code, _, err) = base(&long, None);
    assert_eq!(code, 1, "a 577-byte image with a non-zero tail: {err}");
    assert!(err.contains("EINVAL"), "{err}");
    let (code, _, err) = base(&zero_tail, None);
    assert_eq!(code, 1, "the domctl path takes no longer image, zero tail or not: {err}");
    let (code, _, err) = base(&exact, None);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = base(&long, Some("hvm"));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("EOPNOTSUPP"), "the HVM loader's non-zero data: {err}");
    let (code, _, err) = base(&zero_tail, Some("hvm"));
    assert_eq!(code, 0, "the HVM loader accepts a zero tail: {err}");
    let (code, _, err) = base(&exact, Some("domctl"));
    assert_eq!(code, 0, "{err}");
}

/// Item 2: the 16-byte "no xsave state" blob and an empty PV record are valid input.
#[test]
fn item2_no_xsave_state_is_valid_input() {
    let dir = tmpdir("xen-item2");
    let hsw = cpu(&dir, "hsw", AVX_ONLY);
    let blob = write(&dir, "none.blob", &[0u8; 16]);
    let empty_pv = write(&dir, "empty.pv", &pv(5, &[]));
    let pv16 = write(&dir, "none.pv", &pv(5, &[0u8; 16]));
    for (f, fmt) in
        [(&blob, "xen-domctl"), (&blob, "auto"), (&empty_pv, "xen-pv"), (&empty_pv, "auto"), (&pv16, "auto")]
    {
        let out = ok(&["inspect", s(f), "--format", fmt, "--cpuid", s(&hsw)]);
        assert!(out.contains("no xsave state"), "inspect {fmt}: {out}");
        let v = json(&["inspect", s(f), "--format", fmt, "--cpuid", s(&hsw), "--json"]);
        assert_eq!(v["no_xsave_state"], true, "{v}");
        let out = ok(&["validate", s(f), "--format", fmt, "--cpuid", s(&hsw)]);
        assert!(out.contains("no xsave state"), "validate {fmt}: {out}");
    }
    // Converting writes each target's own "no state" form, or is refused where it has none.
    let out = dir.join("out");
    ok(&[
        "convert",
        s(&blob),
        "--from-format",
        "xen-domctl",
        "--to-format",
        "fc-blob",
        "--to",
        "standard",
        "-o",
        s(&out),
    ]);
    assert_eq!(std::fs::read(&out).unwrap(), vec![0u8; 16]);
    let a = ["convert", s(&empty_pv), "--from-format", "xen-pv", "--to-format", "xen-domctl", "--to", "standard"];
    let (code, _, err) = xstate(&[&a[..], &["--drop", "vcpu", "-o", s(&out)]].concat());
    assert_eq!(code, 0, "{err}");
    assert_eq!(std::fs::read(&out).unwrap(), vec![0u8; 16]);
    ok(&[
        "convert",
        s(&blob),
        "--from-format",
        "xen-domctl",
        "--to-format",
        "xen-pv",
        "--vcpu",
        "5",
        "--to",
        "standard",
        "-o",
        s(&out),
    ]);
    assert_eq!(std::fs::read(&out).unwrap(), pv(5, &[0u8; 16]), "Xen's PV no-state record wraps the 16-byte blob");
    for to in ["xen-hvm", "raw", "kvm-xsave", "nt-xstate", "portable"] {
        // The vCPU only for the format that records one (elsewhere --vcpu is a usage error).
        let vcpu: &[&str] = if to == "xen-hvm" { &["--vcpu", "1"] } else { &[] };
        let head = ["convert", s(&blob), "--from-format", "xen-domctl", "--to-format", to];
        let (code, _, err) = xstate(&[&head[..], vcpu, &["--to", "standard", "-o", s(&out)]].concat());
        assert_eq!(code, 1, "{to} has no no-state form: {err}");
        assert!(err.contains("no xsave state"), "{to}: {err}");
    }
}

/// Item 3: Xen's host mask is CPUID & XCNTXT_MASK, never LWP: a record with LWP in xcr0_accum
/// is refused (EINVAL), and the size limit follows that mask.
#[test]
fn item3_lwp_is_never_in_xens_host_mask() {
    let dir = tmpdir("xen-item3");
    let k15 = cpu(&dir, "k15", AMD_FAM15H_LWP);
    let accum = 0x4000_0000_0000_0007u64;
    let rec = write(&dir, "lwp.blob", &domctl(0x7, accum, &image(0x3C0, 0x7)));
    let (code, _, err) = xstate(&["validate", s(&rec), "--format", "xen-domctl", "--cpuid", s(&k15)]);
    assert_eq!(code, 1, "LWP in xcr0_accum: {err}");
    assert!(err.contains("EINVAL"), "{err}");
    // Without LWP the same CPU's record is fine.
    let rec = write(&dir, "avx.blob", &domctl(0x7, 0x7, &image(0x340, 0x7)));
    ok(&["validate", s(&rec), "--format", "xen-domctl", "--cpuid", s(&k15)]);
}

/// Item 4: inspect --json of a Xen record shows xcr0 and xcr0_accum, as Xen names them.
#[test]
fn item4_inspect_json_shows_xcr0_and_xcr0_accum() {
    let dir = tmpdir("xen-item4");
    let hsw = cpu(&dir, "hsw", AVX_ONLY);
    let rec = write(&dir, "r.blob", &domctl(0x1, 0x7, &image(0x340, 0x3)));
    let v = json(&["inspect", s(&rec), "--format", "xen-domctl", "--cpuid", s(&hsw), "--json"]);
    assert_eq!(mask(&v["xcr0"]), 0x1, "{v}");
    assert_eq!(mask(&v["xcr0_accum"]), 0x7, "{v}");
    let rec = write(&dir, "r.hvm", &hvm(3, 0x1, 0x7, &image(0x340, 0x3)));
    let v = json(&["inspect", s(&rec), "--format", "auto", "--cpuid", s(&hsw), "--json"]);
    assert_eq!(mask(&v["xcr0"]), 0x1, "{v}");
    assert_eq!(mask(&v["xcr0_accum"]), 0x7, "{v}");
    assert_eq!(v["instance"], 3, "{v}");
}

/// Items 5 and 6: xcr0, xcr0_accum and the vCPU survive every conversion that can hold them;
/// a field the target cannot hold is refused unless dropped with --drop.
#[test]
fn item5_6_every_field_survives_or_is_named() {
    let dir = tmpdir("xen-item56");
    let hsw = cpu(&dir, "hsw", AVX_ONLY);
    let hsw = s(&hsw);
    // x87 in use only, so the state fits an XCR0 of 0x1 as the record says.
    let img = image(0x340, 0x1);
    let blob = write(&dir, "r.blob", &domctl(0x1, 0x7, &img));
    let hvm3 = write(&dir, "r.hvm", &hvm(3, 0x1, 0x7, &img));
    let pv7 = write(&dir, "r.pv", &pv(7, &domctl(0x1, 0x7, &img)));
    let out = dir.join("out");
    let conv = |src: &Path, from: &str, to: &str, extra: &[&str]| {
        let mut a =
            vec!["convert", s(src), "--cpuid", hsw, "--from-format", from, "--to-format", to, "--to", "standard"];
        a.extend(extra);
        a.extend(["-o", s(&out)]);
        xstate(&a)
    };
    // xen-domctl -> xen-pv / xen-hvm: xcr0 and xcr0_accum as they were.
    let (code, _, err) = conv(&blob, "xen-domctl", "xen-pv", &["--vcpu", "2"]);
    assert_eq!(code, 0, "{err}");
    let b = std::fs::read(&out).unwrap();
    assert_eq!((u64_at(&b, 16), u64_at(&b, 24), u32::from_le_bytes(b[8..12].try_into().unwrap())), (0x1, 0x7, 2));
    // The HVM record's instance becomes the PV record's vcpu_id, and back.
    let (code, _, err) = conv(&hvm3, "xen-hvm", "xen-pv", &[]);
    assert_eq!(code, 0, "{err}");
    let b = std::fs::read(&out).unwrap();
    assert_eq!(u32::from_le_bytes(b[8..12].try_into().unwrap()), 3, "HVM instance 3 is PV vcpu_id 3");
    assert_eq!((u64_at(&b, 16), u64_at(&b, 24)), (0x1, 0x7));
    let (code, _, err) = conv(&pv7, "xen-pv", "xen-hvm", &[]);
    assert_eq!(code, 0, "{err}");
    let b = std::fs::read(&out).unwrap();
    assert_eq!(u16::from_le_bytes(b[2..4].try_into().unwrap()), 7, "PV vcpu_id 7 is HVM instance 7");
    assert_eq!((u64_at(&b, 16), u64_at(&b, 24)), (0x1, 0x7));
    // A vCPU number an HVM instance (u16) cannot hold is refused, never truncated.
    let big = write(&dir, "big.pv", &pv(70000, &domctl(0x1, 0x7, &img)));
    let (code, _, err) = conv(&big, "xen-pv", "xen-hvm", &[]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("vcpu"), "{err}");
    // A field the target cannot hold is named, and dropped only when asked.
    let (code, _, err) = conv(&blob, "xen-domctl", "nt-xstate", &[]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("xcr0_accum"), "{err}");
    let (code, _, err) = conv(&blob, "xen-domctl", "nt-xstate", &["--drop", "xcr0-accum"]);
    assert_eq!(code, 0, "{err}");
    let b = std::fs::read(&out).unwrap();
    assert_eq!(u64_at(&b, 464), 0x1, "NT_X86_XSTATE keeps the record's xcr0");
    let (code, _, err) = conv(&hvm3, "xen-hvm", "xen-domctl", &[]);
    assert_eq!(code, 1, "the domctl blob has no vCPU: {err}");
    assert!(err.contains("vcpu"), "{err}");
    let (code, _, err) = conv(&hvm3, "xen-hvm", "xen-domctl", &["--drop", "vcpu"]);
    assert_eq!(code, 0, "{err}");
    let b = std::fs::read(&out).unwrap();
    assert_eq!(b.len(), 16 + 0x340);
    assert_eq!(b[..16 + 576], domctl(0x1, 0x7, &img)[..16 + 576], "masks, legacy region and header as they were");
    // A target that needs a vCPU the source lacks asks for it.
    let (code, _, err) = conv(&blob, "xen-domctl", "xen-hvm", &[]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("vcpu"), "{err}");
}

/// Item 7: Xen's guest maxima as named policies derived from the host.
#[test]
fn item7_xen_guest_maxima_are_named_policies() {
    let dir = tmpdir("xen-item7");
    let skx = cpu(&dir, "skx", INTEL_SKYLAKE_SP);
    let spr = cpu(&dir, "spr", SAPPHIRE_RAPIDS);
    let zen2 = cpu(&dir, "zen2", AMD_ZEN2);
    let check = |cpuid: &Path, rec: &Path, policy: &str| {
        xstate(&["validate", s(rec), "--format", "xen-domctl", "--cpuid", s(cpuid), "--xen-policy", policy]).0
    };
    // PKRU only for HVM guests with HAP; MPX not for PV.
    let pkru = write(&dir, "pkru.blob", &domctl(0x207, 0x207, &image(0xA88, 0x3)));
    assert_eq!(check(&skx, &pkru, "pv"), 1);
    assert_eq!(check(&skx, &pkru, "hvm-shadow"), 1);
    assert_eq!(check(&skx, &pkru, "hvm-hap"), 0);
    let mpx = write(&dir, "mpx.blob", &domctl(0x1f, 0x1f, &image(0x440, 0x3)));
    assert_eq!(check(&skx, &mpx, "pv"), 1);
    assert_eq!(check(&skx, &mpx, "hvm-shadow"), 0);
    assert_eq!(check(&skx, &mpx, "hvm-hap"), 0);
    let avx512 = write(&dir, "avx512.blob", &domctl(0xe7, 0xe7, &image(0xA80, 0x3)));
    assert_eq!(check(&skx, &avx512, "pv"), 0);
    // No guest is offered AMX.
    let amx = write(&dir, "amx.blob", &domctl(0x60003, 0x60003, &image(0x2B00, 0x3)));
    for p in ["pv", "hvm-shadow", "hvm-hap"] {
        assert_eq!(check(&spr, &amx, p), 1, "{p}");
    }
    // Zen 2's bit 9 is not PKRU: never offered.
    let bit9 = write(&dir, "bit9.blob", &domctl(0x207, 0x207, &image(0x380, 0x3)));
    assert_eq!(check(&zen2, &bit9, "hvm-hap"), 1);
    // inspect and convert take the policy too.
    let (code, _, err) =
        xstate(&["inspect", s(&pkru), "--format", "xen-domctl", "--cpuid", s(&skx), "--xen-policy", "pv"]);
    assert_eq!(code, 1, "{err}");
    let out = dir.join("out");
    let (code, _, err) = xstate(&[
        "convert",
        s(&pkru),
        "--from-format",
        "xen-domctl",
        "--cpuid",
        s(&skx),
        "--xen-policy",
        "pv",
        "--to-format",
        "fc-blob",
        "--to",
        "standard",
        "-o",
        s(&out),
    ]);
    assert_eq!(code, 1, "{err}");
    ok(&[
        "convert",
        s(&pkru),
        "--from-format",
        "xen-domctl",
        "--cpuid",
        s(&skx),
        "--xen-policy",
        "hvm-hap",
        "--to-format",
        "fc-blob",
        "--to",
        "standard",
        "-o",
        s(&out),
    ]);
}

/// The forward-compatible blob is read with Xen's host mask and guest maximum as the Xen
/// records are, so `validate` takes `--xen-policy`/`--xen-host` for it as `inspect` and
/// `convert` do (it refused them as "Xen records only"), and a refusal names the rule.
#[test]
fn fc_blob_takes_the_xen_policy_in_every_command() {
    let dir = tmpdir("xen-fcblob");
    let skx = cpu(&dir, "skx", INTEL_SKYLAKE_SP);
    let pkru = write(&dir, "pkru.blob", &domctl(0x207, 0x207, &image(0xA88, 0x3)));
    let out = dir.join("out");
    let run = |cmd: &str, flags: &[&str]| {
        let mut a = vec![cmd, s(&pkru), "--cpuid", s(&skx)];
        a.extend([if cmd == "convert" { "--from-format" } else { "--format" }, "fc-blob"]);
        a.extend_from_slice(flags);
        if cmd == "convert" {
            a.extend(["--to", "compacted", "--to-format", "fc-blob", "-o", s(&out)]);
        }
        xstate(&a)
    };
    for cmd in ["validate", "inspect", "convert"] {
        let (code, _, err) = run(cmd, &["--xen-policy", "hvm-hap"]);
        assert_eq!(code, 0, "{cmd} hvm-hap: {err}");
        let (code, _, err) = run(cmd, &["--xen-host", "0x207"]);
        assert_eq!(code, 0, "{cmd} --xen-host: {err}");
        // PKRU is offered to HVM guests with HAP only; the host may lack it.
        for flags in [&["--xen-policy", "pv"][..], &["--xen-host", "0xe7"]] {
            let (code, _, err) = run(cmd, flags);
            assert_eq!(code, 1, "{cmd} {flags:?}: {err}");
            assert_eq!(err.lines().count(), 1, "{err}");
            assert!(err.contains("xstates_accum 0x207 has bits 0x200 (pkru)"), "{err}");
            assert!(err.contains("within the host's mask and the guest's policy"), "{cmd}: {err}");
        }
    }
    // On an input that is no Xen record the flags change nothing: a usage error in each.
    let img = write(&dir, "pkru.img", &image(0xA88, 0x3));
    for cmd in ["validate", "inspect"] {
        let (code, _, err) = xstate(&[cmd, s(&img), "--cpuid", s(&skx), "--xcr0", "0x207", "--xen-policy", "pv"]);
        assert_eq!(code, 2, "{cmd}: {err}");
        assert!(err.contains("--xen-policy/--xen-host apply"), "{cmd}: {err}");
    }
}

/// Issue 12 (record layer): kvm_xsave does not record the guest's XCR0 (bytes 464..471 hold
/// the host's supported mask); a conversion to a format that records XCR0 needs --xcr0.
#[test]
fn kvm_xsave_to_xen_needs_the_guests_xcr0() {
    let dir = tmpdir("xen-kvm");
    let hsw = cpu(&dir, "hsw", AVX_ONLY);
    let mut k = image(4096, 0x3);
    k[832..].fill(0);
    k[464..472].copy_from_slice(&0x7u64.to_le_bytes());
    let k = write(&dir, "k.xsave", &k);
    let out = dir.join("out");
    let a = [
        "convert",
        s(&k),
        "--cpuid",
        s(&hsw),
        "--from-format",
        "kvm-xsave",
        "--to-format",
        "xen-domctl",
        "--to",
        "standard",
    ];
    let (code, _, err) = xstate(&[&a[..], &["-o", s(&out)]].concat());
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("xcr0"), "{err}");
    ok(&[&a[..], &["--xcr0", "0x3", "-o", s(&out)]].concat());
    let b = std::fs::read(&out).unwrap();
    assert_eq!(u64_at(&b, 0), 0x3, "the guest's XCR0 as given");
}

/// A bare image does not say the XCR0 it was saved with, and Xen restores the guest's XCR0
/// from the record (`xcr0`, `xcr0_accum`): converting one into a Xen record, or a
/// forward-compatible blob, needs it given (`--xcr0`, or `--to-xcr0` for the output's), as a
/// kvm_xsave does; the CPU's default XCR0 (which fits the image's length) was written as the
/// guest's. A Linux record's XCR0 is the kernel's, which the default is.
#[test]
fn a_bare_image_into_a_guest_record_needs_the_guests_xcr0() {
    let dir = tmpdir("xen-bare");
    let hsw = cpu(&dir, "hsw", AVX_ONLY);
    // 832 bytes: standard_size of the CPU's default XCR0 0x7, and of a guest's 0x5 (x87|AVX).
    let bare = write(&dir, "bare.img", &image(832, 0x3));
    let out = dir.join("out");
    for (fmt, extra) in
        [("xen-domctl", &[][..]), ("xen-hvm", &["--vcpu", "0"][..]), ("xen-pv", &["--vcpu", "0"]), ("fc-blob", &[])]
    {
        let a =
            [&["convert", s(&bare), "--cpuid", s(&hsw), "--to", "standard", "--to-format", fmt][..], extra].concat();
        let (code, _, err) = xstate(&[&a[..], &["-o", s(&out)]].concat());
        assert_eq!(code, 1, "{fmt}: the default XCR0 written as the guest's: {err}");
        assert!(err.contains("--xcr0") && err.trim().lines().count() == 1, "{fmt}: {err}");
        assert!(!out.exists(), "{fmt}: a refused conversion wrote {out:?}");
        for given in [["--xcr0", "0x7"], ["--to-xcr0", "0x7"]] {
            ok(&[&a[..], &given[..], &["-o", s(&out)]].concat());
            let v = json(&["inspect", s(&out), "--cpuid", s(&hsw), "--format", fmt, "--json"]);
            assert_eq!(v["xcr0"], "0x7", "{fmt} {given:?}: {v}");
            std::fs::remove_file(&out).unwrap();
        }
    }
    // A process's record: the kernel's XCR0, the CPU's default.
    ok(&["convert", s(&bare), "--cpuid", s(&hsw), "--to", "standard", "--to-format", "nt-xstate", "-o", s(&out)]);
}
