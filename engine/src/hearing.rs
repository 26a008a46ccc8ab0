//! One session's hearing: the user's 16 kHz audio in; speech start and
//! stop, partial transcripts, the end of the user's turn with its final
//! transcript, and barge-in decisions out.
//!
//! It strings the stages together — echo gate → Silero VAD → endpoint
//! detector (Smart Turn) and barge-in → streaming Whisper — on the session's
//! sample clock, with no clock or I/O of its own. The model calls happen in
//! `push_heard`; each is a separate step (VAD chunk, turn verdict, ASR
//! decode) that the frame scheduler can take over as work items.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::asr::{AsrError, Partial, StreamingConfig, StreamingTranscriber, TranscribeOptions, Transcription, Whisper};
use crate::features::LogMelCpu;
use crate::turn::{
    BargeIn, BargeInDecision, EchoGate, EndReason, EndpointDetector, Interruptibility, Patience, SmartTurn, TurnAction,
    TurnMode, TurnModelError,
};
use crate::vad::{CHUNK, SileroVad, VadConfig, VadError, VadEvent, VadSession};

/// A partial whose tokens average below this log-probability is not trusted with barge-in.
const MIN_LOGPROB: f64 = -1.05;
/// Nor one whose no-speech probability is above this.
const MAX_NO_SPEECH: f64 = 0.5;
/// Audio kept from before the VAD's onset so the first syllable is not cut (300 ms).
const PRE_ROLL: usize = 4_800;
/// Quiet VAD chunks (3 × 32 ms) after which a pause's decode and verdict
/// start, before the VAD reports the pause (160 ms): the endpoint then has
/// its verdict about 60 ms sooner. Should speech go on, they are dropped.
const EARLY_PAUSE_CHUNKS: u32 = 3;

/// The resident models hearing uses, shared by every session.
#[derive(Clone)]
pub struct HearingModels {
    pub vad: Arc<SileroVad>,
    /// `None` runs the silence timer alone.
    pub turn: Option<Arc<SmartTurn>>,
    pub asr: Arc<Whisper>,
}

impl std::fmt::Debug for HearingModels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HearingModels").field("smart_turn", &self.turn.is_some()).finish_non_exhaustive()
    }
}

/// A session's hearing settings (from the persona's layers).
#[derive(Debug, Clone, Default)]
pub struct HearingConfig {
    pub vad: VadConfig,
    pub turn_mode: TurnMode,
    pub patience: Patience,
    pub interruptibility: Interruptibility,
    pub transcribe: TranscribeOptions,
    pub streaming: StreamingConfig,
}

/// What the session heard. Times are samples of the session's 16 kHz clock.
#[derive(Debug, Clone, PartialEq)]
pub enum HearingEvent {
    SpeechStarted {
        at: u64,
    },
    SpeechStopped {
        at: u64,
    },
    /// The transcript of the turn so far.
    Partial(Partial),
    /// The user finished; `transcript` is the final of the whole turn.
    EndOfTurn {
        at: u64,
        reason: EndReason,
        transcript: Transcription,
    },
    /// User speech over the replica: hold, interrupt, or resume (a backchannel).
    BargeIn {
        at: u64,
        decision: BargeInDecision,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum HearingError {
    #[error(transparent)]
    Vad(#[from] VadError),
    #[error(transparent)]
    Turn(#[from] TurnModelError),
    #[error(transparent)]
    Asr(#[from] AsrError),
}

/// One session's hearing state.
#[derive(Debug)]
pub struct HearingSession {
    vad: VadSession,
    endpoint: EndpointDetector,
    barge_in: BargeIn,
    echo: EchoGate,
    asr: StreamingTranscriber,
    mel: LogMelCpu,
    /// The last `PRE_ROLL` samples heard outside a turn.
    pre_roll: VecDeque<f32>,
    /// The current turn's audio, for Smart Turn.
    turn_audio: Vec<f32>,
    in_turn: bool,
    /// The turn's length in samples when the current pause was heard.
    pause_len: Option<usize>,
    /// Smart Turn's verdict on the turn as it stood when the pause was
    /// heard, made alongside the pause's decode: the endpoint's first
    /// evaluation of that pause takes it instead of waiting for a model run.
    pause_verdict: Option<f32>,
    /// VAD chunks in a row below the stop threshold.
    quiet_chunks: u32,
    replica_speaking: bool,
    /// P(speech) at which a VAD chunk counts as voiced.
    start_threshold: f32,
    /// P(speech) under which a VAD chunk counts as quiet.
    stop_threshold: f32,
    /// User speech over the replica was confirmed as an interruption.
    interrupted: bool,
    now: u64,
}

impl HearingSession {
    pub fn new(models: &HearingModels, config: HearingConfig) -> Result<Self, HearingError> {
        let mut endpoint = EndpointDetector::new(config.turn_mode, config.patience);
        if models.turn.is_none() {
            endpoint.fall_back_to_silence(config.patience);
        }
        Ok(Self {
            vad: VadSession::new(models.vad.clone(), config.vad)?,
            endpoint,
            barge_in: BargeIn::new(config.interruptibility),
            echo: EchoGate::new(),
            asr: StreamingTranscriber::new(config.transcribe.clone(), config.streaming.clone()),
            mel: LogMelCpu::new(),
            pre_roll: VecDeque::with_capacity(PRE_ROLL),
            turn_audio: Vec::new(),
            in_turn: false,
            pause_len: None,
            pause_verdict: None,
            quiet_chunks: 0,
            replica_speaking: false,
            start_threshold: config.vad.start_threshold,
            stop_threshold: config.vad.stop_threshold,
            interrupted: false,
            now: 0,
        })
    }

    /// Samples heard so far (the session clock).
    pub fn now(&self) -> u64 {
        self.now
    }

    /// New turn-taking sensitivity (`conversation.sensitivity`).
    pub fn set_sensitivity(&mut self, patience: Option<Patience>, interruptibility: Option<Interruptibility>) {
        if let Some(patience) = patience {
            self.endpoint.set_patience(patience);
        }
        if let Some(interruptibility) = interruptibility {
            self.barge_in.set_interruptibility(interruptibility);
        }
    }

    /// The replica's own audio as it is played (16 kHz), for the echo gate.
    pub fn push_played(&mut self, pcm: &[f32]) {
        self.echo.played(pcm);
    }

    /// The replica started or stopped speaking.
    pub fn replica_speaking(&mut self, speaking: bool) -> Vec<HearingEvent> {
        self.replica_speaking = speaking;
        if speaking {
            self.interrupted = false;
        }
        match self.barge_in.replica_speaking(speaking) {
            BargeInDecision::None => Vec::new(),
            decision => vec![HearingEvent::BargeIn { at: self.now, decision }],
        }
    }

    /// Feeds the user's microphone (16 kHz mono); returns what it heard.
    pub fn push_heard(&mut self, models: &HearingModels, pcm: &[f32]) -> Result<Vec<HearingEvent>, HearingError> {
        let mut events = Vec::new();
        let clean: Vec<f32> = pcm.iter().map(|&s| if s.is_finite() { s.clamp(-1.0, 1.0) } else { 0.0 }).collect();
        // The replica's own voice coming back is silence to the VAD.
        let echo = self.echo.heard(&clean);
        let to_vad: Vec<f32> = if echo { vec![0.0; clean.len()] } else { clean.clone() };
        let (vad_events, probs) = self.vad.push(&to_vad)?;
        self.now += clean.len() as u64;
        let scored_until = self.now - self.now % CHUNK as u64;
        let mut voiced = false;
        for (i, p) in probs.iter().enumerate() {
            if *p >= self.start_threshold {
                voiced = true;
                self.barge_in.voiced(scored_until - ((probs.len() - 1 - i) * CHUNK) as u64);
            }
            self.quiet_chunks = if *p < self.stop_threshold { self.quiet_chunks + 1 } else { 0 };
        }
        self.keep_audio(&clean)?;
        if voiced && self.vad.is_speaking() && self.pause_len.is_some() {
            // Speech went on before the VAD called the pause: the early decode is stale.
            self.pause_len = None;
            self.pause_verdict = None;
        }
        if self.in_turn
            && self.vad.is_speaking()
            && self.pause_len.is_none()
            && self.quiet_chunks >= EARLY_PAUSE_CHUNKS
            && let Some(partial) = self.decode_pause(models)?
        {
            events.push(HearingEvent::Partial(partial));
        }

        for e in vad_events {
            match e {
                VadEvent::SpeechStarted { at } => {
                    if !self.in_turn {
                        self.begin_turn()?;
                    }
                    self.pause_len = None;
                    self.pause_verdict = None;
                    self.endpoint.speech_started();
                    self.barge_in.speech_started(at);
                    events.push(HearingEvent::SpeechStarted { at });
                }
                VadEvent::SpeechStopped { at } => {
                    self.endpoint.speech_stopped(at);
                    events.push(HearingEvent::SpeechStopped { at });
                    // Unless it began early, decode the pause now.
                    if self.in_turn
                        && self.pause_len.is_none()
                        && let Some(partial) = self.decode_pause(models)?
                    {
                        events.push(HearingEvent::Partial(partial));
                    }
                    match self.barge_in.speech_stopped() {
                        BargeInDecision::None => {}
                        BargeInDecision::Resume => {
                            // A backchannel: not a turn of the user's.
                            events.push(HearingEvent::BargeIn { at: self.now, decision: BargeInDecision::Resume });
                            self.drop_turn();
                        }
                        decision => self.barge(decision, &mut events),
                    }
                }
            }
        }
        if !self.in_turn {
            return Ok(events);
        }
        // During a pause the turn was decoded when it began; silence adds
        // nothing, and keeping that decode makes the final instant.
        let partial = if self.pause_len.is_some() { None } else { self.asr.step(&models.asr)? };
        if let Some(partial) = partial {
            // Whisper makes words up on a fraction of a second of humming:
            // only a confident decode may confirm an interruption by its words.
            let confident = partial.avg_logprob > MIN_LOGPROB && partial.no_speech_prob < MAX_NO_SPEECH;
            let text = if confident {
                format!("{} {}", partial.committed_text, partial.tentative_text)
            } else {
                String::new()
            };
            let decision = self.barge_in.transcript(text.trim(), self.now);
            events.push(HearingEvent::Partial(partial));
            self.barge(decision, &mut events);
        }
        let decision = self.barge_in.poll(self.now);
        self.barge(decision, &mut events);
        // Over the replica, only a confirmed interruption makes a turn.
        if self.replica_speaking && !self.interrupted {
            return Ok(events);
        }
        let mut action = self.endpoint.poll(self.now);
        if action == TurnAction::Evaluate {
            let p = match (&models.turn, self.pause_verdict.take()) {
                (Some(_), Some(early)) => early,
                (Some(model), None) => model.predict(&self.turn_audio, &mut self.mel)?,
                (None, _) => 0.0,
            };
            action = self.endpoint.model_verdict(p, self.now);
        }
        if let TurnAction::EndOfTurn(reason) = action {
            let transcript = match self.pause_len.take() {
                Some(len) => self.asr.finish_until(&models.asr, len)?,
                None => self.asr.finish(&models.asr)?,
            };
            self.in_turn = false;
            self.turn_audio.clear();
            events.push(HearingEvent::EndOfTurn { at: self.now, reason, transcript });
        }
        Ok(events)
    }

    /// The next sample at which pushing nothing new could still change
    /// something (the endpoint or barge-in timers).
    pub fn next_deadline(&self) -> Option<u64> {
        [self.endpoint.next_deadline(), self.barge_in.next_deadline()].into_iter().flatten().min()
    }

    /// Forgets the current turn and every timer (a new conversation, or the
    /// conversation loop taking the turn away).
    pub fn reset(&mut self) -> Result<(), HearingError> {
        self.drop_turn();
        self.quiet_chunks = 0;
        self.vad.reset()?;
        self.barge_in.reset();
        self.echo.reset();
        self.pre_roll.clear();
        self.replica_speaking = false;
        self.interrupted = false;
        Ok(())
    }

    fn barge(&mut self, decision: BargeInDecision, events: &mut Vec<HearingEvent>) {
        if decision == BargeInDecision::None {
            return;
        }
        if decision == BargeInDecision::Interrupt {
            // The replica's turn is cancelled: from here on it is silent.
            self.interrupted = true;
            self.replica_speaking = false;
            self.barge_in.replica_speaking(false);
        }
        events.push(HearingEvent::BargeIn { at: self.now, decision });
    }

    /// Decodes the turn up to this pause, so if the pause ends the turn its
    /// final is already there, and takes Smart Turn's verdict on it: side
    /// by side, on a core each.
    fn decode_pause(&mut self, models: &HearingModels) -> Result<Option<Partial>, HearingError> {
        self.pause_len = Some(self.asr.len());
        let (asr, turn_audio, mel) = (&mut self.asr, &self.turn_audio, &mut self.mel);
        let (partial, verdict) = std::thread::scope(|scope| {
            let verdict = models.turn.as_ref().map(|model| scope.spawn(|| model.predict(turn_audio, mel)));
            let partial = asr.step_now(&models.asr);
            (partial, verdict.map(|v| v.join()))
        });
        self.pause_verdict = match verdict {
            Some(Ok(Ok(p))) => Some(p),
            Some(Ok(Err(e))) => return Err(e.into()),
            _ => None,
        };
        Ok(partial?.map(|p| Partial { at_pause: true, ..p }))
    }

    fn begin_turn(&mut self) -> Result<(), HearingError> {
        self.in_turn = true;
        let pre: Vec<f32> = self.pre_roll.drain(..).collect();
        self.turn_audio.extend_from_slice(&pre);
        self.asr.push(&pre)?;
        Ok(())
    }

    fn drop_turn(&mut self) {
        self.in_turn = false;
        self.pause_len = None;
        self.pause_verdict = None;
        self.turn_audio.clear();
        self.asr.reset();
        self.endpoint.reset();
    }

    fn keep_audio(&mut self, pcm: &[f32]) -> Result<(), HearingError> {
        if self.in_turn {
            self.turn_audio.extend_from_slice(pcm);
            self.asr.push(pcm)?;
            // Smart Turn looks at the last 8 s only.
            let excess = self.turn_audio.len().saturating_sub(crate::turn::WINDOW_SAMPLES * 2);
            if excess > 0 {
                self.turn_audio.drain(..excess);
            }
        } else {
            self.pre_roll.extend(pcm.iter().copied());
            let excess = self.pre_roll.len().saturating_sub(PRE_ROLL);
            self.pre_roll.drain(..excess);
        }
        Ok(())
    }
}
