//! Benchmarks live in `benches/` (criterion and plain mains); the
//! conversation loop's latency harness is here, run by
//! `cargo bench -p tete-bench --bench conversation`.

pub mod faces;
pub mod harness;
pub mod in_process;
