//! Recordings of calls (`properties.enable_recording`): each peer's call
//! is recorded while it runs ([`Recorder`]: the replica's video, and its
//! voice mixed with the user's, in an MP4 that plays in browsers), then
//! kept where the host is told to ([`RecordingStore`]): a folder on local
//! disk by default, or an S3-compatible bucket. The edge then queues
//! `application.recording_ready` with `storage_provider`, `storage_uri`
//! and `duration`.
//!
//! A recording is written under `{dir}/.partial/` while the call runs and
//! moved (or uploaded) when it ends; an upload that fails leaves the file
//! on local disk and says so, so nothing recorded is lost.

mod recorder;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use object_store::aws::AmazonS3Builder;
use object_store::{Attribute, Attributes, ObjectStore};
use tokio::io::AsyncWriteExt;

pub use recorder::{RecordError, Recorded, Recorder};

/// Where an S3-compatible bucket is and how to reach it. Credentials not
/// given here come from the environment (`AWS_ACCESS_KEY_ID`,
/// `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`), as every S3 tool reads them.
#[derive(Debug, Clone, Default)]
pub struct S3Config {
    pub bucket: String,
    /// A custom endpoint (MinIO, Ceph, R2…); AWS's own without.
    pub endpoint: Option<String>,
    pub region: Option<String>,
    /// Key prefix inside the bucket (e.g. `recordings/`).
    pub prefix: String,
    /// Access key id and secret.
    pub credentials: Option<(String, String)>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("recordings folder {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("S3 bucket: {0}")]
    S3(#[from] object_store::Error),
    #[error("uploading {object}: {source}")]
    Upload { object: String, source: std::io::Error },
}

/// Where recordings are kept.
#[derive(Debug, Clone)]
pub struct RecordingStore {
    /// Finished recordings (local) and recordings in progress (`.partial`).
    dir: PathBuf,
    bucket: Option<(Arc<dyn ObjectStore>, S3Config)>,
}

/// Where a recording was kept: the `storage_provider` and `storage_uri` of
/// `application.recording_ready`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub provider: &'static str,
    pub uri: String,
}

impl RecordingStore {
    /// Recordings in `dir` on this host.
    pub fn local(dir: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let store = Self { dir: dir.into(), bucket: None };
        store.prepare()?;
        Ok(store)
    }

    /// Recordings in an S3-compatible bucket, spooled in `dir` while calls run.
    pub fn s3(dir: impl Into<PathBuf>, config: S3Config) -> Result<Self, StoreError> {
        let mut builder = AmazonS3Builder::from_env().with_bucket_name(&config.bucket);
        if let Some(endpoint) = &config.endpoint {
            builder = builder.with_endpoint(endpoint).with_allow_http(endpoint.starts_with("http://"));
        }
        if let Some(region) = &config.region {
            builder = builder.with_region(region);
        }
        if let Some((id, secret)) = &config.credentials {
            builder = builder.with_access_key_id(id).with_secret_access_key(secret);
        }
        let store = Self { dir: dir.into(), bucket: Some((Arc::new(builder.build()?), config)) };
        store.prepare()?;
        Ok(store)
    }

    fn prepare(&self) -> Result<(), StoreError> {
        let partial = self.partial_dir();
        std::fs::create_dir_all(&partial).map_err(|source| StoreError::Io { path: partial, source })
    }

    fn partial_dir(&self) -> PathBuf {
        self.dir.join(".partial")
    }

    /// Where the recording `name` is written while its call runs.
    pub fn partial(&self, name: &str) -> PathBuf {
        self.partial_dir().join(format!("{name}.mp4"))
    }

    /// Keeps a finished recording as `{conversation}/{name}.mp4`. When the
    /// bucket refuses it, the file stays on this host and the error is
    /// logged: the answer then names the local file.
    pub async fn keep(&self, recorded: &Recorded, conversation: &str, name: &str) -> Result<Stored, StoreError> {
        let key = format!("{conversation}/{name}.mp4");
        if let Some((bucket, config)) = &self.bucket {
            let object = format!("{}{key}", config.prefix);
            match upload(bucket.clone(), &recorded.path, &object).await {
                Ok(()) => {
                    let _ = tokio::fs::remove_file(&recorded.path).await;
                    return Ok(Stored { provider: "s3", uri: format!("s3://{}/{object}", config.bucket) });
                }
                Err(e) => tracing::error!(
                    conversation,
                    "uploading the recording to s3://{}/{object} failed, keeping it on this host: {e}",
                    config.bucket
                ),
            }
        }
        let path = self.dir.join(&key);
        move_file(&recorded.path, &path).await?;
        let uri = url::Url::from_file_path(&path).map_or_else(|()| path.display().to_string(), String::from);
        Ok(Stored { provider: "local", uri })
    }
}

async fn upload(bucket: Arc<dyn ObjectStore>, from: &Path, object: &str) -> Result<(), StoreError> {
    let io = |source| StoreError::Io { path: from.to_path_buf(), source };
    let mut file = tokio::fs::File::open(from).await.map_err(io)?;
    let attributes = Attributes::from_iter([(Attribute::ContentType, "video/mp4")]);
    // Multipart past the buffer's size: a long call is never held in memory.
    let mut writer = object_store::buffered::BufWriter::new(bucket, object.into()).with_attributes(attributes);
    let upload = |source| StoreError::Upload { object: object.to_string(), source };
    if let Err(e) = tokio::io::copy(&mut file, &mut writer).await {
        let _ = writer.abort().await;
        return Err(upload(e));
    }
    writer.shutdown().await.map_err(upload)
}

async fn move_file(from: &Path, to: &Path) -> Result<(), StoreError> {
    let io = |source| StoreError::Io { path: to.to_path_buf(), source };
    if let Some(parent) = to.parent() {
        tokio::fs::create_dir_all(parent).await.map_err(io)?;
    }
    if tokio::fs::rename(from, to).await.is_err() {
        // Another file system: copy, then remove.
        tokio::fs::copy(from, to).await.map_err(io)?;
        let _ = tokio::fs::remove_file(from).await;
    }
    Ok(())
}
