//! A fleet of hosts reached over SSH for the Ansible tests: one real
//! `sshd` per host on its own loopback port, each host with its own
//! directory (its root filesystem for `install-bundle --root`, where the
//! installer and the bundle are put, Ansible's remote temporary files), and
//! the real `ansible-core` of `target/ansible-venv` (made by `.ci/run` from
//! `ansible/requirements-test.txt`) driving them with the collection
//! `airgap.bundles`, built and installed with `ansible-galaxy`.
//!
//! [`Fleet::prerequisites`] says what keeps the tests from running (not
//! root, no sshd, no venv); [`crate::debootstrap::skip`] makes that a
//! failure under `BUNDLE_E2E_REQUIRED=1` (CI).

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::cli::target_dir;

/// The sshd binary (absolute: sshd refuses to re-exec otherwise).
pub const SSHD: &str = "/usr/sbin/sshd";

/// The virtual environment with ansible-core and ansible-lint.
pub fn venv() -> PathBuf {
    std::env::var_os("ANSIBLE_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| target_dir().join("ansible-venv"))
}

/// The collection's source (`ansible/` of the repository).
pub fn collection_source() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
        .join("ansible")
}

/// One host: its sshd and its directory.
#[derive(Debug)]
pub struct Host {
    /// Inventory name (`host-1`, ...).
    pub name: String,
    /// Its sshd's loopback port.
    pub port: u16,
    /// Its directory: `root/` is its root filesystem, `var/` its work space.
    pub dir: PathBuf,
    sshd: Child,
}

impl Host {
    /// The host's root filesystem (`install-bundle --root`).
    pub fn root(&self) -> PathBuf {
        self.dir.join("root")
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.sshd.kill();
        let _ = self.sshd.wait();
    }
}

/// Several hosts and the controller's side: a client key, known hosts, an
/// installed collection.
#[derive(Debug)]
pub struct Fleet {
    /// Scratch directory of the controller (inventory, keys, collections).
    pub dir: PathBuf,
    /// The hosts, in inventory order.
    pub hosts: Vec<Host>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The output of one `ansible-playbook` run.
#[derive(Debug)]
pub struct PlaybookRun {
    /// Exit code.
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
    /// Wall-clock time.
    pub elapsed: Duration,
}

impl std::fmt::Display for PlaybookRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ansible-playbook exit {} after {:.1}s\n--- stdout\n{}\n--- stderr\n{}",
            self.code,
            self.elapsed.as_secs_f64(),
            self.stdout,
            self.stderr
        )
    }
}

impl PlaybookRun {
    /// The `changed=N` of `host` in the PLAY RECAP.
    pub fn recap(&self, host: &str, field: &str) -> Option<u64> {
        let line = self
            .stdout
            .lines()
            .rev()
            .find(|l| l.split_whitespace().next() == Some(host))?;
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{field}=")))
            .and_then(|n| n.parse().ok())
    }
}

impl Fleet {
    /// What keeps the fleet tests from running, or `None`.
    pub fn prerequisites() -> Option<String> {
        if !crate::debootstrap::is_root() {
            return Some("not running as root (sshd and dpkg --root need it)".into());
        }
        if !Path::new(SSHD).is_file() {
            return Some(format!("no {SSHD} (apt-get install openssh-server)"));
        }
        if !venv().join("bin/ansible-playbook").is_file() {
            return Some(format!(
                "no {} (python3 -m venv target/ansible-venv && target/ansible-venv/bin/pip install -r ansible/requirements-test.txt; .ci/run does)",
                venv().join("bin/ansible-playbook").display()
            ));
        }
        None
    }

    /// Starts one sshd per name under `dir`, each accepting the fleet's
    /// client key for root on 127.0.0.1, and installs the collection with
    /// `ansible-galaxy collection build` + `install` into `dir/collections`.
    /// `prepare_root(name, root)` makes each host's root filesystem.
    pub fn start(dir: &Path, names: &[&str], prepare_root: impl Fn(&str, &Path)) -> Fleet {
        std::fs::create_dir_all(dir.join("ssh")).expect("mkdir");
        // Privilege separation directory of Debian's sshd.
        std::fs::create_dir_all("/run/sshd").expect("mkdir /run/sshd");
        let client_key = dir.join("ssh/id_ed25519");
        run_ok(
            Command::new("ssh-keygen")
                .args([
                    "-q",
                    "-t",
                    "ed25519",
                    "-N",
                    "",
                    "-C",
                    "fleet-controller",
                    "-f",
                ])
                .arg(&client_key),
        );
        let mut known_hosts = String::new();
        let mut hosts = Vec::new();
        for name in names {
            let hdir = dir.join("hosts").join(name);
            std::fs::create_dir_all(hdir.join("sshd")).expect("mkdir");
            std::fs::create_dir_all(hdir.join("var/tmp")).expect("mkdir");
            let root = hdir.join("root");
            prepare_root(name, &root);
            let host_key = hdir.join("sshd/ssh_host_ed25519_key");
            run_ok(
                Command::new("ssh-keygen")
                    .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                    .arg(&host_key),
            );
            std::fs::copy(
                client_key.with_extension("pub"),
                hdir.join("sshd/authorized_keys"),
            )
            .expect("authorized_keys");
            let port = free_port();
            let config = hdir.join("sshd/sshd_config");
            std::fs::write(
                &config,
                format!(
                    "Port {port}\nListenAddress 127.0.0.1\nHostKey {key}\nPidFile {pid}\n\
                     AuthorizedKeysFile {auth}\nPermitRootLogin prohibit-password\n\
                     PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n\
                     StrictModes no\nPrintMotd no\nSubsystem sftp /usr/lib/openssh/sftp-server\n",
                    key = host_key.display(),
                    pid = hdir.join("sshd/sshd.pid").display(),
                    auth = hdir.join("sshd/authorized_keys").display(),
                ),
            )
            .expect("sshd_config");
            let pubkey = std::fs::read_to_string(host_key.with_extension("pub")).expect("host key");
            let mut fields = pubkey.split_whitespace();
            known_hosts.push_str(&format!(
                "[127.0.0.1]:{port} {} {}\n",
                fields.next().unwrap_or_default(),
                fields.next().unwrap_or_default()
            ));
            let sshd = Command::new(SSHD)
                .args(["-D", "-e", "-f"])
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(hdir.join("sshd/log")).expect("sshd log"))
                .spawn()
                .expect("start sshd");
            hosts.push(Host {
                name: (*name).to_owned(),
                port,
                dir: hdir,
                sshd,
            });
        }
        std::fs::write(dir.join("ssh/known_hosts"), known_hosts).expect("known_hosts");
        for h in &hosts {
            let start = Instant::now();
            while TcpStream::connect(("127.0.0.1", h.port)).is_err() {
                assert!(
                    start.elapsed() < Duration::from_secs(20),
                    "sshd of {} did not listen on port {}: {}",
                    h.name,
                    h.port,
                    std::fs::read_to_string(h.dir.join("sshd/log")).unwrap_or_default()
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let fleet = Fleet {
            dir: dir.to_owned(),
            hosts,
        };
        fleet.install_collection();
        fleet
    }

    fn ansible(&self, tool: &str) -> Command {
        let mut c = Command::new(venv().join("bin").join(tool));
        c.current_dir(&self.dir)
            .env("ANSIBLE_COLLECTIONS_PATH", self.dir.join("collections"))
            .env("ANSIBLE_HOME", self.dir.join("ansible-home"))
            .env("ANSIBLE_LOCAL_TEMP", self.dir.join("ansible-home/tmp"))
            .env("ANSIBLE_NOCOLOR", "1")
            .env("ANSIBLE_FORCE_COLOR", "0")
            .env("ANSIBLE_HOST_KEY_CHECKING", "True")
            .env("ANSIBLE_RETRY_FILES_ENABLED", "0")
            .env("ANSIBLE_PIPELINING", "1")
            .env("ANSIBLE_FORKS", "10")
            .env("ANSIBLE_SSH_CONTROL_PATH_DIR", self.dir.join("cp"))
            // Connections outlive a run briefly only: the hosts go with the test.
            .env(
                "ANSIBLE_SSH_ARGS",
                "-o ControlMaster=auto -o ControlPersist=5s",
            )
            .env("ANSIBLE_DEPRECATION_WARNINGS", "0")
            .env("LC_ALL", "C.UTF-8");
        c
    }

    fn install_collection(&self) {
        let build = self.dir.join("collection-build");
        std::fs::create_dir_all(&build).expect("mkdir");
        run_ok(
            self.ansible("ansible-galaxy")
                .args(["collection", "build", "--force", "--output-path"])
                .arg(&build)
                .arg(collection_source()),
        );
        let tarball = std::fs::read_dir(&build)
            .expect("build dir")
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| p.to_string_lossy().ends_with(".tar.gz"))
            .expect("ansible-galaxy collection build made no tarball");
        run_ok(
            self.ansible("ansible-galaxy")
                .args(["collection", "install", "--force", "-p"])
                .arg(self.dir.join("collections"))
                .arg(&tarball),
        );
    }

    /// Writes the inventory: group `fleet` with every host, each host's
    /// connection, its own directories (root, installer, bundle) and
    /// `host_vars` (a JSON object per host, merged in).
    pub fn write_inventory(&self, host_vars: &dyn Fn(&str) -> serde_json::Value) -> PathBuf {
        let mut hosts = serde_json::Map::new();
        for h in &self.hosts {
            let mut v = serde_json::json!({
                "ansible_host": "127.0.0.1",
                "ansible_port": h.port,
                "ansible_user": "root",
                "ansible_python_interpreter": "/usr/bin/python3",
                "ansible_ssh_private_key_file": self.dir.join("ssh/id_ed25519"),
                "ansible_ssh_common_args": format!(
                    "-o UserKnownHostsFile={} -o StrictHostKeyChecking=yes",
                    self.dir.join("ssh/known_hosts").display()
                ),
                "ansible_remote_tmp": h.dir.join("var/tmp/ansible"),
                "rollout_root": h.root(),
                "rollout_dir": h.dir.join("var/airgap-bundles"),
                "rollout_installer_path": h.dir.join("var/install-bundle"),
            });
            if let serde_json::Value::Object(extra) = host_vars(&h.name) {
                for (k, x) in extra {
                    v[k] = x;
                }
            }
            hosts.insert(h.name.clone(), v);
        }
        let inv = serde_json::json!({"fleet": {"hosts": hosts}});
        // JSON is YAML.
        let path = self.dir.join("inventory.yml");
        std::fs::write(&path, serde_json::to_vec_pretty(&inv).expect("json")).expect("inventory");
        path
    }

    /// Runs `ansible-playbook -i INVENTORY PLAYBOOK ARGS` on the controller.
    pub fn playbook(&self, inventory: &Path, playbook: &Path, args: &[&str]) -> PlaybookRun {
        std::fs::create_dir_all(self.dir.join("cp")).expect("mkdir");
        let start = Instant::now();
        let out = self
            .ansible("ansible-playbook")
            .arg("-i")
            .arg(inventory)
            .arg(playbook)
            .args(args)
            .output()
            .expect("ansible-playbook");
        PlaybookRun {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            elapsed: start.elapsed(),
        }
    }

    /// Runs the module `airgap.bundles.install_bundle` once on the
    /// controller itself (`ansible localhost -c local -m … -a ARGS`, plus
    /// `flags` such as `--check` and `--diff`); its exit code and the
    /// module's result (from the `minimal` stdout callback).
    pub fn module_on_controller(
        &self,
        args: &serde_json::Value,
        flags: &[&str],
    ) -> (i32, serde_json::Value) {
        let out = self
            .ansible("ansible")
            .env("ANSIBLE_LOAD_CALLBACK_PLUGINS", "1")
            .env("ANSIBLE_STDOUT_CALLBACK", "ansible.builtin.minimal")
            .env("ANSIBLE_PYTHON_INTERPRETER", venv().join("bin/python3"))
            .args([
                "localhost",
                "-c",
                "local",
                "-m",
                "airgap.bundles.install_bundle",
                "-a",
            ])
            .arg(args.to_string())
            .args(flags)
            .output()
            .expect("ansible");
        // `localhost | CHANGED => {…}` (the minimal callback).
        let stdout = String::from_utf8_lossy(&out.stdout);
        let (diff, json) = stdout.split_once(" => ").unwrap_or_default();
        let mut result: serde_json::Value = serde_json::from_str(json).ok().unwrap_or_else(|| {
            panic!(
                "ansible printed no result:\n{stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        if flags.contains(&"--diff") {
            result["diff"] = serde_json::Value::String(diff.to_owned());
        }
        (out.status.code().unwrap_or(-1), result)
    }

    /// The host named `name`.
    pub fn host(&self, name: &str) -> &Host {
        self.hosts
            .iter()
            .find(|h| h.name == name)
            .unwrap_or_else(|| panic!("no host {name}"))
    }
}
