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

/// Whether an address is private, loopback, link-local, shared (CGNAT),
/// benchmarking, multicast or otherwise not a public host: callbacks to
/// these are refused when the host forbids private callbacks.
pub fn is_private(ip: std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
                || (a == 198 && (b == 18 || b == 19))
                || a >= 240
        }
        std::net::IpAddr::V6(v6) => {
            let s = v6.segments();
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
                || (s[0] & 0xffc0) == 0xfec0
                || s[0] == 0x2002
                || (s[0] == 0x64 && s[1] == 0xff9b)
                || v6.to_ipv4_mapped().or_else(|| v6.to_ipv4()).is_some_and(|v4| is_private(std::net::IpAddr::V4(v4)))
        }
    }
}

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
    fn private_ranges_are_recognised() {
        for ip in [
            "10.0.0.1",
            "192.168.1.1",
            "172.16.0.1",
            "127.0.0.1",
            "169.254.1.1",
            "100.64.0.1",
            "0.1.2.3",
            "198.18.0.1",
            "224.0.0.1",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:10.0.0.1",
            "64:ff9b::a00:1",
            "2002::1",
        ] {
            assert!(is_private(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["8.8.8.8", "2001:4860::8888", "100.128.0.1"] {
            assert!(!is_private(ip.parse().unwrap()), "{ip}");
        }
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
