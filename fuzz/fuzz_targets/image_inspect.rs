//! What `xstate inspect` does with an image: header, component ranges, state and register
//! decoding on arbitrary bytes and layouts: never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use xstate::image::regs::decode;
use xstate::image::state::{State, effective_mxcsr};
use xstate::image::{Image, component_range};

#[path = "common_image.rs"]
mod common_image;

fuzz_target!(|data: &[u8]| {
    let Some(inp) = common_image::input(data) else { return };
    let Ok(img) = Image::new(&inp.image) else { return };
    let _ = effective_mxcsr(&img, inp.xcr0);
    for c in (inp.xcr0 | img.xstate_bv() | img.xcomp_bv()).iter() {
        let _ = component_range(&inp.from, img.xcomp_bv(), c);
        if let Some(b) = img.component(&inp.from, c) {
            assert_eq!(Some(b.len() as u32), inp.from.geometry(c).map(|g| g.size));
        }
    }
    let _ = State::new(img, &inp.from, inp.xcr0).values();
    let d = decode(&img, &inp.from, inp.xcr0);
    for r in &d.registers {
        let _ = r.hex();
        let _ = r.as_u64();
        let _ = r.as_f64();
    }
    let _ = img.restore_footprint(&inp.from, inp.xcr0);
});
