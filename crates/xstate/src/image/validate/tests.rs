use super::*;
use crate::fixtures::{AMD_ZEN4, AVX_ONLY, INTEL_ICELAKE, layout};
use crate::image::ImageBuf;
use alloc::string::ToString;

const XCR0: Xfeatures = Xfeatures(0xE7);
const BIT63: u64 = 1 << 63;

fn img(xstate_bv: u64, xcomp_bv: u64, len: usize) -> ImageBuf {
    let mut b = ImageBuf::init(len, Xfeatures(xcomp_bv));
    b.set_xstate_bv(Xfeatures(xstate_bv));
    b
}

fn rule(r: Result<(), ValidationError>) -> Option<ValidationRule> {
    r.err().map(|e| e.rule)
}

#[test]
fn hardware_standard_rules() {
    let l = layout(AMD_ZEN4);
    let ctx = Context::new(XCR0);
    let v = |b: &[u8]| rule(validate(b, &l, Profile::Hardware, &ctx));
    let good = img(0xE7, 0, 2432);
    assert_eq!(v(&good), None);
    assert_eq!(v(&good[..100]), Some(ValidationRule::TooShort));
    assert_eq!(v(&good[..2431]), Some(ValidationRule::Truncated));
    let mut b = good.clone();
    b[520] = 1;
    assert_eq!(v(&b), Some(ValidationRule::XcompBvNonZero));
    let mut b = good.clone();
    b[535] = 1;
    let e = validate(&b, &l, Profile::Hardware, &ctx).unwrap_err();
    assert_eq!(e.detail, ValidationDetail::Byte { offset: 535, value: 1 });
    assert!(e.to_string().contains("byte 535"), "{e}");
    // Bytes 536..575 are not checked by the standard form (Intel and AMD measured).
    let mut b = good.clone();
    b[575] = 0x80;
    assert_eq!(v(&b), None);
    assert_eq!(rule(validate(&b, &l, Profile::Linux, &ctx)), Some(ValidationRule::ReservedHeader));
    assert_eq!(v(&img(BIT63 | 0x3, 0, 2432)), Some(ValidationRule::XstateBvOutsideXcr0));
    assert_eq!(v(&img(0x203, 0, 2432)), Some(ValidationRule::XstateBvOutsideXcr0));
    // MXCSR: loaded whatever XSTATE_BV says in the standard form.
    let mut b = img(0, 0, 2432);
    b[24..28].copy_from_slice(&0x2_0000u32.to_le_bytes());
    assert_eq!(v(&b), Some(ValidationRule::MxcsrReserved));
    assert_eq!(rule(validate(&b, &l, Profile::Hardware, &ctx.with_mxcsr_mask_field(0x2FFFF))), None);
    assert_eq!(rule(validate(&b, &l, Profile::Hardware, &Context::new(Xfeatures(1)))), None);
    // Linux checks MXCSR only with x87, SSE or AVX in XSTATE_BV.
    assert_eq!(rule(validate(&b, &l, Profile::Linux, &ctx)), None);
    b.set_xstate_bv(Xfeatures(0x4));
    assert_eq!(rule(validate(&b, &l, Profile::Linux, &ctx)), Some(ValidationRule::MxcsrReserved));
    b.set_xstate_bv(Xfeatures(0x20));
    assert_eq!(rule(validate(&b, &l, Profile::Linux, &ctx)), None);
}

#[test]
fn hardware_compacted_rules() {
    let l = layout(AMD_ZEN4);
    let ctx = Context::new(XCR0);
    let v = |b: &[u8]| rule(validate(b, &l, Profile::Hardware, &ctx));
    assert_eq!(v(&img(0xE7, BIT63 | 0xE7, 2432)), None);
    assert_eq!(v(&img(0, BIT63, 576)), None);
    assert_eq!(v(&img(0x3, BIT63, 576)), Some(ValidationRule::XstateBvOutsideXcompBv));
    assert_eq!(v(&img(0x1, BIT63 | 0x4, 832)), Some(ValidationRule::XstateBvOutsideXcompBv));
    assert_eq!(v(&img(BIT63 | 0x3, BIT63 | 0x3, 576)), Some(ValidationRule::XstateBvOutsideXcompBv));
    assert_eq!(v(&img(0, BIT63 | 0x8, 576)), Some(ValidationRule::XcompBvOutsideRfbm));
    assert_eq!(v(&img(0, BIT63 | 1 << 62, 576)), Some(ValidationRule::XcompBvOutsideRfbm));
    let mut b = img(0x3, BIT63 | 0x3, 576);
    b[574] = 1;
    assert_eq!(v(&b), Some(ValidationRule::ReservedHeader));
    // MXCSR only with XSTATE_BV[1].
    for bv in 0..8u64 {
        let mut b = img(bv, BIT63 | 0x7, 832);
        b[24..28].copy_from_slice(&0xFFFF_0000u32.to_le_bytes());
        assert_eq!(v(&b), (bv & 2 != 0).then_some(ValidationRule::MxcsrReserved), "XSTATE_BV {bv}");
    }
    // Footprint: the Intel rule, compacted_size(XCOMP_BV & RFBM), whatever XSTATE_BV says.
    assert_eq!(v(&img(0, BIT63 | 0xE7, 2431)), Some(ValidationRule::Truncated));
    // No compaction on the CPU.
    let old = layout(AVX_ONLY);
    let e = validate(&img(0, BIT63 | 0x7, 832), &old, Profile::Hardware, &Context::new(Xfeatures(7))).unwrap_err();
    assert_eq!(e.rule, ValidationRule::CompactionUnsupported);
    // Linux, KVM and Xen take no compacted image.
    for p in [Profile::Linux, Profile::Kvm] {
        let e = validate(&img(0x3, BIT63 | 0x3, 4096), &l, p, &ctx).unwrap_err();
        assert_eq!((e.rule, e.errno()), (ValidationRule::CompactedNotAccepted, Some(Errno::Einval)));
    }
    let mut hvm = ctx;
    hvm.xen.caller = XenCaller::HvmLoad;
    let e = validate(&img(0x3, BIT63 | 0x3, 4096), &l, Profile::Xen, &hvm).unwrap_err();
    assert_eq!((e.rule, e.errno()), (ValidationRule::CompactedNotAccepted, Some(Errno::Eopnotsupp)));
}

#[test]
fn xrstors_needs_compacted_and_takes_xss() {
    let l = layout(AMD_ZEN4);
    let mut ctx = Context::new(XCR0);
    ctx.xss = Xfeatures(0x800);
    assert_eq!(
        rule(validate(&img(0, 0, 4096), &l, Profile::Hardware, &ctx)),
        Some(ValidationRule::XrstorsStandardForm)
    );
    assert_eq!(rule(validate(&img(0x803, BIT63 | 0x8E7, 4096), &l, Profile::Hardware, &ctx)), None);
    assert_eq!(
        rule(validate(&img(0x803, BIT63 | 0x8E7, 4096), &l, Profile::Hardware, &Context::new(XCR0))),
        Some(ValidationRule::XcompBvOutsideRfbm)
    );
}

#[test]
fn kvm_and_linux() {
    let l = layout(INTEL_ICELAKE);
    let mut ctx = Context::new(Xfeatures(0x2E7));
    ctx.kvm_supported = Some(XCR0);
    let b = img(0x203, 0, 4096);
    assert_eq!(rule(validate(&b, &l, Profile::Linux, &ctx)), None);
    let e = validate(&b, &l, Profile::Kvm, &ctx).unwrap_err();
    assert_eq!(e.rule, ValidationRule::KvmUnsupported);
    assert_eq!(
        e.detail,
        ValidationDetail::Bits { field: "XSTATE_BV", value: Xfeatures(0x203), bits: Xfeatures(0x200) }
    );
    // PTRACE_SETREGSET's lengths (measured: xstate-hw tests/linux_regset_sizes.rs): whole
    // 8-byte words (EINVAL), at least the task's user size, standard_size(0x2e7) = 2696 here
    // (EFAULT); a longer buffer is cut to that size.
    assert_eq!(rule(validate(&b[..2695], &l, Profile::Linux, &ctx)), Some(ValidationRule::RegsetWords));
    assert_eq!(validate(&b[..2695], &l, Profile::Linux, &ctx).unwrap_err().errno(), Some(Errno::Einval));
    assert_eq!(rule(validate(&b[..2688], &l, Profile::Linux, &ctx)), Some(ValidationRule::Truncated));
    assert_eq!(validate(&b[..2688], &l, Profile::Linux, &ctx).unwrap_err().errno(), Some(Errno::Efault));
    assert_eq!(rule(validate(&b[..2696], &l, Profile::Linux, &ctx)), None);
    assert_eq!(
        rule(validate(&b[..1000], &l, Profile::Linux, &Context::new(Xfeatures(0x3)))),
        Some(ValidationRule::XstateBvOutsideXcr0)
    );
    // A 576- or 1000-byte buffer is not a task's state (it was accepted before issue 10).
    assert_eq!(rule(validate(&img(0x3, 0, 1000), &l, Profile::Linux, &ctx)), Some(ValidationRule::Truncated));
    assert_eq!(rule(validate(&img(0x3, 0, 576), &l, Profile::Linux, &ctx)), Some(ValidationRule::Truncated));
    // KVM_SET_XSAVE reads a whole struct kvm_xsave (4096 bytes here): nothing shorter is one.
    let mut kvm = ctx;
    kvm.kvm_supported = Some(Xfeatures(0x2E7));
    assert_eq!(rule(validate(&img(0x3, 0, 4096), &l, Profile::Kvm, &kvm)), None);
    assert_eq!(rule(validate(&img(0x3, 0, 576), &l, Profile::Kvm, &kvm)), Some(ValidationRule::Truncated));
    assert_eq!(rule(validate(&img(0x3, 0, 2696), &l, Profile::Kvm, &kvm)), Some(ValidationRule::Truncated));
    kvm.kvm_buffer = Some(2696);
    assert_eq!(rule(validate(&img(0x3, 0, 2696), &l, Profile::Kvm, &kvm)), None);
}

#[test]
fn xen_order_and_errnos() {
    let l = layout(INTEL_ICELAKE);
    let b = img(0x7, 0, 2696);
    let mut ctx = Context::new(Xfeatures(0x7));
    ctx.xen.xcr0_accum = Some(Xfeatures(0x2E7));
    assert_eq!(rule(validate(&b, &l, Profile::Xen, &ctx)), None);
    assert_eq!(rule(validate(&b[..2600], &l, Profile::Xen, &ctx)), Some(ValidationRule::XenSizeMismatch));
    let mut hvm = ctx;
    hvm.xen.caller = XenCaller::HvmLoad;
    assert_eq!(rule(validate(&b[..2600], &l, Profile::Xen, &hvm)), Some(ValidationRule::Truncated));
    let e = validate(&img(0x7, 0, 2696), &l, Profile::Xen, &Context::new(Xfeatures(0x3))).unwrap_err();
    assert_eq!((e.rule, e.errno()), (ValidationRule::XenXstateBvOutsideAccum, Some(Errno::Einval)));
    let e = validate(&b, &l, Profile::Xen, &Context::new(Xfeatures(0))).unwrap_err();
    assert_eq!(e.rule, ValidationRule::XenXstateBvOutsideAccum);
    let e = validate(&img(0, 0, 2696), &l, Profile::Xen, &Context::new(Xfeatures(0))).unwrap_err();
    assert_eq!((e.rule, e.errno()), (ValidationRule::XenInvalidXcr0, Some(Errno::Einval)));
    let mut c2 = hvm;
    c2.xen.host = Some(Xfeatures(0xE7));
    let e = validate(&b, &l, Profile::Xen, &c2).unwrap_err();
    assert_eq!((e.rule, e.errno()), (ValidationRule::XenAccumOutsideHost, Some(Errno::Eopnotsupp)));
    let mut c3 = ctx;
    c3.xen.policy_max = Some(Xfeatures(0x7));
    assert_eq!(rule(validate(&b, &l, Profile::Xen, &c3)), Some(ValidationRule::XenAccumOutsidePolicy));
    let mut r = b.clone();
    r[560] = 1;
    let e = validate(&r, &l, Profile::Xen, &ctx).unwrap_err();
    assert_eq!((e.rule, e.errno()), (ValidationRule::ReservedHeader, Some(Errno::Eio)));
    // Xen does not check MXCSR.
    let mut m = b.clone();
    m[24..28].copy_from_slice(&u32::MAX.to_le_bytes());
    assert_eq!(rule(validate(&m, &l, Profile::Xen, &ctx)), None);
}

/// Issue 11 item 1: an image longer than standard_size(xcr0_accum) with a non-zero tail (Haswell,
/// xcr0 = xcr0_accum = 0x1, 577 bytes ending in 0x01). The domctl path takes exactly
/// standard_size(xcr0_accum) bytes (-EINVAL otherwise, a larger image than the host's first);
/// the HVM loader a longer one only with a zero tail (-EOPNOTSUPP "non-zero data").
#[test]
fn xen_size_rule_follows_the_caller() {
    let l = layout(AVX_ONLY);
    let mut ctx = Context::new(Xfeatures(0x1));
    ctx.xen.xcr0_accum = Some(Xfeatures(0x1));
    let mut long = img(0x1, 0, 577);
    long[576] = 0x01;
    let mut zero_tail = long.clone();
    zero_tail[576] = 0;
    let exact = img(0x1, 0, 576);
    let e = validate(&long, &l, Profile::Xen, &ctx).unwrap_err();
    assert_eq!((e.rule, e.errno()), (ValidationRule::XenSizeMismatch, Some(Errno::Einval)));
    assert_eq!(e.detail, ValidationDetail::Length { len: 577, needed: 576 });
    assert_eq!(rule(validate(&zero_tail, &l, Profile::Xen, &ctx)), Some(ValidationRule::XenSizeMismatch));
    assert_eq!(rule(validate(&exact, &l, Profile::Xen, &ctx)), None);
    // Larger than the host's maximum (832): -EINVAL before validate_xstate() looks at XCOMP_BV.
    let mut huge = img(0x1, BIT63 | 0x1, 900);
    let e = validate(&huge, &l, Profile::Xen, &ctx).unwrap_err();
    assert_eq!((e.rule, e.errno()), (ValidationRule::XenOversized, Some(Errno::Einval)));
    let mut hvm = ctx;
    hvm.xen.caller = XenCaller::HvmLoad;
    let e = validate(&long, &l, Profile::Xen, &hvm).unwrap_err();
    assert_eq!((e.rule, e.errno()), (ValidationRule::XenTailNotZero, Some(Errno::Eopnotsupp)));
    assert_eq!(e.detail, ValidationDetail::Byte { offset: 576, value: 1 });
    assert_eq!(rule(validate(&zero_tail, &l, Profile::Xen, &hvm)), None);
    assert_eq!(rule(validate(&exact, &l, Profile::Xen, &hvm)), None);
    // The HVM loader runs validate_xstate() before the tail: XCOMP_BV is -EOPNOTSUPP there.
    huge[900 - 1] = 0;
    let e = validate(&huge, &l, Profile::Xen, &hvm).unwrap_err();
    assert_eq!(e.rule, ValidationRule::CompactedNotAccepted);
}

/// Issue 11 item 3: without a host mask the xen profile uses Xen's, CPUID ∩ XCNTXT_MASK, so
/// LWP (AMD family 15h) is never accepted in xcr0_accum: the guest maxima lack it (-EINVAL).
#[test]
fn xen_default_host_and_policy_are_xens() {
    let l = layout(crate::fixtures::AMD_FAM15H_LWP);
    let accum = Xfeatures(0x4000_0000_0000_0007);
    let mut ctx = Context::new(Xfeatures(0x7));
    ctx.xen.xcr0_accum = Some(accum);
    // The domctl's size limit follows the host mask: 16 + 832, not 16 + 960.
    let e = validate(&img(0x7, 0, 0x3C0), &l, Profile::Xen, &ctx).unwrap_err();
    assert_eq!((e.rule, e.errno()), (ValidationRule::XenOversized, Some(Errno::Einval)));
    assert_eq!(e.detail, ValidationDetail::Length { len: 0x3C0, needed: 0x340 });
    ctx.xen.caller = XenCaller::HvmLoad;
    let e = validate(&img(0x7, 0, 0x3C0), &l, Profile::Xen, &ctx).unwrap_err();
    assert_eq!((e.rule, e.errno()), (ValidationRule::XenAccumOutsidePolicy, Some(Errno::Einval)));
    // Even under a policy that allows it, Xen's host never enables LWP (-EOPNOTSUPP).
    ctx.xen.policy_max = Some(accum);
    let e = validate(&img(0x7, 0, 0x3C0), &l, Profile::Xen, &ctx).unwrap_err();
    assert_eq!((e.rule, e.errno()), (ValidationRule::XenAccumOutsideHost, Some(Errno::Eopnotsupp)));
}
