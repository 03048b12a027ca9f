//! CRIU's images from the real tool (../shared/fixtures/criu, CRIU 4.1.1 on AMD Zen 4, XCR0
//! 0xe7): every register of the known state read back on the dumping CPU's layout and on
//! another CPU's, the patch round trip byte for byte, an edit patched and read back, the
//! cpuinfo image and CRIU's `--cpu-cap=fpu` verdict, and hostile bytes.

#[macro_use]
mod common;

use std::path::PathBuf;

use xstate::fixtures::{AMD_ZEN4, INTEL_SAPPHIRE_RAPIDS, INTEL_SKYLAKE_SP, layout};
use xstate::image::regs::decode;
use xstate::record::criu::core::CoreFpu;
use xstate::record::criu::cpuinfo::{CpuInfo, Refusal, X86Entry};
use xstate::record::{self, Format, Options, Rule};
use xstate::{Component, Layout, Xfeatures};

fn fixture(name: &str) -> Option<Vec<u8>> {
    let Some(shared) = common::shared().or_else(|| {
        let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared");
        p.join("fixtures").is_dir().then_some(p)
    }) else {
        skip!("../shared/fixtures not found (set XSTATE_SHARED): CRIU fixture {name} not checked");
        return None;
    };
    Some(std::fs::read(shared.join("fixtures/criu").join(name)).unwrap())
}

/// The known state of regs.c (fixtures README): zmm i lane j, k i, MXCSR, x87.
fn check_known_state(layout: &Layout, img: &xstate::image::ImageBuf, rfbm: Xfeatures) {
    let d = decode(&img.image(), layout, rfbm);
    let reg = |n: &str| d.registers.iter().find(|r| r.name == n).unwrap_or_else(|| panic!("no {n}"));
    for i in 0..32u64 {
        let z = reg(&format!("zmm{i}"));
        for j in 0..8u64 {
            let lane = u64::from_le_bytes(z.bytes[8 * j as usize..8 * j as usize + 8].try_into().unwrap());
            assert_eq!(lane, 0x5a00_0000_0000_0000 | i << 8 | j, "zmm{i} lane {j}");
        }
    }
    for i in 0..8u64 {
        assert_eq!(reg(&format!("k{i}")).as_u64(), Some(0xc0de_0000_0000_0000 | (0x11 * (i + 1))), "k{i}");
    }
    assert_eq!(reg("mxcsr").as_u64(), Some(0x9fc0));
    assert_eq!(reg("st0").as_f64(), Some(std::f64::consts::LOG2_E));
    assert_eq!(reg("st1").as_f64(), Some(std::f64::consts::PI));
    assert_eq!(reg("st2").as_f64(), Some(1.0));
    assert_eq!(reg("fctrl").as_u64(), Some(0x37f));
}

#[test]
fn core_image_reads_the_known_state_on_any_layout() {
    let Some(bytes) = fixture("core-5922.img") else { return };
    assert_eq!(record::detect(&bytes, &layout(AMD_ZEN4)), Some(Format::CriuCore));
    let core = CoreFpu::parse(&bytes).unwrap();
    assert_eq!(core.xstate_bv, Some(Xfeatures(0xe7)));
    // The Zen 4 host had no MPX and no PKU: CRIU wrote AVX and the AVX-512 trio.
    assert_eq!(core.held(), Xfeatures(0xe7));
    for (rows, size) in [(AMD_ZEN4, 2432), (INTEL_SAPPHIRE_RAPIDS, 2688), (INTEL_SKYLAKE_SP, 2688)] {
        let l = layout(rows);
        let c = record::read(Format::CriuCore, &bytes, &l, &Options::default()).unwrap();
        let s = c.state().unwrap();
        assert_eq!(s.rfbm, Some(Xfeatures(0xe7)));
        assert_eq!(s.xcr0, None, "a core image does not record XCR0");
        let img = s.image.as_ref().unwrap();
        assert_eq!(img.len(), size, "standard_size(0xe7)");
        assert_eq!(img.image().xstate_bv(), Xfeatures(0xe7));
        check_known_state(&l, img, Xfeatures(0xe7));
    }
}

#[test]
fn core_image_patch_round_trips_and_carries_an_edit() {
    let Some(bytes) = fixture("core-5922.img") else { return };
    let from = layout(AMD_ZEN4);
    let c = record::read(Format::CriuCore, &bytes, &from, &Options::default()).unwrap();
    assert_eq!(record::patch(Format::CriuCore, &bytes, &c, &from, &from, &Options::default()).unwrap(), bytes);
    // Read on Intel's layout, patched from it: still the same file.
    let intel = layout(INTEL_SAPPHIRE_RAPIDS);
    let ci = record::read(Format::CriuCore, &bytes, &intel, &Options::default()).unwrap();
    assert_eq!(record::patch(Format::CriuCore, &bytes, &ci, &intel, &intel, &Options::default()).unwrap(), bytes);

    // Edit zmm17 lane 3 (Hi16_ZMM) and xmm0 (SSE), patch, read back.
    let mut edited = c.clone();
    let img = edited.states[0].image.as_mut().unwrap();
    let hi16 = from.standard_range(Component::HI16_ZMM).unwrap();
    let at = hi16.start + 64 + 24;
    img[at..at + 8].copy_from_slice(&0x1234_5678_9abc_def0u64.to_le_bytes());
    img[160..168].copy_from_slice(&0x0bad_cafe_u64.to_le_bytes());
    let out = record::patch(Format::CriuCore, &bytes, &edited, &from, &from, &Options::default()).unwrap();
    assert_ne!(out, bytes);
    let back = record::read(Format::CriuCore, &out, &from, &Options::default()).unwrap();
    assert_eq!(back.states[0].image, edited.states[0].image);
    // Only the entry's length, the enclosing lengths and the edited varints moved: the file
    // before the entry is unchanged.
    assert_eq!(out[..8], bytes[..8]);
}

#[test]
fn core_image_refuses_what_it_cannot_hold_or_place() {
    let Some(bytes) = fixture("core-5922.img") else { return };
    let from = layout(AMD_ZEN4);
    let c = record::read(Format::CriuCore, &bytes, &from, &Options::default()).unwrap();
    // A layout without AVX-512 cannot hold the state in use.
    let small = layout(xstate::fixtures::AVX_ONLY);
    let e = record::read(Format::CriuCore, &bytes, &small, &Options::default()).unwrap_err();
    assert_eq!(e.rule, Rule::UnknownComponent, "{e}");
    // An image using a component CRIU has no field for (TILECFG on an AMX layout) is refused.
    let amx = layout(INTEL_SAPPHIRE_RAPIDS);
    let mut ci = record::read(Format::CriuCore, &bytes, &amx, &Options::default()).unwrap();
    let s = &mut ci.states[0];
    let mut big = xstate::image::ImageBuf::init(amx.standard_size(Xfeatures(0x600e7)).unwrap() as usize, Xfeatures(0));
    big[..s.image.as_ref().unwrap().len()].copy_from_slice(s.image.as_ref().unwrap());
    big.set_xstate_bv(Xfeatures(0x200e7));
    let tc = amx.standard_range(Component::TILECFG).unwrap();
    big[tc.start] = 1;
    s.image = Some(big);
    s.rfbm = Some(Xfeatures(0x600e7));
    let e = record::patch(Format::CriuCore, &bytes, &ci, &amx, &amx, &Options::default()).unwrap_err();
    assert_eq!(e.rule, Rule::NotHeld, "{e}");
    assert!(e.to_string().contains("tilecfg") || e.to_string().contains("TILECFG"), "{e}");
    let _ = c;
}

#[test]
fn cpuinfo_image_and_cpu_cap_fpu() {
    let Some(bytes) = fixture("cpuinfo.img") else { return };
    assert_eq!(record::detect(&bytes, &layout(AMD_ZEN4)), Some(Format::CriuCpuinfo));
    let info = CpuInfo::parse(&bytes).unwrap();
    let [a] = info.x86.as_slice() else { panic!("one entry") };
    assert_eq!((a.vendor_id, a.cpu_family, a.model, a.stepping), (2, 0x19, 0x11, 1));
    assert_eq!(a.model_id.as_deref(), Some("AMD EPYC"));
    assert_eq!(a.xfeatures_mask, Some(Xfeatures(0xe5)), "the quirk: 0xe7 less bits 1 and 3");
    assert_eq!((a.xsave_size, a.xsave_size_max), (Some(2432), Some(2432)));
    let q = a.quirk();
    assert!(q.present && !q.bndregs_lost, "{q:?}");
    assert!(a.cpu_cap_fpu(a).is_empty());
    // On a host whose sizes differ CRIU refuses on xsave_size first.
    let mut b = a.clone();
    b.xsave_size = Some(2696);
    b.xsave_size_max = Some(2696);
    assert_eq!(a.cpu_cap_fpu(&b), [Refusal::XsaveSize(2432, 2696), Refusal::XsaveSizeMax(2432, 2696)]);
    // A host without AVX-512 lacks bits of the image's mask.
    b.xfeatures_mask = Some(Xfeatures(0x5));
    assert_eq!(a.cpu_cap_fpu(&b)[0], Refusal::Xfeatures(Xfeatures(0xe0)));
}

#[test]
fn cpuinfo_of_cpuid_matches_what_criu_recorded_on_zen4() {
    // Zen 4's leaf 0xD with CPUID 1/6/7/0xD.1 as CRIU recorded them in its capability words.
    let Some(bytes) = fixture("cpuinfo.img") else { return };
    let a = &CpuInfo::parse(&bytes).unwrap().x86[0];
    let mut c = xstate::CpuidData::from_leaf0d(
        xstate::cpuid::CpuidFormat::Json,
        layout(AMD_ZEN4).to_leaf0d(Xfeatures(0xe7), Xfeatures(0)),
    );
    let w = &a.capability;
    c.insert(0, 0, xstate::Regs::new(0xd, 0x6874_7541, 0x444d_4163, 0x6974_6e65));
    c.insert(1, 0, xstate::Regs::new(0x00a1_0f11, 0, w[4], w[0]));
    c.insert(7, 0, xstate::Regs::new(0, w[9], w[11], w[18]));
    c.insert(6, 0, xstate::Regs::new(w[14], 0, 0, 0));
    // The fixture machine (a Zen 4 KVM guest) has no PKU: 0xD.0 enumerates 0xe7, 2432 bytes.
    let mut d0 = c.get(0xd, 0).unwrap_or_default();
    (d0.eax, d0.ecx) = (0xe7, 2432);
    c.insert(0xd, 0, d0);
    let mut d1 = c.get(0xd, 1).unwrap_or_default();
    d1.eax = w[10];
    c.insert(0xd, 1, d1);
    let b = X86Entry::of_cpuid(&c);
    assert_eq!(b.xfeatures_mask, a.xfeatures_mask);
    assert_eq!((b.xsave_size, b.xsave_size_max), (a.xsave_size, a.xsave_size_max));
    assert_eq!((b.vendor_id, b.cpu_family, b.model, b.stepping), (2, 0x19, 0x11, 1));
    assert!(a.cpu_cap_fpu(&b).is_empty());
}

#[test]
fn hostile_bytes_are_errors_never_panics() {
    let Some(bytes) = fixture("core-5922.img") else { return };
    let l = layout(AMD_ZEN4);
    for n in 0..bytes.len() {
        let _ = record::read(Format::CriuCore, &bytes[..n], &l, &Options::default());
    }
    for i in (8..bytes.len()).step_by(7) {
        let mut b = bytes.clone();
        b[i] ^= 0xff;
        if let Ok(c) = record::read(Format::CriuCore, &b, &l, &Options::default()) {
            let _ = record::patch(Format::CriuCore, &b, &c, &l, &l, &Options::default());
        }
    }
    let e = record::read(Format::CriuCore, &bytes[..100], &l, &Options::default()).unwrap_err();
    assert_eq!(e.rule, Rule::LengthField, "{e}");
}

#[test]
fn unused_fields_and_legacy_bits_survive_a_patch_unchanged() {
    // fuzz criu: xstate_bv 0x84 (x87, SSE, opmask and ZMM_Hi256 not in use, their fields
    // still full): the read image XRSTORs what CRIU's restore loads (x87 and SSE always) and
    // patching it back changes nothing, not even fields CRIU does not read.
    let Some(mut bytes) = fixture("core-5922.img") else { return };
    let at = bytes.windows(6).position(|w| w == b"\x6a\xff\x11\x08\xe7\x01").unwrap() + 4;
    bytes[at] = 0x84;
    let l = layout(AMD_ZEN4);
    let c = record::read(Format::CriuCore, &bytes, &l, &Options::default()).unwrap();
    let img = c.states[0].image.as_ref().unwrap();
    assert_eq!(img.image().xstate_bv(), Xfeatures(0x87));
    assert_eq!(record::patch(Format::CriuCore, &bytes, &c, &l, &l, &Options::default()).unwrap(), bytes);
    // xstate_bv with bit 63 has no field: refused, not dropped.
    let mut b63 = fixture("core-5922.img").unwrap();
    let at = b63.windows(6).position(|w| w == b"\x6a\xff\x11\x08\xe7\x01").unwrap();
    b63.splice(at + 3..at + 6, [0xe7, 0x81, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01]);
    let e = record::read(Format::CriuCore, &b63, &l, &Options::default()).unwrap_err();
    assert!(matches!(e.rule, Rule::NotHeld | Rule::LengthField | Rule::Wire), "{e}");
}

#[test]
fn cpuinfo_patch_sets_the_sizes_and_nothing_else() {
    use xstate::record::criu::cpuinfo::patch;
    let Some(bytes) = fixture("cpuinfo.img") else { return };
    let a = CpuInfo::parse(&bytes).unwrap().x86[0].clone();
    assert_eq!(patch(&bytes, &a).unwrap(), bytes, "the same values give the file back");
    let mut b = a.clone();
    (b.xsave_size, b.xsave_size_max) = (Some(11008), Some(11008));
    let out = patch(&bytes, &b).unwrap();
    let c = CpuInfo::parse(&out).unwrap().x86[0].clone();
    assert_eq!((c.xsave_size, c.xsave_size_max, c.xfeatures_mask), (Some(11008), Some(11008), a.xfeatures_mask));
    assert_eq!((&c.capability, &c.model_id, c.vendor_id), (&a.capability, &a.model_id, a.vendor_id));
    assert!(c.cpu_cap_fpu(&b).is_empty());
}
