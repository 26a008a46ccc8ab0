//! What the face does over time: mouth shapes from visemes with
//! coarticulation, mouth shapes estimated from audio when no timings exist,
//! and the idle life of a face (blinks, breathing, small head motion).
//!
//! Every function here is a pure function of time on the audio clock, so
//! a frame rendered for presentation time `t` shows the mouth of the audio
//! playing at `t`.

use rand::{Rng, SeedableRng, rngs::StdRng};

use super::rig::{HeadPose, MouthShape, Pose};
use crate::tts::viseme::{Viseme, VisemeEvent};

/// Mouths move slightly ahead of the sound they make.
pub const ANTICIPATION: f64 = 0.04;

/// The mouth of each viseme, and how strongly it holds against its
/// neighbours (lip closures and labiodentals must be reached; vowels give
/// way), after Cohen and Massaro's dominance model.
pub fn viseme_shape(v: Viseme) -> (MouthShape, f32) {
    use Viseme::*;
    let s = |open, wide, round| MouthShape { open, wide, round };
    match v {
        Sil => (s(0.0, 0.0, 0.0), 0.6),
        PP => (s(0.0, 0.0, 0.1), 2.5),
        FF => (s(0.1, 0.15, 0.0), 2.0),
        TH => (s(0.2, 0.15, 0.0), 1.0),
        DD => (s(0.3, 0.2, 0.0), 0.7),
        Kk => (s(0.35, 0.1, 0.0), 0.6),
        CH => (s(0.25, 0.0, 0.55), 1.2),
        SS => (s(0.15, 0.45, 0.0), 1.0),
        Nn => (s(0.25, 0.15, 0.0), 0.6),
        RR => (s(0.25, 0.0, 0.4), 0.8),
        Aa => (s(0.9, 0.2, 0.0), 1.0),
        E => (s(0.55, 0.45, 0.0), 1.0),
        I => (s(0.35, 0.6, 0.0), 1.0),
        O => (s(0.6, 0.0, 0.7), 1.0),
        U => (s(0.3, 0.0, 0.9), 1.2),
    }
}

/// Lip-sync from viseme timings (the voice's own phoneme durations).
#[derive(Debug, Clone, Default)]
pub struct VisemeTrack {
    events: Vec<VisemeEvent>,
}

impl VisemeTrack {
    pub fn new(mut events: Vec<VisemeEvent>) -> Self {
        events.retain(|e| e.end > e.start);
        events.sort_by(|a, b| a.start.total_cmp(&b.start));
        Self { events }
    }

    /// Adds the visemes of the next sentence (already on the audio clock).
    pub fn extend(&mut self, events: impl IntoIterator<Item = VisemeEvent>) {
        self.events.extend(events.into_iter().filter(|e| e.end > e.start));
        self.events.sort_by(|a, b| a.start.total_cmp(&b.start));
    }

    /// Drops everything after `t` (barge-in: the rest will not be heard).
    pub fn cut(&mut self, t: f64) {
        self.events.retain(|e| e.start < t);
        if let Some(last) = self.events.last_mut() {
            last.end = last.end.min(t);
        }
    }

    pub fn end(&self) -> f64 {
        self.events.last().map_or(0.0, |e| e.end)
    }

    /// The mouth at audio time `t`: each viseme is a bump centred on its
    /// interval, as wide as a third of it (20–70 ms), weighted by its
    /// dominance; outside speech the mouth rests.
    pub fn shape_at(&self, t: f64) -> MouthShape {
        let t = t + ANTICIPATION;
        let (mut weight, mut open, mut wide, mut round) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
        let first = self.events.partition_point(|e| e.end < t - 0.3);
        for e in self.events[first..].iter().take_while(|e| e.start <= t + 0.3) {
            let (shape, dominance) = viseme_shape(e.viseme);
            let centre = (e.start + e.end) / 2.0;
            let sigma = ((e.end - e.start) / 3.0).clamp(0.02, 0.07);
            // Inside its own interval a viseme holds fully; it fades outside.
            let outside = ((t - centre).abs() - (e.end - e.start) / 2.0).max(0.0);
            let g = dominance as f64 * (-0.5 * (outside / sigma).powi(2)).exp();
            weight += g;
            open += g * shape.open as f64;
            wide += g * shape.wide as f64;
            round += g * shape.round as f64;
        }
        // The rest shape always has a little say, so the mouth closes
        // after speech instead of freezing on the last viseme.
        let rest = 0.02;
        let total = weight + rest;
        MouthShape { open: (open / total) as f32, wide: (wide / total) as f32, round: (round / total) as f32 }
    }
}

/// Lip-sync estimated from audio alone (external voices have no timings):
/// loudness opens the jaw, a high zero-crossing rate (s, sh, f) spreads
/// the lips and closes the jaw a little. One value per 10 ms hop.
#[derive(Debug, Clone, Default)]
pub struct AudioMouth {
    hops: Vec<MouthShape>,
    hop: f64,
}

impl AudioMouth {
    pub fn new(samples: &[f32], sample_rate: u32) -> Self {
        let hop = (sample_rate as usize / 100).max(1);
        let window = 2 * hop;
        let mut hops = Vec::with_capacity(samples.len() / hop + 1);
        let mut smoothed = MouthShape::default();
        for start in (0..samples.len()).step_by(hop) {
            let frame = &samples[start..(start + window).min(samples.len())];
            let energy = frame.iter().map(|s| s * s).sum::<f32>() / frame.len().max(1) as f32;
            let db = 10.0 * (energy + 1e-10).log10();
            let crossings = frame.windows(2).filter(|w| (w[0] >= 0.0) != (w[1] >= 0.0)).count() as f32;
            let zcr = crossings / frame.len().max(1) as f32;
            let loud = ((db + 48.0) / 30.0).clamp(0.0, 1.0);
            let hiss = ((zcr - 0.15) / 0.2).clamp(0.0, 1.0);
            let target = MouthShape { open: 0.85 * loud * (1.0 - 0.6 * hiss), wide: 0.5 * hiss * loud, round: 0.0 };
            // Opening is quicker than closing, as in speech.
            let rate = if target.open > smoothed.open { 0.6 } else { 0.35 };
            smoothed = smoothed.lerp(target, rate);
            hops.push(smoothed);
        }
        Self { hops, hop: hop as f64 / sample_rate as f64 }
    }

    /// The mouth at time `t` from the start of the audio (interpolated).
    pub fn shape_at(&self, t: f64) -> MouthShape {
        let x = (t + ANTICIPATION) / self.hop;
        if self.hops.is_empty() || x < 0.0 {
            return MouthShape::default();
        }
        let i = x.floor() as usize;
        match (self.hops.get(i), self.hops.get(i + 1)) {
            (Some(a), Some(b)) => a.lerp(*b, (x - i as f64) as f32),
            (Some(a), None) => *a,
            _ => MouthShape::default(),
        }
    }
}

/// The face's life when it is not moving its mouth: blinks at natural
/// intervals, breathing, small head motion. Deterministic for a seed.
#[derive(Debug, Clone)]
pub struct Idle {
    blinks: Vec<f64>,
    rng: StdRng,
    phases: [f64; 8],
}

/// A blink: 80 ms closing, 40 ms shut, 140 ms opening.
const BLINK: (f64, f64, f64) = (0.08, 0.04, 0.14);

impl Idle {
    pub fn new(seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let phases = std::array::from_fn(|_| rng.random::<f64>() * std::f64::consts::TAU);
        let first = rng.random_range(0.8..2.5);
        Self { blinks: vec![first], rng, phases }
    }

    fn blinks_until(&mut self, t: f64) {
        while *self.blinks.last().expect("never empty") < t + 1.0 {
            let last = *self.blinks.last().expect("never empty");
            // People blink every 2–10 s, sometimes twice in quick succession.
            let gap = if self.rng.random_bool(0.12) {
                0.35
            } else {
                2.0 + 4.0 * -self.rng.random::<f64>().max(1e-9).ln().min(2.0)
            };
            self.blinks.push(last + gap);
        }
    }

    /// Lid closure at `t`, 0 open to 1 shut.
    pub fn blink_at(&mut self, t: f64) -> f32 {
        self.blinks_until(t);
        let (close, hold, open) = BLINK;
        let mut lid = 0.0f64;
        for &b in self.blinks.iter().rev().take(4) {
            let x = t - b;
            let v = if x < 0.0 || x > close + hold + open {
                0.0
            } else if x < close {
                x / close
            } else if x < close + hold {
                1.0
            } else {
                1.0 - (x - close - hold) / open
            };
            lid = lid.max(v);
        }
        lid as f32
    }

    /// Head motion at `t`: slow sums of sines with incommensurate
    /// frequencies (never periodic), breathing at about 14 a minute;
    /// `liveliness` scales it (1 listening, about 1.5 speaking).
    pub fn head_at(&self, t: f64, liveliness: f32) -> HeadPose {
        let p = &self.phases;
        let wave = |f1: f64, p1: f64, f2: f64, p2: f64| {
            (0.6 * (std::f64::consts::TAU * f1 * t + p1).sin() + 0.4 * (std::f64::consts::TAU * f2 * t + p2).sin())
                as f32
        };
        let breath = (std::f64::consts::TAU * 0.23 * t + p[6]).sin() as f32;
        HeadPose {
            dx: liveliness * 0.012 * wave(0.11, p[0], 0.29, p[1]),
            dy: liveliness * 0.007 * wave(0.17, p[2], 0.37, p[3]) + 0.002 * breath,
            roll: liveliness * 0.02 * wave(0.07, p[4], 0.23, p[5]),
            scale: 1.0 + 0.004 * breath,
        }
    }

    /// The whole idle pose (mouth at rest).
    pub fn pose_at(&mut self, t: f64, liveliness: f32) -> Pose {
        let blink = self.blink_at(t);
        Pose { mouth: MouthShape::default(), blink: [blink, blink], head: self.head_at(t, liveliness) }
    }
}
