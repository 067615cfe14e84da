//! A booted Debian 12 machine for end-to-end tests: qemu with a real kernel
//! and systemd, controlled through a small agent, that can be rebooted,
//! powered off and have its power cut.
//!
//! * **The image** ([`image`]): `debootstrap --variant=minbase bookworm` plus
//!   [`PACKAGES`] (systemd as init, udev, Debian's cloud kernel, kmod,
//!   iproute2, iptables, util-linux), the agent, and nothing else; an ext4
//!   disk made from that tree by `mkfs.ext4 -d`, and the kernel and initrd
//!   from its `/boot`. Built once and cached in `target/vm/` (keyed by the
//!   recipe, so a changed recipe builds anew; delete the directory to
//!   rebuild). Each [`Machine`] boots its own sparse copy of the disk.
//! * **Booting**: `qemu-system-x86_64` with `-kernel`/`-initrd` from the
//!   image and the serial console in `console.log`, no display. KVM when it
//!   works here — found by trying ([`accel`]: the kernel must boot under
//!   `-accel kvm`) — else software emulation (TCG), which is what CI has;
//!   `VM_ACCEL=tcg` forces it.
//! * **Nothing outside**: the machine has no network device at all (`-nic
//!   none`). The host talks to it over a virtio-serial port (a Unix socket
//!   on the host), not ssh: no network stack, keys or port forward to set up,
//!   and the agent is thirty lines of bash (`vm-agent.sh`): it runs one
//!   script at a time and answers with its exit code, stdout and stderr, and
//!   announces each finished boot with its boot id.
//! * **The carry** ([`carry_disk`]): files for the machine come on a second
//!   virtual disk, an ext4 image attached read-only and mounted read-only
//!   at [`CARRY_MOUNT`] after each boot, as from a USB stick.
//! * **Power cuts** ([`Machine::power_cut`]): SIGKILL to qemu. Everything
//!   the guest had not yet written to its disk (its page cache, dirty
//!   metadata, ext4's open journal transaction) dies with the process, and
//!   every write its disk had completed is kept, as on a real machine whose
//!   disk honours its flushes. That holds in every qemu cache mode, because
//!   a completed write is in the host's page cache or on its disk, and a
//!   SIGKILL to qemu empties neither (so no mode tests the guest's flush
//!   ordering against a lying disk either). The disk is therefore attached
//!   with `cache=unsafe`: writes go to the host's page cache and the
//!   guest's flushes cost nothing, where `cache=directsync` (O_DSYNC on the
//!   host) made every guest write wait for the host's disk.
//!
//! Requirements: root, `debootstrap` and the Debian mirror (for the first
//! build), `mkfs.ext4`, `qemu-system-x86_64`; [`prerequisites`] says what is
//! missing.

use std::io::{Read as _, Write as _};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};

use crate::cli::{Output, target_dir};
use crate::debootstrap::{MIRROR, SUITE, have, is_root, sh};

/// What the image has on top of `debootstrap --variant=minbase`.
pub const PACKAGES: &[&str] = &[
    "systemd-sysv",
    "udev",
    "linux-image-cloud-amd64",
    "kmod",
    "iproute2",
    "iptables",
    "util-linux",
];

/// The agent (see the module docs).
pub const AGENT: &str = include_str!("vm-agent.sh");

/// The agent's unit, enabled in the image.
pub const AGENT_UNIT: &str = "\
[Unit]
Description=Test harness agent on the vm.agent virtio-serial port (tests/src/vm.rs)
StartLimitIntervalSec=0

[Service]
ExecStart=/usr/local/sbin/vm-agent
Restart=always
RestartSec=1

[Install]
WantedBy=multi-user.target
";

/// The image's `/etc/fstab` (tests add to it).
pub const FSTAB: &str = "/dev/vda / ext4 errors=remount-ro 0 1\n";

/// Timers left out of the image so that nothing runs on its own during a
/// test (apt's daily jobs would take dpkg's lock): their `timers.target`
/// links are removed.
const QUIET_TIMERS: &[&str] = &[
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "dpkg-db-backup.timer",
    "e2scrub_all.timer",
    "fstrim.timer",
];

/// Units a test machine does not need, masked so that a boot under
/// software emulation is not spent on them: logins on consoles nobody
/// types at, e2fsprogs' scrub bookkeeping, modules for device mapper, FUSE,
/// loop devices and EFI storage.
const MASKED: &[&str] = &[
    "getty@tty1.service",
    "serial-getty@ttyS0.service",
    "getty-static.service",
    "e2scrub_reap.service",
    "modprobe@dm_mod.service",
    "modprobe@fuse.service",
    "modprobe@loop.service",
    "modprobe@efi_pstore.service",
    "systemd-pstore.service",
    // utmp's boot and runlevel records: the last job of every boot.
    "systemd-update-utmp.service",
    "systemd-update-utmp-runlevel.service",
];

/// The initramfs holds only what finds the root file system on a virtio
/// disk (`MODULES=list`), not most of the kernel's drivers: it unpacks and
/// starts in a fraction of the time under emulation.
const INITRAMFS_MODULES: &str = "virtio_pci\nvirtio_blk\n";

/// Bumped when [`configure`] changes (part of the cache key).
const RECIPE_REVISION: u32 = 4;

/// The image's disk size (a sparse file: only what is written takes space).
const DISK_SIZE: &str = "4G";

/// Where the carry disk is mounted in the machine.
pub const CARRY_MOUNT: &str = "/media/usb";

/// The qemu binary.
pub const QEMU: &str = "qemu-system-x86_64";

/// How long a boot may take (software emulation on a busy 2-core machine).
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(300);

/// How long a command may take unless told otherwise.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(600);

/// What keeps a machine from booting here, or `None`.
pub fn prerequisites() -> Option<String> {
    if !is_root() {
        return Some("not running as root (debootstrap and mkfs.ext4 -d need it)".into());
    }
    let missing: Vec<&str> = ["debootstrap", "mkfs.ext4", QEMU]
        .into_iter()
        .filter(|t| !have(t))
        .collect();
    (!missing.is_empty()).then(|| {
        format!(
            "missing {} (apt-get install debootstrap e2fsprogs qemu-system-x86)",
            missing.join(", ")
        )
    })
}

/// The accelerator: `VM_ACCEL` when set, else `kvm` when it works here,
/// else `tcg`. "Works" is found by trying, not guessed from `/dev/kvm`
/// (which exists on machines whose KVM cannot run this guest, nested
/// virtualization without the MSRs qemu sets, say): `kernel` is booted
/// without a disk under `-accel kvm -cpu host`; it must get as far as its
/// "no root file system" panic within 30 seconds. Tried once per process.
pub fn accel(kernel: &Path) -> String {
    static ACCEL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    if let Ok(a) = std::env::var("VM_ACCEL") {
        return a;
    }
    ACCEL
        .get_or_init(|| if kvm_boots(kernel) { "kvm" } else { "tcg" }.to_owned())
        .clone()
}

fn kvm_boots(kernel: &Path) -> bool {
    let Ok(mut child) = Command::new(QEMU)
        .args([
            "-accel", "kvm", "-cpu", "host", "-machine", "pc", "-m", "256",
        ])
        .args([
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-no-reboot",
        ])
        .args(["-serial", "stdio", "-kernel"])
        .arg(kernel)
        .args(["-append", "console=ttyS0 panic=-1"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
    else {
        return false;
    };
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        let _ = stdout.read_to_end(&mut out);
        out
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    let out = String::from_utf8_lossy(&reader.join().unwrap_or_default()).into_owned();
    out.contains("Kernel panic") && out.contains("Linux version")
}

/// A built image: the disk and the kernel and initrd to boot it with.
#[derive(Debug, Clone)]
pub struct Image {
    /// The ext4 disk (raw).
    pub disk: PathBuf,
    /// The kernel from the image's `/boot`.
    pub kernel: PathBuf,
    /// The initrd from the image's `/boot`.
    pub initrd: PathBuf,
    /// Seconds it took to build now (0 when it came from the cache).
    pub built_in: f64,
}

/// `target/vm`.
pub fn cache_dir() -> PathBuf {
    target_dir().join("vm")
}

fn recipe_key() -> String {
    let mut h = Sha256::new();
    for part in [
        PACKAGES.join(","),
        AGENT.into(),
        AGENT_UNIT.into(),
        FSTAB.into(),
    ] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    h.update(QUIET_TIMERS.join(",").as_bytes());
    h.update(MASKED.join(",").as_bytes());
    h.update(INITRAMFS_MODULES.as_bytes());
    h.update(RECIPE_REVISION.to_le_bytes());
    h.finalize()[..6]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The image, built on first use (see the module docs). Concurrent callers
/// wait for one build; an interrupted build leaves only a `.tmp` directory,
/// which the next one removes, and an image of an older recipe is removed
/// when a new one is built.
pub fn image() -> Result<Image, String> {
    let cache = cache_dir();
    std::fs::create_dir_all(&cache).map_err(|e| format!("{}: {e}", cache.display()))?;
    let name = format!("{SUITE}-{}", recipe_key());
    let dir = cache.join(&name);
    let lock = std::fs::File::create(cache.join("image.lock")).map_err(|e| e.to_string())?;
    lock.lock().map_err(|e| format!("lock: {e}"))?;
    let image = |built_in| Image {
        disk: dir.join("disk.img"),
        kernel: dir.join("vmlinuz"),
        initrd: dir.join("initrd.img"),
        built_in,
    };
    if dir.join(".complete").is_file() {
        return Ok(image(0.0));
    }
    for e in std::fs::read_dir(&cache)
        .map_err(|e| e.to_string())?
        .flatten()
    {
        let n = e.file_name().to_string_lossy().into_owned();
        if n.starts_with(&format!("{SUITE}-")) && e.path().is_dir() {
            std::fs::remove_dir_all(e.path()).map_err(|e| format!("{n}: {e}"))?;
        }
    }
    let started = Instant::now();
    let tmp = cache.join(format!("{name}.tmp"));
    std::fs::create_dir_all(&tmp).map_err(|e| e.to_string())?;
    let root = tmp.join("root");
    eprintln!(
        "vm: debootstrap --variant=minbase --include={} {SUITE} (once; cached in {})",
        PACKAGES.join(","),
        dir.display()
    );
    sh(Command::new("debootstrap")
        .arg("--variant=minbase")
        .arg(format!("--include={}", PACKAGES.join(",")))
        .arg(SUITE)
        .arg(&root)
        .arg(MIRROR))?;
    configure(&root).map_err(|e| format!("configuring the image: {e}"))?;
    // The smaller initramfs (see INITRAMFS_MODULES), made in the image.
    sh(Command::new("mount")
        .args(["-t", "proc", "proc"])
        .arg(root.join("proc")))?;
    let initramfs =
        sh(Command::new("chroot")
            .arg(&root)
            .args(["update-initramfs", "-u", "-k", "all"]));
    sh(Command::new("umount").arg(root.join("proc")))?;
    initramfs?;
    for (prefix, to) in [("vmlinuz-", "vmlinuz"), ("initrd.img-", "initrd.img")] {
        let found = std::fs::read_dir(root.join("boot"))
            .map_err(|e| e.to_string())?
            .flatten()
            .find(|e| e.file_name().to_string_lossy().starts_with(prefix))
            .ok_or_else(|| format!("no /boot/{prefix}* in the image"))?;
        std::fs::copy(found.path(), tmp.join(to)).map_err(|e| e.to_string())?;
    }
    sh(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-L", "worker", "-E", "root_owner=0:0", "-d"])
        .arg(&root)
        .arg(tmp.join("disk.img"))
        .arg(DISK_SIZE))?;
    std::fs::remove_dir_all(&root).map_err(|e| e.to_string())?;
    std::fs::write(tmp.join(".complete"), "").map_err(|e| e.to_string())?;
    std::fs::rename(&tmp, &dir).map_err(|e| e.to_string())?;
    let secs = started.elapsed().as_secs_f64();
    eprintln!("vm: image built in {secs:.1}s");
    Ok(image(secs))
}

/// The image's own configuration, on the debootstrapped tree.
fn configure(root: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let write = |rel: &str, content: &str, mode: u32| -> std::io::Result<()> {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap())?;
        std::fs::write(&p, content)?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))
    };
    write("etc/hostname", "worker\n", 0o644)?;
    write(
        "etc/hosts",
        "127.0.0.1 localhost\n127.0.1.1 worker\n",
        0o644,
    )?;
    write("etc/fstab", FSTAB, 0o644)?;
    write("usr/local/sbin/vm-agent", AGENT, 0o755)?;
    write("etc/systemd/system/vm-agent.service", AGENT_UNIT, 0o644)?;
    let wants = root.join("etc/systemd/system/multi-user.target.wants");
    std::fs::create_dir_all(&wants)?;
    std::os::unix::fs::symlink(
        "/etc/systemd/system/vm-agent.service",
        wants.join("vm-agent.service"),
    )?;
    write(
        "etc/initramfs-tools/conf.d/vm-modules",
        "MODULES=list\n",
        0o644,
    )?;
    write("etc/initramfs-tools/modules", INITRAMFS_MODULES, 0o644)?;
    for unit in MASKED {
        let link = root.join("etc/systemd/system").join(unit);
        if link.symlink_metadata().is_ok() {
            std::fs::remove_file(&link)?;
        }
        std::os::unix::fs::symlink("/dev/null", link)?;
    }
    let getty = root.join("etc/systemd/system/getty.target.wants/getty@tty1.service");
    if getty.symlink_metadata().is_ok() {
        std::fs::remove_file(getty)?;
    }
    for t in QUIET_TIMERS {
        let link = root.join("etc/systemd/system/timers.target.wants").join(t);
        if link.symlink_metadata().is_ok() {
            std::fs::remove_file(link)?;
        }
    }
    // A persistent journal: what happened in the boot before a power cut
    // stays readable (`journalctl -b -1`).
    std::fs::create_dir_all(root.join("var/log/journal"))?;
    std::fs::create_dir_all(root.join(CARRY_MOUNT.trim_start_matches('/')))
}

/// A read-only ext4 disk image at `out` holding `files` (name in the disk,
/// source path), root-owned, mode 0755 for `executable` names and 0644
/// otherwise: what is carried to the machine, as on a USB stick.
pub fn carry_disk(files: &[(&str, &Path)], executable: &[&str], out: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = out.with_extension("d");
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(|e| e.to_string())?;
    }
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let mut bytes = 0u64;
    for (name, src) in files {
        let dest = dir.join(name);
        std::fs::copy(src, &dest).map_err(|e| format!("{}: {e}", src.display()))?;
        let mode = if executable.contains(name) {
            0o755
        } else {
            0o644
        };
        std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(mode))
            .map_err(|e| e.to_string())?;
        bytes += std::fs::metadata(&dest).map_err(|e| e.to_string())?.len();
    }
    let size = format!("{}M", bytes / (1 << 20) * 11 / 10 + 32);
    sh(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-L", "carry", "-E", "root_owner=0:0", "-d"])
        .arg(&dir)
        .arg(out)
        .arg(size))?;
    std::fs::remove_dir_all(&dir).map_err(|e| e.to_string())
}

/// A machine: its own copy of the image's disk, an optional carry disk, and
/// qemu when it runs. Dropping it kills qemu.
#[derive(Debug)]
pub struct Machine {
    dir: PathBuf,
    image: Image,
    carry: Option<PathBuf>,
    accel: String,
    qemu: Option<Child>,
    agent: Option<UnixStream>,
    pending: Vec<u8>,
    boot_id: String,
    /// How long each boot took, to the agent's `READY`.
    pub boots: Vec<Duration>,
}

impl Machine {
    /// A machine in `dir` (a sparse copy of the image's disk goes there),
    /// with `carry` as its second disk. Not started: see [`Machine::boot`].
    pub fn new(image: &Image, dir: &Path, carry: Option<&Path>) -> Result<Machine, String> {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        sh(Command::new("cp")
            .arg("--sparse=always")
            .arg(&image.disk)
            .arg(dir.join("disk.img")))?;
        Ok(Machine {
            dir: dir.to_owned(),
            image: image.clone(),
            carry: carry.map(Path::to_owned),
            accel: accel(&image.kernel),
            qemu: None,
            agent: None,
            pending: Vec::new(),
            boot_id: String::new(),
            boots: Vec::new(),
        })
    }

    /// The accelerator qemu uses (`kvm` or `tcg`).
    pub fn accel(&self) -> &str {
        &self.accel
    }

    /// The current boot's id (`/proc/sys/kernel/random/boot_id`).
    pub fn boot_id(&self) -> &str {
        &self.boot_id
    }

    fn qemu_command(&self) -> Command {
        let mut c = Command::new(QEMU);
        // Under emulation the baseline x86-64 CPU (what Debian is built
        // for): every extension emulated costs, `-cpu max` (AVX2...) makes
        // the boot and the installer about twice as slow.
        let cpu = if self.accel == "kvm" {
            "host"
        } else {
            "qemu64"
        };
        c.args(["-machine", "pc", "-accel", &self.accel, "-cpu", cpu])
            .args(["-smp", "2", "-m", "1536", "-nodefaults", "-no-user-config"])
            .args(["-display", "none", "-monitor", "none", "-nic", "none"])
            // A reset ends qemu ([`Machine::reboot`] starts it again).
            .arg("-no-reboot")
            .arg("-chardev")
            .arg(format!(
                "file,id=console,append=on,path={}",
                self.dir.join("console.log").display()
            ))
            .args(["-serial", "chardev:console"])
            .arg("-kernel")
            .arg(&self.image.kernel)
            .arg("-initrd")
            .arg(&self.image.initrd)
            // quiet: every character on the emulated serial port costs;
            // systemd still prints its status once a job is slow (so a
            // hung boot shows where in console.log).
            // Under emulation the kernel finds the TSC unstable and falls
            // back to the HPET, an emulated device read on every clock
            // read (Go programs read the clock all the time): the TSC qemu
            // emulates comes from the host's clock and is reliable. No
            // side-channel mitigations and no crypto self-tests in a throwaway
            // test machine.
            .args([
                "-append",
                "root=/dev/vda ro console=ttyS0 quiet systemd.show_status=auto clocksource=tsc tsc=reliable mitigations=off cryptomgr.notests",
            ])
            .arg("-drive")
            .arg(format!(
                "file={},format=raw,if=none,id=system,cache=unsafe",
                self.dir.join("disk.img").display()
            ))
            .args(["-device", "virtio-blk-pci,drive=system,serial=system"]);
        if let Some(carry) = &self.carry {
            c.arg("-drive")
                .arg(format!(
                    "file={},format=raw,if=none,id=carry,readonly=on",
                    carry.display()
                ))
                .args(["-device", "virtio-blk-pci,drive=carry,serial=carry"]);
        }
        c.args(["-device", "virtio-rng-pci", "-device", "virtio-serial-pci"])
            .arg("-chardev")
            .arg(format!(
                "socket,id=agent,path={},server=on,wait=off",
                self.dir.join("agent.sock").display()
            ))
            .args(["-device", "virtserialport,chardev=agent,name=vm.agent"]);
        c
    }

    /// Starts qemu and waits for the boot to finish (the agent's `READY`);
    /// mounts the carry disk read-only at [`CARRY_MOUNT`]. Returns how long
    /// the boot took.
    pub fn boot(&mut self) -> Duration {
        assert!(self.qemu.is_none(), "the machine is running");
        let started = Instant::now();
        let sock = self.dir.join("agent.sock");
        let _ = std::fs::remove_file(&sock);
        // The console log of every boot, one after the other.
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("console.log"))
            .unwrap();
        writeln!(log, "\n===== vm.rs: boot {} =====", self.boots.len() + 1).unwrap();
        let child = self
            .qemu_command()
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.dir.join("qemu.stderr")).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {QEMU}: {e}"));
        self.qemu = Some(child);
        let stream = loop {
            match UnixStream::connect(&sock) {
                Ok(s) => break s,
                Err(_) if started.elapsed() < Duration::from_secs(30) => {
                    self.check_running();
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => self.fail(&format!("cannot connect to {}: {e}", sock.display())),
            }
        };
        stream
            .set_read_timeout(Some(Duration::from_secs(1)))
            .unwrap();
        self.agent = Some(stream);
        self.pending.clear();
        self.wait_ready(started);
        if self.carry.is_some() {
            self.run(&format!(
                "mount -o ro /dev/disk/by-id/virtio-carry {CARRY_MOUNT}"
            ))
            .code(0);
        }
        let took = started.elapsed();
        self.boots.push(took);
        took
    }

    /// Reads agent lines until `READY` with a new boot id.
    fn wait_ready(&mut self, started: Instant) {
        loop {
            let line = self.read_line(started + BOOT_TIMEOUT, "the boot to finish");
            if let Some(id) = line.strip_prefix("READY ")
                && id != self.boot_id
            {
                self.boot_id = id.to_owned();
                return;
            }
        }
    }

    /// One line from the agent, waiting until `deadline`.
    fn read_line(&mut self, deadline: Instant, waiting_for: &str) -> String {
        loop {
            if let Some(i) = self.pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=i).collect();
                return String::from_utf8_lossy(&line[..i]).into_owned();
            }
            if Instant::now() > deadline {
                self.fail(&format!("timed out waiting for {waiting_for}"));
            }
            let mut buf = [0u8; 65536];
            let read = self.agent.as_mut().expect("agent connected").read(&mut buf);
            match read {
                Ok(0) => {
                    self.check_running();
                    std::thread::sleep(Duration::from_millis(100));
                }
                Ok(n) => self.pending.extend_from_slice(&buf[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    self.check_running()
                }
                Err(e) => self.fail(&format!("reading from the agent: {e}")),
            }
        }
    }

    fn send(&mut self, script: &str) {
        use std::io::Write as _;
        let line = format!("{}\n{script}", script.len());
        let agent = self.agent.as_mut().expect("the machine is not running");
        if let Err(e) = agent.write_all(line.as_bytes()) {
            self.fail(&format!("writing to the agent: {e}"));
        }
    }

    /// Panics when qemu is no longer running.
    fn check_running(&mut self) {
        if let Some(status) = self.qemu.as_mut().and_then(|q| q.try_wait().ok().flatten()) {
            self.qemu = None;
            self.fail(&format!("qemu exited ({status})"));
        }
    }

    /// Runs `script` (bash, as root) in the machine: its exit code and output.
    pub fn run(&mut self, script: &str) -> Output {
        self.run_for(script, COMMAND_TIMEOUT)
    }

    /// [`Machine::run`] with a time limit.
    /// With `VM_TRACE` set, prints each script's time on stderr.
    pub fn run_for(&mut self, script: &str, timeout: Duration) -> Output {
        let started = Instant::now();
        self.send(script);
        let deadline = started + timeout;
        loop {
            let line = self.read_line(deadline, &format!("`{script}`"));
            let Some(rest) = line.strip_prefix("DONE ") else {
                continue;
            };
            let mut parts = rest.split(' ');
            let code = parts.next().and_then(|c| c.parse().ok()).unwrap_or(-1);
            let mut text =
                || String::from_utf8_lossy(&unbase64(parts.next().unwrap_or(""))).into_owned();
            let stdout = text();
            let stderr = text();
            if std::env::var_os("VM_TRACE").is_some() {
                let head: String = script.chars().take(100).collect();
                eprintln!(
                    "vm trace: {:6.2}s {}",
                    started.elapsed().as_secs_f64(),
                    head.replace('\n', " ⏎ ")
                );
            }
            return Output {
                code,
                stdout,
                stderr,
                command: format!("(in the machine) {script}"),
            };
        }
    }

    /// `systemctl reboot`: the guest's whole shutdown, then its reset, then
    /// waits for the next boot to finish. Returns how long all that took.
    ///
    /// qemu runs with `-no-reboot`, so the guest's reset ends the qemu
    /// process and the machine is started again from the same disks (a
    /// cold start of the same machine, as a power cycle in the firmware
    /// would be): qemu's own warm reset under software emulation took 15 to
    /// 50 s before the kernel ran, and once never got there in 300 s.
    pub fn reboot(&mut self) -> Duration {
        let started = Instant::now();
        self.send("systemctl reboot");
        self.wait_exit("reboot (the guest's shutdown and reset)");
        self.boot();
        started.elapsed()
    }

    /// `systemctl poweroff`, then waits for qemu to exit.
    pub fn power_off(&mut self) {
        self.send("systemctl poweroff");
        self.wait_exit("power off");
    }

    /// Waits up to two minutes for qemu to exit (the guest powered off or
    /// reset itself).
    fn wait_exit(&mut self, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(120);
        while let Some(q) = self.qemu.as_mut() {
            if q.try_wait().unwrap().is_some() {
                self.qemu = None;
                break;
            }
            if Instant::now() > deadline {
                self.fail(&format!("{what}: qemu still running after 120 s"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.agent = None;
    }

    /// Cuts the power: SIGKILL to qemu. What the guest had not written to
    /// its disk is lost (see the module docs).
    pub fn power_cut(&mut self) {
        if let Some(mut q) = self.qemu.take() {
            let _ = q.kill();
            let _ = q.wait();
        }
        self.agent = None;
    }

    /// The serial console's output so far (every boot).
    pub fn console(&self) -> String {
        std::fs::read_to_string(self.dir.join("console.log")).unwrap_or_default()
    }

    /// Panics with `why`, the end of the console log and qemu's stderr.
    fn fail(&mut self, why: &str) -> ! {
        let console = self.console();
        let tail: Vec<&str> = console.lines().rev().take(60).collect();
        let stderr = std::fs::read_to_string(self.dir.join("qemu.stderr")).unwrap_or_default();
        self.power_cut();
        panic!(
            "vm: {why}\n--- console (last 60 lines of {})\n{}\n--- qemu stderr\n{stderr}",
            self.dir.join("console.log").display(),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        self.power_cut();
    }
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding (what `base64 -d` reads): the oracle for
/// [`unbase64`].
#[cfg(test)]
fn base64(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes standard base64 (what `base64 -w0` writes); stops at padding.
fn unbase64(text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in text.bytes() {
        let Some(v) = B64.iter().position(|&b| b == c) else {
            break;
        };
        acc = (acc << 6) | v as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips_as_coreutils_writes_it() {
        for (data, text) in [
            (&b""[..], ""),
            (b"f", "Zg=="),
            (b"fo", "Zm8="),
            (b"foo", "Zm9v"),
            (b"foobar\n", "Zm9vYmFyCg=="),
        ] {
            assert_eq!(base64(data), text);
            assert_eq!(unbase64(text), data);
        }
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(unbase64(&base64(&all)), all);
    }
}
