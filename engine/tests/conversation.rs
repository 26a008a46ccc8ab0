//! The conversation loop on the real models, in process: the executor owns
//! the models, a live session is driven in real time with spoken audio,
//! and what the replica says back is heard by our own ASR.

mod common;

use common::speak;

use std::time::{Duration, Instant};

use candle_core::Device;
use tete_engine::asr::{SpeechToText, TranscribeOptions};
use tete_engine::dialogue::{DialogueConfig, Interaction, State};
use tete_engine::llm::context::ConversationContext;
use tete_engine::llm::openai::Message;
use tete_engine::models::{Manifest, Store, default_home};
use tete_engine::scheduler::{Executor, Resident, ResidentIds, SessionSetup, Stage};
use tete_engine::session::{FRAME, LiveSession};

const PERSONA: &str = "You are Ada, a friendly assistant on a video call. Answer in one short sentence.";

fn executor() -> Executor {
    let manifest = Manifest::embedded().unwrap();
    let resident = Resident::load(&manifest, &Store::new(default_home()), &ResidentIds::default(), &Device::Cpu)
        .unwrap_or_else(|e| panic!("{e}: run `tete models fetch` first"));
    Executor::start(resident, 4).unwrap()
}

fn session(executor: &Executor, greeting: Option<&str>) -> LiveSession {
    let setup = SessionSetup { persona: vec![Message::new("system", PERSONA)], ..Default::default() };
    let config = DialogueConfig { greeting: greeting.map(str::to_string), speculative: true, ..Default::default() };
    LiveSession::start(executor, setup, config, ConversationContext::new(PERSONA, "", ""), Instant::now()).unwrap()
}

/// What a stretch of the call gave.
#[derive(Default)]
struct Heard {
    /// The replica's audio (48 kHz), silence included.
    audio: Vec<f32>,
    events: Vec<(&'static str, serde_json::Value)>,
    utterances: Vec<(&'static str, String)>,
}

/// Runs the call in real time, the user saying `user` from the start
/// (then silence), until `done` (once `user` is said) or `limit` seconds.
fn run(
    session: &mut LiveSession,
    user: &[f32],
    limit: f64,
    heard: &mut Heard,
    done: impl Fn(&LiveSession, &Heard) -> bool,
) {
    let start = Instant::now();
    let frames = (limit * 50.0) as usize;
    for i in 0..frames {
        if i * 320 >= user.len() && done(session, heard) {
            return;
        }
        let due = start + Duration::from_millis(20 * i as u64);
        while Instant::now() < due {
            session.wait(Instant::now(), due.saturating_duration_since(Instant::now()));
        }
        let now = Instant::now();
        let from = (i * 320).min(user.len());
        let mut frame = user[from..(from + 320).min(user.len())].to_vec();
        frame.resize(320, 0.0);
        session.heard(now, &frame);
        let audio = session.next_audio(now);
        assert!(audio.as_ref().is_none_or(|a| a.len() == FRAME));
        heard.audio.extend(audio.unwrap_or_else(|| vec![0.0; FRAME]));
        heard.events.extend(session.take_events());
        heard.utterances.extend(session.take_utterances());
    }
}

fn rms(x: &[f32]) -> f32 {
    (x.iter().map(|s| s * s).sum::<f32>() / x.len().max(1) as f32).sqrt()
}

fn count(heard: &Heard, event_type: &str) -> usize {
    heard.events.iter().filter(|(t, _)| *t == event_type).count()
}

#[test]
fn the_replica_greets_hears_a_question_and_answers_it_aloud() {
    let executor = executor();
    let mut session = session(&executor, Some("Hello, I am Ada."));
    session.joined(Instant::now());
    let mut heard = Heard::default();
    run(&mut session, &[], 30.0, &mut heard, |s, h| s.state() == State::Listening && !h.utterances.is_empty());
    let greeting_rms = rms(&heard.audio);
    assert!(greeting_rms > 0.01, "the greeting was not heard (RMS {greeting_rms})");
    assert_eq!(session.state(), State::Listening, "{:?}", heard.events);
    assert!(heard.utterances.contains(&("replica", "Hello, I am Ada.".to_string())), "{:?}", heard.utterances);

    let question = speak("What is the capital of France?");
    let before = heard.audio.len();
    let answered = |s: &LiveSession, h: &Heard| {
        s.state() == State::Listening && h.utterances.iter().filter(|(r, _)| *r == "replica").count() >= 2
    };
    run(&mut session, &question, 60.0, &mut heard, answered);
    let user: Vec<&String> = heard.utterances.iter().filter(|(r, _)| *r == "user").map(|(_, t)| t).collect();
    assert_eq!(user.len(), 1, "{:?}", heard.utterances);
    assert!(user[0].to_lowercase().contains("capital"), "heard {user:?}");
    let replica: Vec<&String> = heard.utterances.iter().filter(|(r, _)| *r == "replica").map(|(_, t)| t).collect();
    assert_eq!(replica.len(), 2, "greeting and answer: {:?} {:?}", heard.utterances, heard.events);
    for event in [
        "conversation.user.started_speaking",
        "conversation.user.stopped_speaking",
        "conversation.replica.started_speaking",
        "conversation.replica.stopped_speaking",
    ] {
        assert!(count(&heard, event) >= 1, "no {event} in {:?}", heard.events);
    }
    assert!(count(&heard, "conversation.utterance.streaming") >= 2);

    // The answer's audio, heard by our own ASR, says what the transcript says.
    let answer = &heard.audio[before..];
    assert!(rms(answer) > 0.005, "no answer was heard");
    let answer_16k = tete_engine::audio::resample(answer, 48_000, 16_000).unwrap();
    let asr = tete_engine::asr::Whisper::load(&common::model_dir("whisper-tiny.en"), &Device::Cpu).unwrap();
    let transcribed = asr.transcribe(&answer_16k, &TranscribeOptions::default()).unwrap().text;
    eprintln!("the replica said {:?}; ASR heard {transcribed:?}", replica[1]);
    let said = common::normalise(replica[1]);
    let got = common::normalise(&transcribed);
    let shared = said.iter().filter(|w| got.contains(w)).count();
    assert!(shared * 2 >= said.len(), "the replica said {said:?}, ASR heard {got:?}");

    let timings = session.take_timings();
    assert_eq!(timings.len(), 1, "one answered turn");
    let t = timings[0];
    let speech_end = t.speech_end.expect("the end of speech was heard");
    assert!(speech_end <= t.end_of_turn && t.end_of_turn <= t.first_played || t.speculative);
    let u2u = t.first_played - speech_end;
    eprintln!(
        "utterance to utterance {:.0} ms (endpoint {:.0} ms, speculative {})",
        u2u.as_secs_f64() * 1e3,
        (t.end_of_turn - speech_end).as_secs_f64() * 1e3,
        t.speculative
    );
    // Underruns and latency are timing: the harness measures them
    // (`cargo bench -p tete-bench --bench conversation`).
    for stage in [Stage::Hear, Stage::Prefill, Stage::Decode, Stage::Speak] {
        assert!(executor.figures(stage).items > 0, "{stage:?} ran nothing");
    }
}

#[test]
fn interactions_echo_respond_interrupt_and_bad_sensitivity() {
    let executor = executor();
    let mut session = session(&executor, None);
    session.joined(Instant::now());
    let mut heard = Heard::default();
    session.interaction(Instant::now(), Interaction::EchoText("This is an echo.".into()));
    run(&mut session, &[], 30.0, &mut heard, |s, h| s.state() == State::Listening && !h.utterances.is_empty());
    assert!(heard.utterances.contains(&("replica", "This is an echo.".to_string())), "{:?}", heard.utterances);

    session.interaction(
        Instant::now(),
        Interaction::Respond("Tell me a long story about a dragon who learns to bake bread.".into()),
    );
    let mut story = Heard::default();
    // Half a second into the story, the user interrupts.
    let speaking = |s: &LiveSession, h: &Heard| {
        s.state() == State::ReplicaSpeaking && h.audio.iter().rev().take(25_000).any(|x| x.abs() > 0.01)
    };
    run(&mut session, &[], 60.0, &mut story, speaking);
    assert_eq!(session.state(), State::ReplicaSpeaking, "{:?}", story.events);
    session.interaction(Instant::now(), Interaction::Interrupt);
    run(&mut session, &[], 1.0, &mut story, |_, _| false);
    assert_eq!(count(&story, "conversation.replica_interrupted"), 1, "{:?}", story.events);
    let after = &story.audio[story.audio.len() - 25 * FRAME..];
    assert_eq!(rms(after), 0.0, "the replica went on after the interrupt");
    assert_eq!(session.state(), State::UserSpeaking);

    session.interaction(
        Instant::now(),
        Interaction::Sensitivity(serde_json::json!({"participant_pause_sensitivity": "often"})),
    );
    let events = session.take_events();
    assert!(events.iter().any(|(t, p)| *t == "conversation.error" && p["message"].as_str().unwrap().contains("often")));
}
