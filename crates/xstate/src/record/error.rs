//! The one error type of every record parser and writer: format, rule, byte offset, detail.

use alloc::string::String;
use core::fmt;

use super::{Field, Format};
use crate::image::validate::Errno;
use crate::image::{ConvertError, ValidationError};
use crate::layout::LayoutError;
use crate::xcr0::MaskError;
use crate::xfeatures::Xfeatures;

/// The rule a record breaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Rule {
    /// Shorter than the record's fixed part (a header or descriptor cannot be read).
    Truncated,
    /// The length differs from the one the record's own fields fix (Xen: `-EINVAL`).
    SizeMismatch,
    /// Longer than the consumer's maximum.
    Oversized,
    /// A record longer than its fields say, whose extra bytes are not all zero (Xen HVM:
    /// `-EOPNOTSUPP`).
    TailNotZero,
    /// The "no xsave state" form (accumulated states 0) with a non-zero first word or an image.
    NoStateNotEmpty,
    /// The active states are not a subset of the accumulated states.
    ActiveOutsideAccum,
    /// The accumulated states hold components the consumer does not offer: outside its host
    /// mask or the guest's policy maximum (the forward-compatible blob, as Xen's
    /// `validate_xstate()` refuses them: `-EINVAL`).
    AccumOutsideMaximum,
    /// A magic number is wrong.
    Magic,
    /// A version this reader does not understand.
    Version,
    /// A reserved field or flag is not zero.
    Reserved,
    /// A type code names another record.
    TypeCode,
    /// A length field disagrees with the bytes present.
    LengthField,
    /// Supervisor state where only a compacted image can hold it.
    SupervisorInStandard,
    /// A compacted image lays out components outside the accumulated states.
    XcompOutsideAccum,
    /// A compacted image where these rules accept only the standard form (Xen: `-EOPNOTSUPP`).
    CompactedNotAccepted,
    /// A mask names a component the layout does not enumerate, so no size follows from it.
    UnknownComponent,
    /// A layout descriptor cannot describe a CPU (order, class, size, offset).
    LayoutDescriptor,
    /// An XCR0 or XSS value breaks the architectural rules.
    InvalidMask,
    /// The embedded image is refused by the consumer's validation profile.
    Image,
    /// The checksum does not match the bytes.
    Checksum,
    /// The format carries no XSAVE image (kvm_xcrs, a layout note), so it cannot be converted.
    NoImage,
    /// The image cannot be put into the form or layout the target format needs.
    Conversion,
    /// The bytes are not in any format this reader knows.
    Unrecognised,
    /// The source carries a field the target format cannot hold (drop it explicitly).
    NotHeld,
    /// The target format records a field the source does not carry (give it).
    NeedsField,
    /// "No xsave state" where the target format has no form for it.
    NoStateForm,
    /// The protobuf wire encoding must be well formed, with the fields and element counts the
    /// message needs (CRIU images).
    Wire,
    /// A container's structure is not what its tool writes (a section, a footer, a length).
    Framing,
    /// The file does not say something the result depends on, or says two contradicting
    /// things (give it, or refuse).
    Ambiguous,
}

impl Rule {
    /// A short statement of the rule.
    pub const fn text(self) -> &'static str {
        match self {
            Rule::Truncated => "the record must hold its fixed part",
            Rule::SizeMismatch => "the record's size must be exactly what its fields fix",
            Rule::Oversized => "the record must not exceed the consumer's maximum size",
            Rule::TailNotZero => "bytes beyond the image the fields describe must be zero",
            Rule::NoStateNotEmpty => "with no accumulated state the record is 16 zero bytes",
            Rule::ActiveOutsideAccum => "the active states must be a subset of the accumulated states",
            Rule::AccumOutsideMaximum => "the accumulated states must be within the host's mask and the guest's policy",
            Rule::Magic => "magic number",
            Rule::Version => "version not understood by this reader",
            Rule::Reserved => "reserved fields must be zero",
            Rule::TypeCode => "record type",
            Rule::LengthField => "the length field must match the bytes present",
            Rule::SupervisorInStandard => "supervisor states exist only in compacted images",
            Rule::XcompOutsideAccum => "XCOMP_BV[62:0] must be a subset of the accumulated states",
            Rule::CompactedNotAccepted => "only standard-format images (XCOMP_BV[63] = 0) are accepted",
            Rule::UnknownComponent => "every component named must be enumerated by the layout",
            Rule::LayoutDescriptor => "the layout descriptor must describe a CPU",
            Rule::InvalidMask => "XCR0/XSS must obey the architectural rules",
            Rule::Image => "the embedded image must be valid",
            Rule::Checksum => "the checksum must match",
            Rule::NoImage => "the format carries no XSAVE image",
            Rule::Conversion => "the image must fit the target format",
            Rule::Unrecognised => "not a known record format",
            Rule::NotHeld => "the target format cannot hold a field the source carries",
            Rule::NeedsField => "the target format records a field the source does not carry",
            Rule::NoStateForm => "the target format has no form for \"no xsave state\"",
            Rule::Wire => "the protobuf encoding must be well formed with the fields CRIU needs",
            Rule::Framing => "the file's structure must be what its tool writes",
            Rule::Ambiguous => "the file must say what the result depends on, once",
        }
    }
}

/// Which size function an exact-size rule uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SizeOf {
    /// `standard_size(mask)`: the largest offset + size over the mask's user components.
    Standard,
    /// `compacted_size(mask)`: the components packed from 576 with align64 rounding.
    Compacted,
}

/// How the expected size of a record follows from its fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SizeBasis {
    /// A fixed size or minimum of the format.
    Fixed,
    /// `fixed + size_of(field mask)`.
    Plus {
        /// Bytes before the image.
        fixed: usize,
        /// The size function.
        of: SizeOf,
        /// The field whose mask decides (`"xcr0_accum"`, `"XCOMP_BV"`, ...).
        field: &'static str,
        /// Its value.
        mask: Xfeatures,
    },
    /// A length field of the record.
    Field(&'static str),
}

/// What is at fault.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Detail {
    /// Nothing more to say.
    None,
    /// The length present and the length the rule requires.
    Size {
        /// Bytes present.
        len: usize,
        /// Bytes required (exact, or the minimum/maximum for [`Rule::Truncated`]/[`Rule::Oversized`]).
        expected: usize,
        /// Where `expected` comes from.
        basis: SizeBasis,
    },
    /// Offending bits of a mask field.
    Bits {
        /// The field.
        field: &'static str,
        /// Its value.
        value: Xfeatures,
        /// The bits at fault.
        bits: Xfeatures,
    },
    /// A field's value and what was expected.
    Value {
        /// The field.
        field: &'static str,
        /// Its value.
        value: u64,
        /// The value the rule wants.
        expected: u64,
    },
    /// The image layer's verdict.
    Image(ValidationError),
    /// An XCR0/XSS rule.
    Mask(MaskError),
    /// Why a carried layout is unusable.
    Layout(LayoutError),
    /// Why the image cannot be converted.
    Convert(ConvertError),
    /// Free text (which format would have been needed, ...).
    Text(&'static str),
    /// The field a conversion would lose or lacks.
    Field(Field),
    /// What is at fault, in words built from the file (a section's name, a field's shape).
    Message(String),
}

/// A record that cannot be read or written.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecordError {
    /// The format.
    pub format: Format,
    /// The rule broken.
    pub rule: Rule,
    /// Byte offset in the record of the field at fault, when there is one.
    pub offset: Option<usize>,
    /// The offending values.
    pub detail: Detail,
}

impl RecordError {
    pub(crate) fn new(format: Format, rule: Rule, offset: Option<usize>, detail: Detail) -> RecordError {
        RecordError { format, rule, offset, detail }
    }

    pub(crate) fn size(format: Format, rule: Rule, len: usize, expected: usize, basis: SizeBasis) -> RecordError {
        RecordError::new(format, rule, None, Detail::Size { len, expected, basis })
    }

    pub(crate) fn bits(
        format: Format,
        rule: Rule,
        offset: usize,
        field: &'static str,
        value: Xfeatures,
        bits: Xfeatures,
    ) -> RecordError {
        RecordError::new(format, rule, Some(offset), Detail::Bits { field, value, bits })
    }

    pub(crate) fn value(
        format: Format,
        rule: Rule,
        offset: usize,
        field: &'static str,
        value: u64,
        expected: u64,
    ) -> RecordError {
        RecordError::new(format, rule, Some(offset), Detail::Value { field, value, expected })
    }

    pub(crate) fn image(format: Format, offset: usize, e: ValidationError) -> RecordError {
        RecordError::new(format, Rule::Image, Some(offset), Detail::Image(e))
    }

    /// The errno the consumer this format's reader mirrors returns for the error, as
    /// [`ValidationError::errno`] does for images; `None` where that consumer has none (a
    /// toolstack or tool failing without one, sigreturn's SIGSEGV, xstate's own formats, a
    /// refused conversion).
    ///
    /// - `xen-domctl` (`XEN_DOMCTL_setvcpuextstate`): `-EOPNOTSUPP` for a compacted image,
    ///   else `-EINVAL`; the image's own rules carry `validate_xstate()`'s errno.
    /// - `xen-hvm` (`hvm_load_cpu_xsave_states()`): `-ENODATA` where the descriptor or the data
    ///   it announces is cut short, `-EOPNOTSUPP` for a non-zero tail, else `-EINVAL`.
    /// - `xen-pv` (libxenguest's `handle_x86_pv_vcpu_blob()`): the framing and a blob shorter
    ///   than 16 bytes fail in the toolstack (`None`); the blob's other rules are the domctl's.
    /// - `fc-blob`: as `xen-domctl`, whose successor it proposes to be.
    /// - `kvm-xsave`, `kvm-xsave2`: KVM_SET_XSAVE's (the image rules: `EINVAL`); `kvm-xcrs`:
    ///   KVM_SET_XCRS's `EINVAL`. Sizes are fixed by the ioctl, so a wrong one has none.
    /// - `nt-xstate`: PTRACE_SETREGSET's for the image rules.
    pub fn errno(&self) -> Option<Errno> {
        if let Detail::Image(e) = &self.detail {
            return e.errno();
        }
        if matches!(self.rule, Rule::NotHeld | Rule::NeedsField | Rule::NoStateForm | Rule::Conversion | Rule::NoImage)
        {
            return None;
        }
        let framing_size = match self.detail {
            Detail::Size { expected, .. } => expected,
            _ => usize::MAX,
        };
        match self.format {
            Format::XenDomctl | Format::FcBlob => Some(match self.rule {
                Rule::CompactedNotAccepted => Errno::Eopnotsupp,
                _ => Errno::Einval,
            }),
            Format::XenHvm => match self.rule {
                Rule::TypeCode => None,
                Rule::LengthField => Some(Errno::Enodata),
                Rule::Truncated if framing_size == super::xen::HVM_DESCRIPTOR => Some(Errno::Enodata),
                Rule::TailNotZero | Rule::CompactedNotAccepted => Some(Errno::Eopnotsupp),
                _ => Some(Errno::Einval),
            },
            Format::XenPv => match self.rule {
                Rule::TypeCode | Rule::LengthField => None,
                Rule::Truncated if framing_size <= super::xen::BLOB_HEADER => None,
                Rule::CompactedNotAccepted => Some(Errno::Eopnotsupp),
                _ => Some(Errno::Einval),
            },
            Format::KvmXcrs => match self.rule {
                Rule::Reserved | Rule::InvalidMask | Rule::LengthField => Some(Errno::Einval),
                _ => None,
            },
            _ => None,
        }
    }
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.format.name())?;
        let at = |f: &mut fmt::Formatter<'_>| match self.offset {
            Some(o) => write!(f, " at byte {o}"),
            None => Ok(()),
        };
        match &self.detail {
            Detail::Size { len, expected, basis } => {
                let op = match self.rule {
                    Rule::Truncated => "<",
                    Rule::Oversized => ">",
                    _ => "!=",
                };
                write!(f, "size {len} {op} ")?;
                match basis {
                    SizeBasis::Fixed => write!(f, "{expected}")?,
                    SizeBasis::Plus { fixed, of, field, mask } => {
                        let func = match of {
                            SizeOf::Standard => "standard_size",
                            SizeOf::Compacted => "compacted_size",
                        };
                        write!(f, "{fixed} + {func}({field} {mask}) = {expected}")?
                    }
                    SizeBasis::Field(name) => write!(f, "{expected} (from {name})")?,
                }
                write!(f, ": {}", self.rule.text())?;
                at(f)
            }
            Detail::Bits { field, value, bits } => {
                write!(f, "{}", self.rule.text())?;
                at(f)?;
                write!(f, ": {field} {value} has bits {bits} ({})", bits.names())
            }
            Detail::Value { field, value, expected } => {
                write!(f, "{}", self.rule.text())?;
                at(f)?;
                write!(f, ": {field} is {value:#x}, expected {expected:#x}")
            }
            Detail::Image(e) => {
                write!(f, "embedded image")?;
                at(f)?;
                write!(f, ": {e}")
            }
            Detail::Mask(m) => {
                write!(f, "{}", self.rule.text())?;
                at(f)?;
                write!(f, ": {m}")
            }
            Detail::Layout(e) => {
                write!(f, "{}", self.rule.text())?;
                at(f)?;
                write!(f, ": {e}")
            }
            Detail::Convert(e) => write!(f, "{}: {e}", self.rule.text()),
            Detail::Text(t) => {
                write!(f, "{}", self.rule.text())?;
                at(f)?;
                write!(f, ": {t}")
            }
            Detail::Message(t) => {
                write!(f, "{}", self.rule.text())?;
                at(f)?;
                write!(f, ": {t}")
            }
            Detail::None => {
                write!(f, "{}", self.rule.text())?;
                at(f)
            }
            Detail::Field(field) => {
                write!(f, "{}: {}", self.rule.text(), field.record_name())?;
                match self.rule {
                    Rule::NotHeld => write!(f, " (drop it with --drop {field})"),
                    Rule::NeedsField if *field == Field::Vcpu => f.write_str(" (give it with --vcpu N)"),
                    Rule::NeedsField if *field == Field::Xcr0 => {
                        f.write_str(" (give the guest's XCR0 with --xcr0: KVM_GET_XCRS, a kvm-xcrs record)")
                    }
                    _ => Ok(()),
                }
            }
        }?;
        if self.rule == Rule::NoStateForm {
            f.write_str(": the source holds no xsave state")?;
        }
        match self.errno() {
            Some(e) if !matches!(self.detail, Detail::Image(_)) => write!(f, " ({})", e.name()),
            _ => Ok(()),
        }
    }
}

impl core::error::Error for RecordError {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match &self.detail {
            Detail::Image(e) => Some(e),
            Detail::Mask(e) => Some(e),
            Detail::Layout(e) => Some(e),
            Detail::Convert(e) => Some(e),
            _ => None,
        }
    }
}
