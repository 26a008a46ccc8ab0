//! Benchmarks live in `benches/` (criterion and plain mains); the
//! conversation loop's latency harness is here (an in-process client and
//! a WebRTC one), run by `cargo bench -p tete-bench --bench conversation`.

pub mod faces;
pub mod harness;
pub mod in_process;
pub mod webrtc;
