//! Where results go: `-o OUT` files and stdout, never destroying what the path names.
//!
//! The rules, in the order [`write_output`] applies them:
//! - `-` is standard output (and `/dev/stdout`, `/dev/fd/1`, `/proc/self/fd/1` are too: they
//!   are this process's stdout whatever it points at);
//! - a path that names a device, a FIFO or any other non-regular file (directly or through
//!   symlinks) is opened and written into, never replaced: `-o /dev/null` stays a device;
//! - a regular file, or a path that does not exist yet, is replaced atomically: the bytes go to a
//!   temporary file created with `O_EXCL` under an unpredictable name in the same directory
//!   (the `tempfile` crate), flushed, given the replaced file's mode (and owner, where allowed)
//!   or `0666 & ~umask` for a new file, then renamed over the target. On any failure the
//!   temporary file is removed and the target is untouched;
//! - a symlink is written through: the file it finally points to is the one replaced (or
//!   created), and the link itself stays a link.
//!
//! Write errors on stdout (a closed pipe, `/dev/full`) are I/O errors like any other (exit 2),
//! never a panic: commands print through [`emit`], [`summary`] or `outln!`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::common::{CliError, CliResult};

/// How many symlinks [`resolve`] follows before it gives up (Linux's own limit, ELOOP).
const MAX_LINKS: usize = 40;

/// What an output path stands for, once symlinks are followed.
#[derive(Debug, PartialEq, Eq)]
pub enum Destination {
    /// This process's standard output.
    Stdout,
    /// An existing file that is not a regular file (device, FIFO, socket): written into.
    Special(PathBuf),
    /// A regular file to replace (it exists) or create (it does not), at this real path.
    File(PathBuf),
}

/// True for the names of this process's standard output.
fn is_stdout_name(p: &Path) -> bool {
    p == Path::new("-")
        || p == Path::new("/dev/stdout")
        || p == Path::new("/dev/fd/1")
        || p == Path::new("/proc/self/fd/1")
}

/// Follows `path` through symlinks to what an output there would write (no file is created).
pub fn resolve(path: &Path) -> io::Result<Destination> {
    if is_stdout_name(path) {
        return Ok(Destination::Stdout);
    }
    let mut p = path.to_path_buf();
    for _ in 0..MAX_LINKS {
        match fs::symlink_metadata(&p) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Destination::File(p)),
            Err(e) => return Err(e),
            Ok(m) if m.file_type().is_symlink() => {
                // Links into /proc are the kernel's (fd links name pipes and sockets that are
                // no path): write through the link itself, as open(2) would.
                if p.starts_with("/proc") || p.starts_with("/dev/fd") {
                    return match fs::metadata(&p) {
                        Ok(m) if m.is_file() => Ok(Destination::Special(p)),
                        Ok(m) if m.is_dir() => Err(io::Error::other("is a directory")),
                        Ok(_) => Ok(Destination::Special(p)),
                        Err(e) => Err(e),
                    };
                }
                let target = fs::read_link(&p)?;
                p = match p.parent() {
                    Some(dir) if target.is_relative() => dir.join(target),
                    _ => target,
                };
            }
            Ok(m) if m.is_dir() => return Err(io::Error::other("is a directory")),
            Ok(m) if m.is_file() => return Ok(Destination::File(p)),
            Ok(_) => return Ok(Destination::Special(p)),
        }
    }
    Err(io::Error::other(format!("more than {MAX_LINKS} levels of symbolic links")))
}

/// Writes `bytes` to the output `path` by the rules of this module. Errors name the path the
/// user gave (exit 2).
pub fn write_output(path: &Path, bytes: &[u8]) -> CliResult {
    let fail = |e: io::Error| CliError::usage(format!("{}: {e}", path.display()));
    match resolve(path).map_err(fail)? {
        Destination::Stdout => {
            let mut out = io::stdout().lock();
            out.write_all(bytes).and_then(|()| out.flush()).map_err(|e| CliError::usage(format!("stdout: {e}")))
        }
        Destination::Special(p) => {
            // A regular file reached through a kernel fd link is written from its start and cut
            // to the new length; devices and FIFOs are only written.
            let regular = fs::metadata(&p).is_ok_and(|m| m.is_file());
            let mut f = OpenOptions::new().write(true).truncate(regular).open(&p).map_err(fail)?;
            f.write_all(bytes).and_then(|()| f.flush()).map_err(fail)
        }
        Destination::File(p) => replace_file(&p, bytes).map_err(fail),
    }
}

/// Atomically replaces (or creates) the regular file `p` with `bytes`.
fn replace_file(p: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = p.file_name().ok_or_else(|| io::Error::other("not a file name"))?;
    let old = fs::metadata(p).ok();
    // Mode 0666 goes to open(2), so the umask applies to a new file as it would to `>`.
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{}.", name.to_string_lossy()))
        .suffix(".tmp")
        .permissions(fs::Permissions::from_mode(0o666))
        .tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    if let Some(m) = &old {
        let f: &File = tmp.as_file();
        f.set_permissions(fs::Permissions::from_mode(m.mode() & 0o7777))?;
        // Keeping the owner needs the privilege to give files away; without it the new file
        // is the caller's, as any editor's replacement would be.
        let _ = std::os::unix::fs::fchown(f, Some(m.uid()), Some(m.gid()));
    }
    tmp.as_file().sync_all()?;
    tmp.persist(p).map_err(|e| e.error)?;
    Ok(())
}

/// The most read from a stream (stdin, a FIFO, a device): far more than any image or record
/// of CPU state, and a bound on sources that never end (`/dev/zero`). Regular files are read
/// whole, whatever their size.
pub const STREAM_LIMIT: u64 = 1 << 30;

/// Reads an input file; `-` is standard input. Failures are exit 2 with the path named; a
/// stream longer than [`STREAM_LIMIT`] is refused (exit 2) rather than read forever.
pub fn read_input(path: &Path) -> CliResult<Vec<u8>> {
    let stdin = path == Path::new("-");
    let name = if stdin { "stdin".to_string() } else { path.display().to_string() };
    let fail = |e: io::Error| CliError::usage(format!("{name}: {e}"));
    if !stdin && fs::metadata(path).map_err(fail)?.is_file() {
        return fs::read(path).map_err(fail);
    }
    let mut v = Vec::new();
    let read = if stdin {
        io::Read::read_to_end(&mut io::Read::take(io::stdin().lock(), STREAM_LIMIT + 1), &mut v)
    } else {
        File::open(path).and_then(|f| io::Read::read_to_end(&mut io::Read::take(f, STREAM_LIMIT + 1), &mut v))
    };
    read.map_err(fail)?;
    if v.len() as u64 > STREAM_LIMIT {
        return Err(CliError::usage(format!(
            "{name}: more than {STREAM_LIMIT} bytes: not an image or record of CPU state"
        )));
    }
    Ok(v)
}

/// Writes `text` to stdout; a closed or failing stdout is an I/O error (exit 2), not a panic.
pub fn emit(text: &str) -> CliResult {
    let mut out = io::stdout().lock();
    out.write_all(text.as_bytes()).and_then(|()| out.flush()).map_err(|e| CliError::usage(format!("stdout: {e}")))
}

/// Prints the summary of a command that wrote `output`: on stdout, unless the output itself went
/// to stdout, where the summary would corrupt it; then on stderr.
pub fn summary(output: &Path, text: &str) -> CliResult {
    if matches!(resolve(output), Ok(Destination::Stdout)) {
        let mut err = io::stderr().lock();
        err.write_all(text.as_bytes()).map_err(|e| CliError::usage(format!("stderr: {e}")))
    } else {
        emit(text)
    }
}

/// `println!` that returns the stdout error (exit 2) from the enclosing function instead of
/// panicking.
macro_rules! outln {
    () => { $crate::output::emit("\n")? };
    ($($t:tt)*) => { $crate::output::emit(&format!("{}\n", format_args!($($t)*)))? };
}
pub(crate) use outln;

#[cfg(test)]
mod tests;
