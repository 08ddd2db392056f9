//! HTTP GET with errors that say what to do, and streaming into the cache.

use std::io::Read;
use std::time::Duration;

use anyhow::{Result, anyhow, bail};

use super::cache::{Cache, Expected};
use super::digest::Digests;

/// An agent with bounded waits: a dead mirror fails instead of hanging.
pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_recv_response(Some(Duration::from_secs(60)))
        .timeout_per_read(Some(Duration::from_secs(120)))
        .build()
        .new_agent()
}

/// Why an HTTP GET gave no body.
#[derive(Debug)]
pub enum GetError {
    /// The server answered with this status.
    Status(u16),
    /// No answer: DNS, connection, TLS, timeout...
    Unreachable(String),
}

impl GetError {
    /// One line naming the URL, what went wrong and `remedy` (e.g. "pass --url with another mirror").
    pub fn message(&self, url: &str, remedy: &str) -> String {
        match self {
            GetError::Status(404) => format!("{url} was not found (HTTP 404); {remedy}"),
            GetError::Status(code) => {
                format!("{url} answered HTTP {code}; try again later, or {remedy}")
            }
            GetError::Unreachable(err) => {
                format!("cannot reach {url}: {err}; check your network, or {remedy}")
            }
        }
    }
}

pub fn get(
    agent: &ureq::Agent,
    url: &str,
) -> std::result::Result<ureq::http::Response<ureq::Body>, GetError> {
    agent.get(url).call().map_err(|e| match e {
        ureq::Error::StatusCode(code) => GetError::Status(code),
        other => GetError::Unreachable(other.to_string()),
    })
}

/// A small text body (a checksum file), at most `limit` bytes.
pub fn get_text(
    agent: &ureq::Agent,
    url: &str,
    limit: u64,
) -> std::result::Result<String, GetError> {
    get(agent, url)?
        .body_mut()
        .with_config()
        .limit(limit)
        .read_to_string()
        .map_err(|e| GetError::Unreachable(e.to_string()))
}

/// Streams `url` into the cache, verified against `expected`; `remedy` ends
/// every error. `progress` gets (bytes so far, total if announced).
pub fn download(
    agent: &ureq::Agent,
    cache: &Cache,
    url: &str,
    expected: &Expected,
    remedy: &str,
    progress: &mut dyn FnMut(u64, Option<u64>),
) -> Result<Digests> {
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        bail!("`{url}` is not an http:// or https:// URL");
    }
    let mut resp = get(agent, url).map_err(|e| anyhow!("{}", e.message(url, remedy)))?;
    let total = resp.body().content_length();
    progress(0, total);
    let mut reader: Box<dyn Read + '_> = Box::new(resp.body_mut().as_reader());
    cache.store(&mut reader, url, Some((expected, remedy)), &mut |n| {
        progress(n, total)
    })
}
