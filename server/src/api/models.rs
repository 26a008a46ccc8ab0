//! `GET /v1/models` and `GET /v1/models/{id}`: the models this host has
//! resident, in OpenAI's list shape, each with the stage it serves
//! (`llm`, `asr`, `tts`; an extension field OpenAI clients ignore).

use axum::Router;
use axum::extract::{Path, State};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use super::Api;
use super::audio::{OpenAiError, require_key};

#[derive(Debug, Clone, Serialize)]
struct Model {
    id: String,
    object: &'static str,
    /// When the host started serving it (Unix seconds): OpenAI's `created`.
    created: u64,
    owned_by: &'static str,
    stage: &'static str,
}

/// When the routes were built: the models are loaded by then.
static LOADED_AT: OnceLock<u64> = OnceLock::new();

pub fn routes(api: Api) -> Router {
    LOADED_AT.get_or_init(|| SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()));
    Router::new()
        .route("/v1/models", get(list))
        .route("/v1/models/{id}", get(retrieve))
        .route_layer(middleware::from_fn_with_state(api.clone(), require_key))
        .with_state(api)
}

fn resident(api: &Api) -> Vec<Model> {
    let model = |id: &str, stage| Model {
        id: id.to_string(),
        object: "model",
        created: LOADED_AT.get().copied().unwrap_or(0),
        owned_by: "tete",
        stage,
    };
    let mut models = Vec::new();
    models.extend(api.config.chat.as_ref().map(|c| model(c.id(), "llm")));
    models.extend(api.config.speech.as_ref().map(|s| model(s.model_id(), "asr")));
    if let Some(voice) = &api.config.voice {
        models.extend(voice.voices().iter().map(|v| model(&v.model, "tts")));
    }
    models
}

async fn list(State(api): State<Api>) -> Response {
    axum::Json(serde_json::json!({"object": "list", "data": resident(&api)})).into_response()
}

async fn retrieve(State(api): State<Api>, Path(id): Path<String>) -> Result<Response, OpenAiError> {
    resident(&api).into_iter().find(|m| m.id == id).map(|m| axum::Json(m).into_response()).ok_or_else(|| {
        OpenAiError::not_found(Some("model"), "model_not_found", format!("model {id:?} is not resident on this host"))
    })
}
