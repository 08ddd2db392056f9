//! The dashboard page in a real headless Chromium (Debian's `chromium` and
//! `chromium-driver`), driven over WebDriver: the page loads from 127.0.0.1,
//! receives live data while the test appends rows, and draws every chart of
//! every VM. A screenshot is kept in `target/artifacts/dashboard.png`.
//! Prints "skipped: …" and passes when Chromium or ChromeDriver is missing.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};
use vmlab::dashboard::Mode;

/// Flags for a closed network: without the background-networking ones Chromium
/// keeps trying to reach Google's hosts.
const CHROMIUM_ARGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,1800",
];

/// A ChromeDriver process and one browser session, both ended on drop.
struct Browser {
    driver: Child,
    base: String,
    session: String,
    agent: ureq::Agent,
    _profile: tempfile::TempDir,
}

impl Browser {
    fn start(chromium: &str, chromedriver: &str) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .proxy(None)
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into();
        let profile = tempfile::tempdir().unwrap();
        let mut browser = Self {
            driver,
            base: format!("http://127.0.0.1:{port}"),
            session: String::new(),
            agent,
            _profile: profile,
        };
        wait_until(Duration::from_secs(15), "chromedriver answers", || {
            browser
                .agent
                .get(format!("{}/status", browser.base))
                .call()
                .is_ok()
        });
        let mut args: Vec<String> = CHROMIUM_ARGS.iter().map(|a| a.to_string()).collect();
        args.push(format!(
            "--user-data-dir={}",
            browser._profile.path().display()
        ));
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium, "args": args},
        }}});
        let created = browser.command("POST", "/session", Some(capabilities));
        browser.session = created["sessionId"].as_str().unwrap().to_string();
        browser
    }

    /// One WebDriver command; returns its `value`.
    fn command(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let session = if self.session.is_empty() {
            String::new()
        } else {
            format!("/session/{}", self.session)
        };
        let url = format!("{}{session}{path}", self.base);
        let response = match (method, body) {
            ("POST", body) => self
                .agent
                .post(&url)
                .header("Content-Type", "application/json")
                .send(body.unwrap_or(json!({})).to_string()),
            ("DELETE", _) => self.agent.delete(&url).call(),
            _ => self.agent.get(&url).call(),
        };
        let text = response.unwrap().body_mut().read_to_string().unwrap();
        let reply: Value = serde_json::from_str(&text).unwrap();
        assert!(
            reply["value"]["error"].is_null(),
            "{method} {path}: {reply}"
        );
        reply["value"].clone()
    }

    fn eval(&self, script: &str) -> Value {
        self.command(
            "POST",
            "/execute/sync",
            Some(json!({"script": script, "args": []})),
        )
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self
                .agent
                .delete(format!("{}/session/{}", self.base, self.session))
                .call();
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn wait_until(timeout: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// What the page says it has drawn (its data-* attributes), plus painted pixels.
const PAGE_STATE: &str = r#"
const body = document.body.dataset;
const charts = {};
for (const box of document.querySelectorAll('.chart')) {
  const canvas = box.querySelector('canvas');
  let painted = 0;
  if (canvas && canvas.width) {
    const pixels = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
    for (let i = 3; i < pixels.length; i += 4) if (pixels[i] > 0) painted++;
  }
  charts[box.dataset.chart] = { points: Number(box.dataset.points), painted };
}
return { status: body.status, rows: Number(body.rows), updates: Number(body.updates), vms: Number(body.vms), charts };
"#;

#[test]
fn the_page_draws_live_data_for_every_vm() {
    let (Ok(chromium), Ok(chromedriver)) = (which::which("chromium"), which::which("chromedriver"))
    else {
        println!(
            "skipped: chromium and chromedriver are needed (Debian packages chromium, chromium-driver)"
        );
        return;
    };
    let started = Instant::now();
    let run = tempfile::tempdir().unwrap();
    common::write_run(run.path(), 10);
    let served = common::http::serve(run.path(), Mode::Live);
    let browser = Browser::start(chromium.to_str().unwrap(), chromedriver.to_str().unwrap());
    browser.command("POST", "/url", Some(json!({"url": served.url("/")})));

    wait_until(Duration::from_secs(20), "the snapshot is drawn", || {
        let page = browser.eval(PAGE_STATE);
        page["vms"] == 3 && page["rows"] == 30
    });
    common::append_samples(run.path(), 11..21);
    wait_until(Duration::from_secs(20), "the live rows arrive", || {
        browser.eval(PAGE_STATE)["rows"] == 60
    });

    let page = browser.eval(PAGE_STATE);
    assert_eq!(page["status"], "live");
    assert!(page["updates"].as_u64().unwrap() >= 1, "{page}");
    for vm in common::VMS {
        for chart in ["memory", "cpu", "disk", "net"] {
            let drawn = &page["charts"][format!("{vm}:{chart}")];
            // Network rates need two samples: one point fewer.
            let want = if chart == "net" { 19 } else { 20 };
            assert_eq!(drawn["points"], want, "{vm}:{chart}: {page}");
            assert!(
                drawn["painted"].as_u64().unwrap() > 500,
                "{vm}:{chart} is blank: {page}"
            );
        }
    }
    assert_eq!(page["charts"]["host:pcpu"]["points"], 20, "{page}");
    assert_eq!(page["charts"]["host:decisions"]["points"], 9, "{page}");

    let png = browser.command("GET", "/screenshot", None);
    let png = base64::engine::general_purpose::STANDARD
        .decode(png.as_str().unwrap())
        .unwrap();
    let artifacts = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("../artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    std::fs::write(artifacts.join("dashboard.png"), &png).unwrap();
    assert!(png.starts_with(b"\x89PNG"));
    println!(
        "dashboard drawn in Chromium in {:.1} s; screenshot: {}",
        started.elapsed().as_secs_f64(),
        artifacts.join("dashboard.png").display()
    );
}
