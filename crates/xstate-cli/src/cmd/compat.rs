//! `xstate compat --from A --to B [--image IMG] [--json]` and `xstate compat --matrix DIR
//! [--json]`: can state move from one CPU or policy to another, why not, and what to mask.
//!
//! A and B are CPUID dumps (what `--cpuid` reads), `xstate policy --json` output, or `host`.
//! Exit 0 when compatible (as is or after re-layout), 1 when incompatible (one line on stderr
//! naming the first blocking reason), 2 for usage and I/O.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use clap::Args;
use serde_json::{Value, json};
use xstate::compat::{Reason, Report, Side, Verdict, check, check_image, verdict};
use xstate::record::{self, Format, Options};
use xstate::xcr0::{catalogue_supervisor, check_xcr0_supported, check_xss};
use xstate::{Layout, Xfeatures};

use crate::cmd::imageio::emit;
use crate::common::{
    CliError, CliResult, Source, mask_json, parse_mask, placeable, print_json, read_file, say, source, write_output,
};
use crate::output::{Destination, resolve};
use xstate::fleet::Host;

/// Appends text without a newline.
macro_rules! say_part {
    ($out:expr, $($t:tt)*) => {{ use std::fmt::Write as _; let _ = write!($out, $($t)*); }};
}

/// Arguments of `xstate compat`.
#[derive(Args, Debug)]
pub struct CompatArgs {
    /// Source CPU or policy: a CPUID dump, `xstate policy --json` output, or `host`; or a CRIU
    /// checkpoint (directory or `core-<tid>.img`).
    #[arg(long, value_name = "A", required_unless_present = "matrix", requires = "to")]
    pub from: Option<PathBuf>,
    /// Destination CPU or policy, as --from.
    #[arg(long, value_name = "B", requires = "from")]
    pub to: Option<PathBuf>,
    /// A concrete image saved on the source (or a CRIU checkpoint): only its components in use
    /// matter.
    #[arg(long, value_name = "IMG", requires = "from")]
    pub image: Option<PathBuf>,
    /// The XCR0 the source runs with; default: the record's (when IMG is one that records it),
    /// else every user state the source supports. The destination must be able to enable all
    /// of it.
    #[arg(long, value_name = "MASK", value_parser = parse_mask)]
    pub from_xcr0: Option<Xfeatures>,
    /// The IA32_XSS the source runs with; default: the record's, else 0.
    #[arg(long, value_name = "MASK", value_parser = parse_mask)]
    pub from_xss: Option<Xfeatures>,
    /// States the destination can enable (XCR0); default: every user state it supports.
    #[arg(long, value_name = "MASK", value_parser = parse_mask)]
    pub to_xcr0: Option<Xfeatures>,
    /// Supervisor states the destination can enable; default: every one it supports.
    #[arg(long, value_name = "MASK", value_parser = parse_mask)]
    pub to_xss: Option<Xfeatures>,
    /// A folder of CPUID dumps (searched recursively): print the fleet matrix.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["from", "to", "image"])]
    pub matrix: Option<PathBuf>,
    /// With --matrix: also write the fleet page, one self-contained HTML file (`-`: standard
    /// output, instead of the text).
    #[arg(long, value_name = "FILE", requires = "matrix")]
    pub html: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

impl CompatArgs {
    /// The mask flags given, by name: they apply to one pair (`--from`/`--to`) only.
    fn mask_flags(&self) -> Vec<&'static str> {
        [
            ("--from-xcr0", self.from_xcr0.is_some()),
            ("--from-xss", self.from_xss.is_some()),
            ("--to-xcr0", self.to_xcr0.is_some()),
            ("--to-xss", self.to_xss.is_some()),
        ]
        .into_iter()
        .filter_map(|(f, given)| given.then_some(f))
        .collect()
    }
}

/// Reads a CPUID source as every command does ([`crate::common::source`]): `host`, a dump or
/// policy JSON; components whose subleaf a dump lacks are left out and returned.
fn load(path: &Path) -> CliResult<Source> {
    source(Some(&path.to_path_buf()))
}

fn reason_json(r: &Reason) -> Value {
    let mut v = json!({
        "kind": r.kind(),
        "severity": r.severity().key(),
        "text": r.to_string(),
    });
    if let Some(c) = r.component() {
        v["component"] = json!(c.name().to_string());
        v["index"] = json!(c.index());
    }
    match *r {
        Reason::SizeDiffers { from, to, .. }
        | Reason::OffsetDiffers { from, to, .. }
        | Reason::DestinationSmaller { from, to }
        | Reason::StandardSizeDiffers { from, to } => {
            v["from"] = json!(from);
            v["to"] = json!(to);
        }
        Reason::AlignDiffers { from, to, .. } => {
            v["from"] = json!(from);
            v["to"] = json!(to);
        }
        _ => {}
    }
    v
}

fn report_json(r: &Report) -> Value {
    json!({
        "verdict": r.verdict.key(),
        "verdict_text": r.verdict.text(),
        "considered": format!("{:#x}", r.considered.bits()),
        "reasons": r.reasons.iter().map(reason_json).collect::<Vec<_>>(),
        "mask": format!("{:#x}", r.mask.bits()),
        "mask_features": r.mask_features().iter().map(|f| f.name()).collect::<Vec<_>>(),
        "mask_as_is": format!("{:#x}", r.mask_as_is.bits()),
        "mask_as_is_features": r.mask_as_is_features().iter().map(|f| f.name()).collect::<Vec<_>>(),
    })
}

fn names(fs: &[xstate::policy::Feature]) -> String {
    if fs.is_empty() { "none".into() } else { fs.iter().map(|f| f.name()).collect::<Vec<_>>().join(", ") }
}

/// Runs `xstate compat`.
pub fn run(args: &CompatArgs) -> CliResult {
    if let Some(dir) = &args.matrix {
        // The matrix takes every CPU's own masks: a mask flag would have no effect.
        if let Some(flag) = args.mask_flags().first() {
            return Err(CliError::usage(format!("{flag} applies to --from/--to; --matrix takes each CPU's own masks")));
        }
        return matrix(dir, args.json, args.html.as_deref());
    }
    if args.html.is_some() {
        return Err(CliError::usage("--html draws the fleet page of --matrix DIR; it has no effect with --from/--to"));
    }
    let (Some(from), Some(to)) = (&args.from, &args.to) else {
        return Err(CliError::usage("xstate compat needs --from A --to B, or --matrix DIR"));
    };
    // A CRIU checkpoint as the source or the image: CRIU's verdict and xstate's (cmd/criu.rs),
    // from the checkpoint's own masks.
    let checkpoint = crate::cmd::criu::is_checkpoint(from)
        || args.image.as_ref().is_some_and(|i| crate::cmd::criu::is_checkpoint(i));
    if let (true, Some(flag)) = (checkpoint, args.mask_flags().first()) {
        return Err(CliError::usage(format!("{flag} has no effect on a CRIU checkpoint, which records its masks")));
    }
    if crate::cmd::criu::is_checkpoint(from) {
        return crate::cmd::criu::compat(from, None, to, args.json);
    }
    if let Some(img) = args.image.as_ref().filter(|i| crate::cmd::criu::is_checkpoint(i)) {
        return crate::cmd::criu::compat(img, Some(from), to, args.json);
    }
    let fsrc = load(from)?;
    let tsrc = load(to)?;
    let (fname, mut fnotes) = (&fsrc.name, fsrc.notes());
    let (tl, tname, tnotes) = (&tsrc.layout, &tsrc.name, tsrc.notes());
    let image = match &args.image {
        Some(p) => Some(image_of(p, &fsrc.layout)?),
        None => None,
    };
    if let Some(i) = &image {
        if i.layout.is_some() {
            fnotes.push(format!("the image is laid out as its {} record says, not as --from", i.format));
        }
        if i.xcr0.is_none() && args.from_xcr0.is_none() && !i.format.is_container() {
            fnotes
                .push("the image does not record its XCR0: every user state assumed enabled (give --from-xcr0)".into());
        }
    }
    let fl = image.as_ref().and_then(|i| i.layout.as_ref()).unwrap_or(&fsrc.layout);
    // The XCR0 the source runs with: --from-xcr0, else the record's, else every user state it
    // enumerates, placed or not (a dump's missing subleaf): the strictest answer, since a
    // narrower XCR0 can only make the verdict better.
    let fs = Side {
        layout: fl,
        xcr0: args
            .from_xcr0
            .or(image.as_ref().and_then(|i| i.xcr0))
            .unwrap_or(fl.user_supported() | (fsrc.omitted - catalogue_supervisor())),
        xss: args.from_xss.or(image.as_ref().and_then(|i| i.xss)).unwrap_or(Xfeatures(0)),
    };
    let ts = Side {
        layout: tl,
        xcr0: args.to_xcr0.unwrap_or(tl.user_supported()),
        xss: args.to_xss.unwrap_or(tl.supervisor_supported()),
    };
    // A mask given is held to the rules `layout --xcr0/--xss` and `policy` apply (exit 1); a
    // component a dump enumerates without its subleaf is left to `placeable`, which names it.
    for (flag, mask, layout, omitted, xss) in [
        ("--from-xcr0", args.from_xcr0, fl, fsrc.omitted, false),
        ("--from-xss", args.from_xss, fl, fsrc.omitted, true),
        ("--to-xcr0", args.to_xcr0, tl, tsrc.omitted, false),
        ("--to-xss", args.to_xss, tl, tsrc.omitted, true),
    ] {
        let Some(m) = mask else { continue };
        let (user, sup) = (
            layout.user_supported() | (omitted - catalogue_supervisor()),
            layout.supervisor_supported() | (omitted & catalogue_supervisor()),
        );
        let r = if xss { check_xss(m, user, sup) } else { check_xcr0_supported(m, user, sup) };
        r.map_err(|e| CliError::invalid(format!("{flag}: {e}")))?;
    }
    // No verdict about state a source could not place.
    placeable(&fsrc, fs.xcr0 | fs.xss).map_err(|e| CliError { message: format!("--from: {}", e.message), ..e })?;
    placeable(&tsrc, fs.xcr0 | fs.xss).map_err(|e| CliError { message: format!("--to: {}", e.message), ..e })?;
    for (what, side) in [("--from", &fs), ("--to", &ts)] {
        let extra = (side.xcr0 | side.xss) - side.layout.supported();
        if !extra.is_empty() {
            return Err(CliError::invalid(format!(
                "{what}: mask bits {extra} ({}) are not enumerated by that CPU",
                extra.names()
            )));
        }
    }
    let report = match (&args.image, &image) {
        // A snapshot or stream: every vCPU's state against the destination, the worst verdict.
        (Some(p), Some(i)) if i.format.is_container() => {
            match crate::cmd::container::image_report(&i.bytes, &fs, &ts) {
                Some(r) => r.map_err(|e| CliError { message: format!("{}: {}", p.display(), e.message), ..e })?,
                None => {
                    check_image(&fs, &ts, &i.bytes).map_err(|e| CliError::invalid(format!("{}: {e}", p.display())))?
                }
            }
        }
        (Some(p), Some(i)) => {
            check_image(&fs, &ts, &i.bytes).map_err(|e| CliError::invalid(format!("{}: {e}", p.display())))?
        }
        _ => check(&fs, &ts),
    };
    let mut out = String::new();
    if args.json {
        let mut v = report_json(&report);
        v["from"] = json!({"source": fname, "xcr0": format!("{:#x}", fs.xcr0.bits()), "xss": format!("{:#x}", fs.xss.bits()), "notes": fnotes});
        v["to"] = json!({"source": tname, "xcr0": format!("{:#x}", ts.xcr0.bits()), "xss": format!("{:#x}", ts.xss.bits()), "notes": tnotes});
        print_json(&v)?;
    } else {
        say!(out, "{}", answer(&report));
        say!(out, "from: {fname} (XCR0 {}, XSS {})", fs.xcr0, fs.xss);
        say!(out, "to:   {tname} (XCR0 {}, XSS {})", ts.xcr0, ts.xss);
        for n in fnotes.iter().map(|n| ("from", n)).chain(tnotes.iter().map(|n| ("to", n))) {
            say!(out, "note ({}): {}", n.0, n.1);
        }
        if args.image.is_some() {
            say!(out, "image: components in use {} ({})", report.considered, report.considered.names());
        }
        say!(out, "verdict: {}", report.verdict);
        for r in &report.reasons {
            let tag = match r.severity() {
                Verdict::Incompatible => "incompatible",
                Verdict::AfterRelayout => "re-layout",
                Verdict::Compatible => "note",
            };
            say!(out, "  {tag:<12} {r}");
        }
        if report.verdict == Verdict::Incompatible {
            say!(out, "mask in the source policy for re-layout: {} ({})", report.mask, names(&report.mask_features()));
        }
        if report.verdict != Verdict::Compatible {
            say!(
                out,
                "mask in the source policy for as is:     {} ({})",
                report.mask_as_is,
                names(&report.mask_as_is_features())
            );
        }
    }
    emit(&out)?;
    if report.verdict == Verdict::Incompatible {
        let first = report.reasons.iter().find(|r| r.severity() == Verdict::Incompatible);
        return Err(CliError::invalid(format!(
            "incompatible: {}; mask {} ({}) in the source policy",
            first.map(|r| r.to_string()).unwrap_or_default(),
            report.mask,
            names(&report.mask_features())
        )));
    }
    Ok(())
}

/// The one line a text report leads with: the verdict, what moves or blocks, what to mask.
fn answer(report: &Report) -> String {
    let features = |m: Xfeatures| {
        let mut fs: Vec<xstate::policy::Feature> = Vec::new();
        for c in m.iter() {
            if let Some(f) = xstate::policy::Feature::of_component(c.index())
                && !fs.contains(&f)
            {
                fs.push(f);
            }
        }
        names(&fs)
    };
    let first =
        |v: Verdict| report.reasons.iter().find(|r| r.severity() == v).map(|r| r.to_string()).unwrap_or_default();
    match report.verdict {
        Verdict::Compatible => "compatible as is".into(),
        Verdict::AfterRelayout => {
            let moved: Xfeatures = report
                .reasons
                .iter()
                .filter(|r| matches!(r, Reason::OffsetDiffers { .. } | Reason::AlignDiffers { .. }))
                .filter_map(|r| r.component())
                .collect();
            let what = if moved.is_empty() {
                first(Verdict::AfterRelayout)
            } else {
                format!(
                    "{} component{} move ({})",
                    moved.len(),
                    if moved.len() == 1 { "" } else { "s" },
                    features(moved)
                )
            };
            format!("compatible after re-layout: {what}; mask {} for as is", names(&report.mask_as_is_features()))
        }
        Verdict::Incompatible => format!(
            "incompatible: {}; mask {} for re-layout",
            first(Verdict::Incompatible),
            names(&report.mask_features())
        ),
    }
}

/// The image of `--image`: a bare image, or a record (recognised by its magic, type code or
/// size rule) with the XCR0, IA32_XSS and layout it records (a kvm_xsave records no XCR0).
struct SourceImage {
    bytes: Vec<u8>,
    format: Format,
    xcr0: Option<Xfeatures>,
    xss: Option<Xfeatures>,
    layout: Option<Layout>,
}

fn image_of(path: &Path, layout: &Layout) -> CliResult<SourceImage> {
    let bytes = read_file(path)?;
    let format = record::detect(&bytes, layout).unwrap_or(Format::Image);
    // A bare image, or a container whose vCPUs are checked one by one (cmd/container.rs).
    if format == Format::Image || format.is_container() {
        return Ok(SourceImage { bytes, format, xcr0: None, xss: None, layout: None });
    }
    let name = path.display();
    let c = record::read(format, &bytes, layout, &Options::default())
        .map_err(|e| CliError::invalid(format!("{name}: {e}")))?;
    let Some((state, image)) = c.state().and_then(|s| s.image.as_ref().map(|i| (s, i))) else {
        return Err(CliError::invalid(format!("{name}: {format}: holds no XSAVE image (no xsave state)")));
    };
    Ok(SourceImage { bytes: image.to_vec(), format, xcr0: state.xcr0, xss: state.xss, layout: c.layout.clone() })
}

/// Every file under `dir`, sorted. Directories are walked, symbolic links to them are not
/// (a link to `.` would read every dump again at each level): they are listed, and the
/// matrix names them unusable.
fn files(dir: &Path, out: &mut Vec<PathBuf>) -> CliResult {
    let rd = std::fs::read_dir(dir).map_err(|e| CliError::usage(format!("{}: {e}", dir.display())))?;
    for e in rd {
        let e = e.map_err(|e| CliError::usage(format!("{}: {e}", dir.display())))?;
        let p = e.path();
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            files(&p, out)?;
        } else {
            out.push(p);
        }
    }
    Ok(())
}

/// A listed path that is a symbolic link to a directory (see [`files`]).
fn linked_dir(p: &Path) -> bool {
    std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_symlink()) && p.is_dir()
}

/// What makes two layouts the same for migration: supported masks, compaction/XSAVES, and
/// each component's size, offset, class and alignment.
fn class_key(l: &Layout) -> Vec<u64> {
    let mut k = vec![l.user_supported().bits(), l.supervisor_supported().bits()];
    k.push(u64::from(l.features().compaction()) | u64::from(l.features().xsaves()) << 1);
    for c in l.supported().iter() {
        let g = l.geometry(c).unwrap_or_default();
        k.push(
            u64::from(c.index())
                | u64::from(g.size) << 8
                | u64::from(g.offset) << 32
                | u64::from(g.align64) << 62
                | u64::from(g.supervisor) << 63,
        );
    }
    k
}

fn matrix(dir: &Path, as_json: bool, html: Option<&Path>) -> CliResult {
    let started = std::time::Instant::now();
    let page_to_stdout = html.is_some_and(|h| matches!(resolve(h), Ok(Destination::Stdout)));
    if page_to_stdout && as_json {
        return Err(CliError::usage("--html - and --json both write to standard output: give --html a file"));
    }
    // Every host read, for the page's baseline (only with --html).
    let mut hosts: Vec<Host> = Vec::new();
    let mut paths = Vec::new();
    files(dir, &mut paths)?;
    paths.sort();
    if paths.is_empty() {
        return Err(CliError::usage(format!("{}: no files", dir.display())));
    }
    let mut layouts: Vec<Layout> = Vec::new();
    let mut class_of_key: HashMap<Vec<u64>, usize> = HashMap::new();
    let mut cpus: Vec<(String, usize)> = Vec::new();
    let mut cpu_notes: Vec<Vec<String>> = Vec::new();
    let mut unusable: Vec<(String, String)> = Vec::new();
    // CPUs whose dump lacks the subleaf of a user component: the matrix (user state) cannot
    // place it, so it claims nothing about them.
    let mut incomplete: Vec<(String, Xfeatures)> = Vec::new();
    let mut members: Vec<Vec<usize>> = Vec::new();
    for p in &paths {
        let name = p.strip_prefix(dir).unwrap_or(p).display().to_string();
        if linked_dir(p) {
            unusable.push((name, "a symbolic link to a directory: not followed".into()));
            continue;
        }
        let loaded = load(p);
        if html.is_some() {
            let host = match &loaded {
                Ok(src) => Host::from_cpuid(name.clone(), &src.cpuid).ok(),
                Err(_) => crate::cmd::baseline::read_host(p, name.clone()).ok(),
            };
            hosts.extend(host);
        }
        match loaded {
            Ok(src) if !(src.omitted - catalogue_supervisor()).is_empty() => {
                incomplete.push((name, src.omitted - catalogue_supervisor()));
            }
            Ok(src) => {
                cpu_notes.push(src.notes());
                let l = src.layout;
                let key = class_key(&l);
                let next = layouts.len();
                let k = *class_of_key.entry(key).or_insert(next);
                if k == next {
                    layouts.push(l);
                    members.push(Vec::new());
                }
                members[k].push(cpus.len());
                cpus.push((name, k));
            }
            Err(e) => unusable
                .push((name, e.message.strip_prefix(&format!("{}: ", p.display())).unwrap_or(&e.message).to_string())),
        }
    }
    // A matrix of nothing answers nothing: refused, as `policy --baseline` refuses such a folder.
    if cpus.is_empty()
        && incomplete.is_empty()
        && let Some((first, why)) = unusable.first()
    {
        return Err(CliError::invalid(format!(
            "{}: no CPUID dump of a CPU with XSAVE among its {} files ({first}: {why})",
            dir.display(),
            unusable.len()
        )));
    }
    let n = layouts.len();
    // Class-level verdicts: no allocation per pair.
    let mut cv = vec![Verdict::Compatible; n * n];
    for i in 0..n {
        for j in 0..n {
            cv[i * n + j] = verdict(&Side::user_max(&layouts[i]), &Side::user_max(&layouts[j]));
        }
    }
    let mut counts = [0usize; 3];
    for &(_, a) in &cpus {
        for &(_, b) in &cpus {
            counts[cv[a * n + b] as usize] += 1;
        }
    }
    if as_json {
        let code = |v: Verdict| v as u8;
        let matrix: Vec<Vec<u8>> =
            cpus.iter().map(|&(_, a)| cpus.iter().map(|&(_, b)| code(cv[a * n + b])).collect()).collect();
        let mut pairs = Vec::new();
        for i in 0..n {
            for j in 0..n {
                if i != j && cv[i * n + j] != Verdict::Compatible {
                    let r = check(&Side::user_max(&layouts[i]), &Side::user_max(&layouts[j]));
                    let mut v = report_json(&r);
                    v["from"] = json!(i);
                    v["to"] = json!(j);
                    pairs.push(v);
                }
            }
        }
        let classes: Vec<Value> = (0..n)
            .map(|k| {
                let l = &layouts[k];
                json!({
                    "id": k,
                    "example": cpus[members[k][0]].0,
                    "members": members[k].len(),
                    "xcr0_supported": format!("{:#x}", l.user_supported().bits()),
                    "xss_supported": format!("{:#x}", l.supervisor_supported().bits()),
                    "standard_size_max": l.standard_size_max(),
                    "compaction": l.features().compaction(),
                })
            })
            .collect();
        let v = json!({
            "verdict_codes": ["compatible", "relayout", "incompatible"],
            "cpus": cpus.iter().zip(&cpu_notes).map(|((name, k), n)| json!({"name": name, "class": k, "notes": n})).collect::<Vec<_>>(),
            "unusable": unusable.iter().map(|(name, e)| json!({"name": name, "error": e})).collect::<Vec<_>>(),
            "incomplete": incomplete.iter().map(|(name, m)| json!({
                "name": name,
                "unknown": mask_json(*m),
                "unknown_names": m.names().to_string(),
            })).collect::<Vec<_>>(),
            "classes": classes,
            "class_matrix": (0..n).map(|i| (0..n).map(|j| code(cv[i * n + j])).collect::<Vec<_>>()).collect::<Vec<_>>(),
            "class_pairs": pairs,
            "matrix": matrix,
            "counts": {"compatible": counts[0], "relayout": counts[1], "incompatible": counts[2]},
        });
        let mut out = std::io::BufWriter::new(std::io::stdout().lock());
        use std::io::Write;
        serde_json::to_writer(&mut out, &v)
            .map_err(|e| CliError::usage(format!("stdout: {e}")))
            .and_then(|()| writeln!(out).map_err(|e| CliError::usage(format!("stdout: {e}"))))?;
        drop(out);
    }
    let pairs = (counts[0] + counts[1] + counts[2]).max(1) as f64;
    let pct = |k: usize| 100.0 * counts[k] as f64 / pairs;
    let lead = format!(
        "{:.0}% of CPU pairs move as is, {:.0}% after re-layout, {:.0}% are incompatible ({} CPUs, {} layout classes)",
        pct(0),
        pct(1),
        pct(2),
        cpus.len(),
        n
    );
    let written = match html {
        Some(path) => {
            let b = xstate::fleet::baseline(&hosts, xstate::policy::FeatureSet::EMPTY);
            let fleet = crate::picture::matrix::Fleet {
                dir: &dir.display().to_string(),
                answer: &lead,
                layouts: &layouts,
                members: &members,
                cpus: &cpus,
                verdicts: &cv,
                counts,
                incomplete: &incomplete,
                unusable: &unusable,
                baseline: b.as_ref().map(|b| (b, &hosts[..])).map_err(|e| e.to_string()),
                seconds: started.elapsed().as_secs_f64(),
            };
            let page = crate::picture::matrix::page(&fleet);
            write_output(path, page.as_bytes())?;
            if page_to_stdout {
                return Ok(());
            }
            Some((path, page.len()))
        }
        None => None,
    };
    if as_json {
        return Ok(());
    }
    let mut out = String::new();
    say!(out, "{lead}");
    let partial = cpu_notes.iter().filter(|n| !n.is_empty()).count();
    say!(
        out,
        "{} CPUs in {} layout classes ({} read with supervisor components left out, see --json notes); {} incomplete, {} unusable",
        cpus.len(),
        n,
        partial,
        incomplete.len(),
        unusable.len()
    );
    for k in 0..n {
        let l = &layouts[k];
        say!(
            out,
            "  L{k:<3} {:>4} CPUs  XCR0 {:#9x}  std max {:>5}  e.g. {}",
            members[k].len(),
            l.user_supported().bits(),
            l.standard_size_max(),
            cpus[members[k][0]].0
        );
    }
    say!(out, "\nfrom (rows) -> to (columns): '=' compatible as is, 'r' after re-layout, 'x' incompatible");
    say_part!(out, "      ");
    for j in 0..n {
        say_part!(out, "{}", j % 10);
    }
    say!(out);
    for i in 0..n {
        let row: String = (0..n)
            .map(|j| match cv[i * n + j] {
                Verdict::Compatible => '=',
                Verdict::AfterRelayout => 'r',
                Verdict::Incompatible => 'x',
            })
            .collect();
        say!(out, "  L{i:<3}{row}");
    }
    say!(out, "\nCPU pairs: {} compatible as is, {} after re-layout, {} incompatible", counts[0], counts[1], counts[2]);
    for (name, m) in &incomplete {
        say!(out, "incomplete: {name}: CPUID 0xD subleaf missing for {m} ({}): no verdict", m.names());
    }
    for (name, e) in &unusable {
        say!(out, "unusable: {name}: {e}");
    }
    if let Some((path, len)) = written {
        say!(out, "wrote {}: the fleet page ({len} bytes)", path.display());
    }
    emit(&out)
}
