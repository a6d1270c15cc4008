//! One storage interface, two stores: the embedded segment files (`file`, the default, one
//! collector per directory) and PostgreSQL (`postgres`, several collectors on one database).
//!
//! Both do the same things with the same meaning, and the collector's tests run against both:
//! push with deduplication on (daemon id, instance id, sequence), reading an organisation's
//! exchanges back in storage order (export, diff), tokens (create, list, revoke,
//! authenticate), a small per-organisation model store (opaque blobs by name, sealed with the
//! organisation's key), and per-organisation retention. What differs is how watchers learn of
//! new exchanges: the file store has one writer, which publishes what it stores; PostgreSQL
//! replicas follow the organisation's log with a cursor, woken by `LISTEN/NOTIFY`, so a
//! watcher on any replica sees what any other stored.

pub mod file;
pub mod postgres;

use std::{collections::HashMap, fmt, path::PathBuf, sync::Arc, time::Duration};

use capture_proto::v1::{self as pb, ExchangeBatch};

use crate::{
    metrics::{AuthFailure, Metrics},
    org::OrgName,
    seal::{KeyError, SealKey},
    store::{Appended, StoreError},
    tokens::{Caller, Revoked, Scope, TokenError, TokenRecord},
};

/// Where the collector keeps its data: `--store file:DIR` (or `--data DIR`) or
/// `--store postgres://…`.
#[derive(Clone, PartialEq, Eq)]
pub enum Location {
    File(PathBuf),
    /// A libpq-style URL; `postgres://` alone takes everything from the `PG*` environment.
    Postgres(String),
}

#[derive(Debug, thiserror::Error)]
#[error("{0:?}: give file:DIR or a postgres://… URL")]
pub struct BadLocation(pub String);

impl std::str::FromStr for Location {
    type Err = BadLocation;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(dir) = s.strip_prefix("file:") {
            let dir = dir.strip_prefix("//").unwrap_or(dir);
            if dir.is_empty() {
                return Err(BadLocation(s.to_owned()));
            }
            return Ok(Self::File(PathBuf::from(dir)));
        }
        if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            return Ok(Self::Postgres(s.to_owned()));
        }
        Err(BadLocation(s.chars().take(80).collect()))
    }
}

impl fmt::Display for Location {
    /// Never shows a password given in the URL.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(dir) => write!(f, "file:{}", dir.display()),
            Self::Postgres(url) => f.write_str(&postgres::redact_url(url)),
        }
    }
}

impl fmt::Debug for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// How long each organisation's exchanges are kept.
#[derive(Clone, Debug, Default)]
pub struct Retention {
    /// For organisations without their own period; `None` keeps everything.
    pub default: Option<Duration>,
    pub per_org: HashMap<OrgName, Duration>,
    /// How often it is enforced.
    pub interval: Duration,
    /// Rows one PostgreSQL delete statement removes (a long delete would hold locks).
    pub batch_rows: u32,
}

impl Retention {
    pub fn period(&self, org: &OrgName) -> Option<Duration> {
        self.per_org.get(org).copied().or(self.default)
    }

    pub fn is_set(&self) -> bool {
        self.default.is_some() || !self.per_org.is_empty()
    }
}

/// PostgreSQL connection settings beyond the URL.
#[derive(Clone, Debug, Default)]
pub struct DbOptions {
    /// A file holding the password (first line), instead of one in the URL or `PGPASSWORD`.
    pub password_file: Option<PathBuf>,
    /// Connections in this collector's pool.
    pub max_connections: u32,
    /// How often a watched organisation's log is read when no notification came.
    pub watch_poll: Duration,
}

/// Everything a store needs to open.
#[derive(Clone)]
pub struct StorageConfig {
    pub location: Location,
    /// How the user named it (`--data DIR` or `--store URL`), for messages.
    pub flag: String,
    pub key: Option<Arc<SealKey>>,
    /// The flag the key came from, for messages.
    pub key_flag: Option<PathBuf>,
    /// File store: a segment is closed once the next record would take it past this.
    pub segment_bytes: u64,
    pub db: DbOptions,
}

/// What the opener is going to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// `serve`: writes batches, takes the file store's lock, records the key check.
    Serve,
    /// `token`: writes tokens only.
    Admin,
    /// `export`, `diff`: reads.
    Read,
}

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// A configuration the user must change (exit code 2); the message names the flag.
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    File(#[from] StoreError),
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error("database: {0}")]
    Db(String),
    #[error("{what}: a sealed payload did not open (altered, moved, or sealed under another key)")]
    Sealed { what: String },
    #[error("{what}: stored payload does not decode: {reason}")]
    Decode { what: String, reason: String },
    #[error("{0}")]
    Io(String),
}

impl StorageError {
    /// Whether the user must change something (exit code 2) rather than retry.
    pub fn is_config(&self) -> bool {
        matches!(
            self,
            Self::Config(_)
                | Self::Token(TokenError::NoMatch { .. } | TokenError::Ambiguous { .. })
        )
    }
}

impl From<sqlx::Error> for StorageError {
    fn from(e: sqlx::Error) -> Self {
        Self::Db(e.to_string())
    }
}

pub(crate) fn key_error(
    key_flag: Option<&std::path::Path>,
    store_flag: &str,
    e: &KeyError,
) -> StorageError {
    match e {
        KeyError::KeyRequired => StorageError::Config(format!("{store_flag}: {e}")),
        KeyError::WriteCheck(..) | KeyError::Read(_) => StorageError::Io(e.to_string()),
        _ => StorageError::Config(format!(
            "--encryption-key {}: {e}",
            key_flag.map_or_else(String::new, |p| p.display().to_string())
        )),
    }
}

/// Which of an organisation's exchanges a reader wants: all by default. Selectors of the
/// Smart Diff and filters of an export.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selection {
    pub routing_key: Option<String>,
    /// Owner (Deployment, ...) or pod name.
    pub workload: Option<String>,
    pub namespace: Option<String>,
    /// Request start, Unix nanoseconds, inclusive.
    pub since_ns: Option<u64>,
    /// Request start, Unix nanoseconds, exclusive.
    pub until_ns: Option<u64>,
}

impl Selection {
    pub fn matches(&self, exchange: &pb::Exchange) -> bool {
        let workload = exchange.workload.as_ref();
        let start = exchange.timing.map(|t| t.request_start_unix_nanos);
        self.routing_key
            .as_ref()
            .is_none_or(|k| exchange.routing_key.as_ref() == Some(k))
            && self
                .namespace
                .as_ref()
                .is_none_or(|ns| workload.and_then(|w| w.namespace.as_ref()) == Some(ns))
            && self.workload.as_ref().is_none_or(|want| {
                workload.is_some_and(|w| {
                    w.owner_name.as_ref() == Some(want) || w.pod.as_ref() == Some(want)
                })
            })
            && self.since_ns.is_none_or(|s| start.is_some_and(|t| t >= s))
            && self.until_ns.is_none_or(|u| start.is_some_and(|t| t < u))
    }
}

/// One stored exchange read back.
pub struct StoredExchange {
    /// Which stored batch it came in: equal for the exchanges of one batch, growing in
    /// storage order.
    pub batch: u64,
    pub daemon_id: String,
    pub exchange: pb::Exchange,
}

/// Longest model name.
pub const MAX_MODEL_NAME: usize = 128;

/// Model names: `[a-z0-9._-]`, not starting with a dot (they are file names in the file
/// store).
pub fn check_model_name(name: &str) -> Result<(), StorageError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_MODEL_NAME
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(StorageError::Config(format!(
            "{:?} is not a model name: 1 to {MAX_MODEL_NAME} of a-z 0-9 . _ -, not starting with a dot",
            name.chars().take(80).collect::<String>()
        )))
    }
}

/// The associated data a model is sealed with: its organisation and name.
pub(crate) fn model_aad(org: &OrgName, name: &str) -> Vec<u8> {
    let mut aad = b"model\0".to_vec();
    aad.extend_from_slice(org.as_str().as_bytes());
    aad.push(0);
    aad.extend_from_slice(name.as_bytes());
    aad
}

/// The collector's store.
pub enum Storage {
    File(file::FileStorage),
    Postgres(postgres::PgStorage),
}

impl Storage {
    pub async fn open(
        config: StorageConfig,
        metrics: Arc<Metrics>,
        access: Access,
    ) -> Result<Self, StorageError> {
        match &config.location {
            Location::File(_) => {
                let location = config.location.clone();
                let opened = tokio::task::spawn_blocking(move || {
                    file::FileStorage::open(&config, metrics, access)
                })
                .await
                .map_err(|e| StorageError::Io(format!("opening {location}: {e}")))??;
                Ok(Self::File(opened))
            }
            Location::Postgres(_) => Ok(Self::Postgres(
                postgres::PgStorage::open(&config, metrics, access).await?,
            )),
        }
    }

    /// Stores `batch` (whose encoding is `encoded`) for `org`, unless it is stored already.
    pub async fn push(
        &self,
        org: &OrgName,
        batch: &ExchangeBatch,
        encoded: Vec<u8>,
    ) -> Result<Appended, StorageError> {
        match self {
            Self::File(s) => s.push(org, batch, encoded).await,
            Self::Postgres(s) => s.push(org, batch).await,
        }
    }

    /// Calls `visit` with each of `org`'s exchanges that `selection` takes, in storage order.
    pub async fn read(
        &self,
        org: &OrgName,
        selection: &Selection,
        visit: &mut (dyn FnMut(StoredExchange) -> Result<(), StorageError> + Send),
    ) -> Result<(), StorageError> {
        match self {
            // Segment reads block: off the async workers when the runtime has others.
            Self::File(s) => {
                match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
                    Ok(tokio::runtime::RuntimeFlavor::MultiThread) => {
                        tokio::task::block_in_place(|| s.read(org, selection, visit))
                    }
                    _ => s.read(org, selection, visit),
                }
            }
            Self::Postgres(s) => s.read(org, selection, visit).await,
        }
    }

    /// Whether anything (exchanges or tokens) of `org` is here.
    pub async fn has_org(&self, org: &OrgName) -> Result<bool, StorageError> {
        match self {
            Self::File(s) => s.has_org(org),
            Self::Postgres(s) => s.has_org(org).await,
        }
    }

    /// Issues a token for `org` with `scopes` (stored sorted, without duplicates).
    pub async fn create_token(
        &self,
        org: &OrgName,
        scopes: &[Scope],
    ) -> Result<(String, TokenRecord), StorageError> {
        match self {
            Self::File(s) => s.create_token(org, scopes),
            Self::Postgres(s) => s.create_token(org, scopes).await,
        }
    }

    pub async fn list_tokens(&self, org: &OrgName) -> Result<Vec<TokenRecord>, StorageError> {
        match self {
            Self::File(s) => s.list_tokens(org),
            Self::Postgres(s) => s.list_tokens(org).await,
        }
    }

    pub async fn revoke_token(&self, org: &OrgName, given: &str) -> Result<Revoked, StorageError> {
        match self {
            Self::File(s) => s.revoke_token(org, given),
            Self::Postgres(s) => s.revoke_token(org, given).await,
        }
    }

    /// The caller a token speaks for. Called from the gRPC interceptor, which is synchronous.
    pub fn authenticate(&self, token: &str) -> Result<Caller, AuthFailure> {
        match self {
            Self::File(s) => s.authenticate(token),
            Self::Postgres(s) => s.authenticate(token),
        }
    }

    /// Stores `blob` as `org`'s model `name`, sealed with the organisation's key.
    pub async fn put_model(
        &self,
        org: &OrgName,
        name: &str,
        blob: &[u8],
    ) -> Result<(), StorageError> {
        check_model_name(name)?;
        match self {
            Self::File(s) => s.put_model(org, name, blob),
            Self::Postgres(s) => s.put_model(org, name, blob).await,
        }
    }

    /// `org`'s model `name`, if stored.
    pub async fn get_model(
        &self,
        org: &OrgName,
        name: &str,
    ) -> Result<Option<Vec<u8>>, StorageError> {
        check_model_name(name)?;
        match self {
            Self::File(s) => s.get_model(org, name),
            Self::Postgres(s) => s.get_model(org, name).await,
        }
    }

    /// Deletes what is older than each organisation's retention period; returns what went
    /// (segments for the file store, exchanges for PostgreSQL) and counts it in metrics.
    pub async fn enforce_retention(&self, retention: &Retention) -> Result<u64, StorageError> {
        match self {
            Self::File(s) => {
                let s = s.clone_for_retention();
                let retention = retention.clone();
                tokio::task::spawn_blocking(move || s.enforce_retention(&retention))
                    .await
                    .map_err(|e| StorageError::Io(format!("retention task: {e}")))?
            }
            Self::Postgres(s) => s.enforce_retention(retention).await,
        }
    }

    /// Stops writers and closes connections.
    pub async fn close(self) {
        match self {
            Self::File(s) => {
                let _ = tokio::task::spawn_blocking(move || s.close()).await;
            }
            Self::Postgres(s) => s.close().await,
        }
    }
}
