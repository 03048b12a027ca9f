//! `Converter` (a conversion prepared once per layout pair, RFBM and target) gives exactly what
//! `convert()` gives, result or error, on random valid and corrupted images, between equal and
//! different layouts, for both targets.

use proptest::prelude::*;
use xstate::fixtures::valid_xcr0_values;
use xstate::fixtures::{
    AMD_FAM15H_LWP, AMD_ZEN4, INTEL_AMX_GUEST, INTEL_SAPPHIRE_RAPIDS, INTEL_SKYLAKE_SP, Rows, layout,
};
use xstate::image::{Converter, Target, convert};
use xstate::{Layout, Xfeatures};

const PAIRS: [(Rows, Rows); 6] = [
    (INTEL_SAPPHIRE_RAPIDS, INTEL_SAPPHIRE_RAPIDS),
    (INTEL_AMX_GUEST, INTEL_AMX_GUEST),
    (INTEL_SKYLAKE_SP, AMD_ZEN4),
    (AMD_ZEN4, INTEL_SKYLAKE_SP),
    (AMD_ZEN4, AMD_ZEN4),
    (AMD_FAM15H_LWP, AMD_FAM15H_LWP),
];

fn random_image(l: &Layout, rfbm: Xfeatures, mut seed: u64, corrupt: u8) -> Vec<u8> {
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut img = vec![0u8; l.standard_size(rfbm & l.user_supported()).unwrap_or(576).max(576) as usize];
    for b in img.iter_mut() {
        *b = next() as u8;
    }
    let mxcsr = if next() % 3 == 0 { 0x1F80 } else { next() as u32 & 0xFFFF };
    img[24..28].copy_from_slice(&mxcsr.to_le_bytes());
    if next() % 4 == 0 {
        img[160..416].fill(0);
    }
    img[512..520].copy_from_slice(&(next() & rfbm.bits()).to_le_bytes());
    img[520..576].fill(0);
    match corrupt % 8 {
        1 => img[520 + (next() % 56) as usize] = 1,
        2 => img[512 + (next() % 8) as usize] |= 1 << (next() % 8),
        3 => img.truncate((next() as usize) % img.len()),
        _ => {}
    }
    img
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    #[test]
    fn converter_equals_convert(p in 0usize..PAIRS.len(), k in any::<usize>(), seed in any::<u64>(), corrupt in any::<u8>(), compacted_src in any::<bool>(), to_compacted in any::<bool>()) {
        let (from, to) = (layout(PAIRS[p].0), layout(PAIRS[p].1));
        let xs = valid_xcr0_values(from.user_supported());
        let rfbm = xs[k % xs.len()];
        let target = if to_compacted { Target::Compacted { mask: rfbm & to.supported() } } else { Target::Standard };
        let mut img = random_image(&from, rfbm, seed | 1, corrupt);
        if compacted_src && from.features().compaction()
            && let Ok(c) = convert(&img, &from, &from, rfbm, Target::Compacted { mask: rfbm })
        {
            img = c.to_vec();
        }
        let want = convert(&img, &from, &to, rfbm, target);
        match Converter::new(&from, &to, rfbm, target) {
            // A conversion that cannot be prepared is one convert() refuses for every valid image
            // (a corrupted image may be refused for its own fault first).
            Err(e) => {
                let clean = random_image(&from, rfbm, seed | 1, 0);
                prop_assert_eq!(convert(&clean, &from, &to, rfbm, target).err(), Some(e));
            }
            Ok(conv) => {
                let mut out = vec![7u8; conv.output_len() + 64];
                let before = out.to_vec();
                let got = conv.convert_into(&img, &mut out);
                match want {
                    Ok(w) => {
                        prop_assert_eq!(got, Ok(w.len()));
                        let first = out.iter().zip(w.iter()).position(|(a, b)| a != b);
                        prop_assert!(out[..w.len()] == w[..], "outputs differ: len {} vs {}, first at {:?}, rfbm {}", out.len(), w.len(), first, rfbm);
                        prop_assert!(out[w.len()..].iter().all(|&b| b == 7), "bytes past the output were written");
                    }
                    Err(e) => {
                        prop_assert_eq!(got, Err(e));
                        prop_assert!(out.to_vec() == before, "a refused conversion changed the buffer");
                    }
                }
            }
        }
    }
}
