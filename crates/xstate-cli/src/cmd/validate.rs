//! `xstate validate IMAGE [--xcr0 MASK] [--xss MASK] [--cpuid FILE] [--profile P]`: would a
//! consumer accept this image? Exit 0 and one line on stdout if so; exit 1 and one line on
//! stderr naming the rule and the offending bits or bytes if not.

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use xstate::Xfeatures;
use xstate::image::validate::{Context, Profile, validate};

use crate::cmd::imageio::{ImageFormat, emit, host_mxcsr_mask, load};
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
    /// xen: the domain policy's maximum XCR0; default: every supported user component.
    #[arg(long, value_name = "MASK", value_parser = parse_mask)]
    pub xen_policy: Option<Xfeatures>,
    /// xen: the host's enabled xfeatures; default: every supported user component.
    #[arg(long, value_name = "MASK", value_parser = parse_mask)]
    pub xen_host: Option<Xfeatures>,
    /// File format of IMAGE.
    #[arg(long, value_enum, default_value = "raw")]
    pub format: ImageFormat,
}

/// Runs `xstate validate`.
pub fn run(args: &ValidateArgs) -> CliResult {
    let src = args.cpu.source()?;
    let loaded = load(&args.image, args.format, &src.layout)?;
    let profile = Profile::from(args.profile);
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
    let mut ctx = Context::new(xcr0).with_mxcsr_mask_field(mxcsr_mask);
    ctx.xss = xss;
    ctx.kvm_supported = args.kvm_supported;
    ctx.xen.xcr0_accum = args.xcr0_accum;
    ctx.xen.policy_max = args.xen_policy;
    ctx.xen.host = args.xen_host;
    let img = &loaded.image;
    validate(img, layout, profile, &ctx)
        .map_err(|e| CliError::invalid(format!("{}: invalid: {e}", args.image.display())))?;
    let h = xstate::image::Header::read(img).unwrap_or(xstate::image::Header::EMPTY);
    emit(&format!(
        "{}: valid ({profile}): {} image, {} bytes, XSTATE_BV {} ({}), XCOMP_BV {}, XCR0 {}\n",
        args.image.display(),
        h.form(),
        img.len(),
        h.xstate_bv,
        h.xstate_bv.names(),
        h.xcomp_bv,
        xcr0
    ))
}
