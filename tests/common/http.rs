//! A dashboard served from a test thread, and a plain HTTP/1.1 client for it
//! (loopback only; no proxy settings can get in the way).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use vmlab::dashboard::{Dashboard, Mode};

/// A dashboard on 127.0.0.1 (any free port), stopped when dropped.
pub struct Served {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<anyhow::Result<()>>>,
}

pub fn serve(run_dir: &Path, mode: Mode) -> Served {
    let dashboard =
        Dashboard::bind("127.0.0.1:0".parse().unwrap(), run_dir, mode, "default").unwrap();
    let addr = dashboard.local_addr();
    let stop = Arc::new(AtomicBool::new(false));
    let thread_stop = stop.clone();
    let thread = std::thread::spawn(move || dashboard.run(&thread_stop));
    Served {
        addr,
        stop,
        thread: Some(thread),
    }
}

impl Served {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Stops the server and returns how `run` ended.
    pub fn stop(mut self) -> anyhow::Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// `GET path` → (status, content type, body).
pub fn get(addr: SocketAddr, path: &str) -> (u16, String, String) {
    send(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"),
    )
}

/// Sends `request` as it is and reads the response to the end (10 s at
/// most) → (status, content type, body).
pub fn send(addr: SocketAddr, request: &str) -> (u16, String, String) {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let content_type = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-type: ")
                .map(str::to_string)
        })
        .unwrap_or_default();
    (status, content_type, body.to_string())
}

/// An open `/events` stream.
pub struct Events {
    reader: BufReader<TcpStream>,
}

impl Events {
    pub fn open(addr: SocketAddr) -> Self {
        Self::opened(Self::ask(addr))
    }

    /// `count` streams, all asked for before any answer is read.
    pub fn open_many(addr: SocketAddr, count: usize) -> Vec<Self> {
        let asked: Vec<TcpStream> = (0..count).map(|_| Self::ask(addr)).collect();
        asked.into_iter().map(Self::opened).collect()
    }

    fn ask(addr: SocketAddr) -> TcpStream {
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        write!(stream, "GET /events HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
        stream
    }

    /// Reads the response's head.
    fn opened(stream: TcpStream) -> Self {
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        loop {
            line.clear();
            read_line(
                &mut reader,
                &mut line,
                Instant::now() + Duration::from_secs(5),
            );
            if line == "\r\n" {
                break;
            }
        }
        Self { reader }
    }

    /// The next event as (name, JSON data), waiting until `deadline`.
    pub fn next(&mut self, deadline: Instant) -> (String, serde_json::Value) {
        let (mut event, mut data) = (String::new(), String::new());
        let mut line = String::new();
        loop {
            line.clear();
            read_line(&mut self.reader, &mut line, deadline);
            match line.trim_end() {
                "" if !event.is_empty() => return (event, serde_json::from_str(&data).unwrap()),
                l => {
                    if let Some(name) = l.strip_prefix("event: ") {
                        event = name.to_string();
                    } else if let Some(d) = l.strip_prefix("data: ") {
                        data = d.to_string();
                    }
                }
            }
        }
    }
}

/// Reads one whole line, retrying short read timeouts until `deadline`.
fn read_line(reader: &mut BufReader<TcpStream>, line: &mut String, deadline: Instant) {
    loop {
        match reader.read_line(line) {
            Ok(0) => panic!("stream closed"),
            Ok(_) if line.ends_with('\n') => return,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("{e}"),
        }
        assert!(
            Instant::now() < deadline,
            "no whole line before the deadline"
        );
    }
}
