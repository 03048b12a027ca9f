//! `xstate convert IMAGE --to standard|compacted [--mask MASK] [--xcr0 MASK] [--cpuid FILE]
//! [--to-cpuid FILE] [--from-format F] [--to-format G] -o OUT`: the output, restored with RFBM =
//! XCR0 on the target CPU, loads the same architectural state as the input on its CPU.

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use xstate::Xfeatures;
use xstate::image::{ImageBuf, Target, convert};
use xstate::record::{Field, FieldSet, Options};

use crate::cmd::imageio::{ImageFormat, XenArgs, load, raw_state, store};
use crate::common::{CliError, CliResult, CpuArgs, checked_masks, file_source, parse_mask, write_output};
use crate::output::summary;

/// The output form.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum FormArg {
    /// XCOMP_BV = 0, components at standard offsets.
    Standard,
    /// XCOMP_BV = bit 63 | mask.
    Compacted,
}

/// Arguments of `xstate convert`.
#[derive(Args, Debug)]
pub struct ConvertArgs {
    /// The image file.
    pub image: PathBuf,
    /// The output form.
    #[arg(long, value_enum)]
    pub to: FormArg,
    /// Components to lay out with --to compacted; default: XCR0 (those the target supports).
    #[arg(long, value_name = "MASK", value_parser = parse_mask)]
    pub mask: Option<Xfeatures>,
    /// The CPU the image comes from, and the XCR0 | XSS it is restored with there.
    #[command(flatten)]
    pub cpu: CpuArgs,
    /// CPUID dump of the CPU the output is for; default: the source CPU.
    #[arg(long, value_name = "FILE")]
    pub to_cpuid: Option<PathBuf>,
    /// File format of IMAGE.
    #[arg(long, value_enum, default_value = "raw")]
    pub from_format: ImageFormat,
    /// File format of OUT.
    #[arg(long, value_enum, default_value = "raw")]
    pub to_format: ImageFormat,
    /// Output file, written atomically.
    #[arg(short = 'o', long = "output", value_name = "OUT")]
    pub output: PathBuf,
    /// The vCPU to record where the source has none (Xen HVM instance, PV vcpu_id).
    #[arg(long, value_name = "N")]
    pub vcpu: Option<u32>,
    /// Fields of the source the output format cannot hold, to drop rather than refuse:
    /// xcr0, xss, xcr0-accum, vcpu, image (comma-separated).
    #[arg(long, value_name = "FIELDS", value_delimiter = ',', value_parser = parse_field)]
    pub drop: Vec<Field>,
    /// Xen's host and domain policy, for Xen records read or written.
    #[command(flatten)]
    pub xen: XenArgs,
}

fn parse_field(s: &str) -> Result<Field, String> {
    Field::from_name(s).ok_or_else(|| format!("{s:?}: expected xcr0, xss, xcr0-accum, vcpu or image"))
}

/// Runs `xstate convert`.
pub fn run(args: &ConvertArgs) -> CliResult {
    let src = args.cpu.source()?;
    let to_layout = match &args.to_cpuid {
        Some(p) => file_source(p)?.layout,
        None => src.layout.clone(),
    };
    let mut opts = Options::default();
    opts.xen = args.xen.host(&src.layout);
    let loaded = load(&args.image, args.from_format, &src.layout, &opts)?;
    let from_layout = loaded.layout.as_ref().unwrap_or(&src.layout);
    let (xcr0, xss) = args.cpu.masks(&src, (loaded.xcr0, loaded.xss));
    // What the output records beside the image: the record's fields, given ones, dropped ones.
    let mut out_opts = Options::default();
    out_opts.xen = args.xen.host(&to_layout);
    out_opts.vcpu = args.vcpu;
    out_opts.drop = args.drop.iter().fold(FieldSet::NONE, |d, f| d.with(*f));
    // XCR0 where the source does not record it: --xcr0, or for a bare image the restoring XCR0.
    out_opts.xcr0 = if loaded.state.is_some() { args.cpu.xcr0 } else { Some(xcr0) };
    let Some(image) = &loaded.image else {
        // "No xsave state": the output format's own form, or refused where it has none.
        let state = loaded.state.clone().unwrap_or_else(xstate::record::State::no_xsave_state);
        let bytes = store(&state, args.to_format, &to_layout, &out_opts)?;
        write_output(&args.output, &bytes)?;
        return summary(&args.output, &format!("{}: no xsave state, {} bytes\n", args.output.display(), bytes.len()));
    };
    checked_masks(from_layout, xcr0, xss)?;
    let rfbm = xcr0 | xss;
    let target = match args.to {
        FormArg::Standard => Target::Standard,
        FormArg::Compacted => Target::Compacted { mask: args.mask.unwrap_or(rfbm & to_layout.supported()) },
    };
    let out = convert(image, from_layout, &to_layout, rfbm, target)
        .map_err(|e| CliError::invalid(format!("{}: cannot convert: {e}", args.image.display())))?;
    let mut state = match &loaded.state {
        Some(s) => s.clone(),
        None => raw_state(&out, rfbm)?,
    };
    state.image = Some(ImageBuf::from_bytes(&out).map_err(CliError::invalid)?);
    state.rfbm = Some(rfbm & to_layout.supported());
    let bytes = store(&state, args.to_format, &to_layout, &out_opts)
        .map_err(|e| CliError { code: e.code, message: format!("{}: {}", args.image.display(), e.message) })?;
    write_output(&args.output, &bytes)?;
    let h = out.header();
    summary(
        &args.output,
        &format!(
            "{}: {} image, {} bytes, XSTATE_BV {} ({}), XCOMP_BV {}\n",
            args.output.display(),
            h.form(),
            out.len(),
            h.xstate_bv,
            h.xstate_bv.names(),
            h.xcomp_bv
        ),
    )
}
