//! The text side of speaking: espeak-ng phonemes and model ids against what
//! piper-tts 1.8.0 gives (fixtures/piper_phonemes.py), normalisation, bad
//! input, long text, a missing or dying espeak-ng, and visemes for every
//! phoneme of the voice. Needs espeak-ng (apt-get install espeak-ng).

use std::collections::HashMap;
use std::process::Command;

use serde::Deserialize;
use tete_engine::tts::phonemize::{
    MAX_PIECE_CHARS, PhonemeIdMap, PhonemizeError, Phonemizer, Sentence, normalize, split_text,
};
use tete_engine::tts::viseme::{Mouth, Viseme, mouth, timeline};

#[derive(Deserialize)]
struct Fixture {
    phoneme_id_map: PhonemeIdMap,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    text: String,
    sentences: Vec<FixtureSentence>,
}

#[derive(Deserialize)]
struct FixtureSentence {
    phonemes: String,
    ids: Vec<i64>,
}

fn fixture() -> Fixture {
    serde_json::from_str(include_str!("fixtures/piper_phonemes.json")).unwrap()
}

fn phonemizer() -> Phonemizer {
    Phonemizer::new("en-us").unwrap_or_else(|e| panic!("{e}"))
}

fn phonemes(sentences: &[Sentence]) -> Vec<&str> {
    sentences.iter().map(|s| s.phonemes.as_str()).collect()
}

/// The installed espeak-ng's (major, minor) version.
fn espeak_version() -> (u32, u32) {
    let out = Command::new("espeak-ng").arg("--version").output().expect("espeak-ng on PATH");
    let text = String::from_utf8_lossy(&out.stdout);
    let version = text.split_whitespace().find(|w| w.starts_with("1.")).expect("a version");
    let mut parts = version.split('.').map(|p| p.parse().unwrap());
    (parts.next().unwrap(), parts.next().unwrap())
}

/// What piper-tts's bundled espeak-ng 1.52.0.1 says, as Debian's 1.51 says
/// it. The two differ in their English data in known ways only:
/// - 1.52 adds a palatal glide "ʲ" between /iː/ or /ɪ/ and a following vowel
///   ("ðɪʲ ˈænsɚ", "sˈiːʲ ˌeɪtʃ…") and after Russian "и";
/// - 1.52 says "four" as "fˈɔːɹ", 1.51 as "fˈoːɹ";
/// - 1.52 gives a clause of one short word ("what?", "One.") secondary
///   stress, 1.51 primary (both give "θˈɜːd wˌʌn?" inside a clause).
fn as_espeak_1_51(piper: &str) -> String {
    let one_word_clauses = [("wˈeɪtwˌʌt?", "wˈeɪtwˈʌt?"), ("wˌʌn", "wˈʌn")];
    let said = piper.replace('ʲ', "").replace("fˈɔːɹ", "fˈoːɹ");
    one_word_clauses.iter().find(|(new, _)| said == *new).map_or(said, |(_, old)| old.to_string())
}

#[test]
fn ids_match_piper_for_every_fixture_sentence() {
    let fixture = fixture();
    let map = &fixture.phoneme_id_map;
    let old_espeak = espeak_version() < (1, 52);
    let mut p = phonemizer();
    let mut version_differences = Vec::new();
    let mut wrong = Vec::new();
    for case in &fixture.cases {
        let ours = p.phonemize_exact(&case.text).unwrap();
        let expected: Vec<String> = case
            .sentences
            .iter()
            .map(|s| if old_espeak { as_espeak_1_51(&s.phonemes) } else { s.phonemes.clone() })
            .collect();
        if case.sentences.iter().zip(&expected).any(|(s, e)| s.phonemes != *e) {
            version_differences.push(case.text.as_str());
        }
        if phonemes(&ours) != expected {
            wrong.push(format!("{:?}: ours {:?}, expected {expected:?}", case.text, phonemes(&ours)));
        }
        for (sentence, piper) in ours.iter().zip(&case.sentences) {
            if sentence.phonemes == piper.phonemes {
                assert_eq!(map.encode(&sentence.phonemes).ids, piper.ids, "{:?}", case.text);
            }
            // Piper's own phonemes encode to Piper's ids, whatever espeak-ng we have.
            assert_eq!(map.encode(&piper.phonemes).ids, piper.ids, "{:?}", case.text);
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    if old_espeak {
        // If this list changes, Debian's espeak-ng data changed: look again.
        assert_eq!(
            version_differences,
            [
                "The answer is 42.",
                "The meeting is on 24 November 2026.",
                "The meeting is on 2026-11-24.",
                "See https://example.com/docs for details.",
                "Привет, мир.",
                "Wait... what?",
                "One.\n\nTwo lines\nhere.",
            ]
        );
    }
}

/// Where our normalisation means to say it differently from piper-tts, and
/// the plain text it stands for.
const NORMALISED: [(&str, &str); 8] = [
    ("The meeting is on 2026-11-24.", "The meeting is on November 24th 2026."),
    ("It costs $5.", "It costs 5 dollars."),
    ("It costs $3.50.", "It costs 3 dollars 50 cents."),
    ("The ticket is €20.", "The ticket is 20 euros."),
    ("Dr. Smith is here.", "Doctor Smith is here."),
    ("See https://example.com/docs for details.", "See example.com/docs for details."),
    ("I love it 😀!", "I love it !"),
    ("Mr. and Mrs. Jones live at 221B Baker Street.", "Mr. and Mrs Jones live at 221B Baker Street."),
];

#[test]
fn normalised_text_differs_from_piper_only_where_meant() {
    let fixture = fixture();
    let mut p = phonemizer();
    let normalised: HashMap<&str, &str> = NORMALISED.into_iter().collect();
    for case in &fixture.cases {
        let ours = p.phonemize(&case.text).unwrap();
        let exact = p.phonemize_exact(&case.text).unwrap();
        match normalised.get(case.text.as_str()) {
            Some(said) => {
                assert_eq!(normalize(&case.text), *said);
                assert_ne!(ours, exact, "{:?}", case.text);
            }
            None => assert_eq!(ours, exact, "{:?}", case.text),
        }
    }
    // Written as espeak-ng 1.51 says them; one sentence each.
    let mut said = |text| as_espeak_1_51(&phonemes(&p.phonemize(text).unwrap()).join(" | "));
    assert_eq!(said("It costs $3.50."), "ɪt kˈɔsts θɹˈiː dˈɑːlɚz fˈɪfti sˈɛnts.");
    assert_eq!(said("Dr. Smith is here."), "dˈɑːktɚ smˈɪθ ɪz hˈɪɹ.");
    assert_eq!(said("See https://example.com/docs."), "sˈiː ɛɡzˈæmpəl dˈɑːt kˈɑːm slˈæʃ dˈɑːks.");
    let date = said("The meeting is on 2026-11-24.");
    assert!(date.contains("noʊvˈɛmbɚ twˈɛnti f") && date.ends_with("θ tˈuː θˈaʊzənd twˈɛnti sˈɪks."), "{date}");
}

#[test]
fn nothing_to_say_gives_no_sentences() {
    let mut p = phonemizer();
    for text in ["", "   \n\t", "?!...", "...", ", ; :", "😀🎉👍🏽", "[[ ]]"] {
        assert_eq!(p.phonemize(text).unwrap(), [], "{text:?}");
    }
}

#[test]
fn other_scripts_give_known_phonemes_only() {
    let map = fixture().phoneme_id_map;
    let mut p = phonemizer();
    for text in ["你好，世界。", "Привет, мир.", "مرحبا بالعالم", "Ünïcödé naïve café ç", "a\u{0}b\u{7}c"]
    {
        let sentences = p.phonemize(text).unwrap();
        assert!(!sentences.is_empty(), "{text:?}");
        for s in &sentences {
            let ids = map.encode(&s.phonemes);
            assert_eq!(ids.ids.len(), ids.phonemes.len());
            assert!(ids.ids.len() > 3, "{text:?} gave only ^ _ $");
        }
    }
}

#[test]
fn control_characters_are_spaces_not_espeak_commands() {
    let mut p = phonemizer();
    // U+0001 would start an espeak-ng embedded command ("V": change voice).
    assert_eq!(p.phonemize("hello \u{1}Vde world").unwrap(), p.phonemize("hello  Vde world").unwrap());
}

#[test]
fn long_text_is_spoken_piece_by_piece_in_order() {
    let sentence = "The quick brown fox, who had run 1,250 meters, jumped over the lazy dog at 10:30; then it slept. ";
    let mut text = sentence.repeat(45);
    // A sentence with no clause break longer than a piece: cut at spaces.
    text += "Then ";
    text += &"word ".repeat(150);
    text += "End.";
    assert!(text.chars().count() >= 5000);
    let pieces = split_text(&text, MAX_PIECE_CHARS);
    assert_eq!(pieces.concat(), text);
    assert!(pieces.iter().all(|p| !p.trim().is_empty() && p.chars().count() <= MAX_PIECE_CHARS));
    assert!(pieces[0].starts_with("The quick") && pieces.last().unwrap().ends_with("End."));

    let mut p = phonemizer();
    let one = phonemes(&p.phonemize(sentence).unwrap()).concat();
    let spoken: Vec<Vec<Sentence>> = pieces.iter().map(|piece| p.phonemize(piece).unwrap()).collect();
    // Each of the 45 sentences is a piece of its own and sounds as alone.
    for s in &spoken[..45] {
        assert_eq!(phonemes(s).concat(), one);
    }
    let words: usize = spoken[45..].iter().flatten().map(|s| s.phonemes.matches("wˈɜːd").count()).sum();
    assert_eq!(words, 150);
}

#[test]
fn a_missing_binary_is_a_typed_error() {
    match Phonemizer::with_binary("/nonexistent/espeak-ng", "en-us") {
        Err(PhonemizeError::MissingBinary { path }) => assert_eq!(path.to_str(), Some("/nonexistent/espeak-ng")),
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("started a binary that does not exist"),
    }
}

#[test]
fn an_unknown_voice_is_an_error_at_start() {
    let err = Phonemizer::new("xx-no-such-voice").err().expect("an error");
    assert!(matches!(err, PhonemizeError::Died { .. }) && err.to_string().contains("xx-no-such-voice"), "{err}");
}

#[test]
fn a_dead_espeak_is_restarted_and_a_vanished_one_reported() {
    let espeak =
        String::from_utf8(Command::new("sh").args(["-c", "command -v espeak-ng"]).output().unwrap().stdout).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("espeak-ng");
    std::os::unix::fs::symlink(espeak.trim(), &link).unwrap();
    let mut p = Phonemizer::with_binary(&link, "en-us").unwrap();
    let hello = p.phonemize("Hello world.").unwrap();

    let kill = |p: &Phonemizer| {
        let pid = p.process_id().expect("a running espeak-ng").to_string();
        assert!(Command::new("kill").args(["-9", &pid]).status().unwrap().success());
    };
    kill(&p);
    assert_eq!(p.phonemize("Hello world.").unwrap(), hello);

    std::fs::remove_file(&link).unwrap();
    kill(&p);
    assert!(matches!(p.phonemize("Hello world."), Err(PhonemizeError::MissingBinary { .. })));
}

#[test]
fn every_phoneme_of_the_voice_moves_the_mouth_somehow() {
    let map = fixture().phoneme_id_map;
    let unmapped: Vec<char> = map.phonemes().filter(|&c| mouth(c).is_none()).collect();
    assert!(unmapped.is_empty(), "no viseme for {unmapped:?}");
    assert!(map.phonemes().count() > 150);
}

#[test]
fn a_sentence_becomes_a_viseme_timeline() {
    let map = fixture().phoneme_id_map;
    let sentence = &phonemizer().phonemize("Bob saw you.").unwrap()[0];
    let ids = map.encode(&sentence.phonemes);
    // 100 samples per id at 1 kHz: 0.1 s each.
    let t = timeline(&ids.phonemes, &vec![100; ids.ids.len()], 1000, 2.0);
    assert_eq!(t.phonemes.iter().map(|p| p.phoneme).collect::<String>(), sentence.phonemes);
    let v: Vec<Viseme> = t.visemes.iter().map(|e| e.viseme).collect();
    assert_eq!(v.first(), Some(&Viseme::Sil));
    assert_eq!(v.last(), Some(&Viseme::Sil));
    for needed in [Viseme::PP, Viseme::SS, Viseme::U] {
        assert!(v.contains(&needed), "{needed:?} missing from {v:?}");
    }
    assert!(t.visemes.windows(2).all(|w| w[0].viseme != w[1].viseme && (w[0].end - w[1].start).abs() < 1e-9));
    assert!((t.visemes[0].start - 2.0).abs() < 1e-9);
    assert!((t.visemes.last().unwrap().end - (2.0 + 0.1 * ids.ids.len() as f64)).abs() < 1e-9);
    assert_eq!(mouth('ˈ'), Some(Mouth::Hold));
}
