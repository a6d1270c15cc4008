//! Encryption at rest: every stored record sealed with ChaCha20-Poly1305 (ring), under a
//! 32-byte key read from a file that only its owner may read.
//!
//! A sealed record is `nonce (12 bytes) | ciphertext | tag (16 bytes)`. The nonce is random
//! per record (96 bits: collisions stay negligible below 2^32 records per key, which at 256
//! exchanges a batch is a trillion exchanges). The associated data binds the record to its
//! organisation and its place in the store, so a record copied into another organisation's
//! segments, or moved within them, fails to open instead of being read there.
//!
//! The data directory holds a key check (`encryption-check`): a known text sealed under the key
//! when the directory was first used encrypted. It tells a wrong key apart from corrupt data
//! before anything is read or written, and an encrypted directory apart from a plaintext one.

use std::{
    fs,
    io::{self, Write as _},
    os::unix::fs::{MetadataExt as _, OpenOptionsExt as _},
    path::{Path, PathBuf},
};

use ring::{
    aead::{Aad, CHACHA20_POLY1305, LessSafeKey, NONCE_LEN, Nonce, UnboundKey},
    hkdf,
    rand::{SecureRandom as _, SystemRandom},
};

/// Bytes a sealed record adds to its plaintext.
pub const OVERHEAD: usize = NONCE_LEN + 16;

const CHECK_FILE: &str = "encryption-check";
const CHECK_TEXT: &[u8] = b"capture-collector encryption check v1";
const CHECK_AAD: &[u8] = b"capture-collector key check";

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read it: {0}")]
    Read(io::Error),
    #[error(
        "its mode is {0:o}: the key file must be readable by its owner only (chmod 600 FILE), \
         or also by this process's own group (a Kubernetes Secret mounted with fsGroup)"
    )]
    Permissions(u32),
    #[error("it must hold 32 bytes, raw or as 64 hexadecimal digits")]
    Length,
    #[error("it is not the key this data directory was encrypted with")]
    WrongKey,
    #[error("the data directory holds unencrypted data; it cannot take a key now")]
    PlaintextData,
    #[error("the data directory is encrypted: pass --encryption-key")]
    KeyRequired,
    #[error("writing the key check {}: {}", .0.display(), .1)]
    WriteCheck(PathBuf, io::Error),
}

#[derive(Debug, thiserror::Error)]
#[error("a sealed record did not open: it was altered, moved, or sealed under another key")]
pub struct OpenError;

/// The key records are sealed with.
pub struct SealKey {
    key: LessSafeKey,
    rng: SystemRandom,
    /// HKDF-SHA256 pseudo-random key the per-organisation keys are expanded from.
    prk: hkdf::Prk,
}

/// HKDF salt of the per-organisation keys (RFC 5869 §3.1: a fixed, application-specific salt).
const ORG_KEY_SALT: &[u8] = b"capture-collector organisation keys v1";

impl std::fmt::Debug for SealKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealKey(..)")
    }
}

impl SealKey {
    /// Reads the key file: 32 raw bytes, or 64 hex digits with optional surrounding
    /// whitespace. Others may have no access at all, and the group none but read, and read
    /// only when the file's group is this process's effective group: that is how the kubelet
    /// mounts a Secret for a pod with `fsGroup` (it adds group read for the pod's own group).
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let meta = fs::metadata(path).map_err(KeyError::Read)?;
        let mode = meta.mode() & 0o777;
        let own_group = meta.gid() == nix::unistd::getegid().as_raw();
        if mode & 0o037 != 0 || (mode & 0o040 != 0 && !own_group) {
            return Err(KeyError::Permissions(mode));
        }
        let bytes = fs::read(path).map_err(KeyError::Read)?;
        Self::from_bytes(&bytes)
    }

    /// The key from its file contents (see [`Self::load`]).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, KeyError> {
        let raw = if bytes.len() == 32 {
            bytes.to_vec()
        } else {
            let text = std::str::from_utf8(bytes)
                .map_err(|_| KeyError::Length)?
                .trim();
            if text.len() != 64 {
                return Err(KeyError::Length);
            }
            (0..32)
                .map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16))
                .collect::<Result<Vec<u8>, _>>()
                .map_err(|_| KeyError::Length)?
        };
        let key = UnboundKey::new(&CHACHA20_POLY1305, &raw).map_err(|_| KeyError::Length)?;
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, ORG_KEY_SALT).extract(&raw);
        Ok(Self {
            key: LessSafeKey::new(key),
            rng: SystemRandom::new(),
            prk,
        })
    }

    /// The organisation's own key, expanded from this one with HKDF-SHA256 (info: the
    /// organisation name). The PostgreSQL store seals each organisation's rows under its own
    /// key, so a row read under another organisation's key never opens.
    pub fn for_org(&self, org: &str) -> Result<Self, OpenError> {
        let info = [b"org\0".as_slice(), org.as_bytes()];
        let okm = self
            .prk
            .expand(&info, &CHACHA20_POLY1305)
            .map_err(|_| OpenError)?;
        let mut raw = [0_u8; 32];
        okm.fill(&mut raw).map_err(|_| OpenError)?;
        let key = UnboundKey::new(&CHACHA20_POLY1305, &raw).map_err(|_| OpenError)?;
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, ORG_KEY_SALT).extract(&raw);
        Ok(Self {
            key: LessSafeKey::new(key),
            rng: SystemRandom::new(),
            prk,
        })
    }

    /// Seals `plaintext` into a new buffer.
    pub fn seal_vec(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, OpenError> {
        let mut out = Vec::with_capacity(plaintext.len() + OVERHEAD);
        self.seal(aad, plaintext, &mut out)?;
        Ok(out)
    }

    /// The sealed key check (see [`check_data_dir`]), for stores that keep it elsewhere.
    pub fn key_check(&self) -> Result<Vec<u8>, OpenError> {
        self.seal_vec(CHECK_AAD, CHECK_TEXT)
    }

    /// Whether `sealed` is the key check sealed under this key.
    pub fn verifies_check(&self, sealed: &[u8]) -> bool {
        let mut sealed = sealed.to_vec();
        matches!(self.open(CHECK_AAD, &mut sealed), Ok(text) if text == CHECK_TEXT)
    }

    /// Appends `nonce | seal(plaintext) | tag` to `out`.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8], out: &mut Vec<u8>) -> Result<(), OpenError> {
        let mut nonce = [0_u8; NONCE_LEN];
        self.rng.fill(&mut nonce).map_err(|_| OpenError)?;
        let start = out.len();
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plaintext);
        let mut body = out.split_off(start + NONCE_LEN);
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut body,
            )
            .map_err(|_| OpenError)?;
        out.append(&mut body);
        Ok(())
    }

    /// Opens a sealed record in place and returns its plaintext.
    pub fn open<'a>(&self, aad: &[u8], sealed: &'a mut [u8]) -> Result<&'a [u8], OpenError> {
        if sealed.len() < OVERHEAD {
            return Err(OpenError);
        }
        let (nonce, body) = sealed.split_at_mut(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| OpenError)?;
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(aad), body)
            .map_err(|_| OpenError)?;
        Ok(plain)
    }
}

/// Whether the data directory is encrypted, and whether `key` is its key.
///
/// `writable`: a serving collector records the key check the first time it runs with a key on
/// a directory without data; a reader (export) never writes. `has_data` says whether any
/// segment exists, so a key is never applied to a directory that already holds plaintext.
pub fn check_data_dir(
    dir: &Path,
    key: Option<&SealKey>,
    has_data: bool,
    writable: bool,
) -> Result<(), KeyError> {
    let path = dir.join(CHECK_FILE);
    let check = match fs::read(&path) {
        Ok(bytes) => Some(bytes),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(KeyError::Read(e)),
    };
    match (key, check) {
        (None, None) => Ok(()),
        (None, Some(_)) => Err(KeyError::KeyRequired),
        (Some(key), Some(mut sealed)) => match key.open(CHECK_AAD, &mut sealed) {
            Ok(text) if text == CHECK_TEXT => Ok(()),
            _ => Err(KeyError::WrongKey),
        },
        (Some(_), None) if has_data => Err(KeyError::PlaintextData),
        (Some(_), None) if !writable => Ok(()),
        (Some(key), None) => {
            let mut sealed = Vec::new();
            key.seal(CHECK_AAD, CHECK_TEXT, &mut sealed)
                .map_err(|_| KeyError::WriteCheck(path.clone(), io::Error::other("sealing")))?;
            write_atomically(&path, &sealed, 0o600).map_err(|e| KeyError::WriteCheck(path, e))
        }
    }
}

/// Writes `path` whole or not at all: a temporary file beside it, fsynced, renamed over it,
/// and the directory fsynced.
pub fn write_atomically(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map_or_else(|| "file".into(), |name| name.to_string_lossy().into_owned());
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        file.write_all(contents)?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> SealKey {
        SealKey::from_bytes(&[byte; 32]).unwrap()
    }

    #[test]
    fn seal_and_open_round_trip_and_bind_the_associated_data() {
        let k = key(7);
        let mut sealed = b"prefix".to_vec();
        k.seal(b"org-a/1/16", b"secret body", &mut sealed).unwrap();
        let record = &mut sealed[6..];
        assert_eq!(record.len(), b"secret body".len() + OVERHEAD);
        assert!(!record.windows(6).any(|w| w == b"secret"));
        let mut copy = record.to_vec();
        assert!(k.open(b"org-b/1/16", &mut copy).is_err());
        let mut copy = record.to_vec();
        assert!(key(8).open(b"org-a/1/16", &mut copy).is_err());
        let mut copy = record.to_vec();
        copy[20] ^= 1;
        assert!(k.open(b"org-a/1/16", &mut copy).is_err());
        assert_eq!(k.open(b"org-a/1/16", record).unwrap(), b"secret body");
    }

    #[test]
    fn organisation_keys_differ_and_are_stable() {
        let master = key(7);
        let a = master.for_org("a").unwrap();
        let sealed = a.seal_vec(b"x", b"secret").unwrap();
        let mut copy = sealed.clone();
        assert_eq!(
            master.for_org("a").unwrap().open(b"x", &mut copy).unwrap(),
            b"secret"
        );
        let mut copy = sealed.clone();
        assert!(master.for_org("b").unwrap().open(b"x", &mut copy).is_err());
        let mut copy = sealed;
        assert!(master.open(b"x", &mut copy).is_err());
        assert!(master.verifies_check(&master.key_check().unwrap()));
        assert!(!key(8).verifies_check(&master.key_check().unwrap()));
    }

    #[test]
    fn key_file_forms_and_permissions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        let hex = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n";
        write_atomically(&path, hex.as_bytes(), 0o600).unwrap();
        SealKey::load(&path).unwrap();
        write_atomically(&path, &[1; 32], 0o600).unwrap();
        SealKey::load(&path).unwrap();
        write_atomically(&path, &[1; 31], 0o600).unwrap();
        assert!(matches!(SealKey::load(&path), Err(KeyError::Length)));
        write_atomically(&path, &[1; 32], 0o644).unwrap();
        assert!(matches!(
            SealKey::load(&path),
            Err(KeyError::Permissions(0o644))
        ));
        // Group read for this process's own group (Kubernetes fsGroup) is accepted; group
        // write, or group read for another group, is not.
        write_atomically(&path, &[1; 32], 0o440).unwrap();
        std::os::unix::fs::chown(&path, None, Some(nix::unistd::getegid().as_raw())).unwrap();
        SealKey::load(&path).unwrap();
        // Set after writing: the umask would take the group write bit off at creation.
        fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o460)).unwrap();
        assert!(matches!(
            SealKey::load(&path),
            Err(KeyError::Permissions(0o460))
        ));
        if nix::unistd::geteuid().is_root() {
            write_atomically(&path, &[1; 32], 0o440).unwrap();
            let other = nix::unistd::getegid().as_raw() + 1;
            std::os::unix::fs::chown(&path, None, Some(other)).unwrap();
            assert!(matches!(
                SealKey::load(&path),
                Err(KeyError::Permissions(0o440))
            ));
        }
        assert!(matches!(
            SealKey::from_bytes(&[b'z'; 64]),
            Err(KeyError::Length)
        ));
    }

    #[test]
    fn data_dir_check_tells_keys_and_modes_apart() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        check_data_dir(d, None, false, true).unwrap();
        assert!(matches!(
            check_data_dir(d, Some(&key(1)), true, true),
            Err(KeyError::PlaintextData)
        ));
        check_data_dir(d, Some(&key(1)), false, true).unwrap();
        check_data_dir(d, Some(&key(1)), true, false).unwrap();
        assert!(matches!(
            check_data_dir(d, Some(&key(2)), true, false),
            Err(KeyError::WrongKey)
        ));
        assert!(matches!(
            check_data_dir(d, None, true, true),
            Err(KeyError::KeyRequired)
        ));
    }
}
