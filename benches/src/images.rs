//! Images: the install's `images` step against `ctr -n k8s.io images
//! import` of the same OCI layout archives, on the same running containerd
//! (Debian's), and a re-run's images step.
//!
//! The images (4, one ~52 MiB incompressible layer each) are pushed to a
//! loopback `docker-registry` and built into a bundle by the real `bundler`.
//! The installer runs as on a host: chrooted into a small root holding it,
//! `ctr` and containerd's socket at `/run/containerd/containerd.sock`; its
//! step time comes from `--json` (`timings.apply_steps`). Each measured run
//! starts on a fresh containerd data directory; the re-run on the imported one.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use bundle_tests::oci::TestImage;
use bundle_tests::registry::Registry;
use serde_json::{Value, json};

use crate::data::{self, Kind};
use crate::measure::{self, round};
use crate::{Ctx, check};

/// Images: (name, layer bytes).
const IMAGES: &[(&str, u64)] = &[
    ("img-a", 52 << 20),
    ("img-b", 52 << 20),
    ("img-c", 52 << 20),
    ("img-d", 52 << 20),
];

fn which(program: &str) -> Option<PathBuf> {
    let out = Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

/// containerd on `data`, answering on `socket`.
struct Containerd {
    child: Child,
    socket: PathBuf,
}

impl Containerd {
    fn start(dir: &Path, data: &Path, socket: &Path) -> Result<Self> {
        fs::create_dir_all(dir)?;
        let config = format!(
            "version = 2\nroot = {:?}\nstate = {:?}\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\", \"io.containerd.internal.v1.opt\"]\n[grpc]\n  address = {:?}\n",
            data.display().to_string(),
            dir.join("state").display().to_string(),
            socket.display().to_string()
        );
        fs::write(dir.join("config.toml"), config)?;
        let child = Command::new("containerd")
            .arg("--config")
            .arg(dir.join("config.toml"))
            .stdout(Stdio::null())
            .stderr(fs::File::create(dir.join("log"))?)
            .spawn()
            .context("starting containerd")?;
        let me = Self {
            child,
            socket: socket.to_owned(),
        };
        let start = Instant::now();
        while !me.ctr(&["version"])?.status.success() {
            if start.elapsed() > Duration::from_secs(30) {
                bail!(
                    "containerd did not start (see {})",
                    dir.join("log").display()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(me)
    }

    fn ctr(&self, args: &[&str]) -> Result<std::process::Output> {
        Ok(Command::new("ctr")
            .arg("-a")
            .arg(&self.socket)
            .args(["-n", "k8s.io"])
            .args(args)
            .output()?)
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

/// A small root to chroot the installer into, as a host.
fn host_root(ctx: &Ctx, root: &Path, bundle: &Path) -> Result<()> {
    measure::remove(root)?;
    fs::create_dir_all(root.join("usr/local/bin"))?;
    fs::create_dir_all(root.join("run/containerd"))?;
    fs::create_dir_all(root.join("dev"))?;
    let st = Command::new("mknod")
        .arg(root.join("dev/null"))
        .args(["c", "1", "3"])
        .status()?;
    if !st.success() {
        bail!("mknod {}/dev/null failed", root.display());
    }
    fs::copy(ctx.installer_path(), root.join("install-bundle"))?;
    fs::copy(ctx.pubkey_path(), root.join("k.pub"))?;
    fs::copy(bundle, root.join("b.tar.zst"))?;
    let ctr = which("ctr").context("ctr (apt-get install containerd)")?;
    fs::copy(&ctr, root.join("usr/local/bin/ctr"))?;
    let ldd = Command::new("ldd").arg(&ctr).output()?;
    for lib in String::from_utf8_lossy(&ldd.stdout)
        .split_whitespace()
        .filter(|w| w.starts_with('/'))
    {
        let to = root.join(lib.trim_start_matches('/'));
        fs::create_dir_all(to.parent().expect("parent"))?;
        fs::copy(lib, to)?;
    }
    Ok(())
}

/// Runs the chrooted installer with `--json`; returns (images step seconds, wall seconds, changed).
fn install(root: &Path) -> Result<(f64, f64, u64)> {
    let t = Instant::now();
    let out = Command::new("chroot")
        .arg(root)
        .args([
            "/install-bundle",
            "/b.tar.zst",
            "--trusted-key",
            "/k.pub",
            "--json",
        ])
        .output()?;
    let wall = t.elapsed().as_secs_f64();
    let doc: Value = serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "install-bundle --json: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    if !out.status.success() {
        bail!("install-bundle failed: {doc}");
    }
    let step = doc["timings"]["apply_steps"]
        .as_array()
        .and_then(|s| s.iter().find(|t| t["kind"] == "images"))
        .and_then(|t| t["seconds"].as_f64())
        .unwrap_or(0.0);
    Ok((step, wall, doc["changed"].as_u64().unwrap_or(0)))
}

/// Runs the images benchmark; prints its table and returns its JSON.
pub fn run(ctx: &Ctx, reps: usize) -> Result<Value> {
    if which("containerd").is_none() || which("ctr").is_none() || !Registry::available() {
        bail!(
            "the images phase needs containerd, ctr and docker-registry (apt-get install containerd docker-registry)"
        );
    }
    let dir = ctx.work.join("images");
    measure::remove(&dir)?;
    fs::create_dir_all(&dir)?;
    let registry = Registry::plain();
    let mut images = serde_json::Map::new();
    let mut total = 0u64;
    for &(name, size) in IMAGES {
        let mut payload = Vec::new();
        data::generate(Kind::Packed, data::seed_of(name), size, &mut payload)?;
        let layer = bundle_tests::oci::tar(&[("data/payload", 0o644, &payload)]);
        let image = TestImage::with_layer(layer, name);
        image.push(&registry, &format!("bench/{name}"), "1");
        total += image.blobs().iter().map(|b| b.size()).sum::<u64>();
        images.insert(
            name.to_owned(),
            json!({"ref": format!("{}/bench/{name}:1", registry.host()), "digest": image.digest()}),
        );
    }
    let names: Vec<&str> = IMAGES.iter().map(|i| i.0).collect();
    let spec = json!({
        "apiVersion": "bundle/v1", "name": "bench-images", "version": "1", "serial": 1,
        "target": {"os": "linux", "arch": crate::debian_arch()},
        "images": images,
        "steps": [{"kind": "images", "images": names, "pin": true}],
    });
    let spec_path = dir.join("spec.json");
    fs::write(&spec_path, serde_json::to_vec_pretty(&spec)?)?;
    let bundle = dir.join("images.tar.zst");
    let build = Command::new(&ctx.bundler)
        .arg("build")
        .arg(&spec_path)
        .args(["--cache"])
        .arg(dir.join("cache"))
        .arg("-o")
        .arg(&bundle)
        .arg("--key")
        .arg(&ctx.key)
        .arg("--quiet")
        .env("SOURCE_DATE_EPOCH", crate::SOURCE_DATE_EPOCH)
        .output()?;
    if !build.status.success() {
        bail!("bundler build: {}", String::from_utf8_lossy(&build.stderr));
    }
    // The same archives, for ctr.
    let archives = dir.join("archives");
    fs::create_dir_all(&archives)?;
    for e in bundle_tests::kit::read_entries(&bundle) {
        if let Some(name) = e.name().strip_prefix("artifacts/") {
            fs::write(archives.join(format!("{name}.tar")), &e.data)?;
        }
    }
    let root = dir.join("root");
    host_root(ctx, &root, &bundle)?;
    let socket = root.join("run/containerd/containerd.sock");
    let quiet = || measure::wait_quiet(crate::NOISE_CORES, Duration::from_secs(ctx.quiet_wait));
    eprintln!(
        "bench: images: {} images, {:.1} MiB of blobs, {reps} reps",
        IMAGES.len(),
        total as f64 / 1048576.0
    );
    let (mut ours, mut plain, mut rerun, mut ours_wall) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for rep in 0..reps {
        for variant in if rep % 2 == 0 { [0, 1] } else { [1, 0] } {
            let data = dir.join(format!("containerd-{rep}-{variant}"));
            measure::remove(&data)?;
            let _ = fs::remove_file(&socket);
            let ctd = Containerd::start(&dir.join(format!("ctd-{rep}-{variant}")), &data, &socket)?;
            measure::sync()?;
            quiet();
            if variant == 0 {
                // Fresh state per run: the installer's state from an earlier run goes.
                measure::remove(&root.join("var"))?;
                let (step, wall, changed) = install(&root)?;
                if changed == 0 {
                    bail!("the first install changed nothing");
                }
                eprintln!(
                    "  rep {} install-bundle images step      {step:7.2} s (install {wall:.2} s)",
                    rep + 1
                );
                ours.push(step);
                ours_wall.push(wall);
                quiet();
                let (step, _, changed) = install(&root)?;
                if changed != 0 {
                    bail!("the re-run changed {changed}");
                }
                eprintln!(
                    "  rep {} re-run images step              {step:7.3} s",
                    rep + 1
                );
                rerun.push(step);
            } else {
                let t = Instant::now();
                for &(name, _) in IMAGES {
                    let out = ctd.ctr(&[
                        "images",
                        "import",
                        archives
                            .join(format!("{name}.tar"))
                            .to_str()
                            .expect("utf-8"),
                    ])?;
                    if !out.status.success() {
                        bail!(
                            "ctr images import {name}: {}",
                            String::from_utf8_lossy(&out.stderr)
                        );
                    }
                }
                let s = t.elapsed().as_secs_f64();
                eprintln!(
                    "  rep {} ctr -n k8s.io images import (x{})  {s:7.2} s",
                    rep + 1,
                    IMAGES.len()
                );
                plain.push(s);
            }
            drop(ctd);
            measure::remove(&data)?;
        }
    }
    let (m_ours, m_plain, m_rerun) = (
        measure::median(&mut ours.clone()),
        measure::median(&mut plain.clone()),
        measure::median(&mut rerun.clone()),
    );
    let ratio = m_ours / m_plain;
    println!();
    println!(
        "Images: {} images ({:.1} MiB of blobs) into a running containerd (Debian's), {reps} reps, medians",
        IMAGES.len(),
        total as f64 / 1048576.0
    );
    println!("  ctr -n k8s.io images import, one per archive     {m_plain:7.2} s");
    println!(
        "  install-bundle images step (import, pin, check)  {m_ours:7.2} s   (whole install {:.2} s)",
        measure::median(&mut ours_wall.clone())
    );
    println!("  re-run images step (all unchanged)                {m_rerun:7.3} s");
    println!(
        "  images step / ctr import        {ratio:6.2}x   target <= 1.10x  {}",
        check(ratio, 1.1)
    );
    println!(
        "  re-run images step              {m_rerun:6.3} s   target < 0.5 s   {}",
        if m_rerun < 0.5 { "met" } else { "NOT met" }
    );
    Ok(json!({
        "images": IMAGES.iter().map(|i| json!({"name": i.0, "layer_bytes": i.1})).collect::<Vec<_>>(),
        "blob_bytes": total,
        "reps": reps,
        "install_images_step_s": ours.iter().map(|x| round(*x, 3)).collect::<Vec<_>>(),
        "install_wall_s": ours_wall.iter().map(|x| round(*x, 3)).collect::<Vec<_>>(),
        "ctr_import_s": plain.iter().map(|x| round(*x, 3)).collect::<Vec<_>>(),
        "rerun_images_step_s": rerun.iter().map(|x| round(*x, 3)).collect::<Vec<_>>(),
        "median": {"install_images_step_s": round(m_ours, 3), "ctr_import_s": round(m_plain, 3), "rerun_images_step_s": round(m_rerun, 3)},
        "images_step_vs_ctr_import": round(ratio, 3),
        "targets": {
            "images_step_vs_ctr_import": {"max": 1.1, "pass": ratio <= 1.1},
            "rerun_images_step_s": {"max": 0.5, "pass": m_rerun < 0.5},
        },
    }))
}
