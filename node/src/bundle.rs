//! The encrypted configuration file: a versioned header and an AES-256-GCM body, the key
//! derived from a passphrase with Argon2id.
//!
//! Layout (version 1), big-endian integers:
//!
//! | bytes | field |
//! |---|---|
//! | 8 | magic `COLLCFG1` |
//! | 2 | format version |
//! | 4, 4, 4 | Argon2id memory (KiB), iterations, parallelism |
//! | 16 | salt |
//! | 12 | nonce |
//! | 16 | key check: SHA-256("collective key check" ‖ key), first 16 bytes |
//! | 8 | body length (ciphertext with its 16-byte tag) |
//! | 32 | SHA-256 of every header byte before it |
//! | n | body: AES-256-GCM(key, nonce, plaintext, associated data = the whole header) |
//!
//! Every way a file can be wrong is its own error: not such a file, a newer format, truncated,
//! a damaged header (checksum), a wrong passphrase (key check), an altered body (GCM tag).

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use rand::RngCore;
use sha2::{Digest, Sha256};

/// The file's first bytes.
pub const MAGIC: &[u8; 8] = b"COLLCFG1";
/// The format this build writes and the newest it reads.
pub const FORMAT_VERSION: u16 = 1;
/// Header length of format version 1.
pub const HEADER_BYTES: usize = 8 + 2 + 12 + 16 + 12 + 16 + 8 + 32;
/// Argon2id cost written into new files (the argon2 crate's defaults: 19 MiB, 2 passes, 1 lane).
const ARGON2_MEMORY_KIB: u32 = 19_456;
const ARGON2_ITERATIONS: u32 = 2;
const ARGON2_PARALLELISM: u32 = 1;
/// The most memory a file may ask the key derivation for (a hostile header must not exhaust us).
/// The header is checksummed but not keyed, so these bounds are what stops a forged one.
const ARGON2_MEMORY_KIB_MAX: u32 = 64 << 10;
const ARGON2_ITERATIONS_MAX: u32 = 4;
const ARGON2_PARALLELISM_MAX: u32 = 4;
/// Largest body accepted, in bytes.
pub const BODY_BYTES_MAX: u64 = 256 << 20;
/// Shortest passphrase accepted for a new file, in characters.
pub const PASSPHRASE_CHARS_MIN: usize = 8;

/// Why a file cannot be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BundleError {
    /// It does not start with the magic.
    #[error("not a collective configuration file (it does not start with {:?})", String::from_utf8_lossy(MAGIC))]
    NotABundle,
    /// Written by a newer collective.
    #[error("the file is format version {found}; this collective reads up to version {supported}")]
    FutureVersion {
        /// The file's version.
        found: u16,
        /// The newest this build reads.
        supported: u16,
    },
    /// Shorter than its header says.
    #[error("the file is truncated: {expected} bytes expected, {actual} present")]
    Truncated {
        /// Bytes the header announces.
        expected: u64,
        /// Bytes there are.
        actual: u64,
    },
    /// The header checksum does not match.
    #[error("the file's header is damaged (its checksum does not match)")]
    HeaderDamaged,
    /// The header asks for something out of range.
    #[error("the file's header is invalid: {0}")]
    HeaderInvalid(String),
    /// The passphrase does not derive the file's key.
    #[error("wrong passphrase for this file")]
    WrongPassphrase,
    /// The body fails authentication with the right key.
    #[error("the file's contents were altered or damaged (authentication failed); nothing was read from it")]
    BodyAltered,
    /// The passphrase is unusable.
    #[error("passphrase: {0}")]
    Passphrase(String),
}

fn derive_key(
    passphrase: &str,
    salt: &[u8],
    memory: u32,
    iterations: u32,
    parallelism: u32,
) -> Result<[u8; 32], BundleError> {
    let params = argon2::Params::new(memory, iterations, parallelism, Some(32))
        .map_err(|e| BundleError::HeaderInvalid(format!("Argon2id parameters: {e}")))?;
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut key = [0u8; 32];
    argon
        .hash_password_into(passphrase.as_bytes(), salt, &mut key)
        .map_err(|e| BundleError::HeaderInvalid(format!("key derivation: {e}")))?;
    Ok(key)
}

fn key_check(key: &[u8; 32]) -> [u8; 16] {
    let digest = Sha256::new().chain_update(b"collective key check").chain_update(key).finalize();
    digest[..16].try_into().expect("16 of 32 bytes")
}

/// Encrypts `plaintext` into a file.
pub fn seal(plaintext: &[u8], passphrase: &str) -> Result<Vec<u8>, BundleError> {
    if passphrase.chars().count() < PASSPHRASE_CHARS_MIN {
        return Err(BundleError::Passphrase(format!("at least {PASSPHRASE_CHARS_MIN} characters")));
    }
    let mut salt = [0u8; 16];
    let mut nonce = [0u8; 12];
    rand::thread_rng().fill_bytes(&mut salt);
    rand::thread_rng().fill_bytes(&mut nonce);
    let key = derive_key(passphrase, &salt, ARGON2_MEMORY_KIB, ARGON2_ITERATIONS, ARGON2_PARALLELISM)?;
    let body_len = plaintext.len() as u64 + 16;
    let mut header = Vec::with_capacity(HEADER_BYTES);
    header.extend_from_slice(MAGIC);
    header.extend_from_slice(&FORMAT_VERSION.to_be_bytes());
    for value in [ARGON2_MEMORY_KIB, ARGON2_ITERATIONS, ARGON2_PARALLELISM] {
        header.extend_from_slice(&value.to_be_bytes());
    }
    header.extend_from_slice(&salt);
    header.extend_from_slice(&nonce);
    header.extend_from_slice(&key_check(&key));
    header.extend_from_slice(&body_len.to_be_bytes());
    let checksum = Sha256::digest(&header);
    header.extend_from_slice(&checksum);
    let cipher = Aes256Gcm::new_from_slice(&key).expect("32-byte key");
    let body = cipher
        .encrypt(Nonce::from_slice(&nonce), Payload { msg: plaintext, aad: &header })
        .map_err(|_| BundleError::Passphrase("encryption failed".into()))?;
    let mut file = header;
    file.extend_from_slice(&body);
    Ok(file)
}

/// Decrypts a file; every failure is a distinct [`BundleError`].
pub fn open(file: &[u8], passphrase: &str) -> Result<Vec<u8>, BundleError> {
    if file.len() < MAGIC.len() || &file[..MAGIC.len()] != MAGIC {
        return Err(BundleError::NotABundle);
    }
    if file.len() < MAGIC.len() + 2 {
        return Err(BundleError::Truncated { expected: HEADER_BYTES as u64, actual: file.len() as u64 });
    }
    let version = u16::from_be_bytes([file[8], file[9]]);
    if version > FORMAT_VERSION {
        return Err(BundleError::FutureVersion { found: version, supported: FORMAT_VERSION });
    }
    if file.len() < HEADER_BYTES {
        return Err(BundleError::Truncated { expected: HEADER_BYTES as u64, actual: file.len() as u64 });
    }
    let header = &file[..HEADER_BYTES];
    let (fields, checksum) = header.split_at(HEADER_BYTES - 32);
    if Sha256::digest(fields).as_slice() != checksum {
        return Err(BundleError::HeaderDamaged);
    }
    if version == 0 {
        return Err(BundleError::HeaderInvalid("format version 0".into()));
    }
    let u32_at = |at: usize| u32::from_be_bytes(fields[at..at + 4].try_into().expect("4 bytes"));
    let (memory, iterations, parallelism) = (u32_at(10), u32_at(14), u32_at(18));
    if memory > ARGON2_MEMORY_KIB_MAX || iterations > ARGON2_ITERATIONS_MAX || parallelism > ARGON2_PARALLELISM_MAX {
        return Err(BundleError::HeaderInvalid(format!(
            "Argon2id asks for {memory} KiB, {iterations} passes and {parallelism} lanes (at most \
             {ARGON2_MEMORY_KIB_MAX} KiB, {ARGON2_ITERATIONS_MAX} passes, {ARGON2_PARALLELISM_MAX} lanes)"
        )));
    }
    let salt = &fields[22..38];
    let nonce = &fields[38..50];
    let check = &fields[50..66];
    let body_len = u64::from_be_bytes(fields[66..74].try_into().expect("8 bytes"));
    if body_len > BODY_BYTES_MAX {
        return Err(BundleError::HeaderInvalid(format!("a body of {body_len} bytes is over {BODY_BYTES_MAX}")));
    }
    let expected = HEADER_BYTES as u64 + body_len;
    if (file.len() as u64) < expected {
        return Err(BundleError::Truncated { expected, actual: file.len() as u64 });
    }
    if (file.len() as u64) > expected {
        return Err(BundleError::HeaderInvalid(format!(
            "{} bytes follow the body the header announces",
            file.len() as u64 - expected
        )));
    }
    let key = derive_key(passphrase, salt, memory, iterations, parallelism)?;
    if key_check(&key) != check {
        return Err(BundleError::WrongPassphrase);
    }
    let cipher = Aes256Gcm::new_from_slice(&key).expect("32-byte key");
    cipher
        .decrypt(Nonce::from_slice(nonce), Payload { msg: &file[HEADER_BYTES..], aad: header })
        .map_err(|_| BundleError::BodyAltered)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSPHRASE: &str = "correct horse battery";

    #[test]
    fn every_damage_is_its_own_error() {
        let body = b"the configuration".repeat(50);
        let file = seal(&body, PASSPHRASE).unwrap();
        assert_eq!(open(&file, PASSPHRASE).unwrap(), body);
        assert_eq!(open(&file, "wrong passphrase"), Err(BundleError::WrongPassphrase));
        let mut header_flip = file.clone();
        header_flip[30] ^= 1; // in the salt
        assert_eq!(open(&header_flip, PASSPHRASE), Err(BundleError::HeaderDamaged));
        let mut body_flip = file.clone();
        body_flip[HEADER_BYTES + 100] ^= 1;
        assert_eq!(open(&body_flip, PASSPHRASE), Err(BundleError::BodyAltered));
        let truncated = &file[..file.len() - 10];
        assert!(matches!(open(truncated, PASSPHRASE), Err(BundleError::Truncated { .. })));
        assert!(matches!(open(&file[..40], PASSPHRASE), Err(BundleError::Truncated { .. })));
        let mut future = file.clone();
        future[9] = 2;
        assert_eq!(open(&future, PASSPHRASE), Err(BundleError::FutureVersion { found: 2, supported: 1 }));
        assert_eq!(open(b"{\"json\": true}", PASSPHRASE), Err(BundleError::NotABundle));
        assert!(matches!(seal(b"x", "short"), Err(BundleError::Passphrase(_))));
        // Two files of the same content differ (fresh salt and nonce) but open to the same bytes.
        let again = seal(&body, PASSPHRASE).unwrap();
        assert_ne!(again, file);
        assert_eq!(open(&again, PASSPHRASE).unwrap(), body);
    }
}
