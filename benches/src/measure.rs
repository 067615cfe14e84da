//! Running one command and measuring it: wall time, CPU time (user + sys)
//! and peak RSS, all from the child's `wait4` rusage.
//!
//! For `sh -c 'a | b'` the rusage covers the shell and every process it
//! waited for: CPU times are summed over them, and `ru_maxrss` is the peak
//! RSS of the largest single process (not the sum of the pipeline).

use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::{Context as _, Result, bail};

/// One measured run.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// Wall-clock seconds from spawn to reap.
    pub wall: f64,
    /// User CPU seconds (the child and its waited-for descendants).
    pub user: f64,
    /// System CPU seconds.
    pub sys: f64,
    /// Peak resident set size in KiB (largest single process).
    pub maxrss_kib: u64,
    /// CPU seconds that other processes of the machine used during the run
    /// (from /proc/stat): interference from outside the benchmark.
    pub background: f64,
}

impl Sample {
    /// user + sys.
    pub fn cpu(&self) -> f64 {
        self.user + self.sys
    }

    /// Peak RSS in MiB.
    pub fn rss_mib(&self) -> f64 {
        self.maxrss_kib as f64 / 1024.0
    }

    /// As JSON.
    pub fn to_json(self) -> serde_json::Value {
        serde_json::json!({
            "wall_s": round(self.wall, 4), "user_s": round(self.user, 4), "sys_s": round(self.sys, 4),
            "cpu_s": round(self.cpu(), 4), "maxrss_mib": round(self.rss_mib(), 2),
            "background_cpu_s": round(self.background, 3),
        })
    }
}

/// Rounds to `digits` decimals (for JSON).
pub fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

/// A command to measure.
#[derive(Debug, Clone)]
pub struct Job {
    /// Program.
    pub program: OsString,
    /// Arguments.
    pub args: Vec<OsString>,
    /// Working directory.
    pub cwd: Option<PathBuf>,
    /// Extra environment.
    pub env: Vec<(String, String)>,
}

impl Job {
    /// `program args...`.
    pub fn new(program: impl Into<OsString>, args: &[&dyn AsRef<std::ffi::OsStr>]) -> Self {
        Self {
            program: program.into(),
            args: args.iter().map(|a| a.as_ref().to_owned()).collect(),
            cwd: None,
            env: Vec::new(),
        }
    }

    /// `sh -c SCRIPT`.
    pub fn shell(script: &str) -> Self {
        Self::new("sh", &[&"-c", &script])
    }

    /// Runs in `dir`.
    pub fn cwd(mut self, dir: &Path) -> Self {
        self.cwd = Some(dir.to_owned());
        self
    }

    /// Adds an environment variable.
    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.push((k.to_owned(), v.to_owned()));
        self
    }

    /// The command line, shell-quoted for display.
    pub fn display(&self) -> String {
        let mut parts = vec![quote(&self.program.to_string_lossy())];
        parts.extend(self.args.iter().map(|a| quote(&a.to_string_lossy())));
        parts.join(" ")
    }
}

fn quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b))
    {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// The hidden first argument that makes `bench` the measuring helper.
pub const HELPER_ARG: &str = "__measure";

/// Runs `job` with stdout discarded and stderr appended to `log`, and
/// measures it. Fails (showing the log's tail) unless it exits 0.
///
/// The job is started by a fresh `bench __measure` process rather than by
/// this one: on Linux a child's `ru_maxrss` includes the RSS its parent had
/// when it forked (the high-water mark of the address space `execve`
/// replaces), and this process may hold hundreds of MiB (download bodies).
/// The helper is a few MiB, so the floor it adds is that of any launcher.
pub fn run(job: &Job, log: &Path) -> Result<Sample> {
    let err = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening {}", log.display()))?;
    let mut cmd = Command::new(std::env::current_exe().context("finding the bench binary")?);
    cmd.arg(HELPER_ARG)
        .arg(&job.program)
        .args(&job.args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(err);
    if let Some(dir) = &job.cwd {
        cmd.current_dir(dir);
    }
    for (k, v) in &job.env {
        cmd.env(k, v);
    }
    let busy_before = busy_seconds();
    let out = cmd
        .output()
        .with_context(|| format!("starting {}", job.display()))?;
    let busy = busy_seconds() - busy_before;
    let text = String::from_utf8_lossy(&out.stdout);
    let fields: Vec<&str> = text.split_whitespace().collect();
    let parsed = (|| -> Option<(i32, Sample)> {
        let [status, wall, user, sys, rss] = fields.as_slice() else {
            return None;
        };
        Some((
            status.parse().ok()?,
            Sample {
                wall: wall.parse().ok()?,
                user: user.parse().ok()?,
                sys: sys.parse().ok()?,
                maxrss_kib: rss.parse().ok()?,
                background: 0.0,
            },
        ))
    })();
    let Some((status, mut sample)) = parsed else {
        bail!(
            "measuring {} failed ({}): {text:?}; see {}",
            job.display(),
            out.status,
            log.display()
        );
    };
    let status = ExitStatus::from_raw(status);
    if !status.success() {
        let mut tail = String::new();
        if let Ok(mut f) = File::open(log) {
            let _ = f.read_to_string(&mut tail);
        }
        let tail: Vec<&str> = tail.lines().rev().take(20).collect();
        bail!(
            "{} failed ({status}); end of {}:\n{}",
            job.display(),
            log.display(),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    sample.background = (busy - sample.cpu()).max(0.0);
    Ok(sample)
}

/// Consecutive waits for quiet that timed out.
static BUSY_STREAK: AtomicUsize = AtomicUsize::new(0);
/// After this many consecutive timeouts the machine counts as persistently
/// busy and waits are cut to a single check.
const BUSY_STREAK_MAX: usize = 3;

/// Waits until the rest of the machine has been quiet (other processes using
/// less than `cores` CPUs) for half a second, or `max_wait` passed. Returns
/// how long it waited. The machine may be shared with builds and tests; when
/// it stays busy through several waits in a row, later calls check once and
/// go on (the "other s" column then shows the interference).
pub fn wait_quiet(cores: f64, max_wait: std::time::Duration) -> std::time::Duration {
    let start = Instant::now();
    let persistent = BUSY_STREAK.load(Ordering::Relaxed) >= BUSY_STREAK_MAX;
    let mut told = false;
    loop {
        let before = busy_seconds();
        let t = Instant::now();
        std::thread::sleep(std::time::Duration::from_millis(500));
        let used = (busy_seconds() - before) / t.elapsed().as_secs_f64();
        if used <= cores {
            BUSY_STREAK.store(0, Ordering::Relaxed);
            if told {
                eprintln!(
                    "  (waited {:.0} s for other processes to go quiet)",
                    start.elapsed().as_secs_f64()
                );
            }
            return start.elapsed();
        }
        if persistent {
            return start.elapsed();
        }
        if start.elapsed() >= max_wait {
            let streak = BUSY_STREAK.fetch_add(1, Ordering::Relaxed) + 1;
            if streak == BUSY_STREAK_MAX {
                eprintln!(
                    "  the machine stays busy (other processes use {used:.1} CPUs): measuring without waiting until it is quiet again"
                );
            }
            return start.elapsed();
        }
        if !told {
            eprintln!(
                "  other processes are using {used:.1} CPUs: waiting up to {:.0} s for quiet",
                max_wait.as_secs_f64()
            );
            told = true;
        }
    }
}

/// CPU seconds all CPUs spent busy since boot (user, nice, system, irq,
/// softirq, steal; /proc/stat counts in USER_HZ = 100 ticks per second).
fn busy_seconds() -> f64 {
    let stat = fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return 0.0;
    };
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal
    let busy: u64 = [0, 1, 2, 5, 6, 7].iter().filter_map(|&i| v.get(i)).sum();
    busy as f64 / 100.0
}

/// `bench __measure PROGRAM ARGS...`: runs PROGRAM (stdin and stdout
/// /dev/null, stderr inherited) and prints `STATUS WALL USER SYS MAXRSS_KIB`.
pub fn helper(args: &[std::ffi::OsString]) -> Result<()> {
    let Some((program, rest)) = args.split_first() else {
        bail!("usage: bench {HELPER_ARG} PROGRAM [ARGS...]");
    };
    let mut cmd = Command::new(program);
    cmd.args(rest).stdin(Stdio::null()).stdout(Stdio::null());
    let start = Instant::now();
    let child = cmd
        .spawn()
        .with_context(|| format!("starting {}", program.to_string_lossy()))?;
    let (status, (user, sys, maxrss)) = wait4(child.id())?;
    let wall = start.elapsed().as_secs_f64();
    // `child` is dropped without waiting: wait4 reaped it.
    drop(child);
    println!("{status} {wall:.6} {user:.6} {sys:.6} {maxrss}");
    Ok(())
}

/// Waits for `pid`; returns its raw wait status and (user s, sys s, maxrss KiB).
/// rustix has no wait4, so this is the one unsafe call of the harness.
#[allow(unsafe_code)]
fn wait4(pid: u32) -> io::Result<(i32, (f64, f64, u64))> {
    let pid = libc::pid_t::try_from(pid).map_err(io::Error::other)?;
    let mut status: libc::c_int = 0;
    // SAFETY: `rusage` is a plain C struct for which all-zero bytes are valid.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: both pointers are to live, writable locals of the right types.
        let r = unsafe { libc::wait4(pid, &raw mut status, 0, &raw mut ru) };
        if r == pid {
            break;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    let maxrss = u64::try_from(ru.ru_maxrss).unwrap_or(0);
    Ok((status, (secs(ru.ru_utime), secs(ru.ru_stime), maxrss)))
}

/// Reads every file (recursively for directories) once, so that the next run
/// finds its inputs in the page cache.
pub fn warm(paths: &[PathBuf]) -> Result<u64> {
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0;
    for p in paths {
        total += warm_one(p, &mut buf).with_context(|| format!("reading {}", p.display()))?;
    }
    Ok(total)
}

fn warm_one(p: &Path, buf: &mut [u8]) -> io::Result<u64> {
    let meta = fs::metadata(p)?;
    if meta.is_dir() {
        let mut total = 0;
        for e in fs::read_dir(p)? {
            total += warm_one(&e?.path(), buf)?;
        }
        return Ok(total);
    }
    let mut f = File::open(p)?;
    let mut total = 0;
    loop {
        match f.read(buf) {
            Ok(0) => return Ok(total),
            Ok(n) => total += n as u64,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// `sync`: writes back dirty pages left by the previous run, so that they
/// are not flushed during the next measured one.
pub fn sync() -> Result<()> {
    let st = Command::new("sync").status().context("running sync")?;
    if !st.success() {
        bail!("sync failed: {st}");
    }
    Ok(())
}

/// Removes a file or a directory tree if present.
pub fn remove(p: &Path) -> Result<()> {
    match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => {
            fs::remove_dir_all(p).with_context(|| format!("removing {}", p.display()))
        }
        Ok(_) => fs::remove_file(p).with_context(|| format!("removing {}", p.display())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("inspecting {}", p.display())),
    }
}

/// Summary statistics of one variant's samples.
#[derive(Debug, Clone, Copy)]
pub struct Stats {
    /// Median of each field, taken independently.
    pub median: Sample,
    /// Fastest wall time.
    pub min_wall: f64,
    /// Slowest wall time.
    pub max_wall: f64,
}

/// Median of each field (independently), and the wall-time range.
pub fn stats(samples: &[Sample]) -> Stats {
    let med = |f: &dyn Fn(&Sample) -> f64| {
        let mut v: Vec<f64> = samples.iter().map(f).collect();
        median(&mut v)
    };
    let walls: Vec<f64> = samples.iter().map(|s| s.wall).collect();
    Stats {
        median: Sample {
            wall: med(&|s| s.wall),
            user: med(&|s| s.user),
            sys: med(&|s| s.sys),
            maxrss_kib: med(&|s| s.maxrss_kib as f64).round() as u64,
            background: med(&|s| s.background),
        },
        min_wall: walls.iter().copied().fold(f64::INFINITY, f64::min),
        max_wall: walls.iter().copied().fold(0.0, f64::max),
    }
}

/// Median (mean of the two middle values for an even count); 0 when empty.
pub fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(&mut []), 0.0);
    }

    #[test]
    fn quoting() {
        let j = Job::shell("zstd -dc 'a b' >/dev/null");
        assert_eq!(j.display(), r"sh -c 'zstd -dc '\''a b'\'' >/dev/null'");
    }
}
