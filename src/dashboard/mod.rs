//! `vmlab dashboard`: a small HTTP server over one run directory.
//!
//! Routes: `/` the page, `/assets/…` its files (embedded in the binary, the
//! charting library vendored under `assets/vendor/`), `/events` server-sent
//! events (a snapshot of the history, then what is new about once a second),
//! `/metrics` Prometheus text, `/healthz` a JSON status.
//!
//! A small server of our own serves it ([`http`]): synchronous, no async
//! runtime, a thread per connection (an `/events` page keeps its thread).
//! It answers only requests whose `Host` names it (see [`http`]).

mod feed;
mod http;

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};

use crate::metrics::prometheus;
use crate::metrics::run::{Run, check_run_dir, read_run};
use feed::{Feed, Position};
use http::{Request, Responder};

/// Where the data comes from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    /// Follow `metrics.csv` and `decisions.csv` while vmlab appends to them.
    Live,
    /// Play a finished run at its recorded pace times `speed`.
    Replay { speed: f64 },
}

/// A page is sent what is new at most this often.
const UPDATE_INTERVAL: Duration = Duration::from_secs(1);
/// A comment line this often keeps proxies and the browser from timing out.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(15);

/// A bound dashboard, not yet serving (so the caller can print its address).
pub struct Dashboard {
    listener: TcpListener,
    addr: SocketAddr,
    source: Source,
    lab: String,
    feed: Arc<Feed>,
}

enum Source {
    Live { run_dir: PathBuf },
    Replay { run: Run, speed: f64 },
}

impl Dashboard {
    /// Binds `bind` for the run in `run_dir`. A replay reads the whole run now,
    /// so a missing or malformed run fails here rather than in the page.
    pub fn bind(bind: SocketAddr, run_dir: &Path, mode: Mode, lab: &str) -> Result<Self> {
        check_run_dir(run_dir)?;
        let source = match mode {
            Mode::Live => Source::Live {
                run_dir: run_dir.to_path_buf(),
            },
            Mode::Replay { speed } => {
                anyhow::ensure!(
                    speed.is_finite() && speed > 0.0,
                    "replay speed must be a positive number, not {speed}"
                );
                Source::Replay {
                    run: read_run(run_dir)?,
                    speed,
                }
            }
        };
        let listener = TcpListener::bind(bind).map_err(|e| match e.kind() {
            std::io::ErrorKind::AddrInUse => anyhow!(
                "address {bind} is already in use; pass `--bind 127.0.0.1:0` for any free port, \
                 or another port"
            ),
            _ => anyhow!(e).context(format!("cannot listen on {bind}")),
        })?;
        let addr = listener.local_addr()?;
        let run_name = std::path::absolute(run_dir)
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_default();
        let mode_name = match mode {
            Mode::Live => "live",
            Mode::Replay { .. } => "replay",
        };
        Ok(Self {
            listener,
            addr,
            source,
            lab: lab.to_string(),
            feed: Arc::new(Feed::new(&run_name, mode_name)),
        })
    }

    /// The bound address (the real port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until `stop` is set; returns after the source and every
    /// connection have ended.
    pub fn run(self, stop: &Arc<AtomicBool>) -> Result<()> {
        let Dashboard {
            listener,
            addr: _,
            source,
            lab,
            feed,
        } = self;
        let source = {
            let (feed, stop) = (feed.clone(), stop.clone());
            std::thread::spawn(move || {
                feed::guard_source(&feed, || match source {
                    Source::Live { run_dir } => feed::tail_run(&feed, &run_dir, &stop),
                    Source::Replay { run, speed } => feed::replay_run(&feed, run, speed, &stop),
                })
            })
        };
        let served = http::serve(
            &listener,
            http::MAX_CONNECTIONS,
            stop,
            &|request, responder| handle(request, responder, &feed, &lab, stop),
        );
        // After a failure too: the source ends with the server.
        stop.store(true, Ordering::Relaxed);
        let _ = source.join();
        served
    }
}

/// Answers one request; `/events` goes on until the page or the dashboard goes.
fn handle(request: Request, responder: &mut Responder, feed: &Feed, lab: &str, stop: &AtomicBool) {
    if !matches!(request.method.as_str(), "GET" | "HEAD") {
        return responder.send(405, "text/plain", b"only GET and HEAD\n");
    }
    match request.path.as_str() {
        "/events" => {
            if let Some(out) = responder.stream("text/event-stream") {
                stream_events(out, feed, stop);
            }
        }
        "/metrics" => {
            let latest: Vec<_> = feed.lock().latest.values().cloned().collect();
            let body = prometheus::render(lab, &latest);
            responder.send(200, prometheus::CONTENT_TYPE, body.as_bytes());
        }
        "/healthz" => {
            let state = feed.lock();
            let body = serde_json::json!({
                "status": "ok",
                "mode": state.mode,
                "rows": state.rows_added(),
                "finished": state.finished,
                "error": state.error,
            });
            drop(state);
            responder.send(200, "application/json", format!("{body}\n").as_bytes());
        }
        path => match asset(path) {
            Some((body, content_type)) => responder.send(200, content_type, body),
            None => responder.send(404, "text/plain", format!("no page at {path}\n").as_bytes()),
        },
    }
}

/// Binds and serves until `stop` is set (see [`Dashboard`]).
pub fn serve(
    bind: SocketAddr,
    run_dir: &Path,
    mode: Mode,
    lab: &str,
    stop: &Arc<AtomicBool>,
) -> Result<()> {
    Dashboard::bind(bind, run_dir, mode, lab)?.run(stop)
}

/// The page's files, compiled in: the dashboard needs no files at run time.
fn asset(path: &str) -> Option<(&'static [u8], &'static str)> {
    Some(match path {
        "/" | "/index.html" => (
            include_bytes!("../../assets/dashboard/index.html"),
            "text/html; charset=utf-8",
        ),
        "/assets/app.js" => (
            include_bytes!("../../assets/dashboard/app.js"),
            "text/javascript; charset=utf-8",
        ),
        "/assets/style.css" => (
            include_bytes!("../../assets/dashboard/style.css"),
            "text/css; charset=utf-8",
        ),
        "/assets/uPlot.iife.min.js" => (
            include_bytes!("../../assets/vendor/uplot/uPlot.iife.min.js"),
            "text/javascript; charset=utf-8",
        ),
        "/assets/uPlot.min.css" => (
            include_bytes!("../../assets/vendor/uplot/uPlot.min.css"),
            "text/css; charset=utf-8",
        ),
        _ => return None,
    })
}

/// Server-sent events: `snapshot` with everything kept so far, then `update`
/// with what is new, at most once per [`UPDATE_INTERVAL`], until the page goes
/// away or the dashboard stops.
fn stream_events(out: &mut impl Write, feed: &Feed, stop: &AtomicBool) {
    let mut seen = Position::default();
    let mut event = "snapshot";
    while !stop.load(Ordering::Relaxed) {
        let message = {
            let state = feed.lock();
            let message = serde_json::to_string(&state.message_since(seen));
            seen = state.position();
            message
        };
        let Ok(message) = message else { return };
        if send(out, &format!("event: {event}\ndata: {message}\n\n")).is_err() {
            return;
        }
        event = "update";
        let sent = Instant::now();
        // Wait for news, with a comment line now and then so the page knows we are here.
        while feed.wait_past(seen, KEEPALIVE_INTERVAL, stop).position() == seen {
            if stop.load(Ordering::Relaxed) || send(out, ": keepalive\n\n").is_err() {
                return;
            }
        }
        // Batch what arrives within an interval into one message.
        std::thread::sleep(UPDATE_INTERVAL.saturating_sub(sent.elapsed()));
    }
}

fn send(out: &mut impl Write, text: &str) -> std::io::Result<()> {
    out.write_all(text.as_bytes())?;
    out.flush()
}
