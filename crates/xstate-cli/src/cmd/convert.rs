//! `xstate convert IMAGE --to standard|compacted [--mask MASK] [--xcr0 MASK] [--cpuid FILE]
//! [--to-cpuid FILE] [--from-format F] [--to-format G] -o OUT`: the output, restored with RFBM =
//! XCR0 on the target CPU, loads the same architectural state as the input on its CPU.

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use xstate::Xfeatures;
use xstate::image::{Target, convert};

use crate::cmd::imageio::{ImageFormat, load, store};
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
}

/// Runs `xstate convert`.
pub fn run(args: &ConvertArgs) -> CliResult {
    let src = args.cpu.source()?;
    let to_layout = match &args.to_cpuid {
        Some(p) => file_source(p)?.layout,
        None => src.layout.clone(),
    };
    let loaded = load(&args.image, args.from_format, &src.layout)?;
    let from_layout = loaded.layout.as_ref().unwrap_or(&src.layout);
    let (xcr0, xss) = args.cpu.masks(&src, (loaded.xcr0, loaded.xss));
    checked_masks(from_layout, xcr0, xss)?;
    let rfbm = xcr0 | xss;
    let target = match args.to {
        FormArg::Standard => Target::Standard,
        FormArg::Compacted => Target::Compacted { mask: args.mask.unwrap_or(rfbm & to_layout.supported()) },
    };
    let out = convert(&loaded.image, from_layout, &to_layout, rfbm, target)
        .map_err(|e| CliError::invalid(format!("{}: cannot convert: {e}", args.image.display())))?;
    let bytes = store(&out, rfbm & to_layout.supported(), args.to_format, &to_layout)?;
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
