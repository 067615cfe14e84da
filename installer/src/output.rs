//! What the installer prints: phases and results as plain lines on stdout,
//! a progress bar (terminal) or lines (otherwise) on stderr, errors on
//! stderr; `--json` prints one JSON document on stdout instead; `--quiet`
//! prints only errors.

use std::io::{IsTerminal as _, Write as _};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bundle_spec::Reporter;

/// How much to print.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verbosity {
    /// Phases, plan and results.
    Normal,
    /// Errors only.
    Quiet,
    /// One JSON document on stdout.
    Json,
}

/// The installer's output.
#[derive(Debug)]
pub struct Out {
    /// How much to print.
    pub verbosity: Verbosity,
    tty: bool,
    progress: Mutex<Progress>,
    timings: Mutex<Vec<(usize, String, f64)>>,
}

#[derive(Debug, Default)]
struct Progress {
    total: u64,
    done: u64,
    names: Vec<(usize, String, u64)>,
    last_draw: Option<Instant>,
    started: Option<Instant>,
}

impl Out {
    /// Output with this verbosity.
    pub fn new(verbosity: Verbosity) -> Self {
        Self {
            verbosity,
            tty: std::io::stderr().is_terminal(),
            progress: Mutex::new(Progress::default()),
            timings: Mutex::new(Vec::new()),
        }
    }

    /// The apply's time per step so far: (number, kind, seconds); step 0 is
    /// the installer's own first operations and the final systemd actions.
    pub fn step_timings(&self) -> Vec<(usize, String, f64)> {
        self.timings.lock().expect("timings lock").clone()
    }

    /// A line of normal output.
    pub fn line(&self, text: &str) {
        if self.verbosity == Verbosity::Normal {
            // A closed pipe (`| head`) is not an error worth a panic.
            let _ = writeln!(std::io::stdout(), "{text}");
        }
    }

    /// Prints a document on stdout (ignoring a closed pipe).
    pub fn print(&self, text: &str) {
        let _ = writeln!(std::io::stdout(), "{text}");
    }

    /// A phase header.
    pub fn phase(&self, n: usize, name: &str) {
        self.line(&format!("[{n}/5] {name}"));
    }

    /// A warning (stderr, unless JSON).
    pub fn warn(&self, text: &str) {
        if self.verbosity != Verbosity::Json {
            eprintln!("warning: {text}");
        }
    }

    /// Sets the byte total of the progress bar.
    pub fn set_total(&self, total: u64) {
        let mut p = self.progress.lock().expect("progress lock");
        p.total = total;
        p.started = Some(Instant::now());
    }

    fn draw(&self, p: &mut Progress, force: bool) {
        if self.verbosity != Verbosity::Normal || !self.tty || p.total == 0 {
            return;
        }
        let now = Instant::now();
        if !force
            && p.last_draw
                .is_some_and(|t| now - t < Duration::from_millis(100))
        {
            return;
        }
        p.last_draw = Some(now);
        let pct = p.done.saturating_mul(100) / p.total.max(1);
        let width = 30usize;
        let filled = (pct as usize * width) / 100;
        let secs = p
            .started
            .map(|s| (now - s).as_secs_f64())
            .unwrap_or(0.0)
            .max(0.001);
        let rate = p.done as f64 / secs / (1 << 20) as f64;
        eprint!(
            "\r  [{}{}] {pct:>3}% {:.1}/{:.1} MiB {rate:.0} MiB/s ",
            "=".repeat(filled),
            " ".repeat(width - filled),
            p.done as f64 / (1 << 20) as f64,
            p.total as f64 / (1 << 20) as f64
        );
        let _ = std::io::stderr().flush();
    }

    /// Ends the progress bar line.
    pub fn end_progress(&self) {
        let mut p = self.progress.lock().expect("progress lock");
        if self.tty && self.verbosity == Verbosity::Normal && p.total > 0 {
            self.draw(&mut p, true);
            eprintln!();
        }
    }
}

impl Reporter for Out {
    fn on_start(&self, name: &str, total: Option<u64>) -> usize {
        let mut p = self.progress.lock().expect("progress lock");
        let id = p.names.len() + 1;
        p.names.push((id, name.to_owned(), total.unwrap_or(0)));
        id
    }

    fn on_progress(&self, _id: usize, bytes: u64) {
        let mut p = self.progress.lock().expect("progress lock");
        p.done += bytes;
        self.draw(&mut p, false);
    }

    fn on_finish(&self, id: usize) {
        let p = self.progress.lock().expect("progress lock");
        if !self.tty
            && let Some((_, name, size)) = p.names.iter().find(|(i, _, _)| *i == id)
        {
            self.line(&format!("  verified {name} ({size} bytes)"));
        }
    }

    fn on_message(&self, message: &str) {
        self.line(message);
    }
}

impl crate::apply::Log for Out {
    fn did(&self, line: &str) {
        self.line(&format!("  {line}"));
    }

    fn step_done(&self, number: usize, kind: &str, seconds: f64) {
        self.timings
            .lock()
            .expect("timings lock")
            .push((number, kind.to_owned(), seconds));
    }
}
