//! A model-based property test of `SaveArea`: random sequences of set_policy, set XCR0/XSS, load
//! and store, run against a save area and against a plain model (a map from component to
//! register bytes, MXCSR, and the masks), on three hosts and both formats. After every step
//! the area holds exactly the model's state for every component the guest ever enabled (state
//! is never lost), its size is the policy's, and it is an image XRSTOR(S) would load; a refused
//! step leaves the area byte-for-byte unchanged.

use std::collections::BTreeMap;
use std::sync::Arc;

use proptest::prelude::*;
use xstate::Xfeatures;
use xstate::area::{AreaError, SaveArea};
use xstate::component::Component;
use xstate::fixtures::{self, AMD_ZEN4, INTEL_SAPPHIRE_RAPIDS, INTEL_SKYLAKE_SP};
use xstate::image::state::State;
use xstate::image::{self, Context, Form, Image, ImageBuf, Profile};
use xstate::layout::Layout;
use xstate::policy::{Policy, Selection};
use xstate::xcr0::check_xcr0;

const BIT63: u64 = 1 << 63;
const MXCSR_INIT: u32 = 0x1F80;

#[derive(Clone, Debug)]
enum Op {
    SetPolicy(usize),
    SetXcr0(u64),
    SetXss(u64),
    Load { compacted: bool, bv: u64, seed: u64, mxcsr: u32, rogue: u64 },
    Store { compacted: bool },
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// The plain model: what each component holds, as register bytes (x87: bytes 0..160 with
/// 24..32 zero; SSE: the 256 XMM bytes; others: the component's bytes), and MXCSR.
#[derive(Clone, Debug, PartialEq)]
struct Model {
    xcr0_max: Xfeatures,
    xss_max: Xfeatures,
    xsaves: bool,
    xcr0: Xfeatures,
    xss: Xfeatures,
    xcr0_accum: Xfeatures,
    xss_accum: Xfeatures,
    regs: BTreeMap<u8, Vec<u8>>,
    mxcsr: u32,
}

fn init_value(layout: &Layout, c: Component) -> Vec<u8> {
    let mut v = vec![0u8; layout.geometry(c).unwrap().size as usize];
    if c == Component::X87 {
        v[..2].copy_from_slice(&0x037Fu16.to_le_bytes());
    }
    v
}

impl Model {
    fn reg(&self, layout: &Layout, c: Component) -> Vec<u8> {
        self.regs.get(&c.index()).cloned().unwrap_or_else(|| init_value(layout, c))
    }
}

/// Register bytes of `c` as the image loads them with RFBM = `rfbm`.
fn image_regs(img: &[u8], layout: &Layout, rfbm: Xfeatures) -> (BTreeMap<u8, Vec<u8>>, Option<u32>) {
    let v = State::new(Image::new(img).unwrap(), layout, rfbm).values().expect("components inside the image");
    (v.components.into_iter().map(|(c, b)| (c.index(), b)).collect(), v.mxcsr)
}

/// A random image for RFBM = `rfbm` with XSTATE_BV = `bv` (and a rogue XSTATE_BV bit when asked).
fn make_image(layout: &Layout, compacted: bool, rfbm: Xfeatures, bv: Xfeatures, seed: u64, mxcsr: u32) -> ImageBuf {
    let mut rng = Rng(seed);
    let (xcomp, len) = if compacted {
        (Xfeatures(BIT63) | rfbm, layout.compacted_size(rfbm).unwrap())
    } else {
        (Xfeatures::EMPTY, layout.standard_size(rfbm).unwrap())
    };
    let mut b = ImageBuf::init(len as usize, xcomp);
    for c in bv.iter() {
        let r = b.image().component_range(layout, c).unwrap();
        for i in r {
            b[i] = rng.next() as u8;
        }
    }
    b[24..28].copy_from_slice(&mxcsr.to_le_bytes());
    b.set_xstate_bv(bv);
    b
}

fn mxcsr_loaded(compacted: bool, rfbm: Xfeatures, bv: Xfeatures, field: u32) -> Option<u32> {
    if compacted {
        rfbm.contains(Component::SSE).then_some(if bv.contains(Component::SSE) { field } else { MXCSR_INIT })
    } else {
        (!(rfbm & Xfeatures(0x6)).is_empty()).then_some(field)
    }
}

struct Case {
    host: Layout,
    policies: Vec<Arc<Policy>>,
    form: Form,
}

fn case(rows: fixtures::Rows, form: Form, selections: &[Selection]) -> Case {
    let host = fixtures::layout(rows);
    let policies = selections.iter().map(|s| Arc::new(Policy::derive(&host, s).unwrap())).collect();
    Case { host, policies, form }
}

fn cases() -> Vec<Case> {
    let m = |x: u64, s: u64| Selection::masks(Xfeatures(x), Xfeatures(s));
    let f = |l: &str| Selection::parse(l).unwrap();
    vec![
        case(
            INTEL_SAPPHIRE_RAPIDS,
            Form::Compacted,
            &[m(0x7, 0), m(0xE7, 0), m(0x602E7, 0), m(0x60207, 0x100), f("all"), m(0xE7, 0x4900)],
        ),
        case(
            INTEL_SAPPHIRE_RAPIDS,
            Form::Standard,
            &[m(0x3, 0), m(0xE7, 0), m(0x602E7, 0), m(0x60007, 0), m(0x207, 0)],
        ),
        case(AMD_ZEN4, Form::Compacted, &[m(0x7, 0), m(0xE7, 0x800), m(0x2E7, 0x1800), f("avx,-xsaves")]),
        case(INTEL_SKYLAKE_SP, Form::Standard, &[m(0x1F, 0), m(0xE7, 0), m(0x2FF, 0), m(0x207, 0)]),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let bits = prop_oneof![
        Just(0x1u64),
        Just(0x3),
        Just(0x7),
        Just(0x1F),
        Just(0xE7),
        Just(0x2E7),
        Just(0x2FF),
        Just(0x602E7),
        Just(0x60007),
        Just(0x60207),
        Just(0x67),
        Just(0x5),
        Just(0x0),
        Just(0x107),
        Just(0x20007),
        Just(BIT63 | 7)
    ];
    let xss = prop_oneof![Just(0u64), Just(0x100), Just(0x800), Just(0x1800), Just(0x4900), Just(0xDD00), Just(0x4)];
    let mxcsr = prop_oneof![Just(MXCSR_INIT), Just(0x1F81u32), Just(0x7F80), Just(0x1_0000)];
    prop_oneof![
        (0usize..6).prop_map(Op::SetPolicy),
        bits.prop_map(Op::SetXcr0),
        xss.prop_map(Op::SetXss),
        (
            any::<bool>(),
            any::<u64>(),
            any::<u64>(),
            mxcsr,
            prop_oneof![4 => Just(0u64), 1 => Just(0x200), 1 => Just(0x20000), 1 => Just(0x800)]
        )
            .prop_map(|(compacted, bv, seed, mxcsr, rogue)| Op::Load { compacted, bv, seed, mxcsr, rogue }),
        any::<bool>().prop_map(|compacted| Op::Store { compacted }),
    ]
}

/// Runs `ops` on one case; returns counts of (accepted, refused) steps.
fn run(c: &Case, start: usize, ops: &[Op]) -> Result<(u32, u32), TestCaseError> {
    let l = &c.host;
    let p0 = c.policies[start % c.policies.len()].clone();
    let mut area = SaveArea::new(p0.clone(), c.form, 0xFFFF).unwrap();
    let mut m = Model {
        xcr0_max: p0.xcr0_max(),
        xss_max: p0.xss_max(),
        xsaves: p0.instructions().xsaves(),
        xcr0: Xfeatures(1),
        xss: Xfeatures(0),
        xcr0_accum: Xfeatures(1),
        xss_accum: Xfeatures(0),
        regs: BTreeMap::new(),
        mxcsr: MXCSR_INIT,
    };
    let (mut ok, mut refused) = (0, 0);
    for op in ops {
        let before = area.clone();
        let accepted = match *op {
            Op::SetPolicy(i) => {
                let p = c.policies[i % c.policies.len()].clone();
                let busy = !m.xcr0_accum.is_subset_of(p.xcr0_max()) || !m.xss_accum.is_subset_of(p.xss_max());
                let unfit = c.form == Form::Standard && !p.xss_max().is_empty();
                let r = area.set_policy(p.clone());
                prop_assert_eq!(r.is_ok(), !busy && !unfit, "set_policy {:?}", r);
                if busy {
                    prop_assert!(matches!(r, Err(AreaError::Busy { .. })), "{:?}", r);
                }
                if r.is_ok() {
                    m.xcr0_max = p.xcr0_max();
                    m.xss_max = p.xss_max();
                    m.xsaves = p.instructions().xsaves();
                }
                r.is_ok()
            }
            Op::SetXcr0(v) => {
                let v = Xfeatures(v);
                let valid = check_xcr0(v).is_ok() && v.is_subset_of(m.xcr0_max);
                let r = area.set_xcr0(v);
                prop_assert_eq!(r.is_ok(), valid, "set_xcr0 {} {:?}", v, r);
                if valid {
                    m.xcr0 = v;
                    m.xcr0_accum |= v;
                }
                valid
            }
            Op::SetXss(v) => {
                let v = Xfeatures(v);
                let valid = m.xsaves && v.is_subset_of(m.xss_max);
                let r = area.set_xss(v);
                prop_assert_eq!(r.is_ok(), valid, "set_xss {} {:?}", v, r);
                if valid {
                    m.xss = v;
                    m.xss_accum |= v;
                }
                valid
            }
            Op::Load { compacted, bv, seed, mxcsr, rogue } => {
                let compacted = compacted && l.features().compaction();
                let rfbm = if compacted { m.xcr0 | m.xss } else { m.xcr0 };
                let bv = Xfeatures(bv) & rfbm;
                let img = make_image(l, compacted, rfbm, bv, seed, mxcsr);
                let mut img_bytes = img.to_vec();
                // A rogue XSTATE_BV bit outside RFBM (XRSTOR would #GP).
                let rogue = Xfeatures(rogue) - rfbm;
                if !rogue.is_empty() {
                    let v = (bv | rogue).bits().to_le_bytes();
                    img_bytes[512..520].copy_from_slice(&v);
                }
                let loaded = mxcsr_loaded(compacted, rfbm, bv, mxcsr);
                let valid = rogue.is_empty() && loaded.is_none_or(|v| v & !0xFFFF == 0);
                let r = area.load(&img_bytes);
                prop_assert_eq!(r.is_ok(), valid, "load {:?}", r);
                if valid {
                    let (regs, _) = image_regs(&img_bytes, l, rfbm);
                    for (i, bytes) in regs {
                        m.regs.insert(i, bytes);
                    }
                    if let Some(v) = loaded {
                        m.mxcsr = v;
                    }
                }
                valid
            }
            Op::Store { compacted } => {
                let compacted = compacted && l.features().compaction();
                let form = if compacted { Form::Compacted } else { Form::Standard };
                let rfbm = if compacted { m.xcr0 | m.xss } else { m.xcr0 };
                let out = area.store(form).map_err(|e| TestCaseError::fail(format!("store: {e}")))?;
                let mut ctx = Context::new(m.xcr0);
                ctx.xss = if compacted { m.xss } else { Xfeatures(0) };
                prop_assert!(image::validate(&out, l, Profile::Hardware, &ctx).is_ok(), "stored image invalid");
                let (regs, mx) = image_regs(&out, l, rfbm);
                for c in rfbm.iter() {
                    let want = m.reg(l, c);
                    prop_assert_eq!(regs.get(&c.index()), Some(&want), "stored {}", c);
                }
                if let Some(v) = mx {
                    prop_assert_eq!(v, m.mxcsr, "stored MXCSR");
                }
                true
            }
        };
        if accepted {
            ok += 1;
        } else {
            refused += 1;
            prop_assert!(area == before, "a refused {:?} changed the area", op);
        }
        // Invariants after every step.
        let p = area.policy().clone();
        prop_assert_eq!(area.len(), SaveArea::size_for(&p, c.form));
        prop_assert_eq!(
            (area.xcr0(), area.xss(), area.xcr0_accum(), area.xss_accum()),
            (m.xcr0, m.xss, m.xcr0_accum, m.xss_accum)
        );
        let mut ctx = Context::new(p.xcr0_max());
        ctx.xss = if c.form == Form::Compacted { p.xss_max() } else { Xfeatures(0) };
        let v = image::validate(area.bytes(), l, Profile::Hardware, &ctx);
        prop_assert!(v.is_ok(), "area not restorable: {:?}", v);
        prop_assert!(area.xstate_bv().is_subset_of(m.xcr0_accum | m.xss_accum));
        let accum = m.xcr0_accum | m.xss_accum;
        let (regs, mx) = image_regs(area.bytes(), l, accum);
        for comp in accum.iter() {
            let want = m.reg(l, comp);
            prop_assert_eq!(regs.get(&comp.index()), Some(&want), "area lost {} after {:?}", comp, op);
        }
        if let Some(v) = mx {
            prop_assert_eq!(v, m.mxcsr, "area MXCSR after {:?}", op);
        }
    }
    Ok((ok, refused))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn save_area_matches_the_model(which in 0usize..4, start in 0usize..6, ops in proptest::collection::vec(op(), 1..60)) {
        let cs = cases();
        run(&cs[which], start, &ops)?;
    }
}

/// The model test can fail: a long fixed sequence exercises every operation, and a broken
/// area (state dropped on resize) is caught.
#[test]
fn model_covers_every_operation() {
    let cs = cases();
    let ops = vec![
        Op::SetXcr0(0xE7),
        Op::Load { compacted: false, bv: 0xE7, seed: 1, mxcsr: 0x7F80, rogue: 0 },
        Op::SetPolicy(2),
        Op::SetXcr0(0x602E7),
        Op::Load { compacted: true, bv: 0x60006, seed: 2, mxcsr: 0x1F80, rogue: 0 },
        Op::Store { compacted: true },
        Op::Store { compacted: false },
        Op::SetPolicy(1),
        Op::SetXcr0(0x7),
        Op::Load { compacted: false, bv: 0x7, seed: 3, mxcsr: 0x1_0000, rogue: 0 },
        Op::Load { compacted: false, bv: 0x7, seed: 3, mxcsr: 0x1F80, rogue: 0x200 },
        Op::Store { compacted: true },
    ];
    for c in &cs[..2] {
        let (ok, refused) = run(c, 0, &ops).unwrap();
        assert!(ok >= 8 && refused >= 3, "{ok} accepted, {refused} refused");
    }
}
