//! `xstate validate IMAGE [--xcr0 MASK] [--xss MASK] [--cpuid FILE] [--profile P]`: would a
//! consumer accept this image? Exit 0 and one line on stdout if so; exit 1 and one line on
//! stderr naming the rule and the offending bits or bytes if not.

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use xstate::Xfeatures;
use xstate::image::validate::{Context, Profile, XenCaller, validate};
use xstate::record::{Format, Options};

use serde_json::json;

use crate::cmd::imageio::{ImageFormat, VmmArgs, XenArgs, emit, host_mxcsr_mask, load_vcpu};
use crate::common::{CliError, CliResult, CpuArgs, checked_masks, mask_json, parse_mask, placeable, print_json};

/// The consumers `--profile` names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ProfileArg {
    /// XRSTOR (XRSTORS with --xss) with RFBM = XCR0: would it raise #GP?
    Hardware,
    /// The Linux kernel's ptrace/KVM user-buffer rules (XCR0: the task's user features).
    Linux,
    /// KVM_SET_XSAVE.
    Kvm,
    /// Xen's validate_xstate() and its callers' size rule.
    Xen,
}

impl From<ProfileArg> for Profile {
    fn from(p: ProfileArg) -> Profile {
        match p {
            ProfileArg::Hardware => Profile::Hardware,
            ProfileArg::Linux => Profile::Linux,
            ProfileArg::Kvm => Profile::Kvm,
            ProfileArg::Xen => Profile::Xen,
        }
    }
}

/// `--xen-caller`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum XenCallerArg {
    /// XEN_DOMCTL_setvcpuextstate: exactly standard_size(xcr0_accum) bytes.
    Domctl,
    /// hvm_load_cpu_xsave_states(): longer only with a zero tail.
    Hvm,
}

/// Arguments of `xstate validate`.
#[derive(Args, Debug)]
pub struct ValidateArgs {
    /// The image file.
    pub image: PathBuf,
    /// The consumer's CPU and restoring context (Linux: XCR0 = the task's user features; a
    /// non-zero XSS makes the hardware profile model XRSTORS).
    #[command(flatten)]
    pub cpu: CpuArgs,
    /// Whose rules apply.
    #[arg(long, value_enum, default_value = "hardware")]
    pub profile: ProfileArg,
    /// The CPU's MXCSR mask; default: this host's (from XSAVE) or 0xFFFF with --cpuid.
    #[arg(long, value_name = "MASK", value_parser = parse_mask)]
    pub mxcsr_mask: Option<Xfeatures>,
    /// kvm: KVM's supported XCR0; default: --xcr0.
    #[arg(long, value_name = "MASK", value_parser = parse_mask)]
    pub kvm_supported: Option<Xfeatures>,
    /// xen: xcr0_accum; default: --xcr0.
    #[arg(long, value_name = "MASK", value_parser = parse_mask)]
    pub xcr0_accum: Option<Xfeatures>,
    /// Xen's host and domain policy (records and `--profile xen`).
    #[command(flatten)]
    pub xen: XenArgs,
    /// xen: whose size rule applies: the domctl's exact standard_size(xcr0_accum), or the HVM
    /// loader's zero tail; default: domctl (hvm for a xen-hvm record).
    #[arg(long, value_enum)]
    pub xen_caller: Option<XenCallerArg>,
    /// File format of IMAGE (`auto` recognises records; other bytes are a bare image).
    #[arg(long, value_enum, default_value = "auto")]
    pub format: ImageFormat,
    /// Print the verdict as JSON (on stdout, valid or not; the exit code still tells).
    #[arg(long)]
    pub json: bool,
    /// The vCPU to check, in a file holding several (a QEMU stream, a VMM snapshot).
    #[arg(long, value_name = "N")]
    pub vcpu: Option<u32>,
    /// What a QEMU stream or VMM snapshot does not say.
    #[command(flatten)]
    pub vmm: VmmArgs,
}

/// Flags that only mean something for one profile are usage errors elsewhere.
fn check_flags(args: &ValidateArgs, xen_record: bool) -> CliResult {
    let p = args.profile;
    let misplaced = |given: bool, flag: &str, needs: &str| {
        if given { Err(CliError::usage(format!("{flag} applies to {needs} only"))) } else { Ok(()) }
    };
    misplaced(args.kvm_supported.is_some() && p != ProfileArg::Kvm, "--kvm-supported", "--profile kvm")?;
    misplaced(args.xcr0_accum.is_some() && p != ProfileArg::Xen, "--xcr0-accum", "--profile xen")?;
    misplaced(args.xen_caller.is_some() && p != ProfileArg::Xen, "--xen-caller", "--profile xen")?;
    if args.xen.given() && p != ProfileArg::Xen && !xen_record {
        return Err(CliError::usage(
            "--xen-policy/--xen-host apply to --profile xen and Xen records only (xen-domctl, xen-hvm, xen-pv, fc-blob)",
        ));
    }
    misplaced(args.mxcsr_mask.is_some() && p == ProfileArg::Xen, "--mxcsr-mask", "profiles that check MXCSR (not xen)")
}

/// Runs `xstate validate`. With `--json` a file refused before its image is judged (a record
/// that does not parse, masks no CPU has) still prints its verdict, `"valid": false` with the
/// error, as `--help` promises; usage and I/O errors (exit 2) are no verdict.
pub fn run(args: &ValidateArgs) -> CliResult {
    match judge(args) {
        Ok(verdict) => verdict,
        Err(e) => {
            if args.json && e.code == 1 {
                print_json(&json!({
                    "file": args.image.display().to_string(),
                    "profile": Profile::from(args.profile).name(),
                    "valid": false,
                    "error": json!({ "rule": null, "text": e.message, "errno": null }),
                }))?;
            }
            Err(e)
        }
    }
}

/// The verdict, printed (`Ok`, its outcome inside), or the refusal of the input before any
/// verdict (`Err`).
fn judge(args: &ValidateArgs) -> CliResult<CliResult> {
    let src = args.cpu.source()?;
    let mut opts = args.vmm.apply(Options::default(), &args.cpu);
    opts.xen = args.xen.host(&src.layout);
    // The consumer's mask, where given, also decides a record's own MXCSR check.
    opts.mxcsr_mask = args.mxcsr_mask.and_then(|m| u32::try_from(m.bits()).ok());
    let loaded = load_vcpu(&args.image, args.format, &src.layout, &opts, args.vcpu)?;
    args.vmm.check(loaded.format, args.vcpu)?;
    check_flags(args, loaded.format.uses_xen_host())?;
    let profile = Profile::from(args.profile);
    let Some(img) = &loaded.image else {
        let vcpu = loaded.state.as_ref().and_then(|s| s.vcpu()).map(|v| format!(", vCPU {v}")).unwrap_or_default();
        if args.json {
            return Ok(print_json(&json!({
                "file": args.image.display().to_string(),
                "format": crate::cmd::imageio::format_name(loaded.format),
                "valid": true,
                "no_xsave_state": true,
            })));
        }
        return Ok(emit(&format!("{}: valid ({}): no xsave state{vcpu}\n", args.image.display(), loaded.format)));
    };
    let (xcr0, xss) = args.cpu.masks(&src, (loaded.xcr0, loaded.xss));
    let layout = loaded.layout.as_ref().unwrap_or(&src.layout);
    if loaded.layout.is_none() {
        placeable(&src, xcr0 | xss)?;
    }
    if profile != Profile::Xen {
        checked_masks(layout, xcr0, xss)?;
    }
    let mxcsr_mask = match args.mxcsr_mask {
        Some(m) => u32::try_from(m.bits()).map_err(|_| CliError::usage("--mxcsr-mask: more than 32 bits"))?,
        None if args.cpu.cpuid.is_none() => host_mxcsr_mask(),
        None => 0xFFFF,
    };
    let state = loaded.state.as_ref();
    // Xen checks the record's own xcr0 and xcr0_accum.
    let xen_xcr0 = args.cpu.xcr0.or(state.and_then(|s| s.xcr0)).unwrap_or(xcr0);
    let mut ctx = Context::new(if profile == Profile::Xen { xen_xcr0 } else { xcr0 }).with_mxcsr_mask_field(mxcsr_mask);
    ctx.xss = xss;
    ctx.kvm_supported = args.kvm_supported;
    ctx.xen.xcr0_accum = args.xcr0_accum.or(state.and_then(|s| s.accum));
    ctx.xen.policy_max = args.xen.policy_max(layout);
    ctx.xen.host = args.xen.xen_host;
    ctx.xen.caller = match args.xen_caller {
        Some(XenCallerArg::Hvm) => XenCaller::HvmLoad,
        Some(XenCallerArg::Domctl) => XenCaller::Domctl,
        None if loaded.format == Format::XenHvm => XenCaller::HvmLoad,
        None => XenCaller::Domctl,
    };
    let verdict = validate(img, layout, profile, &ctx);
    let invalid =
        |v: Result<(), _>| v.map_err(|e| CliError::invalid(format!("{}: invalid: {e}", args.image.display())));
    let h = xstate::image::Header::read(img).unwrap_or(xstate::image::Header::EMPTY);
    let notes = length_notes(img, layout, profile, &ctx);
    let xen = if profile == Profile::Xen {
        format!(", {} size rule, policy {}", ctx.xen.caller.name(), args.xen.policy_name())
    } else {
        String::new()
    };
    if args.json {
        let printed = print_json(&json!({
            "file": args.image.display().to_string(),
            "format": crate::cmd::imageio::format_name(loaded.format),
            "profile": profile.name(),
            "valid": verdict.is_ok(),
            "error": verdict.as_ref().err().map(|e| json!({
                "rule": format!("{:?}", e.rule),
                "text": e.to_string(),
                "errno": e.errno().map(|n| n.name()),
            })),
            "size": img.len(),
            "form": h.form().name(),
            "xstate_bv": mask_json(h.xstate_bv),
            "xcomp_bv": mask_json(h.xcomp_bv),
            "xcr0": mask_json(ctx.xcr0),
            "xss": mask_json(ctx.xss),
            "notes": notes,
        }));
        return Ok(printed.and_then(|()| invalid(verdict)));
    }
    if let Err(e) = invalid(verdict) {
        return Ok(Err(e));
    }
    let mut text = format!(
        "{}: valid ({profile}{xen}): {} image, {} bytes, XSTATE_BV {} ({}), XCOMP_BV {}, XCR0 {}\n",
        args.image.display(),
        h.form(),
        img.len(),
        h.xstate_bv,
        h.xstate_bv.names(),
        h.xcomp_bv,
        ctx.xcr0
    );
    for n in &notes {
        text.push_str(&format!("note: {n}\n"));
    }
    Ok(emit(&text))
}

/// What a valid image's length means to the consumer: bytes it never reads.
fn length_notes(img: &[u8], layout: &xstate::Layout, profile: Profile, ctx: &Context) -> Vec<String> {
    let Ok(i) = xstate::image::Image::new(img) else { return Vec::new() };
    let read = match (profile, i.form()) {
        (Profile::Hardware, xstate::image::Form::Standard) => layout.standard_size(ctx.xcr0 & layout.user_supported()),
        (Profile::Hardware, xstate::image::Form::Compacted) => {
            layout.compacted_size(i.header().compacted_components() & (ctx.xcr0 | ctx.xss))
        }
        (Profile::Linux, _) => layout.standard_size(ctx.xcr0 & layout.user_supported()),
        _ => None,
    };
    let Some(read) = read.map(|r| (r as usize).max(576)) else { return Vec::new() };
    // The most any consumer of this CPU's images reads: its largest image, or a kvm_xsave.
    let any = (layout.standard_size_max() as usize).max(4096);
    let mut notes = Vec::new();
    if img.len() > any {
        notes.push(format!(
            "{} bytes: no consumer reads past byte {any} (this CPU's largest image or a 4096-byte kvm_xsave); {profile} reads {read}",
            img.len()
        ));
    } else if img.len() > read {
        notes.push(format!("{} bytes: {profile} reads only the first {read}", img.len()));
    }
    notes
}
