//! The exporter's loop: takes exchanges from the pipeline, forms batches, pushes them oldest
//! first with up to `--export-max-in-flight` pushes at a time, and keeps each batch until the
//! collector acknowledged it. With more than one push in flight the collector may store
//! batches out of order (each exactly once); `--export-max-in-flight 1` keeps the order.
//!
//! Where a batch lives until then: in memory; moved to the spool (when there is one) once the
//! batches in memory pass half of `--export-queue-max-bytes`, oldest first, so the spool always
//! holds older batches than memory and sending the spool first keeps the order. Without a spool
//! memory fills up to the queue bound, and the pipeline then drops new exchanges (`queue_full`).
//!
//! Per push outcome:
//! - acknowledged (stored or duplicate): the batch is removed, the backoff reset;
//! - UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, ABORTED, INTERNAL, UNKNOWN, CANCELLED:
//!   retried after an exponential backoff with full jitter;
//! - UNAUTHENTICATED, PERMISSION_DENIED: logged as an error, counted, and nothing is pushed
//!   until the token file changes (polled every [`TOKEN_POLL`]); batches keep accumulating;
//! - INVALID_ARGUMENT, OUT_OF_RANGE: the batch is dropped (`rejected`), the next one goes;
//! - anything else: retried with backoff, logged as an error.
//!
//! Shutdown (`begin_shutdown(within)`): pushing goes on, batches in memory first, until
//! `within` minus a reserve for the spool ([`spool_reserve`]); then the pipeline's last
//! exchanges are taken, and whatever is not acknowledged goes to the spool or, without one, is
//! dropped (`shutdown`). A push cut short may have been stored: its batch is spooled all the
//! same and the collector acknowledges it as a duplicate later.

use std::{
    collections::{HashMap, VecDeque},
    sync::Arc,
    time::Duration,
};

use capture_proto::v1;
use tokio::{
    sync::{mpsc, watch},
    task::JoinSet,
    time::{Instant, MissedTickBehavior},
};
use tracing::{debug, error, info, warn};

use super::metrics::ExportMetrics;
use super::{
    Offered,
    backoff::Backoff,
    batch::{BatchId, Batcher, Encoded, EncodedBatch},
    client::{Collector, Verdict, is_disconnect, verdict},
    metrics::DropReason,
    spool::{Spool, SpoolError},
    token::{TokenFile, TokenPoll},
};

/// How often the token file is read again.
pub const TOKEN_POLL: Duration = Duration::from_secs(1);
/// After a failed spool write, how long before trying the spool again.
const SPOOL_RETRY: Duration = Duration::from_secs(1);
/// Exchanges taken from the pipeline per wakeup at most, so acknowledgements and timers are
/// looked at in between under load.
const RECV_BURST: usize = 256;
/// Once the exporter has taken everything the pipeline handed over, it looks again only this
/// much later. Each hand-over to a waiting exporter woke its thread, and the wake-up (an
/// eventfd write and the scheduler's work) ran on the pipeline's thread: 13 % of that thread's
/// samples in `cargo xtask bench` phase E, about one per exchange. Now it is at most one per
/// pause. Batches wait far longer than this (`--export-batch-max-delay`).
const RECV_PAUSE: Duration = Duration::from_millis(2);
/// Least time between two log lines about retries.
const RETRY_LOG_EVERY: Duration = Duration::from_secs(10);
/// How long after the shutdown deadline the exporter waits for the pipeline's last exchanges.
const LAST_EXCHANGES_GRACE: Duration = Duration::from_millis(500);

/// Of the shutdown time, what is kept for writing memory to the spool: a quarter, at most 1 s.
pub fn spool_reserve(within: Duration) -> Duration {
    (within / 4).min(Duration::from_secs(1))
}

/// A push on its way: which batch, and how many exchanges it carries.
#[derive(Clone, Debug)]
struct Pushing {
    id: BatchId,
    exchanges: u32,
}

/// What the exporter needs besides its inputs.
pub struct DeliveryParts {
    pub collector: Collector,
    /// For log lines and audit events: `--collector` as given.
    pub endpoint: String,
    pub token: Option<TokenFile>,
    pub spool: Option<Spool>,
    pub batcher: Batcher,
    pub backoff: Backoff,
    pub queue_max_bytes: u64,
    /// `--export-max-in-flight`.
    pub max_in_flight: usize,
}

/// The exporter's state; [`Delivery::run`] is its loop.
pub struct Delivery {
    collector: Collector,
    endpoint: String,
    token: Option<TokenFile>,
    metrics: Arc<ExportMetrics>,
    rx: mpsc::UnboundedReceiver<Offered>,
    shutdown: watch::Receiver<Option<Duration>>,
    batcher: Batcher,
    memory: VecDeque<EncodedBatch>,
    memory_bytes: u64,
    spool: Option<Spool>,
    spill_at: u64,
    max_in_flight: usize,
    spool_retry_at: Option<Instant>,
    backoff: Backoff,
    connected: Option<bool>,
    last_retry_log: Option<Instant>,
    closed: Vec<EncodedBatch>,
}

/// The loop's own variables, apart from the state it works on.
struct Progress {
    /// Pushes in flight, each a task (dropping the set cancels them).
    inflight: JoinSet<Result<v1::PushAck, tonic::Status>>,
    pushing: HashMap<tokio::task::Id, Pushing>,
    retry_at: Option<Instant>,
    /// Pushes wait for the token file to change.
    auth_blocked: bool,
    input_open: bool,
    /// From `begin_shutdown`: (stop pushing at, give up waiting for the pipeline at).
    shutdown: Option<(Instant, Instant)>,
    /// The pipeline's hand-overs are not looked at until then (see [`RECV_PAUSE`]).
    recv_paused_until: Option<Instant>,
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

impl Progress {
    fn in_flight(&self, id: &BatchId) -> bool {
        self.pushing.values().any(|p| p.id == *id)
    }
}

impl Delivery {
    pub fn new(
        parts: DeliveryParts,
        metrics: Arc<ExportMetrics>,
        rx: mpsc::UnboundedReceiver<Offered>,
        shutdown: watch::Receiver<Option<Duration>>,
    ) -> Self {
        let m = &*metrics;
        m.queue_max_bytes.store(parts.queue_max_bytes, RELAXED);
        if let Some(spool) = &parts.spool {
            m.spool_max_bytes.store(spool.max_bytes(), RELAXED);
        }
        let delivery = Self {
            collector: parts.collector,
            endpoint: parts.endpoint,
            token: parts.token,
            metrics,
            rx,
            shutdown,
            batcher: parts.batcher,
            memory: VecDeque::new(),
            memory_bytes: 0,
            spool: parts.spool,
            spill_at: parts.queue_max_bytes / 2,
            max_in_flight: parts.max_in_flight.max(1),
            spool_retry_at: None,
            backoff: parts.backoff,
            connected: None,
            last_retry_log: None,
            closed: Vec::new(),
        };
        delivery.update_gauges();
        delivery
    }

    /// Runs until shut down (see the module docs) and the pipeline's side is closed.
    pub async fn run(mut self) {
        if let Some(spool) = &self.spool
            && !spool.is_empty()
        {
            info!(
                batches = spool.len(),
                bytes = spool.bytes(),
                dir = %spool.dir().display(),
                "spooled batches found; sending them first"
            );
        }
        let mut p = Progress {
            inflight: JoinSet::new(),
            pushing: HashMap::new(),
            retry_at: None,
            auth_blocked: false,
            input_open: true,
            shutdown: None,
            recv_paused_until: None,
        };
        let mut token_tick = tokio::time::interval(TOKEN_POLL);
        token_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        token_tick.reset();
        loop {
            while p.inflight.len() < self.max_in_flight
                && p.retry_at.is_none()
                && !p.auth_blocked
                && self.start_push(&mut p)
            {}
            if !p.input_open && self.batcher.pending_exchanges() == 0 && self.done_early(&p) {
                break;
            }
            tokio::select! {
                within = self.shutdown.changed(), if p.shutdown.is_none() => {
                    // A dropped sender (the daemon is going away) means now.
                    let within = match within {
                        Ok(()) => self.shutdown.borrow().unwrap_or_default(),
                        Err(_) => Duration::ZERO,
                    };
                    let now = Instant::now();
                    p.shutdown = Some((
                        now + within.saturating_sub(spool_reserve(within)),
                        now + within + LAST_EXCHANGES_GRACE,
                    ));
                    info!(
                        within = %humantime::format_duration(within),
                        held_batches = self.memory.len(),
                        "exporter shutting down: sending what it holds"
                    );
                }
                () = sleep_until(p.shutdown.map(|s| s.0)) => break,
                Some(joined) = p.inflight.join_next_with_id(), if !p.inflight.is_empty() => {
                    let (task, result) = match joined {
                        Ok((task, result)) => (task, result),
                        // Only a panic in the push (never expected) gets here: retry it.
                        Err(e) => (e.id(), Err(tonic::Status::internal(format!("push task: {e}")))),
                    };
                    if let Some(done) = p.pushing.remove(&task) {
                        self.on_result(done.id, done.exchanges, result, &mut p);
                    }
                }
                first = self.rx.recv(), if p.input_open && p.recv_paused_until.is_none() => match first {
                    Some(offered) => {
                        self.accept(offered);
                        let mut taken = 1;
                        while taken < RECV_BURST {
                            match self.rx.try_recv() {
                                Ok(offered) => self.accept(offered),
                                Err(_) => break,
                            }
                            taken += 1;
                        }
                        // All taken: leave the pipeline's next hand-overs to the pause's end.
                        if taken < RECV_BURST {
                            p.recv_paused_until = Some(Instant::now() + RECV_PAUSE);
                        }
                    }
                    None => {
                        p.input_open = false;
                        self.close_batch();
                    }
                },
                () = sleep_until(self.batcher.deadline()) => self.close_batch(),
                () = sleep_until(p.retry_at) => p.retry_at = None,
                () = sleep_until(p.recv_paused_until) => p.recv_paused_until = None,
                () = sleep_until(self.spool_retry_at) => self.spool_retry_at = None,
                _ = token_tick.tick(), if self.token.is_some() => self.poll_token(&mut p),
            }
            self.spill(&p);
            self.update_gauges();
        }
        let grace = p.shutdown.map(|s| s.1);
        self.finish(p.inflight, p.input_open, grace).await;
    }

    /// Whether the loop may stop with the pipeline's side closed: everything in memory is
    /// acknowledged, or (during shutdown) there is no point waiting for the collector.
    fn done_early(&self, p: &Progress) -> bool {
        if self.memory.is_empty() && p.inflight.is_empty() {
            return true;
        }
        let Some((stop, _)) = p.shutdown else {
            return false;
        };
        p.inflight.is_empty() && (p.auth_blocked || p.retry_at.is_some_and(|r| r >= stop))
    }

    /// Adds one exchange from the pipeline (encoded there) to the open batch.
    fn accept(&mut self, offered: Offered) {
        let bytes = offered.message.len() as u64;
        self.batcher
            .add(&Encoded(&offered.message), Instant::now(), &mut self.closed);
        self.take_closed();
        // Held before it stops being handed over: the pipeline's admission check
        // (`ExportHandle::offer`) never sees the queue smaller than it is, which let it admit
        // past `--export-queue-max-bytes`.
        self.store_held_bytes();
        self.metrics.sub_handoff_bytes(bytes);
    }

    fn close_batch(&mut self) {
        if let Some(batch) = self.batcher.close() {
            self.closed.push(batch);
        }
        self.take_closed();
    }

    fn take_closed(&mut self) {
        for batch in self.closed.drain(..) {
            self.memory_bytes += batch.len();
            self.memory.push_back(batch);
        }
    }

    /// The next batch to push that is not in flight: the spool's oldest, then memory's; during
    /// shutdown memory's first (the spool keeps without help).
    fn next_batch(&mut self, p: &Progress) -> Option<EncodedBatch> {
        let from_memory =
            |memory: &VecDeque<EncodedBatch>| memory.iter().find(|b| !p.in_flight(&b.id)).cloned();
        if p.shutdown.is_some()
            && let Some(b) = from_memory(&self.memory)
        {
            return Some(b);
        }
        self.next_spooled(p).or_else(|| from_memory(&self.memory))
    }

    fn next_spooled(&mut self, p: &Progress) -> Option<EncodedBatch> {
        let spool = self.spool.as_mut()?;
        loop {
            let id = spool.ids().find(|id| !p.in_flight(id))?.clone();
            match spool.read(&id)? {
                Ok(batch) => return Some(batch),
                Err(corrupt) => {
                    error!(error = %corrupt, "dropping an unreadable spooled batch");
                    self.metrics
                        .dropped(DropReason::SpoolCorrupt, u64::from(corrupt.exchanges));
                }
            }
        }
    }

    /// Starts pushing the next batch; false when there is none to push.
    fn start_push(&mut self, p: &mut Progress) -> bool {
        let Some(batch) = self.next_batch(p) else {
            return false;
        };
        let authorization = self.token.as_ref().and_then(|t| t.value().cloned());
        debug!(batch = %batch.id, exchanges = batch.exchanges, bytes = batch.len(), "pushing");
        let task = p
            .inflight
            .spawn(self.collector.push(batch.bytes, authorization));
        p.pushing.insert(
            task.id(),
            Pushing {
                id: batch.id,
                exchanges: batch.exchanges,
            },
        );
        true
    }

    /// Forgets an acknowledged or rejected batch, wherever it is now.
    fn remove(&mut self, id: &BatchId) {
        if let Some(at) = self.memory.iter().position(|b| b.id == *id) {
            if let Some(b) = self.memory.remove(at) {
                self.memory_bytes -= b.len();
            }
        } else if let Some(spool) = &mut self.spool {
            spool.remove(id);
        }
    }

    fn on_result(
        &mut self,
        id: BatchId,
        exchanges: u32,
        result: Result<v1::PushAck, tonic::Status>,
        p: &mut Progress,
    ) {
        let metrics = Arc::clone(&self.metrics);
        let m = &*metrics;
        let status = match result {
            Ok(ack) => {
                if ack.sequence != id.sequence {
                    warn!(batch = %id, acked = ack.sequence, "the collector acknowledged another sequence number");
                }
                debug!(batch = %id, "acked");
                self.remove(&id);
                m.batches_acked.fetch_add(1, RELAXED);
                m.exchanges_acked.fetch_add(u64::from(exchanges), RELAXED);
                if ack.duplicate {
                    m.batches_duplicate.fetch_add(1, RELAXED);
                }
                m.mark_success();
                if p.auth_blocked || self.backoff.attempts() > 0 {
                    info!(batch = %id, "exports resumed");
                }
                self.backoff.reset();
                self.set_connected(true, "push acknowledged");
                return;
            }
            Err(status) => status,
        };
        let code = status.code();
        // A collector is not expected to echo the token, but a log line must never show it.
        let message = status_text(&status);
        let message = match &self.token {
            Some(t) => t.scrub(&message),
            None => message,
        };
        match verdict(code) {
            Verdict::Auth => {
                m.auth_failures.fetch_add(1, RELAXED);
                p.auth_blocked = true;
                m.auth_blocked.store(true, RELAXED);
                self.set_connected(true, "reached");
                let file = self.token.as_ref().map_or_else(
                    || "(none: set --token-file)".to_owned(),
                    |t| t.path().display().to_string(),
                );
                error!(
                    collector = %self.endpoint,
                    code = ?code,
                    message = %message,
                    token_file = %file,
                    "the collector refused the token; exports are paused until the token file \
                     changes (held batches are kept, new ones queue up)"
                );
            }
            Verdict::Rejected => {
                self.remove(&id);
                self.backoff.reset();
                error!(
                    collector = %self.endpoint,
                    batch = %id,
                    exchanges,
                    code = ?code,
                    message = %message,
                    "the collector rejected a batch; it is dropped"
                );
                m.dropped(DropReason::Rejected, u64::from(exchanges));
            }
            v @ (Verdict::Transient | Verdict::Unexpected) => {
                m.retries.fetch_add(1, RELAXED);
                // Pushes in flight together fail together: one backoff step for all of them.
                let delay = match p.retry_at {
                    Some(at) => at.saturating_duration_since(Instant::now()),
                    None => self.backoff.next_delay(),
                };
                p.retry_at = Some(Instant::now() + delay);
                if is_disconnect(code) {
                    self.set_connected(false, &message);
                }
                let now = Instant::now();
                let quiet = self
                    .last_retry_log
                    .is_some_and(|t| now.duration_since(t) < RETRY_LOG_EVERY);
                if v == Verdict::Unexpected {
                    error!(collector = %self.endpoint, batch = %id, code = ?code, message = %message,
                        retry_in = ?delay, "unexpected answer from the collector; retrying");
                } else if !quiet {
                    self.last_retry_log = Some(now);
                    warn!(collector = %self.endpoint, batch = %id, code = ?code, message = %message,
                        retry_in = ?delay, attempts = self.backoff.attempts(),
                        "push failed; retrying with backoff");
                }
            }
        }
    }

    fn set_connected(&mut self, connected: bool, reason: &str) {
        if self.connected == Some(connected) {
            return;
        }
        let first = self.connected.is_none();
        self.connected = Some(connected);
        self.metrics.connected.store(connected, RELAXED);
        if connected {
            crate::telemetry::audit::collector_connected(&self.endpoint);
        } else if !first {
            crate::telemetry::audit::collector_disconnected(&self.endpoint, reason);
        } else {
            crate::telemetry::audit::collector_disconnected(
                &self.endpoint,
                &format!("not reachable: {reason}"),
            );
        }
    }

    fn poll_token(&mut self, p: &mut Progress) {
        let Some(token) = &mut self.token else {
            return;
        };
        match token.poll() {
            TokenPoll::Unchanged => {}
            TokenPoll::Changed => {
                info!(token_file = %token.path().display(), "token file changed; using it from now on");
                if p.auth_blocked {
                    p.auth_blocked = false;
                    self.metrics.auth_blocked.store(false, RELAXED);
                    self.backoff.reset();
                    p.retry_at = None;
                }
            }
            TokenPoll::Unusable(e) => {
                error!(token_file = %token.path().display(), error = %e,
                    "the token file cannot be used; keeping the previous token");
            }
        }
    }

    /// Moves the oldest batches from memory to the spool while memory holds more than half the
    /// queue bound (never a batch in flight).
    fn spill(&mut self, p: &Progress) {
        let Some(spool) = &mut self.spool else {
            return;
        };
        if self.spool_retry_at.is_some() {
            return;
        }
        while self.memory_bytes > self.spill_at {
            let Some(at) = self.memory.iter().position(|b| !p.in_flight(&b.id)) else {
                break;
            };
            let batch = &self.memory[at];
            match spool.push(batch) {
                Ok(()) => {
                    self.metrics.batches_spooled.fetch_add(1, RELAXED);
                }
                Err(SpoolError::Full { .. }) => {
                    self.metrics
                        .dropped(DropReason::SpoolFull, u64::from(batch.exchanges));
                }
                Err(e) => {
                    error!(error = %e, "cannot write to the spool; keeping batches in memory");
                    self.spool_retry_at = Some(Instant::now() + SPOOL_RETRY);
                    break;
                }
            }
            if let Some(b) = self.memory.remove(at) {
                self.memory_bytes -= b.len();
            }
        }
    }

    fn store_held_bytes(&self) {
        self.metrics
            .held_bytes
            .store(self.memory_bytes + self.batcher.pending_bytes(), RELAXED);
    }

    fn update_gauges(&self) {
        let m = &*self.metrics;
        self.store_held_bytes();
        if let Some(spool) = &self.spool {
            m.spool_bytes.store(spool.bytes(), RELAXED);
            m.spool_batches.store(spool.len() as u64, RELAXED);
        }
    }

    /// The end: what the collector has not acknowledged goes to the spool, or is dropped.
    async fn finish(
        mut self,
        inflight: JoinSet<Result<v1::PushAck, tonic::Status>>,
        input_open: bool,
        grace: Option<Instant>,
    ) {
        // Pushes cut short keep their batches (in memory or in the spool).
        drop(inflight);
        if input_open {
            // The pipeline is still flushing its last exchanges: take them, within the grace.
            let until = grace.unwrap_or_else(Instant::now);
            loop {
                tokio::select! {
                    next = self.rx.recv() => match next {
                        Some(offered) => self.accept(offered),
                        None => break,
                    },
                    () = tokio::time::sleep_until(until) => break,
                }
            }
        }
        // From here the pipeline's offers fail and are counted as dropped (shutdown).
        self.rx.close();
        while let Ok(offered) = self.rx.try_recv() {
            self.accept(offered);
        }
        self.close_batch();
        let (mut spooled, mut dropped) = (0u64, 0u64);
        while let Some(batch) = self.memory.pop_front() {
            self.memory_bytes -= batch.len();
            let n = u64::from(batch.exchanges);
            let reason = match &mut self.spool {
                None => DropReason::Shutdown,
                Some(spool) => match spool.push(&batch) {
                    Ok(()) => {
                        self.metrics.batches_spooled.fetch_add(1, RELAXED);
                        spooled += n;
                        continue;
                    }
                    Err(SpoolError::Full { .. }) => DropReason::SpoolFull,
                    Err(e) => {
                        error!(error = %e, "cannot write to the spool at shutdown");
                        DropReason::Shutdown
                    }
                },
            };
            dropped += n;
            self.metrics.dropped(reason, n);
        }
        self.update_gauges();
        if dropped > 0 {
            error!(
                dropped,
                spooled, "exporter stopped; exchanges not delivered were dropped"
            );
        } else {
            info!(spooled, "exporter stopped");
        }
    }
}

/// The status message and the chain of errors under it: a connection failure says "transport
/// error" at the top and what went wrong (refused, certificate not trusted, ...) below.
fn status_text(status: &tonic::Status) -> String {
    let mut text = status.message().to_owned();
    let mut source = std::error::Error::source(status);
    while let Some(e) = source {
        let part = e.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = e.source();
    }
    text
}

const RELAXED: std::sync::atomic::Ordering = std::sync::atomic::Ordering::Relaxed;
