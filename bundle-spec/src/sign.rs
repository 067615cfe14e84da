//! minisign-compatible keys and signatures, made with ed25519-dalek.
//!
//! * Public key file: `untrusted comment: ...` line, then base64 of
//!   `Ed` ‖ key id (8 bytes) ‖ Ed25519 public key (32 bytes).
//! * Secret key file: `untrusted comment: ...` line, then base64 of
//!   `Ed` ‖ kdf (`Sc` or two zero bytes) ‖ `B2` ‖ salt (32) ‖ opslimit (u64 LE)
//!   ‖ memlimit (u64 LE) ‖ [key id (8) ‖ secret key (64) ‖ checksum (32)],
//!   the bracketed part XORed with scrypt(passphrase) when encrypted; the
//!   checksum is BLAKE2b-256 of `Ed` ‖ key id ‖ secret key.
//! * Signature file: `untrusted comment: ...`, base64 of `ED` ‖ key id ‖
//!   Ed25519 signature of BLAKE2b-512(message), `trusted comment: TEXT`, and
//!   base64 of the Ed25519 "global" signature of signature ‖ TEXT.
//!
//! Only pre-hashed (`ED`) signatures are made and accepted; verification uses
//! `verify_strict`.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, Read};
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use blake2::digest::consts::U32;
use blake2::{Blake2b, Blake2b512, Digest as _};
use ed25519_dalek::{Signature as EdSignature, Signer as _, SigningKey, VerifyingKey};

use crate::format::{
    CHECKSUM_ALG, KDF_NONE, KDF_SCRYPT, KEY_ALG, SCRYPT_MEMLIMIT, SCRYPT_OPSLIMIT,
    SIG_ALG_PREHASHED, TRUSTED_COMMENT_PREFIX, UNTRUSTED_COMMENT_PREFIX,
};

/// An 8-byte minisign key id, shown as minisign does: 16 uppercase hex
/// digits of the little-endian number.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyId(pub [u8; 8]);

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016X}", u64::from_le_bytes(self.0))
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

/// Why a key file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The file could not be read.
    #[error("cannot read key file {path}: {error}")]
    Read {
        /// The file.
        path: String,
        /// The cause (part of the message, so that every program prints
        /// the same words, not chained as a source).
        error: io::Error,
    },
    /// Not in minisign's format.
    #[error("{what} is not a minisign key: {reason}")]
    Format {
        /// What was parsed (a path or "key").
        what: String,
        /// Why.
        reason: String,
    },
    /// The passphrase does not decrypt the key (its checksum does not match).
    #[error("wrong passphrase for {0} (the decrypted key's checksum does not match)")]
    WrongPassphrase(String),
    /// The key is encrypted and no passphrase was given.
    #[error("{0} is encrypted: a passphrase is needed")]
    NeedsPassphrase(String),
    /// Key generation failed.
    #[error("cannot generate a key: {0}")]
    Random(String),
}

/// Why a signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// Not in minisign's signature format.
    #[error("malformed signature: {0}")]
    Malformed(String),
    /// An algorithm other than pre-hashed Ed25519 (`ED`).
    #[error("signature algorithm {0:?} is refused; only pre-hashed Ed25519 (\"ED\") is accepted")]
    Algorithm(String),
    /// No trusted key is configured at all.
    #[error("no trusted public key is configured; pass one with --trusted-key or --key")]
    NoTrustedKeys,
    /// The signing key is not among the trusted keys.
    #[error("signed by key {key_id}, which is not trusted (trusted: {trusted})")]
    UntrustedKey {
        /// The key id in the signature.
        key_id: KeyId,
        /// The trusted key ids, comma separated.
        trusted: String,
    },
    /// The signature does not verify.
    #[error(
        "signature by key {key_id} does not match the signed data (it was modified or signed by another key)"
    )]
    BadSignature {
        /// The key id in the signature.
        key_id: KeyId,
    },
    /// The trusted comment's signature does not verify.
    #[error(
        "the trusted comment's signature by key {key_id} does not verify (the comment was modified)"
    )]
    BadGlobalSignature {
        /// The key id in the signature.
        key_id: KeyId,
    },
}

/// Longest first line (the untrusted comment) minisign reads whole, in
/// bytes without the line end: it reads lines with `fgets` into a 1024-byte
/// buffer, so a longer comment spills into what it takes as the next line.
pub const MAX_UNTRUSTED_COMMENT_LINE: usize = 1022;

/// The lines of a minisign key or signature file, read as minisign reads
/// them: lines end at `\n`; a line's text ends at its first `\r` or `\n`
/// (minisign's `trim`), so CRLF files and a missing final newline read
/// alike; lines after the ones needed are never read. Errors say how the
/// text differs from what minisign reads.
fn minisign_lines(bytes: &[u8], needed: usize) -> Result<Vec<&[u8]>, String> {
    if bytes.is_empty() {
        return Err("the file is empty".into());
    }
    let mut pieces: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
    if bytes.ends_with(b"\n") {
        // The final line end leaves an empty piece, which is no line.
        pieces.pop();
    }
    if pieces.len() < needed && !bytes.contains(&b'\n') && bytes.contains(&b'\r') {
        return Err(
            "its lines end in a carriage return only (classic Mac OS line endings), which \
             minisign cannot read either: convert them to LF or CRLF"
                .into(),
        );
    }
    if pieces.len() < needed {
        return Err(format!(
            "it has {} line{}, minisign needs {needed}",
            pieces.len(),
            if pieces.len() == 1 { "" } else { "s" }
        ));
    }
    // Counted with a `\r` before the `\n`, which `fgets` reads too.
    if pieces[0].len() > MAX_UNTRUSTED_COMMENT_LINE {
        return Err(format!(
            "its first line (the untrusted comment) is longer than the \
             {MAX_UNTRUSTED_COMMENT_LINE} bytes minisign reads: shorten it"
        ));
    }
    let lines = pieces
        .into_iter()
        .take(needed)
        .map(|l| l.split(|&b| b == b'\r').next().unwrap_or_default())
        .collect();
    Ok(lines)
}

/// Decodes a base64 line of a minisign file (`line` is its 1-based
/// number, `what` what it holds), as strictly as minisign (libsodium,
/// standard alphabet with padding, nothing else on the line).
fn decode_base64_line(raw: &[u8], line: usize, what: &str) -> Result<Vec<u8>, String> {
    if raw.is_empty() {
        return Err(format!(
            "line {line}, where the {what} must be, is empty (an extra blank line?)"
        ));
    }
    if raw.starts_with(UNTRUSTED_COMMENT_PREFIX.as_bytes())
        || raw.starts_with(TRUSTED_COMMENT_PREFIX.as_bytes())
    {
        return Err(format!(
            "line {line}, where the {what} must be, is a comment line (an extra line before it?)"
        ));
    }
    if raw.first().is_some_and(u8::is_ascii_whitespace)
        || raw.last().is_some_and(u8::is_ascii_whitespace)
    {
        return Err(format!(
            "line {line} (the {what}) has white space before or after the base64 text, which \
             minisign refuses too: remove it"
        ));
    }
    B64.decode(raw)
        .map_err(|e| format!("line {line} (the {what}) is not base64: {e}"))
}

/// The bytes of line 2 of a minisign key file; line 1 is an untrusted
/// comment that minisign does not check (any text, a UTF-8 byte order mark
/// included), and what follows line 2 is ignored, as by minisign.
fn decode_key_file(bytes: &[u8], what: &str) -> Result<Vec<u8>, KeyError> {
    let fmt_err = |reason: String| KeyError::Format {
        what: what.to_owned(),
        reason,
    };
    let lines = minisign_lines(bytes, 2).map_err(|reason| {
        if reason.starts_with("it has 1 line") {
            fmt_err(
                "it has only one line; the key must be on line 2, after an untrusted comment \
                 line (minisign reads it from there)"
                    .into(),
            )
        } else {
            fmt_err(reason)
        }
    })?;
    decode_base64_line(lines[1], 2, "key").map_err(fmt_err)
}

/// An Ed25519 public key with its minisign key id.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    /// The key id.
    pub id: KeyId,
    /// The Ed25519 key.
    pub key: VerifyingKey,
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.id)
    }
}

impl PublicKey {
    /// Parses a minisign public key file's text (`what` names it in errors).
    pub fn parse(text: &str, what: &str) -> Result<Self, KeyError> {
        Self::parse_bytes(text.as_bytes(), what)
    }

    /// Parses a minisign public key file as minisign reads it: line 1 is
    /// an untrusted comment (not checked), line 2 the key, later lines are
    /// ignored; CRLF line ends and a missing final newline are fine, white
    /// space around the key is not.
    pub fn parse_bytes(bytes: &[u8], what: &str) -> Result<Self, KeyError> {
        let bytes = decode_key_file(bytes, what)?;
        Self::from_bytes(&bytes, what)
    }

    /// Parses the 42-byte binary form (`Ed` ‖ key id ‖ key).
    pub fn from_bytes(bytes: &[u8], what: &str) -> Result<Self, KeyError> {
        let fmt_err = |reason: String| KeyError::Format {
            what: what.to_owned(),
            reason,
        };
        if bytes.len() != 42 {
            return Err(fmt_err(format!("expected 42 bytes, got {}", bytes.len())));
        }
        if bytes[..2] != KEY_ALG {
            return Err(fmt_err("algorithm is not Ed".into()));
        }
        let id = KeyId(bytes[2..10].try_into().expect("8 bytes"));
        let key = VerifyingKey::from_bytes(bytes[10..42].try_into().expect("32 bytes"))
            .map_err(|e| fmt_err(format!("invalid Ed25519 key: {e}")))?;
        Ok(Self { id, key })
    }

    /// Reads a minisign public key file.
    pub fn from_file(path: &Path) -> Result<Self, KeyError> {
        let bytes = read_small(path)?;
        Self::parse_bytes(&bytes, &path.display().to_string())
    }

    /// The 42-byte binary form.
    pub fn to_bytes(&self) -> [u8; 42] {
        let mut out = [0u8; 42];
        out[..2].copy_from_slice(&KEY_ALG);
        out[2..10].copy_from_slice(&self.id.0);
        out[10..].copy_from_slice(self.key.as_bytes());
        out
    }

    /// The public key file's text.
    pub fn to_file_string(&self) -> String {
        format!(
            "{UNTRUSTED_COMMENT_PREFIX}minisign public key {}\n{}\n",
            self.id,
            B64.encode(self.to_bytes())
        )
    }

    /// Verifies `sig` over a BLAKE2b-512 digest, then its trusted comment.
    pub fn verify_digest(&self, digest: &[u8; 64], sig: &Signature) -> Result<(), SignatureError> {
        if sig.algorithm != SIG_ALG_PREHASHED {
            return Err(SignatureError::Algorithm(
                String::from_utf8_lossy(&sig.algorithm).into_owned(),
            ));
        }
        let key_id = sig.key_id;
        self.key
            .verify_strict(digest, &EdSignature::from_bytes(&sig.signature))
            .map_err(|_| SignatureError::BadSignature { key_id })?;
        let global = global_message(&sig.signature, &sig.trusted_comment);
        self.key
            .verify_strict(&global, &EdSignature::from_bytes(&sig.global_signature))
            .map_err(|_| SignatureError::BadGlobalSignature { key_id })
    }
}

fn read_small(path: &Path) -> Result<Vec<u8>, KeyError> {
    let err = |error| KeyError::Read {
        path: path.display().to_string(),
        error,
    };
    let file = std::fs::File::open(path).map_err(err)?;
    let mut bytes = Vec::new();
    file.take(64 * 1024).read_to_end(&mut bytes).map_err(err)?;
    Ok(bytes)
}

fn global_message(signature: &[u8; 64], trusted_comment: &str) -> Vec<u8> {
    let mut m = Vec::with_capacity(64 + trusted_comment.len());
    m.extend_from_slice(signature);
    m.extend_from_slice(trusted_comment.as_bytes());
    m
}

/// BLAKE2b-512 of `data`: what a pre-hashed minisign signature signs.
pub fn prehash(data: &[u8]) -> [u8; 64] {
    Blake2b512::digest(data).into()
}

/// A streaming BLAKE2b-512 hasher for pre-hashing large files.
#[derive(Debug, Clone, Default)]
pub struct Prehasher(Blake2b512);

impl Prehasher {
    /// A new hasher.
    pub fn new() -> Self {
        Self::default()
    }
    /// Feeds bytes.
    pub fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }
    /// The digest.
    pub fn finish(self) -> [u8; 64] {
        self.0.finalize().into()
    }
    /// Hashes a whole reader.
    pub fn of_reader(mut r: impl Read) -> io::Result<[u8; 64]> {
        let mut h = Self::new();
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            match r.read(&mut buf) {
                Ok(0) => return Ok(h.finish()),
                Ok(n) => h.update(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

impl io::Write for Prehasher {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// An Ed25519 secret key with its minisign key id.
pub struct SecretKey {
    /// The key id.
    pub id: KeyId,
    signing: SigningKey,
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey({})", self.id)
    }
}

/// How a secret key file is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protection<'a> {
    /// Encrypted with scrypt from this passphrase, as minisign does.
    Passphrase(&'a str),
    /// Stored unencrypted (minisign `-W`).
    Unencrypted,
}

impl SecretKey {
    /// Generates a new key with a random key id.
    pub fn generate() -> Result<Self, KeyError> {
        let mut seed = [0u8; 32];
        let mut id = [0u8; 8];
        getrandom::fill(&mut seed).map_err(|e| KeyError::Random(e.to_string()))?;
        getrandom::fill(&mut id).map_err(|e| KeyError::Random(e.to_string()))?;
        Ok(Self::from_seed(KeyId(id), seed))
    }

    /// Builds a key from a 32-byte seed (deterministic; for tests and vectors).
    pub fn from_seed(id: KeyId, seed: [u8; 32]) -> Self {
        Self {
            id,
            signing: SigningKey::from_bytes(&seed),
        }
    }

    /// The matching public key.
    pub fn public(&self) -> PublicKey {
        PublicKey {
            id: self.id,
            key: self.signing.verifying_key(),
        }
    }

    fn keynum_sk(&self) -> [u8; 104] {
        let mut out = [0u8; 104];
        out[..8].copy_from_slice(&self.id.0);
        out[8..72].copy_from_slice(&self.signing.to_keypair_bytes());
        let checksum = self.checksum();
        out[72..].copy_from_slice(&checksum);
        out
    }

    fn checksum(&self) -> [u8; 32] {
        let mut h = Blake2b::<U32>::new();
        h.update(KEY_ALG);
        h.update(self.id.0);
        h.update(self.signing.to_keypair_bytes());
        h.finalize().into()
    }

    /// The secret key file's text.
    pub fn to_file_string(&self, protection: Protection<'_>) -> Result<String, KeyError> {
        let mut keynum = self.keynum_sk();
        let mut salt = [0u8; 32];
        let (kdf, comment) = match protection {
            Protection::Passphrase(pass) => {
                getrandom::fill(&mut salt).map_err(|e| KeyError::Random(e.to_string()))?;
                let stream = scrypt_stream(pass, &salt, SCRYPT_OPSLIMIT, SCRYPT_MEMLIMIT)?;
                xor(&mut keynum, &stream);
                (KDF_SCRYPT, "minisign encrypted secret key")
            }
            Protection::Unencrypted => (KDF_NONE, "minisign secret key (unencrypted)"),
        };
        let mut bytes = Vec::with_capacity(158);
        bytes.extend_from_slice(&KEY_ALG);
        bytes.extend_from_slice(&kdf);
        bytes.extend_from_slice(&CHECKSUM_ALG);
        bytes.extend_from_slice(&salt);
        let (ops, mem) = if kdf == KDF_SCRYPT {
            (SCRYPT_OPSLIMIT, SCRYPT_MEMLIMIT)
        } else {
            (0, 0)
        };
        bytes.extend_from_slice(&ops.to_le_bytes());
        bytes.extend_from_slice(&mem.to_le_bytes());
        bytes.extend_from_slice(&keynum);
        Ok(format!(
            "{UNTRUSTED_COMMENT_PREFIX}{comment}\n{}\n",
            B64.encode(bytes)
        ))
    }

    /// Parses a secret key file's text. `passphrase` is asked for only when
    /// the key is encrypted.
    pub fn parse(
        text: &str,
        what: &str,
        passphrase: &mut dyn FnMut() -> Option<String>,
    ) -> Result<Self, KeyError> {
        Self::parse_bytes(text.as_bytes(), what, passphrase)
    }

    /// Parses a secret key file as minisign reads it (see
    /// [`PublicKey::parse_bytes`]). `passphrase` is asked for only when the
    /// key is encrypted.
    pub fn parse_bytes(
        bytes: &[u8],
        what: &str,
        passphrase: &mut dyn FnMut() -> Option<String>,
    ) -> Result<Self, KeyError> {
        let bytes = decode_key_file(bytes, what)?;
        let fmt_err = |reason: String| KeyError::Format {
            what: what.to_owned(),
            reason,
        };
        if bytes.len() != 158 {
            return Err(fmt_err(format!("expected 158 bytes, got {}", bytes.len())));
        }
        if bytes[..2] != KEY_ALG || bytes[4..6] != CHECKSUM_ALG {
            return Err(fmt_err("unsupported algorithms (expected Ed/B2)".into()));
        }
        let kdf: [u8; 2] = bytes[2..4].try_into().expect("2 bytes");
        let salt = &bytes[6..38];
        let ops = u64::from_le_bytes(bytes[38..46].try_into().expect("8 bytes"));
        let mem = u64::from_le_bytes(bytes[46..54].try_into().expect("8 bytes"));
        let mut keynum: [u8; 104] = bytes[54..158].try_into().expect("104 bytes");
        if kdf == KDF_SCRYPT {
            let pass = passphrase().ok_or_else(|| KeyError::NeedsPassphrase(what.to_owned()))?;
            let stream = scrypt_stream(&pass, salt, ops, mem)?;
            xor(&mut keynum, &stream);
        } else if kdf != KDF_NONE {
            return Err(fmt_err(
                "unsupported key derivation (expected Sc or none)".into(),
            ));
        }
        let id = KeyId(keynum[..8].try_into().expect("8 bytes"));
        let pair: [u8; 64] = keynum[8..72].try_into().expect("64 bytes");
        let signing = SigningKey::from_keypair_bytes(&pair).map_err(|_| {
            if kdf == KDF_SCRYPT {
                KeyError::WrongPassphrase(what.to_owned())
            } else {
                fmt_err("the public half does not match the secret key".into())
            }
        })?;
        let key = Self { id, signing };
        // minisign 0.11 leaves the checksum of an unencrypted (-W) key zeroed;
        // the keypair itself was checked for consistency above.
        let unchecked = kdf == KDF_NONE && keynum[72..].iter().all(|&b| b == 0);
        if !unchecked && key.checksum()[..] != keynum[72..] {
            return Err(if kdf == KDF_SCRYPT {
                KeyError::WrongPassphrase(what.to_owned())
            } else {
                fmt_err("checksum mismatch".into())
            });
        }
        Ok(key)
    }

    /// Reads a secret key file.
    pub fn from_file(
        path: &Path,
        passphrase: &mut dyn FnMut() -> Option<String>,
    ) -> Result<Self, KeyError> {
        let bytes = read_small(path)?;
        Self::parse_bytes(&bytes, &path.display().to_string(), passphrase)
    }

    /// Signs a BLAKE2b-512 digest (see [`prehash`]) with a trusted comment.
    pub fn sign_digest(
        &self,
        digest: &[u8; 64],
        trusted_comment: &str,
        untrusted_comment: &str,
    ) -> Signature {
        let signature = self.signing.sign(digest).to_bytes();
        let global_signature = self
            .signing
            .sign(&global_message(&signature, trusted_comment))
            .to_bytes();
        Signature {
            untrusted_comment: untrusted_comment.to_owned(),
            algorithm: SIG_ALG_PREHASHED,
            key_id: self.id,
            signature,
            trusted_comment: trusted_comment.to_owned(),
            global_signature,
        }
    }

    /// Signs `data` (pre-hashed) with a trusted comment.
    pub fn sign(&self, data: &[u8], trusted_comment: &str, untrusted_comment: &str) -> Signature {
        self.sign_digest(&prehash(data), trusted_comment, untrusted_comment)
    }
}

fn xor(data: &mut [u8], stream: &[u8]) {
    for (d, s) in data.iter_mut().zip(stream) {
        *d ^= s;
    }
}

/// libsodium's `crypto_pwhash_scryptsalsa208sha256` parameter choice
/// (`pickparams`), which minisign uses to turn opslimit/memlimit into N, r, p.
fn scrypt_params(opslimit: u64, memlimit: u64) -> (u8, u32, u32) {
    let opslimit = opslimit.max(32768);
    let r: u64 = 8;
    let n_log2_for = |max_n: u64| {
        let mut n_log2 = 1u8;
        while n_log2 < 63 && (1u64 << n_log2) <= max_n / 2 {
            n_log2 += 1;
        }
        n_log2
    };
    if opslimit < memlimit / 32 {
        let n_log2 = n_log2_for(opslimit / (r * 4));
        (n_log2, r as u32, 1)
    } else {
        let n_log2 = n_log2_for(memlimit / (r * 128));
        let maxrp = ((opslimit / 4) / (1u64 << n_log2)).min(0x3fff_ffff);
        (n_log2, r as u32, (maxrp / r) as u32)
    }
}

fn scrypt_stream(
    pass: &str,
    salt: &[u8],
    opslimit: u64,
    memlimit: u64,
) -> Result<[u8; 104], KeyError> {
    let (n_log2, r, p) = scrypt_params(opslimit, memlimit);
    if n_log2 > 24 || memlimit > (4 << 30) {
        return Err(KeyError::Format {
            what: "secret key".into(),
            reason: format!("scrypt parameters too large (N=2^{n_log2})"),
        });
    }
    // The last parameter is only the PHC output-length hint; the output below is 104 bytes.
    let params = scrypt::Params::new(n_log2, r, p.max(1), scrypt::Params::RECOMMENDED_LEN)
        .map_err(|e| KeyError::Format {
            what: "secret key".into(),
            reason: format!("bad scrypt parameters: {e}"),
        })?;
    let mut out = [0u8; 104];
    scrypt::scrypt(pass.as_bytes(), salt, &params, &mut out).map_err(|e| KeyError::Format {
        what: "secret key".into(),
        reason: format!("scrypt failed: {e}"),
    })?;
    Ok(out)
}

/// A minisign signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    /// The first line's comment (not signed).
    pub untrusted_comment: String,
    /// The algorithm id (`ED` for pre-hashed).
    pub algorithm: [u8; 2],
    /// The signing key's id.
    pub key_id: KeyId,
    /// Ed25519 signature of the (pre-hashed) data.
    pub signature: [u8; 64],
    /// The signed comment.
    pub trusted_comment: String,
    /// Ed25519 signature of `signature` ‖ `trusted_comment`.
    pub global_signature: [u8; 64],
}

impl Signature {
    /// Parses a minisign signature file's text as minisign reads it: the
    /// untrusted comment line (which must start with `untrusted comment: `),
    /// the signature, the trusted comment line, the global signature;
    /// anything after the fourth line is ignored; CRLF line ends and a
    /// missing final newline are fine, white space around the base64 text
    /// or a byte order mark before the first line are not.
    pub fn parse(text: &str) -> Result<Self, SignatureError> {
        let bad = |m: String| SignatureError::Malformed(m);
        let lines = minisign_lines(text.as_bytes(), 4).map_err(bad)?;
        let text_of = |l: &[u8]| String::from_utf8_lossy(l).into_owned();
        let Some(untrusted) = lines[0].strip_prefix(UNTRUSTED_COMMENT_PREFIX.as_bytes()) else {
            return Err(bad(if lines[0].starts_with(b"\xef\xbb\xbf") {
                "it starts with a UTF-8 byte order mark, which minisign refuses too: save it \
                 without one"
                    .into()
            } else {
                format!("the first line must start with \"{UNTRUSTED_COMMENT_PREFIX}\"")
            }));
        };
        let sig = decode_base64_line(lines[1], 2, "signature").map_err(bad)?;
        if sig.len() != 74 {
            return Err(bad(format!(
                "the signature line holds {} bytes, expected 74",
                sig.len()
            )));
        }
        let Some(trusted) = lines[2].strip_prefix(TRUSTED_COMMENT_PREFIX.as_bytes()) else {
            return Err(bad(format!(
                "the third line must start with \"{TRUSTED_COMMENT_PREFIX}\""
            )));
        };
        let trusted = std::str::from_utf8(trusted)
            .map_err(|_| bad("the trusted comment is not UTF-8 text".into()))?;
        let global = decode_base64_line(lines[3], 4, "global signature").map_err(bad)?;
        if global.len() != 64 {
            return Err(bad(format!(
                "the global signature holds {} bytes, expected 64",
                global.len()
            )));
        }
        Ok(Self {
            untrusted_comment: text_of(untrusted),
            algorithm: sig[..2].try_into().expect("2 bytes"),
            key_id: KeyId(sig[2..10].try_into().expect("8 bytes")),
            signature: sig[10..74].try_into().expect("64 bytes"),
            trusted_comment: trusted.to_owned(),
            global_signature: global.try_into().expect("64 bytes"),
        })
    }

    /// The signature file's text.
    pub fn to_file_string(&self) -> String {
        let mut sig = Vec::with_capacity(74);
        sig.extend_from_slice(&self.algorithm);
        sig.extend_from_slice(&self.key_id.0);
        sig.extend_from_slice(&self.signature);
        format!(
            "{UNTRUSTED_COMMENT_PREFIX}{}\n{}\n{TRUSTED_COMMENT_PREFIX}{}\n{}\n",
            self.untrusted_comment,
            B64.encode(sig),
            self.trusted_comment,
            B64.encode(self.global_signature)
        )
    }
}

/// The set of public keys whose signatures are accepted, by key id.
#[derive(Debug, Clone, Default)]
pub struct TrustedKeys {
    keys: BTreeMap<KeyId, (PublicKey, String)>,
}

impl TrustedKeys {
    /// An empty set (which verifies nothing).
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a key; `source` says where it came from (for messages).
    pub fn add(&mut self, key: PublicKey, source: impl Into<String>) {
        self.keys.entry(key.id).or_insert((key, source.into()));
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The trusted keys with their sources.
    pub fn iter(&self) -> impl Iterator<Item = (&PublicKey, &str)> {
        self.keys.values().map(|(k, s)| (k, s.as_str()))
    }

    /// The trusted key with this id.
    pub fn get(&self, id: &KeyId) -> Option<&PublicKey> {
        self.keys.get(id).map(|(k, _)| k)
    }

    /// Verifies a signature over a BLAKE2b-512 digest: the key id must be
    /// trusted, then both Ed25519 signatures must verify strictly.
    pub fn verify_digest(
        &self,
        digest: &[u8; 64],
        sig: &Signature,
    ) -> Result<&PublicKey, SignatureError> {
        if self.keys.is_empty() {
            return Err(SignatureError::NoTrustedKeys);
        }
        let key = self
            .get(&sig.key_id)
            .ok_or_else(|| SignatureError::UntrustedKey {
                key_id: sig.key_id,
                trusted: self
                    .keys
                    .keys()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
            })?;
        key.verify_digest(digest, sig)?;
        Ok(key)
    }

    /// Verifies a signature over `data`.
    pub fn verify(&self, data: &[u8], sig: &Signature) -> Result<&PublicKey, SignatureError> {
        self.verify_digest(&prehash(data), sig)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test_key() -> SecretKey {
        SecretKey::from_seed(KeyId(*b"\x01\x02\x03\x04\x05\x06\x07\x08"), [7u8; 32])
    }

    /// Known-answer vector: a fixed seed and message give a fixed signature.
    /// Any change to the pre-hash, the global signature or the encoding breaks it.
    /// The values were checked with the real program: `minisign -Vm msg -p key.pub`
    /// prints "Signature and comment signature verified".
    #[test]
    fn known_answer_signature() {
        let key = test_key();
        let sig = key.sign(b"hello\n", "k8s-worker 1.0 1", "signature from bundler");
        let text = sig.to_file_string();
        assert_eq!(key.public().id.to_string(), "0807060504030201");
        assert_eq!(text, KNOWN_SIGNATURE, "\n{text}");
        assert_eq!(
            key.public().to_file_string(),
            "untrusted comment: minisign public key 0807060504030201\nRWQBAgMEBQYHCOpKbGPinFIKvvVQexMuxfmVR3auvr57kkIe6mkURtIs\n"
        );
    }

    const KNOWN_SIGNATURE: &str = "untrusted comment: signature from bundler\n\
RUQBAgMEBQYHCCihZuamBlJx21h0PS0YlUB5eynJ634MAjrV57B02+0vEK2ci97JHc1eEgj8Jd0UdYpQHGJu5O4TlZjyCQjedQI=\n\
trusted comment: k8s-worker 1.0 1\n\
IsDUzcIdC5vYb8pv13RjfV4sdhSBWu0rq6GX0hLDZyp+A6F4pEEj1L8sbHQwk0cSBwvAhrNaQZNweJz0baoJBQ==\n";

    #[test]
    fn signature_round_trips_and_verifies() {
        let key = test_key();
        let mut trusted = TrustedKeys::new();
        trusted.add(key.public(), "test");
        let sig = Signature::parse(&key.sign(b"data", "c", "u").to_file_string()).unwrap();
        assert_eq!(trusted.verify(b"data", &sig).unwrap().id, key.id);
        assert!(matches!(
            trusted.verify(b"datA", &sig),
            Err(SignatureError::BadSignature { .. })
        ));
    }

    #[test]
    fn edited_trusted_comment_is_refused() {
        let key = test_key();
        let mut trusted = TrustedKeys::new();
        trusted.add(key.public(), "test");
        let mut sig = key.sign(b"data", "k8s-worker 1.0 1", "u");
        sig.trusted_comment = "k8s-worker 1.0 9".into();
        assert!(matches!(
            trusted.verify(b"data", &sig),
            Err(SignatureError::BadGlobalSignature { .. })
        ));
    }

    #[test]
    fn untrusted_key_is_refused() {
        let key = test_key();
        let other = SecretKey::from_seed(KeyId([9; 8]), [9; 32]);
        let mut trusted = TrustedKeys::new();
        trusted.add(other.public(), "test");
        let sig = key.sign(b"data", "c", "u");
        let err = trusted.verify(b"data", &sig).unwrap_err();
        assert!(matches!(err, SignatureError::UntrustedKey { .. }));
        assert!(err.to_string().contains("0807060504030201"), "{err}");
        assert_eq!(
            TrustedKeys::new().verify(b"data", &sig).unwrap_err(),
            SignatureError::NoTrustedKeys
        );
    }

    #[test]
    fn swapped_key_id_is_refused() {
        let key = test_key();
        let other = SecretKey::from_seed(KeyId([9; 8]), [9; 32]);
        let mut trusted = TrustedKeys::new();
        trusted.add(other.public(), "test");
        let mut sig = key.sign(b"data", "c", "u");
        sig.key_id = other.id;
        assert!(matches!(
            trusted.verify(b"data", &sig),
            Err(SignatureError::BadSignature { .. })
        ));
    }

    #[test]
    fn legacy_unhashed_algorithm_is_refused() {
        let key = test_key();
        let mut trusted = TrustedKeys::new();
        trusted.add(key.public(), "test");
        let mut sig = key.sign(b"data", "c", "u");
        sig.algorithm = *b"Ed";
        assert!(matches!(
            trusted.verify(b"data", &sig),
            Err(SignatureError::Algorithm(_))
        ));
    }

    #[test]
    fn unencrypted_secret_key_round_trips() {
        let key = SecretKey::generate().unwrap();
        let text = key.to_file_string(Protection::Unencrypted).unwrap();
        let back = SecretKey::parse(&text, "k", &mut || None).unwrap();
        assert_eq!(back.public(), key.public());
        let pubkey = PublicKey::parse(&key.public().to_file_string(), "p").unwrap();
        assert_eq!(pubkey, key.public());
    }

    #[test]
    fn scrypt_parameters_match_libsodium() {
        // minisign's defaults give N = 2^20, r = 8, p = 1 (1 GiB).
        assert_eq!(scrypt_params(SCRYPT_OPSLIMIT, SCRYPT_MEMLIMIT), (20, 8, 1));
        // libsodium's interactive limits give N = 2^14, r = 8, p = 1.
        assert_eq!(scrypt_params(524_288, 16_777_216), (14, 8, 1));
    }

    #[test]
    fn key_files_are_read_as_minisign_reads_them() {
        let text = test_key().public().to_file_string();
        let key = test_key().public();
        let ok = |bytes: Vec<u8>| PublicKey::parse_bytes(&bytes, "k").unwrap();
        assert_eq!(ok(text.replace('\n', "\r\n").into_bytes()), key);
        assert_eq!(ok(text.trim_end().as_bytes().to_vec()), key);
        assert_eq!(ok([b"\xef\xbb\xbf", text.as_bytes()].concat()), key);
        assert_eq!(ok(format!("{text}junk\n").into_bytes()), key);
        let key_line = text.lines().nth(1).unwrap();
        assert_eq!(
            ok(format!("any comment at all\n{key_line}").into_bytes()),
            key
        );
        let err = |bytes: Vec<u8>| PublicKey::parse_bytes(&bytes, "k").unwrap_err().to_string();
        assert!(err(format!("c\n{key_line} \n").into_bytes()).contains("white space"));
        assert!(err(format!("\n{text}").into_bytes()).contains("is a comment line"));
        assert!(err(text.replace('\n', "\r").into_bytes()).contains("carriage return only"));
        assert!(err(format!("{key_line}\n").into_bytes()).contains("only one line"));
        assert!(err(Vec::new()).contains("empty"));
        let long = format!(
            "{}\n{key_line}\n",
            "c".repeat(MAX_UNTRUSTED_COMMENT_LINE + 1)
        );
        assert!(err(long.into_bytes()).contains("longer than"));
    }

    #[test]
    fn signature_files_are_read_as_minisign_reads_them() {
        let text = test_key().sign(b"data", "c", "u").to_file_string();
        let sig = Signature::parse(&text).unwrap();
        assert_eq!(Signature::parse(&text.replace('\n', "\r\n")).unwrap(), sig);
        assert_eq!(Signature::parse(text.trim_end()).unwrap(), sig);
        assert_eq!(Signature::parse(&format!("{text}more\n")).unwrap(), sig);
        let bom = Signature::parse(&format!("\u{feff}{text}")).unwrap_err();
        assert!(bom.to_string().contains("byte order mark"), "{bom}");
    }

    #[test]
    fn malformed_signatures_are_refused() {
        for bad in [
            "",
            "untrusted comment: x\n",
            "comment: x\nAAAA\ntrusted comment: y\nAAAA\n",
        ] {
            assert!(Signature::parse(bad).is_err(), "{bad:?}");
        }
    }
}
