//! `xstate` on the VMM files of `../shared/fixtures` (QEMU streams, the Cloud Hypervisor
//! snapshot, the Firecracker vmstate): inspect, convert into them, retarget them for another
//! host, compat with them as CPUs and images; bad input gives one line and exit 1.

#[macro_use]
mod common;

use std::path::{Path, PathBuf};

use common::{json, ok, s, tmpdir, xstate};
use serde_json::{Value, json as j};

/// The fixture `rel`, or `None` after a SKIP line.
fn fixture(rel: &str) -> Option<PathBuf> {
    let p = common::shared_root().join("fixtures").join(rel);
    if p.is_file() {
        Some(p)
    } else {
        skip!("{} not found: the VMM fixtures are not checked", p.display());
        None
    }
}

/// A CPUID JSON of the library fixture `rows`.
fn cpu(dir: &Path, name: &str, rows: xstate::fixtures::Rows) -> PathBuf {
    let rows: Vec<Value> =
        rows.iter().map(|&(i, a, b, c, d)| j!({"index": i, "eax": a, "ebx": b, "ecx": c, "edx": d})).collect();
    let p = dir.join(format!("{name}.json"));
    std::fs::write(&p, j!({"leaf0d": rows}).to_string()).unwrap();
    p
}

fn zmm(i: u64) -> String {
    let mut h = String::from("0x");
    for l in (0..8).rev() {
        h.push_str(&format!("{:016x}", 0x5a00_0000_0000_0000u64 | (i << 8) | l));
    }
    h
}

#[test]
fn every_vmm_fixture_inspects_with_the_known_state() {
    let dir = tmpdir("vmm-inspect");
    let skx = cpu(&dir, "skx", xstate::fixtures::INTEL_SKYLAKE_SP);
    for (rel, extra) in [
        ("qemu/kvm64u.mig", vec!["--cpuid", s(&skx)]),
        ("cloud-hypervisor/state.json", vec![]),
        ("firecracker/vmstate", vec![]),
    ] {
        let Some(p) = fixture(rel) else { return };
        let mut args = vec!["inspect", s(&p), "--format", "auto", "--regs", "--json"];
        args.extend(extra);
        let v = json(&args);
        assert_eq!(v["xcr0"], "0xe7", "{rel}");
        let r = &v["registers"];
        for i in [0, 5, 17, 31] {
            assert_eq!(r[format!("zmm{i}")]["hex"].as_str(), Some(zmm(i).as_str()), "{rel}: zmm{i}");
        }
        assert_eq!(r["k7"]["hex"].as_str(), Some("0x000000000000c088"), "{rel}");
        assert_eq!(r["mxcsr"]["hex"].as_str(), Some("0x00009fc0"), "{rel}");
        assert_eq!(r["st1"]["hex"].as_str(), Some("0x4000c90fdaa22168c235"), "{rel}");
        assert!(v["notes"].as_array().is_some_and(|n| !n.is_empty()), "{rel}: notes");
    }
    let Some(fc) = fixture("firecracker/vmstate") else { return };
    let text = ok(&["inspect", s(&fc), "--format", "firecracker"]);
    assert!(text.contains("located by content"), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn snapshots_retarget_for_another_host_with_the_verdict() {
    let dir = tmpdir("vmm-retarget");
    let skx = cpu(&dir, "skx", xstate::fixtures::INTEL_SKYLAKE_SP);
    let avx = cpu(&dir, "avx", xstate::fixtures::AVX_ONLY);
    for (rel, fmt) in [("cloud-hypervisor/state.json", "cloud-hypervisor"), ("firecracker/vmstate", "firecracker")] {
        let Some(p) = fixture(rel) else { return };
        let out = dir.join(format!("{fmt}.skx"));
        let text =
            ok(&["convert", s(&p), "--to", "standard", "--to-format", fmt, "--to-cpuid", s(&skx), "-o", s(&out)]);
        assert!(text.contains("compatible after re-layout"), "{text}");
        assert!(text.contains("not fixed by a re-layout"), "{fmt}: the verdict names what it cannot fix: {text}");
        // Read by its kept guest CPUID it is refused, one line, exit 1; with B's layout it reads.
        let (code, _, err) = xstate(&["inspect", s(&out), "--format", fmt]);
        assert_eq!(code, 1, "{fmt}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains("re-laid this") && err.contains("--cpuid"), "{err}");
        let v = json(&["inspect", s(&out), "--format", fmt, "--cpuid", s(&skx), "--regs", "--json"]);
        assert_eq!(v["registers"]["zmm17"]["hex"].as_str(), Some(zmm(17).as_str()), "{fmt}");
        assert_eq!(v["hardware"]["valid"], true, "{fmt}: re-validated on B");
        // A host without AVX-512 cannot take it: exit 1, nothing written.
        let bad = dir.join(format!("{fmt}.avx"));
        let (code, _, err) =
            xstate(&["convert", s(&p), "--to", "standard", "--to-format", fmt, "--to-cpuid", s(&avx), "-o", s(&bad)]);
        assert_eq!(code, 1, "{err}");
        assert!(err.contains("incompatible") || err.contains("cannot move"), "{err}");
        assert!(!bad.exists());
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_edited_image_goes_into_a_snapshot_and_back() {
    let dir = tmpdir("vmm-into");
    for (rel, fmt) in [("cloud-hypervisor/state.json", "cloud-hypervisor"), ("firecracker/vmstate", "firecracker")] {
        let Some(p) = fixture(rel) else { return };
        let img = dir.join(format!("{fmt}.img"));
        ok(&["convert", s(&p), "--from-format", fmt, "--to", "standard", "--drop", "xcr0,vcpu", "-o", s(&img)]);
        let mut b = std::fs::read(&img).unwrap();
        assert_eq!(b.len(), 2432, "{fmt}: standard_size(0xe7) on the snapshot's CPU");
        b[160 + 16 * 9..160 + 16 * 9 + 8].copy_from_slice(&0x0bad_cafe_0bad_cafeu64.to_le_bytes());
        std::fs::write(&img, &b).unwrap();
        let out = dir.join(format!("{fmt}.edited"));
        let snap_cpu = s(&p);
        ok(&[
            "convert",
            s(&img),
            "--cpuid",
            snap_cpu,
            "--xcr0",
            "0xe7",
            "--to",
            "standard",
            "--to-format",
            fmt,
            "--into",
            s(&p),
            "-o",
            s(&out),
        ]);
        let v = json(&["inspect", s(&out), "--format", fmt, "--regs", "--json"]);
        let x9 = v["registers"]["xmm9"]["hex"].as_str().unwrap().to_string();
        assert!(x9.ends_with("0badcafe0badcafe"), "{fmt}: {x9}");
        assert_eq!(v["registers"]["zmm31"]["hex"].as_str(), Some(zmm(31).as_str()));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn compat_takes_snapshots_as_cpus_and_images() {
    let dir = tmpdir("vmm-compat");
    let skx = cpu(&dir, "skx", xstate::fixtures::INTEL_SKYLAKE_SP);
    let Some(ch) = fixture("cloud-hypervisor/state.json") else { return };
    let Some(fc) = fixture("firecracker/vmstate") else { return };
    let v = json(&["compat", "--from", s(&ch), "--to", s(&skx), "--image", s(&ch), "--json"]);
    assert_eq!(v["verdict"], "relayout", "{v}");
    let kinds: Vec<&str> = v["reasons"].as_array().unwrap().iter().filter_map(|r| r["kind"].as_str()).collect();
    assert!(kinds.contains(&"guest_layout_stale"), "{kinds:?}");
    let v = json(&["compat", "--from", s(&fc), "--to", s(&ch), "--image", s(&fc), "--json"]);
    assert_eq!(v["verdict"], "compatible", "{v}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_container_input_is_one_line_and_exit_1() {
    let dir = tmpdir("vmm-bad");
    let Some(fc) = fixture("firecracker/vmstate") else { return };
    let Some(mig) = fixture("qemu/tcg64u.mig") else { return };
    let Some(ch) = fixture("cloud-hypervisor/state.json") else { return };
    let cut = |p: &Path, n: usize, name: &str| {
        let b = std::fs::read(p).unwrap();
        let q = dir.join(name);
        std::fs::write(&q, &b[..n.min(b.len())]).unwrap();
        q
    };
    for (p, fmt) in [
        (cut(&fc, 9000, "fc.cut"), "firecracker"),
        (cut(&mig, 600_000, "mig.cut"), "qemu"),
        (cut(&ch, 20_000, "ch.cut"), "cloud-hypervisor"),
        (cut(&fc, 3, "tiny"), "qemu"),
    ] {
        let (code, out, err) = xstate(&["inspect", s(&p), "--format", fmt]);
        assert_eq!(code, 1, "{fmt}: {err}");
        assert!(out.is_empty());
        assert_eq!(err.lines().count(), 1, "{err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn container_flags_without_effect_are_usage_errors() {
    let dir = tmpdir("vmm-flags");
    let img = dir.join("x.img");
    let mut b = vec![0u8; 576];
    b[0..2].copy_from_slice(&0x037fu16.to_le_bytes());
    b[24..28].copy_from_slice(&0x1f80u32.to_le_bytes());
    b[512] = 3;
    std::fs::write(&img, &b).unwrap();
    for args in [
        vec!["inspect", s(&img), "--format", "raw", "--xcr0", "0x3", "--vcpu", "1"],
        vec!["validate", s(&img), "--format", "raw", "--xcr0", "0x3", "--qemu-accel", "kvm"],
    ] {
        let (code, _, err) = xstate(&args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains("applies to"), "{err}");
    }
    let Some(ch) = fixture("cloud-hypervisor/state.json") else { return };
    let (code, _, err) = xstate(&["inspect", s(&ch), "--qemu-accel", "tcg"]);
    assert_eq!(code, 2, "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// QEMU builds the image it hands KVM with MXCSR_MASK 0, and KVM_SET_XSAVE checks MXCSR
/// against the host's mask: the stream's DAZ MXCSR (0x9fc0) moves into a kvm_xsave (it was
/// refused against 0xFFBF, the SDM's reading of a zero field), and the question "would a host
/// without DAZ take it" is `validate --mxcsr-mask`'s.
#[test]
fn qemu_state_with_a_zero_mxcsr_mask_field_moves_into_kvm_xsave() {
    let Some(mig) = fixture("qemu/kvm64u.mig") else { return };
    let dir = tmpdir("vmm-qemu-kvm");
    let zen4 = cpu(&dir, "zen4", xstate::fixtures::AMD_ZEN4);
    let k = dir.join("q.kvm");
    let conv = ["convert", s(&mig), "--cpuid", s(&zen4), "--to", "standard", "--to-format", "kvm-xsave"];
    ok(&[&conv[..], &["--drop", "vcpu,xcr0", "-o", s(&k)]].concat());
    let b = std::fs::read(&k).unwrap();
    assert_eq!((b.len(), u32::from_le_bytes(b[28..32].try_into().unwrap())), (4096, 0));
    let v = json(&["inspect", s(&k), "--cpuid", s(&zen4), "--xcr0", "0xe7", "--regs", "--json"]);
    assert_eq!(v["registers"]["mxcsr"]["hex"].as_str(), Some("0x00009fc0"));
    assert_eq!(v["registers"]["zmm17"]["hex"].as_str(), Some(zmm(17).as_str()));
    let check = |mask: &str| {
        let a = ["validate", s(&k), "--cpuid", s(&zen4), "--xcr0", "0xe7", "--profile", "kvm", "--mxcsr-mask", mask];
        xstate(&a)
    };
    assert_eq!(check("0xffff").0, 0, "{}", check("0xffff").2);
    let (code, _, err) = check("0xffbf");
    assert_eq!((code, err.lines().count()), (1, 1), "{err}");
    assert!(err.contains("0x9fc0") && err.contains("0xffbf"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A QEMU stream's `xcr0` field must obey the XCR0 rules: one that no CPU could hold (0xc7,
/// the AVX-512 trio split) is refused by the reader, in every command, naming the file and
/// the field's byte; `inspect` printed "loads without #GP" for it.
#[test]
fn qemu_stream_with_an_impossible_xcr0_is_refused_everywhere() {
    let Some(mig) = fixture("qemu/kvm64u.mig") else { return };
    let dir = tmpdir("vmm-qemu-xcr0");
    let zen4 = cpu(&dir, "zen4", xstate::fixtures::AMD_ZEN4);
    let mut b = std::fs::read(&mig).unwrap();
    const XCR0_AT: usize = 564_172; // env.xcr0 of the fixture's one vCPU, big-endian
    assert_eq!(b[XCR0_AT..XCR0_AT + 8], 0xe7u64.to_be_bytes(), "the fixture's xcr0 field");
    b[XCR0_AT..XCR0_AT + 8].copy_from_slice(&0xc7u64.to_be_bytes());
    let bad = dir.join("bad.mig");
    std::fs::write(&bad, &b).unwrap();
    let out = dir.join("out");
    for args in [
        vec!["inspect", s(&bad)],
        vec!["validate", s(&bad)],
        vec!["convert", s(&bad), "--to", "standard", "--drop", "vcpu", "-o", s(&out)],
    ] {
        let mut a = args.clone();
        a.extend(["--cpuid", s(&zen4)]);
        let (code, _, err) = xstate(&a);
        assert_eq!((code, err.lines().count()), (1, 1), "{a:?}: {err}");
        assert!(err.contains("bad.mig: qemu") && err.contains(&format!("byte {XCR0_AT}")), "{err}");
        assert!(err.contains("AVX-512"), "{err}");
    }
    assert!(!out.exists());
    let _ = std::fs::remove_dir_all(&dir);
}

/// A snapshot whose own CPUID lays out two enabled components over each other (a damaged
/// leaf 0xD: AVX at 580, into opmask at 832) describes no CPU: its state is refused, never
/// decoded with the overlapping offsets (it was read and called valid).
#[test]
fn a_snapshot_whose_cpuid_overlaps_enabled_components_is_refused() {
    let Some(ch) = fixture("cloud-hypervisor/state.json") else { return };
    let dir = tmpdir("vmm-overlap");
    let text = std::fs::read_to_string(&ch).unwrap();
    let avx = r#"\"function\":13,\"index\":2,\"flags\":1,\"eax\":256,\"ebx\":576"#;
    assert!(text.contains(avx), "the fixture's AVX subleaf");
    let bad = dir.join("state.json");
    std::fs::write(&bad, text.replace(avx, &avx.replace("576", "580"))).unwrap();
    for cmd in [&["inspect", "--regs"][..], &["validate"]] {
        let a = [&cmd[..1], &[s(&bad)][..], &cmd[1..]].concat();
        let (code, _, err) = xstate(&a);
        assert_eq!((code, err.lines().count()), (1, 1), "{a:?}: {err}");
        assert!(err.contains("avx and opmask overlap"), "{err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A vCPU's state taken out as a bare image is laid out for the XCR0 the vCPU records, so it
/// goes back in unchanged: Firecracker's vCPU 1 (in reset, XCR0 0x1) gave a 2432-byte image
/// for XCR0 0xe7, which the patch then refused for its vCPU's 576.
#[test]
fn a_vcpu_taken_out_and_put_back_is_the_same_file() {
    let vm = concat!(env!("CARGO_MANIFEST_DIR"), "/../xstate/tests/fixtures/firecracker-v1.16/vmstate-2vcpu");
    let dir = tmpdir("vmm-vcpu-back");
    for vcpu in ["0", "1"] {
        let img = dir.join(format!("v{vcpu}.img"));
        ok(&["convert", vm, "--vcpu", vcpu, "--to", "standard", "--drop", "vcpu,xcr0", "-o", s(&img)]);
        let xcr0 = json(&["inspect", vm, "--vcpu", vcpu, "--json"])["xcr0"].as_str().unwrap().to_string();
        let out = dir.join(format!("v{vcpu}.vmstate"));
        let put = ["convert", s(&img), "--xcr0", &xcr0, "--to", "standard", "--to-format", "firecracker"];
        ok(&[&put[..], &["--into", vm, "--vcpu", vcpu, "-o", s(&out)]].concat());
        assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(vm).unwrap(), "vCPU {vcpu} (XCR0 {xcr0})");
    }
    // A Xen record restores with its accumulated states: xcr0 0x7 with AVX-512 state in use
    // under xcr0_accum 0xe7 comes out laid out for 0xe7, state kept (not refused for 0x7).
    let zen4 = cpu(&dir, "zen4", xstate::fixtures::AMD_ZEN4);
    let mut img = common::standard_image(2432, 0xE7);
    for (i, b) in img.iter_mut().enumerate().skip(576) {
        *b = (i % 251) as u8 | 1;
    }
    let mut blob = 0x7u64.to_le_bytes().to_vec();
    blob.extend_from_slice(&0xE7u64.to_le_bytes());
    blob.extend_from_slice(&img);
    let rec = dir.join("acc.domctl");
    std::fs::write(&rec, &blob).unwrap();
    let raw = dir.join("acc.raw");
    ok(&["convert", s(&rec), "--cpuid", s(&zen4), "--to", "standard", "--drop", "xcr0,xcr0-accum", "-o", s(&raw)]);
    assert_eq!(std::fs::read(&raw).unwrap()[576..], img[576..], "the AVX-512 state kept");
    let _ = std::fs::remove_dir_all(&dir);
}
