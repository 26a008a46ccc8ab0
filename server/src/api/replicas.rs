//! `/v2/replicas`: the face and voice. A replica is made from a training
//! video or a photo (by URL, a file under the upload root, or a multipart
//! upload streamed to disk with a size cap). Training runs in the
//! background (`crate::training`); a host without face models leaves a new
//! replica `started` at 0/100.

use axum::Router;
use axum::extract::{Multipart, Path, Request, State};
use axum::http::{StatusCode, header};
use axum::routing::{get, patch};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use utoipa::ToSchema;

use super::{Api, ApiError, ApiJson, ApiQuery, Page, check_callback_url, list};
use crate::db::ReplicaRow;
use crate::db::replicas::NewReplica;

/// The replica that ships with every host, from a public-domain NASA portrait.
pub const STOCK_REPLICA_ID: &str = "rstockastronaut";

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateReplica {
    pub replica_name: String,
    /// A few minutes of a person talking, with still, silent pauses.
    pub train_video_url: Option<String>,
    /// One frontal photo.
    pub train_image_url: Option<String>,
    pub voice_name: Option<String>,
    pub callback_url: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Rename {
    pub replica_name: String,
}

fn view(row: &ReplicaRow) -> Value {
    json!({
        "replica_id": row.id,
        "replica_name": row.replica_name,
        "status": row.status,
        "training_progress": row.training_progress,
        "error_message": row.error_message,
        "voice_name": row.voice_name,
        "callback_url": row.callback_url,
        "stock": row.stock,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
    })
}

/// Adds the stock replica if it is missing.
pub async fn ensure_stock(api: &Api) -> Result<(), crate::db::DbError> {
    if api.db().replica(STOCK_REPLICA_ID).await?.is_none() {
        api.db()
            .insert_replica(NewReplica {
                id: Some(STOCK_REPLICA_ID),
                replica_name: "Astronaut (stock)",
                status: "started",
                source_kind: "image",
                source: "model:astronaut-portrait",
                voice_name: None,
                callback_url: None,
                stock: true,
            })
            .await?;
    }
    Ok(())
}

/// Checks a training URL: http(s), or file:// inside the upload root.
fn check_source(api: &Api, url: &str) -> Result<String, ApiError> {
    let parsed = url::Url::parse(url).map_err(|e| ApiError::bad_request(format!("training URL {url:?}: {e}")))?;
    match parsed.scheme() {
        "http" | "https" if parsed.host_str().is_some() => Ok(url.to_string()),
        "file" => {
            // One answer for every refusal, so the API tells nothing about
            // files outside the upload root.
            let refuse = || ApiError::bad_request(format!("{url} is not a file under the upload root"));
            let path = parsed.to_file_path().map_err(|_| refuse())?;
            let root = api.config.upload_root.canonicalize().map_err(|_| refuse())?;
            let real = path.canonicalize().map_err(|_| refuse())?;
            if !real.starts_with(&root) || !real.is_file() {
                return Err(refuse());
            }
            url::Url::from_file_path(&real).map(|u| u.to_string()).map_err(|_| refuse())
        }
        other => Err(ApiError::bad_request(format!("training URL scheme {other:?}: use http, https or file"))),
    }
}

async fn insert(api: &Api, req: &CreateReplica, kind: &str, source: &str) -> Result<axum::Json<Value>, ApiError> {
    if req.replica_name.trim().is_empty() {
        return Err(ApiError::bad_request("replica_name must not be empty"));
    }
    if let Some(url) = &req.callback_url {
        check_callback_url(api, url).await?;
    }
    let row = api
        .db()
        .insert_replica(NewReplica {
            id: None,
            replica_name: &req.replica_name,
            status: "started",
            source_kind: kind,
            source,
            voice_name: req.voice_name.as_deref(),
            callback_url: req.callback_url.as_deref(),
            stock: false,
        })
        .await?;
    crate::training::start(api, row.id.clone());
    Ok(axum::Json(json!({"replica_id": row.id, "status": row.status})))
}

/// Takes a multipart upload; whatever fails, nothing of it stays on disk.
async fn upload(api: &Api, form: Multipart) -> Result<axum::Json<Value>, ApiError> {
    let dir = api.config.upload_root.join("replicas").join(crate::ids::random_token(8));
    let result = upload_into(api, form, &dir).await;
    if result.is_err() {
        let _ = tokio::fs::remove_dir_all(&dir).await;
    }
    result
}

/// Streams a multipart upload's `file` field into `dir`, refusing it past the cap.
async fn upload_into(api: &Api, mut form: Multipart, dir: &std::path::Path) -> Result<axum::Json<Value>, ApiError> {
    let bad = |e: axum::extract::multipart::MultipartError| ApiError::new(e.status(), "bad_request", e.body_text());
    let mut name = None;
    let mut voice = None;
    let mut callback = None;
    let mut saved: Option<(String, std::path::PathBuf)> = None;
    while let Some(mut field) = form.next_field().await.map_err(bad)? {
        match field.name().unwrap_or_default() {
            "replica_name" => name = Some(field.text().await.map_err(bad)?),
            "voice_name" => voice = Some(field.text().await.map_err(bad)?),
            "callback_url" => callback = Some(field.text().await.map_err(bad)?),
            "file" => {
                let content_type = field.content_type().unwrap_or_default().to_string();
                let kind = if content_type.starts_with("video/") {
                    "video"
                } else if content_type.starts_with("image/") {
                    "image"
                } else {
                    return Err(ApiError::new(
                        StatusCode::UNSUPPORTED_MEDIA_TYPE,
                        "unsupported_media_type",
                        format!("file must be image/* or video/*, got {content_type:?}"),
                    ));
                };
                tokio::fs::create_dir_all(dir)
                    .await
                    .map_err(|e| ApiError::internal("creating the upload folder", e))?;
                let path = dir.join("source");
                let mut file =
                    tokio::fs::File::create(&path).await.map_err(|e| ApiError::internal("storing the upload", e))?;
                let mut total = 0usize;
                while let Some(chunk) = field.chunk().await.map_err(bad)? {
                    total += chunk.len();
                    if total > api.config.max_upload_bytes {
                        return Err(ApiError::new(
                            StatusCode::PAYLOAD_TOO_LARGE,
                            "payload_too_large",
                            format!("the upload exceeds {} bytes", api.config.max_upload_bytes),
                        ));
                    }
                    file.write_all(&chunk).await.map_err(|e| ApiError::internal("storing the upload", e))?;
                }
                file.sync_all().await.ok();
                saved = Some((kind.to_string(), path));
            }
            other => return Err(ApiError::bad_request(format!("unknown form field {other:?}"))),
        }
    }
    let Some((kind, path)) = saved else {
        return Err(ApiError::bad_request("the form has no file field"));
    };
    let req = CreateReplica {
        replica_name: name.unwrap_or_default(),
        train_video_url: None,
        train_image_url: None,
        voice_name: voice,
        callback_url: callback,
    };
    let source =
        url::Url::from_file_path(&path).map_err(|_| ApiError::internal("recording the upload", path.display()))?;
    insert(api, &req, &kind, source.as_str()).await
}

#[utoipa::path(post, path = "/v2/replicas", request_body = CreateReplica, tag = "replicas",
    responses((status = 200, description = "{replica_id, status: started}"), (status = 400, body = super::ErrorBody), (status = 413, body = super::ErrorBody)))]
pub async fn create(State(api): State<Api>, request: Request) -> Result<axum::Json<Value>, ApiError> {
    let is_multipart = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("multipart/form-data"));
    if is_multipart {
        use axum::extract::FromRequest;
        let form = Multipart::from_request(request, &()).await.map_err(|e| ApiError::bad_request(e.body_text()))?;
        return upload(&api, form).await;
    }
    // JSON bodies are small; only uploads get the large limit.
    let is_json = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !is_json {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send application/json, or multipart/form-data with a file",
        ));
    }
    let body = axum::body::to_bytes(request.into_body(), super::MAX_JSON_BYTES).await.map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("JSON bodies are limited to {} bytes", super::MAX_JSON_BYTES),
        )
    })?;
    let req: CreateReplica =
        serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(format!("invalid replica request: {e}")))?;
    let (kind, url) = match (&req.train_video_url, &req.train_image_url) {
        (Some(v), None) => ("video", v),
        (None, Some(i)) => ("image", i),
        _ => return Err(ApiError::bad_request("give exactly one of train_video_url and train_image_url")),
    };
    if url.starts_with("http") {
        check_callback_url(&api, url)
            .await
            .map_err(|e| ApiError::bad_request(e.message.replace("callback_url", "training URL")))?;
    }
    let source = check_source(&api, url)?;
    insert(&api, &req, kind, &source).await
}

#[utoipa::path(get, path = "/v2/replicas/{replica_id}", tag = "replicas",
    responses((status = 200, description = "the replica"), (status = 404, body = super::ErrorBody)))]
pub async fn get_one(State(api): State<Api>, Path(id): Path<String>) -> Result<axum::Json<Value>, ApiError> {
    let row = api.db().replica(&id).await?.ok_or_else(|| ApiError::not_found("replica", &id))?;
    Ok(axum::Json(view(&row)))
}

#[utoipa::path(get, path = "/v2/replicas", params(Page), tag = "replicas", responses((status = 200, description = "{data, total_count}")))]
pub async fn list_all(State(api): State<Api>, ApiQuery(page): ApiQuery<Page>) -> Result<axum::Json<Value>, ApiError> {
    let (limit, offset) = page.limit_offset()?;
    let (rows, total) = api.db().list_replicas(limit, offset).await?;
    Ok(list(rows.iter().map(view).collect(), total))
}

#[utoipa::path(patch, path = "/v2/replicas/{replica_id}/name", request_body = Rename, tag = "replicas",
    responses((status = 200, description = "renamed"), (status = 404, body = super::ErrorBody)))]
pub async fn rename(
    State(api): State<Api>,
    Path(id): Path<String>,
    ApiJson(r): ApiJson<Rename>,
) -> Result<axum::Json<Value>, ApiError> {
    if r.replica_name.trim().is_empty() {
        return Err(ApiError::bad_request("replica_name must not be empty"));
    }
    if !api.db().rename_replica(&id, &r.replica_name).await? {
        return Err(ApiError::not_found("replica", &id));
    }
    get_one(State(api), Path(id)).await
}

#[utoipa::path(delete, path = "/v2/replicas/{replica_id}", tag = "replicas",
    responses((status = 204, description = "deleted"), (status = 404, body = super::ErrorBody), (status = 409, body = super::ErrorBody)))]
pub async fn delete(State(api): State<Api>, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    let row = api.db().replica(&id).await?.ok_or_else(|| ApiError::not_found("replica", &id))?;
    if row.stock {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            "stock replicas ship with the host and cannot be deleted",
        ));
    }
    api.db().delete_replica(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub fn routes() -> Router<Api> {
    Router::new()
        .route("/replicas", get(list_all).post(create))
        .route("/replicas/{id}", get(get_one).delete(delete))
        .route("/replicas/{id}/name", patch(rename))
}
