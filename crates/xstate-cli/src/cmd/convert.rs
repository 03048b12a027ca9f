//! `xstate convert IN --to standard|compacted [--mask MASK] [--cpuid A] [--xcr0 M] [--xss M]
//! [--to-cpuid B] [--to-xcr0 M] [--from-format F] [--to-format G] -o OUT [--json]`: the output,
//! restored on B with its XCR0, loads the same architectural state as the input on A.
//!
//! The two sides' XCR0s: the input's is `--xcr0`, else what the input records, else A's
//! default (XGETBV(0) on this host, every user component of a dump). The output's is
//! `--to-xcr0`, else the input's when the output format records an XCR0 (the guest keeps its
//! XCR0) or B is A, else B's default: the XCR0 `validate OUT --cpuid B` assumes for a bare image.
//! A bare input into a record that hands its XCR0 to the guest (Xen's, the forward-compatible
//! blob) needs `--xcr0` or `--to-xcr0`: A's default would be written as the guest's.

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use serde_json::json;
use xstate::Xfeatures;
use xstate::image::{ImageBuf, Target, convert_between};
use xstate::record::{Field, FieldSet, Format, Options};

use crate::cmd::imageio::{ImageFormat, VmmArgs, XenArgs, check_image_size, load_vcpu, raw_state, records_xcr0, store};
use crate::common::{
    CliError, CliResult, CpuArgs, checked_masks, mask_json, parse_mask, placeable, source, write_output,
};
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
    /// The input file (`-`: standard input), or a CRIU checkpoint directory (with
    /// --to-cpuid B and -o OUTDIR, a new or empty directory: a copy `criu restore --cpu-cap=fpu`
    /// runs on B).
    pub image: PathBuf,
    /// The output form.
    #[arg(long, value_enum)]
    pub to: FormArg,
    /// Components to lay out with --to compacted; default: the output's XCR0 | XSS.
    #[arg(long, value_name = "MASK", value_parser = parse_mask)]
    pub mask: Option<Xfeatures>,
    /// The CPU the input comes from, and the XCR0 | XSS it is restored with there.
    #[command(flatten)]
    pub cpu: CpuArgs,
    /// The CPU the output is for: `host`, a CPUID dump or policy JSON; default: the input's CPU.
    #[arg(long, value_name = "FILE")]
    pub to_cpuid: Option<PathBuf>,
    /// The XCR0 the output is restored with; default: the input's (the one it records, if
    /// any) when OUT's format records one or the CPU is the same, else the --to-cpuid CPU's
    /// default. Not for a container
    /// --to-format, whose vCPU keeps the state's XCR0 (--xcr0, or the one it records).
    #[arg(long, value_name = "MASK", value_parser = parse_mask)]
    pub to_xcr0: Option<Xfeatures>,
    /// File format of the input (`--format` also names it, as in the other commands).
    #[arg(long, visible_alias = "format", value_enum, default_value = "auto")]
    pub from_format: ImageFormat,
    /// File format of OUT.
    #[arg(long, value_enum, default_value = "raw")]
    pub to_format: ImageFormat,
    /// Output file, written atomically (`-`: standard output).
    #[arg(short = 'o', long = "output", value_name = "OUT")]
    pub output: PathBuf,
    /// The vCPU: the one to read from a file holding several (a QEMU stream, a VMM snapshot),
    /// the one to write into with --into, and the one to record where the source has none
    /// (Xen HVM instance, PV vcpu_id).
    #[arg(long, value_name = "N")]
    pub vcpu: Option<u32>,
    /// Fields of the source the output format cannot hold, to drop rather than refuse:
    /// xcr0, xss, xcr0-accum, vcpu, image (comma-separated).
    #[arg(long, value_name = "FIELDS", value_delimiter = ',', value_parser = parse_field)]
    pub drop: Vec<Field>,
    /// Xen's host and domain policy, for Xen records read or written.
    #[command(flatten)]
    pub xen: XenArgs,
    /// The file to write the state into when --to-format is a container (a QEMU stream, a VMM
    /// snapshot): OUT is that file with vCPU --vcpu's state replaced. Without it, the input
    /// itself is the container, every vCPU converted for --to-cpuid.
    #[arg(long, value_name = "FILE")]
    pub into: Option<PathBuf>,
    /// What a QEMU stream or VMM snapshot does not say.
    #[command(flatten)]
    pub vmm: VmmArgs,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

/// The first flag given that a checkpoint's move (`cmd::criu::retarget`) does not use: its
/// core images stay as they are, standard, with their own masks; only cpuinfo.img changes.
fn checkpoint_flag(a: &ConvertArgs) -> Option<&'static str> {
    [
        (a.to == FormArg::Compacted, "--to compacted"),
        (a.mask.is_some(), "--mask"),
        (a.cpu.xcr0.is_some(), "--xcr0"),
        (a.cpu.xss.is_some(), "--xss"),
        (a.to_xcr0.is_some(), "--to-xcr0"),
        (a.from_format != ImageFormat::Auto, "--from-format"),
        (a.to_format != ImageFormat::Raw, "--to-format"),
        (a.vcpu.is_some(), "--vcpu"),
        (!a.drop.is_empty(), "--drop"),
        (a.xen.given(), "--xen-policy/--xen-host"),
        (a.into.is_some(), "--into"),
        (a.vmm.qemu_accel.is_some(), "--qemu-accel"),
        (a.json, "--json"),
    ]
    .into_iter()
    .find_map(|(given, flag)| given.then_some(flag))
}

/// Record formats that hold standard images only.
fn standard_only(f: ImageFormat) -> bool {
    !matches!(f, ImageFormat::Raw | ImageFormat::FcBlob | ImageFormat::Portable)
}

fn parse_field(s: &str) -> Result<Field, String> {
    Field::from_name(s).ok_or_else(|| format!("{s:?}: expected xcr0, xss, xcr0-accum, vcpu or image"))
}

/// Runs `xstate convert`.
pub fn run(args: &ConvertArgs) -> CliResult {
    // A CRIU checkpoint directory: a copy CRIU restores on --to-cpuid (cmd/criu.rs).
    if args.image.is_dir() && crate::cmd::criu::is_checkpoint(&args.image) {
        if let Some(flag) = checkpoint_flag(args) {
            return Err(CliError::usage(format!(
                "{flag} has no effect on a CRIU checkpoint (convert CHECKPOINT --to standard --to-cpuid B [--cpuid A] \
                 -o OUTDIR)"
            )));
        }
        return crate::cmd::criu::retarget(&args.image, args.cpu.cpuid.as_ref(), args.to_cpuid.as_ref(), &args.output);
    }
    if args.to == FormArg::Standard && args.mask.is_some() {
        return Err(CliError::usage("--mask applies to --to compacted only"));
    }
    if args.to == FormArg::Compacted && standard_only(args.to_format) {
        return Err(CliError::usage(format!(
            "--to-format {}: the format holds standard images only; use --to standard",
            args.to_format.name()
        )));
    }
    if args.to_format == ImageFormat::Auto {
        return Err(CliError::usage("--to-format auto: name the output format"));
    }
    if let Some(f) = args.to_format.as_record().filter(|f| f.is_container()) {
        return crate::cmd::container::run(args, f);
    }
    if args.into.is_some() {
        return Err(CliError::usage("--into applies to a container --to-format (qemu)"));
    }
    // --drop of a field the output records drops nothing.
    let out_format = args.to_format.as_record().unwrap_or(xstate::record::Format::Image);
    if let Some(f) = args.drop.iter().find(|f| out_format.holds(**f)) {
        return Err(CliError::usage(format!(
            "--drop {}: {} records it, so nothing is dropped",
            f.name(),
            args.to_format.name()
        )));
    }
    let src = args.cpu.source()?;
    let dst = match &args.to_cpuid {
        Some(p) => Some(source(Some(p))?),
        None => None,
    };
    let name = args.image.display().to_string();
    let mut opts = args.vmm.apply(Options::default(), &args.cpu);
    opts.xen = args.xen.host(&src.layout);
    let loaded = load_vcpu(&args.image, args.from_format, &src.layout, &opts, args.vcpu)?;
    // --vcpu chooses a container's vCPU or is the one a record writes; else it does nothing.
    if args.vcpu.is_some() && !loaded.format.is_container() && !out_format.holds(Field::Vcpu) {
        return Err(CliError::usage(format!(
            "--vcpu: {} records no vCPU and the input holds one state, so it has no effect",
            args.to_format.name()
        )));
    }
    if args.vmm.qemu_accel.is_some() && loaded.format != xstate::record::Format::Qemu {
        return Err(CliError::usage("--qemu-accel applies to QEMU streams only"));
    }
    let xen = xstate::record::Format::uses_xen_host;
    if args.xen.given() && !xen(loaded.format) && !args.to_format.as_record().is_some_and(xen) {
        return Err(CliError::usage(
            "--xen-policy/--xen-host apply to Xen records only (xen-domctl, xen-hvm, xen-pv, fc-blob in or out)",
        ));
    }
    let from_layout = loaded.layout.as_ref().unwrap_or(&src.layout);
    let (xcr0, xss) = args.cpu.masks(&src, (loaded.xcr0, loaded.xss));
    if loaded.layout.is_none() {
        placeable(&src, xcr0 | xss)?;
    }
    let to_layout = dst.as_ref().map_or(from_layout, |d| &d.layout);
    // The output's XCR0 (module documentation).
    let keeps_xcr0 = args.to_format.as_record().is_some_and(records_xcr0);
    let to_xcr0 = match (args.to_xcr0, &dst) {
        (Some(x), _) => x,
        (None, Some(d)) if !keeps_xcr0 => d.default_xcr0,
        // An output without an XCR0 field is laid out for the XCR0 the input records (a vCPU
        // in reset has 0x1 in a buffer KVM lays out for all its states), so it goes back; a
        // record with accumulated states (Xen's) is restored with those, which stay.
        (None, None) if !keeps_xcr0 => loaded
            .state
            .as_ref()
            .filter(|s| s.accum.is_none())
            .and_then(|s| s.xcr0)
            .map_or(xcr0, |x| x & to_layout.user_supported()),
        _ => xcr0,
    };
    // What the output records beside the image: the record's fields, given ones, dropped ones.
    let mut out_opts = Options::default();
    out_opts.xen = args.xen.host(to_layout);
    out_opts.vcpu = args.vcpu;
    out_opts.drop = args.drop.iter().fold(FieldSet::NONE, |d, f| d.with(*f));
    // XCR0 where the source does not record it: --xcr0, or for a bare image the restoring XCR0.
    out_opts.xcr0 = if loaded.state.is_some() { args.cpu.xcr0.or(args.to_xcr0) } else { Some(to_xcr0) };
    // A bare image does not say the XCR0 it was saved with. Xen restores the guest's XCR0 from
    // its records (and a forward-compatible blob's reader lays the image out by its first
    // word), so there the CPU's default would be a guess written as the guest's: it must be
    // given. (A Linux record's XCR0 is the kernel's, which the default is.)
    let guest_xcr0 = matches!(out_format, Format::XenDomctl | Format::XenHvm | Format::XenPv | Format::FcBlob);
    if loaded.state.is_none() && guest_xcr0 && args.cpu.xcr0.is_none() && args.to_xcr0.is_none() {
        return Err(CliError::invalid(format!(
            "{name}: a bare image does not say the XCR0 it was saved with, which {} records as the guest's: give it \
             with --xcr0 (or the output's with --to-xcr0)",
            args.to_format.name()
        )));
    }
    let Some(image) = &loaded.image else {
        // "No xsave state": the output format's own form, or refused where it has none.
        let state = loaded.state.clone().unwrap_or_else(xstate::record::State::no_xsave_state);
        let bytes = store(&state, args.to_format, to_layout, &out_opts)?;
        write_output(&args.output, &bytes)?;
        return summary(&args.output, &format!("{}: no xsave state, {} bytes\n", args.output.display(), bytes.len()));
    };
    checked_masks(from_layout, xcr0, xss)?;
    if loaded.format == xstate::record::Format::Image {
        check_image_size(image, from_layout, xcr0, &name, &src.name)?;
    }
    if let Some(d) = &dst {
        placeable(d, to_xcr0 | xss)?;
    }
    checked_masks(to_layout, to_xcr0, xss)
        .map_err(|e| CliError { message: format!("the output's XCR0|XSS: {}", e.message), ..e })?;
    let to_rfbm = to_xcr0 | xss;
    let target = match args.to {
        FormArg::Standard => Target::Standard,
        FormArg::Compacted => Target::Compacted { mask: args.mask.unwrap_or(to_rfbm & to_layout.supported()) },
    };
    let out = convert_between(image, from_layout, xcr0 | xss, to_layout, to_rfbm, target)
        .map_err(|e| CliError::invalid(format!("{name}: cannot convert: {e}")))?;
    let mut state = match &loaded.state {
        Some(s) => s.clone(),
        // A bare image's XSS is the flag's: recorded where the format holds it, else refused
        // unless dropped (XCR0 comes from out_opts, above).
        None if !xss.is_empty() => raw_state(&out, to_rfbm)?.with_xss(xss),
        None => raw_state(&out, to_rfbm)?,
    };
    state.image = Some(ImageBuf::from_bytes(&out).map_err(CliError::invalid)?);
    state.rfbm = Some(to_rfbm & to_layout.supported());
    // A format without an XCR0 field loses nothing when the XCR0 is the one its readers assume
    // (the output CPU's default, what `validate OUT` and `restore OUT` take).
    let reader_default = dst.as_ref().map_or(src.default_xcr0, |d| d.default_xcr0);
    if !keeps_xcr0 && to_xcr0 == reader_default && state.xcr0.is_none_or(|x| x == to_xcr0) {
        out_opts.drop = out_opts.drop.with(Field::Xcr0);
    }
    let bytes = store(&state, args.to_format, to_layout, &out_opts)
        .map_err(|e| CliError { code: e.code, message: format!("{name}: {}", e.message) })?;
    write_output(&args.output, &bytes)?;
    // What the output holds, as a reader of it sees it: the record writer may size the image
    // anew (for the XCR0 or accumulated states it records) and keeps a record's own XCR0.
    let written = written_state(&bytes, args.to_format, to_layout, &out_opts);
    let (image, out_xcr0, out_xss) = match &written {
        Some(st) => (
            st.image.as_ref().map_or(&out, |i| i),
            st.xcr0.unwrap_or(to_xcr0),
            st.xss.unwrap_or(if keeps_xss(args.to_format) { xss } else { Xfeatures::EMPTY }),
        ),
        None => (&out, to_xcr0, xss),
    };
    let h = image.header();
    let text = if args.json {
        let v = json!({
            "input": name,
            "input_format": crate::cmd::imageio::format_name(loaded.format),
            "output": args.output.display().to_string(),
            "output_format": args.to_format.name(),
            "form": h.form().name(),
            "size": image.len(),
            "file_size": bytes.len(),
            "from_xcr0": mask_json(loaded.state.as_ref().and_then(|s| s.xcr0).unwrap_or(xcr0)),
            "xcr0": mask_json(out_xcr0),
            "xss": mask_json(out_xss),
            "xstate_bv": mask_json(h.xstate_bv),
            "xcomp_bv": mask_json(h.xcomp_bv),
        });
        serde_json::to_string_pretty(&v).unwrap_or_default() + "\n"
    } else {
        format!(
            "{}: {} image, {} bytes, XSTATE_BV {} ({}), XCOMP_BV {}, XCR0 {}\n",
            args.output.display(),
            h.form(),
            image.len(),
            h.xstate_bv,
            h.xstate_bv.names(),
            h.xcomp_bv,
            out_xcr0
        )
    };
    summary(&args.output, &text)
}

/// The state `bytes` (just written in `format`) holds, read back as `inspect` reads it; `None`
/// for a bare image (the converted image itself) or a format read only with more context.
fn written_state(
    bytes: &[u8],
    format: ImageFormat,
    layout: &xstate::Layout,
    opts: &Options,
) -> Option<xstate::record::State> {
    let f = format.as_record()?;
    let mut o = *opts;
    o.layout_given = true;
    xstate::record::read(f, bytes, layout, &o).ok()?.state().cloned()
}

/// Whether the output format records an XSS (else the output's XSS is none).
fn keeps_xss(f: ImageFormat) -> bool {
    matches!(f, ImageFormat::Raw | ImageFormat::FcBlob | ImageFormat::Portable)
}
