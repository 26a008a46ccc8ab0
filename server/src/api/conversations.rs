//! `/v2/conversations`: create a call (→ a meeting URL on this host), read
//! it (with events and transcript when `?verbose=true`), list, end, delete.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};

use super::{Api, ApiError, ApiJson, ApiQuery, Page, check_callback_url, list};
use crate::db::ConversationRow;
use crate::db::conversations::NewConversation;
use crate::lifecycle::ShutdownReason;

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct Properties {
    /// Seconds (default 3600).
    pub max_call_duration: Option<u64>,
    /// Seconds after the participant leaves (default 0).
    pub participant_left_timeout: Option<u64>,
    /// Seconds with no face and no voice (default 300).
    pub participant_absent_timeout: Option<u64>,
    pub enable_recording: Option<bool>,
    pub enable_closed_captions: Option<bool>,
    pub language: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct CreateConversation {
    pub replica_id: Option<String>,
    pub persona_id: Option<String>,
    pub callback_url: Option<String>,
    pub conversation_name: Option<String>,
    pub conversational_context: Option<String>,
    pub custom_greeting: Option<String>,
    pub audio_only: Option<bool>,
    pub require_auth: Option<bool>,
    pub properties: Option<Properties>,
}

const MAX_DURATION: u64 = 24 * 3600;

fn conversation_url(api: &Api, id: &str) -> String {
    format!("{}/c/{id}", api.config.public_url.trim_end_matches('/'))
}

fn view(api: &Api, row: &ConversationRow) -> Value {
    json!({
        "conversation_id": row.id,
        "conversation_name": row.document["conversation_name"],
        // On the host that runs the call, recorded when it was created.
        "conversation_url": row.document["host_url"].as_str()
            .map_or_else(|| conversation_url(api, &row.id), |base| format!("{base}/c/{}", row.id)),
        "status": row.status,
        "replica_id": row.replica_id,
        "persona_id": row.persona_id,
        "callback_url": row.callback_url,
        "properties": row.document["properties"],
        "created_at": row.created_at,
        "ended_at": row.ended_at,
        "shutdown_reason": row.shutdown_reason,
    })
}

#[utoipa::path(post, path = "/v2/conversations", request_body = CreateConversation, tag = "conversations",
    responses((status = 200, description = "conversation_id, conversation_url, status, meeting_token when require_auth"),
              (status = 400, body = super::ErrorBody)))]
pub async fn create(
    State(api): State<Api>,
    ApiJson(mut req): ApiJson<CreateConversation>,
) -> Result<axum::Json<Value>, ApiError> {
    let persona = match &req.persona_id {
        Some(pid) => Some(
            api.db()
                .persona(pid)
                .await?
                .ok_or_else(|| ApiError::bad_request(format!("persona_id {pid:?} is not a persona")))?,
        ),
        None => None,
    };
    let replica_id = req
        .replica_id
        .clone()
        .or_else(|| persona.as_ref().and_then(|p| p.document["default_replica_id"].as_str().map(str::to_string)))
        .ok_or_else(|| {
            ApiError::bad_request("give replica_id, or a persona_id whose persona has a default_replica_id")
        })?;
    let replica = api
        .db()
        .replica(&replica_id)
        .await?
        .ok_or_else(|| ApiError::bad_request(format!("replica_id {replica_id:?} is not a replica")))?;
    if replica.status == "error" {
        return Err(ApiError::bad_request(format!(
            "replica {replica_id} failed training: {}",
            replica.error_message.unwrap_or_default()
        )));
    }
    if let Some(url) = &req.callback_url {
        check_callback_url(&api, url).await?;
    }
    let props = req.properties.get_or_insert_with(Properties::default);
    let max = *props.max_call_duration.get_or_insert(3600);
    let left = *props.participant_left_timeout.get_or_insert(0);
    let absent = *props.participant_absent_timeout.get_or_insert(300);
    if max == 0 || max > MAX_DURATION || left > MAX_DURATION || absent > MAX_DURATION {
        return Err(ApiError::bad_request(format!(
            "properties: max_call_duration must be 1–{MAX_DURATION} s, and the timeouts at most {MAX_DURATION} s"
        )));
    }
    let token = req.require_auth.unwrap_or(false).then(|| crate::ids::random_token(24));
    let token_hash = token.as_deref().map(crate::db::keys::hash_key);
    let mut document = serde_json::to_value(&req).unwrap_or_default();
    document["replica_id"] = Value::String(replica_id.clone());
    // The base URL of this host, which runs the call (several hosts may share a database).
    document["host_url"] = Value::String(api.config.public_url.trim_end_matches('/').to_string());
    let row = api
        .db()
        .insert_conversation(NewConversation {
            document: &document,
            replica_id: Some(&replica_id),
            persona_id: req.persona_id.as_deref(),
            callback_url: req.callback_url.as_deref(),
            meeting_token_hash: token_hash.as_deref(),
            host: api.host.host_id(),
        })
        .await?;
    api.host.run(&row);
    let mut out = view(&api, &row);
    if let Some(token) = token {
        out["meeting_token"] = Value::String(token);
    }
    Ok(axum::Json(out))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct Verbose {
    /// Add the event log and the transcript.
    pub verbose: Option<bool>,
}

#[utoipa::path(get, path = "/v2/conversations/{conversation_id}", params(Verbose), tag = "conversations",
    responses((status = 200, description = "the conversation"), (status = 404, body = super::ErrorBody)))]
pub async fn get_one(
    State(api): State<Api>,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<Verbose>,
) -> Result<axum::Json<Value>, ApiError> {
    let row = api.db().conversation(&id).await?.ok_or_else(|| ApiError::not_found("conversation", &id))?;
    let mut out = view(&api, &row);
    if q.verbose.unwrap_or(false) {
        let events: Vec<Value> = api.db().events(&id).await?.into_iter().map(|e| e.document).collect();
        let utterances: Vec<Value> = api
            .db()
            .utterances(&id)
            .await?
            .into_iter()
            .map(|u| json!({"role": u.role, "content": u.content, "started_at": u.started_at, "ended_at": u.ended_at, "interrupted": u.interrupted}))
            .collect();
        out["events"] = Value::Array(events);
        out["transcript"] = Value::Array(api.host.transcript(&row).await?);
        out["utterances"] = Value::Array(utterances);
    }
    Ok(axum::Json(out))
}

#[utoipa::path(get, path = "/v2/conversations", params(Page), tag = "conversations", responses((status = 200, description = "{data, total_count}")))]
pub async fn list_all(State(api): State<Api>, ApiQuery(page): ApiQuery<Page>) -> Result<axum::Json<Value>, ApiError> {
    let (limit, offset) = page.limit_offset()?;
    let (rows, total) = api.db().list_conversations(limit, offset).await?;
    Ok(list(rows.iter().map(|r| view(&api, r)).collect(), total))
}

#[utoipa::path(post, path = "/v2/conversations/{conversation_id}/end", tag = "conversations",
    responses((status = 200, description = "ended (or had already ended)"), (status = 404, body = super::ErrorBody)))]
pub async fn end(State(api): State<Api>, Path(id): Path<String>) -> Result<axum::Json<Value>, ApiError> {
    if api.db().conversation(&id).await?.is_none() {
        return Err(ApiError::not_found("conversation", &id));
    }
    let ended_now = api.host.end(&id, ShutdownReason::EndConversationEndpointHit).await?;
    let row = api.db().conversation(&id).await?.ok_or_else(|| ApiError::not_found("conversation", &id))?;
    let mut out = view(&api, &row);
    out["ended_now"] = Value::Bool(ended_now);
    Ok(axum::Json(out))
}

#[utoipa::path(delete, path = "/v2/conversations/{conversation_id}", tag = "conversations",
    responses((status = 204, description = "ended if active, then deleted"), (status = 404, body = super::ErrorBody)))]
pub async fn delete(State(api): State<Api>, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    if api.db().conversation(&id).await?.is_none() {
        return Err(ApiError::not_found("conversation", &id));
    }
    api.host.end(&id, ShutdownReason::Deleted).await?;
    if api.db().delete_conversation(&id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("conversation", &id))
    }
}

pub fn routes() -> Router<Api> {
    Router::new()
        .route("/conversations", get(list_all).post(create))
        .route("/conversations/{id}", get(get_one).delete(delete))
        .route("/conversations/{id}/end", post(end))
}
