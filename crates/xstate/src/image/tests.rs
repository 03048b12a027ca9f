//! The image view and owned buffer.
use super::*;
use crate::fixtures::{AMD_ZEN4, INTEL_SKYLAKE_SP, layout};

#[test]
fn view_header_and_ranges() {
    assert_eq!(Image::new(&[0u8; 575]), Err(ImageError::TooShort { len: 575 }));
    let intel = layout(INTEL_SKYLAKE_SP);
    let amd = layout(AMD_ZEN4);
    let mut b = ImageBuf::init(2696, Xfeatures(0));
    assert!((b.image().bytes().as_ptr() as usize).is_multiple_of(64));
    assert_eq!(b.image().mxcsr(), 0x1F80);
    assert_eq!(b.image().form(), Form::Standard);
    assert_eq!(b.image().component_range(&intel, Component::PKRU), Some(2688..2696));
    assert_eq!(b.image().component_range(&amd, Component::PKRU), Some(2432..2440));
    assert_eq!(b.image().component_range(&intel, Component::X87), Some(0..160));
    b.set_xcomp_bv(Xfeatures(COMPACTED_BIT | 0x2E7));
    let img = b.image();
    assert_eq!(img.form(), Form::Compacted);
    // Compacted: AVX 576, opmask 832, ZMM_Hi256 896, Hi16_ZMM 1408, PKRU 2432.
    assert_eq!(img.component_range(&intel, Component::PKRU), Some(2432..2440));
    assert_eq!(img.component_range(&intel, Component::BNDREGS), None);
    // Beyond the image's end: no range rather than a panic.
    let short = ImageBuf::from_bytes(&b[..1000]).unwrap();
    assert_eq!(short.image().component_range(&intel, Component::HI16_ZMM), None);
    assert_eq!(short.image().restore_footprint(&intel, Xfeatures(0x2E7)), Some(2440));
    assert_eq!(ImageBuf::init(0, Xfeatures(0)).len(), 576);
}

const COMPACTED_BIT: u64 = 1 << 63;
