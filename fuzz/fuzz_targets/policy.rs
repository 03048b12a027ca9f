//! Feature-selection and mask parsing, then policy derivation against real layouts: no panic,
//! and every derived policy yields a leaf 0xD its own layout accepts.
#![no_main]

use libfuzzer_sys::fuzz_target;
use xstate::policy::{Policy, Selection};
use xstate::{Xfeatures, fixtures};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = text.parse::<Xfeatures>();
    let Ok(sel) = Selection::parse(&text) else { return };
    for rows in [fixtures::INTEL_SAPPHIRE_RAPIDS, fixtures::AMD_ZEN4, fixtures::AMD_FAM15H_LWP, fixtures::AMD_ZEN2] {
        let host = fixtures::layout(rows);
        if let Ok(p) = Policy::derive(&host, &sel) {
            let leaf = p.leaf0d(p.xcr0_max(), p.xss_max()).expect("the policy's own maximum is settable");
            xstate::Layout::from_leaf0d(&leaf).expect("a derived leaf is a valid layout");
            assert!(p.standard_size_max() <= host.standard_size_max());
        }
    }
});
