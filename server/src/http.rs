//! The HTTP service. For now: a status page, health, readiness and
//! Prometheus metrics; the `/v2` API and the meeting page land with the
//! control plane and WebRTC edge.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde_json::json;
use tete_engine::Devices;
use tete_engine::models::{Manifest, Store};

/// What the handlers share; immutable after start-up.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
    api: crate::api::Api,
}

struct Inner {
    started: Instant,
    devices: Vec<String>,
    models: Vec<(String, String, String)>,
    metrics: PrometheusHandle,
}

/// The process-wide Prometheus recorder (metrics has one global recorder).
fn prometheus() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            // Fails only if another recorder was installed first; then our
            // handle renders nothing, which the metrics test would catch.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

impl AppState {
    pub fn new(manifest: Manifest, store: Store, devices: &Devices, api: crate::api::Api) -> Self {
        let models = manifest
            .models
            .iter()
            .map(|m| {
                let state = store.state(m).map(|s| s.to_string()).unwrap_or_else(|e| format!("error: {e}"));
                (m.id.clone(), m.stage.clone(), state)
            })
            .collect::<Vec<_>>();
        let ready = models.iter().filter(|(_, _, s)| s == "verified" || s == "built in").count();
        let metrics = prometheus();
        metrics::gauge!("tete_models_ready").set(ready as f64);
        metrics::gauge!("tete_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
        Self {
            inner: Arc::new(Inner { started: Instant::now(), devices: devices.report.clone(), models, metrics }),
            api,
        }
    }
}

pub fn router(state: AppState) -> Router {
    let api = crate::api::router(state.api.clone());
    Router::new()
        .route("/", get(status_page))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(state)
        .merge(api)
        .layer(middleware::from_fn(count_requests))
}

pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    axum::serve(listener, router(state)).with_graceful_shutdown(shutdown).await?;
    Ok(())
}

/// Resolves on SIGINT or SIGTERM. The handlers are installed here, before
/// the returned future is first polled, so a signal that arrives as soon as
/// the host says it is serving is not lost to the default action.
pub fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()> + Send + 'static> {
    #[cfg(unix)]
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    #[cfg(unix)]
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    Ok(async move {
        #[cfg(unix)]
        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutting down");
    })
}

async fn count_requests(request: Request, next: Next) -> Response {
    let path =
        request.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned()).unwrap_or_else(|| "unmatched".into());
    let response = next.run(request).await;
    metrics::counter!("tete_http_requests_total", "path" => path, "status" => response.status().as_u16().to_string())
        .increment(1);
    response
}

async fn healthz(State(state): State<AppState>) -> impl IntoResponse {
    axum::Json(json!({ "status": "ok", "uptime_seconds": state.inner.started.elapsed().as_secs() }))
}

/// Ready for another call: this host runs the conversation loop and its
/// executor has room (sessions under the limit, load under the mark). A
/// load balancer sends new calls elsewhere while it says no; calls already
/// here go on.
async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let executor = state.api.edge.as_ref().and_then(|edge| edge.executor());
    let Some(executor) = executor else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({ "ready": false, "reason": "this host runs no conversation loop" })),
        );
    };
    let figures = json!({
        "sessions": executor.sessions(),
        "max_sessions": executor.max_sessions,
        "load": (executor.load() * 1000.0).round() / 1000.0,
    });
    if executor.accepting() {
        (StatusCode::OK, axum::Json(json!({ "ready": true, "executor": figures })))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({ "ready": false, "reason": "at capacity", "executor": figures })),
        )
    }
}

async fn metrics_text(State(state): State<AppState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.inner.metrics.render())
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

async fn status_page(State(state): State<AppState>) -> Html<String> {
    let devices: String = state.inner.devices.iter().map(|d| format!("<li>{}</li>", escape(d))).collect();
    let models: String = state
        .inner
        .models
        .iter()
        .map(|(id, stage, s)| {
            format!("<tr><td>{}</td><td>{}</td><td>{}</td></tr>", escape(id), escape(stage), escape(s))
        })
        .collect();
    Html(format!(
        "<!doctype html><html><head><meta charset=utf-8><title>tete</title></head><body>\
         <h1>tete {version}</h1>\
         <p>This host serves the <code>/v2</code> API (<a href=/v2/openapi.json>OpenAPI</a>): personas, replicas, \
         conversations and their webhooks; each conversation's meeting page (<code>/c/{{id}}</code>) joins its call \
         over WebRTC, where the replica hears, answers and speaks with its face. <a href=/readyz>/readyz</a> \
         says whether this host takes another call.</p>\
         <h2>Devices</h2><ul>{devices}</ul>\
         <h2>Models</h2><table><tr><th>id</th><th>stage</th><th>state</th></tr>{models}</table>\
         <p><a href=/healthz>/healthz</a> · <a href=/readyz>/readyz</a> · <a href=/metrics>/metrics</a></p>\
         </body></html>",
        version = env!("CARGO_PKG_VERSION"),
    ))
}
