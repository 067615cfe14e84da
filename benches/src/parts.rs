//! Split parts: `bundler split` (parity) and `bundler join` (intact, and
//! rebuilding a lost part) against plain copying of the same bytes (`cp`),
//! on a file of `--size` incompressible bytes (split and join do not parse
//! the bundle; its signature is the parts index's).

use std::fs;
use std::time::Duration;

use anyhow::{Result, bail};
use serde_json::{Value, json};

use crate::data::{self, Kind};
use crate::measure::{self, Job, Sample, round};
use crate::{Ctx, check, print_variant_header, print_variant_row};

/// Runs the parts benchmark on `size` bytes in parts of a quarter of it
/// (four data parts) with one parity part.
pub fn run(ctx: &Ctx, size: u64, reps: usize) -> Result<Value> {
    let dir = ctx.work.join("parts");
    measure::remove(&dir)?;
    fs::create_dir_all(&dir)?;
    let bundle = dir.join("big.tar.zst");
    data::generate_file(Kind::Packed, data::seed_of("parts"), size, &bundle)?;
    let part = size.div_ceil(4);
    let pubkey = ctx.pubkey_path().to_owned();
    let out = dir.join("out");
    let copy = dir.join("copy");
    let joined = dir.join("joined.tar.zst");
    let log = ctx.logs.join("parts.log");
    let split = Job::new(
        &ctx.bundler,
        &[
            &"split",
            &bundle,
            &"--size",
            &part.to_string(),
            &"--parity",
            &"1",
            &"--key",
            &ctx.key,
            &"-o",
            &out,
        ],
    );
    let index = out.join("big.tar.zst.parts.json");
    let join = Job::new(
        &ctx.bundler,
        &[&"join", &index, &"--key", &pubkey, &"-o", &joined],
    );
    let cp = Job::shell(&format!(
        "cp {} {}/big.tar.zst && sync -f {}",
        bundle.display(),
        copy.display(),
        copy.display()
    ));
    let variants = [
        ("cp", "cp of the file".to_owned()),
        (
            "split",
            format!("bundler split: 4 parts of {} MiB + 1 parity", part >> 20),
        ),
        ("join", "bundler join, every part intact".to_owned()),
        (
            "join_repair",
            "bundler join, part 2 lost (rebuilt)".to_owned(),
        ),
    ];
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); variants.len()];
    let quiet = || measure::wait_quiet(crate::NOISE_CORES, Duration::from_secs(ctx.quiet_wait));
    eprintln!("bench: parts: {} MiB, {reps} reps", size >> 20);
    for rep in 0..reps {
        measure::remove(&copy)?;
        fs::create_dir_all(&copy)?;
        measure::warm(std::slice::from_ref(&bundle))?;
        measure::sync()?;
        quiet();
        samples[0].push(measure::run(&cp, &log)?);
        measure::remove(&out)?;
        fs::create_dir_all(&out)?;
        measure::sync()?;
        quiet();
        samples[1].push(measure::run(&split, &log)?);
        for (v, lose) in [(2usize, false), (3, true)] {
            let _ = fs::remove_file(&joined);
            if lose {
                let p = out.join("big.tar.zst.002");
                if p.exists() {
                    fs::rename(&p, dir.join("lost.002"))?;
                }
            }
            measure::sync()?;
            quiet();
            samples[v].push(measure::run(&join, &log)?);
            if fs::metadata(&joined)?.len() != size {
                bail!(
                    "join produced {} bytes, expected {size}",
                    fs::metadata(&joined)?.len()
                );
            }
            if lose {
                fs::rename(dir.join("lost.002"), out.join("big.tar.zst.002"))?;
            }
        }
        eprintln!("  rep {} done", rep + 1);
    }
    let stats: Vec<_> = samples.iter().map(|s| measure::stats(s)).collect();
    let med = |i: usize| stats[i].median.wall;
    println!();
    println!(
        "Split parts: {} MiB of incompressible data, 4 data parts + 1 parity part, {reps} reps",
        size >> 20
    );
    print_variant_header();
    for (i, (_, label)) in variants.iter().enumerate() {
        print_variant_row(label, &stats[i]);
    }
    let (s, j, r) = (med(1) / med(0), med(2) / med(0), med(3) / med(0));
    println!(
        "  split / cp {s:6.2}x   join / cp {j:6.2}x   join rebuilding a part / cp {r:6.2}x   (informational: {})",
        check(j, 3.0)
    );
    let mut vj = serde_json::Map::new();
    for (i, (key, label)) in variants.iter().enumerate() {
        vj.insert(
            (*key).to_owned(),
            json!({"label": label, "median": stats[i].median.to_json(),
                   "samples": samples[i].iter().map(|s| s.to_json()).collect::<Vec<_>>()}),
        );
    }
    Ok(json!({
        "size": size, "parts": 4, "parity": 1, "reps": reps, "variants": vj,
        "split_vs_cp": round(s, 3), "join_vs_cp": round(j, 3), "join_repair_vs_cp": round(r, 3),
    }))
}
