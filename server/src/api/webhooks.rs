//! `/v2/webhooks`: the outbox's deliveries, so failed ones are visible.

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::IntoParams;

use super::{Api, ApiError, ApiQuery, list};
use crate::db::{OutboxStatus, rfc3339};

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    /// `pending`, `delivered` or `failed`.
    pub status: Option<String>,
    /// A conversation or replica id.
    pub subject_id: Option<String>,
    pub limit: Option<i64>,
    pub page: Option<i64>,
}

#[utoipa::path(get, path = "/v2/webhooks", params(Filter), tag = "webhooks",
    responses((status = 200, description = "{data, total_count}: deliveries, newest first")))]
pub async fn list_all(State(api): State<Api>, ApiQuery(f): ApiQuery<Filter>) -> Result<axum::Json<Value>, ApiError> {
    let status = match f.status.as_deref() {
        None => None,
        Some("pending") => Some(OutboxStatus::Pending),
        Some("delivered") => Some(OutboxStatus::Delivered),
        Some("failed") => Some(OutboxStatus::Failed),
        Some(other) => {
            return Err(ApiError::bad_request(format!("status {other:?}: expected pending, delivered or failed")));
        }
    };
    let (limit, offset) = super::Page { limit: f.limit, page: f.page }.limit_offset()?;
    let (rows, total) = api.db().deliveries(status, f.subject_id.as_deref(), limit, offset).await?;
    let data = rows
        .into_iter()
        .map(|r| {
            json!({
                "delivery_id": r.id, "subject_id": r.subject_id, "event_type": r.event_type, "url": r.url,
                "status": r.status, "attempts": r.attempts, "last_error": r.last_error,
                "created_at": rfc3339(r.created_us),
            })
        })
        .collect();
    Ok(list(data, total))
}

pub fn routes() -> Router<Api> {
    Router::new().route("/webhooks", get(list_all))
}
