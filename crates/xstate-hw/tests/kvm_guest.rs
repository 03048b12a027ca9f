//! A real guest moves vector and opmask registers; the host reads and writes them through
//! KVM_GET_XSAVE2 / KVM_SET_XSAVE at the offsets the layout gives.

#[macro_use]
mod common;

use xstate::image::Image;
use xstate::image::regs::decode;
use xstate::{Component, Layout, Xfeatures};
use xstate_hw::kvm::guest::{AVX_DATA, AVX512_DATA, Guest, LOAD_DATA, Routine, STORE_DATA, write_registers};
use xstate_hw::selfcheck::Rng;

use common::kvm_or_skip;

/// The register file as the routines lay it out in memory, read from a standard image with the
/// library's register decoder.
fn regs_from_image(l: &Layout, img: &[u8], avx512: bool) -> Vec<u8> {
    let rfbm = if avx512 { Xfeatures(0xE7) } else { Xfeatures(0x7) };
    let d = decode(&Image::new(img).unwrap(), l, rfbm);
    let mut out = Vec::new();
    let names: Vec<String> = if avx512 {
        (0..32).map(|i| format!("zmm{i}")).chain((0..8).map(|i| format!("k{i}"))).collect()
    } else {
        (0..16).map(|i| format!("ymm{i}")).collect()
    };
    for n in names {
        out.extend_from_slice(&d.get(&n).unwrap_or_else(|| panic!("{n} not decoded")).bytes);
    }
    out
}

#[test]
fn guest_and_host_see_the_same_registers() {
    let Some(kvm) = kvm_or_skip() else { return };
    let cpuid = kvm.supported_cpuid().unwrap();
    let layout = Layout::from_leaf0d(cpuid.leaf0d()).unwrap();
    let supported = layout.user_supported();
    if !supported.contains(Component::AVX) {
        return skip!("KVM offers no AVX to guests");
    }
    let avx512 = Xfeatures::AVX512.is_subset_of(supported) && std::env::var_os("XSTATE_GUEST_AVX_ONLY").is_none();
    let xcr0 = if avx512 { Xfeatures(0xE7) } else { Xfeatures(0x7) };
    let (load, store, len) = if avx512 {
        (Routine::LoadAvx512, Routine::StoreAvx512, AVX512_DATA)
    } else {
        println!("note: KVM offers no AVX-512; YMM only");
        (Routine::LoadAvx, Routine::StoreAvx, AVX_DATA)
    };
    let mut g = Guest::new(&kvm, &cpuid, xcr0).unwrap();
    let mut rng = Rng::new(42);
    for round in 0..20 {
        // Guest writes, host reads.
        let mut values = vec![0u8; len];
        rng.fill(&mut values);
        g.memory()[LOAD_DATA as usize..LOAD_DATA as usize + len].copy_from_slice(&values);
        g.run(load).unwrap();
        let img = g.vcpu().get_xsave().unwrap();
        let bv = u64::from_le_bytes(img[512..520].try_into().unwrap());
        assert_eq!(bv & xcr0.bits() & !0x1, xcr0.bits() & !0x1, "round {round}: XSTATE_BV {bv:#x}");
        assert_eq!(regs_from_image(&layout, &img, avx512), values, "round {round}: host view of guest registers");
        // Host writes, guest reads.
        let mut new = vec![0u8; len];
        rng.fill(&mut new);
        let mut img2 = img.clone();
        assert!(write_registers(&layout, &mut img2, &new, avx512));
        g.vcpu().set_xsave(&img2).unwrap();
        g.run(store).unwrap();
        assert_eq!(&g.memory()[STORE_DATA as usize..STORE_DATA as usize + len], &new[..], "round {round}: guest view");
    }
    println!("guest round trips: 20 in each direction ({} bytes of registers each)", len);
}
