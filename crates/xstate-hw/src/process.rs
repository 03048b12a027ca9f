//! Process-wide settings for command-line tools.

/// Restores the default SIGPIPE disposition, which Rust's runtime sets to "ignore" at start-up.
/// With it, `xstate ... | head` ends quietly when the reader goes away, as Unix tools do,
/// instead of failing a write (and panicking inside `println!`).
pub fn default_sigpipe() {
    // SAFETY: signal() with SIG_DFL installs no handler code; it only changes the disposition
    // of SIGPIPE for this process, before any thread that could be writing exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
