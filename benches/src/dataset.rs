//! The benchmark's artifact set: ~20 files from 1 KiB to 300 MiB (at 1 GiB),
//! generated once per size under `target/bench/data-SIZE/` with a spec, a
//! `SHA256SUMS` and a pre-warmed bundler cache (hard links to the files).

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};

use crate::data::{self, Kind};

const MIB: f64 = 1024.0 * 1024.0;
const GIB: u64 = 1 << 30;

/// Name, size in MiB at 1 GiB, kind. `containerd` takes whatever is left so
/// the total is exact; sizes scale with the total, at least 1 KiB.
const LAYOUT: &[(&str, f64, Kind)] = &[
    ("kubelet", 300.0, Kind::Exec),
    ("containerd", 0.0, Kind::Exec),
    ("kube-proxy", 120.0, Kind::Exec),
    ("etcd", 95.0, Kind::Exec),
    ("crictl", 70.0, Kind::Exec),
    ("audit.log", 60.0, Kind::Text),
    ("runc", 45.0, Kind::Exec),
    ("cni-plugins.tgz", 40.0, Kind::Packed),
    ("crds.yaml", 30.0, Kind::Text),
    ("etcdctl", 18.0, Kind::Exec),
    ("containerd-shim", 12.0, Kind::Exec),
    ("events.log", 8.0, Kind::Text),
    ("socat", 5.0, Kind::Exec),
    ("conntrack", 3.0, Kind::Exec),
    ("kernel-params.txt", 2.0, Kind::Text),
    ("modprobe-helper", 1.0, Kind::Exec),
    ("readme.txt", 0.5, Kind::Text),
    ("healthcheck", 0.25, Kind::Exec),
    ("motd.txt", 1.0 / 16.0, Kind::Text),
    ("version.txt", 1.0 / 1024.0, Kind::Text),
];

/// The name that absorbs the rounding remainder.
const FILLER: &str = "containerd";

/// One generated artifact.
#[derive(Debug, Clone)]
pub struct Artifact {
    /// Artifact name (also the file name).
    pub name: String,
    /// Content kind.
    pub kind: Kind,
    /// Bytes.
    pub size: u64,
    /// SHA-256, hex.
    pub sha256: String,
}

/// A generated data set, ready to build.
#[derive(Debug, Clone)]
pub struct DataSet {
    /// Total bytes.
    pub total: u64,
    /// `target/bench/data-TOTAL`: the files, `spec.json`, `SHA256SUMS`.
    pub dir: PathBuf,
    /// The pre-warmed bundler cache (`sha256/HEX` hard links to the files).
    pub cache: PathBuf,
    /// The artifacts in name order.
    pub artifacts: Vec<Artifact>,
}

impl DataSet {
    /// The spec.
    pub fn spec(&self) -> PathBuf {
        self.dir.join("spec.json")
    }

    /// Paths of the artifact files, in name order.
    pub fn files(&self) -> Vec<PathBuf> {
        self.artifacts
            .iter()
            .map(|a| self.dir.join(&a.name))
            .collect()
    }

    /// Bytes per kind.
    pub fn bytes_of(&self, kind: Kind) -> u64 {
        self.artifacts
            .iter()
            .filter(|a| a.kind == kind)
            .map(|a| a.size)
            .sum()
    }

    /// Summary for JSON.
    pub fn to_json(&self) -> Value {
        json!({
            "total_bytes": self.total,
            "dir": self.dir,
            "artifacts": self.artifacts.iter().map(|a| json!({
                "name": a.name, "kind": a.kind.as_str(), "size": a.size, "sha256": a.sha256,
            })).collect::<Vec<_>>(),
        })
    }
}

/// Sizes of the layout scaled to `total` bytes (name order is applied later).
fn sizes(total: u64) -> Result<Vec<(&'static str, u64, Kind)>> {
    let scale = total as f64 / GIB as f64;
    let mut out: Vec<(&str, u64, Kind)> = LAYOUT
        .iter()
        .map(|&(name, mib, kind)| (name, ((mib * MIB * scale) as u64).max(1024), kind))
        .collect();
    let fixed: u64 = out
        .iter()
        .filter(|(n, ..)| *n != FILLER)
        .map(|(_, s, _)| s)
        .sum();
    if fixed + 1024 > total {
        bail!(
            "--size {total} is too small for the {} artifacts (at least {} bytes)",
            LAYOUT.len(),
            fixed + 1024
        );
    }
    for e in &mut out {
        if e.0 == FILLER {
            e.1 = total - fixed;
        }
    }
    Ok(out)
}

/// Generates (or reuses) the data set of `total` bytes under `work`.
pub fn ensure(work: &Path, total: u64, target_arch: &str) -> Result<DataSet> {
    let dir = work.join(format!("data-{total}"));
    let cache = work.join(format!("cache-{total}"));
    let stamp = dir.join("set.json");
    let wanted = sizes(total)?;
    let artifacts = match reuse(&stamp, &dir, &wanted) {
        Some(a) => a,
        None => {
            let t = Instant::now();
            eprintln!(
                "bench: generating {:.2} GiB of artifacts in {} (once; cached for later runs)",
                total as f64 / GIB as f64,
                dir.display()
            );
            let _ = fs::remove_dir_all(&dir);
            let _ = fs::remove_dir_all(&cache);
            fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            let a = generate_all(&dir, &wanted)?;
            let set = json!({
                "generator": data::GENERATOR_VERSION,
                "total": total,
                "artifacts": a.iter().map(|a| json!({
                    "name": a.name, "kind": a.kind.as_str(), "size": a.size, "sha256": a.sha256,
                })).collect::<Vec<_>>(),
            });
            fs::write(&stamp, serde_json::to_vec_pretty(&set)?)?;
            eprintln!("bench: generated in {:.1} s", t.elapsed().as_secs_f64());
            a
        }
    };
    let set = DataSet {
        total,
        dir,
        cache,
        artifacts,
    };
    write_spec(&set, target_arch)?;
    write_sums(&set)?;
    prewarm_cache(&set)?;
    Ok(set)
}

fn reuse(stamp: &Path, dir: &Path, wanted: &[(&str, u64, Kind)]) -> Option<Vec<Artifact>> {
    let v: Value = serde_json::from_slice(&fs::read(stamp).ok()?).ok()?;
    if v["generator"].as_u64() != Some(u64::from(data::GENERATOR_VERSION)) {
        return None;
    }
    let mut out = Vec::new();
    for a in v["artifacts"].as_array()? {
        let name = a["name"].as_str()?;
        let size = a["size"].as_u64()?;
        let &(_, want, kind) = wanted.iter().find(|(n, ..)| *n == name)?;
        if want != size || fs::metadata(dir.join(name)).ok()?.len() != size {
            return None;
        }
        out.push(Artifact {
            name: name.to_owned(),
            kind,
            size,
            sha256: a["sha256"].as_str()?.to_owned(),
        });
    }
    (out.len() == wanted.len()).then_some(out)
}

/// Generates every file, two at a time (largest first).
fn generate_all(dir: &Path, wanted: &[(&'static str, u64, Kind)]) -> Result<Vec<Artifact>> {
    let mut queue: Vec<_> = wanted.to_vec();
    queue.sort_by_key(|e| e.1);
    let queue = Mutex::new(queue);
    let done = Mutex::new(Vec::new());
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    std::thread::scope(|s| -> Result<()> {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| -> Result<()> {
                    loop {
                        let Some((name, size, kind)) = queue.lock().expect("no panic").pop() else {
                            return Ok(());
                        };
                        let path = dir.join(name);
                        let sha256 = data::generate_file(kind, data::seed_of(name), size, &path)
                            .with_context(|| format!("writing {}", path.display()))?;
                        done.lock().expect("no panic").push(Artifact {
                            name: name.to_owned(),
                            kind,
                            size,
                            sha256,
                        });
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().expect("generator thread does not panic")?;
        }
        Ok(())
    })?;
    let mut out = done.into_inner().expect("no panic");
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// `spec.json`: every artifact a `file:` URL with its sha256 and size, installed
/// by one `binary` step into `/opt/bench/NAME`.
fn write_spec(set: &DataSet, arch: &str) -> Result<()> {
    let mut artifacts = serde_json::Map::new();
    let mut steps = Vec::new();
    for a in &set.artifacts {
        artifacts.insert(
            a.name.clone(),
            json!({ "url": format!("file:{}", a.name), "sha256": a.sha256, "size": a.size }),
        );
        let mode = if a.kind == Kind::Exec { "0755" } else { "0644" };
        steps.push(json!({
            "kind": "binary", "artifact": a.name, "dest": format!("/opt/bench/{}", a.name), "mode": mode,
        }));
    }
    let spec = json!({
        "apiVersion": "bundle/v1",
        "name": "bench",
        "version": format!("{}", set.total),
        "serial": 1,
        "target": { "os": "linux", "arch": arch },
        "artifacts": artifacts,
        "steps": steps,
    });
    write_if_changed(&set.spec(), &serde_json::to_vec_pretty(&spec)?)
}

fn write_sums(set: &DataSet) -> Result<()> {
    let sums: String = set
        .artifacts
        .iter()
        .map(|a| format!("{}  {}\n", a.sha256, a.name))
        .collect();
    write_if_changed(&set.dir.join("SHA256SUMS"), sums.as_bytes())
}

fn write_if_changed(path: &Path, bytes: &[u8]) -> Result<()> {
    if fs::read(path).ok().as_deref() != Some(bytes) {
        fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// The bundler cache holds verified objects at `sha256/HEX`; hard links to
/// the generated files make it warm without a second copy (the build and the
/// baselines then read the very same page-cache pages).
fn prewarm_cache(set: &DataSet) -> Result<()> {
    let objects = set.cache.join("sha256");
    fs::create_dir_all(&objects)?;
    fs::create_dir_all(set.cache.join("partial"))?;
    for a in &set.artifacts {
        let obj = objects.join(&a.sha256);
        if fs::metadata(&obj).is_ok_and(|m| m.len() == a.size) {
            continue;
        }
        let _ = fs::remove_file(&obj);
        let src = set.dir.join(&a.name);
        if fs::hard_link(&src, &obj).is_err() {
            fs::copy(&src, &obj).with_context(|| format!("copying into {}", obj.display()))?;
        }
    }
    Ok(())
}

/// Parses `1G`, `256M`, `512MiB`, `1.5GiB`, `4096` (bytes).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("bad size {s:?}"))?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" | "kib" => 1024.0,
        "m" | "mb" | "mib" => MIB,
        "g" | "gb" | "gib" => GIB as f64,
        _ => return Err(format!("bad size unit in {s:?} (use K, M or G)")),
    };
    Ok((n * mult).round() as u64)
}

/// `1.00 GiB`, `256 MiB`.
pub fn human(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= GIB as f64 {
        format!("{:.2} GiB", b / GIB as f64)
    } else if b >= MIB {
        format!("{:.0} MiB", b / MIB)
    } else {
        format!("{:.0} KiB", b / 1024.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_sum_exactly_and_stay_in_range() {
        for total in [256 << 20, 1 << 30, 2 << 30] {
            let s = sizes(total).unwrap();
            assert_eq!(s.len(), 20);
            assert_eq!(s.iter().map(|e| e.1).sum::<u64>(), total);
        }
        let s = sizes(1 << 30).unwrap();
        assert_eq!(s.iter().map(|e| e.1).max(), Some(300 << 20));
        assert_eq!(s.iter().map(|e| e.1).min(), Some(1024));
    }

    #[test]
    fn parses_sizes() {
        assert_eq!(parse_size("256M"), Ok(256 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("1.5GiB"), Ok(3 << 29));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("1T").is_err());
    }
}
