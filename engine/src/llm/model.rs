//! Loading a GGUF model and running sessions over it.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{Device, Tensor};
use candle_transformers::models::{quantized_llama, quantized_qwen2};

use super::LlmError;
use super::gguf::{self, ChatTemplate, LlmTokenizer};
use super::native::{Cache, Sequence, Transformer};
use super::tools::CallGrammar;

/// The architectures this loader knows (`general.architecture`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    Llama,
    Qwen2,
}

/// Which implementation runs the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LlmBackend {
    /// The project's own CPU forward ([`super::native`]): quantized integer
    /// products, shared prompt prefixes, batched decode. CPU only.
    Native,
    /// candle's quantized llama/qwen2 models, on any candle device (CUDA).
    Candle,
}

impl LlmBackend {
    /// Native on the CPU, candle elsewhere.
    pub fn for_device(device: &Device) -> Self {
        if device.is_cpu() { Self::Native } else { Self::Candle }
    }
}

/// A model's forward state: its weights and its KV cache (inside candle's
/// struct for candle, beside the shared weights for native).
enum Backbone {
    Native {
        model: Arc<Transformer>,
        cache: Cache,
    },
    Llama(Box<quantized_llama::ModelWeights>),
    /// candle's `quantized_qwen2::ModelWeights` is not `Clone`, so a qwen2
    /// session holds weights of its own, read from the file when it starts.
    Qwen2(Box<quantized_qwen2::ModelWeights>),
}

impl Backbone {
    /// Next-token logits (f32, vocabulary-sized) after feeding `tokens` at `pos`.
    fn forward(&mut self, tokens: &[u32], pos: usize, device: &Device) -> Result<Tensor, LlmError> {
        let candle = |x: candle_core::Result<Tensor>| -> Result<Tensor, LlmError> {
            Ok(x?.squeeze(0)?.to_dtype(candle_core::DType::F32)?)
        };
        match self {
            Self::Native { model, cache } => {
                let mut logits = model.forward(&mut [Sequence { cache, tokens }]);
                let logits = logits.pop().unwrap_or_default();
                let vocab = logits.len();
                Ok(Tensor::from_vec(logits, vocab, &Device::Cpu)?)
            }
            Self::Llama(m) => candle(m.forward(&Tensor::new(tokens, device)?.unsqueeze(0)?, pos)),
            Self::Qwen2(m) => candle(m.forward(&Tensor::new(tokens, device)?.unsqueeze(0)?, pos)),
        }
    }
}

/// A loaded model: weights shared read-only by every session, with the
/// tokenizer and chat template from the same file.
pub struct LlmModel {
    arch: Arch,
    path: PathBuf,
    device: Device,
    backend: LlmBackend,
    /// The weights for the native backend.
    native: Option<Arc<Transformer>>,
    /// candle's llama weights with an empty cache; sessions clone it.
    llama: Option<quantized_llama::ModelWeights>,
    tokenizer: LlmTokenizer,
    template: ChatTemplate,
    stops: Vec<u32>,
    max_seq_len: usize,
    /// The grammar machinery for tool calls, built at the first call.
    call_grammar: std::sync::OnceLock<Result<CallGrammar, String>>,
}

impl LlmModel {
    /// Reads `path` (a GGUF file) for the backend that suits `device`; a
    /// bad or truncated file is an error naming what is wrong.
    pub fn load(path: &Path, device: &Device) -> Result<Self, LlmError> {
        Self::load_with(path, device, LlmBackend::for_device(device))
    }

    /// Reads `path` for a chosen backend (native needs the CPU device).
    pub fn load_with(path: &Path, device: &Device, backend: LlmBackend) -> Result<Self, LlmError> {
        if backend == LlmBackend::Native && !device.is_cpu() {
            return Err(LlmError::Unsupported("the native LLM backend runs on the CPU only".into()));
        }
        let mut reader = BufReader::new(File::open(path)?);
        let content = gguf::read_content(&mut reader)?;
        let arch = match gguf::meta_str(&content, "general.architecture")? {
            "llama" => Arch::Llama,
            "qwen2" => Arch::Qwen2,
            other => return Err(LlmError::Unsupported(format!("general.architecture = {other}"))),
        };
        let tokenizer = LlmTokenizer::from_gguf(&content)?;
        let template = ChatTemplate::from_gguf(&content, &tokenizer)?;
        let key = match arch {
            Arch::Llama => "llama.context_length",
            Arch::Qwen2 => "qwen2.context_length",
        };
        let context = gguf::meta(&content, key).and_then(|v| v.to_u32().map_err(|e| LlmError::Metadata(e.to_string())));
        let max_seq_len = match (arch, backend) {
            (_, LlmBackend::Native) => context? as usize,
            // quantized_llama precomputes RoPE tables for MAX_SEQ_LEN positions only.
            (Arch::Llama, _) => {
                context.map_or(quantized_llama::MAX_SEQ_LEN, |c| (c as usize).min(quantized_llama::MAX_SEQ_LEN))
            }
            (Arch::Qwen2, _) => context? as usize,
        };
        let (mut native, mut llama) = (None, None);
        match (arch, backend) {
            (_, LlmBackend::Native) => {
                let model = Transformer::from_gguf(&content, &mut reader, arch)?;
                if tokenizer.vocab_size() > model.config().vocab {
                    return Err(LlmError::Gguf(format!(
                        "the tokenizer has {} tokens, the embedding only {} rows",
                        tokenizer.vocab_size(),
                        model.config().vocab
                    )));
                }
                native = Some(Arc::new(model));
            }
            (Arch::Llama, _) => llama = Some(quantized_llama::ModelWeights::from_gguf(content, &mut reader, device)?),
            (Arch::Qwen2, _) => {
                // Load once now so a bad file fails at load, not at the first session.
                quantized_qwen2::ModelWeights::from_gguf(content, &mut reader, device)?;
            }
        }
        let mut stops = vec![tokenizer.eos];
        stops.extend(["<|im_end|>", "<|endoftext|>"].iter().filter_map(|t| tokenizer.token_id(t)));
        stops.sort_unstable();
        stops.dedup();
        Ok(Self {
            arch,
            path: path.to_path_buf(),
            device: device.clone(),
            backend,
            native,
            llama,
            tokenizer,
            template,
            stops,
            max_seq_len,
            call_grammar: std::sync::OnceLock::new(),
        })
    }

    pub fn arch(&self) -> Arch {
        self.arch
    }

    pub fn backend(&self) -> LlmBackend {
        self.backend
    }

    /// Bytes of weights the native backend holds (None on candle).
    pub fn weight_bytes(&self) -> Option<usize> {
        self.native.as_ref().map(|m| m.weight_bytes())
    }

    pub fn tokenizer(&self) -> &LlmTokenizer {
        &self.tokenizer
    }

    pub fn template(&self) -> &ChatTemplate {
        &self.template
    }

    /// Token ids that end an answer (EOS, `<|im_end|>`, `<|endoftext|>` when present).
    pub fn stop_tokens(&self) -> &[u32] {
        &self.stops
    }

    /// Constrained decoding over this model's vocabulary, for tool calls
    /// (built once, at the first use).
    pub fn call_grammar(&self) -> Result<&CallGrammar, LlmError> {
        self.call_grammar
            .get_or_init(|| CallGrammar::new(&self.tokenizer).map_err(|e| e.to_string()))
            .as_ref()
            .map_err(|e| LlmError::Constraint(e.clone()))
    }

    /// Most positions a session can hold.
    pub fn max_seq_len(&self) -> usize {
        self.max_seq_len
    }

    fn backbone(&self) -> Result<Backbone, LlmError> {
        if let Some(model) = &self.native {
            return Ok(Backbone::Native { model: model.clone(), cache: model.cache() });
        }
        match &self.llama {
            Some(weights) => Ok(Backbone::Llama(Box::new(weights.clone()))),
            None => {
                let mut reader = BufReader::new(File::open(&self.path)?);
                let content = gguf::read_content(&mut reader)?;
                let weights = quantized_qwen2::ModelWeights::from_gguf(content, &mut reader, &self.device)?;
                Ok(Backbone::Qwen2(Box::new(weights)))
            }
        }
    }

    /// A session with an empty cache.
    pub fn session(&self) -> Result<LlmSession, LlmError> {
        Ok(LlmSession {
            state: self.backbone()?,
            tokens: Vec::new(),
            logits: None,
            device: self.device.clone(),
            max_seq_len: self.max_seq_len,
            vocab: self.tokenizer.vocab_size(),
        })
    }

    /// Prefills `tokens` (a persona's system prompt) once; sessions started
    /// from the result skip them. Needs the native backend or candle's llama
    /// (candle's qwen2 cannot be cloned).
    pub fn prefix(&self, tokens: &[u32]) -> Result<Prefix, LlmError> {
        if self.native.is_none() && self.llama.is_none() {
            return Err(LlmError::Unsupported(
                "prompt-prefix reuse needs the native backend or a cloneable model (candle's quantized_qwen2 is not)"
                    .into(),
            ));
        }
        let mut session = self.session()?;
        session.prefill(tokens)?;
        if let Backbone::Native { cache, .. } = &mut session.state {
            cache.freeze();
        }
        Ok(Prefix { session })
    }

    /// Feeds one token to each session in one batched forward (the native
    /// backend; candle steps them one after another) and leaves each
    /// session's next-token logits in it.
    pub fn step_batch(&self, steps: &mut [(&mut LlmSession, u32)]) -> Result<(), LlmError> {
        for (session, token) in steps.iter() {
            session.check(std::slice::from_ref(token))?;
        }
        let Some(model) = &self.native else {
            for (session, token) in steps.iter_mut() {
                session.step(*token)?;
            }
            return Ok(());
        };
        let tokens: Vec<[u32; 1]> = steps.iter().map(|(_, t)| [*t]).collect();
        let mut seqs = Vec::with_capacity(steps.len());
        for ((session, _), token) in steps.iter_mut().zip(&tokens) {
            match &mut session.state {
                Backbone::Native { model: own, cache } if Arc::ptr_eq(own, model) => {
                    seqs.push(Sequence { cache, tokens: token })
                }
                _ => return Err(LlmError::Unsupported("a session of another model in the batch".into())),
            }
        }
        let logits = model.forward(&mut seqs);
        drop(seqs);
        for ((session, token), logits) in steps.iter_mut().zip(logits) {
            let vocab = logits.len();
            session.logits = Some(Tensor::from_vec(logits, vocab, &Device::Cpu)?);
            session.tokens.push(*token);
        }
        Ok(())
    }

    /// A new session whose cache starts as a copy of `prefix`.
    pub fn session_from(&self, prefix: &Prefix) -> Result<LlmSession, LlmError> {
        prefix.fork()
    }
}

/// A prefilled prompt prefix (e.g. a persona's system prompt).
pub struct Prefix {
    session: LlmSession,
}

impl Prefix {
    pub fn tokens(&self) -> &[u32] {
        &self.session.tokens
    }

    /// A session starting from this prefix: the cache tensors are shared
    /// until the session appends (which makes new tensors).
    pub fn fork(&self) -> Result<LlmSession, LlmError> {
        let state = match &self.session.state {
            Backbone::Native { model, cache } => Backbone::Native { model: model.clone(), cache: cache.clone() },
            Backbone::Llama(m) => Backbone::Llama(m.clone()),
            Backbone::Qwen2(_) => return Err(LlmError::Unsupported("qwen2 sessions cannot be forked".into())),
        };
        Ok(LlmSession {
            state,
            tokens: self.session.tokens.clone(),
            logits: self.session.logits.clone(),
            device: self.session.device.clone(),
            max_seq_len: self.session.max_seq_len,
            vocab: self.session.vocab,
        })
    }
}

/// One conversation's decoding state: its KV cache and the tokens in it.
pub struct LlmSession {
    state: Backbone,
    tokens: Vec<u32>,
    /// Next-token logits after the last token fed.
    logits: Option<Tensor>,
    device: Device,
    max_seq_len: usize,
    vocab: usize,
}

impl LlmSession {
    /// Tokens in the cache.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    pub fn pos(&self) -> usize {
        self.tokens.len()
    }

    /// Next-token logits (f32, vocabulary-sized) after the last token fed.
    pub fn logits(&self) -> Option<&Tensor> {
        self.logits.as_ref()
    }

    /// Checks that `tokens` may follow what the cache holds.
    fn check(&self, tokens: &[u32]) -> Result<(), LlmError> {
        let pos = self.tokens.len();
        if pos + tokens.len() > self.max_seq_len {
            return Err(LlmError::ContextFull { pos, adding: tokens.len(), max: self.max_seq_len });
        }
        if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= self.vocab) {
            return Err(LlmError::BadToken { id: bad, vocab: self.vocab });
        }
        Ok(())
    }

    /// Feeds `tokens` after what the cache holds, in one forward; returns the next-token logits.
    pub fn prefill(&mut self, tokens: &[u32]) -> Result<&Tensor, LlmError> {
        if tokens.is_empty() {
            return self.logits.as_ref().ok_or(LlmError::NoLogits);
        }
        self.check(tokens)?;
        let logits = self.state.forward(tokens, self.tokens.len(), &self.device)?;
        self.tokens.extend_from_slice(tokens);
        Ok(self.logits.insert(logits))
    }

    /// Brings the cache to hold exactly `tokens`, prefilling only what it
    /// lacks. The native cache is cut back to where `tokens` part from it;
    /// candle's cannot be cut, so there everything is prefilled unless the
    /// cache is a prefix of `tokens`. Returns how many tokens were prefilled.
    pub fn prefill_to(&mut self, tokens: &[u32]) -> Result<usize, LlmError> {
        if let Backbone::Native { cache, .. } = &mut self.state {
            let common = self.tokens.iter().zip(tokens).take_while(|(a, b)| a == b).count();
            if common == tokens.len() && common == self.tokens.len() && self.logits.is_some() {
                return Ok(0);
            }
            // At least one token is fed, so there are logits after it.
            let keep = common.min(tokens.len().saturating_sub(1));
            cache.truncate(keep);
            self.tokens.truncate(keep);
            self.logits = None;
            self.prefill(&tokens[keep..])?;
            return Ok(tokens.len() - keep);
        }
        if tokens.starts_with(&self.tokens) && (tokens.len() > self.tokens.len() || self.logits.is_some()) {
            let rest = tokens.len() - self.tokens.len();
            self.prefill(&tokens[self.tokens.len()..])?;
            return Ok(rest);
        }
        // index_pos 0 makes candle drop the old cache.
        self.tokens.clear();
        self.logits = None;
        self.prefill(tokens)?;
        Ok(tokens.len())
    }

    /// Feeds one token; returns the next-token logits.
    pub fn step(&mut self, token: u32) -> Result<&Tensor, LlmError> {
        self.prefill(&[token])
    }
}
