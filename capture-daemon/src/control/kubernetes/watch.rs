//! The pod watch: list + watch of this node's pods through `kube::runtime::watcher`, turned
//! into [`PodEvent`]s for the reconciler.
//!
//! The watcher resumes a broken watch from the last resource version and relists when the
//! server says the version is gone (`410` as a watch ERROR event). A `410` answer to the watch
//! request itself is handled here by starting a fresh watcher, which relists. Every error is
//! counted and followed by an exponential backoff with jitter (0.5 s doubling to 30 s, reset
//! after a minute without errors); the reconciler keeps the current set meanwhile.

use std::{
    hash::{BuildHasher as _, Hasher as _},
    sync::{Arc, atomic::Ordering::Relaxed},
    time::{Duration, Instant},
};

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::watcher;
use tokio::sync::{mpsc, watch as tokio_watch};
use tracing::{debug, info, warn};

use super::{
    pod::{NamespaceFilter, PodView},
    reconcile::{PodEvent, Reconciler},
};
use crate::control::ControlMetrics;

const BACKOFF_MIN: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Without an error for this long, the next error starts the backoff over.
const BACKOFF_RESET_AFTER: Duration = Duration::from_secs(60);
/// Unresolved containers are retried, and resolved ones rescanned, on this tick.
pub const TICK: Duration = Duration::from_millis(500);
/// Server-side timeout of one watch request; the watcher then resumes from where it was.
const WATCH_TIMEOUT_SECS: u32 = 290;

/// Watches the pods on `node` and sends what happens to them into `tx` until `tx` closes.
pub async fn watch_pods(
    client: kube::Client,
    node: String,
    tx: mpsc::Sender<PodEvent>,
    metrics: Arc<ControlMetrics>,
) {
    let api: kube::Api<Pod> = kube::Api::all(client);
    let config = watcher::Config::default()
        .fields(&format!("spec.nodeName={node}"))
        .timeout(WATCH_TIMEOUT_SECS);
    let mut backoff = Backoff::new();
    loop {
        let stream = watcher(api.clone(), config.clone());
        futures::pin_mut!(stream);
        while let Some(item) = stream.next().await {
            let event = match item {
                Ok(event) => event,
                Err(e) => {
                    metrics.kubernetes_watch_errors.fetch_add(1, Relaxed);
                    if let Some(restart) = gone(&e) {
                        // The watch fell behind the server's history: not an outage, so no
                        // growing backoff, just a short pause before the new list.
                        info!("resource version gone; listing the node's pods again");
                        tokio::time::sleep(backoff.jittered(BACKOFF_MIN)).await;
                        if restart {
                            break;
                        }
                        continue;
                    }
                    let delay = backoff.next_delay();
                    warn!(error = %e, retry_in = ?delay, "pod watch failed; keeping the current targets");
                    tokio::time::sleep(delay).await;
                    continue;
                }
            };
            let event = match event {
                watcher::Event::Init => Some(PodEvent::Init),
                watcher::Event::InitApply(pod) => view(&pod).map(PodEvent::InitApply),
                watcher::Event::InitDone => Some(PodEvent::InitDone),
                watcher::Event::Apply(pod) => view(&pod).map(PodEvent::Apply),
                watcher::Event::Delete(pod) => view(&pod).map(PodEvent::Delete),
            };
            if let Some(event) = event
                && tx.send(event).await.is_err()
            {
                return;
            }
        }
    }
}

fn view(pod: &Pod) -> Option<PodView> {
    let v = PodView::from_pod(pod);
    if v.is_none() {
        debug!("pod without uid, namespace or name ignored");
    }
    v
}

/// `Some` for `410 Gone`: the resource version is too old and only a new list helps. The
/// watcher relists by itself after a 410 ERROR event in the stream or a 410 list answer
/// (`Some(false)`); a 410 answer to the watch request needs a fresh watcher (`Some(true)`).
fn gone(e: &watcher::Error) -> Option<bool> {
    match e {
        watcher::Error::WatchStartFailed(kube::Error::Api(status)) if status.code == 410 => {
            Some(true)
        }
        watcher::Error::InitialListFailed(kube::Error::Api(status)) if status.code == 410 => {
            Some(false)
        }
        watcher::Error::WatchError(status) if status.code == 410 => Some(false),
        _ => None,
    }
}

/// Runs the reconciler: pod events, retry ticks and namespace filter changes, until the
/// events channel closes.
pub async fn reconcile(
    mut rec: Reconciler,
    mut events: mpsc::Receiver<PodEvent>,
    mut namespaces: tokio_watch::Receiver<NamespaceFilter>,
) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut namespaces_open = true;
    loop {
        tokio::select! {
            event = events.recv() => match event {
                Some(event) => {
                    let was_synced = rec.synced();
                    rec.handle(event);
                    if rec.synced() && !was_synced {
                        info!("pods of this node listed; capture targets in place");
                    }
                }
                None => return,
            },
            _ = tick.tick() => rec.tick(),
            changed = namespaces.changed(), if namespaces_open => match changed {
                Ok(()) => {
                    let filter = namespaces.borrow_and_update().clone();
                    rec.set_namespaces(filter);
                }
                Err(_) => namespaces_open = false,
            },
        }
    }
}

/// Exponential backoff with jitter: each delay is drawn from the upper half of the current
/// step, so daemons on many nodes that lose the API together do not come back in lockstep.
struct Backoff {
    step: Duration,
    last_error: Option<Instant>,
    random: std::collections::hash_map::RandomState,
    draws: u64,
}

impl Backoff {
    fn new() -> Self {
        Self {
            step: BACKOFF_MIN,
            last_error: None,
            random: std::collections::hash_map::RandomState::new(),
            draws: 0,
        }
    }

    fn next_delay(&mut self) -> Duration {
        if self
            .last_error
            .is_some_and(|t| t.elapsed() >= BACKOFF_RESET_AFTER)
        {
            self.step = BACKOFF_MIN;
        }
        self.last_error = Some(Instant::now());
        let step = self.step;
        self.step = (self.step * 2).min(BACKOFF_MAX);
        self.jittered(step)
    }

    /// A random duration in [step / 2, step).
    fn jittered(&mut self, step: Duration) -> Duration {
        self.draws += 1;
        let mut h = self.random.build_hasher();
        h.write_u64(self.draws);
        let fraction = 0.5 + (h.finish() >> 11) as f64 / (1u64 << 53) as f64 / 2.0;
        step.mul_f64(fraction)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_is_capped() {
        let mut b = Backoff::new();
        let delays: Vec<Duration> = (0..10).map(|_| b.next_delay()).collect();
        assert!(delays[0] >= BACKOFF_MIN / 2 && delays[0] < BACKOFF_MIN);
        assert!(delays[3] >= Duration::from_secs(2) && delays[3] < Duration::from_secs(4));
        assert!(delays.iter().all(|d| *d < BACKOFF_MAX));
        assert!(delays[9] >= BACKOFF_MAX / 2);
        // Not all equal within a step: jitter.
        let mut c = Backoff::new();
        let firsts: Vec<Duration> = (0..5)
            .map(|_| {
                c.step = BACKOFF_MIN;
                c.next_delay()
            })
            .collect();
        assert!(firsts.windows(2).any(|w| w[0] != w[1]), "{firsts:?}");
    }
}
