//! The VMM files of `../shared/fixtures` (QEMU migration streams, a Cloud Hypervisor snapshot,
//! a Firecracker vmstate), written by the real tools with a known register state
//! (fixtures/README.md), read register by register; and written back.

mod common;

use common::fixture_or_skip;
use xstate::Layout;
use xstate::Xfeatures;
use xstate::fixtures::{self, AMD_ZEN4, INTEL_AMX_GUEST, INTEL_SAPPHIRE_RAPIDS, INTEL_SKYLAKE_SP};
use xstate::image::regs::{Decoded, decode};
use xstate::record::qemu::Accel;
use xstate::record::{self, Format, Options, Rule, StateId};

/// zmm i, 64-bit lane j of the known state.
fn lane(i: usize, j: usize) -> u64 {
    0x5a00_0000_0000_0000 | (i as u64) << 8 | j as u64
}

/// The known vector registers: `n` registers of `lanes` 64-bit lanes.
fn check_vectors(d: &Decoded, prefix: &str, n: usize, lanes: usize) {
    for i in 0..n {
        let r = d.get(&format!("{prefix}{i}")).unwrap_or_else(|| panic!("{prefix}{i} missing"));
        assert_eq!(r.bytes.len(), 8 * lanes, "{prefix}{i}");
        for j in 0..lanes {
            let v = u64::from_le_bytes(r.bytes[8 * j..8 * j + 8].try_into().unwrap());
            assert_eq!(v, lane(i, j), "{prefix}{i} lane {j}");
        }
    }
}

/// x87 and MXCSR of the known state: `fninit; fld1; fldpi; fldl2e`, MXCSR 0x9fc0.
fn check_x87(d: &Decoded) {
    let f80 = |name: &str| {
        let b = &d.get(name).unwrap().bytes;
        (u64::from_le_bytes(b[..8].try_into().unwrap()), u16::from_le_bytes([b[8], b[9]]))
    };
    assert_eq!(f80("st0"), (0xb8aa_3b29_5c17_f0bc, 0x3fff), "st0 = log2(e)");
    assert_eq!(f80("st1"), (0xc90f_daa2_2168_c235, 0x4000), "st1 = pi");
    assert_eq!(f80("st2"), (0x8000_0000_0000_0000, 0x3fff), "st2 = 1.0");
    for i in 3..8 {
        assert_eq!(f80(&format!("st{i}")), (0, 0), "st{i} empty");
    }
    let int = |name: &str| d.get(name).unwrap().as_u64().unwrap();
    assert_eq!(int("fctrl"), 0x037f);
    assert_eq!(int("fstat") >> 11 & 7, 5, "TOP = 5 after three loads");
    // Physical registers 5, 6, 7 valid; gdb's full tag word: 00 (valid) for 5, 6; 7 is 1.0.
    assert_eq!(int("ftag"), 0x03ff);
    assert_eq!(int("mxcsr"), 0x9fc0);
}

fn qemu(name: &str, layout: &Layout, opts: &Options) -> Option<(Vec<u8>, record::Contents)> {
    let bytes = fixture_or_skip(&format!("qemu/{name}"), "the QEMU stream is not read")?;
    let c = record::read(Format::Qemu, &bytes, layout, opts).unwrap_or_else(|e| panic!("{name}: {e}"));
    Some((bytes, c))
}

fn decoded(c: &record::Contents, layout: &Layout) -> Decoded {
    regs_of(&c.states[0], layout)
}

#[test]
fn qemu_kvm_stream_register_by_register() {
    // Written on Zen 4 under KVM; the stream holds no layout, so any layout with the
    // components reads it the same: Zen 4's own and Skylake-SP's (AVX-512 256 bytes higher).
    for rows in [AMD_ZEN4, INTEL_SKYLAKE_SP] {
        let l = fixtures::layout(rows);
        let Some((_, c)) = qemu("kvm64u.mig", &l, &Options::default()) else { return };
        assert_eq!(c.states.len(), 1);
        let st = &c.states[0];
        assert_eq!(st.id, Some(StateId::Vcpu(0)));
        assert_eq!(st.xcr0, Some(Xfeatures(0xe7)));
        assert_eq!(st.rfbm, Some(Xfeatures(0xe7)));
        assert_eq!(st.image.as_ref().unwrap().image().xstate_bv(), Xfeatures(0xe7), "KVM's xstate_bv");
        assert!(c.notes[0].contains("KVM"), "{:?}", c.notes);
        let d = decoded(&c, &l);
        check_x87(&d);
        check_vectors(&d, "xmm", 16, 2);
        check_vectors(&d, "ymm", 16, 4);
        for i in 0..32 {
            check_vectors_one(&d, i);
        }
        for i in 0..8u64 {
            assert_eq!(d.get(&format!("k{i}")).unwrap().as_u64(), Some(0xc000 | (0x11 * (i + 1))), "k{i}");
        }
    }
}

fn check_vectors_one(d: &Decoded, i: usize) {
    let r = d.get(&format!("zmm{i}")).unwrap();
    for j in 0..8 {
        assert_eq!(u64::from_le_bytes(r.bytes[8 * j..8 * j + 8].try_into().unwrap()), lane(i, j), "zmm{i} lane {j}");
    }
}

#[test]
fn qemu_tcg_stream_register_by_register() {
    // TCG -cpu max: XCR0 0x207 (YMM, PKRU), xstate_bv 0 with live registers, x87 registers
    // stored physically. Read on a layout with PKRU.
    let l = fixtures::layout(INTEL_SKYLAKE_SP);
    let Some((_, c)) = qemu("tcg64u.mig", &l, &Options::default()) else { return };
    let st = &c.states[0];
    assert_eq!(st.xcr0, Some(Xfeatures(0x207)));
    // TCG keeps no XINUSE: every enabled component is in use, so XRSTOR loads the registers.
    assert_eq!(st.image.as_ref().unwrap().image().xstate_bv(), Xfeatures(0x207));
    assert!(c.notes[0].contains("TCG"), "{:?}", c.notes);
    let d = decoded(&c, &l);
    check_x87(&d);
    check_vectors(&d, "xmm", 16, 2);
    check_vectors(&d, "ymm", 16, 4);
    assert_eq!(d.get("pkru").unwrap().as_u64(), Some(0x5555_aaa4));
    assert_eq!(d.get("fioff").map(|r| r.as_u64()), Some(Some(0x1004e5)), "TCG recorded FIP");
}

#[test]
fn qemu_accelerator_evidence_and_conflicts() {
    let l = fixtures::layout(INTEL_SKYLAKE_SP);
    let mut opts = Options::default();
    // Contradictions are refused, never resolved silently.
    opts.qemu_accel = Some(Accel::Tcg);
    let Some(kvm) = fixture_or_skip("qemu/kvm64u.mig", "accelerator evidence") else { return };
    let e = record::read(Format::Qemu, &kvm, &l, &opts).unwrap_err();
    assert_eq!(e.rule, Rule::Ambiguous, "{e}");
    opts.qemu_accel = Some(Accel::Kvm);
    let Some(tcg) = fixture_or_skip("qemu/tcg64u.mig", "accelerator evidence") else { return };
    let e = record::read(Format::Qemu, &tcg, &l, &opts).unwrap_err();
    assert_eq!(e.rule, Rule::Ambiguous, "{e}");
    // A layout without the stream's components cannot hold its image.
    let no_pkru = fixtures::layout(INTEL_AMX_GUEST);
    let e = record::read(Format::Qemu, &tcg, &no_pkru, &Options::default()).unwrap_err();
    assert_eq!(e.rule, Rule::UnknownComponent, "{e}");
    assert_eq!(record::detect(&tcg, &l), Some(Format::Qemu));
}

#[test]
fn qemu_patch_round_trips_and_edits() {
    let l = fixtures::layout(INTEL_SAPPHIRE_RAPIDS);
    for name in ["kvm64u.mig", "tcg64u.mig"] {
        let Some((bytes, c)) = qemu(name, &l, &Options::default()) else { return };
        // Unchanged contents give the stream back byte for byte.
        let same = record::patch(Format::Qemu, &bytes, &c, &l, &l, &Options::default()).unwrap();
        assert!(same == bytes, "{name}: patching with its own contents changed bytes");
        // Edit xmm3's low lane and st1; read back.
        let mut c2 = c.clone();
        let img = c2.states[0].image.as_mut().unwrap();
        img[160 + 16 * 3..160 + 16 * 3 + 8].copy_from_slice(&0x1122_3344_5566_7788u64.to_le_bytes());
        img[32 + 16..32 + 16 + 10].copy_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0xc0, 0x00, 0x40]);
        let out = record::patch(Format::Qemu, &bytes, &c2, &l, &l, &Options::default()).unwrap();
        assert_eq!(out.len(), bytes.len());
        let back = record::read(Format::Qemu, &out, &l, &Options::default()).unwrap();
        let d = decoded(&back, &l);
        assert_eq!(&d.get("xmm3").unwrap().bytes[..8], &0x1122_3344_5566_7788u64.to_le_bytes(), "{name}");
        assert_eq!(d.get("st1").unwrap().as_f64(), Some(3.0), "{name}");
        assert_eq!(d.get("st0").unwrap().as_f64(), Some(std::f64::consts::LOG2_E), "{name}");
        let diff = out.iter().zip(&bytes).filter(|(a, b)| a != b).count();
        assert!(diff > 0 && diff <= 18, "{name}: {diff} bytes changed for two registers");
    }
}

fn ch(opts: &Options, layout: &Layout) -> Option<(Vec<u8>, record::Contents)> {
    let bytes = fixture_or_skip("cloud-hypervisor/state.json", "the Cloud Hypervisor snapshot is not read")?;
    let c = record::read(Format::CloudHypervisor, &bytes, layout, opts).unwrap_or_else(|e| panic!("state.json: {e}"));
    Some((bytes, c))
}

/// Every register of the known state in a KVM guest's image (AVX-512 and k0-7 by kmovw).
fn check_known_avx512(d: &Decoded) {
    check_x87(d);
    for i in 0..32 {
        check_vectors_one(d, i);
    }
    for i in 0..8u64 {
        assert_eq!(d.get(&format!("k{i}")).unwrap().as_u64(), Some(0xc000 | (0x11 * (i + 1))), "k{i}");
    }
}

#[test]
fn cloud_hypervisor_snapshot_register_by_register() {
    // The layout is the snapshot's own CPUID; the one given is not used.
    let unrelated = fixtures::layout(fixtures::AVX_ONLY);
    let Some((_, c)) = ch(&Options::default(), &unrelated) else { return };
    let l = c.layout.clone().expect("the snapshot carries its CPUID's layout");
    assert_eq!(l.user_supported(), Xfeatures(0xe7));
    assert_eq!(l.standard_size(Xfeatures(0xe7)), Some(2432), "Zen 4 without PKU: AVX-512 packed after AVX");
    assert_eq!(c.states.len(), 1);
    let st = &c.states[0];
    assert_eq!(st.id, Some(StateId::Vcpu(0)));
    assert_eq!(st.xcr0, Some(Xfeatures(0xe7)), "from xcrs");
    assert_eq!(st.image.as_ref().unwrap().len(), 4096);
    let d = regs_of(st, &l);
    check_known_avx512(&d);
}

fn changed_bytes(a: &[u8], b: &[u8]) -> Vec<usize> {
    a.iter().zip(b).enumerate().filter(|(_, (x, y))| x != y).map(|(i, _)| i).collect()
}

#[test]
fn cloud_hypervisor_patch_round_trips_edits_and_keeps_fpu_in_step() {
    let any = fixtures::layout(AMD_ZEN4);
    let Some((bytes, c)) = ch(&Options::default(), &any) else { return };
    let l = c.layout.clone().unwrap();
    let same = record::patch(Format::CloudHypervisor, &bytes, &c, &l, &l, &Options::default()).unwrap();
    assert!(same == bytes, "an unchanged state must give the file back byte for byte");
    // Edit xmm3's low lane (legacy: also in fpu) and zmm17's lane 5 (Hi16_ZMM).
    let mut c2 = c.clone();
    let hi16 = l.standard_range(xstate::Component::HI16_ZMM).unwrap().start;
    let img = c2.states[0].image.as_mut().unwrap();
    img[160 + 48..160 + 56].copy_from_slice(&0x0102_0304_0506_0708u64.to_le_bytes());
    img[hi16 + 64 + 40..hi16 + 64 + 48].copy_from_slice(&0xfeed_face_cafe_beefu64.to_le_bytes());
    let out = record::patch(Format::CloudHypervisor, &bytes, &c2, &l, &l, &Options::default()).unwrap();
    let back = record::read(Format::CloudHypervisor, &out, &any, &Options::default()).unwrap();
    let st = &back.states[0];
    let d = regs_of(st, &l);
    assert_eq!(&d.get("xmm3").unwrap().bytes[..8], &0x0102_0304_0506_0708u64.to_le_bytes());
    assert_eq!(&d.get("zmm17").unwrap().bytes[40..48], &0xfeed_face_cafe_beefu64.to_le_bytes());
    check_x87(&d);
    // Everything else stays: the JSON outside the changed numbers is the file's.
    let text = String::from_utf8(out.clone()).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let inner: serde_json::Value = serde_json::from_str(
        v["snapshots"]["cpu-manager"]["snapshots"]["0"]["snapshot_data"]["state"].as_str().unwrap(),
    )
    .unwrap();
    // fpu.xmm[3] carries the edit too (Cloud Hypervisor sets fpu after the xsave region).
    let x3: Vec<u64> = inner["Kvm"]["fpu"]["xmm"][3].as_array().unwrap().iter().map(|b| b.as_u64().unwrap()).collect();
    assert_eq!(&x3[..8], &[8, 7, 6, 5, 4, 3, 2, 1]);
    let diff = changed_bytes(&bytes, &out);
    assert!(out.len() != bytes.len() || !diff.is_empty());
    let orig: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(orig["snapshots"]["device-manager"], v["snapshots"]["device-manager"], "other devices untouched");
    assert_eq!(orig["snapshot_data"], v["snapshot_data"]);
}

#[test]
fn cloud_hypervisor_retarget_relayouts_or_refuses() {
    let any = fixtures::layout(AMD_ZEN4);
    let Some((bytes, c)) = ch(&Options::default(), &any) else { return };
    let a = c.layout.clone().unwrap();
    // For an Intel AVX-512 host: AVX-512 moves 256 bytes up; every register survives.
    let b = fixtures::layout(INTEL_SKYLAKE_SP);
    let out = record::patch(Format::CloudHypervisor, &bytes, &c, &a, &b, &Options::default()).unwrap();
    // Read as the file now is: its region in B's layout (the guest's CPUID is kept).
    let mut given = Options::default();
    given.layout_given = true;
    let back = record::read(Format::CloudHypervisor, &out, &b, &given).unwrap();
    assert_eq!(back.layout, None, "the images are in the given layout");
    let st = &back.states[0];
    let d = decode(&st.image.as_ref().unwrap().image(), &b, st.rfbm.unwrap());
    check_known_avx512(&d);
    // The guest's CPUID in the snapshot still says A, so the region is marked: read by the
    // CPUID (or another CPU) it is refused, never misread.
    let e = record::read(Format::CloudHypervisor, &out, &b, &Options::default()).unwrap_err();
    assert_eq!(e.rule, Rule::Ambiguous, "{e}");
    let e = record::read(Format::CloudHypervisor, &out, &fixtures::layout(INTEL_SAPPHIRE_RAPIDS), &given).unwrap_err();
    assert_eq!(e.rule, Rule::Ambiguous, "{e}");
    // Retargeted back to A: the mark goes and the file is the original again.
    let again = record::patch(Format::CloudHypervisor, &out, &back, &b, &a, &given).unwrap();
    assert!(again == bytes, "A -> B -> A gives the snapshot back");
    // A host without AVX-512 cannot take state that uses it.
    let avx = fixtures::layout(fixtures::AVX_ONLY);
    let e = record::patch(Format::CloudHypervisor, &bytes, &c, &a, &avx, &Options::default()).unwrap_err();
    assert_eq!(e.rule, Rule::Conversion, "{e}");
}

fn fc(opts: &Options, layout: &Layout) -> Option<(Vec<u8>, record::Contents)> {
    let bytes = fixture_or_skip("firecracker/vmstate", "the Firecracker vmstate is not read")?;
    let c = record::read(Format::Firecracker, &bytes, layout, opts).unwrap_or_else(|e| panic!("vmstate: {e}"));
    Some((bytes, c))
}

#[test]
fn firecracker_vmstate_located_by_content_register_by_register() {
    let unrelated = fixtures::layout(fixtures::AVX_ONLY);
    let Some((bytes, c)) = fc(&Options::default(), &unrelated) else { return };
    // The CRC-64 Firecracker wrote is the crc64 crate's over everything before it; over the
    // whole file (CRC included) it is 0, the property Firecracker's loader checks.
    let body = bytes.len() - 8;
    assert_eq!(record::firecracker::crc64(&bytes[..body]), u64::from_le_bytes(bytes[body..].try_into().unwrap()));
    assert_eq!(record::firecracker::crc64(&bytes), 0);
    let vm = record::firecracker::Vmstate::parse(&bytes).unwrap();
    assert_eq!(vm.version.as_deref(), Some("10.0.0"));
    assert_eq!(vm.vcpus.len(), 1);
    assert_eq!((vm.vcpus[0].xsave, vm.vcpus[0].xcrs), (10325, 9920));
    assert!(c.notes[0].contains("located by content"), "{:?}", c.notes);
    let l = c.layout.clone().unwrap();
    assert_eq!(l.standard_size(Xfeatures(0xe7)), Some(2432));
    let st = &c.states[0];
    assert_eq!(st.xcr0, Some(Xfeatures(0xe7)));
    let d = regs_of(st, &l);
    check_known_avx512(&d);
}

#[test]
fn firecracker_patch_recomputes_the_crc_and_round_trips() {
    let any = fixtures::layout(AMD_ZEN4);
    let Some((bytes, c)) = fc(&Options::default(), &any) else { return };
    let l = c.layout.clone().unwrap();
    let same = record::patch(Format::Firecracker, &bytes, &c, &l, &l, &Options::default()).unwrap();
    assert!(same == bytes, "an unchanged state must give the file back byte for byte");
    let mut c2 = c.clone();
    let avx = l.standard_range(xstate::Component::AVX).unwrap().start;
    let k = l.standard_range(xstate::Component::OPMASK).unwrap().start;
    let img = c2.states[0].image.as_mut().unwrap();
    img[avx + 5 * 16..avx + 5 * 16 + 8].copy_from_slice(&0xabcd_ef01_2345_6789u64.to_le_bytes());
    img[k + 16..k + 24].copy_from_slice(&0x7777u64.to_le_bytes());
    let out = record::patch(Format::Firecracker, &bytes, &c2, &l, &l, &Options::default()).unwrap();
    assert_eq!(record::firecracker::crc64(&out), 0, "the CRC is recomputed");
    let diff = changed_bytes(&bytes, &out);
    assert!(diff.iter().all(|&i| (10325..10325 + 4096).contains(&i) || i >= bytes.len() - 8), "{diff:?}");
    let back = record::read(Format::Firecracker, &out, &any, &Options::default()).unwrap();
    let st = &back.states[0];
    let d = regs_of(st, &l);
    assert_eq!(&d.get("ymm5").unwrap().bytes[16..24], &0xabcd_ef01_2345_6789u64.to_le_bytes());
    assert_eq!(d.get("k2").unwrap().as_u64(), Some(0x7777));
    assert_eq!(d.get("k1").unwrap().as_u64(), Some(0xc022));
    // A flipped bit anywhere is refused by the CRC, as Firecracker refuses it.
    let mut bad = out.clone();
    bad[5000] ^= 1;
    assert_eq!(record::read(Format::Firecracker, &bad, &any, &Options::default()).unwrap_err().rule, Rule::Checksum);
}

#[test]
fn firecracker_refuses_ambiguous_evidence() {
    let any = fixtures::layout(AMD_ZEN4);
    let Some((bytes, _)) = fc(&Options::default(), &any) else { return };
    let vm = record::firecracker::Vmstate::parse(&bytes).unwrap();
    let (x, c) = (vm.vcpus[0].xsave, vm.vcpus[0].xcrs);
    // A second kvm_xcrs (copied into the zero tail of the xsave region): two candidates for one
    // vCPU's XCR0, so the evidence is refused rather than one picked.
    let mut two = bytes.clone();
    two.copy_within(c..c + 392, x + 3000);
    let e = record::read(Format::Firecracker, &reseal(two), &any, &Options::default()).unwrap_err();
    assert_eq!(e.rule, Rule::Ambiguous, "{e}");
    // XSTATE_BV outside the recorded XCR0: the pair does not confirm each other.
    let mut bv = bytes.clone();
    bv[c + 16] = 0x07;
    let e = record::read(Format::Firecracker, &reseal(bv), &any, &Options::default()).unwrap_err();
    assert_eq!(e.rule, Rule::Ambiguous, "{e}");
    // No kvm_xsave at all.
    let mut none = bytes.clone();
    none[x + 28..x + 32].fill(0);
    let e = record::read(Format::Firecracker, &reseal(none), &any, &Options::default()).unwrap_err();
    assert_eq!(e.rule, Rule::Ambiguous, "{e}");
}

#[test]
fn firecracker_retarget_marks_the_region() {
    let any = fixtures::layout(AMD_ZEN4);
    let Some((bytes, c)) = fc(&Options::default(), &any) else { return };
    let a = c.layout.clone().unwrap();
    let b = fixtures::layout(INTEL_SAPPHIRE_RAPIDS);
    let out = record::patch(Format::Firecracker, &bytes, &c, &a, &b, &Options::default()).unwrap();
    let mut given = Options::default();
    given.layout_given = true;
    let back = record::read(Format::Firecracker, &out, &b, &given).unwrap();
    let st = &back.states[0];
    check_known_avx512(&decode(&st.image.as_ref().unwrap().image(), &b, st.rfbm.unwrap()));
    assert_eq!(record::read(Format::Firecracker, &out, &b, &Options::default()).unwrap_err().rule, Rule::Ambiguous);
    let again = record::patch(Format::Firecracker, &out, &back, &b, &a, &given).unwrap();
    assert!(again == bytes, "A -> B -> A gives the vmstate back");
}

/// The bincode-era vmstate of Firecracker v1.14.4 (`tests/fixtures/firecracker-v1.14`, in the
/// repository, so never skipped).
fn fc_bincode() -> Vec<u8> {
    std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/firecracker-v1.14/vmstate")).unwrap()
}

/// Where the fixture's README (and an independent walk of its bincode) puts vCPU 0: the
/// `kvm_xsave` behind `Xsave`'s u64 4104 and FAM length 0; `kvm_xcrs` right before the `Xsave`;
/// the first of 76 `kvm_cpuid_entry2` behind `CpuId`'s header and its own u64 40.
const FC14_XSAVE: usize = 12805;
/// `b` with its trailing CRC-64 recomputed, as Firecracker seals a vmstate.
fn reseal(mut b: Vec<u8>) -> Vec<u8> {
    let body = b.len() - 8;
    let crc = record::firecracker::crc64(&b[..body]);
    b[body..].copy_from_slice(&crc.to_le_bytes());
    b
}

const FC14_XCRS: usize = 12397;
const FC14_CPUID: usize = 2433;

#[test]
fn firecracker_bincode_vmstate_register_by_register() {
    let bytes = fc_bincode();
    let body = bytes.len() - 8;
    assert_eq!(record::firecracker::crc64(&bytes[..body]), u64::from_le_bytes(bytes[body..].try_into().unwrap()));
    assert_eq!(record::firecracker::crc64(&bytes), 0);
    assert_eq!(record::detect(&bytes, &fixtures::layout(AMD_ZEN4)), Some(Format::Firecracker));
    let vm = record::firecracker::Vmstate::parse(&bytes).unwrap_or_else(|e| panic!("v1.14 vmstate: {e}"));
    assert_eq!(vm.era, record::firecracker::Era::Bincode);
    assert_eq!(vm.version.as_deref(), Some("8.0.0"));
    assert_eq!(vm.vcpus.len(), 1);
    let v = &vm.vcpus[0];
    assert_eq!(v.found, record::firecracker::Found::Structure);
    assert_eq!((v.xsave, v.xcrs, v.cpuid.start, v.cpuid_step), (FC14_XSAVE, FC14_XCRS, FC14_CPUID, 48));
    assert_eq!(v.cpuid.len(), 76 * 48);
    assert_eq!(v.xcr0, Xfeatures(0xe7));
    // The vmstate's own CPUID is the layout; the one given is not used.
    let unrelated = fixtures::layout(fixtures::AVX_ONLY);
    let c = record::read(Format::Firecracker, &bytes, &unrelated, &Options::default()).unwrap();
    assert!(c.notes[0].contains("by structure"), "{:?}", c.notes);
    let l = c.layout.clone().unwrap();
    assert_eq!(l.standard_size(Xfeatures(0xe7)), Some(2432));
    assert_eq!(c.states.len(), 1);
    let st = &c.states[0];
    assert_eq!(st.id, Some(StateId::Vcpu(0)));
    assert_eq!(st.xcr0, Some(Xfeatures(0xe7)));
    let d = regs_of(st, &l);
    check_known_avx512(&d);
    check_vectors(&d, "xmm", 16, 2);
    check_vectors(&d, "ymm", 16, 4);
    // The CPUID it carries, entry by entry 48 bytes apart.
    let cpuid = record::firecracker::cpuid(&bytes).unwrap();
    assert!(cpuid.get(0xd, 0).is_some(), "leaf 0xD read from the vmstate");
}

#[test]
fn firecracker_bincode_patch_recomputes_the_crc_and_round_trips() {
    let bytes = fc_bincode();
    let any = fixtures::layout(AMD_ZEN4);
    let c = record::read(Format::Firecracker, &bytes, &any, &Options::default()).unwrap();
    let l = c.layout.clone().unwrap();
    let same = record::patch(Format::Firecracker, &bytes, &c, &l, &l, &Options::default()).unwrap();
    assert!(same == bytes, "an unchanged state must give the file back byte for byte");
    let mut c2 = c.clone();
    let avx = l.standard_range(xstate::Component::AVX).unwrap().start;
    let img = c2.states[0].image.as_mut().unwrap();
    img[avx + 5 * 16..avx + 5 * 16 + 8].copy_from_slice(&0xabcd_ef01_2345_6789u64.to_le_bytes());
    let out = record::patch(Format::Firecracker, &bytes, &c2, &l, &l, &Options::default()).unwrap();
    assert_eq!(out.len(), bytes.len());
    assert_eq!(record::firecracker::crc64(&out), 0, "the CRC is recomputed");
    let diff = changed_bytes(&bytes, &out);
    assert!(!diff.is_empty());
    assert!(diff.iter().all(|&i| (FC14_XSAVE..FC14_XSAVE + 4096).contains(&i) || i >= bytes.len() - 8), "{diff:?}");
    let back = record::read(Format::Firecracker, &out, &any, &Options::default()).unwrap();
    let st = &back.states[0];
    let d = regs_of(st, &l);
    assert_eq!(&d.get("ymm5").unwrap().bytes[16..24], &0xabcd_ef01_2345_6789u64.to_le_bytes());
    assert_eq!(&d.get("ymm5").unwrap().bytes[..8], &lane(5, 0).to_le_bytes(), "the rest of ymm5 kept");
    assert_eq!(d.get("k1").unwrap().as_u64(), Some(0xc022));
    let mut bad = out.clone();
    bad[5000] ^= 1;
    assert_eq!(record::read(Format::Firecracker, &bad, &any, &Options::default()).unwrap_err().rule, Rule::Checksum);
}

#[test]
fn firecracker_bincode_refuses_what_the_structure_contradicts() {
    let bytes = fc_bincode();
    let any = fixtures::layout(AMD_ZEN4);
    let refused = |b: Vec<u8>| record::read(Format::Firecracker, &reseal(b), &any, &Options::default()).unwrap_err();
    // A kvm_xcrs whose serialized length is not 392: the walk fails, nothing is guessed.
    let mut len = bytes.clone();
    len[FC14_XCRS - 8] = 0x89;
    assert_eq!(refused(len).rule, Rule::Ambiguous);
    // A non-zero FAM length in kvm_xsave2 (state beyond 4096 bytes) is refused.
    let mut fam = bytes.clone();
    fam[FC14_XSAVE - 8] = 1;
    assert_eq!(refused(fam).rule, Rule::Ambiguous);
    // XSTATE_BV outside the recorded XCR0: the pair does not confirm each other.
    let mut bv = bytes.clone();
    bv[FC14_XCRS + 16] = 0x07;
    assert_eq!(refused(bv).rule, Rule::Ambiguous);
    // The kvm_xsave without KVM's MXCSR_MASK.
    let mut mask = bytes.clone();
    mask[FC14_XSAVE + 28..FC14_XSAVE + 32].fill(0);
    assert_eq!(refused(mask).rule, Rule::Ambiguous);
    // Cut anywhere: refused, never a panic.
    for n in [17, 100, FC14_CPUID, FC14_XCRS, FC14_XSAVE + 100, bytes.len() - 9] {
        let _ = record::read(Format::Firecracker, &reseal(bytes[..n].to_vec()), &any, &Options::default());
    }
}

#[test]
fn qemu_kvm_stream_with_live_legacy_registers_and_xstate_bv_clear_is_not_kvm() {
    // Fuzz target qemu (crash-8ed47af0): a stream whose xcr0 and xstate_bv are 0 while x87/SSE
    // registers are live read as KVM with every component init, and patching it with its own
    // contents rewrote those registers to init. KVM writes init values for every clear bit,
    // x87 and SSE included, so such a stream is not KVM's: with a kvmclock section it is
    // refused as contradicting itself.
    let l = fixtures::layout(INTEL_SAPPHIRE_RAPIDS);
    let Some(mut bytes) = fixture_or_skip("qemu/kvm64u.mig", "legacy evidence") else { return };
    let s = record::qemu::Stream::parse(&bytes).unwrap();
    let f = s.cpus[0].fields;
    bytes[f.xcr0.off..f.xcr0.off + 8].fill(0);
    bytes[f.xstate_bv.off..f.xstate_bv.off + 8].fill(0);
    let e = record::read(Format::Qemu, &bytes, &l, &Options::default()).unwrap_err();
    assert_eq!(e.rule, Rule::Ambiguous, "{e}");
}

#[test]
fn qemu_patch_keeps_registers_outside_xcr0() {
    // The image holds XCR0's components only; registers QEMU migrates outside it (AVX-512 of a
    // guest whose XCR0 no longer has it) were overwritten with zeros by a patch. They stay.
    let l = fixtures::layout(INTEL_SAPPHIRE_RAPIDS);
    let Some(mut bytes) = fixture_or_skip("qemu/kvm64u.mig", "registers outside XCR0") else { return };
    let s = record::qemu::Stream::parse(&bytes).unwrap();
    let f = s.cpus[0].fields;
    bytes[f.xcr0.off..f.xcr0.off + 8].copy_from_slice(&7u64.to_be_bytes());
    bytes[f.xstate_bv.off..f.xstate_bv.off + 8].copy_from_slice(&7u64.to_be_bytes());
    let c = record::read(Format::Qemu, &bytes, &l, &Options::default()).unwrap();
    assert_eq!(c.states[0].rfbm, Some(Xfeatures(0x7)));
    let same = record::patch(Format::Qemu, &bytes, &c, &l, &l, &Options::default()).unwrap();
    assert!(same == bytes, "{:?}", changed_bytes(&bytes, &same).first());
}

#[test]
fn snapshot_patch_keeps_bytes_no_component_covers() {
    // Fuzz target firecracker (crash-f3db6c33): a non-zero byte past the components in the
    // 4096-byte region read fine and was zeroed by a patch with the file's own contents, since
    // every image went through a conversion that writes only components. On the same layout
    // the image is written as it is.
    let any = fixtures::layout(AMD_ZEN4);
    let Some(mut bytes) = fixture_or_skip("firecracker/vmstate", "bytes beyond the components") else { return };
    let x = record::firecracker::Vmstate::parse(&bytes).unwrap().vcpus[0].xsave;
    bytes[x + 3231] = 6;
    bytes[x + 420] = 0x11; // the legacy region's reserved bytes 416..463
    let body = bytes.len() - 8;
    let crc = record::firecracker::crc64(&bytes[..body]);
    bytes[body..].copy_from_slice(&crc.to_le_bytes());
    let c = record::read(Format::Firecracker, &bytes, &any, &Options::default()).unwrap();
    let l = c.layout.clone().unwrap();
    let same = record::patch(Format::Firecracker, &bytes, &c, &l, &l, &Options::default()).unwrap();
    assert!(same == bytes, "{:?}", changed_bytes(&bytes, &same));
}

#[test]
fn a_snapshot_region_is_never_read_in_a_layout_the_file_does_not_name() {
    // An unmarked region is in the layout of the snapshot's CPUID: a caller's layout that
    // differs (a user's --cpuid host on another machine) would misread it, AVX-512 256 bytes
    // off. Refused, never read; the same layout given is fine.
    let skx = fixtures::layout(INTEL_SKYLAKE_SP);
    let mut given = Options::default();
    given.layout_given = true;
    for (rel, f) in
        [("cloud-hypervisor/state.json", Format::CloudHypervisor), ("firecracker/vmstate", Format::Firecracker)]
    {
        let Some(bytes) = fixture_or_skip(rel, "region layouts") else { return };
        let e = record::read(f, &bytes, &skx, &given).unwrap_err();
        assert_eq!(e.rule, Rule::Ambiguous, "{rel}: {e}");
        let own = record::read(f, &bytes, &skx, &Options::default()).unwrap().layout.unwrap();
        assert!(record::read(f, &bytes, &own, &given).is_ok(), "{rel}");
    }
}

#[test]
fn a_snapshot_whose_cpuid_puts_state_in_use_past_its_buffer_is_refused() {
    // Fuzz target firecracker (crash-afa560af): a CPUID placing ZMM_Hi256 at 0x3000080 read as a
    // state with no RFBM (its components in use do not fit the 4096-byte buffer), which could
    // then not be written back. The region and the CPUID contradict each other: refused.
    let any = fixtures::layout(AMD_ZEN4);
    let Some(mut bytes) = fixture_or_skip("firecracker/vmstate", "buffer extent") else { return };
    let vm = record::firecracker::Vmstate::parse(&bytes).unwrap();
    let run = vm.vcpus[0].cpuid.clone();
    let e6 = (run.start..run.end).step_by(40).find(|&p| bytes[p..p + 8] == [13, 0, 0, 0, 6, 0, 0, 0]).unwrap();
    bytes[e6 + 16..e6 + 20].copy_from_slice(&0x0300_0080u32.to_le_bytes());
    let body = bytes.len() - 8;
    let crc = record::firecracker::crc64(&bytes[..body]);
    bytes[body..].copy_from_slice(&crc.to_le_bytes());
    let e = record::read(Format::Firecracker, &bytes, &any, &Options::default()).unwrap_err();
    assert!(matches!(e.rule, Rule::Ambiguous | Rule::Truncated | Rule::Image | Rule::LayoutDescriptor), "{e}");
}

/// The registers of a state read from a record, decoded in `l`.
fn regs_of(st: &record::State, l: &Layout) -> Decoded {
    decode(&st.image.as_ref().unwrap().image(), l, st.rfbm.unwrap())
}

/// A two-vCPU vmstate of the known-state guest (vCPU 0 runs it, vCPU 1 waits in its reset
/// state, XCR0 0x1, its `kvm_xsave` at `vcpu1_xsave`): both read, each with its own XCR0; an
/// unchanged patch gives the bytes back (no re-layout mark on vCPU 1 for its own layout);
/// vCPU 1's FCW edited changes only its region and the CRC, and vCPU 0 reads as before.
/// Returns the contents read, for the caller's own checks.
fn two_vcpus_read_and_patched(bytes: &[u8], vcpu1_xsave: usize) -> record::Contents {
    let unrelated = fixtures::layout(fixtures::AVX_ONLY);
    let c = record::read(Format::Firecracker, bytes, &unrelated, &Options::default())
        .unwrap_or_else(|e| panic!("2-vCPU vmstate: {e}"));
    assert_eq!(c.states.len(), 2);
    let l = c.layout.clone().unwrap();
    let st = &c.states[0];
    assert_eq!((st.id, st.xcr0), (Some(StateId::Vcpu(0)), Some(Xfeatures(0xe7))));
    check_known_avx512(&regs_of(st, &l));
    let st = &c.states[1];
    assert_eq!((st.id, st.xcr0), (Some(StateId::Vcpu(1)), Some(Xfeatures(0x1))));
    let d = regs_of(st, &l);
    let int = |name: &str| d.get(name).and_then(|r| r.as_u64());
    assert_eq!((int("fctrl"), int("mxcsr")), (Some(0x037f), Some(0x1f80)), "vCPU 1 in its reset state");
    let same = record::patch(Format::Firecracker, bytes, &c, &l, &l, &Options::default()).unwrap();
    assert!(same == bytes, "an unchanged patch gives the vmstate back");
    let mut c2 = c.clone();
    let img = c2.states[1].image.as_mut().unwrap();
    img[..2].copy_from_slice(&0x027fu16.to_le_bytes());
    img[512] |= 1; // XSTATE_BV: x87 in use (the reset state has it init)
    let out = record::patch(Format::Firecracker, bytes, &c2, &l, &l, &Options::default()).unwrap();
    assert_eq!(record::firecracker::crc64(&out), 0, "the CRC is recomputed");
    let diff = changed_bytes(bytes, &out);
    let in_vcpu1 = |i: usize| (vcpu1_xsave..vcpu1_xsave + 4096).contains(&i) || i >= bytes.len() - 8;
    assert!(!diff.is_empty() && diff.iter().all(|&i| in_vcpu1(i)), "{diff:?}");
    let back = record::read(Format::Firecracker, &out, &unrelated, &Options::default()).unwrap();
    assert_eq!(regs_of(&back.states[1], &l).get("fctrl").and_then(|r| r.as_u64()), Some(0x027f));
    check_known_avx512(&regs_of(&back.states[0], &l));
    c
}

/// A two-vCPU vmstate of the same guest (Firecracker v1.14.4, `vcpu_count` 2): vCPU 0 runs the
/// guest, vCPU 1 waits for INIT-SIPI in its reset state (XCR0 0x1), so the dynamic leaf 0xD
/// sizes KVM reports per vCPU differ (0xD.0 EBX: the standard size for that vCPU's XCR0) while
/// the layout is the same.
#[test]
fn firecracker_bincode_two_vcpus_each_with_its_own_xcr0() {
    let bytes =
        std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/firecracker-v1.14/vmstate-2vcpu")).unwrap();
    let vm = record::firecracker::Vmstate::parse(&bytes).unwrap_or_else(|e| panic!("2-vCPU vmstate: {e}"));
    assert_eq!(vm.vcpus.len(), 2);
    assert!(vm.vcpus.iter().all(|v| v.found == record::firecracker::Found::Structure));
    let (a, b) = (vm.vcpus[0].leaf0d.get(0), vm.vcpus[1].leaf0d.get(0));
    assert_eq!((a.eax, a.ecx), (b.eax, b.ecx), "the same supported mask and maximum size");
    assert_ne!(a.ebx, b.ebx, "0xD.0 EBX follows each vCPU's XCR0");
    two_vcpus_read_and_patched(&bytes, vm.vcpus[1].xsave);
}

/// The Cloud Hypervisor fixture with a second vCPU beside the first, as a 2-vCPU guest whose
/// vCPU 1 is still in its reset state writes it: XCR0 0x1 in `xcrs`, init state (XSTATE_BV 0)
/// in its xsave region, and the CPUID KVM reports for that XCR0 (0xD.0 and 0xD.1 EBX 576).
#[test]
fn cloud_hypervisor_two_vcpus_each_with_its_own_xcr0() {
    use serde_json::Value;
    let Some(bytes) = fixture_or_skip("cloud-hypervisor/state.json", "the 2-vCPU Cloud Hypervisor case is not read")
    else {
        return;
    };
    let mut doc: Value = serde_json::from_slice(&bytes).unwrap();
    let vcpus = &mut doc["snapshots"]["cpu-manager"]["snapshots"];
    let mut v1 = vcpus["0"].clone();
    let mut state: Value = serde_json::from_str(v1["snapshot_data"]["state"].as_str().unwrap()).unwrap();
    let kvm = &mut state["Kvm"];
    for e in kvm["cpuid"].as_array_mut().unwrap() {
        if e["function"] == 13 && (e["index"] == 0 || e["index"] == 1) {
            e["ebx"] = 576.into();
        }
    }
    kvm["xcrs"][16] = 1.into(); // kvm_xcrs: xcrs[0].value, low byte
    kvm["xsave"]["region"][128] = 0.into(); // XSTATE_BV, low word: everything init
    v1["snapshot_data"]["state"] = Value::String(state.to_string());
    vcpus["1"] = v1;
    let two = serde_json::to_vec(&doc).unwrap();
    let unrelated = fixtures::layout(fixtures::AVX_ONLY);
    let c = record::read(Format::CloudHypervisor, &two, &unrelated, &Options::default())
        .unwrap_or_else(|e| panic!("2-vCPU state.json: {e}"));
    assert_eq!(c.states.len(), 2);
    assert_eq!(c.states[0].xcr0, Some(Xfeatures(0xe7)));
    assert_eq!(c.states[1].xcr0, Some(Xfeatures(0x1)));
    let l = c.layout.clone().unwrap();
    check_known_avx512(&regs_of(&c.states[0], &l));
    // Patched unchanged: the same bytes (no re-layout mark on vCPU 1 for its own layout).
    let same = record::patch(Format::CloudHypervisor, &two, &c, &l, &l, &Options::default()).unwrap();
    assert!(same == two, "an unchanged patch gives the snapshot back");
}

/// A two-vCPU bitcode vmstate (Firecracker v1.16.1, `vcpu_count` 2), the same guest: vCPU 0 runs
/// it, vCPU 1 waits in its reset state (XCR0 0x1). bitcode cannot be parsed without
/// Firecracker's types, so both vCPUs' `kvm_xsave`, `kvm_xcrs` and CPUID are located by content
/// and paired in file order.
#[test]
fn firecracker_bitcode_two_vcpus_located_by_content() {
    let bytes =
        std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/firecracker-v1.16/vmstate-2vcpu")).unwrap();
    assert_eq!(record::firecracker::crc64(&bytes), 0, "Firecracker's CRC");
    let vm = record::firecracker::Vmstate::parse(&bytes).unwrap_or_else(|e| panic!("2-vCPU bitcode vmstate: {e}"));
    assert_eq!(vm.era, record::firecracker::Era::Bitcode);
    assert_eq!(vm.version.as_deref(), Some("10.0.0"));
    assert_eq!(vm.vcpus.len(), 2);
    assert!(vm.vcpus.iter().all(|v| v.found == record::firecracker::Found::Content));
    assert_eq!((vm.vcpus[0].xcr0, vm.vcpus[1].xcr0), (Xfeatures(0xe7), Xfeatures(0x1)), "paired with its kvm_xcrs");
    // Found by hand: bitcode keeps each field's bytes for all vCPUs in one column, so the two
    // kvm_xcrs are adjacent, as are the two kvm_xsave2 (4104 bytes: FAM length 0, kvm_xsave)
    // and the two CPUID runs (76 entries of 40 bytes).
    let at: Vec<_> = vm.vcpus.iter().map(|v| (v.xsave, v.xcrs, v.cpuid.clone())).collect();
    assert_eq!(at, [(18511, 17711, 2140..5180), (22615, 18103, 5180..8220)]);
    let (a, b) = (vm.vcpus[0].leaf0d.get(0), vm.vcpus[1].leaf0d.get(0));
    assert_eq!((a.eax, a.ebx, a.ecx), (0xe7, 0x980, 0x980));
    assert_eq!((b.eax, b.ebx, b.ecx), (0xe7, 0x240, 0x980), "0xD.0 EBX for vCPU 1's XCR0 0x1");
    let c = two_vcpus_read_and_patched(&bytes, vm.vcpus[1].xsave);
    assert!(c.notes[0].contains("located by content"), "{:?}", c.notes);
    assert_eq!(c.layout.as_ref().unwrap().standard_size(Xfeatures(0xe7)), Some(2432));
    let unrelated = fixtures::layout(fixtures::AVX_ONLY);
    let refused = |b: Vec<u8>| {
        let e = record::read(Format::Firecracker, &reseal(b), &unrelated, &Options::default()).unwrap_err();
        assert_eq!(e.rule, Rule::Ambiguous, "{e}");
    };
    // vCPU 1's kvm_xcrs unrecognisable: 2 kvm_xsave, 1 kvm_xcrs do not pair up.
    let mut one = bytes.clone();
    one[vm.vcpus[1].xcrs] = 0;
    refused(one);
    // The XCR0s swapped between the kvm_xcrs: vCPU 0's XSTATE_BV 0xe7 is then outside XCR0 0x1,
    // so a wrong pairing is refused, not read.
    let mut swapped = bytes.clone();
    let (c0, c1) = (vm.vcpus[0].xcrs + 16, vm.vcpus[1].xcrs + 16);
    swapped[c0] = 0x1;
    swapped[c1] = 0xe7;
    refused(swapped);
    // vCPU 1's CPUID run cut (its leaf 0 made implausible): one run for two vCPUs.
    let mut cut = bytes.clone();
    cut[vm.vcpus[1].cpuid.start + 28] = 1;
    refused(cut);
}

/// A state written into a bitcode vmstate whose image has no MXCSR_MASK (an image another tool
/// made, or a conversion that had no mask to keep): KVM_SET_XSAVE ignores the field, and the
/// content location needs KVM's own value there, so the patch keeps the one found, as it keeps
/// bytes 464..511. Before, the patched file no longer read ("do not pair up").
#[test]
fn firecracker_patch_keeps_kvms_mxcsr_mask() {
    let bytes =
        std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/firecracker-v1.16/vmstate-2vcpu")).unwrap();
    let unrelated = fixtures::layout(fixtures::AVX_ONLY);
    let c = record::read(Format::Firecracker, &bytes, &unrelated, &Options::default()).unwrap();
    let l = c.layout.clone().unwrap();
    let vm = record::firecracker::Vmstate::parse(&bytes).unwrap();
    let mut c2 = c.clone();
    let img = c2.states[1].image.as_mut().unwrap();
    img[28..32].fill(0);
    img[..2].copy_from_slice(&0x027fu16.to_le_bytes()); // FCW edited
    img[512] |= 1; // x87 in use (vCPU 1's XCR0 is 0x1)
    let out = record::patch(Format::Firecracker, &bytes, &c2, &l, &l, &Options::default()).unwrap();
    let x1 = vm.vcpus[1].xsave;
    assert_eq!(&out[x1 + 28..x1 + 32], &bytes[x1 + 28..x1 + 32], "KVM's MXCSR_MASK kept");
    let back = record::read(Format::Firecracker, &out, &unrelated, &Options::default())
        .unwrap_or_else(|e| panic!("the patched vmstate reads: {e}"));
    let st = &back.states[1];
    let d = regs_of(st, &l);
    assert_eq!(d.get("fctrl").and_then(|r| r.as_u64()), Some(0x027f));
    let st = &back.states[0];
    check_known_avx512(&regs_of(st, &l));
}

/// The header's version string must read as Firecracker writes it (a length, then digits and
/// dots), in both eras: a bincode file whose length field says 2^64-1 was read and patched as
/// if whole, its header unmentioned.
#[test]
fn firecracker_header_version_must_read() {
    let any = fixtures::layout(AMD_ZEN4);
    let mut bincode = fc_bincode();
    bincode[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
    let e = record::read(Format::Firecracker, &reseal(bincode), &any, &Options::default()).unwrap_err();
    assert_eq!((e.rule, e.offset), (Rule::Framing, Some(8)), "{e}");
    let Some((bitcode, _)) = fc(&Options::default(), &any) else { return };
    let mut b = bitcode.clone();
    b[10] = b'x'; // inside "10.0.0"
    let e = record::read(Format::Firecracker, &reseal(b), &any, &Options::default()).unwrap_err();
    assert_eq!((e.rule, e.offset), (Rule::Framing, Some(9)), "{e}");
}
