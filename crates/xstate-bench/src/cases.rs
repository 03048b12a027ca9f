//! The benchmark cases: each operation with the baseline it is held against.

use std::hint::black_box;

use xstate::compat::{self, Side};
use xstate::cpuid::{self, Leaf0d};
use xstate::image::validate::{Context, Profile, validate};
use xstate::image::{Converter, ImageBuf, Target, convert, convert_into};
use xstate::{Component, Layout, Xfeatures, fixtures};
use xstate_hw::kvm::KvmSystem;
use xstate_hw::selfcheck::{Rng, crafted_image};
use xstate_hw::tracee::{self, Ending};
use xstate_hw::{Host, SaveInstr, ptrace};

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
    /// How many operations one call of `base` performs.
    pub base_per_call: u32,
}

impl Case {
    fn new(name: &str, op: Op, baseline: &str, base: Op) -> Case {
        Case { name: name.into(), op, baseline: baseline.into(), base, per_call: 1, base_per_call: 1 }
    }

    fn per_call(mut self, n: u32) -> Case {
        self.per_call = n;
        self
    }

    fn base_per_call(mut self, n: u32) -> Case {
        self.base_per_call = n;
        self
    }
}

/// Query inputs: every (mask, component) pair of a layout's valid XCR0 values joined with its
/// supervisor mask, cycled so one call performs exactly [`QUERIES`] queries.
const QUERIES: usize = 64;

fn query_inputs(l: &Layout) -> Vec<(Xfeatures, Component)> {
    let mut v = Vec::new();
    for m in xstate::fixtures::valid_xcr0_values(l.user_supported()) {
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

/// A source and a destination of `n` bytes in one 64-byte aligned block, the destination
/// [`PLACED_APART`] bytes after the source modulo 4096, for every figure and its memcpy
/// baseline alike. Where two separate allocations land varies from run to run, and a copy
/// whose destination trails its source by a few bytes modulo 4096 runs up to twice as slow (4K
/// aliasing of loads with earlier stores): a figure would then depend on the allocator.
struct Placed {
    block: xstate::aligned::AlignedBuf,
    src: usize,
    dst: usize,
    n: usize,
}

/// Source and destination sit this far apart modulo 4096 (half a page: no aliasing either way).
const PLACED_APART: usize = 2048;

impl Placed {
    fn new(src: &[u8], n: usize) -> Placed {
        let dst = src.len().next_multiple_of(4096) + PLACED_APART;
        let mut block = xstate::aligned::AlignedBuf::zeroed(dst + n);
        block[..src.len()].copy_from_slice(src);
        Placed { block, src: src.len(), dst, n }
    }

    /// The source and the destination.
    fn parts(&mut self) -> (&[u8], &mut [u8]) {
        let (a, b) = self.block.split_at_mut(self.dst);
        (&a[..self.src], &mut b[..self.n])
    }
}

/// memcpy of `n` bytes between two buffers (the floor any conversion of an `n`-byte image has).
fn memcpy_baseline(n: usize) -> Op {
    let mut p = Placed::new(&vec![0x5Au8; n], n);
    Box::new(move || {
        let (src, dst) = p.parts();
        dst.copy_from_slice(black_box(src));
        black_box(dst);
    })
}

/// (destination, source, length) of the copies a standard -> compacted conversion of `mask`
/// on `layout` makes: the first 576 bytes, then runs of components adjacent on both sides.
fn copy_runs(layout: &Layout, mask: Xfeatures) -> Vec<(usize, usize, usize)> {
    let mut runs: Vec<(usize, usize, usize)> = vec![(0, 0, 576)];
    for (c, off, size) in layout.compacted_components(mask).unwrap_or_default() {
        let Some(r) = layout.standard_range(c).filter(|_| !c.is_legacy()) else { continue };
        let (d, src, len) = (off as usize, r.start, size as usize);
        match runs.last_mut() {
            Some(last) if last.0 + last.2 == d && last.1 + last.2 == src => last.2 += len,
            _ => runs.push((d, src, len)),
        }
    }
    runs
}

/// One image of a CPU: its layout, the mask it is enabled for, and a standard and a compacted
/// form of the same state.
struct Sample {
    tag: String,
    layout: Layout,
    mask: Xfeatures,
    standard: Vec<u8>,
    compacted: Vec<u8>,
}

/// A standard image of `layout` with every component of `mask` (or only x87/SSE when
/// `mostly_init`) in use and random contents, and its compacted form (XCOMP_BV = mask).
fn sample(tag: &str, layout: Layout, mask: Xfeatures, mostly_init: bool) -> Sample {
    let mut rng = Rng::new(0xbe9c);
    let mut standard = crafted_image(&layout, mask, &mut rng);
    if mostly_init {
        standard[512..520].copy_from_slice(&Xfeatures::LEGACY.bits().to_le_bytes());
    }
    let compacted = convert(&standard, &layout, &layout, mask, Target::Compacted { mask })
        .expect("crafted images convert")
        .into_inner()
        .to_vec();
    let tag = format!("{tag}_{}", if mostly_init { "init" } else { "full" });
    Sample { tag, layout, mask, standard, compacted }
}

fn samples() -> Vec<Sample> {
    let mut v = Vec::new();
    for init in [false, true] {
        v.push(sample("avx832", fixtures::layout(fixtures::AMD_ZEN1), Xfeatures(0x7), init));
        v.push(sample("avx512_2696", fixtures::layout(fixtures::INTEL_SKYLAKE_SP), Xfeatures(0x2FF), init));
        v.push(sample("amx11008", fixtures::layout(fixtures::INTEL_AMX_GUEST), Xfeatures(0x600E7), init));
    }
    v
}

/// Standard <-> compacted conversions of the three reference images against memcpy.
pub fn convert_cases() -> Vec<Case> {
    let mut v = Vec::new();
    for s in samples() {
        let n = s.standard.len();
        let (l, m, img) = (s.layout.clone(), s.mask, s.standard.clone());
        v.push(Case::new(
            &format!("convert_std_to_cmp_{}", s.tag),
            Box::new(move || {
                black_box(convert(black_box(&img), &l, &l, m, Target::Compacted { mask: m }).ok());
            }),
            &format!("memcpy_{n}"),
            memcpy_baseline(n),
        ));
        let (l, m) = (s.layout.clone(), s.mask);
        let mut p = Placed::new(&s.standard, n);
        v.push(Case::new(
            &format!("convert_into_std_to_cmp_{}", s.tag),
            Box::new(move || {
                let (img, out) = p.parts();
                black_box(convert_into(black_box(img), &l, &l, m, Target::Compacted { mask: m }, out).ok());
            }),
            &format!("memcpy_{n}"),
            memcpy_baseline(n),
        ));
        let (l, m) = (s.layout.clone(), s.mask);
        let mut p = Placed::new(&s.compacted, n);
        v.push(Case::new(
            &format!("convert_into_cmp_to_std_{}", s.tag),
            Box::new(move || {
                let (img, out) = p.parts();
                black_box(convert_into(black_box(img), &l, &l, m, Target::Standard, out).ok());
            }),
            &format!("memcpy_{n}"),
            memcpy_baseline(n),
        ));
        for (dir, img, target) in [
            ("std_to_cmp", s.standard.clone(), Target::Compacted { mask: s.mask }),
            ("cmp_to_std", s.compacted.clone(), Target::Standard),
        ] {
            // Prepared once per (layouts, RFBM, target), as a VMM keeps one per vCPU; the layout
            // lives as long as the benchmark.
            let l: &'static Layout = Box::leak(Box::new(s.layout.clone()));
            let conv = Converter::new(l, l, s.mask, target).expect("the reference images convert");
            let mut p = Placed::new(&img, n);
            v.push(Case::new(
                &format!("converter_{dir}_{}", s.tag),
                Box::new(move || {
                    let (img, out) = p.parts();
                    black_box(conv.convert_into(black_box(img), out).ok());
                }),
                &format!("memcpy_{n}"),
                memcpy_baseline(n),
            ));
        }
        // The copies alone that a standard -> compacted conversion makes (the legacy region and
        // header, then each run of components adjacent on both sides), with no checks: the floor
        // of converting piece by piece, against which `Converter` is read.
        let runs = copy_runs(&s.layout, s.mask);
        let mut p = Placed::new(&s.standard, n);
        v.push(Case::new(
            &format!("copies_only_std_to_cmp_{}", s.tag),
            Box::new(move || {
                let (img, out) = p.parts();
                let img = black_box(img);
                for &(d, src, len) in &runs {
                    out[d..d + len].copy_from_slice(&img[src..src + len]);
                }
                black_box(out);
            }),
            &format!("memcpy_{n}"),
            memcpy_baseline(n),
        ));
        let (l, m, img) = (s.layout.clone(), s.mask, s.compacted.clone());
        v.push(Case::new(
            &format!("convert_cmp_to_std_{}", s.tag),
            Box::new(move || {
                black_box(convert(black_box(&img), &l, &l, m, Target::Standard).ok());
            }),
            &format!("memcpy_{n}"),
            memcpy_baseline(n),
        ));
    }
    v
}

/// Validation of each profile on the smallest and the largest reference image, against memcpy
/// of the image: the ratio shows whether the cost grows with the size.
pub fn validate_cases() -> Vec<Case> {
    let mut v = Vec::new();
    for s in samples().into_iter().filter(|s| s.tag.ends_with("full") && !s.tag.starts_with("avx512")) {
        for p in Profile::ALL {
            let n = s.standard.len();
            let (l, img) = (s.layout.clone(), s.standard.clone());
            let mut ctx = Context::new(s.mask);
            ctx.kvm_supported = Some(s.mask);
            v.push(Case::new(
                &format!("validate_{}_{}", p.name(), s.tag.trim_end_matches("_full")),
                Box::new(move || {
                    black_box(validate(black_box(&img), &l, p, &ctx).is_ok());
                }),
                &format!("memcpy_{n}"),
                memcpy_baseline(n),
            ));
        }
    }
    v
}

/// XRSTOR + save pairs per call of the CPU baseline: one save/restore of the thread's own
/// state and one fault check per call, amortised.
const CPU_LOOP: u32 = 1000;

/// This host's own image against what the CPU, the kernel and KVM take for the same work.
pub fn host_cases() -> Vec<Case> {
    let mut v = Vec::new();
    let Ok(host) = Host::probe() else { return v };
    let l = host.layout().clone();
    let xcr0 = host.xcr0();
    let s = sample("host", l.clone(), xcr0, false);
    let n = s.standard.len();
    let tag = format!("host{n}");
    // Each direction three ways: allocating `convert`, `convert_into` a kept buffer, and a
    // `Converter` prepared once (as a VMM converting on every switch keeps one per vCPU),
    // against the CPU doing the same conversion.
    if host.has(SaveInstr::Xsavec) {
        let lc: &'static Layout = Box::leak(Box::new(l.clone()));
        for (dir, img, target, instr, base) in [
            ("std_to_cmp", &s.standard, Target::Compacted { mask: xcr0 }, SaveInstr::Xsavec, "cpu_xrstor_xsavec"),
            ("cmp_to_std", &s.compacted, Target::Standard, SaveInstr::Xsave, "cpu_xrstor_xsave"),
        ] {
            for kind in ["convert", "convert_into", "converter"] {
                let conv = Converter::new(lc, lc, xcr0, target).ok();
                let (img, cpu_img, hc) = (img.clone(), img.clone(), host.clone());
                let mut out = ImageBuf::init(n, Xfeatures(0));
                let op: Op = match (kind, conv) {
                    ("convert", _) => Box::new(move || {
                        black_box(convert(black_box(&img), lc, lc, xcr0, target).ok());
                    }),
                    ("convert_into", _) => Box::new(move || {
                        black_box(convert_into(black_box(&img), lc, lc, xcr0, target, &mut out).ok());
                    }),
                    (_, Some(conv)) => Box::new(move || {
                        black_box(conv.convert_into(black_box(&img), &mut out).ok());
                    }),
                    (_, None) => continue,
                };
                v.push(
                    Case::new(
                        &format!("{kind}_{dir}_{tag}"),
                        op,
                        base,
                        Box::new(move || {
                            black_box(hc.restore_save_loop(&cpu_img, xcr0, instr, CPU_LOOP as u64).is_ok());
                        }),
                    )
                    .base_per_call(CPU_LOOP),
                );
            }
        }
    }
    // The kernel converting its compacted buffer to the standard format: GETREGSET of a
    // stopped child holding the same state.
    if let Ok(mut child) = tracee::spawn(&host, &s.standard, Ending::StopThenReport, None)
        && child.wait_stopped().is_ok()
        && let Ok(seized) = ptrace::Seized::new(child.pid())
    {
        let (lc, img) = (l.clone(), s.compacted.clone());
        let mut buf = vec![0u8; 64 * 1024];
        v.push(Case::new(
            &format!("convert_cmp_to_std_{tag}"),
            Box::new(move || {
                black_box(convert(black_box(&img), &lc, &lc, xcr0, Target::Standard).ok());
            }),
            "ptrace_getregset",
            Box::new(move || {
                let _keep = &child;
                black_box(seized.get_into(&mut buf).ok());
            }),
        ));
    }
    // KVM_GET_XSAVE2 of a vCPU.
    if let Ok(Some(kvm)) = KvmSystem::open()
        && let Ok(vcpu) = kvm.create_vcpu()
    {
        let (lc, img) = (l.clone(), s.compacted.clone());
        v.push(Case::new(
            &format!("convert_cmp_to_std_{tag}"),
            Box::new(move || {
                black_box(convert(black_box(&img), &lc, &lc, xcr0, Target::Standard).ok());
            }),
            "kvm_get_xsave2",
            Box::new(move || {
                black_box(vcpu.get_xsave().ok());
            }),
        ));
    }
    v
}

/// The dumps of `../shared/cpuid/dumps` (or `$XSTATE_SHARED/cpuid/dumps`), as text.
fn corpus_texts() -> Vec<String> {
    let root = std::env::var_os("XSTATE_SHARED")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared"));
    let mut out = Vec::new();
    let mut stack = vec![root.join("cpuid/dumps")];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(t) = std::fs::read_to_string(&p) {
                out.push(t);
            }
        }
    }
    out
}

/// The fleet matrix: every pair of the corpus's usable layouts, against building those layouts
/// from the dump texts.
pub fn compat_cases() -> Vec<Case> {
    let texts = corpus_texts();
    let layouts: Vec<Layout> = texts
        .iter()
        .filter_map(|t| cpuid::parse(t).ok())
        .filter_map(|d| Layout::from_leaf0d(d.leaf0d()).ok())
        .collect();
    if layouts.is_empty() {
        return Vec::new();
    }
    let n = layouts.len();
    vec![Case::new(
        &format!("compat_matrix_{n}x{n}"),
        Box::new(move || {
            let mut counts = [0u32; 3];
            for a in &layouts {
                for b in &layouts {
                    counts[compat::verdict(&Side::user_max(a), &Side::user_max(b)) as usize] += 1;
                }
            }
            black_box(counts);
        }),
        &format!("layouts_from_{}_dumps", texts.len()),
        Box::new(move || {
            for t in &texts {
                if let Ok(d) = cpuid::parse(black_box(t)) {
                    black_box(Layout::from_leaf0d(d.leaf0d()).ok());
                }
            }
        }),
    )]
}

/// Every case, in reporting order.
pub fn all() -> Vec<Case> {
    let mut v = layout_cases();
    v.extend(convert_cases());
    v.extend(validate_cases());
    v.extend(host_cases());
    v.extend(compat_cases());
    v
}
