//! `xstate policy [--cpuid HOST] [--features LIST | --xcr0 MASK --xss MASK] [--current-xcr0 M]
//! [--current-xss M] [--json]`: a guest's CPUID leaf 0xD derived from a host and a feature
//! selection, with its sizes.

use std::path::PathBuf;

use clap::Args;
use serde_json::{Value, json};
use xstate::Xfeatures;
use xstate::policy::{Components, Policy, PolicyError, Selection};

use crate::common::{CliError, CliResult, mask_json, parse_mask, print_json, source};
use crate::output::outln;

/// Arguments of `xstate policy`.
#[derive(Args, Debug)]
pub struct PolicyArgs {
    /// The host's CPUID dump (AIDA64/InstLatX64 text, `cpuid -r` output, or xstate JSON);
    /// default: this host.
    #[arg(long, value_name = "HOST")]
    pub cpuid: Option<PathBuf>,
    /// Features to expose, comma-separated: avx, mpx, avx512, pku, amx, apx, lwp, pt, pasid,
    /// cet, hdc, uintr, lbr, hwp, and the instruction features xsaveopt, xsavec, xgetbv1,
    /// xsaves, xfd (default: the host's). x87 and SSE are always exposed; `all` means every
    /// host feature; `-name` takes one away (`all,-amx`). Default: all.
    #[arg(long, value_name = "LIST")]
    pub features: Option<String>,
    /// The guest's maximum XCR0 as a raw mask (hex 0x… or decimal) instead of feature names;
    /// --features may then list instruction features only.
    #[arg(long, value_name = "MASK", value_parser = parse_mask)]
    pub xcr0: Option<Xfeatures>,
    /// The guest's maximum IA32_XSS as a raw mask (with --xcr0); default 0.
    #[arg(long, value_name = "MASK", value_parser = parse_mask, requires = "xcr0")]
    pub xss: Option<Xfeatures>,
    /// The guest's current XCR0, for 0xD.0 EBX and 0xD.1 EBX; default: the maximum XCR0.
    #[arg(long, value_name = "M", value_parser = parse_mask)]
    pub current_xcr0: Option<Xfeatures>,
    /// The guest's current IA32_XSS, for 0xD.1 EBX; default 0.
    #[arg(long, value_name = "M", value_parser = parse_mask)]
    pub current_xss: Option<Xfeatures>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

fn policy_error(e: PolicyError) -> CliError {
    match e {
        PolicyError::UnknownFeature { .. } | PolicyError::AlwaysOn { .. } => {
            CliError::usage(format!("--features: {e}"))
        }
        e => CliError::invalid(format!("policy refused: {e}")),
    }
}

/// The selection the arguments describe.
fn selection(args: &PolicyArgs) -> CliResult<Selection> {
    let listed = match &args.features {
        Some(list) => Some(Selection::parse(list).map_err(policy_error)?),
        None => None,
    };
    let Some(xcr0) = args.xcr0 else { return Ok(listed.unwrap_or_default()) };
    let mut sel = Selection::masks(xcr0, args.xss.unwrap_or_default());
    if let Some(l) = listed {
        let components_named = match l.components {
            Components::Features(set) => !set.is_empty(),
            _ => true,
        };
        if components_named || l.without.iter().any(|f| !f.is_instruction()) {
            return Err(CliError::usage(
                "--features names components (or `all`) and --xcr0 gives them as a mask: use one or the other",
            ));
        }
        sel.instructions = l.instructions;
        sel.without = l.without;
    }
    Ok(sel)
}

/// Runs `xstate policy`.
pub fn run(args: &PolicyArgs) -> CliResult {
    let src = source(args.cpuid.as_ref())?;
    let sel = selection(args)?;
    let p = Policy::derive(&src.layout, &sel).map_err(policy_error)?;
    let cur_xcr0 = args.current_xcr0.unwrap_or(p.xcr0_max());
    let cur_xss = args.current_xss.unwrap_or_default();
    let leaf = p.leaf0d(cur_xcr0, cur_xss).map_err(|e| CliError::invalid(format!("current XCR0/XSS: {e}")))?;
    let standard = p.standard_size(cur_xcr0).unwrap_or(0);
    let compacted = p.compacted_size(cur_xcr0 | cur_xss).unwrap_or(0);
    let features: Vec<&str> = p.features().iter().map(|f| f.name()).collect();
    if args.json {
        let subleaves: Vec<Value> = leaf
            .iter()
            .map(|(i, r)| json!({"index": i, "eax": r.eax, "ebx": r.ebx, "ecx": r.ecx, "edx": r.edx}))
            .collect();
        return print_json(&json!({
            "source": src.name,
            "xcr0_max": mask_json(p.xcr0_max()),
            "xss_max": mask_json(p.xss_max()),
            "standard_size_max": p.standard_size_max(),
            "compacted_size_max": p.compacted_size_max(),
            "xsave_features": p.instructions().names().collect::<Vec<_>>(),
            "features": features,
            "current_xcr0": mask_json(cur_xcr0),
            "current_xss": mask_json(cur_xss),
            "standard_size": standard,
            "compacted_size": compacted,
            "leaf0d": subleaves,
        }));
    }
    outln!("host: {}", src.name);
    outln!("features: x87,sse{}{}", if features.is_empty() { "" } else { "," }, features.join(","));
    outln!(
        "maximum XCR0 {} ({}), IA32_XSS {} ({})",
        p.xcr0_max(),
        p.xcr0_max().names(),
        p.xss_max(),
        p.xss_max().names()
    );
    outln!("current XCR0 {cur_xcr0}, IA32_XSS {cur_xss}");
    outln!();
    outln!("CPUID leaf 0xD:");
    outln!("{:>8}  {:>10} {:>10} {:>10} {:>10}", "subleaf", "EAX", "EBX", "ECX", "EDX");
    for (i, r) in leaf.iter() {
        outln!("{:>8}  {:#010x} {:#010x} {:#010x} {:#010x}", format!("{i:#x}"), r.eax, r.ebx, r.ecx, r.edx);
    }
    outln!("(every other subleaf reads 0)");
    outln!();
    let (smax, cmax) = (p.standard_size_max(), p.compacted_size_max());
    outln!("standard size: {smax} ({smax:#x}) for the maximum, {standard} ({standard:#x}) for the current XCR0");
    outln!(
        "compacted size: {cmax} ({cmax:#x}) for the maximum XCR0|XSS, {compacted} ({compacted:#x}) for the current{}",
        if p.compaction() { "" } else { " (the guest sees no XSAVEC/XSAVES)" }
    );
    Ok(())
}
