// Shared by the image targets: a layout, masks and an image from fuzzer bytes.
#![allow(dead_code)]
use xstate::fixtures::{SAMPLES as FIXTURES, layout};
use xstate::{Layout, Xfeatures};

pub struct Input<'a> {
    pub from: Layout,
    pub to: Layout,
    pub xcr0: Xfeatures,
    pub mask: Xfeatures,
    pub sel: u8,
    pub image: Vec<u8>,
    pub raw: &'a [u8],
}

fn u64_at(d: &[u8], o: usize) -> u64 {
    let mut b = [0u8; 8];
    for (i, x) in b.iter_mut().enumerate() {
        *x = d.get(o + i).copied().unwrap_or(0);
    }
    u64::from_le_bytes(b)
}

/// Bytes 0..2 pick layouts, 2 a selector, 3..11 XCR0 (bit 0..=3 of byte 11 say "use a supported
/// valid-looking XCR0"), 11..19 a mask; the rest is the image, which may grow to a length the
/// layout makes plausible (byte 19 picks it) with zeros, so the header-and-beyond paths run.
pub fn input(d: &[u8]) -> Option<Input<'_>> {
    if d.len() < 20 {
        return None;
    }
    let from = layout(FIXTURES[d[0] as usize % FIXTURES.len()]);
    let to = layout(FIXTURES[d[1] as usize % FIXTURES.len()]);
    let mut xcr0 = Xfeatures(u64_at(d, 3));
    if d[2] & 0x80 == 0 {
        xcr0 = xcr0 & from.supported() | Xfeatures(1);
    }
    let mask = Xfeatures(u64_at(d, 11));
    let mut image = d[20..].to_vec();
    match d[19] % 4 {
        0 => {}
        1 => image.resize(from.standard_size(from.user_supported()).unwrap_or(576) as usize, 0),
        2 => image.resize(from.compacted_size(from.supported()).unwrap_or(576) as usize, 0),
        _ => image.resize(4096, 0),
    }
    Some(Input { from, to, xcr0, mask, sel: d[2], image, raw: d })
}
