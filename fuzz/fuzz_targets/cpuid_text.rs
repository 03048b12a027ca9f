//! Every CPUID dump reader (AIDA64 text, `cpuid -r`, JSON) on arbitrary bytes: no panic, and
//! whatever parses must give a layout or a typed error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use xstate::Layout;
use xstate::cpuid;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    for r in [cpuid::parse(&text), cpuid::parse_aida(&text), cpuid::parse_cpuid_tool(&text), cpuid::parse_json(&text)] {
        if let Ok(d) = r {
            if let Ok(l) = Layout::from_leaf0d(d.leaf0d()) {
                let _ = l.cross_check(None, None);
            }
        }
    }
});
