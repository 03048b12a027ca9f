//! Helpers shared by the corpus tests: finding `../shared` and reading `cpuid/corpus.json`.
#![allow(dead_code)] // each test file uses its own subset

use std::path::PathBuf;

use serde_json::Value;

/// Prints "SKIP: …" where `cargo test` shows it: straight to the stderr handle, which the test
/// harness does not capture (it captures only `print!`/`eprint!` output).
macro_rules! skip {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), "SKIP: {}", format_args!($($t)*));
    }};
}

/// The CPUID corpus of `../shared/cpuid` (or `$XSTATE_SHARED/cpuid`).
pub struct Corpus {
    /// The shared folder.
    pub shared: PathBuf,
    /// The entries of `cpuid/corpus.json`.
    pub entries: Vec<Value>,
}

impl Corpus {
    /// The text of the dump `file` (a path relative to `cpuid/dumps`).
    pub fn dump(&self, file: &str) -> String {
        std::fs::read_to_string(self.shared.join("cpuid/dumps").join(file)).unwrap()
    }
}

/// The shared folder, if it holds `cpuid/corpus.json`.
pub fn shared() -> Option<PathBuf> {
    let p = match std::env::var_os("XSTATE_SHARED") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared"),
    };
    p.join("cpuid/corpus.json").is_file().then_some(p)
}

/// The corpus, read; `None` after printing "SKIP: … `not_checked`" where it is missing.
pub fn corpus_or_skip(not_checked: &str) -> Option<Corpus> {
    let Some(shared) = shared() else {
        skip!("../shared/cpuid/corpus.json not found (set XSTATE_SHARED): {not_checked}");
        return None;
    };
    let entries = serde_json::from_str(&std::fs::read_to_string(shared.join("cpuid/corpus.json")).unwrap()).unwrap();
    Some(Corpus { shared, entries })
}

/// A corpus hex string (`"0x602e7"` or `"602e7"`) as a number.
pub fn hex64(v: &Value) -> Option<u64> {
    u64::from_str_radix(v.as_str()?.trim_start_matches("0x"), 16).ok()
}

/// Prints a measured figure where `cargo test` shows it (the stderr handle, not captured).
pub fn note(line: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// The bytes of `fixtures/REL` in the shared folder; `None` after printing "SKIP: …
/// `not_checked`" where it is missing.
pub fn fixture_or_skip(rel: &str, not_checked: &str) -> Option<Vec<u8>> {
    let p = match std::env::var_os("XSTATE_SHARED") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared"),
    }
    .join("fixtures")
    .join(rel);
    match std::fs::read(&p) {
        Ok(b) => Some(b),
        Err(e) => {
            skip!("{} not readable ({e}; set XSTATE_SHARED): {not_checked}", p.display());
            None
        }
    }
}
