//! `bundler` end to end: a loopback server stands in for upstream sites.

use std::path::{Path, PathBuf};

use bundle_tests::cli::{Keys, Output, bundler, keygen, run};
use bundle_tests::kit::{self, RawEntry};
use bundle_tests::server::{Behavior, Server};
use sha2::{Digest, Sha256};

/// Deterministic pseudo-random bytes (incompressible enough to be realistic).
fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407)
        | 1;
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

fn sha(data: &[u8]) -> String {
    format!("{:x}", Sha256::digest(data))
}

/// A plain tar holding `bin/tool`.
fn tarball() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let data = bytes(9, 5000);
    let mut h = tar::Header::new_gnu();
    h.set_path("bin/tool").unwrap();
    h.set_size(data.len() as u64);
    h.set_mode(0o755);
    h.set_cksum();
    b.append(&h, &data[..]).unwrap();
    b.into_inner().unwrap()
}

struct Fixture {
    dir: tempfile::TempDir,
    keys: Keys,
    server: Server,
}

impl Fixture {
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

    /// Writes a spec whose artifacts are `(name, url, sha256)` and whose steps install them.
    fn spec(&self, artifacts: &[(&str, String, Vec<String>, &[u8])]) -> PathBuf {
        let mut arts = serde_json::Map::new();
        let mut steps = Vec::new();
        for (name, url, mirrors, data) in artifacts {
            arts.insert(
                (*name).into(),
                serde_json::json!({"url": url, "sha256": sha(data), "size": data.len(), "mirrors": mirrors}),
            );
            if name.ends_with("-tar") {
                steps.push(
                    serde_json::json!({"kind": "extract", "artifact": name, "dest": "/opt/tools"}),
                );
            } else {
                steps.push(serde_json::json!({"kind": "binary", "artifact": name, "dest": format!("/usr/local/bin/{name}")}));
            }
        }
        let spec = serde_json::json!({
            "apiVersion": "bundle/v1", "name": "worker", "version": "1.0-1", "serial": 3,
            "target": {"os": "linux", "arch": "amd64"},
            "artifacts": arts, "steps": steps,
        });
        let path = self.path("spec.json");
        std::fs::write(&path, serde_json::to_vec_pretty(&spec).unwrap()).unwrap();
        path
    }

    fn build(&self, spec: &Path, out: &str, cache: &str, extra: &[&str]) -> Output {
        let mut args = vec![
            "build".to_owned(),
            spec.display().to_string(),
            "--key".into(),
            self.keys.secret.display().to_string(),
            "--cache".into(),
            self.path(cache).display().to_string(),
            "-o".into(),
            self.path(out).display().to_string(),
            "--retries".into(),
            "2".into(),
            "--timeout".into(),
            "5".into(),
        ];
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        run(&bundler(), args, &[("SOURCE_DATE_EPOCH", "1700000000")])
    }

    fn verify(&self, bundle: &Path, key: &Path) -> Output {
        run(
            &bundler(),
            [
                "verify".as_ref(),
                bundle.as_os_str(),
                "--key".as_ref(),
                key.as_os_str(),
            ],
            &[],
        )
    }

    /// Builds a small good bundle and returns its path.
    fn good_bundle(&self) -> PathBuf {
        let a = bytes(1, 70_000);
        let t = tarball();
        self.server.route("/a", Behavior::Body(a.clone()));
        self.server.route("/t.tar", Behavior::Body(t.clone()));
        let spec = self.spec(&[
            ("alpha", self.server.url("/a"), vec![], &a),
            ("tools-tar", self.server.url("/t.tar"), vec![], &t),
        ]);
        self.build(&spec, "good.tar.zst", "cache", &[]).code(0);
        self.path("good.tar.zst")
    }
}

/// Every file in the cache's sha256/ directory is named by its own hash.
fn assert_cache_holds_only_verified(cache: &Path) {
    let dir = cache.join("sha256");
    for e in std::fs::read_dir(&dir).into_iter().flatten() {
        let e = e.unwrap();
        let data = std::fs::read(e.path()).unwrap();
        assert_eq!(
            e.file_name().to_string_lossy(),
            sha(&data),
            "cache object with wrong content"
        );
    }
}

#[test]
fn build_resumes_broken_transfer_uses_mirror_and_verifies() {
    let f = Fixture::new();
    let a = bytes(1, 300_000);
    let b = bytes(2, 50_000);
    let c = tarball();
    f.server.route(
        "/a",
        Behavior::BreakAfter {
            body: a.clone(),
            after: 100_000,
            times: 1,
        },
    );
    f.server.route("/b-primary", Behavior::Status(404));
    f.server.route("/b-mirror", Behavior::Body(b.clone()));
    f.server.route("/c.tar", Behavior::Body(c.clone()));
    let spec = f.spec(&[
        ("alpha", f.server.url("/a"), vec![], &a),
        (
            "beta",
            f.server.url("/b-primary"),
            vec![f.server.url("/b-mirror")],
            &b,
        ),
        ("tools-tar", f.server.url("/c.tar"), vec![], &c),
    ]);
    let out = f.build(&spec, "out/worker.tar.zst", "cache", &[]);
    out.code(0)
        .stdout_has("built worker 1.0-1 (serial 3)")
        .stdout_has("3 artifacts (3 downloaded, 0 from cache)");
    let log = f.server.requests("/a");
    assert!(log.len() >= 2, "expected a resumed second request: {log:?}");
    assert_eq!(log[1].range.as_deref(), Some("bytes=100000-"), "{log:?}");
    assert_eq!(f.server.requests("/b-mirror").len(), 1);
    assert_cache_holds_only_verified(&f.path("cache"));

    let bundle = f.path("out/worker.tar.zst");
    use std::os::unix::fs::PermissionsExt;
    for p in [bundle.clone(), f.path("out/worker.tar.zst.minisig")] {
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o644,
            "{}",
            p.display()
        );
    }
    f.verify(&bundle, &f.keys.public)
        .code(0)
        .stdout_has("OK")
        .stdout_has("signed by trusted key")
        .stdout_has("3 artifacts");
    // A second build is served from the cache: no new request.
    let before = f.server.requests("/a").len();
    f.build(&spec, "out/again.tar.zst", "cache", &[])
        .code(0)
        .stdout_has("(0 downloaded, 3 from cache)");
    assert_eq!(f.server.requests("/a").len(), before);
}

#[test]
fn wrong_bytes_are_refused_not_cached_and_no_bundle_is_written() {
    let f = Fixture::new();
    let good = bytes(1, 40_000);
    let evil = bytes(66, 40_000);
    f.server.route("/a", Behavior::Body(evil.clone()));
    let spec = f.spec(&[("alpha", f.server.url("/a"), vec![], &good)]);
    let out = f.build(&spec, "out.tar.zst", "cache", &[]);
    out.code(1)
        .stderr_has("alpha")
        .stderr_has(&f.server.url("/a"))
        .stderr_has(&sha(&good))
        .stderr_has(&sha(&evil))
        .stderr_has("not cached");
    assert!(!f.path("out.tar.zst").exists());
    let leftovers: Vec<_> = std::fs::read_dir(f.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("out.tar.zst"))
        .collect();
    assert!(leftovers.is_empty(), "partial output left: {leftovers:?}");
    assert_cache_holds_only_verified(&f.path("cache"));
    assert!(!f.path("cache/sha256").join(sha(&evil)).exists());
}

#[test]
fn same_spec_artifacts_and_key_give_byte_identical_bundles() {
    let f = Fixture::new();
    let bundle = f.good_bundle();
    // From a fresh cache (downloaded again) and with another worker count.
    f.build(
        &f.path("spec.json"),
        "second.tar.zst",
        "cache2",
        &["--jobs", "1"],
    )
    .code(0);
    let second = f.path("second.tar.zst");
    assert_eq!(
        std::fs::read(&bundle).unwrap(),
        std::fs::read(&second).unwrap()
    );
    // The detached signature names the file, so compare its signature lines only.
    let sig = |p: &Path| {
        std::fs::read_to_string(format!("{}.minisig", p.display()))
            .unwrap()
            .lines()
            .nth(1)
            .map(str::to_owned)
    };
    assert_eq!(sig(&bundle), sig(&second));
}

#[test]
fn every_modified_entry_is_rejected_by_verify() {
    let f = Fixture::new();
    let bundle = f.good_bundle();
    let entries = kit::read_entries(&bundle);
    // Manifest, signature, SBOM and two artifacts.
    assert_eq!(entries.len(), 5);
    for (i, e) in entries.iter().enumerate() {
        // One flipped byte in the entry's data, then in its header (checksum fixed or not).
        for where_ in ["data", "header"] {
            let mut copy = entries.clone();
            match where_ {
                "data" => {
                    let k = copy[i].data.len() / 2;
                    copy[i].data[k] ^= 0x01;
                }
                _ => {
                    copy[i].header[3] ^= 0x01;
                    copy[i].fix_checksum();
                }
            }
            let path = f.path(&format!("tampered-{i}-{where_}.tar.zst"));
            kit::write_entries(&copy, &path);
            let out = f.verify(&path, &f.keys.public);
            out.code(3).stderr_has("refused");
            assert!(out.stdout.is_empty(), "{out}");
            let _ = e;
        }
    }
}

#[test]
fn wrong_key_and_missing_signature_are_rejected() {
    let f = Fixture::new();
    let bundle = f.good_bundle();
    let other = keygen(f.dir.path(), "other");
    f.verify(&bundle, &other.public)
        .code(3)
        .stderr_has("which is not trusted");
    let mut entries = kit::read_entries(&bundle);
    entries.remove(1);
    let path = f.path("nosig.tar.zst");
    kit::write_entries(&entries, &path);
    f.verify(&path, &f.keys.public)
        .code(3)
        .stderr_has("expected \"BUNDLE.json.minisig\"");
    // Truncated file, appended bytes, a second frame.
    let data = std::fs::read(&bundle).unwrap();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("truncated", data[..data.len() - 10].to_vec()),
        ("appended", [data.clone(), b"x".to_vec()].concat()),
        (
            "second-frame",
            [data.clone(), kit::compress(b"more")].concat(),
        ),
        ("empty", Vec::new()),
        ("not-zstd", b"hello world, definitely not zstd".to_vec()),
    ];
    for (name, bytes) in cases {
        let path = f.path(&format!("{name}.tar.zst"));
        std::fs::write(&path, bytes).unwrap();
        let out = f.verify(&path, &f.keys.public);
        assert_eq!(out.code, 3, "{name}: {out}");
    }
}

#[test]
fn re_signed_manifest_cannot_smuggle_an_unlisted_entry() {
    let f = Fixture::new();
    let bundle = f.good_bundle();
    let mut entries = kit::read_entries(&bundle);
    entries.push(RawEntry::file("artifacts/zzz-extra", b"surprise".to_vec()));
    let path = f.path("extra.tar.zst");
    kit::write_entries(&entries, &path);
    f.verify(&path, &f.keys.public)
        .code(3)
        .stderr_has("\"artifacts/zzz-extra\"");
}

fn minisign_available() -> bool {
    std::process::Command::new("minisign")
        .arg("-v")
        .output()
        .is_ok()
}

#[test]
fn real_minisign_verifies_our_bundle_and_manifest() {
    if !minisign_available() {
        eprintln!("SKIP: minisign is not installed (apt-get install minisign)");
        return;
    }
    let f = Fixture::new();
    let bundle = f.good_bundle();
    let mini = std::path::Path::new("minisign");
    run(
        mini,
        [
            "-Vm".as_ref(),
            bundle.as_os_str(),
            "-p".as_ref(),
            f.keys.public.as_os_str(),
        ],
        &[],
    )
    .code(0)
    .stdout_has("Signature and comment signature verified");
    let entries = kit::read_entries(&bundle);
    std::fs::write(f.path("BUNDLE.json"), &entries[0].data).unwrap();
    std::fs::write(f.path("BUNDLE.json.minisig"), &entries[1].data).unwrap();
    let out = run(
        mini,
        [
            "-Vm".as_ref(),
            f.path("BUNDLE.json").as_os_str(),
            "-p".as_ref(),
            f.keys.public.as_os_str(),
        ],
        &[],
    );
    out.code(0).stdout_has("Trusted comment: worker 1.0-1 3");
}

#[test]
fn key_made_by_real_minisign_signs_our_bundles() {
    if !minisign_available() {
        eprintln!("SKIP: minisign is not installed (apt-get install minisign)");
        return;
    }
    let f = Fixture::new();
    let (pk, sk) = (f.path("mini.pub"), f.path("mini.key"));
    run(
        Path::new("minisign"),
        [
            "-G".as_ref(),
            "-W".as_ref(),
            "-p".as_ref(),
            pk.as_os_str(),
            "-s".as_ref(),
            sk.as_os_str(),
        ],
        &[],
    )
    .code(0);
    let a = bytes(1, 1000);
    f.server.route("/a", Behavior::Body(a.clone()));
    let spec = f.spec(&[("alpha", f.server.url("/a"), vec![], &a)]);
    let out = run(
        &bundler(),
        [
            "build".as_ref(),
            spec.as_os_str(),
            "--key".as_ref(),
            sk.as_os_str(),
            "-o".as_ref(),
            f.path("m.tar.zst").as_os_str(),
            "--cache".as_ref(),
            f.path("c").as_os_str(),
        ],
        &[],
    );
    out.code(0);
    f.verify(&f.path("m.tar.zst"), &pk).code(0);
}

#[test]
fn encrypted_key_needs_its_passphrase() {
    let f = Fixture::new();
    let prefix = f.path("enc");
    run(
        &bundler(),
        ["keygen".as_ref(), "--out".as_ref(), prefix.as_os_str()],
        &[],
    )
    .code(1)
    .stderr_has("BUNDLER_KEY_PASSWORD");
    run(
        &bundler(),
        ["keygen".as_ref(), "--out".as_ref(), prefix.as_os_str()],
        &[("BUNDLER_KEY_PASSWORD", "correct horse")],
    )
    .code(0)
    .stdout_has("key id");
    let text = std::fs::read_to_string(f.path("enc.key")).unwrap();
    assert!(
        text.starts_with("untrusted comment: minisign encrypted secret key\n"),
        "{text}"
    );
    let a = bytes(1, 1000);
    f.server.route("/a", Behavior::Body(a.clone()));
    let spec = f.spec(&[("alpha", f.server.url("/a"), vec![], &a)]);
    let args = |out: &str| {
        vec![
            "build".to_owned(),
            spec.display().to_string(),
            "--key".into(),
            f.path("enc.key").display().to_string(),
            "-o".into(),
            f.path(out).display().to_string(),
            "--cache".into(),
            f.path("c").display().to_string(),
        ]
    };
    run(
        &bundler(),
        args("x.tar.zst"),
        &[("BUNDLER_KEY_PASSWORD", "wrong")],
    )
    .code(1)
    .stderr_has("wrong passphrase");
    assert!(!f.path("x.tar.zst").exists());
    run(
        &bundler(),
        args("y.tar.zst"),
        &[("BUNDLER_KEY_PASSWORD", "correct horse")],
    )
    .code(0);
    f.verify(&f.path("y.tar.zst"), &f.path("enc.pub")).code(0);
}

#[test]
fn keygen_refuses_to_overwrite() {
    let f = Fixture::new();
    let prefix = f.path("release");
    let before = std::fs::read(&f.keys.secret).unwrap();
    run(
        &bundler(),
        [
            "keygen".as_ref(),
            "--out".as_ref(),
            prefix.as_os_str(),
            "--unencrypted".as_ref(),
        ],
        &[],
    )
    .code(1)
    .stderr_has("already exists");
    assert_eq!(std::fs::read(&f.keys.secret).unwrap(), before);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&f.keys.secret)
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
}

#[test]
fn unpinned_artifact_is_refused_with_the_pin_hint_then_pinned() {
    let f = Fixture::new();
    let a = bytes(5, 2000);
    f.server.route("/a", Behavior::Body(a.clone()));
    let spec = f.path("spec.json");
    std::fs::write(
        &spec,
        format!(
            r#"{{"apiVersion": "bundle/v1", "name": "w", "version": "1", "serial": 1,
  "target": {{"os": "linux", "arch": "amd64"}},
  "artifacts": {{"alpha": {{"url": "{}"}}}},
  "steps": [{{"kind": "binary", "artifact": "alpha", "dest": "/usr/local/bin/alpha", "mode": "0755"}}]}}"#,
            f.server.url("/a")
        ),
    )
    .unwrap();
    f.build(&spec, "o.tar.zst", "cache", &[])
        .code(1)
        .stderr_has("not pinned: alpha")
        .stderr_has("bundler pin");
    run(
        &bundler(),
        [
            "pin".as_ref(),
            spec.as_os_str(),
            "--cache".as_ref(),
            f.path("cache").as_os_str(),
        ],
        &[],
    )
    .code(0)
    .stdout_has(&format!("pinned alpha: sha256 {} size 2000", sha(&a)));
    let text = std::fs::read_to_string(&spec).unwrap();
    assert!(
        text.contains(&format!("\"sha256\": \"{}\"", sha(&a))),
        "{text}"
    );
    assert!(text.contains("\"size\": 2000"), "{text}");
    f.build(&spec, "o.tar.zst", "cache", &[]).code(0);
}

#[test]
fn invalid_spec_lists_every_problem_with_its_path() {
    let f = Fixture::new();
    let spec = f.path("spec.json");
    std::fs::write(
        &spec,
        r#"{"apiVersion": "bundle/v1", "name": "w", "version": "1", "serial": 1,
  "target": {"os": "linux", "arch": "amd64"},
  "artifacts": {"runc": {"url": "https://example.invalid/runc", "sha256": "abc"}},
  "steps": [{"kind": "binary", "artifact": "runc", "dest": "usr/bin/runc"},
            {"kind": "fiel", "dest": "/etc/x"}]}"#,
    )
    .unwrap();
    f.build(&spec, "o.tar.zst", "cache", &[])
        .code(1)
        .stderr_has("invalid spec")
        .stderr_has("artifacts.runc.sha256: expected 64 hex characters, got 3")
        .stderr_has("steps[0].dest: invalid path")
        .stderr_has("steps[1].kind: unknown step kind \"fiel\"");
}

#[test]
fn offline_build_uses_only_the_cache() {
    let f = Fixture::new();
    f.good_bundle();
    let spec = f.path("spec.json");
    f.build(&spec, "off.tar.zst", "cache", &["--offline"])
        .code(0);
    f.build(&spec, "off2.tar.zst", "empty-cache", &["--offline"])
        .code(1)
        .stderr_has("offline");
    assert!(!f.path("off2.tar.zst").exists());
}

#[test]
fn inspect_shows_manifest_key_and_artifacts() {
    let f = Fixture::new();
    let bundle = f.good_bundle();
    let out = run(&bundler(), ["inspect".as_ref(), bundle.as_os_str()], &[]);
    out.code(0)
        .stdout_has("name       worker 1.0-1 (serial 3)")
        .stdout_has("signature  NOT checked")
        .stdout_has("alpha")
        .stdout_has("tools-tar");
    let out = run(
        &bundler(),
        [
            "inspect".as_ref(),
            bundle.as_os_str(),
            "--key".as_ref(),
            f.keys.public.as_os_str(),
        ],
        &[],
    );
    out.code(0).stdout_has("signature  good");
    let out = run(
        &bundler(),
        ["inspect".as_ref(), bundle.as_os_str(), "--json".as_ref()],
        &[],
    );
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["format"], "install-bundle/v1");
}
