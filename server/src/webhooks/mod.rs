//! Webhooks: the envelope of shared/API.md, HMAC-SHA256 signatures, and
//! the deliverer that drains the persisted outbox with at-least-once
//! delivery, exponential backoff with jitter, and a bounded retry horizon.

mod deliver;

pub use deliver::{Deliverer, RetryPolicy};

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Header carrying `sha256=<hex HMAC-SHA256 of the body with the host's webhook secret>`.
pub const SIGNATURE_HEADER: &str = "x-tete-signature";
/// Header carrying the delivery id; the same on every retry of one event.
pub const DELIVERY_HEADER: &str = "x-tete-delivery-id";
/// Header carrying the event type.
pub const EVENT_HEADER: &str = "x-tete-event-type";

/// `sha256=<hex>` signature of `body`.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Checks a signature in constant time.
pub fn verify(secret: &[u8], body: &[u8], signature: &str) -> bool {
    let Some(hex_sig) = signature.strip_prefix("sha256=") else { return false };
    let Ok(sig) = hex::decode(hex_sig) else { return false };
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(body);
    mac.verify_slice(&sig).is_ok()
}

/// The message type of an event type: the part before the first dot
/// (`system.shutdown` → `system`).
pub fn message_type(event_type: &str) -> &str {
    event_type.split('.').next().unwrap_or(event_type)
}

/// The webhook envelope.
pub fn envelope(
    subject_key: &str,
    subject_id: &str,
    event_type: &str,
    url: Option<&str>,
    properties: serde_json::Value,
    timestamp: &str,
) -> serde_json::Value {
    let mut env = serde_json::json!({
        "properties": properties,
        "webhook_url": url,
        "event_type": event_type,
        "message_type": message_type(event_type),
        "timestamp": timestamp,
    });
    env[subject_key] = serde_json::Value::String(subject_id.to_string());
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_and_reject_tampering() {
        let sig = sign(b"secret", b"{\"a\":1}");
        assert!(sig.starts_with("sha256=") && sig.len() == 7 + 64);
        assert!(verify(b"secret", b"{\"a\":1}", &sig));
        assert!(!verify(b"secret", b"{\"a\":2}", &sig));
        assert!(!verify(b"other", b"{\"a\":1}", &sig));
        assert!(!verify(b"secret", b"{\"a\":1}", "sha256=zz"));
    }

    #[test]
    fn envelope_has_the_documented_shape() {
        let e =
            envelope("conversation_id", "c1", "system.shutdown", Some("http://x"), serde_json::json!({"r": 1}), "t");
        assert_eq!(e["conversation_id"], "c1");
        assert_eq!(e["message_type"], "system");
        assert_eq!(e["event_type"], "system.shutdown");
        assert_eq!(e["webhook_url"], "http://x");
        assert_eq!(e["properties"]["r"], 1);
    }
}
