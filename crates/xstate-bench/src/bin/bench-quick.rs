//! Quick mode: every figure once, one line each: `<name> ns=<median> ratio_vs_<baseline>=<x.xx>`.
//! Finishes in seconds; for careful numbers use `cargo bench -p xstate-bench`.

use std::time::Duration;

use xstate_bench::{cases, measure};

fn main() {
    let filter: Vec<String> = std::env::args().skip(1).collect();
    for mut c in cases::all() {
        if !filter.is_empty() && !filter.iter().any(|f| c.name.contains(f.as_str())) {
            continue;
        }
        let f = measure::compare(
            measure::Measured { name: &c.name, f: &mut c.op, per_call: c.per_call },
            measure::Measured { name: &c.baseline, f: &mut c.base, per_call: c.base_per_call },
            21,
            Duration::from_millis(3),
        );
        println!("{}", f.line());
    }
}
