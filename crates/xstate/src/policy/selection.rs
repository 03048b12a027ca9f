//! What a guest is to be given: components by feature name or as raw XCR0/XSS masks, and the
//! XSAVE instruction features of CPUID 0xD.1 EAX (default: the host's).

use alloc::string::ToString;

use super::PolicyError;
use super::feature::{Feature, FeatureSet};
use crate::xfeatures::Xfeatures;

/// The state components a selection asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Components {
    /// Every component the host enumerates, less the features listed in
    /// [`Selection::without`]. Supervisor components are included only when XSAVES is exposed.
    All,
    /// x87, SSE and the components of these features.
    Features(FeatureSet),
    /// Raw masks: XCR0's maximum and IA32_XSS's maximum, taken as given (x87 must be in it).
    Masks {
        /// The guest's maximum XCR0 (CPUID 0xD.0 EDX:EAX).
        xcr0: Xfeatures,
        /// The guest's maximum IA32_XSS (CPUID 0xD.1 EDX:ECX).
        xss: Xfeatures,
    },
}

/// A feature selection: components and XSAVE instruction features.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Selection {
    /// The components.
    pub components: Components,
    /// The instruction features (CPUID 0xD.1 EAX) to expose; `None` means the host's.
    pub instructions: Option<FeatureSet>,
    /// Features taken away: instruction features from the host's default, component features
    /// from [`Components::All`] or [`Components::Features`].
    pub without: FeatureSet,
}

impl Selection {
    /// Everything the host has.
    pub const fn all() -> Selection {
        Selection { components: Components::All, instructions: None, without: FeatureSet::EMPTY }
    }

    /// x87, SSE and the components of `features`; instruction features listed among them
    /// replace the host's default.
    pub fn features(features: impl IntoIterator<Item = Feature>) -> Selection {
        let set: FeatureSet = features.into_iter().collect();
        let components: FeatureSet = set.iter().filter(|f| !f.is_instruction()).collect();
        let instructions: FeatureSet = set.iter().filter(|f| f.is_instruction()).collect();
        Selection {
            components: Components::Features(components),
            instructions: (!instructions.is_empty()).then_some(instructions),
            without: FeatureSet::EMPTY,
        }
    }

    /// Raw XCR0 and IA32_XSS maxima.
    pub const fn masks(xcr0: Xfeatures, xss: Xfeatures) -> Selection {
        Selection { components: Components::Masks { xcr0, xss }, instructions: None, without: FeatureSet::EMPTY }
    }

    /// The same selection exposing exactly these instruction features (component features in
    /// `set` are ignored).
    pub fn with_instructions(mut self, set: FeatureSet) -> Selection {
        self.instructions = Some(set.iter().filter(|f| f.is_instruction()).collect());
        self
    }

    /// The same selection without `f`.
    pub fn without(mut self, f: Feature) -> Selection {
        self.without = self.without.with(f);
        self
    }

    /// Parses a feature list: names separated by commas or spaces. `all` stands for everything
    /// the host has; `x87` and `sse` are accepted and always on; a name prefixed with `-` or
    /// `no-` is taken away (`all,-amx`, `avx,avx512,-xsaves`; removals alone take from `all`:
    /// `-amx` is `all,-amx`). Instruction features named without a prefix replace the host's
    /// default; with one they are removed from it.
    pub fn parse(list: &str) -> Result<Selection, PolicyError> {
        let mut all = false;
        let mut add = FeatureSet::EMPTY;
        let mut remove = FeatureSet::EMPTY;
        let mut named = false;
        if list.split(|c: char| c == ',' || c.is_whitespace()).all(str::is_empty) {
            return Err(PolicyError::EmptyList);
        }
        for token in list.split(|c: char| c == ',' || c.is_whitespace()).filter(|t| !t.is_empty()) {
            let (negated, name) = match token.strip_prefix('-').or_else(|| token.strip_prefix("no-")) {
                Some(n) => (true, n),
                None => (false, token),
            };
            if name.eq_ignore_ascii_case("all") && !negated {
                all = true;
                continue;
            }
            if name.eq_ignore_ascii_case("x87") || name.eq_ignore_ascii_case("sse") {
                if negated {
                    return Err(PolicyError::AlwaysOn { name: name.to_string() });
                }
                named = true;
                continue;
            }
            let f = Feature::from_name(name).ok_or_else(|| PolicyError::UnknownFeature { name: name.to_string() })?;
            if negated {
                remove = remove.with(f);
            } else {
                add = add.with(f);
                named = true;
            }
        }
        // Removals with nothing named take from everything, as after `all`.
        let mut s = if all || (!named && !remove.is_empty()) {
            let mut s = Selection::all();
            let instructions: FeatureSet = add.iter().filter(|f| f.is_instruction()).collect();
            s.instructions = (!instructions.is_empty()).then_some(instructions);
            s
        } else {
            Selection::features(add.iter())
        };
        s.without = remove;
        Ok(s)
    }
}

impl Default for Selection {
    fn default() -> Self {
        Selection::all()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Feature::*;

    #[test]
    fn parses_lists() {
        let s = Selection::parse("avx, avx512 xsavec").unwrap();
        assert_eq!(s.components, Components::Features([Avx, Avx512].into_iter().collect()));
        assert_eq!(s.instructions, Some([Xsavec].into_iter().collect()));
        let s = Selection::parse("all,-amx,no-xsaves").unwrap();
        assert_eq!(s.components, Components::All);
        assert_eq!(s.instructions, None);
        assert_eq!(s.without, [Amx, Xsaves].into_iter().collect());
        let s = Selection::parse("x87,sse").unwrap();
        assert_eq!(s.components, Components::Features(FeatureSet::EMPTY));
        assert_eq!(s.instructions, None);
        assert_eq!(Selection::parse("").unwrap_err(), PolicyError::EmptyList);
        assert_eq!(Selection::parse(" , ").unwrap_err(), PolicyError::EmptyList);
        assert_eq!(
            Selection::parse("avx,avx1024").unwrap_err(),
            PolicyError::UnknownFeature { name: "avx1024".to_string() }
        );
        assert!(matches!(Selection::parse("-sse"), Err(PolicyError::AlwaysOn { .. })));
    }

    /// Taking away with nothing given starts from everything, as `all,-x` does: `-avx512`
    /// alone meant "x87 and SSE only" (nothing was added, so nothing was left to take from).
    #[test]
    fn removals_alone_take_from_everything() {
        for (list, without) in [("-avx512", &[Avx512][..]), ("no-amx,-pku", &[Amx, Pku]), ("-xsaves", &[Xsaves])] {
            let s = Selection::parse(list).unwrap();
            assert_eq!(s.components, Components::All, "{list}");
            assert_eq!(s.instructions, None, "{list}");
            assert_eq!(s.without, without.iter().copied().collect(), "{list}");
            assert_eq!(s, Selection::parse(&alloc::format!("all,{list}")).unwrap(), "{list}");
        }
        // A component given makes the list the selection: removals take from it.
        let s = Selection::parse("avx,-xsaves").unwrap();
        assert_eq!(s.components, Components::Features([Avx].into_iter().collect()));
    }
}
