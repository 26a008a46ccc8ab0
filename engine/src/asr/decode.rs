//! Greedy decoding of one 30 s window, as OpenAI's `DecodingTask` does at
//! temperature 0: the logit rules (blank and special-token suppression,
//! paired and non-decreasing timestamps, the first token a timestamp no later
//! than 1 s, timestamps forced when they outweigh every text token), the
//! no-speech probability at the start-of-transcript position, and the mean
//! log-probability of the sampled tokens.
//!
//! A decode may be given a draft (the tokens a previous decode of a shorter
//! stretch of the same audio produced): the draft is fed in one batched pass
//! and kept as long as each of its tokens is the greedy choice, so the result
//! is what plain greedy decoding gives, reached in far fewer steps.

use candle_core::{IndexOp, Tensor};

use super::model::Decoder;

/// Seconds per timestamp token.
pub(crate) const TIME_PRECISION: f64 = 0.02;
/// The first timestamp may be at most 1 s (OpenAI's `max_initial_timestamp`).
const MAX_INITIAL_TIMESTAMP: usize = 50;

/// The token ids decoding steers by (names as in OpenAI's tokenizer).
#[derive(Debug, Clone)]
pub(crate) struct SpecialTokens {
    pub eot: u32,
    pub sot: u32,
    pub transcribe: Option<u32>,
    pub sot_prev: u32,
    pub no_speech: u32,
    pub no_timestamps: u32,
    /// `<|0.00|>`; every id from here on is a timestamp.
    pub timestamp_begin: u32,
}

/// Logit filters of one model: OpenAI's `SuppressBlank`, `SuppressTokens`
/// and `ApplyTimestampRules`, in that order.
#[derive(Debug, Clone)]
pub(crate) struct LogitRules {
    pub tokens: SpecialTokens,
    /// Never sampled (punctuation-only tokens of the model's config and every
    /// special token but end-of-text).
    pub suppress: Vec<u32>,
    /// Not sampled first (a blank, end-of-text).
    pub suppress_begin: Vec<u32>,
}

impl LogitRules {
    /// Filters `logits` for the token after `sampled` (the tokens chosen so
    /// far in this window, without the prompt).
    fn apply(&self, logits: &mut [f32], sampled: &[u32]) {
        let t = &self.tokens;
        let ts = t.timestamp_begin as usize;
        let eot = t.eot as usize;
        if sampled.is_empty() {
            for &id in &self.suppress_begin {
                block(logits, id as usize..id as usize + 1);
            }
        }
        for &id in &self.suppress {
            block(logits, id as usize..id as usize + 1);
        }
        block(logits, t.no_timestamps as usize..t.no_timestamps as usize + 1);

        // Timestamps come in pairs, except that a lone one may end the text.
        let is_ts = |id: &u32| *id >= t.timestamp_begin;
        let last_ts = sampled.last().is_some_and(is_ts);
        let penultimate_ts = sampled.len() < 2 || is_ts(&sampled[sampled.len() - 2]);
        if last_ts {
            if penultimate_ts {
                block(logits, ts..usize::MAX);
            } else {
                block(logits, 0..eot);
            }
        }
        // Timestamps never decrease, and a segment is never empty.
        if let Some(&last) = sampled.iter().rev().find(|id| is_ts(id)) {
            let last = last as usize;
            block(logits, ts..if last_ts && !penultimate_ts { last } else { last + 1 });
        }
        if sampled.is_empty() {
            block(logits, 0..ts);
            block(logits, ts + MAX_INITIAL_TIMESTAMP + 1..usize::MAX);
        }
        // When the timestamps together outweigh every text token, take one.
        let norm = log_sum_exp(logits);
        let timestamp_logprob = log_sum_exp(&logits[ts.min(logits.len())..]) - norm;
        let max_text_logprob = logits[..ts.min(logits.len())].iter().copied().fold(f32::NEG_INFINITY, f32::max) - norm;
        if timestamp_logprob > max_text_logprob {
            block(logits, 0..ts);
        }
    }
}

/// Rules out the tokens of `range` (clipped to the vocabulary).
fn block(logits: &mut [f32], range: std::ops::Range<usize>) {
    let end = range.end.min(logits.len());
    logits[range.start.min(end)..end].fill(f32::NEG_INFINITY);
}

fn log_sum_exp(x: &[f32]) -> f32 {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        return max;
    }
    max + x.iter().map(|v| (v - max).exp()).sum::<f32>().ln()
}

/// What one window's decode produced.
#[derive(Debug, Clone)]
pub(crate) struct Decoded {
    /// Sampled tokens, without the final end-of-text.
    pub tokens: Vec<u32>,
    /// Sum of the log-probabilities of the sampled tokens, end-of-text included, over their count.
    pub avg_logprob: f64,
    pub no_speech_prob: f64,
}

/// What to decode in one window.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Request<'a> {
    /// The whole initial sequence: previous text, then the start-of-transcript sequence.
    pub prompt: &'a [u32],
    /// Where start-of-transcript is in `prompt`.
    pub sot_index: usize,
    /// Tokens to sample at most.
    pub max_tokens: usize,
    /// Tokens a decode of part of the same audio produced; may be empty.
    pub draft: &'a [u32],
}

/// Greedy decode against `audio` (the encoder's output).
pub(crate) fn greedy(
    decoder: &Decoder,
    audio: &Tensor,
    rules: &LogitRules,
    request: Request,
) -> candle_core::Result<Decoded> {
    let Request { prompt, sot_index, max_tokens, draft } = request;
    let mut state = decoder.state(audio)?;
    let draft = &draft[..draft.len().min(max_tokens)];
    let fed: Vec<u32> = prompt.iter().chain(draft).copied().collect();
    let hidden = decoder.forward(&fed, &mut state)?;

    let sot_logits = decoder.logits(&hidden.i(sot_index..sot_index + 1)?)?.squeeze(0)?.to_vec1::<f32>()?;
    let no_speech_prob = softmax_at(&sot_logits, rules.tokens.no_speech as usize);

    // Rows whose logits choose the next token: the last prompt position and each draft token.
    let first = prompt.len() - 1;
    let mut rows = decoder.logits(&hidden.narrow(0, first, draft.len() + 1)?)?.to_vec2::<f32>()?.into_iter();
    let mut tokens = Vec::new();
    let mut sum_logprob = 0.0f64;
    let mut pending = None;
    let mut drafting = true;
    loop {
        let mut logits = match (rows.next(), pending.take()) {
            (Some(row), _) => row,
            (None, Some(token)) if state.fed() < decoder.context() => {
                let hidden = decoder.forward(&[token], &mut state)?;
                decoder.logits(&hidden)?.squeeze(0)?.to_vec1::<f32>()?
            }
            (None, _) => break,
        };
        rules.apply(&mut logits, &tokens);
        let (token, logprob) = pick(&logits);
        sum_logprob += f64::from(logprob);
        if token == rules.tokens.eot {
            break;
        }
        tokens.push(token);
        if tokens.len() >= max_tokens {
            break;
        }
        let i = tokens.len() - 1;
        if drafting && i < draft.len() {
            if draft[i] == token {
                continue; // the next row already holds the logits after it
            }
            // The draft went astray here: forget what was fed after this position.
            drafting = false;
            state.truncate(prompt.len() + i);
            rows = Vec::new().into_iter();
        }
        pending = Some(token);
    }
    Ok(Decoded { avg_logprob: sum_logprob / (tokens.len() + 1) as f64, tokens, no_speech_prob })
}

/// The greedy token and its log-probability under the filtered logits.
fn pick(logits: &[f32]) -> (u32, f32) {
    let (best, &max) = logits.iter().enumerate().fold((0, &f32::NEG_INFINITY), |a, b| if b.1 > a.1 { b } else { a });
    (best as u32, max - log_sum_exp(logits))
}

fn softmax_at(logits: &[f32], index: usize) -> f64 {
    logits.get(index).map_or(0.0, |&v| f64::from((v - log_sum_exp(logits)).exp()))
}

/// Language detection as OpenAI's `detect_language`: the most likely
/// language token after start-of-transcript. Returns its index in `languages`.
pub(crate) fn detect_language(
    decoder: &Decoder,
    audio: &Tensor,
    sot: u32,
    languages: &[u32],
) -> candle_core::Result<Option<usize>> {
    let mut state = decoder.state(audio)?;
    let hidden = decoder.forward(&[sot], &mut state)?;
    let logits = decoder.logits(&hidden)?.squeeze(0)?.to_vec1::<f32>()?;
    let best = languages.iter().enumerate().filter_map(|(i, &id)| logits.get(id as usize).map(|&l| (i, l))).fold(
        None,
        |best: Option<(usize, f32)>, (i, l)| match best {
            Some((_, b)) if b >= l => best,
            _ => Some((i, l)),
        },
    );
    Ok(best.map(|(i, _)| i))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> LogitRules {
        // A toy vocabulary: text 0..10, eot 10, sot 11, no-speech 12, no-timestamps 13, timestamps 14..80.
        let tokens = SpecialTokens {
            eot: 10,
            sot: 11,
            transcribe: None,
            sot_prev: 15,
            no_speech: 12,
            no_timestamps: 13,
            timestamp_begin: 14,
        };
        LogitRules { tokens, suppress: vec![11, 12], suppress_begin: vec![10] }
    }

    #[test]
    fn first_token_is_an_early_timestamp() {
        let mut logits = vec![0.0f32; 80];
        logits[3] = 10.0;
        logits[79] = 9.0;
        rules().apply(&mut logits, &[]);
        let allowed: Vec<usize> = (0..80).filter(|&i| logits[i].is_finite()).collect();
        assert_eq!(allowed, (14..=14 + MAX_INITIAL_TIMESTAMP).filter(|&i| i < 80).collect::<Vec<_>>());
    }

    #[test]
    fn timestamps_pair_up_and_never_go_back() {
        let r = rules();
        // After "<|0.20|> text": more text, end-of-text, or a timestamp after 0.20 closing the segment.
        let mut logits = vec![0.0f32; 80];
        logits[3] = 10.0;
        r.apply(&mut logits, &[24, 3]);
        assert!(logits[3].is_finite() && logits[10].is_finite());
        assert!(!logits[24].is_finite() && logits[25].is_finite(), "a segment is never empty");
        // When the timestamps together outweigh every text token, a timestamp it is.
        let mut logits = vec![0.0f32; 80];
        r.apply(&mut logits, &[24, 3]);
        assert!(logits[..14].iter().all(|v| !v.is_finite()) && logits[25].is_finite());
        // After "<|0.20|> text <|0.40|>": text or another timestamp (≥ 0.40) opening the next segment.
        let mut logits = vec![0.0f32; 80];
        r.apply(&mut logits, &[24, 3, 34]);
        assert!(logits[..10].iter().all(|v| !v.is_finite()), "text cannot follow a lone closing timestamp");
        assert!(!logits[33].is_finite() && logits[34].is_finite());
        // After a pair: text only.
        let mut logits = vec![0.0f32; 80];
        logits[3] = 5.0;
        r.apply(&mut logits, &[24, 3, 34, 34]);
        assert!(logits[14..].iter().all(|v| !v.is_finite()));
        assert!(logits[3].is_finite() && !logits[11].is_finite() && !logits[13].is_finite());
    }
}
