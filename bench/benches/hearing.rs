//! A session's hearing on the real models, frame by frame (20 ms) as a call
//! feeds it: sentences spoken by espeak-ng, each followed by silence. For
//! each turn it prints how much audio time passed between the last voiced
//! chunk and the end of the turn (the endpoint decision), what the frame at
//! the pause cost (decoding the turn so far and the Smart Turn verdict), and
//! what the frame that ends the turn cost: the endpoint → final transcript
//! latency, since the final was decoded at the pause. Then the cost of a
//! frame with a streaming decode and of an ordinary frame.
//!
//! Needs the models (`tete models fetch`) and espeak-ng.
//! Run: `cargo bench -p tete-bench --bench hearing`

use std::sync::Arc;
use std::time::{Duration, Instant};

use candle_core::Device;
use tete_bench::harness::speak;
use tete_engine::asr::Whisper;
use tete_engine::hearing::{HearingConfig, HearingEvent, HearingModels, HearingSession};
use tete_engine::models::{Manifest, Store, convert::OUTPUT, default_home};
use tete_engine::turn::SmartTurn;
use tete_engine::vad::SileroVad;

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() {
    let manifest = Manifest::embedded().unwrap();
    let store = Store::new(default_home());
    let dir = |id: &str| store.model_dir(&manifest.model(id).unwrap().id);
    let models = HearingModels {
        vad: Arc::new(SileroVad::load(&dir("silero-vad").join(OUTPUT), &Device::Cpu).expect("tete models fetch")),
        turn: Some(Arc::new(SmartTurn::load(&dir("smart-turn-v3.2").join(OUTPUT), &Device::Cpu).unwrap())),
        asr: Arc::new(Whisper::load(&dir("whisper-tiny.en"), &Device::Cpu).unwrap()),
    };
    let sentences = [
        "What time does the museum open on Sunday?",
        "I would like to book a table for two people tomorrow evening.",
        "Can you tell me how long the flight to Lisbon takes?",
        "Thank you very much, that was really helpful.",
    ];
    let (mut ordinary, mut steps) = (Vec::new(), Vec::new());
    let (mut pauses, mut finals, mut decisions) = (Vec::new(), Vec::new(), Vec::new());
    for text in sentences {
        let mut session = HearingSession::new(&models, HearingConfig::default()).unwrap();
        let mut audio = vec![0.0; 8_000];
        audio.extend(speak(text));
        audio.extend(vec![0.0; 48_000]);
        for frame in audio.chunks(320) {
            let start = Instant::now();
            let events = session.push_heard(&models, frame).unwrap();
            let took = start.elapsed();
            let mut special = false;
            for e in &events {
                match e {
                    HearingEvent::SpeechStopped { .. } => {
                        pauses.push(took);
                        special = true;
                    }
                    HearingEvent::EndOfTurn { reason, transcript, .. } => {
                        finals.push(took);
                        special = true;
                        let silence = match reason {
                            tete_engine::turn::EndReason::Model { silence_ms, .. }
                            | tete_engine::turn::EndReason::Silence { silence_ms } => *silence_ms,
                        };
                        decisions.push(silence);
                        println!(
                            "{text:?} → {:?} after {silence} ms of silence, frame {:.1} ms",
                            transcript.text,
                            ms(took)
                        );
                    }
                    _ => {}
                }
            }
            if !special && events.is_empty() {
                ordinary.push(took);
            } else if !special && events.iter().any(|e| matches!(e, HearingEvent::Partial(_))) {
                steps.push(took);
            }
        }
    }
    let mean = |v: &[Duration]| v.iter().map(|d| ms(*d)).sum::<f64>() / v.len().max(1) as f64;
    let max = |v: &[Duration]| v.iter().map(|d| ms(*d)).fold(0.0, f64::max);
    println!(
        "endpoint decision: {:.0} ms of silence on average after the last voiced chunk (audio time)",
        decisions.iter().sum::<u64>() as f64 / decisions.len().max(1) as f64
    );
    println!("frame at a pause (turn decode + verdict): mean {:.1} ms, max {:.1} ms", mean(&pauses), max(&pauses));
    println!(
        "endpoint → final transcript (frame ending the turn): mean {:.1} ms, max {:.1} ms",
        mean(&finals),
        max(&finals)
    );
    println!(
        "frame with a streaming decode (every 0.5 s of speech): mean {:.1} ms, max {:.1} ms",
        mean(&steps),
        max(&steps)
    );
    println!(
        "ordinary 20 ms frame (VAD, echo gate, timers): mean {:.2} ms ({} frames)",
        mean(&ordinary),
        ordinary.len()
    );
}
