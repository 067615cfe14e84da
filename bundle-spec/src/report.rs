//! Progress reporting, implemented by the binaries (a progress bar in
//! `bundler`, plain lines in `install-bundle`).

/// Receives progress events from long-running operations.
///
/// Every method has an empty default, so an implementation picks only what it
/// shows. Ids returned by [`Reporter::on_start`] are passed back to the other
/// methods; they only need to be unique among transfers running at once.
pub trait Reporter: Sync {
    /// A named phase begins (`"fetch"`, `"pack"`, `"verify"`, ...).
    fn on_phase(&self, _phase: &str) {}
    /// A transfer of `total` bytes (when known) of the item `name` begins.
    fn on_start(&self, _name: &str, _total: Option<u64>) -> usize {
        0
    }
    /// `bytes` more bytes of transfer `id` are done.
    fn on_progress(&self, _id: usize, _bytes: u64) {}
    /// The transfer `id` restarted from `offset` bytes (a retry or resume).
    fn on_restart(&self, _id: usize, _offset: u64) {}
    /// Transfer `id` ended (successfully or not).
    fn on_finish(&self, _id: usize) {}
    /// A line of information worth showing to the user.
    fn on_message(&self, _message: &str) {}
}

/// A [`Reporter`] that shows nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoReporter;

impl Reporter for NoReporter {}
