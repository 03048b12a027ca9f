//! Runs one benchmark case in a loop for a profiler: `profile-one NAME [SECONDS]`.

use std::time::{Duration, Instant};

fn main() {
    let mut args = std::env::args().skip(1);
    let name = args.next().expect("case name");
    let secs: f64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(3.0);
    // The conversion cases first: they need no host features, so they also run under valgrind
    // (whose CPUID has no XSAVEC, which the host cases need).
    let find = |v: Vec<xstate_bench::cases::Case>| v.into_iter().find(|c| c.name == name);
    let mut case =
        find(xstate_bench::cases::convert_cases()).or_else(|| find(xstate_bench::cases::all())).expect("no such case");
    let end = Instant::now() + Duration::from_secs_f64(secs);
    let mut n = 0u64;
    while Instant::now() < end {
        for _ in 0..1000 {
            (case.op)();
        }
        n += 1000;
    }
    println!("{name}: {n} calls");
}
