//! Loopback HTTP/1.1 server that stands in for upstream download sites in tests.
//!
//! The server is hand-written on top of [`std::net::TcpListener`] (one thread per
//! connection) so that tests have byte-level control over faults: connections that
//! break mid-body, servers that stall, lie about `Content-Length`, fail a number of
//! times before succeeding, or deliver slowly.
//!
//! Every response carries `Connection: close`; one request is served per connection.
//!
//! ```no_run
//! use bundle_tests::server::{Behavior, Server};
//!
//! let server = Server::start();
//! server.route("/pool/a.deb", Behavior::BreakAfter { body: vec![7; 4096], after: 100, times: 1 });
//! let url = server.url("/pool/a.deb");
//! // ... point the code under test at `url` ...
//! let log = server.requests("/pool/a.deb");
//! assert_eq!(log[1].range.as_deref(), Some("bytes=100-"));
//! ```
//!
//! # Paths
//!
//! Paths given to [`Server::route`], [`Server::requests`] and [`Server::url`] may be
//! written with or without the leading `/`; a query string (`?...`) is ignored when
//! matching. Request paths are percent-decoded before they are matched against routes
//! (so a route for `/a b` answers `GET /a%20b`), and the same decoding is applied to
//! the argument of [`Server::requests`].

use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Largest request head (request line plus headers) the server accepts.
const MAX_HEAD: usize = 64 * 1024;
/// How long a connection may take to send its request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a single write to a client that does not read may block.
const WRITE_TIMEOUT: Duration = Duration::from_secs(60);
/// Upper bound on how long [`Behavior::Stall`] hangs.
const STALL_LIMIT: Duration = Duration::from_secs(600);
/// Granularity at which sleeping connection threads notice a server shutdown.
const TICK: Duration = Duration::from_millis(50);

/// A running loopback HTTP/1.1 server on `127.0.0.1`.
///
/// Dropping the `Server` stops it: the listening socket is closed (further connects
/// are refused), the listener thread is joined, and connection threads that are
/// sleeping ([`Behavior::Stall`], [`Behavior::Trickle`], [`Behavior::Slow`]) give up
/// within a few tens of milliseconds.
pub struct Server {
    inner: Arc<Inner>,
    addr: SocketAddr,
    listener: Option<JoinHandle<()>>,
}

/// What the server does for requests to one path.
///
/// Unless stated otherwise a behavior answers both `GET` and `HEAD` (a `HEAD` gets the
/// same status and headers as the `GET` would, and no body). Other methods get `405`.
/// Per-path request counters (for `times`) start at zero when the behavior is
/// installed with [`Server::route`].
#[derive(Clone)]
pub enum Behavior {
    /// `200 OK` with `Content-Length`, `Accept-Ranges: bytes` and the body.
    ///
    /// Honours a single `Range: bytes=N-`, `bytes=N-M` or `bytes=-N` with
    /// `206 Partial Content` and `Content-Range`; an unsatisfiable range (start at or
    /// beyond the end) gets `416` with `Content-Range: bytes */LEN`. Malformed or
    /// multi-range headers are ignored (full `200`), as RFC 9110 allows.
    Body(Vec<u8>),
    /// The given status (e.g. 404, 500, 503) with a short `text/plain` body naming it
    /// (no body for 204 and 304).
    Status(u16),
    /// The first `times` `GET` requests get the headers of the (range-adjusted) [`Body`]
    /// response, including its full `Content-Length`, then only `after` bytes of the
    /// (range-adjusted) body, and then the connection is closed. Later requests behave
    /// exactly like [`Behavior::Body`], including `Range`, which proves that a client
    /// resumes. `HEAD` requests are answered like `Body` and do not count.
    ///
    /// [`Body`]: Behavior::Body
    BreakAfter {
        /// The complete resource.
        body: Vec<u8>,
        /// How many body bytes a breaking response delivers before closing.
        after: usize,
        /// How many `GET` requests break.
        times: usize,
    },
    /// The first `times` requests (any method) get `status` with `body`; later requests
    /// behave like [`Behavior::Body`].
    FailTimes {
        /// Status of the failing responses.
        status: u16,
        /// How many requests fail.
        times: usize,
        /// The resource served once the failures are used up. (The failing responses
        /// carry a short text body naming the status.)
        body: Vec<u8>,
    },
    /// Like [`Behavior::Body`] (ranges included) but after the headers and `after`
    /// bytes of the body the server hangs with the connection open, until the client
    /// disconnects, the [`Server`] is dropped, or ten minutes pass. For read-timeout
    /// tests.
    Stall {
        /// The complete resource.
        body: Vec<u8>,
        /// How many body bytes are sent before hanging.
        after: usize,
    },
    /// Like [`Behavior::Body`] (ranges included) but the body is sent at about
    /// `bytes_per_sec` (`0` means unlimited).
    Trickle {
        /// The complete resource.
        body: Vec<u8>,
        /// Delivery rate of the body.
        bytes_per_sec: usize,
    },
    /// `200 OK` declaring `Content-Length: declared` (meant to exceed `body.len()`),
    /// then the whole `body`, then the connection is closed: a truncated response.
    /// `Range` is ignored.
    Short {
        /// The bytes actually sent.
        body: Vec<u8>,
        /// The `Content-Length` announced.
        declared: usize,
    },
    /// `200 OK` with the given `Content-Type` and extra headers (such as
    /// `Content-Encoding: gzip`), `Content-Length` and the whole `body`, as
    /// sent: no encoding is applied, whatever the headers say, and `Range` is
    /// ignored. Stands in for a proxy's error page answered with 200
    /// (`text/html`) and for a server that compresses on the fly.
    Headers {
        /// The `Content-Type` sent.
        content_type: String,
        /// Further headers, in order.
        headers: Vec<(String, String)>,
        /// The bytes sent as the body.
        body: Vec<u8>,
    },
    /// Waits `latency` before responding at all, then behaves like
    /// [`Behavior::Body`] (ranges included) delivering the body at about
    /// `bytes_per_sec` (`0` means unlimited). For benchmarks of parallel downloads.
    Slow {
        /// The complete resource.
        body: Vec<u8>,
        /// Delay between reading the request and sending the status line.
        latency: Duration,
        /// Delivery rate of the body.
        bytes_per_sec: usize,
    },
}

/// One request as the server received it, recorded before it was answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Request method, e.g. `GET` or `HEAD`.
    pub method: String,
    /// The request target exactly as sent, e.g. `/pool/a%2Bb.deb?x=1`.
    pub target: String,
    /// The percent-decoded path without query string, e.g. `/pool/a+b.deb`.
    pub path: String,
    /// The value of the `Range` header, if any, e.g. `bytes=100-`.
    pub range: Option<String>,
    /// All request headers in order, names as sent.
    pub headers: Vec<(String, String)>,
}

impl Request {
    /// The value of the first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

struct Inner {
    shutdown: AtomicBool,
    routes: Mutex<HashMap<String, Route>>,
    log: Mutex<HashMap<String, Vec<Request>>>,
    dir: Option<PathBuf>,
}

struct Route {
    behavior: Arc<Behavior>,
    /// Requests counted so far for the `times` of the behavior.
    hits: usize,
}

impl Server {
    /// Starts a server on `127.0.0.1` with an ephemeral port and no routes: every
    /// request gets `404` until [`Server::route`] installs a behavior.
    ///
    /// # Panics
    ///
    /// If the socket cannot be bound or the listener thread cannot be spawned.
    pub fn start() -> Server {
        Server::with_dir(None)
    }

    /// Starts a server that answers `GET /REL` (and `HEAD`) with the file `DIR/REL`
    /// as a [`Behavior::Body`] (ranges included; the file is streamed, not loaded).
    ///
    /// Paths containing a `..` segment are refused with `403`; anything that is not
    /// a regular file (after following symlinks) gets `404`. The raw request path is
    /// tried first, then its percent-decoding, so both a file literally named
    /// `a%3a1.deb` and a file named `a:1.deb` requested as `a%3a1.deb` are found.
    /// Behaviors installed with [`Server::route`] take precedence over files.
    ///
    /// # Panics
    ///
    /// Like [`Server::start`].
    pub fn serve_dir(dir: &Path) -> Server {
        Server::with_dir(Some(dir.to_path_buf()))
    }

    fn with_dir(dir: Option<PathBuf>) -> Server {
        let listener = TcpListener::bind(("127.0.0.1", 0)).expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local address of listener");
        let inner = Arc::new(Inner {
            shutdown: AtomicBool::new(false),
            routes: Mutex::new(HashMap::new()),
            log: Mutex::new(HashMap::new()),
            dir,
        });
        let thread_inner = Arc::clone(&inner);
        let handle = thread::Builder::new()
            .name(format!("test-server-{}", addr.port()))
            .spawn(move || accept_loop(&listener, &thread_inner))
            .expect("spawn listener thread");
        Server {
            inner,
            addr,
            listener: Some(handle),
        }
    }

    /// The socket address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL without trailing slash: `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.addr.port())
    }

    /// The URL of `path`: `http://127.0.0.1:PORT/path` (a leading `/` in `path` is
    /// optional). `path` is not percent-encoded.
    pub fn url(&self, path: &str) -> String {
        format!("{}/{}", self.base_url(), path.trim_start_matches('/'))
    }

    /// Installs (or replaces) the behavior for `path` and resets its request counter.
    /// The request log of the path is kept.
    pub fn route(&self, path: &str, behavior: Behavior) {
        lock(&self.inner.routes).insert(
            route_key(path),
            Route {
                behavior: Arc::new(behavior),
                hits: 0,
            },
        );
    }

    /// All requests received so far for `path`, oldest first (including requests
    /// that got `404`).
    pub fn requests(&self, path: &str) -> Vec<Request> {
        lock(&self.inner.log)
            .get(&route_key(path))
            .cloned()
            .unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.inner.shutdown.store(true, Ordering::SeqCst);
        // Wake the listener blocked in accept(); it sees the flag and returns, which
        // closes the listening socket.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(handle) = self.listener.take() {
            let _ = handle.join();
        }
    }
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("addr", &self.addr)
            .field("dir", &self.inner.dir)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for Behavior {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        /// Bodies are shown by length only; they can be megabytes.
        struct Len(usize);
        impl fmt::Debug for Len {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "<{} bytes>", self.0)
            }
        }
        match self {
            Behavior::Body(body) => f.debug_tuple("Body").field(&Len(body.len())).finish(),
            Behavior::Status(code) => f.debug_tuple("Status").field(code).finish(),
            Behavior::BreakAfter { body, after, times } => f
                .debug_struct("BreakAfter")
                .field("body", &Len(body.len()))
                .field("after", after)
                .field("times", times)
                .finish(),
            Behavior::FailTimes {
                status,
                times,
                body,
            } => f
                .debug_struct("FailTimes")
                .field("status", status)
                .field("times", times)
                .field("body", &Len(body.len()))
                .finish(),
            Behavior::Stall { body, after } => f
                .debug_struct("Stall")
                .field("body", &Len(body.len()))
                .field("after", after)
                .finish(),
            Behavior::Trickle {
                body,
                bytes_per_sec,
            } => f
                .debug_struct("Trickle")
                .field("body", &Len(body.len()))
                .field("bytes_per_sec", bytes_per_sec)
                .finish(),
            Behavior::Short { body, declared } => f
                .debug_struct("Short")
                .field("body", &Len(body.len()))
                .field("declared", declared)
                .finish(),
            Behavior::Headers {
                content_type,
                headers,
                body,
            } => f
                .debug_struct("Headers")
                .field("content_type", content_type)
                .field("headers", headers)
                .field("body", &Len(body.len()))
                .finish(),
            Behavior::Slow {
                body,
                latency,
                bytes_per_sec,
            } => f
                .debug_struct("Slow")
                .field("body", &Len(body.len()))
                .field("latency", latency)
                .field("bytes_per_sec", bytes_per_sec)
                .finish(),
        }
    }
}

/// Locks a mutex, ignoring poisoning (a panicking connection thread must not take
/// the whole server down).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Normalised key for routes and the request log: percent-decoded path with a
/// leading `/` and without query string or fragment.
fn route_key(path: &str) -> String {
    let path = path.split(['?', '#']).next().unwrap_or("");
    let decoded = String::from_utf8_lossy(&percent_decode(path)).into_owned();
    if decoded.starts_with('/') {
        decoded
    } else {
        format!("/{decoded}")
    }
}

fn percent_decode(s: &str) -> Vec<u8> {
    fn hex(b: u8) -> Option<u8> {
        match b {
            b'0'..=b'9' => Some(b - b'0'),
            b'a'..=b'f' => Some(b - b'a' + 10),
            b'A'..=b'F' => Some(b - b'A' + 10),
            _ => None,
        }
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let (Some(hi), Some(lo)) = (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            )
        {
            out.push(hi << 4 | lo);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

fn accept_loop(listener: &TcpListener, inner: &Arc<Inner>) {
    loop {
        let accepted = listener.accept();
        if inner.shutdown.load(Ordering::SeqCst) {
            return;
        }
        match accepted {
            Ok((stream, _)) => {
                let inner = Arc::clone(inner);
                // If spawning fails the stream is dropped, i.e. the connection closed.
                let _ = thread::Builder::new()
                    .name("test-server-conn".into())
                    .spawn(move || handle_connection(stream, &inner));
            }
            // E.g. EMFILE or ECONNABORTED: back off briefly and keep serving.
            Err(_) => thread::sleep(Duration::from_millis(10)),
        }
    }
}

fn handle_connection(mut stream: TcpStream, inner: &Inner) {
    let _ = stream.set_nodelay(true);
    let _ = stream.set_read_timeout(Some(HEAD_TIMEOUT));
    let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
    // Errors mean the client went away or misbehaved; either way the connection is
    // finished. Nothing here may panic.
    let _ = serve_one(&mut stream, inner);
    close_gracefully(&stream);
}

/// Half-closes the connection and drains what the client still sends, so that the
/// kernel does not answer unread input with a RST that could destroy response bytes
/// the client has not read yet.
fn close_gracefully(stream: &TcpStream) {
    let _ = stream.shutdown(Shutdown::Write);
    let deadline = Instant::now() + Duration::from_secs(2);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    let mut buf = [0u8; 4096];
    let mut reader = stream;
    while Instant::now() < deadline {
        match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if is_timeout(&e) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// Outcome of reading a request head.
enum Head {
    Parsed(Request),
    /// The client sent something unusable; answer with this status.
    Bad(u16),
    /// The client closed the connection before sending a request.
    Closed,
}

fn read_request(stream: &mut TcpStream) -> io::Result<Head> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(end) = find_head_end(&buf) {
            break end;
        }
        if buf.len() > MAX_HEAD {
            return Ok(Head::Bad(431));
        }
        let n = match stream.read(&mut chunk) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if n == 0 {
            return Ok(if buf.iter().all(u8::is_ascii_whitespace) {
                Head::Closed
            } else {
                Head::Bad(400)
            });
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let (head, rest) = buf.split_at(head_end.0);
    let rest = &rest[head_end.1..];
    let Ok(head) = std::str::from_utf8(head) else {
        return Ok(Head::Bad(400));
    };
    // Tolerate (RFC 9112 §2.2) empty lines before the request line.
    let mut lines = head
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .skip_while(|l| l.is_empty());
    let Some(request_line) = lines.next() else {
        return Ok(Head::Bad(400));
    };
    let mut parts = request_line.split_ascii_whitespace();
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Ok(Head::Bad(400));
    };
    if !version.starts_with("HTTP/1.") {
        return Ok(Head::Bad(505));
    }
    let mut headers = Vec::new();
    for line in lines {
        if line.is_empty() {
            continue;
        }
        let Some((name, value)) = line.split_once(':') else {
            return Ok(Head::Bad(400));
        };
        headers.push((name.trim().to_string(), value.trim().to_string()));
    }
    let mut request = Request {
        method: method.to_string(),
        target: target.to_string(),
        path: route_key(target_path(target)),
        range: None,
        headers,
    };
    request.range = request.header("range").map(str::to_string);
    // Discard a request body if one was announced (we never use it).
    if let Some(len) = request
        .header("content-length")
        .and_then(|v| v.parse::<u64>().ok())
    {
        let remaining = len.saturating_sub(rest.len() as u64).min(1 << 20);
        let _ = io::copy(&mut Read::by_ref(stream).take(remaining), &mut io::sink());
    }
    Ok(Head::Parsed(request))
}

/// The path part of a request target; absolute-form targets (as sent to proxies)
/// lose their scheme and authority.
fn target_path(target: &str) -> &str {
    if target.starts_with('/') {
        return target;
    }
    match target.split_once("://") {
        Some((_, after_scheme)) => after_scheme.find('/').map_or("/", |i| &after_scheme[i..]),
        None => target,
    }
}

/// Finds the end of the head: (index of the blank line, length of the terminator).
fn find_head_end(buf: &[u8]) -> Option<(usize, usize)> {
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n");
    let lf = buf.windows(2).position(|w| w == b"\n\n");
    match (crlf, lf) {
        (Some(c), Some(l)) if l < c => Some((l, 2)),
        (Some(c), _) => Some((c, 4)),
        (None, Some(l)) => Some((l, 2)),
        (None, None) => None,
    }
}

fn serve_one(stream: &mut TcpStream, inner: &Inner) -> io::Result<()> {
    let request = match read_request(stream)? {
        Head::Parsed(r) => r,
        Head::Bad(code) => return send_status(stream, code, false),
        Head::Closed => return Ok(()),
    };
    lock(&inner.log)
        .entry(request.path.clone())
        .or_default()
        .push(request.clone());

    let head_only = request.method == "HEAD";
    if !head_only && request.method != "GET" {
        let body = b"405 Method Not Allowed\n";
        send_head(
            stream,
            405,
            &[
                ("Allow", "GET, HEAD".into()),
                ("Content-Type", "text/plain".into()),
                ("Content-Length", body.len().to_string()),
            ],
        )?;
        return stream.write_all(body);
    }

    // Pick the behavior and count the request under one lock, so that concurrent
    // requests each see a distinct count.
    let routed = {
        let mut routes = lock(&inner.routes);
        routes.get_mut(&request.path).map(|route| {
            let n = route.hits;
            let counts = match *route.behavior {
                Behavior::BreakAfter { .. } => !head_only,
                _ => true,
            };
            if counts {
                route.hits += 1;
            }
            (Arc::clone(&route.behavior), n)
        })
    };
    let ctx = Ctx {
        inner,
        range: request.range.as_deref(),
        head_only,
    };
    if let Some((behavior, n)) = routed {
        return serve_behavior(stream, &ctx, &behavior, n);
    }
    if let Some(dir) = &inner.dir {
        return serve_file(stream, &ctx, dir, &request);
    }
    send_status(stream, 404, head_only)
}

/// Per-request context for writing a response.
struct Ctx<'a> {
    inner: &'a Inner,
    range: Option<&'a str>,
    head_only: bool,
}

/// How to deliver a body.
#[derive(Default)]
struct Delivery {
    /// Send at most this many body bytes.
    limit: Option<usize>,
    /// Bytes per second, 0 = unlimited.
    rate: usize,
    /// Hang after sending.
    stall: bool,
}

fn serve_behavior(
    stream: &mut TcpStream,
    ctx: &Ctx<'_>,
    behavior: &Behavior,
    n: usize,
) -> io::Result<()> {
    match behavior {
        Behavior::Body(body) => {
            serve_body(stream, ctx, &mut Source::Mem(body), Delivery::default())
        }
        Behavior::Status(code) => send_status(stream, *code, ctx.head_only),
        Behavior::BreakAfter { body, after, times } => {
            let limit = (n < *times && !ctx.head_only).then_some(*after);
            let delivery = Delivery {
                limit,
                ..Delivery::default()
            };
            serve_body(stream, ctx, &mut Source::Mem(body), delivery)
        }
        Behavior::FailTimes {
            status,
            times,
            body,
        } => {
            if n < *times {
                send_status(stream, *status, ctx.head_only)
            } else {
                serve_body(stream, ctx, &mut Source::Mem(body), Delivery::default())
            }
        }
        Behavior::Stall { body, after } => {
            let delivery = Delivery {
                limit: Some(*after),
                stall: true,
                ..Delivery::default()
            };
            serve_body(stream, ctx, &mut Source::Mem(body), delivery)
        }
        Behavior::Trickle {
            body,
            bytes_per_sec,
        } => {
            let delivery = Delivery {
                rate: *bytes_per_sec,
                ..Delivery::default()
            };
            serve_body(stream, ctx, &mut Source::Mem(body), delivery)
        }
        Behavior::Short { body, declared } => {
            send_head(
                stream,
                200,
                &[
                    ("Content-Type", "application/octet-stream".into()),
                    ("Content-Length", declared.to_string()),
                ],
            )?;
            if ctx.head_only {
                return Ok(());
            }
            stream.write_all(body)
        }
        Behavior::Headers {
            content_type,
            headers,
            body,
        } => {
            let mut head: Vec<(&str, String)> = vec![
                ("Content-Type", content_type.clone()),
                ("Content-Length", body.len().to_string()),
            ];
            head.extend(headers.iter().map(|(k, v)| (k.as_str(), v.clone())));
            send_head(stream, 200, &head)?;
            if ctx.head_only {
                return Ok(());
            }
            stream.write_all(body)
        }
        Behavior::Slow {
            body,
            latency,
            bytes_per_sec,
        } => {
            if !sleep_unless_shutdown(ctx.inner, *latency) {
                return Ok(());
            }
            let delivery = Delivery {
                rate: *bytes_per_sec,
                ..Delivery::default()
            };
            serve_body(stream, ctx, &mut Source::Mem(body), delivery)
        }
    }
}

fn serve_file(
    stream: &mut TcpStream,
    ctx: &Ctx<'_>,
    dir: &Path,
    request: &Request,
) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;

    let raw = target_path(&request.target);
    let raw = raw.split(['?', '#']).next().unwrap_or("");
    let mut candidates = vec![raw.as_bytes().to_vec()];
    let decoded = percent_decode(raw);
    if decoded != candidates[0] {
        candidates.push(decoded);
    }
    for candidate in &candidates {
        let mut path = dir.to_path_buf();
        for segment in candidate.split(|&b| b == b'/') {
            match segment {
                b"" | b"." => {}
                b".." => return send_status(stream, 403, ctx.head_only),
                s => path.push(std::ffi::OsStr::from_bytes(s)),
            }
        }
        let Ok(mut file) = File::open(&path) else {
            continue;
        };
        let Ok(meta) = file.metadata() else {
            continue;
        };
        if !meta.is_file() {
            continue;
        }
        return serve_body(
            stream,
            ctx,
            &mut Source::File(&mut file, meta.len()),
            Delivery::default(),
        );
    }
    send_status(stream, 404, ctx.head_only)
}

/// A body to serve: bytes in memory or a file streamed from disk.
enum Source<'a> {
    Mem(&'a [u8]),
    File(&'a mut File, u64),
}

impl Source<'_> {
    fn len(&self) -> u64 {
        match self {
            Source::Mem(b) => b.len() as u64,
            Source::File(_, len) => *len,
        }
    }
}

/// Result of interpreting a `Range` header against a resource length.
#[derive(Debug, PartialEq, Eq)]
enum RangeSpec {
    /// Serve everything (no header, malformed, or multiple ranges).
    Full,
    /// Serve `start..=end`.
    Partial(u64, u64),
    /// `416 Range Not Satisfiable`.
    Unsatisfiable,
}

fn resolve_range(header: Option<&str>, len: u64) -> RangeSpec {
    let Some(header) = header else {
        return RangeSpec::Full;
    };
    let header = header.trim();
    let Some((unit, spec)) = header.split_once('=') else {
        return RangeSpec::Full;
    };
    if !unit.trim().eq_ignore_ascii_case("bytes") || spec.contains(',') {
        return RangeSpec::Full;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangeSpec::Full;
    };
    let (first, last) = (first.trim(), last.trim());
    if first.is_empty() {
        // Suffix range: the last N bytes.
        let Ok(n) = last.parse::<u64>() else {
            return RangeSpec::Full;
        };
        if n == 0 || len == 0 {
            return RangeSpec::Unsatisfiable;
        }
        return RangeSpec::Partial(len.saturating_sub(n), len - 1);
    }
    let Ok(start) = first.parse::<u64>() else {
        return RangeSpec::Full;
    };
    let end = if last.is_empty() {
        u64::MAX
    } else {
        match last.parse::<u64>() {
            Ok(end) if end >= start => end,
            _ => return RangeSpec::Full,
        }
    };
    if start >= len {
        return RangeSpec::Unsatisfiable;
    }
    RangeSpec::Partial(start, end.min(len - 1))
}

fn serve_body(
    stream: &mut TcpStream,
    ctx: &Ctx<'_>,
    source: &mut Source<'_>,
    delivery: Delivery,
) -> io::Result<()> {
    let len = source.len();
    let (status, start, count, content_range) = match resolve_range(ctx.range, len) {
        RangeSpec::Full => (200, 0, len, None),
        RangeSpec::Partial(start, end) => (
            206,
            start,
            end - start + 1,
            Some(format!("bytes {start}-{end}/{len}")),
        ),
        RangeSpec::Unsatisfiable => {
            send_head(
                stream,
                416,
                &[
                    ("Content-Range", format!("bytes */{len}")),
                    ("Content-Length", "0".into()),
                ],
            )?;
            return Ok(());
        }
    };
    let mut headers = vec![
        ("Content-Type", "application/octet-stream".to_string()),
        ("Accept-Ranges", "bytes".to_string()),
        ("Content-Length", count.to_string()),
    ];
    if let Some(cr) = content_range {
        headers.push(("Content-Range", cr));
    }
    send_head(stream, status, &headers)?;
    if ctx.head_only {
        return Ok(());
    }
    let send = match delivery.limit {
        Some(limit) => count.min(limit as u64),
        None => count,
    };
    write_range(stream, ctx.inner, source, start, send, delivery.rate)?;
    if delivery.stall {
        stall(stream, ctx.inner);
    }
    Ok(())
}

/// Writes `count` bytes of `source` starting at `start`, at about `rate` bytes per
/// second (0 = unlimited).
fn write_range(
    stream: &mut TcpStream,
    inner: &Inner,
    source: &mut Source<'_>,
    start: u64,
    count: u64,
    rate: usize,
) -> io::Result<()> {
    let chunk_size = if rate == 0 {
        64 * 1024
    } else {
        (rate / 20).clamp(1, 64 * 1024)
    };
    let mut buf = vec![0u8; chunk_size];
    if let Source::File(file, _) = source {
        file.seek(SeekFrom::Start(start))?;
    }
    let began = Instant::now();
    let mut sent: u64 = 0;
    while sent < count {
        let want = (count - sent).min(chunk_size as u64) as usize;
        let chunk: &[u8] = match source {
            Source::Mem(bytes) => {
                let from = (start + sent) as usize;
                &bytes[from..from + want]
            }
            Source::File(file, _) => {
                file.read_exact(&mut buf[..want])?;
                &buf[..want]
            }
        };
        stream.write_all(chunk)?;
        sent += want as u64;
        if rate != 0 && sent < count {
            let due = Duration::from_secs_f64(sent as f64 / rate as f64);
            if let Some(wait) = due.checked_sub(began.elapsed())
                && !sleep_unless_shutdown(inner, wait)
            {
                return Err(io::Error::other("server shut down"));
            }
        }
        if inner.shutdown.load(Ordering::SeqCst) {
            return Err(io::Error::other("server shut down"));
        }
    }
    stream.flush()
}

/// Keeps the connection open without sending anything until the client disconnects,
/// the server shuts down, or [`STALL_LIMIT`] passes.
fn stall(stream: &mut TcpStream, inner: &Inner) {
    let _ = stream.flush();
    let deadline = Instant::now() + STALL_LIMIT;
    let _ = stream.set_read_timeout(Some(TICK));
    let mut buf = [0u8; 1024];
    while Instant::now() < deadline && !inner.shutdown.load(Ordering::SeqCst) {
        match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if is_timeout(&e) || e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

/// Sleeps for `total`, waking early if the server shuts down. Returns `false` if it
/// did.
fn sleep_unless_shutdown(inner: &Inner, total: Duration) -> bool {
    let deadline = Instant::now() + total;
    loop {
        if inner.shutdown.load(Ordering::SeqCst) {
            return false;
        }
        let now = Instant::now();
        if now >= deadline {
            return true;
        }
        thread::sleep((deadline - now).min(TICK));
    }
}

fn send_status(stream: &mut TcpStream, code: u16, head_only: bool) -> io::Result<()> {
    if code == 204 || code == 304 {
        return send_head(stream, code, &[]);
    }
    let body = format!("{code} {}\n", reason(code));
    send_head(
        stream,
        code,
        &[
            ("Content-Type", "text/plain; charset=utf-8".into()),
            ("Content-Length", body.len().to_string()),
        ],
    )?;
    if head_only {
        return Ok(());
    }
    stream.write_all(body.as_bytes())
}

fn send_head(stream: &mut TcpStream, code: u16, headers: &[(&str, String)]) -> io::Result<()> {
    let mut head = format!("HTTP/1.1 {code} {}\r\n", reason(code));
    for (name, value) in headers {
        head.push_str(name);
        head.push_str(": ");
        head.push_str(value);
        head.push_str("\r\n");
    }
    head.push_str("Server: bundle-tests\r\nConnection: close\r\n\r\n");
    stream.write_all(head.as_bytes())?;
    stream.flush()
}

fn reason(code: u16) -> &'static str {
    match code {
        200 => "OK",
        204 => "No Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        410 => "Gone",
        416 => "Range Not Satisfiable",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "Status",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        use RangeSpec::*;
        assert_eq!(resolve_range(None, 10), Full);
        assert_eq!(resolve_range(Some("bytes=0-"), 10), Partial(0, 9));
        assert_eq!(resolve_range(Some("bytes=3-"), 10), Partial(3, 9));
        assert_eq!(resolve_range(Some("bytes=3-5"), 10), Partial(3, 5));
        assert_eq!(resolve_range(Some("bytes=3-50"), 10), Partial(3, 9));
        assert_eq!(resolve_range(Some("bytes=-4"), 10), Partial(6, 9));
        assert_eq!(resolve_range(Some("bytes=-40"), 10), Partial(0, 9));
        assert_eq!(resolve_range(Some("bytes=10-"), 10), Unsatisfiable);
        assert_eq!(resolve_range(Some("bytes=0-"), 0), Unsatisfiable);
        assert_eq!(resolve_range(Some("bytes=5-3"), 10), Full);
        assert_eq!(resolve_range(Some("bytes=0-1,3-4"), 10), Full);
        assert_eq!(resolve_range(Some("items=0-1"), 10), Full);
        assert_eq!(resolve_range(Some("bytes=x-"), 10), Full);
    }

    #[test]
    fn keys() {
        assert_eq!(route_key("a/b"), "/a/b");
        assert_eq!(route_key("/a%20b?x=1"), "/a b");
        assert_eq!(route_key("/x%3a1%zz"), "/x:1%zz");
        assert_eq!(route_key(""), "/");
    }

    #[test]
    fn head_end() {
        assert_eq!(find_head_end(b"GET / HTTP/1.1\r\n\r\nrest"), Some((14, 4)));
        assert_eq!(find_head_end(b"GET / HTTP/1.1\n\n"), Some((14, 2)));
        assert_eq!(find_head_end(b"GET / HTTP/1.1\r\n"), None);
    }
}
