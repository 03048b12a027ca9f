//! [`SaveArea`]: a vCPU's extended-state save area, sized from its CPUID policy and re-sized
//! when the policy changes, keeping the state it holds.
//!
//! This is the capability of the unmerged Xen patch "x86/xstate: re-size save area when CPUID
//! policy changes" (xen-devel, May 2021; docs/POLICY.md) as a library any VMM can embed:
//!
//! - The area is 64-byte aligned (an XSAVE/XRSTOR operand) and sized for its policy, not the
//!   host: standard format, the largest offset + size over the policy's user components
//!   (CPUID 0xD.0 ECX of the guest); compacted format, the compacted size of the policy's
//!   maximum XCR0 | IA32_XSS with XCOMP_BV = bit 63 | that mask (what XSAVES writes).
//! - It tracks XCR0, IA32_XSS and their accumulations: every bit ever set (Xen's `xcr0_accum`;
//!   the IA32_XSS accumulator answers Xen's open question whether it should cover XSS too).
//! - It starts in the architectural init state (FCW 0x037F, MXCSR 0x1F80, everything else zero,
//!   XSTATE_BV 0) with XCR0 = 1 (x87, its value after RESET) and IA32_XSS = 0.
//! - [`SaveArea::load`] takes an image of either form, validated as XRSTOR/XRSTORS with the
//!   area's XCR0 (| IA32_XSS) would (the hardware profile), and keeps the components outside
//!   RFBM, as XRSTOR does. [`SaveArea::store`] hands out an image of either form, as XSAVE or
//!   XSAVES/XSAVEC would write it.
//! - [`SaveArea::set_policy`] grows or shrinks the area and keeps the state. It fails with
//!   [`AreaError::Busy`] (Xen's -EBUSY), changing nothing, when an accumulator holds a bit outside
//!   the new policy's maximum: the guest already used state the new policy forbids. Growing a
//!   standard area keeps the bytes and zeroes those from the old used extent (the standard size
//!   of `xcr0_accum`) on, as the Xen patch does; a compacted area is re-laid out, since
//!   compacted offsets depend on XCOMP_BV.
//!
//! The area's bytes follow the **host's** layout ([`SaveArea::layout`], the policy's
//! [`Policy::host_layout`]), not the guest's [`Policy::layout`]: XSAVE, XSAVEC and XSAVES run on
//! the host's CPU, so a compacted area keeps the host's 64-byte alignment even when the policy
//! hides XSAVEC from the guest (and with it the align64 flags). [`SaveArea::component`] reads a
//! component where the bytes really are; [`SaveArea::bytes_mut`] hands the area to a save
//! instruction.
//!
//! Loads are checked against the MXCSR mask of the CPU that will restore the area, given at
//! construction (the MXCSR_MASK field its FXSAVE/XSAVE writes: 0xFFFF on Intel, 0x2FFFF on AMD
//! Zen 4): XRSTOR raises #GP for MXCSR bits outside it (SDM Vol. 1 §13.8.1, §11.6.6), and no
//! default fits every CPU.
//!
//! The policy is shared ([`Arc`]): a thousand vCPUs of one domain hold one policy and a
//! thousand areas; [`SaveArea::allocated`] reports the heap bytes of one area.
//!
//! # Example: start-up sizing and re-sizing
//!
//! A guest with AVX-512 but no AMX on a Sapphire Rapids host gets a 2432-byte compacted area,
//! not the host's 10752; the policy then grows to AMX and the area with it, state kept; once
//! the guest has enabled AMX, shrinking the policy back is refused (Xen's -EBUSY).
//!
//! ```
//! use std::sync::Arc;
//! use xstate::area::{AreaError, SaveArea};
//! use xstate::image::Form;
//! use xstate::policy::{Policy, Selection};
//! use xstate::{Layout, Leaf0d, Regs, Xfeatures};
//!
//! // The host's CPUID leaf 0xD (Intel Xeon w7-2475X), as the CPU or KVM_GET_SUPPORTED_CPUID
//! // reports it: subleaf -> EAX (size), EBX (offset), ECX (flags), EDX.
//! # let rows = [
//! #     (0, 0x602E7, 0x2B00, 0x2B00, 0), (1, 0x1F, 0x2A80, 0xDD00, 0), (2, 0x100, 0x240, 0, 0),
//! #     (5, 0x40, 0x440, 0, 0), (6, 0x200, 0x480, 0, 0), (7, 0x400, 0x680, 0, 0), (8, 0x80, 0, 1, 0),
//! #     (9, 0x8, 0xA80, 0, 0), (10, 0x8, 0, 1, 0), (11, 0x10, 0, 1, 0), (12, 0x18, 0, 1, 0),
//! #     (14, 0x30, 0, 1, 0), (15, 0x328, 0, 1, 0), (17, 0x40, 0xAC0, 2, 0), (18, 0x2000, 0xB00, 6, 0),
//! # ];
//! let mut leaf = Leaf0d::new();
//! for (i, eax, ebx, ecx, edx) in rows {
//!     leaf.set(i, Regs::new(eax, ebx, ecx, edx));
//! }
//! let host = Layout::from_leaf0d(&leaf)?;
//!
//! // At start-up: the guest's policy sizes its area.
//! let avx512 = Arc::new(Policy::derive(&host, &Selection::parse("avx,avx512")?)?);
//! let mxcsr_mask = 0xFFFF; // the host's MXCSR_MASK field (xstate_hw::Host::mxcsr_mask)
//! let mut vcpu = SaveArea::new(avx512.clone(), Form::Compacted, mxcsr_mask)?;
//! assert_eq!(vcpu.len(), 2432);
//! vcpu.set_xcr0(Xfeatures(0xE7))?; // the guest's XSETBV
//!
//! // The policy grows (AMX added): the area grows, its state kept.
//! let amx = Arc::new(Policy::derive(&host, &Selection::parse("avx,avx512,amx")?)?);
//! vcpu.set_policy(amx)?;
//! assert_eq!(vcpu.len(), 10688);
//! vcpu.set_xcr0(Xfeatures(0x600E7))?;
//!
//! // The guest has used AMX: the smaller policy is refused and nothing changes.
//! assert!(matches!(vcpu.set_policy(avx512), Err(AreaError::Busy { .. })));
//! assert_eq!(vcpu.len(), 10688);
//! // The area is the operand of the host's XSAVES/XRSTORS (64-byte aligned), and a component
//! // is read where the host's layout puts it.
//! assert!((vcpu.bytes().as_ptr() as usize).is_multiple_of(64));
//! assert_eq!(vcpu.component(xstate::Component::TILEDATA).map(|t| t.len()), Some(8192));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use alloc::sync::Arc;
use core::fmt;

use crate::aligned::AlignedBuf;
use crate::component::legacy::{COMPACTED, EXTENDED_OFFSET, mxcsr_mask_of_field};
use crate::image::ValidationDetail;
use crate::image::{self, Context, ConvertError, Form, Header, Image, ImageBuf, Profile, ValidationError};
use crate::layout::Layout;
use crate::policy::{Policy, SetError};
use crate::xcr0::MaskRegister;
use crate::xfeatures::Xfeatures;

/// Why a save-area operation was refused. A refused operation changes nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AreaError {
    /// The new policy's maximum lacks components the guest has already enabled (Xen: -EBUSY).
    Busy {
        /// Which accumulator.
        register: MaskRegister,
        /// Its value.
        accum: Xfeatures,
        /// The bits outside the new maximum.
        outside: Xfeatures,
    },
    /// A standard-format area cannot hold supervisor state; the policy exposes some.
    SupervisorNeedsCompacted {
        /// The policy's maximum IA32_XSS.
        xss_max: Xfeatures,
    },
    /// A compacted area (or image) on a host without XSAVEC/XSAVES.
    NoCompaction,
    /// The new policy places a component that holds state elsewhere (another host's layout).
    Geometry {
        /// The component.
        component: crate::component::Component,
    },
    /// XSETBV or WRMSR IA32_XSS would raise #GP.
    Set(SetError),
    /// The image is not one XRSTOR(S) with the area's RFBM would load.
    Invalid(ValidationError),
    /// The state cannot be carried into the requested image.
    Restore(ConvertError),
    /// An explicit RFBM names components the guest never enabled.
    RfbmOutsideAccum {
        /// The RFBM.
        rfbm: Xfeatures,
        /// The bits outside xcr0_accum | xss_accum.
        outside: Xfeatures,
    },
}

impl fmt::Display for AreaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AreaError::Busy { register, accum, outside } => write!(
                f,
                "policy change refused (busy): the {register} accumulator {accum} has {outside} ({}) outside the new \
                 policy's maximum",
                outside.names()
            ),
            AreaError::SupervisorNeedsCompacted { xss_max } => write!(
                f,
                "a standard-format area cannot hold supervisor state, and the policy exposes IA32_XSS {xss_max} ({})",
                xss_max.names()
            ),
            AreaError::NoCompaction => f.write_str("the host has no compacted form (no XSAVEC/XSAVES)"),
            AreaError::Geometry { component } => write!(
                f,
                "component {} ({component}) holds state but the new policy's host places it differently",
                component.index()
            ),
            AreaError::Set(e) => fmt::Display::fmt(e, f),
            AreaError::Invalid(e) => fmt::Display::fmt(e, f),
            AreaError::Restore(e) => fmt::Display::fmt(e, f),
            AreaError::RfbmOutsideAccum { rfbm, outside } => {
                write!(f, "RFBM {rfbm} has {outside} ({}) that the guest never enabled", outside.names())
            }
        }
    }
}

impl core::error::Error for AreaError {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match self {
            AreaError::Set(e) => Some(e),
            AreaError::Invalid(e) => Some(e),
            AreaError::Restore(e) => Some(e),
            _ => None,
        }
    }
}

/// A vCPU's save area for a [`Policy`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SaveArea {
    policy: Arc<Policy>,
    form: Form,
    buf: AlignedBuf,
    xcr0: Xfeatures,
    xss: Xfeatures,
    xcr0_accum: Xfeatures,
    xss_accum: Xfeatures,
    mxcsr_mask: u32,
}

/// XCOMP_BV of a compacted area for `policy`.
fn area_xcomp_bv(policy: &Policy, form: Form) -> Xfeatures {
    match form {
        Form::Standard => Xfeatures::EMPTY,
        Form::Compacted => Xfeatures(COMPACTED) | policy.xcr0_max() | policy.xss_max(),
    }
}

fn check_form(policy: &Policy, form: Form) -> Result<(), AreaError> {
    match form {
        Form::Standard if !policy.xss_max().is_empty() => {
            Err(AreaError::SupervisorNeedsCompacted { xss_max: policy.xss_max() })
        }
        Form::Compacted if !policy.host_layout().features().compaction() => Err(AreaError::NoCompaction),
        _ => Ok(()),
    }
}

impl SaveArea {
    /// The size of an area for `policy` in `form`: the guest's CPUID 0xD.0 ECX for the
    /// standard form, the compacted size of its maximum XCR0 | IA32_XSS for the compacted form.
    pub fn size_for(policy: &Policy, form: Form) -> usize {
        match form {
            Form::Standard => policy.standard_size_max() as usize,
            Form::Compacted => policy.compacted_size_max() as usize,
        }
        .max(EXTENDED_OFFSET)
    }

    /// A fresh area in the init state. A standard area needs a policy without supervisor
    /// components; a compacted one a host with XSAVEC or XSAVES.
    ///
    /// `mxcsr_mask_field` is the MXCSR_MASK field (bytes 28..31) the host's FXSAVE or XSAVE
    /// writes, 0 meaning 0xFFBF (SDM Vol. 1 §11.6.6): loads refuse MXCSR values with bits
    /// outside it, as XRSTOR on that host would. `xstate_hw::Host::mxcsr_mask` reads it.
    pub fn new(policy: Arc<Policy>, form: Form, mxcsr_mask_field: u32) -> Result<SaveArea, AreaError> {
        check_form(&policy, form)?;
        let buf = ImageBuf::init(Self::size_for(&policy, form), area_xcomp_bv(&policy, form)).into_inner();
        Ok(SaveArea {
            policy,
            form,
            buf,
            xcr0: Xfeatures::X87,
            xss: Xfeatures::EMPTY,
            xcr0_accum: Xfeatures::X87,
            xss_accum: Xfeatures::EMPTY,
            mxcsr_mask: mxcsr_mask_of_field(mxcsr_mask_field),
        })
    }

    /// The policy.
    pub fn policy(&self) -> &Arc<Policy> {
        &self.policy
    }

    /// The area's format.
    pub fn form(&self) -> Form {
        self.form
    }

    /// The layout the area's bytes follow: the host's ([`Policy::host_layout`]), where the
    /// host's XSAVE* put each component. Not the guest's [`Policy::layout`], whose compacted
    /// offsets differ when the policy hides XSAVEC.
    pub fn layout(&self) -> &Layout {
        self.policy.host_layout()
    }

    /// The area's bytes, 64-byte aligned: an image in [`SaveArea::layout`] and the area's form,
    /// valid for XRSTOR (compacted: XRSTORS) with RFBM = the guest's XCR0 (| IA32_XSS).
    pub fn bytes(&self) -> &[u8] {
        &self.buf
    }

    /// The area's bytes for a save instruction to write: XSAVE or XSAVEOPT into a standard
    /// area, XSAVEC or XSAVES into a compacted one, executed on the policy's host with the
    /// guest's XCR0 (and IA32_XSS) loaded, so RFBM is within them and every byte written lies
    /// inside the area (its size is the policy's maximum). The area reads its header again
    /// afterwards; a compacted area whose XCOMP_BV the save narrowed is laid out again at the
    /// next load or policy change. Writing anything but a save's output is the caller's
    /// responsibility: the next [`SaveArea::load`] or [`SaveArea::store`] may refuse it.
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.buf
    }

    /// The area as an image view; read its components with [`SaveArea::layout`] (or use
    /// [`SaveArea::component`]).
    pub fn image(&self) -> Image<'_> {
        Image::new(&self.buf).expect("an area holds at least 576 bytes")
    }

    /// The bytes of component `c` in the area, under [`SaveArea::layout`]; `None` if the area
    /// has no place for it (not in the policy, supervisor in a standard area).
    pub fn component(&self, c: crate::component::Component) -> Option<&[u8]> {
        self.image().component(self.layout(), c)
    }

    /// The area's size in bytes.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Always false: an area holds at least 576 bytes.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Heap bytes the area holds (its size plus up to 63 bytes of alignment slack).
    pub fn allocated(&self) -> usize {
        self.buf.allocated()
    }

    /// The guest's XCR0.
    pub fn xcr0(&self) -> Xfeatures {
        self.xcr0
    }

    /// The guest's IA32_XSS.
    pub fn xss(&self) -> Xfeatures {
        self.xss
    }

    /// Every bit XCR0 has held (Xen's `xcr0_accum`).
    pub fn xcr0_accum(&self) -> Xfeatures {
        self.xcr0_accum
    }

    /// Every bit IA32_XSS has held.
    pub fn xss_accum(&self) -> Xfeatures {
        self.xss_accum
    }

    /// XSTATE_BV of the area: the components whose state is not init.
    pub fn xstate_bv(&self) -> Xfeatures {
        self.image().xstate_bv()
    }

    /// The MXCSR mask loads are checked against (from the field given to [`SaveArea::new`]).
    pub fn mxcsr_mask(&self) -> u32 {
        self.mxcsr_mask
    }

    /// Changes the MXCSR mask loads are checked against: the MXCSR_MASK field (0 means
    /// 0xFFBF) of the host that will restore the area, e.g. after moving it to another host.
    pub fn set_mxcsr_mask(&mut self, field: u32) {
        self.mxcsr_mask = mxcsr_mask_of_field(field);
    }

    /// Sets XCR0 (XSETBV at CPL 0), checked against the policy; the state is kept.
    pub fn set_xcr0(&mut self, value: Xfeatures) -> Result<(), AreaError> {
        self.policy.check_xcr0(value).map_err(AreaError::Set)?;
        self.xcr0 = value;
        self.xcr0_accum |= value;
        Ok(())
    }

    /// Sets IA32_XSS (WRMSR 0xDA0), checked against the policy; the state is kept.
    pub fn set_xss(&mut self, value: Xfeatures) -> Result<(), AreaError> {
        self.policy.check_xss(value).map_err(AreaError::Set)?;
        self.xss = value;
        self.xss_accum |= value;
        Ok(())
    }

    /// Loads an image as XRSTOR with RFBM = XCR0 (standard image) or XRSTORS with RFBM =
    /// XCR0 | IA32_XSS (compacted image, when IA32_XSS is not 0) would.
    pub fn load(&mut self, image: &[u8]) -> Result<(), AreaError> {
        self.load_with(image, self.xcr0 | self.xss)
    }

    /// Loads an image with an explicit RFBM within `xcr0_accum | xss_accum` (to restore state
    /// saved for components the guest enabled before, e.g. Xen's record of `xcr0_accum`).
    /// Supervisor bits of RFBM apply to compacted images only.
    pub fn load_with(&mut self, image: &[u8], rfbm: Xfeatures) -> Result<(), AreaError> {
        self.check_rfbm(rfbm)?;
        let form = Header::read(image).map_or(Form::Standard, |h| h.form());
        let user = rfbm & self.policy.xcr0_max();
        let sup = match form {
            Form::Standard => Xfeatures::EMPTY,
            Form::Compacted => rfbm & self.policy.xss_max(),
        };
        let mut ctx = Context::new(user);
        ctx.xss = sup;
        ctx.mxcsr_mask = self.mxcsr_mask;
        let host = self.policy.host_layout();
        image::validate(image, host, Profile::Hardware, &ctx).map_err(AreaError::Invalid)?;
        let img = Image::new(image).map_err(|_| {
            AreaError::Invalid(ValidationError {
                profile: Profile::Hardware,
                rule: image::ValidationRule::TooShort,
                detail: ValidationDetail::Length { len: image.len(), needed: image::MIN_SIZE },
            })
        })?;
        let mut normalized = self.normalized()?;
        let dst = match normalized.as_mut() {
            Some(b) => b,
            None => &mut self.buf,
        };
        image::restore_into(&img, host, user | sup, dst, host).map_err(AreaError::Restore)?;
        if let Some(b) = normalized {
            self.buf = b;
        }
        Ok(())
    }

    /// Stores the state as an image of `form`: standard as XSAVE with RFBM = XCR0 would write
    /// it, compacted as XSAVEC (or XSAVES, when IA32_XSS is not 0) with RFBM = XCR0 | IA32_XSS,
    /// XCOMP_BV = bit 63 | RFBM.
    pub fn store(&self, form: Form) -> Result<ImageBuf, AreaError> {
        self.store_with(form, self.xcr0 | self.xss)
    }

    /// Stores with an explicit RFBM within `xcr0_accum | xss_accum` (supervisor bits apply to
    /// the compacted form only).
    pub fn store_with(&self, form: Form, rfbm: Xfeatures) -> Result<ImageBuf, AreaError> {
        self.check_rfbm(rfbm)?;
        let host = self.policy.host_layout();
        let (rfbm, xcomp_bv, len) = match form {
            Form::Standard => {
                let r = rfbm & self.policy.xcr0_max();
                (r, Xfeatures::EMPTY, host.standard_size(r).unwrap_or(0))
            }
            Form::Compacted => {
                if !host.features().compaction() {
                    return Err(AreaError::NoCompaction);
                }
                (rfbm, Xfeatures(COMPACTED) | rfbm, host.compacted_size(rfbm).unwrap_or(0))
            }
        };
        let mut out = ImageBuf::init(len as usize, xcomp_bv);
        image::restore_into(&self.image(), host, rfbm, &mut out, host).map_err(AreaError::Restore)?;
        Ok(out)
    }

    /// The area laid out again in its own form and XCOMP_BV, if a save through
    /// [`SaveArea::bytes_mut`] changed them (XSAVEC/XSAVES write XCOMP_BV = bit 63 | RFBM);
    /// `None` when they are as the area keeps them.
    fn normalized(&self) -> Result<Option<AlignedBuf>, AreaError> {
        let want = area_xcomp_bv(&self.policy, self.form);
        let h = Header::read(&self.buf).unwrap_or(Header::EMPTY);
        if h.xcomp_bv == want {
            return Ok(None);
        }
        let host = self.policy.host_layout();
        let mut out = ImageBuf::init(self.buf.len(), want);
        let held = match h.form() {
            Form::Standard => h.xstate_bv | Xfeatures::LEGACY,
            Form::Compacted => h.compacted_components() | Xfeatures::LEGACY,
        } & (self.policy.xcr0_max() | self.policy.xss_max());
        image::restore_into(&self.image(), host, held, &mut out, host).map_err(AreaError::Restore)?;
        out[416..512].copy_from_slice(&self.buf[416..512]);
        Ok(Some(out.into_inner()))
    }

    fn check_rfbm(&self, rfbm: Xfeatures) -> Result<(), AreaError> {
        let outside = rfbm - (self.xcr0_accum | self.xss_accum);
        if outside.is_empty() { Ok(()) } else { Err(AreaError::RfbmOutsideAccum { rfbm, outside }) }
    }

    /// Moves the area to a new policy: refused with [`AreaError::Busy`] when an accumulator has
    /// bits outside the new maximum, else resized to the new policy's size with the state kept.
    /// Nothing changes on error.
    pub fn set_policy(&mut self, new: Arc<Policy>) -> Result<(), AreaError> {
        for (register, accum, max) in
            [(MaskRegister::Xcr0, self.xcr0_accum, new.xcr0_max()), (MaskRegister::Xss, self.xss_accum, new.xss_max())]
        {
            let outside = accum - max;
            if !outside.is_empty() {
                return Err(AreaError::Busy { register, accum, outside });
            }
        }
        check_form(&new, self.form)?;
        let normalized = self.normalized()?;
        let cur: &[u8] = normalized.as_deref().unwrap_or(&self.buf);
        let (old_host, new_host) = (self.policy.host_layout(), new.host_layout());
        if let Some(component) = (self.xcr0_accum | self.xss_accum).iter().find(|c| !same_place(old_host, new_host, *c))
        {
            return Err(AreaError::Geometry { component });
        }
        let size = Self::size_for(&new, self.form);
        let buf = match self.form {
            Form::Standard => {
                // Xen: keep the contents, zero from the old used extent up to the new size.
                let extent = (old_host.standard_size(self.xcr0_accum).unwrap_or(0) as usize).max(EXTENDED_OFFSET);
                let mut buf = AlignedBuf::zeroed(size);
                let keep = size.min(cur.len());
                buf[..keep].copy_from_slice(&cur[..keep]);
                if let Some(tail) = buf.get_mut(extent..) {
                    tail.fill(0);
                }
                buf
            }
            Form::Compacted => {
                let mut out = ImageBuf::init(size, area_xcomp_bv(&new, Form::Compacted));
                let rfbm = self.xcr0_accum | self.xss_accum;
                let cur = Image::new(cur).expect("an area holds at least 576 bytes");
                image::restore_into(&cur, old_host, rfbm, &mut out, new_host).map_err(AreaError::Restore)?;
                // Legacy bytes that are not state (416..512) travel too.
                out[416..512].copy_from_slice(&cur.bytes()[416..512]);
                out.into_inner()
            }
        };
        self.buf = buf;
        self.policy = new;
        Ok(())
    }
}

/// True if `c` has the same size, standard offset, class and alignment on both hosts.
fn same_place(a: &Layout, b: &Layout, c: crate::component::Component) -> bool {
    match (a.geometry(c), b.geometry(c)) {
        (Some(x), Some(y)) => {
            (x.size, x.offset, x.supervisor, x.align64) == (y.size, y.offset, y.supervisor, y.align64)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests;
