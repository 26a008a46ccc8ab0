//! Piper's phoneme → model input id map, and a sentence's ids.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Piper's padding, beginning- and end-of-sentence phonemes.
pub const PAD: char = '_';
pub const BOS: char = '^';
pub const EOS: char = '$';

#[derive(Debug, thiserror::Error)]
pub enum PhonemeIdMapError {
    #[error("reading {path:?}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("parsing {path:?}: {source}")]
    Parse { path: PathBuf, source: serde_json::Error },
    #[error("the phoneme id map has no {0:?}")]
    Missing(char),
    #[error("the phoneme id map gives {0:?} no id")]
    Empty(String),
}

/// Piper's phoneme → model input ids map (the voice config's `phoneme_id_map`).
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "HashMap<String, Vec<i64>>")]
pub struct PhonemeIdMap {
    ids: HashMap<char, Vec<i64>>,
}

/// Model input ids and, per id, the phoneme it stands for (`None` for the
/// `^` `_` `$` ids Piper adds). Every phoneme's ids are followed by one pad.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhonemeIds {
    pub ids: Vec<i64>,
    pub phonemes: Vec<Option<char>>,
}

impl TryFrom<HashMap<String, Vec<i64>>> for PhonemeIdMap {
    type Error = PhonemeIdMapError;

    /// Keys of more than one character (Piper's vowel clusters, not used by
    /// espeak voices without `vowel_clusters`) are left out.
    fn try_from(map: HashMap<String, Vec<i64>>) -> Result<Self, Self::Error> {
        let mut ids = HashMap::new();
        for (key, value) in map {
            let mut chars = key.chars();
            if let (Some(c), None) = (chars.next(), chars.next()) {
                if value.is_empty() {
                    return Err(PhonemeIdMapError::Empty(key));
                }
                ids.insert(c, value);
            }
        }
        for special in [PAD, BOS, EOS] {
            if !ids.contains_key(&special) {
                return Err(PhonemeIdMapError::Missing(special));
            }
        }
        Ok(Self { ids })
    }
}

impl PhonemeIdMap {
    /// The `phoneme_id_map` of a Piper voice config (`*.onnx.json`).
    pub fn from_voice_config(path: &Path) -> Result<Self, PhonemeIdMapError> {
        #[derive(Deserialize)]
        struct VoiceConfig {
            phoneme_id_map: HashMap<String, Vec<i64>>,
        }
        let read = |source| PhonemeIdMapError::Read { path: path.to_path_buf(), source };
        let text = std::fs::read_to_string(path).map_err(read)?;
        let config: VoiceConfig = serde_json::from_str(&text)
            .map_err(|source| PhonemeIdMapError::Parse { path: path.to_path_buf(), source })?;
        config.phoneme_id_map.try_into()
    }

    /// Every phoneme the map knows, with `^` `_` `$`.
    pub fn phonemes(&self) -> impl Iterator<Item = char> + '_ {
        self.ids.keys().copied()
    }

    pub fn contains(&self, phoneme: char) -> bool {
        self.ids.contains_key(&phoneme)
    }

    /// Piper's `phonemes_to_ids`: `^ _`, then each phoneme's ids and `_`,
    /// then `$`. Phonemes the map lacks (emoji, other scripts) are skipped.
    pub fn encode(&self, phonemes: &str) -> PhonemeIds {
        let mut out = PhonemeIds { ids: Vec::new(), phonemes: Vec::new() };
        let mut push = |c: char, source: Option<char>| {
            for &id in &self.ids[&c] {
                out.ids.push(id);
                out.phonemes.push(source);
            }
        };
        push(BOS, None);
        push(PAD, None);
        for c in phonemes.chars().filter(|c| self.ids.contains_key(c)) {
            push(c, Some(c));
            push(PAD, None);
        }
        push(EOS, None);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map() -> PhonemeIdMap {
        let pairs = [("_", 0), ("^", 1), ("$", 2), (" ", 3), ("a", 14), ("ˈ", 120), ("aɪ", 161)];
        pairs.into_iter().map(|(k, v)| (k.to_string(), vec![v])).collect::<HashMap<_, _>>().try_into().unwrap()
    }

    #[test]
    fn encode_pads_every_phoneme_and_skips_unknown_ones() {
        let ids = map().encode("ˈa😀 a");
        assert_eq!(ids.ids, [1, 0, 120, 0, 14, 0, 3, 0, 14, 0, 2]);
        let some = |c| Some(c);
        assert_eq!(
            ids.phonemes,
            [None, None, some('ˈ'), None, some('a'), None, some(' '), None, some('a'), None, None]
        );
        assert_eq!(map().encode("").ids, [1, 0, 2]);
    }

    #[test]
    fn a_map_without_pad_is_refused() {
        let map: HashMap<String, Vec<i64>> = [("^".to_string(), vec![1]), ("$".to_string(), vec![2])].into();
        assert!(matches!(PhonemeIdMap::try_from(map), Err(PhonemeIdMapError::Missing('_'))));
    }
}
