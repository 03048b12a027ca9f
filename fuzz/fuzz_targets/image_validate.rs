//! Every validation profile on arbitrary images, layouts and contexts: never a panic, and a
//! hardware verdict of "valid" means the image holds its restore footprint.
#![no_main]

use libfuzzer_sys::fuzz_target;
use xstate::image::validate::Context;
use xstate::image::{Image, Profile, validate};

#[path = "common_image.rs"]
mod common_image;

fuzz_target!(|data: &[u8]| {
    let Some(inp) = common_image::input(data) else { return };
    let mut ctx = Context::new(inp.xcr0).with_mxcsr_mask_field(inp.mask.bits() as u32);
    if inp.sel & 1 != 0 {
        ctx.xss = inp.mask & inp.from.supervisor_supported();
    }
    ctx.kvm_supported = (inp.sel & 2 != 0).then_some(inp.mask);
    ctx.xen.xcr0_accum = (inp.sel & 4 != 0).then_some(inp.mask | inp.xcr0);
    for p in Profile::ALL {
        let r = validate(&inp.image, &inp.from, p, &ctx);
        if let Err(e) = &r {
            let _ = e.to_string();
            let _ = e.errno();
        }
        if p == Profile::Hardware && r.is_ok() {
            let img = Image::new(&inp.image).expect("valid images hold a header");
            let rfbm = ctx.xcr0 | ctx.xss;
            let fp = img.restore_footprint(&inp.from, rfbm).expect("valid images name known components");
            assert!(inp.image.len() >= fp);
        }
    }
});
