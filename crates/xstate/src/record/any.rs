//! Every format through one intermediate: [`read`] a record into [`Contents`], [`write`] one
//! from them, [`detect`] which format some bytes are.

use alloc::vec::Vec;
use core::fmt;

use super::blob::Blob;
use super::core::read_core;
use super::kvm::{KVM_XCRS_SIZE, KVM_XSAVE_SIZE, KvmXcrs, KvmXsave, cap_xsave2};
use super::linux::{FP_XSTATE_MAGIC1, LayoutNote, NtXstate, SW_BYTES, SigFrame};
use super::portable::{MAGIC, Portable};
use super::xen::{DomctlBlob, HVM_CPU_XSAVE, HvmCpuXsave, PV_VCPU_XSAVE, PvVcpuXsave, XenHost};
use super::{Detail, RecordError, Rule};
use crate::component::legacy::{COMPACTED, mxcsr_mask_of_field};
use crate::image::{ConvertError, Form, Header, Image, ImageBuf, MIN_SIZE, Target, convert};
use crate::layout::Layout;
use crate::xcr0::catalogue_supervisor;
use crate::xfeatures::Xfeatures;

/// A record format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Format {
    /// A bare XSAVE image, standard or compacted.
    Image,
    /// Xen's get/setvcpuextstate blob.
    XenDomctl,
    /// The forward-compatible blob (first word XCR0 | XSS, standard or compacted image).
    Blob,
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
}

impl Format {
    /// Every format.
    pub const ALL: [Format; 13] = [
        Format::Image,
        Format::XenDomctl,
        Format::Blob,
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
    ];

    /// The command-line name.
    pub const fn name(self) -> &'static str {
        match self {
            Format::Image => "image",
            Format::XenDomctl => "xen-domctl",
            Format::Blob => "fc-blob",
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
        }
    }

    /// The format of a command-line name.
    pub fn from_name(s: &str) -> Option<Format> {
        Format::ALL.into_iter().find(|f| f.name().eq_ignore_ascii_case(s))
    }

    /// Whether [`write()`] can produce this format.
    pub const fn writable(self) -> bool {
        !matches!(self, Format::ElfCore)
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What the consumer knows besides the bytes. Every field has a default from the layout.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Options {
    /// Xen's host mask and policy maximum (default: every state of the layout).
    pub xen: Option<XenHost>,
    /// KVM's supported XCR0 (default: every user state of the layout).
    pub kvm_supported: Option<Xfeatures>,
    /// The KVM_GET_XSAVE2 size (default: KVM_CAP_XSAVE2 for `kvm_supported`).
    pub kvm_xsave2_size: Option<usize>,
    /// The restoring CPU's MXCSR mask for KVM's check (default: the image's MXCSR_MASK field).
    pub mxcsr_mask: Option<u32>,
    /// XCR0 for formats that do not record it (bare images, kvm_xsave), and the value a writer
    /// records; default: inferred from the image.
    pub xcr0: Option<Xfeatures>,
    /// vCPU number to write when the source has none (default 0).
    pub vcpu: Option<u32>,
}

/// A record's meaning, independent of its format.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Contents {
    /// The format read.
    pub format: Format,
    /// The image; `None` for "no xsave state" and for formats without one (kvm_xcrs, a
    /// layout note).
    pub image: Option<ImageBuf>,
    /// XCR0.
    pub xcr0: Xfeatures,
    /// IA32_XSS.
    pub xss: Xfeatures,
    /// The accumulated states the image is sized for; RFBM for restoring it.
    pub accum: Xfeatures,
    /// The vCPU (Xen records).
    pub vcpu: Option<u32>,
    /// The layout the record carries (portable record, layout note, core with a layout note).
    pub layout: Option<Layout>,
}

impl Contents {
    fn new(format: Format, image: Option<&[u8]>, xcr0: Xfeatures, accum: Xfeatures) -> Contents {
        Contents {
            format,
            image: image.and_then(|i| ImageBuf::from_bytes(i).ok()),
            xcr0,
            xss: Xfeatures(0),
            accum,
            vcpu: None,
            layout: None,
        }
    }

    /// RFBM to restore the image with: the accumulated states, or XCR0 | XSS.
    pub fn rfbm(&self) -> Xfeatures {
        if self.accum.is_empty() { self.xcr0 | self.xss } else { self.accum }
    }
}

/// XCR0 for an image that does not record it: the option, else the record's own hint if it
/// fits, else every user state of the layout if the image is long enough, else what is in use.
fn infer_xcr0(layout: &Layout, image: &[u8], hint: Xfeatures, opt: Option<Xfeatures>) -> Xfeatures {
    if let Some(x) = opt {
        return x;
    }
    let Ok(img) = Image::new(image) else { return Xfeatures::LEGACY };
    let fits = |m: Xfeatures| {
        !m.is_empty()
            && m.is_subset_of(layout.user_supported())
            && img.xstate_bv().is_subset_of(m)
            && layout.standard_size(m).is_some_and(|s| s as usize <= image.len())
    };
    match img.form() {
        Form::Compacted => (img.header().compacted_components() & layout.user_supported()) | Xfeatures::LEGACY,
        Form::Standard if fits(hint) => hint,
        Form::Standard if fits(layout.user_supported()) => layout.user_supported(),
        Form::Standard => img.xstate_bv() | Xfeatures::LEGACY,
    }
}

/// Reads `bytes` as `format` for the CPU of `layout`.
pub fn read(format: Format, bytes: &[u8], layout: &Layout, opts: &Options) -> Result<Contents, RecordError> {
    let xen = opts.xen.unwrap_or_else(|| XenHost::of(layout));
    let kvm_supported = opts.kvm_supported.unwrap_or(layout.user_supported());
    let f = format;
    Ok(match format {
        Format::Image => {
            let img = Image::new(bytes)
                .map_err(|_| RecordError::size(f, Rule::Truncated, bytes.len(), MIN_SIZE, super::SizeBasis::Fixed))?;
            let xcr0 = infer_xcr0(layout, bytes, Xfeatures(0), opts.xcr0);
            let mut c = Contents::new(f, Some(bytes), xcr0 & layout.user_supported(), Xfeatures(0));
            if img.form() == Form::Compacted {
                c.xss = img.header().compacted_components() & layout.supervisor_supported();
            }
            c
        }
        Format::XenDomctl => {
            let b = DomctlBlob::parse(bytes, layout, &xen)?;
            Contents::new(f, b.image, b.xcr0, b.xcr0_accum)
        }
        Format::Blob => {
            let host = opts.xen.unwrap_or_else(|| Blob::host_of(layout));
            let b = Blob::parse(bytes, layout, &host)?;
            let mut c = Contents::new(f, b.image, b.xcr0(layout), b.xstates_accum);
            c.xss = b.xss(layout);
            c
        }
        Format::XenHvm => {
            let r = HvmCpuXsave::parse(bytes, layout, &xen)?;
            let mut c = Contents::new(f, Some(r.image), r.xcr0, r.xcr0_accum);
            c.vcpu = Some(r.vcpu.into());
            c
        }
        Format::XenPv => {
            let r = PvVcpuXsave::parse(bytes, layout, &xen)?;
            let b = r.blob.unwrap_or(DomctlBlob::NO_STATE);
            let mut c = Contents::new(f, b.image, b.xcr0, b.xcr0_accum);
            c.vcpu = Some(r.vcpu);
            c
        }
        Format::KvmXsave | Format::KvmXsave2 => {
            let size = if f == Format::KvmXsave {
                KVM_XSAVE_SIZE
            } else {
                opts.kvm_xsave2_size.or_else(|| cap_xsave2(layout, kvm_supported)).unwrap_or(KVM_XSAVE_SIZE)
            };
            let mask = opts
                .mxcsr_mask
                .unwrap_or_else(|| Image::new(bytes).map_or(0xFFFF, |i| mxcsr_mask_of_field(i.mxcsr_mask())));
            let k = KvmXsave::parse(f, bytes, size, layout, kvm_supported, mask)?;
            let xcr0 = infer_xcr0(layout, k.image, k.sw_xcr0, opts.xcr0);
            Contents::new(f, Some(k.image), xcr0, xcr0)
        }
        Format::KvmXcrs => {
            let x = KvmXcrs::parse(bytes, layout, kvm_supported)?;
            let xcr0 = x.xcr0().unwrap_or(Xfeatures(0));
            Contents::new(f, None, xcr0, xcr0)
        }
        Format::NtXstate => {
            let n = NtXstate::parse(bytes, layout)?;
            Contents::new(f, Some(n.image), n.xcr0, n.xcr0)
        }
        Format::XsaveLayout => {
            let n = LayoutNote::parse(bytes)?;
            let mut c = Contents::new(f, None, n.mask(), n.mask());
            c.layout = Some(n.to_layout(layout.features())?);
            c
        }
        Format::SigFrame => {
            let s = SigFrame::parse(bytes, layout)?;
            Contents::new(f, Some(s.image), s.sw.xfeatures, s.sw.xfeatures)
        }
        Format::Portable => {
            let p = Portable::parse(bytes)?;
            let mut c = Contents::new(f, Some(p.image), p.xcr0, p.xstates_accum);
            c.xss = p.xss;
            c.layout = Some(p.layout);
            c
        }
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
            let Some(t) = notes.threads.first() else {
                return Err(RecordError::new(
                    f,
                    Rule::NoImage,
                    None,
                    Detail::Text("the core has no NT_X86_XSTATE note"),
                ));
            };
            let n = NtXstate::parse(t.xstate, &l).map_err(|mut e| {
                e.format = f;
                e
            })?;
            let mut c = Contents::new(f, Some(n.image), n.xcr0, n.xcr0);
            c.vcpu = t.tid;
            c.layout = layout_own;
            c
        }
    })
}

fn conversion(format: Format, e: ConvertError) -> RecordError {
    RecordError::new(format, Rule::Conversion, None, Detail::Convert(e))
}

/// Writes `contents`, whose image is laid out for `from` (use the record's own layout when it
/// carries one), as `format` for the CPU of `to`: the image is converted (form and layout) with
/// [`crate::image::convert()`], which refuses rather than drops state in use, and the result is
/// read back with the format's own parser before it is returned.
pub fn write(
    format: Format,
    contents: &Contents,
    from: &Layout,
    to: &Layout,
    opts: &Options,
) -> Result<Vec<u8>, RecordError> {
    let f = format;
    if !f.writable() {
        return Err(RecordError::new(f, Rule::Conversion, None, Detail::Text("core files are read, not written")));
    }
    let vcpu = opts.vcpu.or(contents.vcpu).unwrap_or(0);
    let rfbm = contents.rfbm();
    let missing = rfbm - to.supported();
    if !missing.is_empty() && contents.image.is_some() {
        return Err(RecordError::bits(f, Rule::Conversion, 0, "enabled states", rfbm, missing));
    }
    let xcr0 = opts.xcr0.unwrap_or(contents.xcr0);
    if f == Format::KvmXcrs {
        return Ok(KvmXcrs::with_xcr0(xcr0).to_bytes());
    }
    if f == Format::XsaveLayout {
        return Ok(LayoutNote::of_layout(to, if rfbm.is_empty() { to.user_supported() } else { rfbm }).to_bytes());
    }
    let Some(src) = &contents.image else {
        let no_state = match f {
            Format::XenDomctl => Some(DomctlBlob::NO_STATE.to_bytes()),
            Format::Blob => Some(Blob::NO_STATE.to_bytes()),
            Format::XenPv => Some(PvVcpuXsave { vcpu, reserved: 0, blob: None }.to_bytes()),
            _ => None,
        };
        return no_state
            .ok_or_else(|| RecordError::new(f, Rule::NoImage, None, Detail::Text("the source holds no xsave state")));
    };
    let src_form = src.image().form();
    let keeps_form = matches!(f, Format::Image | Format::Blob | Format::Portable);
    let target = if keeps_form && src_form == Form::Compacted && to.features().compaction() {
        Target::Compacted { mask: src.image().header().compacted_components() }
    } else {
        Target::Standard
    };
    let img = convert(src, from, to, rfbm, target).map_err(|e| conversion(f, e))?;
    let user = rfbm & to.user_supported();
    let sup = rfbm & to.supervisor_supported();
    if target == Target::Standard && !sup.is_empty() && matches!(f, Format::Blob | Format::Portable) {
        return Err(RecordError::bits(f, Rule::SupervisorInStandard, 0, "enabled states", rfbm, sup));
    }
    let too_big = |size: usize| RecordError::size(f, Rule::Oversized, img.len(), size, super::SizeBasis::Fixed);
    let out = match f {
        Format::Image => img.to_vec(),
        Format::XenDomctl => DomctlBlob { xcr0, xcr0_accum: user, image: Some(&img) }.to_bytes(),
        Format::Blob => Blob { xstates: xcr0 | contents.xss, xstates_accum: rfbm, image: Some(&img) }.to_bytes(),
        Format::XenHvm => HvmCpuXsave {
            vcpu: u16::try_from(vcpu).unwrap_or(u16::MAX),
            xfeature_mask: to.user_supported(),
            xcr0,
            xcr0_accum: user,
            image: &img,
        }
        .to_bytes(),
        Format::XenPv => {
            PvVcpuXsave { vcpu, reserved: 0, blob: Some(DomctlBlob { xcr0, xcr0_accum: user, image: Some(&img) }) }
                .to_bytes()
        }
        Format::KvmXsave | Format::KvmXsave2 => {
            let size = if f == Format::KvmXsave {
                KVM_XSAVE_SIZE
            } else {
                let supported = opts.kvm_supported.unwrap_or(to.user_supported());
                opts.kvm_xsave2_size.or_else(|| cap_xsave2(to, supported)).unwrap_or(KVM_XSAVE_SIZE)
            };
            let mut b = KvmXsave::build(&img, size).ok_or_else(|| too_big(size))?;
            b[SW_BYTES..SW_BYTES + 8].copy_from_slice(&user.bits().to_le_bytes());
            b
        }
        Format::NtXstate => NtXstate::build(&img, user, to).ok_or_else(|| too_big(img.len()))?,
        Format::SigFrame => SigFrame::build(&img, user, to).ok_or_else(|| too_big(img.len()))?,
        Format::Portable => Portable {
            xcr0,
            xss: contents.xss,
            xstates_accum: rfbm,
            mxcsr_mask: Image::new(&img).map_or(0, |i| i.mxcsr_mask()),
            layout: to.clone(),
            image: &img,
        }
        .to_bytes(),
        Format::KvmXcrs | Format::XsaveLayout | Format::ElfCore => unreachable_format(f)?,
    };
    let mut check = *opts;
    check.xcr0 = Some(xcr0);
    read(f, &out, to, &check)?;
    Ok(out)
}

fn unreachable_format(f: Format) -> Result<Vec<u8>, RecordError> {
    Err(RecordError::new(f, Rule::Conversion, None, Detail::Text("no image in this format")))
}

/// Which format `bytes` most likely are, for the CPU of `layout` (`xstate inspect --format
/// auto`): magic numbers and type codes first, then the size rules of each format. Falls back
/// to a bare image when at least 576 bytes remain; `None` otherwise.
pub fn detect(bytes: &[u8], layout: &Layout) -> Option<Format> {
    use super::le::{u16_at, u32_at, u64_at};
    let len = bytes.len();
    if bytes.starts_with(b"\x7fELF") {
        return Some(Format::ElfCore);
    }
    if bytes.starts_with(&MAGIC) {
        return Some(Format::Portable);
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
                return Some(Format::Blob);
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
        let x = Xfeatures(u64_at(bytes, SW_BYTES).unwrap_or(0));
        if !x.is_empty() && layout.standard_size(x).is_some_and(|s| s as usize == len) {
            return Some(Format::NtXstate);
        }
        if len == KVM_XSAVE_SIZE && !x.is_empty() {
            return Some(Format::KvmXsave);
        }
        if len > KVM_XSAVE_SIZE && len.is_multiple_of(4) && !x.is_empty() {
            return Some(Format::KvmXsave2);
        }
        return Some(Format::Image);
    }
    None
}
