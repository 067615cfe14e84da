//! Format constants of the `install-bundle/v1` bundle file, in one place.
//!
//! `FORMAT.md` beside this crate is the prose description; every number it
//! names is defined here.

/// The value of the manifest's `format` field.
pub const FORMAT: &str = "install-bundle/v1";
/// The value of a spec's `apiVersion` field.
pub const SPEC_API_VERSION: &str = "bundle/v1";
/// Name of the first tar entry: the manifest.
pub const MANIFEST_ENTRY: &str = "BUNDLE.json";
/// Name of the second tar entry: the minisign signature of the manifest.
pub const SIGNATURE_ENTRY: &str = "BUNDLE.json.minisig";
/// Name of the optional third entry: the bundle's SBOM (CycloneDX 1.5 JSON),
/// present exactly when the manifest has an `sbom` field.
pub const SBOM_ENTRY: &str = "SBOM.cdx.json";
/// The value of the manifest's `sbom.format` field.
pub const SBOM_FORMAT: &str = "CycloneDX-1.5";
/// Prefix of every artifact entry's name (`artifacts/NAME`).
pub const ARTIFACT_PREFIX: &str = "artifacts/";
/// File extension of a bundle.
pub const BUNDLE_EXTENSION: &str = "tar.zst";
/// Extension appended to a file name for its detached minisign signature.
pub const DETACHED_SIGNATURE_EXTENSION: &str = "minisig";
/// Permission bits of every tar entry.
pub const ENTRY_MODE: u32 = 0o644;
/// Size of a tar block; headers and data padding are multiples of it.
pub const TAR_BLOCK: u64 = 512;
/// Bytes of zeros that end the tar archive (two blocks).
pub const TAR_END_BYTES: u64 = 2 * TAR_BLOCK;
/// zstd compression level used when none is given.
pub const DEFAULT_ZSTD_LEVEL: i32 = 3;
/// Highest zstd level the builder accepts; levels above 19 need windows the
/// reader refuses (see [`crate::Limits::zstd_window_log_max`]).
pub const MAX_ZSTD_LEVEL: i32 = 19;
/// Length of an artifact name, at most.
pub const MAX_ARTIFACT_NAME_LEN: usize = 64;
/// Length of an absolute target path, at most (Linux `PATH_MAX`).
pub const MAX_PATH_LEN: usize = 4096;
/// Length of one path component, at most (Linux `NAME_MAX`).
pub const MAX_COMPONENT_LEN: usize = 255;

/// minisign: signature algorithm id of a pre-hashed (BLAKE2b-512) Ed25519 signature.
pub const SIG_ALG_PREHASHED: [u8; 2] = *b"ED";
/// minisign: algorithm id of an Ed25519 key (public and secret key files).
pub const KEY_ALG: [u8; 2] = *b"Ed";
/// minisign: key derivation id of an scrypt-encrypted secret key.
pub const KDF_SCRYPT: [u8; 2] = *b"Sc";
/// minisign: key derivation id of an unencrypted secret key.
pub const KDF_NONE: [u8; 2] = [0, 0];
/// minisign: checksum algorithm id (BLAKE2b-256) of a secret key.
pub const CHECKSUM_ALG: [u8; 2] = *b"B2";
/// minisign: prefix of the first line of every key and signature file.
pub const UNTRUSTED_COMMENT_PREFIX: &str = "untrusted comment: ";
/// minisign: prefix of the third line of a signature file.
pub const TRUSTED_COMMENT_PREFIX: &str = "trusted comment: ";
/// minisign: scrypt opslimit of an encrypted secret key (libsodium's `OPSLIMIT_SENSITIVE`).
pub const SCRYPT_OPSLIMIT: u64 = 33_554_432;
/// minisign: scrypt memlimit of an encrypted secret key (libsodium's `MEMLIMIT_SENSITIVE`, 1 GiB).
pub const SCRYPT_MEMLIMIT: u64 = 1_073_741_824;
