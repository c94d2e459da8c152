//! `iron up`: control (embedded store in `--data-dir`) and the proxy in one process.
//!
//! Flow: create or open the data directory (master key, proxy secret, admin key; 0600
//! files) → start control on its own tokio runtime in a background thread (bind, register
//! providers from `OPENAI_API_KEY` / `ANTHROPIC_API_KEY`, serve) → run the proxy in control
//! mode on this thread (blocking) and, once it has loaded its routing data, print where
//! things are and the `export` lines → on Ctrl-C / SIGTERM stop control and exit.
//! Loopback/private upstreams are allowed here.

use std::net::SocketAddr;
use std::path::PathBuf;

use iron_control::config::{Config, ProcessEnv};
use iron_control::local::{EnvProvider, init_data_dir};
use iron_control::server;

use crate::CliError;
use crate::args::UpArgs;

struct Ready {
    addr: SocketAddr,
    providers: Vec<EnvProvider>,
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("IRON_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
}

/// The address clients should use for a listen address (`0.0.0.0` → `127.0.0.1`).
/// `dashboard/dist/index.html` in the current directory or one of its parents, or next to
/// the `iron` executable's checkout (`target/<profile>/iron` → the repository root).
fn find_dashboard() -> Option<PathBuf> {
    let mut starts = Vec::new();
    if let Ok(cwd) = std::env::current_dir() {
        starts.push(cwd);
    }
    if let Ok(exe) = std::env::current_exe() {
        starts.push(exe);
    }
    starts.iter().find_map(|start| {
        start
            .ancestors()
            .map(|d| d.join("dashboard").join("dist"))
            .find(|d| d.join("index.html").is_file())
    })
}

fn reachable(listen: &str) -> String {
    match listen.parse::<SocketAddr>() {
        Ok(a) if a.ip().is_unspecified() => format!("127.0.0.1:{}", a.port()),
        Ok(a) => a.to_string(),
        Err(_) => listen.to_owned(),
    }
}

pub fn run(a: UpArgs) -> Result<(), CliError> {
    init_logging();
    let local = init_data_dir(&a.data_dir)
        .map_err(|e| CliError::Other(format!("data directory {}: {e}", a.data_dir.display())))?;
    let control_listen: SocketAddr = a.control_listen.parse().map_err(|_| {
        CliError::Input("--control-listen: expected an address such as 127.0.0.1:7070".into())
    })?;
    let mut cfg = Config::local(local.store_path(), control_listen, local.secrets.clone());
    cfg.dashboard.dir = a.dashboard_dir.clone().or_else(find_dashboard);
    let cfg_dashboard = cfg.dashboard.dir.clone();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<Ready, String>>();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let upstream = a.upstream_base_url.clone();
    let control_thread = std::thread::Builder::new()
        .name("iron-control".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("iron-control")
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(format!("control runtime: {e}")));
                    return;
                }
            };
            rt.block_on(async move {
                let control = match server::build_state(&cfg).await {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                let listener = match server::bind(&cfg).await {
                    Ok(l) => l,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                let addr = match listener.local_addr() {
                    Ok(a) => a,
                    Err(e) => {
                        let _ = ready_tx.send(Err(format!("control listener: {e}")));
                        return;
                    }
                };
                let providers = match iron_control::local::register_env_providers(
                    &control.state.svc,
                    &ProcessEnv,
                    upstream.as_deref(),
                )
                .await
                {
                    Ok(p) => p,
                    Err(e) => {
                        let _ = ready_tx.send(Err(format!(
                            "registering providers from the environment: {e}"
                        )));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(Ready { addr, providers }));
                let shutdown = async move {
                    tokio::select! {
                        () = server::shutdown_signal() => {}
                        _ = stop_rx => {}
                    }
                };
                if let Err(e) = server::serve(listener, control.state.clone(), shutdown).await {
                    tracing::error!(error = %e, "control stopped");
                }
                control.stop_background();
            });
        })
        .map_err(|e| CliError::Other(format!("starting control: {e}")))?;

    let ready = match ready_rx.recv() {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            let _ = control_thread.join();
            return Err(CliError::Other(format!("control failed to start: {e}")));
        }
        Err(_) => {
            let _ = control_thread.join();
            return Err(CliError::Other("control failed to start".into()));
        }
    };

    let control_url = format!("http://{}", ready.addr);
    let proxy = reachable(&a.proxy_listen);
    let dir = a.data_dir.display();
    let mut banner = String::new();
    banner.push_str("Iron is up.\n");
    banner.push_str(&format!("  control  {control_url}  (data in {dir})\n"));
    match &cfg_dashboard {
        Some(d) => banner.push_str(&format!(
            "  panel    {control_url}/  (Control Panel from {})\n",
            d.display()
        )),
        None => banner.push_str(
            "  panel    not built: npm --prefix dashboard ci && npm --prefix dashboard run build\n",
        ),
    }
    banner.push_str(&format!(
        "  proxy    http://{proxy}/v1  (admin http://{}/metrics)\n",
        reachable(&a.admin_listen)
    ));
    for p in &ready.providers {
        banner.push_str(&format!(
            "  provider {} → {} ({} from the environment)\n",
            p.name, p.base_url, p.action
        ));
    }
    if ready.providers.is_empty() {
        banner.push_str(
            "  no provider yet: set OPENAI_API_KEY / ANTHROPIC_API_KEY, or `iron provider add`\n",
        );
    }
    if local.admin_key_created {
        banner.push_str(&format!(
            "\nAdmin API key (shown once; also saved to {dir}/admin.key):\n  {}\n",
            local.admin_key.expose()
        ));
    }
    banner.push_str("\nPoint your agents and the CLI at Iron:\n");
    banner.push_str(&format!("export OPENAI_BASE_URL=http://{proxy}/v1\n"));
    banner.push_str(&format!("export ANTHROPIC_BASE_URL=http://{proxy}\n"));
    banner.push_str(&format!("export IRON_API_KEY=$(cat {dir}/admin.key)\n"));
    if control_url != "http://127.0.0.1:7070" {
        banner.push_str(&format!("export IRON_CONTROL_URL={control_url}\n"));
    }
    banner.push_str("Then: iron project create demo && iron token mint --project demo\n");

    // The banner is printed once the proxy serves (its first routing snapshot has loaded),
    // so the `export` lines it shows work the moment they appear.
    let result = run_proxy(
        &a,
        &control_url,
        local.secrets.proxy_secret.expose(),
        banner,
    );
    let _ = stop_tx.send(());
    let _ = control_thread.join();
    result
}

#[cfg(feature = "proxy")]
fn run_proxy(
    a: &UpArgs,
    control_url: &str,
    proxy_secret: &str,
    banner: String,
) -> Result<(), CliError> {
    iron_proxy::run_control_mode(
        iron_proxy::ControlModeOptions {
            control_url: control_url.to_owned(),
            proxy_secret: proxy_secret.to_owned(),
            listen: a.proxy_listen.clone(),
            admin_listen: a.admin_listen.clone(),
            // A local tool: loopback/private and plain-http providers are allowed (design §2).
            allow_private_upstreams: true,
        },
        std::time::Duration::from_secs(15),
        move |loaded| {
            if !loaded {
                tracing::warn!(
                    "the proxy has not loaded its routing data from control yet; agents get 503 until it does"
                );
            }
            crate::output::print(&banner);
        },
    )
    .map_err(|e| CliError::Other(format!("proxy: {e:#}")))
}

/// Built without the proxy: run control alone until Ctrl-C / SIGTERM.
#[cfg(not(feature = "proxy"))]
fn run_proxy(_: &UpArgs, _: &str, _: &str, banner: String) -> Result<(), CliError> {
    crate::output::print(&banner);
    tracing::warn!(
        "this build of iron has no embedded proxy (feature `proxy`); running control only"
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Other(format!("runtime: {e}")))?;
    rt.block_on(server::shutdown_signal());
    Ok(())
}
