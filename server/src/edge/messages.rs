//! The interaction messages of the data channel (API.md "Interactions"),
//! defined once: what a client may send, parsed and checked, and the error
//! event a malformed or unknown message is answered with.

use serde::Deserialize;
use serde_json::{Value, json};

/// A client → replica message, checked (the dialogue's own type).
pub type ClientMessage = tete_engine::dialogue::Interaction;

#[derive(Debug, Deserialize)]
struct Envelope {
    message_type: String,
    event_type: String,
    #[serde(default)]
    conversation_id: Option<String>,
    #[serde(default)]
    properties: Value,
}

/// Largest message accepted on the data channel.
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024;

fn text_property(properties: &Value, name: &str) -> Result<String, String> {
    match properties.get(name) {
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.clone()),
        Some(Value::String(_)) => Err(format!("properties.{name} is empty")),
        Some(_) => Err(format!("properties.{name} must be a string")),
        None => Err(format!("properties.{name} is missing")),
    }
}

/// Parses one data-channel message for `conversation_id`.
pub fn parse(text: &str, conversation_id: &str) -> Result<ClientMessage, String> {
    if text.len() > MAX_MESSAGE_BYTES {
        return Err(format!("the message is over {MAX_MESSAGE_BYTES} bytes"));
    }
    let envelope: Envelope = serde_json::from_str(text).map_err(|e| format!("not a JSON interaction message: {e}"))?;
    if envelope.message_type != "conversation" {
        return Err(format!("message_type {:?}: only \"conversation\" is accepted", envelope.message_type));
    }
    if let Some(id) = &envelope.conversation_id
        && id != conversation_id
    {
        return Err(format!("conversation_id {id:?} is not this conversation"));
    }
    let p = &envelope.properties;
    Ok(match envelope.event_type.as_str() {
        "conversation.echo" => match (p.get("text"), p.get("audio")) {
            (Some(_), None) => ClientMessage::EchoText(text_property(p, "text")?),
            (None, Some(_)) => {
                use base64::Engine as _;
                let audio = text_property(p, "audio")?;
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(audio.trim())
                    .map_err(|e| format!("properties.audio is not base64: {e}"))?;
                if bytes.len() % 2 != 0 {
                    return Err("properties.audio must be 16-bit samples (an even number of bytes)".into());
                }
                let sample_rate = p
                    .get("sample_rate")
                    .and_then(Value::as_u64)
                    .filter(|r| (8_000..=48_000).contains(r))
                    .ok_or("properties.sample_rate must be 8000–48000 with audio")?;
                let pcm = bytes.chunks_exact(2).map(|b| i16::from_le_bytes([b[0], b[1]])).collect();
                ClientMessage::EchoAudio { pcm, sample_rate: sample_rate as u32 }
            }
            _ => return Err("conversation.echo needs exactly one of properties.text or properties.audio".into()),
        },
        "conversation.respond" => ClientMessage::Respond(text_property(p, "text")?),
        "conversation.interrupt" => ClientMessage::Interrupt,
        "conversation.overwrite_llm_context" => ClientMessage::OverwriteContext(text_property(p, "context")?),
        "conversation.append_llm_context" => ClientMessage::AppendContext(text_property(p, "context")?),
        "conversation.sensitivity" if p.is_object() => ClientMessage::Sensitivity(p.clone()),
        "conversation.sensitivity" => return Err("conversation.sensitivity needs properties".into()),
        other => return Err(format!("unknown event_type {other:?}")),
    })
}

/// The event a refused message is answered with.
pub fn error_event(conversation_id: &str, message: &str) -> String {
    json!({
        "message_type": "conversation",
        "event_type": "conversation.error",
        "conversation_id": conversation_id,
        "properties": {"message": message},
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_parse_and_bad_ones_say_why() {
        let ok = |t: &str| parse(t, "c1").unwrap();
        assert_eq!(
            ok(
                r#"{"message_type":"conversation","event_type":"conversation.respond","conversation_id":"c1","properties":{"text":"hi"}}"#
            ),
            ClientMessage::Respond("hi".into())
        );
        assert_eq!(
            ok(r#"{"message_type":"conversation","event_type":"conversation.interrupt"}"#),
            ClientMessage::Interrupt
        );
        let audio = ok(
            r#"{"message_type":"conversation","event_type":"conversation.echo","properties":{"audio":"AQACAA==","sample_rate":16000}}"#,
        );
        assert_eq!(audio, ClientMessage::EchoAudio { pcm: vec![1, 2], sample_rate: 16_000 });
        for (bad, why) in [
            ("not json", "not a JSON"),
            (r#"{"message_type":"system","event_type":"conversation.interrupt"}"#, "message_type"),
            (r#"{"message_type":"conversation","event_type":"conversation.dance"}"#, "unknown event_type"),
            (r#"{"message_type":"conversation","event_type":"conversation.respond","properties":{}}"#, "missing"),
            (
                r#"{"message_type":"conversation","event_type":"conversation.respond","properties":{"text":7}}"#,
                "string",
            ),
            (
                r#"{"message_type":"conversation","event_type":"conversation.respond","conversation_id":"c2","properties":{"text":"x"}}"#,
                "not this conversation",
            ),
            (
                r#"{"message_type":"conversation","event_type":"conversation.echo","properties":{"audio":"AQAC","sample_rate":16000}}"#,
                "even",
            ),
            (
                r#"{"message_type":"conversation","event_type":"conversation.echo","properties":{"audio":"AQACAA==","sample_rate":3}}"#,
                "sample_rate",
            ),
            (
                r#"{"message_type":"conversation","event_type":"conversation.echo","properties":{"text":"a","audio":"AQAC"}}"#,
                "exactly one",
            ),
        ] {
            let e = parse(bad, "c1").unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
        let event: Value = serde_json::from_str(&error_event("c1", "nope")).unwrap();
        assert_eq!(event["event_type"], "conversation.error");
        assert_eq!(event["properties"]["message"], "nope");
    }
}
