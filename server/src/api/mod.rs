//! The `/v2` REST API (shared/API.md): replicas, personas, conversations,
//! webhook deliveries, with `x-api-key` auth, `{error, message}` errors and
//! an OpenAPI document generated from the code.

pub mod audio;
pub mod chat;
mod conversations;
pub mod models;
mod openapi;
pub mod personas;
pub mod replicas;
pub mod speech;
mod webhooks;

use std::sync::Arc;

use axum::Router;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::http::{HeaderMap, StatusCode, header, request::Parts};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use utoipa::{IntoParams, ToSchema};

use crate::conversations::Host;
use crate::db::{Db, DbError};

/// Settings of the API.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// A key accepted besides the stored ones (`TETE_API_KEY`).
    pub api_key: Option<String>,
    /// Base URL of this host, for `conversation_url`.
    pub public_url: String,
    /// Refuse callback URLs that point at private, loopback or link-local addresses.
    pub forbid_private_callbacks: bool,
    /// Folder under which `file://` training URLs and uploads may live.
    pub upload_root: std::path::PathBuf,
    /// Largest accepted replica upload.
    pub max_upload_bytes: usize,
    /// The models this host can load (personas may name them).
    pub models: Arc<tete_engine::models::Manifest>,
    /// The resident speech recogniser behind `/v1/audio/transcriptions` (503 without one).
    pub speech: Option<audio::Recogniser>,
    /// The resident voice behind `/v1/audio/speech` and `/v2/voices` (503 and an empty list without one).
    pub voice: Option<speech::Synthesiser>,
    /// The resident LLM behind `/v1/chat/completions` (503 without one).
    pub chat: Option<chat::ChatModel>,
    /// Replica training (without it, new replicas stay `started` at 0/100).
    pub training: Option<crate::training::TrainingConfig>,
}

/// What the API handlers share.
#[derive(Debug, Clone)]
pub struct Api {
    pub config: Arc<ApiConfig>,
    pub host: Arc<Host>,
    /// The WebRTC edge behind `{conversation_url}/whip` (503 without one).
    pub edge: Option<Arc<crate::edge::Edge>>,
}

impl Api {
    pub fn db(&self) -> &Db {
        self.host.db()
    }
}

/// An API error: a status and `{"error": code, "message": text}`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub error: &'static str,
    pub message: String,
}

/// The error body.
#[derive(Debug, serde::Serialize, ToSchema)]
pub struct ErrorBody {
    /// A stable code: `bad_request`, `unauthorized`, `not_found`, `conflict`, `payload_too_large`, `internal`…
    pub error: String,
    /// What was wrong, for a person.
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, error: &'static str, message: impl Into<String>) -> Self {
        Self { status, error, message: message.into() }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// A server-side failure: logged in full, reported without internals.
    pub fn internal(what: &str, detail: impl std::fmt::Display) -> Self {
        tracing::error!("{what}: {detail}");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", format!("{what} failed; the request was not applied"))
    }

    pub fn not_found(what: &str, id: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", format!("no {what} with id {id:?}"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(json!({"error": self.error, "message": self.message}))).into_response()
    }
}

impl From<DbError> for ApiError {
    fn from(e: DbError) -> Self {
        tracing::error!("storage: {e}");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "storage error; the request was not applied")
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        let status = r.status();
        let error = match status {
            StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
            StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
            _ => "bad_request",
        };
        // 422 (well-formed JSON of the wrong shape) is reported as 400 with the reason.
        let status = if status == StatusCode::UNPROCESSABLE_ENTITY { StatusCode::BAD_REQUEST } else { status };
        Self::new(status, error, r.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        Self::bad_request(r.body_text())
    }
}

/// `Json` whose rejections are API errors.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let axum::Json(v) = axum::Json::<T>::from_request(req, state).await?;
        Ok(Self(v))
    }
}

/// `Query` whose rejections are API errors.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let axum::extract::Query(v) = axum::extract::Query::<T>::from_request_parts(parts, state).await?;
        Ok(Self(v))
    }
}

/// `limit` and `page` of every list.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct Page {
    /// Items per page, 1–100 (default 10).
    pub limit: Option<i64>,
    /// Page number from 1 (default 1).
    pub page: Option<i64>,
}

impl Page {
    pub fn limit_offset(&self) -> Result<(i64, i64), ApiError> {
        let limit = self.limit.unwrap_or(10);
        let page = self.page.unwrap_or(1);
        if !(1..=100).contains(&limit) {
            return Err(ApiError::bad_request("limit must be between 1 and 100"));
        }
        if page < 1 {
            return Err(ApiError::bad_request("page starts at 1"));
        }
        let offset = (page - 1).checked_mul(limit).ok_or_else(|| ApiError::bad_request("page is too large"))?;
        Ok((limit, offset))
    }
}

/// Every list answers `{data, total_count}`.
pub fn list<T: serde::Serialize>(data: Vec<T>, total_count: i64) -> axum::Json<serde_json::Value> {
    axum::Json(json!({"data": data, "total_count": total_count}))
}

/// The key a request presents: `x-api-key`, or `Authorization: Bearer`.
fn presented_key(headers: &HeaderMap) -> Option<&str> {
    if let Some(k) = headers.get("x-api-key").and_then(|v| v.to_str().ok()) {
        return Some(k.trim());
    }
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Checks the key a request presents against `TETE_API_KEY` and the stored keys.
async fn authenticate(api: &Api, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(key) = presented_key(headers) else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing API key: send it in the x-api-key header",
        ));
    };
    let env_ok = api.config.api_key.as_deref().is_some_and(|k| constant_time_eq(k.as_bytes(), key.as_bytes()));
    if env_ok || api.db().api_key_valid(key).await? {
        Ok(())
    } else {
        Err(ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "invalid or revoked API key"))
    }
}

async fn require_key(State(api): State<Api>, request: Request, next: Next) -> Response {
    match authenticate(&api, request.headers()).await {
        Ok(()) => next.run(request).await,
        Err(e) => e.into_response(),
    }
}

/// Largest JSON body accepted.
pub const MAX_JSON_BYTES: usize = 1 << 20;

/// The `/v2` routes (auth required), `/v2/openapi.json` (public) and the
/// OpenAI-compatible `/v1` routes (auth required).
pub fn router(api: Api) -> Router {
    let max_upload = api.config.max_upload_bytes;
    let authed = Router::new()
        .merge(personas::routes())
        .merge(conversations::routes())
        .merge(webhooks::routes())
        .merge(speech::voice_routes())
        .layer(axum::extract::DefaultBodyLimit::max(MAX_JSON_BYTES))
        .merge(replicas::routes().layer(axum::extract::DefaultBodyLimit::max(max_upload + 64 * 1024)))
        .layer(middleware::from_fn_with_state(api.clone(), require_key));
    Router::new()
        .nest("/v2", authed.merge(openapi::routes()).with_state(api.clone()))
        .merge(audio::routes(api.clone()))
        .merge(chat::routes(api.clone()))
        .merge(models::routes(api.clone()))
        .merge(speech::routes(api.clone()))
        .merge(crate::edge::routes(api))
}

/// Rejects callback URLs that are not http(s), or (when configured) that
/// point at private, loopback or link-local addresses.
pub async fn check_callback_url(api: &Api, url: &str) -> Result<(), ApiError> {
    let parsed = url::Url::parse(url).map_err(|e| ApiError::bad_request(format!("callback_url {url:?}: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(ApiError::bad_request(format!("callback_url must be http or https, not {}", parsed.scheme())));
    }
    let Some(host) = parsed.host_str() else {
        return Err(ApiError::bad_request("callback_url has no host"));
    };
    if api.config.forbid_private_callbacks {
        let port = parsed.port_or_known_default().unwrap_or(443);
        let addrs = tokio::net::lookup_host((host.trim_matches(['[', ']']), port))
            .await
            .map_err(|e| ApiError::bad_request(format!("callback_url host {host} does not resolve: {e}")))?;
        for addr in addrs {
            if crate::webhooks::is_private(addr.ip()) {
                return Err(ApiError::bad_request(format!(
                    "callback_url points at {} (a private, loopback or link-local address), which this host forbids",
                    addr.ip()
                )));
            }
        }
    }
    Ok(())
}
