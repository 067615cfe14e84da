//! The seed's Kubernetes worker node, end to end: the manual bootstrap
//! procedure (apt-get install socat conntrack ipset, swap off, runc, crictl,
//! containerd, CNI plugins, kubectl/kube-proxy/kubelet, containerd config and
//! unit, directories, CNI/kubelet/kube-proxy configs and units) done by
//! `bundler lock` + `bundler build` + `install-bundle` on a real Debian root.
//!
//! * `worker_node_into_a_real_debian_root` (root, debootstrap, the Debian
//!   mirror): `debootstrap --variant=minbase bookworm` (+ systemd, cached in
//!   `target/e2e/`), real `.deb`s of the socat/conntrack/ipset closure from
//!   `apt-get download` in a local repository signed by a throwaway key,
//!   upstream-shaped stand-ins for the release files, the example spec
//!   rewritten to those URLs and pins, then `chroot ROOT /install-bundle`.
//! * `lock_*`: `bundler lock` against small signed repositories of `.deb`s
//!   made by `dpkg-deb` — resolution, signature, index and staleness checks.
//!   No root or network needed.
//! * `*_example_*`: what `bundler build` says about the examples as shipped.
//!
//! Tests skip with a `SKIP` message when their tools (or root, or the mirror)
//! are missing; `BUNDLE_E2E_REQUIRED=1` (set by `.ci/run`) turns that into a
//! failure.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use bundle_tests::aptrepo::{Gpg, Signing, build_repo};
use bundle_tests::cli::{Output, keygen, run};
use bundle_tests::debootstrap::{
    self, base_root, fresh_copy, installed_names, prerequisites, skip,
};
use bundle_tests::fixture::make_deb;
use bundle_tests::kit;
use bundle_tests::registry::Registry;
use bundle_tests::server::{Behavior, Server};
use bundle_tests::tree::{diff_listings, tree_hash, tree_listing};
use bundle_tests::worker::{
    self, Artifacts, ImageMirror, Installs, Loopback, OS_PACKAGES, POD_CIDR, bundler_build,
    bundler_lock, copy_example, examples, manifest, read_json, standins, url_version, write_json,
};
use serde_json::{Value, json};

/// `containerd.service` exactly as the seed procedure writes it.
const SEED_CONTAINERD_UNIT: &str = "[Unit]\nDescription=containerd container runtime\nDocumentation=https://containerd.io\nAfter=network.target\n\n[Service]\nExecStartPre=/sbin/modprobe overlay\nExecStart=/bin/containerd\nRestart=always\nRestartSec=5\nDelegate=yes\nKillMode=process\nOOMScoreAdjust=-999\nLimitNOFILE=1048576\nLimitNPROC=infinity\nLimitCORE=infinity\n\n[Install]\nWantedBy=multi-user.target\n";

/// `/etc/containerd/config.toml` exactly as the seed writes it (containerd 1.4).
const SEED_CONTAINERD_CONFIG: &str = "[plugins]\n  [plugins.cri.containerd]\n    snapshotter = \"overlayfs\"\n    [plugins.cri.containerd.default_runtime]\n      runtime_type = \"io.containerd.runtime.v1.linux\"\n      runtime_engine = \"/usr/local/bin/runc\"\n      runtime_root = \"\"\n";

/// The directories the seed creates.
const SEED_DIRECTORIES: &[&str] = &[
    "/var/lib/kubelet",
    "/var/lib/kube-proxy",
    "/etc/cni/net.d",
    "/opt/cni/bin",
    "/var/lib/kubernetes",
    "/var/run/kubernetes",
];

#[test]
fn v1_21_example_is_refused_until_kube_proxy_is_pinned() {
    let dir = tempfile::tempdir().unwrap();
    let spec = copy_example(dir.path(), "k8s-worker-v1.21.json");
    let keys = keygen(dir.path(), "release");
    let out = dir.path().join("worker.tar.zst");
    let result = bundler_build(&spec, &keys, &dir.path().join("cache"), &out);
    result
        .code(1)
        .stderr_has(&format!(
            "{}: artifact(s) not pinned: kube-proxy\n",
            spec.display()
        ))
        .stderr_has(&format!(
            "on a connected machine run `bundler pin {}` to download them and record sha256 and size",
            spec.display()
        ));
    assert!(!out.exists(), "a refused build left {}", out.display());
    assert!(!result.stderr.contains("bundler lock"), "{result}");
}

#[test]
fn v1_30_example_asks_for_its_lock() {
    let dir = tempfile::tempdir().unwrap();
    let spec = copy_example(dir.path(), "k8s-worker.json");
    let keys = keygen(dir.path(), "release");
    let out = dir.path().join("worker.tar.zst");
    bundler_build(&spec, &keys, &dir.path().join("cache"), &out)
        .code(1)
        .stderr_has(&format!(
            "has an \"apt\" section but {} does not exist; run `bundler lock {}`",
            dir.path().join("k8s-worker.lock.json").display(),
            spec.display()
        ));
    assert!(!out.exists());
}

/// A small signed repository of `dpkg-deb` packages served on loopback.
struct SmallRepo {
    dir: tempfile::TempDir,
    server: Server,
    gpg: Gpg,
}

impl SmallRepo {
    fn new() -> Option<SmallRepo> {
        let missing: Vec<&str> = [
            "gpg",
            "gpgv",
            "gpgconf",
            "dpkg-deb",
            "dpkg-scanpackages",
            "xz",
            "gzip",
        ]
        .into_iter()
        .filter(|t| !debootstrap::have(t))
        .collect();
        if !missing.is_empty() {
            skip(
                "lock tests",
                &format!(
                    "missing {} (apt-get install gnupg gpgv dpkg-dev xz-utils)",
                    missing.join(", ")
                ),
            );
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let debs_dir = dir.path().join("debs");
        std::fs::create_dir_all(&debs_dir).unwrap();
        let f = |p: &str| (format!("usr/share/{p}/README"), format!("{p}\n"));
        let debs: Vec<PathBuf> = [
            ("hello", "1.0", Some("libgreet (>= 1.1) | libgreet-legacy")),
            ("libgreet", "1.0", None),
            ("libgreet", "1.1", None),
            ("app", "1.0", Some("libfoo (>= 2.0)")),
            ("libfoo", "1.0", None),
        ]
        .into_iter()
        .map(|(name, version, depends)| {
            let (path, content) = f(name);
            let d = make_deb(&debs_dir, name, version, depends, (&path, &content));
            // dpkg-deb reuses the package directory; keep each build's file.
            let kept = debs_dir.join(format!("{name}_{version}_all.kept.deb"));
            std::fs::rename(&d, &kept).unwrap();
            std::fs::remove_dir_all(debs_dir.join(format!("{name}-pkg"))).unwrap();
            kept
        })
        .collect();
        let gpg = Gpg::new("e2e repository").unwrap();
        let www = dir.path().join("www");
        build_repo(
            &www.join("debian"),
            &debs,
            "bookworm",
            "amd64",
            &gpg,
            Signing {
                inrelease: true,
                release_gpg: true,
            },
        )
        .unwrap();
        std::fs::create_dir_all(dir.path().join("spec/keys")).unwrap();
        gpg.export(&dir.path().join("spec/keys/repo.gpg")).unwrap();
        let server = Server::serve_dir(&www);
        Some(SmallRepo { dir, server, gpg })
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn www(&self, rel: &str) -> Vec<u8> {
        std::fs::read(self.path("www").join(rel)).unwrap()
    }

    /// A spec with one file step and an `apt` section for `packages`.
    fn spec(&self, name: &str, packages: &[&str], edit: impl FnOnce(&mut Value)) -> PathBuf {
        let mut v = json!({
            "apiVersion": "bundle/v1", "name": "greeter", "version": "1", "serial": 1,
            "target": {"os": "linux", "arch": "amd64"},
            "steps": [{"kind": "file", "dest": "/etc/greeting", "content": "hello\n"}],
            "apt": {
                "sources": [{"url": self.server.url("debian"), "suite": "bookworm", "components": ["main"],
                             "keyring": "keys/repo.gpg"}],
                "packages": packages,
            }
        });
        edit(&mut v);
        let path = self.path("spec").join(name);
        write_json(&path, &v);
        path
    }

    /// A fresh download cache (so that no earlier, good index is reused).
    fn cache(&self) -> PathBuf {
        tempfile::Builder::new()
            .prefix("cache")
            .tempdir_in(self.dir.path())
            .unwrap()
            .keep()
    }
}

#[test]
fn lock_resolves_pins_and_orders_then_build_puts_the_debs_step_first() {
    let Some(repo) = SmallRepo::new() else { return };
    let spec = repo.spec("greeter.json", &["hello"], |_| {});
    let cache = repo.cache();
    bundler_lock(&spec, &cache)
        .code(0)
        .stdout_has("locked 2 package(s)")
        .stdout_has("libgreet 1.1  for hello 1.0")
        .stdout_has("hello 1.0     requested");
    let lock = read_json(&repo.path("spec/greeter.lock.json"));
    assert_eq!(lock["apiVersion"], "bundle-lock/v1");
    let pkgs: Vec<(String, String)> = lock["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["package"].as_str().unwrap().into(),
                p["version"].as_str().unwrap().into(),
            )
        })
        .collect();
    // The highest version that satisfies, dependencies first.
    assert_eq!(
        pkgs,
        [
            ("libgreet".to_owned(), "1.1".to_owned()),
            ("hello".into(), "1.0".into())
        ]
    );
    assert_eq!(
        lock["steps"],
        json!([{"kind": "debs", "artifacts": ["deb-libgreet", "deb-hello"]}])
    );
    let a = &lock["artifacts"]["deb-libgreet"];
    assert_eq!(
        a["url"],
        repo.server
            .url("debian/pool/main/libgreet_1.1_all.kept.deb")
    );
    let deb = repo.www("debian/pool/main/libgreet_1.1_all.kept.deb");
    assert_eq!(a["size"], deb.len());
    assert_eq!(a["sha256"], bundle_spec::Sha256Digest::of(&deb).to_hex());
    assert_eq!(lock["sources"][0]["release_file"], "InRelease");
    assert_eq!(
        lock["sources"][0]["signed_by"],
        json!([repo.gpg.fingerprint])
    );
    // The JSON summary, against its schema; locking again writes the same lock.
    let out = run(
        &bundle_tests::cli::bundler(),
        [
            OsString::from("lock"),
            spec.clone().into(),
            "--cache".into(),
            cache.clone().into(),
            "--json".into(),
        ],
        &[],
    );
    out.code(0);
    let summary = bundle_tests::schema::assert_valid_output(
        "builder/schema/lock.schema.json",
        "bundler lock --json",
        &out.stdout,
    );
    assert_eq!(summary["packages"], lock["packages"]);
    assert_eq!(read_json(&repo.path("spec/greeter.lock.json")), lock);

    // Build: the lock's artifacts join, its debs step runs first.
    let keys = keygen(repo.dir.path(), "release");
    let bundle = repo.path("greeter.tar.zst");
    bundler_build(&spec, &keys, &cache, &bundle).code(0);
    let m = manifest(&bundle);
    assert_eq!(
        m["steps"][0],
        json!({"kind": "debs", "artifacts": ["deb-libgreet", "deb-hello"]})
    );
    assert_eq!(m["steps"][1]["kind"], "file");
    assert_eq!(
        m["artifacts"]["deb-hello"]["url"],
        repo.server.url("debian/pool/main/hello_1.0_all.kept.deb")
    );

    // A lock made for another apt section is stale.
    let mut v = read_json(&spec);
    v["apt"]["packages"] = json!(["hello", "libfoo"]);
    write_json(&spec, &v);
    let stale = repo.path("stale.tar.zst");
    bundler_build(&spec, &keys, &cache, &stale)
        .code(1)
        .stderr_has("stale lock")
        .stderr_has(&format!("re-run `bundler lock {}`", spec.display()));
    assert!(!stale.exists());
    // Reformatting the spec does not make it stale: the parsed section counts.
    v["apt"]["packages"] = json!(["hello"]);
    std::fs::write(&spec, serde_json::to_vec(&v).unwrap()).unwrap();
    bundler_build(&spec, &keys, &cache, &stale).code(0);
}

#[test]
fn lock_leaves_out_what_a_status_file_baseline_has() {
    let Some(repo) = SmallRepo::new() else { return };
    std::fs::write(
        repo.path("spec/image.status"),
        "Package: libgreet\nStatus: install ok installed\nVersion: 1.1\nArchitecture: all\n\n\
         Package: libfoo\nStatus: install ok installed\nVersion: 1.0\nArchitecture: all\n",
    )
    .unwrap();
    let spec = repo.spec("greeter.json", &["hello", "libfoo"], |v| {
        v["apt"]["baseline"] = json!("./image.status");
    });
    bundler_lock(&spec, &repo.cache())
        .code(0)
        .stdout_has("locked 1 package(s)")
        .stdout_has("already in baseline ./image.status (left out): libfoo");
    let lock = read_json(&repo.path("spec/greeter.lock.json"));
    assert_eq!(
        lock["steps"],
        json!([{"kind": "debs", "artifacts": ["deb-hello"]}])
    );
    // An older libgreet in the image is upgraded: hello needs >= 1.1.
    std::fs::write(
        repo.path("spec/image.status"),
        "Package: libgreet\nStatus: install ok installed\nVersion: 1.0\nArchitecture: all\n",
    )
    .unwrap();
    bundler_lock(&spec, &repo.cache())
        .code(0)
        .stdout_has("upgrades packages of the baseline: libgreet");
    let missing = repo.spec("missing.json", &["hello"], |v| {
        v["apt"]["baseline"] = json!("./nope/status");
    });
    bundler_lock(&missing, &repo.cache())
        .code(1)
        .stderr_has("apt.baseline: ")
        .stderr_has("nope/status is not a file");
}

/// The example as shipped, locked against the real Debian archive with the
/// shipped keyring (skipped when deb.debian.org cannot be reached).
#[test]
fn lock_the_example_against_the_real_debian_archive() {
    const TEST: &str = "lock_the_example_against_the_real_debian_archive";
    if !debootstrap::have("gpgv") {
        skip(TEST, "gpgv is not installed (apt-get install gpgv)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let spec = copy_example(dir.path(), "k8s-worker.json");
    let out = bundler_lock(&spec, &dir.path().join("cache"));
    if out.code != 0
        && [
            "dns error",
            "Connection refused",
            "connect",
            "timed out",
            "Network is unreachable",
        ]
        .iter()
        .any(|m| out.stderr.contains(m))
    {
        skip(TEST, &format!("deb.debian.org is not reachable:\n{out}"));
        return;
    }
    out.code(0);
    let lock = read_json(&dir.path().join("k8s-worker.lock.json"));
    let names: Vec<&str> = lock["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["package"].as_str().unwrap())
        .collect();
    for p in OS_PACKAGES {
        assert!(names.contains(p), "{p} not in {names:?}");
    }
    // libc6 and the rest of minbase are left out.
    assert!(!names.contains(&"libc6"), "{names:?}");
    for a in lock["artifacts"].as_object().unwrap().values() {
        assert!(
            a["url"]
                .as_str()
                .unwrap()
                .starts_with("http://deb.debian.org/debian/pool/main/"),
            "{a}"
        );
    }
    // Signed by the Debian archive's bookworm keys.
    assert!(
        !lock["sources"][0]["signed_by"]
            .as_array()
            .unwrap()
            .is_empty(),
        "{lock}"
    );
}

#[test]
fn lock_reports_what_cannot_be_satisfied() {
    let Some(repo) = SmallRepo::new() else { return };
    let spec = repo.spec("app.json", &["app", "nosuch"], |_| {});
    bundler_lock(&spec, &repo.cache())
        .code(1)
        .stderr_has("cannot resolve apt.packages:")
        .stderr_has("requested package nosuch: the index has no package nosuch for amd64 or all")
        .stderr_has("app 1.0 depends on libfoo (>= 2.0), but the index has libfoo 1.0 (all)");
    assert!(!repo.path("spec/app.lock.json").exists());
}

#[test]
fn lock_refuses_unsigned_altered_or_foreign_indexes() {
    let Some(repo) = SmallRepo::new() else { return };
    let inrelease = "/debian/dists/bookworm/InRelease";
    let original = repo.www(&inrelease[1..]);
    let text = String::from_utf8(original.clone()).unwrap();

    // Signed by a key the keyring does not hold.
    let other = Gpg::new("someone else").unwrap();
    other.export(&repo.path("spec/keys/other.gpg")).unwrap();
    let spec = repo.spec("other-key.json", &["hello"], |v| {
        v["apt"]["sources"][0]["keyring"] = json!("keys/other.gpg");
    });
    bundler_lock(&spec, &repo.cache())
        .code(1)
        .stderr_has("no good signature by a key of the keyring");
    drop(other);

    let spec = repo.spec("greeter.json", &["hello"], |_| {});
    let lock_file = repo.path("spec/greeter.lock.json");
    let cases: Vec<(&str, &str, Behavior, &str)> = vec![
        (
            "signed text altered",
            inrelease,
            Behavior::Body(
                text.replacen("Components: main", "Components: main contrib", 1)
                    .into_bytes(),
            ),
            "BAD signature",
        ),
        (
            "unsigned text after the signature",
            inrelease,
            Behavior::Body(
                format!(
                    "{text}\nSHA256:\n {} 1 main/binary-amd64/Packages\n",
                    "0".repeat(64)
                )
                .into_bytes(),
            ),
            "not a single clearsigned message: text follows the signature",
        ),
        (
            "index replaced after signing",
            "/debian/dists/bookworm/main/binary-amd64/Packages.xz",
            Behavior::Body({
                // Same size, one byte different.
                let mut xz = repo.www("debian/dists/bookworm/main/binary-amd64/Packages.xz");
                let last = xz.len() - 20;
                xz[last] ^= 0x01;
                xz
            }),
            "sha256 mismatch",
        ),
    ];
    for (what, path, behavior, expect) in cases {
        repo.server.route(path, behavior);
        let out = bundler_lock(&spec, &repo.cache());
        assert_eq!(out.code, 1, "{what}: accepted\n{out}");
        assert!(
            out.stderr.contains(expect),
            "{what}: expected {expect:?}\n{out}"
        );
        assert!(!lock_file.exists(), "{what}: a lock was written");
        repo.server
            .route(inrelease, Behavior::Body(original.clone()));
        repo.server.route(
            "/debian/dists/bookworm/main/binary-amd64/Packages.xz",
            Behavior::Body(repo.www("debian/dists/bookworm/main/binary-amd64/Packages.xz")),
        );
    }

    // A signed Release of another suite is not accepted for this one.
    let trixie = repo.spec("trixie.json", &["hello"], |v| {
        v["apt"]["sources"][0]["suite"] = json!("trixie")
    });
    repo.server.route(
        "/debian/dists/trixie/InRelease",
        Behavior::Body(original.clone()),
    );
    bundler_lock(&trixie, &repo.cache()).code(1).stderr_has(
        "the signed Release is for suite \"bookworm\" (codename \"bookworm\"), not \"trixie\"",
    );

    // Without InRelease, Release + Release.gpg are used.
    repo.server.route(inrelease, Behavior::Status(404));
    bundler_lock(&spec, &repo.cache()).code(0);
    assert_eq!(
        read_json(&lock_file)["sources"][0]["release_file"],
        "Release"
    );
    // ... and a Release altered under its detached signature is refused.
    std::fs::remove_file(&lock_file).unwrap();
    let release = String::from_utf8(repo.www("debian/dists/bookworm/Release")).unwrap();
    repo.server.route(
        "/debian/dists/bookworm/Release",
        Behavior::Body(
            release
                .replacen("Origin: e2e", "Origin: evil", 1)
                .into_bytes(),
        ),
    );
    bundler_lock(&spec, &repo.cache())
        .code(1)
        .stderr_has("BAD signature");
    assert!(!lock_file.exists());
}

// ---------------------------------------------------------------------------
// The worker node on a real Debian root.

/// `Package` → names in its `Pre-Depends` and `Depends` groups, from a
/// `Packages` index.
fn index_dependencies(packages: &str) -> BTreeMap<String, Vec<Vec<String>>> {
    let mut out = BTreeMap::new();
    for stanza in packages.split("\n\n").filter(|s| !s.trim().is_empty()) {
        let mut name = String::new();
        let mut groups = Vec::new();
        for line in stanza.lines() {
            if let Some(n) = line.strip_prefix("Package: ") {
                name = n.trim().to_owned();
            }
            for field in ["Depends: ", "Pre-Depends: "] {
                if let Some(v) = line.strip_prefix(field) {
                    for g in v.split(',') {
                        groups.push(
                            g.split('|')
                                .map(|alt| {
                                    let n = alt.trim().split([' ', '(', ':']).next().unwrap_or("");
                                    n.to_owned()
                                })
                                .collect(),
                        );
                    }
                }
            }
        }
        out.insert(name, groups);
    }
    out
}

fn chroot(root: &Path, argv: &[&str]) -> Output {
    let mut args: Vec<OsString> = vec![root.as_os_str().to_owned()];
    args.extend(argv.iter().map(OsString::from));
    run(Path::new("chroot"), args, &[])
}

/// What both worker cases share: the cached Debian root and the real `.deb`s
/// of the OS packages' closure, as apt computes it against the built-in
/// baseline.
struct Prepared {
    base: PathBuf,
    closure: Vec<(String, String)>,
    debs: Vec<PathBuf>,
    /// The containerd artifact made of Debian's binaries.
    containerd: (Vec<u8>, Installs),
    installer: PathBuf,
    seconds: f64,
}

/// Prepares once per test process; `None` (after printing why) when the
/// tests cannot run here.
fn prepared(test: &str) -> Option<&'static Prepared> {
    static PREPARED: std::sync::OnceLock<Result<Prepared, String>> = std::sync::OnceLock::new();
    match PREPARED.get_or_init(prepare) {
        Ok(p) => Some(p),
        Err(why) => {
            skip(test, why);
            None
        }
    }
}

fn prepare() -> Result<Prepared, String> {
    if let Some(why) = prerequisites(&[
        "debootstrap",
        "chroot",
        "apt-get",
        "dpkg-scanpackages",
        "gpg",
        "gpgv",
        "gpgconf",
        "xz",
        "gzip",
    ]) {
        return Err(why);
    }
    if !Registry::available() || !Path::new(bundle_tests::oci::BUSYBOX).exists() {
        return Err(
            "the pause image needs docker-registry, openssl, htpasswd and busybox-static \
                    (apt-get install docker-registry openssl apache2-utils busybox-static)"
                .into(),
        );
    }
    let installer = worker::static_installer_snapshot(&debootstrap::cache_dir())?;
    let t = Instant::now();
    let base = match base_root() {
        Ok(b) => b,
        Err(e)
            if ["Failure while downloading", "Couldn't download", "resolve"]
                .iter()
                .any(|m| e.contains(m)) =>
        {
            return Err(format!("the Debian mirror is not reachable: {e}"));
        }
        Err(e) => panic!("debootstrap: {e}"),
    };
    eprintln!("e2e: Debian root ready after {:.1?}", t.elapsed());
    let worker::OsPackages {
        apt,
        baseline: baseline_text,
        closure,
        debs,
    } = worker::os_packages().unwrap();

    // The built-in baseline is what minbase installs: the cached root is
    // minbase + systemd, so it holds the baseline plus exactly systemd's closure.
    let root_names: BTreeSet<String> = installed_names(&base.join("var/lib/dpkg/status"))
        .unwrap()
        .into_iter()
        .collect();
    let baseline_names: BTreeSet<String> = baseline_text
        .lines()
        .filter_map(|l| l.strip_prefix("Package: "))
        .map(str::to_owned)
        .collect();
    let systemd: BTreeSet<String> = apt
        .closure(debootstrap::INCLUDE)
        .unwrap()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert!(
        baseline_names.is_subset(&root_names),
        "debian-12-minbase lists packages debootstrap did not install: {:?}",
        baseline_names.difference(&root_names).collect::<Vec<_>>()
    );
    assert_eq!(
        root_names
            .difference(&baseline_names)
            .cloned()
            .collect::<BTreeSet<_>>(),
        systemd,
        "debootstrap --variant=minbase installed packages debian-12-minbase does not list"
    );
    // Debian's containerd, in the release tarball's layout.
    let x = tempfile::tempdir().unwrap();
    let containerd = worker::debian_containerd(&apt, x.path())?;
    Ok(Prepared {
        base,
        closure,
        debs,
        containerd,
        installer,
        seconds: t.elapsed().as_secs_f64(),
    })
}

#[test]
fn worker_node_v1_30_into_a_real_debian_root() {
    let Some(p) = prepared("worker_node_v1_30_into_a_real_debian_root") else {
        return;
    };
    worker_node(p, "k8s-worker.json", "1.30.4-1", true);
}

#[test]
fn worker_node_v1_21_seed_versions_into_a_real_debian_root() {
    let Some(p) = prepared("worker_node_v1_21_seed_versions_into_a_real_debian_root") else {
        return;
    };
    worker_node(p, "k8s-worker-v1.21.json", "1.21.0-1", false);
}

/// The whole flow for one example: signed repository + stand-ins, the
/// example rewritten to them, `bundler lock`, `bundler build`, the bundle and
/// the static installer copied into a fresh root, `chroot ROOT
/// /install-bundle`, every effect checked, a re-run, and (`flips`) bundles
/// with one flipped byte refused without touching the root.
fn worker_node(p: &Prepared, file: &str, version: &str, flips: bool) {
    let mut timings: Vec<(String, f64)> =
        vec![("Debian root + apt download (cached)".into(), p.seconds)];
    let t0 = Instant::now();
    let mut t = Instant::now();
    let mut mark = |what: &str, since: &mut Instant| {
        timings.push((what.to_owned(), since.elapsed().as_secs_f64()));
        *since = Instant::now();
    };

    // The repository, the stand-ins, and the example spec pointed at them.
    let work = tempfile::tempdir().unwrap();
    let lo = Loopback::new(&work.path().join("www"), &p.debs).unwrap();
    let (www, server, packages_index) = (&lo.www, &lo.server, &lo.packages_index);
    let example = read_json(&examples().join(file));
    let mut standins: Artifacts = standins(&example);
    // containerd is Debian's real one, so that the images step really
    // imports into it.
    standins.insert("containerd".to_owned(), p.containerd.clone());
    // The pause image: a stand-in served by a loopback registry as a mirror
    // of the example's ref.
    let images = ImageMirror::new(&example);
    let (pause_ref, pause_digest) = (images.image_ref("pause"), images.digest("pause"));
    let spec_dir = work.path().join("spec");
    let mut spec = lo.rewrite(&example, &standins, &spec_dir);
    images.rewrite(&mut spec);
    let spec_path = spec_dir.join(file);
    write_json(&spec_path, &spec);
    // A patch release: only the kubelet changes.
    let kubelet_2 = lo.publish(
        "e2e/patch/kubelet",
        &worker::script("Kubernetes patch release (kubelet)"),
    );
    mark("signed repository + stand-ins", &mut t);

    // bundler lock: apt's closure, pinned to the signed index, dependencies first.
    let cache = work.path().join("cache");
    bundler_lock(&spec_path, &cache).code(0);
    let lock = read_json(&spec_dir.join(file.replace(".json", ".lock.json")));
    let locked: Vec<(String, String)> = lock["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["package"].as_str().unwrap().into(),
                p["version"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        locked.iter().cloned().collect::<BTreeSet<_>>(),
        p.closure.iter().cloned().collect::<BTreeSet<_>>(),
        "bundler lock and apt-get disagree on the closure of {OS_PACKAGES:?}"
    );
    let deps = index_dependencies(&std::fs::read_to_string(packages_index).unwrap());
    let names: Vec<&str> = locked.iter().map(|(n, _)| n.as_str()).collect();
    for (i, name) in names.iter().enumerate() {
        for group in &deps[*name] {
            let in_lock: Vec<&String> = group
                .iter()
                .filter(|d| names.contains(&d.as_str()))
                .collect();
            assert!(
                in_lock.is_empty() || in_lock.iter().any(|d| names[..i].contains(&d.as_str())),
                "{name} comes before its dependency {group:?} in {names:?}"
            );
        }
    }
    for (pkg, a) in lock["packages"]
        .as_array()
        .unwrap()
        .iter()
        .zip(lock["steps"][0]["artifacts"].as_array().unwrap())
    {
        assert_eq!(pkg["artifact"], *a);
        let art = &lock["artifacts"][a.as_str().unwrap()];
        let rel = art["url"]
            .as_str()
            .unwrap()
            .strip_prefix(&server.url(""))
            .unwrap()
            .to_owned();
        let bytes = std::fs::read(www.join(rel)).unwrap();
        assert_eq!(
            art["sha256"],
            bundle_spec::Sha256Digest::of(&bytes).to_hex()
        );
    }
    mark("bundler lock", &mut t);

    // bundler build: the example's steps, after the lock's debs step.
    let keys = keygen(work.path(), "release");
    let bundle = work.path().join("worker.tar.zst");
    bundler_build(&spec_path, &keys, &cache, &bundle).code(0);
    let m = manifest(&bundle);
    let steps = m["steps"].as_array().unwrap();
    assert_eq!(steps[0]["kind"], "debs");
    assert_eq!(steps[0]["artifacts"], lock["steps"][0]["artifacts"]);
    let example_spec = bundle_spec::validate::parse_spec(
        &std::fs::read(examples().join(file)).unwrap(),
        &bundle_spec::Limits::default(),
    )
    .unwrap();
    assert_eq!(
        serde_json::to_value(&example_spec.steps).unwrap(),
        json!(steps[1..]),
        "the bundle's steps are not the example's"
    );
    mark("bundler build", &mut t);

    // Carry only the bundle and the static installer into a fresh root; install.
    let root = work.path().join("root");
    fresh_copy(&p.base, &root).unwrap();
    let fstab = root.join("etc/fstab");
    let mut tab = std::fs::read_to_string(&fstab).unwrap();
    tab.push_str("/swap.img none swap sw 0 0\n");
    std::fs::write(&fstab, tab).unwrap();
    std::fs::copy(&bundle, root.join("worker.tar.zst")).unwrap();
    std::fs::copy(&p.installer, root.join("install-bundle")).unwrap();
    std::fs::copy(&keys.public, root.join("release.pub")).unwrap();
    mark("fresh root (cp -a)", &mut t);
    let install = |bundle: &str| {
        chroot(
            &root,
            &[
                "/install-bundle",
                bundle,
                "--set",
                &format!("POD_CIDR={POD_CIDR}"),
                "--trusted-key",
                "/release.pub",
                "--no-start",
            ],
        )
    };
    let first = install("/worker.tar.zst");
    first
        .code(0)
        .stdout_has("[5/5] receipt")
        .stdout_has(&format!("k8s-worker {version} (serial 1) installed"));
    let install_log = first.stdout.clone();
    mark("install-bundle in chroot", &mut t);

    // The OS packages, installed by dpkg in the root.
    let dpkg = chroot(
        &root,
        &[
            "dpkg-query",
            "-W",
            "-f=${Package} ${Status}\\n",
            "socat",
            "conntrack",
            "ipset",
        ],
    );
    dpkg.code(0);
    for pkg in OS_PACKAGES {
        assert!(
            dpkg.stdout.contains(&format!("{pkg} install ok installed")),
            "{pkg}\n{dpkg}"
        );
    }
    chroot(&root, &["dpkg", "-s", "socat", "conntrack", "ipset"]).code(0);
    chroot(&root, &["dpkg", "--audit"]).code(0);
    // Every binary: present, executable, the bundled bytes, and it runs.
    for (name, (_, installs)) in &standins {
        for (rel, bytes) in installs {
            let path = root.join(rel);
            let meta = std::fs::metadata(&path).unwrap_or_else(|e| panic!("{name}: {rel}: {e}"));
            assert_eq!(meta.permissions().mode() & 0o777, 0o755, "{rel}");
            assert_eq!(&std::fs::read(&path).unwrap(), bytes, "{rel}: wrong bytes");
        }
    }
    let k8s = url_version(example["artifacts"]["kubelet"]["url"].as_str().unwrap());
    for bin in ["kubelet", "kube-proxy", "kubectl"] {
        chroot(&root, &[&format!("/usr/local/bin/{bin}")])
            .code(0)
            .stdout_has(&format!("Kubernetes {k8s}"));
    }
    chroot(&root, &["containerd", "--version"])
        .code(0)
        .stdout_has("containerd github.com/containerd/containerd");
    // The pause image: imported (by a private containerd, as no systemd
    // runs in the chroot) under its ref at the bundled digest, pinned.
    chroot(&root, &["/install-bundle", "status", "k8s-worker"])
        .code(0)
        .stdout_has(&format!(
            "image      {pause_ref} {pause_digest} ok (pinned)"
        ));
    // Nothing of the build machine's kernel was touched from the chroot.
    let out = install_log.clone();
    for skipped in [
        "skip modprobe overlay",
        "skip modprobe br_netfilter",
        "skip /lib/systemd/systemd-sysctl",
    ] {
        assert!(out.contains(skipped), "{skipped}:\n{out}");
    }
    // containerd's unit byte-identical to the seed's; its config the
    // example's (the seed's for v1.21, the one containerd 1.7 needs for v1.30).
    assert_eq!(
        std::fs::read_to_string(root.join("etc/systemd/system/containerd.service")).unwrap(),
        SEED_CONTAINERD_UNIT
    );
    let config = std::fs::read_to_string(root.join("etc/containerd/config.toml")).unwrap();
    let expected = example["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["dest"] == "/etc/containerd/config.toml")
        .unwrap()["content"]
        .clone();
    assert_eq!(json!(config), expected);
    if version.starts_with("1.21") {
        assert_eq!(config, SEED_CONTAINERD_CONFIG);
    }
    // This node's CIDR in the CNI and kubelet configs.
    let bridge = std::fs::read_to_string(root.join("etc/cni/net.d/10-bridge.conf")).unwrap();
    assert!(
        bridge.contains(&format!("\"subnet\": \"{POD_CIDR}\"")),
        "{bridge}"
    );
    serde_json::from_str::<Value>(&bridge).expect("the bridge config is JSON");
    let lo = std::fs::read_to_string(root.join("etc/cni/net.d/99-loopback.conf")).unwrap();
    serde_json::from_str::<Value>(&lo).expect("the loopback config is JSON");
    let kubelet =
        std::fs::read_to_string(root.join("var/lib/kubelet/kubelet-config.yaml")).unwrap();
    assert!(
        kubelet.contains(&format!("podCIDR: \"{POD_CIDR}\"")),
        "{kubelet}"
    );
    assert!(kubelet.contains("- \"10.32.0.10\""), "{kubelet}");
    let proxy =
        std::fs::read_to_string(root.join("var/lib/kube-proxy/kube-proxy-config.yaml")).unwrap();
    assert!(proxy.contains("clusterCIDR: \"172.16.0.0/16\""), "{proxy}");
    // The seed's directories (checked inside the root: /var/run is a symlink to /run).
    for d in SEED_DIRECTORIES.iter().chain(&["/etc/containerd"]) {
        chroot(&root, &["test", "-d", d]).code(0);
    }
    // Units enabled: the wants symlinks `systemctl enable` made.
    for unit in [
        "containerd.service",
        "kubelet.service",
        "kube-proxy.service",
    ] {
        let link = root
            .join("etc/systemd/system/multi-user.target.wants")
            .join(unit);
        assert_eq!(
            std::fs::read_link(&link).unwrap_or_else(|e| panic!("{unit} not enabled: {e}")),
            Path::new("/etc/systemd/system").join(unit)
        );
        chroot(&root, &["systemctl", "is-enabled", unit])
            .code(0)
            .stdout_has("enabled");
    }
    // Swap off in fstab.
    let tab = std::fs::read_to_string(&fstab).unwrap();
    assert!(tab.contains("# /swap.img none swap sw 0 0"), "{tab}");
    assert!(!tab.lines().any(|l| l.starts_with("/swap.img")), "{tab}");
    // The receipt.
    let receipt = read_json(&root.join("var/lib/install-bundle/k8s-worker.json"));
    assert_eq!(receipt["version"], version, "{receipt}");
    assert_eq!(receipt["serial"], 1, "{receipt}");
    let text = receipt.to_string();
    assert!(
        text.contains(POD_CIDR) && text.contains("/usr/local/bin/kubelet"),
        "{receipt}"
    );
    mark("assertions", &mut t);

    // Again: nothing to do.
    install("/worker.tar.zst").code(0).stdout_has(&format!(
        "0 changed: k8s-worker {version} (serial 1) installed"
    ));
    mark("re-run", &mut t);

    if flips {
        // One flipped byte: inside an artifact (signature fine, sha256 not),
        // and in the compressed file. Refused (exit 3), the root untouched.
        let mut entries = kit::read_entries(&bundle);
        let socat = entries
            .iter_mut()
            .find(|e| e.name() == "artifacts/deb-socat")
            .expect("deb-socat in the bundle");
        let mid = socat.data.len() / 2;
        socat.data[mid] ^= 0x01;
        kit::write_entries(&entries, &root.join("flipped-artifact.tar.zst"));
        let mut raw = std::fs::read(&bundle).unwrap();
        let mid = raw.len() / 2;
        raw[mid] ^= 0x01;
        std::fs::write(root.join("flipped-file.tar.zst"), raw).unwrap();
        let before = tree_listing(&root);
        let hash_before = tree_hash(&root);
        for b in ["/flipped-artifact.tar.zst", "/flipped-file.tar.zst"] {
            install(b).code(3);
            let diff = diff_listings(&before, &tree_listing(&root));
            assert!(
                diff.is_empty(),
                "{b}: the root changed:\n{}",
                diff.join("\n")
            );
            assert_eq!(
                tree_hash(&root),
                hash_before,
                "{b}: the root's tree hash changed"
            );
        }
        mark("flipped bytes refused", &mut t);
    }

    if flips {
        // The patch release as a differential bundle: the real .debs, the
        // containerd archive and the pause image are left out; over serial 1
        // it installs, then it checks them on disk (dpkg's files, the
        // extracted members, containerd's content store) and refuses (exit
        // 4) once a blob of the image is gone.
        let mut s2 = read_json(&spec_path);
        s2["serial"] = json!(2);
        s2["artifacts"]["kubelet"] = kubelet_2.clone();
        let s2_path = spec_dir.join("patch.json");
        write_json(&s2_path, &s2);
        bundler_lock(&s2_path, &cache).code(0);
        let diff = root.join("patch.tar.zst");
        run(
            &bundle_tests::cli::bundler(),
            [
                OsString::from("build"),
                s2_path.clone().into(),
                "--key".into(),
                keys.secret.clone().into(),
                "--cache".into(),
                cache.clone().into(),
                "--base".into(),
                bundle.clone().into(),
                "-o".into(),
                diff.clone().into(),
                "--quiet".into(),
            ],
            &[("SOURCE_DATE_EPOCH", "1700000000")],
        )
        .code(0);
        let omitted = manifest(&diff)["base"]["omitted"].clone();
        for name in ["containerd", "pause", "deb-socat"] {
            assert!(omitted.get(name).is_some(), "{name} not omitted: {omitted}");
        }
        assert!(omitted.get("kubelet").is_none(), "{omitted}");
        install("/patch.tar.zst")
            .code(0)
            .stdout_has(&format!("k8s-worker {version} (serial 2) installed"));
        chroot(&root, &["/usr/local/bin/kubelet"])
            .code(0)
            .stdout_has("Kubernetes patch release (kubelet)");
        chroot(&root, &["/install-bundle", "status", "k8s-worker"]).code(0);
        let blobs = root.join("var/lib/containerd/io.containerd.content.v1.content/blobs/sha256");
        let config = m["images"]["pause"]["manifest"].as_str().unwrap();
        let layer = omitted["pause"]["blobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b.as_str().unwrap().strip_prefix("sha256:").unwrap())
            .find(|b| *b != config.strip_prefix("sha256:").unwrap() && blobs.join(b).exists())
            .expect("a blob of the pause image in the content store")
            .to_owned();
        std::fs::rename(blobs.join(&layer), root.join("moved-blob")).unwrap();
        let before = tree_listing(&root);
        let refused = install("/patch.tar.zst");
        refused.code(4);
        assert!(
            refused.stderr.contains(&format!(
                "artifact pause (omitted, installed by serial 1): blob sha256:{layer} is missing from containerd's content store"
            )) && refused.stderr.contains("install the full bundle"),
            "{refused}"
        );
        assert!(diff_listings(&before, &tree_listing(&root)).is_empty());
        std::fs::rename(root.join("moved-blob"), blobs.join(&layer)).unwrap();
        install("/patch.tar.zst").code(0).stdout_has("0 changed");
        mark("differential patch release", &mut t);
    }

    eprintln!("worker e2e timings ({file}):");
    for (what, secs) in &timings {
        eprintln!("  {secs:7.1}s  {what}");
    }
    eprintln!(
        "  {:7.1}s  this case after preparation",
        t0.elapsed().as_secs_f64()
    );
}
