//! Which public keys the installer trusts: those compiled in from
//! `keys/*.pub`, those in `ROOT/etc/install-bundle/trusted.d/*.pub`, and those
//! given with `--trusted-key`.

use std::path::PathBuf;

use bundle_spec::sign::{KeyError, PublicKey, TrustedKeys};

use crate::paths::Root;

include!(concat!(env!("OUT_DIR"), "/builtin_keys.rs"));

/// The directory of host-trusted keys, below the root.
pub const TRUSTED_DIR: &str = "/etc/install-bundle/trusted.d";

/// Collects every trusted key. A key file that cannot be parsed is an error:
/// a broken trust configuration must not silently shrink the set.
pub fn trusted_keys(root: &Root, extra: &[PathBuf]) -> Result<TrustedKeys, KeyError> {
    let mut trusted = TrustedKeys::new();
    for (name, text) in BUILTIN_KEYS {
        trusted.add(
            PublicKey::parse(text, &format!("built-in key {name}"))?,
            format!("built-in {name}"),
        );
    }
    // Resolved inside the root, like every path below it.
    let dir = root
        .open_dir(TRUSTED_DIR)
        .and_then(|d| d.real_path())
        .unwrap_or_else(|_| root.display(TRUSTED_DIR));
    if let Ok(entries) = std::fs::read_dir(&dir) {
        let mut files: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "pub"))
            .collect();
        files.sort();
        for p in files {
            trusted.add(PublicKey::from_file(&p)?, p.display().to_string());
        }
    }
    for p in extra {
        trusted.add(PublicKey::from_file(p)?, p.display().to_string());
    }
    Ok(trusted)
}
