//! A real guest moves vector and opmask registers; the host reads and writes them through
//! KVM_GET_XSAVE2 / KVM_SET_XSAVE at the offsets the layout gives.

use xstate::{Component, Layout, Xfeatures};
use xstate_hw::kvm::KvmSystem;
use xstate_hw::kvm::guest::{AVX_DATA, AVX512_DATA, Guest, LOAD_DATA, Routine, STORE_DATA};
use xstate_hw::selfcheck::Rng;

/// The register file as the routines lay it out in memory, from a standard image.
fn regs_from_image(l: &Layout, img: &[u8], avx512: bool) -> Vec<u8> {
    let off = |c: Component| l.geometry(c).unwrap().offset as usize;
    let mut out = Vec::new();
    let n = if avx512 { 32 } else { 16 };
    for i in 0..n {
        if i < 16 {
            out.extend_from_slice(&img[160 + 16 * i..176 + 16 * i]);
            out.extend_from_slice(&img[off(Component::AVX) + 16 * i..off(Component::AVX) + 16 * i + 16]);
            if avx512 {
                let z = off(Component::ZMM_HI256) + 32 * i;
                out.extend_from_slice(&img[z..z + 32]);
            }
        } else {
            let z = off(Component::HI16_ZMM) + 64 * (i - 16);
            out.extend_from_slice(&img[z..z + 64]);
        }
    }
    if avx512 {
        let k = off(Component::OPMASK);
        out.extend_from_slice(&img[k..k + 64]);
    }
    out
}

/// The inverse: writes the register file into a standard image.
fn regs_into_image(l: &Layout, img: &mut [u8], data: &[u8], avx512: bool) {
    let off = |c: Component| l.geometry(c).unwrap().offset as usize;
    let (n, w) = if avx512 { (32, 64) } else { (16, 32) };
    for i in 0..n {
        let r = &data[w * i..w * i + w];
        if i < 16 {
            img[160 + 16 * i..176 + 16 * i].copy_from_slice(&r[..16]);
            img[off(Component::AVX) + 16 * i..off(Component::AVX) + 16 * i + 16].copy_from_slice(&r[16..32]);
            if avx512 {
                let z = off(Component::ZMM_HI256) + 32 * i;
                img[z..z + 32].copy_from_slice(&r[32..64]);
            }
        } else {
            let z = off(Component::HI16_ZMM) + 64 * (i - 16);
            img[z..z + 64].copy_from_slice(r);
        }
    }
    if avx512 {
        let k = off(Component::OPMASK);
        img[k..k + 64].copy_from_slice(&data[2048..2112]);
    }
}

#[test]
fn guest_and_host_see_the_same_registers() {
    let kvm = match KvmSystem::open() {
        Ok(Some(k)) => k,
        Ok(None) => return println!("SKIP: /dev/kvm does not exist"),
        Err(e) => return println!("SKIP: /dev/kvm cannot be opened: {e}"),
    };
    let cpuid = kvm.supported_cpuid().unwrap();
    let layout = Layout::from_leaf0d(cpuid.leaf0d()).unwrap();
    let supported = layout.user_supported();
    if !supported.contains(Component::AVX) {
        return println!("SKIP: KVM offers no AVX to guests");
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
        regs_into_image(&layout, &mut img2, &new, avx512);
        g.vcpu().set_xsave(&img2).unwrap();
        g.run(store).unwrap();
        assert_eq!(&g.memory()[STORE_DATA as usize..STORE_DATA as usize + len], &new[..], "round {round}: guest view");
    }
    println!("guest round trips: 20 in each direction ({} bytes of registers each)", len);
}
