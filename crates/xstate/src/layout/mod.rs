//! One CPU's XSAVE geometry: where every component lives in the standard and compacted formats,
//! how big an image is for any mask, and which bytes of a standard image belong to nobody.
//!
//! A [`Layout`] is built from CPUID leaf 0xD and only from it (or from an explicit component
//! table): never from XCR0, an image's length or a vendor name (SDM Vol. 1 §13.4-13.5). Queries
//! are plain arithmetic on tables filled once, so they execute no CPUID and allocate nothing.

mod check;
mod partial;

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use core::ops::Range;

pub use check::{Outcome, SizeCheck, SizeField};
pub use partial::Partial;

use crate::component::{Component, legacy::EXTENDED_OFFSET};
use crate::cpuid::{Leaf0d, Regs, XsaveFeatures};
use crate::xfeatures::Xfeatures;

/// Where one component lives.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Geometry {
    /// Size in bytes (CPUID 0xD.i EAX).
    pub size: u32,
    /// Standard-format offset (CPUID 0xD.i EBX); 0 for supervisor components, which have none.
    pub offset: u32,
    /// Supervisor component (ECX\[0\]).
    pub supervisor: bool,
    /// Starts on a 64-byte boundary in the compacted format (ECX\[1\]).
    pub align64: bool,
    /// Can be armed in IA32_XFD (ECX\[2\]).
    pub xfd: bool,
}

/// Geometry Linux and the SDM's FXSAVE table give the legacy components for tables: x87 is
/// bytes 0..160 (its registers end where XMM0 begins), SSE is the XMM area 160..416. MXCSR at
/// 24..32 also belongs to SSE; [`Component::legacy_ranges`] has the exact byte ranges.
const X87_GEOMETRY: Geometry = Geometry { size: 160, offset: 0, supervisor: false, align64: false, xfd: false };
const SSE_GEOMETRY: Geometry = Geometry { size: 256, offset: 160, supervisor: false, align64: false, xfd: false };

/// Something in a CPUID source that does not break the layout but deserves a note.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Anomaly {
    /// A known component whose size differs from the one every other CPU reports, e.g. the
    /// 64-byte bit-9 component of AMD Zen 2, which is not PKRU. It is named `component N`.
    CatalogueSize {
        /// The component.
        component: Component,
        /// Size the CPU reports.
        size: u32,
        /// Size the catalogue expects.
        expected: u32,
    },
    /// Two supported user components overlap in the standard format (APX and MPX do by design;
    /// they are never enabled together).
    Overlap(Component, Component),
    /// Reserved bits (ECX\[31:3\], EDX) set in a component's subleaf.
    ReservedBits(Component),
    /// A subleaf of a component the CPU does not enumerate holds data (Centaur CNS reports CET
    /// subleaves it does not support). The data is ignored.
    UnsupportedSubleaf(u8),
}

impl fmt::Display for Anomaly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Anomaly::CatalogueSize { component, size, expected } => write!(
                f,
                "component {} is {size} bytes, not the {expected} of {}: treated as an unknown component",
                component.index(),
                component.name()
            ),
            Anomaly::Overlap(a, b) => write!(f, "{a} and {b} overlap in the standard format"),
            Anomaly::ReservedBits(c) => write!(f, "subleaf {} has reserved ECX/EDX bits set", c.index()),
            Anomaly::UnsupportedSubleaf(i) => {
                write!(f, "subleaf {i} holds data but component {i} is not enumerated: ignored")
            }
        }
    }
}

/// Why CPUID data does not make a usable layout.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LayoutError {
    /// CPUID 0xD.0 is all zero: no XSAVE, or a broken enumeration.
    XsaveNotEnumerated,
    /// CPUID 0xD.0 is all zero although leaf 1 ECX bit 26 (XSAVE) is set: a broken dump or
    /// enumeration, not a CPU without XSAVE ([`crate::cpuid::CpuidData::missing_leaf0d`]).
    Leaf0dEmpty,
    /// The source records no leaf 0xD although it shows the CPU has one: leaf 1 ECX bit 26
    /// (XSAVE) is set, or the maximum basic leaf (leaf 0 EAX) is at least 0xD. A dump missing
    /// leaf 0xD, not a CPU without XSAVE ([`crate::cpuid::CpuidData::missing_leaf0d`]).
    Leaf0dMissing {
        /// Leaf 1 ECX bit 26, if leaf 1 was recorded.
        xsave_flag: Option<bool>,
        /// The maximum basic leaf, if leaf 0 was recorded.
        max_leaf: Option<u32>,
    },
    /// 0xD.0 EAX\[0\] (x87) is clear, which no XSAVE CPU does.
    X87NotSupported,
    /// Bit 63 is set in 0xD.0 EDX or 0xD.1 EDX; it never names a component.
    Bit63 {
        /// `"XCR0"` or `"IA32_XSS"` mask.
        register: &'static str,
    },
    /// A component is enumerated but its subleaf is absent, or all zero (a dump-tool fault).
    MissingSubleaf {
        /// The component.
        component: Component,
    },
    /// A component is enumerated with size 0.
    ZeroSize {
        /// The component.
        component: Component,
    },
    /// A component appears in both the XCR0 and the IA32_XSS supported masks.
    BothClasses {
        /// The component.
        component: Component,
    },
    /// ECX\[0\] disagrees with the mask that enumerates the component.
    ClassFlag {
        /// The component.
        component: Component,
        /// True if it is in the IA32_XSS mask (so ECX\[0\] should be 1).
        in_xss: bool,
    },
    /// A user component's standard offset falls inside the legacy region or header.
    OffsetInLegacy {
        /// The component.
        component: Component,
        /// Its offset.
        offset: u32,
    },
    /// A supervisor component reports a non-zero standard offset.
    SupervisorOffset {
        /// The component.
        component: Component,
        /// Its offset.
        offset: u32,
    },
    /// Offsets and sizes overflow 32 bits.
    Overflow {
        /// The component.
        component: Component,
    },
}

impl fmt::Display for LayoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LayoutError::XsaveNotEnumerated => {
                f.write_str("CPUID leaf 0xD subleaf 0 is all zero: XSAVE is not enumerated")
            }
            LayoutError::Leaf0dMissing { xsave_flag, max_leaf } => {
                let why = match (xsave_flag, max_leaf) {
                    (Some(true), _) => alloc::string::String::from("leaf 1 ECX bit 26 (XSAVE) is set"),
                    (_, Some(m)) => alloc::format!("the maximum basic leaf is {m:#x}"),
                    _ => alloc::string::String::from("the CPU enumerates it"),
                };
                write!(
                    f,
                    "a dump missing leaf 0xD: it records no CPUID leaf 0xD, yet {why}; its XSAVE layout is unknown"
                )
            }
            LayoutError::Leaf0dEmpty => f.write_str(
                "CPUID leaf 0xD subleaf 0 is all zero, yet leaf 1 ECX bit 26 (XSAVE) is set: a broken dump or \
                 enumeration; its XSAVE layout is unknown",
            ),
            LayoutError::X87NotSupported => f.write_str("CPUID 0xD.0 EAX bit 0 (x87) is clear"),
            LayoutError::Bit63 { register } => write!(f, "the supported {register} mask has bit 63 set"),
            LayoutError::MissingSubleaf { component } => write!(
                f,
                "component {} ({}) is enumerated but CPUID 0xD subleaf {} is missing or all zero",
                component.index(),
                component.name(),
                component.index()
            ),
            LayoutError::ZeroSize { component } => {
                write!(f, "CPUID 0xD subleaf {}: component size EAX is 0", component.index())
            }
            LayoutError::BothClasses { component } => {
                write!(f, "component {} is in both the XCR0 and IA32_XSS supported masks", component.index())
            }
            LayoutError::ClassFlag { component, in_xss } => write!(
                f,
                "CPUID 0xD subleaf {}: ECX[0] = {} but the component is in the {} mask",
                component.index(),
                u8::from(!in_xss),
                if *in_xss { "IA32_XSS" } else { "XCR0" }
            ),
            LayoutError::OffsetInLegacy { component, offset } => write!(
                f,
                "CPUID 0xD subleaf {}: standard offset {offset:#x} lies inside the legacy region/header (below 0x240)",
                component.index()
            ),
            LayoutError::SupervisorOffset { component, offset } => write!(
                f,
                "CPUID 0xD subleaf {}: supervisor component with non-zero standard offset {offset:#x}",
                component.index()
            ),
            LayoutError::Overflow { component } => {
                write!(f, "CPUID 0xD subleaf {}: offset + size overflows", component.index())
            }
        }
    }
}

impl core::error::Error for LayoutError {}

/// What the CPUID source reported for the dynamic size fields, kept for cross-checks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Reported {
    /// 0xD.0 EBX: standard size for the XCR0 in force when the data was read.
    pub standard_size_enabled: u32,
    /// 0xD.0 ECX: standard size with every supported user component.
    pub standard_size_max: u32,
    /// 0xD.1 EBX: compacted size for the XCR0 | IA32_XSS in force when the data was read.
    pub compacted_size_enabled: u32,
}

/// One CPU's XSAVE geometry.
#[derive(Clone, PartialEq, Eq)]
pub struct Layout {
    user: Xfeatures,
    supervisor: Xfeatures,
    features: XsaveFeatures,
    geometry: [Geometry; 64],
    /// Components with align64, as a mask.
    align64: u64,
    /// Components that match the catalogue's size (or have no fixed size).
    recognised: u64,
    /// `nibble_sums[k][n]`: total size of the components 4k+j for the bits j set in nibble n
    /// (legacy components count 0). Sums sizes over a mask in one lookup per non-zero nibble.
    nibble_sums: [[u32; 16]; 16],
    /// Compacted sizes of the two masks most images use, every user component and every
    /// component (what XSAVEC with XCR0 = all, XSAVES with XCR0 | XSS = all write): (mask above
    /// SSE, end).
    packed_memo: [(u64, u32); 2],
    /// The compacted offset of every component for each `packed_memo` mask (0 where absent).
    packed_offsets: [[u32; 64]; 2],
    /// Supported user components ordered by standard end, largest first.
    by_end: Vec<(u8, u32)>,
    /// Supported user components above SSE, by standard offset (then index).
    by_offset: Vec<Component>,
    /// True when `by_offset` is also index order (false with LWP or APX).
    offsets_in_index_order: bool,
    max_standard: u32,
    reported: Reported,
    anomalies: Vec<Anomaly>,
}

impl fmt::Debug for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Layout");
        d.field("user", &self.user).field("supervisor", &self.supervisor).field("features", &self.features);
        for c in self.supported() {
            let g = self.geometry[c.index() as usize];
            d.field(
                &alloc::format!("{}", c.index()),
                &format_args!(
                    "{}@{:#x}{}{}",
                    g.size,
                    g.offset,
                    if g.align64 { " a64" } else { "" },
                    if g.xfd { " xfd" } else { "" }
                ),
            );
        }
        d.finish()
    }
}

const fn round64(v: u32) -> u32 {
    (v + 63) & !63
}

impl Layout {
    /// Builds a layout from leaf 0xD, checking that the enumeration is usable. Subleaves of
    /// components the CPU does not enumerate are ignored (SDM: they read zero; Centaur CNS
    /// breaks that rule).
    pub fn from_leaf0d(leaf: &Leaf0d) -> Result<Layout, LayoutError> {
        if !leaf.xsave_enumerated() {
            return Err(LayoutError::XsaveNotEnumerated);
        }
        let user = leaf.xcr0_supported();
        let supervisor = leaf.xss_supported();
        if user.bits() & 1 == 0 {
            return Err(LayoutError::X87NotSupported);
        }
        if user.bits() >> 63 != 0 {
            return Err(LayoutError::Bit63 { register: "XCR0" });
        }
        if supervisor.bits() >> 63 != 0 {
            return Err(LayoutError::Bit63 { register: "IA32_XSS" });
        }
        let mut geometry = [Geometry::default(); 64];
        geometry[0] = X87_GEOMETRY;
        if user.contains(Component::SSE) {
            geometry[1] = SSE_GEOMETRY;
        }
        let mut anomalies = Vec::new();
        let mut align64 = 0u64;
        let mut recognised = 0b11 & user.bits();
        for i in 2..63u8 {
            let c = Component::new(i).expect("index below 63");
            let in_user = user.contains(c);
            let in_sup = supervisor.contains(c);
            if !in_user && !in_sup {
                if !leaf.get(i).is_zero() {
                    anomalies.push(Anomaly::UnsupportedSubleaf(i));
                }
                continue;
            }
            if in_user && in_sup {
                return Err(LayoutError::BothClasses { component: c });
            }
            if !leaf.recorded(i) || leaf.get(i).is_zero() {
                return Err(LayoutError::MissingSubleaf { component: c });
            }
            let s = leaf.component(c);
            if s.size == 0 {
                return Err(LayoutError::ZeroSize { component: c });
            }
            if s.supervisor != in_sup {
                return Err(LayoutError::ClassFlag { component: c, in_xss: in_sup });
            }
            if in_user {
                if (s.offset as usize) < EXTENDED_OFFSET {
                    return Err(LayoutError::OffsetInLegacy { component: c, offset: s.offset });
                }
                if s.offset.checked_add(s.size).is_none() {
                    return Err(LayoutError::Overflow { component: c });
                }
            } else if s.offset != 0 {
                return Err(LayoutError::SupervisorOffset { component: c, offset: s.offset });
            }
            if s.reserved != 0 {
                anomalies.push(Anomaly::ReservedBits(c));
            }
            geometry[i as usize] =
                Geometry { size: s.size, offset: s.offset, supervisor: s.supervisor, align64: s.align64, xfd: s.xfd };
            if s.align64 {
                align64 |= c.bit();
            }
            match c.info().and_then(|inf| inf.size) {
                Some(expected) if expected != s.size => {
                    anomalies.push(Anomaly::CatalogueSize { component: c, size: s.size, expected });
                }
                _ if c.info().is_some() => recognised |= c.bit(),
                _ => {}
            }
        }
        // Overlaps between user components in the standard format.
        let users: Vec<Component> = user.iter().filter(|c| !c.is_legacy()).collect();
        for (k, a) in users.iter().enumerate() {
            for b in &users[k + 1..] {
                let (ga, gb) = (geometry[a.index() as usize], geometry[b.index() as usize]);
                if ga.offset < gb.offset + gb.size && gb.offset < ga.offset + ga.size {
                    anomalies.push(Anomaly::Overlap(*a, *b));
                }
            }
        }
        let mut by_end: Vec<(u8, u32)> = users
            .iter()
            .map(|c| (c.index(), geometry[c.index() as usize].offset + geometry[c.index() as usize].size))
            .collect();
        by_end.sort_by(|x, y| y.1.cmp(&x.1).then(x.0.cmp(&y.0)));
        let mut by_offset = users.clone();
        by_offset.sort_by_key(|c| (geometry[c.index() as usize].offset, c.index()));
        let offsets_in_index_order = by_offset.windows(2).all(|w| w[0] < w[1]);
        let max_standard = by_end.first().map_or(EXTENDED_OFFSET as u32, |e| e.1.max(EXTENDED_OFFSET as u32));
        // Compacted sizes must fit in u32 too.
        let mut total: u64 = EXTENDED_OFFSET as u64;
        for c in (user | supervisor).iter().filter(|c| !c.is_legacy()) {
            total = (total + 63) & !63;
            total += geometry[c.index() as usize].size as u64;
            if total > u32::MAX as u64 {
                return Err(LayoutError::Overflow { component: c });
            }
        }
        let mut nibble_sums = [[0u32; 16]; 16];
        for (k, row) in nibble_sums.iter_mut().enumerate() {
            for n in 1..16usize {
                let j = n.trailing_zeros() as usize;
                let i = 4 * k + j;
                let size = if i < 2 { 0 } else { geometry[i].size };
                row[n] = row[n & (n - 1)] + size;
            }
        }
        let mut l = Layout {
            nibble_sums,
            packed_memo: [(u64::MAX, 0); 2],
            packed_offsets: [[0; 64]; 2],
            user,
            supervisor,
            features: leaf.features(),
            geometry,
            align64,
            recognised,
            by_end,
            by_offset,
            offsets_in_index_order,
            max_standard,
            reported: Reported {
                standard_size_enabled: leaf.standard_size_enabled(),
                standard_size_max: leaf.standard_size_max(),
                compacted_size_enabled: leaf.compacted_size_enabled(),
            },
            anomalies,
        };
        let (u, all) = (user.bits() & !0b11, (user | supervisor).bits() & !0b11);
        l.packed_memo = [(u, l.packed_walk(u)), (all, l.packed_walk(all))];
        for (k, m) in [u, all].into_iter().enumerate() {
            for c in Xfeatures(m).iter() {
                l.packed_offsets[k][c.index() as usize] = l.compacted_offset(c, Xfeatures(m)).unwrap_or(0);
            }
        }
        Ok(l)
    }

    /// Builds a layout from an explicit component table (for tests, policies and records that
    /// carry their own layout). x87 is always added and SSE when listed; components 2..=62 take
    /// their class from `Geometry::supervisor`. The reported sizes are set to the computed ones
    /// for every component enabled.
    pub fn from_components(
        features: XsaveFeatures,
        components: impl IntoIterator<Item = (Component, Geometry)>,
    ) -> Result<Layout, LayoutError> {
        let mut leaf = Leaf0d::new();
        let mut user = 1u64;
        let mut sup = 0u64;
        for (c, g) in components {
            if c.is_legacy() {
                user |= c.bit();
                continue;
            }
            if g.supervisor {
                sup |= c.bit();
            } else {
                user |= c.bit();
            }
            let ecx = u32::from(g.supervisor) | u32::from(g.align64) << 1 | u32::from(g.xfd) << 2;
            leaf.set(c.index(), Regs::new(g.size, g.offset, ecx, 0));
        }
        leaf.set(0, Regs::new(user as u32, 0, 0, (user >> 32) as u32));
        leaf.set(1, Regs::new(features.0, 0, sup as u32, (sup >> 32) as u32));
        let mut l = Layout::from_leaf0d(&leaf)?;
        let std = l.standard_size_max();
        let compacted = if features.compaction() { l.compacted_size(l.user | l.supervisor).unwrap_or(0) } else { 0 };
        l.reported = Reported { standard_size_enabled: std, standard_size_max: std, compacted_size_enabled: compacted };
        Ok(l)
    }

    /// Leaf 0xD as this CPU would report it with `xcr0` in XCR0 and `xss` in IA32_XSS: the
    /// static fields from the layout, 0xD.0 EBX and 0xD.1 EBX computed (the latter only with
    /// XSAVEC or XSAVES, else 0). Bits the layout does not support are ignored.
    pub fn to_leaf0d(&self, xcr0: Xfeatures, xss: Xfeatures) -> Leaf0d {
        let mut leaf = Leaf0d::new();
        let u = self.user.bits();
        let s = self.supervisor.bits();
        let xcr0 = xcr0 & self.user;
        let xss = xss & self.supervisor;
        let ebx0 = self.standard_size(xcr0).unwrap_or(0);
        let ebx1 = if self.features.compaction() { self.compacted_size(xcr0 | xss).unwrap_or(0) } else { 0 };
        leaf.set(0, Regs::new(u as u32, ebx0, self.max_standard, (u >> 32) as u32));
        leaf.set(1, Regs::new(self.features.0, ebx1, s as u32, (s >> 32) as u32));
        for c in self.supported().iter().filter(|c| !c.is_legacy()) {
            let g = self.geometry[c.index() as usize];
            let ecx = u32::from(g.supervisor) | u32::from(g.align64) << 1 | u32::from(g.xfd) << 2;
            leaf.set(c.index(), Regs::new(g.size, g.offset, ecx, 0));
        }
        leaf
    }

    /// User components XCR0 may enable (0xD.0 EDX:EAX).
    pub fn user_supported(&self) -> Xfeatures {
        self.user
    }

    /// Supervisor components IA32_XSS may enable (0xD.1 EDX:ECX).
    pub fn supervisor_supported(&self) -> Xfeatures {
        self.supervisor
    }

    /// Every component the CPU enumerates.
    pub fn supported(&self) -> Xfeatures {
        self.user | self.supervisor
    }

    /// The XSAVE instruction features (0xD.1 EAX).
    pub fn features(&self) -> XsaveFeatures {
        self.features
    }

    /// The sizes the source reported (0xD.0 EBX/ECX, 0xD.1 EBX).
    pub fn reported(&self) -> Reported {
        self.reported
    }

    /// True if `other` is the same CPU geometry: equal in everything but the two sizes CPUID
    /// reports for the masks enabled when it was read (0xD.0 EBX for XCR0, 0xD.1 EBX for XCR0 |
    /// IA32_XSS; SDM Vol. 2A, CPUID leaf 0DH), which differ between the vCPUs of one guest
    /// whose XCR0s differ (a vCPU still in its reset state reports 576).
    pub fn same_geometry(&self, other: &Layout) -> bool {
        let fixed = |l: &Layout| Reported { standard_size_enabled: 0, compacted_size_enabled: 0, ..l.reported };
        self.user == other.user
            && self.supervisor == other.supervisor
            && self.features == other.features
            && self.geometry == other.geometry
            && self.recognised == other.recognised
            && self.anomalies == other.anomalies
            && fixed(self) == fixed(other)
    }

    /// Notes about the source that do not prevent its use.
    pub fn anomalies(&self) -> &[Anomaly] {
        &self.anomalies
    }

    /// Two components of `mask` this layout places over each other in the standard format, if
    /// any ([`Anomaly::Overlap`]). No CPU enables such a pair (APX and MPX overlap by design and
    /// are never enabled together), so a layout that does describes no CPU for that mask: a
    /// damaged dump or snapshot CPUID.
    pub fn overlap_in(&self, mask: Xfeatures) -> Option<(Component, Component)> {
        self.anomalies.iter().find_map(|a| match *a {
            Anomaly::Overlap(x, y) if mask.contains(x) && mask.contains(y) => Some((x, y)),
            _ => None,
        })
    }

    /// Geometry of a supported component (x87 and SSE get their legacy-region extents).
    #[inline]
    pub fn geometry(&self, c: Component) -> Option<Geometry> {
        self.supported().contains(c).then(|| self.geometry[c.index() as usize])
    }

    /// [`Layout::geometry`] without the check that `c` is supported: all zero for a component
    /// the CPU does not enumerate. For walks over masks already checked against the layout.
    #[inline(always)]
    pub(crate) fn geometry_of(&self, c: Component) -> &Geometry {
        &self.geometry[c.index() as usize]
    }

    /// True if the component's size matches the catalogue (or the catalogue fixes none), so its
    /// catalogue name and register decoding apply. False for e.g. Zen 2's 64-byte bit 9.
    pub fn recognised(&self, c: Component) -> bool {
        self.recognised & c.bit() != 0
    }

    /// The name to show for a component on this CPU: the catalogue name when recognised,
    /// `component N` otherwise.
    pub fn name(&self, c: Component) -> String {
        if self.recognised(c) { alloc::format!("{}", c.name()) } else { alloc::format!("component {}", c.index()) }
    }

    /// Byte range of a supported user component in a standard image. x87 and SSE give their
    /// [`Geometry`] extents; see [`Component::legacy_ranges`] for their exact bytes.
    #[inline]
    pub fn standard_range(&self, c: Component) -> Option<Range<usize>> {
        if !self.user.contains(c) {
            return None;
        }
        let g = self.geometry[c.index() as usize];
        Some(g.offset as usize..(g.offset + g.size) as usize)
    }

    /// The supported user components above SSE in the order they sit in a standard image
    /// (by offset: LWP and APX are not in index order).
    pub fn standard_order(&self) -> &[Component] {
        &self.by_offset
    }

    /// True when the standard offsets of the supported user components rise with their index,
    /// as on every CPU without LWP or APX.
    pub fn standard_offsets_in_index_order(&self) -> bool {
        self.offsets_in_index_order
    }

    /// Standard size with every supported user component enabled: what 0xD.0 ECX should say.
    pub fn standard_size_max(&self) -> u32 {
        self.max_standard
    }

    /// Size of a standard-format image for the user components in `mask` (SDM Vol. 1 §13.4.3):
    /// the largest offset + size over them, at least 576; 0 for the empty mask (Xen's
    /// non-architectural "no state"). Not the end of the highest-numbered component (LWP and
    /// APX sit out of order) and not a sum of sizes (holes remain). Supported supervisor bits
    /// are ignored; `None` if `mask` holds a bit the CPU does not enumerate (bit 63 included).
    #[inline]
    pub fn standard_size(&self, mask: Xfeatures) -> Option<u32> {
        let m = mask.bits();
        if m & !(self.user.bits() | self.supervisor.bits()) != 0 {
            return None;
        }
        if m & self.user.bits() == 0 {
            return Some(0);
        }
        if m & self.user.bits() == self.user.bits() {
            return Some(self.max_standard);
        }
        for &(i, end) in &self.by_end {
            if m >> i & 1 != 0 {
                return Some(end);
            }
        }
        Some(EXTENDED_OFFSET as u32)
    }

    /// Offset of `c` in a compacted image whose XCOMP_BV is `xcomp_bv` (bit 63 is ignored).
    /// Components are packed from 576 in ascending bit order, each rounded up to 64 first if
    /// align64 is set (SDM Vol. 1 §13.4.3). x87 and SSE keep their legacy offsets. `None` if `c`
    /// is not in XCOMP_BV or XCOMP_BV holds a bit the CPU does not enumerate.
    #[inline]
    pub fn compacted_offset(&self, c: Component, xcomp_bv: Xfeatures) -> Option<u32> {
        let m = xcomp_bv.bits() & !(1 << 63);
        if m & c.bit() == 0 || m & !self.supported().bits() != 0 {
            return None;
        }
        if c.is_legacy() {
            return Some(self.geometry[c.index() as usize].offset);
        }
        let end = self.packed_end(m & (c.bit() - 1));
        Some(if self.align64 & c.bit() != 0 { round64(end) } else { end })
    }

    /// Total size of the components in `m` (supported, above SSE assumed), without alignment.
    #[inline]
    fn sum_sizes(&self, mut m: u64) -> u32 {
        let mut total = 0;
        while m != 0 {
            let k = (m.trailing_zeros() / 4) as usize;
            total += self.nibble_sums[k][((m >> (4 * k)) & 0xF) as usize];
            m &= !(0xF << (4 * k));
        }
        total
    }

    /// End of the last of the components in `m` when packed from 576 in ascending order with
    /// align64 rounding: the compacted size of `m` (SDM Vol. 1 §13.4.3).
    #[inline]
    fn packed_end(&self, m: u64) -> u32 {
        let m = m & !0b11;
        for &(mask, end) in &self.packed_memo {
            if m == mask {
                return end;
            }
        }
        self.packed_walk(m)
    }

    /// The compacted offsets of every component for XCOMP_BV `xcomp_bv` when it lays out every
    /// user component or every component (the images XSAVEC and XSAVES write with everything
    /// enabled), from a table built with the layout; `None` for other masks.
    #[inline(always)]
    pub(crate) fn compacted_offsets(&self, xcomp_bv: Xfeatures) -> Option<&[u32; 64]> {
        let m = xcomp_bv.bits() & !(1 << 63) & !0b11;
        (0..2).find(|&k| self.packed_memo[k].0 == m).map(|k| &self.packed_offsets[k])
    }

    /// [`Layout::packed_end`] computed.
    fn packed_walk(&self, m: u64) -> u32 {
        let mut rest = m & !0b11;
        let mut aligned = rest & self.align64;
        let mut off = EXTENDED_OFFSET as u32;
        // Sizes add up between align64 components; each of those rounds the running offset.
        while aligned != 0 {
            let i = aligned.trailing_zeros();
            let before = rest & ((1u64 << i) - 1);
            off = round64(off + self.sum_sizes(before)) + self.geometry[i as usize].size;
            rest &= !((2u64 << i) - 1);
            aligned &= aligned - 1;
        }
        off + self.sum_sizes(rest)
    }

    /// Size of a compacted image whose XCOMP_BV is `xcomp_bv` (bit 63 ignored): the end of the
    /// last component, or 576 if there is none. `None` if XCOMP_BV holds a bit the CPU does not
    /// enumerate.
    #[inline]
    pub fn compacted_size(&self, xcomp_bv: Xfeatures) -> Option<u32> {
        let m = xcomp_bv.bits() & !(1 << 63);
        if m & !self.supported().bits() != 0 {
            return None;
        }
        Some(self.packed_end(m))
    }

    /// The compacted placement of every component of `xcomp_bv` above SSE, ascending:
    /// `(component, offset, size)`. `None` if XCOMP_BV holds a bit the CPU does not enumerate.
    pub fn compacted_components(&self, xcomp_bv: Xfeatures) -> Option<Vec<(Component, u32, u32)>> {
        let m = xcomp_bv.bits() & !(1 << 63);
        if m & !self.supported().bits() != 0 {
            return None;
        }
        let mut off = EXTENDED_OFFSET as u32;
        let mut out = Vec::new();
        for c in Xfeatures(m & !0b11).iter() {
            let g = self.geometry[c.index() as usize];
            if g.align64 {
                off = round64(off);
            }
            out.push((c, off, g.size));
            off += g.size;
        }
        Some(out)
    }

    /// Byte ranges of the extended region of a standard image for `mask` that no enabled
    /// component covers (e.g. Intel's 0x340..0x3C0 before MPX, or 0x340..0xA80 on clients with
    /// PKRU but no AVX-512). `None` if `mask` holds a bit the CPU does not enumerate.
    pub fn holes(&self, mask: Xfeatures) -> Option<Vec<Range<u32>>> {
        let end = self.standard_size(mask)?;
        let mut spans: Vec<(u32, u32)> = (mask & self.user)
            .iter()
            .filter(|c| !c.is_legacy())
            .map(|c| {
                let g = self.geometry[c.index() as usize];
                (g.offset, g.offset + g.size)
            })
            .collect();
        spans.sort_unstable();
        let mut holes = Vec::new();
        let mut at = EXTENDED_OFFSET as u32;
        for (s, e) in spans {
            if s > at {
                holes.push(at..s);
            }
            at = at.max(e);
        }
        if end > at {
            holes.push(at..end);
        }
        Some(holes)
    }

    /// Cross-checks the sizes the source reported against the computed ones (see
    /// [`SizeCheck`]). `xcr0`/`xss` are the values in force when the source was read, if known
    /// (the host: XGETBV; a dump: unknown, so they are inferred).
    pub fn cross_check(&self, xcr0: Option<Xfeatures>, xss: Option<Xfeatures>) -> Vec<SizeCheck> {
        check::cross_check(self, xcr0, xss)
    }

    /// The supported components with align64 set (CPUID 0xD.i ECX\[1\]).
    pub fn align64_components(&self) -> Xfeatures {
        Xfeatures(self.align64)
    }
}

#[cfg(test)]
mod tests;
