//! The dashboard's HTTP side on 127.0.0.1: routes, live tailing, replay, and
//! the errors a user can run into. The page itself is tested in a real browser
//! by `tests/dashboard_browser.rs`.

mod common;

use std::time::{Duration, Instant};

use common::http::{Events, get, send, serve};
use vmlab::dashboard::{Dashboard, Mode};

fn rows_in(data: &serde_json::Value) -> usize {
    data["rows"].as_array().unwrap().len()
}

fn deadline() -> Instant {
    Instant::now() + Duration::from_secs(10)
}

/// A live dashboard on a run of `samples` samples, and a page that has seen them.
fn live_run_with_page(samples: usize) -> (tempfile::TempDir, common::http::Served, Events) {
    let dir = tempfile::tempdir().unwrap();
    common::write_run(dir.path(), samples);
    let served = serve(dir.path(), Mode::Live);
    let mut events = Events::open(served.addr);
    // The first snapshot may come before the tail's first read: count rows.
    let mut seen = 0;
    while seen < samples * common::VMS.len() {
        seen += rows_in(&events.next(deadline()).1);
    }
    assert_eq!(seen, samples * common::VMS.len());
    (dir, served, events)
}

#[test]
fn serves_the_page_its_assets_health_and_metrics() {
    let served = serve(&common::fixture_dir(), Mode::Live);
    let (status, content_type, body) = get(served.addr, "/");
    assert_eq!(
        (status, content_type.as_str()),
        (200, "text/html; charset=utf-8")
    );
    assert!(body.contains("/assets/uPlot.iife.min.js"));
    for asset in [
        "/assets/app.js",
        "/assets/style.css",
        "/assets/uPlot.iife.min.js",
        "/assets/uPlot.min.css",
    ] {
        let (status, _, body) = get(served.addr, asset);
        assert_eq!(status, 200, "{asset}");
        assert!(!body.is_empty(), "{asset}");
    }
    assert_eq!(get(served.addr, "/nope").0, 404);
    let ask = |method: &str| {
        let host = served.addr;
        send(
            served.addr,
            &format!("{method} /healthz HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
        )
    };
    let (status, content_type, body) = ask("HEAD");
    assert_eq!(
        (status, content_type.as_str(), body.as_str()),
        (200, "application/json", "")
    );
    assert_eq!(ask("POST").0, 405);

    // The live tail reads the recorded rows within a few polls.
    let deadline = Instant::now() + Duration::from_secs(10);
    let health = loop {
        let health: serde_json::Value =
            serde_json::from_str(&get(served.addr, "/healthz").2).unwrap();
        if health["rows"] == 90 || Instant::now() > deadline {
            break health;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(health["rows"], 90, "{health}");
    assert_eq!(health["mode"], "live");

    let (status, content_type, body) = get(served.addr, "/metrics");
    assert_eq!(
        (status, content_type.as_str()),
        (200, "text/plain; version=0.0.4; charset=utf-8")
    );
    let scrape = prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_string()))).unwrap();
    let cpu: Vec<_> = scrape
        .samples
        .iter()
        .filter(|s| s.metric == "vmlab_vm_cpu_percent")
        .collect();
    assert_eq!(cpu.len(), 3);
    let pcpus = scrape
        .samples
        .iter()
        .filter(|s| s.metric == "vmlab_pcpu_utilisation_percent");
    assert_eq!(pcpus.count(), common::PCPUS);
    assert!(
        !body.contains("vmlab_vm_balloon_actual_bytes{lab=\"default\",vm=\"vm-3\"}"),
        "vm-3 has no balloon stats: a gap, not a zero"
    );
    served.stop().unwrap();
}

#[test]
fn live_pages_get_a_snapshot_then_what_is_appended() {
    let (dir, _served, mut events) = live_run_with_page(10);
    common::append_samples(dir.path(), 11..13);
    let (event, data) = events.next(deadline());
    assert_eq!(event, "update");
    let vms: Vec<&str> = data["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["vm"].as_str().unwrap())
        .collect();
    assert_eq!(vms, ["vm-1", "vm-2", "vm-3", "vm-1", "vm-2", "vm-3"]);
    assert_eq!(data["rows"][5]["t_s"], 12.0);
    assert_eq!(data["pcpus"], common::PCPUS);
    assert_eq!(data["mode"], "live");
}

#[test]
fn replay_plays_the_run_at_its_pace_and_finishes() {
    // 30 s of run at 20x: about 1.5 s.
    let served = serve(&common::fixture_dir(), Mode::Replay { speed: 20.0 });
    let start = Instant::now();
    let deadline = start + Duration::from_secs(20);
    let mut events = Events::open(served.addr);
    let (event, first) = events.next(deadline);
    assert_eq!(event, "snapshot");
    let (mut rows, mut decisions) = (
        rows_in(&first),
        first["decisions"].as_array().unwrap().len(),
    );
    let mut updates = 0;
    let last = loop {
        let (_, data) = events.next(deadline);
        updates += 1;
        rows += rows_in(&data);
        decisions += data["decisions"].as_array().unwrap().len();
        if data["finished"] == true {
            break data;
        }
    };
    assert_eq!((rows, decisions), (90, 9));
    assert!(
        start.elapsed() >= Duration::from_millis(1400),
        "{:?}",
        start.elapsed()
    );
    assert!(updates <= 4, "about one message a second, got {updates}");
    assert_eq!(last["mode"], "replay");
}

#[test]
fn clear_errors_for_a_missing_run_a_busy_address_and_a_bad_speed() {
    let missing = std::path::Path::new("results/no-such-run");
    let err = Dashboard::bind(
        "127.0.0.1:0".parse().unwrap(),
        missing,
        Mode::Live,
        "default",
    )
    .err()
    .unwrap();
    assert_eq!(
        err.to_string(),
        "run directory `results/no-such-run` does not exist; runs are the folders under \
         results/ (`ls results/`), made by `vmlab monitor` or `vmlab bench`"
    );

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let err = Dashboard::bind(addr, &common::fixture_dir(), Mode::Live, "default")
        .err()
        .unwrap();
    assert_eq!(
        err.to_string(),
        format!(
            "address {addr} is already in use; pass `--bind 127.0.0.1:0` for any free port, \
             or another port"
        )
    );

    let err = Dashboard::bind(
        "127.0.0.1:0".parse().unwrap(),
        &common::fixture_dir(),
        Mode::Replay { speed: 0.0 },
        "default",
    )
    .err()
    .unwrap();
    assert_eq!(
        err.to_string(),
        "replay speed must be a positive number, not 0"
    );
}

#[test]
fn a_malformed_live_line_is_reported_and_skipped() {
    let (dir, _served, mut events) = live_run_with_page(2);
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(dir.path().join("metrics.csv"))
        .unwrap();
    std::io::Write::write_all(&mut file, b"not,a,row\n").unwrap();
    common::append_samples(dir.path(), 3..4);
    // The tail may see the bad line and the good rows in one read or in two.
    let (mut rows, mut error) = (0, None);
    while rows < 3 {
        let (_, data) = events.next(deadline());
        rows += rows_in(&data);
        error = data["error"].as_str().map(str::to_string).or(error);
    }
    assert_eq!(rows, 3);
    let error = error.unwrap();
    assert!(error.contains("metrics.csv record 8"), "{error}");
}

/// `/healthz` as JSON.
fn health(addr: std::net::SocketAddr) -> serde_json::Value {
    serde_json::from_str(&get(addr, "/healthz").2).unwrap()
}

#[test]
fn replay_skips_rows_whose_time_is_unusable_reports_them_and_finishes() {
    let dir = tempfile::tempdir().unwrap();
    // Records 2–10: samples 1 to 3 of vm-1, vm-2, vm-3.
    common::write_run(dir.path(), 3);
    let metrics = dir.path().join("metrics.csv");
    common::set_cell(&metrics, 5, "t_s", "inf");
    common::set_cell(&metrics, 8, "t_s", "1e30");
    // The decisions reach 23.6 s: at 50x, half a second.
    let served = serve(dir.path(), Mode::Replay { speed: 50.0 });
    let deadline = Instant::now() + Duration::from_secs(20);
    let health = loop {
        let health = health(served.addr);
        if health["finished"] == true {
            break health;
        }
        assert!(
            Instant::now() < deadline,
            "the replay never finished: {health}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(health["rows"], 7, "{health}");
    let error = health["error"].as_str().unwrap_or_default();
    assert!(
        error.starts_with("2 values or records of the run are left out; the last: ")
            && error.contains(&format!("{} record 8: `t_s` is `1e30`", metrics.display())),
        "{health}"
    );
}

#[test]
fn a_client_that_pipelines_and_never_reads_hurts_only_itself() {
    use std::io::Write;
    let served = serve(&common::fixture_dir(), Mode::Live);
    let addr = served.addr;
    // Thousands of requests for the largest asset, in one go; not one
    // response is read, so the server's writes to it fill every buffer.
    let mut greedy = std::net::TcpStream::connect(addr).unwrap();
    greedy
        .set_write_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let request = format!("GET /assets/uPlot.iife.min.js HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    for _ in 0..5_000 {
        // The server may stop reading or close: either way this client is done.
        if greedy.write_all(request.as_bytes()).is_err() {
            break;
        }
    }
    // Another client is served all the same (`send` gives up after 10 s).
    let (status, _, body) = get(addr, "/healthz");
    assert_eq!(status, 200, "{body}");
    let mut events = Events::open(addr);
    assert_eq!(events.next(deadline()).0, "snapshot");
    drop(greedy);
}

#[test]
fn oversized_request_headers_are_refused() {
    let served = serve(&common::fixture_dir(), Mode::Live);
    let addr = served.addr;
    let big = "a".repeat(16 * 1024);
    let (status, _, body) = send(
        addr,
        &format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nX-Big: {big}\r\n\r\n"),
    );
    assert_eq!(status, 431, "{body}");
    // Just under the bound is fine.
    let fits = "a".repeat(7 * 1024);
    let (status, _, body) = send(
        addr,
        &format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nX-Fits: {fits}\r\n\r\n"),
    );
    assert_eq!(status, 200, "{body}");
}

#[test]
fn only_this_dashboards_own_host_names_are_served() {
    let served = serve(&common::fixture_dir(), Mode::Live);
    let (addr, port) = (served.addr, served.addr.port());
    let with_host = |path: &str, host: &str| {
        send(
            addr,
            &format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
        )
    };
    // A page of another site whose name now points at 127.0.0.1 (DNS rebinding).
    for path in ["/metrics", "/events", "/healthz", "/"] {
        let (status, _, body) = with_host(path, &format!("attacker.example:{port}"));
        assert_eq!(status, 403, "{path}: {body}");
        assert!(body.contains("attacker.example"), "{body}");
    }
    assert_eq!(
        with_host("/metrics", &format!("127.0.0.1:{}", port ^ 1)).0,
        403
    );
    assert_eq!(
        send(addr, "GET /metrics HTTP/1.0\r\n\r\n").0,
        400,
        "no Host at all"
    );
    for host in [
        format!("localhost:{port}"),
        "localhost".to_string(),
        format!("LocalHost:{port}"),
        format!("127.0.0.1:{port}"),
        format!("[::1]:{port}"),
    ] {
        let (status, _, body) = with_host("/metrics", &host);
        assert_eq!(status, 200, "{host}: {body}");
    }
}

#[test]
fn two_hundred_pages_each_get_their_snapshot_and_health_still_answers() {
    let served = serve(&common::fixture_dir(), Mode::Live);
    let mut pages = Events::open_many(served.addr, 200);
    for (i, page) in pages.iter_mut().enumerate() {
        assert_eq!(page.next(deadline()).0, "snapshot", "page {i}");
    }
    let (status, _, body) = get(served.addr, "/healthz");
    assert_eq!(status, 200, "{body}");
    drop(pages);
}
