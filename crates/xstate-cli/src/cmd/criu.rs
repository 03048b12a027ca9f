//! `xstate criu CHECKPOINT`: the FPU/XSAVE state of every thread of a CRIU checkpoint (a
//! directory of `core-<tid>.img`, or one such file), its `cpuinfo.img`, and what
//! `criu restore --cpu-cap=fpu` would say on another host.
//!
//! CRIU stores components, not offsets, so the images are laid out for `--cpuid` (default this
//! host). `--extract` writes one thread's image; `--patch IMG` writes an edited image back into
//! that thread's core image (only its fpregs and the enclosing lengths change; an unchanged
//! image gives the file back byte for byte). `--to-cpuid B` gives CRIU's own verdict (its
//! rules: capabilities, xfeatures within B's, equal xsave_size and xsave_size_max) and what
//! xstate knows beyond it: per component whether B has it at CRIU's size, and the sizes a
//! process's glibc cached on the dumping host.

use std::path::{Path, PathBuf};

use clap::Args;
use serde_json::{Value, json};
use xstate::Xfeatures;
use xstate::image::Image;
use xstate::image::regs::decode;
use xstate::record::criu::core::{CoreFpu, field_name, holdable};
use xstate::record::criu::cpuinfo::{CpuInfo, X86Entry};
use xstate::record::{self, Contents, Format, Options, State, StateId};

use crate::cmd::imageio::emit;
use crate::cmd::regs::{register_line, registers_json};
use crate::common::{CliError, CliResult, print_json, read_file, say, source};
use crate::output::write_output;

/// Arguments of `xstate criu`.
#[derive(Args, Debug)]
pub struct CriuArgs {
    /// A checkpoint directory (`criu dump -D DIR`) or one `core-<tid>.img`.
    pub checkpoint: PathBuf,
    /// The CPU whose layout the images are laid out for (a CPUID dump, policy JSON or
    /// `host`); default: this host.
    #[arg(long, value_name = "FILE")]
    pub cpuid: Option<PathBuf>,
    /// Decode the registers.
    #[arg(long)]
    pub regs: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// Would `criu restore --cpu-cap=fpu` run on this CPU (a CPUID dump, policy JSON or
    /// `host`)? Exit 1 when CRIU or xstate says no.
    #[arg(long, value_name = "FILE")]
    pub to_cpuid: Option<PathBuf>,
    /// The thread for --extract / --patch (default: the only one).
    #[arg(long, value_name = "TID")]
    pub thread: Option<u32>,
    /// Write the thread's standard image (for --cpuid's layout) to -o.
    #[arg(long, requires = "output")]
    pub extract: bool,
    /// Write this XSAVE image (laid out for --cpuid) into the thread's core image: in place,
    /// or to -o.
    #[arg(long, value_name = "IMAGE", conflicts_with = "extract")]
    pub patch: Option<PathBuf>,
    /// Output file (`-` for stdout).
    #[arg(short = 'o', long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

struct Thread {
    tid: Option<u32>,
    path: PathBuf,
    bytes: Vec<u8>,
}

fn tid_of(name: &str) -> Option<u32> {
    name.strip_prefix("core-")?.strip_suffix(".img")?.parse().ok()
}

fn threads(p: &Path) -> CliResult<(Vec<Thread>, Option<PathBuf>)> {
    if !p.is_dir() {
        let tid = p.file_name().and_then(|n| n.to_str()).and_then(tid_of);
        let cpuinfo = p.parent().map(|d| d.join("cpuinfo.img")).filter(|c| c.is_file());
        return Ok((vec![Thread { tid, path: p.to_path_buf(), bytes: read_file(p)? }], cpuinfo));
    }
    let rd = std::fs::read_dir(p).map_err(|e| CliError::usage(format!("{}: {e}", p.display())))?;
    let mut out = Vec::new();
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(tid) = tid_of(&name) {
            out.push(Thread { tid: Some(tid), path: e.path(), bytes: read_file(&e.path())? });
        }
    }
    out.sort_by_key(|t| t.tid);
    if out.is_empty() {
        return Err(CliError::invalid(format!("{}: no core-<tid>.img in this directory", p.display())));
    }
    let cpuinfo = Some(p.join("cpuinfo.img")).filter(|c| c.is_file());
    Ok((out, cpuinfo))
}

fn invalid(path: &Path, e: impl std::fmt::Display) -> CliError {
    CliError::invalid(format!("{}: {e}", path.display()))
}

/// The quirk's sentence, where it applies.
fn quirk_line(e: &X86Entry) -> Option<String> {
    let q = e.quirk();
    q.present.then(|| {
        let mut s = format!(
            "CRIU dump quirk: xfeatures_mask {:#x} lacks SSE and BNDREGS (bits 1, 3) because CRIU's \
             XFEATURE_MASK_SUPERVISOR ORs the enum value XFEATURE_HDC (10) instead of 1 << 10",
            e.xfeatures_mask.unwrap_or_default().bits()
        );
        if q.bndregs_lost {
            s.push_str("; this host had MPX (BNDCSR is in the mask): BNDREGS (bnd0-3) were not dumped and restore loads them as init");
        } else {
            s.push_str("; harmless here (no MPX), but on an MPX host BNDREGS would never be dumped");
        }
        s
    })
}

/// Runs `xstate criu`.
pub fn run(a: &CriuArgs) -> CliResult {
    let (threads, cpuinfo_path) = threads(&a.checkpoint)?;
    let src = source(a.cpuid.as_ref())?;
    let layout = &src.layout;
    let opts = Options::default();
    if a.extract || a.patch.is_some() {
        let t = match (a.thread, threads.as_slice()) {
            (Some(tid), _) => threads
                .iter()
                .find(|t| t.tid == Some(tid))
                .ok_or_else(|| CliError::usage(format!("{}: no core-{tid}.img", a.checkpoint.display())))?,
            (None, [one]) => one,
            (None, _) => return Err(CliError::usage("the checkpoint has several threads: pass --thread TID")),
        };
        if a.extract {
            let c = record::read(Format::CriuCore, &t.bytes, layout, &opts).map_err(|e| invalid(&t.path, e))?;
            let img = c.state().and_then(|s| s.image.as_ref()).ok_or_else(|| invalid(&t.path, "no image"))?;
            return write_output(a.output.as_deref().unwrap_or(Path::new("-")), img);
        }
        let path = a.patch.as_deref().unwrap_or(Path::new("-"));
        let bytes = read_file(path)?;
        let img = Image::new(&bytes).map_err(|e| invalid(path, e))?;
        let rfbm = match img.form() {
            xstate::image::Form::Compacted => img.header().compacted_components() | Xfeatures::LEGACY,
            xstate::image::Form::Standard => {
                // The components the image's size lays out on this layout, at most every one.
                let all = layout.user_supported();
                all.iter()
                    .filter(|&c| c.is_legacy() || layout.standard_range(c).is_some_and(|r| r.end <= bytes.len()))
                    .fold(Xfeatures::LEGACY, |m, c| m.with(c))
            }
        };
        let buf = xstate::image::ImageBuf::from_bytes(&bytes).map_err(|e| invalid(path, e))?;
        let contents = Contents::one(Format::Image, State::new(Some(buf), Some(rfbm)));
        let out =
            record::patch(Format::CriuCore, &t.bytes, &contents, layout, &opts).map_err(|e| invalid(&t.path, e))?;
        return write_output(a.output.as_deref().unwrap_or(&t.path), &out);
    }

    let cpuinfo = match &cpuinfo_path {
        Some(p) => Some(CpuInfo::parse(&read_file(p)?).map_err(|e| invalid(p, e))?),
        None => None,
    };
    let entry = cpuinfo.as_ref().and_then(|c| c.x86.first());
    let mut rows = Vec::new();
    for t in &threads {
        let core = CoreFpu::parse(&t.bytes).map_err(|e| invalid(&t.path, e))?;
        let c = record::read(Format::CriuCore, &t.bytes, layout, &opts).map_err(|e| invalid(&t.path, e))?;
        let mut s = c.states.into_iter().next().ok_or_else(|| invalid(&t.path, "no state"))?;
        s.id = t.tid.map(StateId::Thread);
        rows.push((t, core.xstate_bv, core.held(), s));
    }
    let target = match &a.to_cpuid {
        Some(p) => Some(source(Some(p))?),
        None => None,
    };
    let mut refused = false;
    let mut verdict_lines = Vec::new();
    let mut verdict_json = json!(null);
    if let Some(b) = &target {
        let host = X86Entry::of_cpuid(&b.cpuid);
        let criu = entry.map(|e| e.cpu_cap_fpu(&host)).unwrap_or_default();
        let mut beyond = Vec::new();
        for (t, bv, held, _) in &rows {
            let used = bv.unwrap_or(Xfeatures::LEGACY) - Xfeatures::LEGACY - Xfeatures::BIT63;
            for c in used.iter() {
                let want = layout.geometry(c).map(|g| g.size);
                let have = b.layout.geometry(c).filter(|_| b.layout.user_supported().contains(c)).map(|g| g.size);
                let tid = t.tid.map_or("?".into(), |t| t.to_string());
                match have {
                    None => beyond.push(format!(
                        "thread {tid}: {} in use, {} lacks it: CRIU restores it as init (state lost)",
                        layout.name(c),
                        b.name
                    )),
                    Some(h) if Some(h) != want && held.contains(c) => beyond.push(format!(
                        "thread {tid}: {} is {h} bytes on {}, CRIU's {} holds {}: restore refuses",
                        layout.name(c),
                        b.name,
                        field_name(c).unwrap_or("field"),
                        want.unwrap_or(0)
                    )),
                    _ => {}
                }
            }
        }
        if let Some(e) = entry {
            let a_size = e.xsave_size.unwrap_or(0);
            let b_size = host.xsave_size.unwrap_or(0);
            if b_size > a_size {
                beyond.push(format!(
                    "glibc sized its lazy-binding XSAVE area on the dumping host ({a_size} bytes, CPUID 0xD.0 EBX); \
                     on {} XSAVE writes {b_size}: a restored process overflows it",
                    b.name
                ));
            }
        }
        let ok = criu.is_empty() && beyond.is_empty();
        refused = !ok;
        match criu.first() {
            Some(r) => verdict_lines.push(format!("criu restore --cpu-cap=fpu on {}: refuses: {r}", b.name)),
            None if entry.is_some() => {
                verdict_lines.push(format!("criu restore --cpu-cap=fpu on {}: passes the FPU check", b.name))
            }
            None => verdict_lines.push("criu restore --cpu-cap=fpu: no cpuinfo.img to check".into()),
        }
        for r in criu.iter().skip(1) {
            verdict_lines.push(format!("  and then: {r}"));
        }
        for l in &beyond {
            verdict_lines.push(format!("  xstate: {l}"));
        }
        if criu.is_empty() && beyond.is_empty() {
            verdict_lines.push(format!(
                "  xstate: every component in use exists on {} at CRIU's size; CRIU re-lays each out at {}'s offsets",
                b.name, b.name
            ));
        }
        verdict_json = json!({
            "to": b.name,
            "compatible": ok,
            "criu_refusals": criu.iter().map(|r| r.to_string()).collect::<Vec<_>>(),
            "xstate": beyond,
            "host_entry": entry_json(&host),
        });
    }

    if a.json {
        let list: Vec<Value> = rows
            .iter()
            .map(|(t, bv, held, s)| {
                let img = s.image.as_ref().map(|i| i.image());
                let mut v = json!({
                    "tid": t.tid,
                    "file": t.path.display().to_string(),
                    "xstate_bv": bv.map(|b| format!("{:#x}", b.bits())),
                    "fields": format!("{:#x}", held.bits()),
                    "rfbm": s.rfbm.map(|m| format!("{:#x}", m.bits())),
                    "size": img.map(|i| i.len()),
                });
                if let (true, Some(img), Some(rfbm)) = (a.regs, img, s.rfbm) {
                    let d = decode(&img, layout, rfbm);
                    (v["registers"], v["undecoded"]) = registers_json(&d, layout);
                }
                v
            })
            .collect();
        let out = json!({
            "checkpoint": a.checkpoint.display().to_string(),
            "layout_source": src.name,
            "holdable": format!("{:#x}", holdable().bits()),
            "cpuinfo": entry.map(entry_json),
            "quirk": entry.and_then(quirk_line),
            "threads": list,
            "to_cpuid": verdict_json,
        });
        print_json(&out)?;
    } else {
        let mut out = String::new();
        say!(
            out,
            "{}: CRIU checkpoint, {} thread(s); images laid out for {}",
            a.checkpoint.display(),
            rows.len(),
            src.name
        );
        if let Some(e) = entry {
            say!(
                out,
                "cpuinfo.img: vendor {} family {:#x} model {:#x} {:?}: xfeatures_mask {}, xsave_size {}, xsave_size_max {}",
                e.vendor_id,
                e.cpu_family,
                e.model,
                e.model_id.as_deref().unwrap_or(""),
                e.xfeatures_mask.map_or("-".into(), |m| format!("{m} ({})", m.names())),
                e.xsave_size.map_or("-".into(), |s| s.to_string()),
                e.xsave_size_max.map_or("-".into(), |s| s.to_string()),
            );
            if let Some(q) = quirk_line(e) {
                say!(out, "  {q}");
            }
        }
        for (t, bv, held, s) in &rows {
            say!(
                out,
                "thread {}: xstate_bv {}, fields for {} ({}), image {} bytes",
                t.tid.map_or("?".into(), |t| t.to_string()),
                bv.map_or("-".into(), |b| format!("{b} ({})", b.names())),
                held,
                held.names(),
                s.image.as_ref().map_or(0, |i| i.len())
            );
            if let (true, Some(img), Some(rfbm)) = (a.regs, s.image.as_ref(), s.rfbm) {
                let d = decode(&img.image(), layout, rfbm);
                for r in &d.registers {
                    say!(out, "  {}", register_line(r));
                }
            }
        }
        for l in &verdict_lines {
            say!(out, "{l}");
        }
        emit(&out)?;
    }
    if refused {
        return Err(CliError::invalid(verdict_lines.first().cloned().unwrap_or_default()));
    }
    Ok(())
}

fn entry_json(e: &X86Entry) -> Value {
    json!({
        "vendor_id": e.vendor_id,
        "cpu_family": e.cpu_family,
        "model": e.model,
        "stepping": e.stepping,
        "model_id": e.model_id,
        "xfeatures_mask": e.xfeatures_mask.map(|m| format!("{:#x}", m.bits())),
        "xsave_size": e.xsave_size,
        "xsave_size_max": e.xsave_size_max,
    })
}
