//! The `tete` binary killed with SIGKILL mid-delivery and restarted: every
//! webhook still arrives, in order, signed, with stable delivery ids, and
//! the conversation that was active is resumed.

mod common;

use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{KEY, Receiver, Server, eventually};
use serde_json::{Value, json};

/// Starts `tete serve` on a free loopback port with the given database. The
/// models come from the default home (the test command fetches them).
fn start(db_url: &str, uploads: &std::path::Path) -> Server {
    let secret = std::str::from_utf8(common::SECRET).unwrap();
    let mut args = vec!["--database-url", db_url, "--upload-root", uploads.to_str().unwrap()];
    args.extend(["--webhook-secret", secret, "--webhook-lease-secs", "1", "--webhook-timeout-secs", "1"]);
    args.extend(["--webhook-retry-base-ms", "100", "--host-id", "crash-test-host"]);
    common::serve(&args)
}

async fn call(base: &str, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
    let client = reqwest::Client::new();
    let mut req = client.request(method, format!("{base}{path}")).header("x-api-key", KEY);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    assert!(resp.status().is_success(), "{path}: {}", resp.status());
    resp.json().await.unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_survive_kill_9_mid_delivery() {
    for db in common::databases().await {
        eprintln!("backend: {}", db.label);
        kill_9_mid_delivery(&db.url).await;
    }
}

async fn kill_9_mid_delivery(db_url: &str) {
    let dir = tempfile::tempdir().unwrap();
    let hooks = Receiver::start(0).await;
    hooks.hang.store(true, Ordering::SeqCst);

    let server = start(db_url, dir.path());
    let post = reqwest::Method::POST;
    let c1 = call(
        &server.base,
        post.clone(),
        "/v2/conversations",
        Some(json!({"replica_id": "rstockastronaut", "callback_url": hooks.url})),
    )
    .await;
    let c2 = call(
        &server.base,
        post.clone(),
        "/v2/conversations",
        Some(json!({"replica_id": "rstockastronaut", "callback_url": hooks.url})),
    )
    .await;
    let (id1, id2) =
        (c1["conversation_id"].as_str().unwrap().to_string(), c2["conversation_id"].as_str().unwrap().to_string());
    call(&server.base, post.clone(), &format!("/v2/conversations/{id1}/end"), None).await;

    // Wait until the first delivery is in flight (held by the receiver), then SIGKILL.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while hooks.held.load(Ordering::SeqCst) == 0 {
        assert!(std::time::Instant::now() < deadline, "no delivery attempt reached the receiver");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(server); // Child::kill sends SIGKILL: no graceful shutdown
    hooks.hang.store(false, Ordering::SeqCst);

    let server = start(db_url, dir.path());
    // The conversation that was active when the host died is running again: end it.
    call(&server.base, post.clone(), &format!("/v2/conversations/{id2}/end"), None).await;
    let got = hooks.wait_for(4, Duration::from_secs(20)).await;
    assert_eq!(got.len(), 4, "{got:?}");
    assert!(got.iter().all(|r| r.signature_ok));
    let of = |id: &str| {
        got.iter()
            .filter(|r| r.body["conversation_id"] == id)
            .map(|r| r.body["event_type"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(of(&id1), ["system.shutdown", "application.transcription_ready"], "ordered per conversation");
    assert_eq!(of(&id2), ["system.shutdown", "application.transcription_ready"]);
    let reasons: Vec<&Value> = got
        .iter()
        .filter(|r| r.body["event_type"] == "system.shutdown")
        .map(|r| &r.body["properties"]["shutdown_reason"])
        .collect();
    assert!(reasons.iter().all(|r| *r == "end_conversation_endpoint_hit"), "{reasons:?}");
    // At-least-once: any redelivery carries the same delivery id.
    let raw = hooks.got.lock().unwrap().len();
    assert!(raw >= 4);
    let deliveries = eventually(Duration::from_secs(10), || async {
        let d = call(&server.base, reqwest::Method::GET, "/v2/webhooks?status=delivered&limit=100", None).await;
        (d["total_count"] == 4).then_some(())
    })
    .await;
    let listed = call(&server.base, reqwest::Method::GET, "/v2/webhooks?limit=100", None).await;
    assert!(deliveries.is_some(), "every event is recorded as delivered: {listed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_ends_calls_with_host_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let db_url = tete_server::db::Db::sqlite_url(dir.path());
    let hooks = Receiver::start(0).await;
    let server = start(&db_url, dir.path());
    let c = call(
        &server.base,
        reqwest::Method::POST,
        "/v2/conversations",
        Some(json!({"replica_id": "rstockastronaut", "callback_url": hooks.url})),
    )
    .await;
    // SIGTERM: the host ends its calls before exiting.
    let pid = server.child.id();
    let status = Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap();
    assert!(status.success());
    let got = hooks.wait_for(2, Duration::from_secs(15)).await;
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[0].body["conversation_id"], c["conversation_id"]);
    assert_eq!(got[0].body["properties"]["shutdown_reason"], "host_shutdown");
}
