//! Conversion on arbitrary images between arbitrary layouts: never a panic; every output is an
//! image XRSTOR accepts on the target, and loads the same registers as the source.
#![no_main]

use libfuzzer_sys::fuzz_target;
use xstate::image::state::State;
use xstate::image::validate::Context;
use xstate::image::{Converter, Form, Image, Profile, Target, convert, validate};
use xstate::Xfeatures;

#[path = "common_image.rs"]
mod common_image;

fuzz_target!(|data: &[u8]| {
    let Some(inp) = common_image::input(data) else { return };
    let target = if inp.sel & 1 == 0 { Target::Standard } else { Target::Compacted { mask: inp.mask } };
    let to = if inp.sel & 2 == 0 { &inp.from } else { &inp.to };
    let Ok(out) = convert(&inp.image, &inp.from, to, inp.xcr0, target) else { return };
    let src = Image::new(&inp.image).expect("converted sources hold a header");
    // RFBM is read on each side against that side's layout (see `convert`).
    let rfbm = inp.xcr0 & inp.from.supported();
    let dst_rfbm = inp.xcr0 & to.supported();
    let mut ctx = Context::new(dst_rfbm & to.user_supported());
    ctx.mxcsr_mask = u32::MAX;
    if out.image().form() == Form::Compacted {
        ctx.xss = dst_rfbm & to.supervisor_supported();
    }
    if let Err(e) = validate(&out, to, Profile::Hardware, &ctx) {
        panic!("output refused: {e}");
    }
    // Every component in use that the target holds arrives byte for byte, whatever else the
    // source lays out (components the target lacks still take room in a compacted source).
    let mut in_use = src.xstate_bv() & rfbm;
    if src.form() == Form::Compacted {
        in_use &= src.header().compacted_components();
    }
    for c in (in_use & dst_rfbm - Xfeatures::LEGACY).iter() {
        assert_eq!(src.component(&inp.from, c), out.image().component(to, c), "component {c} moved wrongly");
    }
    // A conversion prepared once gives the same bytes.
    let conv = Converter::new(&inp.from, to, inp.xcr0, target).expect("a conversion that succeeds can be prepared");
    let mut again = vec![0u8; conv.output_len()];
    conv.convert_into(&inp.image, &mut again).expect("the prepared conversion succeeds too");
    assert!(again[..] == out[..], "Converter and convert() differ");
    let mut one = vec![0u8; out.len()];
    assert_eq!(xstate::image::convert_into(&inp.image, &inp.from, to, inp.xcr0, target, &mut one), Ok(out.len()));
    assert!(one[..] == out[..], "convert_into and convert() differ");
    // Components with the same number but another size (Zen 2's bit 9 against PKRU) may be
    // carried only in their init state; their byte vectors cannot be compared.
    let same_sizes = rfbm.iter().all(|c| inp.from.geometry(c).map(|g| g.size) == to.geometry(c).map(|g| g.size));
    if dst_rfbm == rfbm && same_sizes {
        let a = State::new(src, &inp.from, rfbm).values().expect("valid source");
        let b = State::new(out.image(), to, rfbm).values().expect("valid output");
        assert_eq!(a, b);
    }
});
