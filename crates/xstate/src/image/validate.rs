//! Would a consumer accept this image? One entry point, [`validate()`], four profiles:
//!
//! - [`Profile::Hardware`]: XRSTOR with RFBM = XCR0 (XRSTORS with RFBM = XCR0 | XSS when the
//!   context has XSS bits), exactly the #GP conditions of the SDM (Vol. 1 §13.8.1, §13.12) as
//!   measured on Intel and AMD (docs/HARDWARE.md), plus the rule that an image shorter than what
//!   the restore reads is invalid.
//! - [`Profile::Linux`]: what the kernel checks before copying a user buffer into a task's
//!   state (ptrace NT_X86_XSTATE, KVM_SET_XSAVE): `-EINVAL` for XSTATE_BV outside the task's
//!   user features, XCOMP_BV ≠ 0, non-zero reserved header bytes, or MXCSR reserved bits when
//!   x87, SSE or AVX is in use.
//! - [`Profile::Kvm`]: KVM_SET_XSAVE: the Linux rules with XSTATE_BV bounded by the
//!   KVM-supported XCR0.
//! - [`Profile::Xen`]: Xen's `validate_xstate()` (`-EINVAL`, `-EOPNOTSUPP`, `-EIO`, in that
//!   order) and its callers' size rule.
//!
//! Each failure is a [`ValidationError`] naming the [`ValidationRule`], the offending bits, byte offset or
//! value. The image may be of any length; a short one is an error, never a panic.

use core::fmt;

use super::header::{Form, Header, RESERVED_OFFSET};
use super::{Image, MIN_SIZE};
use crate::component::Component;
use crate::layout::Layout;
use crate::policy::xen::{XenGuest, xen_host_mask};
use crate::xcr0::{MaskError, catalogue_supervisor, check_xcr0, check_xcr0_supported, check_xss};
use crate::xfeatures::Xfeatures;

/// The consumer whose rules apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Profile {
    /// XRSTOR (or XRSTORS) on the CPU the layout describes.
    Hardware,
    /// The Linux kernel's user-buffer rules (ptrace, KVM's common path).
    Linux,
    /// KVM_SET_XSAVE.
    Kvm,
    /// Xen's `validate_xstate()` and its callers.
    Xen,
}

impl Profile {
    /// Every profile.
    pub const ALL: [Profile; 4] = [Profile::Hardware, Profile::Linux, Profile::Kvm, Profile::Xen];

    /// `"hardware"`, `"linux"`, `"kvm"` or `"xen"`.
    pub const fn name(self) -> &'static str {
        match self {
            Profile::Hardware => "hardware",
            Profile::Linux => "linux",
            Profile::Kvm => "kvm",
            Profile::Xen => "xen",
        }
    }

    /// The profile of a name.
    pub fn from_name(s: &str) -> Option<Profile> {
        Profile::ALL.into_iter().find(|p| p.name().eq_ignore_ascii_case(s))
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Which of Xen's callers of `validate_xstate()` the [`Profile::Xen`] size rule mirrors.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum XenCaller {
    /// `XEN_DOMCTL_setvcpuextstate` (xen/arch/x86/domctl.c): no image larger than
    /// standard_size(host `xfeature_mask`) (`-EINVAL`, checked first), then `validate_xstate()`,
    /// then exactly standard_size(xcr0_accum) bytes (`-EINVAL`): no short or long image, no
    /// zero-extension. The default: the toolstack's path for PV and HVM vCPUs alike.
    #[default]
    Domctl,
    /// `hvm_load_cpu_xsave_states()` (xen/arch/x86/hvm/hvm.c): `validate_xstate()`, then a longer
    /// image only if every byte past standard_size(xcr0_accum) is zero (`-EOPNOTSUPP`, "non-zero
    /// data", tolerating Xen ≤ 4.3.0's maximum-sized areas), and no shorter one (`-EINVAL`).
    HvmLoad,
}

impl XenCaller {
    /// `"domctl"` or `"hvm"`.
    pub const fn name(self) -> &'static str {
        match self {
            XenCaller::Domctl => "domctl",
            XenCaller::HvmLoad => "hvm",
        }
    }
}

/// Xen's view of a vCPU: the values `validate_xstate()` checks besides the header.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct XenContext {
    /// The accumulated XCR0 the image describes; default: the context's XCR0.
    pub xcr0_accum: Option<Xfeatures>,
    /// The domain policy's maximum XCR0 (`cpu_policy_xcr0_max()`); default: the largest
    /// maximum Xen offers any guest on this host, [`XenGuest::HvmHap`]'s.
    pub policy_max: Option<Xfeatures>,
    /// The host's enabled `xfeature_mask`; default: Xen's, CPUID ∩ `XCNTXT_MASK`
    /// ([`xen_host_mask`]).
    pub host: Option<Xfeatures>,
    /// Whose size rule applies.
    pub caller: XenCaller,
}

impl XenContext {
    /// The policy maximum in force: the given one, else [`XenGuest::HvmHap`]'s for `layout`.
    pub fn policy_max_for(&self, layout: &Layout) -> Xfeatures {
        self.policy_max.unwrap_or_else(|| XenGuest::HvmHap.max_xcr0(layout))
    }

    /// The host mask in force: the given one, else [`xen_host_mask`] of `layout`.
    pub fn host_for(&self, layout: &Layout) -> Xfeatures {
        self.host.unwrap_or_else(|| xen_host_mask(layout))
    }
}

/// What the consumer knows besides the image.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Context {
    /// XCR0 of the restoring context; for [`Profile::Linux`] the task's user features.
    pub xcr0: Xfeatures,
    /// IA32_XSS. Non-empty means the hardware profile models XRSTORS (compacted only, RFBM =
    /// XCR0 | XSS); the other profiles never carry supervisor state in images.
    pub xss: Xfeatures,
    /// The restoring CPU's MXCSR mask: the MXCSR_MASK field XSAVE/FXSAVE writes there (0 means
    /// 0xFFBF). Intel parts report 0xFFFF, AMD Zen 4 0x2FFFF. Default 0xFFFF.
    pub mxcsr_mask: u32,
    /// KVM's supported XCR0 (KVM_GET_SUPPORTED_CPUID 0xD.0); default: `xcr0`.
    pub kvm_supported: Option<Xfeatures>,
    /// The bytes KVM_SET_XSAVE reads (the vCPU's `uabi_size`: 4096, or KVM_CAP_XSAVE2's size
    /// once the guest may use more); default: the larger of 4096 and the standard size of the
    /// KVM-supported XCR0.
    pub kvm_buffer: Option<usize>,
    /// Xen's values.
    pub xen: XenContext,
}

impl Context {
    /// A context for XCR0 `xcr0`, XSS 0, MXCSR mask 0xFFFF.
    pub const fn new(xcr0: Xfeatures) -> Context {
        Context {
            xcr0,
            xss: Xfeatures(0),
            mxcsr_mask: 0xFFFF,
            kvm_supported: None,
            kvm_buffer: None,
            xen: XenContext { xcr0_accum: None, policy_max: None, host: None, caller: XenCaller::Domctl },
        }
    }

    /// The same context with a MXCSR mask as read from an MXCSR_MASK field (0 means 0xFFBF,
    /// SDM Vol. 1 §11.6.6).
    pub const fn with_mxcsr_mask_field(mut self, field: u32) -> Context {
        self.mxcsr_mask = crate::component::legacy::mxcsr_mask_of_field(field);
        self
    }
}

/// The rule an image breaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ValidationRule {
    /// Shorter than the 576 bytes of legacy region and header.
    TooShort,
    /// Shorter than the bytes the consumer reads (the restore footprint or the data it copies).
    Truncated,
    /// Standard form with a non-zero XCOMP_BV (hardware: #GP, SDM §13.8.1).
    XcompBvNonZero,
    /// Compacted image where the consumer only takes the standard form (Linux, KVM, Xen).
    CompactedNotAccepted,
    /// Reserved header bytes not zero (hardware: 528..535 in the standard form, 528..575 in
    /// the compacted form; Linux, KVM and Xen: 528..575).
    ReservedHeader,
    /// XSTATE_BV has a bit outside XCR0 (standard-form XRSTOR, bit 63 included) or outside the
    /// task's user features (Linux).
    XstateBvOutsideXcr0,
    /// Compacted XRSTOR on a CPU without compaction (CPUID 0xD.1 EAX\[1\] = 0).
    CompactionUnsupported,
    /// XCOMP_BV\[62:0\] has a bit outside XCR0 (XRSTOR) or XCR0 | XSS (XRSTORS).
    XcompBvOutsideRfbm,
    /// XSTATE_BV has a bit outside XCOMP_BV\[62:0\] (bits 0, 1 and 63 included).
    XstateBvOutsideXcompBv,
    /// XRSTORS restores only compacted images.
    XrstorsStandardForm,
    /// The MXCSR value to be loaded sets bits outside the CPU's MXCSR mask.
    MxcsrReserved,
    /// KVM: XSTATE_BV has a bit outside the KVM-supported XCR0.
    KvmUnsupported,
    /// Xen: XSTATE_BV has a bit outside xcr0_accum.
    XenXstateBvOutsideAccum,
    /// Xen: xcr0 has a bit outside xcr0_accum.
    XenXcr0OutsideAccum,
    /// Xen: xcr0_accum has a bit outside the domain policy's maximum.
    XenAccumOutsidePolicy,
    /// Xen: xcr0 or xcr0_accum breaks an XCR0 rule (`valid_xcr0()`, so 0 fails).
    XenInvalidXcr0,
    /// Xen: xcr0_accum has a bit the host has not enabled.
    XenAccumOutsideHost,
    /// Xen domctl: the image is larger than standard_size(host `xfeature_mask`).
    XenOversized,
    /// Xen domctl: the image is not exactly standard_size(xcr0_accum) bytes.
    XenSizeMismatch,
    /// Xen HVM load: a byte past standard_size(xcr0_accum) is not zero.
    XenTailNotZero,
    /// A mask names a component the layout does not enumerate, so no size can be computed.
    UnknownComponent,
    /// Linux ptrace: a regset buffer is a whole number of 8-byte words (ptrace_regset(): EINVAL).
    RegsetWords,
    /// The context's XCR0 or XSS is no value the CPU can hold (a component it does not
    /// enumerate, or an XCR0/XSS rule broken: XSETBV and WRMSR would #GP), so no restore
    /// with it exists to judge.
    InvalidMask,
}

impl ValidationRule {
    /// A short statement of the rule.
    pub const fn text(self) -> &'static str {
        match self {
            ValidationRule::TooShort => "an image holds at least the 576 bytes of legacy region and header",
            ValidationRule::Truncated => "the image must hold every byte the consumer reads",
            ValidationRule::XcompBvNonZero => "XCOMP_BV must be 0 in a standard-format image",
            ValidationRule::CompactedNotAccepted => "only standard-format images (XCOMP_BV = 0) are accepted",
            ValidationRule::ReservedHeader => "reserved header bytes must be zero",
            ValidationRule::XstateBvOutsideXcr0 => "XSTATE_BV must be a subset of XCR0",
            ValidationRule::CompactionUnsupported => "compacted XRSTOR needs CPUID 0xD.1 EAX[1] (XSAVEC)",
            ValidationRule::XcompBvOutsideRfbm => "XCOMP_BV[62:0] must be a subset of the enabled components",
            ValidationRule::XstateBvOutsideXcompBv => "XSTATE_BV must be a subset of XCOMP_BV[62:0]",
            ValidationRule::XrstorsStandardForm => "XRSTORS needs a compacted image (XCOMP_BV[63] = 1)",
            ValidationRule::MxcsrReserved => "MXCSR must not set bits outside the CPU's MXCSR mask",
            ValidationRule::KvmUnsupported => "XSTATE_BV must be a subset of the KVM-supported XCR0",
            ValidationRule::XenXstateBvOutsideAccum => "XSTATE_BV must be a subset of xcr0_accum",
            ValidationRule::XenXcr0OutsideAccum => "xcr0 must be a subset of xcr0_accum",
            ValidationRule::XenAccumOutsidePolicy => "xcr0_accum must be a subset of the policy's maximum XCR0",
            ValidationRule::XenInvalidXcr0 => "xcr0 and xcr0_accum must be valid XCR0 values",
            ValidationRule::XenAccumOutsideHost => "xcr0_accum must be a subset of the host's enabled xfeatures",
            ValidationRule::XenOversized => "the image must not exceed standard_size(host xfeature_mask)",
            ValidationRule::XenSizeMismatch => "the image must be exactly standard_size(xcr0_accum) bytes",
            ValidationRule::XenTailNotZero => "bytes past standard_size(xcr0_accum) must be zero",
            ValidationRule::UnknownComponent => "every component named must be enumerated by the layout",
            ValidationRule::RegsetWords => "a regset buffer is a whole number of 8-byte words",
            ValidationRule::InvalidMask => "XCR0 and XSS must be values the CPU can hold",
        }
    }
}

/// The errno a Linux or Xen consumer returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Errno {
    /// EINVAL.
    Einval,
    /// EFAULT (the kernel cannot read the bytes).
    Efault,
    /// EOPNOTSUPP (Xen).
    Eopnotsupp,
    /// EIO (Xen, reserved header bytes).
    Eio,
    /// ENODATA (Xen's HVM loader: the stream ends inside a record).
    Enodata,
}

impl Errno {
    /// The symbolic name.
    pub const fn name(self) -> &'static str {
        match self {
            Errno::Einval => "EINVAL",
            Errno::Efault => "EFAULT",
            Errno::Eopnotsupp => "EOPNOTSUPP",
            Errno::Eio => "EIO",
            Errno::Enodata => "ENODATA",
        }
    }
}

/// What is at fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ValidationDetail {
    /// Offending bits of a mask (`value` is the whole mask).
    Bits {
        /// The field: `"XSTATE_BV"`, `"XCOMP_BV"`, `"xcr0"`, ...
        field: &'static str,
        /// Its value.
        value: Xfeatures,
        /// The bits at fault.
        bits: Xfeatures,
    },
    /// A byte at an image offset.
    Byte {
        /// Image offset.
        offset: usize,
        /// Its value.
        value: u8,
    },
    /// MXCSR and the mask it was checked against.
    Mxcsr {
        /// The value that would be loaded.
        value: u32,
        /// The mask.
        mask: u32,
    },
    /// Image length and the bytes needed.
    Length {
        /// The image's length.
        len: usize,
        /// Bytes the consumer reads.
        needed: usize,
    },
    /// An XCR0 value breaking a rule.
    Mask(MaskError),
}

/// Why a consumer would refuse an image.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct ValidationError {
    /// The consumer.
    pub profile: Profile,
    /// The rule broken.
    pub rule: ValidationRule,
    /// The offending bits, bytes or values.
    pub detail: ValidationDetail,
}

impl ValidationError {
    /// The errno a Linux, KVM or Xen consumer returns; for the hardware profile `None` (the CPU
    /// raises #GP, or #PF for a truncated image).
    pub fn errno(&self) -> Option<Errno> {
        match self.profile {
            Profile::Hardware => None,
            // A buffer shorter than what is copied is EFAULT (the copy fails); ptrace's refusal of
            // a length that is no whole number of 8-byte words (EINVAL) is checked first.
            Profile::Linux | Profile::Kvm => Some(match self.rule {
                ValidationRule::Truncated | ValidationRule::TooShort => Errno::Efault,
                _ => Errno::Einval,
            }),
            Profile::Xen => Some(match self.rule {
                ValidationRule::XenAccumOutsideHost
                | ValidationRule::CompactedNotAccepted
                | ValidationRule::XenTailNotZero => Errno::Eopnotsupp,
                ValidationRule::ReservedHeader => Errno::Eio,
                _ => Errno::Einval,
            }),
        }
    }
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.profile, self.rule.text())?;
        match self.detail {
            ValidationDetail::Bits { field, value, bits } => {
                write!(f, ": {field} {value} has bits {bits} ({})", bits.names())?
            }
            ValidationDetail::Byte { offset, value } => write!(f, ": byte {offset} is {value:#04x}")?,
            ValidationDetail::Mxcsr { value, mask } => {
                write!(f, ": MXCSR {value:#x} has bits {:#x} outside mask {mask:#x}", value & !mask)?
            }
            ValidationDetail::Length { len, needed } => write!(f, ": {len} bytes, {needed} needed")?,
            ValidationDetail::Mask(m) => write!(f, ": {m}")?,
        }
        match self.errno() {
            Some(e) => write!(f, " ({})", e.name()),
            None if self.profile == Profile::Hardware
                && self.rule != ValidationRule::Truncated
                && self.rule != ValidationRule::TooShort =>
            {
                f.write_str(" (XRSTOR raises #GP)")
            }
            None => Ok(()),
        }
    }
}

impl core::error::Error for ValidationError {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match &self.detail {
            ValidationDetail::Mask(m) => Some(m),
            _ => None,
        }
    }
}

const SSE_AVX: Xfeatures = Xfeatures(0x6);
/// `sizeof(struct kvm_xsave)`: what KVM_SET_XSAVE reads without KVM_CAP_XSAVE2.
const KVM_XSAVE_SIZE: usize = 4096;
const X87_SSE_AVX: Xfeatures = Xfeatures(0x7);

struct Check<'a, 'b> {
    profile: Profile,
    img: &'b Image<'a>,
}

impl Check<'_, '_> {
    fn fail(&self, rule: ValidationRule, detail: ValidationDetail) -> Result<(), ValidationError> {
        Err(ValidationError { profile: self.profile, rule, detail })
    }

    /// `value` must be a subset of `allowed`.
    fn subset(
        &self,
        rule: ValidationRule,
        field: &'static str,
        value: Xfeatures,
        allowed: Xfeatures,
    ) -> Result<(), ValidationError> {
        let bits = value - allowed;
        if bits.is_empty() { Ok(()) } else { self.fail(rule, ValidationDetail::Bits { field, value, bits }) }
    }

    fn reserved(&self, range: core::ops::Range<usize>) -> Result<(), ValidationError> {
        match super::header::first_reserved_nonzero_in(self.img.bytes(), range) {
            Some((offset, value)) => {
                self.fail(ValidationRule::ReservedHeader, ValidationDetail::Byte { offset, value })
            }
            None => Ok(()),
        }
    }

    fn mxcsr(&self, mask: u32) -> Result<(), ValidationError> {
        let value = self.img.mxcsr();
        if value & !mask != 0 {
            self.fail(ValidationRule::MxcsrReserved, ValidationDetail::Mxcsr { value, mask })
        } else {
            Ok(())
        }
    }

    fn err(&self, rule: ValidationRule, len: usize, needed: usize) -> ValidationError {
        ValidationError { profile: self.profile, rule, detail: ValidationDetail::Length { len, needed } }
    }

    /// The image must hold at least `needed` bytes (the consumer copies exactly that many);
    /// returns it.
    fn whole(&self, needed: Option<u32>, mask_field: &'static str, mask: Xfeatures) -> Result<usize, ValidationError> {
        let Some(needed) = needed else {
            self.fail(
                ValidationRule::UnknownComponent,
                ValidationDetail::Bits { field: mask_field, value: mask, bits: mask },
            )?;
            return Ok(0);
        };
        let needed = (needed as usize).max(MIN_SIZE);
        let len = self.img.len();
        if len < needed { Err(self.err(ValidationRule::Truncated, len, needed)) } else { Ok(needed) }
    }

    fn length(&self, needed: Option<u32>, mask_field: &'static str, mask: Xfeatures) -> Result<(), ValidationError> {
        let Some(needed) = needed else {
            return self.fail(
                ValidationRule::UnknownComponent,
                ValidationDetail::Bits { field: mask_field, value: mask, bits: mask },
            );
        };
        let needed = (needed as usize).max(MIN_SIZE);
        let len = self.img.len();
        if len < needed {
            self.fail(ValidationRule::Truncated, ValidationDetail::Length { len, needed })
        } else {
            Ok(())
        }
    }
}

/// Checks `image` as `profile`'s consumer would, for a CPU with `layout` and the values in
/// `ctx`. `Ok(())` means the consumer accepts it.
pub fn validate(image: &[u8], layout: &Layout, profile: Profile, ctx: &Context) -> Result<(), ValidationError> {
    // The restore judged runs with these masks on this CPU: they must be ones it can hold
    // (Xen checks its own xcr0 and xcr0_accum, in its order).
    if profile != Profile::Xen {
        let (user, sup) = (layout.user_supported(), layout.supervisor_supported());
        let masks = check_xcr0_supported(ctx.xcr0, user, sup).and_then(|()| check_xss(ctx.xss, user, sup));
        if let Err(m) = masks {
            return Err(ValidationError {
                profile,
                rule: ValidationRule::InvalidMask,
                detail: ValidationDetail::Mask(m),
            });
        }
    }
    // PTRACE_SETREGSET refuses a length that is no whole number of 8-byte words before it
    // reads anything (ptrace_regset(): EINVAL), however short.
    if profile == Profile::Linux && !image.len().is_multiple_of(8) {
        let len = image.len();
        return Err(ValidationError {
            profile,
            rule: ValidationRule::RegsetWords,
            detail: ValidationDetail::Length { len, needed: len.next_multiple_of(8) },
        });
    }
    let Ok(img) = Image::new(image) else {
        return Err(ValidationError {
            profile,
            rule: ValidationRule::TooShort,
            detail: ValidationDetail::Length { len: image.len(), needed: MIN_SIZE },
        });
    };
    validate_image(&img, layout, profile, ctx)
}

/// [`validate()`] of an image whose header is already decoded.
pub(crate) fn validate_image(
    img: &Image<'_>,
    layout: &Layout,
    profile: Profile,
    ctx: &Context,
) -> Result<(), ValidationError> {
    let c = Check { profile, img };
    match profile {
        Profile::Hardware => hardware(&c, layout, ctx),
        Profile::Linux => {
            // PTRACE_SETREGSET(NT_X86_XSTATE), measured (tests/linux_regset_sizes.rs):
            // ptrace_regset() refuses a length that is not a whole number of 8-byte words
            // (EINVAL) and cuts a longer one to the regset's size; xstateregs_set() then wants
            // the task's whole user size, standard_size(its user features) (EFAULT); only those
            // bytes are checked.
            let len = img.len();
            if !len.is_multiple_of(8) {
                return c.fail(
                    ValidationRule::RegsetWords,
                    ValidationDetail::Length { len, needed: len.next_multiple_of(8) },
                );
            }
            let size = c.whole(layout.standard_size(ctx.xcr0 & layout.user_supported()), "XCR0", ctx.xcr0)?;
            let head = Image::new(&img.bytes()[..size]).map_err(|_| c.err(ValidationRule::TooShort, len, MIN_SIZE))?;
            linux(&Check { profile, img: &head }, ctx, ctx.xcr0)
        }
        Profile::Kvm => {
            // KVM_SET_XSAVE copies the vCPU's uabi_size bytes (4096, or KVM_CAP_XSAVE2's) and
            // checks XSTATE_BV against what KVM supports before the kernel's own checks.
            let supported = ctx.kvm_supported.unwrap_or(ctx.xcr0);
            let n = ctx.kvm_buffer.unwrap_or_else(|| {
                let s = layout.standard_size(supported & layout.user_supported()).unwrap_or(0) as usize;
                s.max(KVM_XSAVE_SIZE)
            });
            // A buffer past 4 GiB reads as one no image fills (KVM copies it all: EFAULT).
            let size = c.whole(Some(u32::try_from(n).unwrap_or(u32::MAX)), "KVM-supported XCR0", supported)?;
            let head =
                Image::new(&img.bytes()[..size]).map_err(|_| c.err(ValidationRule::TooShort, img.len(), MIN_SIZE))?;
            let c = Check { profile, img: &head };
            c.subset(ValidationRule::KvmUnsupported, "XSTATE_BV", head.xstate_bv(), supported)?;
            linux(&c, ctx, supported)
        }
        Profile::Xen => xen(&c, layout, ctx),
    }
}

/// XRSTOR/XRSTORS #GP conditions (SDM Vol. 1 §13.8.1, §13.12; docs/HARDWARE.md for what Intel
/// and AMD did where the manual is silent: standard-form header bytes 536..575 are not checked,
/// compacted-form XSTATE_BV bits 0 and 1 must be in XCOMP_BV, XSTATE_BV\[63\] faults).
fn hardware(c: &Check<'_, '_>, layout: &Layout, ctx: &Context) -> Result<(), ValidationError> {
    let h: &Header = c.img.header();
    let xrstors = !ctx.xss.is_empty();
    let rfbm = if xrstors { ctx.xcr0 | ctx.xss } else { ctx.xcr0 };
    match h.form() {
        Form::Standard => {
            if xrstors {
                return c.fail(
                    ValidationRule::XrstorsStandardForm,
                    ValidationDetail::Bits { field: "XCOMP_BV", value: h.xcomp_bv, bits: Xfeatures::BIT63 },
                );
            }
            // Header bytes 8..23 (XCOMP_BV and the first reserved qword) must be zero.
            if !h.xcomp_bv.is_empty() {
                return c.fail(
                    ValidationRule::XcompBvNonZero,
                    ValidationDetail::Bits { field: "XCOMP_BV", value: h.xcomp_bv, bits: h.xcomp_bv },
                );
            }
            c.reserved(RESERVED_OFFSET..RESERVED_OFFSET + 8)?;
            c.subset(ValidationRule::XstateBvOutsideXcr0, "XSTATE_BV", h.xstate_bv, ctx.xcr0)?;
            // The standard form loads MXCSR whenever RFBM[1] or RFBM[2] is set.
            if !(rfbm & SSE_AVX).is_empty() {
                c.mxcsr(ctx.mxcsr_mask)?;
            }
            c.length(layout.standard_size(rfbm & layout.user_supported()), "XCR0", rfbm)
        }
        Form::Compacted => {
            if !(layout.features().xsavec() || xrstors && layout.features().xsaves()) {
                return c.fail(
                    ValidationRule::CompactionUnsupported,
                    ValidationDetail::Bits { field: "XCOMP_BV", value: h.xcomp_bv, bits: Xfeatures::BIT63 },
                );
            }
            let laid_out = h.compacted_components();
            c.subset(ValidationRule::XcompBvOutsideRfbm, "XCOMP_BV", laid_out, rfbm)?;
            c.subset(ValidationRule::XstateBvOutsideXcompBv, "XSTATE_BV", h.xstate_bv, laid_out)?;
            c.reserved(RESERVED_OFFSET..RESERVED_OFFSET + 48)?;
            // The compacted form loads MXCSR only with XSTATE_BV[1] (RFBM[1] is implied).
            if h.xstate_bv.contains(Component::SSE) && rfbm.contains(Component::SSE) {
                c.mxcsr(ctx.mxcsr_mask)?;
            }
            c.length(layout.compacted_size(laid_out & rfbm), "XCOMP_BV", h.xcomp_bv)
        }
    }
}

/// The Linux kernel's checks of a user buffer (validate_user_xstate_header and the MXCSR check
/// of copy_uabi_to_xstate), with `features` the task's (or KVM's) user features, on the bytes
/// the caller's length rule let through.
fn linux(c: &Check<'_, '_>, ctx: &Context, features: Xfeatures) -> Result<(), ValidationError> {
    let h = c.img.header();
    c.subset(ValidationRule::XstateBvOutsideXcr0, "XSTATE_BV", h.xstate_bv, features)?;
    if !h.xcomp_bv.is_empty() {
        return c.fail(
            ValidationRule::CompactedNotAccepted,
            ValidationDetail::Bits { field: "XCOMP_BV", value: h.xcomp_bv, bits: h.xcomp_bv },
        );
    }
    c.reserved(RESERVED_OFFSET..RESERVED_OFFSET + 48)?;
    if !(h.xstate_bv & X87_SSE_AVX).is_empty() {
        c.mxcsr(ctx.mxcsr_mask)?;
    }
    Ok(())
}

/// Xen's `validate_xstate()` (xen/arch/x86/xstate.c) in its order (-EINVAL, -EOPNOTSUPP,
/// -EIO) inside its caller's size rule ([`XenCaller`]). Xen does not check MXCSR here.
fn xen(c: &Check<'_, '_>, layout: &Layout, ctx: &Context) -> Result<(), ValidationError> {
    let xcr0 = ctx.xcr0;
    let accum = ctx.xen.xcr0_accum.unwrap_or(xcr0);
    let host = ctx.xen.host_for(layout);
    let len = c.img.len();
    if ctx.xen.caller == XenCaller::Domctl {
        // XEN_DOMCTL_setvcpuextstate: size > PV_XSAVE_SIZE(xfeature_mask) is -EINVAL first.
        let Some(max) = layout.standard_size(host) else {
            return c.fail(
                ValidationRule::UnknownComponent,
                ValidationDetail::Bits { field: "host xfeature_mask", value: host, bits: host },
            );
        };
        if len > max as usize {
            return c.fail(ValidationRule::XenOversized, ValidationDetail::Length { len, needed: max as usize });
        }
    }
    validate_xstate(c, xcr0, accum, ctx.xen.policy_max_for(layout), host)?;
    let Some(size) = layout.standard_size(accum) else {
        return c.fail(
            ValidationRule::UnknownComponent,
            ValidationDetail::Bits { field: "xcr0_accum", value: accum, bits: accum },
        );
    };
    let size = (size as usize).max(MIN_SIZE);
    match ctx.xen.caller {
        XenCaller::Domctl if len != size => {
            c.fail(ValidationRule::XenSizeMismatch, ValidationDetail::Length { len, needed: size })
        }
        XenCaller::Domctl => Ok(()),
        XenCaller::HvmLoad if len < size => {
            c.fail(ValidationRule::Truncated, ValidationDetail::Length { len, needed: size })
        }
        XenCaller::HvmLoad => match c.img.bytes()[size..].iter().position(|&b| b != 0) {
            Some(i) => c.fail(
                ValidationRule::XenTailNotZero,
                ValidationDetail::Byte { offset: size + i, value: c.img.bytes()[size + i] },
            ),
            None => Ok(()),
        },
    }
}

/// `validate_xstate(d, xcr0, xcr0_accum, hdr)` itself: -EINVAL for XSTATE_BV ⊄ xcr0_accum,
/// xcr0 ⊄ xcr0_accum, xcr0_accum ⊄ the policy's maximum or an invalid XCR0 value
/// (`valid_xcr0()`, so 0 fails); -EOPNOTSUPP for xcr0_accum ⊄ the host's `xfeature_mask` or
/// XCOMP_BV ≠ 0; -EIO for a non-zero reserved header qword.
fn validate_xstate(
    c: &Check<'_, '_>,
    xcr0: Xfeatures,
    accum: Xfeatures,
    policy_max: Xfeatures,
    host: Xfeatures,
) -> Result<(), ValidationError> {
    let h = c.img.header();
    c.subset(ValidationRule::XenXstateBvOutsideAccum, "XSTATE_BV", h.xstate_bv, accum)?;
    c.subset(ValidationRule::XenXcr0OutsideAccum, "xcr0", xcr0, accum)?;
    c.subset(ValidationRule::XenAccumOutsidePolicy, "xcr0_accum", accum, policy_max)?;
    for v in [xcr0, accum] {
        // `valid_xcr0()` looks at x87, SSE/YMM, the AVX-512 trio, the MPX and AMX pairs only.
        let looked_at = Xfeatures(v.bits() & !(Xfeatures::BIT63 | catalogue_supervisor()).bits() & !(1 << 19));
        if let Err(m) = check_xcr0(looked_at) {
            return c.fail(ValidationRule::XenInvalidXcr0, ValidationDetail::Mask(m));
        }
    }
    c.subset(ValidationRule::XenAccumOutsideHost, "xcr0_accum", accum, host)?;
    if !h.xcomp_bv.is_empty() {
        return c.fail(
            ValidationRule::CompactedNotAccepted,
            ValidationDetail::Bits { field: "XCOMP_BV", value: h.xcomp_bv, bits: h.xcomp_bv },
        );
    }
    c.reserved(RESERVED_OFFSET..RESERVED_OFFSET + 48)
}

#[cfg(test)]
mod tests;
