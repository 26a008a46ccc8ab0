//! Mouth shapes for the face: Piper phonemes → visemes, and per-id model
//! durations → phoneme timings and viseme events on the audio clock.
//!
//! The viseme set is the 15 Oculus (MPEG-4 style) classes.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Viseme {
    /// Silence, mouth at rest.
    #[serde(rename = "sil")]
    Sil,
    /// p b m
    PP,
    /// f v
    FF,
    /// θ ð
    TH,
    /// t d
    DD,
    /// k g
    #[serde(rename = "kk")]
    Kk,
    /// tʃ dʒ ʃ ʒ
    CH,
    /// s z
    SS,
    /// n l
    #[serde(rename = "nn")]
    Nn,
    /// r
    RR,
    /// ɑ
    #[serde(rename = "aa")]
    Aa,
    /// e ɛ
    E,
    /// i ɪ
    I,
    /// o ɔ
    O,
    /// u ʊ
    U,
}

/// What a phoneme does to the mouth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mouth {
    Shape(Viseme),
    /// Stress and length marks, diacritics, tone digits and word spaces: the
    /// mouth keeps the shape of the phoneme before.
    Hold,
}

/// The mouth for one Piper (espeak IPA) phoneme; `None` for a character no
/// Piper voice uses.
pub fn mouth(phoneme: char) -> Option<Mouth> {
    use Viseme::*;
    let shape = match phoneme {
        // Punctuation Piper keeps, and its ^ _ $.
        '.' | ',' | '?' | '!' | ':' | ';' | '(' | ')' | '-' | '\'' | '"' | '#' | '^' | '_' | '$' => Sil,
        'p' | 'b' | 'm' | 'ɓ' | 'ʙ' | 'ɸ' | 'β' | 'ʘ' => PP,
        'f' | 'v' | 'ɱ' | 'ʋ' | 'ⱱ' => FF,
        'θ' | 'ð' => TH,
        't' | 'd' | 'ɾ' | 'ɗ' | 'ʈ' | 'ɖ' | 'ɺ' | 'ɽ' | 'ǀ' | 'ǁ' => DD,
        'k' | 'g' | 'ɡ' | 'c' | 'q' | 'x' | 'ɢ' | 'ɣ' | 'χ' | 'ʁ' | 'ħ' | 'ʕ' | 'h' | 'ɦ' | 'ɠ' | 'ʛ' | 'ɰ' | 'ɟ'
        | 'ʄ' | 'ç' | 'ʝ' | 'ɧ' | 'ʜ' | 'ʢ' | 'ʡ' | 'ʔ' | 'ǂ' | 'ǃ' | 'X' => Kk,
        'ʃ' | 'ʒ' | 'ɕ' | 'ʑ' | 'ʂ' | 'ʐ' => CH,
        's' | 'z' | 'ʦ' => SS,
        'n' | 'l' | 'ŋ' | 'ɲ' | 'ɳ' | 'ɴ' | 'ɫ' | 'ɬ' | 'ɮ' | 'ɭ' | 'ʎ' | 'ʟ' => Nn,
        'r' | 'ɹ' | 'ɻ' | 'ʀ' | 'ɚ' | 'ɝ' | '˞' => RR,
        'a' | 'ɑ' | 'ɐ' | 'æ' | 'ɒ' | 'ʌ' | 'ɶ' => Aa,
        'e' | 'ɛ' | 'ə' | 'ɘ' | 'ɜ' | 'ɞ' | 'ε' => E,
        'i' | 'ɪ' | 'ɨ' | 'ᵻ' | 'ɯ' | 'j' | 'ɤ' => I,
        'o' | 'ɔ' | 'ø' | 'œ' | 'ɵ' => O,
        'u' | 'ʊ' | 'ʉ' | 'w' | 'ʍ' | 'y' | 'ʏ' | 'ɥ' => U,
        ' ' | 'ˈ' | 'ˌ' | 'ː' | 'ˑ' | 'ʲ' | 'ʰ' | 'ˤ' | 'ʷ' | '↓' | '↑' | '0'..='9' => {
            return Some(Mouth::Hold);
        }
        // Combining marks (nasal, dental, syllabic, non-syllabic, cedilla, …).
        '\u{0300}'..='\u{036f}' => return Some(Mouth::Hold),
        _ => return None,
    };
    Some(Mouth::Shape(shape))
}

/// When one phoneme is heard, in seconds on the audio clock.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PhonemeTiming {
    pub phoneme: char,
    pub start: f64,
    pub end: f64,
}

/// A mouth shape held from `start` to `end` (seconds on the audio clock).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct VisemeEvent {
    pub viseme: Viseme,
    pub start: f64,
    pub end: f64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Timeline {
    pub phonemes: Vec<PhonemeTiming>,
    /// Consecutive equal visemes merged; no event of zero length.
    pub visemes: Vec<VisemeEvent>,
}

/// Lays the model's durations on the audio clock.
///
/// `sources[i]` is the phoneme input id `i` stands for (`None` for Piper's
/// `^` `_` `$`, as in `PhonemeIds::phonemes`), `samples[i]` how many output
/// samples the model gave it. A pad (`None` right after a phoneme's ids)
/// belongs to that phoneme; the other `None` ids (`^`, the pad after it, `$`)
/// are silence. `offset` (seconds) is where the first sample sits, so that
/// chunks of one utterance share one clock. Panics if the two slices differ
/// in length.
pub fn timeline(sources: &[Option<char>], samples: &[u32], sample_rate: u32, offset: f64) -> Timeline {
    assert_eq!(sources.len(), samples.len(), "one duration per phoneme id");
    let seconds = |n: u64| offset + n as f64 / f64::from(sample_rate);
    // Spans in samples: (Some(phoneme) or None for silence, start, end).
    let mut spans: Vec<(Option<char>, u64, u64)> = Vec::new();
    let mut at = 0u64;
    let mut previous: Option<char> = None;
    for (&source, &n) in sources.iter().zip(samples) {
        let end = at + u64::from(n);
        let extends = match (source, spans.last()) {
            // More ids of the same phoneme, or the pad after a phoneme.
            (Some(_), Some(_)) if source == previous => true,
            (None, Some(&(Some(_), _, _))) if previous.is_some() => true,
            // Silence after silence.
            (None, Some(&(None, _, _))) => true,
            _ => false,
        };
        match spans.last_mut() {
            Some(last) if extends => last.2 = end,
            _ => spans.push((source, at, end)),
        }
        previous = source;
        at = end;
    }
    let phonemes = spans
        .iter()
        .filter_map(|&(p, start, end)| Some(PhonemeTiming { phoneme: p?, start: seconds(start), end: seconds(end) }))
        .collect();

    let mut visemes: Vec<VisemeEvent> = Vec::new();
    for &(p, start, end) in &spans {
        if end == start {
            continue;
        }
        let viseme = match p.map_or(Some(Mouth::Shape(Viseme::Sil)), mouth) {
            Some(Mouth::Shape(v)) => v,
            Some(Mouth::Hold) | None => visemes.last().map_or(Viseme::Sil, |e| e.viseme),
        };
        match visemes.last_mut() {
            Some(last) if last.viseme == viseme => last.end = seconds(end),
            _ => visemes.push(VisemeEvent { viseme, start: seconds(start), end: seconds(end) }),
        }
    }
    Timeline { phonemes, visemes }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipa_vowels_and_consonants_have_their_classes() {
        let shape = |c| mouth(c).unwrap();
        assert_eq!(shape('p'), Mouth::Shape(Viseme::PP));
        assert_eq!(shape('ð'), Mouth::Shape(Viseme::TH));
        assert_eq!(shape('ɹ'), Mouth::Shape(Viseme::RR));
        assert_eq!(shape('æ'), Mouth::Shape(Viseme::Aa));
        assert_eq!(shape('ʊ'), Mouth::Shape(Viseme::U));
        assert_eq!(shape('.'), Mouth::Shape(Viseme::Sil));
        assert_eq!(shape('ˈ'), Mouth::Hold);
        assert_eq!(shape('\u{0303}'), Mouth::Hold);
        assert_eq!(mouth('😀'), None);
    }

    #[test]
    fn pads_belong_to_the_phoneme_before_and_bos_eos_are_silence() {
        // ^ _ h _ ˈ _ ɑ _ ɑ _ . _ $   ("hˈɑɑ."): durations in samples at 100 Hz.
        let s = Some;
        let sources = [None, None, s('h'), None, s('ˈ'), None, s('ɑ'), None, s('ɑ'), None, s('.'), None, None];
        let samples = [5, 5, 10, 2, 0, 0, 10, 3, 7, 0, 4, 1, 9];
        let t = timeline(&sources, &samples, 100, 1.0);
        // In samples after the 1 s offset, to compare exactly.
        let n = |s: f64| ((s - 1.0) * 100.0).round() as u32;
        let got: Vec<(char, u32, u32)> = t.phonemes.iter().map(|p| (p.phoneme, n(p.start), n(p.end))).collect();
        // Two "ɑ" stay two phonemes: the pad between them ends the first.
        assert_eq!(got, [('h', 10, 22), ('ˈ', 22, 22), ('ɑ', 22, 35), ('ɑ', 35, 42), ('.', 42, 47)]);
        let got: Vec<(Viseme, u32, u32)> = t.visemes.iter().map(|v| (v.viseme, n(v.start), n(v.end))).collect();
        assert_eq!(got, [(Viseme::Sil, 0, 10), (Viseme::Kk, 10, 22), (Viseme::Aa, 22, 42), (Viseme::Sil, 42, 56)]);
    }

    #[test]
    fn a_hold_at_the_start_is_silence_and_a_space_keeps_the_shape() {
        let s = Some;
        let sources = [None, s('ˈ'), None, s('a'), None, s(' '), None, s('m'), None, None];
        let samples = [0, 4, 0, 4, 0, 4, 0, 4, 0, 0];
        let t = timeline(&sources, &samples, 4, 0.0);
        let got: Vec<(Viseme, f64, f64)> = t.visemes.iter().map(|v| (v.viseme, v.start, v.end)).collect();
        assert_eq!(got, [(Viseme::Sil, 0.0, 1.0), (Viseme::Aa, 1.0, 3.0), (Viseme::PP, 3.0, 4.0)]);
    }
}
