//! `xstate host [--json]`: this machine's layout, checked against the hardware.
//!
//! Reads CPUID leaf 0xD, XCR0 (XGETBV 0) and XINUSE (XGETBV 1), asks Linux for AMX permission
//! where the kernel offers it, cross-checks the sizes CPUID reports against the computed ones,
//! and runs the live check: XSAVE and XSAVEC of a fully used state into sentinel-filled buffers
//! must write exactly the extents the layout predicts. Exit 0 only if every check agrees.

use clap::Args;
use serde_json::{Value, json};

use crate::cmd::layout::{check_json, layout_json, print_table};
use crate::common::{CliError, CliResult, mask_json, print_json};
use crate::output::outln;

/// Arguments of `xstate host`.
#[derive(Args, Debug)]
pub struct HostArgs {
    /// Print JSON (it includes the CPUID leaves, so it can be fed back with --cpuid).
    #[arg(long)]
    pub json: bool,
    /// Seed for the random state of the live check.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

/// Runs `xstate host`.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
pub fn run(args: &HostArgs) -> CliResult {
    use xstate::{Component, Xfeatures};
    use xstate_hw::{Host, cpu, perm, selfcheck};

    let host = Host::probe().map_err(|e| CliError::usage(format!("this host: {e}")))?;
    let layout = host.layout();
    let xcr0 = host.xcr0();
    // AMX: TILEDATA is usable only after ARCH_REQ_XCOMP_PERM; ask before the live check.
    let amx = if xcr0.contains(Component::TILEDATA) {
        match perm::ensure_amx() {
            Ok(p) if p.contains(Component::TILEDATA) => Some(Ok(p)),
            Ok(p) => Some(Err(format!("kernel did not grant TILEDATA (permitted {p})"))),
            Err(e) => Some(Err(format!("ARCH_REQ_XCOMP_PERM: {e}"))),
        }
    } else {
        None
    };
    let xinuse = cpu::xinuse();
    let sizes = layout.cross_check(Some(xcr0), None);
    let live = selfcheck::live_check(&host, args.seed);
    let amx_ok = !matches!(amx, Some(Err(_)));
    let ok = amx_ok && sizes.iter().all(|c| c.outcome.is_ok()) && live.iter().all(|c| c.ok);
    let data = host.cpuid();
    if args.json {
        let mut v = layout_json(layout, xcr0, Xfeatures::EMPTY);
        let cpuid_json = xstate::cpuid::to_json_value(data);
        v["format"] = json!("xstate-host");
        v["vendor"] = json!(data.vendor());
        v["brand"] = json!(data.brand());
        v["xinuse"] = json!(xinuse.map(mask_json));
        v["amx_permission"] = match &amx {
            None => Value::Null,
            Some(Ok(p)) => json!({"granted": true, "permitted": mask_json(*p)}),
            Some(Err(e)) => json!({"granted": false, "error": e}),
        };
        v["size_checks"] = Value::from(sizes.iter().map(check_json).collect::<Vec<_>>());
        v["live_checks"] = Value::from(
            live.iter().map(|c| json!({"name": c.name, "ok": c.ok, "detail": c.detail})).collect::<Vec<_>>(),
        );
        v["ok"] = json!(ok);
        v["leaf0d"] = cpuid_json["leaf0d"].clone();
        v["leaves"] = cpuid_json["leaves"].clone();
        print_json(&v)?;
    } else {
        outln!(
            "host: {} {}",
            data.vendor().unwrap_or_default(),
            data.brand().map(|b| format!("({b})")).unwrap_or_default()
        );
        print_table(layout, xcr0, Xfeatures::EMPTY)?;
        outln!("{}", xss_line(layout, &sizes));
        match xinuse {
            Some(x) => outln!("XINUSE & XCR0 (XGETBV 1, this thread now): {x} ({})", x.names()),
            None => outln!("XINUSE: XGETBV(1) not supported"),
        }
        match &amx {
            None => {}
            Some(Ok(p)) => outln!("AMX permission: granted (permitted {p})"),
            Some(Err(e)) => outln!("AMX permission: FAILED: {e}"),
        }
        outln!();
        outln!("sizes CPUID reports, against the computed ones:");
        for c in &sizes {
            outln!("  {} {c}", if c.outcome.is_ok() { "ok  " } else { "FAIL" });
        }
        outln!();
        outln!("live check (XRSTOR of a fully used state, then saves into sentinel-filled buffers):");
        for c in &live {
            outln!("  {} {}: {}", if c.ok { "ok  " } else { "FAIL" }, c.name, c.detail);
        }
        outln!();
        outln!("{}", if ok { "host: every check agrees" } else { "host: CHECKS FAILED" });
    }
    if ok { Ok(()) } else { Err(CliError::invalid("host: a check disagrees with the hardware (see above)")) }
}

/// IA32_XSS cannot be read from user mode (RDMSR needs CPL 0): the table above assumes 0, and
/// what 0xD.1 EBX (the compacted size for the current XCR0 | XSS) implies is said apart.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn xss_line(layout: &xstate::Layout, sizes: &[xstate::layout::SizeCheck]) -> String {
    use xstate::layout::SizeField;
    let sup = layout.supervisor_supported();
    if sup.is_empty() {
        return "IA32_XSS: this CPU enumerates no supervisor components (it is 0)".into();
    }
    let inferred = sizes
        .iter()
        .find(|c| c.field == SizeField::CompactedEnabled && c.outcome.is_ok())
        .and_then(|c| c.mask)
        .map(|m| m & sup);
    match inferred {
        Some(x) => format!(
            "IA32_XSS: unreadable from user mode (RDMSR needs CPL 0), so the sizes above take 0; CPUID 0xD.1 EBX \
             is the compacted size of XCR0|XSS, which implies the kernel enabled {x} ({})",
            x.names()
        ),
        None => "IA32_XSS: unreadable from user mode (RDMSR needs CPL 0), so the sizes above take 0; \
                 CPUID 0xD.1 EBX does not tell which supervisor components are enabled"
            .into(),
    }
}

/// Runs `xstate host` (unsupported platform).
#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
pub fn run(_args: &HostArgs) -> CliResult {
    Err(CliError::usage("xstate host needs x86_64 Linux"))
}

#[cfg(all(test, target_arch = "x86_64", target_os = "linux"))]
mod tests {
    use xstate::Xfeatures;
    use xstate::fixtures::{AMD_ZEN4, layout};

    use super::xss_line;

    #[test]
    fn xss_is_said_unreadable_and_what_cpuid_implies() {
        // Zen 4 with CET_U|CET_S enumerated: 0xD.1 EBX as a kernel with XSS 0x1800 reports it.
        let l = layout(AMD_ZEN4);
        let sizes = l.cross_check(Some(Xfeatures(0xE7)), None);
        let line = xss_line(&l, &sizes);
        assert!(line.contains("unreadable from user mode"), "{line}");
        assert!(!line.contains("IA32_XSS 0x0"), "{line}");
    }
}
