//! The gRPC server: `Ingest.Push` stores batches, `Watch.Watch` streams them live,
//! `Diff.Diff` runs the Smart Diff over stored traffic (`diff`), all over rustls TLS and all
//! behind the bearer token check.
//!
//! Every call passes the token interceptor first, before its message is decoded: a call
//! without a valid, unrevoked token is `UNAUTHENTICATED`, logged as an audit line (without the
//! token) and counted, and reaches no handler. The organisation comes from the token only, so
//! a caller reads and writes its own organisation's store and live stream and nothing else.
//!
//! A push is acknowledged after its batch is fsynced (see `store`); a batch stored before is
//! acknowledged with `duplicate` and stores nothing. Stored exchanges then go to the
//! organisation's watchers through a bounded broadcast: a watcher that reads too slowly misses
//! exchanges (it is told how many in `skipped`) and never holds back ingest or memory.

use std::{
    convert::Infallible,
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use capture_proto::v1::{
    self as pb, DiffResponse, ExchangeBatch, PushAck, WatchRequest, WatchResponse,
    diff_server::{Diff, DiffServer},
    ingest_server::{Ingest, IngestServer},
    watch_server::{Watch, WatchServer},
};
use tokio::{
    net::TcpListener,
    sync::{broadcast, mpsc, watch},
    task::JoinHandle,
};
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{
    Request, Response, Status,
    body::Body,
    service::{Interceptor, interceptor::InterceptedService},
    transport::Server,
};
use tracing::{error, info, warn};

use crate::{
    guard::{AuditDecision, AuditLimiter, AuthLimits, PeerLimiter, PeerState},
    ingest::{self, IngestError},
    metrics::{self, AuthFailure, Metrics, Rejection, Rpc},
    org::OrgName,
    storage::{Access, Retention, Storage, StorageConfig, StorageError},
    tls::ServerIdentity,
    tokens::{Caller, Scope},
};

/// Longest value of a watch filter field.
const MAX_FILTER: usize = 253;
/// How often a watch stream re-checks that its token is still valid.
const TOKEN_RECHECK: Duration = Duration::from_secs(1);
/// Responses queued per watcher between its task and its connection.
const WATCHER_QUEUE: usize = 16;

/// Limits of the server; each is a flag of `serve`.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest encoded batch accepted (`--max-batch-bytes`).
    pub max_batch_bytes: usize,
    /// Most exchanges in one batch (`--max-batch-exchanges`).
    pub max_batch_exchanges: usize,
    /// Exchanges an organisation's live stream holds for slow watchers (`--watch-buffer`).
    pub watch_buffer: usize,
    /// Watch streams open at once, over all organisations (`--max-watchers`).
    pub max_watchers: usize,
    /// Exchanges one Smart Diff selection may hold (`--max-diff-exchanges`).
    pub max_diff_exchanges: usize,
    /// Failed authentications per peer, and refusal audit lines (`--auth-*`, `--audit-*`).
    pub auth: AuthLimits,
    /// Pushes read, decoded and stored at once; more wait their turn, their bodies left
    /// unread in HTTP/2 flow control (`--max-concurrent-pushes`). With `max_batch_bytes`
    /// this bounds the memory batches take.
    pub max_concurrent_pushes: usize,
    /// Longest a TLS handshake may take (`--tls-handshake-timeout`).
    pub tls_handshake_timeout: Duration,
    /// TLS handshakes under way at once; connections past it are closed unanswered
    /// (`--max-pending-handshakes`).
    pub max_pending_handshakes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_batch_bytes: 16 << 20,
            max_batch_exchanges: 4096,
            watch_buffer: 1024,
            max_watchers: 256,
            max_diff_exchanges: crate::diff::DEFAULT_MAX_EXCHANGES,
            auth: AuthLimits::default(),
            max_concurrent_pushes: 16,
            tls_handshake_timeout: Duration::from_secs(10),
            max_pending_handshakes: 1024,
        }
    }
}

/// Everything `serve` needs.
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub identity: ServerIdentity,
    pub store: StorageConfig,
    pub retention: Retention,
    pub limits: Limits,
    pub metrics_addr: Option<SocketAddr>,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("--listen {0}: {1}")]
    Listen(SocketAddr, std::io::Error),
    #[error("--metrics-addr {0}: {1}")]
    Metrics(SocketAddr, std::io::Error),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("storage: {0}")]
    Store(#[from] StorageError),
    #[error("server: {0}")]
    Transport(tonic::transport::Error),
    #[error("server task: {0}")]
    Join(String),
}

/// The bearer token of the call, kept for the watch stream's re-checks. Never printed.
#[derive(Clone)]
struct BearerToken(String);

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BearerToken(..)")
    }
}

fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Checks `authorization: Bearer <token>` on every call, then that the token has the scope
/// of the service it is installed on (one `Auth` per service).
#[derive(Clone)]
struct Auth {
    storage: Arc<Storage>,
    metrics: Arc<Metrics>,
    limiter: Arc<PeerLimiter>,
    audit: Arc<AuditLimiter>,
    rpc: Rpc,
    required: Scope,
}

impl Auth {
    /// Writes a refusal audit line unless `--audit-refusals-per-second` is spent.
    fn audit(&self, now: Instant, line: impl FnOnce()) {
        match self.audit.decide(now) {
            AuditDecision::Write { suppressed_before } => {
                if suppressed_before > 0 {
                    warn!(
                        target: "audit",
                        event = "audit_suppressed",
                        suppressed = suppressed_before,
                        "refusal audit lines left out (--audit-refusals-per-second)"
                    );
                }
                line();
            }
            AuditDecision::Suppress => Metrics::add(&self.metrics.audit_suppressed, 1),
        }
    }
}

impl Interceptor for Auth {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let peer = request.remote_addr();
        let now = Instant::now();
        let rpc = self.rpc.as_str();
        if let Some(ip) = peer.map(|p| p.ip())
            && self.limiter.allow(ip, now) == PeerState::Limited
        {
            Metrics::add(&self.metrics.auth_rate_limited, 1);
            self.audit(now, || {
                warn!(
                    target: "audit",
                    event = "auth_rate_limited",
                    rpc,
                    peer = ?peer,
                    "call refused unread: too many failed authentications from this address"
                );
            });
            return Err(Status::resource_exhausted(
                "too many failed authentications from this address; retry later",
            ));
        }
        let token = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(bearer)
            .map(str::to_owned);
        let outcome = match token {
            None => Err(AuthFailure::Missing),
            Some(token) => self.storage.authenticate(&token).map(|c| (c, token)),
        };
        match outcome {
            Ok((caller, _)) if !caller.may(self.required) => {
                let scope = self.required.as_str();
                self.metrics.scope_denied(self.rpc, self.required);
                self.audit(now, || {
                    warn!(
                        target: "audit",
                        event = "scope_denied",
                        org = %caller.org,
                        token = %caller.token,
                        rpc,
                        scope,
                        peer = ?peer,
                        "call refused: the token lacks the scope"
                    );
                });
                Err(Status::permission_denied(format!(
                    "this token may not call {rpc}: it lacks the {scope} scope \
                     (issue one with `token create --scope {scope}`)"
                )))
            }
            Ok((caller, token)) => {
                request.extensions_mut().insert(caller);
                request.extensions_mut().insert(BearerToken(token));
                Ok(request)
            }
            Err(why) => {
                self.metrics.auth_rejected(why);
                if let Some(ip) = peer.map(|p| p.ip())
                    && !self.limiter.failed(ip, now)
                {
                    Metrics::add(&self.metrics.auth_peers_untracked, 1);
                }
                self.audit(now, || {
                    warn!(
                        target: "audit",
                        event = "auth_rejected",
                        reason = why.as_str(),
                        rpc,
                        peer = ?peer,
                        "call refused: unauthenticated"
                    );
                });
                Err(Status::unauthenticated("missing, unknown or revoked token"))
            }
        }
    }
}

fn caller<T>(request: &Request<T>) -> Result<Caller, Status> {
    request
        .extensions()
        .get::<Caller>()
        .cloned()
        .ok_or_else(|| Status::unauthenticated("missing token"))
}

/// One stored exchange on its way to watchers.
struct Published {
    daemon_id: Arc<str>,
    exchange: pb::Exchange,
}

/// The live stream of each organisation. With the file store the pushes of this collector
/// are published as they are stored; with PostgreSQL one tail task per watched organisation
/// reads the shared log from a cursor (woken by notifications, polling otherwise), so
/// watchers see what every replica stored.
struct Hub {
    capacity: usize,
    orgs: Mutex<std::collections::HashMap<OrgName, broadcast::Sender<Arc<Published>>>>,
    /// Organisations with a tail task running, and the task.
    tails: tokio::sync::Mutex<std::collections::HashMap<OrgName, JoinHandle<()>>>,
}

/// Exchanges a tail reads in one query.
const TAIL_BATCH: i64 = 512;

impl Hub {
    /// Subscribes to `org`'s stream; with PostgreSQL also makes sure a tail runs, starting at
    /// the end of the log as it is now, before this returns: nothing stored later is missed.
    async fn subscribe_to(
        self: &Arc<Self>,
        org: &OrgName,
        storage: &Arc<Storage>,
        shutdown: &watch::Receiver<bool>,
    ) -> Result<broadcast::Receiver<Arc<Published>>, StorageError> {
        let Storage::Postgres(pg) = &**storage else {
            return Ok(self.subscribe(org));
        };
        let mut tails = self.tails.lock().await;
        let live = self.subscribe(org);
        if tails.get(org).is_none_or(JoinHandle::is_finished) {
            let cursor = pg.head(org).await?;
            let task = tokio::spawn(Arc::clone(self).tail(
                org.clone(),
                Arc::clone(storage),
                cursor,
                shutdown.clone(),
            ));
            tails.insert(org.clone(), task);
        }
        Ok(live)
    }

    async fn tail(
        self: Arc<Self>,
        org: OrgName,
        storage: Arc<Storage>,
        mut cursor: crate::storage::postgres::Cursor,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let Storage::Postgres(pg) = &*storage else {
            return;
        };
        let waker = pg.waker(&org);
        let sender = self.sender(&org);
        loop {
            tokio::select! {
                () = waker.notified() => {}
                () = tokio::time::sleep(pg.watch_poll()) => {}
                _ = shutdown.changed() => return,
            }
            {
                let mut tails = self.tails.lock().await;
                if sender.receiver_count() == 0 {
                    tails.remove(&org);
                    return;
                }
            }
            loop {
                match pg.read_after(&org, cursor, TAIL_BATCH).await {
                    Ok((exchanges, next)) => {
                        let full = exchanges.len() as i64 == TAIL_BATCH;
                        cursor = next;
                        for stored in exchanges {
                            let _ = sender.send(Arc::new(Published {
                                daemon_id: Arc::from(stored.daemon_id.as_str()),
                                exchange: stored.exchange,
                            }));
                        }
                        if !full {
                            break;
                        }
                    }
                    Err(e) => {
                        warn!(org = %org, error = %e, "reading the shared log for watchers failed; retrying");
                        break;
                    }
                }
            }
        }
    }

    fn sender(&self, org: &OrgName) -> broadcast::Sender<Arc<Published>> {
        let mut orgs = self.orgs.lock().unwrap_or_else(|p| p.into_inner());
        orgs.entry(org.clone())
            .or_insert_with(|| broadcast::channel(self.capacity).0)
            .clone()
    }

    fn subscribe(&self, org: &OrgName) -> broadcast::Receiver<Arc<Published>> {
        self.sender(org).subscribe()
    }

    fn publish(&self, org: &OrgName, daemon_id: &str, exchanges: Vec<pb::Exchange>) {
        let sender = self.sender(org);
        if sender.receiver_count() == 0 {
            return;
        }
        let daemon_id: Arc<str> = Arc::from(daemon_id);
        for exchange in exchanges {
            let _ = sender.send(Arc::new(Published {
                daemon_id: Arc::clone(&daemon_id),
                exchange,
            }));
        }
    }
}

struct IngestService {
    store: Arc<Storage>,
    hub: Arc<Hub>,
    metrics: Arc<Metrics>,
    max_exchanges: usize,
}

#[tonic::async_trait]
impl Ingest for IngestService {
    async fn push(&self, request: Request<ExchangeBatch>) -> Result<Response<PushAck>, Status> {
        let caller = caller(&request)?;
        let batch = request.into_inner();
        match ingest::ingest(
            &self.store,
            &self.metrics,
            &caller.org,
            batch,
            self.max_exchanges,
        )
        .await
        {
            Ok(done) => {
                if !done.ack.duplicate {
                    if let Storage::File(_) = &*self.store {
                        self.hub
                            .publish(&caller.org, &done.daemon_id, done.exchanges);
                    } else {
                        Metrics::add(&self.metrics.bytes_stored, done.bytes);
                    }
                }
                Ok(Response::new(done.ack))
            }
            Err(IngestError::Storage(e)) => {
                error!(org = %caller.org, error = %e, "storing a batch failed");
                Err(Status::unavailable(
                    "the collector could not store the batch; retry later",
                ))
            }
            Err(e) => Err(Status::invalid_argument(e.to_string())),
        }
    }
}

/// What a watcher asked for.
struct Filter {
    namespace: Option<String>,
    workload: Option<String>,
    routing_key: Option<String>,
    headers_only: bool,
}

impl Filter {
    fn new(request: WatchRequest) -> Result<Self, Status> {
        let field = |value: String, name: &str| {
            if value.len() > MAX_FILTER {
                Err(Status::invalid_argument(format!(
                    "{name} is longer than {MAX_FILTER} bytes"
                )))
            } else {
                Ok(Some(value).filter(|v| !v.is_empty()))
            }
        };
        Ok(Self {
            namespace: field(request.namespace, "namespace")?,
            workload: field(request.workload, "workload")?,
            routing_key: field(request.routing_key, "routing_key")?,
            headers_only: request.headers_only,
        })
    }

    fn matches(&self, exchange: &pb::Exchange) -> bool {
        let workload = exchange.workload.as_ref();
        let is = |want: &Option<String>, have: Option<&String>| {
            want.as_ref().is_none_or(|want| have == Some(want))
        };
        is(&self.namespace, workload.and_then(|w| w.namespace.as_ref()))
            && self.workload.as_ref().is_none_or(|want| {
                workload.is_some_and(|w| {
                    w.owner_name.as_ref() == Some(want) || w.pod.as_ref() == Some(want)
                })
            })
            && is(&self.routing_key, exchange.routing_key.as_ref())
    }

    /// The exchange as this watcher gets it: bodies left out (sizes kept) if it asked.
    fn shape(&self, exchange: &pb::Exchange) -> pb::Exchange {
        if !self.headers_only {
            return exchange.clone();
        }
        let no_data = |body: &Option<pb::Body>| {
            body.as_ref().map(|b| pb::Body {
                data: Vec::new(),
                wire_size: b.wire_size,
                truncated: b.truncated,
                decoded_from: b.decoded_from.clone(),
                decode_error: b.decode_error.clone(),
                // As the daemon's --headers-only: no data, no decoded size.
                decoded_size: None,
            })
        };
        pb::Exchange {
            request: exchange.request.as_ref().map(|r| pb::Request {
                method: r.method.clone(),
                target: r.target.clone(),
                version: r.version,
                headers: r.headers.clone(),
                headers_size: r.headers_size,
                body: no_data(&r.body),
                trailers: r.trailers.clone(),
            }),
            response: exchange.response.as_ref().map(|r| pb::Response {
                status: r.status,
                reason: r.reason.clone(),
                version: r.version,
                headers: r.headers.clone(),
                headers_size: r.headers_size,
                body: no_data(&r.body),
                trailers: r.trailers.clone(),
            }),
            protocol: exchange.protocol,
            timing: exchange.timing,
            incomplete: exchange.incomplete.clone(),
            connection: exchange.connection.clone(),
            pid: exchange.pid,
            workload: exchange.workload.clone(),
            redacted: exchange.redacted.clone(),
            routing_key: exchange.routing_key.clone(),
            grpc: exchange.grpc.clone(),
            cgroup_id: exchange.cgroup_id,
        }
    }
}

struct WatchService {
    hub: Arc<Hub>,
    storage: Arc<Storage>,
    metrics: Arc<Metrics>,
    watchers: Arc<AtomicUsize>,
    max_watchers: usize,
    shutdown: watch::Receiver<bool>,
}

/// A place among `--max-watchers`, given back when the stream ends.
struct WatcherSlot {
    watchers: Arc<AtomicUsize>,
    metrics: Arc<Metrics>,
}

impl Drop for WatcherSlot {
    fn drop(&mut self) {
        self.watchers.fetch_sub(1, Ordering::Relaxed);
        self.metrics
            .watchers
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

#[tonic::async_trait]
impl Watch for WatchService {
    type WatchStream = ReceiverStream<Result<WatchResponse, Status>>;

    async fn watch(
        &self,
        request: Request<WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let caller = caller(&request)?;
        let token = request
            .extensions()
            .get::<BearerToken>()
            .cloned()
            .ok_or_else(|| Status::unauthenticated("missing token"))?;
        let peer = request.remote_addr();
        let filter = Filter::new(request.into_inner())?;
        if self.watchers.fetch_add(1, Ordering::Relaxed) >= self.max_watchers {
            self.watchers.fetch_sub(1, Ordering::Relaxed);
            Metrics::add(&self.metrics.watchers_refused, 1);
            warn!(org = %caller.org, max = self.max_watchers, "watch refused: --max-watchers reached");
            return Err(Status::resource_exhausted(
                "too many watchers on this collector (--max-watchers)",
            ));
        }
        Metrics::add(&self.metrics.watchers, 1);
        let slot = WatcherSlot {
            watchers: Arc::clone(&self.watchers),
            metrics: Arc::clone(&self.metrics),
        };
        info!(target: "audit", event = "watch_start", org = %caller.org, token = %caller.token, peer = ?peer, "watch stream opened");
        // Subscribed before the call returns: nothing stored after it is missed.
        let live = self
            .hub
            .subscribe_to(&caller.org, &self.storage, &self.shutdown)
            .await
            .map_err(|e| {
                error!(org = %caller.org, error = %e, "watch: reading the store failed");
                Status::unavailable("the collector could not read its store; retry later")
            })?;
        let (tx, rx) = mpsc::channel(WATCHER_QUEUE);
        let watcher = Watcher {
            caller,
            token,
            filter,
            live,
            tx,
            storage: Arc::clone(&self.storage),
            metrics: Arc::clone(&self.metrics),
            shutdown: self.shutdown.clone(),
            _slot: slot,
        };
        tokio::spawn(watcher.run());
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

struct Watcher {
    caller: Caller,
    token: BearerToken,
    filter: Filter,
    live: broadcast::Receiver<Arc<Published>>,
    tx: mpsc::Sender<Result<WatchResponse, Status>>,
    storage: Arc<Storage>,
    metrics: Arc<Metrics>,
    shutdown: watch::Receiver<bool>,
    _slot: WatcherSlot,
}

impl Watcher {
    async fn run(mut self) {
        let mut recheck = tokio::time::interval(TOKEN_RECHECK);
        recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let response = tokio::select! {
                () = self.tx.closed() => break,
                _ = self.shutdown.changed() => {
                    let _ = self.tx.try_send(Err(Status::unavailable("the collector is shutting down")));
                    break;
                }
                _ = recheck.tick() => {
                    if self.storage.authenticate(&self.token.0).is_err() {
                        info!(target: "audit", event = "watch_end", org = %self.caller.org, token = %self.caller.token, reason = "token no longer valid", "watch stream closed");
                        let _ = self.tx.send(Err(Status::unauthenticated("token revoked"))).await;
                        return;
                    }
                    continue;
                }
                item = self.live.recv() => match item {
                    Ok(item) => {
                        if !self.filter.matches(&item.exchange) {
                            continue;
                        }
                        WatchResponse {
                            daemon_id: item.daemon_id.to_string(),
                            exchange: Some(self.filter.shape(&item.exchange)),
                            skipped: 0,
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(skipped)) => {
                        Metrics::add(&self.metrics.watch_lagged, skipped);
                        warn!(org = %self.caller.org, skipped, "a watcher fell behind; exchanges skipped (--watch-buffer)");
                        WatchResponse {
                            daemon_id: String::new(),
                            exchange: None,
                            skipped,
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                },
            };
            let sent = response.exchange.is_some();
            tokio::select! {
                result = self.tx.send(Ok(response)) => if result.is_err() { break },
                _ = self.shutdown.changed() => break,
            }
            if sent {
                Metrics::add(&self.metrics.watch_sent, 1);
            }
        }
        info!(target: "audit", event = "watch_end", org = %self.caller.org, token = %self.caller.token, "watch stream closed");
    }
}

/// `Diff.Diff`: the Smart Diff over the caller's organisation's stored traffic.
struct DiffService {
    storage: Arc<Storage>,
    metrics: Arc<Metrics>,
    max_exchanges: usize,
}

#[tonic::async_trait]
impl Diff for DiffService {
    async fn diff(
        &self,
        request: Request<pb::DiffRequest>,
    ) -> Result<Response<DiffResponse>, Status> {
        use crate::diff::{self, DiffError, Selector};
        let caller = caller(&request)?;
        let request = request.into_inner();
        let selector = |s: Option<&pb::Selector>, name: &str| {
            s.ok_or_else(|| format!("{name} is required"))
                .and_then(Selector::from_proto)
                .map_err(|e| Status::invalid_argument(format!("{name}: {e}")))
        };
        let run = diff::DiffRequest {
            baseline: selector(request.baseline.as_ref(), "baseline")?,
            candidate: selector(request.candidate.as_ref(), "candidate")?,
            noise: request
                .noise
                .iter()
                .map(|s| selector(Some(s), "noise"))
                .collect::<Result<_, _>>()?,
            model: request.model,
            max_exchanges: self.max_exchanges,
        };
        info!(target: "audit", event = "diff", org = %caller.org, token = %caller.token, "smart diff requested");
        match diff::run(
            &self.storage,
            &caller.org,
            &run,
            &capture_diff::DiffOptions::default(),
        )
        .await
        {
            Ok(report) => {
                Metrics::add(&self.metrics.diffs_run, 1);
                let report_json = serde_json::to_string(&report)
                    .map_err(|e| Status::internal(format!("rendering the report: {e}")))?;
                Ok(Response::new(DiffResponse { report_json }))
            }
            Err(DiffError::BadRequest(m)) => Err(Status::invalid_argument(m)),
            Err(e @ DiffError::TooLarge { .. }) => {
                Metrics::add(&self.metrics.diffs_too_large, 1);
                Err(Status::resource_exhausted(e.to_string()))
            }
            Err(e) => {
                error!(org = %caller.org, error = %e, "smart diff failed");
                Err(Status::unavailable(
                    "the collector could not read its store; retry later",
                ))
            }
        }
    }
}

type IngestSvc = InterceptedService<IngestServer<IngestService>, Auth>;
type DiffSvc = InterceptedService<DiffServer<DiffService>, Auth>;
type WatchSvc = InterceptedService<WatchServer<WatchService>, Auth>;
type BoxFuture =
    Pin<Box<dyn Future<Output = Result<http::Response<Body>, Infallible>> + Send + 'static>>;

/// Routes calls to the three services by path, and counts the batches the gRPC decoder refused:
/// for `--max-batch-bytes` tonic answers `OUT_OF_RANGE`, for bytes that do not decode
/// `INTERNAL`, both before any handler runs, and the Ingest handler uses neither code.
#[derive(Clone)]
struct Dispatch {
    ingest: IngestSvc,
    watch: WatchSvc,
    diff: DiffSvc,
    metrics: Arc<Metrics>,
    /// `--max-concurrent-pushes`.
    pushes: Arc<tokio::sync::Semaphore>,
}

impl tower::Service<http::Request<Body>> for Dispatch {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Both generated services are always ready.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let path = request.uri().path();
        if path.starts_with("/capture.v1.Ingest/") {
            // Authenticated here (the interceptor runs in `call`); the body is read only
            // when the future is polled, after a push slot is free.
            let future = self.ingest.call(request);
            let metrics = Arc::clone(&self.metrics);
            let pushes = Arc::clone(&self.pushes);
            Box::pin(async move {
                let _slot = match Arc::clone(&pushes).try_acquire_owned() {
                    Ok(slot) => slot,
                    Err(_) => {
                        Metrics::add(&metrics.pushes_queued, 1);
                        match pushes.acquire_owned().await {
                            Ok(slot) => slot,
                            Err(_) => {
                                return Ok(Status::unavailable("the collector is shutting down")
                                    .into_http());
                            }
                        }
                    }
                };
                let response = future.await?;
                match response.headers().get("grpc-status").map(|v| v.as_bytes()) {
                    Some(b"11") => {
                        metrics.rejected(Rejection::BatchTooLarge);
                        warn!("batch refused: larger than --max-batch-bytes");
                    }
                    // A compressed batch past the limit once decompressed: tonic answers
                    // RESOURCE_EXHAUSTED, which a daemon takes for overload and retries, but
                    // the same batch will never fit. Answered as the uncompressed case is.
                    Some(b"8") if is_decompressed_too_large(response.headers()) => {
                        metrics.rejected(Rejection::BatchTooLarge);
                        warn!("batch refused: larger than --max-batch-bytes once decompressed");
                        return Ok(Status::out_of_range(
                            "batch larger than --max-batch-bytes once decompressed",
                        )
                        .into_http());
                    }
                    // The handler never answers INTERNAL: the decoder refused the message.
                    Some(b"13") => {
                        metrics.rejected(Rejection::Undecodable);
                        warn!("batch refused: not a protobuf ExchangeBatch");
                    }
                    _ => {}
                }
                Ok(response.map(Body::new))
            })
        } else if path.starts_with("/capture.v1.Watch/") {
            let future = self.watch.call(request);
            Box::pin(async move { Ok(future.await?.map(Body::new)) })
        } else if path.starts_with("/capture.v1.Diff/") {
            let future = self.diff.call(request);
            Box::pin(async move { Ok(future.await?.map(Body::new)) })
        } else {
            Box::pin(std::future::ready(Ok(Status::unimplemented(
                "no such service",
            )
            .into_http())))
        }
    }
}

/// The rustls acceptor for the server identity: TLS 1.2 and 1.3 with ring, ALPN `h2`.
fn tls_acceptor(identity: &ServerIdentity) -> Result<TlsAcceptor, ServeError> {
    use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _};
    use tokio_rustls::rustls;
    let certs = CertificateDer::pem_slice_iter(&identity.cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ServeError::Tls(format!("the certificate: {e}")))?;
    let key = PrivateKeyDer::from_pem_slice(&identity.key_pem)
        .map_err(|e| ServeError::Tls(format!("the key: {e}")))?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| ServeError::Tls(e.to_string()))?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| ServeError::Tls(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The handshake limits of the accept loop.
struct Handshakes {
    timeout: Duration,
    pending: Arc<tokio::sync::Semaphore>,
}

type TlsConn = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;

/// Accepts TCP connections and runs each TLS handshake on a task of its own, within
/// `--tls-handshake-timeout` and at most `--max-pending-handshakes` at once (a connection past
/// that is closed unanswered); finished handshakes go to the gRPC server. A client that never
/// finishes its handshake holds one slot for the timeout, and nothing else: it never reaches
/// the server, and other clients' handshakes go on beside it.
async fn accept_tls(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    limits: Handshakes,
    conns: mpsc::Sender<Result<TlsConn, std::io::Error>>,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.changed() => return,
        };
        let (tcp, peer) = match accepted {
            Ok(conn) => conn,
            Err(e) => {
                // Out of descriptors and the like: back off rather than spin.
                warn!(error = %e, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&limits.pending).try_acquire_owned() else {
            Metrics::add(&metrics.tls_handshakes_refused, 1);
            warn!(%peer, "connection closed unanswered: --max-pending-handshakes under way");
            drop(tcp);
            continue;
        };
        // Nagle's algorithm with delayed ACKs holds each ack back ~40 ms.
        let _ = tcp.set_nodelay(true);
        let _ = socket2::SockRef::from(&tcp)
            .set_tcp_keepalive(&socket2::TcpKeepalive::new().with_time(Duration::from_secs(60)));
        let acceptor = acceptor.clone();
        let conns = conns.clone();
        let metrics = Arc::clone(&metrics);
        let timeout = limits.timeout;
        tokio::spawn(async move {
            Metrics::add(&metrics.tls_handshakes_pending, 1);
            // Pinned here, not moved into the timeout, so that a timed-out connection is closed
            // at the end of this task, after the metrics count it: a peer that sees the close
            // and then reads /metrics finds it counted.
            let accept = acceptor.accept(tcp);
            tokio::pin!(accept);
            let outcome = tokio::time::timeout(timeout, &mut accept).await;
            metrics
                .tls_handshakes_pending
                .fetch_sub(1, Ordering::Relaxed);
            drop(permit);
            match outcome {
                Ok(Ok(tls)) => {
                    let _ = conns.send(Ok(tls)).await;
                }
                Ok(Err(e)) => {
                    Metrics::add(&metrics.tls_handshake_failures, 1);
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                }
                Err(_) => {
                    Metrics::add(&metrics.tls_handshake_timeouts, 1);
                    tracing::debug!(%peer, "TLS handshake timed out (--tls-handshake-timeout)");
                }
            }
        });
    }
}

/// Whether a response is tonic's refusal of a compressed message whose decompressed size
/// passed `max_decoding_message_size`.
fn is_decompressed_too_large(headers: &http::HeaderMap) -> bool {
    Status::from_header_map(headers).is_some_and(|s| {
        s.code() == tonic::Code::ResourceExhausted
            && s.message().starts_with("Error decompressing: size limit")
    })
}

/// A running server.
pub struct Running {
    /// The address it listens on (the port chosen when `--listen` gave port 0).
    pub addr: SocketAddr,
    pub metrics_addr: Option<SocketAddr>,
    pub metrics: Arc<Metrics>,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
    store: Arc<Storage>,
    hub: Arc<Hub>,
    retention: Option<JoinHandle<()>>,
}

impl Running {
    /// Stops accepting, ends watch streams, lets pushes in flight finish, closes the store.
    pub async fn stop(self) -> Result<(), ServeError> {
        let _ = self.shutdown.send(true);
        let served = self.task.await;
        if let Some(retention) = self.retention {
            retention.abort();
            let _ = retention.await;
        }
        for (_, tail) in self.hub.tails.lock().await.drain() {
            tail.abort();
            let _ = tail.await;
        }
        match Arc::try_unwrap(self.store) {
            Ok(store) => store.close().await,
            Err(store) => {
                if let Storage::Postgres(pg) = &*store {
                    pg.shutdown().await;
                }
            }
        }
        match served {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(ServeError::Transport(e)),
            Err(e) => Err(ServeError::Join(e.to_string())),
        }
    }
}

/// Opens the store, binds, and serves on a task.
pub async fn start(config: ServerConfig) -> Result<Running, ServeError> {
    let metrics = Metrics::new();
    let store =
        Arc::new(Storage::open(config.store.clone(), Arc::clone(&metrics), Access::Serve).await?);
    let retention = config.retention.is_set().then(|| {
        let store = Arc::clone(&store);
        let retention = config.retention.clone();
        let metrics = Arc::clone(&metrics);
        tokio::spawn(async move {
            let mut every = tokio::time::interval(retention.interval.max(Duration::from_secs(1)));
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                match store.enforce_retention(&retention).await {
                    Ok(0) => {}
                    Ok(removed) => info!(removed, "retention enforced"),
                    Err(e) => {
                        Metrics::add(&metrics.retention_failures, 1);
                        error!(error = %e, "enforcing retention failed; trying again next time");
                    }
                }
            }
        })
    });
    let metrics_addr = match config.metrics_addr {
        Some(addr) => Some(
            metrics::serve(addr, Arc::clone(&metrics))
                .await
                .map_err(|e| ServeError::Metrics(addr, e))?,
        ),
        None => None,
    };
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|e| ServeError::Listen(config.listen, e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| ServeError::Listen(config.listen, e))?;
    let (shutdown, shutdown_rx) = watch::channel(false);
    let hub = Arc::new(Hub {
        capacity: config.limits.watch_buffer.max(1),
        orgs: Mutex::new(std::collections::HashMap::new()),
        tails: tokio::sync::Mutex::new(std::collections::HashMap::new()),
    });
    let limiter = Arc::new(PeerLimiter::new(&config.limits.auth));
    let audit = Arc::new(AuditLimiter::new(config.limits.auth.audit_per_second));
    let auth = |rpc: Rpc, required: Scope| Auth {
        storage: Arc::clone(&store),
        metrics: Arc::clone(&metrics),
        limiter: Arc::clone(&limiter),
        audit: Arc::clone(&audit),
        rpc,
        required,
    };
    let ingest = IngestServer::new(IngestService {
        store: Arc::clone(&store),
        hub: Arc::clone(&hub),
        metrics: Arc::clone(&metrics),
        max_exchanges: config.limits.max_batch_exchanges,
    })
    .max_decoding_message_size(config.limits.max_batch_bytes)
    // Daemons send zstd by default, gzip when asked or when an older collector refused zstd
    // (--export-compression); the limit above applies to the decompressed batch.
    .accept_compressed(tonic::codec::CompressionEncoding::Zstd)
    .accept_compressed(tonic::codec::CompressionEncoding::Gzip);
    let watch = WatchServer::new(WatchService {
        hub: Arc::clone(&hub),
        storage: Arc::clone(&store),
        metrics: Arc::clone(&metrics),
        watchers: Arc::new(AtomicUsize::new(0)),
        max_watchers: config.limits.max_watchers,
        shutdown: shutdown_rx.clone(),
    });
    let acceptor = tls_acceptor(&config.identity)?;
    let diff = DiffServer::new(DiffService {
        storage: Arc::clone(&store),
        metrics: Arc::clone(&metrics),
        max_exchanges: config.limits.max_diff_exchanges,
    })
    // A report can be large; the limit is on the selections (--max-diff-exchanges).
    .max_encoding_message_size(256 << 20);
    let dispatch = Dispatch {
        ingest: InterceptedService::new(ingest, auth(Rpc::Push, Scope::Ingest)),
        watch: InterceptedService::new(watch, auth(Rpc::Watch, Scope::Read)),
        diff: InterceptedService::new(diff, auth(Rpc::Diff, Scope::Read)),
        metrics: Arc::clone(&metrics),
        pushes: Arc::new(tokio::sync::Semaphore::new(
            config.limits.max_concurrent_pushes.max(1),
        )),
    };
    let server = Server::builder().http2_keepalive_interval(Some(Duration::from_secs(30)));
    let (conns, incoming) = mpsc::channel(64);
    tokio::spawn(accept_tls(
        listener,
        acceptor,
        Handshakes {
            timeout: config.limits.tls_handshake_timeout,
            pending: Arc::new(tokio::sync::Semaphore::new(
                config.limits.max_pending_handshakes.max(1),
            )),
        },
        conns,
        Arc::clone(&metrics),
        shutdown_rx.clone(),
    ));
    let mut stop = shutdown_rx;
    let task = tokio::spawn(server.serve_with_incoming_shutdown(
        dispatch,
        ReceiverStream::new(incoming),
        async move {
            let _ = stop.changed().await;
        },
    ));
    info!(%addr, "collector listening (TLS)");
    Ok(Running {
        addr,
        metrics_addr,
        metrics,
        shutdown,
        task,
        store,
        hub,
        retention,
    })
}
