//! `xstate criu CHECKPOINT`: the FPU/XSAVE state of every thread of a CRIU checkpoint (a
//! directory of `core-<tid>.img`, or one such file), its `cpuinfo.img`, and what
//! `criu restore --cpu-cap=fpu` would say on another host.
//!
//! CRIU stores components, not offsets, so the images are laid out for `--cpuid` (default this
//! host). `--extract` writes one thread's image; `--patch IMG` writes an edited image back into
//! that thread's core image (only its fpregs and the enclosing lengths change; an unchanged
//! image gives the file back byte for byte). The thread is `--thread TID`, or the only one:
//! with several and no `--thread`, both refuse naming the tids rather than pick one.
//! `--to-cpuid B` gives CRIU's own verdict (its rules: capabilities, xfeatures within B's,
//! equal xsave_size and xsave_size_max) and what xstate knows beyond it: per component whether
//! B has it at CRIU's size, and the sizes a process's glibc cached on the dumping host.

use std::path::{Path, PathBuf};

use clap::Args;
use serde_json::{Value, json};
use xstate::Xfeatures;
use xstate::image::Image;
use xstate::image::regs::decode;
use xstate::record::criu::core::{CoreFpu, field_name, field_size, holdable};
use xstate::record::criu::cpuinfo::{CpuInfo, Refusal, X86Entry};
use xstate::record::{self, Contents, Format, Options, State, StateId};

use crate::cmd::imageio::emit;
use crate::cmd::regs::{register_line, registers_json};
use crate::common::{CliError, CliResult, Source, print_json, read_file, say, source};
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
    /// The thread for --extract / --patch (its tid, as in `core-<tid>.img`); needed when the
    /// checkpoint has several threads, refused without --extract / --patch.
    #[arg(long, value_name = "TID")]
    pub thread: Option<u32>,
    /// Write the thread's standard image (for --cpuid's layout) to -o.
    #[arg(long, requires = "output")]
    pub extract: bool,
    /// Write this XSAVE image (laid out for --cpuid) into the thread's core image: in place,
    /// or to -o.
    #[arg(long, value_name = "IMAGE", conflicts_with = "extract")]
    pub patch: Option<PathBuf>,
    /// Output file of --extract / --patch (`-` for stdout).
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
    let editing = a.extract || a.patch.is_some();
    if let Some(flag) = unused_flag(a, editing) {
        return Err(CliError::usage(flag));
    }
    let (threads, cpuinfo_path) = threads(&a.checkpoint)?;
    let src = source(a.cpuid.as_ref())?;
    let layout = &src.layout;
    let opts = Options::default();
    if editing {
        let t = pick(&a.checkpoint, &threads, a.thread)?;
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
        // Exactly the size those components give here (as `convert` and `restore` ask of a
        // bare image): an image of another CPU would be read with this layout's offsets.
        let name = path.display().to_string();
        let what = "another CPU (--cpuid names the checkpoint's CPU)";
        crate::cmd::imageio::sized_for(&bytes, layout, rfbm, &name, &src.name, what)?;
        let buf = xstate::image::ImageBuf::from_bytes(&bytes).map_err(|e| invalid(path, e))?;
        let contents = Contents::one(Format::Image, State::new(Some(buf), Some(rfbm)));
        let out = record::patch(Format::CriuCore, &t.bytes, &contents, layout, layout, &opts)
            .map_err(|e| invalid(&t.path, e))?;
        return write_output(a.output.as_deref().unwrap_or(&t.path), &out);
    }

    let (entry_owned, rows) = read_rows(&threads, cpuinfo_path.as_deref(), layout)?;
    let entry = entry_owned.as_ref();
    let target = match &a.to_cpuid {
        Some(p) => Some(source(Some(p))?),
        None => None,
    };
    // A listing is of the images on --cpuid's layout; a verdict is for the target's.
    if target.is_none()
        && let Some(Err(e)) = rows.iter().map(|r| &r.state).find(|s| s.is_err())
    {
        return Err(CliError::invalid(e));
    }
    let mut refused = false;
    let mut verdict_lines = Vec::new();
    let mut verdict_json = json!(null);
    if let Some(b) = &target {
        let v = verdict(&rows, entry, b);
        refused = !v.ok();
        verdict_lines = v.lines(entry.is_some(), &b.name);
        verdict_json = v.json(&b.name);
    }

    if a.json {
        let list: Vec<Value> = rows
            .iter()
            .map(|Row { thread: t, xstate_bv: bv, held, state }| {
                let s = state.as_ref().ok();
                let img = s.and_then(|s| s.image.as_ref()).map(|i| i.image());
                let rfbm = s.and_then(|s| s.rfbm);
                let mut v = json!({
                    "tid": t.tid,
                    "file": t.path.display().to_string(),
                    "xstate_bv": bv.map(|b| format!("{:#x}", b.bits())),
                    "fields": format!("{:#x}", held.bits()),
                    "rfbm": rfbm.map(|m| format!("{:#x}", m.bits())),
                    "size": img.map(|i| i.len()),
                });
                if let Err(e) = state {
                    v["image_error"] = json!(e);
                }
                if let (true, Some(img), Some(rfbm)) = (a.regs, img, rfbm) {
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
        for Row { thread: t, xstate_bv: bv, held, state } in &rows {
            let image = match state {
                Ok(s) => format!("image {} bytes", s.image.as_ref().map_or(0, |i| i.len())),
                Err(_) => format!("no image on {} (it lacks a component in use)", src.name),
            };
            say!(
                out,
                "thread {}: xstate_bv {}, fields for {} ({}), {image}",
                t.tid.map_or("?".into(), |t| t.to_string()),
                bv.map_or("-".into(), |b| format!("{b} ({})", b.names())),
                held,
                held.names(),
            );
            let s = state.as_ref().ok();
            if let (true, Some(img), Some(rfbm)) = (a.regs, s.and_then(|s| s.image.as_ref()), s.and_then(|s| s.rfbm)) {
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

/// The sentence refusing a flag that has no effect in this mode (`editing`: --extract or
/// --patch), if one was given.
fn unused_flag(a: &CriuArgs, editing: bool) -> Option<&'static str> {
    if editing {
        [
            (a.regs, "--regs decodes the listing; it has no effect with --extract / --patch"),
            (a.json, "--json prints the listing; it has no effect with --extract / --patch"),
            (a.to_cpuid.is_some(), "--to-cpuid gives the listing's verdict; it has no effect with --extract / --patch"),
        ]
        .into_iter()
        .find_map(|(given, why)| given.then_some(why))
    } else if a.thread.is_some() {
        Some("--thread picks the thread for --extract / --patch; it has no effect without them")
    } else if a.output.is_some() {
        Some("-o is where --extract / --patch write; the listing goes to stdout")
    } else {
        None
    }
}

/// The tids of `threads`, for a message: "7384, 7385, 7386" (`?` for a file not named
/// `core-<tid>.img`).
fn tid_list(threads: &[Thread]) -> String {
    threads.iter().map(|t| t.tid.map_or("?".into(), |t| t.to_string())).collect::<Vec<_>>().join(", ")
}

/// The thread --extract / --patch work on: `--thread TID`, or the only one. Never a guess:
/// several threads and no --thread, or a TID the checkpoint lacks, is a usage error naming
/// the checkpoint's threads.
fn pick<'a>(checkpoint: &Path, threads: &'a [Thread], tid: Option<u32>) -> CliResult<&'a Thread> {
    match (tid, threads) {
        (Some(tid), _) => threads.iter().find(|t| t.tid == Some(tid)).ok_or_else(|| {
            CliError::usage(format!(
                "{}: no thread {tid} (no core-{tid}.img); its threads: {}",
                checkpoint.display(),
                tid_list(threads)
            ))
        }),
        (None, [one]) => Ok(one),
        (None, _) => Err(CliError::usage(format!(
            "{}: {} threads ({}): pass --thread TID to say which one --extract / --patch is for",
            checkpoint.display(),
            threads.len(),
            tid_list(threads)
        ))),
    }
}

/// One thread of a checkpoint, read.
struct Row<'a> {
    thread: &'a Thread,
    xstate_bv: Option<Xfeatures>,
    held: Xfeatures,
    /// The thread's image on the reading layout, or why that layout cannot hold it (a
    /// component in use it does not enumerate at CRIU's size). CRIU's core names each
    /// component's field, so the verdict for another CPU does not need it.
    state: Result<State, String>,
}

/// The cpuinfo entry (if the checkpoint has one) and every thread read on `layout`. A thread
/// whose state `layout` cannot hold keeps the reason in its row; every other fault refuses.
fn read_rows<'a>(
    threads: &'a [Thread],
    cpuinfo: Option<&Path>,
    layout: &xstate::Layout,
) -> CliResult<(Option<X86Entry>, Vec<Row<'a>>)> {
    let entry = match cpuinfo {
        Some(p) => Some(CpuInfo::parse(&read_file(p)?).map_err(|e| invalid(p, e))?.x86.remove(0)),
        None => None,
    };
    let mut rows = Vec::new();
    for t in threads {
        let core = CoreFpu::parse(&t.bytes).map_err(|e| invalid(&t.path, e))?;
        let state = match record::read(Format::CriuCore, &t.bytes, layout, &Options::default()) {
            Ok(c) => {
                let mut s = c.states.into_iter().next().ok_or_else(|| invalid(&t.path, "no state"))?;
                s.id = t.tid.map(StateId::Thread);
                Ok(s)
            }
            Err(e) if e.rule == xstate::record::Rule::UnknownComponent => {
                Err(format!("{}: {e} (--cpuid names the CPU the checkpoint was dumped on)", t.path.display()))
            }
            Err(e) => return Err(invalid(&t.path, e)),
        };
        rows.push(Row { thread: t, xstate_bv: core.xstate_bv, held: core.held(), state });
    }
    Ok((entry, rows))
}

/// What `criu restore --cpu-cap=fpu` on B says, and what xstate knows beyond it.
struct Verdict {
    criu: Vec<Refusal>,
    beyond: Vec<String>,
    host: X86Entry,
}

impl Verdict {
    fn ok(&self) -> bool {
        self.criu.is_empty() && self.beyond.is_empty()
    }

    fn lines(&self, has_cpuinfo: bool, to: &str) -> Vec<String> {
        let mut out = Vec::new();
        match self.criu.first() {
            Some(r) => out.push(format!("criu restore --cpu-cap=fpu on {to}: refuses: {r}")),
            None if has_cpuinfo => out.push(format!("criu restore --cpu-cap=fpu on {to}: passes the FPU check")),
            None => out.push("criu restore --cpu-cap=fpu: no cpuinfo.img to check".into()),
        }
        for r in self.criu.iter().skip(1) {
            out.push(format!("  and then: {r}"));
        }
        for l in &self.beyond {
            out.push(format!("  xstate: {l}"));
        }
        if self.beyond.is_empty() {
            out.push(format!(
                "  xstate: every component in use exists on {to} at CRIU's size; CRIU re-lays each out at {to}'s offsets"
            ));
            let sizes_only = self.criu.iter().all(|r| matches!(r, Refusal::XsaveSize(..) | Refusal::XsaveSizeMax(..)));
            if !self.criu.is_empty() && sizes_only {
                out.push(format!(
                    "  xstate: only CRIU's size rule refuses, and glibc's cached save area holds what {to} saves: \
                     `xstate convert CHECKPOINT --to standard --to-cpuid B -o DIR` writes a copy CRIU restores"
                ));
            }
        }
        out
    }

    fn json(&self, to: &str) -> Value {
        json!({
            "to": to,
            "compatible": self.ok(),
            "criu_refusals": self.criu.iter().map(|r| r.to_string()).collect::<Vec<_>>(),
            "xstate": self.beyond,
            "host_entry": entry_json(&self.host),
        })
    }
}

/// The verdict for moving the threads of `rows` to `b`. Each component in use is held against
/// CRIU's field for it (its size is CRIU's, not the reading CPU's), so the reading layout does
/// not enter.
fn verdict(rows: &[Row<'_>], entry: Option<&X86Entry>, b: &Source) -> Verdict {
    let host = X86Entry::of_cpuid(&b.cpuid);
    let criu = entry.map(|e| e.cpu_cap_fpu(&host)).unwrap_or_default();
    let mut beyond = Vec::new();
    for Row { thread: t, xstate_bv: bv, held, .. } in rows {
        let used = bv.unwrap_or(Xfeatures::LEGACY) - Xfeatures::LEGACY - Xfeatures::BIT63;
        for c in used.iter() {
            let want = field_size(c);
            let have = b.layout.geometry(c).filter(|_| b.layout.user_supported().contains(c)).map(|g| g.size);
            let tid = t.tid.map_or("?".into(), |t| t.to_string());
            match have {
                None => beyond.push(format!(
                    "thread {tid}: {} in use, {} lacks it: CRIU restores it as init (state lost)",
                    c.name(),
                    b.name
                )),
                Some(h) if Some(h) != want && held.contains(c) => beyond.push(format!(
                    "thread {tid}: {} is {h} bytes on {}, CRIU's {} holds {}: restore refuses",
                    c.name(),
                    b.name,
                    field_name(c).unwrap_or("field"),
                    want.unwrap_or(0)
                )),
                _ => {}
            }
        }
    }
    if let Some(l) = entry.and_then(|e| glibc_overflow(e, b)) {
        beyond.push(l);
    }
    Verdict { criu, beyond, host }
}

/// The components glibc's lazy-binding trampoline saves (`_dl_runtime_resolve_xsave[c]`: EAX
/// 0xee, EDX 0 in Debian 12's ld.so 2.36: SSE, AVX, BNDREGS, opmask, ZMM_Hi256, Hi16_ZMM).
const GLIBC_SAVE_MASK: Xfeatures = Xfeatures(0xee);

/// Whether a process restored on `b` overflows the save area its glibc sized on the dumping
/// host: glibc picks XSAVEC where the dumping CPU had it (capability word 10 bit 1) and sizes
/// the area as the compacted size of its mask's components there, else XSAVE with the area
/// 0xD.0 EBX (the recorded `xsave_size`); after restore it saves the same mask of B's XCR0.
fn glibc_overflow(e: &X86Entry, b: &Source) -> Option<String> {
    let mut a_mask = e.xfeatures_mask?;
    // The dump quirk drops SSE and BNDREGS from the mask; the dumping CPU had them.
    if e.quirk().present {
        a_mask = a_mask.with(xstate::Component::SSE);
        if e.quirk().bndregs_lost {
            a_mask = a_mask.with(xstate::Component::BNDREGS);
        }
    }
    let a_set = a_mask & GLIBC_SAVE_MASK;
    let b_set = b.default_xcr0 & b.layout.user_supported() & GLIBC_SAVE_MASK;
    let xsavec = e.has(xstate::record::criu::cpuinfo::Cap(10, 1));
    let (need, have, how) = if xsavec {
        // Catalogue sizes, no 64-byte alignment among these components.
        let size = |m: Xfeatures| {
            576 + m.iter().filter(|c| !c.is_legacy()).map(|c| c.info().and_then(|i| i.size).unwrap_or(0)).sum::<u32>()
        };
        (b.layout.compacted_size(b_set | Xfeatures::LEGACY).unwrap_or(size(b_set)), size(a_set), "XSAVEC")
    } else {
        (b.layout.standard_size(b_set | Xfeatures::LEGACY)?, e.xsave_size?, "XSAVE")
    };
    (need > have).then(|| {
        format!(
            "glibc's lazy-binding save area was sized on the dumping host ({have} bytes for {how} of {}); on {} it \
             saves {} in {need} bytes: a restored process overflows it",
            a_set.names(),
            b.name,
            b_set.names()
        )
    })
}

/// Whether `p` is a CRIU checkpoint: a directory holding a `core-<tid>.img`, or such a file.
pub fn is_checkpoint(p: &Path) -> bool {
    if p.is_dir() {
        return std::fs::read_dir(p)
            .is_ok_and(|rd| rd.flatten().any(|e| e.file_name().to_str().and_then(tid_of).is_some()));
    }
    p.file_name().and_then(|n| n.to_str()).and_then(tid_of).is_some()
        && std::fs::read(p).is_ok_and(|b| xstate::record::criu::core::is_core(&b))
}

/// `xstate compat --from CHECKPOINT --to B` (or `--image CHECKPOINT`): the checkpoint's
/// verdict for B, as `xstate criu CHECKPOINT --to-cpuid B` gives it.
pub fn compat(checkpoint: &Path, read_on: Option<&PathBuf>, to: &Path, json: bool) -> CliResult {
    run(&CriuArgs {
        checkpoint: checkpoint.to_path_buf(),
        cpuid: read_on.cloned(),
        regs: false,
        json,
        to_cpuid: Some(to.to_path_buf()),
        thread: None,
        extract: false,
        patch: None,
        output: None,
    })
}

/// `xstate convert CHECKPOINT --to-cpuid B -o OUTDIR`: a copy of the checkpoint that
/// `criu restore --cpu-cap=fpu` runs on B. The core images need no change (CRIU re-lays each
/// component out at B's offsets); `cpuinfo.img` gets B's xsave_size and xsave_size_max, only
/// when xstate finds the state moves: every component in use on B at CRIU's size, B's size not
/// above the one a restored glibc cached, CRIU's capability and xfeatures rules met. Refused
/// otherwise (exit 1), naming why.
pub fn retarget(checkpoint: &Path, read_on: Option<&PathBuf>, to: Option<&PathBuf>, out: &Path) -> CliResult {
    let to = to.ok_or_else(|| CliError::usage("convert CHECKPOINT needs --to-cpuid B: the host it is for"))?;
    let (threads, cpuinfo_path) = threads(checkpoint)?;
    if !checkpoint.is_dir() {
        return Err(CliError::usage("convert CHECKPOINT: give the checkpoint directory (criu dump -D DIR)"));
    }
    let cpuinfo_path = cpuinfo_path.ok_or_else(|| {
        CliError::invalid(format!("{}: no cpuinfo.img (criu cpuinfo dump -D DIR writes it)", checkpoint.display()))
    })?;
    let src = source(read_on)?;
    let b = source(Some(to))?;
    let (entry, rows) = read_rows(&threads, Some(&cpuinfo_path), &src.layout)?;
    let entry = entry.ok_or_else(|| invalid(&cpuinfo_path, "no x86 entry"))?;
    // Each thread's state must lay out on B too.
    for r in &rows {
        record::read(Format::CriuCore, &r.thread.bytes, &b.layout, &Options::default())
            .map_err(|e| invalid(&r.thread.path, format!("on {}: {e}", b.name)))?;
    }
    let v = verdict(&rows, Some(&entry), &b);
    if let Some(l) = v.beyond.first() {
        return Err(CliError::invalid(format!("{}: not moved to {}: {l}", checkpoint.display(), b.name)));
    }
    if let Some(r) = v.criu.iter().find(|r| !matches!(r, Refusal::XsaveSize(..) | Refusal::XsaveSizeMax(..))) {
        return Err(CliError::invalid(format!("{}: not moved to {}: CRIU: {r}", checkpoint.display(), b.name)));
    }
    let mut to_entry = entry.clone();
    (to_entry.xsave_size, to_entry.xsave_size_max) = (v.host.xsave_size, v.host.xsave_size_max);
    let info = xstate::record::criu::cpuinfo::patch(&read_file(&cpuinfo_path)?, &to_entry)
        .map_err(|e| invalid(&cpuinfo_path, e))?;
    let mut files = Vec::new();
    let rd = std::fs::read_dir(checkpoint).map_err(|e| CliError::usage(format!("{}: {e}", checkpoint.display())))?;
    for e in rd {
        let e = e.map_err(|e| CliError::usage(format!("{}: {e}", checkpoint.display())))?;
        if !e.file_type().is_ok_and(|t| t.is_file()) {
            return Err(CliError::invalid(format!(
                "{}: not a regular file: a checkpoint's copy holds CRIU's image files only",
                e.path().display()
            )));
        }
        if e.file_name() != "cpuinfo.img" {
            files.push((e.file_name(), read_file(&e.path())?));
        }
    }
    files.push(("cpuinfo.img".into(), info));
    write_dir(out, &files)?;
    let mut text = String::new();
    say!(
        text,
        "{}: {} thread(s) moved to {}: cpuinfo.img xsave_size {} -> {}, xsave_size_max {} -> {}; core images unchanged",
        out.display(),
        rows.len(),
        b.name,
        entry.xsave_size.unwrap_or(0),
        to_entry.xsave_size.unwrap_or(0),
        entry.xsave_size_max.unwrap_or(0),
        to_entry.xsave_size_max.unwrap_or(0)
    );
    emit(&text)
}

/// Writes `files` as the new directory `out`, whole or not at all: into a fresh directory
/// beside it, then renamed into place (over an empty directory, never over files: a stray
/// core-*.img there would be restored as one more thread). `-` is no directory.
fn write_dir(out: &Path, files: &[(std::ffi::OsString, Vec<u8>)]) -> CliResult {
    let usage = |e: &dyn std::fmt::Display| CliError::usage(format!("{}: {e}", out.display()));
    if out == Path::new("-") {
        return Err(CliError::usage("-o -: a checkpoint is a directory; name the new one (-o OUTDIR)"));
    }
    // A symbolic link is written through, as `-o` does for files: the link stays.
    let linked = std::fs::symlink_metadata(out).is_ok_and(|m| m.file_type().is_symlink());
    let target = match std::fs::read_link(out) {
        Ok(t) if linked && t.is_relative() => out.parent().unwrap_or(Path::new(".")).join(t),
        Ok(t) if linked => t,
        _ => out.to_path_buf(),
    };
    let out = target.as_path();
    if let Ok(m) = std::fs::symlink_metadata(out) {
        if !m.is_dir() {
            return Err(usage(&"exists and is not a directory"));
        }
        if std::fs::read_dir(out).map_err(|e| usage(&e))?.next().is_some() {
            return Err(usage(&"exists and is not empty: the copy would mix with its files"));
        }
    }
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = parent.join(format!(".{name}.xstate-{}", std::process::id()));
    std::fs::create_dir(&tmp).map_err(|e| usage(&e))?;
    let written = files
        .iter()
        .try_for_each(|(n, bytes)| std::fs::write(tmp.join(n), bytes).map_err(|e| usage(&e)))
        .and_then(|()| std::fs::rename(&tmp, out).map_err(|e| usage(&e)));
    if written.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    written
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
