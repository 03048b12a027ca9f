//! `xstate criu`: the fixture checkpoint (CRIU 4.1.1 on Zen 4) read register by register, and
//! the real tool's round trip here: a live process holding known AVX-512 state (AVX where the
//! CPU lacks it) is dumped by CRIU, one register is edited with xstate, CRIU restores it, and
//! the process sees the edit and nothing else changed; a checkpoint whose cpuinfo.img says other
//! XSAVE sizes is refused by CRIU, and `xstate convert CK --to-cpuid host` makes the copy CRIU
//! restores. CRIU is `$XSTATE_CRIU`, `criu` on the
//! PATH (4.x), or the build of `.ci/setup-criu`; without it, root or a C compiler the live test
//! skips with a reason.

#[macro_use]
mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{json, ok, s, tmpdir, xstate};
use serde_json::Value;
use xstate::record::criu::cpuinfo::{CpuInfo, patch};

fn lane_of(v: &Value, name: &str, lane: usize) -> u64 {
    let r = &v["registers"][name];
    assert!(r.is_object(), "no {name}");
    let hex = r["hex"].as_str().unwrap().trim_start_matches("0x");
    let hex = format!("{hex:0>width$}", width = hex.len().div_ceil(16) * 16);
    let end = hex.len() - 16 * lane;
    u64::from_str_radix(&hex[end - 16..end], 16).unwrap()
}

#[test]
fn fixture_checkpoint_every_register_and_the_quirk() {
    let fixtures = common::shared_root().join("fixtures/criu");
    if !fixtures.is_dir() {
        skip!("../shared/fixtures/criu not found: the CRIU fixture is not checked");
        return;
    }
    let zen4 = common::shared_root().join("fixtures/criu");
    let v = json(&["criu", s(&zen4), "--regs", "--json", "--cpuid", "host"]);
    assert_eq!(v["cpuinfo"]["xfeatures_mask"], "0xe5");
    assert_eq!(v["cpuinfo"]["xsave_size"], 2432);
    assert!(v["quirk"].as_str().unwrap().contains("XFEATURE_HDC"), "{}", v["quirk"]);
    let t = &v["threads"][0];
    assert_eq!(t["tid"], 5922);
    assert_eq!(t["xstate_bv"], "0xe7");
    for i in 0..32u64 {
        for j in 0..8 {
            assert_eq!(lane_of(t, &format!("zmm{i}"), j), 0x5a00_0000_0000_0000 | i << 8 | j as u64, "zmm{i}.{j}");
        }
    }
    for i in 0..8u64 {
        assert_eq!(lane_of(t, &format!("k{i}"), 0), 0xc0de_0000_0000_0000 | (0x11 * (i + 1)), "k{i}");
    }
    assert_eq!(lane_of(t, "mxcsr", 0), 0x9fc0);
    // The round trip through xstate leaves the file as it was.
    let d = tmpdir("criu-fixture");
    let img = d.join("t.img");
    let core = d.join("core-5922.img");
    std::fs::copy(zen4.join("core-5922.img"), &core).unwrap();
    ok(&["criu", s(&core), "--extract", "-o", s(&img)]);
    ok(&["criu", s(&core), "--patch", s(&img)]);
    assert_eq!(std::fs::read(&core).unwrap(), std::fs::read(zen4.join("core-5922.img")).unwrap());
    // A verdict for this host: exit 1 exactly when CRIU's rules or xstate's refuse.
    let (code, out, err) = xstate(&["criu", s(&zen4), "--to-cpuid", "host", "--json"]);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(code == 0, v["to_cpuid"]["compatible"] == true, "{err}");
    // compat takes the checkpoint as --from or --image: the same verdict.
    let (c2, out2, _) = xstate(&["compat", "--from", "host", "--image", s(&zen4), "--to", "host", "--json"]);
    let v2: Value = serde_json::from_str(&out2).unwrap();
    assert_eq!((c2, &v2["to_cpuid"]), (code, &v["to_cpuid"]));
    // convert CHECKPOINT --to-cpuid host: a copy CRIU's rules pass here, or a refusal.
    let moved = d.join("moved");
    let (c3, _, err3) = xstate(&["convert", s(&zen4), "--to", "standard", "--to-cpuid", "host", "-o", s(&moved)]);
    if c3 == 0 {
        let v3 = json(&["criu", s(&moved), "--to-cpuid", "host", "--json"]);
        assert_eq!(v3["to_cpuid"]["criu_refusals"], serde_json::json!([]), "{v3}");
        assert_eq!(
            std::fs::read(moved.join("core-5922.img")).unwrap(),
            std::fs::read(zen4.join("core-5922.img")).unwrap()
        );
    } else {
        assert_eq!((c3, err3.lines().count()), (1, 1), "{err3}");
    }
    // Bad input: one line, exit 1.
    let bad = d.join("core-1.img");
    std::fs::write(&bad, &std::fs::read(zen4.join("core-5922.img")).unwrap()[..300]).unwrap();
    let (code, _, err) = xstate(&["criu", s(&bad)]);
    assert_eq!((code, err.lines().count()), (1, 1), "{err}");
    assert!(err.contains("criu-core"), "{err}");
}

/// CRIU 4.x to run, if any.
fn criu() -> Option<PathBuf> {
    let candidates = [
        std::env::var_os("XSTATE_CRIU").map(PathBuf::from),
        Some(PathBuf::from("criu")),
        Some(PathBuf::from("/opt/xstate-criu/criu-4.1.1/criu/criu")),
    ];
    candidates.into_iter().flatten().find(|p| {
        Command::new(p).arg("--version").output().is_ok_and(|o| {
            let v = String::from_utf8_lossy(&o.stdout).into_owned();
            o.status.success() && v.lines().any(|l| l.starts_with("Version: ") && !l.starts_with("Version: 3."))
        })
    })
}

fn run(cmd: &mut Command) -> (bool, String) {
    let o = cmd.output().expect("run");
    (o.status.success(), format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)))
}

/// Waits until the output file has `n` lines matching `pred` after `from` bytes.
fn wait_for(out: &Path, from: usize, pred: impl Fn(&str) -> bool, n: usize) -> String {
    let t0 = Instant::now();
    loop {
        let text = std::fs::read_to_string(out).unwrap_or_default();
        let tail = text.get(from..).unwrap_or("").to_string();
        if tail.lines().filter(|l| pred(l)).count() >= n {
            return tail;
        }
        assert!(t0.elapsed() < Duration::from_secs(20), "timed out; output so far:\n{text}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

struct Kill(u32);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-9", &self.0.to_string()]).status();
    }
}

#[test]
fn criu_dump_edit_restore_the_process_sees_the_edit() {
    let Some(criu) = criu() else {
        skip!("no CRIU 4.x (set XSTATE_CRIU or run .ci/setup-criu): the CRIU round trip is not checked");
        return;
    };
    let root = Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0\n"));
    if !root {
        skip!("not root: criu dump/restore need it; the CRIU round trip is not checked");
        return;
    }
    if !common::have("cc") || !common::have("setsid") {
        skip!("no cc or setsid: the CRIU round trip is not checked");
        return;
    }
    let d = tmpdir("criu-live");
    let hold = d.join("hold");
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/criu/hold.c");
    let (built, log) = run(Command::new("cc").args(["-O1", "-mavx512f", "-mavx512bw", "-o", s(&hold), s(&src)]));
    assert!(built, "{log}");
    let out = d.join("hold.out");
    let file = std::fs::File::create(&out).unwrap();
    let mut child: Child = Command::new("setsid")
        .arg(&hold)
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .unwrap();
    let pid = child.id();
    let _guard = Kill(pid);
    let first = wait_for(&out, 0, |l| l.starts_with("tick"), 1);
    assert!(first.contains("tick 1 ok"), "{first}");
    let avx512 = first.starts_with("ready avx512");
    let ck = d.join("ck");
    std::fs::create_dir_all(&ck).unwrap();
    let (dumped, log) = run(Command::new(&criu).args(["dump", "-t", &pid.to_string(), "-D", s(&ck), "-o", "dump.log"]));
    assert!(dumped, "criu dump: {log}\n{}", std::fs::read_to_string(ck.join("dump.log")).unwrap_or_default());
    let _ = child.wait();
    let (info, log) = run(Command::new(&criu).args(["cpuinfo", "dump", "-D", s(&ck)]));
    assert!(info, "criu cpuinfo dump: {log}");

    // Read: every register of the known state, on this host's layout.
    let v = json(&["criu", s(&ck), "--regs", "--json"]);
    let t = &v["threads"][0];
    assert_eq!(t["tid"], pid);
    let (name, lane, count) = if avx512 { ("zmm17", 3, 32) } else { ("ymm5", 2, 16) };
    for i in 0..count {
        let r = if avx512 { format!("zmm{i}") } else { format!("ymm{i}") };
        for j in 0..(if avx512 { 8 } else { 4 }) {
            assert_eq!(lane_of(t, &r, j), 0x5a00_0000_0000_0000 | (i as u64) << 8 | j as u64, "{r}.{j}");
        }
    }
    if avx512 {
        for i in 0..8u64 {
            assert_eq!(lane_of(t, &format!("k{i}"), 0), 0xc0de_0000_0000_0000 | (0x11 * (i + 1)), "k{i}");
        }
    }
    // CRIU's own cpuinfo check and xstate's reading of its rules agree on this host.
    let (criu_ok, log) = run(Command::new(&criu).args(["cpuinfo", "check", "-D", s(&ck), "--cpu-cap=fpu"]));
    let (code, stdout, _) = xstate(&["criu", s(&ck), "--to-cpuid", "host", "--json"]);
    let verdict: Value = serde_json::from_str(&stdout).unwrap();
    let xs_ok = verdict["to_cpuid"]["criu_refusals"].as_array().unwrap().is_empty();
    assert_eq!(criu_ok, xs_ok, "criu cpuinfo check: {log}; xstate: {verdict}");
    assert_eq!(code, 0, "{verdict}");

    // Edit one register with xstate: the lane's offset from this host's layout.
    let img = d.join("t.img");
    ok(&["criu", s(&ck), "--extract", "-o", s(&img)]);
    let layout = json(&["layout", "--json"]);
    let comp = if avx512 { 7 } else { 2 };
    let base = layout["components"].as_array().unwrap().iter().find(|c| c["index"] == comp).unwrap()["offset"]
        .as_u64()
        .unwrap() as usize;
    // Hi16_ZMM holds zmm16..31 (64 bytes each); the AVX component ymm0..15's upper halves.
    let at = if avx512 { base + 64 + 8 * lane } else { base + 16 * 5 + 8 * (lane - 2) };
    let edit = 0x1234_5678_9abc_def0u64;
    let mut bytes = std::fs::read(&img).unwrap();
    bytes[at..at + 8].copy_from_slice(&edit.to_le_bytes());
    std::fs::write(&img, &bytes).unwrap();
    ok(&["criu", s(&ck), "--patch", s(&img)]);
    let v = json(&["criu", s(&ck), "--regs", "--json"]);
    assert_eq!(lane_of(&v["threads"][0], name, lane), edit, "the core image holds the edit");

    // As if dumped on a host whose XSAVE sizes differ (64 bytes more): CRIU refuses to restore
    // here; `xstate convert CK --to-cpuid host` makes the copy it restores.
    let info = std::fs::read(ck.join("cpuinfo.img")).unwrap();
    let mut a = CpuInfo::parse(&info).unwrap().x86[0].clone();
    a.xsave_size = a.xsave_size.map(|x| x + 64);
    a.xsave_size_max = a.xsave_size_max.map(|x| x + 64);
    std::fs::write(ck.join("cpuinfo.img"), patch(&info, &a).unwrap()).unwrap();
    let (restored, log) =
        run(Command::new(&criu).args(["restore", "-D", s(&ck), "-d", "--cpu-cap=fpu", "-o", "refused.log"]));
    let refused = std::fs::read_to_string(ck.join("refused.log")).unwrap_or_default();
    assert!(
        !restored && refused.contains("xsave size mismatch"),
        "criu restore was expected to refuse: {log}\n{refused}"
    );
    let (code, _, err) = xstate(&["compat", "--from", s(&ck), "--to", "host"]);
    assert!(code == 1 && err.contains("xsave size mismatch"), "xstate compat names CRIU's refusal: {err}");
    let ck2 = d.join("ck2");
    ok(&["convert", s(&ck), "--to", "standard", "--to-cpuid", "host", "-o", s(&ck2)]);
    ok(&["compat", "--from", s(&ck2), "--to", "host"]);

    // Restore: the process goes on and sees exactly the edit.
    let before = std::fs::read_to_string(&out).unwrap().len();
    let (restored, log) =
        run(Command::new(&criu).args(["restore", "-D", s(&ck2), "-d", "--cpu-cap=fpu", "-o", "restore.log"]));
    assert!(restored, "criu restore: {log}\n{}", std::fs::read_to_string(ck2.join("restore.log")).unwrap_or_default());
    let tail = wait_for(&out, before, |l| l.starts_with("tick"), 2);
    let diffs: Vec<&str> = tail.lines().filter(|l| l.starts_with("diff")).collect();
    let want = format!("diff {name} lane {lane} {edit:#018x}");
    assert!(!diffs.is_empty() && diffs.iter().all(|l| *l == want), "after restore:\n{tail}");
    assert!(tail.lines().any(|l| l.starts_with("tick") && l.ends_with("changed")), "{tail}");
}
