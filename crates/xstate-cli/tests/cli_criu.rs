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
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{json, ok, s, tmpdir, xstate};
use serde_json::Value;
use xstate::record::criu::cpuinfo::{CpuInfo, patch};

/// A checkpoint holding state the reading CPU lacks (the Zen 4 fixture read on a Zen 3, as
/// `--cpuid` defaults to this host) still gets its verdict for a CPU that has the state: CRIU's
/// core names each component's field, so the verdict needs no layout of the reading CPU; the
/// listing says why it has no image there. A listing alone is refused, naming the bits.
#[test]
fn a_checkpoint_of_state_the_reading_cpu_lacks_still_gets_its_verdict() {
    let fixtures = common::shared_root().join("fixtures/criu");
    let dumps = common::shared_root().join("cpuid/dumps/AuthenticAMD");
    let (milan, genoa) = (
        dumps.join("AuthenticAMD0A00F11_K19_Milan_02_CPUID.txt"),
        dumps.join("AuthenticAMD0A10F11_K19_Genoa_01_CPUID.txt"),
    );
    if !fixtures.is_dir() || !milan.is_file() || !genoa.is_file() {
        skip!("../shared/fixtures/criu or the Milan/Genoa dumps not found: not checked");
        return;
    }
    let verdict = |args: &[&str]| {
        let (code, out, err) = xstate(args);
        let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}{err}"));
        (code, v)
    };
    // Genoa holds every component in use at CRIU's sizes; CRIU itself refuses only its size
    // rule (Genoa's PKRU makes the maximum 2440, the dumping guest had 2432).
    let (code, v) = verdict(&["criu", s(&fixtures), "--cpuid", s(&milan), "--to-cpuid", s(&genoa), "--json"]);
    assert_eq!((code, &v["to_cpuid"]["xstate"]), (1, &serde_json::json!([])), "{v}");
    assert_eq!(v["to_cpuid"]["criu_refusals"].as_array().unwrap().len(), 1, "{v}");
    assert!(v["to_cpuid"]["criu_refusals"][0].as_str().unwrap().contains("max size"), "{v}");
    let t = &v["threads"][0];
    assert_eq!((t["xstate_bv"].as_str(), t["size"].as_u64()), (Some("0xe7"), None), "{t}");
    assert!(t["image_error"].as_str().unwrap().contains("0xe0"), "{t}");
    for args in [
        &["criu", s(&fixtures), "--cpuid", s(&milan), "--to-cpuid", s(&milan), "--json"][..],
        &["compat", "--from", s(&milan), "--image", s(&fixtures), "--to", s(&milan), "--json"],
    ] {
        let (code, v) = verdict(args);
        assert_eq!((code, &v["to_cpuid"]["compatible"]), (1, &Value::Bool(false)), "{args:?}: {v}");
        let xs = v["to_cpuid"]["xstate"].to_string();
        assert!(xs.contains("zmm_hi256") && xs.contains("state lost"), "{xs}");
    }
    let (code, v) = verdict(&["compat", "--from", s(&milan), "--image", s(&fixtures), "--to", s(&genoa), "--json"]);
    assert_eq!((code, &v["to_cpuid"]["xstate"]), (1, &serde_json::json!([])), "{v}");
    let (code, _, err) = xstate(&["criu", s(&fixtures), "--cpuid", s(&milan)]);
    assert_eq!((code, err.trim().lines().count()), (1, 1), "{err}");
    assert!(err.contains("0xe0") && err.contains("--cpuid"), "{err}");
}

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
    // Read with the CPU it was dumped on (a Zen 4: the fixtures' README), not this host's.
    let dumps = common::shared_root().join("cpuid/dumps");
    let genoa = dumps.join("AuthenticAMD/AuthenticAMD0A10F11_K19_Genoa_01_CPUID.txt");
    let v = json(&["criu", s(&zen4), "--regs", "--json", "--cpuid", s(&genoa)]);
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
    ok(&["criu", s(&core), "--cpuid", s(&genoa), "--extract", "-o", s(&img)]);
    ok(&["criu", s(&core), "--cpuid", s(&genoa), "--patch", s(&img)]);
    assert_eq!(std::fs::read(&core).unwrap(), std::fs::read(zen4.join("core-5922.img")).unwrap());
    // An image laid out for another CPU is refused, never read with this layout's offsets:
    // Sapphire Rapids' 2688-byte AVX-512 image is no standard size on Zen 4 (2432 for XCR0
    // 0xe7), and the checkpoint keeps its bytes.
    let spr = dumps.join("GenuineIntel/GenuineIntel00806F8_SapphireRapids_05_CPUID.txt");
    let spr_img = d.join("spr.img");
    ok(&["criu", s(&core), "--cpuid", s(&spr), "--extract", "-o", s(&spr_img)]);
    assert_eq!(std::fs::metadata(&spr_img).unwrap().len(), 2688);
    let (code, _, err) = xstate(&["criu", s(&core), "--cpuid", s(&genoa), "--patch", s(&spr_img)]);
    assert_eq!((code, err.lines().count()), (1, 1), "{err}");
    assert!(err.contains("spr.img") && err.contains("2688"), "{err}");
    assert_eq!(std::fs::read(&core).unwrap(), std::fs::read(zen4.join("core-5922.img")).unwrap());
    ok(&["criu", s(&core), "--cpuid", s(&genoa), "--patch", s(&img)]);
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
    wait_until(out, from, |tail| tail.lines().filter(|l| pred(l)).count() >= n)
}

/// Waits until the output file's text after `from` bytes (whole lines) satisfies `done`.
fn wait_until(out: &Path, from: usize, done: impl Fn(&str) -> bool) -> String {
    let t0 = Instant::now();
    loop {
        let text = std::fs::read_to_string(out).unwrap_or_default();
        let mut tail = text.get(from..).unwrap_or("").to_string();
        tail.truncate(tail.rfind('\n').map_or(0, |n| n + 1));
        if done(&tail) {
            return tail;
        }
        assert!(t0.elapsed() < Duration::from_secs(20), "timed out; output so far:\n{text}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

struct Kill(u32);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-9", &self.0.to_string()]).stderr(Stdio::null()).status();
    }
}

/// The live tests take turns: one CRIU dump or restore at a time, and one held process.
static LIVE: Mutex<()> = Mutex::new(());

/// CRIU, if the live round trip can run here (CRIU 4.x, root, cc, setsid); else prints why
/// `what` is not checked.
fn live(what: &str) -> Option<PathBuf> {
    let Some(criu) = criu() else {
        skip!("no CRIU 4.x (set XSTATE_CRIU or run .ci/setup-criu): {what} is not checked");
        return None;
    };
    let root = Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0\n"));
    if !root {
        skip!("not root: criu dump/restore need it; {what} is not checked");
        return None;
    }
    if !common::have("cc") || !common::have("setsid") {
        skip!("no cc or setsid: {what} is not checked");
        return None;
    }
    Some(criu)
}

/// Builds `tests/criu/<name>.c` into `dir` and starts it in its own session (so CRIU can dump
/// it alone), stdout and stderr to `dir/<name>.out`.
fn start(dir: &Path, name: &str, cflags: &[&str]) -> (Child, PathBuf) {
    let bin = dir.join(name);
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("tests/criu/{name}.c"));
    let (built, log) =
        run(Command::new("cc").args(["-O1", "-mavx512f", "-mavx512bw"]).args(cflags).args(["-o", s(&bin), s(&src)]));
    assert!(built, "{log}");
    let out = dir.join(format!("{name}.out"));
    let file = std::fs::File::create(&out).unwrap();
    let child = Command::new("setsid")
        .arg(&bin)
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .unwrap();
    (child, out)
}

/// `criu dump` of `child` (which the dump ends) into `DIR/ck`, then `criu cpuinfo dump` there;
/// the checkpoint directory.
fn dump(criu: &Path, child: &mut Child, dir: &Path) -> PathBuf {
    let ck = dir.join("ck");
    std::fs::create_dir_all(&ck).unwrap();
    let pid = child.id().to_string();
    let (dumped, log) = run(Command::new(criu).args(["dump", "-t", &pid, "-D", s(&ck), "-o", "dump.log"]));
    assert!(dumped, "criu dump: {log}\n{}", std::fs::read_to_string(ck.join("dump.log")).unwrap_or_default());
    let _ = child.wait();
    let (info, log) = run(Command::new(criu).args(["cpuinfo", "dump", "-D", s(&ck)]));
    assert!(info, "criu cpuinfo dump: {log}");
    ck
}

#[test]
fn criu_dump_edit_restore_the_process_sees_the_edit() {
    let Some(criu) = live("the CRIU round trip") else { return };
    let _turn = LIVE.lock().unwrap_or_else(|e| e.into_inner());
    let d = tmpdir("criu-live");
    let (mut child, out) = start(&d, "hold", &[]);
    let pid = child.id();
    let _guard = Kill(pid);
    let first = wait_for(&out, 0, |l| l.starts_with("tick"), 1);
    assert!(first.contains("tick 1 ok"), "{first}");
    let avx512 = first.starts_with("ready avx512");
    let ck = dump(&criu, &mut child, &d);

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

/// Threads of `hold_threads.c` and the state thread `t` (1-based, 1 = the main thread) holds.
const THREADS: u64 = 3;

fn held_zmm(t: u64, i: u64, j: u64) -> u64 {
    0x5a00_0000_0000_0000 | t << 40 | i << 8 | j
}

fn held_k(t: u64, i: u64) -> u64 {
    0xc0de_0000_0000_0000 | t << 40 | (0x11 * (i + 1))
}

/// The `tick T N ...` lines of thread `t` in `text`.
fn ticks(text: &str, t: u64) -> Vec<&str> {
    let head = format!("tick {t} ");
    text.lines().filter(|l| l.starts_with(&head)).collect()
}

/// Each thread of a multi-threaded process holds its own state; CRIU dumps them all, xstate
/// reads every thread's registers from its own core image, `--extract`/`--patch` refuse to pick
/// a thread and take `--thread TID`; one lane of thread 2 is edited, CRIU restores the process
/// and thread 2 sees exactly that lane changed while threads 1 and 3 see no change.
#[test]
fn criu_threads_each_hold_their_own_state_and_one_is_edited() {
    let Some(criu) = live("the multi-threaded CRIU round trip") else { return };
    let _turn = LIVE.lock().unwrap_or_else(|e| e.into_inner());
    let t0 = Instant::now();
    let d = tmpdir("criu-threads");
    let (mut child, out) = start(&d, "hold_threads", &["-pthread"]);
    let pid = child.id();
    let _guard = Kill(pid);
    let first = wait_until(&out, 0, |t| (1..=THREADS).all(|k| !ticks(t, k).is_empty()));
    let avx512 = first.starts_with("ready avx512");
    assert!(
        first.starts_with(&format!("ready {} threads {THREADS}\n", if avx512 { "avx512" } else { "avx" })),
        "{first}"
    );
    for k in 1..=THREADS {
        assert_eq!(ticks(&first, k)[0], format!("tick {k} 1 ok"), "{first}");
    }
    // The real thread ids, as each thread printed gettid(): thread 1 is the main thread.
    let tids: Vec<u64> = (1..=THREADS)
        .map(|k| {
            let head = format!("thread {k} tid ");
            let line = first.lines().find(|l| l.starts_with(&head)).unwrap_or_else(|| panic!("{first}"));
            line[head.len()..].parse().unwrap()
        })
        .collect();
    assert_eq!(tids[0], u64::from(pid), "{first}");
    // Dump half way through a sleep (200 ms each), where every thread holds its state.
    std::thread::sleep(Duration::from_millis(100));
    let ck = dump(&criu, &mut child, &d);

    // Read: every thread, each with its own state (not another thread's).
    let (count, lanes) = if avx512 { (32, 8) } else { (16, 4) };
    let reg = |i: u64| if avx512 { format!("zmm{i}") } else { format!("ymm{i}") };
    let check = |v: &Value, edited: Option<(u64, u64, u64, u64)>| {
        let list = v["threads"].as_array().unwrap();
        let listed: Vec<u64> = list.iter().map(|t| t["tid"].as_u64().unwrap()).collect();
        let mut want = tids.clone();
        want.sort();
        assert_eq!(listed, want, "the threads listed");
        for (k, tid) in (1..=THREADS).zip(&tids) {
            let t = list.iter().find(|t| t["tid"] == *tid).unwrap();
            assert_eq!(t["file"].as_str().unwrap(), s(&ck.join(format!("core-{tid}.img"))));
            for i in 0..count {
                for j in 0..lanes {
                    let want = match edited {
                        Some((et, ei, ej, value)) if (et, ei, ej) == (k, i, j) => value,
                        _ => held_zmm(k, i, j),
                    };
                    assert_eq!(lane_of(t, &reg(i), j as usize), want, "thread {k} (tid {tid}) {}.{j}", reg(i));
                }
            }
            for i in (0..8).filter(|_| avx512) {
                assert_eq!(lane_of(t, &format!("k{i}"), 0), held_k(k, i), "thread {k} (tid {tid}) k{i}");
            }
        }
    };
    let v = json(&["criu", s(&ck), "--regs", "--json"]);
    check(&v, None);
    let text = ok(&["criu", s(&ck)]);
    assert!(text.lines().next().unwrap().contains(&format!("{THREADS} thread(s)")), "{text}");
    for tid in &tids {
        assert_eq!(text.lines().filter(|l| l.starts_with(&format!("thread {tid}: "))).count(), 1, "{text}");
    }

    // Choosing a thread: never silently; --thread without --extract/--patch is a usage error.
    let cores: Vec<Vec<u8>> = tids.iter().map(|t| std::fs::read(ck.join(format!("core-{t}.img"))).unwrap()).collect();
    let img = d.join("t.img");
    let names_every_tid = |err: &str| tids.iter().all(|t| err.contains(&t.to_string()));
    let (code, _, err) = xstate(&["criu", s(&ck), "--extract", "-o", s(&img)]);
    assert!(code == 2 && names_every_tid(&err) && !img.exists(), "--extract without --thread: {code} {err}");
    std::fs::write(&img, [0u8; 576]).unwrap();
    let (code, _, err) = xstate(&["criu", s(&ck), "--patch", s(&img)]);
    assert!(code == 2 && names_every_tid(&err), "--patch without --thread: {code} {err}");
    let (code, _, err) = xstate(&["criu", s(&ck), "--thread", "1", "--extract", "-o", s(&img)]);
    assert!(code == 2 && names_every_tid(&err), "--thread of no thread: {code} {err}");
    let (code, _, err) = xstate(&["criu", s(&ck), "--thread", &tids[1].to_string(), "--regs"]);
    assert_eq!(code, 2, "--thread without --extract/--patch: {err}");
    let (code, _, err) = xstate(&["criu", s(&ck), "-o", s(&d.join("listing"))]);
    assert_eq!(code, 2, "-o without --extract/--patch: {err}");
    let (code, _, err) = xstate(&["criu", s(&ck), "--thread", &tids[1].to_string(), "--extract", "--json", "-o", "-"]);
    assert_eq!(code, 2, "--json with --extract: {err}");
    for (t, c) in tids.iter().zip(&cores) {
        assert!(std::fs::read(ck.join(format!("core-{t}.img"))).unwrap() == *c, "core-{t}.img changed");
    }

    // Each thread's image is its own: extract thread 2, edit one lane at this host's offset.
    let tid2 = tids[1].to_string();
    ok(&["criu", s(&ck), "--thread", &tid2, "--extract", "-o", s(&img)]);
    let alone = d.join("alone.img");
    ok(&["criu", s(&ck.join(format!("core-{tid2}.img"))), "--extract", "-o", s(&alone)]);
    assert!(
        std::fs::read(&alone).unwrap() == std::fs::read(&img).unwrap(),
        "core-{tid2}.img alone gives the same image"
    );
    let layout = json(&["layout", "--json"]);
    let comp = if avx512 { 7 } else { 2 };
    let base = layout["components"].as_array().unwrap().iter().find(|c| c["index"] == comp).unwrap()["offset"]
        .as_u64()
        .unwrap() as usize;
    let (i, lane) = if avx512 { (17, 3) } else { (5, 2) };
    // Hi16_ZMM holds zmm16..31 (64 bytes each); the AVX component ymm0..15's upper halves.
    let at = if avx512 { base + 64 * (i - 16) + 8 * lane } else { base + 16 * i + 8 * (lane - 2) };
    let mut bytes = std::fs::read(&img).unwrap();
    assert_eq!(bytes[at..at + 8], held_zmm(2, i as u64, lane as u64).to_le_bytes(), "thread 2's image");
    let edit = 0x1234_5678_9abc_def0u64;
    bytes[at..at + 8].copy_from_slice(&edit.to_le_bytes());
    std::fs::write(&img, &bytes).unwrap();
    ok(&["criu", s(&ck), "--thread", &tid2, "--patch", s(&img)]);
    for (k, (t, c)) in tids.iter().zip(&cores).enumerate() {
        let now = std::fs::read(ck.join(format!("core-{t}.img"))).unwrap();
        assert_eq!(now == *c, k != 1, "core-{t}.img changed exactly when it is thread 2's");
    }
    let v = json(&["criu", s(&ck), "--regs", "--json"]);
    check(&v, Some((2, i as u64, lane as u64, edit)));

    // Restore: thread 2 sees exactly the edit, threads 1 and 3 no change.
    let before = std::fs::read_to_string(&out).unwrap().len();
    let (restored, log) =
        run(Command::new(&criu).args(["restore", "-D", s(&ck), "-d", "--cpu-cap=fpu", "-o", "restore.log"]));
    assert!(restored, "criu restore: {log}\n{}", std::fs::read_to_string(ck.join("restore.log")).unwrap_or_default());
    let tail = wait_until(&out, before, |t| (1..=THREADS).all(|k| ticks(t, k).len() >= 2));
    for k in 1..=THREADS {
        let diffs: Vec<&str> = tail.lines().filter(|l| l.starts_with(&format!("diff {k} "))).collect();
        let ticks = ticks(&tail, k);
        if k == 2 {
            let want = format!("diff 2 {} lane {lane} {edit:#018x}", reg(i as u64));
            assert!(diffs.len() >= 2 && diffs.iter().all(|l| *l == want), "thread 2 after restore:\n{tail}");
            assert!(ticks.iter().all(|l| l.ends_with(" changed")), "thread 2 after restore:\n{tail}");
        } else {
            assert!(diffs.is_empty(), "thread {k} after restore:\n{tail}");
            assert!(ticks.iter().all(|l| l.ends_with(" ok")), "thread {k} after restore:\n{tail}");
        }
    }
    common::note(&format!(
        "criu threads: {THREADS} threads ({}) dumped, read, thread 2 edited and restored in {:.1} s",
        if avx512 { "zmm0-31, k0-7" } else { "ymm0-15" },
        t0.elapsed().as_secs_f64()
    ));
}

/// `convert CHECKPOINT --to-cpuid B -o OUTDIR` writes a whole new checkpoint or nothing: OUTDIR
/// must not hold files already (a stray core-*.img would be restored as one more thread), `-o
/// -` cannot be a directory, the copy appears at once (written beside it, then renamed), and
/// flags that mean nothing for a checkpoint are usage errors (they were ignored).
#[test]
fn checkpoint_convert_writes_a_whole_directory_or_nothing() {
    let zen4 = common::shared_root().join("fixtures/criu");
    let genoa = common::shared_root().join("cpuid/dumps/AuthenticAMD/AuthenticAMD0A10F11_K19_Genoa_01_CPUID.txt");
    if !zen4.is_dir() || !genoa.is_file() {
        skip!("../shared/fixtures/criu or the Genoa dump not found: checkpoint convert is not checked");
        return;
    }
    let d = tmpdir("criu-convert-dir");
    let conv = |out: &Path, extra: &[&str]| {
        let mut a = vec!["convert", s(&zen4), "--to", "standard", "--cpuid", s(&genoa), "--to-cpuid", s(&genoa)];
        a.extend_from_slice(extra);
        a.extend(["-o", s(out)]);
        xstate(&a)
    };
    let fresh = d.join("fresh");
    let (code, _, err) = conv(&fresh, &[]);
    assert_eq!(code, 0, "{err}");
    let names = |p: &Path| {
        let mut v: Vec<String> =
            std::fs::read_dir(p).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        v.sort();
        v
    };
    assert_eq!(names(&fresh), names(&zen4));
    assert_eq!(names(&d), ["fresh"], "nothing left beside it");
    // An existing empty directory is filled; one holding files is refused untouched.
    let empty = d.join("empty");
    std::fs::create_dir(&empty).unwrap();
    assert_eq!(conv(&empty, &[]).0, 0);
    assert_eq!(names(&empty), names(&zen4));
    let used = d.join("used");
    std::fs::create_dir(&used).unwrap();
    std::fs::write(used.join("core-9999.img"), b"stray").unwrap();
    let (code, _, err) = conv(&used, &[]);
    assert_eq!((code, err.lines().count()), (2, 1), "{err}");
    assert!(err.contains("not empty"), "{err}");
    assert_eq!(names(&used), ["core-9999.img"]);
    // A symbolic link is written through (to a new or an empty directory) and stays a link.
    let link = d.join("link");
    std::os::unix::fs::symlink("through", &link).unwrap();
    let (code, _, err) = conv(&link, &[]);
    assert_eq!(code, 0, "{err}");
    assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
    assert_eq!(names(&d.join("through")), names(&zen4));
    let (code, _, err) = conv(Path::new("-"), &[]);
    assert_eq!((code, err.lines().count()), (2, 1), "{err}");
    assert!(!Path::new("-").exists());
    for flags in [
        &["--mask", "0x7"][..],
        &["--xcr0", "0xe7"],
        &["--to-xcr0", "0x7"],
        &["--drop", "xcr0"],
        &["--vcpu", "1"],
        &["--json"],
        &["--to-format", "xen-domctl"],
        &["--from-format", "raw"],
        &["--xen-policy", "pv"],
    ] {
        let out = d.join("flagged");
        let (code, _, err) = conv(&out, flags);
        assert_eq!((code, err.lines().count()), (2, 1), "{flags:?}: {err}");
        assert!(!out.exists(), "{flags:?}");
    }
    let (code, _, err) = xstate(&[
        "convert",
        s(&zen4),
        "--to",
        "compacted",
        "--cpuid",
        s(&genoa),
        "--to-cpuid",
        s(&genoa),
        "-o",
        s(&d.join("c")),
    ]);
    assert_eq!((code, err.lines().count()), (2, 1), "{err}");
    let _ = std::fs::remove_dir_all(&d);
}
