//! Thinking: the resident LLM.
//!
//! A GGUF file (llama or qwen2 architecture) is loaded once through candle's
//! quantized models ([`LlmModel`]); its tokenizer and chat template come from
//! the file's metadata ([`gguf`]). Each conversation owns an [`LlmSession`]
//! holding its KV cache. candle keeps that cache inside its model struct, so
//! a llama session is a clone of the loaded model: the weights are
//! `Arc`-shared quantized tensors (the clone copies pointers, not weights)
//! and the clone's cache is its own. A persona's system prompt is prefilled
//! once into a [`Prefix`]; every session started from it clones that cache
//! and prefills only the new turn. Cache tensors are immutable (an append
//! makes a new tensor), so sessions forked from one prefix never see each
//! other's tokens.
//!
//! Generation ([`generate`]) streams text deltas (split UTF-8 held back),
//! stops at EOS / `<|im_end|>`, and checks a cancellation flag before every
//! decode step. [`PhraseChunker`] turns those deltas into TTS fragments.

pub mod chat;
pub mod chunker;
pub mod context;
pub mod generate;
pub mod gguf;
pub mod model;
pub mod native;
pub mod openai;

pub use chunker::PhraseChunker;
pub use generate::{Finish, FinishReason, GenerateConfig, Generator, Sampling, Step, Utf8Stream};
pub use gguf::{ChatMessage, ChatTemplate, LlmTokenizer, Role};
pub use model::{Arch, LlmBackend, LlmModel, LlmSession, Prefix};

/// Everything that can go wrong loading or running the LLM.
#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    #[error("reading the model file: {0}")]
    Io(#[from] std::io::Error),
    #[error("not a readable GGUF file: {0}")]
    Gguf(String),
    #[error("GGUF file is truncated: tensor {tensor} ends at byte {needed} but the file has {len}")]
    Truncated { tensor: String, needed: u64, len: u64 },
    #[error("GGUF metadata: {0}")]
    Metadata(String),
    #[error("unsupported model: {0}")]
    Unsupported(String),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("chat template: {0}")]
    Template(String),
    #[error("context full: {pos} tokens + {adding} new exceed {max}")]
    ContextFull { pos: usize, adding: usize, max: usize },
    #[error("token id {id} is outside the vocabulary of {vocab}")]
    BadToken { id: u32, vocab: usize },
    #[error("nothing to decode: prefill a prompt first")]
    NoLogits,
    #[error("model math: {0}")]
    Candle(#[from] candle_core::Error),
}
