//! Every format through one intermediate: [`read`] a record into [`Contents`], [`write`] one
//! from them, [`detect`] which format some bytes are.

use alloc::vec::Vec;
use core::fmt;

use super::contents::{Contents, Field, State, StateId};
use super::criu::core::{CoreFpu, is_core};
use super::criu::cpuinfo::CpuInfo;
use super::criu::{CPUINFO_MAGIC, IMG_COMMON_MAGIC};
#[cfg(feature = "elf")]
use super::elf::read_core;
use super::fc_blob::FcBlob;
use super::kvm::{KVM_XCRS_SIZE, KVM_XSAVE_SIZE, KvmXcrs, KvmXsave, cap_xsave2};
use super::linux::{FP_XSTATE_MAGIC1, LayoutNote, NtXstate, SW_BYTES, SigFrame};
use super::portable::{MAGIC, Portable};
use super::xen::{DomctlBlob, HVM_CPU_XSAVE, HvmCpuXsave, PV_VCPU_XSAVE, PvVcpuXsave, XenHost};
use super::{Detail, RecordError, Rule};
use crate::component::legacy::{COMPACTED, mxcsr_mask_proven_by};
use crate::image::{ConvertError, Form, Header, Image, ImageBuf, MIN_SIZE, Target, convert};
use crate::layout::Layout;
use crate::xcr0::catalogue_supervisor;
use crate::xfeatures::Xfeatures;

/// A record format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Format {
    /// A bare XSAVE image, standard or compacted.
    Image,
    /// Xen's get/setvcpuextstate blob.
    XenDomctl,
    /// The forward-compatible blob (first word XCR0 | XSS, standard or compacted image).
    FcBlob,
    /// Xen's HVM save record CPU_XSAVE (descriptor + body).
    XenHvm,
    /// Xen's PV migration record X86_PV_VCPU_XSAVE.
    XenPv,
    /// `struct kvm_xsave` (4096 bytes).
    KvmXsave,
    /// The KVM_GET_XSAVE2 buffer (KVM_CAP_XSAVE2 bytes).
    KvmXsave2,
    /// `struct kvm_xcrs`.
    KvmXcrs,
    /// Linux NT_X86_XSTATE.
    NtXstate,
    /// Linux NT_X86_XSAVE_LAYOUT.
    XsaveLayout,
    /// An x86-64 Linux signal frame's fpstate.
    SigFrame,
    /// xstate's portable record.
    Portable,
    /// An x86-64 Linux ELF core dump.
    ElfCore,
    /// A CRIU `core-<tid>.img` (one thread's FPU state; written by patching, [`patch()`]).
    CriuCore,
    /// A CRIU `cpuinfo.img` (no image: [`super::criu::cpuinfo`]).
    CriuCpuinfo,
    /// A QEMU migration stream (`migrate file:`): every vCPU's `cpu` section.
    Qemu,
    /// A Cloud Hypervisor snapshot's `state.json`: every vCPU's xsave, xcrs and CPUID.
    CloudHypervisor,
    /// A Firecracker snapshot's `vmstate`: every vCPU's kvm_xsave, kvm_xcrs and CPUID, located
    /// by content.
    Firecracker,
}

impl Format {
    /// Every format.
    pub const ALL: [Format; 18] = [
        Format::Image,
        Format::XenDomctl,
        Format::FcBlob,
        Format::XenHvm,
        Format::XenPv,
        Format::KvmXsave,
        Format::KvmXsave2,
        Format::KvmXcrs,
        Format::NtXstate,
        Format::XsaveLayout,
        Format::SigFrame,
        Format::Portable,
        Format::ElfCore,
        Format::CriuCore,
        Format::CriuCpuinfo,
        Format::Qemu,
        Format::CloudHypervisor,
        Format::Firecracker,
    ];

    /// The command-line name.
    pub const fn name(self) -> &'static str {
        match self {
            Format::Image => "image",
            Format::XenDomctl => "xen-domctl",
            Format::FcBlob => "fc-blob",
            Format::XenHvm => "xen-hvm",
            Format::XenPv => "xen-pv",
            Format::KvmXsave => "kvm-xsave",
            Format::KvmXsave2 => "kvm-xsave2",
            Format::KvmXcrs => "kvm-xcrs",
            Format::NtXstate => "nt-xstate",
            Format::XsaveLayout => "nt-xsave-layout",
            Format::SigFrame => "sigframe",
            Format::Portable => "portable",
            Format::ElfCore => "elf-core",
            Format::CriuCore => "criu-core",
            Format::CriuCpuinfo => "criu-cpuinfo",
            Format::Qemu => "qemu",
            Format::CloudHypervisor => "cloud-hypervisor",
            Format::Firecracker => "firecracker",
        }
    }

    /// The format of a command-line name.
    pub fn from_name(s: &str) -> Option<Format> {
        Format::ALL.into_iter().find(|f| f.name().eq_ignore_ascii_case(s))
    }

    /// Whether [`write()`] can produce this format.
    pub const fn writable(self) -> bool {
        !matches!(self, Format::ElfCore | Format::CriuCore | Format::CriuCpuinfo) && !self.is_container()
    }

    /// Whether [`write()`] records `field` in this format (a field it holds is never dropped,
    /// so [`Options::drop`] of it changes nothing).
    pub const fn holds(self, field: Field) -> bool {
        let h = holds(self);
        match field {
            Field::Image => h.image,
            Field::Xcr0 => h.xcr0,
            Field::Xss => h.xss,
            Field::Accum => h.accum,
            Field::Vcpu => h.vcpu,
        }
    }

    /// Whether reading or writing the format applies Xen's host mask and guest maximum
    /// ([`Options::xen`]): Xen's own records and the forward-compatible blob proposed for it.
    pub const fn uses_xen_host(self) -> bool {
        matches!(self, Format::XenDomctl | Format::XenHvm | Format::XenPv | Format::FcBlob)
    }

    /// Whether the format is a tool's whole file holding states among other things (a QEMU
    /// stream, a VMM snapshot), written by [`patch()`]ing an existing file rather than from
    /// nothing.
    pub const fn is_container(self) -> bool {
        matches!(self, Format::Qemu | Format::CloudHypervisor | Format::Firecracker)
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What the consumer knows besides the bytes, and what a writer may supply or drop. Every
/// field has a default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Options {
    /// Xen's host mask and policy maximum (default: [`XenHost::of`] the layout: Xen's
    /// `xfeature_mask` and the largest guest maximum).
    pub xen: Option<XenHost>,
    /// KVM's supported XCR0 (default: every user state of the layout).
    pub kvm_supported: Option<Xfeatures>,
    /// The KVM_GET_XSAVE2 size (default: KVM_CAP_XSAVE2 for `kvm_supported`).
    pub kvm_xsave2_size: Option<usize>,
    /// The restoring CPU's MXCSR mask for KVM's check (default: the mask the image's MXCSR_MASK
    /// field proves, [`mxcsr_mask_proven_by`]: none where it is 0).
    pub mxcsr_mask: Option<u32>,
    /// XCR0 where the record does not say (a bare image, kvm_xsave: KVM_GET_XCRS has it), and
    /// the value a writer records instead of the state's. Never inferred: without it such a
    /// state has no XCR0 and a target that records one is refused.
    pub xcr0: Option<Xfeatures>,
    /// The vCPU a writer records where the state has none (a Xen HVM or PV record needs one).
    pub vcpu: Option<u32>,
    /// Fields a writer may lose when the target cannot hold them (else [`Rule::NotHeld`]).
    pub drop: FieldSet,
    /// The accelerator that wrote a QEMU stream, where the stream's evidence does not say
    /// ([`super::qemu`]).
    pub qemu_accel: Option<super::qemu::Accel>,
    /// The layout given to [`read()`] is meant for a snapshot's images: it must be the one the
    /// file names (its CPUID's, or a re-laid-out region's mark, [`super::relayout`]), else the
    /// read is refused; without it a marked region cannot be read.
    pub layout_given: bool,
}

/// A set of [`Field`]s a conversion may drop.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FieldSet(u8);

impl FieldSet {
    /// No field.
    pub const NONE: FieldSet = FieldSet(0);

    /// The same set with `f`.
    pub const fn with(self, f: Field) -> FieldSet {
        FieldSet(self.0 | 1 << f as u8)
    }

    /// Whether `f` is in the set.
    pub const fn contains(self, f: Field) -> bool {
        self.0 & (1 << f as u8) != 0
    }
}

/// Which fields of a [`State`] each format holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Holds {
    image: bool,
    xcr0: bool,
    xss: bool,
    accum: bool,
    vcpu: bool,
}

const fn holds(f: Format) -> Holds {
    let (image, xcr0, xss, accum, vcpu) = match f {
        Format::Image | Format::KvmXsave | Format::KvmXsave2 => (true, false, false, false, false),
        Format::XenDomctl => (true, true, false, true, false),
        Format::FcBlob | Format::Portable => (true, true, true, true, false),
        Format::XenHvm | Format::XenPv => (true, true, false, true, true),
        Format::KvmXcrs => (false, true, false, false, false),
        Format::NtXstate | Format::SigFrame => (true, true, false, false, false),
        Format::XsaveLayout | Format::CriuCpuinfo => (false, false, false, false, false),
        Format::CriuCore => (true, false, false, false, false),
        Format::ElfCore => (true, true, false, false, true),
        Format::Qemu => (true, true, true, false, true),
        Format::CloudHypervisor | Format::Firecracker => (true, true, false, false, true),
    };
    Holds { image, xcr0, xss, accum, vcpu }
}

/// The components a standard buffer of `image` laid out for `layout` holds (KVM's buffer:
/// `hint`, the mask KVM writes at 464, else every user component): those that lie wholly
/// inside it, less any XCR0 group cut in half (the AVX-512 trio, the MPX and AMX pairs: on an
/// AMX host a 4096-byte kvm_xsave holds TILECFG but not TILEDATA). `None` when XSTATE_BV has a
/// component outside. For the extent of a buffer, never for an XCR0.
pub(super) fn standard_extent(layout: &Layout, image: &[u8], hint: Xfeatures) -> Option<Xfeatures> {
    let img = Image::new(image).ok()?;
    let base = if hint.is_empty() { layout.user_supported() } else { hint & layout.user_supported() };
    let mut m = base
        .iter()
        .filter(|&c| c.is_legacy() || layout.standard_range(c).is_some_and(|r| r.end <= image.len()))
        .fold(Xfeatures::LEGACY, |m, c| m.with(c));
    for group in [Xfeatures::AVX512, Xfeatures::MPX, Xfeatures::AMX] {
        if !(m & group).is_empty() && !group.is_subset_of(m) {
            m = m - group;
        }
    }
    (img.xstate_bv() - Xfeatures::BIT63).is_subset_of(m).then_some(m)
}

fn image_buf(bytes: &[u8]) -> Option<ImageBuf> {
    ImageBuf::from_bytes(bytes).ok()
}

fn xen_state(b: &DomctlBlob<'_>) -> State {
    if b.xcr0_accum.is_empty() {
        return State::no_xsave_state();
    }
    State::new(b.image.and_then(image_buf), Some(b.xcr0_accum)).with_xcr0(b.xcr0).with_accum(b.xcr0_accum)
}

/// Reads `bytes` as `format` for the CPU of `layout`. The contents say what the record says:
/// a field it does not carry is `None` (XCR0 of a bare image or a `kvm_xsave` is
/// `opts.xcr0`, never inferred from XSTATE_BV or a mask the record holds for another purpose).
pub fn read(format: Format, bytes: &[u8], layout: &Layout, opts: &Options) -> Result<Contents, RecordError> {
    let xen = opts.xen.unwrap_or_else(|| XenHost::of(layout));
    let kvm_supported = opts.kvm_supported.unwrap_or(layout.user_supported());
    let f = format;
    let one = |s: State| Contents::one(f, s);
    Ok(match format {
        Format::Image => {
            let img = Image::new(bytes)
                .map_err(|_| RecordError::size(f, Rule::Truncated, bytes.len(), MIN_SIZE, super::SizeBasis::Fixed))?;
            let mut s = State::new(image_buf(bytes), None);
            s.xcr0 = opts.xcr0;
            if img.form() == Form::Compacted {
                let laid_out = img.header().compacted_components();
                s.rfbm = Some(laid_out | Xfeatures::LEGACY);
                s.xss = Some(laid_out & layout.supervisor_supported());
            } else {
                s.rfbm = opts.xcr0.map(|x| x & layout.user_supported());
            }
            one(s)
        }
        Format::XenDomctl => one(xen_state(&DomctlBlob::parse(bytes, layout, &xen)?)),
        Format::FcBlob => {
            let host = opts.xen.unwrap_or_else(|| FcBlob::host_of(layout));
            let b = FcBlob::parse(bytes, layout, &host)?;
            if b.xstates_accum.is_empty() {
                one(State::no_xsave_state())
            } else {
                let s = State::new(b.image.and_then(image_buf), Some(b.xstates_accum));
                one(s.with_xcr0(b.xcr0(layout)).with_xss(b.xss(layout)).with_accum(b.xstates_accum))
            }
        }
        Format::XenHvm => {
            let r = HvmCpuXsave::parse(bytes, layout, &xen)?;
            let mut s = State::new(image_buf(r.image), Some(r.xcr0_accum))
                .with_xcr0(r.xcr0)
                .with_accum(r.xcr0_accum)
                .with_id(StateId::Vcpu(r.vcpu.into()));
            s.uninterpreted.xfeature_mask = Some(r.xfeature_mask);
            one(s)
        }
        Format::XenPv => {
            let r = PvVcpuXsave::parse(bytes, layout, &xen)?;
            let mut s = match &r.blob {
                Some(b) => xen_state(b),
                None => State::no_xsave_state(),
            }
            .with_id(StateId::Vcpu(r.vcpu));
            s.uninterpreted.pv_reserved = Some(r.reserved);
            one(s)
        }
        Format::KvmXsave | Format::KvmXsave2 => {
            let size = if f == Format::KvmXsave {
                KVM_XSAVE_SIZE
            } else {
                opts.kvm_xsave2_size.or_else(|| cap_xsave2(layout, kvm_supported)).unwrap_or(KVM_XSAVE_SIZE)
            };
            let mask = opts
                .mxcsr_mask
                .unwrap_or_else(|| Image::new(bytes).map_or(0xFFFF, |i| mxcsr_mask_proven_by(i.mxcsr_mask())));
            let k = KvmXsave::parse(f, bytes, size, layout, kvm_supported, mask)?;
            // Bytes 464..471 hold the host's supported mask, not the guest's XCR0.
            let extent = standard_extent(layout, k.image, k.sw_mask & kvm_supported);
            let mut s = State::new(image_buf(k.image), extent);
            s.xcr0 = opts.xcr0;
            one(s)
        }
        Format::KvmXcrs => {
            let x = KvmXcrs::parse(bytes, layout, kvm_supported)?;
            let mut s = State::new(None, None);
            s.xcr0 = x.xcr0();
            one(s)
        }
        Format::NtXstate => {
            let n = NtXstate::parse(bytes, layout)?;
            one(State::new(image_buf(n.image), Some(n.xcr0)).with_xcr0(n.xcr0))
        }
        Format::XsaveLayout => {
            let n = LayoutNote::parse(bytes)?;
            Contents { format: f, layout: Some(n.to_layout(layout.features())?), states: Vec::new(), notes: Vec::new() }
        }
        Format::SigFrame => {
            let s = SigFrame::parse(bytes, layout)?;
            one(State::new(image_buf(s.image), Some(s.sw.xfeatures)).with_xcr0(s.sw.xfeatures))
        }
        Format::Portable => {
            let p = Portable::parse(bytes)?;
            let s = State::new(image_buf(p.image), Some(p.xstates_accum))
                .with_xcr0(p.xcr0)
                .with_xss(p.xss)
                .with_accum(p.xstates_accum);
            one(s).with_layout(p.layout)
        }
        #[cfg(not(feature = "elf"))]
        Format::ElfCore => {
            return Err(RecordError::new(f, Rule::Unrecognised, None, Detail::Text("needs xstate's `elf` feature")));
        }
        #[cfg(feature = "elf")]
        Format::ElfCore => {
            let notes = read_core(bytes)?;
            let (layout_own, l) = match notes.layout {
                Some(d) => {
                    let l = LayoutNote::parse(d).and_then(|n| n.to_layout(layout.features())).map_err(|mut e| {
                        e.format = f;
                        e
                    })?;
                    (Some(l.clone()), l)
                }
                None => (None, layout.clone()),
            };
            if notes.threads.is_empty() {
                return Err(RecordError::new(
                    f,
                    Rule::NoImage,
                    None,
                    Detail::Text("the core has no NT_X86_XSTATE note"),
                ));
            }
            let mut states = Vec::with_capacity(notes.threads.len());
            for t in &notes.threads {
                let n = NtXstate::parse(t.xstate, &l).map_err(|mut e| {
                    e.format = f;
                    e
                })?;
                let mut s = State::new(image_buf(n.image), Some(n.xcr0)).with_xcr0(n.xcr0);
                s.id = t.tid.map(StateId::Thread);
                states.push(s);
            }
            Contents { format: f, layout: layout_own, states, notes: Vec::new() }
        }
        Format::CriuCore => {
            // CRIU keeps components, not offsets: the image is laid out for `layout`.
            let (img, rfbm) = CoreFpu::parse(bytes)?.to_image(layout)?;
            let mut s = State::new(Some(img), Some(rfbm));
            s.xcr0 = opts.xcr0;
            one(s)
        }
        Format::CriuCpuinfo => {
            CpuInfo::parse(bytes)?;
            Contents { format: f, layout: None, states: Vec::new(), notes: Vec::new() }
        }
        Format::Qemu => super::qemu::read(bytes, layout, opts.qemu_accel)?,
        Format::CloudHypervisor => super::cloud_hypervisor::read(bytes, layout, opts)?,
        Format::Firecracker => super::firecracker::read(bytes, layout, opts)?,
    })
}

fn conversion(format: Format, e: ConvertError) -> RecordError {
    RecordError::new(format, Rule::Conversion, None, Detail::Convert(e))
}

fn not_held(f: Format, field: Field) -> RecordError {
    RecordError::new(f, Rule::NotHeld, None, Detail::Field(field))
}

fn needs(f: Format, field: Field) -> RecordError {
    RecordError::new(f, Rule::NeedsField, None, Detail::Field(field))
}

/// A standard image laid out for `have` re-sized for `want` on the same layout: components of
/// `want` that `have` lacks are init (XSTATE_BV clear, zero bytes); components `have` has and
/// `want` lacks must be init (else [`Rule::NotHeld`] of the image's state) and their bytes go.
fn fit_standard(
    f: Format,
    img: &ImageBuf,
    layout: &Layout,
    have: Xfeatures,
    want: Xfeatures,
) -> Result<ImageBuf, RecordError> {
    let bv = img.image().xstate_bv() - Xfeatures::BIT63;
    let lost = bv - want;
    if !lost.is_empty() {
        return Err(RecordError::bits(f, Rule::Conversion, 512, "XSTATE_BV", bv, lost));
    }
    let size = layout.standard_size(want).ok_or_else(|| {
        RecordError::bits(f, Rule::UnknownComponent, 0, "enabled states", want, want - layout.supported())
    })? as usize;
    let mut out = ImageBuf::init(size.max(MIN_SIZE), Xfeatures(0));
    out[..MIN_SIZE].copy_from_slice(&img[..MIN_SIZE]);
    for c in (want & have & layout.user_supported()).iter().filter(|c| !c.is_legacy()) {
        if let Some(r) = layout.standard_range(c).filter(|r| r.end <= img.len() && r.end <= out.len()) {
            out[r.clone()].copy_from_slice(&img[r]);
        }
    }
    Ok(out)
}

/// Writes the one state of `contents`, whose image is laid out for `from` (use the record's
/// own layout when it carries one), as `format` for the CPU of `to`.
///
/// Nothing the state says is lost or invented:
/// - every field the target holds is written as the state has it (xcr0, xcr0_accum, XSS, the
///   vCPU), [`Options::xcr0`] and [`Options::vcpu`] supplying one the state lacks; a target
///   that records a field neither gives is refused ([`Rule::NeedsField`]). The one derived
///   value is the accumulated states of a source without them, written as XCR0 | XSS | the
///   states in use (the least value `validate_xstate()` accepts);
/// - a field the target cannot hold (a vCPU in a domctl blob, xcr0_accum in NT_X86_XSTATE, a
///   vCPU number beyond an HVM instance's u16) is refused ([`Rule::NotHeld`]) unless
///   [`Options::drop`] names it;
/// - "no xsave state" is written as the target's own form (Xen's 16-byte blob, the PV record
///   wrapping it, the forward-compatible 16 zero bytes) or refused where the target has none
///   ([`Rule::NoStateForm`]);
/// - the image is converted (form and layout) with [`crate::image::convert()`], which refuses
///   rather than drops state in use, and the result is read back with the format's own parser.
pub fn write(
    format: Format,
    contents: &Contents,
    from: &Layout,
    to: &Layout,
    opts: &Options,
) -> Result<Vec<u8>, RecordError> {
    let f = format;
    if f.is_container() {
        return Err(RecordError::new(
            f,
            Rule::Conversion,
            None,
            Detail::Text("written by patching a file of the format (record::patch), not from nothing"),
        ));
    }
    if !f.writable() {
        let why = match f {
            Format::CriuCore => {
                "a CRIU core image is patched into the checkpoint's file (record::patch, xstate criu --patch)"
            }
            Format::CriuCpuinfo => "cpuinfo.img holds no image",
            _ => "core files are read, not written",
        };
        return Err(RecordError::new(f, Rule::Conversion, None, Detail::Text(why)));
    }
    if f == Format::XsaveLayout {
        let mask = contents.state().and_then(|s| s.rfbm).unwrap_or(to.user_supported());
        return Ok(LayoutNote::of_layout(to, mask).to_bytes());
    }
    let st = match contents.states.as_slice() {
        [one] => one,
        [] => return Err(RecordError::new(f, Rule::NoImage, None, Detail::Text("the source holds no state"))),
        _ => {
            return Err(RecordError::new(
                f,
                Rule::Conversion,
                None,
                Detail::Text("the source holds several states; write one"),
            ));
        }
    };
    let h = holds(f);
    let dropped = |field: Field| opts.drop.contains(field);
    // What the state carries that the target cannot hold.
    let xss_carried = st.xss.is_some_and(|x| !x.is_empty());
    for (field, carried, held) in [
        (Field::Image, st.image.is_some(), h.image),
        (Field::Xcr0, st.xcr0.is_some(), h.xcr0),
        (Field::Xss, xss_carried, h.xss),
        (Field::Accum, st.accum.is_some(), h.accum),
        (Field::Vcpu, st.id.is_some(), h.vcpu),
    ] {
        if carried && !held && !dropped(field) {
            return Err(not_held(f, field));
        }
    }
    let vcpu = match (st.id, opts.vcpu) {
        (_, Some(v)) => Some(v),
        (Some(StateId::Vcpu(v)), None) => Some(v),
        (Some(StateId::Thread(_)), None) if h.vcpu && !dropped(Field::Vcpu) => return Err(not_held(f, Field::Vcpu)),
        _ => None,
    };
    let xcr0 = opts.xcr0.or(st.xcr0);
    if f == Format::KvmXcrs {
        let xcr0 = xcr0.ok_or_else(|| needs(f, Field::Xcr0))?;
        return Ok(KvmXcrs::with_xcr0(xcr0).to_bytes());
    }
    let Some(src) = &st.image else {
        if !st.is_no_xsave_state() {
            return Err(RecordError::new(f, Rule::NoImage, None, Detail::Text("the source holds no XSAVE image")));
        }
        let out = match f {
            Format::XenDomctl => DomctlBlob::NO_STATE.to_bytes(),
            Format::FcBlob => FcBlob::NO_STATE.to_bytes(),
            // Xen's save side writes the 16-byte blob for a vCPU without xsave state.
            Format::XenPv => {
                let v = vcpu.ok_or_else(|| needs(f, Field::Vcpu))?;
                let reserved = st.uninterpreted.pv_reserved.unwrap_or(0);
                PvVcpuXsave { vcpu: v, reserved, blob: Some(DomctlBlob::NO_STATE) }.to_bytes()
            }
            _ => return Err(RecordError::new(f, Rule::NoStateForm, None, Detail::None)),
        };
        return Ok(out);
    };
    if h.vcpu && vcpu.is_none() {
        return Err(needs(f, Field::Vcpu));
    }
    let src_rfbm = st.rfbm.ok_or_else(|| needs(f, Field::Xcr0))?;
    let missing = src_rfbm - to.supported();
    if !missing.is_empty() {
        return Err(RecordError::bits(f, Rule::Conversion, 0, "enabled states", src_rfbm, missing));
    }
    // A dropped XSS the target cannot hold is gone from what it records, accumulated states too.
    let xss = st.xss.filter(|_| h.xss || !dropped(Field::Xss)).unwrap_or_default();
    let in_use = src.image().xstate_bv() - Xfeatures::BIT63;
    let src_form = src.image().form();
    let keeps_form = matches!(f, Format::Image | Format::FcBlob | Format::Portable);
    let target = if keeps_form && src_form == Form::Compacted && to.features().compaction() {
        Target::Compacted { mask: src.image().header().compacted_components() }
    } else {
        Target::Standard
    };
    let img = convert(src, from, to, src_rfbm, target).map_err(|e| conversion(f, e))?;
    let sup = src_rfbm & to.supervisor_supported();
    if target == Target::Standard && !sup.is_empty() && matches!(f, Format::FcBlob | Format::Portable) {
        return Err(RecordError::bits(f, Rule::SupervisorInStandard, 0, "enabled states", src_rfbm, sup));
    }
    let need_xcr0 = || xcr0.ok_or_else(|| needs(f, Field::Xcr0));
    // The accumulated states a target with them records: the state's, else the least value
    // consistent with it.
    let accum = st.accum.unwrap_or_else(|| xcr0.unwrap_or_default() | xss | in_use);
    let too_big = |size: usize| RecordError::size(f, Rule::Oversized, img.len(), size, super::SizeBasis::Fixed);
    let standard_for = |want: Xfeatures| fit_standard(f, &img, to, src_rfbm & to.user_supported(), want);
    let xen_host = opts.xen.unwrap_or_else(|| XenHost::of(to));
    let out = match f {
        Format::Image => img.to_vec(),
        Format::XenDomctl | Format::XenHvm | Format::XenPv => {
            let xcr0 = need_xcr0()?;
            let sup = accum & to.supervisor_supported();
            if !sup.is_empty() {
                return Err(not_held(f, Field::Xss));
            }
            let user = accum & to.user_supported();
            let img = standard_for(user)?;
            match f {
                Format::XenDomctl => DomctlBlob { xcr0, xcr0_accum: user, image: Some(&img) }.to_bytes(),
                Format::XenHvm => {
                    let v = vcpu.unwrap_or(0);
                    let instance = u16::try_from(v).map_err(|_| {
                        RecordError::new(
                            f,
                            Rule::NotHeld,
                            None,
                            Detail::Value { field: "vcpu", value: v.into(), expected: u16::MAX.into() },
                        )
                    })?;
                    // Kept from the source on the same host; else the writing host's.
                    let mask = st.uninterpreted.xfeature_mask.filter(|_| from == to).unwrap_or(xen_host.host);
                    HvmCpuXsave { vcpu: instance, xfeature_mask: mask, xcr0, xcr0_accum: user, image: &img }.to_bytes()
                }
                _ => PvVcpuXsave {
                    vcpu: vcpu.unwrap_or(0),
                    reserved: st.uninterpreted.pv_reserved.unwrap_or(0),
                    blob: Some(DomctlBlob { xcr0, xcr0_accum: user, image: Some(&img) }),
                }
                .to_bytes(),
            }
        }
        Format::FcBlob => {
            let xcr0 = need_xcr0()?;
            let img = if target == Target::Standard { standard_for(accum & to.user_supported())? } else { img };
            FcBlob { xstates: xcr0 | xss, xstates_accum: accum, image: Some(&img) }.to_bytes()
        }
        Format::KvmXsave | Format::KvmXsave2 => {
            let size = if f == Format::KvmXsave {
                KVM_XSAVE_SIZE
            } else {
                let supported = opts.kvm_supported.unwrap_or(to.user_supported());
                opts.kvm_xsave2_size.or_else(|| cap_xsave2(to, supported)).unwrap_or(KVM_XSAVE_SIZE)
            };
            let user = src_rfbm & to.user_supported();
            let mut b = KvmXsave::build(&img, size).ok_or_else(|| too_big(size))?;
            b[SW_BYTES..SW_BYTES + 8].copy_from_slice(&user.bits().to_le_bytes());
            b
        }
        Format::NtXstate | Format::SigFrame => {
            let xcr0 = need_xcr0()? & to.user_supported();
            let img = standard_for(xcr0)?;
            let built =
                if f == Format::NtXstate { NtXstate::build(&img, xcr0, to) } else { SigFrame::build(&img, xcr0, to) };
            built.ok_or_else(|| too_big(img.len()))?
        }
        Format::Portable => {
            let xcr0 = need_xcr0()?;
            let img = if target == Target::Standard { standard_for(accum & to.user_supported())? } else { img };
            Portable {
                xcr0,
                xss,
                xstates_accum: accum,
                mxcsr_mask: Image::new(&img).map_or(0, |i| i.mxcsr_mask()),
                layout: to.clone(),
                image: &img,
            }
            .to_bytes()
        }
        Format::KvmXcrs
        | Format::XsaveLayout
        | Format::ElfCore
        | Format::CriuCore
        | Format::CriuCpuinfo
        | Format::Qemu
        | Format::CloudHypervisor
        | Format::Firecracker => unreachable_format(f)?,
    };
    let mut check = *opts;
    check.xcr0 = xcr0;
    read(f, &out, to, &check)?;
    Ok(out)
}

/// Writes the states of `contents`, whose images are laid out for `from`, into `original`, a
/// file of the container `format` ([`Format::is_container`]) or a CRIU core image (one
/// thread's state), for a consumer restoring on the CPU of `to`: patching, as DESIGN.md
/// "Formats at the edge" has it.
///
/// - Each image is converted to the standard form in `to`'s layout ([`crate::image::convert()`],
///   which refuses rather than drops state in use) where `to` differs from `from` (another CPU:
///   `xstate convert SNAPSHOT --to-cpuid B`) or the image is compacted; a standard image on the
///   same layout is written as it is. The guest's
///   CPUID in a snapshot is not changed: see [`crate::compat::Reason::GuestLayoutStale`].
/// - Each state replaces the state of its vCPU (a file of one vCPU takes a state without
///   one); every other byte stays, except the lengths and checksums that depend on the states,
///   so a file patched with its own contents comes back byte for byte.
/// - The result is read back (with `to` as the images' layout) before it is returned.
pub fn patch(
    format: Format,
    original: &[u8],
    contents: &Contents,
    from: &Layout,
    to: &Layout,
    opts: &Options,
) -> Result<Vec<u8>, RecordError> {
    let f = format;
    if !f.is_container() && f != Format::CriuCore {
        return Err(RecordError::new(
            f,
            Rule::Conversion,
            None,
            Detail::Text("this format is written whole (record::write), not patched"),
        ));
    }
    // Each state's image in the restoring layout, standard form (every format here holds
    // standard images: KVM buffers, QEMU's registers, CRIU's per-component arrays).
    let mut states = Vec::with_capacity(contents.states.len());
    for st in &contents.states {
        let mut st = st.clone();
        if let Some(src) = &st.image {
            let rfbm = st.rfbm.or(opts.xcr0).ok_or_else(|| needs(f, Field::Xcr0))?;
            let missing = (rfbm & from.user_supported()) - to.user_supported();
            if !missing.is_empty() {
                return Err(RecordError::bits(f, Rule::Conversion, 0, "enabled states", rfbm, missing));
            }
            // On the same layout a standard image is written as it is (bytes no component covers
            // included, so an unchanged state is the original file); otherwise it is converted.
            if from != to || src.image().form() != Form::Standard {
                let img = convert(src, from, to, rfbm & from.user_supported(), Target::Standard)
                    .map_err(|e| conversion(f, e))?;
                st.image = Some(img);
            }
            st.rfbm = Some(rfbm & to.user_supported());
        }
        states.push(st);
    }
    let out = match f {
        Format::CriuCore => {
            // One thread's state: CRIU stores components, not offsets.
            let [st] = states.as_slice() else {
                return Err(RecordError::new(f, Rule::Conversion, None, Detail::Text("patch one state at a time")));
            };
            let img = st.image.as_ref().ok_or_else(|| RecordError::new(f, Rule::NoImage, None, Detail::None))?;
            let out = CoreFpu::parse(original)?.patch(&img.image(), to)?;
            CoreFpu::parse(&out)?;
            return Ok(out);
        }
        Format::Qemu => super::qemu::patch(original, &states, to, opts.qemu_accel)?,
        Format::CloudHypervisor => super::cloud_hypervisor::patch(original, &states, to, opts)?,
        Format::Firecracker => super::firecracker::patch(original, &states, to)?,
        _ => unreachable_format(f)?,
    };
    let mut check = *opts;
    check.layout_given = true;
    read(f, &out, to, &check)?;
    Ok(out)
}

fn unreachable_format(f: Format) -> Result<Vec<u8>, RecordError> {
    Err(RecordError::new(f, Rule::Conversion, None, Detail::Text("no image in this format")))
}

/// The CPUID a VMM snapshot carries (its guest's, vCPU 0's), so the snapshot itself can name a
/// CPU wherever a CPUID source is asked for (`--cpuid`, `--to-cpuid`, `compat --from`); `None`
/// when `bytes` are not such a snapshot.
pub fn carried_cpuid(bytes: &[u8]) -> Option<Result<crate::cpuid::CpuidData, RecordError>> {
    if super::cloud_hypervisor::looks_like(bytes) {
        return Some(super::cloud_hypervisor::cpuid(bytes));
    }
    if super::firecracker::looks_like(bytes) {
        return Some(super::firecracker::cpuid(bytes));
    }
    None
}

/// Which format `bytes` most likely are, for the CPU of `layout` (`xstate inspect --format
/// auto`): magic numbers and type codes first, then the size rules of each format. Falls back
/// to a bare image when at least 576 bytes remain; `None` otherwise.
pub fn detect(bytes: &[u8], layout: &Layout) -> Option<Format> {
    use super::le::{u16_at, u32_at, u64_at};
    let len = bytes.len();
    if is_core(bytes) {
        return Some(Format::CriuCore);
    }
    if u32_at(bytes, 0) == Some(IMG_COMMON_MAGIC) && u32_at(bytes, 4) == Some(CPUINFO_MAGIC) {
        return Some(Format::CriuCpuinfo);
    }
    if bytes.starts_with(b"\x7fELF") {
        return Some(Format::ElfCore);
    }
    if bytes.starts_with(&MAGIC) {
        return Some(Format::Portable);
    }
    if u32_at(bytes, 0) == Some(super::qemu::MAGIC.swap_bytes()) {
        return Some(Format::Qemu);
    }
    if super::cloud_hypervisor::looks_like(bytes) {
        return Some(Format::CloudHypervisor);
    }
    if super::firecracker::looks_like(bytes) {
        return Some(Format::Firecracker);
    }
    if u32_at(bytes, 0) == Some(PV_VCPU_XSAVE)
        && u32_at(bytes, 4).is_some_and(|l| (l as usize).checked_add(7).map(|r| 8 + (r & !7)) == Some(len) && l >= 8)
    {
        return Some(Format::XenPv);
    }
    if u16_at(bytes, 0) == Some(HVM_CPU_XSAVE)
        && u32_at(bytes, 4).is_some_and(|l| (l as usize).checked_add(8) == Some(len))
    {
        return Some(Format::XenHvm);
    }
    if len == KVM_XCRS_SIZE && u32_at(bytes, 0).is_some_and(|n| n <= 16) && u32_at(bytes, 4) == Some(0) {
        return Some(Format::KvmXcrs);
    }
    if u32_at(bytes, SW_BYTES) == Some(FP_XSTATE_MAGIC1)
        && u32_at(bytes, SW_BYTES + 16).is_some_and(|x| (x as usize).checked_add(4) == Some(len))
    {
        return Some(Format::SigFrame);
    }
    // Blobs: two masks, then nothing or an image.
    if let (Some(a), Some(b)) = (u64_at(bytes, 0), u64_at(bytes, 8)) {
        let (a, b) = (Xfeatures(a), Xfeatures(b));
        if len == 16 && a.is_empty() && b.is_empty() {
            return Some(Format::XenDomctl);
        }
        if !b.is_empty() && a.is_subset_of(b) && b.bits() & 1 == 1 && len >= 16 + MIN_SIZE {
            let h = Header::read(&bytes[16..]).unwrap_or(Header::EMPTY);
            let supervisor = !(b & (catalogue_supervisor() | layout.supervisor_supported())).is_empty();
            let std_fits = layout.standard_size(b).is_some_and(|s| (s as usize).checked_add(16) == Some(len));
            if h.xcomp_bv.bits() & COMPACTED != 0 || supervisor {
                return Some(Format::FcBlob);
            }
            if std_fits {
                return Some(Format::XenDomctl);
            }
        }
    }
    if len > 0 && len.is_multiple_of(16) && len <= 61 * 16 && LayoutNote::parse(bytes).is_ok() {
        return Some(Format::XsaveLayout);
    }
    if len >= MIN_SIZE {
        // Linux and KVM write a user-feature mask at 464..471, where XSAVE writes nothing: only a
        // mask the CPU could enable counts (garbage a save left there does not).
        let x = Xfeatures(u64_at(bytes, SW_BYTES).unwrap_or(0));
        let mask = x.contains(crate::component::Component::X87)
            && x.is_subset_of(layout.user_supported())
            && crate::xcr0::check_xcr0(x).is_ok();
        if mask && layout.standard_size(x).is_some_and(|s| s as usize == len) {
            return Some(Format::NtXstate);
        }
        if mask && len == KVM_XSAVE_SIZE {
            return Some(Format::KvmXsave);
        }
        // A KVM_GET_XSAVE2 buffer has NT_X86_XSTATE's shape; it is never guessed.
        return Some(Format::Image);
    }
    None
}
