//! `xstate capture` and `xstate restore` on a child holding a known state: capture shows it,
//! restore of a modified image changes it, and the child (which saves its own registers after
//! being continued) reports the change back.

use std::path::Path;
use std::process::Command;

use xstate::Component;
use xstate_hw::Host;
use xstate_hw::selfcheck::{Rng, crafted_image};
use xstate_hw::tracee::{self, Ending};

fn xstate(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_xstate")).args(args).output().expect("run xstate");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn capture_and_restore_a_live_process() {
    let host = Host::probe().unwrap();
    let l = host.layout().clone();
    let xcr0 = host.xcr0();
    let img = crafted_image(&l, xcr0, &mut Rng::new(11));
    let mut child = tracee::spawn(&host, &img, Ending::StopThenReport, None).unwrap();
    child.wait_stopped().unwrap();
    let pid = child.pid().to_string();
    let dir = std::env::temp_dir().join(format!("xstate-capture-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cap, port, modi) = (dir.join("cap.bin"), dir.join("cap.xstatepr"), dir.join("mod.bin"));

    let (code, out, err) = xstate(&["capture", "--pid", &pid, "-o", p(&cap)]);
    if code == 2 && err.contains("PTRACE") {
        println!("SKIP: ptrace unavailable: {err}");
        return;
    }
    assert_eq!(code, 0, "{out}{err}");
    let got = std::fs::read(&cap).unwrap();
    let ymm = l.standard_range(Component::AVX).unwrap();
    for c in xcr0.iter().filter(|c| !c.is_legacy() && *c != Component::TILECFG) {
        let r = l.standard_range(c).unwrap();
        assert_eq!(got[r.clone()], img[r], "captured {c}");
    }
    let (code, _, err) = xstate(&["capture", "--pid", &pid, "--format", "portable", "-o", p(&port)]);
    assert_eq!(code, 0, "{err}");

    // A modified image: every YMM upper half flipped.
    let mut m = got.clone();
    for b in &mut m[ymm.clone()] {
        *b ^= 0xA5;
    }
    std::fs::write(&modi, &m).unwrap();
    let (code, out, err) = xstate(&["restore", "--pid", &pid, p(&modi), "--format", "nt-xstate"]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, _, _) = xstate(&["capture", "--pid", &pid, "-o", p(&cap)]);
    assert_eq!(code, 0);
    assert_eq!(std::fs::read(&cap).unwrap()[ymm.clone()], m[ymm.clone()], "ptrace sees the restored state");

    // The portable record (auto-detected) brings the original back.
    let (code, out, err) = xstate(&["restore", "--pid", &pid, p(&port)]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, _, _) = xstate(&["capture", "--pid", &pid, "-o", p(&cap)]);
    assert_eq!(code, 0);
    assert_eq!(std::fs::read(&cap).unwrap()[ymm.clone()], img[ymm.clone()], "portable record restored");

    // Invalid images are refused before the kernel sees them, naming the rule.
    let mut bad = m.clone();
    bad[520] = 1;
    std::fs::write(&modi, &bad).unwrap();
    let (code, _, err) = xstate(&["restore", "--pid", &pid, p(&modi), "--format", "nt-xstate"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("XCOMP_BV") || err.contains("520"), "{err}");
    assert_eq!(err.trim().lines().count(), 1);

    // The modified state once more, then the child reports what it sees when continued.
    std::fs::write(&modi, &m).unwrap();
    let (code, _, err) = xstate(&["restore", "--pid", &pid, p(&modi), "--format", "nt-xstate"]);
    assert_eq!(code, 0, "{err}");
    let seen = child.resume_and_report().unwrap();
    assert_eq!(seen[ymm.clone()], m[ymm], "the child sees the restored YMM");
    std::fs::remove_dir_all(&dir).unwrap();

    // No such process: an I/O-class error.
    let (code, _, _) = xstate(&["capture", "--pid", "999999999"]);
    assert_eq!(code, 2);
}
