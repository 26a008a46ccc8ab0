//! Function calling on the resident models (`tete models fetch` leaves them
//! in the default home): calls generated under the grammar of their tools'
//! schemas are valid however small the model, `tool_choice` is honoured,
//! and Qwen2.5 decides by itself when a question needs a tool.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use candle_core::Device;
use serde_json::{Value, json};
use tete_engine::llm::LlmModel;
use tete_engine::llm::chat::{Completion, CompletionOptions, ToolSet, complete};
use tete_engine::llm::openai::Message;
use tete_engine::models::{Manifest, Store, default_home};

fn model_path(id: &str, file: &str) -> PathBuf {
    let manifest = Manifest::embedded().unwrap();
    Store::new(default_home()).model_dir(&manifest.model(id).unwrap().id).join(file)
}

fn tools() -> Vec<Value> {
    vec![
        json!({"type": "function", "function": {
            "name": "get_weather",
            "description": "The current weather in a city",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string"},
                    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                },
                "required": ["city", "unit"],
            },
        }}),
        json!({"type": "function", "function": {
            "name": "set_timer",
            "description": "Starts a timer",
            "parameters": {
                "type": "object",
                "properties": {
                    "minutes": {"type": "integer", "minimum": 1, "maximum": 120},
                    "label": {"type": "string", "maxLength": 40},
                },
                "required": ["minutes"],
            },
        }}),
    ]
}

fn ask(model: &LlmModel, question: &str, choice: Value, max_tokens: u32) -> Completion {
    let messages = [Message::new("system", "You are a helpful assistant."), Message::new("user", question)];
    let tools = ToolSet::parse(Some(&tools()), Some(&choice)).unwrap();
    let options = CompletionOptions { max_tokens: Some(max_tokens), ..Default::default() };
    complete(model, &messages, &options, &tools, &AtomicBool::new(false), |_| {}).unwrap()
}

/// The call's arguments, checked against its tool's schema by hand.
fn checked_arguments(completion: &Completion) -> (String, Value) {
    assert_eq!(completion.finish_reason, "tool_calls", "{completion:?}");
    assert!(completion.text.is_empty(), "{completion:?}");
    let call = completion.call.as_ref().expect("a call");
    let args: Value = serde_json::from_str(&call.arguments).unwrap_or_else(|e| panic!("{e}: {}", call.arguments));
    let object = args.as_object().expect("arguments are an object");
    match call.name.as_str() {
        "get_weather" => {
            assert!(object["city"].is_string(), "{args}");
            assert!(["celsius", "fahrenheit"].contains(&object["unit"].as_str().unwrap()), "{args}");
            assert!(object.keys().all(|k| k == "city" || k == "unit"), "{args}");
        }
        "set_timer" => {
            let minutes = object["minutes"].as_i64().expect("whole minutes");
            assert!((1..=120).contains(&minutes), "{args}");
            let label = object.get("label").map(|l| l.as_str().expect("a string label"));
            assert!(label.is_none_or(|l| l.chars().count() <= 40), "{args}");
            assert!(object.keys().all(|k| k == "minutes" || k == "label"), "{args}");
        }
        other => panic!("a call to {other}, which is not a tool"),
    }
    (call.name.clone(), args)
}

#[test]
fn smollm_calls_are_valid_for_their_schemas() {
    let model = LlmModel::load(&model_path("smollm2-135m-instruct", "SmolLM2-135M-Instruct.Q4_1.gguf"), &Device::Cpu)
        .expect("run `tete models fetch` first");
    for question in
        ["What is the weather in Oslo?", "Set a timer for 5 minutes.", "Remind me to call mum in ten minutes."]
    {
        let completion = ask(&model, question, json!("required"), 64);
        let (name, args) = checked_arguments(&completion);
        println!("{question:?} -> {name}({args}) in {} tokens", completion.completion_tokens);
    }
    // A named function is the one called. Made to set a timer for a
    // weather question, the model writes a made-up label; without the
    // schema's `maxLength` it ran on past 200 tokens.
    let named = json!({"type": "function", "function": {"name": "set_timer"}});
    let completion = ask(&model, "What is the weather in Oslo?", named, 64);
    assert_eq!(checked_arguments(&completion).0, "set_timer");
    // `none`: a text answer.
    let completion = ask(&model, "What is the weather in Oslo?", json!("none"), 16);
    assert!(completion.call.is_none() && !completion.text.is_empty(), "{completion:?}");
    // Cut short by max_tokens: no call, and `length` says why.
    let completion = ask(&model, "What is the weather in Oslo?", json!("required"), 3);
    assert_eq!((completion.finish_reason, completion.call.is_none()), ("length", true), "{completion:?}");
    // Cancelled before the first step: no call.
    let tools = ToolSet::parse(Some(&tools()), Some(&json!("required"))).unwrap();
    let messages = [Message::new("user", "Weather in Oslo?")];
    let cancelled =
        complete(&model, &messages, &CompletionOptions::default(), &tools, &AtomicBool::new(true), |_| {}).unwrap();
    assert_eq!((cancelled.finish_reason, cancelled.call), ("cancelled", None));
}

/// Qwen2.5 is trained on `<tool_call>`: left to choose (`auto`), it calls
/// the weather tool for a weather question, with the city asked about, and
/// answers a question no tool serves in text.
#[test]
fn qwen_decides_when_a_question_needs_a_tool() {
    let path = model_path("qwen2.5-coder-0.5b-instruct", "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf");
    let model = LlmModel::load(&path, &Device::Cpu).unwrap();
    let completion = ask(&model, "What is the weather in Paris right now? Use celsius.", json!("auto"), 64);
    let (name, args) = checked_arguments(&completion);
    println!("weather question -> {name}({args})");
    assert_eq!(name, "get_weather");
    assert!(args["city"].as_str().unwrap().contains("Paris"), "{args}");
    let completion = ask(&model, "What is the capital of Italy? One word.", json!("auto"), 16);
    println!("capital question -> {completion:?}");
    assert!(completion.call.is_none(), "{completion:?}");
    assert!(completion.text.contains("Rome"), "{completion:?}");
}
