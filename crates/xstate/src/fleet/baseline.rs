//! The baseline: the largest guest policy every host of a fleet runs, what each host gives up
//! for it, and where the hosts put its components.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use core::fmt;

use super::gating::{self, GateState, GatedLeafState};
use super::{Host, Offer};
use crate::component::Component;
use crate::layout::Layout;
use crate::policy::{Feature, FeatureSet, Policy, PolicyError, Selection};
use crate::xcr0::largest_valid_xcr0;
use crate::xfeatures::Xfeatures;

/// Why no baseline could be computed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BaselineError {
    /// No host was given.
    NoHosts,
    /// Every host dropped out (no XSAVE, or lacking a required feature).
    AllDropped {
        /// The required features, with what they need.
        require: FeatureSet,
    },
    /// The baseline's masks do not make a policy on the reference host (a layout this module
    /// cannot reduce; not expected from real CPUs).
    Policy(PolicyError),
}

impl fmt::Display for BaselineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BaselineError::NoHosts => f.write_str("no hosts given"),
            BaselineError::AllDropped { require } if require.is_empty() => {
                f.write_str("no host enumerates XSAVE: there is no XSAVE guest policy to level")
            }
            BaselineError::AllDropped { require } => {
                write!(f, "no host has XSAVE and {require} (with its components placed): no baseline")
            }
            BaselineError::Policy(e) => write!(f, "baseline policy: {e}"),
        }
    }
}

impl core::error::Error for BaselineError {}

/// Why a host is not covered by the baseline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Drop {
    /// It does not enumerate XSAVE: no XSAVE guest runs there.
    NoXsave,
    /// It lacks (some of) a required feature's components, or the instruction feature.
    Lacks {
        /// The feature.
        feature: Feature,
        /// Its components the host lacks (empty for an instruction feature).
        missing: Xfeatures,
    },
    /// Its CPUID source does not place a required feature's component (a dump missing the
    /// subleaf): whether it can run it is unknown.
    Unplaced {
        /// The feature.
        feature: Feature,
        /// The components without a place.
        components: Xfeatures,
    },
    /// It enumerates the component with another size than the feature's (AMD Zen 2's 64-byte
    /// bit 9 is not PKRU).
    NotRecognised {
        /// The feature.
        feature: Feature,
        /// The component.
        component: Component,
        /// Its size there.
        size: u32,
    },
}

impl fmt::Display for Drop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Drop::NoXsave => f.write_str("no XSAVE (CPUID 0xD.0 is all zero)"),
            Drop::Lacks { feature, missing } if missing.is_empty() => {
                write!(f, "lacks {feature} (CPUID 0xD.1 EAX)")
            }
            Drop::Lacks { feature, missing } => write!(f, "lacks {feature} ({})", missing.names()),
            Drop::Unplaced { feature, components } => write!(
                f,
                "{feature} unknown: its CPUID source lacks the subleaf of {} (its place is unknown)",
                components.names()
            ),
            Drop::NotRecognised { feature, component, size } => write!(
                f,
                "its component {} is {size} bytes, not {feature}'s {}",
                component.index(),
                component.info().and_then(|i| i.size).unwrap_or(0)
            ),
        }
    }
}

/// What a host covered by the baseline gives up, against everything it could give a guest
/// alone.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GiveUp {
    /// Components it offers that the baseline lacks.
    pub components: Xfeatures,
    /// Instruction features it has that the baseline lacks.
    pub instructions: FeatureSet,
    /// Gating flags it has set that the baseline must clear (indices into
    /// [`Baseline::gates`]).
    pub flags: Vec<usize>,
    /// Baseline components it puts elsewhere than the chosen class ([`Baseline::classes`]\[0\]):
    /// the baseline's leaf 0xD is not true there.
    pub relayout: Xfeatures,
}

/// One input host in the baseline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostResult {
    /// Not covered.
    Dropped(Drop),
    /// Covered.
    Kept {
        /// Its offset class (an index into [`Baseline::classes`]; 0 is the chosen one).
        class: usize,
        /// What it gives up.
        gives_up: GiveUp,
    },
}

/// Where a group of hosts puts one component.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Place {
    /// The standard offset (CPUID 0xD.i EBX); `None` for a supervisor component, which has none.
    pub offset: Option<u32>,
    /// The 64-byte alignment in compacted images (ECX\[1\]) where the baseline exposes XSAVEC
    /// or XSAVES, so compacted offsets depend on it; `None` otherwise.
    pub align64: Option<bool>,
    /// The hosts (indices into the input).
    pub hosts: Vec<usize>,
}

/// One component of the baseline and the places the hosts give it, most hosts first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    /// The component.
    pub component: Component,
    /// Its size (the same on every host, or it would not be in the baseline).
    pub size: u32,
    /// The places; one means the same on every host.
    pub places: Vec<Place>,
}

/// Hosts that put every component of the baseline at the same place, so one leaf 0xD is true
/// on all of them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OffsetClass {
    /// The hosts (indices into the input), ascending.
    pub hosts: Vec<usize>,
    /// Components placed otherwise than in class 0 (empty for class 0).
    pub moved: Xfeatures,
    /// The baseline's policy derived from this class's first host: its leaf 0xD.
    pub policy: Policy,
}

/// The largest masks one leaf 0xD serves on every host: the baseline less the feature groups
/// (and their dependents) that sit at more than one place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OneLeaf {
    /// XCR0 maximum.
    pub xcr0: Xfeatures,
    /// IA32_XSS maximum.
    pub xss: Xfeatures,
    /// What the baseline loses for it.
    pub dropped: Xfeatures,
}

/// Why a feature some host offers is not in the baseline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limit {
    /// The feature; `None` for a component no policy feature names.
    pub feature: Option<Feature>,
    /// Its components (empty for an instruction feature).
    pub components: Xfeatures,
    /// Hosts of the baseline that lack it.
    pub lacked: Vec<usize>,
    /// Hosts of the baseline whose source does not place it (a dump missing its subleaf).
    pub unplaced: Vec<usize>,
    /// Where the hosts disagree on a component's size: `(component, size, hosts)`.
    pub sizes: Vec<(Component, u32, Vec<usize>)>,
    /// A prerequisite the baseline lacks (supervisor state needs XSAVES, AVX-512 needs AVX),
    /// or the feature it excludes (APX and MPX share standard-format space).
    pub needs: Option<Feature>,
}

/// The baseline of a fleet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Baseline {
    /// The features required of every host (hosts without them dropped out).
    pub require: FeatureSet,
    /// One per input host, in input order.
    pub hosts: Vec<HostResult>,
    /// The guest's maximum XCR0.
    pub xcr0: Xfeatures,
    /// The guest's maximum IA32_XSS.
    pub xss: Xfeatures,
    /// The guest's XSAVE instruction features (CPUID 0xD.1 EAX).
    pub instructions: FeatureSet,
    /// Each baseline component above SSE, ascending, with its places.
    pub components: Vec<Placement>,
    /// The offset classes, most hosts first (ties: the class of the earliest host); class 0 is
    /// the choice that keeps the most hosts on one leaf 0xD.
    pub classes: Vec<OffsetClass>,
    /// The largest masks one leaf 0xD serves on every host.
    pub one_leaf: OneLeaf,
    /// Why each feature some host offers is left out.
    pub limits: Vec<Limit>,
    /// The gating flags and whether the baseline exposes them.
    pub gates: Vec<GateState>,
    /// The gated leaves and whether the baseline exposes them.
    pub gated_leaves: Vec<GatedLeafState>,
}

impl Baseline {
    /// The baseline's policy: derived from the first host of the chosen class.
    pub fn policy(&self) -> &Policy {
        &self.classes[0].policy
    }

    /// The class of input host `i`, or `None` if it dropped out.
    pub fn class_of(&self, i: usize) -> Option<usize> {
        match self.hosts.get(i)? {
            HostResult::Kept { class, .. } => Some(*class),
            HostResult::Dropped(_) => None,
        }
    }

    /// The hosts the baseline covers (input indices).
    pub fn kept(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.hosts.len()).filter(|&i| self.class_of(i).is_some())
    }

    /// The placement of a baseline component above SSE.
    pub fn placement(&self, c: Component) -> Option<&Placement> {
        self.components.iter().find(|p| p.component == c)
    }
}

/// The features `require` names with everything they need (AVX-512 needs AVX; supervisor
/// features need XSAVES, which needs XSAVEC).
fn closure(require: FeatureSet) -> FeatureSet {
    let mut set = require;
    loop {
        let next = set.iter().fold(set, |s, f| f.requires().iter().fold(s, |s, p| s.with(*p)));
        if next == set {
            return set;
        }
        set = next;
    }
}

/// Why host `h` cannot run feature `f`, if it cannot.
fn lacks(h: &Host, offer: &Offer, f: Feature) -> Option<Drop> {
    let Some(l) = &h.layout else { return Some(Drop::NoXsave) };
    if f.is_instruction() {
        return (!offer.instructions.contains(f)).then_some(Drop::Lacks { feature: f, missing: Xfeatures::EMPTY });
    }
    let comps = f.components();
    let unplaced = comps & h.omitted;
    if !unplaced.is_empty() {
        return Some(Drop::Unplaced { feature: f, components: unplaced });
    }
    let missing = comps - (offer.xcr0 | offer.xss);
    if !missing.is_empty() {
        return Some(Drop::Lacks { feature: f, missing });
    }
    let c = comps.iter().find(|c| !l.recognised(*c))?;
    Some(Drop::NotRecognised { feature: f, component: c, size: l.geometry(c).map_or(0, |g| g.size) })
}

/// `m` widened to whole feature groups and what depends on them (AVX takes AVX-512), so that
/// what is left keeps the XCR0 rules.
fn widen(m: Xfeatures) -> Xfeatures {
    let mut w = m;
    for c in m.iter() {
        if let Some(f) = Feature::of_component(c.index()) {
            w |= f.components();
        }
    }
    if w.contains(Component::AVX) {
        w |= Feature::Avx512.components();
    }
    w - Xfeatures::LEGACY
}

/// The layout of a kept host (kept hosts have one).
fn layout(h: &Host) -> &Layout {
    h.layout.as_ref().expect("kept hosts have a layout")
}

/// Computes the baseline of `hosts` with the features of `require` (and what they need)
/// required of every host.
///
/// The rules, in order: a host without XSAVE, or lacking a required feature (or whose source
/// cannot place it), drops out, named ([`Drop`]). Over the rest, the guest gets the components
/// every host offers ([`Host::offer`]: the largest valid XCR0 within its supported mask, its
/// supervisor components where it has XSAVES) whose size is the same on every host, within the
/// XCR0 rules ([`largest_valid_xcr0`]), and the instruction features every host has; supervisor
/// state only with XSAVES. The hosts are then grouped by where they put each component
/// ([`Placement`]) and by all of them at once ([`OffsetClass`]); the largest class gives the
/// baseline's leaf 0xD ([`Policy::derive`] on its first host).
pub fn baseline(hosts: &[Host], require: FeatureSet) -> Result<Baseline, BaselineError> {
    if hosts.is_empty() {
        return Err(BaselineError::NoHosts);
    }
    let required = closure(require);
    let offers: Vec<Offer> = hosts.iter().map(Host::offer).collect();
    let mut results: Vec<Option<Drop>> = Vec::with_capacity(hosts.len());
    for (h, o) in hosts.iter().zip(&offers) {
        let drop = match &h.layout {
            None => Some(Drop::NoXsave),
            Some(_) => required.iter().find_map(|f| lacks(h, o, f)),
        };
        results.push(drop);
    }
    let kept: Vec<usize> = (0..hosts.len()).filter(|&i| results[i].is_none()).collect();
    if kept.is_empty() {
        return Err(BaselineError::AllDropped { require: required });
    }

    // Features: what every kept host offers.
    let mut xcr0 = Xfeatures::ALL_COMPONENTS;
    let mut xss = Xfeatures::ALL_COMPONENTS;
    let mut instr = offers[kept[0]].instructions;
    for &i in &kept {
        xcr0 &= offers[i].xcr0;
        xss &= offers[i].xss;
        instr = both(instr, offers[i].instructions);
    }
    // Sizes: a component the hosts size differently is not one component.
    let mut sizes: BTreeMap<u8, BTreeMap<u32, Vec<usize>>> = BTreeMap::new();
    for c in (xcr0 | xss).iter().filter(|c| !c.is_legacy()) {
        let by_size = sizes.entry(c.index()).or_default();
        for &i in &kept {
            let g = layout(&hosts[i]).geometry(c).unwrap_or_default();
            by_size.entry(g.size).or_default().push(i);
        }
    }
    let mut differ = Xfeatures::EMPTY;
    for (&i, by_size) in &sizes {
        if by_size.len() > 1 {
            differ = differ.with(Component::new(i).expect("a component index"));
        }
    }
    let differ = widen(differ);
    xcr0 = largest_valid_xcr0(xcr0 - differ);
    xss = xss - differ;
    if instr.contains(Feature::Xsaves) && !instr.contains(Feature::Xsavec) {
        instr = instr.without(Feature::Xsaves);
    }
    if !instr.contains(Feature::Xsaves) {
        xss = Xfeatures::EMPTY;
    }
    let compaction = instr.contains(Feature::Xsavec) || instr.contains(Feature::Xsaves);

    // Layout: where each kept host puts each component.
    type Key = (Option<u32>, Option<bool>);
    let key = |h: &Host, c: Component| -> Key {
        let g = layout(h).geometry(c).unwrap_or_default();
        ((!g.supervisor).then_some(g.offset), compaction.then_some(g.align64))
    };
    let mut components = Vec::new();
    let mut split = Xfeatures::EMPTY;
    for c in (xcr0 | xss).iter().filter(|c| !c.is_legacy()) {
        let places = group(&kept, |i| key(&hosts[i], c));
        if places.len() > 1 {
            split = split.with(c);
        }
        let size = layout(&hosts[kept[0]]).geometry(c).map_or(0, |g| g.size);
        components.push(Placement {
            component: c,
            size,
            places: places.into_iter().map(|(k, hosts)| Place { offset: k.0, align64: k.1, hosts }).collect(),
        });
    }
    let whole = group(&kept, |i| split.iter().map(|c| key(&hosts[i], c)).collect::<Vec<_>>());
    let selection = Selection::masks(xcr0, xss).with_instructions(instr);
    let mut classes: Vec<OffsetClass> = Vec::with_capacity(whole.len());
    let first_key: Vec<Key> = whole[0].0.clone();
    for (k, members) in whole {
        let moved: Xfeatures =
            split.iter().zip(k.iter().zip(&first_key)).filter(|(_, (a, b))| a != b).map(|(c, _)| c).collect();
        let policy = Policy::derive(layout(&hosts[members[0]]), &selection).map_err(BaselineError::Policy)?;
        classes.push(OffsetClass { hosts: members, moved, policy });
    }
    let mut class_of = BTreeMap::new();
    for (k, cl) in classes.iter().enumerate() {
        for &i in &cl.hosts {
            class_of.insert(i, k);
        }
    }
    let dropped = widen(split);
    let one_xcr0 = largest_valid_xcr0(xcr0 - dropped);
    let one_xss = xss - dropped;
    let one_leaf = OneLeaf { xcr0: one_xcr0, xss: one_xss, dropped: (xcr0 | xss) - (one_xcr0 | one_xss) };

    // Gating flags.
    let exposed = xcr0 | xss;
    let gates: Vec<GateState> = gating::gates()
        .into_iter()
        .enumerate()
        .map(|(g, gate)| {
            let values: Vec<Option<bool>> = kept.iter().map(|&i| hosts[i].flags.get(g).copied().flatten()).collect();
            let on_every_host = values.iter().try_fold(true, |all, v| v.map(|v| all && v));
            GateState {
                gate,
                exposed: gate.needs.is_subset_of(exposed),
                on_every_host,
                hosts_with: values.iter().filter(|v| **v == Some(true)).count(),
            }
        })
        .collect();
    let gated_leaves = gating::GATED_LEAVES
        .iter()
        .map(|l| GatedLeafState { leaf: l.leaf, name: l.name, exposed: l.needs.is_subset_of(exposed) })
        .collect();

    // Per host.
    let hosts_out: Vec<HostResult> = (0..hosts.len())
        .map(|i| match results[i] {
            Some(d) => HostResult::Dropped(d),
            None => {
                let class = class_of[&i];
                let o = &offers[i];
                let flags = gates
                    .iter()
                    .enumerate()
                    .filter(|(g, s)| !s.exposed && hosts[i].flags.get(*g).copied().flatten() == Some(true))
                    .map(|(g, _)| g)
                    .collect();
                HostResult::Kept {
                    class,
                    gives_up: GiveUp {
                        components: (o.xcr0 | o.xss) - exposed,
                        instructions: o.instructions.iter().filter(|f| !instr.contains(*f)).collect(),
                        flags,
                        relayout: classes[class].moved,
                    },
                }
            }
        })
        .collect();

    let limits = limits(hosts, &offers, &kept, exposed, instr, &sizes);
    Ok(Baseline {
        require: required,
        hosts: hosts_out,
        xcr0,
        xss,
        instructions: instr,
        components,
        classes,
        one_leaf,
        limits,
        gates,
        gated_leaves,
    })
}

/// The features in both sets.
fn both(a: FeatureSet, b: FeatureSet) -> FeatureSet {
    a.iter().filter(|f| b.contains(*f)).collect()
}

/// Groups `items` by `key`, most members first (ties: the group of the earliest item).
fn group<K: Ord + Clone>(items: &[usize], key: impl Fn(usize) -> K) -> Vec<(K, Vec<usize>)> {
    let mut by: BTreeMap<K, Vec<usize>> = BTreeMap::new();
    for &i in items {
        by.entry(key(i)).or_default().push(i);
    }
    let mut out: Vec<(K, Vec<usize>)> = by.into_iter().collect();
    out.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then(a.1[0].cmp(&b.1[0])));
    out
}

/// Why each feature (or unnamed component) some kept host offers is not in the baseline.
fn limits(
    hosts: &[Host],
    offers: &[Offer],
    kept: &[usize],
    exposed: Xfeatures,
    instr: FeatureSet,
    sizes: &BTreeMap<u8, BTreeMap<u32, Vec<usize>>>,
) -> Vec<Limit> {
    let offered = kept.iter().fold(Xfeatures::EMPTY, |m, &i| m | offers[i].xcr0 | offers[i].xss | hosts[i].omitted);
    let offered_instr = kept.iter().fold(FeatureSet::EMPTY, |s, &i| s.union(offers[i].instructions));
    let mut out = Vec::new();
    let mut named = Xfeatures::EMPTY;
    let mut entries: Vec<(Option<Feature>, Xfeatures)> = Vec::new();
    for f in Feature::ALL {
        if f.is_instruction() {
            if offered_instr.contains(f) && !instr.contains(f) {
                entries.push((Some(f), Xfeatures::EMPTY));
            }
        } else {
            named |= f.components();
            if !(f.components() & offered).is_empty() && !f.components().is_subset_of(exposed) {
                entries.push((Some(f), f.components()));
            }
        }
    }
    for c in (offered - named - Xfeatures::LEGACY - exposed).iter() {
        entries.push((None, Xfeatures::of(c)));
    }
    for (feature, comps) in entries {
        let mut l = Limit {
            feature,
            components: comps,
            lacked: Vec::new(),
            unplaced: Vec::new(),
            sizes: Vec::new(),
            needs: None,
        };
        for &i in kept {
            let have = offers[i].xcr0 | offers[i].xss;
            if comps.is_empty() {
                if let Some(f) = feature
                    && !offers[i].instructions.contains(f)
                {
                    l.lacked.push(i);
                }
            } else if !(comps & hosts[i].omitted).is_empty() {
                l.unplaced.push(i);
            } else if !comps.is_subset_of(have) {
                l.lacked.push(i);
            }
        }
        for c in comps.iter() {
            if let Some(by_size) = sizes.get(&c.index())
                && by_size.len() > 1
            {
                let mut by: Vec<(Component, u32, Vec<usize>)> =
                    by_size.iter().map(|(s, h)| (c, *s, h.clone())).collect();
                by.sort_by_key(|e| e.2[0]);
                l.sizes.extend(by);
            }
        }
        if l.lacked.is_empty() && l.unplaced.is_empty() && l.sizes.is_empty() {
            l.needs =
                feature.and_then(|f| {
                    f.requires()
                        .iter()
                        .copied()
                        .find(|p| {
                            if p.is_instruction() { !instr.contains(*p) } else { !p.components().is_subset_of(exposed) }
                        })
                        .or_else(|| f.excludes().filter(|o| o.components().is_subset_of(exposed)))
                });
        }
        out.push(l);
    }
    out
}
