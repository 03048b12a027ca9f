//! KVM's extended-state structures (docs/FORMATS.md, "KVM"; Linux `arch/x86/kvm/x86.c`,
//! `Documentation/virt/kvm/api.rst`):
//!
//! - [`KvmXsave`]: `struct kvm_xsave` of KVM_GET_XSAVE/KVM_SET_XSAVE, 1024 u32 words (4096 bytes)
//!   holding a standard image in the host's layout, and the KVM_GET_XSAVE2 buffer, which is
//!   the same image at the size KVM_CAP_XSAVE2 reports (max(4096, standard size of the
//!   KVM-supported XCR0); 11008 on AMX hosts);
//! - [`KvmXcrs`]: `struct kvm_xcrs` (392 bytes) of KVM_GET_XCRS/KVM_SET_XCRS.

use alloc::vec::Vec;

use super::le::{u32_at, u64_at};
use super::{Format, RecordError, Rule, SizeBasis};
use crate::image::validate as image_validate;
use crate::image::validate::{Context, Profile};
use crate::layout::Layout;
use crate::xcr0::check_xcr0_supported;
use crate::xfeatures::Xfeatures;

/// Size of `struct kvm_xsave` without its flexible tail: 1024 u32 words.
pub const KVM_XSAVE_SIZE: usize = 4096;
/// Size of `struct kvm_xcrs`: nr_xcrs, flags, 16 entries of 16 bytes, 16 u64 of padding.
pub const KVM_XCRS_SIZE: usize = 392;
/// KVM_MAX_XCRS.
pub const KVM_MAX_XCRS: usize = 16;

/// What KVM_CAP_XSAVE2 returns for a host whose KVM-supported XCR0 is `supported` (the
/// KVM_GET_SUPPORTED_CPUID 0xD.0 mask, filtered by the caller's guest AMX permission):
/// max(4096, standard_size(supported)). `None` if the mask has bits the layout lacks.
pub fn cap_xsave2(layout: &Layout, supported: Xfeatures) -> Option<usize> {
    layout.standard_size(supported).map(|s| (s as usize).max(KVM_XSAVE_SIZE))
}

/// The image of KVM_GET_XSAVE (4096 bytes) or KVM_GET_XSAVE2 (the KVM_CAP_XSAVE2 size).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvmXsave<'a> {
    /// The standard image, the whole buffer (bytes past the components are zero in what KVM
    /// writes and ignored by KVM_SET_XSAVE).
    pub image: &'a [u8],
    /// The mask KVM_GET_XSAVE writes at bytes 464..471: the host's supported user features
    /// (the kernel's `xstate_fx_sw_bytes`), not the guest's XCR0 (KVM_GET_XCRS has that); 0
    /// if none.
    pub sw_mask: Xfeatures,
}

impl<'a> KvmXsave<'a> {
    /// Parses a buffer of exactly `size` bytes (4096 for [`Format::KvmXsave`], the
    /// KVM_CAP_XSAVE2 answer for [`Format::KvmXsave2`]) that KVM_SET_XSAVE with the
    /// KVM-supported XCR0 `supported` would accept ([`Profile::Kvm`]): XSTATE_BV within the
    /// supported mask, XCOMP_BV = 0, reserved header bytes zero, MXCSR within `mxcsr_mask`
    /// when x87, SSE or AVX is in use. The buffer size must be a multiple of 4 (u32 words).
    pub fn parse(
        format: Format,
        bytes: &'a [u8],
        size: usize,
        layout: &Layout,
        supported: Xfeatures,
        mxcsr_mask: u32,
    ) -> Result<KvmXsave<'a>, RecordError> {
        let len = bytes.len();
        let rule = if len < size { Rule::Truncated } else { Rule::SizeMismatch };
        if len != size {
            return Err(RecordError::size(format, rule, len, size, SizeBasis::Fixed));
        }
        if !len.is_multiple_of(4) {
            return Err(RecordError::size(format, Rule::SizeMismatch, len, len & !3, SizeBasis::Fixed));
        }
        let mut ctx = Context::new(supported);
        ctx.kvm_supported = Some(supported);
        ctx.kvm_buffer = Some(size);
        ctx.mxcsr_mask = mxcsr_mask;
        image_validate::validate(bytes, layout, Profile::Kvm, &ctx).map_err(|e| RecordError::image(format, 0, e))?;
        Ok(KvmXsave { image: bytes, sw_mask: Xfeatures(u64_at(bytes, 464).unwrap_or(0)) })
    }

    /// A buffer of `size` bytes holding a standard image (copied, zero-extended). `None` if
    /// the image is longer than `size`.
    pub fn build(image: &[u8], size: usize) -> Option<Vec<u8>> {
        if image.len() > size {
            return None;
        }
        let mut out = alloc::vec![0u8; size];
        out[..image.len()].copy_from_slice(image);
        Some(out)
    }
}

/// One `struct kvm_xcr`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Xcr {
    /// The XCR index (0 for XCR0).
    pub xcr: u32,
    /// Reserved word.
    pub reserved: u32,
    /// The value.
    pub value: u64,
}

/// `struct kvm_xcrs`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvmXcrs {
    /// Flags (must be 0 for KVM_SET_XCRS).
    pub flags: u32,
    /// The `nr_xcrs` entries in use.
    pub xcrs: Vec<Xcr>,
}

impl KvmXcrs {
    /// `{nr 1, xcr 0, value xcr0}`, what KVM_GET_XCRS returns.
    pub fn with_xcr0(xcr0: Xfeatures) -> KvmXcrs {
        KvmXcrs { flags: 0, xcrs: alloc::vec![Xcr { xcr: 0, reserved: 0, value: xcr0.bits() }] }
    }

    /// XCR0, from the first entry for index 0 (the one KVM_SET_XCRS applies).
    pub fn xcr0(&self) -> Option<Xfeatures> {
        self.xcrs.iter().find(|x| x.xcr == 0).map(|x| Xfeatures(x.value))
    }

    /// Parses 392 bytes as KVM_SET_XCRS takes them: `nr_xcrs` ≤ 16, flags 0, and an XCR0 entry
    /// that KVM's `__kvm_set_xcr` accepts for a guest supporting `supported` (the XCR0 rules,
    /// nothing outside the mask). Unused entries and the padding are not read, as by KVM.
    pub fn parse(bytes: &[u8], layout: &Layout, supported: Xfeatures) -> Result<KvmXcrs, RecordError> {
        let f = Format::KvmXcrs;
        let len = bytes.len();
        if len != KVM_XCRS_SIZE {
            let rule = if len < KVM_XCRS_SIZE { Rule::Truncated } else { Rule::SizeMismatch };
            return Err(RecordError::size(f, rule, len, KVM_XCRS_SIZE, SizeBasis::Fixed));
        }
        let nr = u32_at(bytes, 0).unwrap_or(0) as usize;
        let flags = u32_at(bytes, 4).unwrap_or(0);
        if nr > KVM_MAX_XCRS {
            return Err(RecordError::value(f, Rule::LengthField, 0, "nr_xcrs", nr as u64, KVM_MAX_XCRS as u64));
        }
        if flags != 0 {
            return Err(RecordError::value(f, Rule::Reserved, 4, "flags", flags.into(), 0));
        }
        let mut xcrs = Vec::with_capacity(nr);
        for i in 0..nr {
            let o = 8 + 16 * i;
            let x = Xcr {
                xcr: u32_at(bytes, o).unwrap_or(0),
                reserved: u32_at(bytes, o + 4).unwrap_or(0),
                value: u64_at(bytes, o + 8).unwrap_or(0),
            };
            if x.xcr == 0
                && !xcrs.iter().any(|y: &Xcr| y.xcr == 0)
                && let Err(m) = check_xcr0_supported(Xfeatures(x.value), supported, layout.supervisor_supported())
            {
                return Err(RecordError::new(f, Rule::InvalidMask, Some(o + 8), super::Detail::Mask(m)));
            }
            xcrs.push(x);
        }
        Ok(KvmXcrs { flags, xcrs })
    }

    /// The 392 bytes; entries beyond 16 are dropped, unused entries and padding are zero.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = alloc::vec![0u8; KVM_XCRS_SIZE];
        let n = self.xcrs.len().min(KVM_MAX_XCRS);
        out[0..4].copy_from_slice(&(n as u32).to_le_bytes());
        out[4..8].copy_from_slice(&self.flags.to_le_bytes());
        for (i, x) in self.xcrs.iter().take(n).enumerate() {
            let o = 8 + 16 * i;
            out[o..o + 4].copy_from_slice(&x.xcr.to_le_bytes());
            out[o + 4..o + 8].copy_from_slice(&x.reserved.to_le_bytes());
            out[o + 8..o + 16].copy_from_slice(&x.value.to_le_bytes());
        }
        out
    }
}
