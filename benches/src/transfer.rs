//! Transfer: `bundler push` and `bundler pull` against real servers on
//! loopback, the moto S3 server (PyPI `moto[server]`) and Debian's
//! `docker-registry`, each next to a plain tool moving the same bytes to the
//! same server in the same run:
//!
//! * S3 push: `curl -T` with curl's own SigV4 (`--aws-sigv4`), one PUT of the
//!   whole file, the simplest way to put a file there. `bundler push` sends a
//!   multipart upload (64 MiB parts, 4 at a time); an informational variant
//!   sends one PUT (`--part-size` >= the bundle), which separates the
//!   client's cost from moto's (it joins multipart parts in memory).
//! * S3 pull: `curl -o` (one GET) then `sync -f`. `bundler pull` fetches
//!   ranged 64 MiB chunks 4 at a time, fsyncs, and checks the detached
//!   signature and the manifest before the rename; an informational variant
//!   pulls in one chunk (moto reads the whole object for every ranged GET).
//! * OCI push: the distribution API's monolithic blob upload done with curl
//!   (`POST /v2/NAME/blobs/uploads/`, then `PUT LOCATION&digest=` with
//!   `curl -T`), the digest computed by `sha256sum` first since the API needs
//!   it. `bundler push` does the same for the bundle layer, plus the
//!   signature and config blobs and the manifest. Each run pushes to a new
//!   repository, so that nothing is skipped as already there.
//! * OCI pull: `curl -o` of the blob (`GET /v2/NAME/blobs/DIGEST`) then
//!   `sync -f`. `bundler pull` reads the manifest, the signature blob and the
//!   bundle blob (its digest checked while streaming), fsyncs and verifies.
//!
//! The bundle is a real one, built by `bundler build` from one file of
//! incompressible bytes (`--transfer-size`). Server CPU is read from
//! `/proc/PID/stat` around each run.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use bundle_tests::registry::Registry;
use bundle_tests::s3::Moto;
use serde_json::{Value, json};
use sha2::Digest as _;

use crate::data::{self, Kind};
use crate::measure::{self, Job, Sample, round};
use crate::{Ctx, Role};

const BUCKET: &str = "bench";

/// CPU seconds (user + system, all threads) a process has used so far.
fn process_cpu(pid: u32) -> f64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command (which may hold spaces) start after ") ".
    let Some(rest) = stat.rsplit_once(") ").map(|(_, r)| r) else {
        return 0.0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state); utime and stime are fields 14 and 15.
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| f.get(i).and_then(|v| v.parse::<u64>().ok()))
        .sum();
    ticks as f64 / 100.0
}

fn sha256_hex(path: &Path) -> Result<String> {
    let mut f = fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut h = sha2::Sha256::new();
    std::io::copy(&mut f, &mut h)?;
    Ok(format!("{:x}", h.finalize()))
}

fn run_checked(cmd: &mut Command, what: &str) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A bundle of about `size` bytes: `bundler build` of one incompressible file.
fn build_bundle(ctx: &Ctx, dir: &Path, size: u64) -> Result<std::path::PathBuf> {
    let src = dir.join("src");
    fs::create_dir_all(&src)?;
    let sha = data::generate_file(
        Kind::Packed,
        data::seed_of("transfer"),
        size,
        &src.join("blob.bin"),
    )?;
    let spec = json!({
        "apiVersion": "bundle/v1", "name": "bench-transfer", "version": "1", "serial": 1,
        "target": { "os": "linux", "arch": crate::debian_arch() },
        "artifacts": { "blob.bin": { "url": "file:blob.bin", "sha256": sha, "size": size } },
        "steps": [ { "kind": "binary", "artifact": "blob.bin", "dest": "/opt/bench/blob.bin", "mode": "0644" } ],
    });
    let spec_path = src.join("spec.json");
    fs::write(&spec_path, serde_json::to_vec_pretty(&spec)?)?;
    let bundle = dir.join("bench.tar.zst");
    run_checked(
        Command::new(&ctx.bundler)
            .arg("build")
            .arg(&spec_path)
            .arg("--cache")
            .arg(dir.join("cache"))
            .arg("-o")
            .arg(&bundle)
            .arg("--key")
            .arg(&ctx.key)
            .arg("--quiet")
            .env("SOURCE_DATE_EPOCH", crate::SOURCE_DATE_EPOCH),
        "bundler build (transfer bundle)",
    )?;
    measure::remove(&dir.join("cache"))?;
    measure::remove(&src)?;
    Ok(bundle)
}

/// One measured variant.
struct Variant {
    key: &'static str,
    label: String,
    role: Role,
    /// Which server it talks to.
    s3: bool,
    /// The command of repetition `rep`.
    job: Box<dyn Fn(usize) -> Job>,
    /// A file it writes (removed before the run, size checked after).
    out: Option<std::path::PathBuf>,
}

/// A run: the client's measurement and the server's CPU seconds.
#[derive(Clone, Copy)]
struct Run {
    client: Sample,
    server_cpu: f64,
}

/// Runs the transfer benchmark with a bundle of about `size` bytes.
pub fn run(ctx: &Ctx, size: u64, reps: usize) -> Result<Value> {
    if !Moto::available() {
        bail!("transfer: needs the moto server (pip install 'moto[server]'), as .ci/run installs");
    }
    if !Registry::available() {
        bail!(
            "transfer: needs docker-registry, openssl and htpasswd (apt-get install docker-registry openssl apache2-utils)"
        );
    }
    run_checked(Command::new("curl").arg("--version"), "curl --version")
        .context("transfer: needs curl")?;
    let dir = ctx.work.join("transfer");
    measure::remove(&dir)?;
    fs::create_dir_all(&dir)?;
    eprintln!("bench: transfer: building a {} MiB bundle", size >> 20);
    let bundle = build_bundle(ctx, &dir, size)?;
    let bundle_size = fs::metadata(&bundle)?.len();
    let digest = sha256_hex(&bundle)?;
    let out = dir.join("pulled.tar.zst");
    let log = ctx.logs.join("transfer.log");
    let pubkey = ctx.pubkey_path().to_owned();

    let moto = Moto::start();
    moto.create_bucket(BUCKET);
    let home = dir.join("home");
    fs::create_dir_all(&home)?;
    let s3_env = moto.env(&home);
    let registry = Registry::plain();
    let host = registry.host();
    let base = registry.base_url();
    let registry_pid = registry.pid().context("the registry is not running")?;

    let with_env = |mut job: Job| {
        for (k, v) in &s3_env {
            job = job.env(k, v);
        }
        job
    };
    let bundler = ctx.bundler.clone();
    let b = bundle.clone();
    // Seeds the objects the pulls read (untimed).
    let seed_s3 = with_env(Job::new(
        &bundler,
        &[&"push", &b, &format!("s3://{BUCKET}/bundle.tar.zst")],
    ));
    let seed_oci = Job::new(
        &bundler,
        &[&"push", &b, &format!("oci://{host}/bench/pull:1")],
    );
    for job in [&seed_s3, &seed_oci] {
        measure::run(job, &log).context("seeding the servers")?;
    }

    let one_chunk = format!("{}M", bundle_size.div_ceil(1 << 20).max(5));
    let sigv4 = format!(
        "--aws-sigv4 aws:amz:us-east-1:s3 --user {}:{}",
        moto.key_id(),
        moto.secret()
    );
    let endpoint = moto.endpoint();
    let q = |p: &Path| format!("'{}'", p.display());
    let variants: Vec<Variant> = vec![
        Variant {
            key: "s3_push",
            label: format!(
                "bundler push s3 ({} part(s) of 64 MiB, 4 jobs)",
                bundle_size.div_ceil(64 << 20)
            ),
            role: Role::Ours,
            s3: true,
            job: {
                let j = with_env(Job::new(
                    &bundler,
                    &[&"push", &b, &format!("s3://{BUCKET}/ours.tar.zst")],
                ));
                Box::new(move |_| j.clone())
            },
            out: None,
        },
        Variant {
            key: "s3_push_single",
            label: "bundler push s3, one PUT (--part-size >= bundle)".into(),
            role: Role::Info,
            s3: true,
            job: {
                let j = with_env(Job::new(
                    &bundler,
                    &[
                        &"push",
                        &b,
                        &format!("s3://{BUCKET}/single.tar.zst"),
                        &"--part-size",
                        &one_chunk,
                    ],
                ));
                Box::new(move |_| j.clone())
            },
            out: None,
        },
        Variant {
            key: "s3_curl_put",
            label: "curl -T --aws-sigv4 (one PUT)".into(),
            role: Role::Base,
            s3: true,
            job: {
                let j = Job::shell(&format!(
                    "curl -sSf {sigv4} -T {} {endpoint}/{BUCKET}/plain.tar.zst -o /dev/null",
                    q(&b)
                ));
                Box::new(move |_| j.clone())
            },
            out: None,
        },
        Variant {
            key: "s3_pull",
            label: "bundler pull s3 (64 MiB ranged chunks, 4 jobs, verified)".into(),
            role: Role::Ours,
            s3: true,
            job: {
                let j = with_env(Job::new(
                    &bundler,
                    &[
                        &"pull",
                        &format!("s3://{BUCKET}/bundle.tar.zst"),
                        &"-o",
                        &out,
                        &"--key",
                        &pubkey,
                    ],
                ));
                Box::new(move |_| j.clone())
            },
            out: Some(out.clone()),
        },
        Variant {
            key: "s3_pull_one_chunk",
            label: "bundler pull s3, one ranged GET (verified)".into(),
            role: Role::Info,
            s3: true,
            job: {
                let j = with_env(Job::new(
                    &bundler,
                    &[
                        &"pull",
                        &format!("s3://{BUCKET}/bundle.tar.zst"),
                        &"-o",
                        &out,
                        &"--key",
                        &pubkey,
                        &"--part-size",
                        &one_chunk,
                    ],
                ));
                Box::new(move |_| j.clone())
            },
            out: Some(out.clone()),
        },
        Variant {
            key: "s3_curl_get",
            label: "curl -o --aws-sigv4 (one GET) + sync -f".into(),
            role: Role::Base,
            s3: true,
            job: {
                let j = Job::shell(&format!(
                    "curl -sSf {sigv4} {endpoint}/{BUCKET}/bundle.tar.zst -o {o} && sync -f {o}",
                    o = q(&out)
                ));
                Box::new(move |_| j.clone())
            },
            out: Some(out.clone()),
        },
        Variant {
            key: "oci_push",
            label: "bundler push oci (artifact: bundle + signature + manifest)".into(),
            role: Role::Ours,
            s3: false,
            job: {
                let (bundler, b, host) = (bundler.clone(), b.clone(), host.clone());
                Box::new(move |rep| {
                    Job::new(
                        &bundler,
                        &[&"push", &b, &format!("oci://{host}/bench/ours{rep}:1")],
                    )
                })
            },
            out: None,
        },
        Variant {
            key: "oci_curl_put",
            label: "sha256sum + curl POST, PUT -T (monolithic blob upload)".into(),
            role: Role::Base,
            s3: false,
            job: {
                let (b, base) = (q(&b), base.clone());
                Box::new(move |rep| {
                    Job::shell(&format!(
                        "set -e; d=$(sha256sum {b} | cut -c1-64); \
                         loc=$(curl -sSf -X POST -D - -o /dev/null {base}/v2/bench/plain{rep}/blobs/uploads/ | tr -d '\\r' | sed -n 's/^[Ll]ocation: //p'); \
                         curl -sSf -T {b} -H 'Content-Type: application/octet-stream' \"$loc&digest=sha256:$d\" -o /dev/null"
                    ))
                })
            },
            out: None,
        },
        Variant {
            key: "oci_pull",
            label: "bundler pull oci (digest checked, verified)".into(),
            role: Role::Ours,
            s3: false,
            job: {
                let j = Job::new(
                    &bundler,
                    &[
                        &"pull",
                        &format!("oci://{host}/bench/pull:1"),
                        &"-o",
                        &out,
                        &"--key",
                        &pubkey,
                    ],
                );
                Box::new(move |_| j.clone())
            },
            out: Some(out.clone()),
        },
        Variant {
            key: "oci_curl_get",
            label: "curl -o of the blob + sync -f".into(),
            role: Role::Base,
            s3: false,
            job: {
                let j = Job::shell(&format!(
                    "curl -sSf {base}/v2/bench/pull/blobs/sha256:{digest} -o {o} && sync -f {o}",
                    o = q(&out)
                ));
                Box::new(move |_| j.clone())
            },
            out: Some(out.clone()),
        },
    ];

    let mut runs: Vec<Vec<Run>> = vec![Vec::new(); variants.len()];
    let quiet = || measure::wait_quiet(crate::NOISE_CORES, Duration::from_secs(ctx.quiet_wait));
    eprintln!(
        "bench: transfer: {} MiB bundle, {reps} reps, moto at {endpoint}, registry at {host}",
        bundle_size >> 20
    );
    for rep in 0..reps {
        // Ours and baseline alternate which goes first.
        let mut order: Vec<usize> = (0..variants.len()).collect();
        if rep % 2 == 1 {
            order.reverse();
        }
        for &i in &order {
            let v = &variants[i];
            if let Some(o) = &v.out {
                measure::remove(o)?;
            }
            measure::warm(std::slice::from_ref(&bundle))?;
            measure::sync()?;
            quiet();
            let pid = if v.s3 { moto.pid() } else { registry_pid };
            let before = process_cpu(pid);
            let client = measure::run(&(v.job)(rep), &log)?;
            let server_cpu = process_cpu(pid) - before;
            if let Some(o) = &v.out {
                let got = fs::metadata(o).map(|m| m.len()).unwrap_or(0);
                if got != bundle_size {
                    bail!(
                        "{}: {} has {got} bytes, expected {bundle_size}",
                        v.key,
                        o.display()
                    );
                }
            }
            runs[i].push(Run { client, server_cpu });
        }
        eprintln!("  rep {} done", rep + 1);
    }
    if sha256_hex(&out)? != digest {
        bail!("the last pull ({}) differs from the bundle", out.display());
    }
    measure::remove(&out)?;

    let mib = bundle_size as f64 / f64::from(1 << 20);
    let med = |i: usize| -> (f64, f64) {
        let s = measure::stats(&runs[i].iter().map(|r| r.client).collect::<Vec<_>>());
        let mut srv: Vec<f64> = runs[i].iter().map(|r| r.server_cpu).collect();
        (s.median.wall, measure::median(&mut srv))
    };
    println!();
    println!(
        "Transfer: a {:.0} MiB bundle (incompressible) to and from moto {} and docker-registry on loopback, medians of {reps} runs",
        mib,
        moto_version()
    );
    println!(
        "  {:<60} {:>8} {:>17} {:>8} {:>9} {:>10} {:>8} {:>8}",
        "", "wall s", "(min–max)", "MiB/s", "client s", "server s", "RSS MiB", "other s"
    );
    let mut vj = serde_json::Map::new();
    for (i, v) in variants.iter().enumerate() {
        let samples: Vec<Sample> = runs[i].iter().map(|r| r.client).collect();
        let st = measure::stats(&samples);
        let (wall, server) = med(i);
        let other = (st.median.background - server).max(0.0);
        let tag = if v.role == Role::Info { " [info]" } else { "" };
        println!(
            "  {:<60} {:>8.2} {:>17} {:>8.1} {:>9.2} {:>10.2} {:>8.1} {:>8.2}",
            format!("{}{tag}", v.label),
            wall,
            format!("({:.2}–{:.2})", st.min_wall, st.max_wall),
            mib / wall,
            st.median.cpu(),
            server,
            st.median.rss_mib(),
            other,
        );
        vj.insert(
            v.key.to_owned(),
            json!({
                "label": v.label, "role": v.role.as_str(), "median": st.median.to_json(),
                "mib_per_s": round(mib / wall, 2), "server_cpu_s": round(server, 3),
                "command": (v.job)(0).display(),
                "samples": runs[i].iter().map(|r| {
                    let mut s = r.client.to_json();
                    s["server_cpu_s"] = json!(round(r.server_cpu, 3));
                    s
                }).collect::<Vec<_>>(),
            }),
        );
    }
    let idx = |k: &str| variants.iter().position(|v| v.key == k).expect("variant");
    let ratio = |ours: &str, base: &str| med(idx(ours)).0 / med(idx(base)).0;
    println!();
    let mut ratios = serde_json::Map::new();
    for (name, ours, base) in [
        ("S3 push: bundler / curl -T", "s3_push", "s3_curl_put"),
        ("S3 pull: bundler / curl -o", "s3_pull", "s3_curl_get"),
        (
            "OCI push: bundler / curl blob upload",
            "oci_push",
            "oci_curl_put",
        ),
        (
            "OCI pull: bundler / curl blob download",
            "oci_pull",
            "oci_curl_get",
        ),
    ] {
        let r = ratio(ours, base);
        println!(
            "  {name:<42} wall {r:5.2}x   {:7.1} vs {:7.1} MiB/s",
            mib / med(idx(ours)).0,
            mib / med(idx(base)).0
        );
        ratios.insert(format!("{ours}_vs_{base}"), json!(round(r, 3)));
    }
    println!(
        "  client s = CPU of the client (user+sys); server s = CPU the server used during the run; other s = other processes"
    );
    Ok(json!({
        "bundle_bytes": bundle_size, "reps": reps, "moto": moto_version(),
        "variants": vj, "ratios": ratios,
    }))
}

fn moto_version() -> String {
    Command::new("python3")
        .args(["-c", "import moto; print(moto.__version__)"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "?".into())
}
