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

/// Lip-sync estimated from audio alone (external voices have no timings).
/// Per 10 ms hop, from the spectrum of a 20 ms window: energy in the first
/// formant's band (350–1800 Hz) opens the jaw, relative to the clip's own
/// loud level so any recording level works, and hiss above 4 kHz (s, sh,
/// f) spreads the lips. Energy alone cannot tell a nasal from a vowel:
/// against the resident voice's own phoneme timings this agrees at
/// r ≈ 0.45 (see the face tests), where rendering from timings gives 0.93.
#[derive(Debug, Clone, Default)]
pub struct AudioMouth {
    hops: Vec<MouthShape>,
    hop: f64,
}

/// Energy in dB of `spectrum` bins between two frequencies.
fn band_db(power: &[f32], bin_hz: f32, lo: f32, hi: f32) -> f32 {
    let (a, b) = ((lo / bin_hz) as usize, ((hi / bin_hz) as usize).min(power.len()));
    10.0 * (power[a.min(b)..b].iter().sum::<f32>() + 1e-10).log10()
}

impl AudioMouth {
    pub fn new(samples: &[f32], sample_rate: u32) -> Self {
        let hop = (sample_rate as usize / 100).max(1);
        let window = 2 * hop;
        let n = window.next_power_of_two();
        let fft = realfft::RealFftPlanner::<f32>::new().plan_fft_forward(n);
        let (mut input, mut spectrum) = (fft.make_input_vec(), fft.make_output_vec());
        let bin_hz = sample_rate as f32 / n as f32;
        let mut bands = Vec::with_capacity(samples.len() / hop + 1);
        for start in (0..samples.len()).step_by(hop) {
            let frame = &samples[start..(start + window).min(samples.len())];
            input.fill(0.0);
            for (i, (x, s)) in input.iter_mut().zip(frame).enumerate() {
                let hann = 0.5 - 0.5 * (std::f32::consts::TAU * i as f32 / window as f32).cos();
                *x = s * hann;
            }
            if fft.process(&mut input, &mut spectrum).is_err() {
                bands.push([-100.0; 2]);
                continue;
            }
            let power: Vec<f32> = spectrum.iter().map(|c| c.norm_sqr()).collect();
            bands.push([band_db(&power, bin_hz, 350.0, 1800.0), band_db(&power, bin_hz, 4000.0, 8000.0)]);
        }
        // The clip's loud level: the 95th percentile of the formant band.
        let mut levels: Vec<f32> = bands.iter().map(|b| b[0]).collect();
        levels.sort_by(f32::total_cmp);
        let loud = levels.get(levels.len() * 95 / 100).copied().unwrap_or(0.0);
        let mut smoothed = MouthShape::default();
        let hops = bands
            .iter()
            .map(|&[formant, hiss]| {
                let open = ((formant - (loud - 30.0)) / 40.0).clamp(0.0, 1.0);
                let spread = ((hiss - formant + 6.0) / 12.0).clamp(0.0, 1.0) * (open > 0.0) as u8 as f32;
                let target = MouthShape { open: 0.9 * open * (1.0 - 0.5 * spread), wide: 0.5 * spread, round: 0.0 };
                // Opening is quicker than closing, as in speech.
                let rate = if target.open > smoothed.open { 0.3 } else { 0.2 };
                smoothed = smoothed.lerp(target, rate);
                smoothed
            })
            .collect();
        Self { hops, hop: hop as f64 / sample_rate as f64 }
    }

    /// Forgets everything after `seconds` from the start (barge-in).
    pub fn truncate(&mut self, seconds: f64) {
        self.hops.truncate((seconds.max(0.0) / self.hop).ceil() as usize);
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
            // Past the end of the audio the mouth rests.
            (Some(a), None) => a.lerp(MouthShape::default(), (x - i as f64) as f32),
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

/// Where the mouth's timing comes from while the replica speaks.
#[derive(Debug, Clone)]
enum Lips {
    Visemes(VisemeTrack),
    /// Audio from a voice without timings, starting at this clock time.
    Audio(Vec<(f64, AudioMouth)>),
}

/// One replica's face over a call: idle life always, the mouth from the
/// voice's visemes (or its audio), livelier while it speaks. Ask for the
/// pose of each frame with the audio-clock time that frame is shown at.
#[derive(Debug, Clone)]
pub struct Performer {
    idle: Idle,
    lips: Lips,
    /// Speech intervals on the audio clock, for liveliness.
    speech: Vec<(f64, f64)>,
}

impl Performer {
    pub fn new(seed: u64) -> Self {
        Self { idle: Idle::new(seed), lips: Lips::Visemes(VisemeTrack::default()), speech: Vec::new() }
    }

    /// The next sentence from the resident voice (its visemes on the audio clock).
    pub fn speak_visemes(&mut self, events: Vec<VisemeEvent>) {
        if let (Some(first), Some(last)) = (events.first(), events.last()) {
            self.speech.push((first.start, last.end));
        }
        match &mut self.lips {
            Lips::Visemes(track) => track.extend(events),
            lips => *lips = Lips::Visemes(VisemeTrack::new(events)),
        }
    }

    /// Audio from a voice without timings, played from `start` on the clock.
    pub fn speak_audio(&mut self, start: f64, samples: &[f32], sample_rate: u32) {
        let end = start + samples.len() as f64 / sample_rate.max(1) as f64;
        self.speech.push((start, end));
        let mouth = AudioMouth::new(samples, sample_rate);
        match &mut self.lips {
            Lips::Audio(parts) => parts.push((start, mouth)),
            lips => *lips = Lips::Audio(vec![(start, mouth)]),
        }
    }

    /// Barge-in: nothing after `t` will be heard, so the mouth stops there.
    pub fn interrupt(&mut self, t: f64) {
        match &mut self.lips {
            Lips::Visemes(track) => track.cut(t),
            Lips::Audio(parts) => {
                parts.retain(|(start, _)| *start < t);
                for (start, mouth) in parts.iter_mut() {
                    mouth.truncate(t - *start);
                }
            }
        }
        self.speech.retain(|(start, _)| *start < t);
        for span in &mut self.speech {
            span.1 = span.1.min(t);
        }
    }

    /// 1 while listening, 1.5 while speaking, eased over about half a second.
    fn liveliness(&self, t: f64) -> f32 {
        let near = self
            .speech
            .iter()
            .map(|&(start, end)| {
                let before = ((t - (start - 0.3)) / 0.3).clamp(0.0, 1.0);
                let after = (1.0 - (t - end) / 0.6).clamp(0.0, 1.0);
                before.min(after)
            })
            .fold(0.0f64, f64::max);
        1.0 + 0.5 * near as f32
    }

    pub fn pose_at(&mut self, t: f64) -> Pose {
        let mouth = match &self.lips {
            Lips::Visemes(track) => track.shape_at(t),
            Lips::Audio(parts) => parts
                .iter()
                .rev()
                .find(|(start, _)| *start <= t + ANTICIPATION)
                .map_or(MouthShape::default(), |(start, m)| m.shape_at(t - start)),
        };
        let liveliness = self.liveliness(t);
        Pose { mouth, ..self.idle.pose_at(t, liveliness) }
    }
}

/// Which frame of a replica's idle loop (`frames` frames recorded at
/// `fps`) to show at `t`: forwards, then backwards, so the loop never
/// jumps at its seam.
pub fn idle_frame(t: f64, fps: f64, frames: usize) -> usize {
    if frames < 2 {
        return 0;
    }
    let period = 2 * (frames - 1);
    // A frame time computed as i / fps must land on frame i, not just below it.
    let k = (t.max(0.0) * fps + 1e-6).floor() as usize % period;
    if k < frames { k } else { period - k }
}
