//! `xstate capture` and `xstate restore` on a child holding a known state: capture shows it,
//! restore of a modified image changes it, and the child (which saves its own registers after
//! being continued) reports the change back.

#[macro_use]
mod common;

use xstate::Component;
use xstate_hw::Host;
use xstate_hw::selfcheck::{Rng, crafted_image};
use xstate_hw::tracee;

use common::{s, tmpdir, xstate};

#[test]
fn capture_and_restore_a_live_process() {
    let host = Host::probe().unwrap();
    let l = host.layout().clone();
    let xcr0 = host.xcr0();
    let img = crafted_image(&l, xcr0, &mut Rng::new(11));
    let child = tracee::spawn_stopped(&host, &img).unwrap();
    let pid = child.pid().to_string();
    let dir = tmpdir("capture");
    let (cap, port, modi) = (dir.join("cap.bin"), dir.join("cap.xstatepr"), dir.join("mod.bin"));

    let (code, out, err) = xstate(&["capture", "--pid", &pid, "-o", s(&cap)]);
    if code == 2 && err.contains("PTRACE") {
        skip!("ptrace unavailable: {err}");
        return;
    }
    assert_eq!(code, 0, "{out}{err}");
    let got = std::fs::read(&cap).unwrap();
    let ymm = l.standard_range(Component::AVX).unwrap();
    for c in xcr0.iter().filter(|c| !c.is_legacy() && *c != Component::TILECFG) {
        let r = l.standard_range(c).unwrap();
        assert_eq!(got[r.clone()], img[r], "captured {c}");
    }
    let (code, _, err) = xstate(&["capture", "--pid", &pid, "--format", "portable", "-o", s(&port)]);
    assert_eq!(code, 0, "{err}");

    // A modified image: every YMM upper half flipped.
    let mut m = got.clone();
    for b in &mut m[ymm.clone()] {
        *b ^= 0xA5;
    }
    std::fs::write(&modi, &m).unwrap();
    let (code, out, err) = xstate(&["restore", "--pid", &pid, s(&modi), "--format", "nt-xstate"]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, _, _) = xstate(&["capture", "--pid", &pid, "-o", s(&cap)]);
    assert_eq!(code, 0);
    assert_eq!(std::fs::read(&cap).unwrap()[ymm.clone()], m[ymm.clone()], "ptrace sees the restored state");

    // The portable record (auto-detected) brings the original back.
    let (code, out, err) = xstate(&["restore", "--pid", &pid, s(&port)]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, _, _) = xstate(&["capture", "--pid", &pid, "-o", s(&cap)]);
    assert_eq!(code, 0);
    assert_eq!(std::fs::read(&cap).unwrap()[ymm.clone()], img[ymm.clone()], "portable record restored");

    // Invalid images are refused before the kernel sees them, naming the rule.
    let mut bad = m.clone();
    bad[520] = 1;
    std::fs::write(&modi, &bad).unwrap();
    let (code, _, err) = xstate(&["restore", "--pid", &pid, s(&modi), "--format", "nt-xstate"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("XCOMP_BV") || err.contains("520"), "{err}");
    assert_eq!(err.trim().lines().count(), 1);

    // The modified state once more, then the child reports what it sees when continued.
    std::fs::write(&modi, &m).unwrap();
    let (code, _, err) = xstate(&["restore", "--pid", &pid, s(&modi), "--format", "nt-xstate"]);
    assert_eq!(code, 0, "{err}");
    let seen = child.resume_and_report().unwrap();
    assert_eq!(seen[ymm.clone()], m[ymm], "the child sees the restored YMM");
    std::fs::remove_dir_all(&dir).unwrap();

    // No such process: an I/O-class error.
    let (code, _, _) = xstate(&["capture", "--pid", "999999999"]);
    assert_eq!(code, 2);
}

/// `capture -o -` puts only the record on stdout; the summary (text or JSON) goes to stderr.
#[test]
fn capture_to_stdout_writes_only_the_record() {
    let host = Host::probe().unwrap();
    let img = crafted_image(host.layout(), host.xcr0(), &mut Rng::new(5));
    let child = tracee::spawn_stopped(&host, &img).unwrap();
    let pid = child.pid().to_string();
    let Ok(want) = xstate_hw::ptrace::get_xstate(child.pid()) else {
        skip!("PTRACE_GETREGSET refused here: capture -o - not checked");
        return;
    };
    for json in [false, true] {
        let mut args = vec!["capture", "--pid", &pid, "-o", "-"];
        if json {
            args.push("--json");
        }
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_xstate")).args(&args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {err}");
        assert_eq!(out.stdout.len(), want.len(), "{args:?}: stdout is exactly the kernel's record");
        assert!(out.stdout == want, "{args:?}: stdout is exactly the kernel's record");
        assert!(err.contains(&format!("process {pid}")) || err.contains(&format!("\"pid\": {pid}")), "{err}");
    }
}

/// `capture --format xen-hvm|xen-pv` records the vCPU `--vcpu N` names (as `convert --vcpu`);
/// `--vcpu` for a format without one is a usage error; an unwritable `--format` is named.
#[test]
fn capture_takes_the_vcpu_a_xen_record_needs_and_names_unwritable_formats() {
    let host = Host::probe().unwrap();
    let img = crafted_image(host.layout(), host.xcr0(), &mut Rng::new(3));
    let child = tracee::spawn_stopped(&host, &img).unwrap();
    let pid = child.pid().to_string();
    if xstate_hw::ptrace::get_xstate(child.pid()).is_err() {
        skip!("PTRACE_GETREGSET refused here: capture --vcpu not checked");
        return;
    }
    let dir = tmpdir("capture-vcpu");
    let out = dir.join("rec");
    for (fmt, at) in [("xen-hvm", 2..4), ("xen-pv", 8..12)] {
        let (code, _, err) = xstate(&["capture", "--pid", &pid, "--format", fmt, "-o", s(&out)]);
        assert_eq!(code, 1, "{fmt} without a vCPU: {err}");
        assert!(err.contains("--vcpu"), "{err}");
        let (code, _, err) = xstate(&["capture", "--pid", &pid, "--format", fmt, "--vcpu", "3", "-o", s(&out)]);
        assert_eq!(code, 0, "{fmt} --vcpu 3: {err}");
        let b = std::fs::read(&out).unwrap();
        assert_eq!(b[at.start], 3, "{fmt}: the vCPU recorded");
        assert!(b[at.start + 1..at.end].iter().all(|&x| x == 0), "{fmt}: the vCPU recorded");
        let (code, _, err) = xstate(&["inspect", s(&out), "--format", fmt]);
        assert_eq!(code, 0, "{fmt}: {err}");
    }
    let (code, _, err) = xstate(&["capture", "--pid", &pid, "--format", "nt-xstate", "--vcpu", "3", "-o", s(&out)]);
    assert_eq!(code, 2, "--vcpu without effect: {err}");
    assert!(err.contains("--vcpu"), "{err}");
    for fmt in ["auto", "elf-core", "criu-core", "qemu", "firecracker"] {
        let (code, _, err) = xstate(&["capture", "--pid", &pid, "--format", fmt, "-o", s(&out)]);
        assert_eq!(code, 2, "{fmt}: {err}");
        assert!(err.contains(&format!("--format {fmt} ")) && !err.contains("Some("), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
