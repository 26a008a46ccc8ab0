//! Perception's cost per camera frame and per session: the detector,
//! FaceMesh and the expression net on a 480×480 frame with a face (the
//! astronaut) in a full look (the detector over the frame and its tiles)
//! and a quick one (over the frame only), and without a face (the
//! detector only), in candle on the CPU. Were every look like one of
//! these, at the host's default 2 frames a second a session would cost
//! `2 × ms` milliseconds of CPU a second; the figures are set against a
//! budget of a tenth of one core per session.
//!
//! Then the same through the executor's seeing lane, as sessions look (a
//! full look every 2 s, quick ones between), for 1, 2 and 4 sessions at once (frames looked at and skipped, ms a frame, share of a
//! core per session: the lane's busy time, and the process's CPU time,
//! which also counts candle's worker threads), and four frames batched against one by one.
//!
//! Run: `cargo bench -p tete-bench --bench perception` (under `cargo test`
//! it looks at a few frames only, to prove it works).

use std::time::{Duration, Instant};

use tete_bench::faces::{perceiver, portrait};
use tete_bench::harness::cpu_time;
use tete_engine::face::RgbImage;
use tete_engine::perception::Detail;
use tete_engine::scheduler::Sight;

/// Frames a second each session is looked at (the host's default).
const FPS: f64 = 2.0;
/// A session's share of one core perception may take.
const BUDGET_SHARE: f64 = 0.1;

fn stats(mut ms: Vec<f64>) -> (f64, f64) {
    ms.sort_by(f64::total_cmp);
    (ms[ms.len() / 2], ms[ms.len() * 95 / 100])
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let frames = if full { 60 } else { 3 };
    let perceiver = perceiver();
    let face = portrait(480);
    let empty = RgbImage::from_pixel(480, 480, image::Rgb([90, 60, 40]));
    let threads = std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "all".into());
    println!("perception per 480x480 frame, CPU, {frames} frames, candle threads: {threads}");
    let budget_ms = BUDGET_SHARE * 1e3 / FPS;
    let looks = [
        ("a face, full look", &face, 1, Detail::Full),
        ("a face, quick look", &face, 1, Detail::Quick),
        ("no face, full look", &empty, 0, Detail::Full),
    ];
    for (name, image, faces, detail) in looks {
        let look = |t: f64| {
            let seen = perceiver.observe_batch(&[(image, t, detail)]).pop().expect("one result");
            seen.map_err(|e| e.to_string())
        };
        let _ = look(0.0).expect("warm-up");
        let ms: Vec<f64> = (0..frames)
            .map(|k| {
                let started = Instant::now();
                let seen = look(k as f64).expect("observe");
                assert_eq!(seen.faces, faces, "{name}");
                started.elapsed().as_secs_f64() * 1e3
            })
            .collect();
        let (median, p95) = stats(ms);
        let share = median * FPS / 1e3;
        println!(
            "  {name:18}: median {median:6.1} ms, p95 {p95:6.1} ms; at {FPS} fps {:.1} % of a core per session \
             ({:.0} sessions a core); budget {budget_ms:.0} ms, ratio {:.2}",
            100.0 * share,
            1.0 / share,
            median / budget_ms
        );
    }
    println!("the executor's seeing lane (low priority, its own candle thread), {FPS} fps per session:");
    let sight = Sight::start(perceiver, None).expect("the seeing lane");
    for sessions in if full { vec![1, 2, 4] } else { vec![2] } {
        lane(&sight, &face, sessions, if full { 15.0 } else { 1.5 });
    }
    batching(&face, if full { 10 } else { 1 });
}

/// `sessions` sessions showing `image` to one seeing lane at [`FPS`] for
/// `seconds`: frames looked at and skipped, time per frame and the share
/// of a core each session costs.
fn lane(sight: &Sight, image: &RgbImage, sessions: usize, seconds: f64) {
    let (before, skipped_before, cpu_before) = (sight.figures(), sight.skipped(), cpu_time());
    let started = Instant::now();
    let mut viewers: Vec<_> = (0..sessions).map(|_| sight.viewer()).collect();
    let period = Duration::from_secs_f64(1.0 / FPS);
    let mut t = 0.0;
    while started.elapsed().as_secs_f64() < seconds {
        // Every session's frame at the same instant, as the worst case.
        for v in &mut viewers {
            let _ = v.seen();
            v.look(t, image.clone());
        }
        std::thread::sleep(period);
        t += period.as_secs_f64();
    }
    for v in &mut viewers {
        let _ = v.seen_waiting(Duration::from_secs(5));
    }
    let (after, wall) = (sight.figures(), started.elapsed().as_secs_f64());
    // The whole process: the lane's thread, and candle's workers spinning for its ops.
    let cpu = (cpu_time() - cpu_before).as_secs_f64();
    let items = after.items - before.items;
    let run = (after.run_total - before.run_total).as_secs_f64();
    let queued = (after.queued_total - before.queued_total).as_secs_f64();
    println!(
        "  {sessions} session(s): {items} frames looked at, {} skipped; {:.1} ms a frame, queued {:.1} ms; \
         {:.1} % of a core per session on the lane, {:.1} % in CPU time of the process",
        sight.skipped() - skipped_before,
        1e3 * run / items.max(1) as f64,
        1e3 * queued / items.max(1) as f64,
        100.0 * run / wall / sessions as f64,
        100.0 * cpu / wall / sessions as f64
    );
}

/// Four frames as one batch against four looks one by one.
fn batching(image: &RgbImage, rounds: usize) {
    let perceiver = perceiver();
    let frames: Vec<(&RgbImage, f64, Detail)> = (0..4).map(|k| (image, k as f64, Detail::Full)).collect();
    let _ = perceiver.observe_batch(&frames);
    let mut one_by_one = Vec::new();
    let mut batched = Vec::new();
    for _ in 0..rounds {
        let started = Instant::now();
        for (image, t, _) in &frames {
            perceiver.observe(image, *t).expect("observe");
        }
        one_by_one.push(started.elapsed().as_secs_f64() * 1e3 / 4.0);
        let started = Instant::now();
        for seen in perceiver.observe_batch(&frames) {
            seen.expect("observe");
        }
        batched.push(started.elapsed().as_secs_f64() * 1e3 / 4.0);
    }
    let (alone, together) = (stats(one_by_one).0, stats(batched).0);
    println!(
        "  4 frames with a face: {alone:.1} ms a frame one by one, {together:.1} ms batched (ratio {:.2})",
        together / alone
    );
}
