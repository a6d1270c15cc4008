//! Bearer tokens: each names one organisation. Only a salted HMAC-SHA256 of a token and a
//! masked form (`cap_Ab12…xY9z`) are stored, in `DIR/tokens.json` (mode 0600, rewritten
//! atomically under a lock), so the file gives nobody a token.
//!
//! A token is `cap_` and 32 random bytes in unpadded base64url: 256 bits, so a plain salted
//! hash is as strong as a slow one (nothing to guess). The masked form shows 8 of its 43
//! random characters, enough to tell tokens apart and to find the candidate record without
//! hashing every entry; the HMAC is then verified in constant time.
//!
//! Each token carries scopes (see [`Scope`]): `ingest` to push, `read` to watch and diff,
//! `admin` for token management (the collector has no token-management RPC: `admin` is
//! defined for the CLI's records and refused by every RPC). A record without a `scopes`
//! field was issued before scopes existed and keeps what every token could do then: `ingest`
//! and `read` ([`LEGACY_SCOPES`]).
//!
//! Unknown and revoked tokens take the same path at the same cost: exactly one HMAC
//! verification per candidate record with the token's masked form, and one against a fixed
//! decoy record when there is none, so a well-formed token always costs at least one HMAC
//! and the outcome is decided only after it ([`hmac_computations`] counts them for the
//! tests).
//!
//! The server re-reads the file whenever it changes (checked with one `stat` per call), so
//! `token revoke` takes effect on the next call without a restart, and a watch stream is cut
//! within a second.

use std::{
    fmt,
    fs::{self, OpenOptions},
    io,
    os::unix::fs::{DirBuilderExt as _, MetadataExt as _, OpenOptionsExt as _},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::SystemTime,
};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use nix::fcntl::{Flock, FlockArg};
use ring::{
    hmac,
    rand::{SecureRandom as _, SystemRandom},
};
use serde::{Deserialize, Serialize};

use crate::{metrics::AuthFailure, org::OrgName, seal::write_atomically};

pub const PREFIX: &str = "cap_";
const RANDOM_BYTES: usize = 32;
/// `cap_` and 43 base64url characters.
const TOKEN_LEN: usize = PREFIX.len() + 43;
const SALT_BYTES: usize = 16;
const FILE: &str = "tokens.json";
const LOCK: &str = "tokens.lock";

/// What a token may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// `Ingest.Push`: what a node's daemon needs, and all it needs.
    Ingest,
    /// `Watch.Watch` and `Diff.Diff`: reading the organisation's traffic.
    Read,
    /// Token management. No RPC manages tokens (the CLI works on the store directly), so no
    /// RPC accepts this scope; it is recorded for the day one does.
    Admin,
}

impl Scope {
    pub const ALL: [Self; 3] = [Self::Ingest, Self::Read, Self::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ingest => "ingest",
            Self::Read => "read",
            Self::Admin => "admin",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not a scope: give ingest, read or admin")]
pub struct BadScope(pub String);

impl std::str::FromStr for Scope {
    type Err = BadScope;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "ingest" => Ok(Self::Ingest),
            "read" => Ok(Self::Read),
            "admin" => Ok(Self::Admin),
            other => Err(BadScope(other.chars().take(40).collect())),
        }
    }
}

/// What a token issued before scopes existed may do: what every token could then.
pub const LEGACY_SCOPES: &[Scope] = &[Scope::Ingest, Scope::Read];

/// Scopes as stored: sorted, without duplicates, comma-separated (`ingest,read`).
pub fn scopes_to_string(scopes: &[Scope]) -> String {
    let mut sorted = scopes.to_vec();
    sorted.sort();
    sorted.dedup();
    sorted
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

/// The stored form back; an empty string is no scope at all.
pub fn scopes_from_string(s: &str) -> Result<Vec<Scope>, BadScope> {
    let mut out = s
        .split(',')
        .filter(|p| !p.trim().is_empty())
        .map(str::parse)
        .collect::<Result<Vec<Scope>, _>>()?;
    out.sort();
    out.dedup();
    Ok(out)
}

thread_local! {
    /// HMAC verifications done on this thread (tests compare the cost of refusals with it).
    static HMAC_COMPUTATIONS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// How many token HMACs this thread has verified.
pub fn hmac_computations() -> u64 {
    HMAC_COMPUTATIONS.with(std::cell::Cell::get)
}

/// One issued token, as stored.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TokenRecord {
    pub org: String,
    /// The first 8 and last 4 characters of the token.
    pub masked: String,
    salt: String,
    hmac: String,
    /// RFC 3339.
    pub created: String,
    /// RFC 3339 time of revocation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked: Option<String>,
    /// What it may do; absent on records issued before scopes existed, which keep
    /// [`LEGACY_SCOPES`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scopes: Option<Vec<Scope>>,
}

impl TokenRecord {
    /// A record read back from another store: salt and HMAC as stored (unpadded base64url).
    pub(crate) fn from_parts(
        org: String,
        masked: String,
        salt: String,
        hmac: String,
        created: String,
        revoked: Option<String>,
        scopes: Option<Vec<Scope>>,
    ) -> Self {
        Self {
            org,
            masked,
            salt,
            hmac,
            created,
            revoked,
            scopes,
        }
    }

    /// What the token may do (the legacy set for a record without scopes).
    pub fn effective_scopes(&self) -> Vec<Scope> {
        self.scopes
            .clone()
            .unwrap_or_else(|| LEGACY_SCOPES.to_vec())
    }

    /// Whether the record was issued before scopes existed.
    pub fn is_legacy(&self) -> bool {
        self.scopes.is_none()
    }

    pub(crate) fn salt(&self) -> &str {
        &self.salt
    }

    pub(crate) fn hmac(&self) -> &str {
        &self.hmac
    }

    fn verifies(&self, token: &str) -> bool {
        HMAC_COMPUTATIONS.with(|n| n.set(n.get() + 1));
        let (Ok(salt), Ok(tag)) = (
            URL_SAFE_NO_PAD.decode(&self.salt),
            URL_SAFE_NO_PAD.decode(&self.hmac),
        ) else {
            return false;
        };
        hmac::verify(
            &hmac::Key::new(hmac::HMAC_SHA256, &salt),
            token.as_bytes(),
            &tag,
        )
        .is_ok()
    }
}

#[derive(Default, Serialize, Deserialize)]
struct TokenFile {
    version: u32,
    tokens: Vec<TokenRecord>,
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("{}: {}", .0.display(), .1)]
    Io(PathBuf, io::Error),
    #[error("{}: not a token file: {}", .0.display(), .1)]
    Parse(PathBuf, serde_json::Error),
    #[error(
        "no token of organisation {org} matches {prefix:?} (give the whole token, its masked \
         form, or a prefix of at most 8 characters of it)"
    )]
    NoMatch { org: String, prefix: String },
    #[error("{count} tokens of organisation {org} match {prefix:?}: give more of it")]
    Ambiguous {
        org: String,
        prefix: String,
        count: usize,
    },
    #[error("the system random generator failed")]
    Random,
}

/// The masked form of a token.
pub fn mask(token: &str) -> String {
    match (token.get(..8), token.get(token.len().saturating_sub(4)..)) {
        (Some(head), Some(tail)) if token.len() >= 12 => format!("{head}…{tail}"),
        _ => "cap_…".to_owned(),
    }
}

/// Whether `token` has the form of one of ours (checked before any hashing).
fn well_formed(token: &str) -> bool {
    token.len() == TOKEN_LEN
        && token.starts_with(PREFIX)
        && token[PREFIX.len()..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

fn token_path(data_dir: &Path) -> PathBuf {
    data_dir.join(FILE)
}

fn read_file(path: &Path) -> Result<TokenFile, TokenError> {
    match fs::read(path) {
        Ok(bytes) => {
            serde_json::from_slice(&bytes).map_err(|e| TokenError::Parse(path.to_owned(), e))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(TokenFile {
            version: 1,
            tokens: Vec::new(),
        }),
        Err(e) => Err(TokenError::Io(path.to_owned(), e)),
    }
}

/// Runs `change` on the token file under an exclusive lock and writes the result atomically.
fn update<T>(
    data_dir: &Path,
    change: impl FnOnce(&mut TokenFile) -> Result<T, TokenError>,
) -> Result<T, TokenError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(data_dir)
        .map_err(|e| TokenError::Io(data_dir.to_owned(), e))?;
    let lock_path = data_dir.join(LOCK);
    let lock_file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&lock_path)
        .map_err(|e| TokenError::Io(lock_path.clone(), e))?;
    let _lock = Flock::lock(lock_file, FlockArg::LockExclusive)
        .map_err(|(_, e)| TokenError::Io(lock_path, e.into()))?;
    let path = token_path(data_dir);
    let mut file = read_file(&path)?;
    let result = change(&mut file)?;
    file.version = 1;
    let mut bytes =
        serde_json::to_vec_pretty(&file).map_err(|e| TokenError::Parse(path.clone(), e))?;
    bytes.push(b'\n');
    write_atomically(&path, &bytes, 0o600).map_err(|e| TokenError::Io(path, e))?;
    Ok(result)
}

/// A new token for `org` and its record; nothing is stored yet.
pub(crate) fn issue(org: &OrgName, scopes: &[Scope]) -> Result<(String, TokenRecord), TokenError> {
    let rng = SystemRandom::new();
    let mut random = [0_u8; RANDOM_BYTES];
    let mut salt = [0_u8; SALT_BYTES];
    rng.fill(&mut random).map_err(|_| TokenError::Random)?;
    rng.fill(&mut salt).map_err(|_| TokenError::Random)?;
    let token = format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(random));
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &salt), token.as_bytes());
    let record = TokenRecord {
        org: org.as_str().to_owned(),
        masked: mask(&token),
        salt: URL_SAFE_NO_PAD.encode(salt),
        hmac: URL_SAFE_NO_PAD.encode(tag.as_ref()),
        created: now_rfc3339(),
        revoked: None,
        scopes: Some(scopes_from_string(&scopes_to_string(scopes)).unwrap_or_default()),
    };
    Ok((token, record))
}

/// Issues a token for `org`: returns the token (shown once, never stored) and its record.
pub fn create(
    data_dir: &Path,
    org: &OrgName,
    scopes: &[Scope],
) -> Result<(String, TokenRecord), TokenError> {
    let (token, record) = issue(org, scopes)?;
    let stored = record.clone();
    update(data_dir, move |file| {
        file.tokens.push(stored);
        Ok(())
    })?;
    Ok((token, record))
}

/// The tokens of `org`, oldest first.
pub fn list(data_dir: &Path, org: &OrgName) -> Result<Vec<TokenRecord>, TokenError> {
    Ok(read_file(&token_path(data_dir))?
        .tokens
        .into_iter()
        .filter(|t| t.org == org.as_str())
        .collect())
}

/// What [`revoke`] did.
#[derive(Debug)]
pub enum Revoked {
    Now(TokenRecord),
    Already(TokenRecord),
}

/// Which record a revocation designates (see [`pick`]).
pub(crate) enum Pick {
    Now(usize),
    Already(usize),
}

/// The one token of `org` that `given` designates: the whole token, its masked form (`…` or
/// `...`), or a prefix of the masked form. Several active matches are an error.
pub(crate) fn pick(tokens: &[TokenRecord], org: &OrgName, given: &str) -> Result<Pick, TokenError> {
    let given = given.trim().replace("...", "…");
    let matches = |t: &TokenRecord| {
        t.org == org.as_str()
            && if well_formed(&given) {
                t.verifies(&given)
            } else if given.contains('…') {
                t.masked == given
            } else {
                !given.is_empty() && t.masked.starts_with(&given)
            }
    };
    let active: Vec<usize> = (0..tokens.len())
        .filter(|&i| matches(&tokens[i]) && tokens[i].revoked.is_none())
        .collect();
    match active.as_slice() {
        [i] => Ok(Pick::Now(*i)),
        [] => tokens
            .iter()
            .position(matches)
            .map(Pick::Already)
            .ok_or_else(|| TokenError::NoMatch {
                org: org.to_string(),
                prefix: given.clone(),
            }),
        many => Err(TokenError::Ambiguous {
            org: org.to_string(),
            prefix: given.clone(),
            count: many.len(),
        }),
    }
}

/// Revokes the one token of `org` that `given` designates (see [`pick`]).
pub fn revoke(data_dir: &Path, org: &OrgName, given: &str) -> Result<Revoked, TokenError> {
    update(data_dir, |file| match pick(&file.tokens, org, given)? {
        Pick::Now(i) => {
            let t = &mut file.tokens[i];
            t.revoked = Some(now_rfc3339());
            Ok(Revoked::Now(t.clone()))
        }
        Pick::Already(i) => Ok(Revoked::Already(file.tokens[i].clone())),
    })
}

/// A record no token verifies against, checked when no record has the token's masked form,
/// so that an unknown token costs the HMAC a known one does.
fn decoy() -> &'static TokenRecord {
    static DECOY: std::sync::OnceLock<TokenRecord> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| TokenRecord {
        org: String::new(),
        masked: String::new(),
        salt: URL_SAFE_NO_PAD.encode([0x5a_u8; SALT_BYTES]),
        // 32 zero bytes: the tag of no token (finding one is breaking HMAC-SHA256).
        hmac: URL_SAFE_NO_PAD.encode([0_u8; 32]),
        created: String::new(),
        revoked: None,
        scopes: Some(Vec::new()),
    })
}

/// The caller `token` speaks for among `records` (those with its masked form).
///
/// Every candidate with the token's masked form is verified (no early exit), and the decoy
/// when there is none: an unknown token, a forged one sharing a masked form, and a revoked
/// one all cost the same HMACs before the outcome is known.
pub(crate) fn verify<'a>(
    token: &str,
    records: impl IntoIterator<Item = &'a TokenRecord>,
) -> Result<Caller, AuthFailure> {
    if !well_formed(token) {
        return Err(AuthFailure::Malformed);
    }
    let masked = mask(token);
    let mut found: Option<&TokenRecord> = None;
    let mut checked = 0_usize;
    for record in records.into_iter().filter(|t| t.masked == masked) {
        checked += 1;
        if record.verifies(token) && found.is_none() {
            found = Some(record);
        }
    }
    if checked == 0 {
        // Never verifies; computed for its cost only.
        let _ = decoy().verifies(token);
    }
    let record = found.ok_or(AuthFailure::Unknown)?;
    if record.revoked.is_some() {
        return Err(AuthFailure::Revoked);
    }
    let org = OrgName::parse(&record.org).map_err(|_| AuthFailure::StoreUnreadable)?;
    Ok(Caller {
        org,
        token: masked,
        scopes: record.effective_scopes(),
    })
}

/// Whether `token` has the form of one of ours, and its masked form.
pub(crate) fn masked_if_well_formed(token: &str) -> Option<String> {
    well_formed(token).then(|| mask(token))
}

pub(crate) fn now() -> String {
    now_rfc3339()
}

/// Who a valid token speaks for.
#[derive(Clone, Debug)]
pub struct Caller {
    pub org: OrgName,
    /// The masked token, for audit lines.
    pub token: String,
    /// What the token may do.
    pub scopes: Vec<Scope>,
}

impl Caller {
    pub fn may(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope)
    }
}

/// Identity of the token file's contents: a rename (every write) or an edit changes it.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime_ns: i64,
    ctime_ns: i64,
}

struct Cached {
    stamp: Option<Stamp>,
    tokens: Arc<Vec<TokenRecord>>,
}

/// The server's view of the token file, re-read when it changes.
pub struct TokenStore {
    path: PathBuf,
    cache: Mutex<Option<Cached>>,
}

impl TokenStore {
    pub fn new(data_dir: &Path) -> Self {
        Self {
            path: token_path(data_dir),
            cache: Mutex::new(None),
        }
    }

    fn tokens(&self) -> Result<Arc<Vec<TokenRecord>>, TokenError> {
        let stamp = match fs::metadata(&self.path) {
            Ok(m) => Some(Stamp {
                dev: m.dev(),
                ino: m.ino(),
                len: m.len(),
                mtime_ns: m.mtime() * 1_000_000_000 + m.mtime_nsec(),
                ctime_ns: m.ctime() * 1_000_000_000 + m.ctime_nsec(),
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(TokenError::Io(self.path.clone(), e)),
        };
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(cached) = cache.as_ref().filter(|c| c.stamp == stamp) {
            return Ok(Arc::clone(&cached.tokens));
        }
        let tokens = Arc::new(read_file(&self.path)?.tokens);
        *cache = Some(Cached {
            stamp,
            tokens: Arc::clone(&tokens),
        });
        Ok(tokens)
    }

    /// The caller a token speaks for, or why it speaks for nobody.
    pub fn authenticate(&self, token: &str) -> Result<Caller, AuthFailure> {
        if !well_formed(token) {
            return Err(AuthFailure::Malformed);
        }
        let tokens = self.tokens().map_err(|e| {
            tracing::error!(error = %e, "token file unreadable; refusing every call");
            AuthFailure::StoreUnreadable
        })?;
        verify(token, tokens.iter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn org(name: &str) -> OrgName {
        OrgName::parse(name).unwrap()
    }

    #[test]
    fn create_verify_revoke() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let store = TokenStore::new(d);
        let (a1, rec) = create(d, &org("a"), &[Scope::Ingest]).unwrap();
        assert!(well_formed(&a1), "{a1}");
        assert_eq!(rec.masked, mask(&a1));
        let (a2, _) = create(d, &org("a"), &[Scope::Ingest]).unwrap();
        let (b1, _) = create(d, &org("b"), &[Scope::Ingest]).unwrap();
        assert_eq!(store.authenticate(&a1).unwrap().org, org("a"));
        assert_eq!(store.authenticate(&b1).unwrap().org, org("b"));

        // The file holds no token.
        let text = fs::read_to_string(d.join(FILE)).unwrap();
        for t in [&a1, &a2, &b1] {
            assert!(!text.contains(&t[4..]), "{text}");
        }
        let mode = fs::metadata(d.join(FILE)).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o600);

        // A token of another organisation cannot be revoked through this one.
        assert!(matches!(
            revoke(d, &org("a"), &b1),
            Err(TokenError::NoMatch { .. })
        ));
        assert!(matches!(
            revoke(d, &org("a"), "cap_"),
            Err(TokenError::Ambiguous { count: 2, .. })
        ));
        let masked_ascii = mask(&a1).replace('…', "...");
        assert!(matches!(
            revoke(d, &org("a"), &masked_ascii).unwrap(),
            Revoked::Now(_)
        ));
        assert!(matches!(
            revoke(d, &org("a"), &a1).unwrap(),
            Revoked::Already(_)
        ));
        // Takes effect for the running server without a restart.
        assert!(matches!(store.authenticate(&a1), Err(AuthFailure::Revoked)));
        assert!(store.authenticate(&a2).is_ok());
        assert!(revoke(d, &org("a"), &a2[..7]).is_ok());
        assert!(matches!(store.authenticate(&a2), Err(AuthFailure::Revoked)));

        let listed = list(d, &org("a")).unwrap();
        assert_eq!(listed.len(), 2);
        assert!(listed.iter().all(|t| t.revoked.is_some()));
    }

    #[test]
    fn unknown_and_malformed_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let store = TokenStore::new(dir.path());
        let (token, _) = create(dir.path(), &org("a"), &[Scope::Ingest]).unwrap();
        // Same masked form, different middle: found by mask, refused by the HMAC.
        let mut forged = token.clone().into_bytes();
        forged[20] = if forged[20] == b'A' { b'B' } else { b'A' };
        let forged = String::from_utf8(forged).unwrap();
        assert_eq!(mask(&forged), mask(&token));
        assert!(matches!(
            store.authenticate(&forged),
            Err(AuthFailure::Unknown)
        ));
        for bad in ["", "cap_", "Bearer x", &token[..46], &format!("{token}x")] {
            assert!(
                matches!(store.authenticate(bad), Err(AuthFailure::Malformed)),
                "{bad}"
            );
        }
        fs::write(dir.path().join(FILE), "not json").unwrap();
        assert!(matches!(
            store.authenticate(&token),
            Err(AuthFailure::StoreUnreadable)
        ));
    }

    /// An unknown token (no record with its masked form), a forged one (same masked form,
    /// wrong HMAC), a revoked one and a valid one: each costs exactly one HMAC verification
    /// and takes the same path; only the outcome differs.
    #[test]
    fn unknown_forged_revoked_and_valid_cost_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let store = TokenStore::new(d);
        let (valid, _) = create(d, &org("a"), &[Scope::Ingest]).unwrap();
        let (revoked, _) = create(d, &org("a"), &[Scope::Read]).unwrap();
        assert!(matches!(
            revoke(d, &org("a"), &revoked).unwrap(),
            Revoked::Now(_)
        ));
        let (unknown, _) = issue(&org("a"), &[Scope::Ingest]).unwrap();
        let mut forged = valid.clone().into_bytes();
        forged[20] = if forged[20] == b'A' { b'B' } else { b'A' };
        let forged = String::from_utf8(forged).unwrap();
        // Warm the cache: the file is read once.
        let _ = store.authenticate(&valid);
        let cost = |token: &str| {
            let before = hmac_computations();
            let outcome = store.authenticate(token).map(|c| c.scopes);
            (hmac_computations() - before, outcome)
        };
        let mut outcomes = Vec::new();
        for _ in 0..100 {
            for token in [&unknown, &forged, &revoked, &valid] {
                let (n, outcome) = cost(token);
                assert_eq!(n, 1, "{outcome:?}");
                outcomes.push(outcome);
            }
        }
        assert!(matches!(outcomes[0], Err(AuthFailure::Unknown)));
        assert!(matches!(outcomes[1], Err(AuthFailure::Unknown)));
        assert!(matches!(outcomes[2], Err(AuthFailure::Revoked)));
        assert_eq!(outcomes[3].as_ref().unwrap(), &vec![Scope::Ingest]);
        // A malformed token is refused before any HMAC.
        assert_eq!(cost("cap_short").0, 0);
    }

    #[test]
    fn scopes_are_stored_and_legacy_records_keep_ingest_and_read() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let store = TokenStore::new(d);
        let (both, rec) = create(d, &org("a"), &[Scope::Read, Scope::Ingest, Scope::Read]).unwrap();
        assert_eq!(rec.scopes, Some(vec![Scope::Ingest, Scope::Read]));
        assert_eq!(
            store.authenticate(&both).unwrap().scopes,
            vec![Scope::Ingest, Scope::Read]
        );
        // A record written before scopes existed: no `scopes` field.
        let (old, _) = create(d, &org("a"), &[Scope::Admin]).unwrap();
        let text = fs::read_to_string(d.join(FILE)).unwrap();
        let mut json: serde_json::Value = serde_json::from_str(&text).unwrap();
        json["tokens"][1].as_object_mut().unwrap().remove("scopes");
        fs::write(d.join(FILE), serde_json::to_vec(&json).unwrap()).unwrap();
        let caller = store.authenticate(&old).unwrap();
        assert_eq!(caller.scopes, LEGACY_SCOPES.to_vec());
        assert!(list(d, &org("a")).unwrap()[1].is_legacy());
        assert_eq!(
            scopes_to_string(&[Scope::Read, Scope::Ingest]),
            "ingest,read"
        );
        assert_eq!(
            scopes_from_string("read, ingest,read").unwrap(),
            vec![Scope::Ingest, Scope::Read]
        );
        assert!(scopes_from_string("write").is_err());
    }
}
