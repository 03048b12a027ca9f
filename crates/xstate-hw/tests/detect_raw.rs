//! Format recognition (`--format auto`, the default of every command) never takes what the CPU
//! saved for a record: XSAVE and XSAVEC output of random states, as is and mutated the way the
//! hardware-profile checks mutate it (header bits, reserved bytes, MXCSR, bytes 464..511), and
//! with random bytes flipped anywhere, is recognised as a bare image (issue 10 item 9).

#[macro_use]
mod common;

use xstate::Xfeatures;
use xstate::record::{Format, detect};
use xstate_hw::SaveInstr;
use xstate_hw::selfcheck::Rng;
use xstate_hw::stategen::StateGen;

use common::{host, mutate, mxcsr_mask};

#[test]
fn what_the_cpu_saved_is_read_as_a_bare_image() {
    let h = host();
    let l = h.layout().clone();
    let xcr0 = h.xcr0();
    let mask = mxcsr_mask(&h);
    let has_xsavec = h.has(SaveInstr::Xsavec);
    if !has_xsavec {
        skip!("no XSAVEC: only XSAVE output checked");
    }
    let g = StateGen::new(&l, xcr0, mask);
    let mut rng = Rng::new(common::seed(0xDE7EC7));
    let n_cases = common::cases(3000);
    let mut checked = 0usize;
    for case in 0..n_cases {
        let state = g.standard(&mut rng);
        let instr = if has_xsavec && case % 2 == 1 { SaveInstr::Xsavec } else { SaveInstr::Xsave };
        let save_rfbm = if case % 3 == 0 { xcr0 } else { g.random_mask(&mut rng) | Xfeatures::X87 };
        // Zero where the save writes nothing (XSAVE leaves XCOMP_BV alone); mutations put garbage
        // in bytes 464..511 and elsewhere.
        let base = h.xrstor_then_save(&state, xcr0, instr, save_rfbm, 0).unwrap();
        // As long as the area, and cut to what the instruction wrote.
        let img = xstate::image::Image::new(&base).unwrap();
        let written = match img.form() {
            xstate::image::Form::Standard => l.standard_size(save_rfbm).unwrap() as usize,
            xstate::image::Form::Compacted => {
                let m = img.header().compacted_components();
                l.compacted_size(m).unwrap_or_else(|| panic!("XCOMP_BV {m} of RFBM {save_rfbm}")) as usize
            }
        };
        for len in [base.len(), written] {
            let mut v = base[..len].to_vec();
            let what = format!("case {case}: {} of RFBM {save_rfbm}, {len} bytes", instr.name());
            assert_eq!(detect(&v, &l), Some(Format::Image), "{what}");
            for k in 0..1 + rng.next_u64() % 3 {
                let m = mutate(&mut v, xcr0, mask, &mut rng);
                assert_eq!(detect(&v, &l), Some(Format::Image), "{what}, mutation {k}: {m}");
            }
            // A byte flipped anywhere past the first 16 (the bytes where a record's magic or type
            // code would be: FCW, FSW, FTW, FOP, FIP).
            let at = 16 + (rng.next_u64() as usize % (len - 16));
            v[at] ^= 1 << (rng.next_u64() % 8);
            assert_eq!(detect(&v, &l), Some(Format::Image), "{what}, byte {at} flipped");
            checked += 1;
        }
    }
    eprintln!("{checked} saved and mutated images recognised as bare images");
}
