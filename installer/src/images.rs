//! The `images` step kind: container images imported into containerd,
//! idempotently by digest, optionally pinned against the kubelet's image
//! garbage collection.
//!
//! **Talking to containerd.** Through `ctr`, containerd's own client, which
//! every containerd install ships (the worker bundle installs it beside
//! `containerd`): the installer carries no gRPC/HTTP2 stack of its own, so it
//! stays small and static, and `ctr images import` is containerd's own
//! importer of OCI image layouts.
//!
//! **Which containerd.**
//! * On a host whose containerd answers on the step's `address` (default
//!   `/run/containerd/containerd.sock`): that one. When the bundle itself
//!   installs and starts containerd (a unit whose `ExecStart=` runs a
//!   `containerd` binary), that unit is (re)started right before this step, so
//!   a fresh node gets its images in one run.
//! * Below `--root` (image building), or on a host where no systemd runs (a
//!   chroot) and nothing answers: a private containerd, the root's own binary
//!   when there is one (else the host's), on `ROOT/var/lib/containerd`, with a
//!   temporary state directory and socket and only the plugins an import
//!   needs; it is stopped after the step. Images are imported without
//!   unpacking (containerd unpacks on first use): a root built this way boots
//!   with its images in place.
//!
//! **Idempotent.** An image whose ref is already at the bundled digest (and
//! pinned, when `pin`) is unchanged and not imported again. The plan shows
//! create / update (with the digest the ref had) / pin / unchanged.
//!
//! **Transactional.** On a live containerd each change is a journaled command
//! with its compensation: a created ref is removed, a moved ref is first kept
//! under a backup name (`install-bundle.invalid/backup/…`, which holds its
//! content and labels) and put back from it, a pin is taken off again; backups
//! are dropped at the commit. With a private containerd, containerd's metadata
//! database is preserved (or its whole tree, when this run creates it) and put
//! back on rollback; content added meanwhile is unreferenced and removed by
//! containerd's garbage collection.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bundle_spec::image::{DEFAULT_ADDRESS, PINNED_LABEL};
use bundle_spec::spec::{ImagesStep, Manifest};
use serde::Serialize;

use crate::journal::Transaction;
use crate::paths::{Kind, Root};
use crate::plan::Op;

/// How long to wait for a containerd socket to answer.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Where containerd keeps its data below a root (its default `root`).
pub const DATA_ROOT: &str = "/var/lib/containerd";
/// containerd's metadata database below [`DATA_ROOT`].
pub const META_DB: &str = "io.containerd.metadata.v1.bolt/meta.db";
/// Directories searched for `containerd`/`ctr` inside a root.
const ROOT_BIN_DIRS: &[&str] = &["/usr/local/bin", "/usr/bin", "/bin", "/usr/local/sbin"];

/// What importing one image changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "change", content = "from")]
pub enum ImageChange {
    /// The ref does not exist yet.
    Create,
    /// The ref points to another digest (the one given).
    Update(String),
    /// Same digest; the pinned label is to be set.
    Pin,
    /// Nothing to do.
    Unchanged,
    /// Not known before containerd runs (it is started by this bundle).
    Check,
    /// An image the installed receipt has and this bundle no longer
    /// carries: its pinned label is taken off, so the kubelet's garbage
    /// collection may remove it once unused.
    Unpin,
}

/// Where the step's containerd is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind", content = "address")]
pub enum Daemon {
    /// A running containerd at this socket.
    Live(String),
    /// A private containerd on the root's data directory.
    Private,
}

/// `ctr` against one containerd.
#[derive(Debug, Clone)]
pub struct Ctr {
    program: PathBuf,
    address: String,
}

/// A ref's current state in containerd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageState {
    /// The target digest (`sha256:…`).
    pub digest: String,
    /// Whether [`PINNED_LABEL`] is `pinned`.
    pub pinned: bool,
}

impl Ctr {
    /// `ctr` at `program` talking to `address`.
    pub fn new(program: PathBuf, address: &str) -> Self {
        Self {
            program,
            address: address.to_owned(),
        }
    }

    /// The full command line of `ctr -a ADDRESS -n NAMESPACE ARGS...`.
    pub fn argv(&self, namespace: &str, args: &[&str]) -> Vec<String> {
        let mut v = vec![
            self.program.display().to_string(),
            "-a".into(),
            self.address.clone(),
            "-n".into(),
            namespace.into(),
        ];
        v.extend(args.iter().map(|a| (*a).to_owned()));
        v
    }

    fn output(&self, namespace: &str, args: &[&str]) -> Result<String, String> {
        let argv = self.argv(namespace, args);
        let out = crate::apply::command(&argv, None)
            .output()
            .map_err(|e| format!("cannot run {}: {e}", self.program.display()))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "{} failed ({}): {}",
                argv.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    /// Whether containerd answers.
    pub fn reachable(&self) -> bool {
        self.output("default", &["version"]).is_ok()
    }

    /// The state of `reference` in `namespace` (`None`: no such ref).
    pub fn state(&self, namespace: &str, reference: &str) -> Result<Option<ImageState>, String> {
        let text = self.output(namespace, &["images", "ls"])?;
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.first() != Some(&reference) || fields.len() < 3 {
                continue;
            }
            let labels = fields.last().copied().unwrap_or("-");
            return Ok(Some(ImageState {
                digest: fields[2].to_owned(),
                pinned: labels
                    .split(',')
                    .any(|l| l == format!("{PINNED_LABEL}=pinned")),
            }));
        }
        Ok(None)
    }

    /// Runs `ctr ARGS` in `namespace`.
    pub fn run(&self, namespace: &str, args: &[&str]) -> Result<(), String> {
        self.output(namespace, args).map(drop)
    }

    /// Waits until containerd answers.
    pub fn wait_ready(&self) -> Result<(), String> {
        let start = Instant::now();
        while start.elapsed() < READY_TIMEOUT {
            if self.reachable() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(format!(
            "containerd does not answer on {} after {} s",
            self.address,
            READY_TIMEOUT.as_secs()
        ))
    }
}

/// A containerd started for one step on a root's data directory.
#[derive(Debug)]
pub struct PrivateContainerd {
    child: Option<Child>,
    dir: tempfile::TempDir,
    /// `ctr` against it.
    pub ctr: Ctr,
}

impl PrivateContainerd {
    /// Starts `containerd` on `data_root` (a real path) with a temporary
    /// state directory and socket and only what importing needs: no CRI, no
    /// `/opt` plugin (which would write to the host's `/opt`), no
    /// snapshotters that need kernel support.
    pub fn start(containerd: &Path, ctr: &Path, data_root: &Path) -> Result<Self, String> {
        let dir = tempfile::Builder::new()
            .prefix("ib-ctd-")
            .tempdir_in("/tmp")
            .map_err(|e| format!("temporary directory for containerd: {e}"))?;
        let sock = dir.path().join("sock");
        let config = format!(
            "version = 2\nroot = {root:?}\nstate = {state:?}\n\
             disabled_plugins = [\"io.containerd.grpc.v1.cri\", \"io.containerd.internal.v1.opt\", \
             \"io.containerd.snapshotter.v1.aufs\", \"io.containerd.snapshotter.v1.btrfs\", \
             \"io.containerd.snapshotter.v1.zfs\", \"io.containerd.snapshotter.v1.devmapper\", \
             \"io.containerd.tracing.processor.v1.otlp\"]\n\
             [grpc]\n  address = {sock:?}\n[ttrpc]\n  address = {ttrpc:?}\n",
            root = data_root.display().to_string(),
            state = dir.path().join("state").display().to_string(),
            sock = sock.display().to_string(),
            ttrpc = dir.path().join("sock.ttrpc").display().to_string(),
        );
        let config_path = dir.path().join("config.toml");
        std::fs::write(&config_path, config).map_err(|e| format!("containerd config: {e}"))?;
        let log = std::fs::File::create(dir.path().join("log"))
            .map_err(|e| format!("containerd log: {e}"))?;
        let child = Command::new(containerd)
            .arg("--config")
            .arg(&config_path)
            .env("PATH", crate::apply::RUN_PATH)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", containerd.display()))?;
        let mut me = Self {
            child: Some(child),
            ctr: Ctr::new(ctr.to_owned(), &sock.display().to_string()),
            dir,
        };
        if let Err(e) = me.ctr.wait_ready() {
            let log = me.log();
            me.stop();
            return Err(format!("{e}; its log:\n{log}"));
        }
        Ok(me)
    }

    fn log(&self) -> String {
        let mut s = String::new();
        let _ = std::fs::File::open(self.dir.path().join("log"))
            .and_then(|mut f| f.read_to_string(&mut s));
        s.lines()
            .rev()
            .take(20)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Stops it (SIGTERM, then SIGKILL after 20 s) and waits.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Some(pid) = rustix::process::Pid::from_raw(child.id() as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(20) {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for PrivateContainerd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Finds `program` on the host (PATH as the installer runs programs).
fn host_program(program: &str) -> Option<PathBuf> {
    crate::apply::RUN_PATH
        .split(':')
        .map(|d| Path::new(d).join(program))
        .find(|p| p.is_file())
}

/// `program` inside the root (its real path), if a regular file is there.
fn root_program(root: &Root, program: &str) -> Option<PathBuf> {
    ROOT_BIN_DIRS.iter().find_map(|d| {
        let target = format!("{d}/{program}");
        match root.stat(&target) {
            Ok(Some(m)) if m.kind == Kind::File => root
                .parent(&target)
                .and_then(|(dir, name)| dir.real_path().map(|p| p.join(name)))
                .ok(),
            _ => None,
        }
    })
}

/// The `containerd` a private daemon runs: the root's own, else the host's.
pub fn private_containerd_binary(root: &Root) -> Option<PathBuf> {
    root_program(root, "containerd").or_else(|| host_program("containerd"))
}

/// The `ctr` used: the host's, else the root's.
pub fn ctr_binary(root: &Root) -> Option<PathBuf> {
    host_program("ctr").or_else(|| root_program(root, "ctr"))
}

/// The data directory a root's containerd uses: `root = "…"` of its
/// `/etc/containerd/config.toml`, else [`DATA_ROOT`].
pub fn data_root(root: &Root) -> String {
    let text = root
        .open_following("/etc/containerd/config.toml")
        .ok()
        .and_then(|f| std::io::read_to_string(f).ok())
        .unwrap_or_default();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            break; // only top-level keys
        }
        if let Some(v) = line.strip_prefix("root")
            && let Some(v) = v.trim_start().strip_prefix('=')
        {
            let v = v.trim().trim_matches('"').trim_matches('\'');
            if v.starts_with('/') {
                return v.to_owned();
            }
        }
    }
    DATA_ROOT.to_owned()
}

/// The daemon the step uses (see the module docs). `containerd_started`:
/// the bundle starts containerd right before this step.
pub fn daemon_for(root: &Root, step: &ImagesStep, containerd_started: bool) -> Daemon {
    let address = step.address.as_deref().unwrap_or(DEFAULT_ADDRESS);
    if !root.is_host() {
        return Daemon::Private;
    }
    let live = ctr_binary(root).is_some_and(|c| Ctr::new(c, address).reachable());
    if live || (containerd_started && crate::units::booted()) {
        Daemon::Live(address.to_owned())
    } else {
        Daemon::Private
    }
}

/// The plan of one step: an [`Op::Image`] per image.
pub fn plan_step(
    root: &Root,
    manifest: &Manifest,
    staging: &crate::stage::Staging,
    step: &ImagesStep,
    daemon: &Daemon,
) -> Result<Vec<Op>, String> {
    let mut states: Vec<Option<ImageState>> = vec![None; step.images.len()];
    let mut known = true;
    match daemon {
        Daemon::Live(address) => match ctr_binary(root) {
            Some(ctr) if Ctr::new(ctr.clone(), address).reachable() => {
                let ctr = Ctr::new(ctr, address);
                for (i, name) in step.images.iter().enumerate() {
                    let image = &manifest.images[name];
                    states[i] = ctr.state(&step.namespace, &image.reference.to_string())?;
                }
            }
            _ => known = false,
        },
        Daemon::Private => {
            let data = data_root(root);
            if root.stat(&data).map_err(|e| e.to_string())?.is_some() {
                let (containerd, ctr) = private_binaries(root)?;
                let real = root
                    .open_dir(&data)
                    .and_then(|d| d.real_path())
                    .map_err(|e| e.to_string())?;
                let daemon = PrivateContainerd::start(&containerd, &ctr, &real)?;
                for (i, name) in step.images.iter().enumerate() {
                    let image = &manifest.images[name];
                    states[i] = daemon
                        .ctr
                        .state(&step.namespace, &image.reference.to_string())?;
                }
            }
        }
    }
    Ok(step
        .images
        .iter()
        .zip(states)
        .map(|(name, state)| {
            let image = &manifest.images[name];
            let digest = image.digest.to_string();
            let change = match state {
                _ if !known => ImageChange::Check,
                None => ImageChange::Create,
                Some(s) if s.digest != digest => ImageChange::Update(s.digest),
                Some(s) if step.pin && !s.pinned => ImageChange::Pin,
                Some(_) => ImageChange::Unchanged,
            };
            Op::Image {
                name: name.to_string(),
                reference: image.reference.to_string(),
                digest,
                namespace: step.namespace.clone(),
                pin: step.pin,
                daemon: daemon.clone(),
                path: staging.artifact(name),
                change,
            }
        })
        .collect())
}

/// The binaries of a private containerd, or why there are none.
pub fn private_binaries(root: &Root) -> Result<(PathBuf, PathBuf), String> {
    let containerd = private_containerd_binary(root).ok_or_else(|| {
        "no containerd to import images with: none in the root (/usr/local/bin, /usr/bin, /bin) and none on this machine (apt-get install containerd)".to_owned()
    })?;
    let ctr = ctr_binary(root).ok_or_else(|| {
        "no ctr to import images with: none on this machine and none in the root".to_owned()
    })?;
    Ok((containerd, ctr))
}

/// A stable backup name for `reference` while a run moves it.
fn backup_ref(reference: &str) -> String {
    let h = bundle_spec::Sha256Digest::of(reference.as_bytes()).to_string();
    format!(
        "install-bundle.invalid/backup/{}:{}",
        &h[..16],
        std::process::id()
    )
}

/// Applies the [`Op::Image`]s of one step (all on the same daemon).
pub fn apply_step(
    root: &Root,
    tx: &mut Transaction,
    ops: &[&Op],
    log: &dyn crate::apply::Log,
) -> Result<(), String> {
    let Some(Op::Image { daemon, .. }) = ops.first() else {
        return Ok(());
    };
    match daemon {
        Daemon::Live(address) => {
            let ctr = ctr_binary(root)
                .ok_or_else(|| "no ctr to import images with".to_owned())
                .map(|c| Ctr::new(c, address))?;
            ctr.wait_ready()?;
            for op in ops {
                apply_live(tx, &ctr, op, log)?;
            }
            Ok(())
        }
        Daemon::Private => {
            let data = data_root(root);
            match root.stat(&data).map_err(|e| e.to_string())? {
                Some(_) => tx
                    .preserve(&format!("{data}/{META_DB}"))
                    .map_err(|e| format!("keeping containerd's metadata: {e}"))?,
                None => {
                    tx.tree(&data).map_err(|e| e.to_string())?;
                    let (dir, name) = root.parent(&data).map_err(|e| e.to_string())?;
                    dir.mkdir(&name, 0o711).map_err(|e| e.to_string())?;
                }
            }
            let (containerd, ctr) = private_binaries(root)?;
            let real = root
                .open_dir(&data)
                .and_then(|d| d.real_path())
                .map_err(|e| e.to_string())?;
            let mut daemon = PrivateContainerd::start(&containerd, &ctr, &real)?;
            let result = ops
                .iter()
                .try_for_each(|op| apply_private(&daemon.ctr, op, log));
            daemon.stop();
            result
        }
    }
}

fn import_args(path: &Path, unpack: bool) -> Vec<String> {
    let mut v = vec!["images".to_owned(), "import".to_owned()];
    if !unpack {
        v.push("--no-unpack".into());
    }
    v.push(path.display().to_string());
    v
}

fn check_imported(ctr: &Ctr, op: &Op) -> Result<(), String> {
    let Op::Image {
        reference,
        digest,
        namespace,
        pin,
        ..
    } = op
    else {
        return Ok(());
    };
    match ctr.state(namespace, reference)? {
        Some(s) if s.digest == *digest && (s.pinned || !pin) => Ok(()),
        Some(s) => Err(format!(
            "after the import containerd has {reference} at {} (pinned: {}), expected {digest}{}",
            s.digest,
            s.pinned,
            if *pin { " pinned" } else { "" }
        )),
        None => Err(format!(
            "after the import containerd has no image {reference} in namespace {namespace}"
        )),
    }
}

fn apply_live(
    tx: &mut Transaction,
    ctr: &Ctr,
    op: &Op,
    log: &dyn crate::apply::Log,
) -> Result<(), String> {
    let Op::Image {
        reference,
        digest,
        namespace,
        pin,
        path,
        ..
    } = op
    else {
        return Ok(());
    };
    let ns = namespace.as_str();
    if let Op::Image {
        change: ImageChange::Unpin,
        ..
    } = op
    {
        if ctr.state(ns, reference)?.is_some_and(|s| s.pinned) {
            tx.exec(
                &format!("unpin image {reference} (no longer in the bundle)"),
                Some(ctr.argv(
                    ns,
                    &[
                        "images",
                        "label",
                        reference,
                        &format!("{PINNED_LABEL}=pinned"),
                    ],
                )),
            )
            .map_err(|e| e.to_string())?;
            let r = ctr.run(
                ns,
                &["images", "label", reference, &format!("{PINNED_LABEL}=")],
            );
            tx.done(r.is_ok()).map_err(|e| e.to_string())?;
            r?;
            log.did(&op.describe());
        }
        return Ok(());
    }
    // The plan may be older than containerd's state (it was started just now).
    let change = match ctr.state(ns, reference)? {
        None => ImageChange::Create,
        Some(s) if s.digest != *digest => ImageChange::Update(s.digest),
        Some(s) if *pin && !s.pinned => ImageChange::Pin,
        Some(_) => return Ok(()),
    };
    let pin_label = format!("{PINNED_LABEL}=pinned");
    let err = |e: std::io::Error| e.to_string();
    match &change {
        ImageChange::Create => {
            tx.exec(
                &format!("import image {reference} ({digest})"),
                Some(ctr.argv(ns, &["images", "rm", reference])),
            )
            .map_err(err)?;
        }
        ImageChange::Update(old) => {
            let backup = backup_ref(reference);
            tx.exec_with_cleanup(
                &format!("keep {reference} ({old}) as {backup}"),
                Some(ctr.argv(ns, &["images", "rm", &backup])),
                Some(ctr.argv(ns, &["images", "rm", &backup])),
            )
            .map_err(err)?;
            let kept = ctr.run(ns, &["images", "tag", "--force", reference, &backup]);
            tx.done(kept.is_ok()).map_err(err)?;
            kept?;
            tx.exec(
                &format!("import image {reference} ({digest}, was {old})"),
                Some(ctr.argv(ns, &["images", "tag", "--force", &backup, reference])),
            )
            .map_err(err)?;
        }
        ImageChange::Pin => {
            tx.exec(
                &format!("pin image {reference}"),
                Some(ctr.argv(
                    ns,
                    &["images", "label", reference, &format!("{PINNED_LABEL}=")],
                )),
            )
            .map_err(err)?;
        }
        ImageChange::Unchanged | ImageChange::Check | ImageChange::Unpin => return Ok(()),
    }
    let mut result = Ok(());
    if change != ImageChange::Pin {
        let args = import_args(path, true);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        result = ctr.run(ns, &args);
    }
    if result.is_ok() && *pin {
        result = ctr.run(ns, &["images", "label", reference, &pin_label]);
    }
    if result.is_ok() {
        result = check_imported(ctr, op);
    }
    tx.done(result.is_ok()).map_err(err)?;
    result?;
    let mut done = op.clone();
    if let Op::Image { change: c, .. } = &mut done {
        *c = change;
    }
    log.did(&done.describe());
    Ok(())
}

fn apply_private(ctr: &Ctr, op: &Op, log: &dyn crate::apply::Log) -> Result<(), String> {
    let Op::Image {
        reference,
        digest,
        namespace,
        pin,
        path,
        ..
    } = op
    else {
        return Ok(());
    };
    let ns = namespace.as_str();
    if let Op::Image {
        change: ImageChange::Unpin,
        ..
    } = op
    {
        if ctr.state(ns, reference)?.is_some_and(|s| s.pinned) {
            ctr.run(
                ns,
                &["images", "label", reference, &format!("{PINNED_LABEL}=")],
            )?;
            log.did(&op.describe());
        }
        return Ok(());
    }
    let change = match ctr.state(ns, reference)? {
        None => ImageChange::Create,
        Some(s) if s.digest != *digest => ImageChange::Update(s.digest),
        Some(s) if *pin && !s.pinned => ImageChange::Pin,
        Some(_) => return Ok(()),
    };
    if change != ImageChange::Pin {
        let args = import_args(path, false);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        ctr.run(ns, &args)?;
    }
    if *pin {
        ctr.run(
            ns,
            &[
                "images",
                "label",
                reference,
                &format!("{PINNED_LABEL}=pinned"),
            ],
        )?;
    }
    check_imported(ctr, op)?;
    let mut done = op.clone();
    if let Op::Image { change: c, .. } = &mut done {
        *c = change;
    }
    log.did(&done.describe());
    Ok(())
}

/// What is wrong with one installed image now (`None`: as installed).
pub fn check_image(
    ctr: &Ctr,
    namespace: &str,
    reference: &str,
    digest: &str,
    pinned: bool,
) -> Option<String> {
    match ctr.state(namespace, reference) {
        Err(e) => Some(format!("cannot ask containerd: {e}")),
        Ok(None) => Some("missing".into()),
        Ok(Some(s)) if s.digest != digest => Some(format!("at {} instead", s.digest)),
        Ok(Some(s)) if pinned && !s.pinned => Some("not pinned any more".into()),
        Ok(Some(_)) => None,
    }
}
