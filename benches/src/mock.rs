//! The upstream for every run: the testkit mock (`iron_testkit::MockUpstream`), in-process on
//! its own OS thread with its own single-threaded tokio runtime, so it never shares a runtime
//! with the load generator. Recording is off (counters only), as for `iron-mock --no-record`.
//! It lives in the harness process, so when the harness is pinned the mock shares its CPU
//! with the load generator, as in `benchmark-anchors.md`.

use std::sync::Arc;
use std::thread::JoinHandle;

use anyhow::Context as _;
use iron_testkit::MockUpstream;

/// A running mock; dropping it stops the server and joins its thread.
#[derive(Debug)]
pub struct MockServer {
    base_url: String,
    mock: Option<Arc<MockUpstream>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl MockServer {
    pub fn start() -> anyhow::Result<MockServer> {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<anyhow::Result<Arc<MockUpstream>>>();
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("iron-bench-mock".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.into()));
                        return;
                    }
                };
                rt.block_on(async move {
                    let mock = match MockUpstream::start().await {
                        Ok(m) => Arc::new(m),
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    };
                    mock.set_recording(false);
                    let _ = ready_tx.send(Ok(mock.clone()));
                    let _ = stop_rx.await;
                    drop(mock);
                });
            })
            .context("spawn the mock thread")?;
        let mock = ready_rx
            .recv()
            .context("the mock thread ended before it was ready")??;
        Ok(MockServer {
            base_url: mock.base_url(),
            mock: Some(mock),
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// `http://127.0.0.1:PORT` (no `/v1`).
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// TCP connections the mock has accepted so far (from the proxy, or from the generator
    /// in direct mode): shows whether upstream connections are pooled.
    pub fn connections(&self) -> usize {
        self.mock.as_ref().map_or(0, |m| m.connections())
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        // The mock thread holds the last reference and drops it on its own runtime.
        self.mock.take();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
