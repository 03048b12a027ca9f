//! What every subcommand shares: the error type and its exit codes, reading CPUID sources,
//! the `--cpuid`/`--xcr0`/`--xss` arguments, JSON printing and atomic output files.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

pub use crate::output::write_output;

use xstate::cpuid::{self, CpuidData};
use xstate::xcr0::{check_xcr0_supported, check_xss};
use xstate::{Layout, Xfeatures};

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

/// Reads a CPUID dump (AIDA64/InstLatX64 text, `cpuid -r` output or the project's JSON).
/// A file that is not a dump is invalid input (exit 1), naming file and line.
fn read_cpuid(path: &Path) -> CliResult<CpuidData> {
    let bytes = read_file(path)?;
    let text = String::from_utf8_lossy(&bytes);
    cpuid::parse(&text).map_err(|e| CliError::invalid(format!("{}: {e}", path.display())))
}

/// The layout of a CPUID source, failing with the file named.
fn layout_of(data: &CpuidData, what: &str) -> CliResult<Layout> {
    Layout::from_leaf0d(data.leaf0d()).map_err(|e| CliError::invalid(format!("{what}: {e}")))
}

/// Where a layout came from.
pub struct Source {
    /// The CPUID data.
    pub cpuid: CpuidData,
    /// Its layout.
    pub layout: Layout,
    /// XCR0 to assume when the user gives none: XGETBV on the host, every supported user
    /// component for a dump.
    pub default_xcr0: Xfeatures,
    /// How to name it in messages.
    pub name: String,
}

/// The layout of `--cpuid FILE`, or of this host.
pub fn source(cpuid_file: Option<&PathBuf>) -> CliResult<Source> {
    match cpuid_file {
        Some(p) => file_source(p),
        None => host_source(),
    }
}

/// A CPUID dump as a [`Source`]; its default XCR0 is every user component it supports.
pub fn file_source(path: &Path) -> CliResult<Source> {
    let cpuid = read_cpuid(path)?;
    let name = path.display().to_string();
    let layout = layout_of(&cpuid, &name)?;
    let default_xcr0 = layout.user_supported();
    Ok(Source { cpuid, layout, default_xcr0, name })
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
        let layout = layout_of(&cpuid, "this host's CPUID")?;
        let default_xcr0 = xstate_hw::cpu::xcr0().unwrap_or(layout.user_supported());
        Ok(Source { cpuid, layout, default_xcr0, name: "this host".into() })
    }
    #[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
    Err(CliError::usage("reading this host needs x86_64 Linux; pass --cpuid FILE"))
}

/// The CPU and the enabled state components an image or layout is read for: `--cpuid`,
/// `--xcr0` and `--xss`, meaning the same in every subcommand that takes them.
#[derive(clap::Args, Debug)]
pub struct CpuArgs {
    /// CPUID dump of the CPU (AIDA64/InstLatX64 text, `cpuid -r` output, or xstate JSON);
    /// default: this host.
    #[arg(long, value_name = "FILE")]
    pub cpuid: Option<PathBuf>,
    /// XCR0 (hex 0x… or decimal); default: the one a record file holds, else XGETBV(0) on the
    /// host or every supported user component of a dump.
    #[arg(long, value_name = "MASK", value_parser = parse_mask)]
    pub xcr0: Option<Xfeatures>,
    /// IA32_XSS, for supervisor state (XRSTORS, compacted images only); default: the one a
    /// record file holds, else 0.
    #[arg(long, value_name = "MASK", value_parser = parse_mask)]
    pub xss: Option<Xfeatures>,
}

impl CpuArgs {
    /// The CPU: `--cpuid FILE`, or this host.
    pub fn source(&self) -> CliResult<Source> {
        source(self.cpuid.as_ref())
    }

    /// XCR0 and XSS: the arguments, else the ones a file records (`recorded`), else XCR0 from
    /// `src` and XSS = 0.
    pub fn masks(&self, src: &Source, recorded: (Option<Xfeatures>, Option<Xfeatures>)) -> (Xfeatures, Xfeatures) {
        let xcr0 = self.xcr0.or(recorded.0).unwrap_or(src.default_xcr0);
        let xss = self.xss.or(recorded.1).unwrap_or_default();
        (xcr0, xss)
    }
}

/// Checks XCR0/XSS arguments against the layout and the rules (exit 1 naming the rule).
pub fn checked_masks(layout: &Layout, xcr0: Xfeatures, xss: Xfeatures) -> CliResult<(Xfeatures, Xfeatures)> {
    check_xcr0_supported(xcr0, layout.user_supported(), layout.supervisor_supported()).map_err(CliError::invalid)?;
    check_xss(xss, layout.user_supported(), layout.supervisor_supported()).map_err(CliError::invalid)?;
    Ok((xcr0, xss))
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
