//! `iron-control`: wires configuration, logging and the server together. Everything it
//! calls is built in the library (`iron_control::server`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use iron_control::config::{self, LogFormat, ProcessEnv};
use iron_control::server;

#[derive(Parser)]
#[command(name = "iron-control", version, about = "Iron control service")]
struct Cli {
    /// Path to control.toml (optional: defaults plus IRON_* environment variables).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Validate the configuration and exit.
    #[arg(long)]
    check_config: bool,
    /// Log format (overrides server.log_format).
    #[arg(long, value_enum, global = true)]
    log_format: Option<Format>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Re-seal every stored secret under IRON_MASTER_KEY (old keys in
    /// IRON_MASTER_KEY_PREVIOUS, comma-separated). Run while control is stopped
    /// (embedded store) or at any time (Redis).
    RotateMasterKey,
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("IRON_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("iron-control: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let cfg = config::load(cli.config.as_deref(), &ProcessEnv)?;
    if cli.check_config {
        println!("configuration OK");
        return Ok(());
    }
    let format = match cli.log_format {
        Some(Format::Json) => LogFormat::Json,
        Some(Format::Text) => LogFormat::Text,
        None => cfg.server.log_format,
    };
    init_logging(format);
    let rt = tokio::runtime::Runtime::new().context("start tokio runtime")?;
    rt.block_on(async move {
        match cli.command {
            Some(Command::RotateMasterKey) => {
                let control = server::build_state(&cfg).await?;
                let report = control.state.svc.rotate_master_key().await?;
                println!(
                    "re-sealed {} provider key(s) and {} signing key(s) under master key {}",
                    report.providers,
                    report.signing_keys,
                    cfg.secrets.master_keys.current().key_id()
                );
                Ok(())
            }
            None => {
                let control = server::build_state(&cfg).await?;
                let listener = server::bind(&cfg).await?;
                let addr = listener.local_addr().context("listener address")?;
                tracing::info!(%addr, store = control.state.svc.store.kind(), "iron-control listening");
                server::serve(listener, control.state.clone(), server::shutdown_signal()).await?;
                control.stop_background();
                tracing::info!("iron-control stopped");
                Ok(())
            }
        }
    })
}
