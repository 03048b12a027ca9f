//! `xstate core COREFILE [--regs] [--json] [--cpuid FILE]`: the extended state of every thread
//! of an x86-64 Linux ELF core dump (NT_X86_XSTATE), decoded with the right layout even when the
//! core came from another CPU.
//!
//! The layout comes, in order of preference, from the core's own NT_X86_XSAVE_LAYOUT note
//! (Linux 6.12+ kernels write it; `gcore` does not), from `--cpuid FILE` (the dumping CPU's
//! CPUID), or from this host, whose layout must then explain the note's size exactly
//! (standard_size(XCR0 at byte 464)); otherwise the command refuses rather than guess (gdb
//! guesses Intel offsets from the note size, which misreads AVX-512 state of AMD cores).

use std::path::{Path, PathBuf};

use clap::Args;
use serde_json::{Value, json};
use xstate::Layout;
use xstate::Xfeatures;
use xstate::cpuid::XsaveFeatures;
use xstate::image::Image;
use xstate::image::ImageBuf;
use xstate::image::regs::decode;
use xstate::record::elf::{read_core, rewrite_notes};
use xstate::record::linux::{LayoutNote, NT_X86_XSAVE_LAYOUT, NT_X86_XSTATE, NtXstate};
use xstate::record::{self, Contents, Options, State};

use crate::cmd::imageio::emit;
use crate::cmd::regs::{register_line, registers_json};
use crate::common::{CliError, CliResult, print_json, read_file, say, source};
use crate::output::write_output;

/// Arguments of `xstate core`.
#[derive(Args, Debug)]
pub struct CoreArgs {
    /// The ELF core file.
    pub core: PathBuf,
    /// Decode the registers.
    #[arg(long)]
    pub regs: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// CPUID dump of the CPU that wrote the core, for cores without NT_X86_XSAVE_LAYOUT;
    /// default: this host.
    #[arg(long, value_name = "FILE")]
    pub cpuid: Option<PathBuf>,
    /// With -o: re-lay the notes out for this CPU (a CPUID dump, policy JSON or `host`).
    #[arg(long, value_name = "FILE", requires = "output", conflicts_with = "for_gdb")]
    pub to_cpuid: Option<PathBuf>,
    /// With -o: re-lay the notes out at the Intel standard offsets gdb assumes.
    #[arg(long, requires = "output")]
    pub for_gdb: bool,
    /// Where the re-laid-out copy goes (`-` for stdout).
    #[arg(short = 'o', long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

/// The layout gdb assumes for an XSAVE note (its tables use the Intel standard offsets):
/// AVX 576, BNDREGS 960, BNDCSR 1024, opmask 1088, ZMM_Hi256 1152, Hi16_ZMM 1664, PKRU 2688.
fn gdb_layout() -> Layout {
    use xstate::{Component, Geometry};
    let g = |size, offset| Geometry { size, offset, ..Geometry::default() };
    let table = [
        (Component::SSE, g(256, 160)),
        (Component::AVX, g(256, 576)),
        (Component::BNDREGS, g(64, 960)),
        (Component::BNDCSR, g(64, 1024)),
        (Component::OPMASK, g(64, 1088)),
        (Component::ZMM_HI256, g(512, 1152)),
        (Component::HI16_ZMM, g(1024, 1664)),
        (Component::PKRU, g(8, 2688)),
    ];
    Layout::from_components(XsaveFeatures(0), table).expect("the Intel standard offsets are a layout")
}

/// Writes the re-laid-out copy (module doc).
fn relayout(args: &CoreArgs, bytes: &[u8], name: &str, from: &Layout, out: &Path) -> CliResult {
    let (to, to_name) = if args.for_gdb {
        (gdb_layout(), "gdb's Intel standard layout".to_string())
    } else {
        let s = source(args.to_cpuid.as_ref())?;
        (s.layout, s.name)
    };
    let mut tid = 0u32;
    let mut refused = None;
    let copy = rewrite_notes(bytes, |note, ty, desc| match (note, ty) {
        (b"CORE", 1) => {
            tid = desc.get(32..36).map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
            Ok(None)
        }
        (b"LINUX", NT_X86_XSTATE) => {
            let n = NtXstate::parse(desc, from)?;
            let in_use = Image::new(n.image).map(|i| i.xstate_bv()).unwrap_or_default() - Xfeatures::BIT63;
            let xcr0 = n.xcr0 & to.user_supported();
            let lost = in_use - xcr0;
            if !lost.is_empty() {
                refused = Some(format!("{name}: thread {tid}: {} in use, {to_name} has no place for it", lost.names()));
                return Ok(None);
            }
            let st = State::new(ImageBuf::from_bytes(n.image).ok(), Some(xcr0)).with_xcr0(xcr0);
            let c = Contents::one(record::Format::NtXstate, st);
            record::write(record::Format::NtXstate, &c, from, &to, &Options::default()).map(Some)
        }
        (b"LINUX", NT_X86_XSAVE_LAYOUT) => Ok(Some(LayoutNote::of_layout(&to, to.user_supported()).to_bytes())),
        _ => Ok(None),
    })
    .map_err(|e| CliError::invalid(format!("{name}: thread {tid}: {e} (re-laying out for {to_name})")))?;
    if let Some(r) = refused {
        return Err(CliError::invalid(r));
    }
    write_output(out, &copy)
}

/// Runs `xstate core`.
pub fn run(args: &CoreArgs) -> CliResult {
    let bytes = read_file(&args.core)?;
    let name = args.core.display().to_string();
    let notes = read_core(&bytes).map_err(|e| CliError::invalid(format!("{name}: {e}")))?;
    let (layout, layout_source): (Layout, String) = match notes.layout {
        Some(d) => {
            let l = LayoutNote::parse(d)
                .and_then(|n| n.to_layout(XsaveFeatures(0)))
                .map_err(|e| CliError::invalid(format!("{name}: {e}")))?;
            if let Some(given) = &args.cpuid {
                let g = source(Some(given))?;
                crate::cmd::imageio::placed_alike(&l, &g.layout, xstate::record::Format::ElfCore, &name)?;
            }
            (l, "the core's NT_X86_XSAVE_LAYOUT".into())
        }
        None => {
            let s = source(args.cpuid.as_ref())?;
            (s.layout, s.name)
        }
    };
    if notes.threads.is_empty() {
        return Err(CliError::invalid(format!("{name}: the core has no NT_X86_XSTATE note")));
    }
    if let Some(out) = &args.output {
        if let Some(flag) = [(args.regs, "--regs"), (args.json, "--json")].iter().find_map(|(g, f)| g.then_some(f)) {
            return Err(CliError::usage(format!(
                "{flag} prints the listing; it has no effect with -o (the copy's summary is one line)"
            )));
        }
        return relayout(args, &bytes, &name, &layout, out);
    }
    let mut threads = Vec::new();
    for t in &notes.threads {
        let n = NtXstate::parse(t.xstate, &layout).map_err(|e| {
            let hint = if notes.layout.is_none() && args.cpuid.is_none() {
                "; the core has no NT_X86_XSAVE_LAYOUT and this host's layout does not explain it: pass --cpuid FILE of the CPU that wrote it"
            } else {
                ""
            };
            CliError::invalid(format!("{name}: thread {}: {e} (layout from {layout_source}){hint}", t.tid.unwrap_or(0)))
        })?;
        threads.push((t.tid, n));
    }
    if args.json {
        let list: Vec<Value> = threads
            .iter()
            .map(|(tid, n)| {
                let img = Image::new(n.image).expect("NtXstate holds at least 576 bytes");
                let mut v = json!({
                    "tid": tid,
                    "size": n.image.len(),
                    "xcr0": format!("{:#x}", n.xcr0.bits()),
                    "xstate_bv": format!("{:#x}", img.xstate_bv().bits()),
                    "xstate_bv_names": img.xstate_bv().names().to_string(),
                });
                if args.regs {
                    let d = decode(&img, &layout, n.xcr0);
                    (v["registers"], v["undecoded"]) = registers_json(&d, &layout);
                }
                v
            })
            .collect();
        let comps: Vec<Value> = layout
            .user_supported()
            .iter()
            .filter(|c| !c.is_legacy())
            .map(|c| {
                let g = layout.geometry(c).unwrap_or_default();
                json!({"index": c.index(), "name": layout.name(c), "size": g.size, "offset": g.offset})
            })
            .collect();
        return print_json(&json!({
            "file": name,
            "layout_source": layout_source,
            "layout_note": notes.layout.is_some(),
            "layout": comps,
            "threads": list,
        }));
    }
    let mut out = String::new();
    say!(out, "{name}: {} thread(s); layout from {layout_source}", threads.len());
    for (tid, n) in &threads {
        let img = Image::new(n.image).expect("NtXstate holds at least 576 bytes");
        say!(
            out,
            "thread {}: NT_X86_XSTATE {} bytes, XCR0 {} ({}), XSTATE_BV {} ({})",
            tid.map_or("?".to_string(), |t| t.to_string()),
            n.image.len(),
            n.xcr0,
            n.xcr0.names(),
            img.xstate_bv(),
            img.xstate_bv().names()
        );
        if args.regs {
            let d = decode(&img, &layout, n.xcr0);
            for r in &d.registers {
                say!(out, "  {}", register_line(r));
            }
            for c in &d.undecoded {
                say!(out, "  {:<12} not decoded", layout.name(*c));
            }
        }
    }
    emit(&out)
}
