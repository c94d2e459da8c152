//! # iron-cli
//!
//! The `iron` command (`design.md` §2): `iron up` runs control and the proxy in one process
//! (`up`); every other command talks REST to control (`client`) with `IRON_CONTROL_URL` and
//! `IRON_API_KEY` (falling back to `./.iron/admin.key`), printing tables or JSON (`output`).
//!
//! Exit codes: 0 ok, 1 error (control refused, unreachable, bad input), 2 usage (clap).

pub mod args;
pub mod client;
pub mod commands;
pub mod output;
pub mod up;

use std::path::Path;
use std::process::ExitCode;

use clap::Parser;

use args::{Cli, Command};

/// Where `iron up` keeps the admin key by default (fallback for IRON_API_KEY).
pub const DEFAULT_ADMIN_KEY_FILE: &str = ".iron/admin.key";

/// Errors of a command. Messages never contain keys or tokens.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(
        "cannot reach Iron control at {0}: is it running? Start it with `iron up`, or set IRON_CONTROL_URL"
    )]
    Unreachable(String),
    #[error("{}", api_message(*.status, .code, .message))]
    Api {
        status: u16,
        code: String,
        message: String,
    },
    #[error(
        "no API key: set IRON_API_KEY (or run `iron up` in this directory, which writes {DEFAULT_ADMIN_KEY_FILE})"
    )]
    NoApiKey,
    #[error("{0}")]
    Input(String),
    #[error("{0}")]
    Other(String),
}

fn api_message(status: u16, code: &str, message: &str) -> String {
    let base = if message.is_empty() {
        format!("control answered HTTP {status}")
    } else {
        message.to_owned()
    };
    let hint = match status {
        401 => " — check IRON_API_KEY",
        403 => " — this API key's role does not allow it",
        _ => "",
    };
    if code.is_empty() {
        format!("{base}{hint}")
    } else {
        format!("{base} [{code}]{hint}")
    }
}

/// The API key: `IRON_API_KEY`, else `./.iron/admin.key`.
fn api_key() -> Result<zeroize::Zeroizing<String>, CliError> {
    if let Ok(k) = std::env::var("IRON_API_KEY") {
        let k = zeroize::Zeroizing::new(k.trim().to_owned());
        if !k.is_empty() {
            return Ok(k);
        }
    }
    match std::fs::read_to_string(Path::new(DEFAULT_ADMIN_KEY_FILE)) {
        Ok(s) if !s.trim().is_empty() => Ok(zeroize::Zeroizing::new(s.trim().to_owned())),
        _ => Err(CliError::NoApiKey),
    }
}

/// Parses `args` and runs the command.
pub fn main_with<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(c) => c,
        // Help and version exit 0; usage errors exit 2.
        Err(e) => e.exit(),
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

fn run(cli: Cli) -> Result<(), CliError> {
    if let Command::Up(a) = cli.command {
        return up::run(a);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Other(format!("runtime: {e}")))?;
    rt.block_on(async move {
        let client = client::Client::new(&cli.control_url, api_key()?)?;
        let out = cli.output;
        match cli.command {
            Command::Up(_) => Ok(()),
            Command::Provider(c) => commands::provider(&client, out, c).await,
            Command::Project(c) => commands::project(&client, out, c).await,
            Command::Token(c) => commands::token(&client, out, c).await,
            Command::Usage(a) => commands::usage(&client, out, a).await,
            Command::Pricing(c) => commands::pricing(&client, out, c).await,
            Command::ApiKey(c) => commands::api_key(&client, out, c).await,
            Command::Audit(a) => commands::audit(&client, out, a).await,
        }
    })
}
