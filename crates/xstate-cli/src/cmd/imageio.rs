//! What `validate`, `convert` and `inspect` share: reading and writing images in a file format,
//! and the restoring context's defaults from this host.
//!
//! The format handling is the two functions [`load`] and [`store`], which hand record formats
//! to [`xstate::record::read()`] and [`xstate::record::write()`]; [`XenArgs`] are the Xen
//! flags `validate`, `inspect` and `convert` share.

use std::path::Path;

use xstate::image::{Form, Image, ImageBuf};
use xstate::record::{self, Contents, Format, Options, State};
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
    /// A CRIU core-<tid>.img (reading; `xstate criu --patch` writes one).
    #[value(name = "criu-core")]
    CriuCore,
    /// A QEMU migration stream (`migrate file:`): one vCPU (--vcpu) read, written by patching.
    #[value(name = "qemu")]
    Qemu,
    /// A Cloud Hypervisor snapshot's state.json: one vCPU (--vcpu) read, written by patching.
    #[value(name = "cloud-hypervisor")]
    CloudHypervisor,
    /// A Firecracker snapshot's vmstate (states found by structure in bincode files, located by
    /// content in bitcode ones): one vCPU (--vcpu) read, written by patching (CRC-64 recomputed).
    #[value(name = "firecracker")]
    Firecracker,
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
            ImageFormat::FcBlob => Format::FcBlob,
            ImageFormat::XenHvm => Format::XenHvm,
            ImageFormat::XenPv => Format::XenPv,
            ImageFormat::KvmXsave => Format::KvmXsave,
            ImageFormat::KvmXsave2 => Format::KvmXsave2,
            ImageFormat::NtXstate => Format::NtXstate,
            ImageFormat::Sigframe => Format::SigFrame,
            ImageFormat::Portable => Format::Portable,
            ImageFormat::ElfCore => Format::ElfCore,
            ImageFormat::CriuCore => Format::CriuCore,
            ImageFormat::Qemu => Format::Qemu,
            ImageFormat::CloudHypervisor => Format::CloudHypervisor,
            ImageFormat::Firecracker => Format::Firecracker,
        })
    }
}

/// An image read from a file, with what the file said about it.
#[derive(Clone, Debug)]
pub struct Loaded {
    /// The image; `None` for a record holding "no xsave state".
    pub image: Option<Vec<u8>>,
    /// The components the image is laid out for (its RFBM), user part, if the file records
    /// them (for Xen records the accumulated XCR0 the image is sized for).
    pub xcr0: Option<Xfeatures>,
    /// Their supervisor part (forward-compatible blob, portable record).
    pub xss: Option<Xfeatures>,
    /// The layout the file carries (portable record, core with NT_X86_XSAVE_LAYOUT); the image
    /// is laid out for it rather than for `--cpuid`.
    pub layout: Option<Layout>,
    /// The format read (after `auto`).
    pub format: Format,
    /// What the record says (its first state, or a container's chosen vCPU); `None` for a
    /// bare image.
    pub state: Option<State>,
    /// What the reader found out about the file (how a container's states were located).
    pub notes: Vec<String>,
}

/// A format as `--format` names it (`raw` for a bare image), for JSON and messages.
pub fn format_name(f: Format) -> &'static str {
    if f == Format::Image { "raw" } else { f.name() }
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

/// Reads the image in `path` written in `format`, for the CPU of `layout`, with what the
/// reader knows besides the bytes (`opts`: Xen's host and policy, ...).
pub fn load(path: &Path, format: ImageFormat, layout: &Layout, opts: &Options) -> CliResult<Loaded> {
    load_vcpu(path, format, layout, opts, None)
}

/// [`load`] choosing the state of vCPU `vcpu` in a file holding several (a QEMU stream, a VMM
/// snapshot); without `vcpu` such a file must hold one.
pub fn load_vcpu(
    path: &Path,
    format: ImageFormat,
    layout: &Layout,
    opts: &Options,
    vcpu: Option<u32>,
) -> CliResult<Loaded> {
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
        return Ok(Loaded {
            image: Some(bytes),
            xcr0: None,
            xss: None,
            layout: None,
            format: f,
            state: None,
            notes: Vec::new(),
        });
    }
    let c = record::read(f, &bytes, layout, opts).map_err(|e| {
        // Formats that do not carry the guest's CPUID are read in --cpuid's layout: say so
        // where that layout lacks what the record enables.
        let hint = match (f, &e.rule) {
            (
                Format::Qemu | Format::ElfCore | Format::NtXstate,
                record::Rule::Image | record::Rule::UnknownComponent,
            ) => "; this format does not carry the guest's CPUID: --cpuid names the CPU whose layout it is read in",
            _ => "",
        };
        CliError::invalid(format!("{name}: {e}{hint}{how}"))
    })?;
    let chosen = match (vcpu, c.states.len()) {
        (Some(v), _) if f.is_container() => c
            .states
            .iter()
            .find(|s| s.vcpu() == Some(v))
            .cloned()
            .ok_or_else(|| CliError::invalid(format!("{name}: {f}: no vCPU {v} (it holds {})", vcpus(&c))))?,
        (None, n) if n > 1 => {
            return Err(CliError::invalid(format!("{name}: {f}: holds {}: choose one with --vcpu N", vcpus(&c))));
        }
        _ => match c.state().cloned() {
            Some(s) => s,
            None => return Err(CliError::invalid(format!("{name}: {f}: holds no XSAVE image{how}"))),
        },
    };
    if let Some(own) = c.layout.as_ref().filter(|_| opts.layout_given && !f.is_container()) {
        placed_alike(own, layout, f, &name.to_string())?;
    }
    let state = chosen;
    // A file's own CPUID that places two enabled components over each other is damaged.
    if let (Some(own), Some(enabled)) = (&c.layout, state.rfbm)
        && let Some((a, b)) = own.overlap_in(enabled | state.xcr0.unwrap_or_default())
    {
        return Err(CliError::invalid(format!(
            "{name}: {f}: its own CPUID leaf 0xD says {a} and {b} overlap in the standard format, both enabled: \
             no CPU lays them out so (a damaged CPUID)"
        )));
    }
    if state.image.is_none() && !state.is_no_xsave_state() {
        return Err(CliError::invalid(format!("{name}: {f}: holds no XSAVE image{how}")));
    }
    let l = c.layout.as_ref().unwrap_or(layout);
    let rfbm = state.rfbm;
    Ok(Loaded {
        image: state.image.as_ref().map(|i| i.to_vec()),
        xcr0: rfbm.map(|r| r & l.user_supported()),
        xss: rfbm.map(|r| r & l.supervisor_supported()),
        layout: c.layout,
        format: f,
        state: Some(state),
        notes: c.notes,
    })
}

/// A record that carries its own layout (portable's descriptor, a core's NT_X86_XSAVE_LAYOUT)
/// is read in it; `--cpuid` may name the same CPU, but not one that places any of its
/// components elsewhere: the answer would be about bytes laid out for another CPU (exit 1).
pub fn placed_alike(own: &Layout, given: &Layout, f: Format, name: &str) -> CliResult {
    let moved = own.supported().iter().filter(|&c| !c.is_legacy()).find(|&c| {
        let g = given.geometry(c);
        own.geometry(c)
            .is_some_and(|o| g.is_none_or(|g| (g.offset, g.size, g.align64) != (o.offset, o.size, o.align64)))
    });
    let Some(c) = moved else { return Ok(()) };
    let there = match given.geometry(c) {
        Some(g) => format!("{} bytes at {:#x}", g.size, g.offset),
        None => "absent".into(),
    };
    let o = own.geometry(c).unwrap_or_default();
    Err(CliError::invalid(format!(
        "{name}: {f} carries its own layout, and --cpuid's CPU places {c} elsewhere ({} bytes at {:#x} in the \
         record, {there} there): read it without --cpuid, and move it to that CPU with convert --to-cpuid",
        o.size, o.offset
    )))
}

/// "vCPUs 0, 1, 2" for messages.
pub fn vcpus(c: &Contents) -> String {
    let ids: Vec<String> = c.states.iter().map(|s| s.vcpu().map_or("?".into(), |v| v.to_string())).collect();
    format!("vCPU{} {}", if ids.len() == 1 { "" } else { "s" }, ids.join(", "))
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
    sized_for(image, layout, xcr0, name, cpu, "another CPU (--cpuid) or XCR0 (--xcr0), or a record (--format)")
}

/// [`check_image_size`] naming `what` the image may be instead (the flags of the command).
pub fn sized_for(image: &[u8], layout: &Layout, xcr0: Xfeatures, name: &str, cpu: &str, what: &str) -> CliResult {
    let img = Image::new(image).map_err(|e| CliError::invalid(format!("{name}: {e}")))?;
    let Some((want, basis)) = expected_size(image, layout, xcr0) else {
        return Err(CliError::invalid(format!(
            "{name}: XCOMP_BV {} names components {cpu} does not enumerate",
            img.xcomp_bv()
        )));
    };
    if image.len() != want {
        return Err(CliError::invalid(format!(
            "{name}: {} bytes, but a {} image on {cpu} is {basis} = {want} bytes: an image of {what}",
            image.len(),
            img.form()
        )));
    }
    Ok(())
}

/// The bytes of a file in `format` holding `state` (its image laid out for `layout`), with
/// `opts` supplying or dropping what the state and the format do not share.
pub fn store(state: &State, format: ImageFormat, layout: &Layout, opts: &Options) -> CliResult<Vec<u8>> {
    let f = match format {
        ImageFormat::Raw => Format::Image,
        ImageFormat::Auto => return Err(CliError::usage("--to-format auto: name the output format")),
        other => other.record().unwrap_or(Format::Image),
    };
    if !f.writable() {
        return Err(CliError::usage(format!("--to-format {f}: this format is read, not written")));
    }
    let compacted = state.image.as_ref().is_some_and(|i| i.image().form() == Form::Compacted);
    if compacted && !matches!(f, Format::Image | Format::FcBlob | Format::Portable) {
        return Err(CliError::invalid(format!("{f} holds standard-format images only: use --to standard")));
    }
    let c = Contents::one(Format::Image, state.clone());
    record::write(f, &c, layout, layout, opts).map_err(CliError::invalid)
}

/// A bare image as a state: laid out for `rfbm`, nothing else known.
pub fn raw_state(image: &[u8], rfbm: Xfeatures) -> CliResult<State> {
    let img = ImageBuf::from_bytes(image).map_err(CliError::invalid)?;
    Ok(State::new(Some(img), Some(rfbm)))
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

/// The Xen flags of `validate`, `inspect` and `convert`: what Xen knows besides a record.
#[derive(clap::Args, Debug, Default)]
pub struct XenArgs {
    /// xen: the domain's maximum XCR0: `pv`, `hvm-shadow`, `hvm-hap` (Xen's guest maxima derived
    /// from the CPU as recalculate_xstate() does) or a mask; default: hvm-hap, the largest.
    #[arg(long, value_name = "POLICY", value_parser = parse_xen_policy)]
    pub xen_policy: Option<XenPolicy>,
    /// xen: the host's enabled xfeature_mask; default: Xen's, CPUID & XCNTXT_MASK (never LWP).
    #[arg(long, value_name = "MASK", value_parser = crate::common::parse_mask)]
    pub xen_host: Option<Xfeatures>,
}

/// `--xen-policy`: a named guest maximum or a mask.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XenPolicy {
    /// One of Xen's guest maxima.
    Guest(xstate::policy::XenGuest),
    /// A mask.
    Mask(Xfeatures),
}

fn parse_xen_policy(s: &str) -> Result<XenPolicy, String> {
    if let Some(g) = xstate::policy::XenGuest::from_name(s) {
        return Ok(XenPolicy::Guest(g));
    }
    s.parse::<Xfeatures>()
        .map(XenPolicy::Mask)
        .map_err(|_| format!("{s:?}: expected pv, hvm-shadow, hvm-hap or a mask"))
}

impl XenArgs {
    /// Whether a flag was given.
    pub fn given(&self) -> bool {
        self.xen_policy.is_some() || self.xen_host.is_some()
    }

    /// The domain policy's maximum XCR0 on `layout`, if given.
    pub fn policy_max(&self, layout: &Layout) -> Option<Xfeatures> {
        self.xen_policy.map(|p| match p {
            XenPolicy::Guest(g) => g.max_xcr0(layout),
            XenPolicy::Mask(m) => m,
        })
    }

    /// The name of the policy in force, for messages.
    pub fn policy_name(&self) -> String {
        match self.xen_policy {
            Some(XenPolicy::Guest(g)) => g.name().to_string(),
            Some(XenPolicy::Mask(m)) => format!("{m}"),
            None => "hvm-hap (default)".to_string(),
        }
    }

    /// Xen's host for records read on `layout`: the flags over Xen's defaults. `None` without
    /// flags, so every format keeps its own default.
    pub fn host(&self, layout: &Layout) -> Option<record::xen::XenHost> {
        self.given().then(|| {
            let d = record::xen::XenHost::of(layout);
            record::xen::XenHost::new(self.xen_host.unwrap_or(d.host), self.policy_max(layout).unwrap_or(d.policy_max))
        })
    }
}

/// What a reader of a QEMU stream or VMM snapshot may need to be told (`inspect`, `validate`,
/// `convert`, `compat`).
#[derive(clap::Args, Debug, Default)]
pub struct VmmArgs {
    /// qemu: the accelerator that wrote the stream (its x87 register order and the meaning of
    /// xstate_bv), where the stream's evidence does not say: kvm or tcg.
    #[arg(long, value_name = "ACCEL", value_parser = parse_accel)]
    pub qemu_accel: Option<xstate::record::qemu::Accel>,
}

fn parse_accel(s: &str) -> Result<xstate::record::qemu::Accel, String> {
    xstate::record::qemu::Accel::from_name(s).ok_or_else(|| format!("{s:?}: expected kvm or tcg"))
}

impl VmmArgs {
    /// Flags that mean nothing for `format` are usage errors: `--vcpu` (of `inspect` and
    /// `validate`) outside a container, `--qemu-accel` outside a QEMU stream.
    pub fn check(&self, format: Format, vcpu: Option<u32>) -> CliResult {
        if vcpu.is_some() && !format.is_container() {
            return Err(CliError::usage(format!(
                "--vcpu applies to files of several vCPUs (qemu, cloud-hypervisor, firecracker) only, not {}",
                format.name()
            )));
        }
        if self.qemu_accel.is_some() && format != Format::Qemu {
            return Err(CliError::usage(format!("--qemu-accel applies to QEMU streams only, not {}", format.name())));
        }
        Ok(())
    }

    /// `opts` with these flags, and with a snapshot's images read in `cpu`'s layout when
    /// `--cpuid` is given (else in the layout of the snapshot's own CPUID).
    pub fn apply(&self, mut opts: Options, cpu: &crate::common::CpuArgs) -> Options {
        opts.qemu_accel = self.qemu_accel;
        opts.layout_given = cpu.cpuid.is_some();
        opts
    }
}
