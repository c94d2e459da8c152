//! `iron-mock`: the testkit's mock LLM upstream as a standalone process, for the Python e2e
//! tests and for manual runs. It prints exactly one line,
//! `iron-mock listening on http://HOST:PORT`, then serves until SIGTERM or Ctrl-C. Tests steer
//! it with `x-mock-*` request headers and the `/__mock/…` control routes (see the README).

use std::io::Write as _;
use std::net::SocketAddr;

use anyhow::Context as _;
use clap::Parser;
use iron_testkit::{MockUpstream, Scenario};

/// Mock OpenAI + Anthropic upstream for Iron tests.
#[derive(Debug, Parser)]
#[command(name = "iron-mock", version)]
struct Args {
    /// Address to listen on (port 0 = any free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Default scenario as JSON, e.g. '{"chunks":3,"delay_ms":50}'.
    #[arg(long)]
    scenario_json: Option<String>,
    /// Count requests without keeping their bodies (long load runs).
    #[arg(long)]
    no_record: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let scenario: Scenario = match &args.scenario_json {
        Some(json) => serde_json::from_str(json).context("--scenario-json")?,
        None => Scenario::default(),
    };
    let mock = MockUpstream::bind(args.listen, scenario).await?;
    mock.set_recording(!args.no_record);

    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "iron-mock listening on {}", mock.base_url())?;
    stdout.flush()?;
    drop(stdout);

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("install SIGTERM handler")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("wait for ctrl-c")?,
        _ = term.recv() => {}
    }
    drop(mock);
    Ok(())
}
