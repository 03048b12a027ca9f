//! `xstate layout [--cpuid FILE] [--xcr0 MASK] [--xss MASK] [--json] [--svg FILE] [--html FILE]`:
//! one CPU's geometry, as a table, JSON or a picture; `xstate layout --diff A B`: two CPUs
//! side by side, with the components that move.

use clap::Args;
use serde_json::{Value, json};
use xstate::layout::{Outcome, SizeCheck};
use xstate::{Layout, Xfeatures};

use std::path::PathBuf;

use crate::common::{
    CliError, CliResult, CpuArgs, Source, checked_masks, hex, mask_json, placeable, print_json, say, source,
    write_output,
};
use crate::output::{Destination, emit, outln, resolve, summary};
use crate::picture::{self, layout::Panel};

/// Arguments of `xstate layout`: the CPU, and the XCR0 (standard size) and XCR0 | XSS
/// (compacted size) to size for.
#[derive(Args, Debug)]
pub struct LayoutArgs {
    #[command(flatten)]
    pub cpu: CpuArgs,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// Draw the layout to scale as SVG into FILE (`-`: standard output).
    #[arg(long, value_name = "FILE", conflicts_with = "json")]
    pub svg: Option<PathBuf>,
    /// Draw it into a self-contained HTML page with the component table (`-`: standard output).
    #[arg(long, value_name = "FILE", conflicts_with = "json")]
    pub html: Option<PathBuf>,
    /// Two CPUs side by side (each a CPUID source, as --cpuid): which components move, and
    /// with --svg/--html the picture with them linked. --xcr0/--xss, if given, apply to both.
    #[arg(long, num_args = 2, value_names = ["A", "B"], conflicts_with_all = ["cpuid", "json"])]
    pub diff: Option<Vec<PathBuf>>,
}

/// The layout as JSON, with the keys of the command-line contract plus details.
pub fn layout_json(layout: &Layout, xcr0: Xfeatures, xss: Xfeatures) -> Value {
    let enabled = xcr0 | xss;
    let components: Vec<Value> = layout
        .supported()
        .iter()
        .map(|c| {
            let g = layout.geometry(c).unwrap_or_default();
            json!({
                "index": c.index(),
                "name": layout.name(c),
                "size": g.size,
                "offset": if g.supervisor { Value::Null } else { json!(g.offset) },
                "compacted_offset": layout.compacted_offset(c, enabled).map_or(Value::Null, |o| json!(o)),
                "supervisor": g.supervisor,
                "align64": g.align64,
                "xfd": g.xfd,
                "enabled": enabled.contains(c),
            })
        })
        .collect();
    let holes: Vec<Value> =
        layout.holes(xcr0).unwrap_or_default().iter().map(|r| json!({"start": r.start, "end": r.end})).collect();
    json!({
        "xcr0_supported": mask_json(layout.user_supported()),
        "xss_supported": mask_json(layout.supervisor_supported()),
        "xsave_features": layout.features().names().collect::<Vec<_>>(),
        "xcr0": mask_json(xcr0),
        "xss": mask_json(xss),
        "standard_size_max": layout.standard_size_max(),
        "standard_size": layout.standard_size(xcr0),
        "compacted_size": layout.compacted_size(enabled),
        "holes": holes,
        "components": components,
        "anomalies": layout.anomalies().iter().map(|a| a.to_string()).collect::<Vec<_>>(),
    })
}

/// A size cross-check as JSON.
pub fn check_json(c: &SizeCheck) -> Value {
    let (verdict, why) = match &c.outcome {
        Outcome::Agrees => ("agrees", None),
        Outcome::Explained => ("explained", None),
        Outcome::NotApplicable(w) => ("not_applicable", Some((*w).to_string())),
        Outcome::Mismatch(w) => ("mismatch", Some(w.clone())),
    };
    json!({
        "field": c.field.register(),
        "what": c.field.description(),
        "reported": c.reported,
        "computed": c.computed,
        "mask": c.mask.map(mask_json),
        "ok": c.outcome.is_ok(),
        "verdict": verdict,
        "reason": why,
    })
}

/// A component's flags as the table and the pictures name them: supervisor, align64, xfd.
pub fn component_flags(g: &xstate::Geometry) -> Vec<&'static str> {
    [(g.supervisor, "supervisor"), (g.align64, "align64"), (g.xfd, "xfd")]
        .into_iter()
        .filter_map(|(set, name)| set.then_some(name))
        .collect()
}

/// Prints the component table and sizes.
pub fn print_table(layout: &Layout, xcr0: Xfeatures, xss: Xfeatures) -> CliResult {
    let enabled = xcr0 | xss;
    let sup = layout.supervisor_supported();
    outln!(
        "supported: XCR0 {} ({}), IA32_XSS {} ({})",
        layout.user_supported(),
        layout.user_supported().names(),
        sup,
        sup.names()
    );
    outln!("XSAVE features: {}", layout.features().names().collect::<Vec<_>>().join(" "));
    outln!("enabled:   XCR0 {} ({}), IA32_XSS {}", xcr0, xcr0.names(), xss);
    outln!();
    outln!("{:>5}  {:<14} {:>6}  {:>8}  {:>9}  flags", "index", "component", "size", "offset", "compacted");
    for c in layout.supported() {
        let g = layout.geometry(c).unwrap_or_default();
        let mut flags = component_flags(&g);
        if !enabled.contains(c) {
            flags.push("(not enabled)");
        }
        outln!(
            "{:>5}  {:<14} {:>6}  {:>8}  {:>9}  {}",
            c.index(),
            layout.name(c),
            g.size,
            if g.supervisor { "-".to_string() } else { hex(g.offset) },
            layout.compacted_offset(c, enabled).map_or("-".to_string(), hex),
            flags.join(" ")
        );
    }
    outln!();
    let std = layout.standard_size(xcr0).unwrap_or(0);
    outln!(
        "standard size for XCR0 {xcr0}: {std} ({std:#x}); maximum {} ({:#x})",
        layout.standard_size_max(),
        layout.standard_size_max()
    );
    match layout.compacted_size(enabled) {
        Some(s) if layout.features().compaction() => outln!("compacted size for XCR0|XSS {enabled}: {s} ({s:#x})"),
        Some(s) => outln!("compacted size for XCR0|XSS {enabled}: {s} ({s:#x}) (this CPU has no XSAVEC/XSAVES)"),
        None => {}
    }
    let holes = layout.holes(xcr0).unwrap_or_default();
    if !holes.is_empty() {
        let h: Vec<String> =
            holes.iter().map(|r| format!("{:#x}..{:#x} ({} bytes)", r.start, r.end, r.end - r.start)).collect();
        outln!("holes in the standard format: {}", h.join(", "));
    }
    for a in layout.anomalies() {
        outln!("note: {a}");
    }
    Ok(())
}

/// Writes the pictures `--svg` and `--html` ask for, each with a summary line.
fn pictures(args: &LayoutArgs, panels: &[Panel<'_>]) -> CliResult {
    let to_stdout = |p: &Option<PathBuf>| p.as_ref().is_some_and(|p| matches!(resolve(p), Ok(Destination::Stdout)));
    if to_stdout(&args.svg) && to_stdout(&args.html) {
        return Err(CliError::usage("--svg and --html both write to standard output: give one of them a file"));
    }
    let what = if panels.len() == 2 { "layouts" } else { "layout" };
    let names: Vec<&str> = panels.iter().map(|p| p.name).collect();
    for (path, bytes, kind) in [
        (&args.svg, args.svg.as_ref().map(|_| picture::layout::svg(panels)), "SVG"),
        (&args.html, args.html.as_ref().map(|_| picture::layout::html(panels)), "HTML"),
    ] {
        if let (Some(path), Some(bytes)) = (path, bytes) {
            write_output(path, bytes.as_bytes())?;
            summary(
                path,
                &format!(
                    "wrote {}: XSAVE {what} of {} ({kind}, {} bytes)\n",
                    path.display(),
                    names.join(" and "),
                    bytes.len()
                ),
            )?;
        }
    }
    Ok(())
}

/// One side of `--diff`: its source and the masks it is drawn for.
fn diff_side(args: &LayoutArgs, path: &PathBuf) -> CliResult<(Source, Xfeatures, Xfeatures)> {
    let src = source(Some(path))?;
    let (xcr0, xss) = args.cpu.masks(&src, (None, None));
    placeable(&src, xcr0 | xss)?;
    let (xcr0, xss) = checked_masks(&src.layout, xcr0, xss)
        .map_err(|e| CliError { message: format!("{}: {}", src.name, e.message), ..e })?;
    Ok((src, xcr0, xss))
}

/// `xstate layout --diff A B`.
fn diff(args: &LayoutArgs, pair: &[PathBuf]) -> CliResult {
    let (a, b) = (diff_side(args, &pair[0])?, diff_side(args, &pair[1])?);
    let panels = [
        Panel { name: &a.0.name, layout: &a.0.layout, xcr0: a.1, xss: a.2, omitted: a.0.omitted },
        Panel { name: &b.0.name, layout: &b.0.layout, xcr0: b.1, xss: b.2, omitted: b.0.omitted },
    ];
    if args.svg.is_some() || args.html.is_some() {
        return pictures(args, &panels);
    }
    let (la, lb) = (&a.0.layout, &b.0.layout);
    let (ma, mb) = (a.0.omitted, b.0.omitted);
    let (ca, cb) = ((a.1 | a.2) & la.supported(), (b.1 | b.2) & lb.supported());
    let mut moved = Vec::new();
    let mut rows = Vec::new();
    let both = la.supported() & lb.supported();
    // A component a side enumerates without its subleaf is unknown there: never "absent".
    for c in (la.supported() | lb.supported() | ma | mb).iter() {
        let (ga, gb) = (la.geometry(c), lb.geometry(c));
        let std = |g: Option<xstate::Geometry>, missing: Xfeatures| match g {
            _ if missing.contains(c) => "unknown".to_string(),
            Some(g) if g.supervisor => "-".to_string(),
            Some(g) => hex(g.offset),
            None => "absent".to_string(),
        };
        let size = |g: Option<xstate::Geometry>, missing: Xfeatures| match g {
            _ if missing.contains(c) => "?".to_string(),
            Some(g) => g.size.to_string(),
            None => "-".to_string(),
        };
        let (oa, ob) = (la.compacted_offset(c, ca), lb.compacted_offset(c, cb));
        let note = if (ma | mb).contains(c) {
            let side = match (ma.contains(c), mb.contains(c)) {
                (true, true) => "A and B",
                (true, false) => "A",
                _ => "B",
            };
            format!("unknown on {side}: enumerated, subleaf missing")
        } else if !both.contains(c) {
            format!("only on {}", if ga.is_some() { "A" } else { "B" })
        } else if ga.map(|g| g.size) != gb.map(|g| g.size) {
            "size differs".into()
        } else if std(ga, ma) != std(gb, mb) {
            moved.push(c.name().to_string());
            "moves".into()
        } else if oa != ob {
            "compacted offset differs".into()
        } else {
            String::new()
        };
        rows.push(format!(
            "{:>5}  {:<14} {:>6} {:>6}  {:>8} {:>8}  {:>9} {:>9}  {note}",
            c.index(),
            c.name().to_string(),
            size(ga, ma),
            size(gb, mb),
            std(ga, ma),
            std(gb, mb),
            oa.map_or("-".into(), hex),
            ob.map_or("-".into(), hex),
        ));
    }
    let mut text = String::new();
    let only_a = (la.supported() - lb.supported() - mb).names().to_string();
    let only_b = (lb.supported() - la.supported() - ma).names().to_string();
    say!(
        text,
        "{} component{} move between A and B in the standard format{}; only on A: {only_a}; only on B: {only_b}",
        moved.len(),
        if moved.len() == 1 { "" } else { "s" },
        if moved.is_empty() { String::new() } else { format!(" ({})", moved.join(", ")) }
    );
    say!(text, "A: {} (XCR0 {}, IA32_XSS {})", a.0.name, a.1, a.2);
    say!(text, "B: {} (XCR0 {}, IA32_XSS {})", b.0.name, b.1, b.2);
    for (side, src) in [("A", &a.0), ("B", &b.0)] {
        for n in src.notes() {
            say!(text, "note: {side}: {n}");
        }
    }
    say!(text);
    say!(
        text,
        "{:>5}  {:<14} {:>6} {:>6}  {:>8} {:>8}  {:>9} {:>9}",
        "index",
        "component",
        "size A",
        "B",
        "std A",
        "B",
        "compact A",
        "B"
    );
    for r in rows {
        say!(text, "{r}");
    }
    emit(&text)
}

/// Runs `xstate layout`.
pub fn run(args: &LayoutArgs) -> CliResult {
    if let Some(pair) = &args.diff {
        return diff(args, pair);
    }
    let src = args.cpu.source()?;
    let (xcr0, xss) = args.cpu.masks(&src, (None, None));
    placeable(&src, xcr0 | xss)?;
    let (xcr0, xss) = checked_masks(&src.layout, xcr0, xss)?;
    if args.svg.is_some() || args.html.is_some() {
        return pictures(args, &[Panel { name: &src.name, layout: &src.layout, xcr0, xss, omitted: src.omitted }]);
    }
    let notes = src.notes();
    // The XCR0 in force when the data was read: known on the host (XGETBV), inferred for a dump.
    let known_xcr0 = args.cpu.cpuid.is_none().then_some(src.default_xcr0);
    let checks = src.layout.cross_check(known_xcr0, None);
    if args.json {
        let mut v = layout_json(&src.layout, xcr0, xss);
        v["source"] = json!(src.name);
        v["vendor"] = json!(src.cpuid.vendor());
        v["brand"] = json!(src.cpuid.brand());
        v["size_checks"] = Value::from(checks.iter().map(check_json).collect::<Vec<_>>());
        v["omitted"] = mask_json(src.omitted);
        v["notes"] = json!(notes);
        print_json(&v)
    } else {
        outln!(
            "source: {}{}",
            src.name,
            src.cpuid
                .vendor()
                .map(|v| format!(" ({v}{})", src.cpuid.brand().map(|b| format!(", {b}")).unwrap_or_default()))
                .unwrap_or_default()
        );
        print_table(&src.layout, xcr0, xss)?;
        for n in &notes {
            outln!("note: {n}");
        }
        outln!();
        outln!("sizes the source reported, against the computed ones:");
        for c in &checks {
            outln!("  {c}");
        }
        Ok(())
    }
}
