//! Retries, backoff and auth refusals on tokio's paused clock: the exporter's loop runs in the
//! test's runtime against the in-process collector through in-memory pipes, so minutes of
//! backoff pass in no real time.

use std::{
    sync::{Arc, Mutex, atomic::Ordering::Relaxed},
    time::Duration,
};

use capture_daemon::{
    output::export::metrics::ExportMetrics,
    output::export::{self, ExportHandle, Resources, ShutdownSignal, metrics::DropReason},
};
use tokio::time::Instant;
use tonic::Code;

use crate::support::{Answer, CLOCK, Fail, Shared, State, exchange, in_memory_collector, settings};

struct Running {
    handle: ExportHandle,
    shutdown: ShutdownSignal,
    task: tokio::task::JoinHandle<()>,
    metrics: Arc<ExportMetrics>,
}

fn run(state: &Shared, flags: &[&str]) -> Running {
    let mut all = vec![
        "--collector",
        "http://collector.test",
        "--collector-insecure",
    ];
    all.extend_from_slice(flags);
    let settings = settings(&all);
    let metrics = Arc::new(ExportMetrics::default());
    let parts = export::build(
        &settings,
        Arc::clone(&metrics),
        in_memory_collector(state),
        Resources::open(&settings).unwrap(),
        export::new_instance_id(),
    );
    Running {
        handle: parts.handle,
        shutdown: parts.shutdown,
        task: tokio::spawn(parts.delivery.run()),
        metrics,
    }
}

impl Running {
    async fn stop(self) {
        self.shutdown.begin(Duration::from_secs(1));
        drop(self.handle);
        self.task.await.unwrap();
    }
}

/// Advances the paused clock in small steps until `cond` holds, at most `limit` of virtual time.
async fn until(limit: Duration, what: &str, cond: impl Fn() -> bool) {
    let end = Instant::now() + limit;
    while !cond() {
        assert!(
            Instant::now() < end,
            "{what} not within {limit:?} (virtual)"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn shared(state: State) -> Shared {
    Arc::new(Mutex::new(state))
}

#[tokio::test(start_paused = true)]
async fn transient_failures_are_retried_with_jittered_exponential_backoff() {
    let state = shared(State {
        fail: [Code::Unavailable, Code::ResourceExhausted, Code::Internal]
            .into_iter()
            .chain([Code::Unavailable; 3])
            .map(Fail::With)
            .collect(),
        ..State::default()
    });
    let real = std::time::Instant::now();
    let mut r = run(
        &state,
        &[
            "--export-batch-max-delay",
            "10ms",
            "--export-backoff-initial",
            "1s",
            "--export-backoff-max",
            "4s",
        ],
    );
    r.handle.offer(exchange(1, 10), &CLOCK);
    until(Duration::from_secs(60), "delivery after 6 failures", || {
        state.lock().unwrap().stored_exchanges() == 1
    })
    .await;
    let calls = state.lock().unwrap().calls.clone();
    assert_eq!(calls.len(), 7);
    assert!(
        calls[..6]
            .iter()
            .all(|c| matches!(c.answer, Answer::Refused(_)))
    );
    assert_eq!(calls[6].answer, Answer::Stored);
    // The n-th wait is at most min(4 s, 1 s * 2^n) (plus the 5 ms polling step).
    let ceilings = [1, 2, 4, 4, 4, 4].map(Duration::from_secs);
    let mut total = Duration::ZERO;
    for (i, pair) in calls.windows(2).enumerate() {
        let gap = pair[1].at - pair[0].at;
        assert!(
            gap <= ceilings[i] + Duration::from_millis(10),
            "wait {i}: {gap:?} > {:?}",
            ceilings[i]
        );
        total += gap;
    }
    // Full jitter: six waits drawn from [0, ceiling] do not all sit at their ceilings.
    assert!(total < ceilings.iter().sum::<Duration>(), "{total:?}");
    let m = &r.metrics;
    assert_eq!(m.retries.load(Relaxed), 6);
    assert_eq!(m.exchanges_acked.load(Relaxed), 1);
    assert!(m.connected.load(Relaxed));
    r.stop().await;
    assert!(
        real.elapsed() < Duration::from_secs(10),
        "the backoff slept for real: {:?}",
        real.elapsed()
    );
}

#[tokio::test(start_paused = true)]
async fn an_auth_refusal_is_not_retried_until_the_token_file_changes() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "revoked-token\n").unwrap();
    let state = shared(State {
        tokens: Some(vec!["good-token".into()]),
        ..State::default()
    });
    let mut r = run(
        &state,
        &[
            "--token-file",
            token.to_str().unwrap(),
            "--export-batch-max-delay",
            "10ms",
        ],
    );
    r.handle.offer(exchange(1, 10), &CLOCK);
    until(Duration::from_secs(5), "the first refusal", || {
        !state.lock().unwrap().calls.is_empty()
    })
    .await;
    // Ten minutes on: still one attempt, the batch still held, nothing stored.
    tokio::time::sleep(Duration::from_secs(600)).await;
    {
        let st = state.lock().unwrap();
        assert_eq!(st.calls.len(), 1);
        assert_eq!(st.calls[0].answer, Answer::Refused(Code::Unauthenticated));
        assert_eq!(st.stored_exchanges(), 0);
    }
    let m = &r.metrics;
    assert_eq!(m.auth_failures.load(Relaxed), 1);
    assert!(m.auth_blocked.load(Relaxed));
    assert_eq!(m.retries.load(Relaxed), 0);
    assert!(m.queue_bytes() > 0, "the batch is kept");
    assert!(
        !capture_daemon::telemetry::metrics::render_source(&*r.metrics).contains("revoked-token")
    );

    // A new token: picked up at the next poll, the batch goes through.
    std::fs::write(&token, "good-token\n").unwrap();
    until(
        Duration::from_secs(5),
        "delivery with the new token",
        || state.lock().unwrap().stored_exchanges() == 1,
    )
    .await;
    let calls = state.lock().unwrap().calls.clone();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[1].authorization.as_deref(), Some("Bearer good-token"));
    assert!(!m.auth_blocked.load(Relaxed));
    r.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_rejected_batch_is_dropped_and_counted_and_the_next_goes() {
    let state = shared(State {
        fail: [Fail::With(Code::InvalidArgument)].into(),
        ..State::default()
    });
    let mut r = run(
        &state,
        &[
            "--export-batch-max-exchanges",
            "2",
            "--export-batch-max-delay",
            "10ms",
        ],
    );
    for n in 1..=4 {
        r.handle.offer(exchange(n, 10), &CLOCK);
    }
    until(Duration::from_secs(5), "the second batch", || {
        state.lock().unwrap().stored_exchanges() == 2
    })
    .await;
    let m = &r.metrics;
    assert_eq!(m.dropped_total(DropReason::Rejected), 2);
    assert_eq!(m.retries.load(Relaxed), 0);
    let calls = state.lock().unwrap().calls.clone();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[1].sequence, 2);
    r.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_lost_acknowledgement_is_retried_and_stored_once() {
    let state = shared(State {
        fail: [Fail::LoseAck].into(),
        ..State::default()
    });
    let mut r = run(&state, &["--export-batch-max-delay", "10ms"]);
    r.handle.offer(exchange(1, 10), &CLOCK);
    until(Duration::from_secs(5), "the retry", || {
        state.lock().unwrap().calls.len() == 2
    })
    .await;
    let (calls, stored) = {
        let st = state.lock().unwrap();
        (st.calls.clone(), st.stored.len())
    };
    assert_eq!(calls[1].answer, Answer::Duplicate);
    assert_eq!(stored, 1);
    let m = &r.metrics;
    assert_eq!(m.batches_duplicate.load(Relaxed), 1);
    assert_eq!(m.exchanges_acked.load(Relaxed), 1);
    r.stop().await;
}

#[tokio::test(start_paused = true)]
async fn batches_close_by_age() {
    let state = shared(State::default());
    let mut r = run(&state, &["--export-batch-max-delay", "2s"]);
    let t0 = Instant::now();
    r.handle.offer(exchange(1, 10), &CLOCK);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    r.handle.offer(exchange(2, 10), &CLOCK);
    until(Duration::from_secs(5), "the batch", || {
        state.lock().unwrap().stored_exchanges() == 2
    })
    .await;
    let calls = state.lock().unwrap().calls.clone();
    assert_eq!(calls.len(), 1);
    let waited = calls[0].at - t0;
    assert!(
        waited >= Duration::from_secs(2) && waited < Duration::from_millis(2100),
        "{waited:?}"
    );
    r.stop().await;
}

/// Eight batches to a collector that takes 1 s per push: `--export-max-in-flight` pushes
/// overlap, one at a time they do not.
async fn eight_slow_batches(max_in_flight: &str) -> (Duration, usize, Vec<u64>) {
    let state = shared(State {
        delay: Duration::from_secs(1),
        ..State::default()
    });
    let mut r = run(
        &state,
        &[
            "--export-batch-max-exchanges",
            "1",
            "--export-max-in-flight",
            max_in_flight,
        ],
    );
    let t0 = Instant::now();
    for n in 1..=8 {
        r.handle.offer(exchange(n, 10), &CLOCK);
    }
    until(Duration::from_secs(60), "eight batches", || {
        state.lock().unwrap().stored_exchanges() == 8
    })
    .await;
    let elapsed = t0.elapsed();
    let (max_active, order) = {
        let st = state.lock().unwrap();
        (st.max_active, st.calls.iter().map(|c| c.sequence).collect())
    };
    r.stop().await;
    (elapsed, max_active, order)
}

#[tokio::test(start_paused = true)]
async fn pushes_overlap_up_to_the_in_flight_limit() {
    let (elapsed, max_active, _) = eight_slow_batches("4").await;
    assert_eq!(max_active, 4);
    assert!(
        elapsed >= Duration::from_secs(2) && elapsed < Duration::from_secs(3),
        "{elapsed:?}"
    );
    let (elapsed, max_active, order) = eight_slow_batches("1").await;
    assert_eq!(max_active, 1);
    assert!(elapsed >= Duration::from_secs(8), "{elapsed:?}");
    assert_eq!(
        order,
        (1..=8).collect::<Vec<_>>(),
        "one at a time keeps the order"
    );
}
