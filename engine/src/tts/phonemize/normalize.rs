//! The few rewrites espeak-ng needs before it reads text the way a person
//! would. espeak-ng already reads plain numbers ("1,250", "3.5"), times
//! ("10:30"), percentages, "24 November 2026", "e.g." and e-mail addresses
//! well; what it gets wrong is rewritten here:
//!
//! - amounts with a currency sign: "$3.50" is "dollar three point five zero"
//!   to espeak-ng, here "3 dollars 50 cents";
//! - ISO dates: "2026-11-24" is "… dash eleven dash …", here "November 24th 2026";
//! - URLs: the scheme is spelled out letter by letter ("h t t p s colon slash
//!   slash"), here it is dropped, as is "www.";
//! - titles before a name: "Dr. Smith" ends a sentence after "doctor" (a
//!   pause), here "Doctor Smith";
//! - emoji: read by name ("grinning face"), here silent;
//! - `[[` `]]`: espeak-ng's raw phoneme input, here plain spaces.

/// Rewrites `text` so that espeak-ng reads it as a person would.
pub fn normalize(text: &str) -> String {
    let text: String = text.chars().filter(|&c| !is_emoji(c)).collect::<String>().replace("[[", " ").replace("]]", " ");
    let mut out = String::with_capacity(text.len() + 16);
    let mut rest = text.as_str();
    while let Some(c) = rest.chars().next() {
        let word_start = out.chars().next_back().is_none_or(|p| !p.is_alphanumeric());
        let rewritten = if word_start {
            currency(rest).or_else(|| iso_date(rest)).or_else(|| url(rest)).or_else(|| title(rest))
        } else {
            None
        };
        match rewritten {
            Some((said, used)) => {
                out.push_str(&said);
                rest = &rest[used..];
            }
            None => {
                out.push(c);
                rest = &rest[c.len_utf8()..];
            }
        }
    }
    out
}

/// Pictographs, dingbats, flags and skin tones (all in 1F000–1FAFF) and the joiners between them.
fn is_emoji(c: char) -> bool {
    matches!(c as u32,
        0x1F000..=0x1FAFF | 0x2600..=0x27BF | 0x2B50..=0x2B55 | 0xFE0E | 0xFE0F | 0x200D | 0x20E3 | 0xE0020..=0xE007F)
}

/// The run of ASCII digits at the start of `s`.
fn digits(s: &str) -> &str {
    &s[..s.bytes().take_while(u8::is_ascii_digit).count()]
}

/// "$5" → "5 dollars", "$3.50" → "3 dollars 50 cents", "€1" → "1 euro",
/// "£2.05" → "2 pounds 5 pence". Thousands separators are kept ("$1,250").
fn currency(s: &str) -> Option<(String, usize)> {
    let sign = s.chars().next()?;
    let (one, many, cent, cents) = match sign {
        '$' => ("dollar", "dollars", "cent", "cents"),
        '€' => ("euro", "euros", "cent", "cents"),
        '£' => ("pound", "pounds", "penny", "pence"),
        _ => return None,
    };
    let amount = &s[sign.len_utf8()..];
    let mut whole_len = digits(amount).len();
    if whole_len == 0 {
        return None;
    }
    while amount[whole_len..].starts_with(',') && digits(&amount[whole_len + 1..]).len() == 3 {
        whole_len += 4;
    }
    let whole = &amount[..whole_len];
    let mut said = format!("{whole} {}", if whole == "1" { one } else { many });
    let mut used = sign.len_utf8() + whole_len;
    let after = &amount[whole_len..];
    if let Some(fraction) = after.strip_prefix('.').map(digits).filter(|d| d.len() == 2) {
        let n: u32 = fraction.parse().ok()?;
        if n > 0 {
            said += &format!(" {n} {}", if n == 1 { cent } else { cents });
        }
        used += 3;
    }
    Some((said, used))
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

/// "2026-11-24" → "November 24th 2026".
fn iso_date(s: &str) -> Option<(String, usize)> {
    let b = s.as_bytes();
    let shape = b.len() >= 10
        && b[..10].iter().enumerate().all(|(i, c)| if i == 4 || i == 7 { *c == b'-' } else { c.is_ascii_digit() });
    if !shape || b.get(10).is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'-') {
        return None;
    }
    let month: usize = s[5..7].parse().ok()?;
    let day: u32 = s[8..10].parse().ok()?;
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    let suffix = match (day % 10, day) {
        (_, 11..=13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    Some((format!("{} {day}{suffix} {}", MONTHS[month - 1], &s[..4]), 10))
}

/// "https://www.example.com/docs" → "example.com/docs" (espeak-ng reads the
/// dots and slashes of the rest as "dot" and "slash").
fn url(s: &str) -> Option<(String, usize)> {
    let starts = |s: &str, prefix: &str| {
        s.as_bytes().get(..prefix.len()).is_some_and(|b| b.eq_ignore_ascii_case(prefix.as_bytes()))
    };
    let scheme = ["https://", "http://", "www."].into_iter().find(|p| starts(s, p))?;
    let mut used = scheme.len();
    if scheme != "www." && starts(&s[used..], "www.") {
        used += 4;
    }
    let body = &s[used..];
    let len = body.find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>' | ')')).unwrap_or(body.len());
    // A final dot or comma is the sentence's, not the URL's.
    let link = body[..len].trim_end_matches(['.', ',', '!', '?', ';', ':']);
    if link.is_empty() {
        return None;
    }
    Some((link.trim_end_matches('/').to_string(), used + link.len()))
}

/// "Dr. Smith" → "Doctor Smith": a title's dot before a capitalised name
/// would end the sentence.
fn title(s: &str) -> Option<(String, usize)> {
    const TITLES: [(&str, &str); 5] =
        [("Dr.", "Doctor"), ("Mr.", "Mister"), ("Mrs.", "Mrs"), ("Ms.", "Miz"), ("Prof.", "Professor")];
    let (abbr, said) = TITLES.into_iter().find(|(abbr, _)| s.starts_with(abbr))?;
    let rest = &s[abbr.len()..];
    let name = rest.trim_start_matches(' ');
    (name.len() < rest.len() && name.starts_with(|c: char| c.is_uppercase())).then(|| (said.to_string(), abbr.len()))
}

#[cfg(test)]
mod tests {
    use super::normalize;

    #[test]
    fn rewrites_what_espeak_reads_wrong() {
        let cases = [
            ("It costs $5.", "It costs 5 dollars."),
            ("It costs $3.50 or $1.", "It costs 3 dollars 50 cents or 1 dollar."),
            ("Pay $1,250.01 now", "Pay 1,250 dollars 1 cent now"),
            ("€20, £2.05 and $4.00", "20 euros, 2 pounds 5 pence and 4 dollars"),
            ("On 2026-11-24.", "On November 24th 2026."),
            (
                "Days 2026-01-01, 2026-02-02 and 2026-03-23",
                "Days January 1st 2026, February 2nd 2026 and March 23rd 2026",
            ),
            ("See https://example.com/docs.", "See example.com/docs."),
            ("Go to http://www.example.org/ now", "Go to example.org now"),
            ("Dr. Smith and Mrs. Jones", "Doctor Smith and Mrs Jones"),
            ("I love it 😀!", "I love it !"),
            ("Say [[h@l'oU]]", "Say  h@l'oU "),
        ];
        for (text, said) in cases {
            assert_eq!(normalize(text), said, "{text:?}");
        }
    }

    #[test]
    fn leaves_alone_what_espeak_reads_right() {
        for text in [
            "It weighs 3.5 kilograms, 1,250 of them at 10:30.",
            "Prices rose by 15% on 24 November 2026.",
            "Write to jane.doe@example.com, e.g. today.",
            "The dr. said so", // no name after the title
            "Serial 2026-11-245 and US$5",
            "Привет, мир. 你好",
        ] {
            assert_eq!(normalize(text), text);
        }
    }
}
