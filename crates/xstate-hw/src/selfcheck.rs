//! The live check behind `xstate host`: does this CPU's XSAVE and XSAVEC write exactly the bytes
//! its layout predicts?
//!
//! A state with every XCR0 component in use and non-init is loaded with XRSTOR, then saved with
//! XSAVE (standard) and XSAVEC (compacted) into buffers pre-filled with a sentinel. Each save is
//! run twice, with sentinels 0xAA and 0x55: a byte the instruction writes differs from at
//! least one of them, so the union of changed bytes is exactly the set written. That set is
//! held against the layout's extents, and the component bytes against the state loaded.

use std::ops::Range;

use xstate::component::legacy::{MXCSR, XSTATE_BV};
use xstate::{Component, Layout, Xfeatures};

use crate::xsave::{Host, SaveInstr};

/// One check's outcome.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    /// What was checked.
    pub name: String,
    /// Whether it agreed with the prediction.
    pub ok: bool,
    /// Numbers behind the verdict.
    pub detail: String,
}

/// A small deterministic generator (xorshift64*), so checks are repeatable from a seed.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed (0 is replaced by a fixed non-zero value).
    pub fn new(seed: u64) -> Rng {
        Rng(if seed == 0 { 0x9E37_79B9_7F4A_7C15 } else { seed })
    }
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Fills `buf` with random bytes.
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// A standard-format image of `layout` in which every component of `mask` is in use with
/// random, loadable contents: x87 with FCW 0x037F and random ST registers and tags, a valid
/// MXCSR, random XMM/YMM/ZMM/opmask/tile data, a valid AMX palette-1 configuration, PKRU that
/// keeps key 0 accessible, and zero for components whose contents steer the CPU (MPX BNDCSR,
/// LWP) or that the catalogue does not know.
pub fn crafted_image(layout: &Layout, mask: Xfeatures, rng: &mut Rng) -> Vec<u8> {
    let size = layout.standard_size(mask).unwrap_or(576).max(576) as usize;
    let mut img = vec![0u8; size];
    if mask.contains(Component::X87) {
        img[0..2].copy_from_slice(&0x037Fu16.to_le_bytes());
        img[4] = rng.next_u64() as u8; // abridged FTW
        for st in 0..8 {
            let off = 32 + st * 16;
            rng.fill(&mut img[off..off + 10]);
        }
    }
    if mask.contains(Component::SSE) || mask.contains(Component::AVX) {
        // Flags and masks only; DAZ/FZ/rounding left default so nothing surprises the caller.
        let mxcsr = 0x1F80u32 | (rng.next_u64() as u32 & 0x3F);
        img[MXCSR..MXCSR + 4].copy_from_slice(&mxcsr.to_le_bytes());
    }
    if mask.contains(Component::SSE) {
        rng.fill(&mut img[160..416]);
    }
    for c in mask.iter().filter(|c| !c.is_legacy()) {
        let Some(r) = layout.standard_range(c) else { continue };
        if !layout.recognised(c) {
            continue;
        }
        match c {
            Component::BNDCSR | Component::LWP => {}
            Component::PKRU => {
                let pkru = rng.next_u64() as u32 & !0x3;
                img[r.start..r.start + 4].copy_from_slice(&pkru.to_le_bytes());
            }
            Component::TILECFG => {
                // Palette 1: eight tiles of 16 rows x 64 bytes (CPUID 0x1D.1 on every AMX part).
                img[r.start] = 1;
                for t in 0..8 {
                    img[r.start + 16 + 2 * t..r.start + 18 + 2 * t].copy_from_slice(&64u16.to_le_bytes());
                    img[r.start + 48 + t] = 16;
                }
            }
            Component::X87 | Component::SSE => {}
            _ => rng.fill(&mut img[r]),
        }
    }
    img[XSTATE_BV..XSTATE_BV + 8].copy_from_slice(&(mask & layout.user_supported()).bits().to_le_bytes());
    img
}

/// Bytes `[0, len)` as a bitmap of which differ between the two sentinel runs' outputs and
/// their sentinels.
fn written(a: &[u8], b: &[u8], len: usize) -> Vec<bool> {
    (0..len).map(|i| a[i] != 0xAA || b[i] != 0x55).collect()
}

fn ranges(bits: &[bool]) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < bits.len() {
        if bits[i] {
            let s = i;
            while i < bits.len() && bits[i] {
                i += 1;
            }
            out.push(s..i);
        } else {
            i += 1;
        }
    }
    out
}

fn show(r: &[Range<usize>]) -> String {
    let v: Vec<String> = r.iter().take(6).map(|r| format!("{:#x}..{:#x}", r.start, r.end)).collect();
    let more = if r.len() > 6 { format!(" and {} more", r.len() - 6) } else { String::new() };
    format!("[{}]{more}", v.join(", "))
}

/// Compares the set of bytes written with the predicted one; `may` are bytes that may or may
/// not be written.
fn compare(name: &str, w: &[bool], must: &[bool], may: &[bool]) -> Check {
    let extra: Vec<bool> = (0..w.len()).map(|i| w[i] && !must[i] && !may[i]).collect();
    let missing: Vec<bool> = (0..w.len()).map(|i| !w[i] && must[i]).collect();
    let (e, m) = (ranges(&extra), ranges(&missing));
    let n = w.iter().filter(|&&x| x).count();
    Check {
        name: name.into(),
        ok: e.is_empty() && m.is_empty(),
        detail: if e.is_empty() && m.is_empty() {
            format!("{n} bytes written, all inside the predicted extents, none missing")
        } else {
            format!("{n} bytes written; outside the prediction: {}; predicted but not written: {}", show(&e), show(&m))
        },
    }
}

/// The bytes of component `c` at `r` that hold its registers, which every save writes: PKRU's
/// first 4 of 8 (SDM Vol. 1 §13.5.7, "PKRU State"; the other 4 are padding, which AMD Zen 3's
/// XSAVE and XSAVEC leave unwritten, docs/HARDWARE.md), else all of them.
pub fn register_bytes(c: Component, r: Range<usize>) -> Range<usize> {
    match c {
        Component::PKRU => r.start..r.start + 4.min(r.len()),
        _ => r,
    }
}

/// Marks component `c` at `r` as written: its registers in `must`, any padding in `may`.
fn component_bytes(must: &mut [bool], may: &mut [bool], c: Component, r: Range<usize>) {
    let regs = register_bytes(c, r.clone());
    must[regs.clone()].fill(true);
    may[regs.end..r.end].fill(true);
}

fn legacy_bytes(mask: &mut [bool], with_sse: bool) {
    for c in [Component::X87, Component::SSE] {
        if c == Component::SSE && !with_sse {
            continue;
        }
        for r in c.legacy_ranges() {
            mask[r.clone()].fill(true);
        }
    }
}

/// Runs the live check on `host` with XCR0 as the RFBM. The caller asks for AMX permission
/// beforehand where it wants AMX covered.
pub fn live_check(host: &Host, seed: u64) -> Vec<Check> {
    let l = host.layout();
    let xcr0 = host.xcr0();
    let mut rng = Rng::new(seed);
    let image = crafted_image(l, xcr0, &mut rng);
    let mut checks = Vec::new();
    let n = host.area_size();
    let std_size = l.standard_size(xcr0).unwrap_or(0) as usize;

    // XSAVE: every RFBM component at its standard offset, legacy region, XSTATE_BV.
    let runs: Vec<_> =
        [0xAA, 0x55].iter().map(|&f| host.xrstor_then_save(&image, xcr0, SaveInstr::Xsave, xcr0, f)).collect();
    match (&runs[0], &runs[1]) {
        (Ok(a), Ok(b)) => {
            let w = written(a, b, n);
            let mut must = vec![false; n];
            let mut may = vec![false; n];
            legacy_bytes(&mut must, true);
            may[XSTATE_BV..XSTATE_BV + 8].fill(true);
            for c in xcr0.iter().filter(|c| !c.is_legacy()) {
                if let Some(r) = l.standard_range(c) {
                    component_bytes(&mut must, &mut may, c, r);
                }
            }
            checks.push(compare(
                &format!("XSAVE writes exactly the standard extents of XCR0 {xcr0} ({std_size} bytes)"),
                &w,
                &must,
                &may,
            ));
            let bad: Vec<String> = xcr0
                .iter()
                .filter(|c| !c.is_legacy() && *c != Component::TILECFG)
                .filter_map(|c| l.standard_range(c).map(|r| (c, register_bytes(c, r))))
                .filter(|(_, r)| a[r.clone()] != image[r.clone()])
                .map(|(c, _)| l.name(c))
                .collect();
            checks.push(Check {
                name: "XSAVE returns the loaded state at the standard offsets".into(),
                ok: bad.is_empty() && a[160..416] == image[160..416],
                detail: if bad.is_empty() {
                    "component bytes equal".into()
                } else {
                    format!("differ: {}", bad.join(", "))
                },
            });
        }
        (Err(f), _) | (_, Err(f)) => checks.push(Check {
            name: "XRSTOR + XSAVE of a full state".into(),
            ok: false,
            detail: format!("fault: {f}"),
        }),
    }

    // XSAVEC: components in use at compacted offsets for XCOMP_BV = RFBM, header 512..528.
    if !host.has(SaveInstr::Xsavec) {
        checks.push(Check {
            name: "XSAVEC".into(),
            ok: true,
            detail: "SKIP: CPUID 0xD.1 EAX[1] = 0, the CPU has no XSAVEC".into(),
        });
        return checks;
    }
    let cmp_size = l.compacted_size(xcr0).unwrap_or(0) as usize;
    let runs: Vec<_> =
        [0xAA, 0x55].iter().map(|&f| host.xrstor_then_save(&image, xcr0, SaveInstr::Xsavec, xcr0, f)).collect();
    match (&runs[0], &runs[1]) {
        (Ok(a), Ok(b)) => {
            let w = written(a, b, n);
            let mut must = vec![false; n];
            let mut may = vec![false; n];
            legacy_bytes(&mut must, true);
            must[XSTATE_BV..XSTATE_BV + 16].fill(true);
            let placed = l.compacted_components(xcr0).unwrap_or_default();
            for (c, off, size) in &placed {
                component_bytes(&mut must, &mut may, *c, *off as usize..(*off + *size) as usize);
            }
            checks.push(compare(
                &format!(
                    "XSAVEC writes exactly the compacted extents of XCOMP_BV {} ({cmp_size} bytes)",
                    xcr0 | Xfeatures::BIT63
                ),
                &w,
                &must,
                &may,
            ));
            let bad: Vec<String> = placed
                .iter()
                .filter(|(c, _, _)| *c != Component::TILECFG)
                .filter(|(c, off, size)| {
                    let r = register_bytes(*c, l.standard_range(*c).unwrap_or(0..0));
                    let saved = register_bytes(*c, *off as usize..(*off + *size) as usize);
                    a[saved] != image[r]
                })
                .map(|(c, _, _)| l.name(*c))
                .collect();
            checks.push(Check {
                name: "XSAVEC returns the loaded state at the compacted offsets".into(),
                ok: bad.is_empty(),
                detail: if bad.is_empty() {
                    "component bytes equal".into()
                } else {
                    format!("differ: {}", bad.join(", "))
                },
            });
            let hdr = |o: usize| u64::from_le_bytes(a[o..o + 8].try_into().unwrap());
            let (bv, comp) = (hdr(XSTATE_BV), hdr(XSTATE_BV + 8));
            checks.push(Check {
                name: "XSAVEC header".into(),
                ok: comp == (xcr0 | Xfeatures::BIT63).bits() && bv & !xcr0.bits() == 0,
                detail: format!("XSTATE_BV {bv:#x}, XCOMP_BV {comp:#x}"),
            });
        }
        (Err(f), _) | (_, Err(f)) => checks.push(Check {
            name: "XRSTOR + XSAVEC of a full state".into(),
            ok: false,
            detail: format!("fault: {f}"),
        }),
    }
    checks
}
