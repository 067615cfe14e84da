//! `install-bundle status`: compare what a receipt recorded with the host.

use bundle_spec::Sha256Digest;

use crate::paths::{Kind, Root};
use crate::receipt::{InstalledPackage, InstalledPath};

/// What is wrong with one recorded path now (`None`: as installed). Files
/// and symlinks are looked at without following their final component;
/// directories are followed inside the root, as they were installed.
pub fn check_path(root: &Root, p: &InstalledPath) -> Option<String> {
    let meta = if p.kind == "directory" {
        root.stat(&p.path)
    } else {
        root.lstat(&p.path)
    };
    let meta = match meta {
        Ok(Some(m)) => m,
        Ok(None) => return Some("missing".into()),
        Err(e) => return Some(e.to_string()),
    };
    let mode = format!("{:04o}", meta.mode);
    match p.kind.as_str() {
        "file" => {
            if meta.kind != Kind::File {
                return Some("not a regular file any more".into());
            }
            let digest = root
                .open_nofollow(&p.path)
                .and_then(Sha256Digest::of_reader)
                .map(|(d, _)| d.to_string());
            match digest {
                Ok(d) if Some(&d) != p.sha256.as_ref() => Some("content modified".into()),
                Err(e) => Some(format!("unreadable: {e}")),
                _ if Some(&mode) != p.mode.as_ref() => Some(format!("mode is {mode}")),
                _ => None,
            }
        }
        "directory" if meta.kind != Kind::Dir => Some("not a directory any more".into()),
        "directory" if Some(&mode) != p.mode.as_ref() => Some(format!("mode is {mode}")),
        "symlink" if meta.kind != Kind::Symlink => Some("not a symlink any more".into()),
        "symlink" => match root.parent(&p.path).and_then(|(d, n)| d.read_link(&n)) {
            Ok(t) if Some(t.to_string_lossy().as_ref()) == p.target.as_deref() => None,
            Ok(t) => Some(format!("points to {}", t.display())),
            Err(e) => Some(e.to_string()),
        },
        _ => None,
    }
}

/// Each package a receipt lists and what is wrong with it now (`None`:
/// installed at that version in the root's dpkg database).
pub fn check_packages<'a>(
    root: &Root,
    packages: &'a [InstalledPackage],
) -> Vec<(&'a InstalledPackage, Option<String>)> {
    if packages.is_empty() {
        return Vec::new();
    }
    let status = crate::debs::host_status(root);
    packages
        .iter()
        .map(|p| {
            let problem = match &status {
                Err(e) => Some(format!("cannot read the dpkg database: {e}")),
                Ok(s) => {
                    let versions: Vec<String> =
                        s.get(&p.name).map(|i| i.version.to_string()).collect();
                    if versions.is_empty() {
                        Some("not installed".into())
                    } else if versions.contains(&p.version) {
                        None
                    } else {
                        Some(format!("version {} installed", versions.join(", ")))
                    }
                }
            };
            (p, problem)
        })
        .collect()
}
