//! The QEMU migration-stream walker and `cpu` section reader on arbitrary bytes (byte 0 picks
//! the layout and accelerator): never a panic; a stream that reads patches back to itself byte
//! for byte with its own contents; a patched register reads back; every error has a message.
//! Seeded with the fixtures cut down to their device sections (`seeds/make_vmm_seeds.py`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use xstate::fixtures::{SAMPLES as FIXTURES, layout};
use xstate::record::qemu::{Accel, Stream};
use xstate::record::{Format, Options, patch, read};

fuzz_target!(|data: &[u8]| {
    let Some((&sel, bytes)) = data.split_first() else { return };
    let l = layout(FIXTURES[(sel & 0x0f) as usize % FIXTURES.len()]);
    let mut opts = Options::default();
    opts.qemu_accel = match sel >> 4 & 3 {
        1 => Some(Accel::Kvm),
        2 => Some(Accel::Tcg),
        _ => None,
    };
    if let Ok(s) = Stream::parse(bytes) {
        for c in &s.cpus {
            let r = s.registers(c);
            let _ = (r.not_init(), r.kvm_consistent(), r.order_free());
        }
        let _ = s.accel(opts.qemu_accel);
    }
    match read(Format::Qemu, bytes, &l, &opts) {
        Ok(c) => {
            let same = patch(Format::Qemu, bytes, &c, &l, &l, &opts).expect("a stream patches with its own contents");
            assert!(same == bytes, "patching with the stream's own contents changed it");
            // Edit xmm0's low lane of the first vCPU; it reads back.
            let mut c2 = c.clone();
            if let Some(img) = c2.states.first_mut().and_then(|s| s.image.as_mut()) {
                img[160] ^= 0x5a;
                let want = img[160];
                if let Ok(out) = patch(Format::Qemu, bytes, &c2, &l, &l, &opts) {
                    let back = read(Format::Qemu, &out, &l, &opts).expect("a patched stream reads back");
                    assert_eq!(back.states[0].image.as_ref().unwrap()[160], want);
                }
            }
        }
        Err(e) => {
            let _ = e.to_string();
            let _ = core::error::Error::source(&e);
        }
    }
});
