//! Thinking: the resident LLM.
//!
//! A GGUF file (llama or qwen2 architecture) is loaded once ([`LlmModel`]);
//! its tokenizer and chat template come from the file's metadata
//! ([`gguf`]). On the CPU the model runs on the project's own forward pass
//! ([`native`]: quantized integer products from `tete_kernels::quant`,
//! shared read-only weights, caches outside the model); on a GPU device it
//! runs on candle's quantized models ([`LlmBackend`]). Each conversation
//! owns an [`LlmSession`] holding its KV cache. A persona's system prompt
//! is prefilled once into a [`Prefix`]; every session started from it reads
//! that cache in place (native) or clones it (candle) and prefills only the
//! new turn, and a prompt that changes after some point is prefilled from
//! there (native). Several sessions' next tokens can be computed in one
//! batched forward ([`LlmModel::step_batch`]).
//!
//! Generation ([`generate`]) streams text deltas (split UTF-8 held back),
//! stops at EOS / `<|im_end|>`, and checks a cancellation flag before every
//! decode step. [`PhraseChunker`] turns those deltas into TTS fragments.
//! Function calls ([`tools`]) are generated under a grammar, so a call is
//! always valid JSON for its tool.

pub mod chat;
pub mod chunker;
pub mod context;
pub mod generate;
pub mod gguf;
pub mod model;
pub mod native;
pub mod openai;
pub mod tools;

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
    #[error("constrained decoding: {0}")]
    Constraint(String),
    #[error("model math: {0}")]
    Candle(#[from] candle_core::Error),
}
