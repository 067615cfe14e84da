//! Exit codes and the failures that map to them.

/// What kind of failure ended the run; each has its documented exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// 1: anything else (I/O, not installed).
    Other,
    /// 2: bad command line.
    Usage,
    /// 3: signature, key, integrity or format check failed; host untouched.
    Verify,
    /// 4: refused by policy or preflight; host untouched.
    Refused,
    /// 5: apply failed and everything was rolled back.
    RolledBack,
    /// 6: apply failed and the rollback is incomplete.
    Incomplete,
    /// 7: `status` found what is installed differs from the receipt (drift).
    Drift,
}

impl Kind {
    /// The process exit code.
    pub fn code(self) -> u8 {
        match self {
            Kind::Other => 1,
            Kind::Usage => 2,
            Kind::Verify => 3,
            Kind::Refused => 4,
            Kind::RolledBack => 5,
            Kind::Incomplete => 6,
            Kind::Drift => 7,
        }
    }

    /// A word for JSON output.
    pub fn word(self) -> &'static str {
        match self {
            Kind::Other => "error",
            Kind::Usage => "usage",
            Kind::Verify => "verification-failed",
            Kind::Refused => "refused",
            Kind::RolledBack => "rolled-back",
            Kind::Incomplete => "rollback-incomplete",
            Kind::Drift => "drift",
        }
    }
}

/// A failed run: its kind, message, details (one per line) and a hint.
#[derive(Debug, Clone)]
pub struct Failure {
    /// The kind (exit code).
    pub kind: Kind,
    /// The main message.
    pub message: String,
    /// Every problem or remaining change, one per line.
    pub details: Vec<String>,
    /// What to do about it.
    pub hint: Option<String>,
    /// The JSON document `--json` prints instead of the generic failure one.
    pub json: Option<Box<serde_json::Value>>,
}

impl Failure {
    fn new(kind: Kind, message: String, details: Vec<String>) -> Self {
        let hint = match kind {
            Kind::Verify => Some("nothing was changed: the bundle is not trusted or was modified; get it again from its source".into()),
            Kind::Refused => Some("nothing was changed".into()),
            Kind::RolledBack => Some("the host is as it was before this run".into()),
            Kind::Incomplete => Some("the host is NOT fully as it was: the changes listed above remain".into()),
            Kind::Drift => Some("re-install the bundle to put what drifted back".into()),
            Kind::Other | Kind::Usage => None,
        };
        Self {
            kind,
            message,
            details,
            hint,
            json: None,
        }
    }
    /// Exit 1.
    pub fn other(message: String) -> Self {
        Self::new(Kind::Other, message, Vec::new())
    }
    /// Exit 2.
    pub fn usage(message: String) -> Self {
        Self::new(Kind::Usage, message, Vec::new())
    }
    /// Exit 3.
    pub fn verify(message: String) -> Self {
        Self::new(Kind::Verify, message, Vec::new())
    }
    /// Exit 3: a trusted key file cannot be used. The message is the key
    /// error's, word for word what `bundler verify` says of the same file.
    pub fn key(e: bundle_spec::sign::KeyError) -> Self {
        let mut f = Self::new(Kind::Verify, e.to_string(), Vec::new());
        f.hint = Some("nothing was changed: fix or replace the key file".into());
        f
    }
    /// Exit 4, one problem.
    pub fn refused(message: String) -> Self {
        Self::new(Kind::Refused, message, Vec::new())
    }
    /// Exit 4, every problem listed.
    pub fn refused_all(message: String, problems: Vec<String>) -> Self {
        Self::new(Kind::Refused, message, problems)
    }
    /// Exit 5.
    pub fn rolled_back(message: String, details: Vec<String>) -> Self {
        Self::new(Kind::RolledBack, message, details)
    }
    /// Exit 7, every drifted item listed.
    pub fn drift(message: String, items: Vec<String>) -> Self {
        Self::new(Kind::Drift, message, items)
    }
    /// Exit 6.
    pub fn incomplete(message: String, remaining: Vec<String>) -> Self {
        Self::new(Kind::Incomplete, message, remaining)
    }
}
