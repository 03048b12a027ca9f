//! `xstate convert` with a container as the output format (a QEMU migration stream, a VMM
//! snapshot): containers are written by patching an existing file
//! ([`xstate::record::patch()`]), never from nothing.
//!
//! - `convert FILE --to standard --to-format F [--to-cpuid B] -o OUT`, FILE being of format F:
//!   every vCPU's state re-laid out for B (default: the file's own CPU, which changes nothing),
//!   with the compatibility verdict of each ([`xstate::compat::check_image`]); refused when a
//!   state cannot move. The guest's CPUID in a snapshot is kept, and the verdict says what that
//!   leaves unfixed.
//! - `convert IMG --to standard --to-format F --into FILE [--vcpu N] -o OUT`: IMG (any format
//!   `--from-format` reads; `--vcpu` also picks its vCPU if it is a container) replaces vCPU N's
//!   state in FILE (default: FILE's only vCPU).

use xstate::compat::{Report, Side, Verdict, check_image};
use xstate::image::ImageBuf;
use xstate::record::{self, Contents, Format, Options, State, StateId};
use xstate::{Layout, Xfeatures};

use crate::cmd::convert::{ConvertArgs, FormArg};
use crate::cmd::imageio::{check_image_size, format_of, load_vcpu, vcpus};
use crate::common::{CliError, CliResult, checked_masks, read_file, source, write_output};
use crate::output::summary;

/// The verdict for moving `st` (laid out for `from`) to a CPU of layout `to` that can enable
/// every state it supports.
fn verdict(st: &State, from: &Layout, to: &Layout) -> CliResult<Option<Report>> {
    let Some(img) = &st.image else { return Ok(None) };
    let rfbm = st.rfbm.unwrap_or_default();
    let fs =
        Side { layout: from, xcr0: st.xcr0.unwrap_or(rfbm & from.user_supported()), xss: st.xss.unwrap_or_default() };
    let ts = Side { layout: to, xcr0: to.user_supported(), xss: to.supervisor_supported() };
    check_image(&fs, &ts, img).map(Some).map_err(CliError::invalid)
}

fn who(st: &State) -> String {
    match st.id {
        Some(StateId::Vcpu(v)) => format!("vCPU {v}"),
        Some(StateId::Thread(t)) => format!("thread {t}"),
        _ => "the state".into(),
    }
}

/// Runs `xstate convert` into a container format.
pub fn run(args: &ConvertArgs, to_format: Format) -> CliResult {
    if args.to == FormArg::Compacted {
        return Err(CliError::usage(format!(
            "--to-format {to_format}: the format holds standard images only; use --to standard"
        )));
    }
    if args.vmm.qemu_accel.is_some() && to_format != Format::Qemu {
        return Err(CliError::usage("--qemu-accel applies to QEMU streams only"));
    }
    // Flags that would change nothing here are refused, never ignored.
    let unused = [
        (
            args.to_xcr0.is_some(),
            "--to-xcr0: a container's vCPU keeps the state's XCR0 (--xcr0, or the one it records)",
        ),
        (!args.drop.is_empty(), "--drop: a container is patched in place; it drops no field"),
        (args.json, "--json: writing a container prints a text summary only"),
        (args.xen.given(), "--xen-policy/--xen-host apply to Xen records only; a container is none"),
    ];
    if let Some((_, why)) = unused.iter().find(|(given, _)| *given) {
        return Err(CliError::usage(format!("{why} (--to-format {to_format})")));
    }
    let src = args.cpu.source()?;
    // A snapshot's states are laid out for its own CPUID unless --cpuid says otherwise.
    let opts = args.vmm.apply(Options::default(), &args.cpu);
    let dst = match &args.to_cpuid {
        Some(p) => Some(source(Some(p))?),
        None => None,
    };
    let (base_path, base) = match &args.into {
        Some(p) => (p.as_path(), read_file(p)?),
        None => (args.image.as_path(), read_file(&args.image)?),
    };
    let base_name = base_path.display().to_string();
    let c = record::read(to_format, &base, &src.layout, &opts)
        .map_err(|e| CliError::invalid(format!("{base_name}: {e}")))?;
    let own = if opts.layout_given { None } else { c.layout.clone() };
    let file_layout = own.as_ref().unwrap_or(&src.layout);
    let to_layout = dst.as_ref().map_or(file_layout, |d| &d.layout);
    let (states, from_layout): (Vec<State>, Layout) = match &args.into {
        None => {
            if let Ok(f) = format_of(&base, args.from_format, &src.layout, &base_name)
                && f != to_format
            {
                return Err(CliError::usage(format!(
                    "{base_name} is {f}, not {to_format}: give the file to write into with --into"
                )));
            }
            (c.states.clone(), file_layout.clone())
        }
        Some(_) => {
            let target = match args.vcpu {
                Some(v) => c.states.iter().find(|s| s.vcpu() == Some(v)).ok_or_else(|| {
                    CliError::invalid(format!("{base_name}: {to_format}: no vCPU {v} (it holds {})", vcpus(&c)))
                })?,
                None if c.states.len() == 1 => &c.states[0],
                None => {
                    return Err(CliError::invalid(format!(
                        "{base_name}: {to_format}: holds {}: choose one with --vcpu N",
                        vcpus(&c)
                    )));
                }
            };
            let (st, from) = input_state(args, &src.layout, target, file_layout)?;
            (vec![st], from)
        }
    };
    let mut lines = Vec::new();
    let mut first_block = None;
    for st in &states {
        match verdict(st, &from_layout, to_layout)? {
            Some(r) => {
                lines.push(format!("{}: {}", who(st), r.verdict));
                for reason in &r.reasons {
                    lines.push(format!("  {reason}"));
                }
                if r.verdict == Verdict::Incompatible && first_block.is_none() {
                    let why = r.reasons.iter().find(|x| x.severity() == Verdict::Incompatible);
                    first_block = Some(format!("{}: {}", who(st), why.map(|x| x.to_string()).unwrap_or_default()));
                }
            }
            None => lines.push(format!("{}: no xsave state", who(st))),
        }
    }
    if let Some(b) = first_block {
        return Err(CliError::invalid(format!(
            "{base_name}: cannot move to {}: {b}",
            dst.as_ref().map_or("its CPU", |d| &d.name)
        )));
    }
    let mut contents = Contents::one(to_format, State::no_xsave_state());
    contents.states = states;
    let out = record::patch(to_format, &base, &contents, &from_layout, to_layout, &opts)
        .map_err(|e| CliError::invalid(format!("{base_name}: {e}")))?;
    write_output(&args.output, &out)?;
    let mut text = format!(
        "{}: {to_format}, {} bytes, {}\n",
        args.output.display(),
        out.len(),
        difference(&base, &out, &base_name)
    );
    for l in &lines {
        text.push_str(l);
        text.push('\n');
    }
    summary(&args.output, &text)
}

/// The state `convert IMG --into FILE` writes: IMG's, for vCPU `target`'s place. A bare
/// image's XCR0 is `--xcr0`, else the vCPU's recorded one; its layout is `--cpuid`'s.
fn input_state(
    args: &ConvertArgs,
    layout: &Layout,
    target: &State,
    file_layout: &Layout,
) -> CliResult<(State, Layout)> {
    let name = args.image.display().to_string();
    let opts = args.vmm.apply(Options::default(), &args.cpu);
    let loaded = load_vcpu(&args.image, args.from_format, layout, &opts, args.vcpu)?;
    let from = loaded
        .layout
        .clone()
        .unwrap_or_else(|| if args.cpu.cpuid.is_some() { layout.clone() } else { file_layout.clone() });
    let mut st = match loaded.state {
        Some(s) => s,
        None => {
            let image = loaded.image.as_deref().unwrap_or(&[]);
            let xcr0 = args.cpu.xcr0.or(target.xcr0).unwrap_or(from.user_supported());
            let xss = args.cpu.xss.unwrap_or_default();
            checked_masks(&from, xcr0, xss)?;
            check_image_size(image, &from, xcr0, &name, "its CPU")?;
            let img = ImageBuf::from_bytes(image).map_err(CliError::invalid)?;
            let mut s = State::new(Some(img), Some((xcr0 | xss) & from.supported()));
            s.xcr0 = Some(xcr0);
            s
        }
    };
    if st.xcr0.is_none() {
        st.xcr0 = args.cpu.xcr0.or(target.xcr0);
    }
    st.id = target.id;
    if st.xss.is_none() {
        st.xss = Some(Xfeatures::EMPTY);
    }
    Ok((st, from))
}

/// Where `new` differs from `old`: "identical to OLD", or the changed span.
fn difference(old: &[u8], new: &[u8], old_name: &str) -> String {
    let head = old.iter().zip(new).take_while(|(a, b)| a == b).count();
    if head == old.len() && head == new.len() {
        return format!("identical to {old_name}");
    }
    let tail = old[head..].iter().rev().zip(new[head..].iter().rev()).take_while(|(a, b)| a == b).count();
    format!("bytes {head}..{} of {old_name} replaced by {} bytes", old.len() - tail, new.len() - tail - head)
}

/// `compat --image` of a container (a QEMU stream, a VMM snapshot): every vCPU's image checked
/// with its own XCR0 (default: `from`'s), on `from`'s layout unless the file carries its own;
/// the report of the worst verdict. `None` when `bytes` are not a container.
pub fn image_report(bytes: &[u8], from: &Side<'_>, to: &Side<'_>) -> Option<CliResult<Report>> {
    let f = record::detect(bytes, from.layout).filter(|f| f.is_container())?;
    let c = match record::read(f, bytes, from.layout, &Options::default()) {
        Ok(c) => c,
        Err(e) => return Some(Err(CliError::invalid(e))),
    };
    let layout = c.layout.as_ref().unwrap_or(from.layout);
    let mut worst: Option<Report> = None;
    for st in &c.states {
        let Some(img) = &st.image else { continue };
        let side = Side { layout, xcr0: st.xcr0.unwrap_or(from.xcr0), xss: st.xss.unwrap_or(from.xss) };
        let r = match check_image(&side, to, img) {
            Ok(r) => r,
            Err(e) => return Some(Err(CliError::invalid(format!("{}: {e}", who(st))))),
        };
        if worst.as_ref().is_none_or(|w| r.verdict > w.verdict) {
            worst = Some(r);
        }
    }
    Some(worst.ok_or_else(|| CliError::invalid(format!("{f}: no vCPU holds an XSAVE image"))))
}
