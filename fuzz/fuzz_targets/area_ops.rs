//! Save-area operations from fuzzer bytes: a host fixture, a sequence of policy changes, XCR0 /
//! XSS writes, loads of arbitrary images and stores. Never a panic; after every step the area is
//! as big as its policy says, holds state only for components the guest enabled, and is an
//! image XRSTOR(S) with the policy's maximum would load; a refused step changes nothing.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use xstate::Xfeatures;
use xstate::area::SaveArea;
use xstate::fixtures::{
    AMD_FAM15H_LWP, AMD_ZEN2, AMD_ZEN4, INTEL_AMX_GUEST, INTEL_SAPPHIRE_RAPIDS, INTEL_SKYLAKE_SP, Rows, layout,
};
use xstate::image::validate::Context;
use xstate::image::{Form, Profile, validate};
use xstate::policy::{Policy, Selection};

const HOSTS: [Rows; 6] = [INTEL_SKYLAKE_SP, INTEL_SAPPHIRE_RAPIDS, INTEL_AMX_GUEST, AMD_ZEN4, AMD_ZEN2, AMD_FAM15H_LWP];

struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn u8(&mut self) -> u8 {
        let (b, rest) = self.0.split_first().map_or((0, &[][..]), |(b, r)| (*b, r));
        self.0 = rest;
        b
    }
    fn u64(&mut self) -> u64 {
        (0..8).fold(0, |v, i| v | (self.u8() as u64) << (8 * i))
    }
    fn take(&mut self, n: usize) -> Vec<u8> {
        let n = n.min(self.0.len());
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a.to_vec()
    }
}

fuzz_target!(|data: &[u8]| {
    let mut d = Bytes(data);
    let host = layout(HOSTS[d.u8() as usize % HOSTS.len()]);
    let form = if d.u8() & 1 == 0 { Form::Standard } else { Form::Compacted };
    let sup = host.supervisor_supported();
    let pick = |d: &mut Bytes<'_>| -> Option<Arc<Policy>> {
        let x = Xfeatures(d.u64()) & host.user_supported() | Xfeatures(1);
        let s = if form == Form::Standard { Xfeatures(0) } else { Xfeatures(d.u64()) & sup };
        Policy::derive(&host, &Selection::masks(x, s)).ok().map(Arc::new)
    };
    let Some(first) = pick(&mut d) else { return };
    let Ok(mut area) = SaveArea::new(first, form, 0xFFFF) else { return };
    while !d.0.is_empty() {
        let before = area.clone();
        let op = d.u8();
        let ok = match op % 7 {
            0 => match pick(&mut d) {
                Some(p) => area.set_policy(p).is_ok(),
                None => true,
            },
            1 => area.set_xcr0(Xfeatures(d.u64())).is_ok(),
            2 => area.set_xss(Xfeatures(d.u64())).is_ok(),
            3 | 4 => {
                let n = d.u8() as usize * 48 + d.u8() as usize;
                let mut img = d.take(n);
                // Stretch short tails with zeros so the component paths run.
                if op & 0x80 != 0 {
                    img.resize(area.len().max(img.len()), 0);
                }
                if op % 7 == 3 { area.load(&img).is_ok() } else { area.load_with(&img, Xfeatures(d.u64())).is_ok() }
            }
            5 => {
                let f = if op & 0x80 == 0 { Form::Standard } else { Form::Compacted };
                if let Ok(out) = area.store(f) {
                    let mut ctx = Context::new(area.xcr0());
                    ctx.mxcsr_mask = u32::MAX;
                    if f == Form::Compacted {
                        ctx.xss = area.xss();
                    }
                    if let Err(e) = validate(&out, area.policy().host_layout(), Profile::Hardware, &ctx) {
                        panic!("stored image refused: {e}");
                    }
                }
                true
            }
            _ => {
                let f = if op & 0x80 == 0 { Form::Standard } else { Form::Compacted };
                let _ = area.store_with(f, Xfeatures(d.u64()));
                true
            }
        };
        if !ok {
            assert!(area == before, "a refused operation changed the area");
        }
        let p = area.policy().clone();
        assert_eq!(area.len(), SaveArea::size_for(&p, form));
        assert!(area.xstate_bv().is_subset_of(area.xcr0_accum() | area.xss_accum()));
        let mut ctx = Context::new(p.xcr0_max());
        ctx.mxcsr_mask = u32::MAX;
        if form == Form::Compacted {
            ctx.xss = p.xss_max();
        }
        if let Err(e) = validate(area.bytes(), p.host_layout(), Profile::Hardware, &ctx) {
            panic!("area not restorable: {e}");
        }
    }
});
