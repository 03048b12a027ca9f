//! Xen's extended-state formats (docs/FORMATS.md, the Xen sections; Xen `arch_do_domctl`
//! XEN_DOMCTL_{get,set}vcpuextstate, `hvm_load_cpu_xsave_states`, the libxc migration stream):
//!
//! - [`DomctlBlob`]: `{u64 xcr0, u64 xcr0_accum, standard image of xcr0_accum}`, 16 zero bytes
//!   for "no xsave state", exact size 16 + standard_size(xcr0_accum);
//! - [`HvmCpuXsave`]: the HVM save record CPU_XSAVE (typecode 16) with its descriptor;
//! - [`PvVcpuXsave`]: the PV migration record X86_PV_VCPU_XSAVE (type 6) wrapping a blob.
//!
//! Images are standard-format in the layout of the host that wrote them; the checks are the
//! ones Xen applies on SET/load, in Xen's order, with Xen's `validate_xstate()` taken from the
//! image layer's [`Profile::Xen`].

use alloc::vec::Vec;

use super::le::{u16_at, u32_at, u64_at};
use super::{Detail, Format, RecordError, Rule, SizeBasis};
use crate::image::validate::{Context, Profile, ValidationRule as ImageRule, XenCaller};
use crate::image::{Form, Header, MIN_SIZE, validate};
use crate::layout::Layout;
use crate::policy::xen::{XenGuest, xen_host_mask};
use crate::record::error::SizeOf;
use crate::xfeatures::Xfeatures;

/// Bytes before the image in a blob: xcr0 and xcr0_accum.
pub const BLOB_HEADER: usize = 16;
/// HVM save typecode of CPU_XSAVE.
pub const HVM_CPU_XSAVE: u16 = 16;
/// Size of an HVM save descriptor {u16 typecode, u16 instance, u32 length}.
pub const HVM_DESCRIPTOR: usize = 8;
/// Bytes before the image in a CPU_XSAVE body: xfeature_mask, xcr0, xcr0_accum.
pub const HVM_BODY_HEADER: usize = 24;
/// Migration-stream record type X86_PV_VCPU_XSAVE.
pub const PV_VCPU_XSAVE: u32 = 6;
/// Size of a migration-stream record header {u32 type, u32 length}.
pub const PV_RECORD_HEADER: usize = 8;
/// Size of the vCPU header {u32 vcpu_id, u32 reserved} in a PV vCPU record body.
pub const PV_VCPU_HEADER: usize = 8;

/// What Xen knows besides the record: its enabled `xfeature_mask` and the domain policy's
/// maximum XCR0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct XenHost {
    /// The host's enabled XCR0 (`xfeature_mask`): the largest blob Xen accepts is
    /// 16 + standard_size(host).
    pub host: Xfeatures,
    /// The domain policy's maximum XCR0 (`cpu_policy_xcr0_max()`).
    pub policy_max: Xfeatures,
}

impl XenHost {
    /// A host enabling `host` (`xfeature_mask`) for a domain whose policy allows `policy_max`.
    pub const fn new(host: Xfeatures, policy_max: Xfeatures) -> XenHost {
        XenHost { host, policy_max }
    }

    /// Xen on a host of `layout`: `xfeature_mask` = CPUID ∩ `XCNTXT_MASK` (`xstate_init()`),
    /// and the largest maximum Xen offers any guest there ([`XenGuest::HvmHap`]).
    pub fn of(layout: &Layout) -> XenHost {
        XenHost::for_guest(layout, XenGuest::HvmHap)
    }

    /// Xen on a host of `layout` with a domain of kind `guest` at its maximum policy.
    pub fn for_guest(layout: &Layout, guest: XenGuest) -> XenHost {
        XenHost { host: xen_host_mask(layout), policy_max: guest.max_xcr0(layout) }
    }
}

/// `validate_xstate()` alone (the image layer's [`Profile::Xen`] without its caller's size
/// rule: each record states its own, in record offsets).
fn xen_validate(
    format: Format,
    image: &[u8],
    image_offset: usize,
    layout: &Layout,
    host: &XenHost,
    xcr0: Xfeatures,
    accum: Xfeatures,
) -> Result<(), RecordError> {
    let mut ctx = Context::new(xcr0);
    ctx.xen.xcr0_accum = Some(accum);
    ctx.xen.policy_max = Some(host.policy_max);
    ctx.xen.host = Some(host.host);
    // The HVM caller has no size rule before validate_xstate(), and its size rules come after.
    ctx.xen.caller = XenCaller::HvmLoad;
    match validate(image, layout, Profile::Xen, &ctx) {
        Ok(()) => Ok(()),
        Err(e) if matches!(e.rule, ImageRule::Truncated | ImageRule::XenTailNotZero) => Ok(()),
        Err(e) => Err(RecordError::image(format, image_offset, e)),
    }
}

fn standard_size(
    format: Format,
    layout: &Layout,
    field: &'static str,
    off: usize,
    mask: Xfeatures,
) -> Result<usize, RecordError> {
    layout
        .standard_size(mask)
        .map(|s| s as usize)
        .ok_or_else(|| RecordError::bits(format, Rule::UnknownComponent, off, field, mask, mask - layout.supported()))
}

/// Xen's get/setvcpuextstate blob.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DomctlBlob<'a> {
    /// The vCPU's XCR0; 0 in the "no xsave state" form.
    pub xcr0: Xfeatures,
    /// Every XCR0 bit the vCPU ever set (`xcr0_accum`); 0 in the "no xsave state" form.
    pub xcr0_accum: Xfeatures,
    /// The standard image of xcr0_accum (`None` in the "no xsave state" form).
    pub image: Option<&'a [u8]>,
}

impl<'a> DomctlBlob<'a> {
    /// The 16-byte "no xsave state" blob (non-architectural, found in the field).
    pub const NO_STATE: DomctlBlob<'static> = DomctlBlob { xcr0: Xfeatures(0), xcr0_accum: Xfeatures(0), image: None };

    /// Parses a blob as `XEN_DOMCTL_setvcpuextstate` (xen/arch/x86/domctl.c) does, in its
    /// order and with its errno ([`RecordError::errno`]):
    /// 1. size < 16 or > 16 + standard_size(host `xfeature_mask`): `-EINVAL`;
    /// 2. xcr0_accum ≠ 0: size ≥ 592 (else `-EINVAL`) and `validate_xstate()`;
    ///    xcr0_accum = 0: xcr0 = 0 (else `-EINVAL`);
    /// 3. size = 16: "nothing to restore" ([`DomctlBlob::NO_STATE`]);
    /// 4. size < 592: `-EINVAL`; XCOMP_BV\[63\]: `-EOPNOTSUPP`;
    /// 5. size ≠ 16 + standard_size(xcr0_accum): `-EINVAL` (exact: no short or long image).
    pub fn parse(bytes: &'a [u8], layout: &Layout, host: &XenHost) -> Result<DomctlBlob<'a>, RecordError> {
        let f = Format::XenDomctl;
        let len = bytes.len();
        let (Some(xcr0), Some(accum)) = (u64_at(bytes, 0), u64_at(bytes, 8)) else {
            return Err(RecordError::size(f, Rule::Truncated, len, BLOB_HEADER, SizeBasis::Fixed));
        };
        let (xcr0, accum) = (Xfeatures(xcr0), Xfeatures(accum));
        let max = BLOB_HEADER + standard_size(f, layout, "host xfeature_mask", 0, host.host)?;
        if len > max {
            let basis = SizeBasis::Plus {
                fixed: BLOB_HEADER,
                of: SizeOf::Standard,
                field: "host xfeature_mask",
                mask: host.host,
            };
            return Err(RecordError::size(f, Rule::Oversized, len, max, basis));
        }
        if accum.is_empty() {
            if !xcr0.is_empty() {
                return Err(RecordError::bits(f, Rule::NoStateNotEmpty, 0, "xcr0", xcr0, xcr0));
            }
            if len == BLOB_HEADER {
                return Ok(DomctlBlob::NO_STATE);
            }
            // Bytes after a no-state header: -EINVAL, or -EOPNOTSUPP for a compacted header.
            let compacted = len >= BLOB_HEADER + MIN_SIZE
                && Header::read(&bytes[BLOB_HEADER..]).is_some_and(|h| h.form() == Form::Compacted);
            if compacted {
                let h = Header::read(&bytes[BLOB_HEADER..]).unwrap_or(Header::EMPTY);
                return Err(RecordError::bits(
                    f,
                    Rule::CompactedNotAccepted,
                    BLOB_HEADER + 520,
                    "XCOMP_BV",
                    h.xcomp_bv,
                    Xfeatures::BIT63,
                ));
            }
            return Err(RecordError::size(f, Rule::NoStateNotEmpty, len, BLOB_HEADER, SizeBasis::Fixed));
        }
        let Some(image) = bytes.get(BLOB_HEADER..).filter(|i| i.len() >= MIN_SIZE) else {
            return Err(RecordError::size(f, Rule::Truncated, len, BLOB_HEADER + MIN_SIZE, SizeBasis::Fixed));
        };
        xen_validate(f, image, BLOB_HEADER, layout, host, xcr0, accum)?;
        let expected = BLOB_HEADER + standard_size(f, layout, "xcr0_accum", 8, accum)?;
        if len != expected {
            let basis = SizeBasis::Plus { fixed: BLOB_HEADER, of: SizeOf::Standard, field: "xcr0_accum", mask: accum };
            return Err(RecordError::size(f, Rule::SizeMismatch, len, expected, basis));
        }
        Ok(DomctlBlob { xcr0, xcr0_accum: accum, image: Some(image) })
    }

    /// The blob's bytes: 16 bytes, then the image.
    pub fn to_bytes(&self) -> Vec<u8> {
        let img = self.image.unwrap_or(&[]);
        let mut out = Vec::with_capacity(BLOB_HEADER + img.len());
        out.extend_from_slice(&self.xcr0.bits().to_le_bytes());
        out.extend_from_slice(&self.xcr0_accum.bits().to_le_bytes());
        out.extend_from_slice(img);
        out
    }
}

/// Xen's HVM save record CPU_XSAVE, descriptor included.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HvmCpuXsave<'a> {
    /// The descriptor's instance: the vCPU.
    pub vcpu: u16,
    /// The saving host's `xfeature_mask` (ignored on load).
    pub xfeature_mask: Xfeatures,
    /// The vCPU's XCR0.
    pub xcr0: Xfeatures,
    /// Its accumulated XCR0.
    pub xcr0_accum: Xfeatures,
    /// The standard image of xcr0_accum (a longer record's zero tail is not part of it).
    pub image: &'a [u8],
}

impl<'a> HvmCpuXsave<'a> {
    /// Parses one record (descriptor + body) as `hvm_load_cpu_xsave_states` loads it
    /// (docs/FORMATS.md, `xen-hvm`): typecode 16, a length field matching the bytes, a body of at least
    /// 600 bytes, `validate_xstate()` (so xcr0 = 0 is invalid), and a body of exactly
    /// 24 + standard_size(xcr0_accum) bytes, or longer with an all-zero tail (areas of
    /// Xen ≤ 4.3.0).
    pub fn parse(bytes: &'a [u8], layout: &Layout, host: &XenHost) -> Result<HvmCpuXsave<'a>, RecordError> {
        let f = Format::XenHvm;
        let len = bytes.len();
        let (Some(code), Some(vcpu), Some(blen)) = (u16_at(bytes, 0), u16_at(bytes, 2), u32_at(bytes, 4)) else {
            return Err(RecordError::size(f, Rule::Truncated, len, HVM_DESCRIPTOR, SizeBasis::Fixed));
        };
        if code != HVM_CPU_XSAVE {
            return Err(RecordError::value(f, Rule::TypeCode, 0, "typecode", code.into(), HVM_CPU_XSAVE.into()));
        }
        let body = &bytes[HVM_DESCRIPTOR..];
        if blen as usize != body.len() {
            return Err(RecordError::size(
                f,
                Rule::LengthField,
                len,
                HVM_DESCRIPTOR.saturating_add(blen as usize),
                SizeBasis::Field("descriptor length"),
            ));
        }
        let min = HVM_BODY_HEADER + MIN_SIZE;
        let (Some(mask), Some(xcr0), Some(accum)) = (u64_at(body, 0), u64_at(body, 8), u64_at(body, 16)) else {
            return Err(RecordError::size(f, Rule::Truncated, body.len(), min, SizeBasis::Fixed));
        };
        if body.len() < min {
            return Err(RecordError::size(f, Rule::Truncated, body.len(), min, SizeBasis::Fixed));
        }
        let (xcr0, accum) = (Xfeatures(xcr0), Xfeatures(accum));
        let image_all = &body[HVM_BODY_HEADER..];
        xen_validate(f, image_all, HVM_DESCRIPTOR + HVM_BODY_HEADER, layout, host, xcr0, accum)?;
        let expected = HVM_BODY_HEADER + standard_size(f, layout, "xcr0_accum", HVM_DESCRIPTOR + 16, accum)?;
        if body.len() < expected {
            let basis =
                SizeBasis::Plus { fixed: HVM_BODY_HEADER, of: SizeOf::Standard, field: "xcr0_accum", mask: accum };
            return Err(RecordError::size(f, Rule::SizeMismatch, body.len(), expected, basis));
        }
        if let Some(i) = body[expected..].iter().position(|&b| b != 0) {
            let at = HVM_DESCRIPTOR + expected + i;
            return Err(RecordError::new(
                f,
                Rule::TailNotZero,
                Some(at),
                Detail::Value { field: "tail byte", value: body[expected + i].into(), expected: 0 },
            ));
        }
        Ok(HvmCpuXsave {
            vcpu,
            xfeature_mask: Xfeatures(mask),
            xcr0,
            xcr0_accum: accum,
            image: &image_all[..expected - HVM_BODY_HEADER],
        })
    }

    /// The record's bytes: descriptor, body of exactly 24 + image length bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let blen = HVM_BODY_HEADER + self.image.len();
        let mut out = Vec::with_capacity(HVM_DESCRIPTOR + blen);
        out.extend_from_slice(&HVM_CPU_XSAVE.to_le_bytes());
        out.extend_from_slice(&self.vcpu.to_le_bytes());
        out.extend_from_slice(&(blen as u32).to_le_bytes());
        out.extend_from_slice(&self.xfeature_mask.bits().to_le_bytes());
        out.extend_from_slice(&self.xcr0.bits().to_le_bytes());
        out.extend_from_slice(&self.xcr0_accum.bits().to_le_bytes());
        out.extend_from_slice(self.image);
        out
    }
}

/// Xen's PV migration record X86_PV_VCPU_XSAVE: record header, vCPU header, blob, padding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PvVcpuXsave<'a> {
    /// The vCPU.
    pub vcpu: u32,
    /// The vCPU header's reserved word (carried as found; written as found).
    pub reserved: u32,
    /// The blob; `None` for the zero-length blob Xen 4.6-4.8 sent, which a restore skips.
    pub blob: Option<DomctlBlob<'a>>,
}

/// `v` rounded up to a multiple of 8 (saturating, for 32-bit targets and u32 lengths).
const fn round8(v: usize) -> usize {
    v.saturating_add(7) & !7
}

impl<'a> PvVcpuXsave<'a> {
    /// Parses one record as libxc's restore does (docs/FORMATS.md, `xen-pv`): type 6, a length field of
    /// at least the vCPU header, the record padded to 8 bytes (padding contents are not read),
    /// a zero-length blob skipped, otherwise a blob of at least 16 bytes under
    /// [`DomctlBlob::parse`].
    pub fn parse(bytes: &'a [u8], layout: &Layout, host: &XenHost) -> Result<PvVcpuXsave<'a>, RecordError> {
        let f = Format::XenPv;
        let len = bytes.len();
        let (Some(ty), Some(rlen)) = (u32_at(bytes, 0), u32_at(bytes, 4)) else {
            return Err(RecordError::size(f, Rule::Truncated, len, PV_RECORD_HEADER, SizeBasis::Fixed));
        };
        if ty != PV_VCPU_XSAVE {
            return Err(RecordError::value(f, Rule::TypeCode, 0, "type", ty.into(), PV_VCPU_XSAVE.into()));
        }
        let rlen = rlen as usize;
        if len != PV_RECORD_HEADER.saturating_add(round8(rlen)) {
            return Err(RecordError::size(
                f,
                Rule::LengthField,
                len,
                PV_RECORD_HEADER.saturating_add(round8(rlen)),
                SizeBasis::Field("record length rounded up to 8"),
            ));
        }
        if rlen < PV_VCPU_HEADER {
            return Err(RecordError::size(f, Rule::Truncated, rlen, PV_VCPU_HEADER, SizeBasis::Field("record length")));
        }
        let body = &bytes[PV_RECORD_HEADER..PV_RECORD_HEADER + rlen];
        let vcpu = u32_at(body, 0).unwrap_or(0);
        let reserved = u32_at(body, 4).unwrap_or(0);
        let blob_bytes = &body[PV_VCPU_HEADER..];
        if blob_bytes.is_empty() {
            return Ok(PvVcpuXsave { vcpu, reserved, blob: None });
        }
        let blob = DomctlBlob::parse(blob_bytes, layout, host).map_err(|mut e| {
            e.format = f;
            e.offset = e.offset.map(|o| o + PV_RECORD_HEADER + PV_VCPU_HEADER);
            e
        })?;
        Ok(PvVcpuXsave { vcpu, reserved, blob: Some(blob) })
    }

    /// The record's bytes, zero-padded to a multiple of 8.
    pub fn to_bytes(&self) -> Vec<u8> {
        let blob = self.blob.map(|b| b.to_bytes()).unwrap_or_default();
        let rlen = PV_VCPU_HEADER + blob.len();
        let mut out = Vec::with_capacity(PV_RECORD_HEADER + round8(rlen));
        out.extend_from_slice(&PV_VCPU_XSAVE.to_le_bytes());
        out.extend_from_slice(&(rlen as u32).to_le_bytes());
        out.extend_from_slice(&self.vcpu.to_le_bytes());
        out.extend_from_slice(&self.reserved.to_le_bytes());
        out.extend_from_slice(&blob);
        out.resize(PV_RECORD_HEADER + round8(rlen), 0);
        out
    }
}
