//! Where espeak-ng ends a clause, and how long text is cut into pieces.
//!
//! The rules follow espeak-ng's `ReadClause` (readclause.c) for the
//! punctuation English text uses, so that asking espeak-ng for one clause at
//! a time gives the clauses, terminators and sentence ends that Piper reads
//! from libespeak-ng's `espeak_TextToPhonemesWithTerminator`.

/// The punctuation Piper keeps at the end of a clause.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Terminator {
    Period,
    Question,
    Exclamation,
    Comma,
    Colon,
    Semicolon,
    /// End of text, a paragraph break, an ellipsis or full-width punctuation:
    /// Piper's bridge maps these clause types to no character.
    None,
}

impl Terminator {
    /// The character Piper appends to the clause's phonemes.
    pub fn as_char(self) -> Option<char> {
        match self {
            Self::Period => Some('.'),
            Self::Question => Some('?'),
            Self::Exclamation => Some('!'),
            Self::Comma => Some(','),
            Self::Colon => Some(':'),
            Self::Semicolon => Some(';'),
            Self::None => None,
        }
    }
}

/// One clause of the input: its text (with its punctuation, without the
/// whitespace after it), how it ends, and whether a sentence ends with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Clause<'a> {
    pub text: &'a str,
    pub terminator: Terminator,
    pub ends_sentence: bool,
    /// Byte offset in the input just past the clause and its trailing whitespace.
    pub(crate) next: usize,
}

/// How espeak-ng classifies a punctuation character: the terminator Piper
/// reports, whether it ends a sentence, and whether no space is needed after it.
fn punctuation(c: char) -> Option<(Terminator, bool, bool)> {
    use Terminator as T;
    Some(match c {
        '.' => (T::Period, true, false),
        '?' => (T::Question, true, false),
        '!' => (T::Exclamation, true, false),
        ',' => (T::Comma, false, false),
        ':' => (T::Colon, false, false),
        ';' => (T::Semicolon, false, false),
        // Extended dashes are semicolons to espeak-ng.
        '\u{2013}' | '\u{2014}' => (T::Semicolon, false, false),
        // An ellipsis is a semicolon with "optional space after", a clause type
        // Piper's bridge maps to no character.
        '\u{2026}' => (T::None, false, true),
        // Full-width and ideographic punctuation: optional space after, which
        // likewise maps to no character; sentence ends are still sentence ends.
        '。' | '．' | '？' | '！' => (T::None, true, true),
        '，' | '、' | '：' | '；' => (T::None, false, true),
        _ => return None,
    })
}

/// espeak-ng's `IsBracket`: brackets and quotes that may follow a terminator.
fn is_bracket(c: char) -> bool {
    matches!(c, '(' | ')' | '[' | ']' | '{' | '}' | '<' | '>' | '"' | '\'' | '`' | '«' | '»' | '《' | '》')
        || ('\u{2014}'..='\u{201f}').contains(&c)
}

/// The clauses of `text` in order, as espeak-ng cuts them. Whitespace-only
/// text has no clauses; a clause may hold no letters (e.g. "?!").
pub fn clauses(text: &str) -> Vec<Clause<'_>> {
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let at = |i: usize| chars.get(i).map(|&(_, c)| c);
    let offset = |i: usize| chars.get(i).map_or(text.len(), |&(o, _)| o);
    let mut out = Vec::new();
    let mut start = 0; // char index where the current clause begins
    let mut any_alnum = false;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i].1;
        if c.is_alphanumeric() {
            any_alnum = true;
        }
        if c == '\n' {
            // Two newlines (blank line): a paragraph ends the sentence.
            let j = skip_space(&chars, i + 1);
            if chars[i + 1..j].iter().any(|&(_, c)| c == '\n') {
                push(&mut out, text, offset(start), offset(i), offset(j), Terminator::None, true);
                start = j;
                any_alnum = false;
                i = j;
                continue;
            }
        }
        let mut end = i + 1; // past the punctuation sequence
        let mut kind = punctuation(c);
        if c == '.' && at(i + 1) == Some('.') {
            while at(end) == Some('.') {
                end += 1;
            }
            if end - i >= 3 {
                kind = punctuation('\u{2026}');
            } else {
                end = i + 1;
            }
        }
        let Some((terminator, sentence, optional_space)) = kind else {
            i += 1;
            continue;
        };
        if matches!(terminator, Terminator::Question | Terminator::Exclamation) {
            while matches!(at(end), Some('?' | '!')) {
                end += 1;
            }
        }
        let c2 = at(end);
        let mut is_end = match c2 {
            None => true,
            Some(c2) => c2.is_whitespace() || optional_space || is_bracket(c2) || c2 == '?',
        };
        let j = skip_space(&chars, end);
        let newlines = chars[end..j].iter().filter(|&&(_, c)| c == '\n').count();
        if is_end && newlines == 0 {
            let c_next = at(j);
            if c == '.' && end == i + 1 {
                // "U.S.A.'s", "e.g. apples": a dot before 's or a lower-case
                // word is an abbreviation's.
                let genitive = c_next == Some('\'') && at(j + 1) == Some('s');
                if genitive || c_next.is_some_and(char::is_lowercase) || !any_alnum {
                    is_end = false;
                }
            } else if !any_alnum {
                is_end = false;
            }
        }
        if is_end {
            let (terminator, sentence) = if newlines > 1 { (Terminator::None, true) } else { (terminator, sentence) };
            push(&mut out, text, offset(start), offset(end), offset(j), terminator, sentence);
            start = j;
            any_alnum = false;
            i = j;
        } else {
            i = end;
        }
    }
    if start < chars.len() {
        push(&mut out, text, offset(start), text.len(), text.len(), Terminator::None, true);
    }
    out
}

fn skip_space(chars: &[(usize, char)], mut i: usize) -> usize {
    while chars.get(i).is_some_and(|&(_, c)| c.is_whitespace()) {
        i += 1;
    }
    i
}

fn push<'a>(
    out: &mut Vec<Clause<'a>>,
    text: &'a str,
    start: usize,
    end: usize,
    next: usize,
    terminator: Terminator,
    ends_sentence: bool,
) {
    let clause = text[start..end].trim_end();
    if !clause.is_empty() {
        out.push(Clause { text: clause, terminator, ends_sentence, next });
    } else if ends_sentence && let Some(last) = out.last_mut() {
        last.ends_sentence = true;
    }
}

/// Cuts `text` into pieces of at most `max_chars` characters, in order, so a
/// long text can be spoken piece by piece: one sentence per piece, a long
/// sentence cut at clause ends, a long clause at spaces, a word longer than
/// `max_chars` anywhere. The pieces concatenated give back `text` exactly
/// (whitespace between pieces stays at the end of the piece before it).
pub fn split_text(text: &str, max_chars: usize) -> Vec<&str> {
    let max_chars = max_chars.max(1);
    let clauses = clauses(text);
    let mut pieces = Vec::new();
    let mut start = 0;
    let mut ci = 0;
    while start < text.len() {
        // The sentence from `start`: clauses up to the next sentence end.
        let mut sentence_end = text.len();
        let mut clause_ends = Vec::new();
        while ci < clauses.len() {
            let clause = &clauses[ci];
            ci += 1;
            clause_ends.push(clause.next);
            if clause.ends_sentence {
                sentence_end = clause.next;
                break;
            }
        }
        let mut piece_start = start;
        while piece_start < sentence_end {
            let rest = &text[piece_start..sentence_end];
            let end = if rest.chars().count() <= max_chars {
                sentence_end
            } else {
                let limit = piece_start + rest.char_indices().nth(max_chars).map_or(rest.len(), |(o, _)| o);
                let at_clause = clause_ends.iter().copied().filter(|&e| e > piece_start && e <= limit).max();
                at_clause.or_else(|| last_space_end(text, piece_start, limit)).unwrap_or(limit)
            };
            pieces.push(&text[piece_start..end]);
            piece_start = end;
        }
        start = sentence_end;
    }
    pieces
}

/// Just past the last run of whitespace in `text[from..limit]` that has
/// something before it, if any.
fn last_space_end(text: &str, from: usize, limit: usize) -> Option<usize> {
    let window = &text[from..limit];
    let space = window.char_indices().rev().find(|&(o, c)| c.is_whitespace() && o > 0)?.0;
    let after =
        window[space..].char_indices().find(|&(_, c)| !c.is_whitespace()).map_or(window.len(), |(o, _)| space + o);
    Some(from + after)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(text: &str) -> Vec<(&str, Option<char>, bool)> {
        clauses(text).into_iter().map(|c| (c.text, c.terminator.as_char(), c.ends_sentence)).collect()
    }

    #[test]
    fn clauses_end_where_espeak_ends_them() {
        assert_eq!(
            shape("Well, I think so; but: maybe. Yes!? No"),
            [
                ("Well,", Some(','), false),
                ("I think so;", Some(';'), false),
                ("but:", Some(':'), false),
                ("maybe.", Some('.'), true),
                ("Yes!?", Some('!'), true),
                ("No", None, true),
            ]
        );
        // A dot before a lower-case word, inside a number or before 's is no end.
        assert_eq!(
            shape("Fruit, e.g. apples cost 3.5 now."),
            [("Fruit,", Some(','), false), ("e.g. apples cost 3.5 now.", Some('.'), true)]
        );
        assert_eq!(shape("The U.S.A.'s flag."), [("The U.S.A.'s flag.", Some('.'), true)]);
        // Three dots are an ellipsis: a clause with no terminator character.
        assert_eq!(shape("Wait... what?"), [("Wait...", None, false), ("what?", Some('?'), true)]);
        // A blank line ends a sentence, a single newline does not.
        assert_eq!(shape("One.\n\nTwo\nlines."), [("One.", None, true), ("Two\nlines.", Some('.'), true)]);
        // Punctuation before any letter ends nothing.
        assert_eq!(shape("?!..."), [("?!...", None, true)]);
        assert!(shape("  \n ").is_empty());
    }

    #[test]
    fn split_text_keeps_everything_in_order_within_the_limit() {
        let text = "Short one. This sentence, which is rather long, has clauses; and it goes on and on without end \
                    until it stops. Supercalifragilisticexpialidocious!";
        for max in [1, 8, 20, 40, 400] {
            let pieces = split_text(text, max);
            assert_eq!(pieces.concat(), text, "max {max}");
            assert!(pieces.iter().all(|p| p.chars().count() <= max), "max {max}: {pieces:?}");
        }
        // A sentence per piece; a long one cut at its last clause end that fits.
        assert_eq!(
            split_text(text, 50)[..3],
            [
                "Short one. ",
                "This sentence, which is rather long, has clauses; ",
                "and it goes on and on without end until it stops. "
            ]
        );
    }
}
