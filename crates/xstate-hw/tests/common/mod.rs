//! Shared helpers of the image hardware tests.
#![allow(dead_code)]

use xstate::component::legacy::{MXCSR_MASK, XSTATE_BV};
use xstate::image::{Form, Image};
use xstate::layout::Geometry;
use xstate::{Component, Layout, Xfeatures};
use xstate_hw::selfcheck::Rng;
use xstate_hw::{Host, SaveInstr, perm};

/// The host, with AMX permission requested where the kernel offers it.
pub fn host() -> Host {
    let h = Host::probe().expect("this x86_64 Linux machine enables XSAVE");
    let _ = perm::ensure_amx();
    h
}

/// The running CPU's MXCSR mask, from the MXCSR_MASK field XSAVE writes (0 means 0xFFBF).
pub fn mxcsr_mask(h: &Host) -> u32 {
    let xcr0 = h.xcr0();
    let mut img = vec![0u8; 576];
    img[0..2].copy_from_slice(&0x037Fu16.to_le_bytes());
    img[24..28].copy_from_slice(&0x1F80u32.to_le_bytes());
    let out = h.xrstor_then_save(&img, xcr0, SaveInstr::Xsave, xcr0, 0).expect("XRSTOR of an init image");
    match u32::from_le_bytes(out[MXCSR_MASK..MXCSR_MASK + 4].try_into().unwrap()) {
        0 => 0xFFBF,
        m => m,
    }
}

/// True if component `c`'s bytes in the standard image `b` are its init value.
fn is_init(b: &[u8], l: &Layout, c: Component) -> bool {
    match c {
        Component::X87 => {
            b[0..2] == 0x037Fu16.to_le_bytes() && b[2..24].iter().all(|&x| x == 0) && b[32..160].iter().all(|&x| x == 0)
        }
        Component::SSE => b[160..416].iter().all(|&x| x == 0),
        _ => l.standard_range(c).is_some_and(|r| b[r].iter().all(|&x| x == 0)),
    }
}

/// Compares two XSAVE (standard, RFBM = XCR0) outputs as architectural state: every byte the
/// CPU defines must be equal (legacy region 0..416, every XCR0 component); bytes 416..511 and
/// the header beyond XSTATE_BV are not state. An XSTATE_BV bit may differ only for a component
/// whose bytes are its init value in both: XINUSE is the processor's hint, not a register.
pub fn same_state(a: &[u8], b: &[u8], l: &Layout, xcr0: Xfeatures) -> Result<(), String> {
    let n = l.standard_size(xcr0).unwrap() as usize;
    let bv = |x: &[u8]| Xfeatures(u64::from_le_bytes(x[XSTATE_BV..XSTATE_BV + 8].try_into().unwrap()));
    let diff = Xfeatures(bv(a).bits() ^ bv(b).bits()) & xcr0;
    for c in diff.iter() {
        if !(is_init(a, l, c) && is_init(b, l, c)) {
            return Err(format!("XSTATE_BV {} vs {}: {} differs and is not init", bv(a), bv(b), c));
        }
    }
    let mut x = a[..n].to_vec();
    let mut y = b[..n].to_vec();
    for v in [&mut x, &mut y] {
        v[416..576].fill(0);
    }
    match (0..n).find(|&i| x[i] != y[i]) {
        None => Ok(()),
        Some(i) => {
            let owner = xcr0
                .iter()
                .find(|&c| {
                    if c.is_legacy() {
                        c.legacy_ranges().iter().any(|r| r.contains(&i))
                    } else {
                        l.standard_range(c).is_some_and(|r| r.contains(&i))
                    }
                })
                .map_or("no component".to_string(), |c| c.to_string());
            Err(format!("byte {i} ({owner}): {:#04x} vs {:#04x}", x[i], y[i]))
        }
    }
}

/// A layout of the same components as `l` (within `xcr0`) at other standard offsets: highest
/// index first, with a 64-byte gap before each, as another vendor might place them.
pub fn shuffled_layout(l: &Layout, xcr0: Xfeatures) -> Layout {
    let mut at = 576u32;
    let mut comps: Vec<(Component, Geometry)> =
        vec![(Component::X87, Geometry::default()), (Component::SSE, Geometry::default())];
    for c in (xcr0 & l.user_supported()).iter().filter(|c| !c.is_legacy()).collect::<Vec<_>>().into_iter().rev() {
        let g = l.geometry(c).unwrap();
        at += 64;
        comps.push((c, Geometry { offset: at, ..g }));
        at += g.size;
    }
    Layout::from_components(l.features(), comps).expect("a valid synthetic layout")
}

/// The bytes a restore of `img` reads, as a standard or compacted image on `l`.
pub fn footprint_len(img: &[u8], l: &Layout, xcr0: Xfeatures) -> usize {
    let v = Image::new(img).unwrap();
    match v.form() {
        Form::Standard => l.standard_size(xcr0).unwrap() as usize,
        Form::Compacted => l.compacted_size(v.header().compacted_components()).unwrap() as usize,
    }
}

pub fn bv(img: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(img[off..off + 8].try_into().unwrap())
}

pub fn set(img: &mut [u8], off: usize, v: u64) {
    img[off..off + 8].copy_from_slice(&v.to_le_bytes());
}

/// Applies one random mutation; returns its name.
pub fn mutate(img: &mut [u8], xcr0: Xfeatures, mask: u32, rng: &mut Rng) -> &'static str {
    let pick_in = |rng: &mut Rng| {
        let v: Vec<Component> = xcr0.iter().collect();
        v[(rng.next_u64() % v.len() as u64) as usize].bit()
    };
    let r = rng.next_u64();
    match rng.next_u64() % 14 {
        0 => {
            set(img, 512, bv(img, 512) ^ pick_in(rng));
            "XSTATE_BV bit in XCR0"
        }
        1 => {
            set(img, 512, bv(img, 512) ^ 1 << (r % 63));
            "XSTATE_BV random bit"
        }
        2 => {
            set(img, 512, bv(img, 512) ^ 1 << 63);
            "XSTATE_BV bit 63"
        }
        3 => {
            set(img, 520, bv(img, 520) ^ pick_in(rng));
            "XCOMP_BV bit in XCR0"
        }
        4 => {
            set(img, 520, bv(img, 520) ^ 1 << (r % 63));
            "XCOMP_BV random bit"
        }
        5 => {
            let mut c = bv(img, 520) ^ 1 << 63;
            if c >> 63 == 1 && r.is_multiple_of(2) {
                c |= xcr0.bits();
            }
            set(img, 520, c);
            "XCOMP_BV bit 63"
        }
        6 => {
            img[528 + (r % 48) as usize] = (r >> 8) as u8 | 1;
            "reserved header byte"
        }
        7 => {
            img[520 + (r % 8) as usize] = (r >> 8) as u8 | 1;
            "XCOMP_BV byte"
        }
        8 => {
            let outside = !mask;
            let bit = (0..32).map(|k| (k + r as u32) % 32).find(|b| outside >> b & 1 != 0).unwrap_or(31);
            let m = u32::from_le_bytes(img[24..28].try_into().unwrap()) | 1 << bit;
            img[24..28].copy_from_slice(&m.to_le_bytes());
            "MXCSR reserved bit"
        }
        9 => {
            img[24..28].copy_from_slice(&(r as u32).to_le_bytes());
            "MXCSR random"
        }
        10 => {
            let c = bv(img, 520);
            let not_in = !c & 0x7FFF_FFFF_FFFF_FFFF;
            let bit = (0..63).map(|k| (k + r) % 63).find(|b| not_in >> b & 1 != 0).unwrap_or(62);
            set(img, 512, (c & !(1 << 63)) | 1 << bit);
            "XSTATE_BV not within XCOMP_BV"
        }
        11 => {
            let mut g = [0u8; 48];
            rng.fill(&mut g);
            img[464..512].copy_from_slice(&g);
            "garbage in 464..511"
        }
        12 => {
            set(img, 512, bv(img, 512) & !(r & xcr0.bits()));
            "XSTATE_BV bits cleared"
        }
        _ => {
            let l = 416 + (r % 48) as usize;
            img[l] ^= (r >> 8) as u8 | 1;
            "reserved legacy byte 416..463"
        }
    }
}

/// Number of cases: `XSTATE_IMAGE_CASES` if set (for longer runs), else `default`.
pub fn cases(default: usize) -> usize {
    std::env::var("XSTATE_IMAGE_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(default).max(default)
}

/// Seed: `XSTATE_IMAGE_SEED` if set, else `default`; printed so a failure can be replayed.
pub fn seed(default: u64) -> u64 {
    let s = std::env::var("XSTATE_IMAGE_SEED").ok().and_then(|v| xstate::xfeatures::parse_u64(&v)).unwrap_or(default);
    println!("seed {s:#x} (XSTATE_IMAGE_SEED to replay)");
    s
}
