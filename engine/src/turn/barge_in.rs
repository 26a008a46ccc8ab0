//! Barge-in: does user speech over the replica's voice interrupt it?
//!
//! Within `hold_ms` of the user's speech onset (200 ms at high
//! interruptibility) the replica is told to hold — stop sending new audio
//! and wait — so a real interruption is answered at once. The hold becomes
//! an interruption when the words are more than a backchannel ("mm-hm",
//! "yeah", "okay", "right"…) or the speech lasts longer than a backchannel
//! does; it is released, and the replica resumes, when the speech ends as a
//! backchannel. Low interruptibility waits longer and needs more words.

use super::{Level, ms, samples};

/// How readily the replica lets itself be interrupted (`replica_interruptibility`).
pub type Interruptibility = Level;

#[derive(Debug, Clone, Copy, PartialEq)]
struct Levels {
    /// Voiced time after onset before the replica holds.
    hold_ms: u64,
    /// Voiced time after which speech is more than a backchannel.
    confirm_ms: u64,
    /// Words (not backchannel words) that confirm an interruption.
    confirm_words: usize,
}

fn levels(interruptibility: Interruptibility) -> Levels {
    match interruptibility {
        Level::High => Levels { hold_ms: 200, confirm_ms: 700, confirm_words: 1 },
        Level::Medium => Levels { hold_ms: 300, confirm_ms: 1000, confirm_words: 2 },
        Level::Low => Levels { hold_ms: 500, confirm_ms: 1600, confirm_words: 3 },
    }
}

/// Words that acknowledge without taking the turn.
const BACKCHANNELS: &[&str] = &[
    "mm", "mhm", "mm-hm", "mmhm", "mmhmm", "hm", "hmm", "uh-huh", "uhhuh", "uh", "huh", "yeah", "yep", "yes", "ya",
    "okay", "ok", "right", "sure", "alright", "i", "see", "got", "it", "cool", "nice", "wow", "oh", "ah", "aha",
];

fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| c.is_whitespace() || c == ',' || c == '.' || c == '!' || c == '?')
        .map(|w| w.trim_matches(|c: char| !c.is_alphanumeric() && c != '-').to_lowercase())
        .filter(|w| !w.is_empty())
}

/// Whether `text` is only backchannel words ("Mm-hm.", "yeah, right", "okay").
pub fn is_backchannel(text: &str) -> bool {
    let mut any = false;
    for w in words(text) {
        if !BACKCHANNELS.contains(&w.as_str()) {
            return false;
        }
        any = true;
    }
    any
}

fn content_words(text: &str) -> usize {
    words(text).filter(|w| !BACKCHANNELS.contains(&w.as_str())).count()
}

/// What barge-in decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BargeInDecision {
    /// Nothing changes.
    None,
    /// The user may be interrupting: stop sending new replica audio.
    Hold,
    /// The user is interrupting: cancel the replica's turn.
    Interrupt,
    /// It was a backchannel: the replica goes on.
    Resume,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Quiet,
    /// User speech began at `onset` while the replica spoke.
    Onset {
        onset: u64,
    },
    Holding {
        onset: u64,
    },
    /// Decided for this stretch of speech; wait for it to end.
    Done,
}

/// One session's barge-in detector, on the 16 kHz sample clock.
#[derive(Debug, Clone)]
pub struct BargeIn {
    levels: Levels,
    replica_speaking: bool,
    user_speaking: bool,
    state: State,
    text: String,
    /// End of the last chunk the VAD scored as speech.
    voiced_until: u64,
}

impl BargeIn {
    pub fn new(interruptibility: Interruptibility) -> Self {
        Self {
            levels: levels(interruptibility),
            replica_speaking: false,
            user_speaking: false,
            state: State::Quiet,
            text: String::new(),
            voiced_until: 0,
        }
    }

    /// New interruptibility (`conversation.sensitivity`), from the next decision on.
    pub fn set_interruptibility(&mut self, interruptibility: Interruptibility) {
        self.levels = levels(interruptibility);
    }

    /// The replica started or stopped playing its voice.
    pub fn replica_speaking(&mut self, speaking: bool) -> BargeInDecision {
        self.replica_speaking = speaking;
        if speaking {
            return BargeInDecision::None;
        }
        let held = matches!(self.state, State::Holding { .. });
        self.state = if self.user_speaking { State::Done } else { State::Quiet };
        if held { BargeInDecision::Resume } else { BargeInDecision::None }
    }

    /// The VAD heard user speech begin at sample `at` (echo already removed).
    pub fn speech_started(&mut self, at: u64) {
        self.user_speaking = true;
        self.voiced_until = self.voiced_until.max(at);
        self.text.clear();
        if self.replica_speaking && self.state == State::Quiet {
            self.state = State::Onset { onset: at };
        }
    }

    /// The VAD heard user speech end: a hold not confirmed by then was a backchannel.
    pub fn speech_stopped(&mut self) -> BargeInDecision {
        self.user_speaking = false;
        let decision = match self.state {
            State::Holding { .. } if content_words(&self.text) >= self.levels.confirm_words => {
                BargeInDecision::Interrupt
            }
            State::Holding { .. } => BargeInDecision::Resume,
            _ => BargeInDecision::None,
        };
        self.state = State::Quiet;
        decision
    }

    /// The VAD scored the chunk ending at sample `end` as speech. Speech
    /// counts as long only by its voiced time, not by the VAD's hangover.
    pub fn voiced(&mut self, end: u64) {
        self.voiced_until = self.voiced_until.max(end);
    }

    /// The streaming recogniser's current text for this stretch of speech.
    pub fn transcript(&mut self, text: &str, now: u64) -> BargeInDecision {
        self.text.clear();
        self.text.push_str(text);
        self.poll(now)
    }

    /// What to do at sample `now`.
    pub fn poll(&mut self, now: u64) -> BargeInDecision {
        let l = self.levels;
        match self.state {
            State::Onset { onset } if ms(now.saturating_sub(onset)) >= l.hold_ms => {
                self.state = State::Holding { onset };
                self.poll(now).max_with(BargeInDecision::Hold)
            }
            State::Holding { onset } => {
                let long = ms(self.voiced_until.min(now).saturating_sub(onset)) >= l.confirm_ms;
                if long || content_words(&self.text) >= l.confirm_words {
                    self.state = State::Done;
                    BargeInDecision::Interrupt
                } else {
                    BargeInDecision::None
                }
            }
            _ => BargeInDecision::None,
        }
    }

    /// The next sample at which `poll` may answer differently.
    pub fn next_deadline(&self) -> Option<u64> {
        let l = self.levels;
        match self.state {
            State::Onset { onset } => Some(onset + samples(l.hold_ms)),
            State::Holding { onset } => Some(onset + samples(l.confirm_ms)),
            _ => None,
        }
    }

    pub fn reset(&mut self) {
        self.replica_speaking = false;
        self.user_speaking = false;
        self.state = State::Quiet;
        self.text.clear();
        self.voiced_until = 0;
    }
}

impl BargeInDecision {
    /// The stronger of two decisions made in one step.
    fn max_with(self, other: Self) -> Self {
        if self == Self::Interrupt || other == Self::Interrupt { Self::Interrupt } else { other }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 16; // samples per ms

    #[test]
    fn backchannels_are_recognised() {
        for t in ["Mm-hm.", "yeah", "Okay, right.", "uh-huh", "Yes!", "I see"] {
            assert!(is_backchannel(t), "{t}");
        }
        for t in ["", "wait", "yeah but what about Tuesday", "stop"] {
            assert!(!is_backchannel(t), "{t}");
        }
    }

    #[test]
    fn a_backchannel_holds_then_resumes() {
        let mut b = BargeIn::new(Interruptibility::High);
        b.replica_speaking(true);
        b.speech_started(1000 * S);
        assert_eq!(b.poll(1100 * S), BargeInDecision::None);
        assert_eq!(b.poll(1200 * S), BargeInDecision::Hold, "a hold within 200 ms of onset");
        assert_eq!(b.transcript("Mm-hm.", 1350 * S), BargeInDecision::None);
        assert_eq!(b.speech_stopped(), BargeInDecision::Resume);
    }

    #[test]
    fn words_confirm_an_interruption() {
        let mut b = BargeIn::new(Interruptibility::High);
        b.replica_speaking(true);
        b.speech_started(0);
        assert_eq!(b.poll(200 * S), BargeInDecision::Hold);
        assert_eq!(b.transcript("wait", 450 * S), BargeInDecision::Interrupt);
        assert_eq!(b.poll(900 * S), BargeInDecision::None, "decided once per stretch of speech");
    }

    #[test]
    fn long_speech_interrupts_without_words_and_low_waits_longer() {
        let mut high = BargeIn::new(Interruptibility::High);
        let mut low = BargeIn::new(Interruptibility::Low);
        for b in [&mut high, &mut low] {
            b.replica_speaking(true);
            b.speech_started(0);
            b.voiced(2000 * S);
        }
        assert_eq!(high.poll(200 * S), BargeInDecision::Hold);
        assert_eq!(low.poll(200 * S), BargeInDecision::None);
        assert_eq!(high.poll(700 * S), BargeInDecision::Interrupt);
        assert_eq!(low.poll(700 * S), BargeInDecision::Hold);
        assert_eq!(low.transcript("no wait", 900 * S), BargeInDecision::None, "low needs three words");
        assert_eq!(low.poll(1600 * S), BargeInDecision::Interrupt);
    }

    #[test]
    fn only_voiced_time_makes_speech_long() {
        let mut b = BargeIn::new(Interruptibility::High);
        b.replica_speaking(true);
        b.speech_started(0);
        b.voiced(600 * S); // then the VAD's hangover, still "speaking"
        assert_eq!(b.poll(300 * S), BargeInDecision::Hold);
        assert_eq!(b.poll(800 * S), BargeInDecision::None);
        assert_eq!(b.speech_stopped(), BargeInDecision::Resume);
    }

    #[test]
    fn speech_while_the_replica_is_silent_is_not_barge_in() {
        let mut b = BargeIn::new(Interruptibility::High);
        b.speech_started(0);
        assert_eq!(b.poll(2000 * S), BargeInDecision::None);
        assert_eq!(b.next_deadline(), None);
        // The replica starting mid-speech does not turn that speech into barge-in.
        b.replica_speaking(true);
        assert_eq!(b.poll(3000 * S), BargeInDecision::None);
    }

    #[test]
    fn the_replica_finishing_during_a_hold_resumes() {
        let mut b = BargeIn::new(Interruptibility::Medium);
        b.replica_speaking(true);
        b.speech_started(0);
        assert_eq!(b.poll(300 * S), BargeInDecision::Hold);
        assert_eq!(b.replica_speaking(false), BargeInDecision::Resume);
        assert_eq!(b.speech_stopped(), BargeInDecision::None);
    }
}
