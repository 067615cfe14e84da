//! RFC 3339 timestamps.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// A point in time, written in JSON as RFC 3339 (`2027-12-31T00:00:00Z`) and
/// normalized to UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Timestamp(OffsetDateTime);

/// Why a string is not an RFC 3339 timestamp.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected an RFC 3339 timestamp such as 2027-12-31T00:00:00Z, got {0:?}")]
pub struct TimestampError(String);

impl Timestamp {
    /// The current time, truncated to whole seconds.
    pub fn now() -> Self {
        Self::from_unix(OffsetDateTime::now_utc().unix_timestamp())
            .unwrap_or(Self(OffsetDateTime::UNIX_EPOCH))
    }

    /// Seconds since the Unix epoch; `None` out of range.
    pub fn from_unix(seconds: i64) -> Option<Self> {
        OffsetDateTime::from_unix_timestamp(seconds).ok().map(Self)
    }

    /// `SOURCE_DATE_EPOCH` when set (reproducible builds), else now.
    pub fn now_or_source_date_epoch() -> Result<Self, TimestampError> {
        match std::env::var("SOURCE_DATE_EPOCH") {
            Ok(v) => v
                .trim()
                .parse::<i64>()
                .ok()
                .and_then(Self::from_unix)
                .ok_or_else(|| TimestampError(format!("SOURCE_DATE_EPOCH={v}"))),
            Err(_) => Ok(Self::now()),
        }
    }

    /// Seconds since the Unix epoch.
    pub fn unix(self) -> i64 {
        self.0.unix_timestamp()
    }
}

/// The rule of a bundle's `expires`: a bundle is valid while `now <
/// expires` and expired from the instant `expires` on, at exactly `expires`
/// too. `install-bundle` refuses an expired bundle, `bundler build` refuses
/// to build one, and both `verify` commands warn. Timestamps are whole
/// seconds, so the last second a bundle installs is `expires` minus one.
pub fn is_expired(expires: Option<Timestamp>, now: Timestamp) -> bool {
    expires.is_some_and(|e| now >= e)
}

/// The validity window for people: `"expires 2027-12-31T00:00:00Z (in 3
/// days 4 hours; refused from that instant on)"`, `"expired at ... (2 hours
/// ago)"` or `"never expires"`, with `now` from the clock of the machine
/// that says it.
pub fn describe_expiry(expires: Option<Timestamp>, now: Timestamp) -> String {
    match expires {
        None => "never expires".to_owned(),
        Some(e) if is_expired(expires, now) => format!(
            "expired at {e} ({} ago by this machine's clock, {now}); install-bundle refuses it",
            human_span(now.unix().saturating_sub(e.unix()))
        ),
        Some(e) => format!(
            "expires {e} (in {} by this machine's clock, {now}); install-bundle refuses it from \
             that instant on",
            human_span(e.unix().saturating_sub(now.unix()))
        ),
    }
}

/// `3 days 4 hours`, `5 hours 2 minutes`, `40 seconds`.
fn human_span(seconds: i64) -> String {
    let s = seconds.max(0);
    let unit = |n: i64, one: &str| format!("{n} {one}{}", if n == 1 { "" } else { "s" });
    let (d, h, m) = (s / 86_400, s % 86_400 / 3600, s % 3600 / 60);
    match (d, h, m) {
        (0, 0, 0) => unit(s, "second"),
        (0, 0, m) => unit(m, "minute"),
        (0, h, 0) => unit(h, "hour"),
        (0, h, m) => format!("{} {}", unit(h, "hour"), unit(m, "minute")),
        (d, 0, _) => unit(d, "day"),
        (d, h, _) => format!("{} {}", unit(d, "day"), unit(h, "hour")),
    }
}

impl FromStr for Timestamp {
    type Err = TimestampError;
    fn from_str(s: &str) -> Result<Self, TimestampError> {
        OffsetDateTime::parse(s, &Rfc3339)
            .map(|t| Self(t.to_offset(time::UtcOffset::UTC)))
            .map_err(|_| TimestampError(s.chars().take(64).collect()))
    }
}

impl TryFrom<String> for Timestamp {
    type Error = TimestampError;
    fn try_from(s: String) -> Result<Self, TimestampError> {
        s.parse()
    }
}

impl From<Timestamp> for String {
    fn from(t: Timestamp) -> String {
        t.to_string()
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.format(&Rfc3339) {
            Ok(s) => f.write_str(&s),
            Err(_) => write!(f, "@{}", self.0.unix_timestamp()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bundle_is_refused_from_the_instant_it_expires() {
        let e: Timestamp = "2027-12-31T00:00:00Z".parse().unwrap();
        let at = |d: i64| Timestamp::from_unix(e.unix() + d).unwrap();
        assert!(!is_expired(Some(e), at(-1)), "one second before: valid");
        assert!(is_expired(Some(e), at(0)), "at exactly expires: refused");
        assert!(is_expired(Some(e), at(1)), "after: refused");
        assert!(
            !is_expired(None, at(1_000_000_000)),
            "no expiry: always valid"
        );
    }

    #[test]
    fn expiry_is_described_with_the_time_left() {
        let e: Timestamp = "2027-12-31T00:00:00Z".parse().unwrap();
        let at = |d: i64| Timestamp::from_unix(e.unix() + d).unwrap();
        assert_eq!(
            describe_expiry(Some(e), at(-(3 * 86_400 + 4 * 3600 + 5))),
            "expires 2027-12-31T00:00:00Z (in 3 days 4 hours by this machine's clock, \
             2027-12-27T19:59:55Z); install-bundle refuses it from that instant on"
        );
        assert_eq!(
            describe_expiry(Some(e), at(0)),
            "expired at 2027-12-31T00:00:00Z (0 seconds ago by this machine's clock, \
             2027-12-31T00:00:00Z); install-bundle refuses it"
        );
        assert_eq!(describe_expiry(None, at(0)), "never expires");
        assert_eq!(human_span(1), "1 second");
        assert_eq!(human_span(3660), "1 hour 1 minute");
        assert_eq!(human_span(86_400), "1 day");
    }

    #[test]
    fn round_trips_and_normalizes_to_utc() {
        let t: Timestamp = "2027-12-31T01:00:00+01:00".parse().unwrap();
        assert_eq!(t.to_string(), "2027-12-31T00:00:00Z");
        assert_eq!(
            Timestamp::from_unix(0).unwrap().to_string(),
            "1970-01-01T00:00:00Z"
        );
        assert!("2027-12-31".parse::<Timestamp>().is_err());
    }
}
