//! Register decoding: the values an image loads, named as gdb names them (amd64 Linux target
//! descriptions), as hex and JSON-ready data.
//!
//! Offsets come from the [`Layout`] (AVX-512 and PKRU sit 256 bytes lower on AMD than on
//! Intel), values from [`State`]: a component whose XSTATE_BV bit is clear shows its init
//! value, as XRSTOR would load it. A component the layout does not recognise as the catalogue's
//! (Zen 2's 64-byte bit 9 is not PKRU) is listed as undecoded, never misread.
//!
//! Legacy region (SDM Vol. 1 §10.5.1, Table 10-2): FCW, FSW, abridged FTW (gdb shows the full
//! two-bit-per-register tag word, recomputed from the registers), FOP, FIP/FDP (64-bit format;
//! gdb's fioff/fiseg and fooff/foseg are their 32-bit split), ST0-7 as 80-bit values in stack
//! order, MXCSR, XMM0-15.
//!
//! # Example: the ZMM registers of every thread of a core dump
//!
//! A Linux core holds an NT_X86_XSTATE note per thread (a standard image in the dumping CPU's
//! layout, the task's XCR0 at byte 464), and since Linux 6.12 an NT_X86_XSAVE_LAYOUT note with
//! that layout. Here the core comes from an AMD Zen 4 host without a layout note, so the
//! caller names the layout.
//!
//! ```
//! use xstate::image::Image;
//! use xstate::image::regs::decode;
//! use xstate::record::{self, Format, Options, StateId};
//! use xstate::{Layout, Leaf0d, Regs, Xfeatures};
//!
//! # let mut leaf = Leaf0d::new();
//! # for (i, a, b, c, d) in [
//! #     (0, 0x2E7, 0x980, 0x988, 0), (1, 0xF, 0x990, 0x1800, 0), (2, 0x100, 0x240, 0, 0),
//! #     (5, 0x40, 0x340, 0, 0), (6, 0x200, 0x380, 0, 0), (7, 0x400, 0x580, 0, 0),
//! #     (9, 0x8, 0x980, 0, 0), (11, 0x10, 0, 1, 0), (12, 0x18, 0, 1, 0),
//! # ] {
//! #     leaf.set(i, Regs::new(a, b, c, d));
//! # }
//! let zen4 = Layout::from_leaf0d(&leaf)?; // the dumping host's leaf 0xD
//! # // An x86-64 ELF core: one PT_NOTE segment with NT_PRSTATUS + NT_X86_XSTATE per thread.
//! # fn note(out: &mut Vec<u8>, name: &[u8], ty: u32, desc: &[u8]) {
//! #     out.extend_from_slice(&(name.len() as u32 + 1).to_le_bytes());
//! #     out.extend_from_slice(&(desc.len() as u32).to_le_bytes());
//! #     out.extend_from_slice(&ty.to_le_bytes());
//! #     out.extend_from_slice(name);
//! #     out.resize((out.len() + 1).next_multiple_of(4), 0);
//! #     out.extend_from_slice(desc);
//! #     out.resize(out.len().next_multiple_of(4), 0);
//! # }
//! # let mut notes = Vec::new();
//! # for (pid, fill) in [(4242u32, 0x11u8), (4243, 0x22)] {
//! #     let mut prstatus = vec![0u8; 336];
//! #     prstatus[32..36].copy_from_slice(&pid.to_le_bytes());
//! #     note(&mut notes, b"CORE", 1, &prstatus);
//! #     let mut img = vec![0u8; 2440]; // standard_size(0x2e7)
//! #     img[0..2].copy_from_slice(&0x037Fu16.to_le_bytes());
//! #     img[24..28].copy_from_slice(&0x1F80u32.to_le_bytes());
//! #     img[160..176].fill(fill); // xmm0
//! #     img[0x240..0x250].fill(fill + 1); // ymm0's upper half
//! #     img[0x380..0x3A0].fill(fill + 2); // zmm0's upper half (ZMM_Hi256 at 0x380 on AMD)
//! #     img[464..472].copy_from_slice(&0x2E7u64.to_le_bytes()); // the task's XCR0
//! #     img[512..520].copy_from_slice(&0x47u64.to_le_bytes()); // XSTATE_BV
//! #     note(&mut notes, b"LINUX", 0x202, &img);
//! # }
//! # let mut core = vec![0u8; 120];
//! # core[..8].copy_from_slice(b"\x7fELF\x02\x01\x01\x00");
//! # core[16..18].copy_from_slice(&4u16.to_le_bytes()); // ET_CORE
//! # core[18..20].copy_from_slice(&62u16.to_le_bytes()); // EM_X86_64
//! # core[20..24].copy_from_slice(&1u32.to_le_bytes());
//! # core[32..40].copy_from_slice(&64u64.to_le_bytes()); // e_phoff
//! # core[52..54].copy_from_slice(&64u16.to_le_bytes());
//! # core[54..56].copy_from_slice(&56u16.to_le_bytes());
//! # core[56..58].copy_from_slice(&1u16.to_le_bytes());
//! # core[64..68].copy_from_slice(&4u32.to_le_bytes()); // PT_NOTE
//! # core[72..80].copy_from_slice(&120u64.to_le_bytes());
//! # core[96..104].copy_from_slice(&(notes.len() as u64).to_le_bytes());
//! # core[112..120].copy_from_slice(&4u64.to_le_bytes());
//! # core.extend_from_slice(&notes);
//! let contents = record::read(Format::ElfCore, &core, &zen4, &Options::default())?;
//! assert_eq!(contents.states.iter().map(|s| s.id).collect::<Vec<_>>(), [4242, 4243].map(|t| Some(StateId::Thread(t))));
//! let layout = contents.layout.as_ref().unwrap_or(&zen4); // a layout note wins
//! for state in &contents.states {
//!     let (Some(StateId::Thread(tid)), Some(image)) = (state.id, state.image.as_ref()) else { continue };
//!     let regs = decode(&Image::new(image)?, layout, state.rfbm.unwrap_or(Xfeatures::EMPTY));
//!     let zmm0 = regs.get("zmm0").ok_or("no zmm0")?;
//!     println!("thread {tid}: zmm0 = {}", zmm0.hex());
//!     assert_eq!(zmm0.bytes.len(), 64);
//! }
//! let zmm0 = |k: usize| {
//!     let s = &contents.states[k];
//!     let img = s.image.as_ref().unwrap();
//!     decode(&Image::new(img).unwrap(), layout, s.rfbm.unwrap()).get("zmm0").unwrap().bytes.clone()
//! };
//! assert_eq!(zmm0(0)[..16], [0x11; 16]); // xmm0
//! assert_eq!(zmm0(1)[32..], [0x24; 32]); // the upper 256 bits, from ZMM_Hi256
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use super::Image;
use super::state::{ComponentData, State};
use crate::component::Component;
use crate::layout::Layout;
use crate::xfeatures::Xfeatures;

/// How a register's bytes are to be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// An unsigned integer (little-endian bytes).
    Int,
    /// A vector or opaque blob (little-endian bytes, shown as one hex number like gdb's
    /// `uint128`/`v2_int64` raw view).
    Vector,
    /// An x87 80-bit extended-precision value.
    Float80,
}

/// One decoded register.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Register {
    /// gdb's name (`st0`, `fctrl`, `xmm3`, `ymm3`, `zmm17`, `k2`, `pkru`, `bnd0raw`, ...).
    pub name: String,
    /// The component holding it.
    pub component: Component,
    /// The value, little-endian.
    pub bytes: Vec<u8>,
    /// How to read the bytes.
    pub kind: Kind,
}

impl Register {
    fn new(name: String, component: Component, bytes: &[u8], kind: Kind) -> Register {
        Register { name, component, bytes: bytes.to_vec(), kind }
    }

    /// The value as one hexadecimal number, most significant byte first (`0x0000...1f80`).
    pub fn hex(&self) -> String {
        let mut s = String::with_capacity(2 + 2 * self.bytes.len());
        s.push_str("0x");
        for b in self.bytes.iter().rev() {
            s.push_str(&format!("{b:02x}"));
        }
        s
    }

    /// The value as an integer, for registers of at most 8 bytes.
    pub fn as_u64(&self) -> Option<u64> {
        (self.bytes.len() <= 8).then(|| self.bytes.iter().rev().fold(0u64, |v, &b| v << 8 | b as u64))
    }

    /// For an x87 register, its value as the nearest `f64` (NaN and infinities included).
    pub fn as_f64(&self) -> Option<f64> {
        (self.kind == Kind::Float80).then(|| f80_to_f64(&self.bytes))
    }
}

/// The registers an image loads, and the components that could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decoded {
    /// Registers in gdb's order within each component, components ascending.
    pub registers: Vec<Register>,
    /// Components of RFBM without a decoder: unknown to the catalogue, not recognised by the
    /// layout (another size than the catalogue's), or supervisor state other than CET.
    pub undecoded: Vec<Component>,
    /// Components of RFBM whose bytes lie beyond the image's end.
    pub truncated: Vec<Component>,
}

impl Decoded {
    /// The register named `name`.
    pub fn get(&self, name: &str) -> Option<&Register> {
        self.registers.iter().find(|r| r.name == name)
    }
}

/// Converts an 80-bit extended-precision value (64-bit significand with explicit integer bit,
/// 15-bit exponent, sign) to the nearest `f64`.
pub fn f80_to_f64(b: &[u8]) -> f64 {
    let mant = b.get(..8).and_then(|m| m.try_into().ok()).map_or(0, u64::from_le_bytes);
    let se = b.get(8..10).and_then(|m| m.try_into().ok()).map_or(0, u16::from_le_bytes);
    let sign = if se & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exp = (se & 0x7FFF) as i32;
    if exp == 0x7FFF {
        return if mant << 1 == 0 { sign * f64::INFINITY } else { f64::NAN };
    }
    if mant == 0 {
        return sign * 0.0;
    }
    // value = mant * 2^(exp - 16383 - 63), denormals with exp 0 use 1 - 16383.
    let e = if exp == 0 { 1 - 16383 - 63 } else { exp - 16383 - 63 };
    sign * (mant as f64) * pow2(e)
}

fn pow2(e: i32) -> f64 {
    let mut v = 1.0f64;
    let (step, n) = if e >= 0 { (2.0f64, e) } else { (0.5f64, -e) };
    // Repeated squaring keeps this exact until f64's range ends.
    let mut base = step;
    let mut n = n as u32;
    while n > 0 {
        if n & 1 != 0 {
            v *= base;
        }
        base *= base;
        n >>= 1;
    }
    v
}

/// The x87 tag of a physical register's contents (SDM Vol. 1 §8.1.7): 0 valid, 1 zero,
/// 2 special (NaN, infinity, denormal, unsupported).
fn x87_tag(st: &[u8]) -> u16 {
    let mant = st.get(..8).and_then(|m| m.try_into().ok()).map_or(0, u64::from_le_bytes);
    let exp = st.get(8..10).and_then(|m| m.try_into().ok()).map_or(0, u16::from_le_bytes) & 0x7FFF;
    match exp {
        0x7FFF => 2,
        0 if mant == 0 => 1,
        0 => 2,
        _ if mant >> 63 == 0 => 2,
        _ => 0,
    }
}

/// The full 16-bit tag word from the abridged FTW byte, TOP (FSW\[13:11\]) and the registers in
/// stack order (`st` holds ST0..ST7 slots of 16 bytes).
pub fn full_tag_word(abridged: u8, fsw: u16, st: &[u8]) -> u16 {
    let top = (fsw >> 11 & 7) as usize;
    let mut ftw = 0u16;
    for phys in 0..8usize {
        let tag = if abridged >> phys & 1 == 0 {
            3
        } else {
            let sti = (phys + 8 - top) % 8;
            x87_tag(st.get(sti * 16..sti * 16 + 10).unwrap_or(&[]))
        };
        ftw |= tag << (2 * phys);
    }
    ftw
}

fn slice(b: &[u8], r: core::ops::Range<usize>) -> &[u8] {
    b.get(r).unwrap_or(&[])
}

/// Decodes the registers XRSTOR with RFBM = `rfbm` would load from `img` under `layout`.
pub fn decode(img: &Image<'_>, layout: &Layout, rfbm: Xfeatures) -> Decoded {
    let state = State::new(*img, layout, rfbm);
    let mut undecoded = Vec::new();
    let mut truncated = Vec::new();
    let rfbm = state.rfbm();
    let mut data = |c: Component| -> Option<Vec<u8>> {
        match state.data(c) {
            Some(ComponentData::Loaded(b)) => Some(b.to_vec()),
            Some(ComponentData::Init) => {
                let size = layout.geometry(c).map_or(0, |g| g.size as usize);
                let mut v = alloc::vec![0u8; size];
                if c == Component::X87 {
                    v[..2].copy_from_slice(&crate::component::legacy::FCW_INIT.to_le_bytes());
                }
                Some(v)
            }
            None => {
                if rfbm.contains(c) {
                    truncated.push(c);
                }
                None
            }
        }
    };
    let x87 = data(Component::X87);
    let sse = data(Component::SSE);
    let avx = data(Component::AVX);
    let zmm_hi256 = data(Component::ZMM_HI256).filter(|_| layout.recognised(Component::ZMM_HI256));
    let mut regs: Vec<Register> = Vec::new();
    let r = |name: String, c: Component, b: &[u8], k: Kind| Register::new(name, c, b, k);
    if let Some(x) = &x87 {
        let c = Component::X87;
        for i in 0..8 {
            regs.push(r(format!("st{i}"), c, slice(x, 32 + 16 * i..42 + 16 * i), Kind::Float80));
        }
        let fsw = u16::from_le_bytes([x[2], x[3]]);
        regs.push(r("fctrl".into(), c, slice(x, 0..2), Kind::Int));
        regs.push(r("fstat".into(), c, slice(x, 2..4), Kind::Int));
        regs.push(r("ftag".into(), c, &full_tag_word(x[4], fsw, slice(x, 32..160)).to_le_bytes(), Kind::Int));
        regs.push(r("fiseg".into(), c, slice(x, 12..14), Kind::Int));
        regs.push(r("fioff".into(), c, slice(x, 8..12), Kind::Int));
        regs.push(r("foseg".into(), c, slice(x, 20..22), Kind::Int));
        regs.push(r("fooff".into(), c, slice(x, 16..20), Kind::Int));
        regs.push(r("fop".into(), c, &(u16::from_le_bytes([x[6], x[7]]) & 0x7FF).to_le_bytes(), Kind::Int));
        regs.push(r("fip".into(), c, slice(x, 8..16), Kind::Int));
        regs.push(r("fdp".into(), c, slice(x, 16..24), Kind::Int));
        regs.push(r("ftw_abridged".into(), c, slice(x, 4..5), Kind::Int));
    }
    if let Some(x) = &sse {
        for i in 0..16 {
            regs.push(r(format!("xmm{i}"), Component::SSE, slice(x, 16 * i..16 * i + 16), Kind::Vector));
        }
    }
    if let Some(m) = state.mxcsr() {
        regs.push(r("mxcsr".into(), Component::SSE, &m.to_le_bytes(), Kind::Int));
    }
    if let (Some(x), Some(y)) = (&sse, &avx) {
        for i in 0..16 {
            let mut v = slice(x, 16 * i..16 * i + 16).to_vec();
            v.extend_from_slice(slice(y, 16 * i..16 * i + 16));
            regs.push(r(format!("ymm{i}"), Component::AVX, &v, Kind::Vector));
        }
        if let Some(z) = &zmm_hi256 {
            for i in 0..16 {
                let mut v = slice(x, 16 * i..16 * i + 16).to_vec();
                v.extend_from_slice(slice(y, 16 * i..16 * i + 16));
                v.extend_from_slice(slice(z, 32 * i..32 * i + 32));
                regs.push(r(format!("zmm{i}"), Component::ZMM_HI256, &v, Kind::Vector));
            }
        }
    }
    for c in rfbm.iter().filter(|c| !c.is_legacy() && *c != Component::AVX && *c != Component::ZMM_HI256) {
        if !layout.recognised(c) || c.info().is_none() {
            undecoded.push(c);
            continue;
        }
        let decodable = matches!(
            c,
            Component::BNDREGS
                | Component::BNDCSR
                | Component::OPMASK
                | Component::HI16_ZMM
                | Component::PKRU
                | Component::CET_U
                | Component::TILECFG
                | Component::TILEDATA
                | Component::APX
        );
        if !decodable {
            undecoded.push(c);
            continue;
        }
        let Some(b) = data(c) else { continue };
        match c {
            Component::BNDREGS => {
                for i in 0..4 {
                    regs.push(r(format!("bnd{i}raw"), c, slice(&b, 16 * i..16 * i + 16), Kind::Vector));
                }
            }
            Component::BNDCSR => {
                regs.push(r("bndcfgu".into(), c, slice(&b, 0..8), Kind::Int));
                regs.push(r("bndstatus".into(), c, slice(&b, 8..16), Kind::Int));
            }
            Component::OPMASK => {
                for i in 0..8 {
                    regs.push(r(format!("k{i}"), c, slice(&b, 8 * i..8 * i + 8), Kind::Int));
                }
            }
            Component::HI16_ZMM => {
                for i in 0..16 {
                    regs.push(r(format!("zmm{}", i + 16), c, slice(&b, 64 * i..64 * i + 64), Kind::Vector));
                }
            }
            Component::PKRU => regs.push(r("pkru".into(), c, slice(&b, 0..4), Kind::Int)),
            Component::CET_U => {
                regs.push(r("u_cet".into(), c, slice(&b, 0..8), Kind::Int));
                regs.push(r("pl3_ssp".into(), c, slice(&b, 8..16), Kind::Int));
            }
            Component::TILECFG => regs.push(r("tilecfg".into(), c, &b, Kind::Vector)),
            Component::TILEDATA => {
                let per = b.len() / 8;
                for i in 0..8 {
                    regs.push(r(format!("tmm{i}"), c, slice(&b, per * i..per * i + per), Kind::Vector));
                }
            }
            Component::APX => {
                for i in 0..16 {
                    regs.push(r(format!("r{}", i + 16), c, slice(&b, 8 * i..8 * i + 8), Kind::Int));
                }
            }
            _ => {}
        }
    }
    Decoded { registers: regs, undecoded, truncated }
}

/// TILECFG fields (palette, start_row, colsb\[16\], rows\[16\]) from its 64 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TileConfig {
    /// Palette id (0 = tiles released, 1 = eight tiles of up to 16 x 64 bytes).
    pub palette: u8,
    /// Restart row.
    pub start_row: u8,
    /// Bytes per row of each tile.
    pub colsb: [u16; 16],
    /// Rows of each tile.
    pub rows: [u8; 16],
}

impl TileConfig {
    /// Decodes 64 TILECFG bytes; `None` if fewer.
    pub fn parse(b: &[u8]) -> Option<TileConfig> {
        let b = b.get(..64)?;
        let mut colsb = [0u16; 16];
        let mut rows = [0u8; 16];
        for i in 0..16 {
            colsb[i] = u16::from_le_bytes([b[16 + 2 * i], b[17 + 2 * i]]);
            rows[i] = b[48 + i];
        }
        Some(TileConfig { palette: b[0], start_row: b[1], colsb, rows })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpuid::XsaveFeatures;
    use crate::fixtures::{AMD_ZEN2, AMD_ZEN4, INTEL_SKYLAKE_SP, layout};
    use crate::image::ImageBuf;
    use crate::layout::Geometry;

    const ONE_AND_HALF: [u8; 10] = [0, 0, 0, 0, 0, 0, 0, 0xC0, 0xFF, 0x3F];

    #[test]
    fn x87_values_and_tags() {
        assert_eq!(f80_to_f64(&ONE_AND_HALF), 1.5);
        assert_eq!(f80_to_f64(&[0, 0, 0, 0, 0, 0, 0, 0x80, 0x00, 0xC0]), -2.0);
        assert_eq!(f80_to_f64(&[0; 10]), 0.0);
        assert_eq!(f80_to_f64(&[0, 0, 0, 0, 0, 0, 0, 0x80, 0xFF, 0x7F]), f64::INFINITY);
        assert!(f80_to_f64(&[1, 0, 0, 0, 0, 0, 0, 0xC0, 0xFF, 0x7F]).is_nan());
        let mut st = [0u8; 128];
        st[..10].copy_from_slice(&ONE_AND_HALF);
        assert_eq!(full_tag_word(0x01, 0, &st), 0xFFFC);
        assert_eq!(full_tag_word(0x03, 0, &st), 0xFFF4, "ST1 = +0 is tagged zero");
        // TOP = 7: ST0 is physical register 7.
        assert_eq!(full_tag_word(0x80, 7 << 11, &st), 0x3FFF);
        st[8] = 0;
        st[9] = 0; // exponent 0, mantissa non-zero: denormal, special
        assert_eq!(full_tag_word(0x01, 0, &st), 0xFFFE);
    }

    #[test]
    fn decodes_at_each_vendors_offsets() {
        for (rows, xcr0) in [(INTEL_SKYLAKE_SP, 0x2FFu64), (AMD_ZEN4, 0x2E7)] {
            let l = layout(rows);
            let xcr0 = Xfeatures(xcr0);
            let mut b = ImageBuf::init(l.standard_size(xcr0).unwrap() as usize, Xfeatures(0));
            b[32..42].copy_from_slice(&ONE_AND_HALF);
            b[4] = 1;
            let hi16 = l.standard_range(Component::HI16_ZMM).unwrap();
            b[hi16.start + 64] = 0x17; // zmm17 byte 0
            let k = l.standard_range(Component::OPMASK).unwrap();
            b[k.start + 8] = 0x42; // k1
            let p = l.standard_range(Component::PKRU).unwrap();
            b[p.start..p.start + 4].copy_from_slice(&0x5555_5554u32.to_le_bytes());
            b.set_xstate_bv(xcr0);
            let d = decode(&b.image(), &l, xcr0);
            assert_eq!(d.get("st0").unwrap().as_f64(), Some(1.5));
            assert_eq!(d.get("ftag").unwrap().as_u64(), Some(0xFFFC));
            assert_eq!(d.get("fctrl").unwrap().as_u64(), Some(0x037F));
            assert_eq!(d.get("mxcsr").unwrap().as_u64(), Some(0x1F80));
            assert_eq!(d.get("k1").unwrap().as_u64(), Some(0x42));
            assert_eq!(d.get("zmm17").unwrap().bytes[0], 0x17);
            assert_eq!(d.get("zmm17").unwrap().bytes.len(), 64);
            assert_eq!(d.get("zmm0").unwrap().bytes.len(), 64);
            assert_eq!(d.get("pkru").unwrap().hex(), "0x55555554");
            assert!(d.undecoded.is_empty() && d.truncated.is_empty());
            if xcr0.contains(Component::BNDREGS) {
                assert!(d.get("bnd3raw").is_some() && d.get("bndstatus").is_some());
            }
            // Clear bits decode as init values, whatever the bytes hold.
            b.set_xstate_bv(Xfeatures(0));
            let d = decode(&b.image(), &l, xcr0);
            assert_eq!(d.get("st0").unwrap().as_f64(), Some(0.0));
            assert_eq!(d.get("pkru").unwrap().as_u64(), Some(0));
        }
    }

    #[test]
    fn refuses_what_the_layout_does_not_recognise() {
        let l = layout(AMD_ZEN2);
        let xcr0 = Xfeatures(0x207);
        let b = ImageBuf::init(l.standard_size(xcr0).unwrap() as usize, Xfeatures(0));
        let d = decode(&b.image(), &l, xcr0);
        assert_eq!(d.undecoded, [Component::PKRU]);
        assert!(d.get("pkru").is_none());
        // Too short: the components beyond the end are named, not decoded.
        let short = ImageBuf::from_bytes(&b[..600]).unwrap();
        let mut s = short.clone();
        s.set_xstate_bv(Xfeatures(0x4));
        assert_eq!(decode(&s.image(), &l, xcr0).truncated, [Component::AVX]);
    }

    #[test]
    fn cet_and_apx() {
        let l = layout(AMD_ZEN4);
        let m = Xfeatures(0x8E7);
        let mut b = ImageBuf::init(l.compacted_size(m).unwrap() as usize, Xfeatures(1 << 63 | m.bits()));
        let r = b.image().component_range(&l, Component::CET_U).unwrap();
        b[r.start + 8..r.start + 16].copy_from_slice(&0x7fff_f000u64.to_le_bytes());
        b.set_xstate_bv(Xfeatures(0x800));
        let d = decode(&b.image(), &l, m);
        assert_eq!(d.get("pl3_ssp").unwrap().as_u64(), Some(0x7fff_f000));
        let g = |size, offset| Geometry { size, offset, ..Geometry::default() };
        let apx = Layout::from_components(
            XsaveFeatures(0xF),
            [
                (Component::X87, g(0, 0)),
                (Component::SSE, g(0, 0)),
                (Component::AVX, g(256, 576)),
                (Component::APX, g(128, 960)),
            ],
        )
        .unwrap();
        let x = Xfeatures(0x80007);
        let mut b = ImageBuf::init(1088, Xfeatures(0));
        b[960 + 8 * 15..960 + 8 * 16].copy_from_slice(&0x3131u64.to_le_bytes());
        b.set_xstate_bv(Xfeatures(0x80000));
        let d = decode(&b.image(), &apx, x);
        assert_eq!(d.get("r31").unwrap().as_u64(), Some(0x3131));
        assert_eq!(d.get("r16").unwrap().as_u64(), Some(0));
    }
}
