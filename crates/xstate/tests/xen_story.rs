//! Issue 11 "Also": the seed's story (examples/xen_policy_change.rs) as a test, with the sizes
//! and fields it measures pinned.

#[path = "../examples/xen_policy_change.rs"]
mod story;

use xstate::Xfeatures;

#[test]
fn policy_change_resize_and_forward_compatible_blob_across_vendors() {
    let s = story::run().unwrap_or_else(|e| panic!("{e}"));
    // Sapphire Rapids compacted sizes: x87|SSE|AVX then CET_U (16) and CET_S (24): 832 + 40;
    // with AVX-512 (64 + 512 + 1024) and PKRU (8): 2440 + 40.
    assert_eq!(s.area_sizes, [872, 2480, 872]);
    assert_eq!(s.old_blob, 16 + 2696, "Intel standard_size(0x2e7)");
    assert_eq!(s.fc_blob, 16 + 2440 + 16, "compacted x87..PKRU, then CET_U");
    assert_eq!(s.fc_fields, [Xfeatures(0xAE7), Xfeatures(0xAE7), Xfeatures(0x2E7), Xfeatures(0x800)]);
    assert!(s.old_blob_on_amd.contains("xen-domctl"), "{}", s.old_blob_on_amd);
    assert_eq!(s.amd_standard, 2440, "Zen 4 standard_size(0x2e7)");
}
