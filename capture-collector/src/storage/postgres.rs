//! The PostgreSQL store (`sqlx`, no compile-time query checking): several collectors share
//! one database.
//!
//! - Schema: versioned migrations (`migrations/`, applied at start under sqlx's advisory lock,
//!   so replicas starting together apply them once).
//! - Isolation: every organisation-scoped statement runs in a transaction that first sets
//!   `app.org` (`set_config(…, true)`: transaction-local, so a pooled connection never carries
//!   it over); row-level security policies on that setting keep any statement from reading or
//!   writing another organisation's rows, even one that forgets its `WHERE org = …`.
//! - Encryption: each exchange is sealed (ChaCha20-Poly1305) with the organisation's key,
//!   derived from `--encryption-key` with HKDF, bound to its organisation and place; only what
//!   watch, export and diff select on (time, namespace, workload, routing key, method and path
//!   without the query) is in the clear. A key is required.
//! - Order and dedup: a push locks its organisation's `orgs` row to take the next position, so
//!   positions commit in order and a cursor never skips a late commit; the batch's unique key
//!   (daemon id, instance id, sequence) turns a retry on any replica into a duplicate.
//! - Watch: a push notifies `capture_exchanges` with the organisation; each replica listens and
//!   reads on from its cursor, and polls anyway (`--watch-poll`) in case a notification was
//!   lost while its listener reconnected.

use std::{
    borrow::Cow,
    collections::HashMap,
    str::FromStr as _,
    sync::{Arc, Mutex},
    time::Duration,
};

use capture_proto::v1::{self as pb, ExchangeBatch};
use futures::TryStreamExt as _;
use prost::Message as _;
use sqlx::{
    Postgres, Row as _, SqlSafeStr as _, Transaction,
    migrate::{Migration, MigrationType, Migrator},
    postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions},
};
use tokio::{sync::Notify, task::JoinHandle};
use tracing::{info, warn};

use super::{
    Access, Location, Retention, Selection, StorageConfig, StorageError, StoredExchange, model_aad,
};
use crate::{
    metrics::{AuthFailure, Metrics},
    org::OrgName,
    seal::SealKey,
    store::Appended,
    tokens::{self, Caller, Pick, Revoked, Scope, TokenRecord},
};

/// The channel pushes notify, with the organisation as payload.
const CHANNEL: &str = "capture_exchanges";

const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "init", include_str!("migrations/0001_init.sql")),
    (
        2,
        "token scopes",
        include_str!("migrations/0002_token_scopes.sql"),
    ),
];

fn migrator() -> Migrator {
    Migrator::with_migrations(
        MIGRATIONS
            .iter()
            .map(|(version, description, sql)| {
                Migration::new(
                    *version,
                    Cow::Borrowed(*description),
                    MigrationType::Simple,
                    sql.into_sql_str(),
                    false,
                )
            })
            .collect(),
    )
}

/// `url` with any password replaced by `***`.
pub fn redact_url(url: &str) -> String {
    let mut out = url.to_owned();
    if let Some(scheme_end) = out.find("://") {
        let rest = scheme_end + 3;
        let authority_end = out[rest..].find(['/', '?']).map_or(out.len(), |i| rest + i);
        if let Some(at) = out[rest..authority_end].rfind('@') {
            let userinfo = &out[rest..rest + at];
            if let Some(colon) = userinfo.find(':') {
                out.replace_range(rest + colon + 1..rest + at, "***");
            }
        }
    }
    if let Some(q) = out.find('?') {
        let (head, query) = out.split_at(q + 1);
        let query: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                _ => pair.to_owned(),
            })
            .collect();
        out = format!("{head}{}", query.join("&"));
    }
    out
}

/// Where a watcher's replica has read an organisation's log to: (position, index).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cursor {
    pub pos: i64,
    pub idx: i32,
}

pub struct PgStorage {
    pool: PgPool,
    key: Option<Arc<SealKey>>,
    org_keys: Mutex<HashMap<OrgName, Arc<SealKey>>>,
    metrics: Arc<Metrics>,
    wakers: Arc<Mutex<HashMap<String, Arc<Notify>>>>,
    listener: Option<JoinHandle<()>>,
    watch_poll: Duration,
}

fn sealed_error(what: impl Into<String>) -> StorageError {
    StorageError::Sealed { what: what.into() }
}

/// The associated data an exchange row is sealed with: its organisation and place.
fn exchange_aad(org: &OrgName, pos: i64, idx: i32) -> Vec<u8> {
    let mut aad = b"exchange\0".to_vec();
    aad.extend_from_slice(org.as_str().as_bytes());
    aad.push(0);
    aad.extend_from_slice(&pos.to_le_bytes());
    aad.extend_from_slice(&idx.to_le_bytes());
    aad
}

/// Begins a transaction scoped to `org` for row-level security.
async fn org_tx(
    pool: &PgPool,
    org: &OrgName,
) -> Result<Transaction<'static, Postgres>, StorageError> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT set_config('app.org', $1, true)")
        .bind(org.as_str())
        .execute(&mut *tx)
        .await?;
    Ok(tx)
}

fn i64_of(v: u64, what: &str) -> Result<i64, StorageError> {
    i64::try_from(v).map_err(|_| StorageError::Decode {
        what: what.to_owned(),
        reason: format!("{v} is larger than PostgreSQL's bigint"),
    })
}

impl PgStorage {
    pub(super) async fn open(
        config: &StorageConfig,
        metrics: Arc<Metrics>,
        access: Access,
    ) -> Result<Self, StorageError> {
        let Location::Postgres(url) = &config.location else {
            return Err(StorageError::Config("not a PostgreSQL store".into()));
        };
        let flag = &config.flag;
        // Token administration needs no key; everything that reads or writes exchanges or
        // models does, and checks it against the database's key check.
        let key = config.key.clone();
        if key.is_none() && access != Access::Admin {
            return Err(StorageError::Config(format!(
                "{flag}: give --encryption-key FILE; exchanges are sealed before they reach the database"
            )));
        }
        let mut options = if url == "postgres://" || url == "postgresql://" {
            PgConnectOptions::new()
        } else {
            PgConnectOptions::from_str(url)
                .map_err(|e| StorageError::Config(format!("{flag}: {e}")))?
        };
        if let Some(path) = &config.db.password_file {
            let text = std::fs::read_to_string(path).map_err(|e| {
                StorageError::Config(format!("--db-password-file {}: {e}", path.display()))
            })?;
            let password = text.lines().next().unwrap_or_default();
            options = options.password(password);
        }
        let pool = PgPoolOptions::new()
            .max_connections(config.db.max_connections.max(1))
            .acquire_timeout(Duration::from_secs(15))
            .connect_with(options)
            .await
            .map_err(|e| StorageError::Db(format!("connecting to {}: {e}", config.location)))?;
        migrator()
            .run(&pool)
            .await
            .map_err(|e| StorageError::Db(format!("migrating {}: {e}", config.location)))?;
        if let Some(key) = &key {
            let check = key.key_check().map_err(|_| sealed_error("the key check"))?;
            sqlx::query("INSERT INTO capture_meta (name, value) VALUES ('key_check', $1) ON CONFLICT (name) DO NOTHING")
                .bind(check)
                .execute(&pool)
                .await?;
            let stored: Vec<u8> =
                sqlx::query_scalar("SELECT value FROM capture_meta WHERE name = 'key_check'")
                    .fetch_one(&pool)
                    .await?;
            if !key.verifies_check(&stored) {
                pool.close().await;
                return Err(StorageError::Config(format!(
                    "--encryption-key {}: it is not the key this database was encrypted with",
                    config
                        .key_flag
                        .as_ref()
                        .map_or_else(String::new, |p| p.display().to_string())
                )));
            }
        }
        let wakers: Arc<Mutex<HashMap<String, Arc<Notify>>>> = Arc::default();
        let listener = if access == Access::Serve {
            let mut listener = PgListener::connect_with(&pool).await?;
            listener.listen(CHANNEL).await?;
            let wakers = Arc::clone(&wakers);
            Some(tokio::spawn(async move {
                loop {
                    match listener.recv().await {
                        Ok(note) => {
                            let waker = wakers
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .get(note.payload())
                                .cloned();
                            if let Some(waker) = waker {
                                waker.notify_one();
                            }
                        }
                        Err(e) => {
                            // sqlx reconnects on the next recv; the tails poll meanwhile.
                            warn!(error = %e, "database notifications interrupted; watchers poll until they resume");
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                    }
                }
            }))
        } else {
            None
        };
        info!(store = %config.location, "PostgreSQL store open, schema up to date");
        Ok(Self {
            pool,
            key,
            org_keys: Mutex::new(HashMap::new()),
            metrics,
            wakers,
            listener,
            watch_poll: config.db.watch_poll.max(Duration::from_millis(10)),
        })
    }

    fn org_key(&self, org: &OrgName) -> Result<Arc<SealKey>, StorageError> {
        let mut keys = self.org_keys.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(key) = keys.get(org) {
            return Ok(Arc::clone(key));
        }
        let master = self
            .key
            .as_ref()
            .ok_or_else(|| StorageError::Config("--encryption-key is required here".into()))?;
        let key = Arc::new(
            master
                .for_org(org.as_str())
                .map_err(|_| sealed_error("deriving the organisation key"))?,
        );
        keys.insert(org.clone(), Arc::clone(&key));
        Ok(key)
    }

    pub(super) async fn push(
        &self,
        org: &OrgName,
        batch: &ExchangeBatch,
    ) -> Result<Appended, StorageError> {
        let key = self.org_key(org)?;
        let sequence = i64_of(batch.sequence, "sequence")?;
        let mut tx = org_tx(&self.pool, org).await?;
        // The row lock on the organisation is held to the commit: positions commit in order.
        let pos: i64 = sqlx::query_scalar(
            "INSERT INTO orgs (org, next_pos) VALUES ($1, 1) \
             ON CONFLICT (org) DO UPDATE SET next_pos = orgs.next_pos + 1 RETURNING next_pos",
        )
        .bind(org.as_str())
        .fetch_one(&mut *tx)
        .await?;
        let count = i32::try_from(batch.exchanges.len()).unwrap_or(i32::MAX);
        let inserted = sqlx::query(
            "INSERT INTO batches (org, daemon_id, instance_id, sequence, pos, exchanges) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
        )
        .bind(org.as_str())
        .bind(&batch.daemon_id)
        .bind(&batch.instance_id)
        .bind(sequence)
        .bind(pos)
        .bind(count)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted == 0 {
            tx.rollback().await?;
            return Ok(Appended::Duplicate);
        }
        let n = batch.exchanges.len();
        let mut idx = Vec::with_capacity(n);
        let mut started = Vec::with_capacity(n);
        let mut namespace = Vec::with_capacity(n);
        let mut workload = Vec::with_capacity(n);
        let mut routing_key = Vec::with_capacity(n);
        let mut endpoint = Vec::with_capacity(n);
        let mut payload = Vec::with_capacity(n);
        let mut bytes = 0_u64;
        let mut plain = Vec::new();
        for (i, exchange) in batch.exchanges.iter().enumerate() {
            let i = i32::try_from(i).unwrap_or(i32::MAX);
            plain.clear();
            exchange
                .encode(&mut plain)
                .map_err(|e| StorageError::Decode {
                    what: "exchange".into(),
                    reason: e.to_string(),
                })?;
            let sealed = key
                .seal_vec(&exchange_aad(org, pos, i), &plain)
                .map_err(|_| sealed_error("sealing an exchange"))?;
            bytes += sealed.len() as u64;
            idx.push(i);
            started.push(
                exchange
                    .timing
                    .and_then(|t| i64::try_from(t.request_start_unix_nanos).ok()),
            );
            let w = exchange.workload.as_ref();
            namespace.push(w.and_then(|w| w.namespace.clone()));
            workload.push(w.and_then(|w| w.owner_name.clone().or_else(|| w.pod.clone())));
            routing_key.push(exchange.routing_key.clone());
            endpoint.push(exchange.request.as_ref().map(|r| {
                let path = r.target.split('?').next().unwrap_or_default();
                format!("{} {path}", r.method)
            }));
            payload.push(sealed);
        }
        sqlx::query(
            "INSERT INTO exchanges (org, pos, idx, daemon_id, started_at, namespace, workload, routing_key, endpoint, payload) \
             SELECT $1, $2, t.i, $3, to_timestamp(t.s / 1e9), t.ns, t.wl, t.rk, t.ep, t.p \
             FROM UNNEST($4::int4[], $5::int8[], $6::text[], $7::text[], $8::text[], $9::text[], $10::bytea[]) \
               AS t(i, s, ns, wl, rk, ep, p)",
        )
        .bind(org.as_str())
        .bind(pos)
        .bind(&batch.daemon_id)
        .bind(idx)
        .bind(started)
        .bind(namespace)
        .bind(workload)
        .bind(routing_key)
        .bind(endpoint)
        .bind(payload)
        .execute(&mut *tx)
        .await?;
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CHANNEL)
            .bind(org.as_str())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Appended::Stored { bytes })
    }

    fn open_row(
        &self,
        org: &OrgName,
        key: &SealKey,
        pos: i64,
        idx: i32,
        mut payload: Vec<u8>,
    ) -> Result<pb::Exchange, StorageError> {
        let what = || format!("exchange {pos}/{idx} of {org}");
        let plain = key
            .open(&exchange_aad(org, pos, idx), &mut payload)
            .map_err(|_| sealed_error(what()))?;
        pb::Exchange::decode(plain).map_err(|e| StorageError::Decode {
            what: what(),
            reason: e.to_string(),
        })
    }

    pub(super) async fn read(
        &self,
        org: &OrgName,
        selection: &Selection,
        visit: &mut (dyn FnMut(StoredExchange) -> Result<(), StorageError> + Send),
    ) -> Result<(), StorageError> {
        let key = self.org_key(org)?;
        let since = selection.since_ns.and_then(|v| i64::try_from(v).ok());
        let until = selection.until_ns.and_then(|v| i64::try_from(v).ok());
        let mut tx = org_tx(&self.pool, org).await?;
        {
            // The indexed columns narrow the scan; `Selection::matches` decides on the
            // decoded exchange (a workload is an owner or a pod name).
            let mut rows = sqlx::query(
                "SELECT pos, idx, daemon_id, payload FROM exchanges \
                 WHERE org = $1 \
                   AND ($2::text IS NULL OR routing_key = $2) \
                   AND ($3::text IS NULL OR namespace = $3) \
                   AND ($4::int8 IS NULL OR started_at >= to_timestamp($4 / 1e9)) \
                   AND ($5::int8 IS NULL OR started_at < to_timestamp($5 / 1e9)) \
                 ORDER BY pos, idx",
            )
            .bind(org.as_str())
            .bind(selection.routing_key.as_deref())
            .bind(selection.namespace.as_deref())
            .bind(since)
            .bind(until)
            .fetch(&mut *tx);
            while let Some(row) = rows.try_next().await? {
                let exchange =
                    self.open_row(org, &key, row.try_get(0)?, row.try_get(1)?, row.try_get(3)?)?;
                if selection.matches(&exchange) {
                    let pos: i64 = row.try_get(0)?;
                    visit(StoredExchange {
                        batch: u64::try_from(pos).unwrap_or_default(),
                        daemon_id: row.try_get(2)?,
                        exchange,
                    })?;
                }
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// The end of `org`'s log now: a watcher starting here sees everything stored after.
    pub async fn head(&self, org: &OrgName) -> Result<Cursor, StorageError> {
        let mut tx = org_tx(&self.pool, org).await?;
        let pos: Option<i64> = sqlx::query_scalar("SELECT next_pos FROM orgs WHERE org = $1")
            .bind(org.as_str())
            .fetch_optional(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Cursor {
            pos: pos.unwrap_or(0),
            idx: i32::MAX,
        })
    }

    /// Up to `limit` exchanges of `org` after `cursor`, and the cursor after them.
    pub async fn read_after(
        &self,
        org: &OrgName,
        cursor: Cursor,
        limit: i64,
    ) -> Result<(Vec<StoredExchange>, Cursor), StorageError> {
        let key = self.org_key(org)?;
        let mut tx = org_tx(&self.pool, org).await?;
        let rows = sqlx::query(
            "SELECT pos, idx, daemon_id, payload FROM exchanges \
             WHERE org = $1 AND (pos, idx) > ($2, $3) ORDER BY pos, idx LIMIT $4",
        )
        .bind(org.as_str())
        .bind(cursor.pos)
        .bind(cursor.idx)
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        let mut next = cursor;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let pos: i64 = row.try_get(0)?;
            let idx: i32 = row.try_get(1)?;
            out.push(StoredExchange {
                batch: u64::try_from(pos).unwrap_or_default(),
                daemon_id: row.try_get(2)?,
                exchange: self.open_row(org, &key, pos, idx, row.try_get(3)?)?,
            });
            next = Cursor { pos, idx };
        }
        Ok((out, next))
    }

    /// Woken when any replica stores an exchange of `org`.
    pub fn waker(&self, org: &OrgName) -> Arc<Notify> {
        Arc::clone(
            self.wakers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .entry(org.as_str().to_owned())
                .or_default(),
        )
    }

    pub fn watch_poll(&self) -> Duration {
        self.watch_poll
    }

    pub(super) async fn has_org(&self, org: &OrgName) -> Result<bool, StorageError> {
        let known: Option<i32> =
            sqlx::query_scalar("SELECT 1 FROM token_index WHERE org = $1 LIMIT 1")
                .bind(org.as_str())
                .fetch_optional(&self.pool)
                .await?;
        if known.is_some() {
            return Ok(true);
        }
        let mut tx = org_tx(&self.pool, org).await?;
        let stored: Option<i32> = sqlx::query_scalar("SELECT 1 FROM orgs WHERE org = $1")
            .bind(org.as_str())
            .fetch_optional(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(stored.is_some())
    }

    async fn token_records(
        tx: &mut Transaction<'static, Postgres>,
        org: &OrgName,
        masked: Option<&str>,
        for_update: bool,
    ) -> Result<Vec<(i64, TokenRecord)>, StorageError> {
        let sql = match (masked.is_some(), for_update) {
            (false, false) => {
                "SELECT id, org, masked, salt, hmac, created, revoked, scopes FROM tokens WHERE org = $1 ORDER BY id"
            }
            (false, true) => {
                "SELECT id, org, masked, salt, hmac, created, revoked, scopes FROM tokens WHERE org = $1 ORDER BY id FOR UPDATE"
            }
            (true, _) => {
                "SELECT id, org, masked, salt, hmac, created, revoked, scopes FROM tokens WHERE org = $1 AND masked = $2 ORDER BY id"
            }
        };
        let rows = sqlx::query(sql)
            .bind(org.as_str())
            .bind(masked.unwrap_or_default())
            .fetch_all(&mut **tx)
            .await?;
        rows.into_iter()
            .map(|row| {
                let scopes: Option<String> = row.try_get(7)?;
                let scopes = scopes
                    .map(|s| tokens::scopes_from_string(&s))
                    .transpose()
                    .map_err(|e| StorageError::Decode {
                        what: "a token's scopes".into(),
                        reason: e.to_string(),
                    })?;
                Ok((
                    row.try_get(0)?,
                    TokenRecord::from_parts(
                        row.try_get(1)?,
                        row.try_get(2)?,
                        row.try_get(3)?,
                        row.try_get(4)?,
                        row.try_get(5)?,
                        row.try_get(6)?,
                        scopes,
                    ),
                ))
            })
            .collect()
    }

    pub(super) async fn create_token(
        &self,
        org: &OrgName,
        scopes: &[Scope],
    ) -> Result<(String, TokenRecord), StorageError> {
        let (token, record) = tokens::issue(org, scopes)?;
        let mut tx = org_tx(&self.pool, org).await?;
        sqlx::query(
            "INSERT INTO tokens (org, masked, salt, hmac, created, scopes) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(org.as_str())
        .bind(&record.masked)
        .bind(record.salt())
        .bind(record.hmac())
        .bind(&record.created)
        .bind(tokens::scopes_to_string(&record.effective_scopes()))
        .execute(&mut *tx)
        .await?;
        sqlx::query("INSERT INTO token_index (masked, org) VALUES ($1, $2) ON CONFLICT DO NOTHING")
            .bind(&record.masked)
            .bind(org.as_str())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok((token, record))
    }

    pub(super) async fn list_tokens(
        &self,
        org: &OrgName,
    ) -> Result<Vec<TokenRecord>, StorageError> {
        let mut tx = org_tx(&self.pool, org).await?;
        let records = Self::token_records(&mut tx, org, None, false).await?;
        tx.commit().await?;
        Ok(records.into_iter().map(|(_, r)| r).collect())
    }

    pub(super) async fn revoke_token(
        &self,
        org: &OrgName,
        given: &str,
    ) -> Result<Revoked, StorageError> {
        let mut tx = org_tx(&self.pool, org).await?;
        let records = Self::token_records(&mut tx, org, None, true).await?;
        let list: Vec<TokenRecord> = records.iter().map(|(_, r)| r.clone()).collect();
        let revoked = match tokens::pick(&list, org, given)? {
            Pick::Now(i) => {
                let (id, record) = &records[i];
                let now = tokens::now();
                sqlx::query("UPDATE tokens SET revoked = $2 WHERE id = $1")
                    .bind(id)
                    .bind(&now)
                    .execute(&mut *tx)
                    .await?;
                let mut record = record.clone();
                record.revoked = Some(now);
                Revoked::Now(record)
            }
            Pick::Already(i) => Revoked::Already(records[i].1.clone()),
        };
        tx.commit().await?;
        Ok(revoked)
    }

    /// The records with `masked`. An unknown masked form runs the same queries as a known
    /// one (the record query against a placeholder organisation, which finds nothing), so an
    /// unknown and a revoked token cost the same round trips.
    async fn candidates(&self, masked: &str) -> Result<Vec<TokenRecord>, StorageError> {
        let mut orgs: Vec<String> =
            sqlx::query_scalar("SELECT org FROM token_index WHERE masked = $1")
                .bind(masked)
                .fetch_all(&self.pool)
                .await?;
        let placeholder = orgs.is_empty();
        if placeholder {
            orgs.push("0".to_owned());
        }
        let mut out = Vec::new();
        for org in orgs {
            let Ok(org) = OrgName::parse(&org) else {
                continue;
            };
            let mut tx = org_tx(&self.pool, &org).await?;
            let records = Self::token_records(&mut tx, &org, Some(masked), false).await?;
            tx.commit().await?;
            if !placeholder {
                out.extend(records.into_iter().map(|(_, r)| r));
            }
        }
        Ok(out)
    }

    /// Looks the token up in the database on every call, so a revocation on any replica takes
    /// effect on the next call everywhere. The gRPC interceptor is synchronous: the lookup
    /// runs on this worker thread (`block_in_place`), which needs the multi-threaded runtime
    /// `serve` runs on.
    pub(super) fn authenticate(&self, token: &str) -> Result<Caller, AuthFailure> {
        let Some(masked) = tokens::masked_if_well_formed(token) else {
            return Err(AuthFailure::Malformed);
        };
        let handle =
            tokio::runtime::Handle::try_current().map_err(|_| AuthFailure::StoreUnreadable)?;
        if handle.runtime_flavor() != tokio::runtime::RuntimeFlavor::MultiThread {
            return Err(AuthFailure::StoreUnreadable);
        }
        let records = tokio::task::block_in_place(|| handle.block_on(self.candidates(&masked)))
            .map_err(|e| {
                tracing::error!(error = %e, "token lookup failed; refusing the call");
                AuthFailure::StoreUnreadable
            })?;
        tokens::verify(token, records.iter())
    }

    pub(super) async fn put_model(
        &self,
        org: &OrgName,
        name: &str,
        blob: &[u8],
    ) -> Result<(), StorageError> {
        let sealed = self
            .org_key(org)?
            .seal_vec(&model_aad(org, name), blob)
            .map_err(|_| sealed_error("sealing a model"))?;
        let mut tx = org_tx(&self.pool, org).await?;
        sqlx::query(
            "INSERT INTO models (org, name, payload) VALUES ($1, $2, $3) \
             ON CONFLICT (org, name) DO UPDATE SET payload = excluded.payload, updated_at = now()",
        )
        .bind(org.as_str())
        .bind(name)
        .bind(sealed)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub(super) async fn get_model(
        &self,
        org: &OrgName,
        name: &str,
    ) -> Result<Option<Vec<u8>>, StorageError> {
        let mut tx = org_tx(&self.pool, org).await?;
        let payload: Option<Vec<u8>> =
            sqlx::query_scalar("SELECT payload FROM models WHERE org = $1 AND name = $2")
                .bind(org.as_str())
                .bind(name)
                .fetch_optional(&mut *tx)
                .await?;
        tx.commit().await?;
        let Some(mut payload) = payload else {
            return Ok(None);
        };
        let plain = self
            .org_key(org)?
            .open(&model_aad(org, name), &mut payload)
            .map_err(|_| sealed_error(format!("model {name} of {org}")))?;
        Ok(Some(plain.to_vec()))
    }

    /// Batched deletes of what is older than each organisation's period (by the time it was
    /// stored), `batch_rows` at a time so no statement holds locks for long.
    pub(super) async fn enforce_retention(
        &self,
        retention: &Retention,
    ) -> Result<u64, StorageError> {
        let orgs: Vec<String> = sqlx::query_scalar("SELECT DISTINCT org FROM token_index")
            .fetch_all(&self.pool)
            .await?;
        let batch = i64::from(retention.batch_rows.max(1));
        let mut removed = 0_u64;
        for org in orgs {
            let Ok(org) = OrgName::parse(&org) else {
                continue;
            };
            let Some(period) = retention.period(&org) else {
                continue;
            };
            let secs = period.as_secs_f64();
            loop {
                let mut tx = org_tx(&self.pool, &org).await?;
                let gone = sqlx::query(
                    "DELETE FROM exchanges WHERE ctid IN (SELECT ctid FROM exchanges \
                     WHERE org = $1 AND stored_at < now() - make_interval(secs => $2) LIMIT $3)",
                )
                .bind(org.as_str())
                .bind(secs)
                .bind(batch)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                sqlx::query(
                    "DELETE FROM batches WHERE ctid IN (SELECT ctid FROM batches \
                     WHERE org = $1 AND stored_at < now() - make_interval(secs => $2) LIMIT $3)",
                )
                .bind(org.as_str())
                .bind(secs)
                .bind(batch)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                removed += gone;
                Metrics::add(&self.metrics.retention_exchanges_removed, gone);
                if gone < u64::try_from(batch).unwrap_or(u64::MAX) {
                    break;
                }
            }
        }
        Ok(removed)
    }

    /// Closes the pool (also when other holders of the store are still around).
    pub async fn shutdown(&self) {
        if let Some(listener) = &self.listener {
            listener.abort();
        }
        self.pool.close().await;
    }

    pub(super) async fn close(self) {
        self.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_show() {
        assert_eq!(
            redact_url("postgres://capture:s3cret@db:5432/capture?sslmode=require"),
            "postgres://capture:***@db:5432/capture?sslmode=require"
        );
        assert_eq!(
            redact_url("postgres://db/capture?user=u&password=s3cret&sslmode=verify-full"),
            "postgres://db/capture?user=u&password=***&sslmode=verify-full"
        );
        assert_eq!(redact_url("postgres://db/capture"), "postgres://db/capture");
        assert_eq!(
            redact_url("postgres://u@db/capture"),
            "postgres://u@db/capture"
        );
    }
}
