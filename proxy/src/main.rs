//! `iron-proxy --config proxy.toml [--check-config]`: wires config, logging and the server.

use std::path::PathBuf;

use clap::Parser;
use iron_proxy::config::{ProcessEnv, ProxyConfig};

#[derive(Parser, Debug)]
#[command(
    name = "iron-proxy",
    version,
    about = "Iron LLM egress proxy (data plane)"
)]
struct Args {
    /// Path to proxy.toml.
    #[arg(long, env = "IRON_PROXY_CONFIG")]
    config: PathBuf,
    /// Validate the configuration and exit.
    #[arg(long)]
    check_config: bool,
    /// Log format: text or json (overrides server.log_format).
    #[arg(long)]
    log_format: Option<String>,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let config = match ProxyConfig::load(&args.config, &ProcessEnv) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("iron-proxy: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    if args.check_config {
        println!("configuration OK");
        return std::process::ExitCode::SUCCESS;
    }
    let json = args
        .log_format
        .as_deref()
        .map_or(config.server.log_json, |f| f == "json");
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    if json {
        tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init();
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }
    tracing::info!(listen = %config.server.listen, admin = %config.server.admin_listen, "iron-proxy starting");
    match iron_proxy::run(&config) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("iron-proxy: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
