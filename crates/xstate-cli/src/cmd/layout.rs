//! `xstate layout [--cpuid FILE] [--xcr0 MASK] [--xss MASK] [--json]`: one CPU's geometry.

use clap::Args;
use serde_json::{Value, json};
use xstate::layout::{Outcome, SizeCheck};
use xstate::{Layout, Xfeatures};

use crate::common::{CliResult, CpuArgs, checked_masks, hex, mask_json, placeable, print_json};
use crate::output::outln;

/// Arguments of `xstate layout`: the CPU, and the XCR0 (standard size) and XCR0 | XSS
/// (compacted size) to size for.
#[derive(Args, Debug)]
pub struct LayoutArgs {
    #[command(flatten)]
    pub cpu: CpuArgs,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
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
        let mut flags = Vec::new();
        if g.supervisor {
            flags.push("supervisor");
        }
        if g.align64 {
            flags.push("align64");
        }
        if g.xfd {
            flags.push("xfd");
        }
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

/// Runs `xstate layout`.
pub fn run(args: &LayoutArgs) -> CliResult {
    let src = args.cpu.source()?;
    let (xcr0, xss) = args.cpu.masks(&src, (None, None));
    placeable(&src, xcr0 | xss)?;
    let (xcr0, xss) = checked_masks(&src.layout, xcr0, xss)?;
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
