//! `xstate policy --baseline DUMPS... [--require LIST] [--json]`: the largest guest policy
//! every listed host runs ([`xstate::fleet::baseline`]), what each host gives up, and where the
//! hosts put each component of it. Written as `xstate policy` writes one host's policy, so the
//! JSON is a CPUID source for `--cpuid` everywhere, with the fleet view under `"baseline"`.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use xstate::Xfeatures;
use xstate::component::Reg;
use xstate::cpuid;
use xstate::fleet::{Baseline, Host, HostResult, baseline};
use xstate::policy::{Feature, FeatureSet, PolicyError};

use crate::cmd::policy::{PolicyArgs, current, policy_error, policy_json, policy_text};
use crate::common::{CliError, CliResult, HOST, host_source, mask_json, print_json, read_file, say};
use crate::output::emit;

/// Every file under `dir`, sorted by path.
pub fn files_under(dir: &Path) -> CliResult<Vec<PathBuf>> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> CliResult {
        let rd = std::fs::read_dir(dir).map_err(|e| CliError::usage(format!("{}: {e}", dir.display())))?;
        for e in rd {
            let p = e.map_err(|e| CliError::usage(format!("{}: {e}", dir.display())))?.path();
            if p.is_dir() { walk(&p, out)? } else { out.push(p) }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(dir, &mut out)?;
    out.sort();
    if out.is_empty() {
        return Err(CliError::usage(format!("{}: no files", dir.display())));
    }
    Ok(out)
}

/// One host from a CPUID source: `host`, a dump or policy JSON. A source that is not CPUID
/// data, or whose leaf 0xD is broken, is invalid input (exit 1) naming it; a CPU without
/// XSAVE is a host (it drops out of the baseline, named).
pub fn read_host(path: &Path, name: String) -> CliResult<Host> {
    let data = if path.as_os_str() == HOST {
        host_source()?.cpuid
    } else {
        let bytes = read_file(path)?;
        cpuid::parse(&String::from_utf8_lossy(&bytes))
            .map_err(|e| CliError::invalid(format!("{}: {e}", path.display())))?
    };
    Host::from_cpuid(name, &data).map_err(|e| CliError::invalid(format!("{}: {e}", path.display())))
}

/// The hosts the arguments list: files and `host` as given, folders searched recursively
/// (their files named relative to the folder).
pub fn hosts_from(paths: &[PathBuf]) -> CliResult<Vec<Host>> {
    let mut hosts = Vec::new();
    for p in paths {
        if p.as_os_str() == HOST {
            hosts.push(read_host(p, "this host".into())?);
        } else if p.is_dir() {
            for f in files_under(p)? {
                let name = f.strip_prefix(p).unwrap_or(&f).display().to_string();
                hosts.push(read_host(&f, name)?);
            }
        } else {
            hosts.push(read_host(p, p.display().to_string())?);
        }
    }
    Ok(hosts)
}

/// The features `--require` names (comma- or space-separated, as `--features`).
pub fn parse_require(list: &str) -> CliResult<FeatureSet> {
    let mut set = FeatureSet::EMPTY;
    for name in list.split(|c: char| c == ',' || c.is_whitespace()).filter(|t| !t.is_empty()) {
        let f = Feature::from_name(name)
            .ok_or_else(|| policy_error(PolicyError::UnknownFeature { name: name.to_string() }))?;
        set = set.with(f);
    }
    Ok(set)
}

/// The policy features behind a set of components, and the components no feature names.
pub fn feature_names(m: Xfeatures) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for c in (m - Xfeatures::LEGACY).iter() {
        let name = match Feature::of_component(c.index()) {
            Some(f) => f.name().to_string(),
            None => c.name().to_string(),
        };
        if !out.contains(&name) {
            out.push(name);
        }
    }
    out
}

fn list(names: &[String]) -> String {
    if names.is_empty() { "nothing".into() } else { names.join(", ") }
}

fn plural(n: usize, one: &str) -> String {
    format!("{n} {one}{}", if n == 1 { "" } else { "s" })
}

/// Up to three host names, then how many more.
fn some_hosts(hosts: &[Host], idx: &[usize]) -> String {
    let mut s: Vec<&str> = idx.iter().take(3).map(|&i| hosts[i].name.as_str()).collect();
    let more = idx.len().saturating_sub(3);
    let tail = if more > 0 { format!(" and {more} more") } else { String::new() };
    if s.is_empty() {
        s.push("none");
    }
    format!("{}{tail}", s.join(", "))
}

fn reg_name(r: Reg) -> &'static str {
    match r {
        Reg::Eax => "EAX",
        Reg::Ebx => "EBX",
        Reg::Ecx => "ECX",
        Reg::Edx => "EDX",
    }
}

/// `CPUID.7.0:EBX[16]`.
fn flag_place(leaf: u32, subleaf: u32, reg: Reg, bit: u8) -> String {
    if subleaf == 0 && leaf != 7 {
        format!("CPUID.{leaf:#x}:{}[{bit}]", reg_name(reg))
    } else {
        format!("CPUID.{leaf:#x}.{subleaf}:{}[{bit}]", reg_name(reg))
    }
}

/// The one-line answer: the baseline's masks and instruction features, how many hosts one leaf
/// 0xD serves, and how many hosts drop out.
pub fn answer(b: &Baseline, hosts: &[Host]) -> String {
    let kept = b.kept().count();
    let instr: Vec<&str> = b.instructions.iter().map(|f| f.name()).collect();
    let mut s = format!(
        "baseline of {}: XCR0 {} ({}), IA32_XSS {}, {}",
        plural(hosts.len(), "host"),
        b.xcr0,
        b.xcr0.names(),
        b.xss,
        if instr.is_empty() { "no XSAVE instruction features".into() } else { instr.join(" ") }
    );
    let first = b.classes[0].hosts.len();
    if b.classes.len() == 1 {
        s += &format!("; one leaf 0xD is true on all {}", plural(kept, "host"));
    } else {
        let moved = b.classes[1..].iter().fold(Xfeatures::EMPTY, |m, c| m | c.moved);
        s += &format!(
            "; one leaf 0xD is true on {first} of {kept} hosts ({} sit elsewhere on {}: {} classes; without them XCR0 {} serves all)",
            list(&feature_names(moved)),
            kept - first,
            b.classes.len(),
            b.one_leaf.xcr0
        );
    }
    let dropped = hosts.len() - kept;
    if dropped > 0 {
        s += &format!("; {} drop{} out", plural(dropped, "host"), if dropped == 1 { "s" } else { "" });
    }
    s
}

/// The fleet view as JSON (the `"baseline"` key of the output).
pub fn baseline_json(b: &Baseline, hosts: &[Host]) -> Value {
    let names = |idx: &[usize]| idx.iter().map(|&i| hosts[i].name.clone()).collect::<Vec<_>>();
    let host_list: Vec<Value> = b
        .hosts
        .iter()
        .zip(hosts)
        .map(|(r, h)| match r {
            HostResult::Dropped(d) => json!({"name": h.name, "dropped": d.to_string(), "class": null}),
            HostResult::Kept { class, gives_up } => json!({
                "name": h.name,
                "dropped": null,
                "class": class,
                "gives_up": {
                    "components": mask_json(gives_up.components),
                    "features": feature_names(gives_up.components),
                    "instructions": gives_up.instructions.iter().map(|f| f.name()).collect::<Vec<_>>(),
                    "flags": gives_up.flags.iter().map(|&g| b.gates[g].gate.flag.name).collect::<Vec<_>>(),
                    "relayout": mask_json(gives_up.relayout),
                    "relayout_features": feature_names(gives_up.relayout),
                },
                "omitted": mask_json(h.omitted),
            }),
        })
        .collect();
    let components: Vec<Value> = b
        .components
        .iter()
        .map(|p| {
            json!({
                "index": p.component.index(),
                "name": p.component.name().to_string(),
                "size": p.size,
                "same_on_every_host": p.places.len() == 1,
                "places": p.places.iter().map(|pl| json!({
                    "offset": pl.offset,
                    "align64": pl.align64,
                    "hosts": names(&pl.hosts),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    let classes: Vec<Value> = b
        .classes
        .iter()
        .enumerate()
        .map(|(k, c)| {
            let leaf = c.policy.leaf0d(c.policy.xcr0_max(), Xfeatures::EMPTY).unwrap_or_default();
            json!({
                "id": k,
                "members": c.hosts.len(),
                "example": hosts[c.hosts[0]].name,
                "hosts": names(&c.hosts),
                "moved": mask_json(c.moved),
                "moved_features": feature_names(c.moved),
                "leaf0d": leaf.iter().map(|(i, r)| json!({"index": i, "eax": r.eax, "ebx": r.ebx, "ecx": r.ecx, "edx": r.edx})).collect::<Vec<_>>(),
            })
        })
        .collect();
    let limits: Vec<Value> = b
        .limits
        .iter()
        .map(|l| {
            json!({
                "feature": l.feature.map(|f| f.name().to_string()).unwrap_or_else(|| feature_names(l.components).join(",")),
                "components": mask_json(l.components),
                "lacked": names(&l.lacked),
                "unplaced": names(&l.unplaced),
                "sizes": l.sizes.iter().map(|(c, size, h)| json!({"component": c.name().to_string(), "size": size, "hosts": names(h)})).collect::<Vec<_>>(),
                "needs": l.needs.map(|f| f.name()),
            })
        })
        .collect();
    let gating: Vec<Value> = b
        .gates
        .iter()
        .map(|g| {
            let f = g.gate.flag;
            json!({
                "flag": f.name,
                "leaf": f.leaf,
                "subleaf": f.subleaf,
                "register": reg_name(f.reg),
                "bit": f.bit,
                "needs": mask_json(g.gate.needs),
                "exposed": g.exposed,
                "guest": if !g.exposed { "clear" } else if g.on_every_host == Some(true) { "set" } else if g.on_every_host == Some(false) { "clear (not on every host)" } else { "unknown (a host's source lacks the leaf)" },
                "on_every_host": g.on_every_host,
                "hosts_with": g.hosts_with,
            })
        })
        .collect();
    json!({
        "answer": answer(b, hosts),
        "require": b.require.iter().map(|f| f.name()).collect::<Vec<_>>(),
        "hosts_covered": b.kept().count(),
        "hosts": host_list,
        "components": components,
        "classes": classes,
        "one_leaf": {
            "xcr0_max": mask_json(b.one_leaf.xcr0),
            "xss_max": mask_json(b.one_leaf.xss),
            "dropped": mask_json(b.one_leaf.dropped),
            "dropped_features": feature_names(b.one_leaf.dropped),
        },
        "limits": limits,
        "gating": gating,
        "gated_leaves": b.gated_leaves.iter().map(|l| json!({"leaf": l.leaf, "name": l.name, "exposed": l.exposed})).collect::<Vec<_>>(),
    })
}

/// The fleet view as text, after the answer line.
pub fn baseline_text(b: &Baseline, hosts: &[Host]) -> String {
    let mut out = String::new();
    let width = hosts.iter().map(|h| h.name.len()).max().unwrap_or(0).min(60);
    say!(out, "hosts:");
    for (r, h) in b.hosts.iter().zip(hosts) {
        match r {
            HostResult::Dropped(d) => say!(out, "  {:<width$}  dropped: {d}", h.name),
            HostResult::Kept { class, gives_up } => {
                let mut given: Vec<String> = feature_names(gives_up.components);
                given.extend(gives_up.instructions.iter().map(|f| f.name().to_string()));
                let mut line = format!("  {:<width$}  class {class}  gives up {}", h.name, list(&given));
                if !h.omitted.is_empty() {
                    line += &format!("; not placed by its source (CPUID 0xD subleaf missing): {}", h.omitted.names());
                }
                if !gives_up.flags.is_empty() {
                    let flags: Vec<&str> = gives_up.flags.iter().map(|&g| b.gates[g].gate.flag.name).collect();
                    line += &format!("; flags cleared: {}", flags.join(", "));
                }
                if !gives_up.relayout.is_empty() {
                    line += &format!(
                        "; {} elsewhere: class {class}'s own leaf 0xD, re-layout to migrate from class 0",
                        list(&feature_names(gives_up.relayout))
                    );
                }
                say!(out, "{line}");
            }
        }
    }
    if !b.limits.is_empty() {
        say!(out, "\nleft out of the baseline:");
        for l in &b.limits {
            let name = l.feature.map(|f| f.name().to_string()).unwrap_or_else(|| feature_names(l.components).join(","));
            let mut why = Vec::new();
            if !l.lacked.is_empty() {
                why.push(format!("lacked by {}: {}", plural(l.lacked.len(), "host"), some_hosts(hosts, &l.lacked)));
            }
            if !l.unplaced.is_empty() {
                why.push(format!(
                    "not placed by the sources of {} (CPUID 0xD subleaf missing): {}",
                    plural(l.unplaced.len(), "host"),
                    some_hosts(hosts, &l.unplaced)
                ));
            }
            for (c, size, h) in &l.sizes {
                why.push(format!("{c} is {size} bytes on {}: {}", plural(h.len(), "host"), some_hosts(hosts, h)));
            }
            if let Some(p) = l.needs {
                let has = !p.components().is_empty() && p.components().is_subset_of(b.xcr0 | b.xss);
                why.push(if has {
                    format!("cannot be exposed with {p}, which the baseline has")
                } else {
                    format!("needs {p}, which the baseline lacks")
                });
            }
            say!(out, "  {name:<9} {}", why.join("; "));
        }
    }
    if !b.components.is_empty() {
        say!(out, "\ncomponents of the baseline, where the hosts put them:");
        for p in &b.components {
            let places: Vec<String> = p
                .places
                .iter()
                .map(|pl| {
                    let at = match pl.offset {
                        Some(o) => format!("{o:#x}"),
                        None => "compacted only".into(),
                    };
                    let a = if pl.align64 == Some(true) { " align64" } else { "" };
                    if p.places.len() == 1 {
                        format!("{at}{a} on every host")
                    } else {
                        format!("{at}{a} on {} ({})", plural(pl.hosts.len(), "host"), some_hosts(hosts, &pl.hosts))
                    }
                })
                .collect();
            say!(out, "  {:<10} {:>5} B  {}", p.component.name().to_string(), p.size, places.join("; "));
        }
    }
    say!(out, "\noffset classes (one leaf 0xD each):");
    for (k, c) in b.classes.iter().enumerate() {
        let ex = &hosts[c.hosts[0]].name;
        if k == 0 {
            say!(out, "  class 0: {}, e.g. {ex}: the leaf 0xD below", plural(c.hosts.len(), "host"));
        } else {
            say!(
                out,
                "  class {k}: {}, e.g. {ex}: {} elsewhere; its leaf 0xD: xstate policy --cpuid {} --xcr0 {} --xss {} --features {}",
                plural(c.hosts.len(), "host"),
                list(&feature_names(c.moved)),
                // The argument that names the host again: `host` for this machine.
                if ex == "this host" { crate::common::HOST } else { ex.as_str() },
                b.xcr0,
                b.xss,
                if b.instructions.is_empty() {
                    "x87".into()
                } else {
                    b.instructions.iter().map(|f| f.name()).collect::<Vec<_>>().join(",")
                }
            );
        }
    }
    if b.classes.len() > 1 {
        say!(
            out,
            "  one leaf 0xD for every host: XCR0 {}, IA32_XSS {} (without {})",
            b.one_leaf.xcr0,
            b.one_leaf.xss,
            list(&feature_names(b.one_leaf.dropped))
        );
    }
    say!(out, "\ngating flags (a guest must read 0 where the baseline lacks the components):");
    for g in &b.gates {
        let f = g.gate.flag;
        let state = if !g.exposed {
            "clear: the baseline lacks its components".to_string()
        } else {
            match g.on_every_host {
                Some(true) => "set: every host has it".into(),
                Some(false) => format!("clear: only {} of the hosts have it", g.hosts_with),
                None => format!("{} hosts have it; some sources lack the leaf: check them", g.hosts_with),
            }
        };
        say!(out, "  {:<9} {:<20} {state}", f.name, flag_place(f.leaf, f.subleaf, f.reg, f.bit));
    }
    for l in &b.gated_leaves {
        say!(
            out,
            "  leaf {:#x} ({}): {}",
            l.leaf,
            l.name,
            if l.exposed { "as the hosts report it" } else { "reads zero" }
        );
    }
    out
}

/// Runs `xstate policy --baseline`.
pub fn run(args: &PolicyArgs, paths: &[PathBuf]) -> CliResult {
    let require = match &args.require {
        Some(l) => parse_require(l)?,
        None => FeatureSet::EMPTY,
    };
    let hosts = hosts_from(paths)?;
    let b = baseline(&hosts, require).map_err(|e| CliError::invalid(format!("baseline: {e}")))?;
    let p = b.policy();
    let (cur_xcr0, cur_xss) = current(args, p);
    let source = format!("baseline of {}", plural(hosts.len(), "host"));
    if args.json {
        let mut v = policy_json(p, &source, cur_xcr0, cur_xss)?;
        v["baseline"] = baseline_json(&b, &hosts);
        return print_json(&v);
    }
    let mut out = answer(&b, &hosts);
    out.push('\n');
    out += &baseline_text(&b, &hosts);
    say!(out);
    say!(out, "the baseline's policy (leaf 0xD of class 0, e.g. {}):", hosts[b.classes[0].hosts[0]].name);
    out += &policy_text(p, cur_xcr0, cur_xss)?;
    emit(&out)
}
