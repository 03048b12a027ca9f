//! CRIU images on arbitrary bytes: the core image's FPU reader, its image for a layout (byte 0
//! picks it), the patch of that image back into the same bytes (which must give them back
//! unchanged and read again to the same image), and the cpuinfo reader with CRIU's check.
//! Never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use xstate::fixtures::{AMD_ZEN4, INTEL_AMX_GUEST, INTEL_SKYLAKE_SP, layout};
use xstate::record::criu::core::CoreFpu;
use xstate::record::criu::cpuinfo::CpuInfo;
use xstate::record::{self, Format, Options};

fuzz_target!(|data: &[u8]| {
    let Some((&sel, bytes)) = data.split_first() else { return };
    let l = layout([INTEL_SKYLAKE_SP, AMD_ZEN4, INTEL_AMX_GUEST][sel as usize % 3]);
    if let Ok(info) = CpuInfo::parse(bytes) {
        for e in &info.x86 {
            let _ = (e.cpu_cap_fpu(e), e.quirk());
        }
    }
    let Ok(core) = CoreFpu::parse(bytes) else { return };
    let _ = core.held();
    let Ok(c) = record::read(Format::CriuCore, bytes, &l, &Options::default()) else { return };
    let out = record::patch(Format::CriuCore, bytes, &c, &l, &l, &Options::default()).expect("a read state patches back");
    assert_eq!(out, bytes, "an unchanged state gives the file back");
});
