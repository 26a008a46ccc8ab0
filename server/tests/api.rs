//! The `/v2` API in process (axum `oneshot`), on SQLite and PostgreSQL.

mod common;

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::{KEY, Receiver, TestApp, app, app_with, databases, eventually};
use serde_json::json;

async fn each_backend<F, Fut>(test: F)
where
    F: Fn(TestApp, &'static str) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    for db in databases().await {
        eprintln!("backend: {}", db.label);
        test(app(&db.url).await, db.label).await;
    }
}

#[tokio::test]
async fn auth_rejects_missing_wrong_and_revoked_keys() {
    each_backend(|t, _| async move {
        let req = |key: Option<&str>| {
            let mut r = Request::get("/v2/personas");
            if let Some(k) = key {
                r = r.header("x-api-key", k);
            }
            r.body(Body::empty()).unwrap()
        };
        let (s, b) = t.send(req(None)).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
        assert_eq!(b["error"], "unauthorized");
        assert!(b["message"].as_str().unwrap().contains("x-api-key"));
        assert_eq!(t.send(req(Some("nope"))).await.0, StatusCode::UNAUTHORIZED);
        assert_eq!(t.send(req(Some(KEY))).await.0, StatusCode::OK);
        let bearer =
            Request::get("/v2/personas").header("authorization", format!("Bearer {KEY}")).body(Body::empty()).unwrap();
        assert_eq!(t.send(bearer).await.0, StatusCode::OK);

        let (row, secret) = t.api.db().create_api_key("ci").await.unwrap();
        assert_eq!(t.send(req(Some(&secret))).await.0, StatusCode::OK);
        assert!(t.api.db().revoke_api_key(&row.id).await.unwrap());
        assert_eq!(t.send(req(Some(&secret))).await.0, StatusCode::UNAUTHORIZED);
        // Keys are stored hashed.
        let stored: Vec<String> =
            sqlx::query_scalar("SELECT key_hash FROM api_keys").fetch_all(t.api.db().pool()).await.unwrap();
        assert!(stored.iter().all(|h| h.len() == 64 && h != &secret));
    })
    .await;
}

#[tokio::test]
async fn personas_create_read_patch_delete_and_hide_secrets() {
    each_backend(|t, _| async move {
        let (s, p) = t
            .call(
                "POST",
                "/v2/personas",
                Some(json!({
                    "persona_name": "Tutor", "system_prompt": "You teach.", "pipeline_mode": "full",
                    "default_replica_id": "rstockastronaut",
                    "layers": {"llm": {"model": "gpt-x", "base_url": "http://127.0.0.1:1/v1", "api_key": "sk-secret",
                                       "tools": [{"type": "function", "function": {"name": "lookup"}}]},
                               "tts": {"voice_settings": {"speed": 1.2}},
                               "conversational_flow": {"turn_taking_patience": "high"}}
                })),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{p}");
        let id = p["persona_id"].as_str().unwrap().to_string();
        assert!(id.starts_with('p'));
        assert!(p["layers"]["llm"].get("api_key").is_none(), "secret returned: {p}");
        assert_eq!(p["layers"]["llm"]["model"], "gpt-x");

        let (s, got) = t.call("GET", &format!("/v2/personas/{id}"), None).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(got["system_prompt"], "You teach.");
        assert!(got["layers"]["llm"].get("api_key").is_none());

        // A valid patch.
        let ops = json!([{"op": "replace", "path": "/system_prompt", "value": "You tutor maths."},
                         {"op": "add", "path": "/context", "value": "Grade 5"}]);
        let (s, patched) = t.call("PATCH", &format!("/v2/personas/{id}"), Some(ops)).await;
        assert_eq!(s, StatusCode::OK, "{patched}");
        assert_eq!(patched["system_prompt"], "You tutor maths.");
        assert_eq!(patched["context"], "Grade 5");
        // The secret survives the patch and is still hidden.
        let stored = t.api.db().persona(&id).await.unwrap().unwrap();
        assert_eq!(stored.document["layers"]["llm"]["api_key"], "sk-secret");

        // Invalid patches change nothing.
        for (ops, want) in [
            (json!([{"op": "replace", "path": "/nope/x", "value": 1}]), "does not apply"),
            (json!([{"op": "add", "path": "/unknown_field", "value": 1}]), "invalid"),
            (json!([{"op": "replace", "path": "/layers/tts/voice_settings/speed", "value": 9.0}]), "out of range 0.5"),
            (json!([{"op": "add", "path": "/layers/tts/voice_settings/emotion", "value": "furious"}]), "unknown emotion"),
            (json!([{"op": "add", "path": "/layers/tts/tts_engine", "value": "http"}]), "needs base_url"),
            (json!([{"op": "add", "path": "/layers/tts/base_url", "value": "http://127.0.0.1:3/v1"}]), "only for tts_engine http"),
            (json!([{"op": "test", "path": "/layers/llm/api_key", "value": "sk-secret"}]), "does not apply"),
            (json!([{"op": "copy", "from": "/layers/llm/api_key", "path": "/persona_name"}]), "does not apply"),
            (json!([{"op": "test", "path": "/layers/llm", "value": {"model": "gpt-x", "base_url": "http://127.0.0.1:1/v1", "api_key": "sk-secret"}}]), "does not apply"),
            (json!({"op": "replace"}), "JSON Patch"),
        ] {
            let (s, b) = t.call("PATCH", &format!("/v2/personas/{id}"), Some(ops.clone())).await;
            assert_eq!(s, StatusCode::BAD_REQUEST, "{ops} → {b}");
            assert!(b["message"].as_str().unwrap().contains(want), "{ops} → {b}");
        }
        let after = t.api.db().persona(&id).await.unwrap().unwrap();
        assert_eq!(after.document, stored.document);
        // Copying the parent carries no secret along.
        let (s, b) = t.call("PATCH", &format!("/v2/personas/{id}"), Some(json!([{"op": "copy", "from": "/layers/llm", "path": "/layers/tts/voice_settings/emotion"}]))).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
        assert!(!b.to_string().contains("sk-secret"), "{b}");
        // Pointing the LLM at another server drops the key given for the old one.
        let (s, b) = t.call("PATCH", &format!("/v2/personas/{id}"), Some(json!([{"op": "replace", "path": "/layers/llm/base_url", "value": "http://127.0.0.1:2/v1"}]))).await;
        assert_eq!(s, StatusCode::OK, "{b}");
        let moved = t.api.db().persona(&id).await.unwrap().unwrap();
        assert!(moved.document["layers"]["llm"].get("api_key").is_none(), "{}", moved.document);
        // The same for an external voice: its key and headers stay with its server.
        let external = json!([{"op": "add", "path": "/layers/tts", "value": {"tts_engine": "http", "base_url": "http://127.0.0.1:3/v1",
                              "api_key": "tts-secret", "headers": {"x-org": "o1"}, "external_voice_id": "nova",
                              "voice_settings": {"emotion": "calm"}}}]);
        let (s, b) = t.call("PATCH", &format!("/v2/personas/{id}"), Some(external)).await;
        assert_eq!(s, StatusCode::OK, "{b}");
        assert!(b["layers"]["tts"].get("api_key").is_none() && b["layers"]["tts"].get("headers").is_none(), "{b}");
        let (s, b) = t.call("PATCH", &format!("/v2/personas/{id}"), Some(json!([{"op": "replace", "path": "/external_voice_id_nope", "value": 1}]))).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
        let kept = t.api.db().persona(&id).await.unwrap().unwrap();
        assert_eq!(kept.document["layers"]["tts"]["api_key"], "tts-secret");
        let (s, b) = t.call("PATCH", &format!("/v2/personas/{id}"), Some(json!([{"op": "replace", "path": "/layers/tts/base_url", "value": "http://127.0.0.1:4/v1"}]))).await;
        assert_eq!(s, StatusCode::OK, "{b}");
        let moved = t.api.db().persona(&id).await.unwrap().unwrap();
        let tts = &moved.document["layers"]["tts"];
        assert!(tts.get("api_key").is_none() && tts.get("headers").is_none(), "{tts}");
        assert_eq!(tts["external_voice_id"], "nova");

        let (s, listed) = t.call("GET", "/v2/personas?limit=5&page=1", None).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(listed["total_count"], 1);
        assert_eq!(listed["data"][0]["persona_id"], id.as_str());

        assert_eq!(t.call("DELETE", &format!("/v2/personas/{id}"), None).await.0, StatusCode::NO_CONTENT);
        let (s, b) = t.call("GET", &format!("/v2/personas/{id}"), None).await;
        assert_eq!((s, b["error"].as_str()), (StatusCode::NOT_FOUND, Some("not_found")));
    })
    .await;
}

#[tokio::test]
async fn bad_input_is_a_clear_4xx_and_changes_nothing() {
    each_backend(|t, _| async move {
        let raw = |body: &str, ct: &str| {
            Request::post("/v2/personas")
                .header("x-api-key", KEY)
                .header("content-type", ct)
                .body(Body::from(body.to_string()))
                .unwrap()
        };
        for (req, status, want) in [
            (raw("{not json", "application/json"), StatusCode::BAD_REQUEST, "parse the request body"),
            (raw(r#"{"persona_name": 5}"#, "application/json"), StatusCode::BAD_REQUEST, "invalid type"),
            (raw(r#"{"persona_nmae": "x"}"#, "application/json"), StatusCode::BAD_REQUEST, "unknown field"),
            (raw(r#"{"persona_name": "x"}"#, "text/plain"), StatusCode::UNSUPPORTED_MEDIA_TYPE, "Content-Type"),
            (
                raw(&format!(r#"{{"context": "{}"}}"#, "a".repeat(2 << 20)), "application/json"),
                StatusCode::PAYLOAD_TOO_LARGE,
                "",
            ),
            (
                raw(r#"{"layers": {"llm": {"model": "no-such-model"}}}"#, "application/json"),
                StatusCode::BAD_REQUEST,
                "not a resident model",
            ),
            (
                raw(r#"{"layers": {"llm": {"base_url": "ftp://x"}}}"#, "application/json"),
                StatusCode::BAD_REQUEST,
                "http(s)",
            ),
            (
                raw(r#"{"layers": {"stt": {"stt_engine": "whisper-huge"}}}"#, "application/json"),
                StatusCode::BAD_REQUEST,
                "whisper-tiny.en",
            ),
            (
                raw(r#"{"layers": {"llm": {"tools": [{"name": "x"}]}}}"#, "application/json"),
                StatusCode::BAD_REQUEST,
                "function tool",
            ),
            (raw(r#"{"default_replica_id": "rnope"}"#, "application/json"), StatusCode::BAD_REQUEST, "not a replica"),
        ] {
            let (s, b) = t.send(req).await;
            assert_eq!(s, status, "{b}");
            assert!(b["error"].is_string() && b["message"].as_str().unwrap().contains(want), "{b}");
        }
        let (_, listed) = t.call("GET", "/v2/personas", None).await;
        assert_eq!(listed["total_count"], 0, "nothing was created");
        for q in ["limit=0", "limit=101", "page=0", "limit=x", "bogus=1"] {
            let (s, b) = t.call("GET", &format!("/v2/personas?{q}"), None).await;
            assert_eq!(s, StatusCode::BAD_REQUEST, "{q}: {b}");
        }
        let (s, b) = t.call("GET", "/v2/conversations/cnope", None).await;
        assert_eq!((s, b["error"].as_str()), (StatusCode::NOT_FOUND, Some("not_found")));
        // Still serving.
        assert_eq!(t.call("GET", "/v2/replicas", None).await.0, StatusCode::OK);
    })
    .await;
}

#[tokio::test]
async fn replicas_from_urls_files_and_uploads() {
    each_backend(|t, _| async move {
        let (s, list) = t.call("GET", "/v2/replicas", None).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(list["data"][0]["replica_id"], "rstockastronaut", "the stock replica ships with the host");

        let (s, r) = t.call("POST", "/v2/replicas", Some(json!({"replica_name": "Ana", "train_video_url": "https://example.com/ana.mp4"}))).await;
        assert_eq!(s, StatusCode::OK, "{r}");
        assert_eq!(r["status"], "started");
        let id = r["replica_id"].as_str().unwrap().to_string();
        let (_, got) = t.call("GET", &format!("/v2/replicas/{id}"), None).await;
        assert_eq!((got["replica_name"].as_str(), got["training_progress"].as_str()), (Some("Ana"), Some("0/100")));

        let inside = t.upload_root.path().join("me.png");
        std::fs::write(&inside, b"png").unwrap();
        let (s, b) = t.call("POST", "/v2/replicas", Some(json!({"replica_name": "F", "train_image_url": format!("file://{}", inside.display())}))).await;
        assert_eq!(s, StatusCode::OK, "{b}");
        for (body, want) in [
            (json!({"replica_name": "F", "train_image_url": "file:///etc/passwd"}), "not a file under the upload root"),
            (json!({"replica_name": "F", "train_image_url": "gopher://x"}), "scheme"),
            (json!({"replica_name": "F"}), "exactly one"),
            (json!({"replica_name": "", "train_image_url": "https://x.org/a.png"}), "must not be empty"),
        ] {
            let (s, b) = t.call("POST", "/v2/replicas", Some(body.clone())).await;
            assert_eq!(s, StatusCode::BAD_REQUEST, "{body}: {b}");
            assert!(b["message"].as_str().unwrap().contains(want), "{body}: {b}");
        }

        let form = |size: usize, ct: &str| {
            let boundary = "XyZ";
            let mut body = format!("--{boundary}\r\nContent-Disposition: form-data; name=\"replica_name\"\r\n\r\nUp\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a\"\r\nContent-Type: {ct}\r\n\r\n").into_bytes();
            body.extend(std::iter::repeat_n(7u8, size));
            body.extend(format!("\r\n--{boundary}--\r\n").into_bytes());
            Request::post("/v2/replicas")
                .header("x-api-key", KEY)
                .header("content-type", format!("multipart/form-data; boundary={boundary}"))
                .body(Body::from(body))
                .unwrap()
        };
        let (s, b) = t.send(form(1000, "image/jpeg")).await;
        assert_eq!(s, StatusCode::OK, "{b}");
        let (s, b) = t.send(form(3 << 20, "video/mp4")).await;
        assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{b}");
        let (s, _) = t.send(form(10, "text/plain")).await;
        assert_eq!(s, StatusCode::UNSUPPORTED_MEDIA_TYPE);

        let (s, b) = t.call("PATCH", &format!("/v2/replicas/{id}/name"), Some(json!({"replica_name": "Ana B"}))).await;
        assert_eq!((s, b["replica_name"].as_str()), (StatusCode::OK, Some("Ana B")));
        assert_eq!(t.call("DELETE", "/v2/replicas/rstockastronaut", None).await.0, StatusCode::CONFLICT);
        assert_eq!(t.call("DELETE", &format!("/v2/replicas/{id}"), None).await.0, StatusCode::NO_CONTENT);
        assert_eq!(t.call("GET", &format!("/v2/replicas/{id}"), None).await.0, StatusCode::NOT_FOUND);
    })
    .await;
}

#[tokio::test]
async fn conversations_end_with_signed_ordered_webhooks_and_a_transcript() {
    each_backend(|t, label| async move {
        let hooks = Receiver::start(2).await; // the first two attempts fail: retried
        let (_, p) = t
            .call("POST", "/v2/personas", Some(json!({"persona_name": "P", "system_prompt": "Be brief.", "default_replica_id": "rstockastronaut"})))
            .await;
        let pid = p["persona_id"].as_str().unwrap();
        let (s, c) = t
            .call(
                "POST",
                "/v2/conversations",
                Some(json!({"persona_id": pid, "callback_url": hooks.url, "conversational_context": "The user is Sam.", "require_auth": true})),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{c}");
        let id = c["conversation_id"].as_str().unwrap().to_string();
        assert_eq!(c["status"], "active");
        assert_eq!(c["conversation_url"], format!("http://127.0.0.1:9/c/{id}"));
        assert_eq!(c["replica_id"], "rstockastronaut");
        assert!(c["meeting_token"].as_str().is_some_and(|t| t.len() == 48));
        assert_eq!(c["properties"]["max_call_duration"], 3600);

        // An utterance stored as it happens (the conversation loop writes these).
        let u = tete_server::db::UtteranceRow {
            seq: 0, role: "user".into(), content: "Hello".into(),
            started_at: "2026-01-01T00:00:00Z".into(), ended_at: "2026-01-01T00:00:01Z".into(), interrupted: false,
        };
        t.api.db().append_utterance(&id, &u).await.unwrap();

        let (s, e) = t.call("POST", &format!("/v2/conversations/{id}/end"), None).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!((e["status"].as_str(), e["shutdown_reason"].as_str(), e["ended_now"].as_bool()), (Some("ended"), Some("end_conversation_endpoint_hit"), Some(true)));
        let (_, again) = t.call("POST", &format!("/v2/conversations/{id}/end"), None).await;
        assert_eq!(again["ended_now"], false, "ending twice emits nothing more");

        let deliverer = t.api.host.deliverer().clone();
        let worker = tokio::spawn(deliverer.run(std::future::pending()));
        let got = hooks.wait_for(2, Duration::from_secs(10)).await;
        let delivered_query = format!("/v2/webhooks?subject_id={id}&status=delivered");
        let deliveries = eventually(Duration::from_secs(10), || async {
            let (_, d) = t.call("GET", &delivered_query, None).await;
            (d["total_count"] == 2).then_some(d)
        })
        .await;
        worker.abort();
        assert_eq!(got.len(), 2, "{label}: {got:?}");
        assert!(deliveries.is_some(), "{label}: both deliveries are recorded as delivered");
        assert!(got.iter().all(|r| r.signature_ok), "signatures verify");
        assert_eq!(got[0].body["event_type"], "system.shutdown", "in order");
        assert_eq!(got[0].body["message_type"], "system");
        assert_eq!(got[0].body["conversation_id"], id.as_str());
        assert_eq!(got[0].body["webhook_url"], hooks.url.as_str());
        assert_eq!(got[0].body["properties"]["shutdown_reason"], "end_conversation_endpoint_hit");
        assert!(got[0].body["timestamp"].as_str().unwrap().ends_with('Z'));
        assert_eq!(got[1].body["event_type"], "application.transcription_ready");
        let transcript = &got[1].body["properties"]["transcript"];
        assert_eq!(transcript[0]["role"], "system");
        assert_eq!(transcript[0]["content"], "Be brief.\n\nThe user is Sam.");
        assert_eq!(transcript[1], json!({"role": "user", "content": "Hello"}));

        let (_, verbose) = t.call("GET", &format!("/v2/conversations/{id}?verbose=true"), None).await;
        assert_eq!(verbose["events"].as_array().unwrap().len(), 2);
        assert_eq!(verbose["utterances"][0]["interrupted"], false);

        let (_, listed) = t.call("GET", "/v2/conversations", None).await;
        assert_eq!(listed["total_count"], 1);
        assert_eq!(t.call("DELETE", &format!("/v2/conversations/{id}"), None).await.0, StatusCode::NO_CONTENT);
        assert_eq!(t.call("GET", &format!("/v2/conversations/{id}"), None).await.0, StatusCode::NOT_FOUND);
    })
    .await;
}

#[tokio::test]
async fn timers_end_calls_and_undeliverable_webhooks_are_marked_failed() {
    each_backend(|t, label| async move {
        // Nothing listens here: every attempt fails until the 3 s horizon.
        let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let hooks = Receiver::start(0).await;
        let (_, short) = t
            .call("POST", "/v2/conversations", Some(json!({"replica_id": "rstockastronaut", "callback_url": hooks.url, "properties": {"max_call_duration": 1}})))
            .await;
        let (_, absent) = t
            .call("POST", "/v2/conversations", Some(json!({"replica_id": "rstockastronaut", "callback_url": format!("http://{dead}/x"), "properties": {"participant_absent_timeout": 1}})))
            .await;
        let worker = tokio::spawn(t.api.host.deliverer().clone().run(std::future::pending()));
        let got = hooks.wait_for(2, Duration::from_secs(10)).await;
        let (_, all) = t.call("GET", "/v2/webhooks?limit=100", None).await;
        assert!(got.len() >= 2, "{label}: {got:?}\n{all}");
        assert_eq!(got[0].body["properties"]["shutdown_reason"], "max_call_duration", "{label}");
        assert_eq!(got[0].body["conversation_id"], short["conversation_id"]);

        let absent_id = absent["conversation_id"].as_str().unwrap();
        let failed_query = format!("/v2/webhooks?status=failed&subject_id={absent_id}");
        let failed = eventually(Duration::from_secs(25), || async {
            let (_, d) = t.call("GET", &failed_query, None).await;
            (d["total_count"] == 2).then_some(d)
        })
        .await;
        worker.abort();
        let (_, all) = t.call("GET", "/v2/webhooks?limit=100", None).await;
        let failed = failed.unwrap_or_else(|| panic!("{label}: both events end failed: {all}"));
        // Both events were retried until the horizon, which counts from each
        // one's first attempt: the transcript, queued behind the shutdown
        // event (in order per conversation), gets its own full horizon.
        for d in failed["data"].as_array().unwrap() {
            assert!(d["attempts"].as_i64().unwrap() >= 2, "{failed}");
            assert!(d["last_error"].as_str().unwrap().contains("request failed"), "{failed}");
        }
        let (_, c) = t.call("GET", &format!("/v2/conversations/{absent_id}"), None).await;
        assert_eq!(c["shutdown_reason"], "participant_absent_timeout");
    })
    .await;
}

#[tokio::test]
async fn callback_urls_are_validated() {
    for db in databases().await {
        let t = app_with(&db.url, |c| c.forbid_private_callbacks = true).await;
        for (url, want) in
            [("ftp://x/y", "http or https"), ("http://127.0.0.1:1/x", "forbids"), ("not a url", "callback_url")]
        {
            let (s, b) = t
                .call("POST", "/v2/conversations", Some(json!({"replica_id": "rstockastronaut", "callback_url": url})))
                .await;
            assert_eq!(s, StatusCode::BAD_REQUEST, "{url}: {b}");
            assert!(b["message"].as_str().unwrap().contains(want), "{url}: {b}");
        }
    }
}

#[tokio::test]
async fn everything_survives_a_restart() {
    for db in databases().await {
        let (pid, cid, rid) = {
            let t = app(&db.url).await;
            let (_, p) = t.call("POST", "/v2/personas", Some(json!({"persona_name": "Keep"}))).await;
            let (_, r) = t
                .call(
                    "POST",
                    "/v2/replicas",
                    Some(json!({"replica_name": "K", "train_image_url": "https://x.org/k.png"})),
                )
                .await;
            let (_, c) = t.call("POST", "/v2/conversations", Some(json!({"replica_id": "rstockastronaut"}))).await;
            t.api.db().close().await;
            (p["persona_id"].clone(), c["conversation_id"].clone(), r["replica_id"].clone())
        };
        // Another host on the same database: the call's URL still names the host that runs it.
        let t = app_with(&db.url, |c| c.public_url = "http://127.0.0.2:9".into()).await;
        let (_, c) = t.call("GET", &format!("/v2/conversations/{}", cid.as_str().unwrap()), None).await;
        assert_eq!(c["conversation_url"], format!("http://127.0.0.1:9/c/{}", cid.as_str().unwrap()));
        for (path, id) in [("personas", &pid), ("conversations", &cid), ("replicas", &rid)] {
            let (s, b) = t.call("GET", &format!("/v2/{path}/{}", id.as_str().unwrap()), None).await;
            assert_eq!(s, StatusCode::OK, "{} {path}: {b}", db.label);
        }
        assert_eq!(t.api.host.resume().await.unwrap(), 1, "the active conversation is picked up again");
    }
}

#[tokio::test]
async fn openapi_document_is_public_and_describes_the_api() {
    let db = databases().await.remove(0);
    let t = app(&db.url).await;
    let (s, doc) = t.send(Request::get("/v2/openapi.json").body(Body::empty()).unwrap()).await;
    assert_eq!(s, StatusCode::OK);
    for path in [
        "/v2/personas",
        "/v2/personas/{persona_id}",
        "/v2/replicas",
        "/v2/conversations",
        "/v2/conversations/{conversation_id}/end",
        "/v2/webhooks",
    ] {
        assert!(doc["paths"].get(path).is_some(), "{path} missing");
    }
    assert!(doc["components"]["securitySchemes"]["api_key"].is_object());
}

#[tokio::test]
async fn participant_signals_drive_the_lifecycle_and_meeting_tokens_are_checked() {
    use tete_server::conversations::Signal;
    each_backend(|t, label| async move {
        let hooks = Receiver::start(0).await;
        let (_, c) = t
            .call(
                "POST",
                "/v2/conversations",
                Some(json!({"replica_id": "rstockastronaut", "callback_url": hooks.url, "require_auth": true})),
            )
            .await;
        let id = c["conversation_id"].as_str().unwrap().to_string();
        let token = c["meeting_token"].as_str().unwrap().to_string();
        let db = t.api.db();
        assert!(db.meeting_token_ok(&id, Some(&token)).await.unwrap());
        assert!(!db.meeting_token_ok(&id, Some("wrong")).await.unwrap());
        assert!(!db.meeting_token_ok(&id, None).await.unwrap());
        let (_, open) = t.call("POST", "/v2/conversations", Some(json!({"replica_id": "rstockastronaut"}))).await;
        assert!(db.meeting_token_ok(open["conversation_id"].as_str().unwrap(), None).await.unwrap());

        // Joining emits replica_joined; leaving with the default 0 s timeout ends the call.
        assert!(t.api.host.signal(&id, Signal::ParticipantJoined).await);
        assert!(t.api.host.signal(&id, Signal::ParticipantLeft).await);
        let worker = tokio::spawn(t.api.host.deliverer().clone().run(std::future::pending()));
        let got = hooks.wait_for(3, Duration::from_secs(10)).await;
        worker.abort();
        let types: Vec<&str> = got.iter().map(|r| r.body["event_type"].as_str().unwrap()).collect();
        assert_eq!(types, ["system.replica_joined", "system.shutdown", "application.transcription_ready"], "{label}");
        assert_eq!(got[0].body["properties"]["replica_id"], "rstockastronaut");
        assert_eq!(got[1].body["properties"]["shutdown_reason"], "participant_left_timeout");
        assert!(!t.api.host.signal(&id, Signal::ParticipantActive).await, "an ended call is no longer running");
    })
    .await;
}

#[tokio::test]
async fn calls_of_a_vanished_host_are_ended_when_overdue() {
    each_backend(|t, label| async move {
        let doc = json!({"replica_id": "rstockastronaut", "properties": {"max_call_duration": 1}});
        let row = t
            .api
            .db()
            .insert_conversation(tete_server::db::conversations::NewConversation {
                document: &doc,
                replica_id: Some("rstockastronaut"),
                persona_id: None,
                callback_url: None,
                meeting_token_hash: None,
                host: "a-host-that-is-gone",
            })
            .await
            .unwrap();
        assert_eq!(t.api.host.sweep().await.unwrap(), 0, "not overdue yet");
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert_eq!(t.api.host.sweep().await.unwrap(), 1, "{label}");
        let (_, c) = t.call("GET", &format!("/v2/conversations/{}", row.id), None).await;
        assert_eq!((c["status"].as_str(), c["shutdown_reason"].as_str()), (Some("ended"), Some("max_call_duration")));
        assert_eq!(t.api.host.sweep().await.unwrap(), 0, "ended once");
    })
    .await;
}
