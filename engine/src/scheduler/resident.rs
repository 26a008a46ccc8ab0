//! Loading the models the executor owns from the model store.

use std::path::PathBuf;
use std::sync::Arc;

use candle_core::Device;

use super::Resident;
use crate::asr::Whisper;
use crate::hearing::HearingModels;
use crate::llm::LlmModel;
use crate::models::convert::OUTPUT;
use crate::models::{Manifest, Store};
use crate::tts::Voice;
use crate::turn::SmartTurn;
use crate::vad::SileroVad;

/// Which models of the store make the conversation stack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResidentIds {
    pub vad: String,
    /// `None` ends turns on the silence timer alone.
    pub turn: Option<String>,
    pub asr: String,
    pub llm: String,
    pub tts: String,
}

impl Default for ResidentIds {
    fn default() -> Self {
        Self {
            vad: "silero-vad".into(),
            turn: Some("smart-turn-v3.2".into()),
            asr: "whisper-tiny.en".into(),
            llm: "smollm2-135m-instruct".into(),
            tts: "piper-en_US-joe-medium".into(),
        }
    }
}

/// A model that could not be loaded, and why.
#[derive(Debug, thiserror::Error)]
#[error("{id}: {reason}")]
pub struct LoadError {
    pub id: String,
    pub reason: String,
}

fn load_error(id: &str, reason: impl std::fmt::Display) -> LoadError {
    LoadError { id: id.to_string(), reason: reason.to_string() }
}

/// The folder of model `id` in `store`, which must be of `stage` and fetched.
fn ready_dir(manifest: &Manifest, store: &Store, id: &str, stage: &str) -> Result<PathBuf, LoadError> {
    let model = manifest.model(id).map_err(|e| load_error(id, e))?;
    if model.stage != stage {
        return Err(load_error(id, format!("a model of the {} stage, not {stage}", model.stage)));
    }
    let state = store.state(model).map_err(|e| load_error(id, e))?;
    if !state.is_ready() {
        return Err(load_error(id, format!("not ready ({state}); run `tete models fetch {id}`")));
    }
    Ok(store.model_dir(&model.id))
}

/// The GGUF file of LLM `id`.
pub fn gguf_path(manifest: &Manifest, store: &Store, id: &str) -> Result<PathBuf, LoadError> {
    let dir = ready_dir(manifest, store, id, "llm")?;
    let model = manifest.model(id).map_err(|e| load_error(id, e))?;
    let file = model.files.iter().find(|f| f.name.ends_with(".gguf")).ok_or_else(|| load_error(id, "no .gguf file"))?;
    Ok(dir.join(&file.name))
}

impl Resident {
    /// Loads the stack named by `ids` from `store`: the LLM and ASR on
    /// `device`, the small models (VAD, turn, voice) on the CPU, where
    /// their tests run them.
    pub fn load(manifest: &Manifest, store: &Store, ids: &ResidentIds, device: &Device) -> Result<Self, LoadError> {
        let weights = |id: &str, stage: &str| -> Result<PathBuf, LoadError> {
            Ok(ready_dir(manifest, store, id, stage)?.join(OUTPUT))
        };
        let vad = SileroVad::load(&weights(&ids.vad, "vad")?, &Device::Cpu).map_err(|e| load_error(&ids.vad, e))?;
        let turn = match &ids.turn {
            Some(id) => {
                Some(Arc::new(SmartTurn::load(&weights(id, "turn")?, &Device::Cpu).map_err(|e| load_error(id, e))?))
            }
            None => None,
        };
        let asr_dir = ready_dir(manifest, store, &ids.asr, "asr")?;
        let asr = Whisper::load(&asr_dir, device).map_err(|e| load_error(&ids.asr, e))?;
        let llm =
            LlmModel::load(&gguf_path(manifest, store, &ids.llm)?, device).map_err(|e| load_error(&ids.llm, e))?;
        let tts_dir = ready_dir(manifest, store, &ids.tts, "tts")?;
        let voice = Voice::load(&tts_dir, &Device::Cpu).map_err(|e| load_error(&ids.tts, e))?;
        Ok(Self {
            hearing: HearingModels { vad: Arc::new(vad), turn, asr: Arc::new(asr) },
            llm: Arc::new(llm),
            voice: Arc::new(voice),
        })
    }
}
