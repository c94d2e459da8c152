//! The load generator: raw hyper 1 HTTP/1.1 client connections (`TCP_NODELAY`, keep-alive),
//! driven on the harness's own single-threaded tokio runtime.
//!
//! - [`open_loop`] — fixed arrival rate, independent of how fast answers come back. A
//!   dedicated OS thread keeps the schedule (`start + i / rate`) with `nanosleep` plus a short
//!   spin, and hands each slot to the runtime, which sends it on an idle connection (opening
//!   one if none is idle, up to `max_conns`). Latency is measured from the **scheduled** send
//!   time, so a slow answer that delays later requests is charged to them too (no coordinated
//!   omission). The generator's own lateness (`lag`) is recorded separately.
//! - [`closed_loop`] — `concurrency` connections sending back to back: maximum throughput.
//! - [`concurrent_streams`] — N slow streams open at once, to measure memory per stream.
//!
//! Every answer is checked: a non-2xx status, a transport error, a timeout, a JSON body that
//! is cut short or a stream whose event count differs from the expected one or that does not
//! end with `data: [DONE]` counts as an error (with a sample message).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http::{HeaderMap, Request};
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

/// What a correct answer looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Expect {
    /// A complete JSON object.
    Json,
    /// An SSE stream of exactly this many events, the last one `data: [DONE]`.
    Sse { events: usize },
    /// Any SSE stream ending in `data: [DONE]` (used to learn the event count).
    AnySse,
}

/// One kind of request, sent again and again.
#[derive(Debug, Clone)]
pub struct Target {
    pub addr: SocketAddr,
    pub path: String,
    /// Every request header (host, content-type, content-length, authorization, x-mock-*).
    pub headers: HeaderMap,
    pub body: Bytes,
    pub expect: Expect,
    /// Per-request deadline (headers and whole body).
    pub timeout: Duration,
}

/// A checked answer.
#[derive(Debug, Clone, Copy, Default)]
pub struct Answer {
    /// SSE events seen (0 for JSON).
    pub events: usize,
    pub bytes: usize,
}

/// Counts SSE events (blank-line terminated) across chunk boundaries and keeps the tail.
#[derive(Debug, Default)]
pub struct BodyCheck {
    events: usize,
    bytes: usize,
    prev_lf: bool,
    tail: Vec<u8>,
}

const DONE: &[u8] = b"data: [DONE]\n\n";

impl BodyCheck {
    pub fn feed(&mut self, chunk: &[u8]) {
        if chunk.is_empty() {
            return;
        }
        self.bytes += chunk.len();
        if self.prev_lf && chunk[0] == b'\n' {
            self.events += 1;
        }
        self.events += memchr::memmem::find_iter(chunk, b"\n\n").count();
        // An event may also end with "\n\n" where the first LF closed the previous chunk and
        // the second one starts this chunk (counted above); "\n\n\n" is not an event boundary
        // twice, which matches what find_iter counts.
        self.prev_lf = chunk[chunk.len() - 1] == b'\n';
        self.tail
            .extend_from_slice(&chunk[chunk.len().saturating_sub(DONE.len())..]);
        if self.tail.len() > DONE.len() {
            self.tail.drain(..self.tail.len() - DONE.len());
        }
    }

    pub fn finish(self, expect: Expect) -> Result<Answer, String> {
        let answer = Answer {
            events: self.events,
            bytes: self.bytes,
        };
        match expect {
            Expect::Json => {
                if self.tail.iter().rev().find(|b| !b.is_ascii_whitespace()) == Some(&b'}') {
                    Ok(answer)
                } else {
                    Err(format!("JSON answer cut short ({} bytes)", self.bytes))
                }
            }
            Expect::Sse { .. } | Expect::AnySse if self.tail != DONE => Err(format!(
                "broken stream: {} events, no final `data: [DONE]`",
                self.events
            )),
            Expect::Sse { events } if events != self.events => Err(format!(
                "broken stream: {} events, expected {events}",
                self.events
            )),
            Expect::Sse { .. } | Expect::AnySse => Ok(answer),
        }
    }
}

/// An HTTP/1.1 connection.
pub struct Conn {
    tx: SendRequest<Full<Bytes>>,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn").finish_non_exhaustive()
    }
}

impl Conn {
    pub async fn open(addr: SocketAddr) -> Result<Conn, String> {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect {addr}: {e}"))?;
        stream
            .set_nodelay(true)
            .map_err(|e| format!("TCP_NODELAY: {e}"))?;
        let (tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Conn { tx })
    }

    fn usable(&self) -> bool {
        !self.tx.is_closed()
    }

    /// Sends one request and reads and checks the whole answer. `on_head` runs when the
    /// response head arrives.
    pub async fn exchange(&mut self, t: &Target, on_head: impl FnOnce()) -> Result<Answer, String> {
        self.tx
            .ready()
            .await
            .map_err(|e| format!("connection: {e}"))?;
        let mut req = Request::post(t.path.as_str())
            .body(Full::new(t.body.clone()))
            .map_err(|e| format!("request: {e}"))?;
        *req.headers_mut() = t.headers.clone();
        let resp = self
            .tx
            .send_request(req)
            .await
            .map_err(|e| format!("send: {e}"))?;
        on_head();
        let status = resp.status();
        let mut body = resp.into_body();
        if !status.is_success() {
            let mut snippet = Vec::new();
            while let Some(Ok(frame)) = body.frame().await {
                if let Some(d) = frame.data_ref() {
                    snippet.extend_from_slice(d);
                }
                if snippet.len() > 300 {
                    break;
                }
            }
            snippet.truncate(300);
            return Err(format!(
                "HTTP {status}: {}",
                String::from_utf8_lossy(&snippet)
            ));
        }
        let mut check = BodyCheck::default();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| format!("body: {e}"))?;
            if let Some(d) = frame.data_ref() {
                check.feed(d);
            }
        }
        check.finish(t.expect)
    }
}

/// Idle keep-alive connections plus a cap on how many exist.
#[derive(Debug)]
pub struct Pool {
    addr: SocketAddr,
    idle: Mutex<Vec<Conn>>,
    permits: Arc<Semaphore>,
    opened: AtomicUsize,
}

impl Pool {
    pub fn new(addr: SocketAddr, max_conns: usize) -> Arc<Pool> {
        Arc::new(Pool {
            addr,
            idle: Mutex::new(Vec::new()),
            permits: Arc::new(Semaphore::new(max_conns.max(1))),
            opened: AtomicUsize::new(0),
        })
    }

    /// Connections opened so far.
    pub fn opened(&self) -> usize {
        self.opened.load(Ordering::Relaxed)
    }

    async fn take(&self) -> Result<Conn, String> {
        loop {
            let c = self
                .idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .pop();
            match c {
                Some(c) if c.usable() => return Ok(c),
                Some(_) => continue,
                None => break,
            }
        }
        self.opened.fetch_add(1, Ordering::Relaxed);
        Conn::open(self.addr).await
    }

    fn put(&self, c: Conn) {
        if c.usable() {
            self.idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(c);
        }
    }
}

/// Latency and error record of one run.
#[derive(Debug)]
pub struct Recorder {
    latency: Histogram<u64>,
    lag: Histogram<u64>,
    pub ok: u64,
    pub errors: u64,
    pub error_samples: Vec<String>,
}

/// 1 ns .. 1 h, 3 significant digits.
fn histogram() -> anyhow::Result<Histogram<u64>> {
    Ok(Histogram::new_with_bounds(1, 3_600_000_000_000, 3)?)
}

impl Recorder {
    pub fn new() -> anyhow::Result<Recorder> {
        Ok(Recorder {
            latency: histogram()?,
            lag: histogram()?,
            ok: 0,
            errors: 0,
            error_samples: Vec::new(),
        })
    }

    fn record(
        &mut self,
        result: &Result<Answer, String>,
        latency: Duration,
        lag: Option<Duration>,
    ) {
        match result {
            Ok(_) => {
                self.ok += 1;
                self.latency.saturating_record(latency.as_nanos() as u64);
                if let Some(lag) = lag {
                    self.lag.saturating_record(lag.as_nanos() as u64);
                }
            }
            Err(e) => {
                self.errors += 1;
                if self.error_samples.len() < 5 {
                    self.error_samples.push(e.clone());
                }
            }
        }
    }

    pub fn summary(&self, wall: Duration) -> RunStats {
        RunStats {
            ok: self.ok,
            errors: self.errors,
            error_samples: self.error_samples.clone(),
            wall_s: wall.as_secs_f64(),
            throughput_rps: self.ok as f64 / wall.as_secs_f64().max(1e-9),
            latency: Percentiles::of(&self.latency),
            lag: (!self.lag.is_empty()).then(|| Percentiles::of(&self.lag)),
            conns: 0,
        }
    }
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Percentiles {
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    pub mean_us: f64,
}

impl Percentiles {
    fn of(h: &Histogram<u64>) -> Percentiles {
        let us = |ns: u64| ns as f64 / 1000.0;
        Percentiles {
            p50_us: us(h.value_at_quantile(0.50)),
            p90_us: us(h.value_at_quantile(0.90)),
            p99_us: us(h.value_at_quantile(0.99)),
            p999_us: us(h.value_at_quantile(0.999)),
            max_us: us(h.max()),
            mean_us: h.mean() / 1000.0,
        }
    }
}

/// Outcome of one run.
#[derive(Debug, Clone, Serialize)]
pub struct RunStats {
    pub ok: u64,
    pub errors: u64,
    pub error_samples: Vec<String>,
    /// Wall time of the run (first scheduled send to last answer).
    pub wall_s: f64,
    /// Successful requests per second of wall time.
    pub throughput_rps: f64,
    pub latency: Percentiles,
    /// Open loop only: how late the generator dispatched requests (its own precision).
    pub lag: Option<Percentiles>,
    /// Connections opened during the run.
    pub conns: usize,
}

/// Open-loop parameters.
#[derive(Debug, Clone, Copy)]
pub struct OpenLoop {
    pub rate: f64,
    pub duration: Duration,
    /// The scheduler sleeps until this long before a slot, then spins.
    pub spin: Duration,
}

/// Sends `rate × duration` requests at fixed intervals; see the module docs.
pub async fn open_loop(
    target: Arc<Target>,
    pool: Arc<Pool>,
    cfg: OpenLoop,
) -> anyhow::Result<RunStats> {
    let total = (cfg.rate * cfg.duration.as_secs_f64()).round().max(1.0) as u64;
    let interval = Duration::from_secs_f64(1.0 / cfg.rate.max(1e-3));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Instant>();
    let start = Instant::now() + Duration::from_millis(5);
    let spin = cfg.spin;
    let scheduler = std::thread::Builder::new()
        .name("iron-bench-scheduler".into())
        .spawn(move || {
            for i in 0..total {
                let at = start + interval.mul_f64(i as f64);
                let now = Instant::now();
                if at > now + spin {
                    std::thread::sleep(at - now - spin);
                }
                while Instant::now() < at {
                    std::hint::spin_loop();
                }
                if tx.send(at).is_err() {
                    break;
                }
            }
        });
    let recorder = Arc::new(Mutex::new(Recorder::new()?));
    let done = Arc::new(AtomicUsize::new(0));
    let finished = Arc::new(tokio::sync::Notify::new());
    let opened_before = pool.opened();
    let mut dispatched = 0u64;
    while let Some(at) = rx.recv().await {
        let lag = at.elapsed();
        dispatched += 1;
        let (target, pool, recorder, done, finished) = (
            target.clone(),
            pool.clone(),
            recorder.clone(),
            done.clone(),
            finished.clone(),
        );
        tokio::spawn(async move {
            let result = match pool.permits.clone().acquire_owned().await {
                Ok(_permit) => one_request(&pool, &target).await,
                Err(_) => Err("connection pool closed".to_owned()),
            };
            let latency = at.elapsed();
            recorder
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .record(&result, latency, Some(lag));
            done.fetch_add(1, Ordering::Release);
            finished.notify_one();
        });
    }
    if let Ok(handle) = scheduler {
        let _ = handle.join();
    }
    while (done.load(Ordering::Acquire) as u64) < dispatched {
        finished.notified().await;
    }
    let wall = start.elapsed();
    let mut stats = recorder
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .summary(wall);
    if dispatched < total {
        stats.errors += total - dispatched;
        stats.error_samples.push(format!(
            "scheduler stopped after {dispatched} of {total} requests"
        ));
    }
    stats.conns = pool.opened() - opened_before;
    Ok(stats)
}

async fn one_request(pool: &Pool, target: &Target) -> Result<Answer, String> {
    let fut = async {
        let mut conn = pool.take().await?;
        let r = conn.exchange(target, || {}).await;
        if r.is_ok() {
            pool.put(conn);
        }
        r
    };
    match tokio::time::timeout(target.timeout, fut).await {
        Ok(r) => r,
        Err(_) => Err(format!("timed out after {:?}", target.timeout)),
    }
}

/// `concurrency` connections each sending back to back for `duration`; latency is measured
/// from each actual send.
pub async fn closed_loop(
    target: Arc<Target>,
    concurrency: usize,
    duration: Duration,
) -> anyhow::Result<RunStats> {
    let recorder = Arc::new(Mutex::new(Recorder::new()?));
    let start = Instant::now();
    let deadline = start + duration;
    let pool = Pool::new(target.addr, concurrency);
    let mut tasks = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let (target, recorder, pool) = (target.clone(), recorder.clone(), pool.clone());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                let sent = Instant::now();
                let result = one_request(&pool, &target).await;
                let failed = result.is_err();
                recorder
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .record(&result, sent.elapsed(), None);
                if failed {
                    // Do not spin on a dead endpoint.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let wall = start.elapsed();
    let mut stats = recorder
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .summary(wall);
    stats.conns = pool.opened();
    Ok(stats)
}

/// Result of holding many streams open at once.
#[derive(Debug, Clone, Serialize)]
pub struct StreamsStats {
    pub streams: usize,
    /// Most streams whose response head had arrived and whose body had not ended, at once.
    pub max_concurrent: usize,
    pub ok: u64,
    pub errors: u64,
    pub error_samples: Vec<String>,
    pub wall_s: f64,
}

/// Opens `n` connections (in batches of 100) each carrying one (slow) stream, all at once.
/// `on_tick` runs every 50 ms while streams are open (the caller samples memory there).
pub async fn concurrent_streams(
    target: Arc<Target>,
    n: usize,
    mut on_tick: impl FnMut(usize),
) -> anyhow::Result<StreamsStats> {
    let recorder = Arc::new(Mutex::new(Recorder::new()?));
    let active = Arc::new(AtomicUsize::new(0));
    let finished = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        if i > 0 && i % 100 == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let (target, recorder, active, finished) = (
            target.clone(),
            recorder.clone(),
            active.clone(),
            finished.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let head_seen = std::sync::atomic::AtomicBool::new(false);
            let fut = async {
                let mut conn = Conn::open(target.addr).await?;
                conn.exchange(&target, || {
                    active.fetch_add(1, Ordering::Relaxed);
                    head_seen.store(true, Ordering::Relaxed);
                })
                .await
            };
            let result = match tokio::time::timeout(target.timeout, fut).await {
                Ok(r) => r,
                Err(_) => Err(format!("timed out after {:?}", target.timeout)),
            };
            if head_seen.load(Ordering::Relaxed) {
                active.fetch_sub(1, Ordering::Relaxed);
            }
            recorder
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .record(&result, start.elapsed(), None);
            finished.fetch_add(1, Ordering::Relaxed);
        }));
    }
    let mut max_concurrent = 0;
    while finished.load(Ordering::Relaxed) < n {
        let now_active = active.load(Ordering::Relaxed);
        max_concurrent = max_concurrent.max(now_active);
        on_tick(now_active);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for t in tasks {
        let _ = t.await;
    }
    let r = recorder.lock().unwrap_or_else(PoisonError::into_inner);
    Ok(StreamsStats {
        streams: n,
        max_concurrent,
        ok: r.ok,
        errors: r.errors,
        error_samples: r.error_samples.clone(),
        wall_s: start.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(chunks: &[&[u8]], expect: Expect) -> Result<Answer, String> {
        let mut c = BodyCheck::default();
        for ch in chunks {
            c.feed(ch);
        }
        c.finish(expect)
    }

    #[test]
    fn counts_events_across_chunk_boundaries() {
        let s: &[u8] = b"data: a\n\ndata: b\n\ndata: [DONE]\n\n";
        assert_eq!(check(&[s], Expect::Sse { events: 3 }).unwrap().events, 3);
        for cut in 1..s.len() {
            let a = check(&[&s[..cut], &s[cut..]], Expect::Sse { events: 3 });
            assert_eq!(a.map(|a| a.events), Ok(3), "cut at {cut}");
        }
        let every_byte: Vec<&[u8]> = s.chunks(1).collect();
        assert!(check(&every_byte, Expect::Sse { events: 3 }).is_ok());
    }

    #[test]
    fn flags_broken_streams_and_bodies() {
        let e = check(&[b"data: a\n\ndata: b\n\n"], Expect::AnySse).unwrap_err();
        assert!(e.contains("[DONE]"), "{e}");
        let e = check(&[b"data: a\n\ndata: [DONE]\n\n"], Expect::Sse { events: 3 }).unwrap_err();
        assert!(e.contains("expected 3"), "{e}");
        assert!(check(&[b"{\"a\":1}\n"], Expect::Json).is_ok());
        assert!(check(&[b"{\"a\":"], Expect::Json).is_err());
        assert!(check(&[], Expect::Json).is_err());
    }

    #[test]
    fn percentiles_are_in_microseconds() {
        let mut r = Recorder::new().unwrap();
        for us in 1..=100u64 {
            r.record(&Ok(Answer::default()), Duration::from_micros(us), None);
        }
        r.record(&Err("boom".into()), Duration::ZERO, None);
        let s = r.summary(Duration::from_secs(1));
        assert_eq!((s.ok, s.errors), (100, 1));
        assert!((s.latency.p50_us - 50.0).abs() < 0.5, "{:?}", s.latency);
        assert!((s.latency.max_us - 100.0).abs() < 0.5);
        assert_eq!(s.error_samples, vec!["boom".to_owned()]);
    }
}
