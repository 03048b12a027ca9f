//! The QEMU round trip against the real QEMU (issue 13 item 2): a tiny guest
//! (`tests/guests/qemu-guest.S`) loads the known register state, QEMU migrates it to a file,
//! xstate reads every register of it, writes an edited xmm1/ymm1 back into the stream, a second
//! QEMU loads the patched stream with `migrate-incoming`, and both QEMU (`info registers`) and
//! the guest itself (it prints xmm1 on COM1 whenever it changes) report the edited values.
//!
//! MPX (TCG `-cpu max` offers it; this AMD host's KVM does not): where CPUID.(7,0).EBX[14] is set
//! the guest enables BNDREGS and BNDCSR and loads bnd0-3 and BNDCFGU (values in the guest's
//! header comment); xstate reads them from the stream's `cpu/mpx` subsection, writes an edited
//! bnd1 lower bound back, and the guest, which prints bnd1's lower bound (read with XSAVE)
//! whenever it changes, reports the edit after `migrate-incoming`. Where the CPU lacks MPX that
//! half prints a SKIP line with the reason.
//!
//! Runs under TCG (`-cpu max`) everywhere and under KVM (`-cpu host,arch-capabilities=off`)
//! where /dev/kvm works, skipping that half with QEMU's own error where it cannot run; skips
//! with a reason where qemu-system-x86_64 or the assembler is missing (`.ci/setup-qemu`
//! installs them).

#[macro_use]
mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{json, ok, s, tmpdir};
use serde_json::{Value, json as j};

const QEMU: &str = "qemu-system-x86_64";

/// zmm i, 64-bit lane j of the known state.
fn lane(i: usize, jj: usize) -> u64 {
    0x5a00_0000_0000_0000 | (i as u64) << 8 | jj as u64
}

/// A QMP connection.
struct Qmp {
    out: UnixStream,
    input: BufReader<UnixStream>,
}

impl Qmp {
    /// Connects and negotiates; `Err` when QEMU closes the socket first (it exited, e.g. an
    /// accelerator that cannot run the vCPU aborts right after creating the socket).
    fn connect(path: &Path, qemu: &mut Child) -> Result<Qmp, String> {
        let start = Instant::now();
        let stream = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(e) if matches!(qemu.try_wait(), Ok(Some(_))) => return Err(format!("QMP {}: {e}", path.display())),
                Err(e) if start.elapsed() < Duration::from_secs(30) => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => return Err(format!("QMP {}: {e}", path.display())),
            }
        };
        stream.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
        let mut q = Qmp { out: stream.try_clone().unwrap(), input: BufReader::new(stream) };
        let mut greeting = String::new();
        match q.input.read_line(&mut greeting) {
            Ok(n) if n > 0 => {}
            Ok(_) => return Err("QMP closed before its greeting".into()),
            Err(e) => return Err(format!("QMP greeting: {e}")),
        }
        q.cmd("qmp_capabilities", j!({}));
        Ok(q)
    }

    fn line(&mut self) -> Value {
        let mut l = String::new();
        self.input.read_line(&mut l).expect("QMP read");
        serde_json::from_str(&l).unwrap_or_else(|e| panic!("QMP line {l:?}: {e}"))
    }

    /// Runs a command; returns its "return" value, panics on "error".
    fn cmd(&mut self, name: &str, args: Value) -> Value {
        let msg = j!({"execute": name, "arguments": args});
        writeln!(self.out, "{msg}").unwrap();
        loop {
            let r = self.line();
            if let Some(v) = r.get("return") {
                return v.clone();
            }
            if let Some(e) = r.get("error") {
                panic!("QMP {name}: {e}");
            }
        }
    }

    fn wait_migration(&mut self) {
        let start = Instant::now();
        loop {
            let st = self.cmd("query-migrate", j!({}));
            match st["status"].as_str() {
                Some("completed") => return,
                Some("failed" | "cancelled") => panic!("migration: {st}"),
                _ if start.elapsed() > Duration::from_secs(120) => panic!("migration did not complete: {st}"),
                _ => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    fn registers(&mut self) -> String {
        self.cmd("human-monitor-command", j!({"command-line": "info registers"}))
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

/// A running QEMU with its QMP socket and serial log.
struct Vm {
    child: Child,
    serial: PathBuf,
    qmp: Qmp,
}

/// A VM left behind by a failing assertion is killed, not left spinning after the test (one
/// ran on at full CPU for half an hour after the READY race failed a run).
impl Drop for Vm {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Vm {
    fn start(dir: &Path, tag: &str, accel: &str, kernel: &Path, incoming: bool) -> Result<Vm, String> {
        let serial = dir.join(format!("{tag}.serial"));
        let sock = dir.join(format!("{tag}.qmp"));
        // This KVM (kvm_pvm) refuses QEMU's write of IA32_ARCH_CAPABILITIES (MSR 0x10a) on AMD
        // hosts and QEMU aborts; the fixtures README makes its KVM stream the same way.
        let cpu = if accel == "kvm" { "host,arch-capabilities=off" } else { "max" };
        let mut cmd = Command::new(QEMU);
        // Two vCPUs: the guest runs on vCPU 0; vCPU 1 waits for a SIPI in its reset state.
        cmd.args([
            "-accel",
            accel,
            "-cpu",
            cpu,
            "-smp",
            "2",
            "-m",
            "32",
            "-display",
            "none",
            "-no-reboot",
            "-nodefaults",
        ])
        .arg("-serial")
        .arg(format!("file:{}", serial.display()))
        .arg("-kernel")
        .arg(kernel)
        .arg("-qmp")
        .arg(format!("unix:{},server=on,wait=off", sock.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
        if incoming {
            cmd.args(["-incoming", "defer"]);
        }
        let mut child = cmd.spawn().map_err(|e| format!("{QEMU}: {e}"))?;
        let start = Instant::now();
        while !sock.exists() {
            if let Ok(Some(status)) = child.try_wait() {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut e, &mut err);
                }
                return Err(format!("{QEMU} -accel {accel} exited ({status}): {}", err.trim()));
            }
            if start.elapsed() > Duration::from_secs(30) {
                let _ = child.kill();
                return Err(format!("{QEMU}: no QMP socket after 30 s"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        match Qmp::connect(&sock, &mut child) {
            Ok(qmp) => Ok(Vm { child, serial, qmp }),
            Err(e) => {
                // QEMU exited (or hung): its stderr says why.
                let _ = child.kill();
                let status = child.wait().map(|s| s.to_string()).unwrap_or_default();
                let mut err = String::new();
                if let Some(mut pipe) = child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut pipe, &mut err);
                }
                Err(format!("{QEMU} -accel {accel}: {e} ({status}): {}", err.trim().replace('\n', "; ")))
            }
        }
    }

    /// Waits until the serial log holds `text`; returns the log.
    /// The serial log once a whole line holding `text` is in it (a guest's line can arrive in
    /// pieces: "READY xcr0=00000007 c" was read once before the rest of its line).
    fn wait_serial(&mut self, text: &str) -> String {
        let start = Instant::now();
        loop {
            let log = std::fs::read_to_string(&self.serial).unwrap_or_default();
            if log.find(text).is_some_and(|i| log[i..].contains('\n')) {
                return log;
            }
            assert!(start.elapsed() < Duration::from_secs(120), "guest never printed {text:?}; serial: {log:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn quit(mut self) {
        let _ = writeln!(self.qmp.out, "{}", j!({"execute": "quit"}));
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The guest, assembled into `dir`; `None` after a SKIP line when the tools are missing.
fn guest(dir: &Path) -> Option<PathBuf> {
    for tool in [QEMU, "as", "ld"] {
        if !common::have(tool) {
            skip!("{tool} not found (.ci/setup-qemu installs QEMU and binutils): the QEMU round trip is not run");
            return None;
        }
    }
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/guests");
    let obj = dir.join("guest.o");
    let elf = dir.join("guest.elf");
    let st = Command::new("as").arg("--32").arg("-o").arg(&obj).arg(src.join("qemu-guest.S")).status().unwrap();
    assert!(st.success(), "as failed");
    let st = Command::new("ld")
        .args(["-m", "elf_i386", "--no-warn-rwx-segments", "-T"])
        .arg(src.join("qemu-guest.ld"))
        .arg("-o")
        .arg(&elf)
        .arg(&obj)
        .status()
        .unwrap();
    assert!(st.success(), "ld failed");
    Some(elf)
}

/// bnd i of the guest's known MPX state as the XSAVE image holds it: {lb, ub in 1's complement}.
fn bnd(i: u64) -> [u64; 2] {
    [0x1000 * (i + 1), !(0x2000 * (i + 1))]
}

/// BNDCFGU of the guest's known state: bound directory base 0x200000, BNDPRESERVE, EN.
const BNDCFGU: u64 = 0x20_0003;

/// The leaf 0xD rows of a real CPU with every component the guest enabled, for reading the
/// layout-free stream: Sapphire Rapids (AVX-512, PKRU, AMX) where XCR0 has no MPX, else
/// Skylake-SP (MPX, AVX-512, PKRU).
fn layout_rows(xcr0: u64) -> xstate::fixtures::Rows {
    if xcr0 & 0x18 != 0 { xstate::fixtures::INTEL_SKYLAKE_SP } else { xstate::fixtures::INTEL_SAPPHIRE_RAPIDS }
}

/// EBX (the standard-format offset) of subleaf `sub` of `rows`.
fn offset(rows: xstate::fixtures::Rows, sub: u8) -> usize {
    rows.iter().find(|r| r.0 == sub).map(|r| r.2 as usize).unwrap_or_else(|| panic!("no subleaf {sub}"))
}

/// `rows` as a CPUID JSON file.
fn layout_json(dir: &Path, tag: &str, rows: xstate::fixtures::Rows) -> PathBuf {
    let rows: Vec<Value> =
        rows.iter().map(|&(i, a, b, c, d)| j!({"index": i, "eax": a, "ebx": b, "ecx": c, "edx": d})).collect();
    let p = dir.join(format!("{tag}-layout.json"));
    std::fs::write(&p, j!({"leaf0d": rows}).to_string()).unwrap();
    p
}

fn reg(regs: &Value, name: &str) -> String {
    regs[name]["hex"].as_str().unwrap_or_else(|| panic!("register {name} missing")).to_string()
}

/// `hex` of a little-endian vector whose 64-bit lanes are `lanes`.
fn vec_hex(lanes: &[u64]) -> String {
    let mut out = String::from("0x");
    for l in lanes.iter().rev() {
        out.push_str(&format!("{l:016x}"));
    }
    out
}

/// One accelerator's round trip; `Err` where the accelerator cannot run here (a SKIP).
fn round_trip(dir: &Path, kernel: &Path, accel: &str) -> Result<(), String> {
    let mut src = Vm::start(dir, &format!("{accel}-src"), accel, kernel, false)?;
    let log = src.wait_serial("READY");
    let field = |name: &str| {
        log.split(&format!("{name}="))
            .nth(1)
            .and_then(|t| u64::from_str_radix(t.get(..8)?, 16).ok())
            .unwrap_or_else(|| panic!("no {name} in {log:?}"))
    };
    let (xcr0, cpuid7_ebx) = (field("READY xcr0"), field("cpuid7.ebx"));
    let mpx = xcr0 & 0x18 == 0x18;
    // Where the stream holds env.bnd_regs (found below).
    let mut mpx_at = 0;
    if !mpx {
        let why = if cpuid7_ebx & (1 << 14) == 0 {
            "CPUID.(7,0).EBX[14] (MPX) is clear"
        } else {
            "CPUID.(0xD,0).EAX lacks BNDREGS or BNDCSR"
        };
        skip!("{accel}: {why} (XCR0 {xcr0:#x}): the cpu/mpx subsection is not checked against QEMU here");
    } else {
        // The guest read its bnd1 back with XSAVE: XRSTOR loaded it and no branch reset it.
        src.wait_serial(&format!("bnd1={:016x}", bnd(1)[0]));
    }
    let rows = layout_rows(xcr0);
    let layout = &layout_json(dir, accel, rows);
    let stream = dir.join(format!("{accel}.mig"));
    src.qmp.cmd("stop", j!({}));
    src.qmp.cmd("migrate", j!({"uri": format!("file:{}", stream.display())}));
    src.qmp.wait_migration();
    src.quit();

    // Two vCPU sections: vCPU 1 never ran (reset state: XCR0 = x87 only, FCW 0x037f).
    let v1 =
        json(&["inspect", s(&stream), "--format", "qemu", "--vcpu", "1", "--cpuid", s(layout), "--regs", "--json"]);
    assert_eq!(v1["vcpu_id"].as_u64(), Some(1), "{accel}");
    assert_eq!(v1["xcr0"], "0x1", "{accel}: vCPU 1 in its reset state");
    assert_eq!(reg(&v1["registers"], "fctrl"), "0x037f", "{accel}");
    let (code, _, err) = common::xstate(&["inspect", s(&stream), "--format", "qemu", "--cpuid", s(layout)]);
    assert_eq!(code, 1, "{accel}: two vCPUs and no --vcpu: {err}");
    assert!(err.contains("--vcpu"), "{err}");
    // Every register of the known state, read from vCPU 0's section.
    let v = json(&["inspect", s(&stream), "--format", "qemu", "--vcpu", "0", "--cpuid", s(layout), "--regs", "--json"]);
    assert_eq!(v["xcr0"], format!("{xcr0:#x}").as_str(), "{accel}: the stream's XCR0 is the guest's");
    let regs = &v["registers"];
    assert_eq!(reg(regs, "mxcsr"), "0x00009fc0", "{accel}");
    assert_eq!(reg(regs, "st0"), "0x3fffb8aa3b295c17f0bc", "{accel}: st0 = log2(e)");
    assert_eq!(reg(regs, "st1"), "0x4000c90fdaa22168c235", "{accel}: st1 = pi");
    assert_eq!(reg(regs, "st2"), "0x3fff8000000000000000", "{accel}: st2 = 1.0");
    let lanes = if xcr0 & 0xe0 == 0xe0 {
        8
    } else if xcr0 & 4 != 0 {
        4
    } else {
        2
    };
    let (prefix, n) = match lanes {
        8 => ("zmm", 32),
        4 => ("ymm", 16),
        _ => ("xmm", 16),
    };
    for i in 0..n {
        let want: Vec<u64> = (0..lanes).map(|l| lane(i, l)).collect();
        assert_eq!(reg(regs, &format!("{prefix}{i}")), vec_hex(&want), "{accel}: {prefix}{i}");
    }
    if lanes == 8 {
        for i in 0..8u64 {
            assert_eq!(reg(regs, &format!("k{i}")), format!("{:#018x}", 0xc000 | (0x11 * (i + 1))), "{accel}: k{i}");
        }
    }
    if xcr0 & 0x200 != 0 {
        assert_eq!(reg(regs, "pkru"), "0x5555aaa4", "{accel}: pkru");
    }
    if mpx {
        for i in 0..4u64 {
            assert_eq!(reg(regs, &format!("bnd{i}raw")), vec_hex(&bnd(i)), "{accel}: bnd{i}raw");
        }
        assert_eq!(reg(regs, "bndcfgu"), format!("{BNDCFGU:#018x}"), "{accel}: bndcfgu");
        assert_eq!(reg(regs, "bndstatus"), format!("{:#018x}", 0), "{accel}: bndstatus");
        // Independently of xstate's reader: QEMU's `env.bnd_regs` holds {lb, ub} as big-endian
        // u64s with ub as the XSAVE image has it (1's complement), bnd0-3 then cfgu and sts.
        let mut wire = Vec::new();
        for w in (0..4).flat_map(bnd).chain([BNDCFGU, 0]) {
            wire.extend_from_slice(&w.to_be_bytes());
        }
        let raw = std::fs::read(&stream).unwrap();
        let hits: Vec<usize> = raw.windows(wire.len()).enumerate().filter(|(_, w)| *w == wire).map(|h| h.0).collect();
        assert_eq!(hits.len(), 1, "{accel}: cpu/mpx's 80 bytes as expected, found at {hits:?}");
        mpx_at = hits[0];
    }

    // Edit xmm1's low lane and ymm1's lane 2 in the extracted image, write it back.
    let img = dir.join(format!("{accel}.img"));
    ok(&[
        "convert",
        s(&stream),
        "--from-format",
        "qemu",
        "--vcpu",
        "0",
        "--cpuid",
        s(layout),
        "--to",
        "standard",
        "--to-format",
        "raw",
        "--drop",
        "xcr0,vcpu",
        "-o",
        s(&img),
    ]);
    let mut b = std::fs::read(&img).unwrap();
    let (x1, y1) = (0x1122_3344_5566_7788u64, 0x99aa_bbcc_ddee_ff00u64);
    b[160 + 16..160 + 24].copy_from_slice(&x1.to_le_bytes());
    if lanes >= 4 {
        // The AVX component sits at 576 in every layout; ymm1's upper half at 576 + 16.
        b[576 + 16..576 + 24].copy_from_slice(&y1.to_le_bytes());
    }
    // bnd1's lower bound: bytes 16-23 of BNDREGS, at the layout's offset.
    let lb1 = 0x0bad_cafe_0000_7000u64;
    let mut edited = 2;
    if mpx {
        let at = offset(rows, 3) + 16;
        assert_eq!(b[at..at + 8], bnd(1)[0].to_le_bytes(), "{accel}: the image's bnd1.lb before the edit");
        b[at..at + 8].copy_from_slice(&lb1.to_le_bytes());
        edited += 1;
    }
    std::fs::write(&img, &b).unwrap();
    let patched = dir.join(format!("{accel}-patched.mig"));
    let xcr0_arg = format!("{xcr0:#x}");
    ok(&[
        "convert",
        s(&img),
        "--cpuid",
        s(layout),
        "--xcr0",
        &xcr0_arg,
        "--to",
        "standard",
        "--to-format",
        "qemu",
        "--into",
        s(&stream),
        "--vcpu",
        "0",
        "-o",
        s(&patched),
    ]);
    let before = std::fs::read(&stream).unwrap();
    let after = std::fs::read(&patched).unwrap();
    assert_eq!(before.len(), after.len());
    let changed = before.iter().zip(&after).filter(|(a, c)| a != c).count();
    assert!(changed <= 8 * edited, "{accel}: {changed} bytes changed for {edited} 8-byte fields");
    if mpx {
        // In the stream, only bnd1.lb of cpu/mpx changed, to the edit (big-endian).
        let lb_at = mpx_at + 16;
        assert_eq!(after[lb_at..lb_at + 8], lb1.to_be_bytes(), "{accel}: bnd1.lb in the patched stream");
        assert_eq!(before[mpx_at..lb_at], after[mpx_at..lb_at], "{accel}: bnd0");
        assert_eq!(before[lb_at + 8..mpx_at + 80], after[lb_at + 8..mpx_at + 80], "{accel}: cpu/mpx after bnd1.lb");
        // The patched stream reads back with the edit and nothing else of MPX changed.
        let v = json(&[
            "inspect",
            s(&patched),
            "--format",
            "qemu",
            "--vcpu",
            "0",
            "--cpuid",
            s(layout),
            "--regs",
            "--json",
        ]);
        let r = &v["registers"];
        assert_eq!(reg(r, "bnd1raw"), vec_hex(&[lb1, bnd(1)[1]]), "{accel}: patched bnd1raw");
        for i in [0u64, 2, 3] {
            assert_eq!(reg(r, &format!("bnd{i}raw")), vec_hex(&bnd(i)), "{accel}: patched bnd{i}raw");
        }
        assert_eq!(reg(r, "bndcfgu"), format!("{BNDCFGU:#018x}"), "{accel}: patched bndcfgu");
    }

    // QEMU loads it: QEMU's registers and the guest's own report show the edit.
    let mut dst = Vm::start(dir, &format!("{accel}-dst"), accel, kernel, true)?;
    dst.qmp.cmd("migrate-incoming", j!({"uri": format!("file:{}", patched.display())}));
    dst.qmp.wait_migration();
    dst.qmp.cmd("cont", j!({}));
    dst.wait_serial(&format!("xmm1={x1:016x}"));
    if mpx {
        // QEMU's `info registers` shows no bound registers: the guest's own report is the proof.
        dst.wait_serial(&format!("bnd1={lb1:016x}"));
    }
    // info registers shows the current CPU (vCPU 0 by default).
    let info = dst.qmp.registers();
    assert!(info.contains(&format!("{x1:016x}")), "{accel}: info registers lacks xmm1's edit:\n{info}");
    if lanes >= 4 {
        assert!(info.contains(&format!("{y1:016x}")), "{accel}: info registers lacks ymm1's edit:\n{info}");
    }
    assert!(info.contains("MXCSR=00009fc0"), "{accel}: {info}");
    dst.quit();
    Ok(())
}

#[test]
fn qemu_migration_stream_read_patched_and_loaded_by_qemu() {
    let dir = tmpdir("qemu");
    let Some(kernel) = guest(&dir) else { return };
    round_trip(&dir, &kernel, "tcg").unwrap_or_else(|e| panic!("TCG: {e}"));
    match std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm") {
        Err(e) => skip!("/dev/kvm: {e}: the QEMU round trip under KVM is not run"),
        Ok(_) => {
            if let Err(e) = round_trip(&dir, &kernel, "kvm") {
                skip!("QEMU cannot run a KVM guest here ({e}): the round trip under KVM is not run");
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
