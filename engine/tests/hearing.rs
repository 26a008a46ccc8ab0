//! A session's hearing end to end on the real models: read speech becomes
//! partials and a final transcript at the end of the turn; over the
//! replica's voice a backchannel holds and resumes, a real interruption
//! interrupts and becomes the user's turn, and the replica's own echo is not
//! heard as the user. A pause is decoded before the VAD calls it.

mod common;

use common::{LIBRIVOX, missing, model_dir, model_path, speak, wav_16k};

use std::sync::Arc;

use candle_core::Device;
use tete_engine::asr::Whisper;
use tete_engine::hearing::{HearingConfig, HearingEvent, HearingModels, HearingSession};
use tete_engine::turn::{BargeInDecision, Interruptibility, Patience, SmartTurn};
use tete_engine::vad::SileroVad;

fn models() -> HearingModels {
    HearingModels {
        vad: Arc::new(SileroVad::load(&model_path("silero-vad"), &Device::Cpu).unwrap_or_else(missing)),
        turn: Some(Arc::new(SmartTurn::load(&model_path("smart-turn-v3.2"), &Device::Cpu).unwrap_or_else(missing))),
        asr: Arc::new(Whisper::load(&model_dir("whisper-tiny.en"), &Device::Cpu).unwrap_or_else(missing)),
    }
}

/// Feeds `heard` (and `played`, sample for sample) in 20 ms frames.
fn run(
    session: &mut HearingSession,
    models: &HearingModels,
    heard: &[f32],
    played: Option<&[f32]>,
) -> Vec<HearingEvent> {
    let mut events = Vec::new();
    for (i, frame) in heard.chunks(320).enumerate() {
        if let Some(played) = played {
            let at = (i * 320).min(played.len());
            session.push_played(&played[at..(at + frame.len()).min(played.len())]);
        }
        events.extend(session.push_heard(models, frame).unwrap());
    }
    events
}

fn words(text: &str) -> Vec<String> {
    text.split_whitespace()
        .map(|w| w.chars().filter(|c| c.is_alphanumeric() || *c == '\'').collect::<String>().to_lowercase())
        .filter(|w| !w.is_empty())
        .collect()
}

#[test]
fn read_speech_gives_partials_and_a_final_transcript_at_the_end_of_the_turn() {
    let models = models();
    let config = HearingConfig { patience: Patience::High, ..Default::default() };
    let mut session = HearingSession::new(&models, config).unwrap();
    let mut audio = vec![0.0; 8_000];
    audio.extend(speak("What time does the museum open on Sunday? I would like to visit with my family."));
    audio.extend(vec![0.0; 56_000]);
    let events = run(&mut session, &models, &audio, None);
    let partials: Vec<u64> =
        events.iter().filter_map(|e| if let HearingEvent::Partial(p) = e { Some(p.seq) } else { None }).collect();
    assert!(partials.len() >= 2, "partials while the user speaks: {events:?}");
    assert!(partials.windows(2).all(|w| w[0] < w[1]), "seq increases: {partials:?}");
    let finals: Vec<String> = events
        .iter()
        .filter_map(|e| {
            if let HearingEvent::EndOfTurn { transcript, .. } = e { Some(transcript.text.clone()) } else { None }
        })
        .collect();
    println!("events: {}, partials: {}, finals: {finals:?}", events.len(), partials.len());
    let all = words(&finals.join(" "));
    for w in ["museum", "open", "sunday", "visit", "family"] {
        assert!(all.iter().any(|x| x == w), "{w:?} in {finals:?}");
    }
    assert!(matches!(events.last(), Some(HearingEvent::EndOfTurn { .. })), "the turn ended: {:?}", events.last());
}

/// `text` by espeak-ng without its leading and trailing silence.
fn spoken(text: &str) -> Vec<f32> {
    let pcm = speak(text);
    let loud = |s: &f32| s.abs() > 0.02;
    let (start, end) = (pcm.iter().position(loud).unwrap_or(0), pcm.iter().rposition(loud).map_or(0, |i| i + 1));
    pcm[start..end].to_vec()
}

/// A pause's decode and verdict start after 96 ms of quiet, before the
/// VAD calls the pause at 160 ms, and the turn ends on them; a shorter gap
/// inside the sentence drops them, and the final has the words after it.
#[test]
fn a_pause_is_decoded_before_the_vad_calls_it_and_dropped_if_speech_goes_on() {
    let models = models();
    let mut session = HearingSession::new(&models, HearingConfig::default()).unwrap();
    let mut audio = vec![0.0; 8_000];
    audio.extend(spoken("Tell me about the history"));
    // 144 ms: room for the early decode's three quiet 32 ms chunks, not for the VAD's five.
    audio.extend(vec![0.0; 2_304]);
    audio.extend(spoken("of the old lighthouse by the harbour."));
    let speech_end = audio.len() as u64;
    audio.extend(vec![0.0; 32_000]);
    // (sample clock after the push, event)
    let mut events: Vec<(u64, HearingEvent)> = Vec::new();
    for frame in audio.chunks(320) {
        let heard = session.push_heard(&models, frame).unwrap();
        events.extend(heard.into_iter().map(|e| (session.now(), e)));
    }
    let ends: Vec<&str> = events
        .iter()
        .filter_map(|(_, e)| {
            if let HearingEvent::EndOfTurn { transcript, .. } = e { Some(transcript.text.as_str()) } else { None }
        })
        .collect();
    assert_eq!(ends.len(), 1, "one turn: {ends:?}");
    let heard = words(ends[0]);
    // Whisper spells it either way.
    for w in ["history", "lighthouse", "harbo"] {
        assert!(heard.iter().any(|x| x.starts_with(w)), "{w:?} in {ends:?}");
    }
    let stopped = events.iter().rposition(|(_, e)| matches!(e, HearingEvent::SpeechStopped { .. })).expect("a pause");
    let (decoded_at, pause_partial) = events[..stopped]
        .iter()
        .rev()
        .find(|(_, e)| matches!(e, HearingEvent::Partial(_)))
        .expect("the pause's partial");
    assert!(
        matches!(pause_partial, HearingEvent::Partial(p) if p.at_pause),
        "marked as the pause's: {pause_partial:?}"
    );
    let stopped_at = events[stopped].0;
    println!("speech ends at {speech_end}, pause decoded at {decoded_at}, the VAD calls it at {stopped_at}");
    assert!(*decoded_at > speech_end, "the pause's decode comes after the speech");
    assert!(stopped_at >= decoded_at + 640, "decoded {decoded_at}, VAD stop {stopped_at}: at least 40 ms sooner");
    assert!(
        !events[stopped..].iter().any(|(_, e)| matches!(e, HearingEvent::Partial(_))),
        "the pause is not decoded twice"
    );
}

#[test]
fn over_the_replica_a_backchannel_resumes_and_an_interruption_interrupts() {
    let models = models();
    let config = HearingConfig { interruptibility: Interruptibility::High, ..Default::default() };
    let mut session = HearingSession::new(&models, config).unwrap();
    session.replica_speaking(true);
    // Headphones: the replica's voice does not reach the microphone.
    let mut heard = vec![0.0; 8_000];
    heard.extend(speak("Mm-hm."));
    heard.extend(vec![0.0; 24_000]);
    let events = run(&mut session, &models, &heard, None);
    let decisions: Vec<BargeInDecision> = events
        .iter()
        .filter_map(|e| if let HearingEvent::BargeIn { decision, .. } = e { Some(*decision) } else { None })
        .collect();
    println!("backchannel: {decisions:?} {events:?}");
    assert!(!decisions.contains(&BargeInDecision::Interrupt), "a backchannel does not interrupt: {events:?}");
    assert!(!events.iter().any(|e| matches!(e, HearingEvent::EndOfTurn { .. })), "nor becomes a turn: {events:?}");

    let mut heard = speak("Wait, stop. I have a different question about my booking.");
    heard.extend(vec![0.0; 40_000]);
    let events = run(&mut session, &models, &heard, None);
    let interrupt =
        events.iter().position(|e| matches!(e, HearingEvent::BargeIn { decision: BargeInDecision::Interrupt, .. }));
    let started = events.iter().find_map(|e| if let HearingEvent::SpeechStarted { at } = e { Some(*at) } else { None });
    let Some(i) = interrupt else { panic!("a real interruption interrupts: {events:?}") };
    let HearingEvent::BargeIn { at, .. } = events[i] else { unreachable!() };
    println!("interruption decided {} ms after the speech onset", (at - started.unwrap()) / 16);
    println!("{events:?}");
    let last = events.last().unwrap();
    let HearingEvent::EndOfTurn { transcript, .. } = last else {
        panic!("the interruption is the user's turn: {last:?}")
    };
    assert!(words(&transcript.text).iter().any(|w| w == "question"), "{}", transcript.text);
}

#[test]
fn the_replicas_own_echo_is_not_the_user() {
    let models = models();
    let config = HearingConfig { interruptibility: Interruptibility::High, ..Default::default() };
    let mut session = HearingSession::new(&models, config).unwrap();
    session.replica_speaking(true);
    let played = wav_16k(&format!("{LIBRIVOX}/sense_and_sensibility_01_austen_64kb-0880.wav"));
    let delay = 16 * 120;
    let echo: Vec<f32> = (0..played.len()).map(|i| if i >= delay { 0.3 * played[i - delay] } else { 0.0 }).collect();
    let events = run(&mut session, &models, &echo, Some(&played));
    println!("echo events: {events:?}");
    assert!(
        !events.iter().any(|e| matches!(e, HearingEvent::BargeIn { decision: BargeInDecision::Interrupt, .. })),
        "the replica does not interrupt itself: {events:?}"
    );
    assert!(!events.iter().any(|e| matches!(e, HearingEvent::EndOfTurn { .. })), "{events:?}");
}
