//! The builder's [`Reporter`]: an indicatif multi-progress view on a
//! terminal, plain log lines otherwise, nothing with `--quiet`.

use std::collections::HashMap;
use std::io::IsTerminal as _;
use std::sync::Mutex;
use std::time::Duration;

use bundle_spec::Reporter;
use indicatif::{HumanBytes, MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Display {
    /// Progress bars (stderr is a terminal).
    Bars,
    /// One line per event on stderr.
    Lines,
    /// Nothing.
    Quiet,
}

impl Display {
    /// Bars when stderr is a terminal, lines otherwise, nothing when quiet.
    pub fn detect(quiet: bool) -> Self {
        if quiet {
            Display::Quiet
        } else if std::io::stderr().is_terminal() {
            Display::Bars
        } else {
            Display::Lines
        }
    }
}

struct Transfer {
    name: String,
    total: Option<u64>,
    done: u64,
    bar: Option<ProgressBar>,
}

/// A [`Reporter`] for `bundler`.
pub struct Progress {
    display: Display,
    multi: MultiProgress,
    overall: Option<ProgressBar>,
    state: Mutex<(usize, HashMap<usize, Transfer>)>,
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Progress")
            .field("display", &self.display)
            .finish()
    }
}

impl Progress {
    /// A reporter for the given display; `overall_bytes` sizes the overall bar.
    pub fn new(display: Display) -> Self {
        let multi = MultiProgress::with_draw_target(match display {
            Display::Bars => ProgressDrawTarget::stderr_with_hz(10),
            _ => ProgressDrawTarget::hidden(),
        });
        Self {
            display,
            multi,
            overall: None,
            state: Mutex::new((1, HashMap::new())),
        }
    }

    /// Adds an overall bar of `total` bytes (bars mode only).
    pub fn with_overall(mut self, label: &str, total: u64) -> Self {
        if self.display == Display::Bars && total > 0 {
            let bar = self.multi.add(ProgressBar::new(total));
            bar.set_style(
                ProgressStyle::with_template(
                    "{prefix:>12.bold} [{bar:30.green/blue}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            bar.set_prefix(label.to_owned());
            self.overall = Some(bar);
        }
        self
    }

    /// Prints a line above the bars (or on stderr), unless quiet.
    pub fn line(&self, text: &str) {
        match self.display {
            Display::Bars => {
                let _ = self.multi.println(text);
            }
            Display::Lines => eprintln!("{text}"),
            Display::Quiet => {}
        }
    }

    /// Removes the bars.
    pub fn finish(&self) {
        if let Some(o) = &self.overall {
            o.finish_and_clear();
        }
        let _ = self.multi.clear();
    }
}

impl Reporter for Progress {
    fn on_phase(&self, phase: &str) {
        if self.display == Display::Lines {
            eprintln!("== {phase}");
        }
    }

    fn on_start(&self, name: &str, total: Option<u64>) -> usize {
        let mut state = self.state.lock().expect("progress lock");
        let id = state.0;
        state.0 += 1;
        let bar = (self.display == Display::Bars).then(|| {
            let bar = match total {
                Some(t) => ProgressBar::new(t),
                None => ProgressBar::new_spinner(),
            };
            let bar = match &self.overall {
                Some(o) => self.multi.insert_before(o, bar),
                None => self.multi.add(bar),
            };
            bar.set_style(
                ProgressStyle::with_template(
                    "{prefix:>12} [{bar:30.cyan/blue}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            bar.set_prefix(name.chars().take(12).collect::<String>());
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        if self.display == Display::Lines {
            match total {
                Some(t) => eprintln!("{name}: started ({})", HumanBytes(t)),
                None => eprintln!("{name}: started"),
            }
        }
        state.1.insert(
            id,
            Transfer {
                name: name.to_owned(),
                total,
                done: 0,
                bar,
            },
        );
        id
    }

    fn on_progress(&self, id: usize, bytes: u64) {
        let mut state = self.state.lock().expect("progress lock");
        if let Some(t) = state.1.get_mut(&id) {
            t.done += bytes;
            if let Some(bar) = &t.bar {
                bar.inc(bytes);
            }
        }
        if let Some(o) = &self.overall {
            o.inc(bytes);
        }
    }

    fn on_restart(&self, id: usize, offset: u64) {
        let mut state = self.state.lock().expect("progress lock");
        if let Some(t) = state.1.get_mut(&id) {
            if let Some(o) = &self.overall {
                o.set_position(o.position().saturating_sub(t.done.saturating_sub(offset)));
            }
            t.done = offset;
            if let Some(bar) = &t.bar {
                bar.set_position(offset);
            }
            if self.display == Display::Lines {
                eprintln!("{}: restarting at byte {offset}", t.name);
            }
        }
    }

    fn on_finish(&self, id: usize) {
        let mut state = self.state.lock().expect("progress lock");
        if let Some(t) = state.1.remove(&id) {
            if let Some(bar) = t.bar {
                bar.finish_and_clear();
                self.multi.remove(&bar);
            }
            if self.display == Display::Lines {
                let size = t.total.unwrap_or(t.done);
                eprintln!("{}: done ({})", t.name, HumanBytes(size));
            }
        }
    }

    fn on_message(&self, message: &str) {
        self.line(message);
    }
}
