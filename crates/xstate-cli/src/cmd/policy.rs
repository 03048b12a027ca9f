//! `xstate policy [--cpuid HOST] [--features LIST | --xcr0 MASK --xss MASK] [--current-xcr0 M]
//! [--current-xss M] [--json]`: a guest's CPUID leaf 0xD derived from a host and a feature
//! selection, with its sizes. `xstate policy --baseline DUMPS... [--require LIST]`: the
//! baseline of many hosts ([`crate::cmd::baseline`]), written the same way.

use std::path::PathBuf;

use clap::Args;
use serde_json::{Value, json};
use xstate::Xfeatures;
use xstate::policy::{Components, Policy, PolicyError, Selection};

use crate::common::{CliError, CliResult, mask_json, parse_mask, print_json, say, source};
use crate::output::emit;

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
    /// The baseline of these hosts instead of one host's policy: CPUID dumps, folders of them
    /// (searched recursively), `host`, policy JSON. Hosts without XSAVE drop out, named.
    #[arg(long, value_name = "DUMPS", num_args = 1.., conflicts_with_all = ["cpuid", "features", "xcr0", "xss"])]
    pub baseline: Option<Vec<PathBuf>>,
    /// With --baseline: features every host must have (names as in --features); hosts without
    /// them drop out, named.
    #[arg(long, value_name = "LIST", requires = "baseline")]
    pub require: Option<String>,
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

/// A policy refusal as a CLI error: names that are not features are usage errors (exit 2).
pub fn policy_error(e: PolicyError) -> CliError {
    match e {
        PolicyError::UnknownFeature { .. } | PolicyError::AlwaysOn { .. } | PolicyError::EmptyList => {
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
    // `-name` alone takes from everything; with --xcr0 only instruction features may be listed.
    let removals_only = args.features.as_deref().is_some_and(|list| {
        list.split(|c: char| c == ',' || c.is_whitespace())
            .filter(|t| !t.is_empty())
            .all(|t| t.starts_with('-') || t.starts_with("no-"))
    });
    let Some(xcr0) = args.xcr0 else { return Ok(listed.unwrap_or_default()) };
    let mut sel = Selection::masks(xcr0, args.xss.unwrap_or_default());
    if let Some(l) = listed {
        let components_named = match l.components {
            Components::Features(set) => !set.is_empty(),
            _ => !removals_only,
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
    if let Some(hosts) = &args.baseline {
        return crate::cmd::baseline::run(args, hosts);
    }
    let src = source(args.cpuid.as_ref())?;
    let sel = selection(args)?;
    let p = Policy::derive(&src.layout, &sel).map_err(policy_error)?;
    let (cur_xcr0, cur_xss) = current(args, &p);
    if args.json {
        return print_json(&policy_json(&p, &src.name, cur_xcr0, cur_xss)?);
    }
    let text = policy_text(&p, cur_xcr0, cur_xss)?;
    emit(&format!("host: {}\n{text}", src.name))
}

/// The current XCR0 and XSS the arguments give (default: the maximum XCR0, XSS 0).
pub fn current(args: &PolicyArgs, p: &Policy) -> (Xfeatures, Xfeatures) {
    (args.current_xcr0.unwrap_or(p.xcr0_max()), args.current_xss.unwrap_or_default())
}

/// The policy's JSON (the keys of the command-line contract); a CPUID source for `--cpuid`.
pub fn policy_json(p: &Policy, source: &str, cur_xcr0: Xfeatures, cur_xss: Xfeatures) -> CliResult<Value> {
    let leaf = p.leaf0d(cur_xcr0, cur_xss).map_err(|e| CliError::invalid(format!("current XCR0/XSS: {e}")))?;
    let standard = p.standard_size(cur_xcr0).unwrap_or(0);
    let compacted = p.compacted_size(cur_xcr0 | cur_xss).unwrap_or(0);
    let features: Vec<&str> = p.features().iter().map(|f| f.name()).collect();
    let subleaves: Vec<Value> =
        leaf.iter().map(|(i, r)| json!({"index": i, "eax": r.eax, "ebx": r.ebx, "ecx": r.ecx, "edx": r.edx})).collect();
    Ok(json!({
        "source": source,
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
    }))
}

/// The names of `mask`'s components as `layout` calls them (`component 9` for Zen 2's
/// 64-byte bit 9, which is no PKRU); `none` for an empty mask.
fn names_on(layout: &xstate::Layout, mask: Xfeatures) -> String {
    let names: Vec<String> = mask.iter().map(|c| layout.name(c)).collect();
    if names.is_empty() { "none".into() } else { names.join("|") }
}

/// The policy as text: features, maxima, the leaf and the sizes.
pub fn policy_text(p: &Policy, cur_xcr0: Xfeatures, cur_xss: Xfeatures) -> CliResult<String> {
    let leaf = p.leaf0d(cur_xcr0, cur_xss).map_err(|e| CliError::invalid(format!("current XCR0/XSS: {e}")))?;
    let standard = p.standard_size(cur_xcr0).unwrap_or(0);
    let compacted = p.compacted_size(cur_xcr0 | cur_xss).unwrap_or(0);
    let features: Vec<&str> = p.features().iter().map(|f| f.name()).collect();
    let mut out = String::new();
    say!(out, "features: x87,sse{}{}", if features.is_empty() { "" } else { "," }, features.join(","));
    say!(
        out,
        "maximum XCR0 {} ({}), IA32_XSS {} ({})",
        p.xcr0_max(),
        names_on(p.host_layout(), p.xcr0_max()),
        p.xss_max(),
        names_on(p.host_layout(), p.xss_max())
    );
    say!(out, "current XCR0 {cur_xcr0}, IA32_XSS {cur_xss}");
    say!(out);
    say!(out, "CPUID leaf 0xD:");
    say!(out, "{:>8}  {:>10} {:>10} {:>10} {:>10}", "subleaf", "EAX", "EBX", "ECX", "EDX");
    for (i, r) in leaf.iter() {
        say!(out, "{:>8}  {:#010x} {:#010x} {:#010x} {:#010x}", format!("{i:#x}"), r.eax, r.ebx, r.ecx, r.edx);
    }
    say!(out, "(every other subleaf reads 0)");
    say!(out);
    let (smax, cmax) = (p.standard_size_max(), p.compacted_size_max());
    say!(out, "standard size: {smax} ({smax:#x}) for the maximum, {standard} ({standard:#x}) for the current XCR0");
    say!(
        out,
        "compacted size: {cmax} ({cmax:#x}) for the maximum XCR0|XSS, {compacted} ({compacted:#x}) for the current{}",
        if p.compaction() { "" } else { " (the guest sees no XSAVEC/XSAVES)" }
    );
    Ok(out)
}
