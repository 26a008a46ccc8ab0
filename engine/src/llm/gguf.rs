//! What a GGUF file carries besides weights: its metadata, checked against
//! the file length, the byte-level BPE tokenizer (`tokenizer.ggml.*`) and
//! the chat template (`tokenizer.chat_template`, rendered with minijinja).

use std::collections::HashMap;
use std::io::{Read, Seek};

use candle_core::quantized::gguf_file::{Content, Value};
use serde::Serialize;
use tokenizers::models::bpe::{BPE, Vocab};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, PreTokenizerWrapper, SplitDelimiterBehavior, Tokenizer};

use super::LlmError;

/// GPT-2 word split (`tokenizer.ggml.pre` = `gpt2`, `smollm`, `starcoder`).
const GPT2_SPLIT: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";
/// Qwen2's word split (`tokenizer.ggml.pre` = `qwen2`): single digits, case-insensitive contractions.
const QWEN2_SPLIT: &str =
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// GGUF token types (llama.cpp `llama_token_type`).
const TOKEN_CONTROL: i32 = 3;
const TOKEN_USER_DEFINED: i32 = 4;

/// Reads the header and checks that every tensor lies inside the file, so a
/// truncated download fails here with its sizes rather than deep in a load.
pub(crate) fn read_content<R: Read + Seek>(reader: &mut R) -> Result<Content, LlmError> {
    let len = reader.seek(std::io::SeekFrom::End(0))?;
    reader.seek(std::io::SeekFrom::Start(0))?;
    let content = Content::read(reader).map_err(|e| LlmError::Gguf(e.to_string()))?;
    for (name, info) in &content.tensor_infos {
        let block = info.ggml_dtype.block_size();
        let elems = info.shape.elem_count();
        if block == 0 || elems % block != 0 {
            return Err(LlmError::Gguf(format!("tensor {name}: {elems} elements do not fill {block}-blocks")));
        }
        let bytes = (elems / block) as u64 * info.ggml_dtype.type_size() as u64;
        let end = content.tensor_data_offset.checked_add(info.offset).and_then(|o| o.checked_add(bytes));
        let Some(end) = end else {
            return Err(LlmError::Gguf(format!("tensor {name}: offset {} overflows", info.offset)));
        };
        if end > len {
            return Err(LlmError::Truncated { tensor: name.clone(), needed: end, len });
        }
    }
    Ok(content)
}

pub(crate) fn meta<'a>(content: &'a Content, key: &str) -> Result<&'a Value, LlmError> {
    content.metadata.get(key).ok_or_else(|| LlmError::Metadata(format!("{key} is missing")))
}

fn meta_u32(content: &Content, key: &str) -> Result<u32, LlmError> {
    meta(content, key)?.to_u32().map_err(|e| LlmError::Metadata(format!("{key}: {e}")))
}

pub(crate) fn meta_str<'a>(content: &'a Content, key: &str) -> Result<&'a str, LlmError> {
    meta(content, key)?.to_string().map(String::as_str).map_err(|e| LlmError::Metadata(format!("{key}: {e}")))
}

fn meta_strings(content: &Content, key: &str) -> Result<Vec<String>, LlmError> {
    let values = meta(content, key)?.to_vec().map_err(|e| LlmError::Metadata(format!("{key}: {e}")))?;
    values.iter().map(|v| v.to_string().cloned().map_err(|e| LlmError::Metadata(format!("{key}: {e}")))).collect()
}

/// GPT-2's reversible map from bytes to printable characters, inverted:
/// the byte each vocabulary character stands for.
fn unicode_to_byte() -> HashMap<char, u8> {
    let printable = |b: u8| (b'!'..=b'~').contains(&b) || (0xA1..=0xAC).contains(&b) || b >= 0xAE;
    let mut map = HashMap::with_capacity(256);
    let mut next = 256u32;
    for b in 0..=255u8 {
        let c = if printable(b) {
            char::from(b)
        } else {
            let c = char::from_u32(next).unwrap_or(char::REPLACEMENT_CHARACTER);
            next += 1;
            c
        };
        map.insert(c, b);
    }
    map
}

/// The model's tokenizer: encoding through the `tokenizers` crate, decoding
/// to raw bytes per token (so a stream can hold back split UTF-8).
pub struct LlmTokenizer {
    inner: Tokenizer,
    /// Bytes of each token; control tokens decode to nothing.
    bytes: Vec<Vec<u8>>,
    ids: HashMap<String, u32>,
    pub bos: Option<u32>,
    pub eos: u32,
}

impl LlmTokenizer {
    pub(crate) fn from_gguf(content: &Content) -> Result<Self, LlmError> {
        let kind = meta_str(content, "tokenizer.ggml.model")?;
        if kind != "gpt2" {
            return Err(LlmError::Unsupported(format!("tokenizer.ggml.model = {kind} (only gpt2 byte-level BPE)")));
        }
        let tokens = meta_strings(content, "tokenizer.ggml.tokens")?;
        let merges = meta_strings(content, "tokenizer.ggml.merges")?;
        let types: Vec<i32> = match content.metadata.get("tokenizer.ggml.token_type") {
            Some(v) => v
                .to_vec()
                .and_then(|v| v.iter().map(|t| t.to_i32()).collect())
                .map_err(|e| LlmError::Metadata(format!("tokenizer.ggml.token_type: {e}")))?,
            None => vec![1; tokens.len()],
        };
        if types.len() != tokens.len() {
            return Err(LlmError::Metadata(format!("{} token types for {} tokens", types.len(), tokens.len())));
        }
        let eos = meta_u32(content, "tokenizer.ggml.eos_token_id")?;
        let bos = meta_u32(content, "tokenizer.ggml.bos_token_id").ok();
        let add_bos = content.metadata.get("tokenizer.ggml.add_bos_token").and_then(|v| v.to_bool().ok());
        let bos = if add_bos == Some(true) { bos } else { None };
        if eos as usize >= tokens.len() || bos.is_some_and(|b| b as usize >= tokens.len()) {
            return Err(LlmError::Metadata("bos/eos id outside the vocabulary".into()));
        }

        let vocab: Vocab = tokens.iter().enumerate().map(|(i, t)| (t.clone(), i as u32)).collect();
        let merges = merges
            .iter()
            .map(|m| {
                m.split_once(' ')
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                    .ok_or_else(|| LlmError::Metadata(format!("merge without a space: {m:?}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let bpe =
            BPE::builder().vocab_and_merges(vocab, merges).build().map_err(|e| LlmError::Tokenizer(e.to_string()))?;
        let pre = meta_str(content, "tokenizer.ggml.pre").unwrap_or("gpt2");
        let split = |pattern: &str| -> Result<PreTokenizerWrapper, LlmError> {
            Split::new(SplitPattern::Regex(pattern.into()), SplitDelimiterBehavior::Isolated, false)
                .map(Into::into)
                .map_err(|e| LlmError::Tokenizer(e.to_string()))
        };
        let byte_level = ByteLevel::new(false, false, false);
        let steps: Vec<PreTokenizerWrapper> = match pre {
            "gpt2" | "default" => vec![split(GPT2_SPLIT)?, byte_level.into()],
            // HF's SmolLM2 / StarCoder tokenizers split digits one by one before the GPT-2 split.
            "smollm" | "starcoder" => vec![Digits::new(true).into(), split(GPT2_SPLIT)?, byte_level.into()],
            "qwen2" => vec![split(QWEN2_SPLIT)?, byte_level.into()],
            other => return Err(LlmError::Unsupported(format!("tokenizer.ggml.pre = {other}"))),
        };
        let mut inner = Tokenizer::new(bpe);
        inner.with_pre_tokenizer(Some(Sequence::new(steps)));
        let special: Vec<AddedToken> = tokens
            .iter()
            .zip(&types)
            .filter(|(_, t)| matches!(**t, TOKEN_CONTROL | TOKEN_USER_DEFINED))
            .map(|(tok, _)| AddedToken::from(tok.clone(), true))
            .collect();
        inner.add_special_tokens(special).map_err(|e| LlmError::Tokenizer(e.to_string()))?;

        let map = unicode_to_byte();
        let bytes = tokens
            .iter()
            .zip(&types)
            .map(|(tok, &ty)| match ty {
                TOKEN_CONTROL => Vec::new(),
                TOKEN_USER_DEFINED => tok.as_bytes().to_vec(),
                _ => tok.chars().flat_map(|c| map.get(&c).copied()).collect(),
            })
            .collect();
        let ids = tokens.into_iter().enumerate().map(|(i, t)| (t, i as u32)).collect();
        Ok(Self { inner, bytes, ids, bos, eos })
    }

    /// Token ids of `text`; special tokens written in the text (`<|im_start|>`) are matched whole.
    /// A BOS is prepended when the model asks for one.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, LlmError> {
        let enc = self.inner.encode(text, false).map_err(|e| LlmError::Tokenizer(e.to_string()))?;
        Ok(self.bos.into_iter().chain(enc.get_ids().iter().copied()).collect())
    }

    /// Raw bytes of one token (empty for control tokens and unknown ids).
    pub fn token_bytes(&self, id: u32) -> &[u8] {
        self.bytes.get(id as usize).map_or(&[], Vec::as_slice)
    }

    /// The id of a token written out (`<|im_end|>`).
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.ids.get(token).copied()
    }

    pub fn vocab_size(&self) -> usize {
        self.bytes.len()
    }

    /// The whole text of `ids` (lossy on invalid UTF-8).
    pub fn decode(&self, ids: &[u32]) -> String {
        let bytes: Vec<u8> = ids.iter().flat_map(|&id| self.token_bytes(id).iter().copied()).collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

/// One chat message as chat templates see it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChatMessage {
    pub role: Role,
    pub content: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
    Tool,
}

impl ChatMessage {
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Self { role, content: content.into() }
    }
}

/// The model's `tokenizer.chat_template`, compiled once.
pub struct ChatTemplate {
    env: minijinja::Environment<'static>,
    bos: String,
    eos: String,
}

impl ChatTemplate {
    pub(crate) fn from_gguf(content: &Content, tokenizer: &LlmTokenizer) -> Result<Self, LlmError> {
        let source = meta_str(content, "tokenizer.chat_template")?.to_string();
        let name = |id: Option<u32>| {
            id.and_then(|id| tokenizer.ids.iter().find(|(_, v)| **v == id).map(|(k, _)| k.clone())).unwrap_or_default()
        };
        let bos = content.metadata.get("tokenizer.ggml.bos_token_id").and_then(|v| v.to_u32().ok());
        Self::new(source, name(bos), name(Some(tokenizer.eos)))
    }

    pub fn new(source: String, bos: String, eos: String) -> Result<Self, LlmError> {
        let mut env = minijinja::Environment::new();
        env.add_function("raise_exception", |msg: String| -> Result<String, minijinja::Error> {
            Err(minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, msg))
        });
        env.add_template_owned("chat", source).map_err(|e| LlmError::Template(e.to_string()))?;
        Ok(Self { env, bos, eos })
    }

    /// The prompt text of `messages`; with `add_generation_prompt` it ends
    /// where the assistant's answer begins.
    pub fn render(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String, LlmError> {
        let template = self.env.get_template("chat").map_err(|e| LlmError::Template(e.to_string()))?;
        template
            .render(minijinja::context! {
                messages => minijinja::Value::from(minijinja::value::Serde(messages)),
                add_generation_prompt => add_generation_prompt,
                bos_token => self.bos.as_str(),
                eos_token => self.eos.as_str(),
            })
            .map_err(|e| LlmError::Template(e.to_string()))
    }
}
