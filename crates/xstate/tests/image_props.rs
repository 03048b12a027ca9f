//! Properties of conversion and validation over random images on real CPUs' layouts:
//! standard -> compacted -> standard and Intel -> AMD -> Intel preserve the state XRSTOR loads;
//! every conversion output is an image XRSTOR accepts; no input makes anything panic.

use proptest::prelude::*;
use xstate::fixtures::valid_xcr0_values;
use xstate::fixtures::{AMD_ZEN4, INTEL_ICELAKE, INTEL_SAPPHIRE_RAPIDS, INTEL_SKYLAKE_SP, Rows, layout};
use xstate::image::regs::decode;
use xstate::image::state::{State, Values};
use xstate::image::validate::Context;
use xstate::image::{Image, Profile, Target, convert, validate};
use xstate::{Component, Layout, Xfeatures};

const FIXTURES: [Rows; 4] = [INTEL_SKYLAKE_SP, INTEL_ICELAKE, AMD_ZEN4, INTEL_SAPPHIRE_RAPIDS];

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn fill(&mut self, b: &mut [u8]) {
        for x in b {
            *x = self.next() as u8;
        }
    }
}

/// A random standard image valid for XRSTOR with RFBM = `xcr0` (random bytes everywhere, a
/// random XSTATE_BV within XCR0, a 16-bit MXCSR, a clean header).
fn standard_image(l: &Layout, xcr0: Xfeatures, seed: u64) -> Vec<u8> {
    let mut r = Rng(seed | 1);
    let mut img = vec![0u8; l.standard_size(xcr0).unwrap() as usize];
    r.fill(&mut img);
    let mxcsr = if r.next().is_multiple_of(3) { 0x1F80 } else { r.next() as u32 & 0xFFFF };
    img[24..28].copy_from_slice(&mxcsr.to_le_bytes());
    if r.next().is_multiple_of(4) {
        img[160..416].fill(0);
    }
    let bv = r.next() & xcr0.bits();
    img[512..520].copy_from_slice(&bv.to_le_bytes());
    img[520..576].fill(0);
    img
}

fn values(b: &[u8], l: &Layout, rfbm: Xfeatures) -> Values {
    State::new(Image::new(b).unwrap(), l, rfbm).values().unwrap()
}

fn pick_xcr0(l: &Layout, k: usize) -> Xfeatures {
    let v = valid_xcr0_values(l.user_supported());
    v[k % v.len()]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn standard_compacted_standard_is_identity(f in 0usize..4, k in any::<usize>(), seed in any::<u64>(), extra in any::<u64>()) {
        let l = layout(FIXTURES[f]);
        let xcr0 = pick_xcr0(&l, k);
        let img = standard_image(&l, xcr0, seed);
        let ctx = Context::new(xcr0);
        prop_assert!(validate(&img, &l, Profile::Hardware, &ctx).is_ok());
        let bv = Image::new(&img).unwrap().xstate_bv();
        let mask = (bv | Xfeatures(extra) | Xfeatures::LEGACY) & xcr0;
        let c = convert(&img, &l, &l, xcr0, Target::Compacted { mask }).unwrap();
        prop_assert!(validate(&c, &l, Profile::Hardware, &ctx).is_ok());
        let s = convert(&c, &l, &l, xcr0, Target::Standard).unwrap();
        prop_assert!(validate(&s, &l, Profile::Hardware, &ctx).is_ok());
        prop_assert_eq!(values(&c, &l, xcr0), values(&img, &l, xcr0));
        prop_assert_eq!(values(&s, &l, xcr0), values(&img, &l, xcr0));
        // XSTATE_BV survives, except SSE where the MXCSR fix had to mark it.
        let back = Image::new(&s).unwrap().xstate_bv();
        prop_assert_eq!(back - Xfeatures::of(Component::SSE), bv - Xfeatures::of(Component::SSE));
        // And again: a second round trip is byte-identical (the output is canonical).
        let c2 = convert(&s, &l, &l, xcr0, Target::Compacted { mask }).unwrap();
        let s2 = convert(&c2, &l, &l, xcr0, Target::Standard).unwrap();
        prop_assert_eq!(&s2[..], &s[..]);
    }

    #[test]
    fn intel_amd_intel_is_identity(k in any::<usize>(), seed in any::<u64>(), compacted in any::<bool>()) {
        let intel = layout(INTEL_ICELAKE);
        let amd = layout(AMD_ZEN4);
        let xcr0 = pick_xcr0(&intel, k);
        let img = standard_image(&intel, xcr0, seed);
        let there = if compacted { Target::Compacted { mask: xcr0 } } else { Target::Standard };
        let a = convert(&img, &intel, &amd, xcr0, there).unwrap();
        prop_assert!(validate(&a, &amd, Profile::Hardware, &Context::new(xcr0)).is_ok());
        prop_assert_eq!(values(&a, &amd, xcr0), values(&img, &intel, xcr0));
        let i = convert(&a, &amd, &intel, xcr0, Target::Standard).unwrap();
        prop_assert_eq!(values(&i, &intel, xcr0), values(&img, &intel, xcr0));
        // Same registers, decoded on each side's layout.
        let di = decode(&Image::new(&img).unwrap(), &intel, xcr0);
        let da = decode(&Image::new(&a).unwrap(), &amd, xcr0);
        prop_assert_eq!(di.registers, da.registers);
    }

    #[test]
    fn nothing_panics_on_arbitrary_bytes(f in 0usize..4, bytes in proptest::collection::vec(any::<u8>(), 0..3000), xcr0 in any::<u64>(), mask in any::<u64>()) {
        let l = layout(FIXTURES[f]);
        let other = layout(FIXTURES[(f + 1) % 4]);
        let mut ctx = Context::new(Xfeatures(xcr0));
        ctx.xss = Xfeatures(mask & l.supervisor_supported().bits());
        for p in Profile::ALL {
            let _ = validate(&bytes, &l, p, &ctx);
        }
        for t in [Target::Standard, Target::Compacted { mask: Xfeatures(mask) }] {
            if let Ok(out) = convert(&bytes, &l, &other, Xfeatures(xcr0), t) {
                let rfbm = Xfeatures(xcr0) & other.supported();
                let mut c = Context::new(rfbm & other.user_supported());
                c.mxcsr_mask = u32::MAX;
                if out.image().form() == xstate::image::Form::Compacted {
                    c.xss = rfbm & other.supervisor_supported();
                }
                prop_assert!(validate(&out, &other, Profile::Hardware, &c).is_ok());
            }
        }
        if let Ok(img) = Image::new(&bytes) {
            let _ = decode(&img, &l, Xfeatures(xcr0));
        }
    }
}
