//! Helpers shared by the CLI tests: running the binary, finding `../shared`, scratch folders.
#![allow(dead_code)] // each test file uses its own subset

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// Prints "SKIP: …" where `cargo test` shows it: straight to the stderr handle, which the test
/// harness does not capture (it captures only `print!`/`eprint!` output).
macro_rules! skip {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), "SKIP: {}", format_args!($($t)*));
    }};
}

/// Runs the `xstate` binary: (exit code, stdout, stderr).
pub fn xstate(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_xstate")).args(args).output().expect("run xstate");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `xstate` and returns its stdout; panics unless it exits 0.
pub fn ok(args: &[&str]) -> String {
    let (code, out, err) = xstate(args);
    assert_eq!(code, 0, "{args:?}: {err}");
    out
}

/// Runs `xstate` and parses its stdout as JSON; panics unless it exits 0.
pub fn json(args: &[&str]) -> Value {
    serde_json::from_str(&ok(args)).unwrap()
}

/// `$XSTATE_SHARED`, else `../shared` beside the repository; not checked for existence.
pub fn shared_root() -> PathBuf {
    match std::env::var_os("XSTATE_SHARED") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared"),
    }
}

/// The shared folder, if it holds `cpuid/corpus.json`; otherwise prints "SKIP: … not found:
/// `not_checked`" and returns `None`.
pub fn shared_or_skip(not_checked: &str) -> Option<PathBuf> {
    let p = shared_root();
    if p.join("cpuid/corpus.json").is_file() {
        Some(p)
    } else {
        skip!("../shared/cpuid not found: {not_checked}");
        None
    }
}

/// The corpus's dumps folder (`cpuid/dumps`), if it exists; otherwise prints a SKIP line and
/// returns `None`.
pub fn dumps_or_skip() -> Option<PathBuf> {
    let d = shared_root().join("cpuid/dumps");
    if d.is_dir() {
        Some(d)
    } else {
        skip!("../shared/cpuid/dumps not found");
        None
    }
}

/// The entries of `cpuid/corpus.json` under `shared`.
pub fn corpus(shared: &Path) -> Vec<Value> {
    serde_json::from_str(&std::fs::read_to_string(shared.join("cpuid/corpus.json")).unwrap()).unwrap()
}

/// A fresh, empty scratch folder for this test process: `<tmp>/xstate-<tag>-<pid>`.
pub fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("xstate-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A 64-bit mask as the JSON writes it (`"0x600e7"`); a number is read too.
pub fn mask(v: &Value) -> u64 {
    match v {
        Value::Number(n) => n.as_u64().unwrap(),
        Value::String(t) => u64::from_str_radix(t.trim_start_matches("0x"), 16).unwrap(),
        other => panic!("not a mask: {other}"),
    }
}

/// A standard image of `size` bytes in its init state but for XSTATE_BV `bv`: FCW 0x037F,
/// MXCSR 0x1F80, everything else zero.
pub fn standard_image(size: usize, bv: u64) -> Vec<u8> {
    let mut img = vec![0u8; size];
    img[0..2].copy_from_slice(&0x037Fu16.to_le_bytes());
    img[24..28].copy_from_slice(&0x1F80u32.to_le_bytes());
    img[512..520].copy_from_slice(&bv.to_le_bytes());
    img
}

/// A valid standard image for this host in `dir/host.img`: XCR0's size, FCW and MXCSR at
/// their init values; `xmm0_in_use` puts 0x11 in XMM0 and marks x87 and SSE in use.
pub fn host_image(dir: &Path, xmm0_in_use: bool) -> PathBuf {
    let host = xstate_hw::Host::probe().unwrap();
    let size = host.layout().standard_size(host.xcr0()).unwrap() as usize;
    let mut img = vec![0u8; size];
    img[0..2].copy_from_slice(&0x037Fu16.to_le_bytes());
    img[24..28].copy_from_slice(&0x1F80u32.to_le_bytes());
    if xmm0_in_use {
        img[160] = 0x11;
        img[512] = 0x3;
    }
    let p = dir.join("host.img");
    std::fs::write(&p, &img).unwrap();
    p
}

/// A path as the `&str` an argument list takes.
pub fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// True if `tool` is on the PATH.
pub fn have(tool: &str) -> bool {
    Command::new("sh").args(["-c", &format!("command -v {tool}")]).output().is_ok_and(|o| o.status.success())
}

/// Prints a measured figure where `cargo test` shows it (the stderr handle, not captured).
pub fn note(line: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "{line}");
}
