//! Replica training through the API with the real face models: a photo
//! becomes a completed replica with its portrait and rig on disk, the
//! stock replica trains from the astronaut portrait, and photos without a
//! usable face and unreadable videos end in `error` with the reason — each reported to the
//! replica's `callback_url`. Over SQLite and PostgreSQL.

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use common::{Receiver, app_with, databases, eventually, model_dir};
use serde_json::{Value, json};
use tete_engine::face::{BlazeFace, FaceMesh, Replica};
use tete_engine::models::convert::OUTPUT;
use tete_server::training::{FaceModels, TrainingConfig};

fn training(replicas: &std::path::Path) -> TrainingConfig {
    let load = |id: &str| model_dir(id).join(OUTPUT);
    let cpu = candle_core::Device::Cpu;
    TrainingConfig {
        faces: FaceModels {
            detector: Arc::new(BlazeFace::load(&load("blazeface-short-range"), &cpu).expect("run `tete models fetch`")),
            mesher: Arc::new(FaceMesh::load(&load("facemesh"), &cpu).expect("run `tete models fetch`")),
        },
        replicas_dir: replicas.to_path_buf(),
        stock_portrait: model_dir("astronaut-portrait").join("astronaut.png"),
        max_download_bytes: 1 << 20,
        replica: Default::default(),
    }
}

async fn finished(t: &common::TestApp, id: &str) -> Value {
    eventually(Duration::from_secs(60), || async {
        let (_, r) = t.call("GET", &format!("/v2/replicas/{id}"), None).await;
        (r["status"] != "started").then_some(r)
    })
    .await
    .unwrap_or_else(|| panic!("replica {id} still training after 60 s"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn photos_train_into_replicas_or_fail_with_their_reason() {
    for db in databases().await {
        let replicas = tempfile::tempdir().unwrap();
        let config = training(replicas.path());
        let t = app_with(&db.url, |c| c.training = Some(config.clone())).await;
        let hooks = Receiver::start(0).await;
        let worker = tokio::spawn(t.api.host.deliverer().clone().run(std::future::pending()));
        let put = |name: &str, bytes: &[u8]| {
            let path = t.upload_root.path().join(name);
            std::fs::write(&path, bytes).unwrap();
            format!("file://{}", path.display())
        };
        let astronaut = std::fs::read(&config.stock_portrait).unwrap();
        let mut grey = Vec::new();
        image::DynamicImage::ImageRgb8(image::RgbImage::from_pixel(320, 240, image::Rgb([128, 128, 128])))
            .write_to(&mut std::io::Cursor::new(&mut grey), image::ImageFormat::Png)
            .unwrap();
        // An MP4 header with nothing behind it.
        let mut broken_video = vec![0, 0, 0, 24];
        broken_video.extend_from_slice(b"ftypisom\0\0\x02\0isomiso2");
        broken_video.extend_from_slice(&[0x5a; 300]);
        let cases = [
            ("face.png", astronaut.clone(), None),
            ("grey.png", grey, Some("no face was found")),
            ("broken.png", astronaut[..200].to_vec(), Some("the image could not be read")),
            ("broken.mp4", broken_video, Some("the video could not be read")),
        ];
        for (file, bytes, error) in cases {
            let field = if file.ends_with(".mp4") { "train_video_url" } else { "train_image_url" };
            let body = json!({"replica_name": file, field: put(file, &bytes), "callback_url": hooks.url});
            let (s, r) = t.call("POST", "/v2/replicas", Some(body)).await;
            assert_eq!(s, StatusCode::OK, "{}: {r}", db.label);
            let id = r["replica_id"].as_str().unwrap().to_string();
            let done = finished(&t, &id).await;
            match error {
                None => {
                    assert_eq!(
                        (done["status"].as_str(), done["training_progress"].as_str()),
                        (Some("completed"), Some("100/100")),
                        "{done}"
                    );
                    let replica = Replica::load(&config.replica_dir(&id)).expect("saved replica");
                    assert_eq!(replica.size, 512);
                }
                Some(reason) => {
                    assert_eq!(done["status"], "error", "{file}: {done}");
                    let message = done["error_message"].as_str().unwrap_or_default();
                    assert!(message.contains(reason), "{file}: {message}");
                    assert!(!config.replica_dir(&id).exists(), "{file}: nothing saved");
                }
            }
            // Webhooks: progress, then ready or error, signed, for this replica.
            let want = if error.is_some() { "replica.error" } else { "replica.ready" };
            let events = eventually(Duration::from_secs(10), || async {
                let mine: Vec<_> =
                    hooks.distinct().into_iter().filter(|h| h.body["replica_id"] == id.as_str()).collect();
                mine.iter().any(|h| h.body["event_type"] == want).then_some(mine)
            })
            .await
            .unwrap_or_else(|| panic!("{file}: no {want} webhook"));
            assert!(events.iter().all(|h| h.signature_ok));
            assert!(events.iter().any(|h| h.body["event_type"] == "replica.training_progress"), "{file}");
            assert_eq!(events.last().unwrap().body["event_type"], want, "{file}: the outcome comes last");
        }

        // The stock replica trains from the astronaut portrait when a host starts.
        assert!(tete_server::training::resume(&t.api).await.unwrap() >= 1);
        let stock = finished(&t, "rstockastronaut").await;
        assert_eq!(stock["status"], "completed", "{}: {stock}", db.label);
        assert!(Replica::load(&config.replica_dir("rstockastronaut")).is_ok());
        worker.abort();
    }
}

/// Until the conversation loop drives it, a call shows its replica alive:
/// frames rendered from the trained replica, changing over time; a
/// conversation whose replica is not trained shows a grey frame. A host
/// whose video size differs from the replica's shows it at its own size.
#[test]
fn a_call_shows_its_trained_replica_alive() {
    use tete_server::edge::{Joining, replica_media};
    let replicas = tempfile::tempdir().unwrap();
    let config = training(replicas.path());
    let photo = image::open(&config.stock_portrait).unwrap().to_rgb8();
    let replica = Replica::from_photo(&config.faces.detector, &config.faces.mesher, &photo, &config.replica).unwrap();
    replica.save(&config.replica_dir("rastro")).unwrap();

    let factory = replica_media(replicas.path().to_path_buf(), 512);
    let mut media = factory(Joining {
        conversation: "c1",
        replica: Some("rastro"),
        document: &serde_json::Value::Null,
        persona: None,
    });
    let frame_at = |media: &mut Box<dyn tete_server::edge::SessionMedia>, wait: Duration| {
        std::thread::sleep(wait);
        media.next_video().expect("a frame")
    };
    let first = frame_at(&mut media, Duration::from_millis(500));
    assert_eq!((first.width, first.height), (512, 512));
    let luma = &first.i420[..512 * 512];
    let spread = luma.iter().max().unwrap() - luma.iter().min().unwrap();
    assert!(spread > 100, "a picture, not a flat frame (luma spread {spread})");
    let later = frame_at(&mut media, Duration::from_millis(1500));
    let changed = first.i420.iter().zip(&later.i420).filter(|(a, b)| a != b).count();
    assert!(changed > 1000, "the face moves: {changed} bytes changed in 1.5 s");

    for replica in [Some("rnottrained"), None] {
        let mut grey =
            factory(Joining { conversation: "c2", replica, document: &serde_json::Value::Null, persona: None });
        let frame = grey.next_video().expect("a frame");
        assert!(frame.i420[..512 * 512].iter().all(|&y| y == frame.i420[0]), "{replica:?}: a flat frame");
    }

    let smaller = replica_media(replicas.path().to_path_buf(), 256);
    let mut media = smaller(Joining {
        conversation: "c3",
        replica: Some("rastro"),
        document: &serde_json::Value::Null,
        persona: None,
    });
    let frame = frame_at(&mut media, Duration::from_millis(500));
    assert_eq!((frame.width, frame.height, frame.i420.len()), (256, 256, 256 * 256 * 3 / 2));
    // The same picture at half the size: the mean luma of each quarter agrees.
    let quarter_means = |frame: &tete_server::edge::peer::VideoFrame| -> Vec<f64> {
        let side = frame.width;
        (0..4)
            .map(|q| {
                let (x0, y0) = ((q % 2) * side / 2, (q / 2) * side / 2);
                let sum: f64 = (y0..y0 + side / 2)
                    .flat_map(|y| (x0..x0 + side / 2).map(move |x| (x, y)))
                    .map(|(x, y)| f64::from(frame.i420[y * side + x]))
                    .sum();
                sum / (side * side / 4) as f64
            })
            .collect()
    };
    let (big, small) = (quarter_means(&first), quarter_means(&frame));
    for (b, s) in big.iter().zip(&small) {
        assert!((b - s).abs() < 12.0, "quarter luma means {big:.0?} at 512 against {small:.0?} at 256");
    }
    let mut grey =
        smaller(Joining { conversation: "c4", replica: None, document: &serde_json::Value::Null, persona: None });
    assert_eq!(grey.next_video().unwrap().width, 256);
}
