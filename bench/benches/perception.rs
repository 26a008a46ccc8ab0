//! Perception's cost per camera frame and per session: the detector,
//! FaceMesh and the expression net on a 480×480 frame with a face (the
//! astronaut) and without one (the detector only), in candle on the CPU,
//! as a call's perception thread runs them. At the host's default 2 frames
//! a second a session costs `2 × ms` milliseconds of CPU a second; the
//! figures are set against a budget of a tenth of one core per session.
//!
//! Run: `cargo bench -p tete-bench --bench perception` (under `cargo test`
//! it looks at a few frames only, to prove it works).

use std::sync::Arc;
use std::time::Instant;

use candle_core::Device;
use tete_engine::face::{BlazeFace, FaceMesh, RgbImage};
use tete_engine::models::{Manifest, Store, convert::OUTPUT, default_home};
use tete_engine::perception::{ExpressionNet, Perceiver};

/// Frames a second each session is looked at (the host's default).
const FPS: f64 = 2.0;
/// A session's share of one core perception may take.
const BUDGET_SHARE: f64 = 0.1;

fn model(id: &str) -> std::path::PathBuf {
    let manifest = Manifest::embedded().expect("embedded manifest");
    Store::new(default_home()).model_dir(&manifest.model(id).expect("known model").id).join(OUTPUT)
}

fn stats(mut ms: Vec<f64>) -> (f64, f64) {
    ms.sort_by(f64::total_cmp);
    (ms[ms.len() / 2], ms[ms.len() * 95 / 100])
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let frames = if full { 60 } else { 3 };
    let cpu = Device::Cpu;
    let perceiver = Perceiver::new(
        Arc::new(BlazeFace::load(&model("blazeface-short-range"), &cpu).expect("run `tete models fetch`")),
        Arc::new(FaceMesh::load(&model("facemesh"), &cpu).expect("FaceMesh weights")),
        Arc::new(ExpressionNet::load(&model("face-expression"), &cpu).expect("expression net weights")),
    );
    let manifest = Manifest::embedded().expect("embedded manifest");
    let portrait = Store::new(default_home())
        .model_dir(&manifest.model("astronaut-portrait").expect("known model").id)
        .join("astronaut.png");
    let face = image::imageops::resize(
        &image::open(portrait).expect("the astronaut portrait").to_rgb8(),
        480,
        480,
        image::imageops::FilterType::Triangle,
    );
    let empty = RgbImage::from_pixel(480, 480, image::Rgb([90, 60, 40]));
    let threads = std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "all".into());
    println!("perception per 480x480 frame, CPU, {frames} frames, candle threads: {threads}");
    let budget_ms = BUDGET_SHARE * 1e3 / FPS;
    for (name, image, faces) in [("a face", &face, 1), ("no face", &empty, 0)] {
        let _ = perceiver.observe(image, 0.0).expect("warm-up");
        let ms: Vec<f64> = (0..frames)
            .map(|k| {
                let started = Instant::now();
                let seen = perceiver.observe(image, k as f64).expect("observe");
                assert_eq!(seen.faces, faces, "{name}");
                started.elapsed().as_secs_f64() * 1e3
            })
            .collect();
        let (median, p95) = stats(ms);
        let share = median * FPS / 1e3;
        println!(
            "  {name:8}: median {median:6.1} ms, p95 {p95:6.1} ms; at {FPS} fps {:.1} % of a core per session \
             ({:.0} sessions a core); budget {budget_ms:.0} ms, ratio {:.2}",
            100.0 * share,
            1.0 / share,
            median / budget_ms
        );
    }
}
