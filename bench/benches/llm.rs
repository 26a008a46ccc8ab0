//! The resident LLM (SmolLM2-135M-Instruct Q4_1) on the CPU through candle:
//! prefill tokens/s (one forward over a ~100-token prompt), decode tokens/s
//! (greedy, one token per forward), and time to first phrase for a 20-word
//! user turn after a persona prompt prefilled once and forked per turn
//! (the turn's prefill, decoding and the phrase chunker up to the first
//! fragment). Each figure is the median of a few runs; logits are read back
//! to host memory inside the timed region, so the device has finished.
//!
//! Needs the models (`tete models fetch`). Run: `cargo bench -p tete-bench --bench llm`

use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use candle_core::Device;
use tete_engine::llm::{ChatMessage, GenerateConfig, Generator, LlmModel, PhraseChunker, Role, Step};
use tete_engine::models::{Manifest, Store, default_home};

const PERSONA: &str = "You are a helpful assistant. You are Ada, a friendly guide at a science museum. \
    Keep answers short and warm, speak in plain words, and ask a follow-up question when it helps.";
const TURN: &str =
    "Hi Ada, my daughter loves planets, so which part of this big museum should we go and visit first today?";

fn median(mut xs: Vec<Duration>) -> Duration {
    xs.sort();
    xs[xs.len() / 2]
}

fn main() {
    let manifest = Manifest::embedded().expect("embedded manifest");
    let id = &manifest.model("smollm2-135m-instruct").expect("smollm2 in the manifest").id;
    let path = Store::new(default_home()).model_dir(id).join("SmolLM2-135M-Instruct.Q4_1.gguf");
    let model = LlmModel::load(&path, &Device::Cpu).unwrap_or_else(|e| panic!("{e}: run `tete models fetch` first"));
    let tok = model.tokenizer();
    let never = AtomicBool::new(false);
    println!("threads: {} (the machine is shared: other builds may run)", candle_core::utils::get_num_threads());

    // Prefill: persona + turn, one forward.
    let prompt = model
        .template()
        .render(&[ChatMessage::new(Role::System, PERSONA), ChatMessage::new(Role::User, TURN)], true)
        .expect("template");
    let ids = tok.encode(&prompt).expect("encode");
    let runs = 5;
    let prefill = median(
        (0..runs)
            .map(|_| {
                let mut s = model.session().expect("session");
                let t = Instant::now();
                s.prefill(&ids).expect("prefill").to_vec1::<f32>().expect("logits");
                t.elapsed()
            })
            .collect(),
    );
    println!(
        "prefill: {} tokens in {:.1} ms = {:.1} tokens/s",
        ids.len(),
        prefill.as_secs_f64() * 1e3,
        ids.len() as f64 / prefill.as_secs_f64()
    );

    // Decode: 64 greedy tokens after that prompt (a stop token ends a run early; count what ran).
    let decode: Vec<(usize, Duration)> = (0..3)
        .map(|_| {
            let mut s = model.session().expect("session");
            s.prefill(&ids).expect("prefill");
            let mut g = Generator::new(&GenerateConfig { max_tokens: 64, ..Default::default() });
            let t = Instant::now();
            while let Step::Token { .. } = g.step(&model, &mut s, &never).expect("step") {}
            (g.tokens().len(), t.elapsed())
        })
        .collect();
    let (n, d) = decode.iter().fold((0, Duration::ZERO), |(n, d), (m, e)| (n + m, d + *e));
    println!(
        "decode: {n} tokens in {:.1} ms = {:.1} tokens/s ({:.1} ms/token)",
        d.as_secs_f64() * 1e3,
        n as f64 / d.as_secs_f64(),
        d.as_secs_f64() * 1e3 / n.max(1) as f64
    );

    // Time to first phrase: persona cached once, each turn forks it.
    let persona = model.template().render(&[ChatMessage::new(Role::System, PERSONA)], false).expect("template");
    let persona_ids = tok.encode(&persona).expect("encode");
    assert!(ids.starts_with(&persona_ids), "the turn extends the persona's tokens");
    let t = Instant::now();
    let prefix = model.prefix(&persona_ids).expect("prefix");
    println!(
        "persona prefix: {} tokens prefilled once in {:.1} ms",
        persona_ids.len(),
        t.elapsed().as_secs_f64() * 1e3
    );
    let mut first = String::new();
    let ttfp = median(
        (0..runs)
            .map(|_| {
                let t = Instant::now();
                let mut s = model.session_from(&prefix).expect("fork");
                s.prefill_to(&ids).expect("turn prefill");
                let mut g = Generator::new(&GenerateConfig { max_tokens: 64, ..Default::default() });
                let mut chunker = PhraseChunker::new();
                let phrase = loop {
                    match g.step(&model, &mut s, &never).expect("step") {
                        Step::Token { text, .. } => {
                            if let Some(p) = chunker.push(&text).into_iter().next() {
                                break p;
                            }
                        }
                        Step::Done(_) => break chunker.finish().unwrap_or_default(),
                    }
                };
                let e = t.elapsed();
                first = phrase;
                e
            })
            .collect(),
    );
    println!(
        "time to first phrase: {:.1} ms ({} turn tokens prefilled after the cached persona; first phrase {first:?})",
        ttfp.as_secs_f64() * 1e3,
        ids.len() - persona_ids.len()
    );
}
