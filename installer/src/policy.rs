//! Policy checks made right after the signature verified, before any artifact
//! byte is staged: expiry, target, anti-rollback, os-release.

use std::collections::BTreeMap;

use bundle_spec::Timestamp;
use bundle_spec::spec::{Arch, Manifest};

use crate::paths::Root;
use crate::receipt::Receipt;

/// Whether a lower serial than the installed one is accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Downgrade {
    /// Refuse (the default).
    Refuse,
    /// Accept (`--allow-downgrade`).
    Allow,
}

/// Every policy problem with this bundle on this root.
pub fn check(
    manifest: &Manifest,
    manifest_sha256: &str,
    receipt: Option<&Receipt>,
    downgrade: Downgrade,
    root: &Root,
    now: Timestamp,
) -> Vec<String> {
    let mut problems = Vec::new();
    if let Some(expires) = manifest.expires
        && bundle_spec::time::is_expired(manifest.expires, now)
    {
        problems.push(format!(
            "bundle {} {} expired at {expires} (now {now}); ask for a newly built bundle",
            manifest.name, manifest.version
        ));
    }
    match Arch::host() {
        Some(a) if a == manifest.target.arch => {}
        host => problems.push(format!(
            "bundle is for {}/{}, this host is {}/{}",
            manifest.target.os.as_str(),
            manifest.target.arch.as_str(),
            std::env::consts::OS,
            host.map_or(std::env::consts::ARCH, Arch::as_str)
        )),
    }
    if std::env::consts::OS != manifest.target.os.as_str() {
        problems.push(format!(
            "bundle is for os {}, this host runs {}",
            manifest.target.os.as_str(),
            std::env::consts::OS
        ));
    }
    if let Some(wanted) = &manifest.target.os_release {
        let have = os_release(root);
        for (k, v) in wanted {
            match have.get(k) {
                Some(h) if h == v => {}
                Some(h) => problems.push(format!(
                    "bundle needs os-release {k}={v:?}, the root has {k}={h:?}"
                )),
                None => problems.push(format!(
                    "bundle needs os-release {k}={v:?}, the root's os-release has no {k}"
                )),
            }
        }
    }
    if let Some(base) = &manifest.base {
        let full = format!(
            "install the full bundle of {} {} here instead",
            manifest.name, manifest.version
        );
        match receipt {
            None => problems.push(format!(
                "this differential bundle installs only where {} serial {} is installed, and no release of {} is installed here; {full}",
                base.name, base.serial, manifest.name
            )),
            Some(r)
                if r.manifest_sha256 == base.manifest_sha256.to_string()
                    || r.manifest_sha256 == manifest_sha256 => {}
            Some(r) => problems.push(format!(
                "this differential bundle installs only where {} serial {} (manifest sha256 {}) is installed; installed here is {} (serial {}, manifest sha256 {}); {full}",
                base.name, base.serial, base.manifest_sha256, r.version, r.serial, r.manifest_sha256
            )),
        }
    }
    if let Some(r) = receipt {
        let serial = manifest.serial.get();
        if r.serial > serial && downgrade == Downgrade::Refuse {
            problems.push(format!(
                "downgrade refused: {} {} (serial {}) is installed, this bundle is {} (serial {serial}); pass --allow-downgrade to install it anyway",
                r.name, r.version, r.serial, manifest.version
            ));
        } else if r.serial == serial
            && r.manifest_sha256 != manifest_sha256
            && downgrade == Downgrade::Refuse
        {
            problems.push(format!(
                "serial {serial} of {} is already installed from a different manifest (sha256 {} vs {manifest_sha256}); a new release needs a higher serial",
                r.name, r.manifest_sha256
            ));
        }
    }
    problems
}

/// The root's `/etc/os-release` (or `/usr/lib/os-release`) as a map.
pub fn os_release(root: &Root) -> BTreeMap<String, String> {
    let text = ["/etc/os-release", "/usr/lib/os-release"]
        .iter()
        .find_map(|p| {
            root.open_following(p)
                .ok()
                .and_then(|f| std::io::read_to_string(f).ok())
        })
        .unwrap_or_default();
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| {
            (
                k.trim().to_owned(),
                v.trim().trim_matches('"').trim_matches('\'').to_owned(),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The installer refuses a bundle from the instant it expires: one
    /// second before `expires` it has no expiry problem, at `expires` and
    /// after it has one (the clock is passed in, not read).
    #[test]
    fn expiry_is_refused_at_exactly_expires() {
        let spec = bundle_spec::validate::parse_spec(
            br#"{"apiVersion": "bundle/v1", "name": "w", "version": "1", "serial": 1,
                "expires": "2027-12-31T00:00:00Z",
                "target": {"os": "linux", "arch": "amd64"}, "artifacts": {},
                "steps": [{"kind": "directory", "paths": ["/opt/x"]}]}"#,
            &bundle_spec::Limits::default(),
        )
        .unwrap();
        let manifest =
            Manifest::from_spec(&spec, Timestamp::from_unix(0).unwrap(), |_, _| None).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let root = Root::new(dir.path()).unwrap();
        let expires = manifest.expires.unwrap().unix();
        let expired_at = |d: i64| {
            check(
                &manifest,
                "x",
                None,
                Downgrade::Refuse,
                &root,
                Timestamp::from_unix(expires + d).unwrap(),
            )
            .iter()
            .any(|p| p.contains("expired at 2027-12-31T00:00:00Z"))
        };
        assert!(!expired_at(-1));
        assert!(expired_at(0));
        assert!(expired_at(1));
    }
}
