//! Migration between two VMs whose policies differ: state taken from one vCPU as a portable
//! record, checked with the compat logic, re-laid-out where needed and restored into the other,
//! where guest code reads it; refused with reasons when the destination cannot hold it.

#[macro_use]
mod common;

use xstate::compat::Verdict;
use xstate::cpuid::CpuidData;
use xstate::policy::{Policy, Selection};
use xstate::record::{self, Format, Options};
use xstate::{Component, Xfeatures, fixtures};
use xstate_hw::kvm::guest::{AVX512_DATA, Guest, LOAD_DATA, Routine, STORE_DATA};
use xstate_hw::kvm::migrate::{self, MigrateError};
use xstate_hw::selfcheck::Rng;

use common::kvm_or_skip;

fn guest_cpuid(supported: &CpuidData, p: &Policy, xcr0: Xfeatures) -> CpuidData {
    let mut c = supported.clone();
    *c.leaf0d_mut() = p.leaf0d(xcr0, Xfeatures::EMPTY).unwrap();
    c
}

#[test]
fn migrate_between_vms() {
    let Some(kvm) = kvm_or_skip() else { return };
    let host = common::host().layout().clone();
    let supported = kvm.supported_cpuid().unwrap();
    if !Xfeatures(0xE7).is_subset_of(supported.leaf0d().xcr0_supported() & host.user_supported()) {
        return skip!("KVM offers no AVX-512 to guests; the migration test moves ZMM/opmask state");
    }
    let wide = Policy::derive(&host, &Selection::parse("avx,avx512").unwrap()).unwrap();
    let narrow = Policy::derive(&host, &Selection::parse("avx").unwrap()).unwrap();
    let xcr0 = Xfeatures(0xE7);

    // Source VM: guest code loads known ZMM0-31 and k0-7.
    let mut a = Guest::new(&kvm, &guest_cpuid(&supported, &wide, xcr0), xcr0).unwrap();
    let mut values = vec![0u8; AVX512_DATA];
    Rng::new(3).fill(&mut values);
    a.memory()[LOAD_DATA as usize..LOAD_DATA as usize + AVX512_DATA].copy_from_slice(&values);
    a.run(Routine::LoadAvx512).unwrap();
    let rec = migrate::save(kvm.raw(), a.vcpu().fds().1, &host).unwrap();

    // 1. Same policy on the destination: compatible as is; guest code there reads the values.
    let mut b = Guest::new(&kvm, &guest_cpuid(&supported, &wide, xcr0), xcr0).unwrap();
    let report = migrate::restore(kvm.raw(), b.vcpu().fds().1, &rec, &host, &wide).unwrap();
    assert_eq!(report.verdict, Verdict::Compatible, "{report:?}");
    b.run(Routine::StoreAvx512).unwrap();
    assert_eq!(&b.memory()[STORE_DATA as usize..STORE_DATA as usize + AVX512_DATA], &values[..]);

    // 2. Through a record re-laid out for another CPU (Intel Skylake-SP offsets, as if the
    //    state had been sent to an Intel host and back): the destination re-lays it out again.
    let intel = fixtures::layout(fixtures::INTEL_SKYLAKE_SP);
    let c = record::read(Format::Portable, &rec, &host, &Options::default()).unwrap();
    let src_layout = c.layout.clone().unwrap();
    let rec_intel = record::write(Format::Portable, &c, &src_layout, &intel, &Options::default()).unwrap();
    let ci = record::read(Format::Portable, &rec_intel, &host, &Options::default()).unwrap();
    let relaid = ci.layout.clone().unwrap();
    if host.geometry(Component::OPMASK) != relaid.geometry(Component::OPMASK) {
        println!(
            "record re-laid out to Intel offsets: opmask at {:#x}",
            relaid.geometry(Component::OPMASK).unwrap().offset
        );
    }
    let mut b2 = Guest::new(&kvm, &guest_cpuid(&supported, &wide, xcr0), xcr0).unwrap();
    let report = migrate::restore(kvm.raw(), b2.vcpu().fds().1, &rec_intel, &host, &wide).unwrap();
    // Only the components the record carries decide: on an Intel host the AVX-512 offsets
    // are Skylake-SP's own, so the record is compatible as is even though the layouts differ
    // elsewhere (MPX, PKRU, AMX).
    let same = xcr0.iter().all(|c| relaid.geometry(c) == host.geometry(c));
    let expect = if same { Verdict::Compatible } else { Verdict::AfterRelayout };
    assert_eq!(report.verdict, expect, "{report:?}");
    b2.run(Routine::StoreAvx512).unwrap();
    assert_eq!(&b2.memory()[STORE_DATA as usize..STORE_DATA as usize + AVX512_DATA], &values[..]);

    // 3. A destination policy without AVX-512: refused, naming the components, vCPU untouched.
    let c7 = Xfeatures(0x7);
    let d = Guest::new(&kvm, &guest_cpuid(&supported, &narrow, c7), c7).unwrap();
    let before = d.vcpu().get_xsave().unwrap();
    match migrate::restore(kvm.raw(), d.vcpu().fds().1, &rec, &host, &narrow) {
        Err(MigrateError::Incompatible(r)) => {
            let text = MigrateError::Incompatible(r.clone()).to_string();
            println!("refused: {text}");
            assert_eq!(r.verdict, Verdict::Incompatible);
            assert!(text.contains("opmask") && text.contains("zmm_hi256") && text.contains("hi16_zmm"), "{text}");
            assert!(r.mask.contains(Component::OPMASK), "mask names AVX-512: {}", r.mask);
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(d.vcpu().get_xsave().unwrap(), before, "a refused migration changes nothing");

    // 4. A source guest running with XCR0 0xe7 whose AVX-512 state is init: still refused by
    //    the compatibility check itself (KVM_SET_XCRS would refuse that XCR0 there).
    let idle = Guest::new(&kvm, &guest_cpuid(&supported, &wide, xcr0), xcr0).unwrap();
    let rec_idle = migrate::save(kvm.raw(), idle.vcpu().fds().1, &host).unwrap();
    let c = record::read(Format::Portable, &rec_idle, &host, &Options::default()).unwrap();
    let img = c.state().and_then(|s| s.image.as_ref()).unwrap();
    assert!((img.image().xstate_bv() & Xfeatures(0xE0)).is_empty(), "AVX-512 init");
    let e = Guest::new(&kvm, &guest_cpuid(&supported, &narrow, c7), c7).unwrap();
    let before = e.vcpu().get_xsave().unwrap();
    match migrate::restore(kvm.raw(), e.vcpu().fds().1, &rec_idle, &host, &narrow) {
        Err(MigrateError::Incompatible(r)) => {
            assert!(r.reasons.iter().any(|x| x.component() == Some(Component::OPMASK)), "{:?}", r.reasons);
        }
        other => panic!("expected a refusal for enabled-but-init AVX-512, got {other:?}"),
    }
    assert_eq!(e.vcpu().get_xsave().unwrap(), before, "a refused migration changes nothing");
    println!("migrations: as-is and via re-layout restored 2112 register bytes exactly; AVX-only destination refused");
}
