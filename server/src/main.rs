//! `tete`: the conversational video engine's binary.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = tete_server::cli::Cli::parse();
    tete_server::cli::init_tracing();
    match tete_server::cli::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
