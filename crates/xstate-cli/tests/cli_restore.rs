//! `xstate restore` never writes a state that is not the image's (issue 10, items 6-8): on a
//! live child holding known AVX-512 state (AVX and PKRU where the host lacks it: PKRU, like
//! AVX-512, sits elsewhere on the other vendor), read back with PTRACE_GETREGSET by the test
//! itself and by the child's own XSAVE.

#[macro_use]
mod common;

use std::path::{Path, PathBuf};

use xstate::{Component, Layout, Xfeatures};
use xstate_hw::Host;
use xstate_hw::selfcheck::{Rng, crafted_image, register_bytes};
use xstate_hw::tracee;

use common::{s, shared_root, tmpdir, xstate};

/// A dump of a CPU of the other vendor, whose AVX-512 (or AVX) state sits elsewhere than here.
fn foreign_dump(host: &Host) -> Option<PathBuf> {
    let intel = host.cpuid().vendor().as_deref() == Some("GenuineIntel");
    let p = if intel {
        "cpuid/dumps/AuthenticAMD/AuthenticAMD0A10F11_K19_Genoa_01_CPUID.txt"
    } else {
        "cpuid/dumps/GenuineIntel/GenuineIntel00806F8_SapphireRapids_05_CPUID.txt"
    };
    let p = shared_root().join(p);
    p.is_file().then_some(p)
}

fn layout_of(dump: &Path) -> Layout {
    let d = xstate::cpuid::parse(&std::fs::read_to_string(dump).unwrap()).unwrap();
    Layout::from_leaf0d(d.leaf0d()).unwrap()
}

/// The components whose state the tests move: AVX-512 where the host has it, else AVX and PKRU.
fn moved(xcr0: Xfeatures) -> Xfeatures {
    xcr0 & Xfeatures(0x2E7)
}

/// The register bytes of the components of `mask` above SSE, at this host's offsets, plus XMM.
fn registers(l: &Layout, img: &[u8], mask: Xfeatures) -> Vec<(Component, Vec<u8>)> {
    let mut v = vec![(Component::SSE, img[160..416].to_vec())];
    for c in mask.iter().filter(|c| !c.is_legacy()) {
        let r = register_bytes(c, l.standard_range(c).unwrap());
        v.push((c, img[r].to_vec()));
    }
    v
}

#[test]
fn restore_refuses_what_it_cannot_read_and_loads_what_it_can() {
    let host = Host::probe().unwrap();
    let l = host.layout().clone();
    let xcr0 = host.xcr0();
    let Some(dump) = foreign_dump(&host) else {
        skip!("../shared/cpuid dumps not found: foreign-layout restore not checked");
        return;
    };
    // Known state in AVX-512 (k, zmm_hi256, hi16_zmm) where the host has it, else AVX and
    // PKRU; tiles init.
    let moved = moved(xcr0);
    let foreign = layout_of(&dump);
    let differs = moved.iter().filter(|c| !c.is_legacy()).any(|c| foreign.standard_range(c) != l.standard_range(c));
    assert!(differs, "{}: expected other offsets than this host's for {moved}", dump.display());
    let img = crafted_image(&l, moved, &mut Rng::new(7));
    let child = tracee::spawn_stopped(&host, &img).unwrap();
    let pid = child.pid().to_string();
    let Ok(before) = xstate_hw::ptrace::get_xstate(child.pid()) else {
        skip!("PTRACE_GETREGSET refused here: restore not checked");
        return;
    };
    let want = registers(&l, &img, moved);
    assert_eq!(registers(&l, &before, moved), want, "the child holds the known state");
    let untouched = |what: &str| {
        let now = xstate_hw::ptrace::get_xstate(child.pid()).unwrap();
        assert_eq!(registers(&l, &now, moved), want, "{what}: the process's state changed");
    };
    let d = tmpdir("restore");
    let cap = d.join("cap.nt");
    let foreign_img = d.join("foreign.bin");
    let (code, _, err) = xstate(&["capture", "--pid", &pid, "-o", s(&cap)]);
    assert_eq!(code, 0, "{err}");
    // The host's XCR0 (which the capture records) is not the other CPU's: dropped by name.
    let (code, _, err) = xstate(&[
        "convert",
        s(&cap),
        "--to",
        "standard",
        "--to-cpuid",
        s(&dump),
        "--drop",
        "xcr0",
        "-o",
        s(&foreign_img),
    ]);
    assert_eq!(code, 0, "{err}");

    // 6. Laid out for the other CPU, restored without saying so: refused, the process untouched.
    let (code, _, err) = xstate(&["restore", "--pid", &pid, s(&foreign_img)]);
    assert_eq!(code, 1, "restore read a foreign layout with this host's offsets: {err}");
    assert!(err.contains("bytes"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    untouched("a foreign layout without --cpuid");

    // 7. Said so: restored, with no false XCR0 complaint, and every register is the original.
    let (code, out, err) = xstate(&["restore", "--pid", &pid, s(&foreign_img), "--cpuid", s(&dump)]);
    assert_eq!(code, 0, "{out}{err}");
    untouched("the foreign layout with --cpuid");
    // Its XCR0 given explicitly works as well, and a wrong one is refused by size.
    let fx = foreign.user_supported();
    let (code, _, err) =
        xstate(&["restore", "--pid", &pid, s(&foreign_img), "--cpuid", s(&dump), "--xcr0", &format!("{fx:#x}")]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = xstate(&["restore", "--pid", &pid, s(&foreign_img), "--cpuid", s(&dump), "--xcr0", "0x7"]);
    assert_eq!(code, 1, "{err}");
    untouched("a wrong --xcr0");

    // 8. Files of zeros, 1 MiB and of every other length: refused naming the sizes.
    for len in [1 << 20, 576, before.len() + 64] {
        let zeros = d.join(format!("zeros{len}"));
        std::fs::write(&zeros, vec![0u8; len]).unwrap();
        for fmt in [&[][..], &["--format", "raw"]] {
            let (code, _, err) = xstate(&[&["restore", "--pid", &pid, s(&zeros)][..], fmt].concat());
            assert_eq!(code, 1, "{len} zero bytes {fmt:?}: {err}");
            assert!(err.contains(&format!("{len} bytes")), "{err}");
            untouched("a file of zeros");
        }
    }
    // The child, continued, saves its own registers: still the original state.
    let seen = child.resume_and_report().unwrap();
    assert_eq!(registers(&l, &seen, moved), want, "the child's own XSAVE");
    std::fs::remove_dir_all(&d).unwrap();
}

/// A kvm_xsave (and a Xen HVM record, whose zero tail lets its length vary) records neither the
/// CPU it was saved on nor a length that fixes it: `restore` requires `--cpuid` (exit 2), refuses
/// a record whose saving host's mask at bytes 464..471 the named CPU does not support (exit 1),
/// both leaving the process untouched, and with the right CPU re-lays the state out correctly.
#[test]
fn restore_of_a_kvm_xsave_needs_the_cpu_it_was_saved_on() {
    let host = Host::probe().unwrap();
    let l = host.layout().clone();
    let xcr0 = host.xcr0();
    let Some(dump) = foreign_dump(&host) else {
        skip!("../shared/cpuid dumps not found: kvm_xsave restore not checked");
        return;
    };
    let moved = moved(xcr0);
    let foreign = layout_of(&dump);
    let img = crafted_image(&l, moved, &mut Rng::new(9));
    let child = tracee::spawn_stopped(&host, &img).unwrap();
    let pid = child.pid().to_string();
    let Ok(before) = xstate_hw::ptrace::get_xstate(child.pid()) else {
        skip!("PTRACE_GETREGSET refused here: restore not checked");
        return;
    };
    let want = registers(&l, &before, moved);
    let now = || registers(&l, &xstate_hw::ptrace::get_xstate(child.pid()).unwrap(), moved);
    // The state to load: every register of `moved` changed, laid out for the other CPU (PKRU
    // keeps key 0, the child's own memory, accessible: bits 0 and 1 stay clear).
    let mut m = before.clone();
    for c in moved.iter().filter(|c| !c.is_legacy()) {
        let r = register_bytes(c, l.standard_range(c).unwrap());
        let first = if c == Component::PKRU { 0x58 } else { 0x5A };
        m[r.start] ^= first;
        for b in &mut m[r.start + 1..r.end] {
            *b ^= 0x5A;
        }
    }
    for b in &mut m[160..416] {
        *b ^= 0x5A;
    }
    let want_new = registers(&l, &m, moved);
    let d = tmpdir("restore-kvm");
    let (mine, kvm, hvm) = (d.join("mine.nt"), d.join("foreign.kvm-xsave"), d.join("foreign.xen-hvm"));
    std::fs::write(&mine, &m).unwrap();
    // Only x87 and SSE in use: the other CPU's larger record ends in zeros, which Xen's HVM
    // loader accepts as a tail, so its length says nothing either.
    let mut sse = m.clone();
    sse[512] &= 0x3;
    sse[513..520].fill(0);
    let mine_sse = d.join("mine-sse.nt");
    std::fs::write(&mine_sse, &sse).unwrap();
    let mx = format!("{moved:#x}");
    for (input, out, fmt, extra) in
        [(&mine, &kvm, "kvm-xsave", &["--drop", "xcr0"][..]), (&mine_sse, &hvm, "xen-hvm", &["--vcpu", "0"][..])]
    {
        let args =
            [
                &[
                    "convert",
                    s(input),
                    "--to",
                    "standard",
                    "--to-cpuid",
                    s(&dump),
                    "--to-xcr0",
                    &mx,
                    "--to-format",
                    fmt,
                ][..],
                extra,
                &["-o", s(out)][..],
            ]
            .concat();
        let (code, _, err) = xstate(&args);
        assert_eq!(code, 0, "{args:?}: {err}");
    }
    for f in [&kvm, &hvm] {
        for fmt in [&[][..], &["--format", if f == &kvm { "kvm-xsave" } else { "xen-hvm" }]] {
            let (code, _, err) = xstate(&[&["restore", "--pid", &pid, s(f)][..], fmt].concat());
            assert_eq!(code, 2, "{f:?} {fmt:?} restored without its CPU: {err}");
            assert!(err.starts_with("xstate: ") && err.contains("--cpuid"), "{err}");
            assert_eq!(err.trim().lines().count(), 1, "{err}");
            assert_eq!(now(), want, "{f:?} {fmt:?} refused: the process is untouched");
        }
    }
    // As KVM_GET_XSAVE on that CPU writes it: its supported XCR0 at bytes 464..471.
    let mut k = std::fs::read(&kvm).unwrap();
    k[464..472].copy_from_slice(&foreign.user_supported().bits().to_le_bytes());
    std::fs::write(&kvm, &k).unwrap();
    let (code, _, err) = xstate(&["restore", "--pid", &pid, s(&kvm), "--format", "kvm-xsave"]);
    assert_eq!(code, 2, "restored without its CPU: {err}");
    assert_eq!(now(), want, "refused: the process is untouched");
    // The saving host's mask names states this host lacks (AMX of an Intel dump on AMD).
    let lacking = foreign.user_supported() & !l.user_supported();
    if lacking.is_empty() {
        skip!("{} supports no state this host lacks: the mask refusal not checked", dump.display());
    } else {
        let (code, _, err) = xstate(&["restore", "--pid", &pid, s(&kvm), "--format", "kvm-xsave", "--cpuid", "host"]);
        assert_eq!(code, 1, "a kvm_xsave of another CPU restored as this host's: {err}");
        assert!(err.contains("464"), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert_eq!(now(), want, "mask refused: the process is untouched");
    }
    // A portable record carries its CPU's layout: read in it, and --cpuid naming a CPU that
    // places its components elsewhere (this host) is refused, as in every other command.
    let port = d.join("foreign.portable");
    let conv = ["convert", s(&mine), "--to", "standard", "--to-cpuid", s(&dump), "--to-xcr0", &mx];
    let (code, _, err) = xstate(&[&conv[..], &["--to-format", "portable", "-o", s(&port)]].concat());
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = xstate(&["restore", "--pid", &pid, s(&port), "--cpuid", "host"]);
    assert_eq!((code, err.trim().lines().count()), (1, 1), "portable read with this host's layout: {err}");
    assert!(err.contains("carries its own layout"), "{err}");
    assert_eq!(now(), want, "refused: the process is untouched");
    // With the CPU it was saved on: every register as intended, at this host's offsets.
    let (code, out, err) = xstate(&["restore", "--pid", &pid, s(&kvm), "--cpuid", s(&dump), "--xcr0", &mx]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(now(), want_new, "the kvm_xsave re-laid out for this host");
    let (code, out, err) = xstate(&["restore", "--pid", &pid, s(&mine), "--format", "nt-xstate"]);
    assert_eq!(code, 0, "{out}{err}");
    let seen = child.resume_and_report().unwrap();
    assert_eq!(registers(&l, &seen, moved), want_new, "the child's own XSAVE");
    std::fs::remove_dir_all(&d).unwrap();
}
