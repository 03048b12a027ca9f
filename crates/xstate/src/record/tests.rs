//! Round trips, exact size rules, typed errors and old-vs-new blob compatibility.

use alloc::string::ToString;
use alloc::vec::Vec;

use super::fc_blob::FcBlob as Blob;
use super::kvm::{KVM_XSAVE_SIZE, KvmXcrs, KvmXsave};
use super::linux::{FP_XSTATE_MAGIC1, LayoutNote, NtXstate, SigFrame};
use super::portable::Portable;
use super::xen::{DomctlBlob, HvmCpuXsave, PvVcpuXsave, XenHost};
use super::*;
use crate::component::Component;
use crate::cpuid::XsaveFeatures;
use crate::fixtures::{self, AMD_ZEN4, INTEL_AMX_GUEST, INTEL_SAPPHIRE_RAPIDS, INTEL_SKYLAKE_SP};
use crate::image::{Image, ImageBuf, Target, convert};
use crate::layout::{Geometry, Layout};
use crate::xfeatures::Xfeatures;

/// A standard image for `xcr0` with every component of `bv` filled with a pattern.
fn standard(l: &Layout, xcr0: Xfeatures, bv: Xfeatures, seed: u8) -> ImageBuf {
    let mut img = ImageBuf::init(l.standard_size(xcr0).unwrap() as usize, Xfeatures(0));
    let mut k = seed;
    for c in bv.iter() {
        let ranges: Vec<::core::ops::Range<usize>> = if c == Component::X87 {
            alloc::vec![8..24, 32..160]
        } else if c == Component::SSE {
            alloc::vec![160..416]
        } else {
            alloc::vec![l.standard_range(c).unwrap()]
        };
        for r in ranges {
            for b in &mut img[r] {
                k = k.wrapping_mul(31).wrapping_add(7);
                *b = k;
            }
        }
    }
    img[24..28].copy_from_slice(&0x1F80u32.to_le_bytes());
    img[28..32].copy_from_slice(&0xFFFFu32.to_le_bytes());
    img.set_xstate_bv(bv);
    img
}

fn values(img: &[u8], l: &Layout, rfbm: Xfeatures) -> crate::image::state::Values {
    crate::image::state::State::new(Image::new(img).unwrap(), l, rfbm).values().unwrap()
}

fn skx() -> Layout {
    fixtures::layout(INTEL_SKYLAKE_SP)
}
fn zen4() -> Layout {
    fixtures::layout(AMD_ZEN4)
}

#[test]
fn domctl_blob_round_trip_and_exact_size() {
    let l = skx();
    let accum = Xfeatures(0x2FF);
    let img = standard(&l, accum, Xfeatures(0xE3), 1);
    assert_eq!(img.len(), 2696);
    let bytes = DomctlBlob { xcr0: Xfeatures(0x2E7), xcr0_accum: accum, image: Some(&img) }.to_bytes();
    assert_eq!(bytes.len(), 16 + 2696);
    let host = XenHost::of(&l);
    let b = DomctlBlob::parse(&bytes, &l, &host).unwrap();
    assert_eq!((b.xcr0, b.xcr0_accum, b.image.unwrap()), (Xfeatures(0x2E7), accum, &img[..]));
    // 0x2e7 and 0x2ff have the same standard size on Skylake-SP (PKRU ends both).
    let mut same = bytes.clone();
    same[8..16].copy_from_slice(&0x2E7u64.to_le_bytes());
    assert!(DomctlBlob::parse(&same, &l, &host).is_ok());
    assert_eq!(b.to_bytes(), bytes);

    // The "no xsave state" form.
    let none = DomctlBlob::NO_STATE.to_bytes();
    assert_eq!(none, [0u8; 16]);
    assert_eq!(DomctlBlob::parse(&none, &l, &host).unwrap(), DomctlBlob::NO_STATE);
    // xcr0 != 0 with xcr0_accum = 0, or extra bytes: refused.
    let mut bad = none.clone();
    bad[0] = 3;
    assert_eq!(DomctlBlob::parse(&bad, &l, &host).unwrap_err().rule, Rule::NoStateNotEmpty);
    let mut long = none.clone();
    long.extend_from_slice(&[0; 8]);
    assert_eq!(DomctlBlob::parse(&long, &l, &host).unwrap_err().rule, Rule::NoStateNotEmpty);

    // Truncated, one byte short, one byte long, oversized.
    assert_eq!(DomctlBlob::parse(&bytes[..15], &l, &host).unwrap_err().rule, Rule::Truncated);
    assert_eq!(DomctlBlob::parse(&bytes[..591], &l, &host).unwrap_err().rule, Rule::Truncated);
    let e = DomctlBlob::parse(&bytes[..bytes.len() - 1], &l, &host).unwrap_err();
    assert_eq!(e.rule, Rule::SizeMismatch);
    assert_eq!(
        e.to_string(),
        "xen-domctl: size 2711 != 16 + standard_size(xcr0_accum 0x2ff) = 2712: the record's size must be exactly what its fields fix (EINVAL)"
    );
    let mut longer = bytes.clone();
    longer.push(0);
    assert_eq!(DomctlBlob::parse(&longer, &l, &host).unwrap_err().rule, Rule::Oversized);
    // A smaller accumulated mask makes the same bytes the wrong size.
    let mut small = bytes.clone();
    small[0..8].copy_from_slice(&0xFFu64.to_le_bytes());
    small[8..16].copy_from_slice(&0xFFu64.to_le_bytes());
    let e = DomctlBlob::parse(&small, &l, &host).unwrap_err();
    assert_eq!(e.rule, Rule::SizeMismatch, "{e}");
    assert!(e.to_string().contains("size 2712 != 16 + standard_size(xcr0_accum 0xff) = 2704"), "{e}");

    // validate_xstate: xcr0 = 0 with accum != 0, XSTATE_BV outside accum, reserved bytes.
    let mut z = bytes.clone();
    z[0..8].fill(0);
    assert_eq!(DomctlBlob::parse(&z, &l, &host).unwrap_err().rule, Rule::Image);
    let mut r = bytes.clone();
    r[16 + 540] = 1;
    let e = DomctlBlob::parse(&r, &l, &host).unwrap_err();
    assert_eq!(e.rule, Rule::Image);
    assert!(e.to_string().contains("EIO"), "{e}");
    // XCOMP_BV[63]: validate_xstate()'s -EOPNOTSUPP (XCOMP_BV ≠ 0), as Xen answers it.
    let mut c = bytes.clone();
    c[16 + 527] = 0x80;
    let e = DomctlBlob::parse(&c, &l, &host).unwrap_err();
    assert_eq!((e.rule, e.offset), (Rule::Image, Some(16)));
    assert_eq!(e.errno(), Some(crate::image::validate::Errno::Eopnotsupp));
    // ... and after a no-state header, the domctl's own -EOPNOTSUPP check.
    let mut n = alloc::vec![0u8; 16 + 576];
    n[16 + 527] = 0x80;
    let e = DomctlBlob::parse(&n, &l, &host).unwrap_err();
    assert_eq!((e.rule, e.offset), (Rule::CompactedNotAccepted, Some(16 + 520)));
    assert_eq!(e.errno(), Some(crate::image::validate::Errno::Eopnotsupp));
    n[16 + 527] = 0;
    assert_eq!(DomctlBlob::parse(&n, &l, &host).unwrap_err().errno(), Some(crate::image::validate::Errno::Einval));
}

#[test]
fn hvm_record_rules() {
    let l = skx();
    let host = XenHost::of(&l);
    let img = standard(&l, Xfeatures(0x7), Xfeatures(0x7), 3);
    let rec = HvmCpuXsave {
        vcpu: 3,
        xfeature_mask: Xfeatures(0x2FF),
        xcr0: Xfeatures(7),
        xcr0_accum: Xfeatures(7),
        image: &img,
    };
    let bytes = rec.to_bytes();
    assert_eq!(bytes.len(), 8 + 24 + 832);
    assert_eq!(HvmCpuXsave::parse(&bytes, &l, &host).unwrap(), rec);
    // A longer record with a zero tail (Xen <= 4.3) is accepted; a non-zero tail is not.
    let mut long = bytes.clone();
    long.extend_from_slice(&[0; 64]);
    long[4..8].copy_from_slice(&((24 + 832 + 64) as u32).to_le_bytes());
    assert_eq!(HvmCpuXsave::parse(&long, &l, &host).unwrap().image, &img[..]);
    long[8 + 24 + 832 + 5] = 1;
    let e = HvmCpuXsave::parse(&long, &l, &host).unwrap_err();
    assert_eq!((e.rule, e.offset), (Rule::TailNotZero, Some(8 + 24 + 832 + 5)));
    // Shorter: -EINVAL; below 600: truncated; wrong typecode; length field.
    let mut short = bytes[..bytes.len() - 8].to_vec();
    short[4..8].copy_from_slice(&((24 + 824) as u32).to_le_bytes());
    assert_eq!(HvmCpuXsave::parse(&short, &l, &host).unwrap_err().rule, Rule::SizeMismatch);
    let mut tiny = bytes[..8 + 599].to_vec();
    tiny[4..8].copy_from_slice(&599u32.to_le_bytes());
    assert_eq!(HvmCpuXsave::parse(&tiny, &l, &host).unwrap_err().rule, Rule::Truncated);
    let mut ty = bytes.clone();
    ty[0] = 2;
    assert_eq!(HvmCpuXsave::parse(&ty, &l, &host).unwrap_err().rule, Rule::TypeCode);
    assert_eq!(HvmCpuXsave::parse(&bytes[..bytes.len() - 1], &l, &host).unwrap_err().rule, Rule::LengthField);
    // xcr0 = 0 is invalid in a record (pre-4.12 empty records are refused).
    let mut z = bytes.clone();
    z[16..24].fill(0);
    assert_eq!(HvmCpuXsave::parse(&z, &l, &host).unwrap_err().rule, Rule::Image);
}

#[test]
fn pv_record_rules() {
    let l = skx();
    let host = XenHost::of(&l);
    let img = standard(&l, Xfeatures(0x7), Xfeatures(0x5), 4);
    let blob = DomctlBlob { xcr0: Xfeatures(7), xcr0_accum: Xfeatures(7), image: Some(&img) };
    let rec = PvVcpuXsave { vcpu: 2, reserved: 0, blob: Some(blob) };
    let bytes = rec.to_bytes();
    assert_eq!(bytes.len() % 8, 0);
    assert_eq!(bytes.len(), 8 + 8 + 16 + 832);
    assert_eq!(PvVcpuXsave::parse(&bytes, &l, &host).unwrap(), rec);
    // Zero-length blob (Xen 4.6-4.8) is skipped.
    let empty = PvVcpuXsave { vcpu: 1, reserved: 0, blob: None }.to_bytes();
    assert_eq!(empty.len(), 16);
    assert_eq!(PvVcpuXsave::parse(&empty, &l, &host).unwrap().blob, None);
    // A blob shorter than 16 bytes; an inner error carries the record offset.
    let mut short = empty.clone();
    short[4..8].copy_from_slice(&12u32.to_le_bytes());
    short.extend_from_slice(&[0; 8]);
    assert_eq!(PvVcpuXsave::parse(&short, &l, &host).unwrap_err().rule, Rule::Truncated);
    let mut bad = bytes.clone();
    bad[16 + 16 + 530] = 9;
    let e = PvVcpuXsave::parse(&bad, &l, &host).unwrap_err();
    assert_eq!((e.format, e.rule, e.offset), (Format::XenPv, Rule::Image, Some(32)));
    assert_eq!(PvVcpuXsave::parse(&bytes[..bytes.len() - 8], &l, &host).unwrap_err().rule, Rule::LengthField);
}

#[test]
fn blob_old_and_new_rules_both_ways() {
    let l = fixtures::layout(INTEL_SAPPHIRE_RAPIDS);
    // A policy allowing every state Xen enables (no Xen guest maximum has AMX; see
    // xen_guest_maxima_bound_xcr0_accum).
    let old_host = XenHost::new(crate::policy::xen_host_mask(&l), l.user_supported());
    let new_host = Blob::host_of(&l);
    // Every valid old blob is a valid new blob with the same meaning.
    for (accum, bv) in [(0x3u64, 0x3u64), (0x7, 0x4), (0xE7, 0xE3), (0x2E7, 0x207), (0x602E7, 0x60003)] {
        let img = standard(&l, Xfeatures(accum), Xfeatures(bv), accum as u8);
        let bytes = DomctlBlob { xcr0: Xfeatures(accum), xcr0_accum: Xfeatures(accum), image: Some(&img) }.to_bytes();
        let old = DomctlBlob::parse(&bytes, &l, &old_host).unwrap();
        let new = Blob::parse(&bytes, &l, &new_host).unwrap();
        assert_eq!(
            (new.xcr0(&l), new.xss(&l), new.xstates_accum, new.image),
            (old.xcr0, Xfeatures(0), old.xcr0_accum, old.image)
        );
        assert_eq!(new.to_bytes(), bytes);
    }
    let none = DomctlBlob::NO_STATE.to_bytes();
    assert_eq!(Blob::parse(&none, &l, &new_host).unwrap(), Blob::NO_STATE);
    // Accumulated states the consumer does not offer (here PKRU, beyond the host and the
    // guest's policy given): the rule names the offer, not a size.
    let img = standard(&l, Xfeatures(0x2E7), Xfeatures(0x207), 3);
    let pkru = DomctlBlob { xcr0: Xfeatures(0x2E7), xcr0_accum: Xfeatures(0x2E7), image: Some(&img) }.to_bytes();
    for host in [XenHost::new(Xfeatures(0xE7), Xfeatures(0x2E7)), XenHost::new(Xfeatures(0x2E7), Xfeatures(0xE7))] {
        let e = Blob::parse(&pkru, &l, &host).unwrap_err();
        assert_eq!((e.rule, e.offset), (Rule::AccumOutsideMaximum, Some(8)), "{e}");
        assert_eq!(e.errno(), Some(crate::image::validate::Errno::Einval));
        assert!(e.to_string().contains("within the host's mask and the guest's policy"), "{e}");
    }

    // A compacted blob: valid only under the new rules, sized from XCOMP_BV.
    let accum = Xfeatures(0x602E7);
    let std_img = standard(&l, accum, Xfeatures(0x20207), 9);
    let comp = convert(&std_img, &l, &l, accum, Target::Compacted { mask: Xfeatures(0x20207) }).unwrap();
    assert_eq!(comp.len(), l.compacted_size(Xfeatures(0x20207)).unwrap() as usize);
    let bytes = Blob { xstates: accum, xstates_accum: accum, image: Some(&comp) }.to_bytes();
    let b = Blob::parse(&bytes, &l, &new_host).unwrap();
    assert_eq!(b.form(), Some(crate::image::Form::Compacted));
    // Xen's validate_xstate(): the masks are fine, so XCOMP_BV ≠ 0 gives -EOPNOTSUPP.
    let e = DomctlBlob::parse(&bytes, &l, &old_host).unwrap_err();
    assert_eq!((e.rule, e.offset), (Rule::Image, Some(16)));
    assert_eq!(e.errno(), Some(crate::image::validate::Errno::Eopnotsupp), "{e}");
    assert!(e.to_string().contains("only standard-format images"), "{e}");
    // Size cross-checked from XCOMP_BV: one byte short or long.
    let e = Blob::parse(&bytes[..bytes.len() - 1], &l, &new_host).unwrap_err();
    assert_eq!(e.rule, Rule::SizeMismatch);
    assert!(e.to_string().contains("16 + compacted_size(XCOMP_BV 0x8000000000020207)"), "{e}");
    // XSTATE_BV outside XCOMP_BV; XCOMP_BV outside the accumulated states.
    let mut x = bytes.clone();
    x[16 + 512 + 2] |= 0x04; // XSTATE_BV bit 18 (TILEDATA), not laid out
    assert_eq!(Blob::parse(&x, &l, &new_host).unwrap_err().rule, Rule::Image);
    let mut y = bytes.clone();
    y[8..16].copy_from_slice(&0x2E7u64.to_le_bytes());
    y[0..8].copy_from_slice(&0x2E7u64.to_le_bytes());
    assert_eq!(Blob::parse(&y, &l, &new_host).unwrap_err().rule, Rule::XcompOutsideAccum);

    // Supervisor state (PT, bit 8) in a compacted image: new rules only; old rules refuse it.
    let xstates = Xfeatures(0x2E7 | 0x100);
    let sup_img = {
        let mut i = convert(
            &standard(&l, Xfeatures(0x2E7), Xfeatures(0x207), 5),
            &l,
            &l,
            Xfeatures(0x2E7),
            Target::Compacted { mask: Xfeatures(0x2E7) },
        )
        .unwrap();
        // Re-lay with PT in XCOMP_BV (init, not in XSTATE_BV): same offsets below bit 8 grow.
        let mut full = ImageBuf::init(l.compacted_size(xstates).unwrap() as usize, Xfeatures(xstates.bits() | 1 << 63));
        full[..576].copy_from_slice(&i[..576]);
        let pkru_src = l.compacted_offset(Component::PKRU, Xfeatures(0x2E7)).unwrap() as usize;
        let pkru_dst = l.compacted_offset(Component::PKRU, xstates).unwrap() as usize;
        let ymm = l.compacted_offset(Component::AVX, xstates).unwrap() as usize;
        full[ymm..ymm + 256].copy_from_slice(&i[576..832]);
        full[pkru_dst..pkru_dst + 8].copy_from_slice(&i[pkru_src..pkru_src + 8]);
        i.resize(0);
        full.set_xcomp_bv(Xfeatures(xstates.bits() | 1 << 63));
        full
    };
    let bytes = Blob { xstates, xstates_accum: xstates, image: Some(&sup_img) }.to_bytes();
    let b = Blob::parse(&bytes, &l, &new_host).unwrap();
    assert_eq!((b.xcr0(&l), b.xss(&l)), (Xfeatures(0x2E7), Xfeatures(0x100)));
    // Old rules: PT in xcr0_accum is outside every policy (-EINVAL before XCOMP_BV is read).
    let e = DomctlBlob::parse(&bytes, &l, &old_host).unwrap_err();
    assert_eq!(e.errno(), Some(crate::image::validate::Errno::Einval), "{e}");
    // Supervisor state claimed with a standard image: refused by the new rules.
    let std_bytes =
        Blob { xstates, xstates_accum: xstates, image: Some(&standard(&l, Xfeatures(0x2E7), Xfeatures(3), 1)) }
            .to_bytes();
    let e = Blob::parse(&std_bytes, &l, &new_host).unwrap_err();
    assert_eq!((e.rule, e.offset), (Rule::SupervisorInStandard, Some(8)));
    // Active outside accumulated, invalid masks.
    let mut a = bytes.clone();
    a[8..16].copy_from_slice(&0x2E7u64.to_le_bytes());
    assert!(matches!(
        Blob::parse(&a, &l, &new_host).unwrap_err().rule,
        Rule::ActiveOutsideAccum | Rule::XcompOutsideAccum
    ));
    let mut m = bytes.clone();
    m[0..8].copy_from_slice(&0x167u64.to_le_bytes()); // AVX-512 incomplete
    assert_eq!(Blob::parse(&m, &l, &new_host).unwrap_err().rule, Rule::InvalidMask);
}

#[test]
fn kvm_structures() {
    let l = zen4();
    let img = standard(&l, Xfeatures(0x2E7), Xfeatures(0x2E7), 11);
    let buf = KvmXsave::build(&img, KVM_XSAVE_SIZE).unwrap();
    let k = KvmXsave::parse(Format::KvmXsave, &buf, KVM_XSAVE_SIZE, &l, Xfeatures(0x2E7), 0xFFFF).unwrap();
    assert_eq!(&k.image[..img.len()], &img[..]);
    assert_eq!(
        KvmXsave::parse(Format::KvmXsave, &buf[..4095], 4096, &l, Xfeatures(0x2E7), 0xFFFF).unwrap_err().rule,
        Rule::Truncated
    );
    // KVM_SET_XSAVE refuses XSTATE_BV outside the supported mask.
    let e = KvmXsave::parse(Format::KvmXsave, &buf, 4096, &l, Xfeatures(0xE7), 0xFFFF).unwrap_err();
    assert_eq!(e.rule, Rule::Image);
    assert!(e.to_string().contains("KVM-supported"), "{e}");
    // The AMX image does not fit kvm_xsave.
    let amx = fixtures::layout(INTEL_AMX_GUEST);
    assert_eq!(super::kvm::cap_xsave2(&amx, Xfeatures(0x600E7)), Some(11008));
    assert_eq!(super::kvm::cap_xsave2(&l, Xfeatures(0x2E7)), Some(4096));
    let big = standard(&amx, Xfeatures(0x600E7), Xfeatures(0x400E7), 2);
    assert!(KvmXsave::build(&big, 4096).is_none());
    let c = Contents::one(Format::Image, State::new(Some(big.clone()), Some(Xfeatures(0x600E7))));
    let e = write(Format::KvmXsave, &c, &amx, &amx, &Options::default()).unwrap_err();
    assert_eq!(e.rule, Rule::Oversized);
    let x2 = write(Format::KvmXsave2, &c, &amx, &amx, &Options::default()).unwrap();
    assert_eq!(x2.len(), 11008);
    let back = read(Format::KvmXsave2, &x2, &amx, &Options::default()).unwrap();
    let st = back.state().unwrap();
    assert_eq!(st.rfbm, Some(Xfeatures(0x600E7)), "the buffer's components");
    assert_eq!(st.xcr0, None, "kvm_xsave does not record the guest's XCR0");

    let xcrs = KvmXcrs::with_xcr0(Xfeatures(0x2E7));
    let b = xcrs.to_bytes();
    assert_eq!(b.len(), 392);
    assert_eq!(KvmXcrs::parse(&b, &l, l.user_supported()).unwrap(), xcrs);
    let mut bad = b.clone();
    bad[16..24].copy_from_slice(&0x27u64.to_le_bytes());
    assert_eq!(KvmXcrs::parse(&bad, &l, l.user_supported()).unwrap_err().rule, Rule::InvalidMask);
    let mut n = b.clone();
    n[0] = 17;
    assert_eq!(KvmXcrs::parse(&n, &l, l.user_supported()).unwrap_err().rule, Rule::LengthField);
    let mut fl = b.clone();
    fl[4] = 1;
    assert_eq!(KvmXcrs::parse(&fl, &l, l.user_supported()).unwrap_err().rule, Rule::Reserved);
    assert_eq!(KvmXcrs::parse(&b[..391], &l, l.user_supported()).unwrap_err().rule, Rule::Truncated);
}

#[test]
fn linux_notes_and_signal_frames() {
    let l = skx();
    let img = standard(&l, Xfeatures(0x2FF), Xfeatures(0x2E3), 6);
    let note = NtXstate::build(&img, Xfeatures(0x2FF), &l).unwrap();
    assert_eq!(note.len(), 2696);
    assert_eq!(u64::from_le_bytes(note[464..472].try_into().unwrap()), 0x2FF);
    let n = NtXstate::parse(&note, &l).unwrap();
    assert_eq!(n.xcr0, Xfeatures(0x2FF));
    let e = NtXstate::parse(&note[..2688], &l).unwrap_err();
    assert_eq!(e.rule, Rule::Truncated);
    assert!(e.to_string().contains("size 2688 < 0 + standard_size(XCR0 at byte 464 0x2ff) = 2696"), "{e}");
    // The same note read with the AMD layout: 2696 != 2440.
    assert_eq!(NtXstate::parse(&note, &zen4()).unwrap_err().rule, Rule::UnknownComponent);

    let ln = LayoutNote::of_layout(&l, Xfeatures(0x2FF));
    let lb = ln.to_bytes();
    assert_eq!(lb.len(), 16 * 7);
    assert_eq!(LayoutNote::parse(&lb).unwrap(), ln);
    let carried = ln.to_layout(l.features()).unwrap();
    assert_eq!(carried.standard_size(Xfeatures(0x2FF)), Some(2696));
    assert_eq!(carried.geometry(Component::OPMASK).unwrap().offset, 0x440);
    assert_eq!(LayoutNote::parse(&lb[..20]).unwrap_err().rule, Rule::SizeMismatch);
    let mut unordered = lb.clone();
    unordered[16] = 2;
    assert_eq!(LayoutNote::parse(&unordered).unwrap_err().rule, Rule::LayoutDescriptor);
    let mut flags = lb.clone();
    flags[12] = 1;
    assert_eq!(LayoutNote::parse(&flags).unwrap_err().offset, Some(12));

    let frame = SigFrame::build(&img, Xfeatures(0x2FF), &l).unwrap();
    assert_eq!(frame.len(), 2700);
    let s = SigFrame::parse(&frame, &l).unwrap();
    assert_eq!((s.sw.xstate_size, s.sw.extended_size, s.sw.xfeatures), (2696, 2700, Xfeatures(0x2FF)));
    // Forced FP|SSE keep the same state.
    assert_eq!(values(s.image, &l, Xfeatures(0x2FF)), values(&img, &l, Xfeatures(0x2FF)));
    let mut m2 = frame.clone();
    m2[2696] ^= 1;
    let e = SigFrame::parse(&m2, &l).unwrap_err();
    assert_eq!((e.rule, e.offset), (Rule::Magic, Some(2696)));
    let mut m1 = frame.clone();
    m1[464] = 0;
    assert_eq!(SigFrame::parse(&m1, &l).unwrap_err().offset, Some(464));
    let mut xs = frame.clone();
    xs[480..484].copy_from_slice(&1000u32.to_le_bytes());
    assert_eq!(SigFrame::parse(&xs, &l).unwrap_err().rule, Rule::LengthField);
}

/// Masks and layouts from outside never panic the Linux formats: a note for an XCR0 without
/// user state cannot be built (it was an out-of-range slice), and a signal frame read with a
/// layout whose standard size reaches u32::MAX (a hostile CPUID dump or layout descriptor) is
/// refused with its length rule (xstate_size + 4 overflowed).
#[test]
fn linux_formats_refuse_hostile_masks_and_layouts() {
    let l = skx();
    let img = standard(&l, Xfeatures(0x2FF), Xfeatures(0x3), 6);
    for xcr0 in [0, 0x100, 1 << 63] {
        assert_eq!(NtXstate::build(&img, Xfeatures(xcr0), &l), None, "xcr0 {xcr0:#x}");
    }
    let c = Contents::one(Format::Image, State::new(Some(img.clone()), Some(Xfeatures(0))).with_xcr0(Xfeatures(0)));
    assert!(write(Format::NtXstate, &c, &l, &l, &Options::default()).is_err());

    // AVX at 0xFFFFFE00..0xFFFFFFFF: standard_size(0x7) = u32::MAX.
    let far = Geometry { size: 0x1FF, offset: 0xFFFF_FE00, ..Geometry::default() };
    let huge =
        Layout::from_components(XsaveFeatures(0), [(Component::SSE, Geometry::default()), (Component::AVX, far)])
            .unwrap();
    assert_eq!(huge.standard_size(Xfeatures(0x7)), Some(u32::MAX));
    let mut frame = alloc::vec![0u8; 600];
    frame[464..468].copy_from_slice(&FP_XSTATE_MAGIC1.to_le_bytes());
    frame[468..472].copy_from_slice(&3u32.to_le_bytes()); // extended_size = u32::MAX + 4, wrapped
    frame[472..480].copy_from_slice(&7u64.to_le_bytes());
    frame[480..484].copy_from_slice(&u32::MAX.to_le_bytes());
    let e = SigFrame::parse(&frame, &huge).unwrap_err();
    assert_eq!((e.rule, e.offset), (Rule::LengthField, Some(468)));
    frame[468..472].copy_from_slice(&u32::MAX.to_le_bytes());
    assert_eq!(SigFrame::parse(&frame, &huge).unwrap_err().rule, Rule::LengthField);
    assert_eq!(SigFrame::build(&img, Xfeatures(0x7), &huge), None);
}

/// An ELF file that is not an x86-64 core is refused naming the header field and its offset.
#[test]
fn core_header_type_and_machine() {
    let elf = |e_type: u16, e_machine: u16| {
        let mut h = alloc::vec![0u8; 64];
        h[..4].copy_from_slice(b"\x7fELF");
        (h[4], h[5], h[6]) = (2, 1, 1); // ELFCLASS64, little-endian, EV_CURRENT
        h[16..18].copy_from_slice(&e_type.to_le_bytes());
        h[18..20].copy_from_slice(&e_machine.to_le_bytes());
        h[20..24].copy_from_slice(&1u32.to_le_bytes());
        h[52..54].copy_from_slice(&64u16.to_le_bytes()); // e_ehsize
        h
    };
    let e = super::elf::read_core(&elf(2, 62)).unwrap_err();
    assert_eq!((e.rule, e.offset), (Rule::TypeCode, Some(16)));
    assert!(e.to_string().contains("e_type (ET_CORE)"), "{e}");
    let e = super::elf::read_core(&elf(4, 3)).unwrap_err();
    assert_eq!((e.rule, e.offset), (Rule::TypeCode, Some(18)));
    assert!(e.to_string().contains("e_machine (EM_X86_64)"), "{e}");
    let good = elf(4, 62);
    let notes = super::elf::read_core(&good).unwrap();
    assert!(notes.threads.is_empty() && notes.layout.is_none());
}

#[test]
fn portable_round_trip_and_relayout() {
    let from = skx();
    let to = zen4();
    let accum = Xfeatures(0x2E7);
    let img = standard(&from, accum, Xfeatures(0x2E7), 21);
    let p = Portable {
        xcr0: accum,
        xss: Xfeatures(0),
        xstates_accum: accum,
        mxcsr_mask: 0xFFFF,
        layout: from.clone(),
        image: &img,
    };
    let bytes = p.to_bytes();
    let q = Portable::parse(&bytes).unwrap();
    assert_eq!((q.xcr0, q.xstates_accum, q.image), (accum, accum, &img[..]));
    assert_eq!(q.layout.geometry(Component::OPMASK).unwrap().offset, 0x440);
    assert_eq!(q.to_bytes(), bytes);
    // Read on an AMD host: re-laid out with the carried layout.
    let c = read(Format::Portable, &bytes, &to, &Options::default()).unwrap();
    let drop = Options { drop: FieldSet::NONE.with(Field::Accum), ..Options::default() };
    let out = write(Format::NtXstate, &c, c.layout.as_ref().unwrap(), &to, &drop).unwrap();
    assert_eq!(out.len(), 2440);
    let relaid = NtXstate::parse(&out, &to).unwrap();
    let ra = values(relaid.image, &to, accum);
    let rb = values(&img, &from, accum);
    assert_eq!(ra, rb, "same registers after re-layout");
    // Corruption is caught by the checksum; versions and magic by their own rules.
    for (off, rule) in [
        (0usize, Rule::Magic),
        (8, Rule::Version),
        (12, Rule::Reserved),
        (100, Rule::Checksum),
        (bytes.len() - 1, Rule::Checksum),
    ] {
        let mut b = bytes.clone();
        b[off] ^= 0x40;
        assert_eq!(Portable::parse(&b).unwrap_err().rule, rule, "offset {off}");
    }
    assert_eq!(Portable::parse(&bytes[..bytes.len() - 1]).unwrap_err().rule, Rule::Truncated);
    // Compacted with supervisor state round-trips too.
    let spr = fixtures::layout(INTEL_SAPPHIRE_RAPIDS);
    let s_img = standard(&spr, Xfeatures(0x602E7), Xfeatures(0x60207), 1);
    let comp = convert(&s_img, &spr, &spr, Xfeatures(0x602E7), Target::Compacted { mask: Xfeatures(0x602E7) }).unwrap();
    let p = Portable {
        xcr0: Xfeatures(0x602E7),
        xss: Xfeatures(0),
        xstates_accum: Xfeatures(0x602E7),
        mxcsr_mask: 0,
        layout: spr.clone(),
        image: &comp,
    };
    let b = p.to_bytes();
    assert_eq!(Portable::parse(&b).unwrap().image, &comp[..]);
}

/// The portable record's size rule (shared with the forward-compatible blob): a standard image
/// holds no supervisor state and is standard_size(accum) bytes; a compacted one lays out only
/// accumulated states and is compacted_size(XCOMP_BV) bytes. Errors name the record's offsets.
#[test]
fn portable_size_rule_by_form() {
    let spr = fixtures::layout(INTEL_SAPPHIRE_RAPIDS);
    let record = |accum: u64, xss: u64, image: &[u8]| {
        Portable {
            xcr0: Xfeatures(0x2E7),
            xss: Xfeatures(xss),
            xstates_accum: Xfeatures(accum),
            mxcsr_mask: 0,
            layout: spr.clone(),
            image,
        }
        .to_bytes()
    };
    let std_img = standard(&spr, Xfeatures(0x2E7), Xfeatures(0x3), 5);
    // Supervisor state (PT) with a standard image.
    let e = Portable::parse(&record(0x2E7 | 0x100, 0x100, &std_img)).unwrap_err();
    assert_eq!((e.rule, e.offset), (Rule::SupervisorInStandard, Some(32)));
    // A standard image one line too long.
    let mut long = std_img.to_vec();
    long.extend_from_slice(&[0; 64]);
    let e = Portable::parse(&record(0x2E7, 0, &long)).unwrap_err();
    assert_eq!(e.rule, Rule::SizeMismatch);
    assert!(e.to_string().contains("0 + standard_size(xstates_accum 0x2e7) = 2696"), "{e}");
    // A compacted image laying out AMX, which the accumulated states lack.
    let amx = standard(&spr, Xfeatures(0x602E7), Xfeatures(0x3), 5);
    let comp = convert(&amx, &spr, &spr, Xfeatures(0x602E7), Target::Compacted { mask: Xfeatures(0x602E7) }).unwrap();
    let bytes = record(0x2E7, 0, &comp);
    let image_at = bytes.len() - comp.len();
    let e = Portable::parse(&bytes).unwrap_err();
    assert_eq!((e.rule, e.offset), (Rule::XcompOutsideAccum, Some(image_at + 520)));
    // A compacted image one line too long.
    let comp = convert(&std_img, &spr, &spr, Xfeatures(0x2E7), Target::Compacted { mask: Xfeatures(0x2E7) }).unwrap();
    let mut long = comp.to_vec();
    long.extend_from_slice(&[0; 64]);
    let e = Portable::parse(&record(0x2E7, 0, &long)).unwrap_err();
    assert_eq!(e.rule, Rule::SizeMismatch);
    assert!(e.to_string().contains("0 + compacted_size(XCOMP_BV 0x80000000000002e7) = 2440"), "{e}");
}

/// Every field a format can hold, dropped explicitly; the vCPU and XCR0 given for targets
/// that record them.
fn lenient(accum: Xfeatures) -> Options {
    let drop = Field::ALL.into_iter().fold(FieldSet::NONE, FieldSet::with);
    Options { xcr0: Some(accum), vcpu: Some(1), drop, ..Options::default() }
}

#[test]
fn convert_between_every_format() {
    let l = skx();
    let accum = Xfeatures(0x2FF);
    let img = standard(&l, accum, Xfeatures(0x2E7), 33);
    let state = State::new(Some(img.clone()), Some(accum)).with_xcr0(accum).with_accum(accum);
    let src = Contents::one(Format::Image, state.with_id(StateId::Vcpu(1)));
    let opts = lenient(accum);
    let want = values(&img, &l, accum);
    for f in Format::ALL.into_iter().filter(|f| f.writable()) {
        let bytes = write(f, &src, &l, &l, &opts).unwrap_or_else(|e| panic!("{f}: {e}"));
        // A forward-compatible blob with a standard image is byte for byte an old blob.
        let seen = detect(&bytes, &l);
        // So is a 4096-byte KVM_GET_XSAVE2 buffer a kvm_xsave.
        let same = (f == Format::FcBlob && seen == Some(Format::XenDomctl))
            || (f == Format::KvmXsave2 && bytes.len() == 4096 && seen == Some(Format::KvmXsave));
        assert!(seen == Some(f) || same, "detect {f}: {seen:?}");
        let c = read(f, &bytes, &l, &opts).unwrap_or_else(|e| panic!("{f}: {e}"));
        let image = c.state().and_then(|s| s.image.as_ref());
        if let Some(i) = image {
            let lay = c.layout.clone().unwrap_or_else(|| l.clone());
            assert_eq!(values(i, &lay, c.state().unwrap().rfbm.unwrap()), want, "{f}");
            // And back again, byte-exact, with nothing to drop or give.
            let again = write(f, &c, &lay, &l, &opts).unwrap();
            assert_eq!(again, bytes, "{f} round trip");
        }
        for g in Format::ALL.into_iter().filter(|g| g.writable()) {
            let lay = c.layout.clone().unwrap_or_else(|| l.clone());
            match write(g, &c, &lay, &l, &opts) {
                Ok(b) => {
                    let d = read(g, &b, &l, &opts).unwrap();
                    if let (Some(i), Some(_)) = (d.state().and_then(|s| s.image.as_ref()), image) {
                        let lay2 = d.layout.clone().unwrap_or_else(|| l.clone());
                        assert_eq!(values(i, &lay2, accum), want, "{f} -> {g}");
                    }
                }
                Err(e) => assert!(image.is_none() || g == Format::KvmXsave, "{f} -> {g}: {e}"),
            }
        }
    }
}

#[test]
fn truncation_and_corruption_never_panic() {
    let l = skx();
    let accum = Xfeatures(0x2FF);
    let img = standard(&l, accum, Xfeatures(0x2E7), 5);
    let src = Contents::one(Format::Image, State::new(Some(img), Some(accum)).with_xcr0(accum).with_accum(accum));
    let opts = lenient(accum);
    for f in Format::ALL.into_iter().filter(|f| f.writable() && *f != Format::Image) {
        let bytes = write(f, &src, &l, &l, &opts).unwrap();
        for cut in (0..bytes.len()).step_by(7).chain([bytes.len() - 1]) {
            if f == Format::XsaveLayout && cut % 16 == 0 {
                continue; // fewer entries is a valid note
            }
            let r = read(f, &bytes[..cut], &l, &opts);
            assert!(r.is_err(), "{f} truncated to {cut} accepted");
        }
        let mut longer = bytes.clone();
        longer.extend_from_slice(&[0xAA; 64]);
        assert!(read(f, &longer, &l, &opts).is_err(), "{f} oversized accepted");
        for i in 0..bytes.len().min(700) {
            let mut b = bytes.clone();
            b[i] ^= 0xFF;
            let _ = read(f, &b, &l, &opts);
            let _ = detect(&b, &l);
        }
    }
}

/// Issue 11 item 2: "no xsave state" (the 16-byte blob, an empty or 16-byte PV record) reads
/// as a state without image, and writes as each target's own form or is refused.
#[test]
fn no_xsave_state_reads_and_writes_as_each_formats_own_form() {
    let l = skx();
    let none = DomctlBlob::NO_STATE.to_bytes();
    let c = read(Format::XenDomctl, &none, &l, &Options::default()).unwrap();
    assert!(c.state().unwrap().is_no_xsave_state());
    let empty_pv = PvVcpuXsave { vcpu: 5, reserved: 0, blob: None }.to_bytes();
    let p = read(Format::XenPv, &empty_pv, &l, &Options::default()).unwrap();
    let st = p.state().unwrap();
    assert!(st.is_no_xsave_state());
    assert_eq!(st.id, Some(StateId::Vcpu(5)));
    // Xen's PV save side wraps the 16-byte blob; the vCPU survives.
    let out = write(Format::XenPv, &p, &l, &l, &Options::default()).unwrap();
    assert_eq!(out, PvVcpuXsave { vcpu: 5, reserved: 0, blob: Some(DomctlBlob::NO_STATE) }.to_bytes());
    assert_eq!(write(Format::FcBlob, &c, &l, &l, &Options::default()).unwrap(), alloc::vec![0u8; 16]);
    let drop_vcpu = Options { drop: FieldSet::NONE.with(Field::Vcpu), ..Options::default() };
    assert_eq!(write(Format::XenDomctl, &p, &l, &l, &drop_vcpu).unwrap(), none);
    for f in [Format::XenHvm, Format::Image, Format::KvmXsave, Format::NtXstate, Format::SigFrame, Format::Portable] {
        let e = write(f, &c, &l, &l, &Options { vcpu: Some(0), ..Options::default() }).unwrap_err();
        assert_eq!(e.rule, Rule::NoStateForm, "{f}");
        assert!(e.to_string().contains("no xsave state"), "{e}");
    }
}

/// Issue 11 items 5 and 6: xcr0, xcr0_accum and the vCPU survive every conversion that can
/// hold them; a field the target cannot hold is refused unless dropped; the vCPU number never
/// saturates into an HVM instance.
#[test]
fn xen_fields_survive_or_are_named() {
    let l = skx();
    let img = standard(&l, Xfeatures(0x7), Xfeatures(0x1), 3);
    let blob = DomctlBlob { xcr0: Xfeatures(0x1), xcr0_accum: Xfeatures(0x7), image: Some(&img) }.to_bytes();
    let hvm = HvmCpuXsave {
        vcpu: 3,
        xfeature_mask: Xfeatures(0x2FF),
        xcr0: Xfeatures(0x1),
        xcr0_accum: Xfeatures(0x7),
        image: &img,
    }
    .to_bytes();
    let o = Options::default();
    let c = read(Format::XenHvm, &hvm, &l, &o).unwrap();
    let st = c.state().unwrap();
    assert_eq!((st.xcr0, st.accum, st.vcpu()), (Some(Xfeatures(0x1)), Some(Xfeatures(0x7)), Some(3)));
    // HVM -> PV: the instance is the vcpu_id, the masks as they were.
    let pv = write(Format::XenPv, &c, &l, &l, &o).unwrap();
    let r = PvVcpuXsave::parse(&pv, &l, &XenHost::of(&l)).unwrap();
    let b = r.blob.unwrap();
    assert_eq!((r.vcpu, b.xcr0, b.xcr0_accum), (3, Xfeatures(0x1), Xfeatures(0x7)));
    // ... and back, byte for byte (the saving host's xfeature_mask kept on the same host).
    let back = write(Format::XenHvm, &read(Format::XenPv, &pv, &l, &o).unwrap(), &l, &l, &o).unwrap();
    assert_eq!(back, hvm);
    // HVM -> domctl: the blob has no vCPU.
    let e = write(Format::XenDomctl, &c, &l, &l, &o).unwrap_err();
    assert_eq!((e.rule, e.detail.clone()), (Rule::NotHeld, Detail::Field(Field::Vcpu)));
    let d = write(Format::XenDomctl, &c, &l, &l, &Options { drop: FieldSet::NONE.with(Field::Vcpu), ..o }).unwrap();
    assert_eq!(d, blob);
    // domctl -> HVM: a vCPU is needed.
    let cb = read(Format::XenDomctl, &blob, &l, &o).unwrap();
    assert_eq!(write(Format::XenHvm, &cb, &l, &l, &o).unwrap_err().rule, Rule::NeedsField);
    assert_eq!(write(Format::XenHvm, &cb, &l, &l, &Options { vcpu: Some(3), ..o }).unwrap(), hvm);
    // domctl -> NT_X86_XSTATE: xcr0_accum is not held.
    let e = write(Format::NtXstate, &cb, &l, &l, &o).unwrap_err();
    assert_eq!(e.detail, Detail::Field(Field::Accum));
    assert!(e.to_string().contains("xcr0_accum"), "{e}");
    let n = write(Format::NtXstate, &cb, &l, &l, &Options { drop: FieldSet::NONE.with(Field::Accum), ..o }).unwrap();
    assert_eq!(NtXstate::parse(&n, &l).unwrap().xcr0, Xfeatures(0x1));
    // PV vcpu_id 70000 does not fit an HVM instance (u16): refused, not saturated.
    let big =
        PvVcpuXsave { vcpu: 70000, reserved: 0, blob: Some(DomctlBlob::parse(&blob, &l, &XenHost::of(&l)).unwrap()) };
    let cbig = read(Format::XenPv, &big.to_bytes(), &l, &o).unwrap();
    let e = write(Format::XenHvm, &cbig, &l, &l, &o).unwrap_err();
    assert_eq!(e.rule, Rule::NotHeld);
    assert!(e.to_string().contains("vcpu"), "{e}");
    // The PV reserved word is carried as found.
    let mut odd = big;
    (odd.vcpu, odd.reserved) = (1, 0xDEAD);
    let bytes = odd.to_bytes();
    assert_eq!(write(Format::XenPv, &read(Format::XenPv, &bytes, &l, &o).unwrap(), &l, &l, &o).unwrap(), bytes);
}

/// Issue 12: bytes 464..471 of a kvm_xsave hold the host's supported mask, not the guest's
/// XCR0. Reading does not report it as XCR0; converting to a format that records XCR0 is
/// refused without the guest's (from KVM_GET_XCRS), and uses it when given.
#[test]
fn kvm_xsave_does_not_record_the_guests_xcr0() {
    let l = fixtures::layout(AMD_ZEN4);
    let mut buf = standard(&l, Xfeatures(0x2E7), Xfeatures(0x3), 8).to_vec();
    buf.resize(KVM_XSAVE_SIZE, 0);
    buf[464..472].copy_from_slice(&0x2E7u64.to_le_bytes()); // what KVM_GET_XSAVE writes
    let c = read(Format::KvmXsave, &buf, &l, &Options::default()).unwrap();
    assert_eq!(c.state().unwrap().xcr0, None);
    let e = write(Format::XenDomctl, &c, &l, &l, &Options::default()).unwrap_err();
    assert_eq!((e.rule, e.detail.clone()), (Rule::NeedsField, Detail::Field(Field::Xcr0)));
    // KVM_SET_XCRS 0x7: the guest's XCR0, and the least xcr0_accum its state allows.
    let given = Options { xcr0: Some(Xfeatures(0x7)), ..Options::default() };
    let c = read(Format::KvmXsave, &buf, &l, &given).unwrap();
    let out = write(Format::XenDomctl, &c, &l, &l, &given).unwrap();
    let b = DomctlBlob::parse(&out, &l, &XenHost::of(&l)).unwrap();
    assert_eq!((b.xcr0, b.xcr0_accum), (Xfeatures(0x7), Xfeatures(0x7)));
    assert_eq!(out.len(), 16 + 832);
}

/// Issue 12: record errors chain to the image layer's, and name the errno of the consumer.
#[test]
fn record_errors_chain_and_carry_the_consumers_errno() {
    use crate::image::validate::Errno;
    let l = skx();
    let img = standard(&l, Xfeatures(0x7), Xfeatures(0x7), 1);
    let mut bytes = DomctlBlob { xcr0: Xfeatures(0x7), xcr0_accum: Xfeatures(0x7), image: Some(&img) }.to_bytes();
    bytes[16 + 540] = 1;
    let e = DomctlBlob::parse(&bytes, &l, &XenHost::of(&l)).unwrap_err();
    assert_eq!(e.errno(), Some(Errno::Eio));
    let src = ::core::error::Error::source(&e).expect("the image layer's error");
    assert!(src.to_string().contains("reserved header bytes"), "{src}");
    let e = DomctlBlob::parse(&bytes[..100], &l, &XenHost::of(&l)).unwrap_err();
    assert_eq!(e.errno(), Some(Errno::Einval));
    let hvm =
        HvmCpuXsave { vcpu: 0, xfeature_mask: Xfeatures(7), xcr0: Xfeatures(7), xcr0_accum: Xfeatures(7), image: &img };
    let mut h = hvm.to_bytes();
    h.push(1);
    let blen = (h.len() - 8) as u32;
    h[4..8].copy_from_slice(&blen.to_le_bytes());
    let e = HvmCpuXsave::parse(&h, &l, &XenHost::of(&l)).unwrap_err();
    assert_eq!((e.rule, e.errno()), (Rule::TailNotZero, Some(Errno::Eopnotsupp)));
    let e = HvmCpuXsave::parse(&h[..h.len() - 1], &l, &XenHost::of(&l)).unwrap_err();
    assert_eq!((e.rule, e.errno()), (Rule::LengthField, Some(Errno::Enodata)));
    let pv = PvVcpuXsave { vcpu: 0, reserved: 0, blob: None }.to_bytes();
    let mut bad = pv.clone();
    bad[0] = 7;
    assert_eq!(PvVcpuXsave::parse(&bad, &l, &XenHost::of(&l)).unwrap_err().errno(), None, "libxenguest has none");
}

/// Issue 11 item 7: the guest maxima bound xcr0_accum in validate_xstate().
#[test]
fn xen_guest_maxima_bound_xcr0_accum() {
    use crate::policy::XenGuest;
    let l = skx();
    let img = standard(&l, Xfeatures(0x2FF), Xfeatures(0x3), 2);
    let pkru_mpx = DomctlBlob { xcr0: Xfeatures(0x2FF), xcr0_accum: Xfeatures(0x2FF), image: Some(&img) }.to_bytes();
    let ok = |g| DomctlBlob::parse(&pkru_mpx, &l, &XenHost::for_guest(&l, g)).is_ok();
    assert!(!ok(XenGuest::Pv) && !ok(XenGuest::HvmShadow) && ok(XenGuest::HvmHap));
    let e = DomctlBlob::parse(&pkru_mpx, &l, &XenHost::for_guest(&l, XenGuest::HvmShadow)).unwrap_err();
    assert!(e.to_string().contains("pkru") && e.to_string().contains("EINVAL"), "{e}");
}

/// A core with one PT_NOTE of alignment `p_align` holding an NT_PRSTATUS ("CORE", pid at 32)
/// and an NT_X86_XSTATE ("LINUX") of `desc`.
fn core_with_notes(p_align: u64, desc: &[u8]) -> Vec<u8> {
    let a = if p_align == 8 { 8 } else { 4 };
    let note = |seg: &mut Vec<u8>, name: &[u8], ty: u32, d: &[u8]| {
        let start = seg.len();
        seg.extend_from_slice(&(name.len() as u32).to_le_bytes());
        seg.extend_from_slice(&(d.len() as u32).to_le_bytes());
        seg.extend_from_slice(&ty.to_le_bytes());
        seg.extend_from_slice(name);
        seg.resize(start + (seg.len() - start).div_ceil(a) * a, 0);
        seg.extend_from_slice(d);
        seg.resize(start + (seg.len() - start).div_ceil(a) * a, 0);
    };
    let mut seg = Vec::new();
    let mut prstatus = alloc::vec![0u8; 336];
    prstatus[32..36].copy_from_slice(&4242u32.to_le_bytes());
    note(&mut seg, b"CORE\0", 1, &prstatus);
    note(&mut seg, b"LINUX\0", super::linux::NT_X86_XSTATE, desc);
    let mut f = alloc::vec![0u8; 64 + 56];
    f[..4].copy_from_slice(b"\x7fELF");
    (f[4], f[5], f[6]) = (2, 1, 1);
    f[16..18].copy_from_slice(&4u16.to_le_bytes());
    f[18..20].copy_from_slice(&62u16.to_le_bytes());
    f[20..24].copy_from_slice(&1u32.to_le_bytes());
    f[32..40].copy_from_slice(&64u64.to_le_bytes());
    f[52..54].copy_from_slice(&64u16.to_le_bytes());
    f[54..56].copy_from_slice(&56u16.to_le_bytes());
    f[56..58].copy_from_slice(&1u16.to_le_bytes());
    let ph = 64;
    f[ph..ph + 4].copy_from_slice(&4u32.to_le_bytes()); // PT_NOTE
    f[ph + 8..ph + 16].copy_from_slice(&120u64.to_le_bytes());
    f[ph + 32..ph + 40].copy_from_slice(&(seg.len() as u64).to_le_bytes());
    f[ph + 48..ph + 56].copy_from_slice(&p_align.to_le_bytes());
    f.extend_from_slice(&seg);
    f
}

#[test]
fn rewritten_notes_keep_the_segment_alignment() {
    // fuzz record_core (crash-6220bc2f): a PT_NOTE with p_align 8 pads names and descriptors
    // to 8 bytes; the rewriter padded to 4 and the copy did not read.
    for p_align in [4, 8] {
        let desc: Vec<u8> = (0..577u32).map(|i| i as u8).collect();
        let core = core_with_notes(p_align, &desc);
        let notes = super::elf::read_core(&core).unwrap();
        assert_eq!((notes.threads[0].tid, notes.threads[0].xstate), (Some(4242), &desc[..]));
        let longer: Vec<u8> = (0..581u32).map(|i| (i * 7) as u8).collect();
        let copy =
            super::elf::rewrite_notes(&core, |name, _, _| Ok((name == b"LINUX").then(|| longer.clone()))).unwrap();
        let again = super::elf::read_core(&copy).unwrap_or_else(|e| panic!("p_align {p_align}: {e}"));
        assert_eq!((again.threads[0].tid, again.threads[0].xstate), (Some(4242), &longer[..]), "p_align {p_align}");
        let same = super::elf::rewrite_notes(&core, |_, _, _| Ok(None)).unwrap();
        assert_eq!(same, core, "nothing replaced: the file as it was");
    }
}

/// MXCSR at read time is checked against the mask the record's MXCSR_MASK field proves: the
/// saving CPU's where the field is non-zero, none where it is zero. A zero field was written
/// by software (QEMU builds its buffers so, gdb's gcore too): it says nothing of the CPU, and
/// Linux and KVM check MXCSR against the restoring host's mask, not the field (a DAZ MXCSR
/// with a zero field passes PTRACE_SETREGSET on this kind of machine). Which host restores is
/// the consumer's question (`validate --profile linux|kvm --mxcsr-mask`).
#[test]
fn mxcsr_is_read_against_the_mask_the_field_proves() {
    let l = zen4();
    let mut img = standard(&l, Xfeatures(0xE7), Xfeatures(0x3), 4);
    img[24..28].copy_from_slice(&0x9FC0u32.to_le_bytes()); // DAZ (bit 6) set
    let opts = Options::default();
    for field in [0u32, 0xFFBF] {
        img[28..32].copy_from_slice(&field.to_le_bytes());
        let note = NtXstate::build(&img, Xfeatures(0xE7), &l).unwrap();
        let kvm = KvmXsave::build(&img, KVM_XSAVE_SIZE).unwrap();
        let (n, k) = (NtXstate::parse(&note, &l), read(Format::KvmXsave, &kvm, &l, &opts));
        if field == 0 {
            assert!(n.is_ok(), "{n:?}");
            assert!(k.is_ok(), "{:?}", k.err());
        } else {
            // A CPU whose mask lacks DAZ never saved this MXCSR.
            assert_eq!(n.unwrap_err().rule, Rule::Image);
            assert_eq!(k.unwrap_err().rule, Rule::Image);
        }
    }
    // The consumer's own mask, where given, decides.
    img[28..32].copy_from_slice(&0u32.to_le_bytes());
    let kvm = KvmXsave::build(&img, KVM_XSAVE_SIZE).unwrap();
    let strict = Options { mxcsr_mask: Some(0xFFBF), ..Options::default() };
    assert_eq!(read(Format::KvmXsave, &kvm, &l, &strict).unwrap_err().rule, Rule::Image);
}
