//! The talking-head renderer's cost per 512×512 frame: the CPU reference
//! (all cores, rayon) and the WGSL shader on the wgpu adapter (lavapipe on
//! machines without a GPU: a GPU adapter is the deployment target), for 1,
//! 2 and 4 sessions rendered in one submission. Each frame is a different
//! pose (idle life plus a moving mouth), as in a call; the GPU figures
//! include the I420 conversion and the readback the encoder needs.
//!
//! Run: `cargo bench -p tete-bench --bench face` (under `cargo test` it
//! runs a few frames only, to prove it works).

use std::time::Instant;

use candle_core::Device;
use tete_engine::face::animate::{Idle, VisemeTrack};
use tete_engine::face::{BlazeFace, FaceMesh, Pose, Replica, ReplicaConfig, Rig, render_cpu};
use tete_engine::gpu::{AdapterKind, FaceRenderer, Gpu, GpuPortrait};
use tete_engine::models::{Manifest, Store, convert::OUTPUT, default_home};
use tete_engine::tts::viseme::{Viseme, VisemeEvent};

/// The frame-time goal on the CPU path.
const GOAL_MS: f64 = 8.0;

fn model(id: &str) -> std::path::PathBuf {
    let manifest = Manifest::embedded().expect("embedded manifest");
    Store::new(default_home()).model_dir(&manifest.model(id).expect("known model").id)
}

fn replica() -> Replica {
    let detector = BlazeFace::load(&model("blazeface-short-range").join(OUTPUT), &Device::Cpu)
        .expect("BlazeFace weights: run `tete models fetch`");
    let mesher = FaceMesh::load(&model("facemesh").join(OUTPUT), &Device::Cpu).expect("FaceMesh weights");
    let photo =
        image::open(model("astronaut-portrait").join("astronaut.png")).expect("the astronaut portrait").to_rgb8();
    Replica::from_photo(&detector, &mesher, &photo, &ReplicaConfig::default()).expect("astronaut replica")
}

/// A pose per frame: idle life and a mouth running through the visemes.
fn poses(n: usize) -> Vec<Pose> {
    let cycle = [Viseme::Aa, Viseme::PP, Viseme::E, Viseme::O, Viseme::SS, Viseme::U, Viseme::Sil];
    let events = (0..200)
        .map(|i| VisemeEvent { viseme: cycle[i % cycle.len()], start: i as f64 * 0.09, end: (i + 1) as f64 * 0.09 })
        .collect();
    let track = VisemeTrack::new(events);
    let mut idle = Idle::new(3);
    (0..n)
        .map(|i| {
            let t = i as f64 / 25.0;
            Pose { mouth: track.shape_at(t), ..idle.pose_at(t, 1.5) }
        })
        .collect()
}

fn stats(mut ms: Vec<f64>) -> (f64, f64) {
    ms.sort_by(f64::total_cmp);
    (ms[ms.len() / 2], ms[ms.len() * 95 / 100])
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let frames = if full { 150 } else { 4 };
    let replica = replica();
    let rig = Rig::new(&replica);
    let poses = poses(frames);
    let records: Vec<Vec<u32>> = poses.iter().map(|p| rig.record(p)).collect();

    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut cpu_ms = Vec::with_capacity(frames);
    for pose in &poses {
        let start = Instant::now();
        let frame = render_cpu(&replica, &rig, pose).expect("render");
        cpu_ms.push(start.elapsed().as_secs_f64() * 1e3);
        std::hint::black_box(frame);
    }
    let (p50, p95) = stats(cpu_ms);
    println!("face 512x512, CPU reference ({threads} threads): p50 {p50:.2} ms, p95 {p95:.2} ms per frame");
    println!("  goal {GOAL_MS} ms: p50/goal = {:.2}", p50 / GOAL_MS);
    let mut record_ms = Vec::with_capacity(frames);
    for pose in &poses {
        let start = Instant::now();
        std::hint::black_box(rig.record(pose));
        record_ms.push(start.elapsed().as_secs_f64() * 1e3);
    }
    let (r50, _) = stats(record_ms);
    println!("  of which building the frame record: {r50:.3} ms");

    let gpu = Gpu::open(AdapterKind::Any).expect("a wgpu adapter (lavapipe: apt-get install mesa-vulkan-drivers)");
    println!("wgpu adapter: {}", gpu.describe());
    let renderer = FaceRenderer::new(&gpu);
    let portraits: Vec<GpuPortrait> = (0..4).map(|_| renderer.upload(&gpu, &replica)).collect();
    // Warm-up: pipeline creation and first-use costs stay out of the figures.
    renderer.render(&gpu, &[(&portraits[0], records[0].as_slice())]).expect("render");
    for sessions in [1usize, 2, 4] {
        let rounds = (frames / sessions).max(2);
        let mut ms = Vec::with_capacity(rounds);
        for r in 0..rounds {
            let batch: Vec<(&GpuPortrait, &[u32])> =
                (0..sessions).map(|s| (&portraits[s], records[(r * sessions + s) % frames].as_slice())).collect();
            let start = Instant::now();
            let out = renderer.render(&gpu, &batch).expect("render");
            ms.push(start.elapsed().as_secs_f64() * 1e3);
            std::hint::black_box(out);
        }
        let (p50, p95) = stats(ms);
        println!(
            "face 512x512 on wgpu, {sessions} session(s) per submission: p50 {p50:.2} ms, p95 {p95:.2} ms per batch = {:.2} ms per frame, {:.1} frames/s per session at most",
            p50 / sessions as f64,
            1e3 / p50,
        );
    }
}
