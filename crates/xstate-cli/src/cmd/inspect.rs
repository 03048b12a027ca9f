//! `xstate inspect IMAGE [--regs] [--json] [--format F]`: the header, the components and where
//! they lie, whether XRSTOR would load the image, and with `--regs` the register values it
//! loads (gdb's names, hex).

use std::path::PathBuf;

use clap::Args;
use serde_json::json;
use xstate::image::regs::{Decoded, decode};
use xstate::image::state::effective_mxcsr;
use xstate::image::validate::{Context, Profile, validate};
use xstate::image::{Form, Image};
use xstate::{Layout, Xfeatures};

use std::fmt::Write as _;

use xstate::record::{Format, Options, State, StateId};

use crate::cmd::imageio::{ImageFormat, VmmArgs, XenArgs, emit, host_mxcsr_mask, load_vcpu, need_header};
use crate::cmd::regs::{register_line, registers_json};
use crate::common::{CliError, CliResult, CpuArgs, checked_masks, mask_json, print_json};

/// Arguments of `xstate inspect`.
#[derive(Args, Debug)]
pub struct InspectArgs {
    /// The image file.
    pub image: PathBuf,
    /// Decode the registers.
    #[arg(long)]
    pub regs: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// File format of IMAGE (`auto` recognises records; other bytes are a bare image).
    #[arg(long, value_enum, default_value = "auto")]
    pub format: ImageFormat,
    /// The CPU the image belongs to, and the XCR0 | XSS it is restored with.
    #[command(flatten)]
    pub cpu: CpuArgs,
    /// Xen's host and domain policy, for Xen records.
    #[command(flatten)]
    pub xen: XenArgs,
    /// The vCPU to show, in a file holding several (a QEMU stream, a VMM snapshot).
    #[arg(long, value_name = "N")]
    pub vcpu: Option<u32>,
    /// What a QEMU stream or VMM snapshot does not say.
    #[command(flatten)]
    pub vmm: VmmArgs,
}

/// What a record says beside its image, as the format names it: JSON keys and text lines.
fn record_fields(format: Format, st: &State) -> Vec<(&'static str, serde_json::Value, String)> {
    let mut out = Vec::new();
    let hex = |m: Xfeatures| json!(format!("{:#x}", m.bits()));
    if let Some(StateId::Vcpu(v)) = st.id {
        let key = if format == Format::XenHvm { "instance" } else { "vcpu_id" };
        out.push((key, json!(v), format!("{key} {v}")));
    }
    if let Some(StateId::Thread(t)) = st.id {
        out.push(("tid", json!(t), format!("tid {t}")));
    }
    if let Some(m) = st.uninterpreted.xfeature_mask {
        out.push(("xfeature_mask", hex(m), format!("xfeature_mask {m} (the saving host's; ignored on load)")));
    }
    if let Some(x) = st.xcr0 {
        out.push(("xcr0", hex(x), format!("xcr0 {x} ({})", x.names())));
    }
    if let Some(x) = st.xss {
        out.push(("xss", hex(x), format!("xss {x}")));
    }
    if let Some(a) = st.accum {
        let key = if matches!(format, Format::FcBlob | Format::Portable) { "xstates_accum" } else { "xcr0_accum" };
        out.push((key, hex(a), format!("{key} {a} ({})", a.names())));
    }
    out
}

struct ComponentRow {
    index: u8,
    name: String,
    offset: Option<usize>,
    size: u32,
    in_use: bool,
    in_image: bool,
}

fn rows(img: &Image<'_>, l: &Layout, rfbm: Xfeatures) -> Vec<ComponentRow> {
    let laid_out = match img.form() {
        Form::Standard => rfbm & l.user_supported(),
        Form::Compacted => img.header().compacted_components() | Xfeatures::LEGACY,
    };
    (laid_out | (img.xstate_bv() - Xfeatures::BIT63))
        .iter()
        .map(|c| {
            let range = xstate::image::component_range(l, img.xcomp_bv(), c);
            ComponentRow {
                index: c.index(),
                name: l.name(c),
                offset: range.as_ref().map(|r| r.start),
                size: l.geometry(c).map_or(0, |g| g.size),
                in_use: img.xstate_bv().contains(c),
                in_image: range.is_some_and(|r| r.end <= img.len()),
            }
        })
        .collect()
}

/// Runs `xstate inspect`.
pub fn run(args: &InspectArgs) -> CliResult {
    let src = args.cpu.source()?;
    let mut opts = args.vmm.apply(Options::default(), &args.cpu);
    opts.xen = args.xen.host(&src.layout);
    let loaded = load_vcpu(&args.image, args.format, &src.layout, &opts, args.vcpu)?;
    args.vmm.check(loaded.format, args.vcpu)?;
    if args.xen.given() && !loaded.format.uses_xen_host() {
        return Err(CliError::usage(
            "--xen-policy/--xen-host apply to Xen records only (xen-domctl, xen-hvm, xen-pv, fc-blob)",
        ));
    }
    let fields = loaded.state.as_ref().map(|s| record_fields(loaded.format, s)).unwrap_or_default();
    let Some(image) = &loaded.image else {
        if args.json {
            let mut v = json!({
                "file": args.image.display().to_string(),
                "format": crate::cmd::imageio::format_name(loaded.format),
                "no_xsave_state": true,
            });
            for (k, val, _) in &fields {
                v[*k] = val.clone();
            }
            return print_json(&v);
        }
        let mut out = format!("{}: {} record: no xsave state\n", args.image.display(), loaded.format);
        for (_, _, line) in &fields {
            writeln!(out, "{line}").ok();
        }
        return emit(&out);
    };
    let img = need_header(image, &args.image)?;
    let l = loaded.layout.as_ref().unwrap_or(&src.layout);
    let (xcr0, xss) = args.cpu.masks(&src, (loaded.xcr0, loaded.xss));
    // Masks no CPU restores with are refused as `validate` refuses them.
    checked_masks(l, xcr0, xss)?;
    // A non-zero XSS means XRSTORS (RFBM = XCR0 | XSS), as in `validate`: it takes no
    // standard image.
    let xrstors = !xss.is_empty();
    let rfbm = if xrstors || img.form() == Form::Compacted { xcr0 | xss } else { xcr0 };
    let mut ctx =
        Context::new(xcr0).with_mxcsr_mask_field(if args.cpu.cpuid.is_none() { host_mxcsr_mask() } else { 0xFFFF });
    ctx.xss = xss;
    let verdict = validate(img.bytes(), l, Profile::Hardware, &ctx);
    let restore = if xrstors { "XRSTORS" } else { "XRSTOR" };
    let h = img.header();
    let reserved: Vec<(usize, u8)> =
        (0..48).filter_map(|i| h.reserved.get(i).filter(|&&b| b != 0).map(|&b| (528 + i, b))).collect();
    let rows = rows(&img, l, rfbm);
    let decoded: Option<Decoded> = args.regs.then(|| decode(&img, l, rfbm));
    let software_nonzero = img.bytes().get(464..512).is_some_and(|b| b.iter().any(|&x| x != 0));
    if args.json {
        let mut v = json!({
            "file": args.image.display().to_string(),
            "format": crate::cmd::imageio::format_name(loaded.format),
            "size": img.len(),
            "form": img.form().name(),
            "xstate_bv": mask_json(h.xstate_bv),
            "xstate_bv_names": h.xstate_bv.names().to_string(),
            "xcomp_bv": mask_json(h.xcomp_bv),
            "reserved_nonzero": reserved.iter().map(|(o, b)| json!({"offset": o, "value": b})).collect::<Vec<_>>(),
            "mxcsr": img.mxcsr(),
            "mxcsr_loaded": effective_mxcsr(&img, rfbm),
            "mxcsr_mask": img.mxcsr_mask(),
            "software_bytes_nonzero": software_nonzero,
            "xcr0": mask_json(xcr0),
            "xss": mask_json(xss),
            "no_xsave_state": false,
            "hardware": json!({"valid": verdict.is_ok(), "error": verdict.as_ref().err().map(|e| e.to_string())}),
            "components": rows.iter().map(|r| json!({
                "index": r.index, "name": r.name, "offset": r.offset, "size": r.size,
                "in_use": r.in_use, "in_image": r.in_image,
            })).collect::<Vec<_>>(),
        });
        // What the record says overrides the restoring context's defaults (a Xen record's own
        // xcr0, and its xcr0_accum beside it).
        for (k, val, _) in &fields {
            v[*k] = val.clone();
        }
        if !loaded.notes.is_empty() {
            v["notes"] = json!(loaded.notes);
        }
        if let Some(d) = &decoded {
            (v["registers"], v["undecoded"]) = registers_json(d, l);
            v["truncated"] = json!(d.truncated.iter().map(|c| l.name(*c)).collect::<Vec<_>>());
        }
        print_json(&v)?;
        return refused(&verdict, &args.image);
    }
    let mut out = String::new();
    if loaded.format != xstate::record::Format::Image {
        writeln!(out, "{}: {} record", args.image.display(), loaded.format).ok();
        for n in &loaded.notes {
            writeln!(out, "note: {n}").ok();
        }
        for (_, _, line) in &fields {
            writeln!(out, "{line}").ok();
        }
    }
    writeln!(out, "{}: {} bytes, {} form", args.image.display(), img.len(), img.form()).ok();
    writeln!(out, "XSTATE_BV {} ({})", h.xstate_bv, h.xstate_bv.names()).ok();
    writeln!(out, "XCOMP_BV  {} ({})", h.xcomp_bv, h.xcomp_bv.names()).ok();
    if reserved.is_empty() {
        writeln!(out, "reserved header bytes 528..575: zero").ok();
    } else {
        let list: Vec<String> = reserved.iter().map(|(o, b)| format!("{o}={b:#04x}")).collect();
        writeln!(out, "reserved header bytes 528..575: non-zero at {}", list.join(" ")).ok();
    }
    let loaded_mxcsr = effective_mxcsr(&img, rfbm).map_or("not loaded".to_string(), |m| format!("{m:#x}"));
    writeln!(out, "MXCSR field {:#x} (loaded: {loaded_mxcsr}), MXCSR_MASK {:#x}", img.mxcsr(), img.mxcsr_mask()).ok();
    if software_nonzero {
        writeln!(out, "bytes 464..511 (software area): non-zero").ok();
    }
    match &verdict {
        Ok(()) => writeln!(out, "{restore} with RFBM {rfbm}: loads without #GP ({})", src.name),
        Err(e) => writeln!(out, "{restore} with RFBM {rfbm}: refused: {e}"),
    }
    .ok();
    writeln!(out).ok();
    writeln!(out, "{:>5}  {:<14} {:>8}  {:>6}  state", "index", "component", "offset", "size").ok();
    for r in &rows {
        writeln!(
            out,
            "{:>5}  {:<14} {:>8}  {:>6}  {}{}",
            r.index,
            r.name,
            r.offset.map_or("-".to_string(), |o| format!("{o:#x}")),
            r.size,
            if r.in_use { "in use" } else { "init" },
            if r.in_image { "" } else { " (beyond the image's end)" }
        )
        .ok();
    }
    if let Some(d) = &decoded {
        writeln!(out).ok();
        for r in &d.registers {
            writeln!(out, "{}", register_line(r)).ok();
        }
        for c in &d.undecoded {
            writeln!(
                out,
                "{:<12} not decoded: the catalogue has no decoder for this CPU's component {}",
                l.name(*c),
                c.index()
            )
            .ok();
        }
        for c in &d.truncated {
            writeln!(out, "{:<12} not decoded: beyond the image's end", l.name(*c)).ok();
        }
    }
    emit(&out)?;
    refused(&verdict, &args.image)
}

/// After printing what it could read, `inspect` of an image XRSTOR would refuse exits 1.
fn refused(verdict: &Result<(), xstate::image::ValidationError>, path: &std::path::Path) -> CliResult {
    verdict.as_ref().map_err(|e| CliError::invalid(format!("{}: XRSTOR would refuse it: {e}", path.display()))).copied()
}
