//! What every subcommand shares: the error type and its exit codes, reading CPUID sources,
//! the `--cpuid`/`--xcr0`/`--xss` arguments, JSON printing and atomic output files.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

pub use crate::output::write_output;

use xstate::cpuid::{self, CpuidData};
use xstate::layout::Partial;
use xstate::xcr0::{check_xcr0_supported, check_xss, largest_valid_xcr0};
use xstate::{Layout, LayoutError, Xfeatures};

/// A failure that ends the command: exit 1 for invalid or incompatible input, 2 for usage and
/// I/O problems. The message is printed as one line on stderr.
#[derive(Debug)]
pub struct CliError {
    /// 1 or 2.
    pub code: u8,
    /// One line.
    pub message: String,
}

impl CliError {
    /// The input is invalid or incompatible (exit 1).
    pub fn invalid(message: impl fmt::Display) -> CliError {
        CliError { code: 1, message: message.to_string() }
    }
    /// Usage, unreadable file, I/O (exit 2).
    pub fn usage(message: impl fmt::Display) -> CliError {
        CliError { code: 2, message: message.to_string() }
    }
}

/// Result of a subcommand.
pub type CliResult<T = ()> = Result<T, CliError>;

/// Parses a mask argument: hex with `0x` or decimal.
pub fn parse_mask(s: &str) -> Result<Xfeatures, String> {
    s.parse::<Xfeatures>().map_err(|e| format!("{s:?}: {e}"))
}

/// Reads a file (`-`: standard input), mapping failures to exit 2 with the path in the message.
pub fn read_file(path: &Path) -> CliResult<Vec<u8>> {
    crate::output::read_input(path)
}

/// Reads a CPUID dump (AIDA64/InstLatX64 text, `cpuid -r` output, or the project's JSON as
/// `xstate host --json` and `xstate policy --json` write it). A file that is not a dump is
/// invalid input (exit 1), naming file and line.
fn read_cpuid(path: &Path) -> CliResult<CpuidData> {
    let bytes = read_file(path)?;
    // A VMM snapshot names its guest's CPU.
    if let Some(r) = xstate::record::carried_cpuid(&bytes) {
        return r.map_err(|e| CliError::invalid(format!("{}: {e}", path.display())));
    }
    let text = String::from_utf8_lossy(&bytes);
    cpuid::parse(&text).map_err(|e| CliError::invalid(format!("{}: {e}", path.display())))
}

/// The layout of a CPUID source, leaving out (and noting) components whose subleaf a dump
/// lacks; a source without XSAVE is refused in plain words.
fn layout_of(data: &CpuidData, what: &str) -> CliResult<Partial> {
    // A dump missing leaf 0xD is not a CPU without XSAVE (exit 1 either way, saying which).
    if let Some(e) = data.missing_leaf0d() {
        return Err(CliError::invalid(format!("{what}: {e}")));
    }
    Layout::from_leaf0d_partial(data.leaf0d()).map_err(|e| match e {
        LayoutError::XsaveNotEnumerated => CliError::invalid(format!(
            "{what}: this CPU does not enumerate XSAVE (CPUID leaf 0xD subleaf 0 is all zero): it has no XSAVE \
             layout; its x87/SSE state is FXSAVE's 512-byte area"
        )),
        e => CliError::invalid(format!("{what}: {e}")),
    })
}

/// Where a layout came from.
pub struct Source {
    /// The CPUID data.
    pub cpuid: CpuidData,
    /// Its layout.
    pub layout: Layout,
    /// Components the CPU enumerates whose place the source does not give (a dump missing
    /// their subleaf): not in `layout`; a mask that needs one is refused.
    pub omitted: Xfeatures,
    /// XCR0 to assume when neither `--xcr0` nor the input says: XGETBV(0) on the host, every
    /// user component a dump or policy enumerates.
    pub default_xcr0: Xfeatures,
    /// How to name it in messages.
    pub name: String,
}

impl Source {
    /// Notes about components left out of the layout.
    pub fn notes(&self) -> Vec<String> {
        Partial { layout: self.layout.clone(), omitted: self.omitted }.notes()
    }
}

/// The word that names this machine wherever a CPUID source is asked for.
pub const HOST: &str = "host";

/// The CPU a `--cpuid` (or `--to-cpuid`, `--from`, `--to`) argument names: `host` (or no
/// argument) is this machine; anything else a file ([`file_source`]).
pub fn source(cpuid_file: Option<&PathBuf>) -> CliResult<Source> {
    match cpuid_file {
        Some(p) if p.as_os_str() != HOST => file_source(p),
        _ => host_source(),
    }
}

/// A CPUID dump or policy file as a [`Source`]; its default XCR0 is every user component it
/// supports.
pub fn file_source(path: &Path) -> CliResult<Source> {
    if path.as_os_str() == HOST {
        return host_source();
    }
    let cpuid = read_cpuid(path)?;
    let name = path.display().to_string();
    let partial = layout_of(&cpuid, &name)?;
    // Every user component it enumerates, less groups a missing subleaf broke.
    let default_xcr0 = largest_valid_xcr0(partial.layout.user_supported());
    Ok(Source { cpuid, layout: partial.layout, omitted: partial.omitted, default_xcr0, name })
}

/// This machine as a [`Source`].
pub fn host_source() -> CliResult<Source> {
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    {
        if !xstate_hw::cpu::osxsave() {
            return Err(CliError::usage(
                "this host has no OS-enabled XSAVE (CPUID.1:ECX.OSXSAVE = 0); pass --cpuid FILE",
            ));
        }
        let cpuid = xstate_hw::cpu::host_cpuid();
        let partial = layout_of(&cpuid, "this host's CPUID")?;
        let layout = partial.layout;
        let default_xcr0 = xstate_hw::cpu::xcr0().unwrap_or(layout.user_supported());
        Ok(Source { cpuid, layout, omitted: partial.omitted, default_xcr0, name: "this host".into() })
    }
    #[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
    Err(CliError::usage("reading this host needs x86_64 Linux; pass --cpuid FILE"))
}

/// The CPU and the enabled state components an image or layout is read for: `--cpuid`,
/// `--xcr0` and `--xss`, meaning the same in every subcommand that takes them.
#[derive(clap::Args, Debug)]
pub struct CpuArgs {
    /// The CPU: `host` (the default), a CPUID dump (AIDA64/InstLatX64 text, `cpuid -r`
    /// output), or xstate's JSON (`xstate host --json`, `xstate policy --json`).
    #[arg(long, value_name = "FILE")]
    pub cpuid: Option<PathBuf>,
    /// XCR0 (hex 0x… or decimal); default: the one the input records (a record format), else
    /// the CPU's: XGETBV(0) on this host, every user component of a dump or policy.
    #[arg(long, value_name = "MASK", value_parser = parse_mask)]
    pub xcr0: Option<Xfeatures>,
    /// IA32_XSS, for supervisor state (XRSTORS, compacted images only); default: the one the
    /// input records, else 0.
    #[arg(long, value_name = "MASK", value_parser = parse_mask)]
    pub xss: Option<Xfeatures>,
}

impl CpuArgs {
    /// The CPU: `--cpuid`, or this host.
    pub fn source(&self) -> CliResult<Source> {
        source(self.cpuid.as_ref())
    }

    /// XCR0 and XSS: the arguments, else the ones the input records (`recorded`), else the
    /// CPU's default XCR0 and XSS = 0. Never inferred from an image's XSTATE_BV.
    pub fn masks(&self, src: &Source, recorded: (Option<Xfeatures>, Option<Xfeatures>)) -> (Xfeatures, Xfeatures) {
        let xcr0 = self.xcr0.or(recorded.0).unwrap_or(src.default_xcr0);
        let xss = self.xss.or(recorded.1).unwrap_or_default();
        (xcr0, xss)
    }
}

/// Checks XCR0/XSS against the layout and the rules (exit 1 naming the rule).
pub fn checked_masks(layout: &Layout, xcr0: Xfeatures, xss: Xfeatures) -> CliResult<(Xfeatures, Xfeatures)> {
    check_xcr0_supported(xcr0, layout.user_supported(), layout.supervisor_supported()).map_err(CliError::invalid)?;
    check_xss(xss, layout.user_supported(), layout.supervisor_supported()).map_err(CliError::invalid)?;
    Ok((xcr0, xss))
}

/// Refuses a mask that needs a component `src` could not place (exit 1, naming it).
pub fn placeable(src: &Source, mask: Xfeatures) -> CliResult {
    match (mask & src.omitted).iter().next() {
        None => Ok(()),
        Some(c) => Err(CliError::invalid(format!(
            "{}: XCR0|XSS {mask} enables component {} ({}), which the CPU enumerates but whose CPUID 0xD subleaf \
             the source lacks: its place is unknown",
            src.name,
            c.index(),
            c.name()
        ))),
    }
}

/// A 64-bit mask in JSON: a hex string (`"0x600e7"`), since JSON numbers above 2^53 lose
/// precision in JavaScript and most JSON tools.
pub fn mask_json(m: Xfeatures) -> serde_json::Value {
    serde_json::Value::String(format!("{:#x}", m.bits()))
}

/// Prints a JSON value, pretty, with a trailing newline.
pub fn print_json(v: &serde_json::Value) -> CliResult {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, v).map_err(|e| CliError::usage(format!("stdout: {e}")))?;
    writeln!(out).map_err(|e| CliError::usage(format!("stdout: {e}")))
}

/// Appends a line to a `String` (formatting into a `String` cannot fail).
macro_rules! say {
    ($out:expr) => {{ $out.push('\n'); }};
    ($out:expr, $($t:tt)*) => {{ use std::fmt::Write as _; let _ = writeln!($out, $($t)*); }};
}
pub(crate) use say;

/// `0x…` formatting used in tables.
pub fn hex(v: u32) -> String {
    format!("{v:#x}")
}
