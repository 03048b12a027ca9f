//! Migration verdicts between arbitrary layouts (fixtures or fuzzed leaf 0xD tables) and masks,
//! with and without an image: never a panic, and the allocation-free `verdict()` used by the
//! fleet matrix always agrees with the full `check()`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use xstate::compat::{Side, check, check_image, verdict};
use xstate::cpuid::{Leaf0d, Regs};
use xstate::fixtures::{SAMPLES as FIXTURES, layout};
use xstate::{Layout, Xfeatures};

fn u64_at(d: &[u8], o: usize) -> u64 {
    let mut b = [0u8; 8];
    for (i, x) in b.iter_mut().enumerate() {
        *x = d.get(o + i).copied().unwrap_or(0);
    }
    u64::from_le_bytes(b)
}

/// A fixture, or a layout from fuzzed subleaves 0, 1 and 2..=19 (16 bytes each).
fn pick(sel: u8, d: &[u8]) -> Option<Layout> {
    if sel & 0x80 == 0 {
        return Some(layout(FIXTURES[sel as usize % FIXTURES.len()]));
    }
    let mut leaf = Leaf0d::new();
    for (k, chunk) in d.chunks(16).take(20).enumerate() {
        let r = |i: usize| u64_at(chunk, 4 * i) as u32;
        leaf.set(k as u8, Regs::new(r(0), r(1), r(2), r(3)));
    }
    Layout::from_leaf0d(&leaf).ok()
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 34 {
        return;
    }
    let rest = &data[34..];
    let (Some(a), Some(b)) = (pick(data[0], rest), pick(data[1], rest.get(160..).unwrap_or(&[]))) else { return };
    let from = Side { layout: &a, xcr0: Xfeatures(u64_at(data, 2)) & a.user_supported() | Xfeatures(1), xss: Xfeatures(u64_at(data, 10)) & a.supervisor_supported() };
    let to = Side { layout: &b, xcr0: Xfeatures(u64_at(data, 18)) | b.user_supported(), xss: Xfeatures(u64_at(data, 26)) };
    let r = check(&from, &to);
    assert_eq!(verdict(&from, &to), r.verdict, "{:?}", r.reasons);
    for reason in &r.reasons {
        let _ = reason.to_string();
    }
    assert!(r.mask.is_subset_of(from.xcr0 | from.xss));
    if let Ok(ri) = check_image(&from, &to, rest) {
        assert!(ri.considered.is_subset_of(r.considered), "an image uses only enabled states");
        // The destination must enable the source's XCR0 | XSS whatever the image has in use.
        assert_eq!(ri.enabled, r.enabled);
        if r.verdict == xstate::compat::Verdict::Incompatible {
            assert_eq!(ri.verdict, r.verdict, "{:?} vs {:?}", ri.reasons, r.reasons);
        }
    }
});
