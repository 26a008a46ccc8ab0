//! One chat completion on the resident model from OpenAI-shaped messages:
//! what `/v1/chat/completions` runs. The messages are rendered with the
//! model's own chat template, prefilled into a fresh session and answered
//! with streamed text deltas.

use std::sync::atomic::AtomicBool;

use super::LlmError;
use super::generate::{FinishReason, GenerateConfig, Sampling, generate};
use super::gguf::{ChatMessage, Role};
use super::model::LlmModel;
use super::openai::Message;

/// Largest `max_tokens` a request may ask of the resident model.
pub const MAX_COMPLETION_TOKENS: usize = 2048;
/// Answer length when the request does not say.
pub const DEFAULT_COMPLETION_TOKENS: usize = 512;

/// Request options the resident model honours.
#[derive(Debug, Clone, Copy, Default)]
pub struct CompletionOptions {
    pub max_tokens: Option<u32>,
    /// 0 (or absent with `top_p` absent) is greedy.
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub seed: Option<u64>,
}

/// A request the resident model cannot answer, with the field at fault.
#[derive(Debug, thiserror::Error)]
pub enum CompletionError {
    #[error("{message}")]
    Invalid { param: &'static str, message: String },
    #[error("the prompt has {prompt} tokens and the model's context is {max}")]
    TooLong { prompt: usize, max: usize },
    #[error(transparent)]
    Model(#[from] LlmError),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    pub text: String,
    /// OpenAI's `finish_reason`: `stop`, `length`, or `cancelled` (extension)
    /// when the client went away.
    pub finish_reason: &'static str,
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
}

fn invalid(param: &'static str, message: impl Into<String>) -> CompletionError {
    CompletionError::Invalid { param, message: message.into() }
}

/// Template messages from OpenAI's; tool calls and results are refused
/// (the resident model does not call tools).
pub fn template_messages(messages: &[Message]) -> Result<Vec<ChatMessage>, CompletionError> {
    if messages.is_empty() {
        return Err(invalid("messages", "messages must not be empty"));
    }
    messages
        .iter()
        .map(|m| {
            let role = match m.role.as_str() {
                "system" | "developer" => Role::System,
                "user" => Role::User,
                "assistant" => Role::Assistant,
                "tool" => return Err(invalid("messages", "the resident model does not take tool results")),
                other => return Err(invalid("messages", format!("unknown role {other:?}"))),
            };
            if !m.tool_calls.is_empty() {
                return Err(invalid("messages", "the resident model does not take tool calls"));
            }
            Ok(ChatMessage::new(role, m.content.clone().unwrap_or_default()))
        })
        .collect()
}

fn generate_config(options: &CompletionOptions) -> Result<GenerateConfig, CompletionError> {
    let max_tokens = options.max_tokens.map_or(DEFAULT_COMPLETION_TOKENS, |n| n as usize);
    if max_tokens == 0 || max_tokens > MAX_COMPLETION_TOKENS {
        return Err(invalid("max_tokens", format!("max_tokens must be 1–{MAX_COMPLETION_TOKENS}")));
    }
    let temperature = options.temperature.unwrap_or(0.0);
    if !(0.0..=2.0).contains(&temperature) {
        return Err(invalid("temperature", "temperature must be 0–2"));
    }
    let top_p = options.top_p.unwrap_or(1.0);
    if !(top_p > 0.0 && top_p <= 1.0) {
        return Err(invalid("top_p", "top_p must be in (0, 1]"));
    }
    let sampling = if temperature == 0.0 {
        Sampling::Greedy
    } else {
        Sampling::TopP { temperature: f64::from(temperature), top_p: f64::from(top_p) }
    };
    Ok(GenerateConfig { sampling, seed: options.seed.unwrap_or(0), max_tokens })
}

/// Answers `messages` on `model`, calling `on_text` with each text delta.
/// Blocking: run it off the async runtime. Setting `cancel` stops it within
/// one decode step.
pub fn complete(
    model: &LlmModel,
    messages: &[Message],
    options: &CompletionOptions,
    cancel: &AtomicBool,
    on_text: impl FnMut(&str),
) -> Result<Completion, CompletionError> {
    let config = generate_config(options)?;
    let prompt = model.template().render(&template_messages(messages)?, true)?;
    let tokens = model.tokenizer().encode(&prompt)?;
    let max = model.max_seq_len();
    if tokens.len() + 1 > max {
        return Err(CompletionError::TooLong { prompt: tokens.len(), max });
    }
    let mut session = model.session()?;
    session.prefill(&tokens)?;
    let config = GenerateConfig { max_tokens: config.max_tokens.min(max - tokens.len()), ..config };
    let finish = generate(model, &mut session, &config, cancel, on_text)?;
    Ok(Completion {
        finish_reason: match finish.reason {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::Cancelled => "cancelled",
        },
        prompt_tokens: tokens.len(),
        completion_tokens: finish.tokens.len(),
        text: finish.text,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_and_options_are_checked() {
        let ok = template_messages(&[Message::new("developer", "be brief"), Message::new("user", "hi")]).unwrap();
        assert_eq!(ok[0].role, Role::System);
        assert!(matches!(template_messages(&[]), Err(CompletionError::Invalid { param: "messages", .. })));
        assert!(template_messages(&[Message::new("wizard", "x")]).is_err());
        assert!(template_messages(&[Message::new("tool", "42")]).is_err());
        let greedy = generate_config(&CompletionOptions::default()).unwrap();
        assert_eq!(greedy.sampling, Sampling::Greedy);
        assert_eq!(greedy.max_tokens, DEFAULT_COMPLETION_TOKENS);
        let bad = [
            CompletionOptions { max_tokens: Some(0), ..Default::default() },
            CompletionOptions { max_tokens: Some(100_000), ..Default::default() },
            CompletionOptions { temperature: Some(3.0), ..Default::default() },
            CompletionOptions { top_p: Some(0.0), ..Default::default() },
        ];
        for options in bad {
            assert!(generate_config(&options).is_err(), "{options:?}");
        }
    }
}
