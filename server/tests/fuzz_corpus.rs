//! The fuzz corpus (`server/fuzz/corpus/`, grown by `cargo fuzz` on the
//! offer and data-channel targets) replayed on stable: every input is
//! answered or refused with an error, none panics; the real offers in it
//! (aiortc's) are still answered, and the offer on which the fuzzer found
//! str0m asserting is refused.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Instant;

use tete_server::edge::messages;
use tete_server::edge::peer::Peer;

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus").join(target);
    let mut inputs: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.unwrap().path();
            let bytes = std::fs::read(&path).unwrap();
            (path, bytes)
        })
        .collect();
    inputs.sort();
    inputs
}

#[test]
fn every_offer_in_the_corpus_is_answered_or_refused() {
    let local = SocketAddr::from(([127, 0, 0, 1], 40_000));
    let inputs = corpus("offer");
    assert!(inputs.len() >= 6, "the corpus is missing: {} inputs", inputs.len());
    let (mut answered, mut refused) = (0, 0);
    for (path, bytes) in &inputs {
        let Ok(offer) = std::str::from_utf8(bytes) else { continue };
        match Peer::accept(offer, local, Instant::now()) {
            Ok((_, answer)) => {
                assert!(answer.starts_with("v=0"), "{}: {answer}", path.display());
                answered += 1;
            }
            Err(e) => {
                assert!(!e.to_string().is_empty(), "{}", path.display());
                refused += 1;
            }
        }
    }
    println!("{} inputs: {answered} answered, {refused} refused", inputs.len());
    let real = std::fs::read_to_string(
        inputs.iter().find(|(p, _)| p.ends_with("aiortc-audio-video-data.sdp")).unwrap().0.clone(),
    )
    .unwrap();
    assert!(Peer::accept(&real, local, Instant::now()).is_ok(), "aiortc's offer is refused");
    // The input the fuzzer found str0m asserting on ("Pt locked multiple
    // times"): refused, not a panic.
    let locked = std::fs::read_to_string(
        inputs.iter().find(|(p, _)| p.ends_with("str0m-pt-locked-twice.sdp")).unwrap().0.clone(),
    )
    .unwrap();
    assert!(matches!(Peer::accept(&locked, local, Instant::now()), Err(tete_server::edge::peer::PeerError::Offer(_))));
}

#[test]
fn every_message_in_the_corpus_is_parsed_or_refused() {
    let inputs = corpus("message");
    assert!(inputs.len() >= 10, "the corpus is missing: {} inputs", inputs.len());
    let mut parsed = 0;
    for (path, bytes) in &inputs {
        match messages::parse(&String::from_utf8_lossy(bytes), "c0123456789abcd") {
            Ok(_) => parsed += 1,
            Err(why) => {
                assert!(!why.is_empty(), "{}", path.display());
                println!("{}: {why}", path.file_name().unwrap().to_string_lossy());
            }
        }
    }
    println!("{} inputs: {parsed} parsed", inputs.len());
    assert!(parsed >= 7, "the valid messages of the corpus stopped parsing ({parsed})");
}
