//! The HTTP service through `Router::oneshot`: health, readiness, metrics, status page.

use axum::body::{Body, to_bytes};
use axum::http::{Request, StatusCode};
use tete_engine::models::{Manifest, Store};
use tete_engine::{DeviceRequest, Devices};
use tete_server::http::{AppState, router};
use tower::ServiceExt;

mod common;

async fn app() -> axum::Router {
    let home = tempfile::tempdir().unwrap();
    let devices = Devices::select(DeviceRequest::Cpu).unwrap();
    let db = common::databases().await.remove(0);
    let api = common::app(&db.url).await.api;
    router(AppState::new(Manifest::embedded().unwrap(), Store::new(home.path()), &devices, api))
}

async fn get(app: &axum::Router, path: &str) -> (StatusCode, String) {
    let response = app.clone().oneshot(Request::get(path).body(Body::empty()).unwrap()).await.unwrap();
    let status = response.status();
    let body = to_bytes(response.into_body(), 1 << 20).await.unwrap();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

#[tokio::test]
async fn health_readiness_metrics_and_status() {
    let app = app().await;
    let (status, body) = get(&app, "/healthz").await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("\"status\":\"ok\""), "{body}");

    let (status, body) = get(&app, "/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "no conversation loop on this host: not ready for calls");
    assert!(body.contains("runs no conversation loop"), "{body}");

    let (status, body) = get(&app, "/").await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("silero-vad") && body.contains("missing") && body.contains("render adapter"), "{body}");
    assert!(body.contains("/c/{id}") && body.contains("hears, answers and speaks"), "{body}");

    let (status, body) = get(&app, "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("tete_build_info"), "{body}");
    assert!(body.contains("tete_http_requests_total") && body.contains("path=\"/healthz\""), "{body}");

    let (status, _) = get(&app, "/no/such/page").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
