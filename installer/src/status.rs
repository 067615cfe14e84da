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

/// [`check_path`] for each of `paths`, in order, the files hashed on
/// several threads ([`crate::parallel::map`]): a receipt of a few hundred MB
/// is read at the speed of the disk, not of one core's SHA-256.
pub fn check_paths(root: &Root, paths: &[InstalledPath]) -> Vec<Option<String>> {
    crate::parallel::map(paths, |p| check_path(root, p))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, bytes: &[u8], mode: &str) -> InstalledPath {
        InstalledPath {
            path: path.into(),
            kind: "file".into(),
            mode: Some(mode.into()),
            sha256: Some(Sha256Digest::of(bytes).to_string()),
            target: None,
        }
    }

    #[test]
    fn parallel_check_finds_the_same_problems_in_receipt_order() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let mut paths = Vec::new();
        for i in 0..40 {
            let bytes = vec![i as u8; 1000 * i];
            let on_disk = dir.path().join(format!("f{i}"));
            // Every third modified, every fifth missing, every seventh
            // with another mode.
            if i % 5 != 0 {
                let written = if i % 3 == 0 {
                    b"changed".to_vec()
                } else {
                    bytes.clone()
                };
                std::fs::write(&on_disk, written).unwrap();
                let mode = if i % 7 == 0 { 0o600 } else { 0o644 };
                std::fs::set_permissions(&on_disk, std::fs::Permissions::from_mode(mode)).unwrap();
            }
            paths.push(file(&format!("/f{i}"), &bytes, "0644"));
        }
        let root = Root::new(dir.path()).unwrap();
        let one_by_one: Vec<Option<String>> = paths.iter().map(|p| check_path(&root, p)).collect();
        assert_eq!(check_paths(&root, &paths), one_by_one);
        assert_eq!(one_by_one[0].as_deref(), Some("missing"));
        assert_eq!(one_by_one[3].as_deref(), Some("content modified"));
        assert_eq!(one_by_one[7].as_deref(), Some("mode is 0600"));
        assert_eq!(one_by_one[1], None);
        assert_eq!(
            one_by_one.iter().filter(|p| p.is_none()).count(),
            40 - 8 - 11 - 3
        );
    }
}
