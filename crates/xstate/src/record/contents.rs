//! The intermediate every format reads into and writes from: a record's file-level facts and
//! its per-vCPU (or per-thread) states, each saying exactly what the record says and no more.
//!
//! A field the record does not carry is `None`, never inferred: a `kvm_xsave` does not record
//! the guest's XCR0 (bytes 464..471 hold the host's supported mask, KVM_GET_XCRS has XCR0), a
//! bare image records neither XCR0 nor a vCPU. [`super::write()`] refuses a target that needs
//! such a field unless the caller gives it ([`super::Options`]), and refuses to lose a field
//! the target cannot hold unless the caller drops it ([`Field`], [`super::Options::drop`]).

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use super::Format;
use crate::image::ImageBuf;
use crate::layout::Layout;
use crate::xfeatures::Xfeatures;

/// Who a state belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StateId {
    /// A vCPU: Xen's HVM descriptor `instance`, the PV record's `vcpu_id`.
    Vcpu(u32),
    /// A thread: an ELF core's NT_PRSTATUS `pr_pid`.
    Thread(u32),
}

/// A field of a [`State`] a format may or may not hold, as `--drop` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Field {
    /// The XSAVE image (or its "no xsave state" absence).
    Image,
    /// XCR0.
    Xcr0,
    /// IA32_XSS (a non-zero value: XSS = 0 is what every format without the field means).
    Xss,
    /// The accumulated states (Xen's `xcr0_accum`, the `xstates_accum` of the forward-compatible
    /// blob and the portable record).
    Accum,
    /// The vCPU (or thread) the state belongs to.
    Vcpu,
}

impl Field {
    /// Every field.
    pub const ALL: [Field; 5] = [Field::Image, Field::Xcr0, Field::Xss, Field::Accum, Field::Vcpu];

    /// The name `--drop` takes: `image`, `xcr0`, `xss`, `xcr0-accum`, `vcpu`.
    pub const fn name(self) -> &'static str {
        match self {
            Field::Image => "image",
            Field::Xcr0 => "xcr0",
            Field::Xss => "xss",
            Field::Accum => "xcr0-accum",
            Field::Vcpu => "vcpu",
        }
    }

    /// The field of a name (`xcr0_accum` is taken for `xcr0-accum`).
    pub fn from_name(s: &str) -> Option<Field> {
        Field::ALL.into_iter().find(|f| f.name().eq_ignore_ascii_case(s) || f.name().replace('-', "_") == s)
    }

    /// The field as each format calls it, for messages: `xcr0_accum`, `vcpu`, ...
    pub const fn record_name(self) -> &'static str {
        match self {
            Field::Image => "image",
            Field::Xcr0 => "xcr0",
            Field::Xss => "xss",
            Field::Accum => "xcr0_accum",
            Field::Vcpu => "vcpu",
        }
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Fields a format carries that xstate does not interpret, kept so that writing the same
/// format again gives the bytes read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Uninterpreted {
    /// Xen HVM `CPU_XSAVE`: the saving host's `xfeature_mask` ("ignored on load").
    pub xfeature_mask: Option<Xfeatures>,
    /// Xen PV `X86_PV_VCPU_XSAVE`: the vCPU header's reserved word.
    pub pv_reserved: Option<u32>,
}

/// One vCPU's (or thread's) extended state as a record holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct State {
    /// Whose state it is, if the record says.
    pub id: Option<StateId>,
    /// The image; `None` for "no xsave state" and for formats without one (kvm_xcrs, a layout
    /// note).
    pub image: Option<ImageBuf>,
    /// The components the image is laid out for, the RFBM it is restored with: the
    /// accumulated states for Xen records and the portable record, XCR0 for NT_X86_XSTATE,
    /// the buffer's components for KVM, XCOMP_BV for a compacted bare image. `None` where the
    /// record does not say (a standard bare image without a given XCR0).
    pub rfbm: Option<Xfeatures>,
    /// XCR0, if the record (or the caller, for formats that do not record it) says.
    pub xcr0: Option<Xfeatures>,
    /// IA32_XSS, if the record says.
    pub xss: Option<Xfeatures>,
    /// The accumulated states, where the format has them.
    pub accum: Option<Xfeatures>,
    /// What the format carries beside these.
    pub uninterpreted: Uninterpreted,
}

impl State {
    /// A state with `image` laid out for `rfbm` and nothing else known.
    pub fn new(image: Option<ImageBuf>, rfbm: Option<Xfeatures>) -> State {
        State { id: None, image, rfbm, xcr0: None, xss: None, accum: None, uninterpreted: Uninterpreted::default() }
    }

    /// "No xsave state": no image, no masks.
    pub fn no_xsave_state() -> State {
        State::new(None, None)
    }

    /// Whether this is "no xsave state": a format's own form for a vCPU that never enabled
    /// XSAVE (Xen's 16-byte blob, an empty PV record).
    pub fn is_no_xsave_state(&self) -> bool {
        self.image.is_none() && self.xcr0.is_none_or(|x| x.is_empty())
    }

    /// The same state with XCR0 `xcr0`.
    pub fn with_xcr0(mut self, xcr0: Xfeatures) -> State {
        self.xcr0 = Some(xcr0);
        self
    }

    /// The same state with IA32_XSS `xss`.
    pub fn with_xss(mut self, xss: Xfeatures) -> State {
        self.xss = Some(xss);
        self
    }

    /// The same state with accumulated states `accum`.
    pub fn with_accum(mut self, accum: Xfeatures) -> State {
        self.accum = Some(accum);
        self
    }

    /// The same state belonging to `id`.
    pub fn with_id(mut self, id: StateId) -> State {
        self.id = Some(id);
        self
    }

    /// The vCPU number, if the state belongs to a vCPU.
    pub fn vcpu(&self) -> Option<u32> {
        match self.id {
            Some(StateId::Vcpu(v)) => Some(v),
            _ => None,
        }
    }
}

/// A record's meaning, independent of its format: file-level facts and the states it holds.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Contents {
    /// The format read.
    pub format: Format,
    /// The layout the record carries (portable record, layout note, core with a layout note).
    pub layout: Option<Layout>,
    /// The states, one per vCPU or thread (a core or a container has one per thread or vCPU;
    /// every other format one).
    pub states: Vec<State>,
    /// What the reader found out about the file that a user should know: how the states were
    /// located and read (a QEMU stream's accelerator, a Firecracker state found by content).
    pub notes: Vec<String>,
}

impl Contents {
    /// Contents of one state.
    pub fn one(format: Format, state: State) -> Contents {
        Contents { format, layout: None, states: alloc::vec![state], notes: Vec::new() }
    }

    /// The same contents carrying `layout`.
    pub fn with_layout(mut self, layout: Layout) -> Contents {
        self.layout = Some(layout);
        self
    }

    /// The first state (the only one in every format but a core).
    pub fn state(&self) -> Option<&State> {
        self.states.first()
    }
}
