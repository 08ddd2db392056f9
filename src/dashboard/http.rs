//! The dashboard's HTTP/1.1 server, on `std::net`: a thread per connection,
//! one request per connection (`Connection: close`), timeouts on every read
//! and write, a bound on the request head and on open connections, and a
//! check of the `Host` header. `httparse` reads the request head.
//!
//! Why each: a client that sends requests and never reads the responses
//! blocks only its own thread, and only until the write timeout; a slow or
//! endless head is cut off; a page of another site whose name was made to
//! point at 127.0.0.1 (DNS rebinding) is refused, since its requests name
//! that site in `Host`.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// A request head longer than this is refused with 431.
const MAX_HEAD_BYTES: usize = 8 * 1024;
const MAX_HEADERS: usize = 64;
/// Connections served at once (event streams included); beyond, 503.
pub const MAX_CONNECTIONS: usize = 512;
/// A client has this long to send its request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// A client that takes none of a write for this long is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Reads wait at most this long, so a stop is seen soon.
const READ_SLICE: Duration = Duration::from_millis(200);
/// How long a closing connection reads what the client still sends.
const LINGER: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 64 * 1024;
/// The accept loop's nap when no connection is waiting.
const ACCEPT_IDLE: Duration = Duration::from_millis(10);

/// What a handler needs of a request.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub method: String,
    /// The path without its query string.
    pub path: String,
}

/// The connection's way back: one response, whole or streamed.
pub struct Responder {
    stream: TcpStream,
    /// HEAD: the head of the response only.
    head_only: bool,
}

impl Responder {
    /// A whole response. Write errors mean the client left; nothing to do.
    pub fn send(&mut self, status: u16, content_type: &str, body: &[u8]) {
        let head = head(status, content_type, Some(body.len()));
        let _ = self.stream.write_all(head.as_bytes()).and_then(|()| {
            if !self.head_only {
                self.stream.write_all(body)?;
            }
            self.stream.flush()
        });
    }

    /// Starts a response whose body comes as it is written, until the
    /// connection closes; `None` for HEAD (or when the client left).
    pub fn stream(&mut self, content_type: &str) -> Option<&mut TcpStream> {
        let head = head(200, content_type, None);
        self.stream.write_all(head.as_bytes()).ok()?;
        (!self.head_only).then_some(&mut self.stream)
    }
}

fn head(status: u16, content_type: &str, length: Option<usize>) -> String {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "",
    };
    let length = length.map_or(String::new(), |n| format!("Content-Length: {n}\r\n"));
    format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\n{length}\
         Cache-Control: no-store\r\nConnection: close\r\n\r\n"
    )
}

/// The open connections, so a stop can cut them all at once.
#[derive(Default)]
struct Open {
    next_id: u64,
    streams: HashMap<u64, TcpStream>,
}

/// Serves `listener` until `stop` is set, calling `handle` once per
/// connection from its own thread; returns once every connection has ended.
pub fn serve(
    listener: &TcpListener,
    max_connections: usize,
    stop: &AtomicBool,
    handle: &(dyn Fn(Request, &mut Responder) + Sync),
) -> Result<()> {
    listener
        .set_nonblocking(true)
        .context("cannot make the dashboard's socket non-blocking")?;
    let open = Mutex::new(Open::default());
    std::thread::scope(|scope| {
        let mut last_error = String::new();
        while !stop.load(Ordering::Relaxed) {
            let stream = match listener.accept() {
                Ok((stream, _)) => stream,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    std::thread::sleep(ACCEPT_IDLE);
                    continue;
                }
                // Out of file descriptors and the like: wait, say it once.
                Err(e) => {
                    if e.to_string() != last_error {
                        last_error = e.to_string();
                        tracing::warn!("dashboard: cannot accept a connection: {e}");
                    }
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
            };
            let Some(id) = register(&open, &stream, max_connections) else {
                refuse_busy(stream, max_connections);
                continue;
            };
            let open = &open;
            let spawned = std::thread::Builder::new()
                .name("dashboard-http".into())
                .spawn_scoped(scope, move || {
                    connection(stream, stop, handle);
                    forget(open, id);
                });
            if let Err(e) = spawned {
                tracing::warn!("dashboard: cannot start a thread for a connection: {e}");
                forget(open, id);
            }
        }
        // Unblocks every connection's read or write: the scope then ends soon.
        for stream in open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .streams
            .values()
        {
            let _ = stream.shutdown(Shutdown::Both);
        }
    });
    Ok(())
}

/// Keeps a handle on `stream` for the stop; `None` when `max` are open.
fn register(open: &Mutex<Open>, stream: &TcpStream, max: usize) -> Option<u64> {
    let mut open = open.lock().unwrap_or_else(|e| e.into_inner());
    if open.streams.len() >= max {
        return None;
    }
    let id = open.next_id;
    open.next_id += 1;
    open.streams.insert(id, stream.try_clone().ok()?);
    Some(id)
}

fn forget(open: &Mutex<Open>, id: u64) {
    open.lock()
        .unwrap_or_else(|e| e.into_inner())
        .streams
        .remove(&id);
}

/// A 503 without waiting on the client: the accept loop must not block.
fn refuse_busy(stream: TcpStream, max: usize) {
    let body =
        format!("the dashboard serves {max} connections at once; close some pages and try again\n");
    let response = head(503, "text/plain", Some(body.len())) + &body;
    if stream.set_nonblocking(true).is_ok() {
        // What the client already sent is read, so closing does not reset the connection.
        let mut sink = [0u8; 4096];
        while matches!((&stream).read(&mut sink), Ok(n) if n > 0) {}
        let _ = (&stream).write_all(response.as_bytes());
        let _ = stream.shutdown(Shutdown::Write);
    }
}

/// One connection: its request head, the Host check, the handler, the close.
fn connection(
    mut stream: TcpStream,
    stop: &AtomicBool,
    handle: &(dyn Fn(Request, &mut Responder) + Sync),
) {
    let Ok(local) = stream.local_addr() else {
        return;
    };
    let configured = stream.set_nonblocking(false).is_ok()
        && stream.set_read_timeout(Some(READ_SLICE)).is_ok()
        && stream.set_write_timeout(Some(WRITE_TIMEOUT)).is_ok();
    if !configured {
        return;
    }
    let mut responder = match read_head(&mut stream, stop) {
        Head::Gone => return,
        Head::Refused(status, reason) => {
            let mut responder = Responder {
                stream,
                head_only: false,
            };
            responder.send(status, "text/plain", reason.as_bytes());
            responder
        }
        Head::Request(request, host) => {
            let mut responder = Responder {
                head_only: request.method == "HEAD",
                stream,
            };
            match refusal_of_host(host.as_deref(), local) {
                Some((status, reason)) => responder.send(status, "text/plain", reason.as_bytes()),
                None => handle(request, &mut responder),
            }
            responder
        }
    };
    let _ = responder.stream.flush();
    close(responder.stream);
}

enum Head {
    /// The request and its `Host` header.
    Request(Request, Option<String>),
    /// A status and a one-line reason for the client.
    Refused(u16, String),
    /// Closed, too slow, or the dashboard stops.
    Gone,
}

fn read_head(stream: &mut TcpStream, stop: &AtomicBool) -> Head {
    let mut buf = vec![0u8; MAX_HEAD_BYTES];
    let mut len = 0;
    let deadline = Instant::now() + HEAD_TIMEOUT;
    loop {
        if stop.load(Ordering::Relaxed) || Instant::now() >= deadline {
            return Head::Gone;
        }
        match stream.read(&mut buf[len..]) {
            Ok(0) => return Head::Gone,
            Ok(n) => len += n,
            Err(e) if is_retry(&e) => continue,
            Err(_) => return Head::Gone,
        }
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut parsed = httparse::Request::new(&mut headers);
        match parsed.parse(&buf[..len]) {
            Ok(httparse::Status::Complete(_)) => {
                let host = parsed
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("host"))
                    .map(|h| String::from_utf8_lossy(h.value).trim().to_string());
                let target = parsed.path.unwrap_or("/");
                let request = Request {
                    method: parsed.method.unwrap_or_default().to_string(),
                    path: target.split('?').next().unwrap_or("/").to_string(),
                };
                return Head::Request(request, host);
            }
            Ok(httparse::Status::Partial) if len < buf.len() => {}
            Ok(httparse::Status::Partial) | Err(httparse::Error::TooManyHeaders) => {
                return Head::Refused(
                    431,
                    format!(
                        "the request head is over {MAX_HEAD_BYTES} bytes or {MAX_HEADERS} \
                         headers; send a shorter one\n"
                    ),
                );
            }
            Err(e) => return Head::Refused(400, format!("not an HTTP request: {e}\n")),
        }
    }
}

/// A read that timed out or was interrupted: try again.
fn is_retry(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
    )
}

/// The status and reason to refuse a request whose `Host` is `host` on a
/// connection to `local`; `None` when it names this server: `localhost`, a
/// loopback address, or the address the client connected to, with this
/// port (`localhost` may leave the port out).
fn refusal_of_host(host: Option<&str>, local: SocketAddr) -> Option<(u16, String)> {
    let Some(host) = host else {
        return Some((400, "a Host header is needed\n".into()));
    };
    let (name, port) = match host.rsplit_once(':') {
        Some((name, port)) if !port.contains(']') => (name, Some(port)),
        _ => (host, None),
    };
    let port_ok = port.is_some_and(|p| p.parse::<u16>() == Ok(local.port()));
    let ours = if name.eq_ignore_ascii_case("localhost") {
        port.is_none() || port_ok
    } else {
        let ip = name.trim_start_matches('[').trim_end_matches(']');
        port_ok
            && ip
                .parse::<IpAddr>()
                .is_ok_and(|ip| ip.is_loopback() || ip == local.ip().to_canonical())
    };
    let refusal = format!(
        "Host `{host}` is not this dashboard's address; open http://{local}/ \
         (or http://localhost:{}/)\n",
        local.port()
    );
    (!ours).then_some((403, refusal))
}

/// Closes so that the client gets the whole response: our side first, then
/// what the client still sends is read and dropped for a moment (closing on
/// unread bytes resets the connection, which can destroy the response).
fn close(stream: TcpStream) {
    let _ = stream.shutdown(Shutdown::Write);
    let deadline = Instant::now() + LINGER;
    let mut sink = [0u8; 4096];
    let mut read = 0;
    while read < LINGER_BYTES && Instant::now() < deadline {
        match (&stream).read(&mut sink) {
            Ok(0) => return,
            Ok(n) => read += n,
            Err(e) if is_retry(&e) => {}
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local() -> SocketAddr {
        "127.0.0.1:8080".parse().unwrap()
    }

    #[test]
    fn hosts_that_name_this_server_pass() {
        for host in [
            "127.0.0.1:8080",
            "localhost:8080",
            "localhost",
            "LOCALHOST:8080",
            "[::1]:8080",
            "127.0.0.2:8080",
        ] {
            assert_eq!(refusal_of_host(Some(host), local()), None, "{host}");
        }
        let lan: SocketAddr = "192.168.1.5:8080".parse().unwrap();
        assert_eq!(refusal_of_host(Some("192.168.1.5:8080"), lan), None);
        // A dual-stack `[::]` socket sees IPv4 clients at mapped addresses.
        let mapped: SocketAddr = "[::ffff:192.168.1.5]:8080".parse().unwrap();
        assert_eq!(refusal_of_host(Some("192.168.1.5:8080"), mapped), None);
    }

    #[test]
    fn other_hosts_and_ports_are_refused() {
        for host in [
            "attacker.example:8080",
            "attacker.example",
            "127.0.0.1:8081",
            "127.0.0.1",
            "localhost:8081",
            "192.168.1.5:8080",
            "localhost.attacker.example:8080",
            "[::1]",
            "",
        ] {
            let (status, reason) = refusal_of_host(Some(host), local()).unwrap_or_default();
            assert_eq!(status, 403, "{host}");
            assert!(
                reason.starts_with(&format!("Host `{host}` is not this dashboard's address")),
                "{host}: {reason}"
            );
        }
        assert_eq!(
            refusal_of_host(None, local()),
            Some((400, "a Host header is needed\n".to_string()))
        );
    }

    #[test]
    fn connections_beyond_the_cap_get_503() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = AtomicBool::new(false);
        let response = std::thread::scope(|scope| {
            let server = scope.spawn(|| {
                serve(&listener, 2, &stop, &|_, responder: &mut Responder| {
                    responder.send(200, "text/plain", b"hello\n")
                })
            });
            // Two clients that have not sent their request yet hold both places
            // (connections are accepted in the order they came).
            let holders: Vec<TcpStream> =
                (0..2).map(|_| TcpStream::connect(addr).unwrap()).collect();
            let mut third = TcpStream::connect(addr).unwrap();
            third
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let mut response = String::new();
            let _ = third.read_to_string(&mut response);
            drop(holders);
            stop.store(true, Ordering::Relaxed);
            server.join().unwrap().unwrap();
            response
        });
        assert!(
            response.starts_with("HTTP/1.1 503 Service Unavailable\r\n")
                && response.ends_with(
                    "the dashboard serves 2 connections at once; \
                     close some pages and try again\n"
                ),
            "{response}"
        );
    }
}
