//! Text → Piper phonemes → model input ids.
//!
//! Phonemes come from the espeak-ng executable, run as a separate process
//! (espeak-ng is GPL-3; it is never linked). One child per [`Phonemizer`]
//! reads a line of text on stdin and writes one line of IPA per clause on
//! stdout: about 1.5 ms for a short sentence, where spawning espeak-ng per
//! call costs 10–17 ms. (The CLI also synthesises the audio it does not
//! output, so the cost grows with the length of the speech, about 1.3 ms per
//! second of it.) We cut the text into clauses as espeak-ng does and send one
//! clause per line, so that each clause's punctuation is known. The output is
//! shaped as piper-tts shapes libespeak-ng's: one phoneme list per sentence,
//! each clause followed by its punctuation (and a space after `,` `:` `;`),
//! language-switch flags such as `(fr)` removed, then Unicode NFD so accents
//! become their own phonemes. [`PhonemeIdMap`] turns a sentence into ids.

mod clause;
mod ids;
mod normalize;

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use unicode_normalization::UnicodeNormalization;

pub use clause::{Clause, Terminator, clauses, split_text};
pub use ids::{BOS, EOS, PAD, PhonemeIdMap, PhonemeIdMapError, PhonemeIds};
pub use normalize::normalize;

/// The most characters [`split_text`] should put in one piece for speaking.
pub const MAX_PIECE_CHARS: usize = 400;

/// espeak-ng reads at most 999 bytes a line; longer clauses are sent in parts.
const MAX_LINE_BYTES: usize = 900;
/// Sent after each request: raw phoneme input that no text produces, so its
/// IPA line marks where the answer ends.
const SENTINEL_IN: &str = "[[C x C x]]";

#[derive(Debug, thiserror::Error)]
pub enum PhonemizeError {
    #[error("espeak-ng not found at {path:?} (apt-get install espeak-ng, or set the binary path)")]
    MissingBinary { path: PathBuf },
    #[error("cannot start espeak-ng at {path:?}: {source}")]
    Spawn { path: PathBuf, source: std::io::Error },
    #[error("espeak-ng ({path:?}, voice {voice:?}) stopped answering: {reason}")]
    Died { path: PathBuf, voice: String, reason: String },
}

/// The phonemes of one sentence, one `char` per phoneme.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sentence {
    pub phonemes: String,
}

/// Text to Piper phonemes through one long-lived espeak-ng process.
pub struct Phonemizer {
    binary: PathBuf,
    voice: String,
    process: Option<Espeak>,
    sentinel_out: String,
}

struct Espeak {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Drop for Espeak {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Phonemizer {
    /// Starts `espeak-ng` from PATH with `voice` (the voice config's
    /// `espeak.voice`, e.g. "en-us").
    pub fn new(voice: &str) -> Result<Self, PhonemizeError> {
        Self::with_binary("espeak-ng", voice)
    }

    /// Starts the espeak-ng executable at `binary` with `voice`.
    pub fn with_binary(binary: impl Into<PathBuf>, voice: &str) -> Result<Self, PhonemizeError> {
        let mut phonemizer =
            Self { binary: binary.into(), voice: voice.to_string(), process: None, sentinel_out: String::new() };
        let mut process = phonemizer.spawn()?;
        // The sentinel's IPA depends on the voice; learn it once.
        let mut line = String::new();
        let answered = writeln!(process.stdin, "{SENTINEL_IN}").and_then(|()| process.stdout.read_line(&mut line));
        if !matches!(answered, Ok(n) if n > 0) {
            // espeak-ng exits at once on an unknown voice.
            let status = process.child.wait().map_or_else(|e| e.to_string(), |s| s.to_string());
            return Err(
                phonemizer.died(format!("it exited at start ({status}); is there an espeak-ng voice {voice:?}?"))
            );
        }
        phonemizer.sentinel_out = line.trim().to_string();
        if phonemizer.sentinel_out.is_empty() {
            return Err(phonemizer.died("its phoneme output is empty"));
        }
        phonemizer.process = Some(process);
        Ok(phonemizer)
    }

    pub fn voice(&self) -> &str {
        &self.voice
    }

    /// The espeak-ng child's process id, while one runs.
    pub fn process_id(&self) -> Option<u32> {
        self.process.as_ref().map(|p| p.child.id())
    }

    /// The phonemes of `text`, one entry per sentence, after [`normalize`].
    /// Text with nothing to say (empty, only punctuation) gives no sentences.
    pub fn phonemize(&mut self, text: &str) -> Result<Vec<Sentence>, PhonemizeError> {
        self.phonemize_exact(&normalize(text))
    }

    /// Like [`Phonemizer::phonemize`] without [`normalize`]: what piper-tts
    /// gives for the same text (with the same espeak-ng version).
    pub fn phonemize_exact(&mut self, text: &str) -> Result<Vec<Sentence>, PhonemizeError> {
        let clauses = clauses(text);
        let lines: Vec<String> = clauses.iter().map(|c| request_line(c.text)).collect();
        let mut sentences = Vec::new();
        let mut current = String::new();
        for (clause, ipa) in clauses.iter().zip(self.ipa(&lines)?) {
            current.push_str(&ipa);
            if let Some(t) = clause.terminator.as_char() {
                current.push(t);
                if matches!(t, ',' | ':' | ';') {
                    current.push(' ');
                }
            }
            if clause.ends_sentence && !current.is_empty() {
                sentences.push(Sentence { phonemes: current.nfd().collect() });
                current.clear();
            }
        }
        if !current.is_empty() {
            sentences.push(Sentence { phonemes: current.nfd().collect() });
        }
        Ok(sentences)
    }

    /// The IPA of each line; espeak-ng is restarted once if it has died.
    fn ipa(&mut self, lines: &[String]) -> Result<Vec<String>, PhonemizeError> {
        let mut process = match self.process.take() {
            Some(p) => p,
            None => self.spawn()?,
        };
        let answers = match self.ask(&mut process, lines) {
            Ok(answers) => answers,
            Err(_) => {
                process = self.spawn()?;
                self.ask(&mut process, lines)?
            }
        };
        self.process = Some(process);
        Ok(answers)
    }

    /// Sends every part of every line, each followed by the sentinel, from a
    /// writer thread (so neither pipe can fill while the other side waits),
    /// and reads each part's IPA lines up to the sentinel's, joined by
    /// spaces, with `(lang)` flags removed.
    fn ask(&self, process: &mut Espeak, lines: &[String]) -> Result<Vec<String>, PhonemizeError> {
        let parts: Vec<Vec<&str>> =
            lines.iter().map(|l| line_parts(l).into_iter().filter(|p| !p.trim().is_empty()).collect()).collect();
        let mut request = String::new();
        for part in parts.iter().flatten() {
            request.push_str(part);
            request.push('\n');
            request.push_str(SENTINEL_IN);
            request.push('\n');
        }
        if request.is_empty() {
            return Ok(vec![String::new(); lines.len()]);
        }
        let Espeak { stdin, stdout, .. } = process;
        std::thread::scope(|scope| {
            let writer = scope.spawn(move || stdin.write_all(request.as_bytes()).and_then(|()| stdin.flush()));
            let answers = self.read_answers(stdout, &parts);
            let written = writer.join().unwrap_or_else(|_| Err(std::io::Error::other("writer panicked")));
            let answers = answers?;
            written.map_err(|e| self.died(e))?;
            Ok(answers)
        })
    }

    fn read_answers(
        &self,
        stdout: &mut BufReader<ChildStdout>,
        parts: &[Vec<&str>],
    ) -> Result<Vec<String>, PhonemizeError> {
        let mut answers = Vec::with_capacity(parts.len());
        let mut line = String::new();
        for line_parts in parts {
            let mut ipa = String::new();
            for _ in line_parts {
                loop {
                    line.clear();
                    if stdout.read_line(&mut line).map_err(|e| self.died(e))? == 0 {
                        return Err(self.died("its output ended"));
                    }
                    if line.trim() == self.sentinel_out {
                        break;
                    }
                    let said = without_language_flags(line.trim());
                    if !ipa.is_empty() && !said.is_empty() {
                        ipa.push(' ');
                    }
                    ipa.push_str(&said);
                }
            }
            answers.push(ipa);
        }
        Ok(answers)
    }

    fn spawn(&self) -> Result<Espeak, PhonemizeError> {
        let mut child = Command::new(&self.binary)
            .args(["-q", "-b", "1", "--ipa", "-v", &self.voice])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|source| match source.kind() {
                std::io::ErrorKind::NotFound => PhonemizeError::MissingBinary { path: self.binary.clone() },
                _ => PhonemizeError::Spawn { path: self.binary.clone(), source },
            })?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(self.died("no stdin or stdout"));
        };
        Ok(Espeak { child, stdin, stdout: BufReader::new(stdout) })
    }

    fn died(&self, reason: impl ToString) -> PhonemizeError {
        PhonemizeError::Died { path: self.binary.clone(), voice: self.voice.clone(), reason: reason.to_string() }
    }
}

/// A clause as one line of espeak-ng input: no newlines or other control
/// characters (U+0001 starts an espeak-ng embedded command), and no `[[`,
/// which would start espeak-ng's raw phoneme input.
fn request_line(clause: &str) -> String {
    let line: String = clause.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    line.replace("[[", " ").replace("]]", " ")
}

/// `line` cut at spaces into parts espeak-ng reads as one line each.
fn line_parts(line: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut rest = line;
    while rest.len() > MAX_LINE_BYTES {
        let mut cut = MAX_LINE_BYTES;
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        let cut = rest[..cut].rfind(' ').filter(|&c| c > 0).unwrap_or(cut);
        parts.push(&rest[..cut]);
        rest = &rest[cut..];
    }
    parts.push(rest);
    parts
}

/// Removes espeak-ng's language-switch flags, e.g. "(fr)".
fn without_language_flags(ipa: &str) -> String {
    let mut out = String::with_capacity(ipa.len());
    let mut rest = ipa;
    while let Some(open) = rest.find('(') {
        let Some(len) = rest[open + 1..].find(')') else { break };
        // As Piper's `\([^)]+\)`: "()" stays.
        let keep = if len == 0 { open + 2 } else { open };
        out.push_str(&rest[..keep]);
        rest = &rest[open + 1 + len + 1..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn language_flags_are_removed_and_long_lines_cut_at_spaces() {
        assert_eq!(without_language_flags("(fr)bɔ̃ʒˈuʁ(en) hˈaɪ"), "bɔ̃ʒˈuʁ hˈaɪ");
        assert_eq!(without_language_flags("a (b"), "a (b");
        assert_eq!(without_language_flags("() (de)x"), "() x");
        let line = "word ".repeat(400);
        let parts = line_parts(&line);
        assert!(parts.len() > 1 && parts.iter().all(|p| p.len() <= MAX_LINE_BYTES));
        assert_eq!(parts.concat(), line);
    }
}
