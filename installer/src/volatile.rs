//! Directories on the volatile `/run`: a `directory` step's path that lies
//! below `/run` inside the root — `/var/run/kubernetes` on Debian, where
//! `/var/run` links to `/run` — is on a tmpfs on a booted host: created by
//! the install, gone after the next boot, and `status` would report it
//! missing from then on. (Found on a booted machine: the worker example's
//! `/var/run/kubernetes`, `tests/tests/vm_worker.rs`.)
//!
//! So the installer writes, beside such directories, one `tmpfiles.d(5)`
//! line per directory into `/etc/tmpfiles.d/install-bundle-NAME.conf`
//! (`d /run/kubernetes 0755 root root -`), a file of the bundle like any
//! other (planned, journaled, in the receipt, rolled back): at every boot
//! `systemd-tmpfiles-setup.service` creates the directories again, before
//! the services start — as Debian packages do for their `/run` directories.
//! The path written is the one below `/run` (systemd-tmpfiles warns about
//! `/var/run`).

use std::io;

use bundle_spec::spec::{Manifest, Step};

use crate::paths::{Kind, Root};
use crate::plan::{Op, inline_file};

/// The volatile directory.
pub const RUN: &str = "/run";

/// The tmpfiles.d file of bundle `name`.
pub fn tmpfiles_path(name: &str) -> String {
    format!("/etc/tmpfiles.d/install-bundle-{name}.conf")
}

/// `target` with every existing component resolved inside the root (as a
/// chroot would), e.g. `/var/run/kubernetes` → `/run/kubernetes` on Debian.
pub fn resolved(root: &Root, target: &str) -> io::Result<String> {
    let components: Vec<&str> = target.split('/').filter(|c| !c.is_empty()).collect();
    let mut deepest = 0;
    for i in 1..=components.len() {
        let prefix = format!("/{}", components[..i].join("/"));
        match root.stat(&prefix)? {
            Some(m) if m.kind == Kind::Dir => deepest = i,
            _ => break,
        }
    }
    let base = if deepest == 0 {
        "/".to_owned()
    } else {
        let real = root
            .open_dir(&format!("/{}", components[..deepest].join("/")))?
            .real_path()?;
        let inside = real
            .strip_prefix(root.path())
            .map_err(|_| io::Error::other(format!("{} is outside the root", real.display())))?;
        format!("/{}", inside.display())
    };
    let mut out = base.trim_end_matches('/').to_owned();
    for c in &components[deepest..] {
        out.push('/');
        out.push_str(c);
    }
    Ok(if out.is_empty() { "/".into() } else { out })
}

/// Whether `path` (resolved) lies below [`RUN`].
fn below_run(path: &str) -> bool {
    path.strip_prefix(RUN).is_some_and(|r| r.starts_with('/'))
}

/// The tmpfiles.d file for the manifest's `directory` paths below `/run`,
/// and the index of the first step that has one (the file is written with
/// that step). `None` when no directory is below `/run`.
pub fn tmpfiles_op(root: &Root, manifest: &Manifest) -> Result<Option<(usize, Op)>, String> {
    let mut lines = String::new();
    let mut first = None;
    for (i, step) in manifest.steps.iter().enumerate() {
        let Step::Directory(s) = step else { continue };
        for p in &s.paths {
            let path = resolved(root, p.as_str()).map_err(|e| format!("{p}: {e}"))?;
            if below_run(&path) {
                first.get_or_insert(i);
                lines.push_str(&format!("d {path} {:04o} root root -\n", s.mode.bits()));
            }
        }
    }
    let Some(step) = first else { return Ok(None) };
    let content = format!(
        "# Written by install-bundle for {}: its directories below /run, made again at every boot.\n{lines}",
        manifest.name
    );
    let op = inline_file(
        root,
        &tmpfiles_path(manifest.name.as_str()),
        content.into_bytes(),
        0o644,
    )
    .map_err(|e| e.to_string())?;
    Ok(Some((step, op)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_resolve_through_links_to_run_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        std::fs::create_dir_all(r.join("run/lock")).unwrap();
        std::fs::create_dir_all(r.join("var/lib")).unwrap();
        std::os::unix::fs::symlink("/run", r.join("var/run")).unwrap();
        std::os::unix::fs::symlink("../run/lock", r.join("var/lock")).unwrap();
        let root = Root::new(r).unwrap();
        for (target, expected) in [
            ("/var/run/kubernetes", "/run/kubernetes"),
            ("/var/run", "/run"),
            ("/var/lock/x/y", "/run/lock/x/y"),
            ("/var/lib/kubelet", "/var/lib/kubelet"),
            ("/new/dir", "/new/dir"),
        ] {
            assert_eq!(resolved(&root, target).unwrap(), expected, "{target}");
        }
        assert!(below_run("/run/kubernetes"));
        assert!(!below_run("/run"));
        assert!(!below_run("/runner/x"));
    }
}
