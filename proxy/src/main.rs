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
    let telemetry = iron_proxy::telemetry::init("iron-proxy", json, &ProcessEnv);
    tracing::info!(listen = %config.server.listen, admin = %config.server.admin_listen, "iron-proxy starting");
    let result = iron_proxy::run(&config);
    telemetry.flush();
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("iron-proxy: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
