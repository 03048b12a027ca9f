//! `xstate convert IMAGE --to standard|compacted [--mask MASK] [--xcr0 MASK] [--cpuid FILE]
//! [--to-cpuid FILE] [--from-format F] [--to-format G] -o OUT`: the output, restored with RFBM =
//! XCR0 on the target CPU, loads the same architectural state as the input on its CPU.

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use xstate::Xfeatures;
use xstate::image::{Target, convert};

use crate::cmd::imageio::{ImageFormat, emit, load, store};
use crate::cmd::layout::checked_masks;
use crate::common::{CliError, CliResult, layout_of, parse_mask, read_cpuid, source, write_atomic};

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
    /// XCR0 the image is restored with; default: XGETBV(0) on the host, every supported user
    /// component for a dump.
    #[arg(long, value_name = "MASK", value_parser = parse_mask)]
    pub xcr0: Option<Xfeatures>,
    /// IA32_XSS, for compacted images holding supervisor state (XRSTORS); default 0.
    #[arg(long, value_name = "MASK", value_parser = parse_mask)]
    pub xss: Option<Xfeatures>,
    /// CPUID dump of the CPU the image comes from; default: this host.
    #[arg(long, value_name = "FILE")]
    pub cpuid: Option<PathBuf>,
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
    let src = source(args.cpuid.as_ref())?;
    let to_layout = match &args.to_cpuid {
        Some(p) => layout_of(&read_cpuid(p)?, &p.display().to_string())?,
        None => src.layout.clone(),
    };
    let loaded = load(&args.image, args.from_format, &src.layout)?;
    let from_layout = loaded.layout.as_ref().unwrap_or(&src.layout);
    let xcr0 = args.xcr0.or(loaded.xcr0).unwrap_or(src.default_xcr0);
    let xss = args.xss.or(loaded.xss).unwrap_or_default();
    checked_masks(from_layout, xcr0, xss)?;
    let rfbm = xcr0 | xss;
    let target = match args.to {
        FormArg::Standard => Target::Standard,
        FormArg::Compacted => Target::Compacted { mask: args.mask.unwrap_or(rfbm & to_layout.supported()) },
    };
    let out = convert(&loaded.image, from_layout, &to_layout, rfbm, target)
        .map_err(|e| CliError::invalid(format!("{}: cannot convert: {e}", args.image.display())))?;
    let bytes = store(&out, rfbm & to_layout.supported(), args.to_format, &to_layout)?;
    write_atomic(&args.output, &bytes)?;
    let h = out.header();
    emit(&format!(
        "{}: {} image, {} bytes, XSTATE_BV {} ({}), XCOMP_BV {}\n",
        args.output.display(),
        h.form(),
        out.len(),
        h.xstate_bv,
        h.xstate_bv.names(),
        h.xcomp_bv
    ))
}
