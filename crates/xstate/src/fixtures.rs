//! Leaf 0xD of a few well-known CPUs, as their CPUID dumps report it (InstLatx64 collection and
//! this project's machines). For tests, examples, benchmarks and documentation: real code reads
//! CPUID, never a fixture chosen by vendor name.

use crate::cpuid::{Leaf0d, Regs};
use crate::layout::Layout;

/// `(subleaf, eax, ebx, ecx, edx)` rows.
pub type Rows = &'static [(u8, u32, u32, u32, u32)];

/// Intel Xeon Gold 6146 (Skylake-SP): MPX, AVX-512, PKRU at 0xA80; standard size 2696.
pub const INTEL_SKYLAKE_SP: Rows = &[
    (0, 0x2FF, 0xA88, 0xA88, 0),
    (1, 0xF, 0xA08, 0x100, 0),
    (2, 0x100, 0x240, 0, 0),
    (3, 0x40, 0x3C0, 0, 0),
    (4, 0x40, 0x400, 0, 0),
    (5, 0x40, 0x440, 0, 0),
    (6, 0x200, 0x480, 0, 0),
    (7, 0x400, 0x680, 0, 0),
    (8, 0x80, 0, 1, 0),
    (9, 0x8, 0xA80, 0, 0),
];

/// Intel Ice Lake / Tiger Lake style: AVX-512 and PKRU without MPX (hole 0x340..0x440).
pub const INTEL_ICELAKE: Rows = &[
    (0, 0x2E7, 0xA88, 0xA88, 0),
    (1, 0xF, 0xA88, 0x100, 0),
    (2, 0x100, 0x240, 0, 0),
    (5, 0x40, 0x440, 0, 0),
    (6, 0x200, 0x480, 0, 0),
    (7, 0x400, 0x680, 0, 0),
    (8, 0x80, 0, 1, 0),
    (9, 0x8, 0xA80, 0, 0),
];

/// Intel Xeon w7-2475X (Sapphire Rapids): AVX-512, PKRU, AMX, seven supervisor components.
pub const INTEL_SAPPHIRE_RAPIDS: Rows = &[
    (0, 0x602E7, 0x2B00, 0x2B00, 0),
    (1, 0x1F, 0x2A80, 0xDD00, 0),
    (2, 0x100, 0x240, 0, 0),
    (5, 0x40, 0x440, 0, 0),
    (6, 0x200, 0x480, 0, 0),
    (7, 0x400, 0x680, 0, 0),
    (8, 0x80, 0, 1, 0),
    (9, 0x8, 0xA80, 0, 0),
    (10, 0x8, 0, 1, 0),
    (11, 0x10, 0, 1, 0),
    (12, 0x18, 0, 1, 0),
    (14, 0x30, 0, 1, 0),
    (15, 0x328, 0, 1, 0),
    (17, 0x40, 0xAC0, 2, 0),
    (18, 0x2000, 0xB00, 6, 0),
];

/// The Intel Xeon KVM guest this project measured (docs/HARDWARE.md): AVX-512 and AMX, no
/// PKRU, MPX or supervisor state; XCR0 0x600E7, standard 11008, compacted 10688.
pub const INTEL_AMX_GUEST: Rows = &[
    (0, 0x600E7, 0x2B00, 0x2B00, 0),
    (1, 0x1F, 0x29C0, 0, 0),
    (2, 0x100, 0x240, 0, 0),
    (5, 0x40, 0x440, 0, 0),
    (6, 0x200, 0x480, 0, 0),
    (7, 0x400, 0x680, 0, 0),
    (17, 0x40, 0xAC0, 2, 0),
    (18, 0x2000, 0xB00, 6, 0),
];

/// AMD EPYC 9654 (Zen 4, Genoa): AVX-512 packed after AVX at 0x340/0x380/0x580, PKRU at 0x980,
/// CET; standard size 2440.
pub const AMD_ZEN4: Rows = &[
    (0, 0x2E7, 0x980, 0x988, 0),
    (1, 0xF, 0x990, 0x1800, 0),
    (2, 0x100, 0x240, 0, 0),
    (5, 0x40, 0x340, 0, 0),
    (6, 0x200, 0x380, 0, 0),
    (7, 0x400, 0x580, 0, 0),
    (9, 0x8, 0x980, 0, 0),
    (11, 0x10, 0, 1, 0),
    (12, 0x18, 0, 1, 0),
];

/// AMD EPYC 7763 (Zen 3, Milan): PKRU at 0x980 with nothing between 0x340 and 0x980.
pub const AMD_ZEN3: Rows = &[
    (0, 0x207, 0x340, 0x988, 0),
    (1, 0xF, 0x340, 0x1800, 0),
    (2, 0x100, 0x240, 0, 0),
    (9, 0x8, 0x980, 0, 0),
    (11, 0x10, 0, 1, 0),
    (12, 0x18, 0, 1, 0),
];

/// AMD Ryzen 9 PRO 3900 (Zen 2): a 64-byte bit-9 component at 0x340 that is not PKRU.
pub const AMD_ZEN2: Rows =
    &[(0, 0x207, 0x340, 0x380, 0), (1, 0xF, 0x340, 0, 0), (2, 0x100, 0x240, 0, 0), (9, 0x40, 0x340, 0, 0)];

/// AMD Opteron 6238 (family 15h): LWP (bit 62) at 0x340, directly after AVX.
pub const AMD_FAM15H_LWP: Rows =
    &[(0, 0x7, 0x340, 0x3C0, 0x4000_0000), (2, 0x100, 0x240, 0, 0), (62, 0x80, 0x340, 0, 0)];

/// AMD Zen 1 (Ryzen, family 17h): AVX with XSAVEC and XSAVES; standard and compacted size 832.
pub const AMD_ZEN1: Rows = &[(0, 0x7, 0x340, 0x340, 0), (1, 0xF, 0x340, 0, 0), (2, 0x100, 0x240, 0, 0)];

/// A plain AVX CPU without compaction (Sandy Bridge, Ivy Bridge): standard size 832.
pub const AVX_ONLY: Rows = &[(0, 0x7, 0x340, 0x340, 0), (1, 0x1, 0, 0, 0), (2, 0x100, 0x240, 0, 0)];

/// One fixture of each kind of geometry, in a fixed order (the fuzz targets pick one with a
/// byte): Intel with MPX's hole, without it, with AMX (bare metal and KVM guest), AMD Zen 4 and
/// Zen 3, Zen 2's 64-byte bit 9, family 15h's LWP after AVX, and AVX without compaction.
pub const SAMPLES: [Rows; 9] = [
    INTEL_SKYLAKE_SP,
    INTEL_ICELAKE,
    INTEL_SAPPHIRE_RAPIDS,
    INTEL_AMX_GUEST,
    AMD_ZEN4,
    AMD_ZEN3,
    AMD_ZEN2,
    AMD_FAM15H_LWP,
    AVX_ONLY,
];

/// Every valid XCR0 value within `supported` (x87 always, the AVX-512, MPX and AMX groups
/// whole, AVX-512 with AVX, each other bit free), ascending: for tests that sweep XCR0.
pub fn valid_xcr0_values(supported: crate::Xfeatures) -> alloc::vec::Vec<crate::Xfeatures> {
    crate::xcr0::valid_xcr0_values(supported)
}

/// Builds leaf 0xD from rows.
pub fn leaf0d(rows: Rows) -> Leaf0d {
    let mut l = Leaf0d::new();
    for &(i, a, b, c, d) in rows {
        l.set(i, Regs::new(a, b, c, d));
    }
    l
}

/// Builds the layout of a fixture; fixtures are valid, so this does not fail.
pub fn layout(rows: Rows) -> Layout {
    Layout::from_leaf0d(&leaf0d(rows)).expect("fixtures are valid layouts")
}
