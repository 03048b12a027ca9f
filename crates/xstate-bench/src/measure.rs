//! A small interleaved timer: batches of the operation and of its baseline alternate, and each
//! side's median per-iteration time is reported. The ratio is the median over the batch pairs
//! of the operation's time over the baseline's in the batch next to it, so load that comes
//! and goes on a shared machine (other builds, other benchmarks) slows both sides of a pair
//! alike instead of skewing one side's median.

use std::hint::black_box;
use std::time::{Duration, Instant};

/// One measured figure.
#[derive(Clone, Debug)]
pub struct Figure {
    /// The operation's name.
    pub name: String,
    /// Median nanoseconds per call of the operation.
    pub ns: f64,
    /// The baseline's name.
    pub baseline: String,
    /// Median nanoseconds per call of the baseline.
    pub baseline_ns: f64,
    /// Median over the batch pairs of operation time over baseline time.
    pub paired_ratio: f64,
}

impl Figure {
    /// Operation time over baseline time: the median of the paired batches' ratios.
    pub fn ratio(&self) -> f64 {
        self.paired_ratio
    }

    /// The quick-mode line: `<name> ns=<median> ratio_vs_<baseline>=<x.xx>`.
    pub fn line(&self) -> String {
        let r = self.ratio();
        // Two decimals, as the quick-mode format says; more where two would print 0.00.
        let ratio = if r >= 0.1 { format!("{r:.2}") } else { format!("{r:.4}") };
        format!("{} ns={:.1} ratio_vs_{}={ratio}", self.name, self.ns, self.baseline)
    }
}

fn per_iter(f: &mut dyn FnMut(), iters: u64) -> f64 {
    let t = Instant::now();
    for _ in 0..iters {
        f();
    }
    t.elapsed().as_nanos() as f64 / iters as f64
}

fn calibrate(f: &mut dyn FnMut(), target: Duration) -> u64 {
    let mut iters = 1u64;
    loop {
        let t = Instant::now();
        for _ in 0..iters {
            f();
        }
        let e = t.elapsed();
        if e >= target / 4 || iters >= 1 << 30 {
            let per = e.as_nanos().max(1) as f64 / iters as f64;
            return ((target.as_nanos() as f64 / per) as u64).max(1);
        }
        iters *= 4;
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    v[v.len() / 2]
}

/// One side of a comparison: a name, the operation, and how many operations one call performs.
pub struct Measured<'a> {
    /// Name of the figure or baseline.
    pub name: &'a str,
    /// The operation.
    pub f: &'a mut dyn FnMut(),
    /// Operations per call (figures are per operation).
    pub per_call: u32,
}

/// Measures `op` against `base` over `batches` interleaved batches of about `batch` each.
pub fn compare(op: Measured<'_>, base: Measured<'_>, batches: usize, batch: Duration) -> Figure {
    let n_op = calibrate(op.f, batch);
    let n_base = calibrate(base.f, batch);
    let mut a = Vec::with_capacity(batches);
    let mut b = Vec::with_capacity(batches);
    let mut r = Vec::with_capacity(batches);
    for _ in 0..batches {
        let x = per_iter(op.f, n_op) / op.per_call as f64;
        let y = per_iter(base.f, n_base) / base.per_call as f64;
        a.push(x);
        b.push(y);
        r.push(x / y);
    }
    Figure {
        name: op.name.into(),
        ns: median(a),
        baseline: base.name.into(),
        baseline_ns: median(b),
        paired_ratio: median(r),
    }
}

/// Keeps a value alive and opaque to the optimiser.
pub fn keep<T>(v: T) -> T {
    black_box(v)
}
