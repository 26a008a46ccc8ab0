//! `/v2/personas`: the character — prompt, context, and the layers that
//! pick the LLM, voice, ASR, turn-taking and perception.

use std::collections::BTreeMap;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::{Api, ApiError, ApiJson, ApiQuery, Page, list};
use crate::db::PersonaRow;

#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(rename_all = "lowercase")]
pub enum PipelineMode {
    /// ASR → LLM → TTS → face.
    Full,
    /// Speaks exactly what it is sent.
    Echo,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Low,
    Medium,
    High,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct LlmLayer {
    /// A model from models.toml, or any name when `base_url` is set.
    pub model: Option<String>,
    /// An OpenAI-compatible chat-completions server.
    pub base_url: Option<String>,
    /// Stored and used, never returned.
    pub api_key: Option<String>,
    pub headers: Option<BTreeMap<String, String>>,
    #[schema(value_type = Object)]
    pub extra_body: Option<serde_json::Map<String, Value>>,
    /// OpenAI function schemas.
    #[schema(value_type = Vec<Object>)]
    pub tools: Option<Vec<Value>>,
    pub speculative_inference: Option<bool>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct VoiceSettings {
    /// 0.5–2.0.
    pub speed: Option<f32>,
    pub emotion: Option<String>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TtsEngine {
    Tete,
    Http,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct TtsLayer {
    pub tts_engine: Option<TtsEngine>,
    /// With `tts_engine: http`: the voice asked of the external server.
    pub external_voice_id: Option<String>,
    pub voice_settings: Option<VoiceSettings>,
    /// Stored and used, never returned.
    pub api_key: Option<String>,
    /// With `tts_engine: http` (required there): an OpenAI-compatible
    /// server's base URL, up to `/v1`; speech comes from `{base_url}/audio/speech`.
    pub base_url: Option<String>,
    /// With `tts_engine: http`: the `model` sent (default `tts-1`).
    pub model: Option<String>,
    /// With `tts_engine: http`: extra request headers. Stored and used, never returned.
    pub headers: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct SttLayer {
    /// An ASR model from models.toml.
    pub stt_engine: Option<String>,
    pub hotwords: Option<String>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TurnDetection {
    Smart,
    Silence,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct ConversationalFlow {
    pub turn_detection_model: Option<TurnDetection>,
    pub turn_taking_patience: Option<Level>,
    pub replica_interruptibility: Option<Level>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum OnOff {
    On,
    Off,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct PerceptionLayer {
    pub perception_model: Option<OnOff>,
    pub visual_awareness_queries: Option<Vec<String>>,
    pub perception_analysis_queries: Option<Vec<String>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct Layers {
    pub llm: Option<LlmLayer>,
    pub tts: Option<TtsLayer>,
    pub stt: Option<SttLayer>,
    pub conversational_flow: Option<ConversationalFlow>,
    pub perception: Option<PerceptionLayer>,
}

/// A persona as created, patched and stored.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct Persona {
    pub persona_name: Option<String>,
    pub system_prompt: Option<String>,
    pub context: Option<String>,
    pub default_replica_id: Option<String>,
    pub pipeline_mode: Option<PipelineMode>,
    pub layers: Option<Layers>,
}

/// Paths of secrets: stored and used, never shown. Extra LLM headers count
/// as secrets since they usually carry credentials.
const SECRET_PATHS: [&str; 4] =
    ["/layers/llm/api_key", "/layers/tts/api_key", "/layers/llm/headers", "/layers/tts/headers"];

/// Removes the secrets from a document; returns them by path.
fn strip_secrets(doc: &mut Value) -> Vec<(&'static str, Value)> {
    let mut out = Vec::new();
    for path in SECRET_PATHS {
        let (parent, key) = path.rsplit_once('/').unwrap_or(("", path));
        if let Some(v) = doc.pointer_mut(parent).and_then(Value::as_object_mut).and_then(|o| o.remove(key)) {
            out.push((path, v));
        }
    }
    out
}

/// Whether a patch operation writes or removes `secret` (or something around it).
fn patch_sets(ops: &json_patch::Patch, secret: &str) -> bool {
    ops.0.iter().any(|op| {
        let path = match op {
            json_patch::PatchOperation::Add(o) => o.path.as_str(),
            json_patch::PatchOperation::Replace(o) => o.path.as_str(),
            json_patch::PatchOperation::Remove(o) => o.path.as_str(),
            json_patch::PatchOperation::Move(o) => o.path.as_str(),
            json_patch::PatchOperation::Copy(o) => o.path.as_str(),
            json_patch::PatchOperation::Test(_) => return false,
        };
        path == secret
            || path.starts_with(&format!("{secret}/"))
            || secret.starts_with(&format!("{path}/"))
            || path.is_empty()
    })
}

/// Applies a patch to a stored persona without letting it see the secrets:
/// they are taken out first (so no `copy`, `move` or `test` can reach
/// them) and put back afterwards unless the patch set or removed them. A
/// changed `base_url` of the LLM or TTS layer drops that layer's stored key
/// and headers unless the patch sets new ones, so credentials are never
/// sent to a server they were not given for.
fn apply_patch(stored: &Value, ops: &json_patch::Patch) -> Result<Value, ApiError> {
    let mut doc = stored.clone();
    let secrets = strip_secrets(&mut doc);
    json_patch::patch(&mut doc, ops).map_err(|e| ApiError::bad_request(format!("the patch does not apply: {e}")))?;
    let moved: Vec<bool> = secrets
        .iter()
        .map(|(secret, _)| {
            let layer = secret.rsplit_once('/').map_or("", |(parent, _)| parent);
            let url = format!("{layer}/base_url");
            stored.pointer(&url) != doc.pointer(&url)
        })
        .collect();
    for ((path, value), moved) in secrets.into_iter().zip(moved) {
        if patch_sets(ops, path) || moved {
            continue;
        }
        let (parent, key) = path.rsplit_once('/').unwrap_or(("", path));
        if let Some(obj) = doc.pointer_mut(parent).and_then(Value::as_object_mut) {
            obj.insert(key.to_string(), value);
        }
    }
    Ok(doc)
}

fn http_url(what: &str, url: &str) -> Result<(), ApiError> {
    match url::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => Ok(()),
        Ok(u) => Err(ApiError::bad_request(format!("{what} must be an http(s) URL, got scheme {}", u.scheme()))),
        Err(e) => Err(ApiError::bad_request(format!("{what} {url:?} is not a URL: {e}"))),
    }
}

/// Checks a persona's values: known models, URLs, ranges, tool schemas, replica.
async fn validate(api: &Api, p: &Persona) -> Result<(), ApiError> {
    if p.persona_name.as_deref().is_some_and(|n| n.trim().is_empty()) {
        return Err(ApiError::bad_request("persona_name must not be empty"));
    }
    let manifest = &api.config.models;
    let stage_model = |stage: &str, id: &str| manifest.models.iter().any(|m| m.stage == stage && m.id == id);
    let known = |stage: &str| {
        manifest.models.iter().filter(|m| m.stage == stage).map(|m| m.id.as_str()).collect::<Vec<_>>().join(", ")
    };
    if let Some(layers) = &p.layers {
        if let Some(llm) = &layers.llm {
            if let Some(url) = &llm.base_url {
                http_url("layers.llm.base_url", url)?;
            } else if let Some(model) = &llm.model
                && !stage_model("llm", model)
            {
                return Err(ApiError::bad_request(format!(
                    "layers.llm.model {model:?} is not a resident model ({}); set base_url to use another server",
                    known("llm")
                )));
            }
            for (i, tool) in llm.tools.iter().flatten().enumerate() {
                let ok = tool["type"] == "function" && tool["function"]["name"].as_str().is_some_and(|n| !n.is_empty());
                if !ok {
                    return Err(ApiError::bad_request(format!(
                        "layers.llm.tools[{i}] must be an OpenAI function tool: {{\"type\": \"function\", \"function\": {{\"name\": …}}}}"
                    )));
                }
            }
        }
        if let Some(tts) = &layers.tts {
            validate_tts(tts)?;
        }
        if let Some(stt) = layers.stt.as_ref().and_then(|s| s.stt_engine.as_deref())
            && !stage_model("asr", stt)
        {
            return Err(ApiError::bad_request(format!("layers.stt.stt_engine {stt:?} is not one of {}", known("asr"))));
        }
    }
    if let Some(rid) = &p.default_replica_id
        && api.db().replica(rid).await?.is_none()
    {
        return Err(ApiError::bad_request(format!("default_replica_id {rid:?} is not a replica")));
    }
    Ok(())
}

impl TtsLayer {
    /// The external voice this layer names (`tts_engine: http`), as the
    /// speaking stage's client takes it; `None` for the resident voice.
    pub fn external_voice(&self) -> Option<tete_engine::tts::external::ExternalVoiceConfig> {
        if !matches!(self.tts_engine, Some(TtsEngine::Http)) {
            return None;
        }
        Some(tete_engine::tts::external::ExternalVoiceConfig {
            base_url: self.base_url.clone()?,
            api_key: self.api_key.clone(),
            model: self.model.clone().unwrap_or_else(|| "tts-1".into()),
            voice: self.external_voice_id.clone().unwrap_or_else(|| "alloy".into()),
            speed: self.voice_settings.as_ref().and_then(|v| v.speed),
            headers: self.headers.iter().flatten().map(|(k, v)| (k.clone(), v.clone())).collect(),
            timeouts: Default::default(),
        })
    }
}

fn validate_tts(tts: &TtsLayer) -> Result<(), ApiError> {
    let settings = tts.voice_settings.as_ref();
    tete_engine::tts::VoiceSettings::from_persona(
        settings.and_then(|v| v.speed),
        settings.and_then(|v| v.emotion.as_deref()),
        0,
    )
    .map_err(|e| ApiError::bad_request(format!("layers.tts.voice_settings: {e}")))?;
    match (tts.tts_engine, &tts.base_url) {
        (Some(TtsEngine::Http), Some(url)) => http_url("layers.tts.base_url", url),
        (Some(TtsEngine::Http), None) => {
            Err(ApiError::bad_request("layers.tts.tts_engine http needs base_url (an OpenAI-compatible /v1 server)"))
        }
        (_, Some(_)) => Err(ApiError::bad_request("layers.tts.base_url is only for tts_engine http")),
        (_, None) => Ok(()),
    }
}

/// The persona as the API shows it: secrets removed, ids and times added.
fn view(row: &PersonaRow) -> Value {
    let mut doc = row.document.clone();
    strip_secrets(&mut doc);
    if let Some(obj) = doc.as_object_mut() {
        obj.insert("persona_id".into(), Value::String(row.id.clone()));
        obj.insert("created_at".into(), Value::String(row.created_at.clone()));
        obj.insert("updated_at".into(), Value::String(row.updated_at.clone()));
    }
    doc
}

fn stored(p: &Persona) -> Value {
    // Drop nulls so that stored documents hold only what was set.
    fn prune(v: &mut Value) {
        if let Value::Object(m) = v {
            m.retain(|_, x| !x.is_null());
            m.values_mut().for_each(prune);
        }
    }
    let mut v = serde_json::to_value(p).unwrap_or_default();
    prune(&mut v);
    v
}

#[utoipa::path(post, path = "/v2/personas", request_body = Persona, tag = "personas",
    responses((status = 200, description = "the persona, with persona_id"), (status = 400, body = super::ErrorBody)))]
pub async fn create(State(api): State<Api>, ApiJson(p): ApiJson<Persona>) -> Result<axum::Json<Value>, ApiError> {
    validate(&api, &p).await?;
    let row = api.db().insert_persona(&stored(&p)).await?;
    Ok(axum::Json(view(&row)))
}

#[utoipa::path(get, path = "/v2/personas/{persona_id}", tag = "personas",
    responses((status = 200, description = "the persona"), (status = 404, body = super::ErrorBody)))]
pub async fn get_one(State(api): State<Api>, Path(id): Path<String>) -> Result<axum::Json<Value>, ApiError> {
    let row = api.db().persona(&id).await?.ok_or_else(|| ApiError::not_found("persona", &id))?;
    Ok(axum::Json(view(&row)))
}

#[utoipa::path(get, path = "/v2/personas", params(Page), tag = "personas", responses((status = 200, description = "{data, total_count}")))]
pub async fn list_all(State(api): State<Api>, ApiQuery(page): ApiQuery<Page>) -> Result<axum::Json<Value>, ApiError> {
    let (limit, offset) = page.limit_offset()?;
    let (rows, total) = api.db().list_personas(limit, offset).await?;
    Ok(list(rows.iter().map(view).collect(), total))
}

/// Applies a JSON Patch (RFC 6902) to a persona. The result is validated
/// like a new persona; nothing changes unless every operation applies.
#[utoipa::path(patch, path = "/v2/personas/{persona_id}", tag = "personas",
    request_body(content = Vec<Object>, description = "RFC 6902 operations", content_type = "application/json-patch+json"),
    responses((status = 200, description = "the patched persona"), (status = 400, body = super::ErrorBody), (status = 404, body = super::ErrorBody)))]
pub async fn patch(
    State(api): State<Api>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<axum::Json<Value>, ApiError> {
    let ops: json_patch::Patch = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!("the body must be a JSON Patch (RFC 6902) array of operations: {e}"))
    })?;
    for _ in 0..3 {
        let row = api.db().persona(&id).await?.ok_or_else(|| ApiError::not_found("persona", &id))?;
        let doc = apply_patch(&row.document, &ops)?;
        let persona: Persona = serde_json::from_value(doc)
            .map_err(|e| ApiError::bad_request(format!("the patched persona is invalid: {e}")))?;
        validate(&api, &persona).await?;
        let doc = stored(&persona);
        if api.db().replace_persona(&id, &row.document, &doc).await? {
            let row = api.db().persona(&id).await?.ok_or_else(|| ApiError::not_found("persona", &id))?;
            return Ok(axum::Json(view(&row)));
        }
        // Changed by someone else between read and write: patch the new version.
    }
    Err(ApiError::new(StatusCode::CONFLICT, "conflict", "the persona kept changing; try again"))
}

#[utoipa::path(delete, path = "/v2/personas/{persona_id}", tag = "personas",
    responses((status = 204, description = "deleted"), (status = 404, body = super::ErrorBody)))]
pub async fn delete(State(api): State<Api>, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    if api.db().delete_persona(&id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("persona", &id))
    }
}

pub fn routes() -> Router<Api> {
    Router::new()
        .route("/personas", get(list_all).post(create))
        .route("/personas/{id}", get(get_one).patch(patch).delete(delete))
}

#[cfg(test)]
mod tts_layer_tests {
    use super::*;

    #[test]
    fn an_http_layer_names_its_external_voice() {
        let layer: TtsLayer = serde_json::from_value(serde_json::json!({
            "tts_engine": "http", "base_url": "http://127.0.0.1:5/v1", "api_key": "k",
            "headers": {"x-org": "o"}, "external_voice_id": "nova", "voice_settings": {"speed": 1.5}
        }))
        .unwrap();
        let voice = layer.external_voice().unwrap();
        assert_eq!(
            (voice.base_url.as_str(), voice.model.as_str(), voice.voice.as_str()),
            ("http://127.0.0.1:5/v1", "tts-1", "nova")
        );
        assert_eq!((voice.api_key.as_deref(), voice.speed), (Some("k"), Some(1.5)));
        assert_eq!(voice.headers, [("x-org".to_string(), "o".to_string())]);
        let resident: TtsLayer = serde_json::from_value(serde_json::json!({"tts_engine": "tete"})).unwrap();
        assert!(resident.external_voice().is_none());
    }
}
