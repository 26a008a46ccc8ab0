//! The quantized matrix products of the native LLM (`tete_kernels::quant`)
//! on SmolLM2-135M's shapes: one token (decode, bound by reading the
//! weights), 4 and 64 tokens (batched decode, prefill; bound by the integer
//! dot products). Prints GB/s of weights read and GMAC/s next to the
//! machine's streaming read bandwidth, measured the same way (a sum over a
//! buffer larger than the caches), so the ratio says how close a product
//! runs to the memory limit. Each instruction set the processor has
//! ([`Isa`]: AVX2, AVX-512 VNNI) is timed on its own.
//!
//! Run: `cargo bench -p tete-bench --bench quant` (under `cargo test` it runs
//! two layers and a few rounds as a smoke test).

use std::hint::black_box;
use std::time::{Duration, Instant};

use rayon::prelude::*;
use tete_kernels::quant::{Isa, QActs, QMatrix};
use tete_kernels::testdata::uniform as noise;

/// Best of `runs` timings of `f`.
fn best(runs: usize, mut f: impl FnMut()) -> Duration {
    (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .min()
        .unwrap_or_default()
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let threads = rayon::current_num_threads();
    // Streaming read bandwidth: 256 MiB summed by every thread.
    let big: Vec<u64> = (0..if full { 32u64 << 20 } else { 1 << 20 }).collect();
    let t = best(3, || {
        black_box(big.par_chunks(1 << 16).map(|c| c.iter().fold(0u64, |a, &x| a.wrapping_add(x))).sum::<u64>());
    });
    let bandwidth = (big.len() * 8) as f64 / t.as_secs_f64() / 1e9;
    println!("threads: {threads}; streaming read: {bandwidth:.1} GB/s");

    // What one parallel region costs when it follows ~40 µs of work on the
    // calling thread alone (a decode step has ~150 such regions).
    let spin = |d: Duration| {
        let t = Instant::now();
        while t.elapsed() < d {
            std::hint::spin_loop();
        }
    };
    let mut region = vec![0u64; 64];
    for gap in [Duration::ZERO, Duration::from_micros(40)] {
        let rounds = if full { 2000 } else { 20 };
        let run = |region: &mut Vec<u64>| {
            let mut inside = Duration::ZERO;
            for _ in 0..rounds {
                spin(gap);
                let t = Instant::now();
                region.par_chunks_mut(8).for_each(|c| c.iter_mut().for_each(|v| *v = black_box(*v + 1)));
                inside += t.elapsed();
            }
            inside.as_secs_f64() * 1e6 / rounds as f64
        };
        let outside = run(&mut region);
        let inside = rayon::scope(|_| run(&mut region));
        println!(
            "parallel region after {gap:?} alone: {outside:.1} µs from outside the pool, {inside:.1} µs from a worker"
        );
    }

    // Quantizing the activations before each product: a 77-token prefill's
    // four products of a layer, and one decode step's.
    for m in [1usize, 77] {
        let x: Vec<Vec<f32>> = [576usize, 576, 576, 1536].iter().map(|&c| noise(m * c, 4)).collect();
        let mut acts = QActs::new();
        let t = best(if full { 50 } else { 2 }, || {
            for x in &x {
                acts.quantize(x, m, x.len() / m);
            }
        });
        println!("quantizing a layer's activations, {m} tokens: {:.1} µs", t.as_secs_f64() * 1e6);
    }

    // A decoder layer's products (Q, K and V stacked; gate and up stacked),
    // repeated over enough layers that the weights do not stay in cache.
    let layers = if full { 30 } else { 2 };
    let (dim, kv, ff) = (576, 192, 1536);
    let shapes = [("qkv", dim + 2 * kv, dim), ("wo", dim, dim), ("gate_up", 2 * ff, dim), ("down", dim, ff)];
    for (label, make) in [
        ("Q4_1", QMatrix::quantize_q4_1 as fn(usize, usize, &[f32]) -> Result<QMatrix, tete_kernels::KernelError>),
        ("Q8_0", QMatrix::quantize_q8_0 as fn(usize, usize, &[f32]) -> Result<QMatrix, tete_kernels::KernelError>),
    ] {
        let mats: Vec<QMatrix> = (0..layers)
            .flat_map(|l| shapes.iter().map(move |&(_, r, c)| (l, r, c)))
            .map(|(l, r, c)| make(r, c, &noise(r * c, l as u64)).expect("shape"))
            .collect();
        let bytes: usize = mats.iter().map(QMatrix::bytes).sum();
        let macs: usize = mats.iter().map(|m| m.rows() * m.cols()).sum();
        for (isa, m) in Isa::all().iter().filter(|i| i.available()).flat_map(|&i| [(i, 1usize), (i, 4), (i, 64)]) {
            let acts: Vec<QActs> = [dim, ff]
                .iter()
                .map(|&c| {
                    let mut a = QActs::new();
                    a.quantize(&noise(m * c, 9), m, c);
                    a
                })
                .collect();
            let mut out = vec![0.0f32; m * 2 * ff];
            let t = best(5, || {
                rayon::scope(|_| {
                    for w in &mats {
                        let a = if w.cols() == dim { &acts[0] } else { &acts[1] };
                        w.matmul_on(isa, a, &mut out[..m * w.rows()]);
                    }
                })
            });
            let gbs = bytes as f64 / t.as_secs_f64() / 1e9;
            println!(
                "{label} {isa:?} {layers} layers x {m:>2} tokens: {:>7.2} ms = {:>6.1} tokens/s, weights {gbs:.1} GB/s ({:.2} of streaming), {:.1} GMAC/s",
                t.as_secs_f64() * 1e3,
                m as f64 / t.as_secs_f64(),
                gbs / bandwidth,
                (macs * m) as f64 / t.as_secs_f64() / 1e9
            );
        }
    }
}
