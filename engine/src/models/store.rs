//! The model folder: `$TETE_HOME/models/<id>/`, the download cache
//! `$TETE_HOME/downloads/`, and a staging folder on the same filesystem so
//! that every file enters the model folder by rename, whole and verified.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::manifest::{Converter, Model};
use super::{ModelError, convert};

/// The name of the record a converted model keeps of its outputs.
const RECORD: &str = ".tete-converted.json";

/// Where models, downloads and staging files live.
#[derive(Debug, Clone)]
pub struct Store {
    home: PathBuf,
}

/// What `tete models list` reports of one model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelState {
    /// Every file present with the expected sha256, conversion done.
    Verified,
    /// Compiled into the binary.
    Builtin,
    /// Nothing fetched yet.
    Missing,
    /// Some files present, others missing.
    Incomplete { missing: Vec<String> },
    /// A file is present with the wrong content (truncated or altered).
    Corrupt { file: String, detail: String },
    /// Source files verified, conversion not yet done (or its output is damaged).
    NotConverted { detail: String },
}

impl ModelState {
    pub fn is_ready(&self) -> bool {
        matches!(self, Self::Verified | Self::Builtin)
    }
}

impl std::fmt::Display for ModelState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Verified => f.write_str("verified"),
            Self::Builtin => f.write_str("built in"),
            Self::Missing => f.write_str("missing"),
            Self::Incomplete { missing } => {
                write!(f, "incomplete (missing {})", missing.join(", "))
            }
            Self::Corrupt { file, detail } => write!(f, "corrupt ({file}: {detail})"),
            Self::NotConverted { detail } => write!(f, "not converted ({detail})"),
        }
    }
}

/// What a conversion wrote, kept next to the outputs so that they can be verified.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub(crate) struct ConversionRecord {
    pub converter: String,
    pub converter_version: u32,
    /// Output file name → sha256.
    pub outputs: Vec<(String, String)>,
}

impl Store {
    pub fn new(home: impl Into<PathBuf>) -> Self {
        Self { home: home.into() }
    }

    pub fn home(&self) -> &Path {
        &self.home
    }

    pub fn models_dir(&self) -> PathBuf {
        self.home.join("models")
    }

    pub fn model_dir(&self, id: &str) -> PathBuf {
        self.models_dir().join(id)
    }

    pub fn downloads_dir(&self) -> PathBuf {
        self.home.join("downloads")
    }

    pub fn staging_dir(&self) -> PathBuf {
        self.home.join("staging")
    }

    /// The path of one of a model's files, for loaders.
    pub fn file(&self, model: &Model, name: &str) -> PathBuf {
        self.model_dir(&model.id).join(name)
    }

    /// Checks every file of a model against its sha256 and the conversion record.
    pub fn state(&self, model: &Model) -> Result<ModelState, ModelError> {
        if model.converter == Converter::Builtin {
            return Ok(ModelState::Builtin);
        }
        let dir = self.model_dir(&model.id);
        let mut missing = Vec::new();
        for file in &model.files {
            let path = dir.join(&file.name);
            if !path.exists() {
                missing.push(file.name.clone());
                continue;
            }
            let actual = sha256_file(&path)?;
            if actual != file.sha256 {
                return Ok(ModelState::Corrupt {
                    file: file.name.clone(),
                    detail: format!("sha256 {actual}, expected {}", file.sha256),
                });
            }
        }
        if missing.len() == model.files.len() {
            return Ok(ModelState::Missing);
        }
        if !missing.is_empty() {
            return Ok(ModelState::Incomplete { missing });
        }
        self.conversion_state(model)
    }

    fn conversion_state(&self, model: &Model) -> Result<ModelState, ModelError> {
        let Some(version) = convert::version(model.converter) else {
            return Ok(ModelState::Verified);
        };
        let dir = self.model_dir(&model.id);
        let record = match self.record(model)? {
            Some(r) if r.converter_version == version => r,
            Some(_) => {
                return Ok(ModelState::NotConverted { detail: "converted by an older converter".into() });
            }
            None => {
                return Ok(ModelState::NotConverted { detail: "no conversion output yet".into() });
            }
        };
        for (name, sha) in &record.outputs {
            let path = dir.join(name);
            if !path.exists() {
                return Ok(ModelState::NotConverted { detail: format!("{name} is missing") });
            }
            if &sha256_file(&path)? != sha {
                return Ok(ModelState::NotConverted { detail: format!("{name} does not match its record") });
            }
        }
        Ok(ModelState::Verified)
    }

    pub(crate) fn record(&self, model: &Model) -> Result<Option<ConversionRecord>, ModelError> {
        let path = self.model_dir(&model.id).join(RECORD);
        match std::fs::read(&path) {
            Ok(bytes) => Ok(serde_json::from_slice(&bytes).ok()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(ModelError::io(format!("reading {}", path.display()))(e)),
        }
    }

    pub(crate) fn write_record(&self, model: &Model, record: &ConversionRecord) -> Result<(), ModelError> {
        let bytes = serde_json::to_vec_pretty(record)
            .map_err(|e| ModelError::Convert { model: model.id.clone(), detail: e.to_string() })?;
        let mut staged = self.stage()?;
        staged.write_all(&bytes).map_err(ModelError::io("writing conversion record"))?;
        self.commit(staged, &model.id, RECORD).map(|_| ())
    }

    /// A new temporary file in the staging folder.
    pub(crate) fn stage(&self) -> Result<tempfile::NamedTempFile, ModelError> {
        let dir = self.staging_dir();
        std::fs::create_dir_all(&dir).map_err(ModelError::io(format!("creating {}", dir.display())))?;
        tempfile::NamedTempFile::new_in(&dir).map_err(ModelError::io("creating a staging file"))
    }

    /// Moves a finished staging file into a model's folder under `name`,
    /// after flushing it to disk: the rename is the only step that makes it
    /// visible, so an interrupted fetch leaves no half-file there.
    pub(crate) fn commit(
        &self,
        staged: tempfile::NamedTempFile,
        model_id: &str,
        name: &str,
    ) -> Result<PathBuf, ModelError> {
        staged.as_file().sync_all().map_err(ModelError::io("flushing a staged file"))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            // Staging files are created private; models are for every user of the host.
            staged
                .as_file()
                .set_permissions(std::fs::Permissions::from_mode(0o644))
                .map_err(ModelError::io("setting a model file's permissions"))?;
        }
        let dir = self.model_dir(model_id);
        std::fs::create_dir_all(&dir).map_err(ModelError::io(format!("creating {}", dir.display())))?;
        let dest = dir.join(name);
        staged.persist(&dest).map_err(|e| ModelError::io(format!("moving a file into {}", dest.display()))(e.error))?;
        Ok(dest)
    }
}

/// sha256 of a file, as lowercase hex.
pub fn sha256_file(path: &Path) -> Result<String, ModelError> {
    let mut file = File::open(path).map_err(ModelError::io(format!("opening {}", path.display())))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(ModelError::io(format!("reading {}", path.display())))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// A writer that hashes what passes through it.
pub(crate) struct HashingWriter<W> {
    pub inner: W,
    pub hasher: Sha256,
    pub written: u64,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        Self { inner, hasher: Sha256::new(), written: 0 }
    }

    pub fn finish(self) -> (W, String, u64) {
        (self.inner, hex::encode(self.hasher.finalize()), self.written)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
