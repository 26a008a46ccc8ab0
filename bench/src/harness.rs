//! The latency harness: real speech through the whole conversation loop,
//! for N sessions at once, timed per stage and end to end.
//!
//! A run speaks each of its utterances (espeak-ng questions and LibriVox
//! clips) into every session in real time, 20 ms at a time, then feeds
//! silence until the replica has answered and finished, and times each
//! turn from the end of the user's speech (the last sample above the
//! noise floor, known to the harness) to the first replica audio at the
//! client. The client is in process: the session's 20 ms pull of the
//! replica's audio, as the WebRTC edge makes it.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// Speech the harness says: espeak-ng questions, then LibriVox clips.
pub const QUESTIONS: [&str; 4] = [
    "What is the capital of France?",
    "Can you recommend a good book for a long flight?",
    "How many legs does a spider have?",
    "What should I cook for dinner tonight?",
];
pub const LIBRIVOX: &str = "/usr/share/pocketsphinx/test/data/librivox";
/// Clips the reader finishes: 0870 ends its sentence ("… to do for
/// them."), 0890 its clause ("… is to be ill-disposed:"), and Smart Turn
/// gives both ≥ 0.9 after 160 ms of silence. Not 0880 ("He was not an
/// ill-disposed young man", read on into a comma) nor 0930 (read on into
/// a semicolon), which it gives 0.03–0.5 for the first 800 ms (`cargo
/// bench -p tete-bench --bench turn`): a turn detector is right to wait
/// there, and the replica waits for the silence fallback.
pub const CLIPS: [&str; 2] =
    ["sense_and_sensibility_01_austen_64kb-0870.wav", "sense_and_sensibility_01_austen_64kb-0890.wav"];

/// `text` spoken by espeak-ng at 16 kHz.
pub fn speak(text: &str) -> Vec<f32> {
    let out = std::process::Command::new("espeak-ng").args(["--stdout", text]).output().expect("espeak-ng");
    let wav = &out.stdout;
    let rate = u32::from_le_bytes(wav[24..28].try_into().unwrap());
    let data = wav.windows(4).position(|w| w == b"data").expect("a data chunk") + 8;
    let pcm: Vec<f32> =
        wav[data..].chunks_exact(2).map(|b| f32::from(i16::from_le_bytes([b[0], b[1]])) / 32768.0).collect();
    tete_engine::audio::resample(&pcm, rate, 16_000).unwrap()
}

/// A LibriVox clip (16 kHz mono WAV).
pub fn clip(name: &str) -> Vec<f32> {
    let path = format!("{LIBRIVOX}/{name}");
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e} (apt-get install pocketsphinx-testdata)"));
    let data = bytes.windows(4).position(|w| w == b"data").expect("a data chunk") + 8;
    bytes[data..].chunks_exact(2).map(|b| f32::from(i16::from_le_bytes([b[0], b[1]])) / 32768.0).collect()
}

/// The utterances of a run, `n` of them (questions first).
pub fn utterances(n: usize) -> Vec<(String, Vec<f32>)> {
    let mut out: Vec<(String, Vec<f32>)> = QUESTIONS.iter().map(|q| (q.to_string(), speak(q))).collect();
    out.extend(CLIPS.iter().map(|c| (c.to_string(), clip(c))));
    out.into_iter().cycle().take(n).collect()
}

/// Where speech ends in `pcm`: after the last sample above the noise floor.
pub fn speech_end(pcm: &[f32]) -> usize {
    pcm.iter().rposition(|s| s.abs() > 0.02).map_or(0, |i| i + 1)
}

/// How long the clients let a reply play before they interrupt it (with
/// `conversation.interrupt`, as a user would), so the next utterance is
/// not spoken over it: the default model often ignores "one short sentence".
pub const REPLY_LIMIT: Duration = Duration::from_secs(8);

/// Hop of the A/V alignment's tracks (s).
const SYNC_HOP: f64 = 0.01;
/// Lags the A/V alignment tries, each way, and its step between them (s).
const SYNC_SEARCH: f64 = 0.2;
const SYNC_STEP: f64 = 0.005;
/// Below this correlation the mouth follows no lag of the audio clearly.
const SYNC_MIN_R: f64 = 0.3;

/// How far the mouth runs ahead of the sound (ms; negative: behind), by
/// cross-correlation: `audio` (at `rate`, its first sample at `start` on
/// the playback clock) as loudness in dB per 10 ms against the mouth's
/// opening `mouth(t)` at the same instants, at the lag with the highest
/// correlation. Unlike comparing onsets, a lip closure before a plosive's
/// burst or a breath before the first word does not count as an offset,
/// while a mouth shifted against its sound does. `None` for audio under
/// 0.3 s or when no lag correlates at 0.3 or better.
pub fn mouth_lead(audio: &[f32], rate: u32, start: f64, mut mouth: impl FnMut(f64) -> f64) -> Option<f64> {
    let hop = (f64::from(rate) * SYNC_HOP) as usize;
    if hop == 0 || audio.len() < 30 * hop {
        return None;
    }
    // 20 ms windows centred on each hop, in dB, floored 40 dB under the loudest.
    let db: Vec<f64> = (0..audio.len() / hop)
        .map(|k| {
            let w = &audio[(k * hop).saturating_sub(hop / 2)..((k + 1) * hop + hop / 2).min(audio.len())];
            let power = w.iter().map(|s| f64::from(*s).powi(2)).sum::<f64>() / w.len() as f64;
            10.0 * (power + 1e-12).log10()
        })
        .collect();
    let loudest = db.iter().copied().fold(f64::MIN, f64::max);
    let loudness: Vec<f64> = db.iter().map(|d| d.max(loudest - 40.0)).collect();
    let at = |k: usize| start + (k as f64 + 0.5) * SYNC_HOP;
    let steps = (SYNC_SEARCH / SYNC_STEP).round() as i64;
    let (r, lead) = (-steps..=steps)
        .map(|i| {
            let lead = i as f64 * SYNC_STEP;
            let opening: Vec<f64> = (0..loudness.len()).map(|k| mouth(at(k) - lead)).collect();
            (pearson(&opening, &loudness), lead)
        })
        .max_by(|a, b| a.0.total_cmp(&b.0))?;
    (r >= SYNC_MIN_R).then_some(lead * 1e3)
}

fn pearson(x: &[f64], y: &[f64]) -> f64 {
    let n = x.len() as f64;
    let (mx, my) = (x.iter().sum::<f64>() / n, y.iter().sum::<f64>() / n);
    let (mut xy, mut xx, mut yy) = (0.0, 0.0, 0.0);
    for (a, b) in x.iter().zip(y) {
        xy += (a - mx) * (b - my);
        xx += (a - mx).powi(2);
        yy += (b - my).powi(2);
    }
    if xx == 0.0 || yy == 0.0 { 0.0 } else { xy / (xx * yy).sqrt() }
}

/// One answered turn, in milliseconds (`None`: that step was not seen).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Turn {
    pub utterance: String,
    /// What the replica understood, and the reply it spoke.
    pub heard: Option<String>,
    pub reply: Option<String>,
    /// End of speech → end of turn decided (with the final transcript).
    pub endpoint: Option<f64>,
    /// Of which the hearing's processing: the audio that decided it
    /// arrived this long before the decision (the pause's decode and the
    /// turn verdict, and queueing).
    pub decision_lag: Option<f64>,
    /// End of turn → first phrase composed (0 when speculation had it ready).
    pub llm_first_phrase: Option<f64>,
    /// First phrase (or the end of turn, when speculation had it earlier) → its first audio.
    pub tts_first_audio: Option<f64>,
    /// First audio → the first lip-synced frame rendered.
    pub first_frame: Option<f64>,
    /// End of speech → first replica audio at the client.
    pub utterance_to_utterance: Option<f64>,
    /// How far the mouth runs ahead of its sound at the best alignment
    /// ([`mouth_lead`]); its size is the A/V offset.
    pub mouth_lead: Option<f64>,
    /// The first sound after the first mouth movement (on the playback clock).
    pub onset_gap: Option<f64>,
    pub speculative: bool,
}

/// p50, p95 and max of the values seen.
pub fn percentiles(values: &[f64]) -> Option<(f64, f64, f64)> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    Some((at(0.5), at(0.95), v[v.len() - 1]))
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Milliseconds from `a` to `b`, when both happened (negative clamps to 0).
pub fn between(a: Option<Instant>, b: Option<Instant>) -> Option<f64> {
    Some(ms(b?.saturating_duration_since(a?)))
}

/// The process's CPU time so far (user + system), from /proc.
pub fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit_once(')').map_or("", |(_, rest)| rest).split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    // utime and stime are fields 14 and 15 of the line (11 and 12 after the name).
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

/// The process's resident memory, from /proc (bytes).
pub fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// One figure of a turn.
type Column = fn(&Turn) -> Option<f64>;

/// A run's figures for one client and session count.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub client: &'static str,
    pub sessions: usize,
    pub turns: Vec<Turn>,
    /// Turns spoken but not answered.
    pub unanswered: usize,
    /// Audio underruns in the session (seen in process only).
    pub underruns: Option<u64>,
    /// Audio packets that reached the client late (WebRTC client only).
    pub late_packets: Option<u64>,
    /// Stage → (items, late, mean run ms, mean queued ms).
    pub stages: Vec<(&'static str, u64, u64, f64, f64)>,
    pub cpu_share_per_session: f64,
    pub rss_per_session_mb: f64,
    /// Camera frames the seeing lane skipped (with perception on).
    pub frames_skipped: Option<u64>,
}

impl Report {
    fn column(&self, f: impl Fn(&Turn) -> Option<f64>) -> Option<(f64, f64, f64)> {
        percentiles(&self.turns.iter().filter_map(f).collect::<Vec<_>>())
    }

    /// The figures as a table, with the stage that ate the budget.
    pub fn print(&self) {
        println!(
            "\n== {} client, {} session(s): {} turns answered, {} unanswered",
            self.client,
            self.sessions,
            self.turns.len(),
            self.unanswered,
        );
        if let Some(underruns) = self.underruns {
            println!("audio underruns: {underruns}");
        }
        if let Some(late) = self.late_packets {
            println!("audio packets over 60 ms late at the client: {late}");
        }
        println!("{:<34} {:>8} {:>8} {:>8}", "ms", "p50", "p95", "max");
        let rows: [(&str, Column); 8] = [
            ("endpoint (speech end → turn end)", |t| t.endpoint),
            ("  of which decode + verdict + queue", |t| t.decision_lag),
            ("LLM first phrase (after turn end)", |t| t.llm_first_phrase),
            ("TTS first audio (after phrase)", |t| t.tts_first_audio),
            ("first lip-synced frame (after audio)", |t| t.first_frame),
            ("utterance-to-utterance", |t| t.utterance_to_utterance),
            ("A/V offset |mouth lead|", |t| t.mouth_lead.map(f64::abs)),
            ("  first sound after first mouth move", |t| t.onset_gap),
        ];
        for (name, f) in &rows {
            match self.column(f) {
                Some((p50, p95, max)) => println!("{name:<34} {p50:>8.0} {p95:>8.0} {max:>8.0}"),
                None => println!("{name:<34} {:>8}", "—"),
            }
        }
        let speculative = self.turns.iter().filter(|t| t.speculative).count();
        println!("speculative replies kept: {speculative} of {}", self.turns.len());
        if !self.stages.is_empty() {
            println!("{:<10} {:>8} {:>6} {:>10} {:>10}", "stage", "items", "late", "run ms", "queued ms");
        }
        for (stage, items, late, run, queued) in &self.stages {
            println!("{stage:<10} {items:>8} {late:>6} {run:>10.2} {queued:>10.2}");
        }
        if let Some(skipped) = self.frames_skipped {
            println!("camera frames the seeing lane skipped: {skipped}");
        }
        println!(
            "CPU per session {:.0} % of one core; memory per session {:.0} MB",
            self.cpu_share_per_session * 100.0,
            self.rss_per_session_mb
        );
        if let Some((p50, ..)) = self.column(|t| t.utterance_to_utterance) {
            let parts = [
                ("endpoint", self.column(|t| t.endpoint)),
                ("LLM first phrase", self.column(|t| t.llm_first_phrase)),
                ("TTS first audio", self.column(|t| t.tts_first_audio)),
            ];
            let eaten = parts.iter().filter_map(|(n, p)| Some((*n, p.as_ref()?.0))).max_by(|a, b| a.1.total_cmp(&b.1));
            if let Some((stage, share)) = eaten {
                println!("the largest share of the p50 {p50:.0} ms: {stage} ({share:.0} ms)");
            }
        }
    }

    pub fn json(&self) -> Value {
        let column = |f: Column| self.column(f).map(|(p50, p95, max)| json!({"p50": p50, "p95": p95, "max": max}));
        json!({
            "client": self.client,
            "sessions": self.sessions,
            "turns": self.turns.len(),
            "unanswered": self.unanswered,
            "underruns": self.underruns,
            "late_packets": self.late_packets,
            "endpoint_ms": column(|t| t.endpoint),
            "decision_lag_ms": column(|t| t.decision_lag),
            "llm_first_phrase_ms": column(|t| t.llm_first_phrase),
            "tts_first_audio_ms": column(|t| t.tts_first_audio),
            "first_frame_ms": column(|t| t.first_frame),
            "utterance_to_utterance_ms": column(|t| t.utterance_to_utterance),
            "av_offset_ms": column(|t| t.mouth_lead.map(f64::abs)),
            "onset_gap_ms": column(|t| t.onset_gap),
            "speculative_kept": self.turns.iter().filter(|t| t.speculative).count(),
            "stages": self.stages.iter().map(|(s, items, late, run, queued)| json!({
                "stage": s, "items": items, "late": late, "mean_run_ms": run, "mean_queued_ms": queued,
            })).collect::<Vec<_>>(),
            "cpu_share_per_session": self.cpu_share_per_session,
            "rss_per_session_mb": self.rss_per_session_mb,
            "camera_frames_skipped": self.frames_skipped,
            "per_turn": self.turns.iter().map(|t| json!({
                "utterance": t.utterance, "heard": t.heard, "reply": t.reply, "endpoint": t.endpoint, "decision_lag": t.decision_lag,
                "llm_first_phrase": t.llm_first_phrase,
                "tts_first_audio": t.tts_first_audio, "first_frame": t.first_frame,
                "utterance_to_utterance": t.utterance_to_utterance,
                "mouth_lead": t.mouth_lead, "onset_gap": t.onset_gap,
                "speculative": t.speculative,
            })).collect::<Vec<_>>(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Syllables: 150 ms tones every 300 ms, and a mouth that opens for
    /// each `lead` seconds early.
    fn syllables(lead: f64) -> (Vec<f32>, impl Fn(f64) -> f64) {
        let rate = 16_000;
        let on = |t: f64| t.rem_euclid(0.3) < 0.15 && t < 2.4;
        let audio = (0..rate * 3)
            .map(|i| {
                let t = i as f64 / f64::from(rate);
                if on(t) { (0.3 * (t * 900.0 * std::f64::consts::TAU).sin()) as f32 } else { 0.0 }
            })
            .collect();
        (audio, move |t: f64| if on(t + lead) { 1.0 } else { 0.0 })
    }

    #[test]
    fn the_mouth_lead_is_found_either_way() {
        for lead in [0.0, 0.04, -0.06, 0.12] {
            let (audio, mouth) = syllables(lead);
            let got = mouth_lead(&audio, 16_000, 2.0, |t| mouth(t - 2.0)).expect("a clear alignment");
            assert!((got - lead * 1e3).abs() <= 5.0, "lead {lead}: measured {got} ms");
        }
    }

    #[test]
    fn a_mouth_that_ignores_the_sound_has_no_lead() {
        let (audio, _) = syllables(0.0);
        assert_eq!(mouth_lead(&audio, 16_000, 0.0, |t| (t * 0.37).fract()), None);
        assert_eq!(mouth_lead(&audio[..1000], 16_000, 0.0, |_| 1.0), None, "too short");
    }
}
