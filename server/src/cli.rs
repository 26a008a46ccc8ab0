//! The command line: `tete serve`, `tete models …`, `tete devices`.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use tete_engine::models::{FetchOptions, Fetcher, Manifest, Store};
use tete_engine::{DeviceRequest, Devices};

#[derive(Debug, Parser)]
#[command(name = "tete", version, about = "Self-hosted real-time engine for conversational video AI")]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct Global {
    /// Where models, downloads and data live (default: tete under the user's cache folder).
    #[arg(long, env = "TETE_HOME", global = true)]
    pub home: Option<PathBuf>,
    /// A models.toml to use instead of the one built in.
    #[arg(long, env = "TETE_MODELS_MANIFEST", global = true)]
    pub manifest: Option<PathBuf>,
    /// sqlite://PATH or postgres://… (default: SQLite in the home folder).
    #[arg(long, env = "TETE_DATABASE_URL", global = true)]
    pub database_url: Option<String>,
}

// Built once per run: the size of `Serve`'s arguments does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server.
    Serve(ServeArgs),
    /// Fetch, verify and list models.
    #[command(subcommand)]
    Models(ModelsCommand),
    /// Create, list and revoke API keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Select devices as `serve` would and print what was chosen and why.
    Devices {
        #[arg(long, default_value = "auto", env = "TETE_DEVICE")]
        device: DeviceRequest,
    },
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8787", env = "TETE_BIND")]
    pub bind: SocketAddr,
    /// auto | cpu | cuda[:N] | wgpu
    #[arg(long, default_value = "auto", env = "TETE_DEVICE")]
    pub device: DeviceRequest,
    /// Base URL that clients use to reach this host (default: http://<bind>).
    #[arg(long, env = "TETE_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// An API key accepted besides the stored ones (development, tests, single-tenant hosts).
    #[arg(long, env = "TETE_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Secret for webhook signatures (default: generated once and kept in the database, shared by its hosts).
    #[arg(long, env = "TETE_WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_secret: Option<String>,
    /// This host's name in a shared database (default: the machine's host name and port).
    #[arg(long, env = "TETE_HOST_ID")]
    pub host_id: Option<String>,
    /// Refuse callback URLs that resolve to private, loopback or link-local addresses.
    #[arg(long, env = "TETE_FORBID_PRIVATE_CALLBACKS")]
    pub forbid_private_callbacks: bool,
    /// Folder for replica uploads and allowed file:// training URLs (default: <home>/uploads).
    #[arg(long, env = "TETE_UPLOAD_ROOT")]
    pub upload_root: Option<PathBuf>,
    /// Largest replica upload, in MiB.
    #[arg(long, env = "TETE_MAX_UPLOAD_MB", default_value_t = 512)]
    pub max_upload_mb: usize,
    /// Delay before the first webhook retry, in milliseconds (doubled after each).
    #[arg(long, env = "TETE_WEBHOOK_RETRY_BASE_MS", default_value_t = 1000)]
    pub webhook_retry_base_ms: u64,
    /// Give up on a webhook this many seconds after its event.
    #[arg(long, env = "TETE_WEBHOOK_HORIZON_SECS", default_value_t = 86_400)]
    pub webhook_horizon_secs: u64,
    /// Timeout of one webhook request, in seconds.
    #[arg(long, env = "TETE_WEBHOOK_TIMEOUT_SECS", default_value_t = 10)]
    pub webhook_timeout_secs: u64,
    /// How long an attempt in flight reserves its delivery (at least twice the request timeout); after a crash it is retried once this has passed.
    #[arg(long, env = "TETE_WEBHOOK_LEASE_SECS", default_value_t = 60)]
    pub webhook_lease_secs: u64,
    /// The resident speech recogniser (a Whisper model id of models.toml).
    #[arg(long, env = "TETE_ASR_MODEL", default_value = "whisper-tiny.en")]
    pub asr_model: String,
    /// The address WebRTC peers' UDP sockets bind to and advertise as their
    /// host candidate (default: the HTTP bind address, or 127.0.0.1 when
    /// that is unspecified).
    #[arg(long, env = "TETE_WEBRTC_IP")]
    pub webrtc_ip: Option<std::net::IpAddr>,
    /// The resident LLM (a GGUF model id of models.toml).
    #[arg(long, env = "TETE_LLM_MODEL", default_value = "smollm2-135m-instruct")]
    pub llm_model: String,
    /// The resident voice behind /v1/audio/speech (a Piper voice id of models.toml).
    #[arg(long, env = "TETE_TTS_MODEL", default_value = "piper-en_US-joe-medium")]
    pub tts_model: String,
    /// Where call recordings are kept (default: `$TETE_HOME/recordings`);
    /// with `--recordings-bucket`, where they wait while calls run.
    #[arg(long, env = "TETE_RECORDINGS_DIR")]
    pub recordings_dir: Option<PathBuf>,
    /// Keep recordings in this S3-compatible bucket instead (credentials
    /// from `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`).
    #[arg(long, env = "TETE_RECORDINGS_BUCKET")]
    pub recordings_bucket: Option<String>,
    /// The bucket's endpoint, for S3-compatible stores other than AWS.
    #[arg(long, env = "TETE_RECORDINGS_ENDPOINT", requires = "recordings_bucket")]
    pub recordings_endpoint: Option<String>,
    #[arg(long, env = "TETE_RECORDINGS_REGION", requires = "recordings_bucket")]
    pub recordings_region: Option<String>,
    /// Camera frames perception looks at per second on each call (0 turns
    /// perception off on this host).
    #[arg(long, env = "TETE_PERCEPTION_FPS", default_value_t = 2.0)]
    pub perception_fps: f64,
    /// Side of the replica's square video in pixels (a multiple of 8,
    /// 64–1024): replicas are trained at it, and one saved at another size
    /// is resampled when a call starts.
    #[arg(long, env = "TETE_VIDEO_SIZE", default_value_t = 512, value_parser = video_size)]
    pub video_size: u32,
    /// Calls this host takes at once (it also refuses new ones while its executor is overloaded).
    #[arg(long, env = "TETE_MAX_SESSIONS", default_value_t = 1)]
    pub max_sessions: u32,
    /// Key prefix of recordings in the bucket.
    #[arg(long, env = "TETE_RECORDINGS_PREFIX", default_value = "", requires = "recordings_bucket")]
    pub recordings_prefix: String,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key; it is printed once and stored only as a hash.
    Create { name: String },
    /// List keys (ids, names, dates; never the keys).
    List,
    /// Revoke a key by id.
    Revoke { id: String },
}

#[derive(Debug, Subcommand)]
pub enum ModelsCommand {
    /// Download, verify, extract and convert models (the default set when no id is given).
    Fetch {
        ids: Vec<String>,
        /// Fetch every model in the manifest.
        #[arg(long, conflicts_with = "ids")]
        all: bool,
    },
    /// Show every model and its state (files are checked against their sha256).
    List,
}

pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TETE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

fn manifest(global: &Global) -> anyhow::Result<Manifest> {
    Ok(match &global.manifest {
        Some(path) => Manifest::from_path(path)?,
        None => Manifest::embedded()?,
    })
}

fn home(global: &Global) -> PathBuf {
    global.home.clone().unwrap_or_else(tete_engine::models::default_home)
}

fn store(global: &Global) -> Store {
    Store::new(home(global))
}

/// Where this host keeps call recordings.
fn recordings(args: &ServeArgs, global: &Global) -> anyhow::Result<crate::recording::RecordingStore> {
    let dir = args.recordings_dir.clone().unwrap_or_else(|| home(global).join("recordings"));
    let store = match &args.recordings_bucket {
        Some(bucket) => crate::recording::RecordingStore::s3(
            &dir,
            crate::recording::S3Config {
                bucket: bucket.clone(),
                endpoint: args.recordings_endpoint.clone(),
                region: args.recordings_region.clone(),
                prefix: args.recordings_prefix.clone(),
                credentials: None,
            },
        ),
        None => crate::recording::RecordingStore::local(&dir),
    };
    store.with_context(|| format!("preparing recordings in {}", dir.display()))
}

async fn database(global: &Global) -> anyhow::Result<crate::db::Db> {
    let home = home(global);
    std::fs::create_dir_all(&home).with_context(|| format!("creating {}", home.display()))?;
    let url = global.database_url.clone().unwrap_or_else(|| crate::db::Db::sqlite_url(&home));
    crate::db::Db::connect(&url).await.with_context(|| format!("opening the database {}", redact(&url)))
}

/// A database URL without its password, for messages.
fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_string(),
    }
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the async runtime")?;
    match cli.command {
        Command::Models(ModelsCommand::Fetch { ids, all }) => {
            let manifest = manifest(&cli.global)?;
            let ids = if all { manifest.models.iter().map(|m| m.id.clone()).collect() } else { ids };
            let fetcher = Fetcher::new(manifest, store(&cli.global), FetchOptions::default())?;
            let report = runtime.block_on(fetcher.fetch(&ids))?;
            println!(
                "{} fetched, {} already verified, {} package downloads, into {}",
                report.fetched.len(),
                report.skipped.len(),
                report.downloads.len(),
                fetcher.store().models_dir().display()
            );
            Ok(())
        }
        Command::Models(ModelsCommand::List) => {
            let manifest = manifest(&cli.global)?;
            let store = store(&cli.global);
            println!("models in {}", store.models_dir().display());
            println!("{:<30} {:<11} {:<8} {:<12} state", "id", "stage", "default", "format");
            let mut missing_defaults = 0;
            for model in &manifest.models {
                let state = store.state(model)?;
                if model.default && !state.is_ready() {
                    missing_defaults += 1;
                }
                println!(
                    "{:<30} {:<11} {:<8} {:<12} {state}",
                    model.id,
                    model.stage,
                    if model.default { "yes" } else { "" },
                    model.format
                );
            }
            if missing_defaults > 0 {
                println!("{missing_defaults} default model(s) not ready: run `tete models fetch`");
            }
            Ok(())
        }
        Command::Devices { device } => {
            let devices = Devices::select(device)?;
            for line in &devices.report {
                println!("{line}");
            }
            Ok(())
        }
        Command::Keys(cmd) => runtime.block_on(keys(&cli.global, cmd)),
        Command::Serve(args) => runtime.block_on(serve(&cli.global, args)),
    }
}

async fn keys(global: &Global, cmd: KeysCommand) -> anyhow::Result<()> {
    let db = database(global).await?;
    match cmd {
        KeysCommand::Create { name } => {
            let (row, secret) = db.create_api_key(&name).await?;
            println!("created key {} ({}); it is shown only now:\n{secret}", row.id, row.name);
        }
        KeysCommand::List => {
            for k in db.list_api_keys().await? {
                let state = k.revoked_at.map(|t| format!("revoked {t}")).unwrap_or_else(|| "active".into());
                println!("{}  {:<24} created {}  {state}", k.id, k.name, k.created_at);
            }
        }
        KeysCommand::Revoke { id } => {
            anyhow::ensure!(db.revoke_api_key(&id).await?, "no active key with id {id}");
            println!("revoked {id}");
        }
    }
    db.close().await;
    Ok(())
}

/// Runs a model load on a blocking thread and logs how long it took.
async fn load_blocking<T: Send + 'static>(
    what: &str,
    id: &str,
    load: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    let started = std::time::Instant::now();
    let loaded = tokio::task::spawn_blocking(load).await?.with_context(|| format!("loading {id}"))?;
    tracing::info!("{what} {id} loaded in {:.1} s", started.elapsed().as_secs_f64());
    Ok(loaded)
}

/// `--video-size`: a multiple of 8 from 64 to 1024.
fn video_size(text: &str) -> Result<u32, String> {
    let size: u32 = text.parse().map_err(|e| format!("{text:?} is not a size in pixels: {e}"))?;
    if (64..=1024).contains(&size) && size.is_multiple_of(8) {
        Ok(size)
    } else {
        Err(format!("{size} is not a multiple of 8 from 64 to 1024"))
    }
}

/// Loads the face models replica training uses (on the CPU: a replica is
/// built once, and the device is left to the live stages).
async fn load_training(
    manifest: &Manifest,
    store: &Store,
    home: &std::path::Path,
    video_size: u32,
) -> anyhow::Result<crate::training::TrainingConfig> {
    let dir = |id: &str| -> anyhow::Result<std::path::PathBuf> { Ok(store.model_dir(&manifest.model(id)?.id)) };
    let (detector_path, mesh_path) = (dir("blazeface-short-range")?, dir("facemesh")?);
    let stock_portrait = dir("astronaut-portrait")?.join("astronaut.png");
    let output = tete_engine::models::convert::OUTPUT;
    let faces = load_blocking("face models", "blazeface-short-range + facemesh", move || {
        let cpu = candle_core::Device::Cpu;
        Ok(crate::training::FaceModels {
            detector: std::sync::Arc::new(tete_engine::face::BlazeFace::load(&detector_path.join(output), &cpu)?),
            mesher: std::sync::Arc::new(tete_engine::face::FaceMesh::load(&mesh_path.join(output), &cpu)?),
        })
    })
    .await?;
    Ok(crate::training::TrainingConfig {
        faces,
        replicas_dir: home.join("replicas"),
        stock_portrait,
        max_download_bytes: 512 << 20,
        replica: tete_engine::face::ReplicaConfig { size: video_size, ..Default::default() },
    })
}

/// Loads the expression net perception runs with the face models (on the
/// CPU, a few frames a second per call) and starts the executor's seeing
/// lane with them; none when `fps` is 0.
async fn load_perception(
    manifest: &Manifest,
    store: &Store,
    faces: &crate::training::FaceModels,
    fps: f64,
    executor: &tete_engine::scheduler::Executor,
) -> anyhow::Result<Option<crate::edge::perception::PerceptionConfig>> {
    if fps <= 0.0 {
        tracing::info!("perception is off (--perception-fps 0)");
        return Ok(None);
    }
    let path = store.model_dir(&manifest.model("face-expression")?.id).join(tete_engine::models::convert::OUTPUT);
    let expressions = load_blocking("expression net", "face-expression", move || {
        Ok(tete_engine::perception::ExpressionNet::load(&path, &candle_core::Device::Cpu)?)
    })
    .await?;
    let perceiver = tete_engine::perception::Perceiver::new(
        faces.detector.clone(),
        faces.mesher.clone(),
        std::sync::Arc::new(expressions),
    );
    let sight = tete_engine::scheduler::Sight::start(perceiver, Some(executor.load_probe()))
        .context("starting the executor's seeing lane")?;
    Ok(Some(crate::edge::perception::PerceptionConfig { sight: std::sync::Arc::new(sight), fps }))
}

/// A resident model named by `flag`: it must be of `stage` and fetched.
fn check_flag(manifest: &Manifest, store: &Store, flag: &str, id: &str, stage: &str, what: &str) -> anyhow::Result<()> {
    let model = manifest.model(id)?;
    if model.stage != stage {
        anyhow::bail!("{flag} {id}: that model is for the {} stage, not {what}", model.stage);
    }
    let state = store.state(model)?;
    if !state.is_ready() {
        anyhow::bail!("{flag} {id} is not ready ({state}); run `tete models fetch {id}`");
    }
    Ok(())
}

/// Loads the conversation stack (VAD, Smart Turn, Whisper, the LLM, the
/// voice) and says a first phrase, so a missing espeak-ng fails the start
/// rather than the first call.
async fn load_resident(
    manifest: &Manifest,
    store: &Store,
    args: &ServeArgs,
    device: &candle_core::Device,
) -> anyhow::Result<tete_engine::scheduler::Resident> {
    let ids = tete_engine::scheduler::ResidentIds {
        asr: args.asr_model.clone(),
        llm: args.llm_model.clone(),
        tts: args.tts_model.clone(),
        ..Default::default()
    };
    check_flag(manifest, store, "--asr-model", &ids.asr, "asr", "speech recognition")?;
    check_flag(manifest, store, "--llm-model", &ids.llm, "llm", "the LLM")?;
    check_flag(manifest, store, "--tts-model", &ids.tts, "tts", "speech synthesis")?;
    let what = format!("{} + {} + {} + {}", ids.vad, ids.asr, ids.llm, ids.tts);
    let (manifest, store, device) = (manifest.clone(), store.clone(), device.clone());
    load_blocking("conversation stack", &what, move || {
        let resident = tete_engine::scheduler::Resident::load(&manifest, &store, &ids, &device)?;
        let mut speaker = tete_engine::tts::Speaker::new(resident.voice.clone())?;
        for chunk in speaker.say("Ready.", tete_engine::tts::VoiceSettings::default())? {
            chunk?;
        }
        Ok(resident)
    })
    .await
}

async fn serve(global: &Global, args: ServeArgs) -> anyhow::Result<()> {
    let manifest = manifest(global)?;
    let store = store(global);
    let device = args.device;
    let devices = tokio::task::spawn_blocking(move || Devices::select(device)).await??;
    for line in &devices.report {
        tracing::info!("{line}");
    }
    let mut not_ready = Vec::new();
    for model in manifest.defaults() {
        let state = store.state(model)?;
        if !state.is_ready() {
            not_ready.push(format!("{}: {state}", model.id));
        }
    }
    if !not_ready.is_empty() {
        anyhow::bail!("default models are not ready ({}); run `tete models fetch` first", not_ready.join("; "));
    }
    let resident = load_resident(&manifest, &store, &args, &devices.candle).await?;
    // The API's endpoints share the executor's models.
    let speech: std::sync::Arc<dyn tete_engine::asr::SpeechToText> = resident.hearing.asr.clone();
    let chat = crate::api::chat::ChatModel::new(resident.llm.clone(), &args.llm_model);
    let voice_dir = store.model_dir(&manifest.model(&args.tts_model)?.id);
    let info = crate::api::speech::VoiceInfo::read(&args.tts_model, &voice_dir)
        .with_context(|| format!("reading {}", args.tts_model))?;
    let voice = crate::api::speech::Synthesiser::new(resident.voice.clone(), info);
    let executor = std::sync::Arc::new(
        tete_engine::scheduler::Executor::start(resident, args.max_sessions).context("starting the executor")?,
    );
    let training = load_training(&manifest, &store, &home(global), args.video_size).await?;
    let perception = load_perception(&manifest, &store, &training.faces, args.perception_fps, &executor).await?;
    let media =
        crate::edge::conversation::conversation_media(training.replicas_dir.clone(), args.video_size, executor.clone());
    let db = database(global).await?;
    let listener = tokio::net::TcpListener::bind(args.bind).await.with_context(|| format!("binding {}", args.bind))?;
    let addr = listener.local_addr()?;
    let public = args.public_url.clone().unwrap_or_else(|| format!("http://{addr}"));
    let host_id = args.host_id.clone().unwrap_or_else(|| {
        let name = std::fs::read_to_string("/etc/hostname")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "localhost".into());
        format!("{name}:{}", addr.port())
    });
    let policy = crate::webhooks::RetryPolicy {
        base: std::time::Duration::from_millis(args.webhook_retry_base_ms.max(1)),
        horizon: std::time::Duration::from_secs(args.webhook_horizon_secs),
        lease: std::time::Duration::from_secs(args.webhook_lease_secs.max(1)),
        request_timeout: std::time::Duration::from_secs(args.webhook_timeout_secs.clamp(1, 300)),
        ..Default::default()
    };
    let secret = match args.webhook_secret.clone() {
        Some(s) => s.into_bytes(),
        None => db.webhook_secret().await?.into_bytes(),
    };
    let deliverer = crate::webhooks::Deliverer::new(db.clone(), secret, policy, args.forbid_private_callbacks)
        .context("building the webhook client")?;
    let host = crate::conversations::Host::new(db.clone(), deliverer.clone(), host_id);
    let recordings = recordings(&args, global)?;
    let upload_root = args.upload_root.clone().unwrap_or_else(|| home(global).join("uploads"));
    std::fs::create_dir_all(&upload_root).with_context(|| format!("creating {}", upload_root.display()))?;
    let api = crate::api::Api {
        config: std::sync::Arc::new(crate::api::ApiConfig {
            api_key: args.api_key.clone().filter(|k| !k.is_empty()),
            public_url: public.clone(),
            forbid_private_callbacks: args.forbid_private_callbacks,
            upload_root,
            max_upload_bytes: args.max_upload_mb.saturating_mul(1 << 20),
            models: std::sync::Arc::new(manifest.clone()),
            speech: Some(crate::api::audio::Recogniser::new(speech)),
            chat: Some(chat),
            voice: Some(voice),
            training: Some(training),
        }),
        host: host.clone(),
        edge: Some(crate::edge::Edge::new(
            crate::edge::EdgeConfig {
                bind_ip: args.webrtc_ip.unwrap_or(if addr.ip().is_unspecified() {
                    [127, 0, 0, 1].into()
                } else {
                    addr.ip()
                }),
                recordings: Some(recordings),
                perception,
                executor: Some(executor),
                ..Default::default()
            },
            Some(media),
        )),
    };
    crate::api::replicas::ensure_stock(&api).await?;
    let training = crate::training::resume(&api).await?;
    if training > 0 {
        tracing::info!("training {training} replica(s) in the background");
    }
    let resumed = host.resume().await?;
    if resumed > 0 {
        tracing::info!("resumed {resumed} active conversation(s)");
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let sweeper = {
        let host = host.clone();
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            loop {
                if let Err(e) = host.sweep().await {
                    tracing::warn!("sweeping orphaned conversations: {e}");
                }
                tokio::select! {
                    _ = stop.wait_for(|s| *s) => return,
                    _ = tokio::time::sleep(std::time::Duration::from_secs(60)) => {}
                }
            }
        })
    };
    let deliver = {
        let mut stop = stop_rx.clone();
        tokio::spawn(deliverer.clone().run(async move {
            let _ = stop.wait_for(|s| *s).await;
        }))
    };
    if args.api_key.is_none() && db.list_api_keys().await?.iter().all(|k| k.revoked_at.is_some()) {
        println!("no API key yet: set TETE_API_KEY or run `tete keys create NAME`");
    }
    let api_edge = api.edge.clone();
    if let Some(edge) = &api_edge {
        edge.follow(&host);
    }
    let state = crate::http::AppState::new(manifest, store, &devices, api);
    let shutdown = crate::http::shutdown_signal().context("installing signal handlers")?;
    println!(
        "tete is serving on {public}  (open {public}/ for status; API at {public}/v2, health at {public}/healthz)"
    );
    crate::http::serve(listener, state, shutdown).await?;
    // Graceful shutdown: end this host's calls, give the deliverer a moment to send their webhooks.
    host.shutdown_all().await;
    if let Some(edge) = &api_edge
        && !edge.recordings_kept(std::time::Duration::from_secs(30)).await
    {
        tracing::warn!("stopping with recordings still being kept; their files are in the recordings folder");
    }
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), deliverer.round()).await;
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), deliver).await;
    let _ = sweeper.await;
    db.close().await;
    Ok(())
}
