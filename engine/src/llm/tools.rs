//! Function calling on the resident model: OpenAI function tools are read
//! and checked, described to the model in its system prompt, and a call is
//! generated under a grammar so that it is always a valid call.
//!
//! The model is told to answer `<tool_call>{"name": …, "arguments": …}`
//! when it wants a tool (the format Qwen2.5 is trained on). With
//! `tool_choice: "auto"` the model's own first token decides: the first
//! token of that marker means a call, anything else a text answer. With
//! `"required"` or a named function the marker is given and the call
//! follows at once. A first token that opens a JSON object the call's
//! grammar accepts also counts as a call (small models, Qwen2.5-0.5B among
//! them, often write the call without the marker). Either way, once a call starts every token is drawn
//! from those the JSON schema of the call allows (llguidance computes the
//! mask over the model's vocabulary), and the call ends when its JSON
//! object closes; its arguments then parse and match the tool's
//! `parameters` as far as the schema constrains them (with no arguments
//! the schema does not name, unless it allows them).
//!
//! In a conversation's history, an assistant's calls are written back the
//! same way and a tool's result is a user turn in `<tool_response>` tags.

use std::sync::Arc;

use llguidance::api::TopLevelGrammar;
use llguidance::toktrie::{ApproximateTokEnv, SimpleVob, TokEnv, TokRxInfo, TokTrie};
use llguidance::{Matcher, ParserFactory};
use serde_json::{Value, json};

use super::gguf::LlmTokenizer;

/// What opens a call in the model's answer.
pub const CALL_OPEN: &str = "<tool_call>";
/// Most tools a request may carry.
pub const MAX_TOOLS: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error("{0}")]
    Invalid(String),
    #[error("constraining the call: {0}")]
    Grammar(String),
}

/// One function the model may call.
#[derive(Debug, Clone, PartialEq)]
pub struct Tool {
    pub name: String,
    pub description: Option<String>,
    /// JSON schema of the arguments (an object schema).
    pub parameters: Value,
}

/// OpenAI's `tool_choice`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolChoice {
    None,
    Auto,
    Required,
    Function(String),
}

/// A call the model made: the function and its arguments as JSON text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub name: String,
    pub arguments: String,
}

fn invalid(message: impl Into<String>) -> ToolError {
    ToolError::Invalid(message.into())
}

/// Reads OpenAI function tools: `{"type": "function", "function": {"name",
/// "description"?, "parameters"?}}`, names of 1–64 letters, digits, `_` or
/// `-`, each once.
pub fn parse_tools(tools: &[Value]) -> Result<Vec<Tool>, ToolError> {
    if tools.len() > MAX_TOOLS {
        return Err(invalid(format!("{} tools; at most {MAX_TOOLS}", tools.len())));
    }
    let mut parsed: Vec<Tool> = Vec::with_capacity(tools.len());
    for (i, tool) in tools.iter().enumerate() {
        if tool.get("type").and_then(Value::as_str) != Some("function") {
            return Err(invalid(format!("tools[{i}].type must be \"function\"")));
        }
        let function = tool
            .get("function")
            .filter(|f| f.is_object())
            .ok_or_else(|| invalid(format!("tools[{i}].function must be an object with a name")))?;
        let name = function.get("name").and_then(Value::as_str).unwrap_or_default();
        let valid =
            (1..=64).contains(&name.len()) && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !valid {
            return Err(invalid(format!("tools[{i}].function.name {name:?} must be 1–64 of a-z, A-Z, 0-9, _ and -")));
        }
        if parsed.iter().any(|t| t.name == name) {
            return Err(invalid(format!("tools[{i}]: the function {name:?} is listed twice")));
        }
        let description = match function.get("description") {
            None | Some(Value::Null) => None,
            Some(Value::String(d)) => Some(d.clone()),
            Some(_) => return Err(invalid(format!("tools[{i}].function.description must be a string"))),
        };
        let parameters = match function.get("parameters") {
            None | Some(Value::Null) => json!({"type": "object", "properties": {}}),
            Some(p) if p.is_object() && p.get("type").is_none_or(|t| t == "object") => p.clone(),
            Some(_) => return Err(invalid(format!("tools[{i}].function.parameters must be an object schema"))),
        };
        parsed.push(Tool { name: name.to_string(), description, parameters });
    }
    Ok(parsed)
}

/// Reads `tool_choice` against the tools given (absent: `auto` with
/// tools, `none` without).
pub fn parse_choice(choice: Option<&Value>, tools: &[Tool]) -> Result<ToolChoice, ToolError> {
    let choice = match choice {
        None | Some(Value::Null) => return Ok(if tools.is_empty() { ToolChoice::None } else { ToolChoice::Auto }),
        Some(Value::String(s)) => match s.as_str() {
            "none" => ToolChoice::None,
            "auto" => ToolChoice::Auto,
            "required" => ToolChoice::Required,
            other => return Err(invalid(format!("tool_choice {other:?}: none, auto, required or a function"))),
        },
        Some(object) => {
            let name = object
                .get("function")
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
                .filter(|_| object.get("type").and_then(Value::as_str) == Some("function"))
                .ok_or_else(|| {
                    invalid("tool_choice must be a string or {\"type\": \"function\", \"function\": {\"name\"}}")
                })?;
            ToolChoice::Function(name.to_string())
        }
    };
    match &choice {
        ToolChoice::Required if tools.is_empty() => Err(invalid("tool_choice is required but no tools are given")),
        ToolChoice::Function(name) if !tools.iter().any(|t| &t.name == name) => {
            Err(invalid(format!("tool_choice names {name:?}, which is not among the tools")))
        }
        _ => Ok(choice),
    }
}

/// The system prompt's part that offers the tools.
pub fn instructions(tools: &[Tool]) -> String {
    let mut text = String::from("You can call functions. Their signatures, one JSON object per line:\n<tools>\n");
    for tool in tools {
        let mut function = json!({"name": tool.name, "parameters": tool.parameters});
        if let Some(d) = &tool.description {
            function["description"] = json!(d);
        }
        text.push_str(&json!({"type": "function", "function": function}).to_string());
        text.push('\n');
    }
    text.push_str(
        "</tools>\nTo call a function, answer with only <tool_call> followed by a JSON object \
         {\"name\": <function name>, \"arguments\": <arguments object>}. Otherwise answer normally.",
    );
    text
}

/// The JSON schema a call must match: one of `tools` by name, with its
/// arguments. Arguments the tool's schema does not name are not generated
/// unless it allows them (`additionalProperties`), as in OpenAI's strict mode.
pub fn call_schema(tools: &[Tool]) -> Value {
    let one = |tool: &Tool| {
        let mut arguments = tool.parameters.clone();
        if let Some(object) = arguments.as_object_mut() {
            object.entry("additionalProperties").or_insert(Value::Bool(false));
        }
        json!({
            "type": "object",
            "properties": {"name": {"const": tool.name}, "arguments": arguments},
            "required": ["name", "arguments"],
            "additionalProperties": false,
        })
    };
    match tools {
        [tool] => one(tool),
        _ => json!({"anyOf": tools.iter().map(one).collect::<Vec<_>>()}),
    }
}

/// An assistant's call as it is written into the history.
pub fn written_call(name: &str, arguments: &str) -> String {
    let arguments: Value = serde_json::from_str(arguments).unwrap_or_else(|_| Value::String(arguments.into()));
    format!("{CALL_OPEN}\n{}\n</tool_call>", json!({"name": name, "arguments": arguments}))
}

/// A tool's result as it is written into the history (a user turn).
pub fn written_result(content: &str) -> String {
    format!("<tool_response>\n{content}\n</tool_response>")
}

/// Reads the finished call's JSON text.
pub fn parse_call(text: &str) -> Result<Call, ToolError> {
    let value: Value =
        serde_json::from_str(text.trim()).map_err(|e| ToolError::Grammar(format!("the call is not JSON: {e}")))?;
    let name = value.get("name").and_then(Value::as_str).ok_or_else(|| ToolError::Grammar("no name".into()))?;
    let arguments = value.get("arguments").cloned().unwrap_or_else(|| json!({}));
    Ok(Call { name: name.to_string(), arguments: arguments.to_string() })
}

/// Constrained decoding over one model's vocabulary (built once per model:
/// the token trie takes a moment).
pub struct CallGrammar {
    factory: ParserFactory,
    vocab: usize,
}

impl std::fmt::Debug for CallGrammar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallGrammar").field("vocab", &self.vocab).finish_non_exhaustive()
    }
}

impl CallGrammar {
    pub fn new(tokenizer: &LlmTokenizer) -> Result<Self, ToolError> {
        let vocab = tokenizer.vocab_size();
        // Control tokens have no text: they are named in the trie's special
        // space (a leading 0xFF byte), where no grammar text can reach them.
        let words: Vec<Vec<u8>> = (0..vocab as u32)
            .map(|id| match tokenizer.token_bytes(id) {
                [] => [&[0xff][..], format!("<control {id}>").as_bytes()].concat(),
                bytes => bytes.to_vec(),
            })
            .collect();
        let info = TokRxInfo::new(vocab as u32, tokenizer.eos);
        let trie = TokTrie::from(&info, &words);
        let env: TokEnv = Arc::new(ApproximateTokEnv::new(trie));
        let mut factory = ParserFactory::new_simple(&env).map_err(|e| ToolError::Grammar(e.to_string()))?;
        factory.quiet();
        Ok(Self { factory, vocab })
    }

    /// A fresh constraint for one call to one of `tools`.
    pub fn call(&self, tools: &[Tool]) -> Result<CallConstraint, ToolError> {
        // Compact JSON (one space after `,` and `:`, no other whitespace):
        // no tokens spent on layout, and the form models write calls in.
        let mut schema = call_schema(tools);
        schema["x-guidance"] = json!({"whitespace_flexible": false, "item_separator": ", ", "key_separator": ": "});
        let grammar = TopLevelGrammar::from_json_schema(schema);
        let parser = self.factory.create_parser(grammar).map_err(|e| ToolError::Grammar(e.to_string()))?;
        Ok(CallConstraint { matcher: Matcher::new(Ok(parser)) })
    }
}

/// The state of one call being generated.
pub struct CallConstraint {
    matcher: Matcher,
}

impl CallConstraint {
    /// Whether the call is complete (its JSON object closed).
    pub fn is_complete(&mut self) -> bool {
        self.matcher.is_accepting().unwrap_or(false)
    }

    /// The tokens allowed next.
    pub fn mask(&mut self) -> Result<SimpleVob, ToolError> {
        let mask = self.matcher.compute_mask().map_err(|e| ToolError::Grammar(e.to_string()))?;
        if let Some(error) = self.matcher.get_error() {
            return Err(ToolError::Grammar(error));
        }
        Ok(mask)
    }

    /// Whether `token` may come next.
    pub fn allows(&mut self, token: u32) -> bool {
        self.mask().is_ok_and(|mask| (token as usize) < mask.len() && mask.is_allowed(token))
    }

    pub fn consume(&mut self, token: u32) -> Result<(), ToolError> {
        self.matcher.consume_token(token).map_err(|e| ToolError::Grammar(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weather() -> Value {
        json!({"type": "function", "function": {
            "name": "get_weather",
            "description": "Current weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        }})
    }

    #[test]
    fn tools_and_choices_are_read_and_checked() {
        let tools = parse_tools(&[weather(), json!({"type": "function", "function": {"name": "now"}})]).unwrap();
        assert_eq!(tools[1].parameters, json!({"type": "object", "properties": {}}));
        assert_eq!(parse_choice(None, &tools).unwrap(), ToolChoice::Auto);
        assert_eq!(parse_choice(None, &[]).unwrap(), ToolChoice::None);
        assert_eq!(parse_choice(Some(&json!("required")), &tools).unwrap(), ToolChoice::Required);
        let named = json!({"type": "function", "function": {"name": "now"}});
        assert_eq!(parse_choice(Some(&named), &tools).unwrap(), ToolChoice::Function("now".into()));
        let bad_tools = [
            json!({"type": "retrieval"}),
            json!({"type": "function", "function": {"name": "has space"}}),
            json!({"type": "function", "function": {"name": "f", "parameters": {"type": "string"}}}),
            json!({"type": "function", "function": {"name": "f", "description": 3}}),
        ];
        for bad in bad_tools {
            assert!(parse_tools(std::slice::from_ref(&bad)).is_err(), "{bad}");
        }
        assert!(parse_tools(&[weather(), weather()]).is_err(), "a name listed twice");
        let missing = json!({"type": "function", "function": {"name": "nope"}});
        assert!(parse_choice(Some(&missing), &tools).is_err());
        assert!(parse_choice(Some(&json!("sometimes")), &tools).is_err());
        assert!(parse_choice(Some(&json!("required")), &[]).is_err());
    }

    #[test]
    fn calls_are_written_and_read_back() {
        let written = written_call("get_weather", r#"{"city": "Oslo"}"#);
        assert_eq!(written, "<tool_call>\n{\"name\":\"get_weather\",\"arguments\":{\"city\":\"Oslo\"}}\n</tool_call>");
        let call = parse_call(r#" {"name": "get_weather", "arguments": {"city": "Oslo"}} "#).unwrap();
        assert_eq!(call, Call { name: "get_weather".into(), arguments: r#"{"city":"Oslo"}"#.into() });
        assert!(parse_call("{\"arguments\": {}}").is_err());
        let tools = parse_tools(&[weather()]).unwrap();
        assert!(instructions(&tools).contains("\"name\":\"get_weather\""));
        let schema = call_schema(&tools);
        assert_eq!(schema["properties"]["name"], json!({"const": "get_weather"}));
        assert_eq!(schema["properties"]["arguments"]["additionalProperties"], json!(false));
    }
}
