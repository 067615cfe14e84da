//! A realistic bundle for the installer tests: every step kind, real `.deb`
//! made by `dpkg-deb`, a tar.zst to extract, built by the real `bundler`.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::cli::{Keys, bundler, keygen, run};

/// The bundle under test and where its inputs live.
#[derive(Debug)]
pub struct Fixture {
    /// Scratch directory (kept alive by the test).
    pub dir: tempfile::TempDir,
    /// The release key.
    pub keys: Keys,
}

/// The files the fixture's spec installs, relative to a root.
pub const INSTALLED_FILES: &[&str] = &[
    "usr/local/bin/runc",
    "usr/local/bin/crictl",
    "bin/containerd",
    "bin/ctr",
    "etc/cni/net.d/10-bridge.conf",
    "etc/systemd/system/containerd.service",
    "etc/modules-load.d/overlay.conf",
    "usr/share/demo-motd/motd",
];

/// Contents of the fake runc binary (also used to check bytes).
pub fn runc_bytes() -> Vec<u8> {
    let mut v = b"#!/bin/sh\necho runc 1.0.0-rc93\n".to_vec();
    v.extend((0..20_000u32).map(|i| (i * 7 % 251) as u8));
    v
}

fn tar_zst(entries: &[(&str, &[u8], u32)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data, mode) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_path(name).expect("name");
        h.set_size(data.len() as u64);
        h.set_mode(*mode);
        h.set_mtime(0);
        h.set_cksum();
        b.append(&h, *data).expect("append");
    }
    let tar = b.into_inner().expect("tar");
    zstd::encode_all(&tar[..], 3).expect("zstd")
}

/// Builds a `.deb` with `dpkg-deb` (no maintainer scripts).
pub fn make_deb(
    dir: &Path,
    package: &str,
    version: &str,
    depends: Option<&str>,
    file: (&str, &str),
) -> PathBuf {
    let pkg = dir.join(format!("{package}-pkg"));
    std::fs::create_dir_all(pkg.join("DEBIAN")).expect("mkdir");
    let mut control = format!(
        "Package: {package}\nVersion: {version}\nArchitecture: all\nMaintainer: Test <test@example.invalid>\nDescription: test package\n a package made by the tests\n"
    );
    if let Some(d) = depends {
        control.push_str(&format!("Depends: {d}\n"));
    }
    std::fs::write(pkg.join("DEBIAN/control"), control).expect("control");
    let target = pkg.join(file.0);
    std::fs::create_dir_all(target.parent().expect("parent")).expect("mkdir");
    std::fs::write(&target, file.1).expect("file");
    let out = dir.join(format!("{package}_{version}_all.deb"));
    let status = Command::new("dpkg-deb")
        .args(["--root-owner-group", "-Zxz", "--build"])
        .arg(&pkg)
        .arg(&out)
        .env("SOURCE_DATE_EPOCH", "0")
        .output()
        .expect("dpkg-deb (apt-get install dpkg)");
    assert!(status.status.success(), "dpkg-deb failed: {status:?}");
    out
}

/// Builds `NAME_VERSION_all.deb` in `dir` with `dpkg-deb`: `control` holds
/// the fields after `Package`/`Version`/`Architecture: all` (e.g.
/// `"Pre-Depends: libdemo (>= 1.0)\n"`), `files` the payload (paths relative
/// to `/`), `conffiles` the paths listed in `DEBIAN/conffiles`, `postinst` a
/// maintainer script.
pub fn build_deb(
    dir: &Path,
    package: &str,
    version: &str,
    control: &str,
    files: &[(&str, &str)],
    conffiles: &[&str],
    postinst: Option<&str>,
) -> PathBuf {
    let pkg = tempfile::tempdir_in(dir).expect("tempdir");
    let root = pkg.path();
    std::fs::create_dir_all(root.join("DEBIAN")).expect("mkdir");
    std::fs::write(
        root.join("DEBIAN/control"),
        format!(
            "Package: {package}\nVersion: {version}\nArchitecture: all\nMaintainer: Test <test@example.invalid>\n{control}Description: test package {package}\n"
        ),
    )
    .expect("control");
    for (path, content) in files {
        let target = root.join(path.trim_start_matches('/'));
        std::fs::create_dir_all(target.parent().expect("parent")).expect("mkdir");
        std::fs::write(&target, content).expect("file");
    }
    if !conffiles.is_empty() {
        std::fs::write(root.join("DEBIAN/conffiles"), conffiles.join("\n") + "\n")
            .expect("conffiles");
    }
    if let Some(script) = postinst {
        let p = root.join("DEBIAN/postinst");
        std::fs::write(&p, script).expect("postinst");
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("chmod");
    }
    let safe_version = version.replace(':', "%3a");
    let out = dir.join(format!("{package}_{safe_version}_all.deb"));
    let status = Command::new("dpkg-deb")
        .args(["--root-owner-group", "-Zgzip", "--build"])
        .arg(root)
        .arg(&out)
        .env("SOURCE_DATE_EPOCH", "0")
        .output()
        .expect("dpkg-deb (apt-get install dpkg)");
    assert!(status.status.success(), "dpkg-deb failed: {status:?}");
    out
}

impl Fixture {
    /// Writes the artifacts and a spec using every step kind.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let keys = keygen(dir.path(), "release");
        let files = dir.path().join("files");
        std::fs::create_dir_all(&files).expect("mkdir");
        std::fs::write(files.join("runc.amd64"), runc_bytes()).expect("write");
        std::fs::write(
            files.join("crictl.tar.zst"),
            tar_zst(&[
                ("crictl", b"#!/bin/sh\necho crictl\n", 0o755),
                ("LICENSE", b"license\n", 0o644),
            ]),
        )
        .expect("write");
        std::fs::write(
            files.join("containerd.tar.zst"),
            tar_zst(&[
                ("bin/containerd", b"#!/bin/sh\necho containerd\n", 0o755),
                ("bin/ctr", b"#!/bin/sh\necho ctr\n", 0o755),
            ]),
        )
        .expect("write");
        let deb = make_deb(
            &files,
            "demo-motd",
            "1.0-1",
            None,
            ("usr/share/demo-motd/motd", "hello\n"),
        );
        std::fs::rename(&deb, files.join("demo-motd.deb")).expect("rename");
        Self { dir, keys }
    }

    /// A path in the scratch directory.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// The spec (serial, expiry and extra steps adjustable), written to `NAME.json`.
    pub fn write_spec(
        &self,
        name: &str,
        serial: u64,
        extra_steps: &[serde_json::Value],
    ) -> PathBuf {
        let mut steps = vec![
            serde_json::json!({"kind": "swap-off"}),
            serde_json::json!({"kind": "kernel-module", "name": "overlay"}),
            serde_json::json!({"kind": "binary", "artifact": "runc", "dest": "/usr/local/bin/runc", "mode": "0755"}),
            serde_json::json!({"kind": "extract", "artifact": "crictl", "dest": "/usr/local/bin", "include": ["crictl"]}),
            serde_json::json!({"kind": "extract", "artifact": "containerd", "dest": "/bin", "strip_components": 1}),
            serde_json::json!({"kind": "directory", "paths": ["/var/lib/kubelet", "/etc/cni/net.d"], "mode": "0755"}),
            serde_json::json!({"kind": "file", "dest": "/etc/cni/net.d/10-bridge.conf", "mode": "0644", "template": true,
                "content": "{ \"subnet\": \"${POD_CIDR}\", \"dns\": \"${CLUSTER_DNS}\" }\n"}),
            serde_json::json!({"kind": "systemd-unit", "name": "containerd.service",
                "content": "[Unit]\nDescription=containerd\n[Service]\nExecStart=/bin/containerd\n[Install]\nWantedBy=multi-user.target\n",
                "enable": true, "start": true}),
            serde_json::json!({"kind": "debs", "artifacts": ["demo-motd"]}),
            serde_json::json!({"kind": "command", "argv": ["sysctl", "--system"]}),
        ];
        steps.extend(extra_steps.iter().cloned());
        let spec = serde_json::json!({
            "apiVersion": "bundle/v1", "name": "k8s-worker", "version": format!("1.21.0-{serial}"), "serial": serial,
            "target": {"os": "linux", "arch": "amd64"},
            "variables": {
                "POD_CIDR": {"description": "this node's pod subnet", "required": true, "pattern": "^[0-9.]+/[0-9]+$"},
                "CLUSTER_DNS": {"default": "10.32.0.10"}
            },
            "artifacts": {
                "runc": {"url": "file:files/runc.amd64"},
                "crictl": {"url": "file:files/crictl.tar.zst"},
                "containerd": {"url": "file:files/containerd.tar.zst"},
                "demo-motd": {"url": "file:files/demo-motd.deb"}
            },
            "steps": steps,
        });
        let path = self.path(name);
        std::fs::write(&path, serde_json::to_vec_pretty(&spec).expect("json")).expect("write spec");
        run(
            &bundler(),
            [
                "pin".as_ref(),
                path.as_os_str(),
                "--cache".as_ref(),
                self.path("cache").as_os_str(),
            ],
            &[],
        )
        .code(0);
        path
    }

    /// Builds `spec` into `out` with the release key.
    pub fn build(&self, spec: &Path, out: &str) -> PathBuf {
        let bundle = self.path(out);
        run(
            &bundler(),
            [
                "build".as_ref(),
                spec.as_os_str(),
                "--key".as_ref(),
                self.keys.secret.as_os_str(),
                "--cache".as_ref(),
                self.path("cache").as_os_str(),
                "-o".as_ref(),
                bundle.as_os_str(),
                "--quiet".as_ref(),
            ],
            &[("SOURCE_DATE_EPOCH", "1700000000")],
        )
        .code(0);
        bundle
    }

    /// The standard bundle (serial 1).
    pub fn bundle(&self) -> PathBuf {
        let spec = self.write_spec("spec.json", 1, &[]);
        self.build(&spec, "worker.tar.zst")
    }

    /// A fresh root: an empty dpkg database, an fstab with a swap line,
    /// merged-/usr style `/bin -> usr/bin`, and an old runc to be replaced.
    pub fn root(&self, name: &str) -> PathBuf {
        let root = self.path(name);
        for d in [
            "etc",
            "usr/bin",
            "usr/local/bin",
            "var/lib/dpkg/info",
            "var/lib/dpkg/updates",
        ] {
            std::fs::create_dir_all(root.join(d)).expect("mkdir");
        }
        std::os::unix::fs::symlink("usr/bin", root.join("bin")).expect("symlink");
        std::fs::write(root.join("var/lib/dpkg/status"), "").expect("status");
        std::fs::write(
            root.join("etc/fstab"),
            "UUID=0 / ext4 defaults 0 1\n/swap.img none swap sw 0 0\n",
        )
        .expect("fstab");
        std::fs::write(
            root.join("etc/os-release"),
            "ID=debian\nVERSION_ID=\"12\"\n",
        )
        .expect("os-release");
        std::fs::write(root.join("usr/local/bin/runc"), "old runc\n").expect("old runc");
        root
    }
}

impl Default for Fixture {
    fn default() -> Self {
        Self::new()
    }
}
