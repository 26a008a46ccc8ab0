//! One chat completion on the resident model from OpenAI-shaped messages:
//! what `/v1/chat/completions` runs. The messages are rendered with the
//! model's own chat template, prefilled into a fresh session and answered
//! with streamed text deltas, or with a function call when tools are
//! offered ([`super::tools`]).

use std::sync::atomic::AtomicBool;

use super::LlmError;
use super::generate::{FinishReason, GenerateConfig, Generator, Sampling, Step};
use super::gguf::{ChatMessage, Role};
use super::model::LlmModel;
use super::openai::Message;
use super::tools::{self, CALL_OPEN, Call, Tool, ToolChoice};

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

/// The functions a request offers and how the model may use them.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolSet {
    pub tools: Vec<Tool>,
    pub choice: ToolChoice,
}

impl Default for ToolSet {
    fn default() -> Self {
        Self { tools: Vec::new(), choice: ToolChoice::None }
    }
}

impl ToolSet {
    /// Reads a request's `tools` and `tool_choice`.
    pub fn parse(
        tools: Option<&[serde_json::Value]>,
        choice: Option<&serde_json::Value>,
    ) -> Result<Self, CompletionError> {
        let tools = tools::parse_tools(tools.unwrap_or_default()).map_err(|e| invalid("tools", e.to_string()))?;
        let choice = tools::parse_choice(choice, &tools).map_err(|e| invalid("tool_choice", e.to_string()))?;
        Ok(Self { tools, choice })
    }

    /// The tools the model may call (none with `tool_choice: none`, the
    /// named one when one is named).
    fn offered(&self) -> Vec<Tool> {
        match &self.choice {
            ToolChoice::None => Vec::new(),
            ToolChoice::Function(name) => self.tools.iter().filter(|t| &t.name == name).cloned().collect(),
            ToolChoice::Auto | ToolChoice::Required => self.tools.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    pub text: String,
    /// The function the model called, if it called one (then `text` is empty).
    pub call: Option<Call>,
    /// OpenAI's `finish_reason`: `stop`, `length`, `tool_calls`, or
    /// `cancelled` (extension) when the client went away.
    pub finish_reason: &'static str,
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
}

fn invalid(param: &'static str, message: impl Into<String>) -> CompletionError {
    CompletionError::Invalid { param, message: message.into() }
}

/// Template messages from OpenAI's. An assistant's tool calls are written
/// after its text as the model writes them, and a tool's result is a user
/// turn in `<tool_response>` tags ([`tools::written_call`],
/// [`tools::written_result`]).
pub fn template_messages(messages: &[Message]) -> Result<Vec<ChatMessage>, CompletionError> {
    if messages.is_empty() {
        return Err(invalid("messages", "messages must not be empty"));
    }
    messages
        .iter()
        .map(|m| {
            let content = m.content.clone().unwrap_or_default();
            let role = match m.role.as_str() {
                "system" | "developer" => Role::System,
                "user" => Role::User,
                "assistant" => Role::Assistant,
                "tool" => return Ok(ChatMessage::new(Role::User, tools::written_result(&content))),
                other => return Err(invalid("messages", format!("unknown role {other:?}"))),
            };
            if !m.tool_calls.is_empty() && role != Role::Assistant {
                return Err(invalid("messages", format!("a {} message cannot carry tool calls", m.role)));
            }
            let calls = m.tool_calls.iter().map(|c| tools::written_call(&c.function.name, &c.function.arguments));
            let text: Vec<String> = std::iter::once(content).filter(|c| !c.is_empty()).chain(calls).collect();
            Ok(ChatMessage::new(role, text.join("\n")))
        })
        .collect()
}

/// The messages with the tools' instructions in the system prompt (after
/// the first system message's text, or as one of its own).
fn with_instructions(mut messages: Vec<ChatMessage>, offered: &[Tool]) -> Vec<ChatMessage> {
    if offered.is_empty() {
        return messages;
    }
    let instructions = tools::instructions(offered);
    match messages.first_mut().filter(|m| m.role == Role::System) {
        Some(system) => system.content = format!("{}\n\n{instructions}", system.content),
        None => messages.insert(0, ChatMessage::new(Role::System, instructions)),
    }
    messages
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
    Ok(GenerateConfig { sampling, seed: options.seed.unwrap_or(0), max_tokens, ..GenerateConfig::default() })
}

/// Answers `messages` on `model`, calling `on_text` with each text delta,
/// or calls one of `tools`. Blocking: run it off the async runtime.
/// Setting `cancel` stops it within one decode step.
pub fn complete(
    model: &LlmModel,
    messages: &[Message],
    options: &CompletionOptions,
    tools: &ToolSet,
    cancel: &AtomicBool,
    mut on_text: impl FnMut(&str),
) -> Result<Completion, CompletionError> {
    let config = generate_config(options)?;
    let offered = tools.offered();
    let messages = with_instructions(template_messages(messages)?, &offered);
    let prompt = model.template().render(&messages, true)?;
    let tokens = model.tokenizer().encode(&prompt)?;
    // What opens a call, when one may be made (prefilled after the prompt).
    let marker: Vec<u32> = if offered.is_empty() {
        Vec::new()
    } else {
        let encoded = model.tokenizer().encode(CALL_OPEN)?;
        let skip = usize::from(model.tokenizer().bos.is_some() && encoded.first() == model.tokenizer().bos.as_ref());
        encoded[skip..].to_vec()
    };
    let max = model.max_seq_len();
    if tokens.len() + marker.len() + 1 > max {
        return Err(CompletionError::TooLong { prompt: tokens.len() + marker.len(), max });
    }
    let mut session = model.session()?;
    session.prefill(&tokens)?;
    let config = GenerateConfig { max_tokens: config.max_tokens.min(max - tokens.len() - marker.len()), ..config };
    let mut generator = Generator::new(&config);
    let done = |reason: FinishReason, text: String, call: Option<Call>, produced: usize| Completion {
        finish_reason: match (reason, &call) {
            (_, Some(_)) => "tool_calls",
            (FinishReason::Stop, None) => "stop",
            (FinishReason::Length, None) => "length",
            (FinishReason::Cancelled, None) => "cancelled",
        },
        prompt_tokens: tokens.len(),
        completion_tokens: produced,
        text,
        call,
    };
    let Some(&marker_start) = marker.first() else {
        let (reason, text) = generator.run(model, &mut session, cancel, on_text)?;
        return Ok(done(reason, text, None, generator.tokens().len()));
    };
    let grammar = model.call_grammar()?;
    let constrained = |e: tools::ToolError| CompletionError::Model(LlmError::Constraint(e.to_string()));
    let mut constraint = grammar.call(&offered).map_err(constrained)?;
    let mut json = String::new();
    if tools.choice == ToolChoice::Auto {
        // The model's first token decides: the marker's first token, or
        // the opening of the call's JSON object (small models often leave
        // the marker out), is a call; anything else a text answer.
        match generator.step(model, &mut session, cancel)? {
            Step::Token { id, .. } if id == marker_start => {
                session.prefill(&marker[1..])?;
            }
            Step::Token { id, text } if text.trim_start().starts_with('{') && constraint.allows(id) => {
                constraint.consume(id).map_err(constrained)?;
                json = text;
            }
            Step::Token { text, .. } => {
                if !text.is_empty() {
                    on_text(&text);
                }
                let (reason, rest) = generator.run(model, &mut session, cancel, on_text)?;
                return Ok(done(reason, text + &rest, None, generator.tokens().len()));
            }
            Step::Done(reason) => return Ok(done(reason, String::new(), None, 0)),
        }
    } else {
        session.prefill(&marker)?;
    }
    let reason = loop {
        match generator.step_constrained(model, &mut session, cancel, &mut constraint)? {
            Step::Token { text, .. } => json.push_str(&text),
            Step::Done(reason) => break reason,
        }
    };
    json.push_str(&generator.flush());
    let produced = generator.tokens().len();
    if reason != FinishReason::Stop {
        // Cut short (length or cancel): no call was made.
        return Ok(done(reason, String::new(), None, produced));
    }
    let call = tools::parse_call(&json).map_err(constrained)?;
    Ok(done(reason, String::new(), Some(call), produced))
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
        let result = template_messages(&[Message::new("tool", "42")]).unwrap();
        assert_eq!((result[0].role, result[0].content.as_str()), (Role::User, "<tool_response>\n42\n</tool_response>"));
        let mut call = Message::new("assistant", "");
        call.tool_calls.push(super::super::openai::ToolCall {
            id: "call_1".into(),
            kind: "function".into(),
            function: super::super::openai::FunctionCall { name: "now".into(), arguments: "{}".into() },
        });
        let written = template_messages(&[call.clone()]).unwrap();
        assert_eq!(written[0].content, "<tool_call>\n{\"name\":\"now\",\"arguments\":{}}\n</tool_call>");
        call.role = "user".into();
        assert!(template_messages(&[call]).is_err(), "a user message with tool calls");
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
