//! The in-process client: each session on a thread of its own, fed and
//! pulled in real time as the WebRTC edge would, the 20 ms pull of the
//! replica's audio standing for the client. With a [`Camera`], each
//! session also shows a picture to the executor's seeing lane at the
//! host's perception rate, as a call's camera does.

use std::time::{Duration, Instant};

use tete_engine::dialogue::{DialogueConfig, Interaction, State};
use tete_engine::face::animate::Performer;
use tete_engine::face::{Replica, RgbImage, Rig, render_i420_cpu};
use tete_engine::llm::context::ConversationContext;
use tete_engine::scheduler::{Executor, STAGES, Seen as Looked, SessionSetup, Sight, StageFigures, Viewer};
use tete_engine::session::{FRAME, FaceCue, LiveSession, RATE};
use tete_engine::tts::viseme::Viseme;

use crate::harness::{REPLY_LIMIT, Report, Turn, between, cpu_time, mouth_lead, ms, rss, speech_end};

/// The default model (SmolLM2-135M) answers this sensibly. Named "Ada",
/// it took "the capital of France" for a cue to speak French, and the
/// call went on in it.
pub const PERSONA: &str = "You are a helpful assistant on a video call. Answer in one short sentence.";

/// Seconds of each reply the A/V alignment looks at.
const SYNC_SECONDS: usize = 3;

/// The longest a turn may take to be answered and spoken.
const TURN_LIMIT: Duration = Duration::from_secs(20);

/// What one session saw of one turn.
struct Seen {
    turn: Turn,
    underruns: u64,
}

/// The picture each session shows the seeing lane, and how often.
#[derive(Clone, Copy)]
pub struct Camera<'a> {
    pub sight: &'a Sight,
    pub image: &'a RgbImage,
    pub fps: f64,
}

/// The executor's per-stage counts now, the seeing lane's last:
/// (name, items, late, run, queued).
fn stage_counts(executor: &Executor, sight: Option<&Sight>) -> Vec<(&'static str, u64, u64, Duration, Duration)> {
    let row = |name, f: StageFigures| (name, f.items, f.late, f.run_total, f.queued_total);
    let stages = STAGES.iter().map(|s| row(s.name(), executor.figures(*s)));
    stages.chain(sight.map(|s| row("see", s.figures()))).collect()
}

/// Runs `sessions` sessions at once on `executor`, each saying every one
/// of `utterances`; `face` renders the first lip-synced frame of each reply.
pub fn run(
    executor: &Executor,
    face: Option<&(Replica, Rig)>,
    camera: Option<Camera<'_>>,
    sessions: usize,
    utterances: &[(String, Vec<f32>)],
) -> Report {
    let sight = camera.map(|c| c.sight);
    let (cpu0, rss0, stages0, wall0) = (cpu_time(), rss(), stage_counts(executor, sight), Instant::now());
    let skipped0 = sight.map_or(0, Sight::skipped);
    let seen: Vec<Vec<Option<Seen>>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..sessions)
            .map(|k| {
                scope.spawn(move || {
                    // Sessions start a little apart, as calls do.
                    std::thread::sleep(Duration::from_millis(700 * k as u64));
                    one_session(executor, face, camera, utterances)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("a session thread")).collect()
    });
    let (cpu, wall) = (cpu_time().saturating_sub(cpu0), wall0.elapsed());
    let stages1 = stage_counts(executor, sight);
    let mut report = Report {
        client: "in-process",
        sessions,
        cpu_share_per_session: cpu.as_secs_f64() / wall.as_secs_f64() / sessions as f64,
        rss_per_session_mb: rss().saturating_sub(rss0) as f64 / sessions as f64 / 1e6,
        frames_skipped: sight.map(|s| s.skipped() - skipped0),
        ..Default::default()
    };
    for (after, before) in stages1.iter().zip(&stages0) {
        let (items, late) = (after.1 - before.1, after.2 - before.2);
        let per = |a: Duration, b: Duration| ms(a.saturating_sub(b)) / items.max(1) as f64;
        report.stages.push((after.0, items, late, per(after.3, before.3), per(after.4, before.4)));
    }
    let mut underruns = 0;
    for s in seen.into_iter().flatten() {
        match s {
            Some(s) => {
                underruns += s.underruns;
                report.turns.push(s.turn);
            }
            None => report.unanswered += 1,
        }
    }
    report.underruns = Some(underruns);
    report
}

fn one_session(
    executor: &Executor,
    face: Option<&(Replica, Rig)>,
    camera: Option<Camera<'_>>,
    utterances: &[(String, Vec<f32>)],
) -> Vec<Option<Seen>> {
    let setup =
        SessionSetup { persona: ConversationContext::new(PERSONA, "", "").persona_messages(), ..Default::default() };
    let config = DialogueConfig { speculative: true, ..Default::default() };
    let started = Instant::now();
    let mut session =
        LiveSession::start(executor, setup, config, ConversationContext::new(PERSONA, "", ""), started).unwrap();
    session.joined(started);
    let eyes = camera.map(|c| Eyes {
        viewer: c.sight.viewer(),
        image: c.image,
        every: (50.0 / c.fps.max(0.1)).round().max(1.0) as u64,
    });
    let mut clock = Clock { start: started, frame: 0, eyes };
    // A second of silence first: the VAD settles, the persona is prefilled.
    for _ in 0..50 {
        clock.frame(&mut session, &[0.0; 320]);
    }
    utterances.iter().map(|(name, pcm)| one_turn(&mut session, &mut clock, face, name, pcm)).collect()
}

/// Real time, 20 ms a frame.
struct Clock<'a> {
    start: Instant,
    frame: u64,
    eyes: Option<Eyes<'a>>,
}

/// A session's camera: its picture to the seeing lane every `every` audio frames.
struct Eyes<'a> {
    viewer: Viewer,
    image: &'a RgbImage,
    every: u64,
}

impl Clock<'_> {
    /// Waits for the next frame's time, feeds `heard` and pulls the
    /// replica's audio: the instant of the frame and its audio.
    fn frame(&mut self, session: &mut LiveSession, heard: &[f32]) -> (Instant, Option<Vec<f32>>) {
        let due = self.start + Duration::from_millis(20 * self.frame);
        self.frame += 1;
        while Instant::now() < due {
            session.wait(Instant::now(), due.saturating_duration_since(Instant::now()));
        }
        let now = Instant::now();
        session.heard(now, heard);
        let audio = session.next_audio(now);
        if let Some(eyes) = self.eyes.as_mut().filter(|e| self.frame.is_multiple_of(e.every)) {
            // What the lane saw is not this harness's business; a frame
            // still out means this one is not shown, as on a call.
            let _: Vec<Looked> = eyes.viewer.seen();
            eyes.viewer.look(self.frame as f64 * 0.02, eyes.image.clone());
        }
        (now, audio)
    }
}

fn one_turn(
    session: &mut LiveSession,
    clock: &mut Clock,
    face: Option<&(Replica, Rig)>,
    name: &str,
    pcm: &[f32],
) -> Option<Seen> {
    let end = speech_end(pcm);
    let underruns = session.underruns();
    session.take_timings();
    session.take_cues();
    session.take_utterances();
    let mut speech_end_at = None;
    let mut first_audio: Option<(Instant, f64)> = None;
    // The reply's audio from the frame of its first sound, and where that frame played.
    let (mut reply_audio, mut reply_from) = (Vec::new(), 0.0);
    let mut cues = Vec::new();
    let (mut spoke, mut cut) = (false, false);
    let mut sample = 0;
    let limit = Instant::now() + TURN_LIMIT + Duration::from_secs_f64(pcm.len() as f64 / 16_000.0);
    while Instant::now() < limit {
        let mut frame = pcm.get(sample..(sample + 320).min(pcm.len())).unwrap_or_default().to_vec();
        frame.resize(320, 0.0);
        let playback = session.playback_seconds();
        let (now, audio) = clock.frame(session, &frame);
        sample += 320;
        if speech_end_at.is_none() && sample >= end {
            speech_end_at = Some(now);
        }
        cues.extend(session.take_cues());
        if let (Some(audio), None, Some(_)) = (&audio, first_audio, speech_end_at) {
            // The first audible sample of the reply, on the playback clock.
            if let Some(i) = audio.iter().position(|s| s.abs() > 0.02) {
                first_audio = Some((now, playback + i as f64 / f64::from(RATE)));
                reply_from = playback;
            }
        }
        if first_audio.is_some() && reply_audio.len() < SYNC_SECONDS * RATE as usize {
            reply_audio.extend(audio.unwrap_or_else(|| vec![0.0; FRAME]));
        }
        spoke |= session.state() == State::ReplicaSpeaking;
        if !cut && first_audio.is_some_and(|(first, _)| now - first > REPLY_LIMIT) {
            session.interaction(now, Interaction::Interrupt);
            cut = true;
        }
        if spoke && session.state() == State::Listening && sample > pcm.len() {
            break;
        }
    }
    let timing = session.take_timings().into_iter().last();
    let said = session.take_utterances();
    let line = |role: &str| said.iter().find(|(r, _)| *r == role).map(|(_, text)| text.clone());
    let ((client_first, onset), timing) = (first_audio?, timing?);
    let mouth_onset = cues.iter().find_map(|c| match c {
        FaceCue::Visemes(v) => v.iter().find(|e| e.viseme != Viseme::Sil).map(|e| e.start),
        _ => None,
    });
    // The face as the renderer poses it for each instant of playback.
    let mut performer = Performer::new(1);
    for cue in &cues {
        if let FaceCue::Visemes(v) = cue {
            performer.speak_visemes(v.clone());
        }
    }
    let lead = mouth_lead(&reply_audio, RATE, reply_from, |t| f64::from(performer.pose_at(t).mouth.open));
    let first_frame = face.map(|(replica, rig)| {
        let started = Instant::now();
        render_i420_cpu(replica, rig, &performer.pose_at(onset)).expect("render");
        ms(started.elapsed())
    });
    let llm_from = timing.end_of_turn;
    Some(Seen {
        turn: Turn {
            utterance: name.to_string(),
            heard: line("user"),
            reply: line("replica"),
            endpoint: between(speech_end_at, Some(timing.end_of_turn)),
            decision_lag: Some(ms(timing.decision_lag)),
            llm_first_phrase: between(Some(llm_from), timing.first_phrase).or(timing.speculative.then_some(0.0)),
            // A speculative phrase may be ready before the turn ends; speech starts after both.
            tts_first_audio: between(timing.first_phrase.map(|p| p.max(timing.end_of_turn)), timing.first_audio),
            first_frame,
            utterance_to_utterance: between(speech_end_at, Some(client_first)),
            mouth_lead: lead,
            onset_gap: mouth_onset.map(|m| (onset - m) * 1e3),
            speculative: timing.speculative,
        },
        underruns: session.underruns() - underruns,
    })
}
