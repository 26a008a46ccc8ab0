//! Turn-taking: when has the user finished (the endpoint), and when does
//! user speech over the replica's voice interrupt it (barge-in).
//!
//! Both decisions are sans-IO state machines on the session's sample clock
//! (16 kHz samples since the session began): they take VAD events and model
//! verdicts, return what to do and when to ask again, and never read a clock.

mod barge_in;
mod echo;
mod smart_turn;

pub use barge_in::{BargeIn, BargeInDecision, Interruptibility, is_backchannel};
pub use echo::EchoGate;
pub use smart_turn::{FRAMES, SmartTurn, TurnModelError, WINDOW_SAMPLES, window_features};

use std::str::FromStr;

const RATE: u64 = 16_000;

fn ms(samples: u64) -> u64 {
    samples * 1000 / RATE
}

fn samples(ms: u64) -> u64 {
    ms * RATE / 1000
}

/// How the endpoint is found (`conversational_flow.turn_detection_model`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TurnMode {
    /// Smart Turn's end-of-turn probability, with a silence timer as the fallback.
    #[default]
    Smart,
    /// A plain silence timer.
    Silence,
}

/// A `low | medium | high` persona setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Level {
    Low,
    #[default]
    Medium,
    High,
}

/// How long the replica waits before taking its turn (`turn_taking_patience`).
pub type Patience = Level;

/// A `low | medium | high` setting that did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not one of low, medium, high")]
pub struct LevelError(pub String);

impl FromStr for Level {
    type Err = LevelError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "low" => Ok(Self::Low),
            "medium" => Ok(Self::Medium),
            "high" => Ok(Self::High),
            other => Err(LevelError(other.into())),
        }
    }
}

impl FromStr for TurnMode {
    type Err = LevelError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "smart" => Ok(Self::Smart),
            "silence" => Ok(Self::Silence),
            other => Err(LevelError(other.into())),
        }
    }
}

/// The numbers behind a patience level. Silences count from the end of the
/// last voiced VAD chunk.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TurnThresholds {
    /// Smart mode: P(end of turn) at or above which the turn ends.
    pub probability: f32,
    /// Smart mode: silence before the model's verdict may end the turn.
    pub min_silence_ms: u64,
    /// Smart mode: silence between two model evaluations of one pause.
    pub reevaluate_ms: u64,
    /// Silence that ends the turn whatever the model says (the fallback),
    /// and the whole rule in silence mode.
    pub max_silence_ms: u64,
}

impl TurnThresholds {
    pub fn new(mode: TurnMode, patience: Patience) -> Self {
        match (mode, patience) {
            (TurnMode::Smart, Patience::Low) => {
                Self { probability: 0.5, min_silence_ms: 150, reevaluate_ms: 300, max_silence_ms: 1000 }
            }
            (TurnMode::Smart, Patience::Medium) => {
                Self { probability: 0.5, min_silence_ms: 250, reevaluate_ms: 400, max_silence_ms: 2000 }
            }
            (TurnMode::Smart, Patience::High) => {
                Self { probability: 0.7, min_silence_ms: 400, reevaluate_ms: 500, max_silence_ms: 3000 }
            }
            (TurnMode::Silence, p) => {
                let max = match p {
                    Patience::Low => 500,
                    Patience::Medium => 800,
                    Patience::High => 1200,
                };
                Self { probability: f32::INFINITY, min_silence_ms: max, reevaluate_ms: max, max_silence_ms: max }
            }
        }
    }
}

/// Why a turn ended.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum EndReason {
    /// Smart Turn judged the turn complete.
    Model { probability: f32, silence_ms: u64 },
    /// The silence timer ran out (silence mode, or the smart mode's fallback).
    Silence { silence_ms: u64 },
}

/// What the caller should do now.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TurnAction {
    /// Nothing yet; ask again by `next_deadline`.
    Wait,
    /// Run Smart Turn on the turn's audio up to now and report with
    /// [`EndpointDetector::model_verdict`].
    Evaluate,
    /// The user has finished.
    EndOfTurn(EndReason),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    /// No user turn under way.
    Idle,
    Speaking,
    /// Silent since `since`; the last evaluation was asked at `evaluated`.
    Paused {
        since: u64,
        evaluated: Option<u64>,
        verdict: Option<f32>,
    },
}

/// Finds the end of the user's turn from VAD events and Smart Turn verdicts.
#[derive(Debug, Clone)]
pub struct EndpointDetector {
    mode: TurnMode,
    thresholds: TurnThresholds,
    state: State,
}

impl EndpointDetector {
    pub fn new(mode: TurnMode, patience: Patience) -> Self {
        Self { mode, thresholds: TurnThresholds::new(mode, patience), state: State::Idle }
    }

    /// A detector that has lost its model (failed to load or to run):
    /// the silence timer decides alone, with the same patience.
    pub fn fall_back_to_silence(&mut self, patience: Patience) {
        self.mode = TurnMode::Silence;
        self.thresholds = TurnThresholds::new(TurnMode::Silence, patience);
    }

    pub fn thresholds(&self) -> TurnThresholds {
        self.thresholds
    }

    /// New patience (`conversation.sensitivity`), from the next pause on.
    pub fn set_patience(&mut self, patience: Patience) {
        self.thresholds = TurnThresholds::new(self.mode, patience);
    }

    /// Whether a user turn is under way (speaking or in a pause).
    pub fn in_turn(&self) -> bool {
        self.state != State::Idle
    }

    /// The VAD heard speech start (again): a pause mid-sentence is over.
    pub fn speech_started(&mut self) {
        self.state = State::Speaking;
    }

    /// The VAD heard speech stop; `at` is where the silence began.
    pub fn speech_stopped(&mut self, at: u64) {
        if self.state == State::Speaking {
            self.state = State::Paused { since: at, evaluated: None, verdict: None };
        }
    }

    /// What to do at sample `now`.
    pub fn poll(&mut self, now: u64) -> TurnAction {
        let State::Paused { since, evaluated, verdict } = self.state else {
            return TurnAction::Wait;
        };
        let silence = ms(now.saturating_sub(since));
        let t = self.thresholds;
        if silence >= t.max_silence_ms {
            self.state = State::Idle;
            return TurnAction::EndOfTurn(EndReason::Silence { silence_ms: silence });
        }
        if self.mode == TurnMode::Silence {
            return TurnAction::Wait;
        }
        if let Some(p) = verdict.filter(|&p| p >= t.probability)
            && silence >= t.min_silence_ms
        {
            self.state = State::Idle;
            return TurnAction::EndOfTurn(EndReason::Model { probability: p, silence_ms: silence });
        }
        let due = match evaluated {
            None => true,
            Some(at) => ms(now.saturating_sub(at)) >= t.reevaluate_ms && verdict.is_some(),
        };
        if due {
            self.state = State::Paused { since, evaluated: Some(now), verdict };
            return TurnAction::Evaluate;
        }
        TurnAction::Wait
    }

    /// Smart Turn's P(end of turn) for the audio up to the evaluation asked
    /// for; returns what to do at `now`.
    pub fn model_verdict(&mut self, probability: f32, now: u64) -> TurnAction {
        if let State::Paused { since, evaluated, .. } = self.state {
            let p = if probability.is_finite() { probability } else { 0.0 };
            self.state = State::Paused { since, evaluated, verdict: Some(p) };
        }
        self.poll(now)
    }

    /// The next sample at which `poll` may answer differently, if any.
    pub fn next_deadline(&self) -> Option<u64> {
        let State::Paused { since, evaluated, verdict } = self.state else {
            return None;
        };
        let t = self.thresholds;
        let mut next = since + samples(t.max_silence_ms);
        if self.mode == TurnMode::Smart {
            if verdict.is_some_and(|p| p >= t.probability) {
                next = next.min(since + samples(t.min_silence_ms));
            } else if let (Some(at), Some(_)) = (evaluated, verdict) {
                next = next.min(at + samples(t.reevaluate_ms));
            }
        }
        Some(next)
    }

    pub fn reset(&mut self) {
        self.state = State::Idle;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = RATE / 1000; // samples per ms

    #[test]
    fn silence_mode_ends_after_its_timer_and_a_resumed_sentence_does_not() {
        let mut d = EndpointDetector::new(TurnMode::Silence, Patience::Medium);
        d.speech_started();
        d.speech_stopped(1000 * S);
        assert_eq!(d.poll(1700 * S), TurnAction::Wait);
        assert_eq!(d.next_deadline(), Some(1800 * S));
        d.speech_started(); // the user goes on
        assert_eq!(d.poll(1900 * S), TurnAction::Wait);
        d.speech_stopped(2500 * S);
        assert_eq!(d.poll(3300 * S), TurnAction::EndOfTurn(EndReason::Silence { silence_ms: 800 }));
        assert!(!d.in_turn());
    }

    #[test]
    fn smart_mode_asks_the_model_and_ends_on_a_confident_verdict() {
        let mut d = EndpointDetector::new(TurnMode::Smart, Patience::Medium);
        d.speech_started();
        d.speech_stopped(1000 * S);
        assert_eq!(d.poll(1160 * S), TurnAction::Evaluate);
        // Confident, but the medium patience waits for 250 ms of silence.
        assert_eq!(d.model_verdict(0.9, 1200 * S), TurnAction::Wait);
        assert_eq!(d.next_deadline(), Some(1250 * S));
        assert_eq!(d.poll(1250 * S), TurnAction::EndOfTurn(EndReason::Model { probability: 0.9, silence_ms: 250 }));
    }

    #[test]
    fn an_unfinished_sentence_waits_for_the_fallback_and_is_reevaluated() {
        let mut d = EndpointDetector::new(TurnMode::Smart, Patience::Medium);
        d.speech_started();
        d.speech_stopped(0);
        assert_eq!(d.poll(160 * S), TurnAction::Evaluate);
        assert_eq!(d.model_verdict(0.1, 200 * S), TurnAction::Wait);
        assert_eq!(d.next_deadline(), Some(560 * S));
        assert_eq!(d.poll(500 * S), TurnAction::Wait);
        assert_eq!(d.poll(560 * S), TurnAction::Evaluate);
        assert_eq!(d.model_verdict(f32::NAN, 600 * S), TurnAction::Wait, "a NaN verdict counts as not finished");
        assert_eq!(d.poll(2000 * S), TurnAction::EndOfTurn(EndReason::Silence { silence_ms: 2000 }));
    }

    #[test]
    fn no_second_evaluation_before_the_first_verdict() {
        let mut d = EndpointDetector::new(TurnMode::Smart, Patience::Low);
        d.speech_started();
        d.speech_stopped(0);
        assert_eq!(d.poll(160 * S), TurnAction::Evaluate);
        assert_eq!(d.poll(900 * S), TurnAction::Wait, "the verdict is still being computed");
    }

    #[test]
    fn patience_orders_the_thresholds_and_parses() {
        let [low, mid, high] =
            [Patience::Low, Patience::Medium, Patience::High].map(|p| TurnThresholds::new(TurnMode::Smart, p));
        assert!(low.max_silence_ms < mid.max_silence_ms && mid.max_silence_ms < high.max_silence_ms);
        assert!(low.min_silence_ms < mid.min_silence_ms && mid.min_silence_ms < high.min_silence_ms);
        assert!(low.probability <= mid.probability && mid.probability < high.probability);
        assert_eq!("high".parse::<Patience>(), Ok(Patience::High));
        assert_eq!("silence".parse::<TurnMode>(), Ok(TurnMode::Silence));
        assert!("loud".parse::<Patience>().is_err());
    }

    #[test]
    fn losing_the_model_falls_back_to_the_timer() {
        let mut d = EndpointDetector::new(TurnMode::Smart, Patience::Low);
        d.fall_back_to_silence(Patience::Low);
        d.speech_started();
        d.speech_stopped(0);
        assert_eq!(d.poll(300 * S), TurnAction::Wait);
        assert_eq!(d.poll(500 * S), TurnAction::EndOfTurn(EndReason::Silence { silence_ms: 500 }));
    }
}
