//! The forward-compatible extended-state blob proposed on xen-devel in May 2021 (byte-exact
//! specification in docs/FORMATS.md):
//!
//! ```text
//! 0   u64 xstates        the active states, XCR0 | IA32_XSS
//! 8   u64 xstates_accum  every state ever active (the accumulated XCR0 | XSS)
//! 16  image              standard or compacted (XCOMP_BV[63]); absent when xstates_accum = 0
//! ```
//!
//! Size parsing is split by form. A standard image holds no supervisor state and is exactly
//! standard_size(xstates_accum) bytes; a compacted image is exactly compacted_size(XCOMP_BV)
//! bytes with XSTATE_BV ⊆ XCOMP_BV\[62:0\] ⊆ xstates_accum. Every blob the old rules
//! ([`super::xen::DomctlBlob`]) accept is accepted here with the same meaning (XSS = 0); a blob
//! only this reader understands (a compacted image, supervisor state) is refused by the old
//! rules as Xen refuses it: `validate_xstate()` answers -EINVAL where the accumulated states
//! hold bits outside the policy (supervisor states always are), else -EOPNOTSUPP for the
//! non-zero XCOMP_BV.
//!
//! # Example: a Xen blob turned into the forward-compatible compacted blob
//!
//! A toolstack holds a vCPU's `XEN_DOMCTL_getvcpuextstate` blob from an Intel host (XCR0 and
//! xcr0_accum 0x2e7, a standard image) and hands it on as the forward-compatible blob with the
//! compacted image XSAVEC/XSAVES write. Old readers refuse the new blob, as Xen does; new
//! readers take both.
//!
//! ```
//! use xstate::image::{Target, convert};
//! use xstate::record::fc_blob::FcBlob;
//! use xstate::record::xen::{DomctlBlob, XenHost};
//! use xstate::{Layout, Leaf0d, Regs, Xfeatures};
//!
//! // Leaf 0xD of the host (Intel Xeon w7-2475X).
//! # let mut leaf = Leaf0d::new();
//! # for (i, a, b, c, d) in [
//! #     (0, 0x602E7, 0x2B00, 0x2B00, 0), (1, 0x1F, 0x2A80, 0xDD00, 0), (2, 0x100, 0x240, 0, 0),
//! #     (5, 0x40, 0x440, 0, 0), (6, 0x200, 0x480, 0, 0), (7, 0x400, 0x680, 0, 0), (8, 0x80, 0, 1, 0),
//! #     (9, 0x8, 0xA80, 0, 0), (10, 0x8, 0, 1, 0), (11, 0x10, 0, 1, 0), (12, 0x18, 0, 1, 0),
//! #     (14, 0x30, 0, 1, 0), (15, 0x328, 0, 1, 0), (17, 0x40, 0xAC0, 2, 0), (18, 0x2000, 0xB00, 6, 0),
//! # ] {
//! #     leaf.set(i, Regs::new(a, b, c, d));
//! # }
//! # let host = Layout::from_leaf0d(&leaf)?;
//! // The blob Xen handed out: {xcr0, xcr0_accum, standard image}, 16 + 2696 bytes.
//! # let blob = {
//! #     let mut img = xstate::image::ImageBuf::init(2696, Xfeatures::EMPTY);
//! #     img[0x440 + 8..0x440 + 16].copy_from_slice(&0x1234u64.to_le_bytes()); // k1
//! #     img.set_xstate_bv(Xfeatures(0x23));
//! #     DomctlBlob { xcr0: Xfeatures(0x2E7), xcr0_accum: Xfeatures(0x2E7), image: Some(&img) }.to_bytes()
//! # };
//! let xen = XenHost::of(&host); // Xen's xfeature_mask and guest maximum on this host
//! let old = DomctlBlob::parse(&blob, &host, &xen)?;
//! let image = old.image.ok_or("no xsave state")?;
//!
//! // The same state, compacted for the accumulated states (what XSAVEC writes for them).
//! let accum = old.xcr0_accum;
//! let compacted = convert(image, &host, &host, accum, Target::Compacted { mask: accum })?;
//! let fc = FcBlob { xstates: old.xcr0, xstates_accum: accum, image: Some(&compacted) }.to_bytes();
//! assert_eq!(fc.len(), 16 + 2440); // compacted_size(0x2e7): no MPX hole
//!
//! // New readers take it (and the old blob, with the same meaning); Xen's rules refuse it.
//! let back = FcBlob::parse(&fc, &host, &FcBlob::host_of(&host))?;
//! assert_eq!((back.xstates, back.xstates_accum), (Xfeatures(0x2E7), Xfeatures(0x2E7)));
//! assert!(FcBlob::parse(&blob, &host, &FcBlob::host_of(&host)).is_ok());
//! assert!(DomctlBlob::parse(&fc, &host, &xen).is_err());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use alloc::vec::Vec;

use super::error::SizeOf;
use super::le::u64_at;
use super::xen::{BLOB_HEADER, XenHost};
use super::{Detail, Format, RecordError, Rule, SizeBasis};
use crate::image::validate::{Context, Profile, ValidationRule as ImageRule, XenCaller};
use crate::image::{Form, Header, MIN_SIZE, RESERVED_OFFSET, validate};
use crate::layout::Layout;
use crate::xcr0::{check_xcr0, check_xss};
use crate::xfeatures::Xfeatures;

/// Where a record keeps what [`accum_image_size`] names in its errors: the offset of the
/// accumulated-states field, the offset of the image, and the fixed part of the size formula.
#[derive(Clone, Copy, Debug)]
pub(super) struct AccumAt {
    pub accum_field: usize,
    pub image: usize,
    pub size_fixed: usize,
}

/// The size rule of an image sized for accumulated states `accum` (the forward-compatible blob
/// and the portable record, after the May 2021 proposal's split of size parsing): a standard
/// image holds no supervisor state and is standard_size(accum) bytes; a compacted image lays
/// out XCOMP_BV\[62:0\] ⊆ accum and is compacted_size(XCOMP_BV) bytes. Returns the expected
/// image size and its formula.
pub(super) fn accum_image_size(
    f: Format,
    h: &Header,
    accum: Xfeatures,
    layout: &Layout,
    at: AccumAt,
) -> Result<(usize, SizeBasis), RecordError> {
    match h.form() {
        Form::Standard => {
            let s = accum & layout.supervisor_supported();
            if !s.is_empty() {
                return Err(RecordError::bits(
                    f,
                    Rule::SupervisorInStandard,
                    at.accum_field,
                    "xstates_accum",
                    accum,
                    s,
                ));
            }
            let size = layout.standard_size(accum).unwrap_or(0) as usize;
            Ok((
                size,
                SizeBasis::Plus { fixed: at.size_fixed, of: SizeOf::Standard, field: "xstates_accum", mask: accum },
            ))
        }
        Form::Compacted => {
            let laid_out = h.compacted_components();
            let outside = laid_out - accum;
            if !outside.is_empty() {
                return Err(RecordError::bits(
                    f,
                    Rule::XcompOutsideAccum,
                    at.image + 520,
                    "XCOMP_BV",
                    h.xcomp_bv,
                    outside,
                ));
            }
            let size = layout.compacted_size(laid_out).unwrap_or(0) as usize;
            Ok((
                size,
                SizeBasis::Plus { fixed: at.size_fixed, of: SizeOf::Compacted, field: "XCOMP_BV", mask: h.xcomp_bv },
            ))
        }
    }
}

/// The forward-compatible blob.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FcBlob<'a> {
    /// The active states, XCR0 | XSS; 0 in the "no xsave state" form.
    pub xstates: Xfeatures,
    /// The accumulated states; 0 in the "no xsave state" form.
    pub xstates_accum: Xfeatures,
    /// The image, standard or compacted; `None` in the "no xsave state" form.
    pub image: Option<&'a [u8]>,
}

impl<'a> FcBlob<'a> {
    /// The 16-byte "no xsave state" blob.
    pub const NO_STATE: FcBlob<'static> = FcBlob { xstates: Xfeatures(0), xstates_accum: Xfeatures(0), image: None };

    /// XCR0: the user part of the active states under `layout`.
    pub fn xcr0(&self, layout: &Layout) -> Xfeatures {
        self.xstates & layout.user_supported()
    }

    /// IA32_XSS: the supervisor part of the active states under `layout`.
    pub fn xss(&self, layout: &Layout) -> Xfeatures {
        self.xstates & layout.supervisor_supported()
    }

    /// The image's form, if there is one.
    pub fn form(&self) -> Option<Form> {
        self.image.and_then(Header::read).map(|h| h.form())
    }

    /// Parses a blob for the CPU of `layout`. `host` bounds the accumulated states (its masks
    /// may hold supervisor bits; [`XenHost::of`] allows user states only, use
    /// [`FcBlob::host_of`] for XCR0 | XSS).
    pub fn parse(bytes: &'a [u8], layout: &Layout, host: &XenHost) -> Result<FcBlob<'a>, RecordError> {
        let f = Format::FcBlob;
        let len = bytes.len();
        let (Some(active), Some(accum)) = (u64_at(bytes, 0), u64_at(bytes, 8)) else {
            return Err(RecordError::size(f, Rule::Truncated, len, BLOB_HEADER, SizeBasis::Fixed));
        };
        let (active, accum) = (Xfeatures(active), Xfeatures(accum));
        if accum.is_empty() {
            if !active.is_empty() {
                return Err(RecordError::bits(f, Rule::NoStateNotEmpty, 0, "xstates", active, active));
            }
            if len != BLOB_HEADER {
                return Err(RecordError::size(f, Rule::NoStateNotEmpty, len, BLOB_HEADER, SizeBasis::Fixed));
            }
            return Ok(FcBlob::NO_STATE);
        }
        let unknown = accum - layout.supported();
        if !unknown.is_empty() {
            return Err(RecordError::bits(f, Rule::UnknownComponent, 8, "xstates_accum", accum, unknown));
        }
        let outside = accum - (host.host & host.policy_max);
        if !outside.is_empty() {
            return Err(RecordError::bits(f, Rule::AccumOutsideMaximum, 8, "xstates_accum", accum, outside));
        }
        let outside = active - accum;
        if !outside.is_empty() {
            return Err(RecordError::bits(f, Rule::ActiveOutsideAccum, 0, "xstates", active, outside));
        }
        let (user, sup) = (layout.user_supported(), layout.supervisor_supported());
        for (off, v) in [(0, active), (8, accum)] {
            let m = check_xcr0(v & user).and_then(|()| check_xss(v & sup, user, sup));
            if let Err(m) = m {
                return Err(RecordError::new(f, Rule::InvalidMask, Some(off), Detail::Mask(m)));
            }
        }
        let Some(image) = bytes.get(BLOB_HEADER..).filter(|i| i.len() >= MIN_SIZE) else {
            return Err(RecordError::size(f, Rule::Truncated, len, BLOB_HEADER + MIN_SIZE, SizeBasis::Fixed));
        };
        let h = Header::read(image).unwrap_or(Header::EMPTY);
        let at = AccumAt { accum_field: 8, image: BLOB_HEADER, size_fixed: BLOB_HEADER };
        let (expected, basis) = accum_image_size(f, &h, accum, layout, at)?;
        match h.form() {
            Form::Standard => {
                // The old rules: validate_xstate(xcr0, xcr0_accum, header).
                let mut ctx = Context::new(active);
                ctx.xen.xcr0_accum = Some(accum);
                ctx.xen.policy_max = Some(accum);
                ctx.xen.host = Some(accum);
                ctx.xen.caller = XenCaller::HvmLoad;
                match validate(image, layout, Profile::Xen, &ctx) {
                    Err(e) if !matches!(e.rule, ImageRule::Truncated | ImageRule::XenTailNotZero) => {
                        return Err(RecordError::image(f, BLOB_HEADER, e));
                    }
                    _ => {}
                }
            }
            Form::Compacted => {
                if let Some((off, v)) = h.first_reserved_nonzero(RESERVED_OFFSET) {
                    return Err(RecordError::value(f, Rule::Reserved, BLOB_HEADER + off, "header byte", v.into(), 0));
                }
                // XRSTOR(S) with RFBM = the accumulated states: XSTATE_BV within XCOMP_BV,
                // compaction supported. MXCSR is not checked here (Xen's rules do not).
                let mut ctx = Context::new(accum & user);
                ctx.xss = accum & sup;
                ctx.mxcsr_mask = u32::MAX;
                match validate(image, layout, Profile::Hardware, &ctx) {
                    Err(e) if e.rule != ImageRule::Truncated => return Err(RecordError::image(f, BLOB_HEADER, e)),
                    _ => {}
                }
            }
        }
        if len != BLOB_HEADER + expected {
            return Err(RecordError::size(f, Rule::SizeMismatch, len, BLOB_HEADER + expected, basis));
        }
        Ok(FcBlob { xstates: active, xstates_accum: accum, image: Some(image) })
    }

    /// A host enabling every user and supervisor state of `layout`.
    pub fn host_of(layout: &Layout) -> XenHost {
        XenHost { host: layout.supported(), policy_max: layout.supported() }
    }

    /// The blob's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let img = self.image.unwrap_or(&[]);
        let mut out = Vec::with_capacity(BLOB_HEADER + img.len());
        out.extend_from_slice(&self.xstates.bits().to_le_bytes());
        out.extend_from_slice(&self.xstates_accum.bits().to_le_bytes());
        out.extend_from_slice(img);
        out
    }
}
