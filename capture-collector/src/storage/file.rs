//! The embedded store: the segment files of `store`, the token file of `tokens`, the key
//! check of `seal`, and models as files (`DIR/models/<org>/<name>`), all in one data directory
//! that one serving collector holds a lock on.

use std::{
    fs::{self, File, OpenOptions},
    io,
    os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _},
    path::{Path, PathBuf},
    sync::Arc,
    time::SystemTime,
};

use capture_proto::v1::ExchangeBatch;
use nix::fcntl::{Flock, FlockArg};
use tracing::info;

use super::{
    Access, Location, Retention, Selection, StorageConfig, StorageError, StoredExchange, key_error,
    model_aad,
};
use crate::{
    metrics::{AuthFailure, Metrics},
    org::OrgName,
    seal::{self, SealKey, write_atomically},
    store::{self, Appended, BatchId, Store, StoreConfig},
    tokens::{self, Caller, Revoked, Scope, TokenRecord, TokenStore},
};

/// Model files start with this byte: 0 plaintext (a directory without a key), 1 sealed.
const MODEL_PLAIN: u8 = 0;
const MODEL_SEALED: u8 = 1;

pub struct FileStorage {
    data_dir: PathBuf,
    key: Option<Arc<SealKey>>,
    /// The writers; only when serving.
    store: Option<Store>,
    tokens: TokenStore,
    metrics: Arc<Metrics>,
    /// One server per data directory: two writers would interleave records.
    _lock: Option<Flock<File>>,
}

/// What retention needs, off the async runtime.
pub struct FileRetention {
    data_dir: PathBuf,
    metrics: Arc<Metrics>,
}

fn io_error(path: &Path, e: &io::Error) -> StorageError {
    StorageError::Io(format!("{}: {e}", path.display()))
}

impl FileStorage {
    pub(super) fn open(
        config: &StorageConfig,
        metrics: Arc<Metrics>,
        access: Access,
    ) -> Result<Self, StorageError> {
        let Location::File(dir) = &config.location else {
            return Err(StorageError::Config("not a file store".into()));
        };
        let flag = || config.flag.clone();
        let mut lock = None;
        match access {
            Access::Serve | Access::Admin => {
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)
                    .map_err(|e| StorageError::Config(format!("{}: {e}", flag())))?;
            }
            Access::Read => {
                if !dir.is_dir() {
                    return Err(StorageError::Config(format!("{}: not a directory", flag())));
                }
            }
        }
        if access == Access::Serve {
            let lock_path = dir.join("lock");
            let lock_file = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(&lock_path)
                .map_err(|e| StorageError::Config(format!("{}: {e}", flag())))?;
            lock = Some(
                Flock::lock(lock_file, FlockArg::LockExclusiveNonblock).map_err(|_| {
                    StorageError::Io(format!(
                        "{}: another collector is serving this directory",
                        flag()
                    ))
                })?,
            );
        }
        if access != Access::Admin {
            let has_data = store::has_data(dir)?;
            seal::check_data_dir(
                dir,
                config.key.as_deref(),
                has_data,
                access == Access::Serve,
            )
            .map_err(|e| key_error(config.key_flag.as_deref(), &config.flag, &e))?;
        }
        let store = if access == Access::Serve {
            Some(Store::open(
                StoreConfig {
                    data_dir: dir.clone(),
                    segment_bytes: config.segment_bytes,
                },
                config.key.clone(),
                Arc::clone(&metrics),
            )?)
        } else {
            None
        };
        Ok(Self {
            data_dir: dir.clone(),
            key: config.key.clone(),
            store,
            tokens: TokenStore::new(dir),
            metrics,
            _lock: lock,
        })
    }

    pub(super) async fn push(
        &self,
        org: &OrgName,
        batch: &ExchangeBatch,
        encoded: Vec<u8>,
    ) -> Result<Appended, StorageError> {
        let store = self
            .store
            .as_ref()
            .ok_or_else(|| StorageError::Config("the store was opened read-only".into()))?;
        let id = BatchId {
            daemon_id: batch.daemon_id.clone(),
            instance_id: batch.instance_id.clone(),
            sequence: batch.sequence,
        };
        Ok(store.append(org, id, encoded).await?)
    }

    pub(super) fn read(
        &self,
        org: &OrgName,
        selection: &Selection,
        visit: &mut (dyn FnMut(StoredExchange) -> Result<(), StorageError> + Send),
    ) -> Result<(), StorageError> {
        let mut failed = None;
        let mut ordinal = 0;
        let result = store::read_batches(&self.data_dir, org, self.key.as_deref(), |batch| {
            ordinal += 1;
            for exchange in batch.exchanges {
                if !selection.matches(&exchange) {
                    continue;
                }
                if let Err(e) = visit(StoredExchange {
                    batch: ordinal,
                    daemon_id: batch.daemon_id.clone(),
                    exchange,
                }) {
                    failed = Some(e);
                    return Err(store::StoreError::Closed);
                }
            }
            Ok(())
        });
        if let Some(e) = failed {
            return Err(e);
        }
        Ok(result?)
    }

    pub(super) fn has_org(&self, org: &OrgName) -> Result<bool, StorageError> {
        Ok(store::orgs_dir(&self.data_dir).join(org.as_str()).is_dir()
            || !tokens::list(&self.data_dir, org)?.is_empty())
    }

    pub(super) fn create_token(
        &self,
        org: &OrgName,
        scopes: &[Scope],
    ) -> Result<(String, TokenRecord), StorageError> {
        Ok(tokens::create(&self.data_dir, org, scopes)?)
    }

    pub(super) fn list_tokens(&self, org: &OrgName) -> Result<Vec<TokenRecord>, StorageError> {
        Ok(tokens::list(&self.data_dir, org)?)
    }

    pub(super) fn revoke_token(&self, org: &OrgName, given: &str) -> Result<Revoked, StorageError> {
        Ok(tokens::revoke(&self.data_dir, org, given)?)
    }

    pub(super) fn authenticate(&self, token: &str) -> Result<Caller, AuthFailure> {
        self.tokens.authenticate(token)
    }

    fn model_path(&self, org: &OrgName, name: &str) -> PathBuf {
        self.data_dir.join("models").join(org.as_str()).join(name)
    }

    pub(super) fn put_model(
        &self,
        org: &OrgName,
        name: &str,
        blob: &[u8],
    ) -> Result<(), StorageError> {
        let path = self.model_path(org, name);
        if let Some(dir) = path.parent() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| io_error(dir, &e))?;
        }
        let contents = match &self.key {
            Some(key) => {
                let mut out = vec![MODEL_SEALED];
                key.for_org(org.as_str())
                    .and_then(|k| k.seal(&model_aad(org, name), blob, &mut out))
                    .map_err(|_| StorageError::Sealed {
                        what: format!("model {name}"),
                    })?;
                out
            }
            None => {
                let mut out = vec![MODEL_PLAIN];
                out.extend_from_slice(blob);
                out
            }
        };
        write_atomically(&path, &contents, 0o600).map_err(|e| io_error(&path, &e))
    }

    pub(super) fn get_model(
        &self,
        org: &OrgName,
        name: &str,
    ) -> Result<Option<Vec<u8>>, StorageError> {
        let path = self.model_path(org, name);
        let mut bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_error(&path, &e)),
        };
        let sealed = || StorageError::Sealed {
            what: format!("model {name} of {org}"),
        };
        match (bytes.first().copied(), &self.key) {
            (Some(MODEL_PLAIN), None) => Ok(Some(bytes.split_off(1))),
            (Some(MODEL_SEALED), Some(key)) => {
                let key = key.for_org(org.as_str()).map_err(|_| sealed())?;
                let plain = key
                    .open(&model_aad(org, name), &mut bytes[1..])
                    .map_err(|_| sealed())?;
                Ok(Some(plain.to_vec()))
            }
            _ => Err(sealed()),
        }
    }

    pub(super) fn clone_for_retention(&self) -> FileRetention {
        FileRetention {
            data_dir: self.data_dir.clone(),
            metrics: Arc::clone(&self.metrics),
        }
    }

    pub(super) fn close(self) {
        if let Some(store) = self.store {
            store.close();
        }
    }
}

impl FileRetention {
    /// Removes each organisation's closed segments last written before its retention period
    /// (never the segment being written): whole segments, so what goes is always the oldest.
    pub fn enforce_retention(&self, retention: &Retention) -> Result<u64, StorageError> {
        let orgs = store::orgs_dir(&self.data_dir);
        let entries = match fs::read_dir(&orgs) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(io_error(&orgs, &e)),
        };
        let now = SystemTime::now();
        let mut removed = 0;
        for entry in entries {
            let entry = entry.map_err(|e| io_error(&orgs, &e))?;
            let Some(org) = entry
                .file_name()
                .to_str()
                .and_then(|n| OrgName::parse(n).ok())
            else {
                continue;
            };
            let Some(period) = retention.period(&org) else {
                continue;
            };
            let Some(cutoff) = now.checked_sub(period) else {
                continue;
            };
            let mut segments = store::list_segments(&entry.path())?;
            segments.pop();
            for (_, path) in segments {
                let modified = fs::metadata(&path)
                    .and_then(|m| m.modified())
                    .map_err(|e| io_error(&path, &e))?;
                if modified >= cutoff {
                    break;
                }
                fs::remove_file(&path).map_err(|e| io_error(&path, &e))?;
                info!(org = %org, segment = %path.display(), "retention: segment removed");
                removed += 1;
            }
        }
        Metrics::add(&self.metrics.retention_segments_removed, removed);
        Ok(removed)
    }
}
