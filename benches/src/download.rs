//! Cold parallel download: N artifacts from a loopback server that waits
//! `latency` before answering and sends each connection's body at `rate`
//! bytes/s (`Behavior::Slow`). Compares the cold build of all of them with
//! the cold build of the slowest one alone, and a warm-cache rebuild with
//! the cold build.

use std::fs;
use std::path::Path;
use std::time::Duration;

use anyhow::{Result, bail};
use bundle_tests::server::{Behavior, Server};
use serde_json::{Value, json};

use crate::data::{self, Kind};
use crate::measure::{self, Job, Sample, round};
use crate::{Ctx, check, print_variant_header, print_variant_row};

/// The artifacts: (name, size in KiB).
const ARTIFACTS: &[(&str, u64)] = &[
    ("dl-a", 8192),
    ("dl-b", 6144),
    ("dl-c", 5120),
    ("dl-d", 4096),
    ("dl-e", 3072),
    ("dl-f", 2048),
    ("dl-g", 1024),
    ("dl-h", 512),
];

/// Settings.
#[derive(Debug, Clone, Copy)]
pub struct Config {
    /// Body bytes per second per connection.
    pub rate: u64,
    /// Delay before each response.
    pub latency: Duration,
    /// Repetitions.
    pub reps: usize,
}

fn write_spec(path: &Path, server: &Server, arts: &[(&str, Vec<u8>, String)]) -> Result<()> {
    let mut artifacts = serde_json::Map::new();
    let mut steps = Vec::new();
    for (name, body, sha) in arts {
        artifacts.insert(
            (*name).to_owned(),
            json!({ "url": server.url(&format!("/{name}")), "sha256": sha, "size": body.len() }),
        );
        steps
            .push(json!({ "kind": "binary", "artifact": name, "dest": format!("/opt/dl/{name}") }));
    }
    let spec = json!({
        "apiVersion": "bundle/v1", "name": "bench-dl", "version": "1", "serial": 1,
        "target": { "os": "linux", "arch": crate::debian_arch() },
        "artifacts": artifacts, "steps": steps,
    });
    fs::write(path, serde_json::to_vec_pretty(&spec)?)?;
    Ok(())
}

/// Runs the download benchmark; prints its table and returns its JSON.
pub fn run(ctx: &Ctx, cfg: Config) -> Result<Value> {
    let dir = ctx.work.join("dl");
    measure::remove(&dir)?;
    fs::create_dir_all(&dir)?;
    let server = Server::start();
    let mut arts = Vec::new();
    for &(name, kib) in ARTIFACTS {
        let mut body = Vec::new();
        let sha = data::generate(Kind::Exec, data::seed_of(name), kib * 1024, &mut body)?;
        server.route(
            &format!("/{name}"),
            Behavior::Slow {
                body: body.clone(),
                latency: cfg.latency,
                bytes_per_sec: usize::try_from(cfg.rate)?,
            },
        );
        arts.push((name, body, sha));
    }
    let slowest = arts
        .iter()
        .max_by_key(|a| a.1.len())
        .expect("artifacts")
        .clone();
    let spec_all = dir.join("spec-all.json");
    let spec_one = dir.join("spec-one.json");
    write_spec(&spec_all, &server, &arts)?;
    write_spec(&spec_one, &server, std::slice::from_ref(&slowest))?;
    let n = arts.len();
    let total: u64 = arts.iter().map(|a| a.1.len() as u64).sum();
    let per = |bytes: usize| cfg.latency.as_secs_f64() + bytes as f64 / cfg.rate as f64;
    let single_estimate = per(slowest.1.len());
    let sequential_estimate: f64 = arts.iter().map(|a| per(a.1.len())).sum();
    let requests = || -> usize {
        arts.iter()
            .map(|a| server.requests(&format!("/{}", a.0)).len())
            .sum()
    };

    let build = |spec: &Path, cache: &Path, out: &Path, jobs: Option<usize>| -> Job {
        let mut job = Job::new(
            &ctx.bundler,
            &[
                &"build", &spec, &"--cache", &cache, &"-o", &out, &"--key", &ctx.key, &"--quiet",
            ],
        )
        .env("SOURCE_DATE_EPOCH", crate::SOURCE_DATE_EPOCH);
        if let Some(j) = jobs {
            job.args.push("--jobs".into());
            job.args.push(j.to_string().into());
        }
        job
    };
    let log = ctx.logs.join("download.log");
    let (c_one, c_all, c_allj) = (
        dir.join("cache-one"),
        dir.join("cache-all"),
        dir.join("cache-all-jobs"),
    );
    let variants = [
        (
            "cold_single",
            format!(
                "cold: slowest artifact alone ({} KiB)",
                slowest.1.len() / 1024
            ),
        ),
        ("cold_all", format!("cold: all {n} (default --jobs 4)")),
        ("warm_all", format!("warm-cache rebuild of all {n}")),
        ("cold_all_jobs_n", format!("cold: all {n} with --jobs {n}")),
    ];
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); variants.len()];
    let mut warm_requests = 0;
    let quiet = || {
        measure::wait_quiet(crate::NOISE_CORES, Duration::from_secs(ctx.quiet_wait));
    };
    eprintln!(
        "bench: download: {n} artifacts, {:.1} MiB, {} ms latency, {:.2} MiB/s per connection, {} reps",
        total as f64 / 1048576.0,
        cfg.latency.as_millis(),
        cfg.rate as f64 / 1048576.0,
        cfg.reps
    );
    for rep in 0..cfg.reps {
        // Groups: [single], [all, warm rebuild], [all --jobs N]; rotated per rep.
        let mut groups = [0usize, 1, 2];
        groups.rotate_left(rep % 3);
        for g in groups {
            match g {
                0 => {
                    measure::remove(&c_one)?;
                    measure::sync()?;
                    quiet();
                    let s = measure::run(
                        &build(&spec_one, &c_one, &dir.join("one.tar.zst"), None),
                        &log,
                    )?;
                    eprintln!("  rep {} {:<40} {:7.2} s", rep + 1, variants[0].1, s.wall);
                    samples[0].push(s);
                }
                1 => {
                    measure::remove(&c_all)?;
                    measure::sync()?;
                    quiet();
                    let s = measure::run(
                        &build(&spec_all, &c_all, &dir.join("all.tar.zst"), None),
                        &log,
                    )?;
                    eprintln!("  rep {} {:<40} {:7.2} s", rep + 1, variants[1].1, s.wall);
                    samples[1].push(s);
                    measure::sync()?;
                    quiet();
                    let before = requests();
                    let s = measure::run(
                        &build(&spec_all, &c_all, &dir.join("warm.tar.zst"), None),
                        &log,
                    )?;
                    warm_requests += requests() - before;
                    eprintln!("  rep {} {:<40} {:7.2} s", rep + 1, variants[2].1, s.wall);
                    samples[2].push(s);
                }
                _ => {
                    measure::remove(&c_allj)?;
                    measure::sync()?;
                    quiet();
                    let s = measure::run(
                        &build(&spec_all, &c_allj, &dir.join("all-jobs.tar.zst"), Some(n)),
                        &log,
                    )?;
                    eprintln!("  rep {} {:<40} {:7.2} s", rep + 1, variants[3].1, s.wall);
                    samples[3].push(s);
                }
            }
        }
    }
    if fs::read(dir.join("all.tar.zst"))? != fs::read(dir.join("warm.tar.zst"))? {
        bail!("the warm rebuild differs from the cold build (same SOURCE_DATE_EPOCH)");
    }
    let stats: Vec<_> = samples.iter().map(|s| measure::stats(s)).collect();
    let med = |i: usize| stats[i].median.wall;
    let all_vs_single = med(1) / med(0);
    let allj_vs_single = med(3) / med(0);
    let warm_vs_cold = med(2) / med(1);

    println!();
    println!(
        "Cold parallel download: {n} artifacts ({:.1} MiB, 0.5–8 MiB each) from a loopback server, {} ms latency, {:.2} MiB/s per connection; {} reps",
        total as f64 / 1048576.0,
        cfg.latency.as_millis(),
        cfg.rate as f64 / 1048576.0,
        cfg.reps
    );
    print_variant_header();
    for (i, (_, label)) in variants.iter().enumerate() {
        print_variant_row(label, &stats[i]);
    }
    println!(
        "  estimates: slowest artifact alone {single_estimate:.2} s (latency + size/rate); all {n} one after another {sequential_estimate:.2} s"
    );
    let t1 = check(all_vs_single, 1.3);
    let t2 = check(warm_vs_cold, 0.05);
    println!(
        "  cold all / cold slowest alone     {all_vs_single:6.2}x   target <= 1.30x  {t1}   (with --jobs {n}: {allj_vs_single:.2}x)"
    );
    println!(
        "  warm rebuild / cold build         {warm_vs_cold:6.3}x   target <= 0.05x  {t2}   (HTTP requests during warm rebuilds: {warm_requests})"
    );

    let mut vj = serde_json::Map::new();
    for (i, (key, label)) in variants.iter().enumerate() {
        vj.insert(
            (*key).to_owned(),
            json!({
                "label": label,
                "samples": samples[i].iter().map(|s| s.to_json()).collect::<Vec<_>>(),
                "median": stats[i].median.to_json(),
            }),
        );
    }
    Ok(json!({
        "artifacts": arts.iter().map(|a| json!({"name": a.0, "size": a.1.len()})).collect::<Vec<_>>(),
        "latency_ms": cfg.latency.as_millis(),
        "rate_bytes_per_s": cfg.rate,
        "reps": cfg.reps,
        "estimate_single_s": round(single_estimate, 3),
        "estimate_sequential_s": round(sequential_estimate, 3),
        "variants": vj,
        "cold_all_vs_single": round(all_vs_single, 3),
        "cold_all_jobs_n_vs_single": round(allj_vs_single, 3),
        "warm_vs_cold": round(warm_vs_cold, 4),
        "warm_http_requests": warm_requests,
        "targets": {
            "cold_all_vs_single": {"max": 1.3, "pass": all_vs_single <= 1.3},
            "warm_vs_cold": {"max": 0.05, "pass": warm_vs_cold <= 0.05},
        },
    }))
}
