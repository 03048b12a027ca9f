//! `xstate validate IMAGE [--xcr0 MASK] [--xss MASK] [--cpuid FILE] [--profile P]`: would a
//! consumer accept this image? Exit 0 and one line on stdout if so; exit 1 and one line on
//! stderr naming the rule and the offending bits or bytes if not.

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use xstate::Xfeatures;
use xstate::image::validate::{Context, Profile, XenCaller, validate};
use xstate::record::{Format, Options};

use crate::cmd::imageio::{ImageFormat, XenArgs, emit, host_mxcsr_mask, load};
use crate::common::{CliError, CliResult, CpuArgs, checked_masks, parse_mask};

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
    /// File format of IMAGE.
    #[arg(long, value_enum, default_value = "raw")]
    pub format: ImageFormat,
}

/// Runs `xstate validate`.
pub fn run(args: &ValidateArgs) -> CliResult {
    let src = args.cpu.source()?;
    let mut opts = Options::default();
    opts.xen = args.xen.host(&src.layout);
    let loaded = load(&args.image, args.format, &src.layout, &opts)?;
    let profile = Profile::from(args.profile);
    let Some(img) = &loaded.image else {
        let vcpu = loaded.state.as_ref().and_then(|s| s.vcpu()).map(|v| format!(", vCPU {v}")).unwrap_or_default();
        return emit(&format!("{}: valid ({}): no xsave state{vcpu}\n", args.image.display(), loaded.format));
    };
    let (xcr0, xss) = args.cpu.masks(&src, (loaded.xcr0, loaded.xss));
    let layout = loaded.layout.as_ref().unwrap_or(&src.layout);
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
    validate(img, layout, profile, &ctx)
        .map_err(|e| CliError::invalid(format!("{}: invalid: {e}", args.image.display())))?;
    let h = xstate::image::Header::read(img).unwrap_or(xstate::image::Header::EMPTY);
    let xen = if profile == Profile::Xen {
        format!(", {} size rule, policy {}", ctx.xen.caller.name(), args.xen.policy_name())
    } else {
        String::new()
    };
    emit(&format!(
        "{}: valid ({profile}{xen}): {} image, {} bytes, XSTATE_BV {} ({}), XCOMP_BV {}, XCR0 {}\n",
        args.image.display(),
        h.form(),
        img.len(),
        h.xstate_bv,
        h.xstate_bv.names(),
        h.xcomp_bv,
        ctx.xcr0
    ))
}
