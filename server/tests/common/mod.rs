//! Shared test set-up: the API in process over every database backend
//! (SQLite always; PostgreSQL when `TETE_TEST_POSTGRES_URL` names a server
//! where the tests may create databases), and a webhook receiver.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, to_bytes};
use axum::http::{Request, StatusCode};
use sqlx::Executor;
use tete_server::api::{Api, ApiConfig};
use tete_server::conversations::Host;
use tete_server::db::Db;
use tete_server::webhooks::{Deliverer, RetryPolicy};
use tower::ServiceExt;

pub const KEY: &str = "test-key";
pub const SECRET: &[u8] = b"webhook-secret";

/// A database for one test: its URL and whatever keeps it alive.
pub struct TestDb {
    pub label: &'static str,
    pub url: String,
    _dir: Option<tempfile::TempDir>,
}

/// SQLite, and PostgreSQL when configured (required when `TETE_REQUIRE_POSTGRES=1`).
pub async fn databases() -> Vec<TestDb> {
    let dir = tempfile::tempdir().unwrap();
    let mut out = vec![TestDb { label: "sqlite", url: Db::sqlite_url(dir.path()), _dir: Some(dir) }];
    match std::env::var("TETE_TEST_POSTGRES_URL") {
        Ok(admin) if !admin.is_empty() => {
            sqlx::any::install_default_drivers();
            let name = format!("tete_test_{}", tete_server::ids::random_token(6));
            let pool = sqlx::AnyPool::connect(&admin).await.expect("connecting to TETE_TEST_POSTGRES_URL");
            pool.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).await.unwrap();
            pool.close().await;
            let mut url = url::Url::parse(&admin).unwrap();
            url.set_path(&name);
            out.push(TestDb { label: "postgres", url: url.to_string(), _dir: None });
        }
        _ => assert!(
            std::env::var("TETE_REQUIRE_POSTGRES").map_or(true, |v| v != "1"),
            "TETE_REQUIRE_POSTGRES=1 but TETE_TEST_POSTGRES_URL is not set"
        ),
    }
    out
}

/// Fast retries for tests.
pub fn policy() -> RetryPolicy {
    RetryPolicy {
        base: Duration::from_millis(50),
        max_delay: Duration::from_millis(400),
        horizon: Duration::from_secs(3),
        lease: Duration::from_secs(2),
        request_timeout: Duration::from_secs(2),
        recheck: Duration::from_millis(200),
    }
}

/// Polls `probe` until it returns `Some`, or gives back its last answer
/// (`None`) at the deadline. A receiver sees a webhook before the deliverer
/// has recorded the outcome, so status checks wait for the record.
pub async fn eventually<T, F, Fut>(within: Duration, mut probe: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(v) = probe().await {
            return Some(v);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub struct TestApp {
    pub router: axum::Router,
    pub api: Api,
    pub upload_root: tempfile::TempDir,
}

pub async fn app(url: &str) -> TestApp {
    app_with(url, |_| {}).await
}

pub async fn app_with(url: &str, tweak: impl FnOnce(&mut ApiConfig)) -> TestApp {
    let db = Db::connect(url).await.unwrap_or_else(|e| panic!("{url}: {e}"));
    let deliverer = Deliverer::new(db.clone(), SECRET.to_vec(), policy(), false).unwrap();
    let host = Host::new(db, deliverer, "test-host".into());
    let upload_root = tempfile::tempdir().unwrap();
    let mut config = ApiConfig {
        api_key: Some(KEY.into()),
        public_url: "http://127.0.0.1:9".into(),
        forbid_private_callbacks: false,
        upload_root: upload_root.path().to_path_buf(),
        max_upload_bytes: 1 << 20,
        models: Arc::new(tete_engine::models::Manifest::embedded().unwrap()),
        speech: None,
        voice: None,
        chat: None,
        training: None,
    };
    tweak(&mut config);
    let api = Api { config: Arc::new(config), host, edge: None };
    tete_server::api::replicas::ensure_stock(&api).await.unwrap();
    TestApp { router: tete_server::api::router(api.clone()), api, upload_root }
}

impl TestApp {
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (StatusCode, serde_json::Value) {
        let mut req = Request::builder().method(method).uri(path).header("x-api-key", KEY);
        let body = match body {
            Some(v) => {
                req = req.header("content-type", "application/json");
                Body::from(v.to_string())
            }
            None => Body::empty(),
        };
        self.send(req.body(body).unwrap()).await
    }

    pub async fn send(&self, req: Request<Body>) -> (StatusCode, serde_json::Value) {
        let response = self.router.clone().oneshot(req).await.unwrap();
        let status = response.status();
        let bytes = to_bytes(response.into_body(), 1 << 24).await.unwrap();
        let value = if bytes.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&bytes).into()))
        };
        (status, value)
    }
}

/// One webhook as the receiver saw it.
#[derive(Debug, Clone)]
pub struct Received {
    pub delivery_id: String,
    pub signature_ok: bool,
    pub body: serde_json::Value,
}

/// A webhook receiver on loopback. It answers `fail_first` requests with
/// 500, then 200, and keeps everything it was sent.
#[derive(Clone)]
pub struct Receiver {
    pub url: String,
    pub got: Arc<Mutex<Vec<Received>>>,
    pub fail_first: Arc<Mutex<usize>>,
    /// While set, requests are held open (a receiver that hangs mid-delivery).
    pub hang: Arc<std::sync::atomic::AtomicBool>,
    /// Requests that arrived while hanging.
    pub held: Arc<std::sync::atomic::AtomicUsize>,
}

impl Receiver {
    pub async fn start(fail_first: usize) -> Self {
        Self::start_on("127.0.0.1:0", fail_first).await
    }

    pub async fn start_on(addr: &str, fail_first: usize) -> Self {
        let got = Arc::new(Mutex::new(Vec::new()));
        let fail = Arc::new(Mutex::new(fail_first));
        let hang = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let held = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (g, f, h, hd) = (got.clone(), fail.clone(), hang.clone(), held.clone());
        let handler = move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
            let (g, f, h, hd) = (g.clone(), f.clone(), h.clone(), hd.clone());
            async move {
                if h.load(std::sync::atomic::Ordering::SeqCst) {
                    hd.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    return StatusCode::INTERNAL_SERVER_ERROR;
                }
                {
                    let mut left = f.lock().unwrap();
                    if *left > 0 {
                        *left -= 1;
                        return StatusCode::INTERNAL_SERVER_ERROR;
                    }
                }
                let sig = headers.get("x-tete-signature").and_then(|v| v.to_str().ok()).unwrap_or_default();
                let id = headers.get("x-tete-delivery-id").and_then(|v| v.to_str().ok()).unwrap_or_default();
                g.lock().unwrap().push(Received {
                    delivery_id: id.to_string(),
                    signature_ok: tete_server::webhooks::verify(SECRET, &body, sig),
                    body: serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
                });
                StatusCode::OK
            }
        };
        let router = axum::Router::new().route("/hook", axum::routing::post(handler));
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        Self { url, got, fail_first: fail, hang, held }
    }

    /// Waits (bounded) until `n` distinct deliveries have arrived.
    pub async fn wait_for(&self, n: usize, within: Duration) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let got = self.distinct();
            if got.len() >= n || tokio::time::Instant::now() >= deadline {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Deliveries de-duplicated by delivery id, in arrival order.
    pub fn distinct(&self) -> Vec<Received> {
        let mut seen = std::collections::HashSet::new();
        self.got.lock().unwrap().iter().filter(|r| seen.insert(r.delivery_id.clone())).cloned().collect()
    }
}

/// A `tete serve` child process, killed (SIGKILL: no graceful shutdown) when dropped.
pub struct Server {
    pub child: std::process::Child,
    pub base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `tete serve --device cpu` on a free loopback port with `args`
/// added and the test key; returns once it says where it serves. The
/// models come from the default home (the test command fetches them).
pub fn serve(args: &[&str]) -> Server {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_tete"))
        .args(["serve", "--device", "cpu", "--bind", "127.0.0.1:0"])
        .args(args)
        .env("TETE_API_KEY", KEY)
        .env_remove("TETE_DATABASE_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting tete");
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let base = loop {
        let line = lines.next().expect("tete exited before serving").unwrap();
        if let Some(rest) = line.strip_prefix("tete is serving on ") {
            break rest.split_whitespace().next().unwrap().to_string();
        }
    };
    // Keep draining stdout so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Server { child, base }
}

/// A 16-bit mono 48 kHz WAV of a `hz` tone.
pub fn tone_wav(path: &std::path::Path, hz: f64, seconds: f64) {
    let n = (48_000.0 * seconds) as usize;
    let pcm: Vec<f32> =
        (0..n).map(|i| (0.4 * (std::f64::consts::TAU * hz * i as f64 / 48_000.0).sin()) as f32).collect();
    wav_48k(path, &pcm);
}

/// `pcm` (48 kHz, in [-1, 1]) as a 16-bit mono WAV file.
pub fn wav_48k(path: &std::path::Path, pcm: &[f32]) {
    let n = pcm.len();
    let mut b = Vec::new();
    b.extend_from_slice(b"RIFF");
    b.extend_from_slice(&(36 + 2 * n as u32).to_le_bytes());
    b.extend_from_slice(b"WAVEfmt ");
    for v in [16u32, 1 | (1 << 16), 48_000, 96_000, 2 | (16 << 16)] {
        b.extend_from_slice(&v.to_le_bytes());
    }
    b.extend_from_slice(b"data");
    b.extend_from_slice(&(2 * n as u32).to_le_bytes());
    for s in pcm {
        b.extend_from_slice(&((s * 32767.0) as i16).to_le_bytes());
    }
    std::fs::write(path, b).unwrap();
}

/// A headless browser in its own process group; the group (renderer, GPU
/// and utility processes too) is killed when this is dropped, also when
/// the test fails first.
pub struct Browser(std::process::Child);

impl Browser {
    pub fn kill(&mut self) {
        let _ = std::process::Command::new("kill").args(["-KILL", "--", &format!("-{}", self.0.id())]).status();
        let _ = self.0.wait();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Starts headless Chromium with a profile in `dir` and `args` (flags and
/// the URL); the JSON that pages log to the console after `tag` comes out
/// of the receiver. It resolves no names: nothing beyond 127.0.0.1 may be
/// reached.
pub fn chromium(
    dir: &std::path::Path,
    args: &[&str],
    tag: &'static str,
) -> (Browser, std::sync::mpsc::Receiver<serde_json::Value>) {
    chromium_with(dir, args, move |line| console_json(line, tag))
}

/// Like [`chromium`], for pages that log under several tags: each
/// `"tete-<name> {json}"` console line comes out as `{"tag": "tete-<name>",
/// "value": {json}}`.
pub fn chromium_tagged(
    dir: &std::path::Path,
    args: &[&str],
) -> (Browser, std::sync::mpsc::Receiver<serde_json::Value>) {
    chromium_with(dir, args, |line| {
        let start = line.find("\"tete-")? + 1;
        let tag = line[start..].split_whitespace().next()?;
        let value = console_json(line, tag)?;
        Some(serde_json::json!({"tag": tag, "value": value}))
    })
}

fn chromium_with(
    dir: &std::path::Path,
    args: &[&str],
    parse: impl Fn(&str) -> Option<serde_json::Value> + Send + 'static,
) -> (Browser, std::sync::mpsc::Receiver<serde_json::Value>) {
    use std::os::unix::process::CommandExt as _;
    let mut child = std::process::Command::new("chromium")
        .args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-default-apps",
            "--disable-features=WebRtcHideLocalIpsWithMdns,MediaRouter,OptimizationHints,Translate",
            "--autoplay-policy=no-user-gesture-required",
            "--allow-loopback-in-peer-connection",
            "--enable-logging=stderr",
            "--v=0",
            "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
        ])
        .arg(format!("--user-data-dir={}", dir.join("profile").display()))
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("chromium (scripts/setup-system.sh installs it)");
    let rx = console_lines(child.stderr.take().unwrap(), parse);
    (Browser(child), rx)
}

/// The values `parse` finds in the lines of a browser's output, as they come.
fn console_lines(
    output: impl std::io::Read + Send + 'static,
    parse: impl Fn(&str) -> Option<serde_json::Value> + Send + 'static,
) -> std::sync::mpsc::Receiver<serde_json::Value> {
    use std::io::BufRead;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(output).lines().map_while(Result::ok) {
            if let Some(value) = parse(&line) {
                let _ = tx.send(value);
            }
        }
    });
    rx
}

/// Firefox's settings for a test: fake camera and microphone without
/// asking, host candidates on loopback without mDNS names (Firefox gathers
/// on every interface, loopback included, only for a page that may use the
/// camera and microphone; otherwise on the default route's alone), autoplay, page
/// console on stdout, and nothing reaching out: every HTTP(S) request but
/// to 127.0.0.1 goes to a proxy at 127.0.0.1:9 (nothing listens), DNS over
/// HTTPS, updates, telemetry, safe browsing, push and the plug-in download
/// (Cisco's OpenH264) are off.
const FIREFOX_PREFS: &[(&str, &str)] = &[
    ("media.navigator.streams.fake", "true"),
    ("media.navigator.permission.disabled", "true"),
    ("permissions.default.camera", "1"),
    ("permissions.default.microphone", "1"),
    ("media.peerconnection.ice.loopback", "true"),
    ("media.peerconnection.ice.obfuscate_host_addresses", "false"),
    ("media.autoplay.default", "0"),
    ("media.autoplay.blocking_policy", "0"),
    ("devtools.console.stdout.content", "true"),
    ("network.proxy.type", "1"),
    ("network.proxy.http", "\"127.0.0.1\""),
    ("network.proxy.http_port", "9"),
    ("network.proxy.ssl", "\"127.0.0.1\""),
    ("network.proxy.ssl_port", "9"),
    ("network.proxy.no_proxies_on", "\"127.0.0.1\""),
    ("network.proxy.allow_hijacking_localhost", "false"),
    ("network.trr.mode", "5"),
    ("network.dns.disablePrefetch", "true"),
    ("network.prefetch-next", "false"),
    ("network.http.speculative-parallel-limit", "0"),
    ("network.captive-portal-service.enabled", "false"),
    ("network.connectivity-service.enabled", "false"),
    ("media.gmp-manager.url", "\"\""),
    ("media.gmp-gmpopenh264.enabled", "false"),
    ("app.update.disabledForTesting", "true"),
    ("app.normandy.enabled", "false"),
    ("toolkit.telemetry.enabled", "false"),
    ("toolkit.telemetry.unified", "false"),
    ("datareporting.policy.dataSubmissionEnabled", "false"),
    ("datareporting.healthreport.uploadEnabled", "false"),
    ("browser.safebrowsing.malware.enabled", "false"),
    ("browser.safebrowsing.phishing.enabled", "false"),
    ("browser.safebrowsing.downloads.enabled", "false"),
    ("browser.shell.checkDefaultBrowser", "false"),
    ("browser.startup.homepage_override.mstone", "\"ignore\""),
    ("dom.push.connection.enabled", "false"),
    ("extensions.update.enabled", "false"),
    ("extensions.blocklist.enabled", "false"),
    ("services.settings.server", "\"http://127.0.0.1:9/\""),
];

/// Starts headless Firefox (Debian `firefox-esr`) on `url` with a fresh
/// profile in `dir` ([`FIREFOX_PREFS`]); the JSON that pages log to the
/// console after `tag` comes out of the receiver.
pub fn firefox(
    dir: &std::path::Path,
    url: &str,
    tag: &'static str,
) -> (Browser, std::sync::mpsc::Receiver<serde_json::Value>) {
    use std::os::unix::process::CommandExt as _;
    let profile = dir.join("firefox-profile");
    std::fs::create_dir_all(&profile).unwrap();
    let prefs: String = FIREFOX_PREFS.iter().map(|(k, v)| format!("user_pref(\"{k}\", {v});\n")).collect();
    std::fs::write(profile.join("user.js"), prefs).unwrap();
    let mut child = std::process::Command::new("firefox-esr")
        .args(["--headless", "--no-remote", "--profile"])
        .arg(&profile)
        .arg(url)
        .env("MOZ_CRASHREPORTER_DISABLE", "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .spawn()
        .expect("firefox-esr (scripts/setup-system.sh installs it)");
    let rx = console_lines(child.stdout.take().unwrap(), move |line| firefox_console_json(line, tag));
    (Browser(child), rx)
}

/// The JSON a page logged after `tag`, from Firefox's stdout: the message
/// is printed as a JSON string, `console.log: "tag {...}"`.
fn firefox_console_json(line: &str, tag: &str) -> Option<serde_json::Value> {
    let message: String = serde_json::from_str(line.strip_prefix("console.log: ")?).ok()?;
    serde_json::from_str(message.strip_prefix(tag)?.trim_start()).ok()
}

/// The JSON a page logged to the console after `tag` (Chromium's stderr
/// wraps it as `"tag {...}", source: ...`).
fn console_json(line: &str, tag: &str) -> Option<serde_json::Value> {
    let start = line.find(tag)? + tag.len() + 1;
    let rest = line.get(start..)?;
    let end = rest.rfind("}\"").map_or(rest.len(), |i| i + 1);
    serde_json::from_str(&rest[..end]).ok()
}

/// Where a model of the built-in manifest lives in the default home (the
/// test command fetches them).
pub fn model_dir(id: &str) -> std::path::PathBuf {
    let manifest = tete_engine::models::Manifest::embedded().unwrap();
    tete_engine::models::Store::new(tete_engine::models::default_home()).model_dir(&manifest.model(id).unwrap().id)
}

/// The aiortc peer (`whip_client.py`) joining at `whip` with `wav` as its
/// microphone for `seconds`; scripts/test.sh points `TETE_TEST_PYTHON` at
/// a venv with aiortc.
pub fn whip_client(whip: &str, wav: &std::path::Path, seconds: f64) -> std::process::Command {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/whip_client.py");
    let python = std::env::var("TETE_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let mut command = std::process::Command::new(python);
    command.arg(script).arg(whip).arg(wav).arg(seconds.to_string());
    command
}

/// Runs the client on a thread of its own (the test's runtime serves it)
/// and gives its report.
pub fn run_client(mut command: std::process::Command) -> tokio::task::JoinHandle<serde_json::Value> {
    tokio::task::spawn_blocking(move || {
        let output = command.output().expect("python3 with aiortc (scripts/test.sh installs it)");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
        serde_json::from_str(stdout.lines().last().unwrap_or("")).unwrap_or_else(|e| panic!("{e}: {stdout}"))
    })
}
