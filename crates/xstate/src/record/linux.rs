//! Linux's extended-state formats (docs/FORMATS.md, "Linux"; Linux
//! `arch/x86/kernel/fpu/{regset,xstate,signal}.c`):
//!
//! - [`NtXstate`]: the NT_X86_XSTATE regset / core note: a standard image of the user maximum
//!   size with XCR0 at byte 464;
//! - [`LayoutNote`]: NT_X86_XSAVE_LAYOUT (Linux 6.12+): `{u32 feature, u32 size, u32 offset,
//!   u32 flags}` per extended user component, so a core can be read on any CPU;
//! - [`SigFrame`]: the fpstate of an x86-64 signal frame: a standard image with
//!   `_fpx_sw_bytes` at 464 and magic2 right after the image.

use alloc::vec::Vec;

use super::error::SizeOf;
use super::le::{u32_at, u64_at};
use super::{Detail, Format, RecordError, Rule, SizeBasis};
use crate::component::Component;
use crate::component::legacy::{FCW, FCW_INIT, XMM0};
use crate::cpuid::XsaveFeatures;
use crate::image::validate::{Context, Profile};
use crate::image::{Header, MIN_SIZE, validate};
use crate::layout::{Geometry, Layout};
use crate::xcr0::check_xcr0_supported;
use crate::xfeatures::Xfeatures;

/// Note type of NT_X86_XSTATE (name "LINUX").
pub const NT_X86_XSTATE: u32 = 0x202;
/// Note type of NT_X86_XSAVE_LAYOUT (name "LINUX").
pub const NT_X86_XSAVE_LAYOUT: u32 = 0x205;
/// Image offset of the XCR0 Linux writes into NT_X86_XSTATE, and of `_fpx_sw_bytes`.
pub const SW_BYTES: usize = 464;
/// `_fpx_sw_bytes.magic1`.
pub const FP_XSTATE_MAGIC1: u32 = 0x4650_5853;
/// magic2, the u32 after the image of a signal frame.
pub const FP_XSTATE_MAGIC2: u32 = 0x4650_5845;

/// The user features the kernel writes into the software bytes (NT_X86_XSTATE: XCR0 at 464;
/// signal frame: `xfeatures` at 472), checked: enumerated by `layout` and a valid XCR0.
fn features_at_464(f: Format, bytes: &[u8], layout: &Layout, field: &'static str) -> Result<Xfeatures, RecordError> {
    let off = SW_BYTES + if f == Format::SigFrame { 8 } else { 0 };
    let v = Xfeatures(u64_at(bytes, off).unwrap_or(0));
    let unknown = v - layout.user_supported();
    if !unknown.is_empty() {
        return Err(RecordError::bits(f, Rule::UnknownComponent, off, field, v, unknown));
    }
    check_xcr0_supported(v, layout.user_supported(), layout.supervisor_supported())
        .map_err(|m| RecordError::new(f, Rule::InvalidMask, Some(off), Detail::Mask(m)))?;
    Ok(v)
}

/// Validates a standard image the kernel wrote (or takes back) for user features `xcr0`, with
/// MXCSR checked against the mask the image's MXCSR_MASK field proves
/// ([`mxcsr_mask_proven_by`](crate::component::legacy::mxcsr_mask_proven_by)).
fn validate_own_mask(
    f: Format,
    image: &[u8],
    layout: &Layout,
    profile: Profile,
    xcr0: Xfeatures,
) -> Result<(), RecordError> {
    let field = crate::image::Image::new(image).map_or(0, |i| i.mxcsr_mask());
    let mut ctx = Context::new(xcr0);
    ctx.mxcsr_mask = crate::component::legacy::mxcsr_mask_proven_by(field);
    validate(image, layout, profile, &ctx).map_err(|e| RecordError::image(f, 0, e))
}

/// NT_X86_XSTATE: what PTRACE_GETREGSET returns and what a core dump holds per thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NtXstate<'a> {
    /// The standard image (the whole note).
    pub image: &'a [u8],
    /// The task's user features (`xfeatures_mask_uabi()`), from bytes 464..471.
    pub xcr0: Xfeatures,
}

impl<'a> NtXstate<'a> {
    /// Parses a note as the kernel writes it and PTRACE_SETREGSET takes it back: XCR0 at 464
    /// valid and enumerated by `layout`, exactly standard_size(XCR0) bytes (the user maximum
    /// size; SETREGSET fails with EFAULT at any other length), and the Linux UABI image rules
    /// ([`Profile::Linux`]; MXCSR against the mask the note's MXCSR_MASK field proves).
    pub fn parse(bytes: &'a [u8], layout: &Layout) -> Result<NtXstate<'a>, RecordError> {
        let f = Format::NtXstate;
        if bytes.len() < MIN_SIZE {
            return Err(RecordError::size(f, Rule::Truncated, bytes.len(), MIN_SIZE, SizeBasis::Fixed));
        }
        let xcr0 = features_at_464(f, bytes, layout, "XCR0")?;
        let size = layout.standard_size(xcr0).unwrap_or(0) as usize;
        if bytes.len() != size {
            let rule = if bytes.len() < size { Rule::Truncated } else { Rule::SizeMismatch };
            let basis = SizeBasis::Plus { fixed: 0, of: SizeOf::Standard, field: "XCR0 at byte 464", mask: xcr0 };
            return Err(RecordError::size(f, rule, bytes.len(), size, basis));
        }
        validate_own_mask(f, bytes, layout, Profile::Linux, xcr0)?;
        Ok(NtXstate { image: bytes, xcr0 })
    }

    /// A note from a standard image of at least standard_size(`xcr0`) bytes: the image cut to
    /// that size, XCR0 at 464, zeros in 472..511 (what the kernel writes). `None` if the image
    /// is shorter, or `xcr0` names no user component the layout enumerates (no note has fewer
    /// than the 576 bytes of legacy region and header).
    pub fn build(image: &[u8], xcr0: Xfeatures, layout: &Layout) -> Option<Vec<u8>> {
        if (xcr0 & layout.user_supported()).is_empty() {
            return None;
        }
        let size = layout.standard_size(xcr0)? as usize;
        let mut out = image.get(..size)?.to_vec();
        out[SW_BYTES..512].fill(0);
        out[SW_BYTES..SW_BYTES + 8].copy_from_slice(&xcr0.bits().to_le_bytes());
        Some(out)
    }
}

/// One NT_X86_XSAVE_LAYOUT entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LayoutEntry {
    /// Component index.
    pub feature: u32,
    /// Size in bytes.
    pub size: u32,
    /// Standard-format offset.
    pub offset: u32,
    /// Flags (0 in every kernel so far).
    pub flags: u32,
}

/// NT_X86_XSAVE_LAYOUT: the standard layout of the dumping CPU's user components.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayoutNote {
    /// Entries in ascending component order.
    pub entries: Vec<LayoutEntry>,
}

impl LayoutNote {
    /// Parses the note: a multiple of 16 bytes, components 2..=62 strictly ascending, flags 0.
    pub fn parse(bytes: &[u8]) -> Result<LayoutNote, RecordError> {
        let f = Format::XsaveLayout;
        if !bytes.len().is_multiple_of(16) {
            return Err(RecordError::size(f, Rule::SizeMismatch, bytes.len(), bytes.len() / 16 * 16, SizeBasis::Fixed));
        }
        let mut entries = Vec::with_capacity(bytes.len() / 16);
        let mut last = 1u32;
        for (i, chunk) in bytes.chunks_exact(16).enumerate() {
            let e = LayoutEntry {
                feature: u32_at(chunk, 0).unwrap_or(0),
                size: u32_at(chunk, 4).unwrap_or(0),
                offset: u32_at(chunk, 8).unwrap_or(0),
                flags: u32_at(chunk, 12).unwrap_or(0),
            };
            if e.feature <= last || e.feature > 62 {
                return Err(RecordError::value(
                    f,
                    Rule::LayoutDescriptor,
                    16 * i,
                    "feature (ascending, 2..=62)",
                    e.feature.into(),
                    (last + 1).into(),
                ));
            }
            if e.flags != 0 {
                return Err(RecordError::value(f, Rule::Reserved, 16 * i + 12, "flags", e.flags.into(), 0));
            }
            last = e.feature;
            entries.push(e);
        }
        Ok(LayoutNote { entries })
    }

    /// The entries of `layout`'s user components in `mask` above SSE, as the kernel writes them.
    pub fn of_layout(layout: &Layout, mask: Xfeatures) -> LayoutNote {
        let entries = (mask & layout.user_supported())
            .iter()
            .filter(|c| !c.is_legacy())
            .filter_map(|c| {
                let g = layout.geometry(c)?;
                Some(LayoutEntry { feature: c.index().into(), size: g.size, offset: g.offset, flags: 0 })
            })
            .collect();
        LayoutNote { entries }
    }

    /// The user components the note describes, with x87 and SSE.
    pub fn mask(&self) -> Xfeatures {
        self.entries.iter().fold(Xfeatures::LEGACY, |m, e| m | Xfeatures(1u64 << e.feature.min(62)))
    }

    /// A layout for the standard format (the note says nothing about compaction or supervisor
    /// state; `features` supplies CPUID 0xD.1 EAX if known).
    pub fn to_layout(&self, features: XsaveFeatures) -> Result<Layout, RecordError> {
        let comps = self.entries.iter().filter_map(|e| {
            let c = Component::new(u8::try_from(e.feature).ok()?)?;
            Some((c, Geometry { size: e.size, offset: e.offset, supervisor: false, align64: false, xfd: false }))
        });
        let all = [(Component::SSE, Geometry::default())].into_iter().chain(comps);
        Layout::from_components(features, all)
            .map_err(|e| RecordError::new(Format::XsaveLayout, Rule::LayoutDescriptor, None, Detail::Layout(e)))
    }

    /// The note's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 * self.entries.len());
        for e in &self.entries {
            for v in [e.feature, e.size, e.offset, e.flags] {
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
        out
    }
}

/// `_fpx_sw_bytes` of a signal frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SwBytes {
    /// Size of the frame's extended state including magic2 (xstate_size + 4 for 64-bit).
    pub extended_size: u32,
    /// The features saved (the task's user features).
    pub xfeatures: Xfeatures,
    /// Size of the image (the task's user standard size).
    pub xstate_size: u32,
}

/// The fpstate area of an x86-64 signal frame: image, then magic2.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SigFrame<'a> {
    /// The standard image (`xstate_size` bytes).
    pub image: &'a [u8],
    /// The software bytes.
    pub sw: SwBytes,
}

impl<'a> SigFrame<'a> {
    /// Parses the `xstate_size + 4` bytes from the fpstate pointer on, with the checks of
    /// Linux's `check_xstate_in_sigframe()` (a failure there silently restores FX-only state):
    /// magic1 at 464, xfeatures enumerated and valid, xstate_size = standard_size(xfeatures)
    /// (what the kernel writes; the restore reads that much), extended_size = xstate_size + 4,
    /// magic2 at xstate_size; then the image as XRSTOR with RFBM = xfeatures takes it (the
    /// 64-bit sigreturn path does not run the UABI checks).
    pub fn parse(bytes: &'a [u8], layout: &Layout) -> Result<SigFrame<'a>, RecordError> {
        let f = Format::SigFrame;
        let len = bytes.len();
        if len < MIN_SIZE + 4 {
            return Err(RecordError::size(f, Rule::Truncated, len, MIN_SIZE + 4, SizeBasis::Fixed));
        }
        let magic1 = u32_at(bytes, SW_BYTES).unwrap_or(0);
        if magic1 != FP_XSTATE_MAGIC1 {
            return Err(RecordError::value(f, Rule::Magic, SW_BYTES, "magic1", magic1.into(), FP_XSTATE_MAGIC1.into()));
        }
        let extended_size = u32_at(bytes, SW_BYTES + 4).unwrap_or(0);
        let xfeatures = features_at_464(f, bytes, layout, "xfeatures")?;
        let xstate_size = u32_at(bytes, SW_BYTES + 16).unwrap_or(0);
        let size = layout.standard_size(xfeatures).unwrap_or(0);
        if xstate_size != size {
            return Err(RecordError::value(
                f,
                Rule::LengthField,
                SW_BYTES + 16,
                "xstate_size",
                xstate_size.into(),
                size.into(),
            ));
        }
        // In u64: a hostile layout can make xstate_size u32::MAX.
        let extended = u64::from(xstate_size) + 4;
        if u64::from(extended_size) != extended {
            return Err(RecordError::value(
                f,
                Rule::LengthField,
                SW_BYTES + 4,
                "extended_size",
                extended_size.into(),
                extended,
            ));
        }
        let x = xstate_size as usize;
        let total = x.saturating_add(4);
        if len != total {
            let basis = SizeBasis::Plus { fixed: 4, of: SizeOf::Standard, field: "xfeatures", mask: xfeatures };
            let rule = if len < total { Rule::Truncated } else { Rule::SizeMismatch };
            return Err(RecordError::size(f, rule, len, total, basis));
        }
        let magic2 = u32_at(bytes, x).unwrap_or(0);
        if magic2 != FP_XSTATE_MAGIC2 {
            return Err(RecordError::value(f, Rule::Magic, x, "magic2", magic2.into(), FP_XSTATE_MAGIC2.into()));
        }
        let image = &bytes[..x];
        validate_own_mask(f, image, layout, Profile::Hardware, xfeatures)?;
        Ok(SigFrame { image, sw: SwBytes { extended_size, xfeatures, xstate_size } })
    }

    /// A frame from a standard image of at least standard_size(`xfeatures`) bytes, as the
    /// kernel writes it: XSTATE_BV forced to include x87 and SSE (their init values written
    /// where they were clear, so the state is unchanged), `_fpx_sw_bytes`, magic2. `None` if
    /// the image is shorter or the frame's `extended_size` would not fit in 32 bits.
    pub fn build(image: &[u8], xfeatures: Xfeatures, layout: &Layout) -> Option<Vec<u8>> {
        let size32 = layout.standard_size(xfeatures)?;
        let extended_size = size32.checked_add(4)?;
        let size = size32 as usize;
        let mut out = image.get(..size)?.to_vec();
        let mut h = Header::read(&out)?;
        if !h.xstate_bv.contains(Component::X87) {
            out[0..24].fill(0);
            out[FCW..FCW + 2].copy_from_slice(&FCW_INIT.to_le_bytes());
            out[32..160].fill(0);
        }
        if !h.xstate_bv.contains(Component::SSE) {
            out[XMM0..416].fill(0);
        }
        h.xstate_bv |= Xfeatures::LEGACY;
        h.write(&mut out);
        out[SW_BYTES..512].fill(0);
        out[SW_BYTES..SW_BYTES + 4].copy_from_slice(&FP_XSTATE_MAGIC1.to_le_bytes());
        out[SW_BYTES + 4..SW_BYTES + 8].copy_from_slice(&extended_size.to_le_bytes());
        out[SW_BYTES + 8..SW_BYTES + 16].copy_from_slice(&xfeatures.bits().to_le_bytes());
        out[SW_BYTES + 16..SW_BYTES + 20].copy_from_slice(&size32.to_le_bytes());
        out.extend_from_slice(&FP_XSTATE_MAGIC2.to_le_bytes());
        Some(out)
    }
}
