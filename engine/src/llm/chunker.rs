//! Text deltas in, TTS fragments out (sans-IO).
//!
//! The first fragment leaves early, at the first clause punctuation or after
//! a few words, so speech starts while the model is still writing; after it,
//! fragments are whole sentences. A sentence ends at `.`, `!`, `?` or `…`
//! (with any closing quotes or brackets) followed by a space and a character
//! that can start a sentence. A period does not end one after a known
//! abbreviation ("Dr."), a single capital initial ("J."), inside a number
//! ("3.5": no space follows) or before a lowercase word ("wait... what").
//! Deciding needs the character after the space, so a boundary waits for it
//! or for [`PhraseChunker::finish`].

/// Words after which a period does not end a sentence (lowercase, no period).
const ABBREVIATIONS: &[&str] = &[
    "dr", "mr", "mrs", "ms", "prof", "sr", "jr", "st", "vs", "etc", "e.g", "i.e", "no", "fig", "mt", "approx", "inc",
    "ltd", "co", "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec",
];

const CLOSERS: &[char] = &['"', '\'', '\u{201d}', '\u{2019}', ')', ']', '}', '\u{bb}'];

#[derive(Debug, Clone)]
pub struct PhraseChunker {
    buf: String,
    first_sent: bool,
    /// Words in the first fragment when no clause punctuation comes sooner.
    pub first_words: usize,
    /// A fragment longer than this (bytes) is cut at its last clause mark or space.
    pub max_len: usize,
}

impl Default for PhraseChunker {
    fn default() -> Self {
        Self { buf: String::new(), first_sent: false, first_words: 4, max_len: 240 }
    }
}

enum Cut {
    /// Emit `buf[..end]`, continue at `next`.
    At { end: usize, next: usize },
    /// Need more text to decide.
    Wait,
}

impl PhraseChunker {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a delta; returns the fragments it completed.
    pub fn push(&mut self, text: &str) -> Vec<String> {
        self.buf.push_str(text);
        let mut out = Vec::new();
        while let Cut::At { end, next } = self.find_cut() {
            let fragment = self.buf[..end].trim().to_string();
            self.buf.drain(..next);
            if !fragment.is_empty() {
                out.push(fragment);
                self.first_sent = true;
            }
        }
        out
    }

    /// The rest, at the end of the answer; the chunker is then ready for the next one.
    pub fn finish(&mut self) -> Option<String> {
        let rest = self.buf.trim().to_string();
        self.reset();
        (!rest.is_empty()).then_some(rest)
    }

    /// Drops buffered text (barge-in) and starts a new answer.
    pub fn reset(&mut self) {
        self.buf.clear();
        self.first_sent = false;
    }

    fn find_cut(&self) -> Cut {
        let buf = &self.buf;
        let chars: Vec<(usize, char)> = buf.char_indices().collect();
        let mut words = 0;
        let mut in_word = false;
        let mut last_soft = None;
        for (k, &(i, c)) in chars.iter().enumerate() {
            if c.is_whitespace() {
                if in_word {
                    words += 1;
                    in_word = false;
                    if !self.first_sent && words >= self.first_words {
                        return Cut::At { end: i, next: i };
                    }
                }
                last_soft = Some(i);
                continue;
            }
            in_word = true;
            let sentence_end = matches!(c, '.' | '!' | '?' | '…');
            let clause = matches!(c, ',' | ';' | ':' | '—');
            if !sentence_end && !clause {
                continue;
            }
            // Skip closing quotes/brackets, then require whitespace.
            let mut j = k + 1;
            while j < chars.len() && CLOSERS.contains(&chars[j].1) {
                j += 1;
            }
            if j >= chars.len() {
                return Cut::Wait;
            }
            if !chars[j].1.is_whitespace() {
                continue;
            }
            let end = chars[j].0;
            if clause {
                last_soft = Some(end);
                if !self.first_sent {
                    return Cut::At { end, next: end };
                }
                continue;
            }
            let mut n = j;
            while n < chars.len() && chars[n].1.is_whitespace() {
                n += 1;
            }
            if n >= chars.len() {
                return Cut::Wait;
            }
            let next_char = chars[n].1;
            if c == '.' && !self.period_ends_sentence(&chars, k, next_char) {
                continue;
            }
            return Cut::At { end, next: chars[n].0 };
        }
        if buf.len() > self.max_len
            && let Some(end) = last_soft.filter(|&e| e > 0)
        {
            return Cut::At { end, next: end };
        }
        Cut::Wait
    }

    /// Whether the period at `chars[k]`, followed by space and `next`, ends a sentence.
    fn period_ends_sentence(&self, chars: &[(usize, char)], k: usize, next: char) -> bool {
        if next.is_lowercase() {
            return false;
        }
        let mut start = k;
        while start > 0 && !chars[start - 1].1.is_whitespace() && !matches!(chars[start - 1].1, '"' | '(' | '\u{201c}')
        {
            start -= 1;
        }
        let word: String = chars[start..k].iter().map(|&(_, c)| c).collect();
        if word.chars().count() == 1 && word.chars().all(char::is_uppercase) {
            return false;
        }
        !ABBREVIATIONS.contains(&word.to_lowercase().as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(text: &str, step: usize) -> Vec<String> {
        let mut c = PhraseChunker::new();
        let mut out = Vec::new();
        let chars: Vec<char> = text.chars().collect();
        for piece in chars.chunks(step) {
            out.extend(c.push(&piece.iter().collect::<String>()));
        }
        out.extend(c.finish());
        out
    }

    fn check(text: &str, expected: &[&str]) {
        for step in [1, 2, 3, 7, 1000] {
            assert_eq!(run(text, step), expected, "step {step}");
        }
    }

    #[test]
    fn first_clause_then_sentences() {
        check(
            "Sure, Dr. Smith measured 3.5 liters. That is a lot! Is it? Yes.",
            &["Sure,", "Dr. Smith measured 3.5 liters.", "That is a lot!", "Is it?", "Yes."],
        );
    }

    #[test]
    fn first_fragment_after_four_words() {
        check(
            "The capital of France is Paris. It is lovely.",
            &["The capital of France", "is Paris.", "It is lovely."],
        );
    }

    #[test]
    fn ellipses_quotes_and_initials() {
        check(
            "Hmm; well... maybe not. She said \"Stop.\" Then J. R. R. Tolkien wrote... Books! The end",
            &[
                "Hmm;",
                "well... maybe not.",
                "She said \"Stop.\"",
                "Then J. R. R. Tolkien wrote...",
                "Books!",
                "The end",
            ],
        );
    }

    #[test]
    fn numbers_and_abbreviations() {
        check(
            "Okay. Version 2.0 costs $3.50, e.g. for Mr. Lee. Done.",
            &["Okay.", "Version 2.0 costs $3.50, e.g. for Mr. Lee.", "Done."],
        );
    }

    #[test]
    fn long_run_is_cut() {
        let text = "word ".repeat(100);
        let out = run(&text, 5);
        assert!(out.len() > 2);
        assert!(out.iter().all(|f| f.len() <= 250), "{out:?}");
        assert_eq!(out.join(" "), text.trim());
    }
}
