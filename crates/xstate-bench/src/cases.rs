//! The benchmark cases: each operation with the baseline it is held against.

use std::hint::black_box;

use xstate::cpuid::{self, Leaf0d};
use xstate::{Component, Layout, Xfeatures, fixtures};

/// A boxed operation.
pub type Op = Box<dyn FnMut()>;

/// One operation and its baseline.
pub struct Case {
    /// Name of the figure.
    pub name: String,
    /// The operation.
    pub op: Op,
    /// Name of the baseline.
    pub baseline: String,
    /// The baseline.
    pub base: Op,
    /// How many operations one call of `op` performs (figures are per operation).
    pub per_call: u32,
}

impl Case {
    fn new(name: &str, op: Op, baseline: &str, base: Op) -> Case {
        Case { name: name.into(), op, baseline: baseline.into(), base, per_call: 1 }
    }

    fn per_call(mut self, n: u32) -> Case {
        self.per_call = n;
        self
    }
}

/// Query inputs: every (mask, component) pair of a layout's valid XCR0 values joined with its
/// supervisor mask, cycled so one call performs exactly [`QUERIES`] queries.
const QUERIES: usize = 64;

fn query_inputs(l: &Layout) -> Vec<(Xfeatures, Component)> {
    let mut v = Vec::new();
    for m in xstate::xcr0::valid_xcr0_values(l.user_supported()) {
        let m = m | l.supervisor_supported();
        for c in m.iter() {
            v.push((m, c));
        }
    }
    v.iter().copied().cycle().take(QUERIES).collect()
}

/// One CPUID instruction (leaf 0xD subleaf 0): a VM exit in a guest, the cost every query
/// that reads the CPU behind the caller's back would pay.
fn cpuid_baseline() -> Op {
    Box::new(|| {
        black_box(xstate_hw::cpu::cpuid(black_box(0xD), black_box(0)));
    })
}

/// A dump in AIDA64 text of `rows`, as a tool would print it.
fn aida_text(rows: fixtures::Rows) -> String {
    let mut s = String::from("------[ CPUID Registers / Logical CPU #0 ]------\n\n");
    s.push_str("CPUID 00000000: 00000020-756E6547-6C65746E-49656E69 [GenuineIntel]\n");
    for &(i, a, b, c, d) in rows {
        s.push_str(&format!("CPUID 0000000D: {a:08X}-{b:08X}-{c:08X}-{d:08X} [SL {i:02X}]\n"));
    }
    s
}

/// Layout derivation and queries.
pub fn layout_cases() -> Vec<Case> {
    let mut v = Vec::new();
    v.push(Case::new(
        "layout_from_host_cpuid",
        Box::new(|| {
            let d = xstate_hw::cpu::host_cpuid();
            black_box(Layout::from_leaf0d(d.leaf0d()).ok());
        }),
        "cpuid",
        cpuid_baseline(),
    ));
    let host_leaf: Leaf0d = *xstate_hw::cpu::host_cpuid().leaf0d();
    v.push(Case::new(
        "layout_from_leaf0d_host",
        Box::new(move || {
            black_box(Layout::from_leaf0d(black_box(&host_leaf)).ok());
        }),
        "cpuid",
        cpuid_baseline(),
    ));
    let text = aida_text(fixtures::INTEL_SAPPHIRE_RAPIDS);
    v.push(Case::new(
        "layout_from_dump_spr",
        Box::new(move || {
            let d = cpuid::parse(black_box(&text)).expect("fixture parses");
            black_box(Layout::from_leaf0d(d.leaf0d()).ok());
        }),
        "cpuid",
        cpuid_baseline(),
    ));
    let spr = fixtures::layout(fixtures::INTEL_SAPPHIRE_RAPIDS);
    let inputs = query_inputs(&spr);
    let (l, q) = (spr.clone(), inputs.clone());
    v.push(
        Case::new(
            "query_standard_size",
            Box::new(move || {
                for &(m, _) in black_box(&q) {
                    black_box(l.standard_size(m));
                }
            }),
            "cpuid",
            cpuid_baseline(),
        )
        .per_call(QUERIES as u32),
    );
    let (l, q) = (spr.clone(), inputs.clone());
    v.push(
        Case::new(
            "query_compacted_offset",
            Box::new(move || {
                for &(m, c) in black_box(&q) {
                    black_box(l.compacted_offset(c, m));
                }
            }),
            "cpuid",
            cpuid_baseline(),
        )
        .per_call(QUERIES as u32),
    );
    let (l, q) = (spr, inputs);
    v.push(
        Case::new(
            "query_compacted_size",
            Box::new(move || {
                for &(m, _) in black_box(&q) {
                    black_box(l.compacted_size(m));
                }
            }),
            "cpuid",
            cpuid_baseline(),
        )
        .per_call(QUERIES as u32),
    );
    v
}

/// Every case, in reporting order.
pub fn all() -> Vec<Case> {
    layout_cases()
}
