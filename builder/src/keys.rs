//! Signing keys: generation and loading, with passphrases from
//! `BUNDLER_KEY_PASSWORD` or a terminal prompt.

use std::fs::OpenOptions;
use std::io::{IsTerminal as _, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use bundle_spec::sign::{KeyError, Protection, PublicKey, SecretKey, TrustedKeys};

/// Environment variable holding the secret key's passphrase.
pub const PASSWORD_ENV: &str = "BUNDLER_KEY_PASSWORD";

/// Why a key operation failed.
#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    /// A key file already exists.
    #[error("{0} already exists; refusing to overwrite a key (move it away first)")]
    Exists(PathBuf),
    /// Writing a key file failed.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// No passphrase could be obtained.
    #[error(
        "a passphrase is needed for {0}: set {PASSWORD_ENV} or run on a terminal (keygen: or pass --unencrypted)"
    )]
    NoPassphrase(String),
    /// The two passphrases typed differ.
    #[error("the passphrases do not match")]
    Mismatch,
    /// The key itself.
    #[error(transparent)]
    Key(#[from] KeyError),
}

fn passphrase_from_env_or_prompt(prompt: &str) -> Option<String> {
    if let Ok(p) = std::env::var(PASSWORD_ENV) {
        return Some(p);
    }
    if std::io::stdin().is_terminal() {
        return rpassword::prompt_password(prompt).ok();
    }
    None
}

/// What `keygen` wrote.
#[derive(Debug)]
pub struct Generated {
    /// The public key file.
    pub public_path: PathBuf,
    /// The secret key file.
    pub secret_path: PathBuf,
    /// The public key.
    pub public: PublicKey,
}

/// Writes `OUT.pub` and `OUT.key` (mode 0600), refusing to overwrite either.
pub fn keygen(out: &Path, protection: KeygenProtection) -> Result<Generated, KeysError> {
    let public_path = with_suffix(out, "pub");
    let secret_path = with_suffix(out, "key");
    for p in [&public_path, &secret_path] {
        if p.exists() {
            return Err(KeysError::Exists(p.clone()));
        }
    }
    let passphrase = match protection {
        KeygenProtection::Unencrypted => None,
        KeygenProtection::Passphrase => {
            if let Ok(p) = std::env::var(PASSWORD_ENV) {
                Some(p)
            } else if std::io::stdin().is_terminal() {
                let a = rpassword::prompt_password("Passphrase for the new key: ")
                    .map_err(|_| KeysError::NoPassphrase(secret_path.display().to_string()))?;
                let b = rpassword::prompt_password("Passphrase again: ")
                    .map_err(|_| KeysError::NoPassphrase(secret_path.display().to_string()))?;
                if a != b {
                    return Err(KeysError::Mismatch);
                }
                Some(a)
            } else {
                return Err(KeysError::NoPassphrase(secret_path.display().to_string()));
            }
        }
    };
    let key = SecretKey::generate()?;
    let secret_text = key.to_file_string(match &passphrase {
        Some(p) => Protection::Passphrase(p),
        None => Protection::Unencrypted,
    })?;
    write_new(&secret_path, secret_text.as_bytes(), 0o600)?;
    if let Err(e) = write_new(
        &public_path,
        key.public().to_file_string().as_bytes(),
        0o644,
    ) {
        let _ = std::fs::remove_file(&secret_path);
        return Err(e);
    }
    Ok(Generated {
        public_path,
        secret_path,
        public: key.public(),
    })
}

/// Whether `keygen` encrypts the secret key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeygenProtection {
    /// scrypt-encrypted with a passphrase (the default, as minisign).
    Passphrase,
    /// Unencrypted (minisign `-W`), for throwaway keys in tests and demos.
    Unencrypted,
}

fn with_suffix(out: &Path, ext: &str) -> PathBuf {
    let mut s = out.as_os_str().to_owned();
    s.push(".");
    s.push(ext);
    PathBuf::from(s)
}

fn write_new(path: &Path, data: &[u8], mode: u32) -> Result<(), KeysError> {
    let err = |source| KeysError::Write {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                KeysError::Exists(path.to_owned())
            } else {
                err(e)
            }
        })?;
    f.write_all(data).and_then(|()| f.sync_all()).map_err(err)
}

/// Loads a secret key, asking for its passphrase only if it is encrypted.
pub fn load_secret(path: &Path) -> Result<SecretKey, KeysError> {
    let what = path.display().to_string();
    let mut asked = false;
    let key = SecretKey::from_file(path, &mut || {
        asked = true;
        passphrase_from_env_or_prompt(&format!("Passphrase for {what}: "))
    });
    match key {
        Err(KeyError::NeedsPassphrase(_)) => Err(KeysError::NoPassphrase(what)),
        other => Ok(other?),
    }
}

/// Loads public keys into a trusted set.
pub fn load_trusted(paths: &[PathBuf]) -> Result<TrustedKeys, KeysError> {
    let mut trusted = TrustedKeys::new();
    for p in paths {
        trusted.add(PublicKey::from_file(p)?, p.display().to_string());
    }
    Ok(trusted)
}
