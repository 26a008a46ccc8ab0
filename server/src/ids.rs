//! Ids: a type prefix and random lowercase hex, e.g. `c3f9a1b2c4d5e6f7`.

use rand::RngCore;

/// A new id with a one-letter type prefix (`c` conversation, `p` persona, `r` replica…).
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}{}", random_token(7))
}

/// `bytes` random bytes as hex.
pub fn random_token(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    hex::encode(buf)
}
