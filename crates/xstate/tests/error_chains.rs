//! Issue 12 item 3: errors chain. An error that wraps another hands it out through
//! `Error::source()`, so a VMM's error report (anyhow, eyre, its own) prints the whole cause.

use std::error::Error;
use std::sync::Arc;

use xstate::area::SaveArea;
use xstate::fixtures::{self, AMD_ZEN4, AVX_ONLY};
use xstate::image::{ConvertError, Form, ImageBuf, Target, ValidationError, convert};
use xstate::policy::{Policy, PolicyError, Selection, SetError};
use xstate::xcr0::MaskError;
use xstate::{LayoutError, Xfeatures};

fn source_is<T: Error + 'static>(e: &dyn Error) -> bool {
    e.source().is_some_and(|s| s.downcast_ref::<T>().is_some())
}

#[test]
fn wrapped_errors_are_their_source() {
    let l = fixtures::layout(AMD_ZEN4);
    // A conversion of an invalid image: ConvertError -> ValidationError.
    let mut img = ImageBuf::init(2440, Xfeatures(0));
    img.set_xstate_bv(Xfeatures(1 << 9 | 0x20));
    let e = convert(&img, &l, &l, Xfeatures(0x7), Target::Standard).unwrap_err();
    assert!(matches!(e, ConvertError::Invalid(_)));
    assert!(source_is::<ValidationError>(&e), "{e:?}");
    // An RFBM that is no XCR0: ConvertError -> MaskError.
    let e = convert(&img, &l, &l, Xfeatures(0x5), Target::Standard).unwrap_err();
    assert!(source_is::<MaskError>(&e), "{e:?}");
    // A save area's refusals: AreaError -> SetError -> MaskError, AreaError -> ValidationError.
    let p = Arc::new(Policy::derive(&l, &Selection::parse("avx").unwrap()).unwrap());
    let mut a = SaveArea::new(p, Form::Standard, 0x2FFFF).unwrap();
    let e = a.set_xcr0(Xfeatures(0x5)).unwrap_err();
    assert!(source_is::<SetError>(&e), "{e:?}");
    assert!(e.source().is_some_and(source_is::<MaskError>), "{e:?}");
    let e = a.load(&img).unwrap_err();
    assert!(source_is::<ValidationError>(&e), "{e:?}");
    // A policy from masks that break a rule: PolicyError -> MaskError.
    let e = Policy::derive(&fixtures::layout(AVX_ONLY), &Selection::masks(Xfeatures(0x5), Xfeatures(0))).unwrap_err();
    assert!(matches!(e, PolicyError::Mask(_)));
    assert!(source_is::<MaskError>(&e), "{e:?}");
    // A validation error naming a broken XCR0 rule: ValidationError -> MaskError.
    let mut ctx = xstate::image::Context::new(Xfeatures(0x4));
    ctx.xen.xcr0_accum = Some(Xfeatures(0x7));
    let mut init = ImageBuf::init(2440, Xfeatures(0));
    init.set_xstate_bv(Xfeatures(0x1));
    let e = xstate::image::validate(&init, &l, xstate::image::Profile::Xen, &ctx).unwrap_err();
    assert!(source_is::<MaskError>(&e), "{e}");
    let _ = LayoutError::XsaveNotEnumerated;
}
