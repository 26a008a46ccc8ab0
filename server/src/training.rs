//! Replica training in the background: fetch the photo or the video (MP4,
//! H.264), find and mesh the face, frame the portrait and save it with its
//! rig under the replicas folder. Progress goes to the replica's row
//! (`training_progress` "N/100") and to its `callback_url` as
//! `replica.training_progress`, then `replica.ready` or `replica.error`.
//! The work runs on blocking threads, so the server never waits for it;
//! replicas still `started` when a host starts are trained again.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::json;
use tete_engine::face::video::{VideoReplica, VideoReplicaConfig};
use tete_engine::face::{BlazeFace, FaceMesh, Replica, ReplicaConfig, ReplicaError};

use crate::api::Api;
use crate::db::ReplicaRow;

/// The face models training needs, loaded once and shared.
#[derive(Clone)]
pub struct FaceModels {
    pub detector: Arc<BlazeFace>,
    pub mesher: Arc<FaceMesh>,
}

impl std::fmt::Debug for FaceModels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FaceModels")
    }
}

/// Where replicas are trained from and saved to.
#[derive(Debug, Clone)]
pub struct TrainingConfig {
    pub faces: FaceModels,
    /// One folder per replica id holds `portrait.png` and `rig.json`.
    pub replicas_dir: PathBuf,
    /// The stock portrait (`model:astronaut-portrait` sources).
    pub stock_portrait: PathBuf,
    /// Largest photo or video fetched over HTTP.
    pub max_download_bytes: usize,
    pub replica: ReplicaConfig,
}

impl TrainingConfig {
    /// The folder of a trained replica.
    pub fn replica_dir(&self, id: &str) -> PathBuf {
        self.replicas_dir.join(id)
    }
}

/// Why training failed, in words for the replica's `error_message`.
#[derive(Debug, thiserror::Error)]
enum TrainError {
    #[error("{0}")]
    Face(#[from] ReplicaError),
    #[error("fetching the training {kind}: {reason}")]
    Fetch { kind: String, reason: String },
    #[error("training from a {0} is not supported by this host")]
    Unsupported(String),
    #[error("the training task failed: {0}")]
    Task(String),
}

/// Starts training a replica in the background (no-op without face models).
pub fn start(api: &Api, id: String) {
    if api.config.training.is_none() {
        return;
    }
    let api = api.clone();
    tokio::spawn(async move {
        if let Err(e) = train(&api, &id).await {
            tracing::error!(replica = %id, "recording training state: {e}");
        }
    });
}

/// Trains every replica left `started` (a host restarted mid-training, or
/// the stock replica on first start).
pub async fn resume(api: &Api) -> Result<usize, crate::db::DbError> {
    if api.config.training.is_none() {
        return Ok(0);
    }
    let pending = api.db().replicas_in_training().await?;
    let n = pending.len();
    for id in pending {
        start(api, id);
    }
    Ok(n)
}

async fn progress(api: &Api, row: &ReplicaRow, done: u32) -> Result<(), crate::db::DbError> {
    let progress = format!("{done}/100");
    api.db().set_replica_training(&row.id, "started", &progress, None).await?;
    api.host.emit_replica(row, "replica.training_progress", json!({"training_progress": progress})).await
}

async fn train(api: &Api, id: &str) -> Result<(), crate::db::DbError> {
    let Some(config) = api.config.training.clone() else { return Ok(()) };
    let Some(row) = api.db().replica(id).await? else { return Ok(()) };
    progress(api, &row, 5).await?;
    let result = async {
        let bytes = fetch(api, &config, &row).await?;
        progress(api, &row, 30).await.map_err(|e| TrainError::Task(e.to_string()))?;
        let kind = row.source_kind.clone();
        let dir = config.replica_dir(&row.id);
        // Progress of the face work, 30–95, as the blocking side reports it.
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<u32>();
        let work = tokio::task::spawn_blocking(move || {
            build(&config, &kind, &bytes, &dir, &mut |done, total| {
                let _ = tx.send(30 + (65 * done / total.max(1)) as u32);
            })
        });
        let mut reported = 30;
        while let Some(p) = rx.recv().await {
            if p >= reported + 10 {
                reported = p;
                progress(api, &row, p).await.map_err(|e| TrainError::Task(e.to_string()))?;
            }
        }
        work.await.map_err(|e| TrainError::Task(e.to_string()))?
    }
    .await;
    // The replica may have been deleted meanwhile: then there is nothing to report.
    let Some(row) = api.db().replica(id).await? else { return Ok(()) };
    match result {
        Ok(()) => {
            api.db().set_replica_training(id, "completed", "100/100", None).await?;
            api.host.emit_replica(&row, "replica.ready", json!({"replica_name": row.replica_name})).await?;
            tracing::info!(replica = %id, "replica trained");
        }
        Err(e) => {
            let message = e.to_string();
            tracing::warn!(replica = %id, "replica training failed: {message}");
            api.db().set_replica_training(id, "error", &row.training_progress, Some(&message)).await?;
            api.host.emit_replica(&row, "replica.error", json!({"error_message": message})).await?;
        }
    }
    Ok(())
}

/// The training file's bytes, from the stock portrait, a file under the
/// upload root (checked when the replica was created) or HTTP(S).
async fn fetch(api: &Api, config: &TrainingConfig, row: &ReplicaRow) -> Result<Vec<u8>, TrainError> {
    let failed = |reason: String| TrainError::Fetch { kind: row.source_kind.clone(), reason };
    if row.source == "model:astronaut-portrait" {
        return tokio::fs::read(&config.stock_portrait)
            .await
            .map_err(|e| failed(format!("{}: {e} (run `tete models fetch`)", config.stock_portrait.display())));
    }
    let url = url::Url::parse(&row.source).map_err(|e| failed(e.to_string()))?;
    match url.scheme() {
        "file" => {
            let path = url.to_file_path().map_err(|_| failed("not a local path".into()))?;
            tokio::fs::read(&path).await.map_err(|e| failed(e.to_string()))
        }
        "http" | "https" => download(api, config, &row.source).await.map_err(failed),
        other => Err(failed(format!("unsupported scheme {other:?}"))),
    }
}

async fn download(api: &Api, config: &TrainingConfig, url: &str) -> Result<Vec<u8>, String> {
    // Checked again now: the name may resolve elsewhere than at creation.
    crate::api::check_callback_url(api, url).await.map_err(|e| e.message.replace("callback_url", "training URL"))?;
    // No redirects: each hop would need the same address check.
    let client = reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(10))
        .timeout(std::time::Duration::from_secs(300))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| e.to_string())?;
    let mut response = client.get(url).send().await.map_err(|e| tete_engine::remote::error_chain(&e))?;
    if !response.status().is_success() {
        return Err(format!("{url} answered {}", response.status()));
    }
    let mut bytes = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| tete_engine::remote::error_chain(&e))? {
        bytes.extend_from_slice(&chunk);
        if bytes.len() > config.max_download_bytes {
            return Err(format!("{url} is larger than {} bytes", config.max_download_bytes));
        }
    }
    Ok(bytes)
}

/// Builds and saves the replica (blocking: runs the face models),
/// reporting (done, total) steps of the video's frames.
fn build(
    config: &TrainingConfig,
    kind: &str,
    bytes: &[u8],
    dir: &Path,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<(), TrainError> {
    let (detector, mesher) = (&config.faces.detector, &config.faces.mesher);
    let replica = match kind {
        "image" => {
            let photo = tete_engine::face::replica::decode_photo(bytes)?;
            Replica::from_photo(detector, mesher, &photo, &config.replica)?
        }
        "video" => {
            let video = VideoReplicaConfig { replica: config.replica, ..Default::default() };
            VideoReplica::from_mp4(detector, mesher, bytes, &video, progress)?.replica
        }
        other => return Err(TrainError::Unsupported(other.to_string())),
    };
    replica.save(dir)?;
    Ok(())
}
