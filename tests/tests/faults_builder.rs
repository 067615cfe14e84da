//! Builder faults (issue #5): upstream servers that stall, reset, send short
//! or different content, trickle; and a full disk at the output path. Each
//! build must end with a clear error (or, for a slow but live transfer, a
//! good bundle), no file at OUT (nor a temp file beside it), and a cache that
//! holds only verified objects: every object is re-hashed by the test.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bundle_tests::cli::{Keys, Output, bundler, keygen, run};
use bundle_tests::kit::{self, Mount};
use bundle_tests::server::{Behavior, Server};

/// Deterministic, incompressible bytes.
fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut v: Vec<u8> = (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    // `binary` steps install executables: bundler checks for an ELF or `#!`.
    if len >= 2 {
        v[..2].copy_from_slice(b"#!");
    }
    v
}

struct Setup {
    dir: tempfile::TempDir,
    keys: Keys,
    server: Server,
}

impl Setup {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let keys = keygen(dir.path(), "release");
        Self {
            dir,
            keys,
            server: Server::start(),
        }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// A spec of two pinned binaries: `good` (always served correctly, so
    /// the cache gets a verified object) and `bad`, served at `/bad` by
    /// whatever behavior the test installs.
    fn spec(&self, good: &[u8], bad: &[u8]) -> PathBuf {
        self.server.route("/good", Behavior::Body(good.to_vec()));
        let spec = serde_json::json!({
            "apiVersion": "bundle/v1", "name": "worker", "version": "1.0-1", "serial": 1,
            "target": {"os": "linux", "arch": "amd64"},
            "artifacts": {
                "good": {"url": self.server.url("/good"), "sha256": kit::sha256_hex(good), "size": good.len()},
                "bad": {"url": self.server.url("/bad"), "sha256": kit::sha256_hex(bad), "size": bad.len()},
            },
            "steps": [
                {"kind": "binary", "artifact": "good", "dest": "/usr/local/bin/good"},
                {"kind": "binary", "artifact": "bad", "dest": "/usr/local/bin/bad"},
            ],
        });
        let path = self.path("spec.json");
        std::fs::write(&path, serde_json::to_vec_pretty(&spec).unwrap()).unwrap();
        path
    }

    fn build(&self, spec: &Path, out: &Path, extra: &[&str]) -> Output {
        let mut args: Vec<String> = vec![
            "build".into(),
            spec.display().to_string(),
            "--key".into(),
            self.keys.secret.display().to_string(),
            "--cache".into(),
            self.path("cache").display().to_string(),
            "-o".into(),
            out.display().to_string(),
            "--jobs".into(),
            "2".into(),
        ];
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        run(&bundler(), args, &[("SOURCE_DATE_EPOCH", "1700000000")])
    }

    /// The build failed with exit 1 naming the artifact, its URL and
    /// `reason`; nothing at OUT or beside it; the cache holds only verified
    /// objects, `good` among them and `bad` not.
    #[track_caller]
    fn assert_failed_cleanly(&self, out: &Output, bundle: &Path, bad: &[u8], reason: &str) {
        out.code(1)
            .stderr_has("bad")
            .stderr_has(&self.server.url("/bad"))
            .stderr_has(reason);
        assert!(!bundle.exists(), "a bundle was written\n{out}");
        let dir = bundle.parent().unwrap();
        let name = bundle.file_name().unwrap().to_string_lossy().into_owned();
        let leftovers: Vec<String> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(&name))
            .collect();
        assert!(leftovers.is_empty(), "left beside OUT: {leftovers:?}");
        let n = kit::assert_cache_verified(&self.path("cache"));
        assert!(n >= 1, "the good artifact was not cached");
        assert!(
            !self
                .path("cache/sha256")
                .join(kit::sha256_hex(bad))
                .exists(),
            "the failed artifact is in the cache"
        );
    }
}

#[test]
fn stalling_server_times_out_with_a_clear_error() {
    let s = Setup::new();
    let (good, bad) = (bytes(1, 50_000), bytes(2, 300_000));
    let spec = s.spec(&good, &bad);
    // Headers and 1000 bytes, then silence, on every attempt.
    s.server.route(
        "/bad",
        Behavior::Stall {
            body: bad.clone(),
            after: 1000,
        },
    );
    let out_path = s.path("out/worker.tar.zst");
    let started = Instant::now();
    let out = s.build(&spec, &out_path, &["--timeout", "1", "--retries", "1"]);
    s.assert_failed_cleanly(&out, &out_path, &bad, "timed out");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    assert!(s.server.requests("/bad").len() >= 2, "not retried");
    // The partial download resumes once the server behaves.
    s.server.route("/bad", Behavior::Body(bad.clone()));
    s.build(&spec, &out_path, &["--timeout", "1"]).code(0);
    kit::assert_cache_verified(&s.path("cache"));
}

#[test]
fn server_resetting_every_connection_fails_cleanly() {
    let s = Setup::new();
    let (good, bad) = (bytes(3, 50_000), bytes(4, 300_000));
    let spec = s.spec(&good, &bad);
    s.server.route(
        "/bad",
        Behavior::BreakAfter {
            body: bad.clone(),
            after: 10_000,
            times: usize::MAX,
        },
    );
    let out_path = s.path("out/worker.tar.zst");
    let out = s.build(&spec, &out_path, &["--timeout", "5", "--retries", "2"]);
    s.assert_failed_cleanly(&out, &out_path, &bad, "after 3 attempts");
    assert_eq!(s.server.requests("/bad").len(), 3, "1 try + 2 retries");
}

#[test]
fn short_content_fails_cleanly() {
    let s = Setup::new();
    let (good, bad) = (bytes(5, 50_000), bytes(6, 300_000));
    let spec = s.spec(&good, &bad);
    // Content-Length says the full size, the connection ends at half.
    s.server.route(
        "/bad",
        Behavior::Short {
            body: bad[..150_000].to_vec(),
            declared: bad.len(),
        },
    );
    let out_path = s.path("out/worker.tar.zst");
    let out = s.build(&spec, &out_path, &["--timeout", "5", "--retries", "1"]);
    s.assert_failed_cleanly(
        &out,
        &out_path,
        &bad,
        "end of file before message length reached",
    );
    // Short without a lie: the whole (wrong-sized) response is a complete
    // but truncated file, and the pinned size and sha256 refuse it.
    s.server
        .route("/bad", Behavior::Body(bad[..150_000].to_vec()));
    let out = s.build(&spec, &out_path, &["--timeout", "5", "--retries", "1"]);
    s.assert_failed_cleanly(
        &out,
        &out_path,
        &bad,
        "has 150000 bytes, not the declared 300000",
    );
}

#[test]
fn different_file_with_status_200_is_refused_and_not_cached() {
    let s = Setup::new();
    let (good, bad) = (bytes(7, 50_000), bytes(8, 300_000));
    let spec = s.spec(&good, &bad);
    // Same size, other bytes (a compromised mirror), then a longer file.
    let evil = bytes(66, bad.len());
    s.server.route("/bad", Behavior::Body(evil.clone()));
    let out_path = s.path("out/worker.tar.zst");
    let out = s.build(&spec, &out_path, &["--retries", "1"]);
    s.assert_failed_cleanly(&out, &out_path, &bad, &kit::sha256_hex(&evil));
    out.stderr_has(&kit::sha256_hex(&bad));
    let mut longer = bad.clone();
    longer.extend_from_slice(b"#!/bin/sh\nid\n");
    s.server.route("/bad", Behavior::Body(longer.clone()));
    let out = s.build(&spec, &out_path, &["--retries", "1"]);
    s.assert_failed_cleanly(&out, &out_path, &longer, "not cached");
    assert!(!s.path("cache/sha256").join(kit::sha256_hex(&evil)).exists());
}

#[test]
fn slow_trickle_below_the_minimum_rate_times_out_with_a_clear_error() {
    // Bytes keep coming (so `--timeout`, the wait for the next byte, never
    // fires), but far below `--min-rate` averaged over its window: each
    // attempt is cut off, and the build fails naming the rate.
    let s = Setup::new();
    let (good, bad) = (bytes(13, 20_000), bytes(14, 400_000));
    let spec = s.spec(&good, &bad);
    s.server.route(
        "/bad",
        Behavior::Trickle {
            body: bad.clone(),
            bytes_per_sec: 4_000,
        },
    );
    let out_path = s.path("out/worker.tar.zst");
    let started = Instant::now();
    let out = s.build(
        &spec,
        &out_path,
        &[
            "--timeout",
            "5",
            "--retries",
            "1",
            "--min-rate",
            "50000",
            "--min-rate-window",
            "1",
        ],
    );
    s.assert_failed_cleanly(&out, &out_path, &bad, "too slow");
    out.stderr_has("bytes/s (--min-rate)");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(s.server.requests("/bad").len(), 2, "1 try + 1 retry");
}

#[test]
fn slow_trickle_within_the_timeout_completes_and_verifies() {
    // `--timeout` bounds the wait for each next byte, not the transfer (a big
    // download on a slow link must finish): a slow but live trickle above
    // `--min-rate` is not an error, and what it delivers is verified like
    // anything else. A transfer that stops delivering is the stall case
    // above; one that is too slow, the case before this one.
    let s = Setup::new();
    let (good, bad) = (bytes(9, 20_000), bytes(10, 60_000));
    let spec = s.spec(&good, &bad);
    s.server.route(
        "/bad",
        Behavior::Trickle {
            body: bad.clone(),
            bytes_per_sec: 40_000,
        },
    );
    let out_path = s.path("out/worker.tar.zst");
    let started = Instant::now();
    s.build(&spec, &out_path, &["--timeout", "1", "--retries", "0"])
        .code(0);
    assert!(
        started.elapsed() >= Duration::from_millis(1000),
        "not slow?"
    );
    run(
        &bundler(),
        [
            "verify".as_ref(),
            out_path.as_os_str(),
            "--key".as_ref(),
            s.keys.public.as_os_str(),
        ],
        &[],
    )
    .code(0);
    assert_eq!(kit::assert_cache_verified(&s.path("cache")), 2);
    // A trickle of the wrong bytes: refused at the end, not cached.
    let evil = bytes(77, bad.len());
    std::fs::remove_dir_all(s.path("cache")).unwrap();
    std::fs::remove_file(&out_path).unwrap();
    std::fs::remove_file(s.path("out/worker.tar.zst.minisig")).unwrap();
    s.server.route(
        "/bad",
        Behavior::Trickle {
            body: evil,
            bytes_per_sec: 60_000,
        },
    );
    let out = s.build(&spec, &out_path, &["--timeout", "1", "--retries", "0"]);
    s.assert_failed_cleanly(&out, &out_path, &bad, "sha256");
}

#[test]
fn disk_full_at_the_output_path_fails_cleanly() {
    let s = Setup::new();
    let (good, bad) = (bytes(11, 600_000), bytes(12, 400_000));
    let spec = s.spec(&good, &bad);
    s.server.route("/bad", Behavior::Body(bad.clone()));
    // The size of the bundle, built once where there is room.
    let roomy = s.path("roomy/worker.tar.zst");
    s.build(&spec, &roomy, &[]).code(0);
    let size = std::fs::metadata(&roomy).unwrap().len();
    let cache_objects = kit::assert_cache_verified(&s.path("cache"));
    // Output directories on a tmpfs too small for it, and around the edge:
    // the bundle fits but its detached signature does not, both fit.
    let page = 4096;
    let mut sizes: Vec<u64> = vec![page, 64 * 1024, size / 2];
    let edge = size.div_ceil(page) * page;
    sizes.extend((0..4).map(|i| edge - page + i * page));
    let mut outcomes = Vec::new();
    for (i, bytes_) in sizes.into_iter().enumerate() {
        let dir = s.path(&format!("full-{i}"));
        let m = match Mount::tmpfs(&dir, &format!("size={bytes_},mode=0755")) {
            Ok(m) => m,
            Err(e) => {
                eprintln!("SKIPPED: cannot mount a tmpfs here ({e})");
                return;
            }
        };
        let out_path = dir.join("worker.tar.zst");
        let out = s.build(&spec, &out_path, &["--offline"]);
        let names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        match out.code {
            0 => {
                // Both files complete.
                assert_eq!(
                    std::fs::read(&out_path).unwrap(),
                    std::fs::read(&roomy).unwrap()
                );
                let mut n = names.clone();
                n.sort();
                assert_eq!(n, ["worker.tar.zst", "worker.tar.zst.minisig"]);
            }
            1 => {
                out.stderr_has("No space left on device");
                assert!(names.is_empty(), "{bytes_} bytes: left {names:?}\n{out}");
            }
            _ => panic!("{bytes_} bytes: unexpected exit\n{out}"),
        }
        outcomes.push((bytes_, out.code));
        drop(m);
    }
    eprintln!("bundle of {size} bytes; output tmpfs size -> exit: {outcomes:?}");
    assert!(outcomes.iter().filter(|(_, c)| *c == 1).count() >= 3);
    // The cache was not touched by the failed builds.
    assert_eq!(kit::assert_cache_verified(&s.path("cache")), cache_objects);
}
