//! `xstate kvm`: capabilities and the guest round trip, where /dev/kvm exists.

#[macro_use]
mod common;

use common::xstate;

#[test]
fn kvm_reports_and_round_trips() {
    if !std::path::Path::new("/dev/kvm").exists() {
        return skip!("/dev/kvm does not exist");
    }
    let (code, stdout, stderr) = xstate(&["kvm", "--json", "--rounds", "5"]);
    if code == 2 {
        return skip!("KVM unusable here: {stderr}");
    }
    assert_eq!(code, 0, "{stdout}{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["ok"], true);
    assert!(v["kvm_cap_xsave2"].as_u64().unwrap() >= 4096 || v["kvm_cap_xsave2"] == 0);
    assert!(v["round_trip"]["checked"].as_u64().unwrap() >= 5 * 17, "{v}");
    assert!(v["round_trip"]["failures"].as_array().unwrap().is_empty());
    println!("xstate kvm: {} values checked", v["round_trip"]["checked"]);
}

/// `--rounds 0` would check nothing and report success: a usage error, before /dev/kvm is used.
#[test]
fn kvm_rounds_zero_is_a_usage_error() {
    for args in [&["kvm", "--rounds", "0"][..], &["kvm", "--json", "--rounds", "0"]] {
        let (code, stdout, stderr) = xstate(args);
        assert_eq!(code, 2, "{args:?}: {stdout}{stderr}");
        assert!(stdout.is_empty(), "{stdout}");
        assert!(stderr.starts_with("xstate: ") && stderr.contains("--rounds"), "{stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    }
}
