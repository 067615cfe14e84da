//! `install-bundle status`: compare what a receipt recorded with the host.

use std::os::unix::fs::PermissionsExt as _;

use bundle_spec::Sha256Digest;

use crate::paths::Root;
use crate::receipt::InstalledPath;

/// What is wrong with one recorded path now (`None`: as installed).
pub fn check_path(root: &Root, p: &InstalledPath) -> Option<String> {
    let host = match root.resolve_str(&p.path) {
        Ok(h) => h,
        Err(e) => return Some(e.to_string()),
    };
    let meta = match std::fs::symlink_metadata(&host) {
        Ok(m) => m,
        Err(_) => return Some("missing".into()),
    };
    let mode = format!("{:04o}", meta.permissions().mode() & 0o7777);
    match p.kind.as_str() {
        "file" => {
            if !meta.is_file() {
                return Some("not a regular file any more".into());
            }
            let digest = std::fs::File::open(&host)
                .and_then(Sha256Digest::of_reader)
                .map(|(d, _)| d.to_string());
            match digest {
                Ok(d) if Some(&d) != p.sha256.as_ref() => Some("content modified".into()),
                Err(e) => Some(format!("unreadable: {e}")),
                _ if Some(&mode) != p.mode.as_ref() => Some(format!("mode is {mode}")),
                _ => None,
            }
        }
        "directory" if !meta.is_dir() => Some("not a directory any more".into()),
        "directory" if Some(&mode) != p.mode.as_ref() => Some(format!("mode is {mode}")),
        "symlink" => match std::fs::read_link(&host) {
            Ok(t) if Some(t.to_string_lossy().as_ref()) == p.target.as_deref() => None,
            Ok(t) => Some(format!("points to {}", t.display())),
            Err(_) => Some("not a symlink any more".into()),
        },
        _ => None,
    }
}
