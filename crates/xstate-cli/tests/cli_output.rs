//! Where output goes (issue 10, "Output files"): `-o` onto devices, FIFOs, symlinks, `-`,
//! planted temporary names, full devices; stdout write errors in every command.

#[macro_use]
mod common;

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt, symlink};
use std::path::Path;
use std::process::{Command, Stdio};

use common::{host_image, s, tmpdir, xstate};

/// What `convert --to standard -o FILE` writes, to compare outputs written elsewhere with.
fn reference_output(dir: &Path, img: &Path) -> Vec<u8> {
    let r = dir.join("reference.bin");
    let (code, _, err) = xstate(&["convert", s(img), "--to", "standard", "-o", s(&r)]);
    assert_eq!(code, 0, "{err}");
    fs::read(r).unwrap()
}

fn mknod(path: &Path, major: u32, minor: u32) -> bool {
    Command::new("mknod")
        .arg(path)
        .args(["c", &major.to_string(), &minor.to_string()])
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn a_device_is_written_into_never_replaced() {
    let d = tmpdir("out-dev");
    let img = host_image(&d, false);
    let null = d.join("null");
    if !mknod(&null, 1, 3) {
        skip!("mknod of a null device is not permitted here");
        return;
    }
    let (code, _, err) = xstate(&["convert", s(&img), "--to", "standard", "-o", s(&null)]);
    assert_eq!(code, 0, "{err}");
    assert!(fs::symlink_metadata(&null).unwrap().file_type().is_char_device(), "the device was replaced");

    // A full device: the write fails, exit 2 with one line, and the device stays.
    let full = d.join("full");
    assert!(mknod(&full, 1, 7));
    let (code, _, err) = xstate(&["convert", s(&img), "--to", "standard", "-o", s(&full)]);
    assert_eq!(code, 2, "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("No space left"), "{err}");
    assert!(fs::symlink_metadata(&full).unwrap().file_type().is_char_device(), "the device was replaced");
    // Through a symlink to the device: still written into.
    let link = d.join("link-to-null");
    symlink(&null, &link).unwrap();
    let (code, _, err) = xstate(&["convert", s(&img), "--to", "standard", "-o", s(&link)]);
    assert_eq!(code, 0, "{err}");
    assert!(fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
    assert!(fs::symlink_metadata(&null).unwrap().file_type().is_char_device());
    fs::remove_dir_all(&d).unwrap();
}

#[test]
fn a_fifo_is_written_into() {
    let d = tmpdir("out-fifo");
    let img = host_image(&d, false);
    let want = reference_output(&d, &img);
    let fifo = d.join("fifo");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || {
            let mut v = Vec::new();
            fs::File::open(fifo).unwrap().read_to_end(&mut v).unwrap();
            v
        })
    };
    let (code, _, err) = xstate(&["convert", s(&img), "--to", "standard", "-o", s(&fifo)]);
    assert_eq!(code, 0, "{err}");
    // Checked first: a replaced FIFO leaves the reader blocked in open(2) for good.
    assert!(fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo(), "the FIFO was replaced");
    assert!(reader.join().unwrap() == want, "the reader got the output");
    fs::remove_dir_all(&d).unwrap();
}

#[test]
fn a_symlink_is_written_through_and_stays_a_link() {
    let d = tmpdir("out-link");
    let img = host_image(&d, false);
    let want = reference_output(&d, &img);
    let sub = d.join("sub");
    fs::create_dir(&sub).unwrap();
    let target = sub.join("target.bin");
    fs::write(&target, b"old").unwrap();
    fs::set_permissions(&target, fs::Permissions::from_mode(0o640)).unwrap();
    let link = d.join("link");
    symlink("sub/target.bin", &link).unwrap(); // relative, resolved from the link's folder
    let (code, _, err) = xstate(&["convert", s(&img), "--to", "standard", "-o", s(&link)]);
    assert_eq!(code, 0, "{err}");
    assert!(fs::symlink_metadata(&link).unwrap().file_type().is_symlink(), "the link was replaced");
    assert!(fs::read(&target).unwrap() == want);
    assert_eq!(fs::metadata(&target).unwrap().permissions().mode() & 0o7777, 0o640, "mode kept");
    // A chain of two links, the last dangling: the file is created where the chain ends.
    let new = sub.join("new.bin");
    symlink(&new, d.join("l2")).unwrap();
    symlink(d.join("l2"), d.join("l1")).unwrap();
    let (code, _, err) = xstate(&["convert", s(&img), "--to", "standard", "-o", s(&d.join("l1"))]);
    assert_eq!(code, 0, "{err}");
    assert!(fs::read(&new).unwrap() == want);
    assert!(fs::symlink_metadata(d.join("l1")).unwrap().file_type().is_symlink());
    // A loop of links is an I/O error, exit 2.
    symlink(d.join("loop2"), d.join("loop1")).unwrap();
    symlink(d.join("loop1"), d.join("loop2")).unwrap();
    let (code, _, err) = xstate(&["convert", s(&img), "--to", "standard", "-o", s(&d.join("loop1"))]);
    assert_eq!(code, 2, "{err}");
    fs::remove_dir_all(&d).unwrap();
}

#[test]
fn planted_temporary_names_are_never_followed() {
    let d = tmpdir("out-plant");
    let img = host_image(&d, false);
    let victim = d.join("victim");
    fs::write(&victim, b"precious").unwrap();
    // The names the temporary file would have had as `.<name>.tmp<PID>`, for the next PIDs.
    let me = std::process::id();
    for pid in me..me + 400 {
        symlink(&victim, d.join(format!(".out.bin.tmp{pid}"))).unwrap();
    }
    let out = d.join("out.bin");
    let (code, _, err) = xstate(&["convert", s(&img), "--to", "standard", "-o", s(&out)]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(fs::read(&victim).unwrap(), b"precious", "a planted symlink was followed");
    assert!(fs::symlink_metadata(&out).unwrap().file_type().is_file(), "out.bin is not a regular file");
    let left: Vec<_> = fs::read_dir(&d)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".out.bin") && !n.starts_with(".out.bin.tmp"))
        .collect();
    assert!(left.is_empty(), "temporary files left behind: {left:?}");
    fs::remove_dir_all(&d).unwrap();
}

#[test]
fn modes_of_replaced_and_new_files() {
    let d = tmpdir("out-mode");
    let img = host_image(&d, false);
    let old = d.join("old.bin");
    fs::write(&old, b"x").unwrap();
    fs::set_permissions(&old, fs::Permissions::from_mode(0o600)).unwrap();
    let (code, _, err) = xstate(&["convert", s(&img), "--to", "standard", "-o", s(&old)]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(fs::metadata(&old).unwrap().permissions().mode() & 0o7777, 0o600);
    // A new file gets 0666 & ~umask, as `>` would give it.
    let new = d.join("new.bin");
    let st = Command::new("sh")
        .args(["-c", "umask 027; exec \"$0\" convert \"$1\" --to standard -o \"$2\""])
        .args([env!("CARGO_BIN_EXE_xstate"), s(&img), s(&new)])
        .status()
        .unwrap();
    assert!(st.success());
    assert_eq!(fs::metadata(&new).unwrap().permissions().mode() & 0o7777, 0o640);
    fs::remove_dir_all(&d).unwrap();
}

#[test]
fn dash_is_stdout_and_stdin() {
    let d = tmpdir("out-dash");
    let img = host_image(&d, false);
    let want = reference_output(&d, &img);
    let out = Command::new(env!("CARGO_BIN_EXE_xstate"))
        .current_dir(&d)
        .args(["convert", s(&img), "--to", "standard", "-o", "-"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stdout == want, "stdout holds {} bytes, not exactly the {} output bytes", out.stdout.len(), want.len());
    assert!(!d.join("-").exists(), "a file named - was created");
    // `/dev/stdout` is the same stdout.
    let out = Command::new(env!("CARGO_BIN_EXE_xstate"))
        .args(["convert", s(&img), "--to", "standard", "-o", "/dev/stdout"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stdout == want, "/dev/stdout: {} bytes", out.stdout.len());
    // Input `-` reads stdin.
    let mut child = Command::new(env!("CARGO_BIN_EXE_xstate"))
        .current_dir(&d)
        .args(["inspect", "-", "--json"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&want).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["size"], want.len());
    fs::remove_dir_all(&d).unwrap();
}

/// Runs `xstate args` with stdout on a full device: exit 2, one line on stderr, no panic.
fn to_full(args: &[&str]) {
    let full = fs::OpenOptions::new().write(true).open("/dev/full").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_xstate")).args(args).stdout(full).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
    assert!(!err.contains("panicked"), "{args:?}: {err}");
    assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
    assert!(err.contains("stdout") || err.contains("No space"), "{args:?}: {err}");
}

#[test]
fn stdout_write_errors_are_io_errors_in_every_command() {
    if !Path::new("/dev/full").exists() {
        skip!("/dev/full does not exist");
        return;
    }
    let d = tmpdir("out-full");
    let img = host_image(&d, false);
    let conv = d.join("c.bin");
    for json in [false, true] {
        let j: &[&str] = if json { &["--json"] } else { &[] };
        for cmd in [&["host"][..], &["layout"], &["policy"], &["compat", "--from", "host", "--to", "host"]] {
            to_full(&[cmd, j].concat());
        }
        to_full(&[&["inspect", s(&img)][..], j].concat());
    }
    to_full(&["validate", s(&img)]);
    to_full(&["convert", s(&img), "--to", "standard", "-o", s(&conv)]);
    to_full(&["convert", s(&img), "--to", "standard", "-o", "-"]);
    to_full(&["kvm", "--rounds", "1"]);
    fs::remove_dir_all(&d).unwrap();
}

#[test]
fn a_full_disk_leaves_the_old_file_and_no_temporary() {
    let d = tmpdir("out-disk");
    let img = host_image(&d, false);
    let fs_dir = d.join("small");
    fs::create_dir(&fs_dir).unwrap();
    // A one-page filesystem whose page the old file holds: no room for the new one.
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4k", "tmpfs"])
        .arg(&fs_dir)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        skip!("cannot mount a small tmpfs here: full-disk output not checked");
        return;
    }
    let out = fs_dir.join("out.bin");
    fs::write(&out, b"old").unwrap();
    let (code, _, err) = xstate(&["convert", s(&img), "--to", "standard", "-o", s(&out)]);
    let names: Vec<_> = fs::read_dir(&fs_dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    let old = fs::read(&out).unwrap();
    let _ = Command::new("umount").arg(&fs_dir).status();
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("No space left"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert_eq!(old, b"old", "the old file was damaged");
    assert_eq!(names.len(), 1, "a temporary file was left: {names:?}");
    fs::remove_dir_all(&d).unwrap();
}

#[test]
fn capture_onto_devices_and_a_full_stdout() {
    let host = xstate_hw::Host::probe().unwrap();
    let img = xstate_hw::selfcheck::crafted_image(host.layout(), host.xcr0(), &mut xstate_hw::selfcheck::Rng::new(3));
    let child = xstate_hw::tracee::spawn_stopped(&host, &img).unwrap();
    let pid = child.pid().to_string();
    let d = tmpdir("out-capture");
    let (code, _, err) = xstate(&["capture", "--pid", &pid]);
    if code == 2 && err.contains("PTRACE") {
        skip!("ptrace unavailable: {err}");
        return;
    }
    let full = d.join("full");
    if mknod(&full, 1, 7) {
        let (code, _, err) = xstate(&["capture", "--pid", &pid, "-o", s(&full)]);
        assert_eq!(code, 2, "{err}");
        assert!(fs::symlink_metadata(&full).unwrap().file_type().is_char_device(), "capture -o replaced a device");
    }
    to_full(&["capture", "--pid", &pid]);
    to_full(&["capture", "--pid", &pid, "--json"]);
    // `--format` means nothing without `-o`: a usage error.
    let (code, _, err) = xstate(&["capture", "--pid", &pid, "--format", "portable"]);
    assert_eq!(code, 2, "{err}");
    let _ = child.resume_and_report();
    fs::remove_dir_all(&d).unwrap();
}

#[test]
fn an_endless_input_is_refused_not_read_forever() {
    let (code, _, err) = xstate(&["inspect", "/dev/zero"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("more than"), "{err}");
}
