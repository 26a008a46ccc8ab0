//! The replica never hears itself: an echo gate that compares what the
//! microphone hears with what the replica played.
//!
//! Browsers cancel most echo, but what leaks through (speakers, a phone
//! without AEC) would otherwise read as the user barging in. The engine knows
//! its own output, so per 10 ms block it keeps the log energy of both
//! signals; the microphone's last 300 ms is echo when, at some delay up to
//! 500 ms, it is the played signal through a fixed gain: the level
//! difference block by block varies by at most 2.5 dB, nothing is heard where
//! nothing was played, and it is no louder than what was played (plus a
//! margin). Double talk — the user speaking over the echo — breaks the fit
//! and passes.

use std::collections::VecDeque;

const BLOCK: usize = 160;
/// Blocks compared (300 ms).
const WINDOW: usize = 30;
/// Largest echo delay searched, in blocks (500 ms).
const MAX_LAG: usize = 50;
/// Largest spread of the heard/played level difference of an echo, in dB.
const MAX_SPREAD_DB: f32 = 2.5;
/// How much louder than the played signal an echo may be, in dB.
const MARGIN_DB: f32 = 6.0;
/// Below this a block is silence, in dB relative to full scale.
const FLOOR_DB: f32 = -55.0;

#[derive(Debug, Clone, Default)]
struct Envelope {
    partial: Vec<f32>,
    blocks: VecDeque<f32>,
    keep: usize,
}

impl Envelope {
    fn new(keep: usize) -> Self {
        Self { partial: Vec::with_capacity(BLOCK), blocks: VecDeque::with_capacity(keep + 1), keep }
    }

    fn push(&mut self, samples: &[f32]) {
        for &s in samples {
            self.partial.push(if s.is_finite() { s } else { 0.0 });
            if self.partial.len() == BLOCK {
                let power = self.partial.iter().map(|x| x * x).sum::<f32>() / BLOCK as f32;
                self.blocks.push_back(10.0 * (power + 1e-12).log10());
                self.partial.clear();
                if self.blocks.len() > self.keep {
                    self.blocks.pop_front();
                }
            }
        }
    }
}

/// How well `heard` is `played` through a fixed gain: over the blocks where
/// something was played, the spread (dB) of heard − played and their mean;
/// `None` when sound was heard where nothing was played (a loud block
/// against a silent one) in more than one block in ten.
fn gain_fit(heard: &[f32], played: &[f32]) -> Option<(f32, f32)> {
    let mut diffs = Vec::with_capacity(heard.len());
    let mut unexplained = 0;
    for (&h, &p) in heard.iter().zip(played) {
        if p >= FLOOR_DB {
            diffs.push(h.max(FLOOR_DB - 20.0) - p);
        } else if h >= FLOOR_DB + 10.0 {
            unexplained += 1;
        }
    }
    if diffs.len() < heard.len() / 3 || unexplained * 10 > heard.len() {
        return None;
    }
    let n = diffs.len() as f32;
    let mean = diffs.iter().sum::<f32>() / n;
    let spread = (diffs.iter().map(|d| (d - mean) * (d - mean)).sum::<f32>() / n).sqrt();
    Some((spread, mean))
}

/// One session's echo gate. Feed both streams in real time at 16 kHz.
#[derive(Debug, Clone)]
pub struct EchoGate {
    played: Envelope,
    heard: Envelope,
}

impl Default for EchoGate {
    fn default() -> Self {
        Self::new()
    }
}

impl EchoGate {
    pub fn new() -> Self {
        Self { played: Envelope::new(WINDOW + MAX_LAG), heard: Envelope::new(WINDOW) }
    }

    /// The replica's audio as it leaves (silence included, so both clocks advance together).
    pub fn played(&mut self, samples: &[f32]) {
        self.played.push(samples);
    }

    /// The user's microphone; returns whether its last 300 ms is the
    /// replica's own voice coming back.
    pub fn heard(&mut self, samples: &[f32]) -> bool {
        self.heard.push(samples);
        self.is_echo()
    }

    fn is_echo(&self) -> bool {
        let heard: Vec<f32> = self.heard.blocks.iter().copied().collect();
        let played: Vec<f32> = self.played.blocks.iter().copied().collect();
        if heard.len() < WINDOW || played.len() < WINDOW {
            return false;
        }
        let loudest = heard.iter().copied().fold(f32::MIN, f32::max);
        if loudest < FLOOR_DB {
            return false; // nothing heard at all
        }
        (0..=MAX_LAG.min(played.len() - WINDOW)).any(|lag| {
            let end = played.len() - lag;
            gain_fit(&heard, &played[end - WINDOW..end])
                .is_some_and(|(spread, gain)| spread <= MAX_SPREAD_DB && gain <= MARGIN_DB)
        })
    }

    pub fn reset(&mut self) {
        *self = Self::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Speech-like: syllables of random length, loudness and pitch with pauses, seeded.
    fn babble(seed: u32, len: usize) -> Vec<f32> {
        let mut state = seed;
        let mut next = move || {
            state = state.wrapping_mul(1664525).wrapping_add(1013904223);
            (state >> 8) as f32 / (1u32 << 24) as f32
        };
        let mut out = Vec::with_capacity(len);
        while out.len() < len {
            let (length, gap) = (1_300 + (next() * 3_500.0) as usize, (next() * 2_500.0) as usize);
            let (loudness, pitch) = (0.05 + 0.3 * next(), 100.0 + 150.0 * next());
            let mut jitter = 1.0;
            for i in 0..length {
                let t = i as f32 / 16_000.0;
                if i % 160 == 0 {
                    jitter = 0.4 + 1.2 * next(); // speech loudness moves within a syllable
                }
                let shape = jitter * (std::f32::consts::PI * i as f32 / length as f32).sin();
                out.push(loudness * shape * ((2.0 * std::f32::consts::PI * pitch * t).sin() + 0.2 * (next() - 0.5)));
            }
            out.extend(std::iter::repeat_n(0.0, gap));
        }
        out.truncate(len);
        out
    }

    fn run(gate: &mut EchoGate, played: &[f32], heard: &[f32]) -> usize {
        let mut echo_frames = 0;
        for (p, h) in played.chunks(320).zip(heard.chunks(320)) {
            gate.played(p);
            echo_frames += usize::from(gate.heard(h));
        }
        echo_frames
    }

    #[test]
    fn delayed_quieter_copy_of_the_output_is_echo() {
        let out = babble(1, 48_000);
        let delay = 16 * 180; // 180 ms
        let hiss = babble(5, out.len()); // room and microphone noise, 40 dB down
        let heard: Vec<f32> =
            (0..out.len()).map(|i| 0.01 * hiss[i] + if i >= delay { 0.3 * out[i - delay] } else { 0.0 }).collect();
        let frames = out.len() / 320;
        let echo = run(&mut EchoGate::new(), &out, &heard);
        assert!(echo * 10 >= frames * 6, "echo in {echo} of {frames} frames");
    }

    #[test]
    fn the_user_speaking_is_not_echo_alone_or_over_the_echo() {
        let out = babble(1, 48_000);
        let user = babble(8, 48_000);
        assert_eq!(run(&mut EchoGate::new(), &vec![0.0; out.len()], &user), 0, "nothing played");
        assert_eq!(run(&mut EchoGate::new(), &out, &user), 0, "different speech");
        let delay = 16 * 100;
        let double: Vec<f32> =
            (0..out.len()).map(|i| user[i] + if i >= delay { 0.2 * out[i - delay] } else { 0.0 }).collect();
        let echo = run(&mut EchoGate::new(), &out, &double);
        assert!(echo * 10 <= double.len() / 320, "double talk passes: {echo} echo frames");
    }

    #[test]
    fn non_finite_samples_do_not_poison_the_gate() {
        let mut g = EchoGate::new();
        g.played(&[f32::NAN; 4800]);
        assert!(!g.heard(&[f32::INFINITY; 4800]));
    }
}
