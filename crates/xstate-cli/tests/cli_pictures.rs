//! The pictures of issue 15: `xstate layout --svg/--html` (one CPU, and two with `--diff`),
//! `xstate compat --matrix DIR --html`, their contents (blocks, holes, supervisor components,
//! links, grid cells), the output-file rules, and a real browser (Debian's chromium, headless)
//! rendering each kind: a screenshot with non-blank content and the expected element count.

#[macro_use]
mod common;

use std::path::Path;
use std::process::Command;

use common::{dumps_or_skip, have, ok, s, tmpdir, xstate};

/// How many elements of `class` the markup has, by row where given.
fn count(markup: &str, class: &str, row: Option<&str>) -> usize {
    let needle = match row {
        Some(r) => format!("class=\"{class}\" data-row=\"{r}\""),
        None => format!("class=\"{class}\""),
    };
    markup.matches(&needle).count()
}

/// True if an element of `class` in `row` is drawn for `component`.
fn has(markup: &str, class: &str, row: &str, component: &str) -> bool {
    let head = format!("class=\"{class}\" data-row=\"{row}\"");
    let comp = format!("data-component=\"{component}\"");
    markup.split('<').any(|tag| tag.contains(&head) && tag.contains(&comp))
}

#[test]
fn one_cpu_blocks_holes_and_supervisor_components() {
    let Some(d) = dumps_or_skip() else { return };
    let tgl = d.join("GenuineIntel/GenuineIntel00806C1_TigerLake_01_CPUID.txt");
    let dir = tmpdir("pic-one");
    let svg = dir.join("tgl.svg");
    let out = ok(&["layout", "--cpuid", s(&tgl), "--xss", "0x100", "--svg", s(&svg)]);
    assert!(out.contains("tgl.svg"), "a summary names the file: {out}");
    let p = std::fs::read_to_string(&svg).unwrap();
    assert!(p.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""), "{}", &p[..80]);
    // x87, sse, avx, opmask, zmm_hi256, hi16_zmm, pkru in the standard row; PT too in the
    // compacted row only.
    assert_eq!(count(&p, "component", Some("standard")), 7);
    assert_eq!(count(&p, "component", Some("compacted")), 8);
    assert!(has(&p, "component", "compacted", "pt"));
    assert!(!has(&p, "component", "standard", "pt"), "supervisor state has no standard offset");
    // MPX's space, kept empty: a hole 0x340..0x440.
    assert!(p.contains("class=\"hole\" data-row=\"standard\" data-start=\"0x340\" data-end=\"0x440\""), "{p}");
    // Zen 3: the AVX-512 gap before PKRU is a hole.
    let zen3 = d.join("AuthenticAMD/AuthenticAMD0A00F11_K19_Milan_02_CPUID.txt");
    let p = ok(&["layout", "--cpuid", s(&zen3), "--svg", "-"]);
    assert!(p.contains("class=\"hole\" data-row=\"standard\" data-start=\"0x340\" data-end=\"0x980\""), "{p}");
    // Without --xss the supervisor components are not placed, and the picture says so.
    assert!(p.contains("not in IA32_XSS"), "{p}");
    // HTML: self-contained (the SVG namespace is a name, not a fetch).
    let html = dir.join("tgl.html");
    ok(&["layout", "--cpuid", s(&tgl), "--html", s(&html)]);
    let h = std::fs::read_to_string(&html).unwrap();
    assert!(h.starts_with("<!DOCTYPE html>"));
    assert_self_contained(&h);
    assert!(h.contains("<table>"));
}

fn assert_self_contained(h: &str) {
    let without_ns = h.replace("xmlns=\"http://www.w3.org/2000/svg\"", "");
    for bad in ["http://", "https://", "<script src", "<link", "@import", "url(http"] {
        assert!(!without_ns.contains(bad), "{bad} in the page");
    }
}

#[test]
fn two_cpus_link_moved_components() {
    let Some(d) = dumps_or_skip() else { return };
    let skx = d.join("GenuineIntel/GenuineIntel0050654_SkylakeXeon_CPUID5.txt");
    let zen4 = d.join("AuthenticAMD/AuthenticAMD0A10F11_K19_Genoa_01_CPUID.txt");
    let p = ok(&["layout", "--diff", s(&skx), s(&zen4), "--svg", "-"]);
    // AVX-512 and PKRU move in the standard format; AVX does not.
    assert_eq!(count(&p, "link", Some("standard")), 4, "{p}");
    for c in ["opmask", "zmm_hi256", "hi16_zmm", "pkru"] {
        assert!(has(&p, "link", "standard", c), "{c}");
    }
    assert!(!has(&p, "link", "standard", "avx"));
    assert!(p.contains("only on"), "MPX is only on Skylake-SP");
    // The text diff names the moves.
    let t = ok(&["layout", "--diff", s(&skx), s(&zen4)]);
    assert!(t.lines().next().unwrap().contains("4 components move"), "{t}");
    assert!(t.contains("opmask") && t.contains("0x440") && t.contains("0x340"), "{t}");
    // Usage: --diff takes two CPUs and replaces --cpuid.
    assert_eq!(xstate(&["layout", "--diff", s(&skx)]).0, 2);
    assert_eq!(xstate(&["layout", "--diff", s(&skx), s(&zen4), "--cpuid", s(&skx)]).0, 2);
    assert_eq!(xstate(&["layout", "--cpuid", s(&skx), "--svg", "-", "--json"]).0, 2, "--json would be ignored");
    let (code, out, _) = xstate(&["layout", "--cpuid", s(&skx), "--svg", "-", "--html", "-"]);
    assert_eq!((code, out.is_empty()), (2, true), "two documents on one stdout");
    // An output that cannot be written: exit 2, nothing left behind.
    let (code, _, err) = xstate(&["layout", "--cpuid", s(&skx), "--svg", "/nonexistent/dir/x.svg"]);
    assert_eq!(code, 2, "{err}");
}

#[test]
fn matrix_page() {
    let Some(d) = dumps_or_skip() else { return };
    let dir = tmpdir("pic-matrix");
    let page = dir.join("fleet.html");
    let out = ok(&["compat", "--matrix", s(&d), "--html", s(&page)]);
    assert!(out.lines().next().unwrap().contains("% of CPU pairs move as is"), "{out}");
    let h = std::fs::read_to_string(&page).unwrap();
    assert_self_contained(&h);
    let classes: usize = ok(&["compat", "--matrix", s(&d), "--json"])
        .split("\"classes\":[")
        .nth(1)
        .map(|rest| rest.split("\"class_matrix\"").next().unwrap().matches("\"id\":").count())
        .unwrap();
    assert_eq!(h.matches("<td class=\"cell v").count(), classes * classes, "one grid cell per class pair");
    assert_eq!(h.matches("<svg").count(), classes, "a picture per class");
    // Of the usable dumps: the two broken ones (leaf 0xD all zero under XSAVE) are listed unusable.
    assert!(h.contains("baseline of 350 hosts"), "the baseline is on the page");
    assert!(h.contains("id=\"how\""), "how the figures were computed");
    // --html belongs to --matrix; --html - and --json would both write to stdout.
    let one = d.join("AuthenticAMD/AuthenticAMD0A10F11_K19_Genoa_01_CPUID.txt");
    let (code, _, err) = xstate(&["compat", "--from", s(&one), "--to", s(&one), "--html", s(&dir.join("x.html"))]);
    assert_eq!(code, 2, "{err}");
    assert!(!dir.join("x.html").exists());
    assert_eq!(xstate(&["compat", "--matrix", s(&d), "--html", "-", "--json"]).0, 2);
    let (code, out, _) = xstate(&["compat", "--matrix", s(&d), "--html", "-"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("<!DOCTYPE html>"), "the page alone on stdout");
}

/// A headless chromium run: the PNG and the DOM after load.
fn chromium(page: &Path, dir: &Path, width: u32, height: u32) -> (Vec<u8>, String) {
    let png = dir.join("shot.png");
    let profile = tmpdir(&format!("chromium-profile-{}", page.file_stem().unwrap().to_string_lossy()));
    let flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
    ];
    let url = format!("file://{}", page.display());
    let run = |extra: &[String]| {
        // A hung browser fails the test after two minutes instead of hanging CI.
        let out = Command::new("timeout")
            .args(["120", "chromium"])
            .args(flags)
            .arg(format!("--user-data-dir={}", profile.display()))
            .args(extra)
            .arg(&url)
            .output()
            .expect("run chromium");
        assert!(out.status.success(), "chromium: {}", String::from_utf8_lossy(&out.stderr));
        out
    };
    run(&[format!("--screenshot={}", png.display()), format!("--window-size={width},{height}")]);
    let dom = String::from_utf8_lossy(&run(&["--dump-dom".to_string()]).stdout).into_owned();
    (std::fs::read(&png).unwrap(), dom)
}

/// Decodes an RGB(A) PNG and returns (pixels, non-white pixels, distinct colours).
fn png_stats(bytes: &[u8]) -> (usize, usize, usize) {
    let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    let channels = info.color_type.samples();
    let px = &buf[..info.buffer_size()];
    let mut colours = std::collections::HashSet::new();
    let mut ink = 0;
    for p in px.chunks(channels) {
        let rgb = (p[0], p[1], p[2.min(channels - 1)]);
        if rgb != (255, 255, 255) {
            ink += 1;
        }
        colours.insert(rgb);
    }
    (px.len() / channels, ink, colours.len())
}

#[test]
fn pictures_render_in_a_real_browser() {
    let Some(d) = dumps_or_skip() else { return };
    if !have("chromium") {
        skip!("chromium not installed (.ci/setup-browser installs it): pictures not rendered in a browser");
        return;
    }
    let spr = d.join("GenuineIntel/GenuineIntel00806F8_SapphireRapids_05_CPUID.txt");
    let zen4 = d.join("AuthenticAMD/AuthenticAMD0A10F11_K19_Genoa_01_CPUID.txt");
    let dir = tmpdir("pic-browser");
    // One CPU (HTML page), two CPUs (bare SVG), the fleet page.
    let one = dir.join("spr.html");
    ok(&["layout", "--cpuid", s(&spr), "--xss", "0xdd00", "--html", s(&one)]);
    let two = dir.join("diff.svg");
    ok(&["layout", "--diff", s(&spr), s(&zen4), "--svg", s(&two)]);
    let fleet = dir.join("fleet.html");
    ok(&["compat", "--matrix", s(&d), "--html", s(&fleet)]);
    for (page, class, want, size) in [
        (&one, "class=\"component\"", 2 * 9 + 6, (1300, 900)),
        (&two, "class=\"link\"", 0, (1300, 700)),
        (&fleet, "class=\"cell", 0, (1400, 1200)),
    ] {
        let (png, dom) = chromium(page, &dir, size.0, size.1);
        let (pixels, ink, colours) = png_stats(&png);
        let n = dom.matches(class).count();
        common::note(&format!(
            "chromium: {}: {n} {class} elements in the DOM, {ink} of {pixels} pixels not white, {colours} colours",
            page.file_name().unwrap().to_string_lossy()
        ));
        assert!(ink * 50 > pixels, "{}: the screenshot is (nearly) blank", page.display());
        assert!(colours >= 8, "{}: {colours} colours", page.display());
        let markup = std::fs::read_to_string(page).unwrap();
        let expected = if want > 0 { want } else { markup.matches(class).count() };
        assert!(expected > 0);
        assert_eq!(n, expected, "{}: the browser's DOM has every element", page.display());
    }
}

/// A dump that enumerates PKRU and PT without their 0xD subleaves: `layout --diff` and the
/// pictures carry the notes `layout` prints, and the diff shows those components as unknown on
/// that side, never as absent or "only on" the other.
#[test]
fn diff_and_pictures_keep_the_missing_subleaf_notes() {
    let Some(d) = dumps_or_skip() else { return };
    let skx = d.join("GenuineIntel/GenuineIntel0050654_SkylakeXeon_CPUID.txt");
    let genoa = d.join("AuthenticAMD/AuthenticAMD0A10F11_K19_Genoa_01_CPUID.txt");
    let single = ok(&["layout", "--cpuid", s(&skx)]);
    assert!(single.contains("subleaf 9 is missing"), "the dump lacks PKRU's subleaf: {single}");
    let t = ok(&["layout", "--diff", s(&genoa), s(&skx)]);
    let head = t.lines().next().unwrap();
    assert!(!head.contains("pkru"), "PKRU is not known to be only on A: {t}");
    assert!(t.contains("subleaf 9 is missing") && t.contains("subleaf 8 is missing"), "{t}");
    let pkru = t.lines().find(|l| l.split_whitespace().nth(1) == Some("pkru")).unwrap();
    assert!(pkru.contains("unknown") && !pkru.contains("absent") && !pkru.contains("only on"), "{pkru}");
    // Reversed, the same on the other side.
    let t = ok(&["layout", "--diff", s(&skx), s(&genoa)]);
    let pkru = t.lines().find(|l| l.split_whitespace().nth(1) == Some("pkru")).unwrap();
    assert!(pkru.contains("unknown") && !pkru.contains("only on"), "{pkru}");
    for args in [
        &["layout", "--cpuid", s(&skx), "--svg", "-"][..],
        &["layout", "--cpuid", s(&skx), "--html", "-"],
        &["layout", "--diff", s(&genoa), s(&skx), "--svg", "-"],
        &["layout", "--diff", s(&genoa), s(&skx), "--html", "-"],
    ] {
        let p = ok(args);
        assert!(p.contains("enumerated, subleaf missing: pt|pkru"), "{args:?}: {p}");
        if args.contains(&"--diff") {
            assert!(!p.contains("only on 0A10F11_K19_Genoa_01: pkru"), "{args:?}: PKRU not known to be only on Genoa");
        }
    }
}
