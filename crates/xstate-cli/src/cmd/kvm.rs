//! `xstate kvm [--json]`: KVM's XSAVE capabilities, and a round trip through a real guest.
//!
//! Reports KVM_CAP_XSAVE2 (the GET_XSAVE2/SET_XSAVE buffer size), the XCR0/XSS KVM supports for
//! guests (KVM_GET_SUPPORTED_CPUID leaf 0xD) and this process's guest permissions, after asking
//! for guest AMX permission where the host has AMX (and whether KVM then offers it). Then a guest
//! under a policy derived from this host (AVX, plus AVX-512 where KVM offers it) loads known
//! values into its vector and opmask registers; the host reads them with KVM_GET_XSAVE2 and the
//! library's register decoder. The host then sets new values with KVM_SET_XSAVE and the guest
//! stores its registers to memory for the host to compare. Exit 0 only if every value matches.

use clap::Args;
use serde_json::json;

use crate::common::{CliError, CliResult, mask_json, print_json};
use crate::output::outln;

/// Arguments of `xstate kvm`.
#[derive(Args, Debug)]
pub struct KvmArgs {
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// Round trips in each direction (at least 1: a check of nothing is no check).
    #[arg(long, default_value_t = 10)]
    pub rounds: u32,
}

/// Runs `xstate kvm`.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
pub fn run(args: &KvmArgs) -> CliResult {
    use xstate::image::Image;
    use xstate::image::regs::decode;
    use xstate::policy::{Policy, Selection};
    use xstate::{Layout, Xfeatures};
    use xstate_hw::kvm::KvmSystem;
    use xstate_hw::kvm::guest::{AVX_DATA, AVX512_DATA, Guest, LOAD_DATA, Routine, STORE_DATA, write_registers};
    use xstate_hw::selfcheck::Rng;

    check_rounds(args)?;
    let io = |what: &str, e: std::io::Error| CliError::usage(format!("{what}: {e}"));
    let kvm = match KvmSystem::open() {
        Ok(Some(k)) => k,
        Ok(None) => return Err(CliError::usage("/dev/kvm does not exist")),
        Err(e) => return Err(io("/dev/kvm", e)),
    };
    // Linux offers AMX to a process's guests only after ARCH_REQ_XCOMP_GUEST_PERM, asked before
    // its first vCPU; KVM_GET_SUPPORTED_CPUID and KVM_CAP_XSAVE2 follow the permission. Ask for
    // it where the host has AMX, and report what KVM offered before and after.
    let before = kvm.supported_xcr0().map_err(|e| io("KVM_GET_SUPPORTED_CPUID", e))?;
    let host_amx = xstate_hw::perm::supported().is_ok_and(|s| s.contains(xstate::Component::TILEDATA));
    let amx_request = host_amx.then(|| xstate_hw::perm::request_guest_permission(xstate::Component::TILEDATA));
    let supported = kvm.supported_cpuid().map_err(|e| io("KVM_GET_SUPPORTED_CPUID", e))?;
    let probe = kvm.create_vcpu().map_err(|e| io("KVM_CREATE_VCPU", e))?;
    let cap_xsave2 = probe.xsave2_size();
    drop(probe);
    let s = supported.leaf0d();
    let guest_perm = xstate_hw::perm::guest_permitted().ok();
    let host = Layout::from_leaf0d(xstate_hw::cpu::host_cpuid().leaf0d())
        .map_err(|e| CliError::usage(format!("this host's CPUID: {e}")))?;
    let kvm_user = s.xcr0_supported() & host.user_supported();

    // The guest round trip.
    let avx512 = Xfeatures(0xE7).is_subset_of(kvm_user);
    let (features, xcr0, load, store, len) = if avx512 {
        ("avx,avx512", Xfeatures(0xE7), Routine::LoadAvx512, Routine::StoreAvx512, AVX512_DATA)
    } else {
        ("avx", Xfeatures(0x7), Routine::LoadAvx, Routine::StoreAvx, AVX_DATA)
    };
    let mut failures: Vec<String> = Vec::new();
    let mut checked = 0u64;
    if kvm_user.contains(xstate::Component::AVX) {
        let policy = Policy::derive(&host, &Selection::parse(features).map_err(CliError::invalid)?)
            .map_err(CliError::invalid)?;
        let mut cpuid = supported.clone();
        *cpuid.leaf0d_mut() = policy.leaf0d(xcr0, Xfeatures::EMPTY).map_err(CliError::invalid)?;
        let mut g = Guest::new(&kvm, &cpuid, xcr0).map_err(|e| io("guest", e))?;
        let mut rng = Rng::new(0x6b766d);
        let (n, w) = if avx512 { (32, 64) } else { (16, 32) };
        for round in 0..args.rounds {
            let mut values = vec![0u8; len];
            rng.fill(&mut values);
            g.memory()[LOAD_DATA as usize..LOAD_DATA as usize + len].copy_from_slice(&values);
            g.run(load).map_err(|e| io("guest", e))?;
            let buf = g.vcpu().get_xsave().map_err(|e| io("KVM_GET_XSAVE2", e))?;
            let img = Image::new(&buf).map_err(|e| CliError::invalid(format!("KVM_GET_XSAVE2: {e}")))?;
            let regs = decode(&img, &host, xcr0);
            for i in 0..n {
                let name = if avx512 { format!("zmm{i}") } else { format!("ymm{i}") };
                checked += 1;
                if regs.get(&name).map(|r| &r.bytes[..]) != Some(&values[w * i..w * i + w]) {
                    failures.push(format!("round {round}: guest->host {name}"));
                }
            }
            if avx512 {
                for i in 0..8 {
                    checked += 1;
                    let want = &values[n * w + 8 * i..n * w + 8 * i + 8];
                    if regs.get(&format!("k{i}")).map(|r| &r.bytes[..]) != Some(want) {
                        failures.push(format!("round {round}: guest->host k{i}"));
                    }
                }
            }
            let mut new = vec![0u8; len];
            rng.fill(&mut new);
            let mut img2 = buf.clone();
            if !write_registers(&host, &mut img2, &new, avx512) {
                return Err(CliError::usage("this host's layout lacks a component the guest uses"));
            }
            g.vcpu().set_xsave(&img2).map_err(|e| io("KVM_SET_XSAVE", e))?;
            g.run(store).map_err(|e| io("guest", e))?;
            checked += 1;
            if g.memory()[STORE_DATA as usize..STORE_DATA as usize + len] != new[..] {
                failures.push(format!("round {round}: host->guest registers differ"));
            }
        }
    } else {
        failures.push("KVM offers no AVX to guests: no round trip".into());
    }
    let ok = failures.is_empty();
    if args.json {
        print_json(&json!({
            "kvm_cap_xsave2": cap_xsave2,
            "supported_xcr0": mask_json(s.xcr0_supported()),
            "supported_xss": mask_json(s.xss_supported()),
            "supported_standard_size": s.standard_size_max(),
            "guest_permitted": guest_perm.map(mask_json),
            "guest_amx_permission": match &amx_request {
                None => json!(null),
                Some(r) => json!({
                    "granted": r.is_ok(),
                    "error": r.as_ref().err().map(|e| e.to_string()),
                    "supported_xcr0_before": mask_json(before),
                }),
            },
            "round_trip": {
                "guest_xcr0": mask_json(xcr0),
                "registers": if avx512 { "zmm0-31, k0-7" } else { "ymm0-15" },
                "rounds": args.rounds,
                "checked": checked,
                "failures": failures,
            },
            "ok": ok,
        }))?;
    } else {
        outln!("KVM_CAP_XSAVE2: {cap_xsave2} bytes");
        outln!(
            "supported XCR0 {} ({}), IA32_XSS {}",
            s.xcr0_supported(),
            s.xcr0_supported().names(),
            s.xss_supported()
        );
        outln!("supported standard size (0xD.0 ECX): {}", s.standard_size_max());
        match guest_perm {
            Some(p) => outln!("guest permission (ARCH_GET_XCOMP_GUEST_PERM): {p} ({})", p.names()),
            None => outln!("guest permission: not available from this kernel"),
        }
        match &amx_request {
            None => {}
            Some(Ok(())) if s.xcr0_supported().contains(xstate::Component::TILEDATA) => {
                outln!("guest AMX: permission granted; KVM offers TILECFG/TILEDATA (supported XCR0 {before} before)")
            }
            Some(Ok(())) => outln!(
                "guest AMX: permission granted, but this KVM still offers XCR0 {} to guests (no AMX)",
                s.xcr0_supported()
            ),
            Some(Err(e)) => outln!("guest AMX: ARCH_REQ_XCOMP_GUEST_PERM refused: {e}"),
        }
        outln!(
            "guest round trip ({}; XCR0 {xcr0}), {} rounds each way: {} values checked, {}",
            if avx512 { "zmm0-31, k0-7" } else { "ymm0-15" },
            args.rounds,
            checked,
            if ok { "all equal".to_string() } else { format!("{} FAILED: {}", failures.len(), failures.join("; ")) }
        );
    }
    if ok { Ok(()) } else { Err(CliError::invalid(format!("kvm: {} round-trip failures", failures.len()))) }
}

/// `--rounds 0` would check no value and report them all equal: a usage error (exit 2).
fn check_rounds(args: &KvmArgs) -> CliResult {
    if args.rounds == 0 {
        return Err(CliError::usage("--rounds 0 checks nothing: give 1 or more round trips"));
    }
    Ok(())
}

/// Runs `xstate kvm` (unsupported platform).
#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
pub fn run(args: &KvmArgs) -> CliResult {
    check_rounds(args)?;
    Err(CliError::usage("xstate kvm needs x86_64 Linux"))
}
