//! Self-tests of the test support: every server behavior, checked with a plain
//! `TcpStream` client, plus the tree hashes and the `serve` binary.

use std::collections::BTreeMap;
use std::fs;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use bundle_tests::server::{Behavior, Server};
use bundle_tests::tree::{ABSENT, diff_listings, tree_hash, tree_listing};

/// A parsed response, read until the server closed the connection.
#[derive(Debug)]
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn content_length(&self) -> usize {
        self.header("content-length").unwrap().parse().unwrap()
    }
}

fn connect(server: &Server) -> TcpStream {
    let stream = TcpStream::connect(server.addr()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    stream
}

fn send(stream: &mut TcpStream, method: &str, path: &str, headers: &[(&str, &str)]) {
    let mut req =
        format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: selftest\r\n");
    for (name, value) in headers {
        req.push_str(&format!("{name}: {value}\r\n"));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes()).unwrap();
}

fn parse(raw: &[u8]) -> Response {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of head in {:?}", String::from_utf8_lossy(raw)));
    let head = std::str::from_utf8(&raw[..end]).unwrap();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let mut parts = status_line.splitn(3, ' ');
    assert_eq!(parts.next(), Some("HTTP/1.1"));
    let status = parts.next().unwrap().parse().unwrap();
    let headers = lines
        .map(|l| {
            let (n, v) = l.split_once(':').unwrap();
            (n.trim().to_string(), v.trim().to_string())
        })
        .collect();
    Response {
        status,
        headers,
        body: raw[end + 4..].to_vec(),
    }
}

/// Sends one request and reads the whole response until EOF.
fn request(server: &Server, method: &str, path: &str, headers: &[(&str, &str)]) -> Response {
    let mut stream = connect(server);
    send(&mut stream, method, path, headers);
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let response = parse(&raw);
    assert_eq!(response.header("connection"), Some("close"));
    response
}

fn get(server: &Server, path: &str) -> Response {
    request(server, "GET", path, &[])
}

fn get_range(server: &Server, path: &str, range: &str) -> Response {
    request(server, "GET", path, &[("Range", range)])
}

fn data(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 % 251) as u8).collect()
}

#[test]
fn url_formatting() {
    let server = Server::start();
    let port = server.addr().port();
    assert_eq!(server.url("/a/b"), format!("http://127.0.0.1:{port}/a/b"));
    assert_eq!(server.url("a/b"), format!("http://127.0.0.1:{port}/a/b"));
    assert_eq!(server.base_url(), format!("http://127.0.0.1:{port}"));
}

#[test]
fn body_get_and_head() {
    let server = Server::start();
    let body = data(1000);
    server.route("/f", Behavior::Body(body.clone()));

    let r = get(&server, "/f");
    assert_eq!(r.status, 200);
    assert_eq!(r.content_length(), 1000);
    assert_eq!(r.header("accept-ranges"), Some("bytes"));
    assert_eq!(r.body, body);

    let r = request(&server, "HEAD", "/f", &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.content_length(), 1000);
    assert!(r.body.is_empty());

    // Query strings are ignored for matching; the log keeps the raw target.
    let r = get(&server, "/f?x=1");
    assert_eq!(r.body, body);

    let log = server.requests("/f");
    let methods: Vec<&str> = log.iter().map(|r| r.method.as_str()).collect();
    assert_eq!(methods, ["GET", "HEAD", "GET"]);
    assert_eq!(log[2].target, "/f?x=1");
    assert_eq!(log[0].header("user-agent"), Some("selftest"));
    assert!(log.iter().all(|r| r.range.is_none()));
    assert_eq!(server.requests("f").len(), 3, "leading slash is optional");
}

#[test]
fn range_requests() {
    let server = Server::start();
    let body = data(100);
    server.route("/f", Behavior::Body(body.clone()));

    let r = get_range(&server, "/f", "bytes=10-");
    assert_eq!(r.status, 206);
    assert_eq!(r.header("content-range"), Some("bytes 10-99/100"));
    assert_eq!(r.content_length(), 90);
    assert_eq!(r.body, &body[10..]);

    let r = get_range(&server, "/f", "bytes=10-19");
    assert_eq!(r.status, 206);
    assert_eq!(r.header("content-range"), Some("bytes 10-19/100"));
    assert_eq!(r.body, &body[10..20]);

    let r = get_range(&server, "/f", "bytes=90-1000");
    assert_eq!(r.status, 206);
    assert_eq!(r.header("content-range"), Some("bytes 90-99/100"));
    assert_eq!(r.body, &body[90..]);

    let r = get_range(&server, "/f", "bytes=-5");
    assert_eq!(r.status, 206);
    assert_eq!(r.body, &body[95..]);

    let r = get_range(&server, "/f", "bytes=100-");
    assert_eq!(r.status, 416);
    assert_eq!(r.header("content-range"), Some("bytes */100"));
    assert!(r.body.is_empty());

    // Malformed and multi-range headers are ignored.
    for range in ["bytes=20-10", "bytes=a-", "bytes=0-1,5-6", "lines=1-2"] {
        let r = get_range(&server, "/f", range);
        assert_eq!(r.status, 200, "{range}");
        assert_eq!(r.body, body, "{range}");
    }

    let r = request(&server, "HEAD", "/f", &[("Range", "bytes=40-")]);
    assert_eq!(r.status, 206);
    assert_eq!(r.content_length(), 60);
    assert!(r.body.is_empty());

    let ranges: Vec<Option<String>> = server.requests("/f").into_iter().map(|r| r.range).collect();
    assert_eq!(ranges[0].as_deref(), Some("bytes=10-"));
    assert_eq!(ranges[4].as_deref(), Some("bytes=100-"));
}

#[test]
fn break_after_closes_early_then_serves_ranges() {
    let server = Server::start();
    let body = data(1000);
    server.route(
        "/f",
        Behavior::BreakAfter {
            body: body.clone(),
            after: 100,
            times: 2,
        },
    );

    // HEAD is answered normally and does not use up a break.
    let r = request(&server, "HEAD", "/f", &[]);
    assert_eq!((r.status, r.content_length()), (200, 1000));

    // First GET: full length announced, 100 bytes delivered, connection closed.
    let r = get(&server, "/f");
    assert_eq!(r.status, 200);
    assert_eq!(r.content_length(), 1000);
    assert_eq!(r.body, &body[..100]);

    // Second GET resumes but breaks again 100 bytes into the range.
    let r = get_range(&server, "/f", "bytes=100-");
    assert_eq!(r.status, 206);
    assert_eq!(r.content_length(), 900);
    assert_eq!(r.header("content-range"), Some("bytes 100-999/1000"));
    assert_eq!(r.body, &body[100..200]);

    // Third GET: breaks are used up; the range is served completely.
    let r = get_range(&server, "/f", "bytes=200-");
    assert_eq!(r.status, 206);
    assert_eq!(r.body, &body[200..]);

    let r = get(&server, "/f");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, body);

    let log = server.requests("/f");
    let summary: Vec<(&str, Option<&str>)> = log
        .iter()
        .map(|r| (r.method.as_str(), r.range.as_deref()))
        .collect();
    assert_eq!(
        summary,
        [
            ("HEAD", None),
            ("GET", None),
            ("GET", Some("bytes=100-")),
            ("GET", Some("bytes=200-")),
            ("GET", None),
        ]
    );
}

#[test]
fn fail_times_then_body() {
    let server = Server::start();
    let body = b"finally".to_vec();
    server.route(
        "/f",
        Behavior::FailTimes {
            status: 503,
            times: 2,
            body: body.clone(),
        },
    );
    let r = get(&server, "/f");
    assert_eq!(r.status, 503);
    assert_eq!(r.body, b"503 Service Unavailable\n");
    let r = request(&server, "HEAD", "/f", &[]);
    assert_eq!(r.status, 503, "HEAD counts as a request");
    assert!(r.body.is_empty());
    let r = get(&server, "/f");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, body);
    let r = get_range(&server, "/f", "bytes=3-");
    assert_eq!(r.status, 206);
    assert_eq!(r.body, b"ally");
}

#[test]
fn route_replacement_resets_counter() {
    let server = Server::start();
    let fail = || Behavior::FailTimes {
        status: 500,
        times: 1,
        body: b"ok".to_vec(),
    };
    server.route("/f", fail());
    assert_eq!(get(&server, "/f").status, 500);
    assert_eq!(get(&server, "/f").status, 200);
    server.route("/f", fail());
    assert_eq!(get(&server, "/f").status, 500);
    server.route("/f", Behavior::Status(410));
    assert_eq!(get(&server, "/f").status, 410);
    assert_eq!(
        server.requests("/f").len(),
        4,
        "the log survives re-routing"
    );
}

#[test]
fn status_and_unknown_paths() {
    let server = Server::start();
    for code in [404u16, 500, 503] {
        server.route("/s", Behavior::Status(code));
        let r = get(&server, "/s");
        assert_eq!(r.status, code);
        assert!(r.body.starts_with(code.to_string().as_bytes()));
        assert_eq!(r.content_length(), r.body.len());
    }
    let r = get(&server, "/nothing/here");
    assert_eq!(r.status, 404);
    assert_eq!(server.requests("/nothing/here").len(), 1);

    server.route("/f", Behavior::Body(b"x".to_vec()));
    let mut stream = connect(&server);
    send(&mut stream, "POST", "/f", &[("Content-Length", "3")]);
    stream.write_all(b"abc").unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let r = parse(&raw);
    assert_eq!(r.status, 405);
}

#[test]
fn short_body_declares_more_than_it_sends() {
    let server = Server::start();
    server.route(
        "/f",
        Behavior::Short {
            body: data(50),
            declared: 200,
        },
    );
    let r = get(&server, "/f");
    assert_eq!(r.status, 200);
    assert_eq!(r.content_length(), 200);
    assert_eq!(r.body, data(50));
}

#[test]
fn stall_hangs_after_some_bytes() {
    let server = Server::start();
    server.route(
        "/f",
        Behavior::Stall {
            body: data(1000),
            after: 10,
        },
    );
    let mut stream = connect(&server);
    stream
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    send(&mut stream, "GET", "/f", &[]);
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    let err = loop {
        match stream.read(&mut buf) {
            Ok(0) => panic!("server closed a stalled connection"),
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) => break e,
        }
    };
    assert!(matches!(
        err.kind(),
        ErrorKind::WouldBlock | ErrorKind::TimedOut
    ));
    let r = parse(&raw);
    assert_eq!(r.content_length(), 1000);
    assert_eq!(r.body, &data(1000)[..10]);

    // Dropping the server releases the stalled connection promptly.
    let started = Instant::now();
    drop(server);
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    assert_eq!(stream.read(&mut buf).unwrap(), 0);
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[test]
fn trickle_is_rate_limited() {
    let server = Server::start();
    let body = data(2000);
    server.route(
        "/f",
        Behavior::Trickle {
            body: body.clone(),
            bytes_per_sec: 4000,
        },
    );
    let started = Instant::now();
    let r = get(&server, "/f");
    let elapsed = started.elapsed();
    assert_eq!(r.body, body);
    assert!(elapsed >= Duration::from_millis(400), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");

    let r = get_range(&server, "/f", "bytes=1990-");
    assert_eq!(r.status, 206);
    assert_eq!(r.body, &body[1990..]);
}

#[test]
fn slow_requests_run_in_parallel() {
    let server = Server::start();
    let body = data(1000);
    server.route(
        "/f",
        Behavior::Slow {
            body: body.clone(),
            latency: Duration::from_millis(400),
            bytes_per_sec: 0,
        },
    );
    let started = Instant::now();
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..4).map(|_| s.spawn(|| get(&server, "/f"))).collect();
        for h in handles {
            assert_eq!(h.join().unwrap().body, body);
        }
    });
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(400), "{elapsed:?}");
    assert!(
        elapsed < Duration::from_millis(1500),
        "not parallel: {elapsed:?}"
    );

    server.route(
        "/g",
        Behavior::Slow {
            body: body.clone(),
            latency: Duration::ZERO,
            bytes_per_sec: 2000,
        },
    );
    let started = Instant::now();
    assert_eq!(get(&server, "/g").body, body);
    assert!(started.elapsed() >= Duration::from_millis(400));
}

#[test]
fn misbehaving_clients_do_not_break_the_server() {
    let server = Server::start();
    server.route("/f", Behavior::Body(data(4 << 20)));

    // Connect and leave without a word.
    drop(connect(&server));
    // Half a request line.
    let mut s = connect(&server);
    s.write_all(b"GET /f HT").unwrap();
    drop(s);
    // Garbage.
    let mut s = connect(&server);
    s.write_all(b"\x00\x01\x02 nonsense\r\n\r\n").unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    assert_eq!(parse(&raw).status, 400);
    // Read only the head of a large body, then hang up.
    let mut s = connect(&server);
    send(&mut s, "GET", "/f", &[]);
    let mut buf = [0u8; 512];
    s.read_exact(&mut buf).unwrap();
    drop(s);
    // Bare LF line endings are accepted.
    server.route("/g", Behavior::Body(b"hello".to_vec()));
    let mut s = connect(&server);
    s.write_all(b"GET /g HTTP/1.0\nrange: bytes=1-\n\n")
        .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let r = parse(&raw);
    assert_eq!((r.status, r.body.as_slice()), (206, &b"ello"[..]));

    assert_eq!(get(&server, "/g").body, b"hello");
}

#[test]
fn drop_stops_the_server() {
    let server = Server::start();
    let addr = server.addr();
    server.route("/f", Behavior::Body(b"x".to_vec()));
    assert_eq!(get(&server, "/f").status, 200);
    drop(server);
    let err = TcpStream::connect(addr).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused);
}

#[test]
fn serve_dir_serves_files() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    fs::create_dir_all(root.join("pool/main")).unwrap();
    fs::write(root.join("pool/main/a_1.0_amd64.deb"), data(300)).unwrap();
    fs::write(root.join("b_1%3a2.0_all.deb"), b"literal percent").unwrap();
    fs::write(root.join("c d.txt"), b"space").unwrap();

    let server = Server::serve_dir(root);
    let r = get(&server, "/pool/main/a_1.0_amd64.deb");
    assert_eq!((r.status, r.body), (200, data(300)));
    let r = get_range(&server, "/pool/main/a_1.0_amd64.deb", "bytes=250-");
    assert_eq!(r.status, 206);
    assert_eq!(r.header("content-range"), Some("bytes 250-299/300"));
    assert_eq!(r.body, &data(300)[250..]);
    let r = get_range(&server, "/pool/main/a_1.0_amd64.deb", "bytes=300-");
    assert_eq!(r.status, 416);
    let r = request(&server, "HEAD", "/pool/main/a_1.0_amd64.deb", &[]);
    assert_eq!((r.status, r.content_length()), (200, 300));

    assert_eq!(get(&server, "/b_1%3a2.0_all.deb").body, b"literal percent");
    assert_eq!(get(&server, "/c%20d.txt").body, b"space");

    assert_eq!(get(&server, "/pool/../../outside-secret").status, 403);
    assert_eq!(
        get(&server, "/pool/%2e%2e/%2e%2e/outside-secret").status,
        403
    );
    assert_eq!(get(&server, "/missing.deb").status, 404);
    assert_eq!(
        get(&server, "/pool").status,
        404,
        "directories are not served"
    );
    assert_eq!(get(&server, "//etc/passwd").status, 404);

    // Routes take precedence over files.
    server.route("/c d.txt", Behavior::Status(500));
    assert_eq!(get(&server, "/c%20d.txt").status, 500);
    assert_eq!(server.requests("/c%20d.txt").len(), 2);
}

#[test]
fn serve_binary_writes_port_file_and_serves() {
    let dir = tempfile::tempdir().unwrap();
    let content = dir.path().join("content");
    fs::create_dir(&content).unwrap();
    fs::write(content.join("hello.txt"), b"hello from serve").unwrap();
    let port_file = dir.path().join("port");

    let mut child = Command::new(env!("CARGO_BIN_EXE_serve"))
        .arg(&content)
        .arg("--port-file")
        .arg(&port_file)
        .arg("--timeout=30")
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let base = loop {
        if let Ok(s) = fs::read_to_string(&port_file) {
            break s;
        }
        assert!(Instant::now() < deadline, "no port file");
        std::thread::sleep(Duration::from_millis(20));
    };
    let addr = base.strip_prefix("http://").expect(&base);
    assert!(addr.starts_with("127.0.0.1:"), "{base}");

    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .write_all(b"GET /hello.txt HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    assert_eq!(parse(&raw).body, b"hello from serve");

    child.kill().unwrap();
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("at {base}/")),
        "unexpected stderr: {stderr}"
    );

    // The timeout ends it on its own.
    let status = Command::new(env!("CARGO_BIN_EXE_serve"))
        .arg(&content)
        .args(["--timeout", "0.2"])
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let status = Command::new(env!("CARGO_BIN_EXE_serve"))
        .arg("--bogus")
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(2));
}

fn sample_tree(root: &Path) {
    fs::create_dir_all(root.join("usr/bin")).unwrap();
    fs::create_dir_all(root.join("etc")).unwrap();
    fs::write(root.join("usr/bin/tool"), b"#!/bin/sh\necho hi\n").unwrap();
    fs::set_permissions(root.join("usr/bin/tool"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(root.join("etc/conf"), b"a=1\n").unwrap();
    symlink("../usr/bin/tool", root.join("etc/link")).unwrap();
}

#[test]
fn tree_hash_is_stable() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    sample_tree(a.path());
    sample_tree(b.path());
    let h = tree_hash(a.path());
    assert_eq!(h.len(), 64);
    assert_eq!(h, tree_hash(a.path()));
    assert_eq!(h, tree_hash(b.path()), "same content, different root");

    // mtimes do not count.
    let f = fs::File::options()
        .write(true)
        .open(a.path().join("etc/conf"))
        .unwrap();
    f.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(12345))
        .unwrap();
    drop(f);
    // Rewriting identical content does not either.
    fs::write(a.path().join("usr/bin/tool"), b"#!/bin/sh\necho hi\n").unwrap();
    assert_eq!(h, tree_hash(a.path()));

    let listing = tree_listing(a.path());
    let keys: Vec<&str> = listing.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            ".",
            "etc",
            "etc/conf",
            "etc/link",
            "usr",
            "usr/bin",
            "usr/bin/tool"
        ]
    );
    assert!(listing["usr/bin/tool"].starts_with("file mode=0755 "));
    assert!(listing["usr/bin/tool"].contains(" size=18 sha256="));
    assert!(listing["etc/link"].starts_with("symlink "));
    assert!(listing["etc/link"].ends_with(" -> ../usr/bin/tool"));
    assert!(listing["etc"].starts_with("dir "));
}

#[test]
fn tree_hash_detects_changes() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    sample_tree(root);
    let mut seen = vec![tree_hash(root)];
    let mut check = |what: &str, before: &BTreeMap<String, String>| {
        let h = tree_hash(root);
        assert!(!seen.contains(&h), "{what} did not change the hash");
        seen.push(h);
        let diff = diff_listings(before, &tree_listing(root));
        assert!(!diff.is_empty(), "{what}: empty diff");
        diff
    };

    let before = tree_listing(root);
    fs::write(root.join("etc/conf"), b"a=2\n").unwrap();
    let diff = check("one byte", &before);
    assert_eq!(diff.len(), 1);
    assert!(diff[0].starts_with("~ etc/conf: file "), "{diff:?}");

    let before = tree_listing(root);
    fs::set_permissions(root.join("etc/conf"), fs::Permissions::from_mode(0o600)).unwrap();
    let diff = check("mode", &before);
    assert!(
        diff[0].contains("mode=0644") && diff[0].contains("mode=0600"),
        "{diff:?}"
    );

    let before = tree_listing(root);
    fs::set_permissions(
        root.join("usr/bin/tool"),
        fs::Permissions::from_mode(0o4755),
    )
    .unwrap();
    let diff = check("setuid", &before);
    assert!(diff[0].contains("mode=4755"), "{diff:?}");

    let before = tree_listing(root);
    fs::remove_file(root.join("etc/link")).unwrap();
    symlink("../usr/bin/other", root.join("etc/link")).unwrap();
    let diff = check("symlink target", &before);
    assert!(diff[0].ends_with("-> ../usr/bin/other"), "{diff:?}");

    let before = tree_listing(root);
    fs::write(root.join("new"), b"").unwrap();
    let diff = check("new file", &before);
    assert_eq!(diff.len(), 1);
    assert!(diff[0].starts_with("+ new: file mode="), "{diff:?}");

    let before = tree_listing(root);
    fs::remove_file(root.join("etc/conf")).unwrap();
    let diff = check("removed file", &before);
    assert!(diff[0].starts_with("- etc/conf: "), "{diff:?}");

    let before = tree_listing(root);
    fs::remove_file(root.join("new")).unwrap();
    fs::create_dir(root.join("new")).unwrap();
    let diff = check("file replaced by directory", &before);
    assert!(
        diff[0].starts_with("~ new: file ") && diff[0].contains("=> dir "),
        "{diff:?}"
    );

    let before = tree_listing(root);
    fs::set_permissions(root, fs::Permissions::from_mode(0o750)).unwrap();
    check("root mode", &before);
}

#[test]
fn tree_of_missing_root() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope");
    let listing = tree_listing(&missing);
    assert_eq!(listing.len(), 1);
    assert_eq!(listing["."], ABSENT);
    let absent_hash = tree_hash(&missing);
    fs::create_dir(&missing).unwrap();
    assert_ne!(tree_hash(&missing), absent_hash);
    let diff = diff_listings(&listing, &tree_listing(&missing));
    assert_eq!(diff.len(), 1);
    assert!(diff[0].starts_with("~ .: absent => dir "), "{diff:?}");
}

#[test]
fn tree_symlinks_are_not_followed() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let target = dir.path().join("target");
    fs::create_dir(&root).unwrap();
    fs::create_dir(&target).unwrap();
    fs::write(target.join("f"), b"1").unwrap();
    symlink(&target, root.join("link")).unwrap();
    let h = tree_hash(&root);
    fs::write(target.join("f"), b"2").unwrap();
    assert_eq!(h, tree_hash(&root));
    assert_eq!(tree_listing(&root).len(), 2);
}
