//! The conversation loop's latency harness: real speech (espeak-ng
//! questions and LibriVox clips) through the whole pipeline on the default
//! models, for 1, 2 and 3 sessions at once, in process (the session's
//! 20 ms audio pull stands for the client). Prints p50/p95/max per stage and end to end
//! (utterance-to-utterance: end of the user's speech → first replica audio
//! at the client), the A/V offset, deadline misses, audio underruns, CPU
//! and memory per session, and which stage ate the budget; writes the
//! same as JSON (`TETE_BENCH_JSON`, default `target/conversation-latency.json`)
//! so runs can be compared.
//!
//! `TETE_BENCH_SESSIONS=1,2` picks the session counts. Under `cargo test`
//! it makes a short run: one session, one utterance, in process.
//!
//! Run: `cargo bench -p tete-bench --bench conversation`

use candle_core::Device;
use tete_bench::harness::{self, Report};
use tete_bench::in_process;
use tete_engine::face::{Replica, Rig};
use tete_engine::models::{Manifest, Store, default_home};
use tete_engine::scheduler::{Executor, Resident, ResidentIds};

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
    let utterances = harness::utterances(if full { 6 } else { 1 });
    let mut reports: Vec<Report> = Vec::new();
    for &n in &counts {
        let report = in_process::run(&executor, face.as_ref(), n, &utterances);
        report.print();
        reports.push(report);
    }
    let on_deadline = reports
        .iter()
        .filter(|r| {
            r.unanswered == 0
                && r.underruns == 0
                && harness::percentiles(&r.turns.iter().filter_map(|t| t.utterance_to_utterance).collect::<Vec<_>>())
                    .is_some_and(|(_, p95, _)| p95 <= 1000.0)
        })
        .map(|r| r.sessions)
        .max()
        .unwrap_or(0);
    println!("\nsessions on deadline (all answered, no underrun, utterance-to-utterance p95 ≤ 1000 ms): {on_deadline}");
    let path = std::env::var("TETE_BENCH_JSON")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../target/conversation-latency.json").to_string());
    let json = serde_json::json!({
        "runs": reports.iter().map(Report::json).collect::<Vec<_>>(),
        "sessions_on_deadline": on_deadline,
    });
    match std::fs::write(&path, serde_json::to_string_pretty(&json).unwrap()) {
        Ok(()) => println!("figures written to {path}"),
        Err(e) => println!("figures not written to {path}: {e}"),
    }
}
