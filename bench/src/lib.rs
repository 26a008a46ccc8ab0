//! Benchmarks live in `benches/` (criterion); the end-to-end latency
//! harness lands here with the conversation loop.
