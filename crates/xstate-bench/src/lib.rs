//! Benchmark cases shared by the criterion benches (`cargo bench -p xstate-bench`) and the quick
//! mode (`scripts/bench-quick`).
//!
//! Every figure is measured against a baseline in the same run, interleaved batch by batch, so
//! the ratio holds even on a noisy shared machine where absolute times do not.

pub mod cases;
pub mod measure;
