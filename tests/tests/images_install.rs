//! The `images` step with Debian's real containerd and runc (issue 10,
//! "Install"): images imported under their ref at the bundled digest,
//! pinned, a container really runs from them offline, re-runs import
//! nothing, a flipped byte is refused before anything is imported, drift is
//! reported and repaired, rollback takes imports back, and a root built with
//! `--root` boots its containerd with the images in place.
//!
//! The images are made by the test (a busybox-static layer, an OCI index
//! with an amd64 manifest and an arm64 one whose blobs are not carried), the
//! bundle is built by the real `bundler` and the image put in as the builder
//! writes it (an OCI layout tar, `bundle_spec::image`).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bundle_tests::cli::{Output, installer, run};
use bundle_tests::fixture::Fixture;
use bundle_tests::kit;
use sha2::{Digest as _, Sha256};

fn hex(data: &[u8]) -> String {
    format!("{:x}", Sha256::digest(data))
}

fn busybox() -> Option<PathBuf> {
    ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Whether the real components are here; else SKIPPED (a failure in CI).
fn components() -> bool {
    let ok = busybox().is_some() && have("containerd") && have("ctr") && have("runc");
    if !ok {
        assert!(
            std::env::var_os("BUNDLE_E2E_REQUIRED").is_none(),
            "containerd, ctr, runc and busybox are needed (apt-get install containerd runc busybox-static)"
        );
        eprintln!("SKIPPED: needs containerd, ctr, runc and busybox-static");
    }
    ok
}

/// An OCI image layout tar as the builder writes it: the index (amd64 and an
/// arm64 manifest that is not carried), the amd64 manifest, config, layer.
/// Returns (tar bytes, index digest, amd64 manifest digest).
fn image_layout(reference: &str, tag: &str, line: &str) -> (Vec<u8>, String, String) {
    let mut blobs: Vec<(String, Vec<u8>)> = Vec::new();
    let mut add = |data: Vec<u8>| -> (String, usize) {
        let d = format!("sha256:{}", hex(&data));
        let n = data.len();
        blobs.push((hex(&data), data));
        (d, n)
    };
    let mut layer = tar::Builder::new(Vec::new());
    let bb = std::fs::read(busybox().unwrap()).unwrap();
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_path("bin").unwrap();
    h.set_mode(0o755);
    h.set_size(0);
    h.set_cksum();
    layer.append(&h, std::io::empty()).unwrap();
    let mut h = tar::Header::new_ustar();
    h.set_path("bin/busybox").unwrap();
    h.set_mode(0o755);
    h.set_size(bb.len() as u64);
    h.set_cksum();
    layer.append(&h, &bb[..]).unwrap();
    for l in ["sh", "echo"] {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_path(format!("bin/{l}")).unwrap();
        h.set_link_name("busybox").unwrap();
        h.set_size(0);
        h.set_cksum();
        layer.append(&h, std::io::empty()).unwrap();
    }
    let raw = layer.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&raw).unwrap();
    let gz = gz.finish().unwrap();
    let (layer_d, layer_n) = add(gz);
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Cmd": ["/bin/echo", line]},
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{}", hex(&raw))]},
    });
    let (config_d, config_n) = add(serde_json::to_vec(&config).unwrap());
    let manifest = serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_d, "size": config_n},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer_d, "size": layer_n}],
    });
    let (man_d, man_n) = add(serde_json::to_vec(&manifest).unwrap());
    let index = serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": man_d, "size": man_n,
             "platform": {"architecture": "amd64", "os": "linux"}},
            {"mediaType": "application/vnd.oci.image.manifest.v1+json",
             "digest": format!("sha256:{}", hex(line.as_bytes())), "size": 1,
             "platform": {"architecture": "arm64", "os": "linux"}},
        ],
    });
    let (idx_d, idx_n) = add(serde_json::to_vec(&index).unwrap());
    let index_json = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.index.v1+json", "digest": idx_d, "size": idx_n,
            "annotations": {"io.containerd.image.name": reference, "org.opencontainers.image.ref.name": tag}}],
    });
    let mut t = tar::Builder::new(Vec::new());
    let mut file = |name: &str, data: &[u8]| {
        let mut h = tar::Header::new_ustar();
        h.set_path(name).unwrap();
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        h.set_cksum();
        t.append(&h, data).unwrap();
    };
    file("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
    file("index.json", &serde_json::to_vec(&index_json).unwrap());
    blobs.sort();
    for (h, data) in &blobs {
        file(&format!("blobs/sha256/{h}"), data);
    }
    (t.into_inner().unwrap(), idx_d, man_d)
}

/// One image for [`bundle`].
struct Img {
    name: &'static str,
    reference: String,
    layout: Vec<u8>,
    index: String,
    manifest: String,
}

fn img(name: &'static str, reference: &str, line: &str) -> Img {
    let tag = reference.rsplit(':').next().unwrap();
    let (layout, index, manifest) = image_layout(reference, tag, line);
    Img {
        name,
        reference: reference.into(),
        layout,
        index,
        manifest,
    }
}

/// A signed bundle (serial `serial`) whose steps are `steps`, carrying
/// `images`: built by `bundler` with the layouts as artifacts, then given
/// its images section as the builder writes it and re-signed.
fn bundle(
    f: &Fixture,
    out: &str,
    serial: u64,
    images: &[&Img],
    steps: serde_json::Value,
) -> PathBuf {
    let files = f.path("files");
    std::fs::create_dir_all(&files).unwrap();
    let mut artifacts = serde_json::Map::new();
    let mut placeholder_steps = Vec::new();
    for i in images {
        std::fs::write(files.join(format!("{}.tar", i.name)), &i.layout).unwrap();
        artifacts.insert(
            i.name.into(),
            serde_json::json!({"url": format!("file:files/{}.tar", i.name)}),
        );
        placeholder_steps.push(serde_json::json!({"kind": "extract", "artifact": i.name, "dest": "/x", "include": ["oci-layout"]}));
    }
    let spec = serde_json::json!({
        "apiVersion": "bundle/v1", "name": "images", "version": format!("{serial}"), "serial": serial,
        "target": {"os": "linux", "arch": "amd64"}, "artifacts": artifacts, "steps": placeholder_steps,
    });
    let path = kit::write_pinned_spec(f, &format!("{out}.json"), &spec);
    let built = f.build(&path, &format!("{out}.tmp"));
    let mut entries = kit::read_entries(&built);
    kit::edit_manifest(&mut entries, &kit::secret_key(&f.keys.secret), |m| {
        let mut imgs = serde_json::Map::new();
        for i in images {
            imgs.insert(
                i.name.into(),
                serde_json::json!({"ref": i.reference, "digest": i.index, "manifest": i.manifest, "platform": "linux/amd64"}),
            );
        }
        m["images"] = serde_json::Value::Object(imgs);
        m["steps"] = steps;
    });
    let out = f.path(out);
    kit::write_entries(&entries, &out);
    out
}

/// containerd started by the test on `data` (its root), own state and socket.
struct Containerd {
    child: Child,
    dir: tempfile::TempDir,
}

impl Containerd {
    fn start(data: &Path) -> Self {
        Self::start_at(data, None)
    }

    /// containerd on `data` answering on `socket` (default: in its own
    /// temporary directory).
    fn start_at(data: &Path, socket: Option<&Path>) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("ctd-")
            .tempdir_in("/tmp")
            .unwrap();
        let sock = socket.map_or_else(|| dir.path().join("sock"), Path::to_owned);
        std::fs::write(
            dir.path().join("address"),
            sock.as_os_str().as_encoded_bytes(),
        )
        .unwrap();
        let config = format!(
            "version = 2\nroot = {:?}\nstate = {:?}\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\", \"io.containerd.internal.v1.opt\"]\n[grpc]\n  address = {:?}\n",
            data.display().to_string(),
            dir.path().join("state").display().to_string(),
            sock.display().to_string()
        );
        std::fs::write(dir.path().join("config.toml"), config).unwrap();
        let log = std::fs::File::create(dir.path().join("log")).unwrap();
        let child = Command::new("containerd")
            .arg("--config")
            .arg(dir.path().join("config.toml"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let me = Self { child, dir };
        let start = Instant::now();
        while !me.ctr(&["version"]).status.success() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "containerd did not start"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        me
    }

    fn ctr(&self, args: &[&str]) -> std::process::Output {
        let sock = std::fs::read_to_string(self.dir.path().join("address")).unwrap();
        Command::new("ctr")
            .arg("-a")
            .arg(sock)
            .args(["-n", "k8s.io"])
            .args(args)
            .output()
            .unwrap()
    }

    fn images(&self) -> String {
        String::from_utf8_lossy(&self.ctr(&["images", "ls"]).stdout).into_owned()
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

fn status(root: &Path) -> Output {
    run(
        &installer(),
        [
            "status".as_ref(),
            "images".as_ref(),
            "--root".as_ref(),
            root.as_os_str(),
        ],
        &[],
    )
}

#[test]
fn a_root_built_with_images_boots_its_containerd_with_them_pinned_and_runnable() {
    if !components() {
        return;
    }
    let f = Fixture::new();
    let hello = img(
        "hello",
        "registry.example:5000/team/hello:1.0",
        "hello from the bundled image",
    );
    let steps = serde_json::json!([{"kind": "images", "images": ["hello"], "pin": true}]);
    let b = bundle(&f, "images.tar.zst", 1, &[&hello], steps);
    let root = f.path("root");
    std::fs::create_dir_all(&root).unwrap();
    kit::install(&root, &b, &f.keys.public, &[], &[])
        .code(0)
        .stdout_has(&format!(
            "import image registry.example:5000/team/hello:1.0 ({}, pinned) in namespace k8s.io, a private containerd",
            hello.index
        ));
    // Again: nothing is imported.
    kit::install(&root, &b, &f.keys.public, &[], &[])
        .code(0)
        .stdout_has("unchanged image registry.example:5000/team/hello:1.0")
        .stdout_has("0 changed");
    status(&root).code(0).stdout_has(&format!(
        "image      registry.example:5000/team/hello:1.0 {} ok (pinned)",
        hello.index
    ));
    // The root's containerd, started on it, has the image and runs it.
    let ctd = Containerd::start(&root.join("var/lib/containerd"));
    let ls = ctd.images();
    assert!(
        ls.contains("registry.example:5000/team/hello:1.0")
            && ls.contains(&hello.index)
            && ls.contains("io.cri-containerd.pinned=pinned"),
        "{ls}"
    );
    let out = ctd.ctr(&["run", "--rm", "registry.example:5000/team/hello:1.0", "t1"]);
    assert!(out.status.success(), "ctr run: {out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "hello from the bundled image\n"
    );
}

#[test]
fn a_flipped_byte_in_an_image_is_refused_before_anything_is_imported() {
    if !components() {
        return;
    }
    let f = Fixture::new();
    let hello = img("hello", "registry.example:5000/team/hello:1.0", "hi");
    let steps = serde_json::json!([{"kind": "images", "images": ["hello"], "pin": true}]);
    let b = bundle(&f, "images.tar.zst", 1, &[&hello], steps);
    let mut bytes = kit::decompress(&b);
    let at = bytes.len() - 4096;
    bytes[at] ^= 1;
    let bad = f.path("bad.tar.zst");
    std::fs::write(&bad, kit::compress(&bytes)).unwrap();
    let root = f.path("root");
    std::fs::create_dir_all(&root).unwrap();
    kit::install(&root, &bad, &f.keys.public, &[], &[])
        .code(3)
        .stderr_has("verification failed");
    assert!(!root.join("var/lib/containerd").exists());
}

#[test]
fn an_image_removed_behind_our_back_is_reported_then_imported_again() {
    if !components() {
        return;
    }
    let f = Fixture::new();
    let hello = img("hello", "registry.example:5000/team/hello:1.0", "hi");
    let steps = serde_json::json!([{"kind": "images", "images": ["hello"], "pin": true}]);
    let b = bundle(&f, "images.tar.zst", 1, &[&hello], steps);
    let root = f.path("root");
    std::fs::create_dir_all(&root).unwrap();
    kit::install(&root, &b, &f.keys.public, &[], &[]).code(0);
    {
        let ctd = Containerd::start(&root.join("var/lib/containerd"));
        assert!(
            ctd.ctr(&["images", "rm", &hello.reference])
                .status
                .success()
        );
    }
    status(&root)
        .code(7)
        .stdout_has("image      registry.example:5000/team/hello:1.0")
        .stderr_has("registry.example:5000/team/hello:1.0: missing");
    kit::install(&root, &b, &f.keys.public, &[], &[])
        .code(0)
        .stdout_has("import image registry.example:5000/team/hello:1.0");
    status(&root).code(0);
}

#[test]
fn a_failure_after_the_images_step_takes_the_import_back() {
    if !components() {
        return;
    }
    let f = Fixture::new();
    let one = img("hello", "registry.example:5000/team/hello:1.0", "one");
    let two = img("hello", "registry.example:5000/team/hello:1.0", "two");
    let steps = serde_json::json!([
        {"kind": "images", "images": ["hello"], "pin": true},
        {"kind": "file", "dest": "/etc/after", "content": "x\n"},
    ]);
    let b1 = bundle(&f, "one.tar.zst", 1, &[&one], steps.clone());
    let b2 = bundle(&f, "two.tar.zst", 2, &[&two], steps);
    let root = f.path("root");
    std::fs::create_dir_all(&root).unwrap();
    // A first install that fails after the import leaves no containerd data.
    kit::install(
        &root,
        &b1,
        &f.keys.public,
        &[],
        &[("INSTALL_BUNDLE_TEST_FAIL_AT", "2")],
    )
    .code(5);
    assert!(!root.join("var/lib/containerd").exists());
    kit::install(&root, &b1, &f.keys.public, &[], &[]).code(0);
    // An upgrade that fails after moving the ref puts the old image back.
    kit::install(
        &root,
        &b2,
        &f.keys.public,
        &[],
        &[("INSTALL_BUNDLE_TEST_FAIL_AT", "2")],
    )
    .code(5);
    let ctd = Containerd::start(&root.join("var/lib/containerd"));
    let ls = ctd.images();
    assert!(ls.contains(&one.index) && !ls.contains(&two.index), "{ls}");
    drop(ctd);
    kit::install(&root, &b2, &f.keys.public, &[], &[])
        .code(0)
        .stdout_has(&format!("update (from {}) image", one.index));
    let ctd = Containerd::start(&root.join("var/lib/containerd"));
    let ls = ctd.images();
    assert!(ls.contains(&two.index), "{ls}");
}

#[test]
fn an_image_the_next_release_drops_is_unpinned() {
    if !components() {
        return;
    }
    let f = Fixture::new();
    let keep = img("keep", "registry.example:5000/team/keep:1", "keep");
    let gone = img("gone", "registry.example:5000/team/gone:1", "gone");
    let b1 = bundle(
        &f,
        "one.tar.zst",
        1,
        &[&keep, &gone],
        serde_json::json!([{"kind": "images", "images": ["keep", "gone"], "pin": true}]),
    );
    let b2 = bundle(
        &f,
        "two.tar.zst",
        2,
        &[&keep],
        serde_json::json!([{"kind": "images", "images": ["keep"], "pin": true}]),
    );
    let root = f.path("root");
    std::fs::create_dir_all(&root).unwrap();
    kit::install(&root, &b1, &f.keys.public, &[], &[]).code(0);
    kit::install(&root, &b2, &f.keys.public, &[], &[])
        .code(0)
        .stdout_has("unpin image registry.example:5000/team/gone:1");
    let ctd = Containerd::start(&root.join("var/lib/containerd"));
    let out = ctd.ctr(&["images", "ls"]);
    let ls = String::from_utf8_lossy(&out.stdout);
    let line = |r: &str| {
        ls.lines()
            .find(|l| l.starts_with(r))
            .unwrap_or("")
            .to_owned()
    };
    assert!(
        line("registry.example:5000/team/keep:1").contains("pinned=pinned"),
        "{ls}"
    );
    assert!(
        !line("registry.example:5000/team/gone:1").contains("pinned=pinned"),
        "{ls}"
    );
}

/// A root to `chroot` the static installer into, as a host: the bundle, the
/// key, `ctr` (with its libraries) and containerd's socket at
/// `/run/containerd/containerd.sock`, served by a containerd the test
/// started on the machine (the "host's" running containerd).
struct LiveHost {
    root: PathBuf,
    ctd: Containerd,
}

impl LiveHost {
    fn new(f: &Fixture, name: &str) -> Option<Self> {
        let bin = installer();
        if !bin.ends_with("static/install-bundle") {
            eprintln!("SKIPPED: needs the static installer (make static)");
            return None;
        }
        let root = f.path(name);
        std::fs::create_dir_all(root.join("usr/local/bin")).unwrap();
        std::fs::create_dir_all(root.join("run/containerd")).unwrap();
        std::fs::create_dir_all(root.join("dev")).unwrap();
        // As in every real root: programs' standard input comes from it.
        let st = Command::new("mknod")
            .arg(root.join("dev/null"))
            .args(["c", "1", "3"])
            .status()
            .unwrap();
        assert!(st.success(), "mknod dev/null");
        std::fs::copy(&bin, root.join("install-bundle")).unwrap();
        std::fs::copy(&f.keys.public, root.join("k.pub")).unwrap();
        let ctr = String::from_utf8(
            Command::new("sh")
                .args(["-c", "command -v ctr"])
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap();
        let ctr = ctr.trim();
        std::fs::copy(ctr, root.join("usr/local/bin/ctr")).unwrap();
        let ldd = Command::new("ldd").arg(ctr).output().unwrap();
        for lib in String::from_utf8_lossy(&ldd.stdout)
            .split_whitespace()
            .filter(|w| w.starts_with('/'))
        {
            let to = root.join(lib.trim_start_matches('/'));
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            std::fs::copy(lib, to).unwrap();
        }
        let data = f.path(&format!("{name}-containerd"));
        let ctd = Containerd::start_at(&data, Some(&root.join("run/containerd/containerd.sock")));
        Some(Self { root, ctd })
    }

    fn install(&self, bundle: &Path, env: &[(&str, &str)]) -> Output {
        std::fs::copy(bundle, self.root.join("b.tar.zst")).unwrap();
        let argv: Vec<&std::ffi::OsStr> = vec![
            self.root.as_os_str(),
            "/install-bundle".as_ref(),
            "/b.tar.zst".as_ref(),
            "--trusted-key".as_ref(),
            "/k.pub".as_ref(),
        ];
        run(Path::new("/usr/sbin/chroot"), &argv, env)
    }

    fn status(&self) -> Output {
        run(
            Path::new("/usr/sbin/chroot"),
            [
                self.root.as_os_str(),
                "/install-bundle".as_ref(),
                "status".as_ref(),
                "images".as_ref(),
            ],
            &[],
        )
    }
}

#[test]
fn on_a_host_the_running_containerd_gets_the_images_once_pinned() {
    if !components() {
        return;
    }
    let f = Fixture::new();
    let Some(host) = LiveHost::new(&f, "host") else {
        return;
    };
    let hello = img(
        "hello",
        "registry.example:5000/team/hello:1.0",
        "hello from a live host",
    );
    let steps = serde_json::json!([{"kind": "images", "images": ["hello"], "pin": true}]);
    let b = bundle(&f, "images.tar.zst", 1, &[&hello], steps);
    host.install(&b, &[]).code(0).stdout_has(&format!(
        "import image registry.example:5000/team/hello:1.0 ({}, pinned) in namespace k8s.io, containerd at /run/containerd/containerd.sock",
        hello.index
    ));
    let ls = host.ctd.images();
    assert!(
        ls.contains(&hello.index) && ls.contains("io.cri-containerd.pinned=pinned"),
        "{ls}"
    );
    let out = host.ctd.ctr(&["run", "--rm", &hello.reference, "live1"]);
    assert!(out.status.success(), "ctr run: {out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "hello from a live host\n"
    );
    host.install(&b, &[])
        .code(0)
        .stdout_has("0 changed")
        .stdout_has("unchanged image registry.example:5000/team/hello:1.0");
    host.status().code(0).stdout_has("ok (pinned)");
    // Removed behind our back: status says so, a re-install imports again.
    assert!(
        host.ctd
            .ctr(&["images", "rm", &hello.reference])
            .status
            .success()
    );
    host.status()
        .code(7)
        .stderr_has("registry.example:5000/team/hello:1.0: missing");
    host.install(&b, &[]).code(0).stdout_has("import image");
    host.status().code(0);
}

#[test]
fn on_a_host_a_failed_upgrade_puts_the_old_image_back_pinned() {
    if !components() {
        return;
    }
    let f = Fixture::new();
    let Some(host) = LiveHost::new(&f, "host") else {
        return;
    };
    let one = img("hello", "registry.example:5000/team/hello:1.0", "one");
    let two = img("hello", "registry.example:5000/team/hello:1.0", "two");
    let steps = serde_json::json!([
        {"kind": "images", "images": ["hello"], "pin": true},
        {"kind": "file", "dest": "/etc/after", "content": "x\n"},
    ]);
    let b1 = bundle(&f, "one.tar.zst", 1, &[&one], steps.clone());
    let b2 = bundle(&f, "two.tar.zst", 2, &[&two], steps);
    // A first install failing after the import takes the ref away again.
    host.install(&b1, &[("INSTALL_BUNDLE_TEST_FAIL_AT", "2")])
        .code(5)
        .stderr_has("the host is as it was before this run");
    assert!(
        !host.ctd.images().contains("team/hello"),
        "{}",
        host.ctd.images()
    );
    host.install(&b1, &[]).code(0);
    // An upgrade failing after moving the ref: the old image, still pinned,
    // and no backup ref left behind.
    host.install(&b2, &[("INSTALL_BUNDLE_TEST_FAIL_AT", "2")])
        .code(5);
    let ls = host.ctd.images();
    let line = ls
        .lines()
        .find(|l| l.starts_with("registry.example:5000/team/hello:1.0"))
        .unwrap_or_default()
        .to_owned();
    assert!(
        line.contains(&one.index) && line.contains("io.cri-containerd.pinned=pinned"),
        "{ls}"
    );
    assert!(!ls.contains("install-bundle.invalid"), "{ls}");
    // The upgrade itself: the new image, and the backup ref dropped at the commit.
    host.install(&b2, &[])
        .code(0)
        .stdout_has(&format!("update (from {}) image", one.index));
    let ls = host.ctd.images();
    assert!(
        ls.contains(&two.index) && !ls.contains("install-bundle.invalid"),
        "{ls}"
    );
}
