//! The running CPU: CPUID and XGETBV.
//!
//! Each CPUID executed in a guest is a VM exit, so callers read the host once
//! ([`host_cpuid`]) and work from the resulting [`CpuidData`] and [`Layout`] afterwards.
//!
//! [`Layout`]: xstate::Layout

use core::arch::asm;
use core::arch::x86_64::__cpuid_count;

use xstate::Xfeatures;
use xstate::cpuid::{CpuidData, CpuidFormat, Regs};

/// Executes CPUID with EAX = `leaf`, ECX = `subleaf`.
pub fn cpuid(leaf: u32, subleaf: u32) -> Regs {
    // Older Rust declares the intrinsic `unsafe`; current Rust does not.
    #[allow(unused_unsafe)]
    // SAFETY: CPUID exists on every x86_64 CPU and has no side effects beyond a possible VM
    // exit.
    let r = unsafe { __cpuid_count(leaf, subleaf) };
    Regs::new(r.eax, r.ebx, r.ecx, r.edx)
}

/// Reads the CPUID leaves the library uses: 0, 1, 6, 7 (subleaves 0 and 1), all 64 subleaves
/// of 0xD, 0x14.0, 0x1D (palettes), 0x1E.0, 0x24.0 where the maximum basic leaf allows, and
/// 0x8000_0000..0x8000_0008.
pub fn host_cpuid() -> CpuidData {
    let mut d = CpuidData::new(CpuidFormat::Host);
    let max = cpuid(0, 0).eax;
    d.insert(0, 0, cpuid(0, 0));
    for (leaf, subs) in [(1u32, 1u32), (6, 1), (7, 2), (0x14, 1), (0x1E, 1), (0x24, 1)] {
        if leaf <= max {
            for s in 0..subs {
                d.insert(leaf, s, cpuid(leaf, s));
            }
        }
    }
    if max >= 0xD {
        for s in 0..64 {
            let r = cpuid(0xD, s);
            // Like AIDA64, record subleaves 0 and 1 always and the rest when non-zero, so a
            // host dump round-trips through the text formats.
            if s < 2 || !r.is_zero() {
                d.insert(0xD, s, r);
            }
        }
    }
    if max >= 0x1D {
        let palettes = cpuid(0x1D, 0).eax;
        for s in 0..=palettes.min(8) {
            d.insert(0x1D, s, cpuid(0x1D, s));
        }
    }
    let ext = cpuid(0x8000_0000, 0).eax;
    if ext >= 0x8000_0000 {
        for leaf in 0x8000_0000..=ext.min(0x8000_0008) {
            d.insert(leaf, 0, cpuid(leaf, 0));
        }
    }
    d
}

/// CPUID.1:ECX.OSXSAVE\[27\]: the OS has set CR4.OSXSAVE, so XGETBV and the XSAVE family work.
pub fn osxsave() -> bool {
    cpuid(1, 0).ecx >> 27 & 1 != 0
}

fn xgetbv(index: u32) -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: XGETBV only reads an extended control register into EDX:EAX. Callers check
    // CPUID.1:ECX.OSXSAVE (and, for index 1, CPUID 0xD.1 EAX[2]) first, so it cannot #UD or #GP.
    unsafe {
        asm!("xgetbv", in("ecx") index, out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags));
    }
    (hi as u64) << 32 | lo as u64
}

/// XCR0 as XGETBV(0) reads it, or `None` when the OS has not enabled XSAVE.
pub fn xcr0() -> Option<Xfeatures> {
    osxsave().then(|| Xfeatures(xgetbv(0)))
}

/// XCR0 & XINUSE as XGETBV(1) reads it, or `None` when XGETBV1 is not enumerated.
///
/// XINUSE of the *calling thread at this instant*: the Rust code around the call uses SSE, so
/// bit 1 is usually set.
pub fn xinuse() -> Option<Xfeatures> {
    (osxsave() && cpuid(0xD, 1).eax & 4 != 0).then(|| Xfeatures(xgetbv(1)))
}
