//! Layouts from incomplete enumerations: dumps whose leaf 0xD lacks the subleaf of a component
//! the CPU enumerates (old AIDA64 builds omit PT, MPX, PKRU or even AVX; corpora report).
//!
//! [`Layout::from_leaf0d`] refuses such a leaf: it cannot place the component. A dump is still
//! a faithful record of every other component, so [`Layout::from_leaf0d_partial`] builds the
//! layout with the unplaceable components left out, as if a policy masked them, and names
//! them: [`Partial::omitted`]. Anything that needs one of them (an XCR0 that enables it, a
//! migration verdict about it) must refuse through [`Partial::require`] rather than answer
//! for state it could not place.

use alloc::vec::Vec;

use super::{Layout, LayoutError};
use crate::component::Component;
use crate::cpuid::{Leaf0d, Regs};
use crate::xfeatures::Xfeatures;

/// A layout with the components whose geometry the enumeration did not give left out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Partial {
    /// The layout of every component that could be placed.
    pub layout: Layout,
    /// Components the CPU enumerates (0xD.0 EDX:EAX or 0xD.1 EDX:ECX) whose subleaf is missing
    /// or all zero: the layout does not have them.
    pub omitted: Xfeatures,
}

impl Partial {
    /// True when every enumerated component was placed.
    pub fn is_complete(&self) -> bool {
        self.omitted.is_empty()
    }

    /// `Ok` when `mask` needs no omitted component; else the first such component as the
    /// error [`Layout::from_leaf0d`] gives for it.
    pub fn require(&self, mask: Xfeatures) -> Result<&Layout, LayoutError> {
        match (mask & self.omitted).iter().next() {
            Some(component) => Err(LayoutError::MissingSubleaf { component }),
            None => Ok(&self.layout),
        }
    }

    /// One line per omitted component, for notes.
    pub fn notes(&self) -> Vec<alloc::string::String> {
        self.omitted
            .iter()
            .map(|c| {
                alloc::format!(
                    "component {} ({}) is enumerated but CPUID 0xD subleaf {} is missing: left out of this layout",
                    c.index(),
                    c.name(),
                    c.index()
                )
            })
            .collect()
    }
}

impl Layout {
    /// [`Layout::from_leaf0d`], leaving out components whose subleaf is missing or all zero
    /// (and only those: every other defect is still an error). A leaf without XSAVE is still
    /// [`LayoutError::XsaveNotEnumerated`].
    pub fn from_leaf0d_partial(leaf: &Leaf0d) -> Result<Partial, LayoutError> {
        let mut leaf = *leaf;
        let mut omitted = Xfeatures::EMPTY;
        // Each round removes one component; there are at most 63.
        for _ in 0..64 {
            match Layout::from_leaf0d(&leaf) {
                Ok(layout) => return Ok(Partial { layout, omitted }),
                Err(LayoutError::MissingSubleaf { component }) if component != Component::X87 => {
                    omitted = omitted.with(component);
                    drop_component(&mut leaf, component);
                }
                Err(e) => return Err(e),
            }
        }
        Err(LayoutError::XsaveNotEnumerated)
    }
}

/// Clears `c` from the supported masks of 0xD.0 (EDX:EAX) and 0xD.1 (EDX:ECX).
fn drop_component(leaf: &mut Leaf0d, c: Component) {
    let bit = !c.bit();
    let r = leaf.get(0);
    let m = (u64::from(r.edx) << 32 | u64::from(r.eax)) & bit;
    leaf.set(0, Regs::new(m as u32, r.ebx, r.ecx, (m >> 32) as u32));
    let r = leaf.get(1);
    let m = (u64::from(r.edx) << 32 | u64::from(r.ecx)) & bit;
    leaf.set(1, Regs::new(r.eax, r.ebx, m as u32, (m >> 32) as u32));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{INTEL_SKYLAKE_SP, leaf0d};

    #[test]
    fn a_missing_subleaf_is_left_out_and_named() {
        let mut leaf = leaf0d(INTEL_SKYLAKE_SP);
        assert!(Layout::from_leaf0d_partial(&leaf).unwrap().is_complete());
        leaf.set(3, Regs::default()); // BNDREGS' subleaf lost by the dump tool
        assert_eq!(Layout::from_leaf0d(&leaf), Err(LayoutError::MissingSubleaf { component: Component::BNDREGS }));
        let p = Layout::from_leaf0d_partial(&leaf).unwrap();
        assert_eq!(p.omitted, Xfeatures::EMPTY.with(Component::BNDREGS));
        assert!(!p.layout.user_supported().contains(Component::BNDREGS));
        assert_eq!(p.layout.standard_range(Component::OPMASK), Some(0x440..0x480), "others keep their place");
        assert!(p.require(Xfeatures(0xE7)).is_ok());
        assert_eq!(p.require(Xfeatures(0xFF)), Err(LayoutError::MissingSubleaf { component: Component::BNDREGS }));
        assert_eq!(p.notes().len(), 1);
    }

    #[test]
    fn no_xsave_is_still_an_error() {
        assert_eq!(Layout::from_leaf0d_partial(&Leaf0d::default()), Err(LayoutError::XsaveNotEnumerated));
    }
}
