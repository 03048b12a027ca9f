//! A child holding a known state, read and changed through ptrace, and dumped to a core.

#[macro_use]
mod common;

use xstate::Component;
use xstate_hw::ptrace;
use xstate_hw::selfcheck::{Rng, crafted_image};
use xstate_hw::tracee::{self, Ending};

use common::{Stopped, host, regset_or_skip, stopped_tracee};

#[test]
fn ptrace_reads_and_writes_a_known_state() {
    let Stopped { layout: l, xcr0, image: img, child, .. } = stopped_tracee(7);
    let Some(got) = regset_or_skip(child.pid()) else { return };
    assert_eq!(got.len(), l.standard_size(xcr0).unwrap() as usize, "kernel user size");
    assert_eq!(u64::from_le_bytes(got[464..472].try_into().unwrap()), xcr0.bits(), "XCR0 at 464");
    for c in xcr0.iter().filter(|c| !c.is_legacy() && *c != Component::TILECFG) {
        let r = l.standard_range(c).unwrap();
        assert_eq!(got[r.clone()], img[r], "{c} as the child loaded it");
    }
    assert_eq!(got[160..416], img[160..416], "XMM");
    // Change the upper YMM halves and write them back.
    let mut changed = got.clone();
    let ymm = l.standard_range(Component::AVX).unwrap();
    for b in &mut changed[ymm.clone()] {
        *b ^= 0x5A;
    }
    ptrace::set_xstate(child.pid(), &changed).unwrap();
    let seen = child.resume_and_report().unwrap();
    assert_eq!(seen[ymm.clone()], changed[ymm], "the child sees the new YMM state");
}

#[test]
fn abort_leaves_a_core_with_the_state() {
    let host = host();
    let xcr0 = host.xcr0();
    let img = crafted_image(host.layout(), xcr0, &mut Rng::new(9));
    let dir = std::env::temp_dir().join(format!("xstate-core-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let child = tracee::spawn(&host, &img, Ending::Abort, Some(&dir)).unwrap();
    match child.wait_core().unwrap() {
        Some(p) => {
            let len = std::fs::metadata(&p).unwrap().len();
            println!("core dump {} ({len} bytes)", p.display());
            assert!(len > 0);
        }
        None => skip!(
            "the kernel wrote no core (core_pattern {:?})",
            std::fs::read_to_string("/proc/sys/kernel/core_pattern").unwrap_or_default().trim()
        ),
    }
    if std::env::var_os("XSTATE_KEEP_CORE").is_none() {
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
