//! The conversation loop's latency harness: real speech (espeak-ng
//! questions and LibriVox clips) through the whole pipeline on the default
//! models, for 1, 2 and 3 sessions at once, in process (the session's
//! 20 ms audio pull stands for the client) and then through a real WebRTC
//! peer (str0m, Opus over loopback UDP) joining `tete serve` running in
//! this process over WHIP, as a browser would. Prints p50/p95/max per stage and end to end
//! (utterance-to-utterance: end of the user's speech → first replica audio
//! at the client), the A/V offset, deadline misses, audio underruns, CPU
//! and memory per session, and which stage ate the budget; writes the
//! same as JSON (`TETE_BENCH_JSON`, default `target/conversation-latency.json`)
//! so runs can be compared. The WebRTC client sends no camera, so its
//! figures leave perception out.
//!
//! Each session also shows the astronaut to the executor's seeing lane at
//! the host's perception rate (`TETE_BENCH_PERCEPTION_FPS`, default 2, as
//! `tete serve`; 0 leaves perception out), so the figures include what
//! perception costs the conversation.
//!
//! `TETE_BENCH_SESSIONS=1,2` picks the session counts and
//! `TETE_BENCH_CLIENTS=in-process,webrtc` the clients. Under `cargo test`
//! it makes a short run: one session, one utterance, each client.
//!
//! Run: `cargo bench -p tete-bench --bench conversation`

use candle_core::Device;
use tete_bench::faces::{perceiver, portrait};
use tete_bench::harness::{self, Report};
use tete_bench::in_process::{self, Camera};
use tete_bench::webrtc::{self, Served};
use tete_engine::face::{Replica, Rig};
use tete_engine::models::{Manifest, Store, default_home};
use tete_engine::scheduler::{Executor, Resident, ResidentIds, Sight};

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let counts: Vec<usize> = match std::env::var("TETE_BENCH_SESSIONS") {
        Ok(list) => list.split(',').filter_map(|n| n.trim().parse().ok()).collect(),
        Err(_) if full => vec![1, 2, 3],
        Err(_) => vec![1],
    };
    let manifest = Manifest::embedded().unwrap();
    let resident = Resident::load(&manifest, &Store::new(default_home()), &ResidentIds::default(), &Device::Cpu)
        .unwrap_or_else(|e| panic!("{e}: run `tete models fetch` first"));
    let executor = Executor::start(resident, 8).expect("the executor");
    // The stock replica, when a host has made it (`tete serve` does at its first start).
    let face = Replica::load(&default_home().join("replicas").join("rstockastronaut"))
        .ok()
        .and_then(|r| r.resized(512).ok())
        .map(|r| {
            let rig = Rig::new(&r);
            (r, rig)
        });
    if face.is_none() {
        println!("(no stock replica in the home yet: the first-frame figure is left out; `tete serve` makes it)");
    }
    let fps: f64 = std::env::var("TETE_BENCH_PERCEPTION_FPS").ok().and_then(|f| f.parse().ok()).unwrap_or(2.0);
    let sight = (fps > 0.0).then(|| Sight::start(perceiver(), Some(executor.load_probe())).expect("the seeing lane"));
    let picture = portrait(480);
    let camera = sight.as_ref().map(|sight| Camera { sight, image: &picture, fps });
    match camera {
        Some(_) => println!("perception on: each session shows a 480x480 face at {fps} fps"),
        None => println!("perception off"),
    }
    let utterances = harness::utterances(if full { 6 } else { 1 });
    let clients = std::env::var("TETE_BENCH_CLIENTS").unwrap_or_else(|_| "in-process,webrtc".into());
    let mut reports: Vec<Report> = Vec::new();
    if clients.contains("in-process") {
        for &n in &counts {
            let report = in_process::run(&executor, face.as_ref(), camera, n, &utterances);
            report.print();
            reports.push(report);
        }
    }
    drop((sight, executor));
    if clients.contains("webrtc") {
        let served = Served::start(counts.iter().copied().max().unwrap_or(1), fps);
        println!("\ntete serve on {} (in this process)", served.base);
        for &n in &counts {
            let report = webrtc::run(&served, n, &utterances);
            report.print();
            reports.push(report);
        }
    }
    // A client's sessions are on deadline when every turn was answered
    // with no underrun or late packet and utterance-to-utterance p95 ≤ 1 s.
    let on_deadline = |client: &str| {
        reports
            .iter()
            .filter(|r| r.client == client)
            .filter(|r| {
                r.unanswered == 0
                    && r.underruns.unwrap_or(0) == 0
                    && r.late_packets.unwrap_or(0) == 0
                    && harness::percentiles(
                        &r.turns.iter().filter_map(|t| t.utterance_to_utterance).collect::<Vec<_>>(),
                    )
                    .is_some_and(|(_, p95, _)| p95 <= 1000.0)
            })
            .map(|r| r.sessions)
            .max()
            .unwrap_or(0)
    };
    let (in_process_ok, webrtc_ok) = (on_deadline("in-process"), on_deadline("WebRTC"));
    println!(
        "\nsessions on deadline (all answered, no underrun or late packet, utterance-to-utterance p95 ≤ 1000 ms): \
         in process {in_process_ok}, WebRTC {webrtc_ok}"
    );
    let path = std::env::var("TETE_BENCH_JSON")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../target/conversation-latency.json").to_string());
    let json = serde_json::json!({
        "runs": reports.iter().map(Report::json).collect::<Vec<_>>(),
        "sessions_on_deadline": {"in_process": in_process_ok, "webrtc": webrtc_ok},
        "perception_fps": fps,
    });
    match std::fs::write(&path, serde_json::to_string_pretty(&json).unwrap()) {
        Ok(()) => println!("figures written to {path}"),
        Err(e) => println!("figures not written to {path}: {e}"),
    }
}
