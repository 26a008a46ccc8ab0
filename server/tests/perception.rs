//! Perception on calls, with the real face models: an aiortc peer
//! (`whip_client.py`) shows the astronaut portrait as its camera and keeps
//! its microphone silent. The face alone keeps the participant present
//! past a 5 s `participant_absent_timeout`; when the call is ended from
//! the API the user receives `conversation.perception_analysis` on the
//! data channel and `application.perception_analysis` is queued, both
//! answering the persona's questions. A peer showing no face and saying
//! nothing is ended for absence.

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use candle_core::Device;
use common::{TestApp, app, model_dir};
use serde_json::{Value, json};
use tete_engine::face::{BlazeFace, FaceMesh};
use tete_engine::models::convert::OUTPUT;
use tete_engine::perception::{ExpressionNet, Perceiver};
use tete_engine::scheduler::Sight;
use tete_server::api::Api;
use tete_server::edge::perception::PerceptionConfig;
use tete_server::edge::{Edge, EdgeConfig};

fn perceiver() -> Perceiver {
    let (load, cpu) = (|id: &str| model_dir(id).join(OUTPUT), Device::Cpu);
    Perceiver::new(
        Arc::new(BlazeFace::load(&load("blazeface-short-range"), &cpu).expect("run `tete models fetch`")),
        Arc::new(FaceMesh::load(&load("facemesh"), &cpu).expect("run `tete models fetch`")),
        Arc::new(ExpressionNet::load(&load("face-expression"), &cpu).expect("run `tete models fetch`")),
    )
}

struct Fixture {
    base: String,
    app: TestApp,
    _dir: tempfile::TempDir,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let app = app(&tete_server::db::Db::sqlite_url(dir.path())).await;
    let sight = Sight::start(perceiver(), None).expect("the seeing lane starts");
    let perception = PerceptionConfig { sight: Arc::new(sight), fps: 4.0 };
    let edge = Edge::new(EdgeConfig { perception: Some(perception), ..EdgeConfig::default() }, None);
    edge.follow(&app.api.host);
    let api = Api { edge: Some(edge), ..app.api.clone() };
    let router = tete_server::api::router(api.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    Fixture { base, app, _dir: dir }
}

impl Fixture {
    /// A conversation with a 5 s absence timeout (the first face must be
    /// seen within it, even on a busy host), for a persona asking `perception`.
    async fn conversation(&self, perception: Value) -> String {
        let persona =
            json!({"persona_name": "Watcher", "system_prompt": "You watch.", "layers": {"perception": perception}});
        let (status, p) = self.app.call("POST", "/v2/personas", Some(persona)).await;
        assert_eq!(status, StatusCode::OK, "{p}");
        let body = json!({"replica_id": "rstockastronaut", "persona_id": p["persona_id"],
                          "properties": {"participant_absent_timeout": 5}});
        let (status, c) = self.app.call("POST", "/v2/conversations", Some(body)).await;
        assert_eq!(status, StatusCode::OK, "{c}");
        c["conversation_id"].as_str().unwrap().to_string()
    }

    /// The aiortc peer for `seconds`, silent, showing `camera` (or a faceless pattern).
    fn client(&self, id: &str, seconds: f64, camera: Option<&std::path::Path>) -> std::process::Command {
        let wav = self._dir.path().join(format!("{id}.wav"));
        common::tone_wav(&wav, 0.0, seconds + 5.0);
        let mut command = common::whip_client(&format!("{}/c/{id}/whip", self.base), &wav, seconds);
        if let Some(camera) = camera {
            command.arg("--camera").arg(camera);
        }
        command
    }

    async fn conversation_json(&self, id: &str) -> Value {
        self.app.call("GET", &format!("/v2/conversations/{id}?verbose=true"), None).await.1
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_face_keeps_the_call_and_the_user_gets_its_analysis() {
    let f = fixture().await;
    let questions = json!({
        "visual_awareness_queries": ["Is the user smiling?"],
        "perception_analysis_queries": ["Did the user smile?", "Was anyone else there?", "What was on the wall?"],
    });
    let id = f.conversation(questions).await;
    let astronaut = model_dir("astronaut-portrait").join("astronaut.png");
    let client = common::run_client(f.client(&id, 16.0, Some(&astronaut)));
    // Past the absence timeout, with a silent microphone: still on.
    tokio::time::sleep(Duration::from_secs(11)).await;
    let c = f.conversation_json(&id).await;
    assert_eq!(c["status"], "active", "the face did not keep the participant present: {c}");
    let (status, _) = f.app.call("POST", &format!("/v2/conversations/{id}/end"), None).await;
    assert_eq!(status, StatusCode::OK);
    let client = client.await.unwrap();
    // Ending the conversation closed the call: leaving afterwards finds no session.
    assert_eq!(client["leave_status"], 404, "{client}");

    // The user got the analysis on the data channel before the call closed.
    let analysis: Vec<Value> = client["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| serde_json::from_str::<Value>(m.as_str()?).ok())
        .filter(|m| m["event_type"] == "conversation.perception_analysis")
        .collect();
    assert_eq!(analysis.len(), 1, "{client}");
    let live = &analysis[0]["properties"]["analysis"];
    println!("data channel: {live}");

    let event = common::eventually(Duration::from_secs(10), || async {
        let c = f.conversation_json(&id).await;
        c["events"].as_array()?.iter().find(|e| e["event_type"] == "application.perception_analysis").cloned()
    })
    .await
    .expect("application.perception_analysis");
    let a = &event["properties"]["analysis"];
    println!("webhook: {a}");
    assert_eq!(a, live, "the webhook and the data channel carry the same analysis");
    assert!(a["seconds_in_view"].as_f64().unwrap() > 4.0, "{a}");
    assert_eq!(a["most_people"], 1);
    assert!(a["expressions"]["happy"].as_f64().unwrap() > 0.5, "{a}");
    let answers = a["answers"].as_array().unwrap();
    assert!(answers[0]["answer"].as_str().unwrap().starts_with("The user looked happy for"), "{a}");
    assert_eq!(answers[1]["answer"], "Only the user was in the frame.");
    assert!(answers[2]["answer"].as_str().unwrap().starts_with("Perception cannot answer"), "{a}");
    let timeline: Vec<&str> = a["timeline"].as_array().unwrap().iter().map(|n| n["note"].as_str().unwrap()).collect();
    assert!(timeline.starts_with(&["the user is in view"]), "{timeline:?}");
    assert!(timeline.contains(&"Is the user smiling? yes"), "{timeline:?}");
    let c = f.conversation_json(&id).await;
    assert_eq!(c["shutdown_reason"], "end_conversation_endpoint_hit", "{c}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_face_and_no_voice_ends_the_call_for_absence() {
    let f = fixture().await;
    let id = f.conversation(json!({"perception_model": "on"})).await;
    let client = common::run_client(f.client(&id, 10.0, None));
    let ended = common::eventually(Duration::from_secs(20), || async {
        let c = f.conversation_json(&id).await;
        (c["status"] == "ended").then_some(c)
    })
    .await
    .expect("the call ended");
    assert_eq!(ended["shutdown_reason"], "participant_absent_timeout", "{ended}");
    let client = client.await.unwrap();
    assert_eq!(client["connected"], true, "{client}");
    let event = common::eventually(Duration::from_secs(10), || async {
        let c = f.conversation_json(&id).await;
        c["events"].as_array()?.iter().find(|e| e["event_type"] == "application.perception_analysis").cloned()
    })
    .await
    .expect("application.perception_analysis");
    assert_eq!(event["properties"]["analysis"]["summary"], "The user was never seen on camera.");
}
