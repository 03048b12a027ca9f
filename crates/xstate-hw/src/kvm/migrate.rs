//! Moving a vCPU's extended state from one VM to another through xstate's portable record:
//! KVM_GET_XSAVE2 on the source, a record that carries the source layout, the compatibility
//! check against the destination's policy, a re-layout to the destination host's offsets
//! (kvm_xsave always uses the host's), KVM_SET_XCRS and KVM_SET_XSAVE.

use std::fmt;
use std::io;

use xstate::compat::{self, Report, Side, Verdict};
use xstate::image::{ConvertError, Target, ValidationError, convert};
use xstate::policy::Policy;
use xstate::record::{self, Format, Options, RecordError};
use xstate::{Layout, Xfeatures};

use kvm_ioctls::{Kvm, VcpuFd};

/// Why a migration did not happen. The destination vCPU is unchanged in every case.
#[derive(Debug)]
#[non_exhaustive]
pub enum MigrateError {
    /// A KVM ioctl failed.
    Kvm(io::Error),
    /// The record could not be written or read.
    Record(RecordError),
    /// The image in the record is not one its own CPU would load.
    Invalid(ValidationError),
    /// The state cannot live on the destination; the report says why and what to mask.
    Incompatible(Report),
    /// The re-layout to the destination host refused (a component in use it cannot hold).
    Convert(ConvertError),
}

impl fmt::Display for MigrateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MigrateError::Kvm(e) => write!(f, "KVM: {e}"),
            MigrateError::Record(e) => write!(f, "record: {e}"),
            MigrateError::Invalid(e) => write!(f, "image: {e}"),
            MigrateError::Incompatible(r) => {
                let reasons: Vec<String> = r.reasons.iter().map(|x| x.to_string()).collect();
                write!(f, "incompatible: {}", reasons.join("; "))?;
                if !r.mask.is_empty() {
                    write!(f, " (mask {} in the source policy)", r.mask.names())?;
                }
                Ok(())
            }
            MigrateError::Convert(e) => write!(f, "re-layout: {e}"),
        }
    }
}

impl std::error::Error for MigrateError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            MigrateError::Kvm(e) => Some(e),
            MigrateError::Record(e) => Some(e),
            MigrateError::Invalid(e) => Some(e),
            MigrateError::Convert(e) => Some(e),
            MigrateError::Incompatible(_) => None,
        }
    }
}

impl From<io::Error> for MigrateError {
    fn from(e: io::Error) -> Self {
        MigrateError::Kvm(e)
    }
}

/// Saves `vcpu`'s XCR0 (KVM_GET_XCRS) and extended state (KVM_GET_XSAVE2) as a portable record.
/// `host` is the layout of this host (KVM's buffer layout).
pub fn save(kvm: &Kvm, vcpu: &VcpuFd, host: &Layout) -> Result<Vec<u8>, MigrateError> {
    let buf = super::get_xsave(kvm, vcpu)?;
    let xcr0 = super::xcr0(vcpu)?.unwrap_or(Xfeatures::X87);
    let format = if buf.len() == super::KVM_XSAVE_SIZE && super::cap_xsave2(kvm) == 0 {
        Format::KvmXsave
    } else {
        Format::KvmXsave2
    };
    let mut opts = Options::default();
    // KVM_GET_XSAVE does not record the guest's XCR0: KVM_GET_XCRS's is given.
    opts.xcr0 = Some(xcr0);
    opts.kvm_xsave2_size = Some(buf.len());
    // The vCPU's own buffer holds only what KVM supports; the host layout bounds it.
    opts.kvm_supported = Some(host.user_supported());
    let contents = record::read(format, &buf, host, &opts).map_err(MigrateError::Record)?;
    record::write(Format::Portable, &contents, host, host, &opts).map_err(MigrateError::Record)
}

/// Restores a portable record into `vcpu`, whose guest runs under `dst` on this host (`host`:
/// this host's layout). Checks compatibility first with the record's XCR0 (the destination must
/// be able to enable every state the guest enabled, in use or init; where state sits matters
/// for the components in use) and refuses with the report when the state cannot live there;
/// otherwise re-lays the image out for this host, then sets XCR0 and the state. Returns the
/// compatibility report.
pub fn restore(
    kvm: &Kvm,
    vcpu: &VcpuFd,
    record_bytes: &[u8],
    host: &Layout,
    dst: &Policy,
) -> Result<Report, MigrateError> {
    let contents =
        record::read(Format::Portable, record_bytes, host, &Options::default()).map_err(MigrateError::Record)?;
    let from = contents.layout.clone().unwrap_or_else(|| host.clone());
    let state = contents.state();
    let (xcr0, xss) = state
        .map_or((Xfeatures::X87, Xfeatures::EMPTY), |s| (s.xcr0.unwrap_or(Xfeatures::X87), s.xss.unwrap_or_default()));
    let src = Side { layout: &from, xcr0, xss };
    let to = Side { layout: dst.layout(), xcr0: dst.xcr0_max(), xss: dst.xss_max() };
    let Some((state, image)) = state.and_then(|s| s.image.as_ref().map(|i| (s, i))) else {
        return Ok(compat::check(&src, &to));
    };
    let report = compat::check_image(&src, &to, image.image().bytes()).map_err(MigrateError::Invalid)?;
    if report.verdict == Verdict::Incompatible {
        return Err(MigrateError::Incompatible(report));
    }
    let out = convert(
        image.image().bytes(),
        &from,
        host,
        state.rfbm.unwrap_or(xcr0 | xss) & from.user_supported(),
        Target::Standard,
    )
    .map_err(MigrateError::Convert)?;
    super::set_xcr0(vcpu, xcr0)?;
    super::set_xsave(kvm, vcpu, out.image().bytes())?;
    Ok(report)
}
