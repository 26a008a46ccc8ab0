//! When a conversation ends. Sans-IO: the state machine is told what
//! happened and what time it is (microseconds on any clock), and answers
//! whether the call must end and when to ask again. The driver in
//! `conversations.rs` feeds it wall-clock time; tests feed it virtual time.

use serde::{Deserialize, Serialize};

/// Why a conversation ended (`shutdown_reason` of `system.shutdown`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShutdownReason {
    MaxCallDuration,
    ParticipantLeftTimeout,
    ParticipantAbsentTimeout,
    EndConversationEndpointHit,
    Exception,
    HostShutdown,
    /// Not in the hosted platforms' list: the conversation was deleted.
    Deleted,
}

impl ShutdownReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MaxCallDuration => "max_call_duration",
            Self::ParticipantLeftTimeout => "participant_left_timeout",
            Self::ParticipantAbsentTimeout => "participant_absent_timeout",
            Self::EndConversationEndpointHit => "end_conversation_endpoint_hit",
            Self::Exception => "exception",
            Self::HostShutdown => "host_shutdown",
            Self::Deleted => "deleted",
        }
    }
}

/// Timeouts in seconds, as the API takes them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timeouts {
    pub max_call_duration: u64,
    /// After the participant leaves; 0 ends the call when they leave.
    pub participant_left_timeout: u64,
    /// No face and no voice (or nobody joined) for this long.
    pub participant_absent_timeout: u64,
}

const US: u64 = 1_000_000;

/// The lifecycle of one conversation.
#[derive(Debug, Clone)]
pub struct Lifecycle {
    timeouts: Timeouts,
    started_us: u64,
    /// Set while the participant is connected.
    joined: bool,
    left_at_us: Option<u64>,
    last_seen_us: u64,
    ended: Option<ShutdownReason>,
}

impl Lifecycle {
    pub fn new(timeouts: Timeouts, started_us: u64) -> Self {
        Self { timeouts, started_us, joined: false, left_at_us: None, last_seen_us: started_us, ended: None }
    }

    pub fn participant_joined(&mut self, now_us: u64) {
        self.joined = true;
        self.left_at_us = None;
        self.last_seen_us = now_us;
    }

    pub fn participant_left(&mut self, now_us: u64) {
        self.joined = false;
        self.left_at_us = Some(now_us);
    }

    /// The participant was seen or heard (a face in view, voice activity).
    pub fn participant_active(&mut self, now_us: u64) {
        self.last_seen_us = self.last_seen_us.max(now_us);
    }

    /// Ends the conversation for an outside reason (endpoint, deletion, host shutdown, error).
    pub fn end(&mut self, reason: ShutdownReason) -> ShutdownReason {
        *self.ended.get_or_insert(reason)
    }

    pub fn ended(&self) -> Option<ShutdownReason> {
        self.ended
    }

    /// Whether the conversation must end at `now_us`, and why. The first
    /// reason to fall due wins and stays.
    pub fn poll(&mut self, now_us: u64) -> Option<ShutdownReason> {
        if self.ended.is_some() {
            return self.ended;
        }
        let due = [
            (self.max_call_deadline(), ShutdownReason::MaxCallDuration),
            (self.left_deadline(), ShutdownReason::ParticipantLeftTimeout),
            (self.absent_deadline(), ShutdownReason::ParticipantAbsentTimeout),
        ]
        .into_iter()
        .filter_map(|(t, r)| t.filter(|&t| t <= now_us).map(|t| (t, r)))
        .min_by_key(|(t, _)| *t);
        self.ended = due.map(|(_, r)| r);
        self.ended
    }

    /// When to poll next (None once ended).
    pub fn next_deadline(&self) -> Option<u64> {
        if self.ended.is_some() {
            return None;
        }
        [self.max_call_deadline(), self.left_deadline(), self.absent_deadline()].into_iter().flatten().min()
    }

    fn max_call_deadline(&self) -> Option<u64> {
        Some(self.started_us + self.timeouts.max_call_duration * US)
    }

    fn left_deadline(&self) -> Option<u64> {
        self.left_at_us.map(|t| t + self.timeouts.participant_left_timeout * US)
    }

    fn absent_deadline(&self) -> Option<u64> {
        // While connected, absence counts from the last sign of the participant;
        // before anyone joins, from the start.
        (self.timeouts.participant_absent_timeout > 0)
            .then(|| self.last_seen_us + self.timeouts.participant_absent_timeout * US)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Timeouts =
        Timeouts { max_call_duration: 3600, participant_left_timeout: 10, participant_absent_timeout: 300 };

    fn s(secs: u64) -> u64 {
        secs * US
    }

    #[test]
    fn max_call_duration_ends_a_busy_call() {
        let mut l = Lifecycle::new(T, 0);
        l.participant_joined(s(1));
        for t in (0..3600).step_by(60) {
            l.participant_active(s(t));
            assert_eq!(l.poll(s(t)), None, "at {t}s");
        }
        assert_eq!(l.next_deadline(), Some(s(3600)));
        assert_eq!(l.poll(s(3600)), Some(ShutdownReason::MaxCallDuration));
        assert_eq!(l.next_deadline(), None);
    }

    #[test]
    fn nobody_joining_is_absence() {
        let mut l = Lifecycle::new(T, s(100));
        assert_eq!(l.poll(s(399)), None);
        assert_eq!(l.next_deadline(), Some(s(400)));
        assert_eq!(l.poll(s(400)), Some(ShutdownReason::ParticipantAbsentTimeout));
    }

    #[test]
    fn leaving_starts_the_left_timeout_and_rejoining_cancels_it() {
        let mut l = Lifecycle::new(T, 0);
        l.participant_joined(s(5));
        l.participant_left(s(20));
        assert_eq!(l.poll(s(29)), None);
        l.participant_joined(s(29));
        assert_eq!(l.poll(s(31)), None, "rejoined in time");
        l.participant_left(s(40));
        assert_eq!(l.poll(s(50)), Some(ShutdownReason::ParticipantLeftTimeout));
    }

    #[test]
    fn zero_left_timeout_ends_on_leaving() {
        let mut l = Lifecycle::new(Timeouts { participant_left_timeout: 0, ..T }, 0);
        l.participant_joined(s(1));
        l.participant_left(s(2));
        assert_eq!(l.poll(s(2)), Some(ShutdownReason::ParticipantLeftTimeout));
    }

    #[test]
    fn outside_reasons_win_once_and_stay() {
        let mut l = Lifecycle::new(T, 0);
        assert_eq!(l.end(ShutdownReason::EndConversationEndpointHit), ShutdownReason::EndConversationEndpointHit);
        assert_eq!(l.end(ShutdownReason::HostShutdown), ShutdownReason::EndConversationEndpointHit);
        assert_eq!(l.poll(s(10_000)), Some(ShutdownReason::EndConversationEndpointHit));
    }

    #[test]
    fn the_earliest_due_reason_is_reported() {
        let mut l = Lifecycle::new(Timeouts { max_call_duration: 100, participant_absent_timeout: 50, ..T }, 0);
        // Both are overdue at t=200; absence fell due first.
        assert_eq!(l.poll(s(200)), Some(ShutdownReason::ParticipantAbsentTimeout));
    }
}
