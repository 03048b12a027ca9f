//! `xstate validate`, `convert` and `inspect` as tests outside the repository drive them, on
//! images the CPU saved from known states.

#[macro_use]
mod common;

use std::path::Path;

use serde_json::Value;
use xstate::{Component, Xfeatures};
use xstate_hw::{Host, SaveInstr, perm};

use common::{s, shared_root, tmpdir, xstate};

fn p(d: &Path, f: &str) -> String {
    d.join(f).to_str().unwrap().to_string()
}

const ST0_1_5: [u8; 10] = [0, 0, 0, 0, 0, 0, 0, 0xC0, 0xFF, 0x3F];
const MXCSR: u32 = 0x1FA0;
const K2: u64 = 0x1234_5678_9ABC_DEF0;

/// A standard image with known values in every XCR0 component this test knows, then what the
/// CPU saved after loading it (XSAVE, or XSAVEC).
fn known_state(h: &Host, save: SaveInstr) -> Vec<u8> {
    let l = h.layout();
    let xcr0 = h.xcr0();
    let mut img = vec![0u8; l.standard_size(xcr0).unwrap() as usize];
    img[0..2].copy_from_slice(&0x037Fu16.to_le_bytes());
    img[4] = 0x01; // ST0 (physical register 0, TOP = 0) valid
    img[32..42].copy_from_slice(&ST0_1_5);
    img[24..28].copy_from_slice(&MXCSR.to_le_bytes());
    for i in 0..16 {
        img[160 + 3 * 16 + i] = 0x30 + i as u8;
    }
    let mut bv = Xfeatures::LEGACY;
    if let Some(r) = l.standard_range(Component::AVX).filter(|_| xcr0.contains(Component::AVX)) {
        for i in 0..16 {
            img[r.start + 3 * 16 + i] = 0x40 + i as u8;
        }
        bv = bv.with(Component::AVX);
    }
    if xcr0.contains(Component::OPMASK) {
        let r = l.standard_range(Component::OPMASK).unwrap();
        img[r.start + 16..r.start + 24].copy_from_slice(&K2.to_le_bytes());
        let r = l.standard_range(Component::HI16_ZMM).unwrap();
        for i in 0..64 {
            img[r.start + 64 + i] = 0x80 + i as u8; // zmm17
        }
        bv |= Xfeatures(0xA0); // opmask and Hi16_ZMM; ZMM_Hi256 stays init
    }
    if amx_usable(h) {
        // Palette 1 with tmm2 configured as 16 rows of 64 bytes; tmm2's first row known.
        let c = l.standard_range(Component::TILECFG).unwrap();
        img[c.start] = 1;
        img[c.start + 16 + 2 * 2..c.start + 16 + 2 * 2 + 2].copy_from_slice(&64u16.to_le_bytes());
        img[c.start + 48 + 2] = 16;
        let t = l.standard_range(Component::TILEDATA).unwrap();
        for i in 0..64 {
            img[t.start + 2 * 1024 + i] = 0xC0 + i as u8;
        }
        bv = bv.with(Component::TILECFG).with(Component::TILEDATA);
    }
    img[512..520].copy_from_slice(&bv.bits().to_le_bytes());
    let out = h.xrstor_then_save(&img, xcr0, save, xcr0, 0).expect("XRSTOR of the known state");
    let v = xstate::image::Image::new(&out).unwrap();
    let len = match v.form() {
        xstate::image::Form::Standard => img.len(),
        xstate::image::Form::Compacted => l.compacted_size(v.header().compacted_components()).unwrap() as usize,
    };
    out[..len].to_vec()
}

/// XCR0 has the tiles and this process may use them (permission requested).
fn amx_usable(h: &Host) -> bool {
    h.xcr0().contains(Component::TILEDATA) && perm::ensure_amx().is_ok_and(|p| p.contains(Component::TILEDATA))
}

fn hex_of(bytes: impl Iterator<Item = u8>) -> String {
    let v: Vec<u8> = bytes.collect();
    format!("0x{}", v.iter().rev().map(|b| format!("{b:02x}")).collect::<String>())
}

#[test]
fn inspect_regs_prints_the_saved_state() {
    let h = Host::probe().unwrap();
    let _ = perm::ensure_amx();
    let xcr0 = h.xcr0();
    let d = tmpdir("cli-image-regs");
    let mut saves = vec![SaveInstr::Xsave];
    if h.has(SaveInstr::Xsavec) {
        saves.push(SaveInstr::Xsavec);
    } else {
        skip!("no XSAVEC: only the standard image is inspected");
    }
    for save in saves {
        let f = p(&d, save.name());
        std::fs::write(&f, known_state(&h, save)).unwrap();
        let (code, out, err) = xstate(&["inspect", &f, "--regs", "--json"]);
        assert_eq!(code, 0, "{err}");
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["hardware"]["valid"], true, "{}", v["hardware"]);
        let r = &v["registers"];
        assert_eq!(r["st0"]["float"], 1.5, "{}", save.name());
        assert_eq!(r["st0"]["hex"], "0x3fffc000000000000000");
        assert_eq!(r["st1"]["hex"], "0x00000000000000000000");
        assert_eq!(r["fctrl"]["value"], 0x037F);
        assert_eq!(r["ftag"]["value"], 0xFFFC, "ST0 valid, the rest empty");
        assert_eq!(r["mxcsr"]["value"], MXCSR);
        assert_eq!(r["xmm3"]["hex"], hex_of(0x30..0x40));
        assert_eq!(r["xmm2"]["hex"], hex_of(std::iter::repeat_n(0, 16)));
        if xcr0.contains(Component::AVX) {
            assert_eq!(r["ymm3"]["hex"], hex_of((0x30..0x40).chain(0x40..0x50)));
        }
        if xcr0.contains(Component::OPMASK) {
            assert_eq!(r["k2"]["value"], K2);
            assert_eq!(r["k1"]["value"], 0);
            assert_eq!(r["zmm17"]["hex"], hex_of(0x80..0xC0));
            assert_eq!(r["zmm3"]["hex"], hex_of((0x30..0x40).chain(0x40..0x50).chain(std::iter::repeat_n(0, 32))));
        } else {
            skip!("no AVX-512: k and zmm registers not checked");
        }
        if amx_usable(&h) {
            let cfg: Vec<u8> = (0..64)
                .map(|i| match i {
                    0 => 1,
                    20 => 64,
                    50 => 16,
                    _ => 0,
                })
                .collect();
            assert_eq!(r["tilecfg"]["hex"], hex_of(cfg.into_iter()), "{}", save.name());
            assert_eq!(r["tmm2"]["hex"], hex_of((0xC0..=0xFF).chain(std::iter::repeat_n(0, 960))));
            assert_eq!(r["tmm1"]["hex"], hex_of(std::iter::repeat_n(0, 1024)));
        } else {
            skip!("AMX: XCR0 {xcr0} has no tiles or this process may not use them: tilecfg and tmm not checked");
        }
        // The text form names the same values.
        let (code, text, _) = xstate(&["inspect", &f, "--regs"]);
        assert_eq!(code, 0);
        assert!(
            text.lines().any(|l| l.starts_with("st0") && l.contains("0x3fffc000000000000000") && l.contains("1.5"))
        );
        assert!(text.lines().any(|l| l.starts_with("mxcsr") && l.contains("0x00001fa0")));
    }
}

#[test]
fn validate_exit_codes_and_one_line() {
    let h = Host::probe().unwrap();
    let d = tmpdir("cli-image-validate");
    let good = known_state(&h, SaveInstr::Xsave);
    let f = p(&d, "good");
    std::fs::write(&f, &good).unwrap();
    let (code, out, _) = xstate(&["validate", &f]);
    assert_eq!(code, 0);
    assert!(out.contains("valid (hardware)"), "{out}");
    assert_eq!(xstate(&["validate", &f, "--profile", "linux"]).0, 0, "linux");
    // KVM_SET_XSAVE reads a whole 4096-byte struct kvm_xsave: a shorter image (AMD's 2432 bytes)
    // is refused naming that size, and the same image padded with zeros is what KVM takes.
    let (code, _, err) = xstate(&["validate", &f, "--profile", "kvm"]);
    if good.len() < 4096 {
        assert_eq!(code, 1, "kvm reads 4096 bytes of a {}-byte image", good.len());
        assert!(err.contains("4096 needed") && err.contains("EFAULT"), "{err}");
        let mut padded = good.clone();
        padded.resize(4096, 0);
        let k = p(&d, "padded");
        std::fs::write(&k, &padded).unwrap();
        assert_eq!(xstate(&["validate", &k, "--profile", "kvm"]).0, 0, "kvm, padded to 4096");
    } else {
        assert_eq!(code, 0, "kvm: {err}");
    }
    // Xen offers no guest AMX: a policy allowing this host's XCR0 is named.
    let policy = format!("{:#x}", h.xcr0().bits());
    assert_eq!(xstate(&["validate", &f, "--profile", "xen", "--xen-policy", &policy]).0, 0, "xen");
    let mut bad = good.clone();
    bad[520] = 1;
    let b = p(&d, "bad");
    std::fs::write(&b, &bad).unwrap();
    let (code, _, err) = xstate(&["validate", &b]);
    assert_eq!(code, 1);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("XCOMP_BV") && err.contains("#GP"), "{err}");
    let mut res = good.clone();
    res[560] = 7;
    std::fs::write(&b, &res).unwrap();
    assert_eq!(xstate(&["validate", &b]).0, 0, "hardware ignores standard-form bytes 536..575");
    let (code, _, err) = xstate(&["validate", &b, "--profile", "xen", "--xen-policy", &policy]);
    assert_eq!(code, 1);
    assert!(err.contains("byte 560") && err.contains("EIO"), "{err}");
    std::fs::write(&b, &good[..good.len() - 1]).unwrap();
    let (code, _, err) = xstate(&["validate", &b]);
    assert_eq!(code, 1);
    assert!(err.contains(&format!("{} needed", good.len())), "{err}");
    std::fs::write(&b, &good[..10]).unwrap();
    assert_eq!(xstate(&["validate", &b]).0, 1);
    assert_eq!(xstate(&["inspect", &b]).0, 1);
    assert_eq!(xstate(&["validate", &p(&d, "missing")]).0, 2);
    assert_eq!(xstate(&["validate", &f, "--profile", "nonsense"]).0, 2);
    assert_eq!(xstate(&["validate", &f, "--xcr0", "0x4"]).0, 1, "an XCR0 breaking the rules is invalid input");
    // inspect gives XRSTOR's verdict with the same masks: one no CPU restores with (a
    // supervisor bit in XCR0, the AVX-512 trio split) is refused as validate refuses it, not
    // reported as loading without #GP.
    for xcr0 in ["0x10007", "0xc7", "0x4"] {
        let (vcode, _, verr) = xstate(&["validate", &f, "--xcr0", xcr0]);
        let (icode, _, ierr) = xstate(&["inspect", &f, "--xcr0", xcr0]);
        assert_eq!((icode, ierr.lines().count()), (1, 1), "inspect --xcr0 {xcr0}: {ierr}");
        assert_eq!((vcode, &verr), (icode, &ierr), "{xcr0}");
    }
}

#[test]
fn convert_round_trip_and_atomic_output() {
    let h = Host::probe().unwrap();
    let d = tmpdir("cli-image-convert");
    let good = known_state(&h, SaveInstr::Xsave);
    let f = p(&d, "std");
    std::fs::write(&f, &good).unwrap();
    if !h.has(SaveInstr::Xsavec) {
        skip!("no XSAVEC on this host: compacted conversion not run");
        return;
    }
    let c = p(&d, "cmp");
    let (code, out, err) = xstate(&["convert", &f, "--to", "compacted", "-o", &c]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("compacted image"), "{out}");
    let cmp = std::fs::read(&c).unwrap();
    assert_eq!(u64::from_le_bytes(cmp[520..528].try_into().unwrap()), (1 << 63) | h.xcr0().bits());
    assert_eq!(xstate(&["validate", &c]).0, 0);
    let s = p(&d, "back");
    assert_eq!(xstate(&["convert", &c, "--to", "standard", "-o", &s]).0, 0);
    let back = std::fs::read(&s).unwrap();
    // The CPU's XSAVE leaves 416..511 and the header alone; the conversion zeroes them.
    let mut want = good.clone();
    want[416..512].fill(0);
    assert_eq!(back.len(), want.len());
    assert_eq!(back[..512], want[..512]);
    assert_eq!(back[576..], want[576..]);
    // A refused conversion leaves no output file and says why on one line.
    let o = p(&d, "never");
    let (code, _, err) = xstate(&["convert", &f, "--to", "compacted", "--mask", "0x1", "-o", &o]);
    assert_eq!(code, 1);
    assert_eq!(err.lines().count(), 1);
    assert!(err.contains("not in the compaction mask"), "{err}");
    assert!(!Path::new(&o).exists());
    assert!(std::fs::read_dir(&d).unwrap().all(|e| !e.unwrap().file_name().to_string_lossy().contains(".tmp")));
    assert_eq!(xstate(&["convert", &f, "--to", "sideways", "-o", &o]).0, 2);
    assert_eq!(xstate(&["convert", &f, "--to", "standard", "-o", &p(&d, "no/such/dir/out")]).0, 2);
}

#[test]
fn convert_to_another_cpu() {
    let shared = shared_root();
    let intel = shared.join("cpuid/dumps/GenuineIntel/GenuineIntel00706E5_IceLakeY_CPUID.txt");
    let amd = shared.join("cpuid/dumps/AuthenticAMD/AuthenticAMD0A10F11_K19_Genoa_01_CPUID.txt");
    if !intel.is_file() || !amd.is_file() {
        skip!("../shared/cpuid dumps not found: re-layout not checked");
        return;
    }
    let (i, a) = (s(&intel), s(&amd));
    let d = tmpdir("cli-image-relayout");
    // An Intel Ice Lake image with PKRU and ZMM16 set, moved to AMD Genoa and back.
    let mut img = vec![0u8; 2696];
    img[0..2].copy_from_slice(&0x037Fu16.to_le_bytes());
    img[24..28].copy_from_slice(&0x1F80u32.to_le_bytes());
    img[2688..2692].copy_from_slice(&0x5555_5554u32.to_le_bytes());
    img[1664..1680].fill(0xAB);
    img[512..520].copy_from_slice(&0x283u64.to_le_bytes());
    let f = p(&d, "intel");
    std::fs::write(&f, &img).unwrap();
    let o = p(&d, "amd");
    let (code, _, err) =
        xstate(&["convert", &f, "--to", "standard", "--cpuid", i, "--xcr0", "0x2e7", "--to-cpuid", a, "-o", &o]);
    assert_eq!(code, 0, "{err}");
    let out = std::fs::read(&o).unwrap();
    assert_eq!(out.len(), 2440);
    assert_eq!(out[2432..2436], 0x5555_5554u32.to_le_bytes());
    assert!(out[1408..1424].iter().all(|&b| b == 0xAB));
    let (code, text, _) = xstate(&["inspect", &o, "--regs", "--cpuid", a, "--xcr0", "0x2e7"]);
    assert_eq!(code, 0);
    assert!(text.lines().any(|l| l.starts_with("pkru") && l.contains("0x55555554")), "{text}");
    let back = p(&d, "back");
    assert_eq!(
        xstate(&["convert", &o, "--to", "standard", "--cpuid", a, "--xcr0", "0x2e7", "--to-cpuid", i, "-o", &back]).0,
        0
    );
    assert_eq!(std::fs::read(&back).unwrap(), img);
    // The Zen 2 bit-9 component is not PKRU: refused with the reason.
    let zen2 = shared.join("cpuid/dumps/AuthenticAMD");
    let z = std::fs::read_dir(&zen2)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().contains("Matisse") || p.to_string_lossy().contains("Zen2"));
    if let Some(z) = z {
        img[512..520].copy_from_slice(&0x203u64.to_le_bytes());
        std::fs::write(&f, &img).unwrap();
        let (code, _, err) = xstate(&[
            "convert",
            &f,
            "--to",
            "standard",
            "--cpuid",
            i,
            "--xcr0",
            "0x2e7",
            "--to-cpuid",
            s(&z),
            "-o",
            &o,
        ]);
        assert_eq!(code, 1, "{err}");
        assert!(err.contains("8 bytes on the source but 64 on the target"), "{err}");
    }
}
