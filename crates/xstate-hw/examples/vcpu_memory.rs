//! Memory for 1000 vCPUs of an AVX-512 guest on an AMX host: save areas sized from the guest's
//! CPUID policy against areas sized for the host's maximum (what Xen gives every vCPU today).
//!
//! The host is the running CPU when it has AMX, else `--cpuid FILE` when given, else the Intel
//! AMX KVM guest this project measured (`xstate::fixtures::INTEL_AMX_GUEST`, docs/HARDWARE.md).
//!
//! ```sh
//! cargo run --release -p xstate-hw --example vcpu_memory [-- --cpuid FILE] [-- --vcpus N]
//! ```

use std::sync::Arc;

use xstate::area::SaveArea;
use xstate::cpuid::{self, Leaf0d};
use xstate::fixtures::{self, INTEL_AMX_GUEST};
use xstate::image::Form;
use xstate::policy::{Policy, Selection};
use xstate::{Component, Layout, Xfeatures};

/// Leaf 0xD of the running CPU, read by `xstate-hw`.
fn running_cpu() -> Option<Leaf0d> {
    xstate_hw::cpu::osxsave().then(|| *xstate_hw::cpu::host_cpuid().leaf0d())
}

fn host() -> Result<(String, Layout), String> {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--cpuid") {
        let path = args.get(i + 1).ok_or("--cpuid needs a file")?;
        let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
        let data = cpuid::parse(&text).map_err(|e| format!("{path}: {e}"))?;
        let l = Layout::from_leaf0d(data.leaf0d()).map_err(|e| format!("{path}: {e}"))?;
        return Ok((path.clone(), l));
    }
    if let Some(l) = running_cpu().and_then(|leaf| Layout::from_leaf0d(&leaf).ok())
        && l.user_supported().contains(Component::TILEDATA)
    {
        return Ok(("this host (AMX)".into(), l));
    }
    Ok((
        "the Intel AMX KVM guest of ../shared/cpuid/host-intel-amx-kvm.txt (fixtures::INTEL_AMX_GUEST; this host has \
         no AMX)"
            .into(),
        fixtures::layout(INTEL_AMX_GUEST),
    ))
}

fn vcpus() -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == "--vcpus").and_then(|i| args.get(i + 1)).and_then(|n| n.parse().ok()).unwrap_or(1000)
}

/// Creates `n` areas and returns (sum of sizes, sum of heap bytes).
fn fleet(policy: &Arc<Policy>, form: Form, n: usize) -> Result<(usize, usize, Vec<SaveArea>), String> {
    let areas: Vec<SaveArea> = (0..n)
        .map(|_| SaveArea::new(policy.clone(), form, 0xFFFF))
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    Ok((areas.iter().map(SaveArea::len).sum(), areas.iter().map(SaveArea::allocated).sum(), areas))
}

fn kib(b: usize) -> String {
    format!("{:.1} KiB", b as f64 / 1024.0)
}

fn main() -> Result<(), String> {
    let (name, host) = host()?;
    let n = vcpus();
    let user = host.user_supported();
    let guest = Arc::new(Policy::derive(&host, &Selection::parse("avx,avx512").unwrap()).map_err(|e| e.to_string())?);
    // The host maximum: every user component the host has (Xen sizes vCPU areas from it).
    let maximum =
        Arc::new(Policy::derive(&host, &Selection::masks(user, Xfeatures::EMPTY)).map_err(|e| e.to_string())?);
    println!("host: {name}");
    println!(
        "host XCR0 maximum {user} ({}); guest policy XCR0 {} ({})",
        user.names(),
        guest.xcr0_max(),
        guest.xcr0_max().names()
    );
    println!();
    println!("| {n} vCPUs | area per vCPU | total area bytes | heap allocated (64-byte alignment slack included) |");
    println!("|---|---|---|---|");
    let mut rows = Vec::new();
    for form in [Form::Standard, Form::Compacted] {
        if form == Form::Compacted && !host.features().compaction() {
            continue;
        }
        for (label, p) in [("host maximum", &maximum), ("AVX-512 policy", &guest)] {
            let (size, alloc, _areas) = fleet(p, form, n)?;
            println!(
                "| {label}, {form} | {} B | {size} B ({}) | {alloc} B ({}) |",
                SaveArea::size_for(p, form),
                kib(size),
                kib(alloc)
            );
            rows.push((form, label, size, alloc));
        }
    }
    println!();
    for form in [Form::Standard, Form::Compacted] {
        let r: Vec<_> = rows.iter().filter(|r| r.0 == form).collect();
        if let [max, pol] = r.as_slice() {
            println!(
                "{form}: the policy-sized areas take {:.1}% of the host-maximum memory ({} saved for {n} vCPUs)",
                100.0 * pol.3 as f64 / max.3 as f64,
                kib(max.3 - pol.3)
            );
        }
    }
    // The policy can change under live areas: grow to the host maximum and shrink back.
    let (_, _, mut areas) = fleet(&guest, Form::Standard, n)?;
    for a in &mut areas {
        a.set_xcr0(guest.xcr0_max()).map_err(|e| e.to_string())?;
        a.set_policy(maximum.clone()).map_err(|e| e.to_string())?;
    }
    let grown: usize = areas.iter().map(SaveArea::allocated).sum();
    for a in &mut areas {
        a.set_policy(guest.clone()).map_err(|e| e.to_string())?;
    }
    let shrunk: usize = areas.iter().map(SaveArea::allocated).sum();
    let busy = {
        let a = &mut areas[0];
        a.set_policy(maximum.clone()).map_err(|e| e.to_string())?;
        a.set_xcr0(user).map_err(|e| e.to_string())?;
        a.set_policy(guest.clone()).err().map(|e| e.to_string())
    };
    println!(
        "set_policy on {n} live standard areas: grown to {} allocated, shrunk back to {}; after the guest enabled \
         {user}, shrinking is refused: {}",
        kib(grown),
        kib(shrunk),
        busy.unwrap_or_else(|| "NOT REFUSED".into())
    );
    Ok(())
}
