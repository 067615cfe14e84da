//! The fetch layer against a tiny loopback HTTP server defined below.

use std::collections::HashMap;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use bundle_spec::{Reporter, Sha256Digest};
use bundler::cache::Cache;
use bundler::fetch::{Endpoint, FetchOptions, FetchRequest, Fetched, MinRate, Source, fetch_all};
use url::Url;

// ---------------------------------------------------------------------------
// Test server: thread per connection, `Connection: close`, Range → 206.

/// What the server does for one request.
#[derive(Clone)]
enum Reply {
    /// 200 with the body, or 206 with the requested tail for `Range: bytes=N-`
    /// (416 when N is past the end).
    Body(Vec<u8>),
    /// Always 200 with the whole body, ignoring `Range`.
    IgnoreRange(Vec<u8>),
    /// An empty response with this status.
    Status(u16),
    /// Like `Body`, after a delay.
    Delay(Duration, Vec<u8>),
    /// Announces the full length (honouring `Range`) but sends only the first
    /// `n` bytes, then closes the connection.
    Cut(Vec<u8>, usize),
    /// Sends the first `n` bytes, then goes silent for the duration.
    Stall(Vec<u8>, usize, Duration),
    /// Sends the body in chunks of `n` bytes with a pause between them.
    Trickle(Vec<u8>, usize, Duration),
    /// 200 without Content-Length and a body that never ends.
    Endless,
    /// 307 to this URL.
    Redirect(String),
}

#[derive(Debug, Clone)]
struct Logged {
    path: String,
    range: Option<String>,
    authorization: Option<String>,
}

struct Server {
    addr: SocketAddr,
    log: Arc<Mutex<Vec<Logged>>>,
}

impl Server {
    /// Serves `routes`: for each path, the replies to its 1st, 2nd, ...
    /// request; the last reply repeats. Unknown paths get 404.
    fn start(routes: Vec<(&str, Vec<Reply>)>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let routes: HashMap<String, Vec<Reply>> =
            routes.into_iter().map(|(p, r)| (p.to_owned(), r)).collect();
        let routes = Arc::new(routes);
        let counts = Arc::new(Mutex::new(HashMap::<String, usize>::new()));
        let log = Arc::new(Mutex::new(Vec::new()));
        let server_log = log.clone();
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let (routes, counts, log) = (routes.clone(), counts.clone(), server_log.clone());
                thread::spawn(move || {
                    let _ = handle(stream, &routes, &counts, &log);
                });
            }
        });
        Server { addr, log }
    }

    fn url(&self, path: &str) -> Url {
        Url::parse(&format!("http://{}{path}", self.addr)).unwrap()
    }

    fn requests(&self) -> Vec<Logged> {
        self.log.lock().unwrap().clone()
    }
}

fn handle(
    mut stream: TcpStream,
    routes: &HashMap<String, Vec<Reply>>,
    counts: &Mutex<HashMap<String, usize>>,
    log: &Mutex<Vec<Logged>>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_owned();
    let mut range = None;
    let mut authorization = None;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = header.split_once(':') {
            if k.trim().eq_ignore_ascii_case("range") {
                range = Some(v.trim().to_owned());
            } else if k.trim().eq_ignore_ascii_case("authorization") {
                authorization = Some(v.trim().to_owned());
            }
        }
    }
    log.lock().unwrap().push(Logged {
        path: path.clone(),
        range: range.clone(),
        authorization,
    });
    let reply = {
        let mut counts = counts.lock().unwrap();
        let n = counts.entry(path.clone()).or_default();
        let reply = routes.get(&path).map(|r| r[(*n).min(r.len() - 1)].clone());
        *n += 1;
        reply
    };
    let start = range
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|n| n.parse::<usize>().ok());
    match reply {
        None => status(&mut stream, 404),
        Some(Reply::Status(code)) => status(&mut stream, code),
        Some(Reply::Body(body)) => send(&mut stream, &body, start, body.len(), None),
        Some(Reply::IgnoreRange(body)) => send(&mut stream, &body, None, body.len(), None),
        Some(Reply::Delay(d, body)) => {
            thread::sleep(d);
            send(&mut stream, &body, start, body.len(), None)
        }
        Some(Reply::Cut(body, n)) => send(&mut stream, &body, start, n, None),
        Some(Reply::Stall(body, n, d)) => send(&mut stream, &body, start, n, Some(d)),
        Some(Reply::Trickle(body, chunk, pause)) => {
            head(&mut stream, 200, body.len(), None)?;
            for piece in body.chunks(chunk) {
                stream.write_all(piece)?;
                stream.flush()?;
                thread::sleep(pause);
            }
            Ok(())
        }
        Some(Reply::Redirect(location)) => stream.write_all(
            format!(
                "HTTP/1.1 307 X\r\nLocation: {location}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )
            .as_bytes(),
        ),
        Some(Reply::Endless) => {
            stream.write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")?;
            let chunk = vec![b'x'; 64 * 1024];
            loop {
                stream.write_all(&chunk)?;
            }
        }
    }
}

fn head(
    stream: &mut TcpStream,
    code: u16,
    len: usize,
    content_range: Option<String>,
) -> std::io::Result<()> {
    let mut head = format!("HTTP/1.1 {code} X\r\nContent-Length: {len}\r\nConnection: close\r\n");
    if let Some(cr) = content_range {
        head.push_str(&format!("Content-Range: {cr}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())
}

fn status(stream: &mut TcpStream, code: u16) -> std::io::Result<()> {
    head(stream, code, 0, None)
}

/// Sends `body` (its tail from `start` as a 206), but only `limit` bytes of
/// it, then waits `stall` (if any) and closes.
fn send(
    stream: &mut TcpStream,
    body: &[u8],
    start: Option<usize>,
    limit: usize,
    stall: Option<Duration>,
) -> std::io::Result<()> {
    let part = match start {
        Some(s) if s >= body.len() => {
            return head(stream, 416, 0, Some(format!("bytes */{}", body.len())));
        }
        Some(s) => {
            let cr = format!("bytes {s}-{}/{}", body.len() - 1, body.len());
            head(stream, 206, body.len() - s, Some(cr))?;
            &body[s..]
        }
        None => {
            head(stream, 200, body.len(), None)?;
            body
        }
    };
    stream.write_all(&part[..limit.min(part.len())])?;
    stream.flush()?;
    if let Some(d) = stall {
        thread::sleep(d);
    }
    stream.shutdown(std::net::Shutdown::Write)
}

// ---------------------------------------------------------------------------
// Helpers.

#[derive(Default)]
struct Recorder {
    messages: Mutex<Vec<String>>,
    restarts: Mutex<Vec<(usize, u64)>>,
    next_id: AtomicUsize,
    active: AtomicUsize,
    max_active: AtomicUsize,
}

impl Reporter for Recorder {
    fn on_start(&self, _name: &str, _total: Option<u64>) -> usize {
        let now = self.active.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_active.fetch_max(now, Ordering::SeqCst);
        self.next_id.fetch_add(1, Ordering::SeqCst)
    }
    fn on_restart(&self, id: usize, offset: u64) {
        self.restarts.lock().unwrap().push((id, offset));
    }
    fn on_finish(&self, _id: usize) {
        self.active.fetch_sub(1, Ordering::SeqCst);
    }
    fn on_message(&self, message: &str) {
        self.messages.lock().unwrap().push(message.to_owned());
    }
}

fn opts() -> FetchOptions {
    FetchOptions {
        jobs: 4,
        offline: false,
        retries: 4,
        backoff: Duration::from_millis(10),
        connect_timeout: Duration::from_secs(2),
        idle_timeout: Duration::from_secs(5),
        min_rate: MinRate::default(),
        registry_roots: Vec::new(),
    }
}

fn request(name: &str, sources: Vec<Source>, content: Option<&[u8]>) -> FetchRequest {
    FetchRequest {
        name: name.parse().unwrap(),
        sources,
        sha256: content.map(Sha256Digest::of),
        size: content.map(|c| c.len() as u64),
        label: None,
    }
}

/// Deterministic, non-repeating test content.
fn content(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[(i % 3) + 1] ^ seed)
        .collect()
}

fn new_cache() -> (tempfile::TempDir, Cache) {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(Some(dir.path())).unwrap();
    (dir, cache)
}

/// Every object under `sha256/` is named by its own digest; returns how many.
fn assert_cache_consistent(cache: &Cache) -> usize {
    let mut n = 0;
    for entry in fs::read_dir(cache.root().join("sha256")).unwrap() {
        let entry = entry.unwrap();
        let (digest, _) = Sha256Digest::of_reader(fs::File::open(entry.path()).unwrap()).unwrap();
        assert_eq!(entry.file_name().to_str().unwrap(), digest.to_hex());
        n += 1;
    }
    n
}

fn partial_files(cache: &Cache) -> Vec<String> {
    fs::read_dir(cache.root().join("partial"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

fn one(result: Vec<Fetched>) -> Fetched {
    assert_eq!(result.len(), 1);
    result.into_iter().next().unwrap()
}

// ---------------------------------------------------------------------------
// Tests.

#[test]
fn download_is_cached_and_verified() {
    let body = content(300_000, 1);
    let server = Server::start(vec![("/runc", vec![Reply::Body(body.clone())])]);
    let (_dir, cache) = new_cache();
    let url = server.url("/runc");
    let req = request("runc", vec![Source::Http(url.clone())], Some(&body));
    let f = one(fetch_all(vec![req], &cache, &opts(), &Recorder::default()).unwrap());
    assert_eq!(f.name.as_str(), "runc");
    assert_eq!(f.sha256, Sha256Digest::of(&body));
    assert_eq!(f.size, body.len() as u64);
    assert_eq!(f.source, url.as_str());
    assert!(!f.from_cache);
    assert_eq!(f.path, cache.object_path(&f.sha256));
    assert_eq!(fs::read(&f.path).unwrap(), body);
    assert!(fs::metadata(&f.path).unwrap().permissions().readonly());
    assert_eq!(assert_cache_consistent(&cache), 1);
    assert!(partial_files(&cache).is_empty());
}

#[test]
fn second_fetch_is_a_cache_hit_without_network() {
    let body = content(10_000, 2);
    let server = Server::start(vec![("/a", vec![Reply::Body(body.clone())])]);
    let (_dir, cache) = new_cache();
    let req = request("a", vec![Source::Http(server.url("/a"))], Some(&body));
    let first = one(fetch_all(vec![req.clone()], &cache, &opts(), &Recorder::default()).unwrap());
    assert_eq!(server.requests().len(), 1);
    let second = one(fetch_all(vec![req.clone()], &cache, &opts(), &Recorder::default()).unwrap());
    assert_eq!(
        server.requests().len(),
        1,
        "a cache hit must not touch the network"
    );
    assert!(second.from_cache);
    assert_eq!(second.source, "cache");
    assert_eq!(
        (second.path, second.sha256, second.size),
        (first.path, first.sha256, first.size)
    );
    // Offline is fine when everything is cached.
    let offline = FetchOptions {
        offline: true,
        ..opts()
    };
    assert!(one(fetch_all(vec![req], &cache, &offline, &Recorder::default()).unwrap()).from_cache);
}

#[test]
fn broken_transfer_is_resumed_with_range() {
    let body = content(200_000, 3);
    let cut = 70_000;
    let server = Server::start(vec![(
        "/big",
        vec![Reply::Cut(body.clone(), cut), Reply::Body(body.clone())],
    )]);
    let (_dir, cache) = new_cache();
    let rec = Recorder::default();
    let req = request("big", vec![Source::Http(server.url("/big"))], Some(&body));
    let f = one(fetch_all(vec![req], &cache, &opts(), &rec).unwrap());
    assert_eq!(fs::read(&f.path).unwrap(), body);
    let log = server.requests();
    assert_eq!(log.len(), 2, "{log:?}");
    assert_eq!(log[0].range, None);
    assert_eq!(
        log[1].range.as_deref(),
        Some(format!("bytes={cut}-").as_str())
    );
    assert_eq!(*rec.restarts.lock().unwrap(), vec![(0, cut as u64)]);
    let messages = rec.messages.lock().unwrap();
    assert!(
        messages.iter().any(|m| m.starts_with("big: ")
            && m.contains(", retrying in 10ms (attempt 2/5) from http://")),
        "{messages:?}"
    );
    assert_eq!(assert_cache_consistent(&cache), 1);
}

#[test]
fn stalled_transfer_times_out_and_resumes() {
    let body = content(100_000, 4);
    let server = Server::start(vec![(
        "/s",
        vec![
            Reply::Stall(body.clone(), 30_000, Duration::from_secs(3)),
            Reply::Body(body.clone()),
        ],
    )]);
    let (_dir, cache) = new_cache();
    let opts = FetchOptions {
        idle_timeout: Duration::from_millis(300),
        ..opts()
    };
    let rec = Recorder::default();
    let started = Instant::now();
    let req = request("s", vec![Source::Http(server.url("/s"))], Some(&body));
    let f = one(fetch_all(vec![req], &cache, &opts, &rec).unwrap());
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(fs::read(&f.path).unwrap(), body);
    let log = server.requests();
    assert_eq!(log.len(), 2);
    assert_eq!(log[1].range.as_deref(), Some("bytes=30000-"));
    let messages = rec.messages.lock().unwrap();
    assert!(
        messages.iter().any(|m| m.contains("timed out")),
        "{messages:?}"
    );
}

#[test]
fn slow_but_steady_transfer_is_not_cut_by_idle_timeout() {
    // 10 chunks, 200 ms apart: 2 s in total, but never 500 ms without data.
    let body = content(10_000, 5);
    let server = Server::start(vec![(
        "/slow",
        vec![Reply::Trickle(
            body.clone(),
            1_000,
            Duration::from_millis(200),
        )],
    )]);
    let (_dir, cache) = new_cache();
    let opts = FetchOptions {
        idle_timeout: Duration::from_millis(500),
        retries: 0,
        ..opts()
    };
    let req = request("slow", vec![Source::Http(server.url("/slow"))], Some(&body));
    let f = one(fetch_all(vec![req], &cache, &opts, &Recorder::default()).unwrap());
    assert_eq!(fs::read(&f.path).unwrap(), body);
    assert_eq!(server.requests().len(), 1);
}

#[test]
fn server_ignoring_range_restarts_from_zero() {
    let body = content(50_000, 6);
    let server = Server::start(vec![(
        "/x",
        vec![
            Reply::Cut(body.clone(), 20_000),
            Reply::IgnoreRange(body.clone()),
        ],
    )]);
    let (_dir, cache) = new_cache();
    let rec = Recorder::default();
    let req = request("x", vec![Source::Http(server.url("/x"))], Some(&body));
    let f = one(fetch_all(vec![req], &cache, &opts(), &rec).unwrap());
    assert_eq!(fs::read(&f.path).unwrap(), body);
    assert_eq!(server.requests()[1].range.as_deref(), Some("bytes=20000-"));
    assert_eq!(*rec.restarts.lock().unwrap(), vec![(0, 20_000), (0, 0)]);
}

#[test]
fn unsatisfiable_range_restarts_from_zero() {
    let body = content(50_000, 7);
    let server = Server::start(vec![(
        "/y",
        vec![
            Reply::Cut(body.clone(), 20_000),
            Reply::Status(416),
            Reply::Body(body.clone()),
        ],
    )]);
    let (_dir, cache) = new_cache();
    let req = request("y", vec![Source::Http(server.url("/y"))], Some(&body));
    let f = one(fetch_all(vec![req], &cache, &opts(), &Recorder::default()).unwrap());
    assert_eq!(fs::read(&f.path).unwrap(), body);
    let ranges: Vec<_> = server.requests().into_iter().map(|r| r.range).collect();
    assert_eq!(ranges, vec![None, Some("bytes=20000-".to_owned()), None]);
}

#[test]
fn wrong_bytes_are_refused_and_not_cached() {
    let good = content(40_000, 8);
    let evil = content(40_000, 9);
    let server = Server::start(vec![("/runc", vec![Reply::Body(evil.clone())])]);
    let (_dir, cache) = new_cache();
    let url = server.url("/runc");
    let req = request("runc", vec![Source::Http(url.clone())], Some(&good));
    let err = fetch_all(vec![req], &cache, &opts(), &Recorder::default()).unwrap_err();
    let text = err.to_string();
    for needle in [
        "runc",
        url.as_str(),
        &Sha256Digest::of(&good).to_hex(),
        &Sha256Digest::of(&evil).to_hex(),
        "not cached",
    ] {
        assert!(text.contains(needle), "{needle:?} missing from {text:?}");
    }
    assert_eq!(err.errors.len(), 1);
    assert_eq!(
        server.requests().len(),
        1,
        "a mismatch is not retried on the same source"
    );
    assert_eq!(assert_cache_consistent(&cache), 0);
    assert!(
        partial_files(&cache).is_empty(),
        "{:?}",
        partial_files(&cache)
    );
}

#[test]
fn mirror_is_used_when_primary_404s() {
    let body = content(5_000, 10);
    let server = Server::start(vec![("/mirror/m", vec![Reply::Body(body.clone())])]);
    let (_dir, cache) = new_cache();
    let primary = server.url("/primary/m");
    let mirror = server.url("/mirror/m");
    let rec = Recorder::default();
    let req = request(
        "m",
        vec![Source::Http(primary.clone()), Source::Http(mirror.clone())],
        Some(&body),
    );
    let f = one(fetch_all(vec![req], &cache, &opts(), &rec).unwrap());
    assert_eq!(f.source, mirror.as_str());
    let paths: Vec<_> = server.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(
        paths,
        vec!["/primary/m", "/mirror/m"],
        "a 404 is not retried"
    );
    let messages = rec.messages.lock().unwrap();
    assert!(
        messages
            .iter()
            .any(|m| m.contains("404") && m.contains(mirror.as_str())),
        "{messages:?}"
    );
}

#[test]
fn every_failed_source_is_listed() {
    let body = content(5_000, 11);
    let evil = content(5_000, 12);
    let server = Server::start(vec![("/b", vec![Reply::Body(evil.clone())])]);
    let (_dir, cache) = new_cache();
    let (a, b) = (server.url("/a"), server.url("/b"));
    let req = request(
        "two",
        vec![Source::Http(a.clone()), Source::Http(b.clone())],
        Some(&body),
    );
    let err = fetch_all(vec![req], &cache, &opts(), &Recorder::default()).unwrap_err();
    let text = err.to_string();
    assert!(!text.contains('\n'), "one line per artifact: {text:?}");
    assert!(text.contains("all 2 sources failed"), "{text}");
    assert!(
        text.contains(&format!("{a} answered HTTP 404 Not Found")),
        "{text}"
    );
    assert!(text.contains(&format!("sha256 mismatch for {b}")), "{text}");
    assert_eq!(assert_cache_consistent(&cache), 0);
}

#[test]
fn server_error_is_retried() {
    let body = content(5_000, 13);
    let server = Server::start(vec![(
        "/r",
        vec![
            Reply::Status(503),
            Reply::Status(503),
            Reply::Body(body.clone()),
        ],
    )]);
    let (_dir, cache) = new_cache();
    let rec = Recorder::default();
    let url = server.url("/r");
    let req = request("r", vec![Source::Http(url.clone())], Some(&body));
    let f = one(fetch_all(vec![req], &cache, &opts(), &rec).unwrap());
    assert_eq!(fs::read(&f.path).unwrap(), body);
    assert_eq!(server.requests().len(), 3);
    let messages = rec.messages.lock().unwrap();
    assert_eq!(
        *messages,
        vec![
            format!("r: HTTP 503 Service Unavailable, retrying in 10ms (attempt 2/5) from {url}"),
            format!("r: HTTP 503 Service Unavailable, retrying in 20ms (attempt 3/5) from {url}"),
        ]
    );
}

#[test]
fn retries_are_bounded() {
    let body = content(100, 14);
    let server = Server::start(vec![("/down", vec![Reply::Status(500)])]);
    let (_dir, cache) = new_cache();
    let opts = FetchOptions {
        retries: 2,
        ..opts()
    };
    let url = server.url("/down");
    let req = request("down", vec![Source::Http(url.clone())], Some(&body));
    let err = fetch_all(vec![req], &cache, &opts, &Recorder::default()).unwrap_err();
    assert_eq!(server.requests().len(), 3);
    assert_eq!(
        err.to_string(),
        format!("down: {url} answered HTTP 500 Internal Server Error (after 3 attempts)")
    );
}

#[test]
fn oversized_body_is_cut_off_at_declared_size() {
    let body = content(1_000, 15);
    let big = content(50_000, 16);
    let server = Server::start(vec![
        ("/endless", vec![Reply::Endless]),
        ("/announced", vec![Reply::Body(big)]),
    ]);
    let (_dir, cache) = new_cache();
    let started = Instant::now();
    let reqs = vec![
        request(
            "endless",
            vec![Source::Http(server.url("/endless"))],
            Some(&body),
        ),
        request(
            "announced",
            vec![Source::Http(server.url("/announced"))],
            Some(&body),
        ),
    ];
    let err = fetch_all(reqs, &cache, &opts(), &Recorder::default()).unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(3));
    let text = err.to_string();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(
        lines[0].starts_with("endless: ")
            && lines[0].contains("sent more than the declared size of 1000 bytes"),
        "{text}"
    );
    assert!(
        lines[1].starts_with("announced: ") && lines[1].contains("announced 50000 bytes"),
        "{text}"
    );
    assert_eq!(server.requests().len(), 2, "a too-long body is not retried");
    assert_eq!(assert_cache_consistent(&cache), 0);
    assert!(partial_files(&cache).is_empty());
}

#[test]
fn offline_miss_is_an_error() {
    let body = content(100, 17);
    let server = Server::start(vec![("/o", vec![Reply::Body(body.clone())])]);
    let (_dir, cache) = new_cache();
    let opts = FetchOptions {
        offline: true,
        ..opts()
    };
    let req = request(
        "offline-thing",
        vec![Source::Http(server.url("/o"))],
        Some(&body),
    );
    let err = fetch_all(vec![req], &cache, &opts, &Recorder::default()).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("offline-thing") && text.contains("--offline forbids downloading"),
        "{text}"
    );
    assert!(server.requests().is_empty());
}

#[test]
fn failures_do_not_stop_other_artifacts() {
    let good = content(1_000, 18);
    let server = Server::start(vec![("/good", vec![Reply::Body(good.clone())])]);
    let (_dir, cache) = new_cache();
    let reqs = vec![
        // Pinned to other bytes than "good": no cache hit can satisfy it,
        // whichever download finishes first.
        request(
            "missing",
            vec![Source::Http(server.url("/missing"))],
            Some(&content(1_000, 19)),
        ),
        request("good", vec![Source::Http(server.url("/good"))], Some(&good)),
    ];
    let err = fetch_all(reqs, &cache, &opts(), &Recorder::default()).unwrap_err();
    assert_eq!(err.errors.len(), 1);
    assert_eq!(err.errors[0].name().as_str(), "missing");
    assert_eq!(err.fetched.len(), 1);
    assert_eq!(err.fetched[0].name.as_str(), "good");
    assert!(cache.lookup(&Sha256Digest::of(&good)).is_some());
}

#[test]
fn parallel_downloads_overlap() {
    let delay = Duration::from_millis(300);
    let bodies: Vec<Vec<u8>> = (0..4).map(|i| content(1_000, 20 + i)).collect();
    let routes: Vec<(String, Vec<Reply>)> = bodies
        .iter()
        .enumerate()
        .map(|(i, b)| (format!("/p{i}"), vec![Reply::Delay(delay, b.clone())]))
        .collect();
    let server = Server::start(
        routes
            .iter()
            .map(|(p, r)| (p.as_str(), r.clone()))
            .collect(),
    );
    let (_dir, cache) = new_cache();
    let reqs: Vec<_> = bodies
        .iter()
        .enumerate()
        .map(|(i, b)| {
            request(
                &format!("p{i}"),
                vec![Source::Http(server.url(&format!("/p{i}")))],
                Some(b),
            )
        })
        .collect();
    let started = Instant::now();
    let fetched = fetch_all(reqs, &cache, &opts(), &Recorder::default()).unwrap();
    let elapsed = started.elapsed();
    assert!(elapsed < delay * 4 * 8 / 10, "took {elapsed:?}");
    // Results come back in request order.
    let names: Vec<_> = fetched.iter().map(|f| f.name.as_str().to_owned()).collect();
    assert_eq!(names, ["p0", "p1", "p2", "p3"]);
}

#[test]
fn at_most_jobs_downloads_run_at_once() {
    let bodies: Vec<Vec<u8>> = (0..6).map(|i| content(500, 30 + i)).collect();
    let routes: Vec<(String, Vec<Reply>)> = bodies
        .iter()
        .enumerate()
        .map(|(i, b)| {
            (
                format!("/j{i}"),
                vec![Reply::Delay(Duration::from_millis(100), b.clone())],
            )
        })
        .collect();
    let server = Server::start(
        routes
            .iter()
            .map(|(p, r)| (p.as_str(), r.clone()))
            .collect(),
    );
    let (_dir, cache) = new_cache();
    let reqs: Vec<_> = bodies
        .iter()
        .enumerate()
        .map(|(i, b)| {
            request(
                &format!("j{i}"),
                vec![Source::Http(server.url(&format!("/j{i}")))],
                Some(b),
            )
        })
        .collect();
    let rec = Recorder::default();
    let opts = FetchOptions { jobs: 2, ..opts() };
    fetch_all(reqs, &cache, &opts, &rec).unwrap();
    assert_eq!(rec.max_active.load(Ordering::SeqCst), 2);
}

#[test]
fn same_content_under_two_names_is_downloaded_once() {
    let body = content(20_000, 40);
    let server = Server::start(vec![(
        "/same",
        vec![Reply::Delay(Duration::from_millis(100), body.clone())],
    )]);
    let (_dir, cache) = new_cache();
    let reqs = vec![
        request("one", vec![Source::Http(server.url("/same"))], Some(&body)),
        request("two", vec![Source::Http(server.url("/same"))], Some(&body)),
    ];
    let fetched = fetch_all(reqs, &cache, &opts(), &Recorder::default()).unwrap();
    assert_eq!(fetched[0].path, fetched[1].path);
    assert_eq!(fetched.iter().filter(|f| f.from_cache).count(), 1);
    assert_eq!(server.requests().len(), 1);
}

#[test]
fn pin_mode_computes_digest() {
    let body = content(12_345, 41);
    let server = Server::start(vec![("/pin", vec![Reply::Body(body.clone())])]);
    let (_dir, cache) = new_cache();
    let req = request("pin", vec![Source::Http(server.url("/pin"))], None);
    let f = one(fetch_all(vec![req], &cache, &opts(), &Recorder::default()).unwrap());
    assert_eq!(f.sha256, Sha256Digest::of(&body));
    assert_eq!(f.size, body.len() as u64);
    assert_eq!(f.path, cache.object_path(&f.sha256));
    assert_eq!(fs::read(&f.path).unwrap(), body);
    assert_eq!(assert_cache_consistent(&cache), 1);
    assert!(partial_files(&cache).is_empty());
}

#[test]
fn file_source_is_verified() {
    let dir = tempfile::tempdir().unwrap();
    let good = content(3_000, 42);
    let path = dir.path().join("local.bin");
    fs::write(&path, &good).unwrap();
    let (_cache_dir, cache) = new_cache();
    // Offline does not forbid local files.
    let opts = FetchOptions {
        offline: true,
        ..opts()
    };

    let req = request("local", vec![Source::File(path.clone())], Some(&good));
    let f = one(fetch_all(vec![req], &cache, &opts, &Recorder::default()).unwrap());
    assert_eq!(f.source, format!("file:{}", path.display()));
    assert_eq!(fs::read(&f.path).unwrap(), good);

    let other = content(3_000, 43);
    let req = request("wrong", vec![Source::File(path.clone())], Some(&other));
    let err = fetch_all(vec![req], &cache, &opts, &Recorder::default()).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("wrong: sha256 mismatch for file:"), "{text}");
    assert!(
        text.contains(&Sha256Digest::of(&other).to_hex()) && text.contains("not cached"),
        "{text}"
    );
    assert!(cache.lookup(&Sha256Digest::of(&other)).is_none());

    let req = request(
        "absent",
        vec![Source::File(dir.path().join("nope"))],
        Some(&other),
    );
    let err = fetch_all(vec![req], &cache, &opts, &Recorder::default()).unwrap_err();
    assert!(err.to_string().starts_with("absent: cannot read "), "{err}");
    assert_eq!(assert_cache_consistent(&cache), 1);
}

#[test]
fn interrupted_partial_from_an_earlier_run_is_resumed() {
    let body = content(80_000, 44);
    let server = Server::start(vec![("/r", vec![Reply::Body(body.clone())])]);
    let (_dir, cache) = new_cache();
    let digest = Sha256Digest::of(&body);
    fs::write(cache.partial_path(&digest.to_hex()), &body[..30_000]).unwrap();
    let req = request("r", vec![Source::Http(server.url("/r"))], Some(&body));
    let f = one(fetch_all(vec![req], &cache, &opts(), &Recorder::default()).unwrap());
    assert_eq!(fs::read(&f.path).unwrap(), body);
    assert_eq!(server.requests()[0].range.as_deref(), Some("bytes=30000-"));
}

#[test]
fn corrupt_partial_from_an_earlier_run_is_redownloaded() {
    let body = content(80_000, 45);
    let server = Server::start(vec![("/r", vec![Reply::Body(body.clone())])]);
    let (_dir, cache) = new_cache();
    let digest = Sha256Digest::of(&body);
    fs::write(cache.partial_path(&digest.to_hex()), vec![0u8; 30_000]).unwrap();
    let req = request("r", vec![Source::Http(server.url("/r"))], Some(&body));
    let f = one(fetch_all(vec![req], &cache, &opts(), &Recorder::default()).unwrap());
    assert_eq!(fs::read(&f.path).unwrap(), body);
    let ranges: Vec<_> = server.requests().into_iter().map(|r| r.range).collect();
    assert_eq!(ranges, vec![Some("bytes=30000-".to_owned()), None]);
    assert_eq!(assert_cache_consistent(&cache), 1);
}

#[test]
fn cache_open_creates_layout() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("nested/cache");
    let cache = Cache::open(Some(&root)).unwrap();
    assert_eq!(cache.root(), root);
    assert!(root.join("sha256").is_dir() && root.join("partial").is_dir());
    let d = Sha256Digest::of(b"x");
    assert_eq!(cache.object_path(&d), root.join("sha256").join(d.to_hex()));
    assert!(cache.partial_path("k").starts_with(root.join("partial")));
}

// ---------------------------------------------------------------------------
// Registry sources: an Authorization header, renewed once after a 401, never
// carried to another host.

/// Hands out `Bearer token-N`, N counting renewals.
#[derive(Debug, Default)]
struct Tokens {
    calls: Mutex<Vec<bool>>,
}

impl Endpoint for Tokens {
    fn name(&self) -> String {
        "registry".into()
    }
    fn url(&self, path: &str) -> Result<Url, String> {
        Ok(Url::parse(path).unwrap())
    }
    fn authorization(&self, renew: bool) -> Result<Option<reqwest::header::HeaderValue>, String> {
        let mut calls = self.calls.lock().unwrap();
        calls.push(renew);
        let n = calls.iter().filter(|r| **r).count();
        Ok(Some(format!("Bearer token-{n}").parse().unwrap()))
    }
}

#[test]
fn registry_source_sends_the_authorization_and_renews_it_once_after_a_401() {
    let body = content(5000, 9);
    let server = Server::start(vec![(
        "/v2/app/blobs/x",
        vec![Reply::Status(401), Reply::Body(body.clone())],
    )]);
    let tokens = Arc::new(Tokens::default());
    let (_dir, cache) = new_cache();
    let source = Source::Registry {
        path: server.url("/v2/app/blobs/x").to_string(),
        endpoint: tokens.clone(),
    };
    let got = one(fetch_all(
        vec![request("app", vec![source], Some(&body))],
        &cache,
        &opts(),
        &Recorder::default(),
    )
    .unwrap());
    assert_eq!(fs::read(got.path).unwrap(), body);
    let auths: Vec<_> = server
        .requests()
        .into_iter()
        .map(|r| r.authorization)
        .collect();
    assert_eq!(
        auths,
        [
            Some("Bearer token-0".to_owned()),
            Some("Bearer token-1".to_owned())
        ]
    );
    assert_eq!(*tokens.calls.lock().unwrap(), [false, true]);
}

#[test]
fn registry_source_refused_twice_fails_with_401_and_tries_the_next_source() {
    let body = content(300, 2);
    let refusing = Server::start(vec![("/v2/app/blobs/x", vec![Reply::Status(401)])]);
    let mirror = Server::start(vec![("/v2/app/blobs/x", vec![Reply::Body(body.clone())])]);
    let tokens = Arc::new(Tokens::default());
    let (_dir, cache) = new_cache();
    let sources = vec![
        Source::Registry {
            path: refusing.url("/v2/app/blobs/x").to_string(),
            endpoint: tokens.clone(),
        },
        Source::Registry {
            path: mirror.url("/v2/app/blobs/x").to_string(),
            endpoint: tokens.clone(),
        },
    ];
    let recorder = Recorder::default();
    let got = one(fetch_all(
        vec![request("app", sources, Some(&body))],
        &cache,
        &opts(),
        &recorder,
    )
    .unwrap());
    assert_eq!(
        got.source,
        format!("registry{}", mirror.url("/v2/app/blobs/x"))
    );
    assert_eq!(
        refusing.requests().len(),
        2,
        "one renewal, no retries of a 401"
    );
    let messages = recorder.messages.lock().unwrap().join("\n");
    assert!(messages.contains("401 Unauthorized"), "{messages}");
}

#[test]
fn a_redirect_to_another_host_does_not_carry_the_registry_authorization() {
    let body = content(2048, 5);
    let cdn = Server::start(vec![("/blob", vec![Reply::Body(body.clone())])]);
    let registry = Server::start(vec![(
        "/v2/app/blobs/x",
        vec![Reply::Redirect(cdn.url("/blob").to_string())],
    )]);
    let (_dir, cache) = new_cache();
    let source = Source::Registry {
        path: registry.url("/v2/app/blobs/x").to_string(),
        endpoint: Arc::new(Tokens::default()),
    };
    one(fetch_all(
        vec![request("app", vec![source], Some(&body))],
        &cache,
        &opts(),
        &Recorder::default(),
    )
    .unwrap());
    assert_eq!(
        registry.requests()[0].authorization.as_deref(),
        Some("Bearer token-0")
    );
    let at_cdn = cdn.requests();
    assert_eq!(at_cdn.len(), 1);
    assert_eq!(
        at_cdn[0].authorization, None,
        "the token went to another host"
    );
}
