//! The Kubernetes worker example (`bundle-spec/examples/k8s-worker*.json`)
//! served on loopback: what the worker end-to-end tests share — the chroot
//! test (`tests/tests/worker_e2e.rs`) and the booted machine
//! (`tests/tests/vm_worker.rs`).
//!
//! * [`os_packages`]: the real `.deb`s of the OS packages' closure (`socat
//!   conntrack ipset`) as `apt-get` computes it against the built-in
//!   `debian-12-minbase` baseline, downloaded from the Debian archive.
//! * Upstream files: [`standins`] (small scripts in the upstream layout), or
//!   [`debian_upstream`], the real binaries Debian packages (`containerd`,
//!   `runc`, `containernetworking-plugins`, `kubernetes-client`) repacked
//!   the way the upstream releases lay them out; [`service_standin`] for a
//!   program that must stay up as a service (kubelet, kube-proxy).
//! * [`Loopback`]: a signed apt repository of those `.deb`s and the
//!   artifacts at their URL's path, on one loopback server, and
//!   [`Loopback::rewrite`], the example pointed at it (URLs and pins only,
//!   same steps).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{Value, json};

use crate::aptrepo::{Apt, Gpg, Signing, build_repo};
use crate::cli::{Keys, Output, bundler, run};
use crate::debootstrap::{self, sh};
use crate::kit;
use crate::oci::TestImage;
use crate::registry::Registry;
use crate::server::Server;

/// The seed's OS packages.
pub const OS_PACKAGES: &[&str] = &["socat", "conntrack", "ipset"];

/// This node's pod subnet.
pub const POD_CIDR: &str = "172.16.1.0/24";

/// Files an artifact installs: root-relative path and bytes.
pub type Installs = Vec<(String, Vec<u8>)>;

/// Artifact name → its bytes and the files it installs.
pub type Artifacts = BTreeMap<String, (Vec<u8>, Installs)>;

/// The workspace root.
pub fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
        .to_owned()
}

/// `bundle-spec/examples`.
pub fn examples() -> PathBuf {
    workspace().join("bundle-spec/examples")
}

/// A JSON file, parsed (panics with the path on failure).
pub fn read_json(path: &Path) -> Value {
    serde_json::from_slice(
        &std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Writes `v` as pretty JSON.
pub fn write_json(path: &Path, v: &Value) {
    std::fs::write(path, serde_json::to_vec_pretty(v).unwrap()).unwrap();
}

fn os(p: &Path) -> OsString {
    p.as_os_str().to_owned()
}

/// `bundler lock SPEC --cache CACHE`.
pub fn bundler_lock(spec: &Path, cache: &Path) -> Output {
    run(
        &bundler(),
        [os(Path::new("lock")), os(spec), "--cache".into(), os(cache)],
        &[],
    )
}

/// `bundler build SPEC --key K --cache CACHE -o OUT --quiet`, reproducibly
/// (`SOURCE_DATE_EPOCH`).
pub fn bundler_build(spec: &Path, keys: &Keys, cache: &Path, out: &Path) -> Output {
    run(
        &bundler(),
        [
            os(Path::new("build")),
            os(spec),
            "--key".into(),
            os(&keys.secret),
            "--cache".into(),
            os(cache),
            "-o".into(),
            os(out),
            "--quiet".into(),
            // The images' own registry (registry.k8s.io) is unreachable
            // here; their loopback mirror answers at once.
            "--retries".into(),
            "0".into(),
        ],
        &[("SOURCE_DATE_EPOCH", "1700000000")],
    )
}

/// The manifest inside a bundle.
pub fn manifest(bundle: &Path) -> Value {
    serde_json::from_slice(&kit::read_entries(bundle)[0].data).expect("manifest JSON")
}

/// Copies an example spec and its keyrings into `dir`.
pub fn copy_example(dir: &Path, file: &str) -> PathBuf {
    std::fs::create_dir_all(dir.join("keys")).unwrap();
    for e in std::fs::read_dir(examples().join("keys")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dir.join("keys").join(e.file_name())).unwrap();
    }
    let spec = dir.join(file);
    std::fs::copy(examples().join(file), &spec).unwrap();
    spec
}

/// A gzip-compressed tar of `entries` (`name`, content; `None` = directory),
/// owned by root, mode 0755, as release tarballs are.
pub fn tgz(entries: &[(&str, Option<&[u8]>)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_path(name).unwrap();
        h.set_mtime(1_700_000_000);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mode(0o755);
        match data {
            Some(d) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(d.len() as u64);
                h.set_cksum();
                b.append(&h, *d).unwrap();
            }
            None => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_size(0);
                h.set_cksum();
                b.append(&h, &[][..]).unwrap();
            }
        }
    }
    let tar = b.into_inner().unwrap();
    let mut child = Command::new("gzip")
        .args(["-n", "-c"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("gzip");
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(&tar));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(out.status.success());
    out.stdout
}

/// A stand-in executable: prints what the real one prints for `--version`.
pub fn script(says: &str) -> Vec<u8> {
    format!("#!/bin/sh\n# e2e stand-in\necho '{says}'\n").into_bytes()
}

/// A stand-in for a program that runs as a service (kubelet, kube-proxy):
/// prints `says` (with `--version`, only that), then stays up as the real
/// one does, so that its unit is active and a restart gives it a new PID.
pub fn service_standin(says: &str) -> Vec<u8> {
    format!(
        "#!/bin/sh\n# e2e stand-in: runs as a service until stopped\necho '{says}'\n\
         case \"$1\" in --version|version) exit 0 ;; esac\nexec sleep infinity\n"
    )
    .into_bytes()
}

/// The version in a release URL (`.../v1.30.4/...` → `v1.30.4`).
pub fn url_version(url: &str) -> String {
    url.split('/')
        .find(|s| s.starts_with('v') && s[1..].starts_with(|c: char| c.is_ascii_digit()))
        .unwrap_or("v0")
        .to_owned()
}

/// The binaries of the containerd release tarball (`bin/NAME`).
const CONTAINERD_BINARIES: &[&str] = &[
    "containerd",
    "containerd-shim",
    "containerd-shim-runc-v1",
    "containerd-shim-runc-v2",
    "containerd-stress",
    "ctr",
];

/// The plugins of the CNI plugins release tarball (`./NAME`).
const CNI_PLUGINS: &[&str] = &[
    "bandwidth",
    "bridge",
    "dhcp",
    "firewall",
    "host-device",
    "host-local",
    "ipvlan",
    "loopback",
    "macvlan",
    "portmap",
    "ptp",
    "sbr",
    "static",
    "tuning",
    "vlan",
    "vrf",
];

/// The containerd release layout: `bin/` and `bin/NAME`, extracted (strip
/// 1) into `/bin`, which is `usr/bin` on a merged-/usr Debian.
fn containerd_tarball(files: &[(String, Vec<u8>)]) -> (Vec<u8>, Installs) {
    let mut entries: Vec<(&str, Option<&[u8]>)> = vec![("bin/", None)];
    entries.extend(files.iter().map(|(n, b)| (n.as_str(), Some(&b[..]))));
    let installs = files
        .iter()
        .map(|(n, b)| (format!("usr/{n}"), b.clone()))
        .collect();
    (tgz(&entries), installs)
}

/// The CNI plugins release layout: `./` and `./NAME`, into `/opt/cni/bin`.
fn cni_tarball(files: &[(String, Vec<u8>)]) -> (Vec<u8>, Installs) {
    let mut entries: Vec<(&str, Option<&[u8]>)> = vec![("./", None)];
    entries.extend(files.iter().map(|(n, b)| (n.as_str(), Some(&b[..]))));
    let installs = files
        .iter()
        .map(|(n, b)| (format!("opt/cni/bin/{}", &n[2..]), b.clone()))
        .collect();
    (tgz(&entries), installs)
}

/// Upstream-shaped stand-ins for the example's artifacts: for each, its bytes
/// and the files it installs.
pub fn standins(example: &Value) -> Artifacts {
    let mut out = BTreeMap::new();
    for (name, a) in example["artifacts"].as_object().unwrap() {
        let url = a["url"].as_str().unwrap();
        let v = url_version(url);
        let artifact = match name.as_str() {
            "runc" => {
                let b = script(&format!("runc version {}", &v[1..]));
                (b.clone(), vec![("usr/local/bin/runc".to_owned(), b)])
            }
            "crictl" => {
                let b = script(&format!("crictl version {v}"));
                (
                    tgz(&[("crictl", Some(&b))]),
                    vec![("usr/local/bin/crictl".into(), b)],
                )
            }
            "containerd" => containerd_tarball(
                &CONTAINERD_BINARIES
                    .iter()
                    .map(|b| {
                        (
                            format!("bin/{b}"),
                            script(&format!("{b} github.com/containerd/containerd {v}")),
                        )
                    })
                    .collect::<Vec<_>>(),
            ),
            "cni-plugins" => cni_tarball(
                &CNI_PLUGINS
                    .iter()
                    .map(|p| (format!("./{p}"), script(&format!("CNI {p} plugin {v}"))))
                    .collect::<Vec<_>>(),
            ),
            k @ ("kubectl" | "kubelet" | "kube-proxy") => {
                let b = script(&format!("Kubernetes {v}"));
                (b.clone(), vec![(format!("usr/local/bin/{k}"), b)])
            }
            other => panic!("no stand-in for artifact {other}"),
        };
        out.insert(name.clone(), artifact);
    }
    out
}

/// `apt-get download PACKAGE` (`apt`'s candidate), `dpkg-deb -x` into
/// `work/PACKAGE`.
fn unpack_deb(apt: &Apt, work: &Path, package: &str) -> Result<PathBuf, String> {
    let version = apt.candidate(package)?;
    let deb = apt.download(&[(package.to_owned(), version)])?.remove(0);
    let dir = work.join(package);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    sh(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&dir))?;
    Ok(dir)
}

/// The containerd release tarball made of Debian's `containerd` package:
/// `containerd`, `ctr` and the shims (Debian does not package
/// `containerd-stress`), so that the images step really imports into it.
pub fn debian_containerd(apt: &Apt, work: &Path) -> Result<(Vec<u8>, Installs), String> {
    let dir = unpack_deb(apt, work, "containerd")?;
    let mut files = Vec::new();
    for b in CONTAINERD_BINARIES {
        let p = dir.join("usr/bin").join(b);
        if p.exists() {
            let bytes = std::fs::read(&p).map_err(|e| format!("{}: {e}", p.display()))?;
            files.push((format!("bin/{b}"), bytes));
        }
    }
    Ok(containerd_tarball(&files))
}

/// The real upstream programs a Debian package carries, repacked in the
/// upstream release layout: `containerd`, `ctr` and the shims from
/// `containerd`, `runc` from `runc`, the CNI plugins from
/// `containernetworking-plugins`, `kubectl` from `kubernetes-client` (each
/// the candidate of `apt`'s lists, `apt-get download` + `dpkg-deb -x`). The
/// other artifacts of `example` (crictl, kubelet, kube-proxy: no package
/// carries them) are left out.
pub fn debian_upstream(apt: &Apt, work: &Path) -> Result<Artifacts, String> {
    let unpack = |package: &str| unpack_deb(apt, work, package);
    let read = |p: PathBuf| std::fs::read(&p).map_err(|e| format!("{}: {e}", p.display()));
    let mut out = BTreeMap::new();

    out.insert("containerd".to_owned(), debian_containerd(apt, work)?);

    let runc = read(unpack("runc")?.join("usr/sbin/runc"))?;
    out.insert(
        "runc".to_owned(),
        (runc.clone(), vec![("usr/local/bin/runc".to_owned(), runc)]),
    );

    let dir = unpack("containernetworking-plugins")?;
    let mut files = Vec::new();
    for p in CNI_PLUGINS {
        files.push((format!("./{p}"), read(dir.join("usr/lib/cni").join(p))?));
    }
    out.insert("cni-plugins".to_owned(), cni_tarball(&files));

    let kubectl = read(unpack("kubernetes-client")?.join("usr/bin/kubectl"))?;
    out.insert(
        "kubectl".to_owned(),
        (
            kubectl.clone(),
            vec![("usr/local/bin/kubectl".to_owned(), kubectl)],
        ),
    );
    Ok(out)
}

/// The OS packages' closure as apt computes it against the built-in
/// `debian-12-minbase` baseline (private apt state in `target/e2e/apt`), and
/// the real `.deb`s, downloaded once.
#[derive(Debug)]
pub struct OsPackages {
    /// apt with that state (also to look up other packages).
    pub apt: Apt,
    /// The baseline's dpkg status text.
    pub baseline: String,
    /// `(name, version)` in apt's order.
    pub closure: Vec<(String, String)>,
    /// The `.deb` files, in the same order.
    pub debs: Vec<PathBuf>,
}

/// Prepares [`OsPackages`] (`apt-get update` when there are no lists yet,
/// and once more when the mirror moved on since).
pub fn os_packages() -> Result<OsPackages, String> {
    let baseline =
        std::fs::read_to_string(workspace().join("builder/baselines/debian-12-minbase.status"))
            .map_err(|e| e.to_string())?;
    let apt = Apt::new(&debootstrap::cache_dir().join("apt"), &baseline)?;
    apt.update(false)?;
    let mut closure = apt.closure(OS_PACKAGES)?;
    let debs = match apt.download(&closure) {
        Ok(d) => d,
        Err(_) => {
            // The lists are older than the mirror (a point release): refresh once.
            apt.update(true)?;
            closure = apt.closure(OS_PACKAGES)?;
            apt.download(&closure)?
        }
    };
    Ok(OsPackages {
        apt,
        baseline,
        closure,
        debs,
    })
}

/// A snapshot of the static installer (`make static`) in `dir`, checked to
/// run, so that a concurrent `make static` rewriting the binary in place
/// cannot hand a half-written file to a test root or machine.
pub fn static_installer_snapshot(dir: &Path) -> Result<PathBuf, String> {
    let built = crate::cli::installer();
    if !built.ends_with("static/install-bundle") {
        return Err("the static installer is not built (run `make static`)".into());
    }
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let installer = dir.join("install-bundle");
    let mut attempts = 0;
    loop {
        let tmp = dir.join(format!(".install-bundle.{}", std::process::id()));
        std::fs::copy(&built, &tmp).map_err(|e| format!("{}: {e}", built.display()))?;
        let ok = run(&tmp, ["--version"], &[]).code == 0;
        std::fs::rename(&tmp, &installer).map_err(|e| e.to_string())?;
        if ok {
            return Ok(installer);
        }
        attempts += 1;
        if attempts >= 10 {
            return Err(format!("{} does not run", built.display()));
        }
        std::thread::sleep(std::time::Duration::from_secs(3));
    }
}

/// One loopback server for a worker bundle's downloads: a signed apt
/// repository of `.deb`s at `/debian` and artifacts at their URL's path.
#[derive(Debug)]
pub struct Loopback {
    /// The served directory.
    pub www: PathBuf,
    /// The server.
    pub server: Server,
    /// The repository's signing key.
    pub gpg: Gpg,
    /// The plain `Packages` index.
    pub packages_index: PathBuf,
}

impl Loopback {
    /// A repository of `debs` in `www`, served.
    pub fn new(www: &Path, debs: &[PathBuf]) -> Result<Loopback, String> {
        let gpg = Gpg::new("e2e bookworm mirror")?;
        let packages_index = build_repo(
            &www.join("debian"),
            debs,
            "bookworm",
            "amd64",
            &gpg,
            Signing {
                inrelease: true,
                release_gpg: false,
            },
        )?;
        Ok(Loopback {
            www: www.to_owned(),
            server: Server::serve_dir(www),
            gpg,
            packages_index,
        })
    }

    /// Serves `bytes` at `/REL`; the artifact entry that pins it.
    pub fn publish(&self, rel: &str, bytes: &[u8]) -> Value {
        let path = self.www.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, bytes).unwrap();
        json!({
            "url": self.server.url(rel),
            "sha256": bundle_spec::Sha256Digest::of(bytes).to_hex(),
            "size": bytes.len(),
        })
    }

    /// `example` with only URLs and pins rewritten: each artifact served at
    /// its URL's path with `artifacts`' bytes, the apt source pointed at this
    /// repository with its keyring (written to `spec_dir/keys/e2e-mirror.gpg`),
    /// and no `expires` (the example's expiry is a release decision; the
    /// tests must not age).
    pub fn rewrite(&self, example: &Value, artifacts: &Artifacts, spec_dir: &Path) -> Value {
        let mut spec = example.clone();
        for (name, (bytes, _)) in artifacts {
            let url = example["artifacts"][name]["url"].as_str().unwrap();
            let rel = url.split_once("://").map_or(url, |(_, r)| r);
            spec["artifacts"][name] = self.publish(rel, bytes);
        }
        spec["apt"]["sources"][0]["url"] = json!(self.server.url("debian"));
        spec["apt"]["sources"][0]["keyring"] = json!("keys/e2e-mirror.gpg");
        spec.as_object_mut().unwrap().remove("expires");
        std::fs::create_dir_all(spec_dir.join("keys")).unwrap();
        self.gpg
            .export(&spec_dir.join("keys/e2e-mirror.gpg"))
            .unwrap();
        spec
    }
}

/// A loopback registry (Debian's `docker-registry`) serving the example's
/// images and any test images, each as a mirror of its ref: the bundle keeps
/// the example's refs (containerd's `sandbox_image` and the kubelet's flag
/// name them), only digests and `mirrors` are rewritten, as for artifacts.
#[derive(Debug)]
pub struct ImageMirror {
    /// The registry.
    pub registry: Registry,
    /// Image name in the spec → its ref and the image served for it.
    pub images: BTreeMap<String, (String, TestImage)>,
}

impl ImageMirror {
    /// A registry serving a stand-in for each of `example`'s images (only
    /// `pause` is known: [`TestImage::pause`]; upstream's digest cannot be
    /// fetched offline).
    pub fn new(example: &Value) -> ImageMirror {
        let mut mirror = ImageMirror {
            registry: Registry::plain(),
            images: BTreeMap::new(),
        };
        for (name, image) in example["images"].as_object().into_iter().flatten() {
            let image_ref = image["ref"].as_str().unwrap();
            let standin = match name.as_str() {
                "pause" => TestImage::pause(),
                other => panic!("no stand-in for image {other}"),
            };
            mirror.add(name, image_ref, standin);
        }
        mirror
    }

    /// Serves `image` as `image_ref` (`HOST/REPOSITORY:TAG`).
    pub fn add(&mut self, name: &str, image_ref: &str, image: TestImage) {
        let (repository, tag) = Self::repository_tag(image_ref);
        image.push(&self.registry, &repository, &tag);
        self.images
            .insert(name.to_owned(), (image_ref.to_owned(), image));
    }

    fn repository_tag(image_ref: &str) -> (String, String) {
        let name = image_ref.split_once('/').unwrap().1;
        let (r, t) = name.rsplit_once(':').unwrap();
        (r.to_owned(), t.to_owned())
    }

    /// The digest served for image `name`.
    pub fn digest(&self, name: &str) -> &str {
        self.images[name].1.digest()
    }

    /// The ref of image `name`.
    pub fn image_ref(&self, name: &str) -> &str {
        &self.images[name].0
    }

    /// `spec`'s `images` entries: ref, the served digest, this registry as
    /// the mirror.
    pub fn rewrite(&self, spec: &mut Value) {
        for (name, (image_ref, image)) in &self.images {
            let (repository, _) = Self::repository_tag(image_ref);
            spec["images"][name] = json!({
                "ref": image_ref,
                "digest": image.digest(),
                "mirrors": [format!("{}/{repository}", self.registry.host())],
            });
        }
    }
}
