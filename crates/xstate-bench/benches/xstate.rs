//! Criterion benches: every case and its baseline, as separate benchmarks in one group per case.

use criterion::{Criterion, criterion_group, criterion_main};
use xstate_bench::cases;

fn all(c: &mut Criterion) {
    for mut case in cases::all() {
        let mut g = c.benchmark_group(case.name.clone());
        g.throughput(criterion::Throughput::Elements(case.per_call as u64));
        g.bench_function("op", |b| b.iter(&mut case.op));
        g.bench_function(format!("baseline_{}_x{}", case.baseline, case.base_per_call), |b| b.iter(&mut case.base));
        g.finish();
    }
}

criterion_group!(benches, all);
criterion_main!(benches);
