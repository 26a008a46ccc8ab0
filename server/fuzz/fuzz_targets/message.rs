//! Any bytes as a data-channel message: parsed or answered with an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = tete_server::edge::messages::parse(&text, "c0123456789abcd");
});
