//! Any bytes as a WHIP offer: answered or refused with an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The WHIP handler refuses what is not UTF-8 before the peer sees it.
    if let Ok(offer) = std::str::from_utf8(data) {
        let local = std::net::SocketAddr::from(([127, 0, 0, 1], 40_000));
        let _ = tete_server::edge::peer::Peer::accept(offer, local, std::time::Instant::now());
    }
});
