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
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server.
    Serve(ServeArgs),
    /// Fetch, verify and list models.
    #[command(subcommand)]
    Models(ModelsCommand),
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

fn store(global: &Global) -> Store {
    Store::new(global.home.clone().unwrap_or_else(tete_engine::models::default_home))
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
        Command::Serve(args) => runtime.block_on(serve(&cli.global, args)),
    }
}

async fn serve(global: &Global, args: ServeArgs) -> anyhow::Result<()> {
    let manifest = manifest(global)?;
    let store = store(global);
    let devices = tokio::task::spawn_blocking(move || Devices::select(args.device)).await??;
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
    let listener = tokio::net::TcpListener::bind(args.bind).await.with_context(|| format!("binding {}", args.bind))?;
    let addr = listener.local_addr()?;
    let public = args.public_url.unwrap_or_else(|| format!("http://{addr}"));
    let state = crate::http::AppState::new(manifest, store, &devices);
    println!("tete is serving on {public}  (open {public}/ for status; health at {public}/healthz)");
    println!("not built yet: the conversation API and meeting page — this host serves status, health and metrics only");
    crate::http::serve(listener, state).await
}
