//! libxstate as C consumers get it: `scripts/install-capi` into a temporary prefix, the C tests
//! (`tests/c/*.c`) and the toolstack example (`examples/c/`) compiled with gcc against the
//! installed header and library through `pkg-config`, shared and static, run, and run again
//! under valgrind; the shared library's exported symbols and SONAME.
//!
//! Needs gcc and pkg-config (`.ci/run` installs pkg-config where it is missing); valgrind is
//! optional. Whatever is missing makes the test print a SKIP line with the reason.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use xstate::record;
use xstate::{Layout, Xfeatures};

fn skip(msg: &str) {
    let _ = writeln!(std::io::stderr(), "SKIP: {msg}");
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

/// `../shared/cpuid` (or `$XSTATE_SHARED/cpuid`), if it is there.
fn shared_cpuid() -> Option<PathBuf> {
    let root = std::env::var_os("XSTATE_SHARED").map(PathBuf::from).unwrap_or_else(|| repo().join("../shared"));
    let d = root.join("cpuid");
    d.join("host-intel-amx-kvm.txt").is_file().then_some(d)
}

fn have(tool: &str) -> bool {
    Command::new(tool).arg("--version").output().is_ok_and(|o| o.status.success())
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// Runs a command; panics with its output unless it exits 0.
fn run(cmd: &mut Command) -> Output {
    let o = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(o.status.success(), "{cmd:?} failed ({}):\n{}", o.status, text(&o));
    o
}

/// Prints the program's SKIP lines where `cargo test` shows them, saying which run they are
/// from (under valgrind the program sees valgrind's CPU: XCR0 0x7, no XSAVEC).
fn relay_skips(o: &Output, run: &str) {
    for line in String::from_utf8_lossy(&o.stdout).lines() {
        if let Some(rest) = line.strip_prefix("SKIP: ") {
            skip(&format!("[{run}] {rest}"));
        }
    }
}

/// The installed prefix, once per test process; `None` (with a SKIP line) without gcc or
/// pkg-config.
fn installed() -> Option<&'static Path> {
    static PREFIX: OnceLock<Option<PathBuf>> = OnceLock::new();
    PREFIX
        .get_or_init(|| {
            for tool in ["gcc", "pkg-config"] {
                if !have(tool) {
                    skip(&format!("{tool} not found: libxstate's C tests not built (.ci/run installs it)"));
                    return None;
                }
            }
            // Under the target directory (`cargo clean` removes it), fresh for every run.
            let prefix = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("capi-prefix");
            let _ = std::fs::remove_dir_all(&prefix);
            // The dev profile: `cargo test` has just built the library, so this costs no build.
            run(Command::new(repo().join("scripts/install-capi")).arg("--prefix").arg(&prefix).arg("--debug"));
            Some(prefix)
        })
        .as_deref()
}

fn pkg_config(prefix: &Path, args: &[&str]) -> Vec<String> {
    let o =
        run(Command::new("pkg-config").args(args).arg("xstate").env("PKG_CONFIG_PATH", prefix.join("lib/pkgconfig")));
    String::from_utf8(o.stdout).unwrap().split_whitespace().map(str::to_owned).collect()
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Linkage {
    Shared,
    Static,
}

/// Compiles C sources against the installed library: `gcc $(pkg-config --cflags --libs xstate)`
/// for the shared library; for the static one `pkg-config --static` with `-lxstate` asking for
/// `libxstate.a` by name (the prefix holds both).
fn compile(prefix: &Path, sources: &[PathBuf], exe: &Path, linkage: Linkage) {
    let cflags = pkg_config(prefix, &["--cflags"]);
    let libs: Vec<String> = match linkage {
        Linkage::Shared => pkg_config(prefix, &["--libs"]),
        Linkage::Static => pkg_config(prefix, &["--static", "--libs"])
            .into_iter()
            .map(|a| if a == "-lxstate" { "-l:libxstate.a".to_owned() } else { a })
            .collect(),
    };
    run(Command::new("gcc")
        .args(["-std=c11", "-O2", "-g", "-Wall", "-Wextra", "-Wpedantic", "-Werror", "-pthread"])
        .arg(format!("-I{}", repo().join("crates/xstate-capi/tests/c").display()))
        .args(&cflags)
        .args(sources)
        .arg("-o")
        .arg(exe)
        .args(&libs));
    let needed = run(Command::new("readelf").arg("-d").arg(exe));
    let links_shared = String::from_utf8_lossy(&needed.stdout).contains("libxstate.so.0");
    assert_eq!(links_shared, linkage == Linkage::Shared, "{exe:?} linked against the wrong libxstate");
}

/// Exit status of a run under valgrind that found memory errors or leaks.
const VALGRIND_ERRORS: i32 = 99;

/// Runs a test program with the installed library on the loader's path, under valgrind if
/// asked (memory errors and definite or indirect leaks make it exit 99).
fn exec_status(prefix: &Path, exe: &Path, args: &[&str], valgrind: bool) -> Output {
    let mut cmd = if valgrind {
        let mut c = Command::new("valgrind");
        c.args([
            "-q",
            "--error-exitcode=99",
            "--leak-check=full",
            "--show-leak-kinds=definite,indirect",
            "--errors-for-leak-kinds=definite,indirect",
        ])
        .arg(exe);
        c
    } else {
        Command::new(exe)
    };
    cmd.args(args).env("LD_LIBRARY_PATH", prefix.join("lib"));
    let o = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert_ne!(o.status.code(), Some(VALGRIND_ERRORS), "{cmd:?}: valgrind found errors:\n{}", text(&o));
    let dir = exe.parent().and_then(Path::file_name).unwrap_or_default().to_string_lossy();
    let name = exe.file_name().unwrap_or_default().to_string_lossy();
    relay_skips(&o, &format!("{dir}/{name}"));
    o
}

/// [`exec_status`] of a run that must exit 0.
fn exec(prefix: &Path, exe: &Path, args: &[&str], valgrind: bool) -> Output {
    let o = exec_status(prefix, exe, args, valgrind);
    assert!(o.status.success(), "{exe:?} {args:?} failed ({}):\n{}", o.status, text(&o));
    o
}

fn c_source(name: &str) -> PathBuf {
    repo().join("crates/xstate-capi/tests/c").join(name)
}

fn scratch(prefix: &Path, tag: &str) -> PathBuf {
    let d = prefix.join("scratch").join(tag);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn shared_arg() -> String {
    match shared_cpuid() {
        Some(d) => d.display().to_string(),
        None => {
            skip("../shared/cpuid not found: the C tests run their host part only");
            "-".to_owned()
        }
    }
}

fn c_tests(valgrind: bool) {
    let Some(prefix) = installed() else { return };
    if valgrind && !have("valgrind") {
        skip("valgrind not found: the C tests were not run under valgrind");
        return;
    }
    let shared = shared_arg();
    for linkage in [Linkage::Shared, Linkage::Static] {
        let tag = format!("{linkage:?}-{}", if valgrind { "valgrind" } else { "native" });
        let dir = scratch(prefix, &tag);
        let api = dir.join("test_api");
        compile(prefix, &[c_source("test_api.c")], &api, linkage);
        let o = exec(prefix, &api, &[&shared, dir.to_str().unwrap()], valgrind);
        assert!(String::from_utf8_lossy(&o.stdout).contains("checks passed"), "{}", text(&o));
        // The blob test_api saved from its own XSAVE: the toolstack example sets it on this
        // host as is.
        let own = dir.join("host.domctl");
        if linkage == Linkage::Shared && own.is_file() {
            let exe = dir.join("set_vcpu_extstate");
            compile(prefix, &[repo().join("examples/c/set_vcpu_extstate.c")], &exe, linkage);
            let o = exec(prefix, &exe, &[own.to_str().unwrap()], valgrind);
            assert!(String::from_utf8_lossy(&o.stdout).contains("this host: compatible\n"), "{}", text(&o));
        }
        let threads = dir.join("test_threads");
        compile(prefix, &[c_source("test_threads.c")], &threads, linkage);
        let (n, rounds) = if valgrind { ("4", "20") } else { ("8", "200") };
        let o = exec(prefix, &threads, &[&shared, n, rounds], valgrind);
        assert!(String::from_utf8_lossy(&o.stdout).contains("rounds passed"), "{}", text(&o));
        if valgrind {
            // The control: a handle never freed is found, so the runs above are not vacuous.
            let leak = dir.join("leak_control");
            compile(prefix, &[c_source("leak_control.c")], &leak, linkage);
            let mut cmd = Command::new("valgrind");
            cmd.args(["-q", "--error-exitcode=99", "--leak-check=full", "--errors-for-leak-kinds=definite,indirect"]);
            let o = cmd.arg(&leak).env("LD_LIBRARY_PATH", prefix.join("lib")).output().unwrap();
            assert_eq!(o.status.code(), Some(VALGRIND_ERRORS), "valgrind missed the leak:\n{}", text(&o));
            assert!(text(&o).contains("definitely lost"), "{}", text(&o));
        }
    }
}

#[test]
fn c_tests_shared_and_static() {
    c_tests(false);
}

/// The complete programs of docs/C-API.md: every block fenced as `c`.
fn doc_examples() -> Vec<String> {
    let doc = std::fs::read_to_string(repo().join("docs/C-API.md")).unwrap();
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in doc.lines() {
        match (&mut current, line.trim_end()) {
            (None, "```c") => current = Some(String::new()),
            (Some(_), "```") => blocks.extend(current.take()),
            (Some(b), l) => {
                b.push_str(l);
                b.push('\n');
            }
            (None, _) => {}
        }
    }
    blocks
}

#[test]
fn doc_examples_compile_and_run() {
    let Some(prefix) = installed() else { return };
    let Some(cpuid) = shared_cpuid() else {
        skip("../shared/cpuid not found: docs/C-API.md's examples were not run");
        return;
    };
    let dump = cpuid.join("dumps/AuthenticAMD/AuthenticAMD0A10F11_K19_Genoa_01_CPUID.txt");
    let blocks = doc_examples();
    assert!(blocks.len() >= 4, "docs/C-API.md has {} c blocks", blocks.len());
    let dir = scratch(prefix, "doc");
    let valgrind = have("valgrind");
    for (i, block) in blocks.iter().enumerate() {
        let src = dir.join(format!("example{i}.c"));
        std::fs::write(&src, block).unwrap();
        let exe = dir.join(format!("example{i}"));
        compile(prefix, &[src], &exe, Linkage::Shared);
        for under_valgrind in [false, valgrind] {
            exec(prefix, &exe, &[dump.to_str().unwrap()], under_valgrind);
        }
    }
    let busy = exec(prefix, &dir.join("example2"), &[dump.to_str().unwrap()], false);
    assert!(String::from_utf8_lossy(&busy.stdout).contains("-EBUSY"), "{}", text(&busy));
}

#[test]
fn header_compiles_as_cxx() {
    let Some(prefix) = installed() else { return };
    if !have("g++") {
        skip("g++ not found: the header was not compiled as C++");
        return;
    }
    let dir = scratch(prefix, "cxx");
    let exe = dir.join("cxx_header");
    run(Command::new("g++")
        .args(["-std=c++11", "-Wall", "-Wextra", "-Wpedantic", "-Werror"])
        .args(pkg_config(prefix, &["--cflags"]))
        .arg(c_source("cxx_header.cpp"))
        .arg("-o")
        .arg(&exe)
        .args(pkg_config(prefix, &["--libs"])));
    let o = exec(prefix, &exe, &[], false);
    assert!(String::from_utf8_lossy(&o.stdout).contains("cxx_header: ok"), "{}", text(&o));
}

#[test]
fn c_tests_under_valgrind() {
    c_tests(true);
}

#[test]
fn shared_library_exports_only_xstate_symbols() {
    let Some(prefix) = installed() else { return };
    let lib = prefix.join("lib");
    assert_eq!(std::fs::read_link(lib.join("libxstate.so")).unwrap(), Path::new("libxstate.so.0"));
    let real = format!("libxstate.so.{}", env!("CARGO_PKG_VERSION"));
    assert_eq!(std::fs::read_link(lib.join("libxstate.so.0")).unwrap(), Path::new(&real));
    let d = run(Command::new("readelf").arg("-d").arg(lib.join(&real)));
    assert!(String::from_utf8_lossy(&d.stdout).contains("Library soname: [libxstate.so.0]"), "{}", text(&d));
    let nm = run(Command::new("nm").args(["-D", "--defined-only"]).arg(lib.join(&real)));
    let symbols: Vec<String> = String::from_utf8_lossy(&nm.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2).map(str::to_owned))
        .collect();
    assert!(symbols.len() > 40, "too few symbols: {symbols:?}");
    let foreign: Vec<&String> = symbols.iter().filter(|s| !s.starts_with("xstate_")).collect();
    assert!(foreign.is_empty(), "exported symbols without the xstate_ prefix: {foreign:?}");
    // Every function the header declares is exported, and nothing else is.
    let header = std::fs::read_to_string(repo().join("include/xstate.h")).unwrap();
    // A declaration is a name followed by `(`: `const char *xstate_version(void);`.
    let mut declared: Vec<String> = header
        .split("xstate_")
        .skip(1)
        .filter_map(|rest| {
            let name_len = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))?;
            rest[name_len..].starts_with('(').then(|| format!("xstate_{}", &rest[..name_len]))
        })
        .collect();
    declared.sort();
    declared.dedup();
    let mut exported = symbols.clone();
    exported.sort();
    assert_eq!(declared, exported, "header declarations and exported symbols differ");
}

/// A Xen domctl blob written on an AMD Zen 4 (Genoa) host for XCR0 `xcr0`, with every byte of
/// the components in use a pattern.
fn genoa_blob(genoa: &Layout, xcr0: u64) -> Vec<u8> {
    let size = genoa.standard_size(Xfeatures(xcr0)).unwrap() as usize;
    let mut img = vec![0u8; size];
    img[0..2].copy_from_slice(&0x037fu16.to_le_bytes());
    img[24..28].copy_from_slice(&0x1f80u32.to_le_bytes());
    img[28..32].copy_from_slice(&0xffffu32.to_le_bytes());
    for (i, b) in img.iter_mut().enumerate().skip(160) {
        if !(416..576).contains(&i) {
            *b = (i * 13) as u8;
        }
    }
    img[512..520].copy_from_slice(&xcr0.to_le_bytes());
    // {xcr0, xcr0_accum, standard image}: docs/FORMATS.md.
    let mut blob = [xcr0.to_le_bytes(), xcr0.to_le_bytes()].concat();
    blob.extend_from_slice(&img);
    blob
}

#[test]
fn toolstack_example_sets_a_blob_from_another_host() {
    let Some(prefix) = installed() else { return };
    let Some(cpuid) = shared_cpuid() else {
        skip("../shared/cpuid not found: the toolstack example was not run");
        return;
    };
    let Ok(host) = xstate_hw::Host::probe() else {
        skip("this host has no XSAVE: the toolstack example was not run");
        return;
    };
    let dir = scratch(prefix, "example");
    let exe = dir.join("set_vcpu_extstate");
    compile(prefix, &[repo().join("examples/c/set_vcpu_extstate.c")], &exe, Linkage::Shared);
    let dump = cpuid.join("dumps/AuthenticAMD/AuthenticAMD0A10F11_K19_Genoa_01_CPUID.txt");
    let genoa =
        Layout::from_leaf0d(xstate::cpuid::parse(&std::fs::read_to_string(&dump).unwrap()).unwrap().leaf0d()).unwrap();
    let host_xcr0 = host.xcr0();
    let valgrind = have("valgrind");
    if !valgrind {
        skip("valgrind not found: the toolstack example was not run under valgrind");
    }
    for xcr0 in [0x7u64, 0xe7] {
        let blob = dir.join(format!("genoa-{xcr0:#x}.domctl"));
        std::fs::write(&blob, genoa_blob(&genoa, xcr0)).unwrap();
        let out = dir.join(format!("host-{xcr0:#x}.domctl"));
        let args = [blob.to_str().unwrap(), "--from-cpuid", dump.to_str().unwrap(), "-o", out.to_str().unwrap()];
        let o = exec_status(prefix, &exe, &args, false);
        if !Xfeatures(xcr0).is_subset_of(host_xcr0) {
            // This host cannot hold the vCPU's state: refused, one line, exit 1.
            assert_eq!(o.status.code(), Some(1), "{}", text(&o));
            assert!(String::from_utf8_lossy(&o.stdout).contains("component_missing"), "{}", text(&o));
            assert_eq!(String::from_utf8_lossy(&o.stderr).lines().count(), 1, "{}", text(&o));
            skip(&format!("this host's XCR0 {host_xcr0} lacks {xcr0:#x}: the example refused, as it must"));
            continue;
        }
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        // What the example wrote is a blob Xen's rules accept on this host, with the state moved.
        let written = std::fs::read(&out).unwrap();
        let l = host.layout();
        let b = record::xen::DomctlBlob::parse(&written, l, &record::xen::XenHost::of(l)).unwrap();
        assert_eq!((b.xcr0.bits(), b.xcr0_accum.bits()), (xcr0, xcr0));
        let src = genoa_blob(&genoa, xcr0);
        for c in Xfeatures(xcr0 & !3) {
            let (gs, hs) = (genoa.standard_range(c).unwrap(), l.standard_range(c).unwrap());
            assert_eq!(&src[16 + gs.start..16 + gs.end], &b.image.unwrap()[hs], "{c:?}");
        }
        // Under valgrind the example sees valgrind's CPU (XCR0 0x7): only the AVX blob fits it.
        if valgrind && xcr0 == 0x7 {
            exec(prefix, &exe, &args, true);
        }
    }
    // A blob one byte short: Xen's exact-size rule, exit 1, one line on stderr naming it.
    let blob = dir.join("short.domctl");
    let mut bytes = genoa_blob(&genoa, 0x7);
    bytes.pop();
    std::fs::write(&blob, bytes).unwrap();
    for under_valgrind in [false, valgrind] {
        let o = exec_status(
            prefix,
            &exe,
            &[blob.to_str().unwrap(), "--from-cpuid", dump.to_str().unwrap()],
            under_valgrind,
        );
        assert_eq!(o.status.code(), Some(1), "{}", text(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        if !under_valgrind {
            assert_eq!(err.lines().count(), 1, "{err}");
        }
        assert!(err.contains("16 + standard_size(xcr0_accum 0x7) = 848"), "{err}");
    }
}
