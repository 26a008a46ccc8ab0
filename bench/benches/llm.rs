//! The resident LLM (SmolLM2-135M-Instruct Q4_1) on the CPU, native
//! backend: prefill tokens/s (one forward over a ~80-token prompt), decode
//! tokens/s (greedy, one token per forward), time to first phrase for a
//! 20-word user turn after a persona prompt prefilled once and forked per
//! turn (the turn's prefill, decoding and the phrase chunker up to the first
//! fragment), and batched decode throughput for 1, 2 and 4 sessions stepped
//! together, and a function call generated under its grammar (tokens/s of
//! the masked steps against free decode, and the one-off cost of the
//! grammar's token trie). Each figure is the median of a few runs; logits are read back
//! to host memory inside the timed region, so the device has finished.
//! candle's quantized llama on the same file is measured the same way, and
//! llama.cpp (`bench/llama_cpp.py`: llama-cpp-python built native, 2
//! threads) on the same prompt ids, in the same run; the ratios are printed.
//! Set `TETE_BENCH_NO_LLAMA_CPP=1` to skip llama.cpp (its first run builds it).
//! Under `cargo test` (no `--bench` argument) it runs once over a few tokens
//! as a smoke test, without the comparisons.
//!
//! Needs the models (`tete models fetch`). Run: `cargo bench -p tete-bench --bench llm`

use std::process::Command;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use candle_core::Device;
use tete_engine::llm::tools::{CALL_OPEN, parse_tools};
use tete_engine::llm::{
    ChatMessage, GenerateConfig, Generator, LlmBackend, LlmModel, LlmSession, PhraseChunker, Role, Step,
};
use tete_engine::models::{Manifest, Store, default_home};

const PERSONA: &str = "You are a helpful assistant. You are Ada, a friendly guide at a science museum. \
    Keep answers short and warm, speak in plain words, and ask a follow-up question when it helps.";
const TURN: &str =
    "Hi Ada, my daughter loves planets, so which part of this big museum should we go and visit first today?";

fn median(mut xs: Vec<Duration>) -> Duration {
    xs.sort();
    xs[xs.len() / 2]
}

/// How much to run: the full measurement, or a smoke test under `cargo test`.
#[derive(Clone, Copy)]
struct Scale {
    /// Greedy tokens decoded per decode run.
    decode: usize,
    runs: usize,
}

/// Prefill and decode rates (tokens/s) of one backend on `ids`.
fn rates(model: &LlmModel, ids: &[u32], scale: Scale) -> (f64, f64) {
    let never = AtomicBool::new(false);
    let prefill = median(
        (0..scale.runs)
            .map(|_| {
                let mut s = model.session().expect("session");
                let t = Instant::now();
                s.prefill(ids).expect("prefill").to_vec1::<f32>().expect("logits");
                t.elapsed()
            })
            .collect(),
    );
    // Greedy decoding after the prompt (a stop token ends a run early; count what ran).
    let decode: Vec<(usize, Duration)> = (0..scale.runs.div_ceil(2))
        .map(|_| {
            let mut s = model.session().expect("session");
            s.prefill(ids).expect("prefill");
            let mut g = Generator::new(&GenerateConfig { max_tokens: scale.decode, ..Default::default() });
            let t = Instant::now();
            while let Step::Token { .. } = g.step(model, &mut s, &never).expect("step") {}
            (g.tokens().len(), t.elapsed())
        })
        .collect();
    let (n, d) = decode.iter().fold((0, Duration::ZERO), |(n, d), (m, e)| (n + m, d + *e));
    (ids.len() as f64 / prefill.as_secs_f64(), n as f64 / d.as_secs_f64())
}

/// llama.cpp's prefill and decode rates on the same file and ids, from `bench/llama_cpp.py`.
fn llama_cpp(path: &std::path::Path, ids: &[u32], decode: usize) -> Result<(f64, f64, String), String> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/llama_cpp.py");
    let ids: Vec<String> = ids.iter().map(u32::to_string).collect();
    let out = Command::new("python3")
        .arg(script)
        .arg(path)
        .args(["--ids", &ids.join(","), "--decode", &decode.to_string(), "--threads", "2"])
        .output()
        .map_err(|e| format!("running {script}: {e}"))?;
    if !out.status.success() {
        return Err(format!("{script} failed: {}", String::from_utf8_lossy(&out.stderr).trim()));
    }
    let line = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value =
        serde_json::from_str(line.trim()).map_err(|e| format!("{script} printed {line:?}: {e}"))?;
    let num = |k: &str| v[k].as_f64().ok_or_else(|| format!("{script}: no {k} in {line}"));
    Ok((
        num("prefill_tokens")? / num("prefill_seconds")?,
        num("decode_tokens")? / num("decode_seconds")?,
        v["version"].as_str().unwrap_or("?").to_string(),
    ))
}

/// Tokens of `ids` that are the persona's system message.
fn persona_len(model: &LlmModel, ids: &[u32]) -> usize {
    let persona = model.template().render(&[ChatMessage::new(Role::System, PERSONA)], false).expect("template");
    let persona_ids = model.tokenizer().encode(&persona).expect("encode");
    assert!(ids.starts_with(&persona_ids), "the turn extends the persona's tokens");
    persona_ids.len()
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let scale = if full { Scale { decode: 64, runs: 5 } } else { Scale { decode: 4, runs: 1 } };
    let manifest = Manifest::embedded().expect("embedded manifest");
    let id = &manifest.model("smollm2-135m-instruct").expect("smollm2 in the manifest").id;
    let path = Store::new(default_home()).model_dir(id).join("SmolLM2-135M-Instruct.Q4_1.gguf");
    let model = LlmModel::load(&path, &Device::Cpu).unwrap_or_else(|e| panic!("{e}: run `tete models fetch` first"));
    assert_eq!(model.backend(), LlmBackend::Native);
    let tok = model.tokenizer();
    let never = AtomicBool::new(false);
    println!(
        "threads: {} (the machine is shared: other builds may run); weights held: {:.1} MB; products on {:?} (TETE_QUANT_ISA=avx2 for AVX2)",
        rayon::current_num_threads(),
        model.weight_bytes().unwrap_or(0) as f64 / 1e6,
        tete_kernels::quant::Isa::best()
    );

    let prompt = model
        .template()
        .render(&[ChatMessage::new(Role::System, PERSONA), ChatMessage::new(Role::User, TURN)], true)
        .expect("template");
    let ids = tok.encode(&prompt).expect("encode");
    let (prefill, decode) = rates(&model, &ids, scale);
    println!(
        "native: prefill {} tokens at {prefill:.1} tokens/s; decode {decode:.1} tokens/s ({:.1} ms/token)",
        ids.len(),
        1e3 / decode
    );

    // Decode deep into a conversation: ~1000 tokens of context already held.
    let mut long = model.session().expect("session");
    let mut context = ids.clone();
    while context.len() < if full { 1000 } else { 150 } {
        context.extend_from_slice(&ids[persona_len(&model, &ids)..]);
    }
    long.prefill(&context).expect("long prefill");
    let t = Instant::now();
    let steps = if full { 32 } else { 2 };
    for i in 0..steps {
        long.step(260 + i).expect("step");
    }
    let deep = steps as f64 / t.elapsed().as_secs_f64();
    println!("decode after {} tokens of context: {deep:.1} tokens/s ({:.1} ms/token)", context.len(), 1e3 / deep);

    // Time to first phrase: persona cached once, each turn forks it.
    let persona_ids = &ids[..persona_len(&model, &ids)];
    let t = Instant::now();
    let prefix = model.prefix(persona_ids).expect("prefix");
    println!(
        "persona prefix: {} tokens prefilled once in {:.1} ms",
        persona_ids.len(),
        t.elapsed().as_secs_f64() * 1e3
    );
    let mut first = String::new();
    let ttfp = median(
        (0..scale.runs)
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

    // Batched decode: N sessions forked from the persona, one token each per forward.
    let mut single = 0.0;
    for n in [1usize, 2, 4] {
        let mut sessions: Vec<LlmSession> = (0..n)
            .map(|_| {
                let mut s = model.session_from(&prefix).expect("fork");
                s.prefill_to(&ids).expect("turn");
                s
            })
            .collect();
        let steps = if full { 32 } else { 2 };
        let t = Instant::now();
        for i in 0..steps {
            let mut batch: Vec<(&mut LlmSession, u32)> = sessions.iter_mut().map(|s| (s, 260 + i as u32)).collect();
            model.step_batch(&mut batch).expect("batched step");
        }
        let rate = (n * steps) as f64 / t.elapsed().as_secs_f64();
        if n == 1 {
            single = rate;
        }
        println!(
            "batched decode, {n} session(s): {rate:.1} tokens/s in all, {:.1} per session ({:.2}x one session's total)",
            rate / n as f64,
            rate / single
        );
    }

    // A function call: the prompt and the marker prefilled, then the call's
    // tokens drawn under the JSON schema's mask.
    let t = Instant::now();
    let grammar = model.call_grammar().expect("call grammar");
    let trie_ms = t.elapsed().as_secs_f64() * 1e3;
    let tools = parse_tools(&[serde_json::json!({"type": "function", "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}, "required": ["city", "unit"]},
    }})])
    .expect("tools");
    let ask = model
        .template()
        .render(
            &[ChatMessage::new(Role::System, PERSONA), ChatMessage::new(Role::User, "What is the weather in Oslo?")],
            true,
        )
        .expect("template");
    let call_ids: Vec<u32> = tok.encode(&(ask + CALL_OPEN)).expect("encode");
    let mut call = String::new();
    let mut call_tokens = 0;
    let call_rate = median(
        (0..scale.runs)
            .map(|_| {
                let mut s = model.session().expect("session");
                s.prefill(&call_ids).expect("prefill");
                let mut constraint = grammar.call(&tools).expect("constraint");
                let mut g = Generator::new(&GenerateConfig { max_tokens: 64, ..Default::default() });
                let t = Instant::now();
                call.clear();
                while let Step::Token { text, .. } =
                    g.step_constrained(&model, &mut s, &never, &mut constraint).expect("constrained step")
                {
                    call.push_str(&text);
                }
                call_tokens = g.tokens().len();
                t.elapsed() / call_tokens.max(1) as u32
            })
            .collect(),
    );
    let call_rate = 1.0 / call_rate.as_secs_f64();
    println!(
        "function call under its grammar: {call_tokens} tokens at {call_rate:.1} tokens/s ({:.2}x free decode); \
         the vocabulary's token trie built once in {trie_ms:.0} ms; the call: {call}",
        call_rate / decode
    );

    if !full {
        println!("(smoke run: no comparisons; `cargo bench -p tete-bench --bench llm` measures)");
        return;
    }
    let candle = LlmModel::load_with(&path, &Device::Cpu, LlmBackend::Candle).expect("candle backend");
    let (c_prefill, c_decode) = rates(&candle, &ids, scale);
    println!(
        "candle quantized llama: prefill {c_prefill:.1} tokens/s, decode {c_decode:.1} tokens/s; native / candle: prefill {:.2}x, decode {:.2}x",
        prefill / c_prefill,
        decode / c_decode
    );

    if std::env::var_os("TETE_BENCH_NO_LLAMA_CPP").is_some() {
        println!("llama.cpp: skipped (TETE_BENCH_NO_LLAMA_CPP)");
        return;
    }
    match llama_cpp(&path, &ids, scale.decode) {
        Ok((l_prefill, l_decode, version)) => println!(
            "llama.cpp {version} (2 threads): prefill {l_prefill:.1} tokens/s, decode {l_decode:.1} tokens/s; native / llama.cpp: prefill {:.2}x (goal 2), decode {:.2}x (goal 1.5)",
            prefill / l_prefill,
            decode / l_decode
        ),
        Err(e) => println!("llama.cpp: no result: {e}"),
    }
}
