//! What `validate`, `convert` and `inspect` share: reading and writing images in a file format,
//! and the restoring context's defaults from this host.
//!
//! The format handling is the two functions [`load`] and [`store`], which hand record formats
//! to [`xstate::record::read()`] and [`xstate::record::write()`].

use std::path::Path;

use xstate::image::{Form, Image, ImageBuf};
use xstate::record::{self, Contents, Format, Options};
use xstate::{Layout, Xfeatures};

use crate::common::{CliError, CliResult, read_file};
pub use crate::output::emit;

/// A file format holding one XSAVE image: the bare image, or a record ([`xstate::record`];
/// byte layouts in docs/FORMATS.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ImageFormat {
    /// The image bytes and nothing else.
    Raw,
    /// Recognise the format from the bytes (reading only).
    Auto,
    /// Xen get/setvcpuextstate blob {xcr0, xcr0_accum, standard image}.
    #[value(name = "xen-domctl")]
    XenDomctl,
    /// The forward-compatible blob {XCR0|XSS, accumulated, standard or compacted image}.
    #[value(name = "fc-blob")]
    FcBlob,
    /// Xen HVM save record CPU_XSAVE (descriptor + body).
    #[value(name = "xen-hvm")]
    XenHvm,
    /// Xen PV migration record X86_PV_VCPU_XSAVE.
    #[value(name = "xen-pv")]
    XenPv,
    /// struct kvm_xsave (4096 bytes).
    #[value(name = "kvm-xsave")]
    KvmXsave,
    /// KVM_GET_XSAVE2 buffer (KVM_CAP_XSAVE2 bytes).
    #[value(name = "kvm-xsave2")]
    KvmXsave2,
    /// Linux NT_X86_XSTATE (ptrace regset / core note).
    #[value(name = "nt-xstate")]
    NtXstate,
    /// x86-64 Linux signal-frame fpstate (image + magic2).
    #[value(name = "sigframe")]
    Sigframe,
    /// xstate's portable record with its own layout descriptor.
    #[value(name = "portable")]
    Portable,
    /// An x86-64 Linux ELF core dump (the first thread's NT_X86_XSTATE; reading only).
    #[value(name = "elf-core")]
    ElfCore,
}

impl ImageFormat {
    /// The record format a concrete format name stands for (`raw` is a bare image); `None`
    /// for `auto`.
    pub fn as_record(self) -> Option<Format> {
        match self {
            ImageFormat::Raw => Some(Format::Image),
            other => other.record(),
        }
    }

    /// The command-line name.
    pub fn name(self) -> String {
        use clap::ValueEnum as _;
        self.to_possible_value().map(|v| v.get_name().to_string()).unwrap_or_default()
    }

    /// The record format, `None` for raw and auto.
    fn record(self) -> Option<Format> {
        Some(match self {
            ImageFormat::Raw | ImageFormat::Auto => return None,
            ImageFormat::XenDomctl => Format::XenDomctl,
            ImageFormat::FcBlob => Format::Blob,
            ImageFormat::XenHvm => Format::XenHvm,
            ImageFormat::XenPv => Format::XenPv,
            ImageFormat::KvmXsave => Format::KvmXsave,
            ImageFormat::KvmXsave2 => Format::KvmXsave2,
            ImageFormat::NtXstate => Format::NtXstate,
            ImageFormat::Sigframe => Format::SigFrame,
            ImageFormat::Portable => Format::Portable,
            ImageFormat::ElfCore => Format::ElfCore,
        })
    }
}

/// An image read from a file, with what the file said about it.
#[derive(Clone, Debug)]
pub struct Loaded {
    /// The image.
    pub image: Vec<u8>,
    /// The XCR0 the file records for the image (for Xen records the accumulated XCR0 the image
    /// is sized for); `None` where the format does not record the guest's XCR0 (a bare image;
    /// kvm_xsave, whose bytes 464..471 hold KVM's supported mask, not the guest's XCR0).
    pub xcr0: Option<Xfeatures>,
    /// IA32_XSS the file records (forward-compatible blob, portable record).
    pub xss: Option<Xfeatures>,
    /// The layout the file carries (portable record, core with NT_X86_XSAVE_LAYOUT); the image
    /// is laid out for it rather than for `--cpuid`.
    pub layout: Option<Layout>,
    /// The format read (after `auto`).
    pub format: Format,
}

/// Whether `f` records the XCR0 its image is restored with.
pub fn records_xcr0(f: Format) -> bool {
    !matches!(f, Format::Image | Format::KvmXsave | Format::KvmXsave2)
}

/// The format of `bytes` as `--format` names it: `auto` recognises records by their magic
/// numbers, type codes and exact size rules ([`record::detect`]) and reads anything else of at
/// least 576 bytes as a bare image.
pub fn format_of(bytes: &[u8], format: ImageFormat, layout: &Layout, name: &str) -> CliResult<Format> {
    match format {
        ImageFormat::Auto => record::detect(bytes, layout).ok_or_else(|| {
            CliError::invalid(format!(
                "{name}: not a known record format, and {} bytes are too few for an XSAVE image (576 at least)",
                bytes.len()
            ))
        }),
        other => Ok(other.as_record().unwrap_or(Format::Image)),
    }
}

/// Reads the image in `path` written in `format`, for the CPU of `layout`.
pub fn load(path: &Path, format: ImageFormat, layout: &Layout) -> CliResult<Loaded> {
    let bytes = read_file(path)?;
    let name = path.display();
    let f = format_of(&bytes, format, layout, &name.to_string())?;
    // Named when the format was recognised rather than given, so a misreading can be undone.
    let how = if format == ImageFormat::Auto && f != Format::Image {
        format!(" (recognised as {f}; --format raw reads the bytes as a bare image)")
    } else {
        String::new()
    };
    if f == Format::Image {
        return Ok(Loaded { image: bytes, xcr0: None, xss: None, layout: None, format: f });
    }
    let c = record::read(f, &bytes, layout, &Options::default())
        .map_err(|e| CliError::invalid(format!("{name}: {e}{how}")))?;
    let Some(image) = c.image.as_ref() else {
        return Err(CliError::invalid(format!("{name}: {f}: holds no XSAVE image (no xsave state){how}")));
    };
    let l = c.layout.as_ref().unwrap_or(layout);
    let rfbm = c.rfbm();
    let recorded = records_xcr0(f);
    Ok(Loaded {
        image: image.to_vec(),
        xcr0: recorded.then_some(rfbm & l.user_supported()),
        xss: recorded.then_some(rfbm & l.supervisor_supported()),
        layout: c.layout,
        format: f,
    })
}

/// The size a bare image must have on the CPU of `layout`: standard_size(XCR0) for the
/// standard form, compacted_size(XCOMP_BV) for the compacted form (what XSAVE, XSAVEC and
/// XSAVES write). `None` for an image shorter than its header.
pub fn expected_size(image: &[u8], layout: &Layout, xcr0: Xfeatures) -> Option<(usize, String)> {
    let img = Image::new(image).ok()?;
    Some(match img.form() {
        Form::Standard => (layout.standard_size(xcr0)? as usize, format!("standard_size(XCR0 {xcr0})")),
        Form::Compacted => {
            let m = img.header().compacted_components();
            (layout.compacted_size(m)? as usize, format!("compacted_size(XCOMP_BV {})", img.xcomp_bv()))
        }
    })
}

/// Refuses a bare image whose length is not the size its XCR0 or XCOMP_BV gives on its CPU
/// (exit 1): a file of another length is an image of another CPU or XCR0, a record, or not an
/// image, and reading it with these offsets would move the wrong bytes.
pub fn check_image_size(image: &[u8], layout: &Layout, xcr0: Xfeatures, name: &str, cpu: &str) -> CliResult {
    let img = Image::new(image).map_err(|e| CliError::invalid(format!("{name}: {e}")))?;
    let Some((want, basis)) = expected_size(image, layout, xcr0) else {
        return Err(CliError::invalid(format!(
            "{name}: XCOMP_BV {} names components {cpu} does not enumerate",
            img.xcomp_bv()
        )));
    };
    if image.len() != want {
        return Err(CliError::invalid(format!(
            "{name}: {} bytes, but a {} image on {cpu} is {basis} = {want} bytes: an image of another CPU \
             (--cpuid) or XCR0 (--xcr0), or a record (--format)",
            image.len(),
            img.form()
        )));
    }
    Ok(())
}

/// The bytes of a file in `format` holding `image` (laid out for `layout`), restored with
/// RFBM = `rfbm`.
pub fn store(image: &[u8], rfbm: Xfeatures, format: ImageFormat, layout: &Layout) -> CliResult<Vec<u8>> {
    let f = match format {
        ImageFormat::Raw => return Ok(image.to_vec()),
        ImageFormat::Auto => return Err(CliError::usage("--to-format auto: name the output format")),
        other => other.record().unwrap_or(Format::Image),
    };
    if !f.writable() {
        return Err(CliError::usage(format!("--to-format {f}: this format is read, not written")));
    }
    let img = ImageBuf::from_bytes(image).map_err(CliError::invalid)?;
    if Image::new(image).is_ok_and(|i| i.form() == Form::Compacted) && !matches!(f, Format::Blob | Format::Portable) {
        return Err(CliError::invalid(format!("{f} holds standard-format images only: use --to standard")));
    }
    let c = Contents {
        format: Format::Image,
        image: Some(img),
        xcr0: rfbm & layout.user_supported(),
        xss: rfbm & layout.supervisor_supported(),
        accum: rfbm,
        vcpu: None,
        layout: None,
    };
    record::write(f, &c, layout, layout, &Options::default()).map_err(CliError::invalid)
}

/// The running CPU's MXCSR mask ([`xstate_hw::Host::mxcsr_mask`]); 0xFFFF where the host
/// cannot be asked.
pub fn host_mxcsr_mask() -> u32 {
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    {
        xstate_hw::Host::probe().ok().and_then(|h| h.mxcsr_mask().ok()).unwrap_or(0xFFFF)
    }
    #[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
    0xFFFF
}

/// Refuses an image shorter than the legacy region and header (exit 1).
pub fn need_header<'a>(image: &'a [u8], path: &Path) -> CliResult<xstate::image::Image<'a>> {
    xstate::image::Image::new(image).map_err(|e| CliError::invalid(format!("{}: {e}", path.display())))
}
