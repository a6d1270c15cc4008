//! The exporter against a real in-process collector: over real TLS with certificates made for
//! the test (delivery, batching, compression, token, mTLS, refused CAs, queue and spool
//! limits, replay after a restart), and on tokio's paused clock through in-memory pipes
//! (backoff, auth refusals, rejected batches, lost acknowledgements) so retries are checked
//! without sleeping through them.
#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code, helpers included: a failed unwrap is a failed test"
)]

mod paused;
mod support;

use std::{
    collections::BTreeSet,
    sync::{Arc, Mutex, atomic::Ordering::Relaxed},
    time::Duration,
};

use capture_daemon::{
    output::export::metrics::ExportMetrics,
    output::export::{ExportHandle, Exporter, metrics::DropReason},
};
use capture_model::{clock::WallClock, har, wire};
use support::{
    Answer, CLOCK, Pki, State, TestCollector, closed_port, exchange, settings, wait_until,
};

const TIMEOUT: Duration = Duration::from_secs(20);

/// Everything the exporters of this test binary logged (a global subscriber, installed by the
/// first caller; tests running at the same time share it).
fn logs() -> String {
    use std::sync::OnceLock;
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    let buffer = LOGS.get_or_init(|| {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&buffer);
        let _ = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .with_writer(move || LogWriter(Arc::clone(&sink)))
            .try_init();
        buffer
    });
    String::from_utf8_lossy(&buffer.lock().unwrap()).into_owned()
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn start(flags: &[&str]) -> (Exporter, ExportHandle, Arc<ExportMetrics>) {
    let metrics = Arc::new(ExportMetrics::default());
    let (exporter, handle) = Exporter::start(&settings(flags), Arc::clone(&metrics)).unwrap();
    (exporter, handle, metrics)
}

/// [`start`] against `collector`, trusting `pki`'s CA, plus `flags`.
fn start_trusting(
    collector: &TestCollector,
    pki: &Pki,
    flags: &[&str],
) -> (Exporter, ExportHandle, Arc<ExportMetrics>) {
    let url = collector.url();
    let mut all = vec![
        "--collector",
        &url,
        "--collector-ca",
        pki.ca.to_str().unwrap(),
    ];
    all.extend_from_slice(flags);
    start(&all)
}

/// Drops the pipeline's handle and lets the exporter shut down within `within`.
fn stop(exporter: Exporter, handle: ExportHandle, within: Duration) {
    drop(handle);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(exporter.finish(within, within + Duration::from_secs(10)));
}

fn state(tokens: Option<&[&str]>) -> Arc<Mutex<State>> {
    Arc::new(Mutex::new(State {
        tokens: tokens.map(|t| t.iter().map(|s| (*s).to_owned()).collect()),
        ..State::default()
    }))
}

fn stored(collector: &TestCollector) -> usize {
    collector.state.lock().unwrap().stored_exchanges()
}

#[test]
fn delivers_every_exchange_once_over_tls_with_token_and_zstd() {
    logs();
    let pki = Pki::new();
    let collector = TestCollector::start(
        &pki,
        "127.0.0.1:0".parse().unwrap(),
        false,
        state(Some(&["tok-1"])),
    );
    let token = pki.dir.path().join("token");
    std::fs::write(&token, "tok-1\n").unwrap();
    let (exporter, mut handle, metrics) = start_trusting(
        &collector,
        &pki,
        &[
            "--token-file",
            token.to_str().unwrap(),
            "--export-batch-max-exchanges",
            "10",
            "--export-batch-max-delay",
            "300ms",
        ],
    );
    let originals: Vec<_> = (1..=25).map(|n| exchange(n, 100)).collect();
    for ex in &originals {
        handle.offer(ex.clone(), &CLOCK);
    }
    wait_until(TIMEOUT, "25 exchanges stored", || stored(&collector) == 25);

    let st = collector.state.lock().unwrap();
    let mut calls: Vec<_> = st.calls.iter().map(|c| (c.sequence, c.exchanges)).collect();
    // Two batches closed by count, the last one by age (pushes in flight together may arrive
    // in any order).
    calls.sort_unstable();
    assert_eq!(calls, [(1, 10), (2, 10), (3, 5)]);
    for call in &st.calls {
        assert_eq!(call.encoding.as_deref(), Some("zstd"));
        assert_eq!(call.authorization.as_deref(), Some("Bearer tok-1"));
        assert_eq!(call.answer, Answer::Stored);
        assert!(!call.client_cert);
    }
    let instances: BTreeSet<_> = st
        .stored
        .keys()
        .map(|k| (k.0.clone(), k.1.clone()))
        .collect();
    assert_eq!(instances.len(), 1);
    assert_eq!(instances.first().unwrap().0, "node-test");
    // What the collector renders is byte for byte what the JSONL sink writes.
    let received: Vec<_> = st
        .stored
        .values()
        .flat_map(|b| b.exchanges.clone())
        .collect();
    assert_eq!(received.len(), originals.len());
    for (pb, original) in received.into_iter().zip(&originals) {
        let back = wire::from_proto(pb).unwrap();
        assert_eq!(
            har::entry_json_line(&back, &WallClock::with_offset_ns(0)),
            har::entry_json_line(original, &CLOCK)
        );
    }
    drop(st);

    let m = &metrics;
    wait_until(TIMEOUT, "queue empty", || m.queue_bytes() == 0);
    assert_eq!(m.exchanges_offered.load(Relaxed), 25);
    assert_eq!(m.exchanges_acked.load(Relaxed), 25);
    assert_eq!(m.batches_acked.load(Relaxed), 3);
    assert_eq!(m.retries.load(Relaxed), 0);
    assert!(m.connected.load(Relaxed));
    assert!(m.last_success_unix_ms.load(Relaxed) > 0);
    for reason in DropReason::ALL {
        assert_eq!(m.dropped_total(reason), 0, "{reason:?}");
    }
    let text = capture_daemon::telemetry::metrics::render_source(&*metrics);
    assert!(
        text.contains("capture_export_exchanges_acked_total 25\n"),
        "{text}"
    );
    assert!(!text.contains("tok-1"));
    stop(exporter, handle, Duration::from_secs(2));
}

/// A collector from before zstd export answers UNIMPLEMENTED to a zstd push: the exporter
/// sends that batch again as gzip at once, and every later one as gzip, saying so once.
#[test]
fn a_collector_without_zstd_is_sent_gzip() {
    logs();
    let pki = Pki::new();
    let old = Arc::new(Mutex::new(State {
        gzip_only: true,
        ..State::default()
    }));
    let collector = TestCollector::start(&pki, "127.0.0.1:0".parse().unwrap(), false, old);
    let (exporter, mut handle, metrics) = start_trusting(
        &collector,
        &pki,
        &[
            "--export-batch-max-exchanges",
            "4",
            "--export-max-in-flight",
            "1",
        ],
    );
    for n in 1..=12 {
        handle.offer(exchange(n, 300), &CLOCK);
    }
    wait_until(TIMEOUT, "12 exchanges stored", || stored(&collector) == 12);
    let st = collector.state.lock().unwrap();
    // The refused zstd pushes never reach the service: what it saw is all gzip, each once.
    assert_eq!(st.calls.len(), 3);
    assert!(
        st.calls
            .iter()
            .all(|c| c.encoding.as_deref() == Some("gzip") && c.answer == Answer::Stored)
    );
    drop(st);
    // The collector stores a batch before its answer reaches the exporter.
    wait_until(TIMEOUT, "12 exchanges acknowledged", || {
        metrics.exchanges_acked.load(Relaxed) == 12
    });
    assert_eq!(metrics.retries.load(Relaxed), 0);
    for reason in DropReason::ALL {
        assert_eq!(metrics.dropped_total(reason), 0, "{reason:?}");
    }
    let said = logs()
        .lines()
        .filter(|l| l.contains("the collector does not take zstd"))
        .count();
    assert_eq!(said, 1, "{}", logs());
    stop(exporter, handle, Duration::from_secs(2));
}

#[test]
fn batches_close_by_bytes_and_compression_can_be_off() {
    let pki = Pki::new();
    let collector = TestCollector::start(&pki, "127.0.0.1:0".parse().unwrap(), false, state(None));
    let (exporter, mut handle, _metrics) = start_trusting(
        &collector,
        &pki,
        &[
            "--export-batch-max-bytes",
            "4096",
            "--export-compression",
            "none",
            "--export-batch-max-delay",
            "200ms",
        ],
    );
    for n in 1..=9 {
        handle.offer(exchange(n, 1500), &CLOCK);
    }
    wait_until(TIMEOUT, "9 exchanges stored", || stored(&collector) == 9);
    let st = collector.state.lock().unwrap();
    // ~1.7 KB per exchange: two fit under 4096 bytes, a third does not.
    let mut calls: Vec<_> = st.calls.iter().map(|c| (c.sequence, c.exchanges)).collect();
    calls.sort_unstable();
    let sizes: Vec<_> = calls.iter().map(|c| c.1).collect();
    assert_eq!(sizes, [2, 2, 2, 2, 1]);
    for batch in st.stored.values() {
        let exchanges: usize = batch
            .exchanges
            .iter()
            .map(|e| prost::Message::encoded_len(e) + 3)
            .sum();
        assert!(exchanges <= 4096, "{exchanges}");
    }
    assert!(st.calls.iter().all(|c| c.encoding.is_none()));
    drop(st);
    stop(exporter, handle, Duration::from_secs(2));
}

#[test]
fn mtls_presents_the_client_certificate_and_unknown_cas_are_refused() {
    logs();
    let pki = Pki::new();
    let collector = TestCollector::start(&pki, "127.0.0.1:0".parse().unwrap(), true, state(None));
    let url = collector.url();
    let ca = pki.ca.to_str().unwrap();

    // Without a client certificate the handshake fails: nothing stored, retried, counted.
    let (exporter, mut handle, metrics) = start(&[
        "--collector",
        &url,
        "--collector-ca",
        ca,
        "--export-batch-max-delay",
        "10ms",
        "--export-backoff-max",
        "200ms",
    ]);
    handle.offer(exchange(1, 10), &CLOCK);
    wait_until(TIMEOUT, "retries without a client cert", || {
        metrics.retries.load(Relaxed) >= 2
    });
    assert!(!metrics.connected.load(Relaxed));
    stop(exporter, handle, Duration::from_millis(200));

    // A CA that did not sign the server's certificate: refused the same way.
    let other = Pki::new();
    let (exporter, mut handle, metrics) = start(&[
        "--collector",
        &url,
        "--collector-ca",
        other.ca.to_str().unwrap(),
        "--collector-cert",
        pki.client_cert.to_str().unwrap(),
        "--collector-key",
        pki.client_key.to_str().unwrap(),
        "--export-batch-max-delay",
        "10ms",
        "--export-backoff-max",
        "200ms",
    ]);
    handle.offer(exchange(2, 10), &CLOCK);
    wait_until(TIMEOUT, "retries with an unknown CA", || {
        metrics.retries.load(Relaxed) >= 2
    });
    stop(exporter, handle, Duration::from_millis(200));
    // The log says why, not just "transport error".
    let logs = logs();
    assert!(logs.contains("invalid peer certificate"), "{logs}");
    assert_eq!(stored(&collector), 0);
    assert!(collector.state.lock().unwrap().calls.is_empty());

    // With it: delivered, and the collector saw the certificate.
    let (exporter, mut handle, _metrics) = start(&[
        "--collector",
        &url,
        "--collector-ca",
        ca,
        "--collector-cert",
        pki.client_cert.to_str().unwrap(),
        "--collector-key",
        pki.client_key.to_str().unwrap(),
        "--export-batch-max-delay",
        "10ms",
    ]);
    handle.offer(exchange(3, 10), &CLOCK);
    wait_until(TIMEOUT, "stored with mTLS", || stored(&collector) == 1);
    assert!(collector.state.lock().unwrap().calls[0].client_cert);
    stop(exporter, handle, Duration::from_secs(1));
}

#[test]
fn without_a_spool_a_full_queue_drops_and_counts() {
    let addr = closed_port();
    let url = format!("http://{addr}");
    let (exporter, mut handle, metrics) = start(&[
        "--collector",
        &url,
        "--collector-insecure",
        "--export-batch-max-bytes",
        "4096",
        "--export-queue-max-bytes",
        "16384",
        "--export-batch-max-delay",
        "10ms",
    ]);
    for n in 1..=200 {
        handle.offer(exchange(n, 1000), &CLOCK);
        if n % 10 == 0 {
            // Let the exporter batch what it has (the queue is bounded either way).
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    let m = &metrics;
    assert!(m.queue_bytes() <= 16384, "{}", m.queue_bytes());
    let full = m.dropped_total(DropReason::QueueFull);
    assert!(full > 150, "queue_full {full}");
    stop(exporter, handle, Duration::from_millis(300));
    // Nothing vanished: dropped for a full queue, or at shutdown (no spool to keep them).
    assert_eq!(m.exchanges_acked.load(Relaxed), 0);
    assert_eq!(
        m.dropped_total(DropReason::QueueFull) + m.dropped_total(DropReason::Shutdown),
        200
    );
    let text = capture_daemon::telemetry::metrics::render_source(&*metrics);
    assert!(
        text.contains(&format!(
            "capture_export_dropped_total{{reason=\"queue_full\"}} {full}\n"
        )),
        "{text}"
    );
}

/// Exchanges in the spool directory, from the batch files' headers.
fn spooled_exchanges(dir: &std::path::Path) -> (u64, u64) {
    let (mut exchanges, mut bytes) = (0, 0);
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "batch") {
            let data = std::fs::read(&path).unwrap();
            exchanges += u64::from(u32::from_le_bytes(data[8..12].try_into().unwrap()));
            bytes += data.len() as u64;
        }
    }
    (exchanges, bytes)
}

#[test]
fn spooled_batches_survive_a_restart_and_are_stored_once() {
    let pki = Pki::new();
    let spool = tempfile::tempdir().unwrap();
    let spool_dir = spool.path().join("spool");
    let addr = closed_port();
    let url = format!("https://localhost:{}", addr.port());
    let flags = |extra: &[&'static str]| -> Vec<String> {
        let mut v: Vec<String> = [
            "--collector",
            &url,
            "--collector-ca",
            pki.ca.to_str().unwrap(),
            "--spool-dir",
            spool_dir.to_str().unwrap(),
            "--export-batch-max-bytes",
            "4096",
            "--export-queue-max-bytes",
            "16384",
            "--export-batch-max-delay",
            "10ms",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        v.extend(extra.iter().map(|s| (*s).to_owned()));
        v
    };

    // Run 1: the collector is down. Batches spill to the spool as memory fills, and the rest
    // is spooled at shutdown.
    let f = flags(&[]);
    let (exporter, mut handle, metrics) = start(&f.iter().map(String::as_str).collect::<Vec<_>>());
    for n in 1..=60 {
        // Give the exporter thread time to batch and spill what it was handed: a busy machine
        // must not turn this into a queue_full test.
        wait_until(TIMEOUT, "room in the queue", || {
            metrics.queue_bytes() < 12 * 1024
        });
        handle.offer(exchange(n, 700), &CLOCK);
        std::thread::sleep(Duration::from_millis(2));
    }
    wait_until(TIMEOUT, "spilling to the spool", || {
        metrics.batches_spooled.load(Relaxed) > 0
    });
    stop(exporter, handle, Duration::from_millis(500));
    let m = &metrics;
    for reason in DropReason::ALL {
        assert_eq!(m.dropped_total(reason), 0, "{reason:?}");
    }
    let (on_disk, bytes) = spooled_exchanges(&spool_dir);
    assert_eq!(on_disk, 60);
    assert_eq!(m.spool_bytes.load(Relaxed), bytes);

    // Run 2: the collector is back on the same port; a new exporter replays the spool, then
    // sends its own exchanges.
    let collector = TestCollector::start(&pki, addr, false, state(None));
    let (exporter, mut handle, metrics) = start(&f.iter().map(String::as_str).collect::<Vec<_>>());
    for n in 61..=65 {
        handle.offer(exchange(n, 700), &CLOCK);
    }
    wait_until(TIMEOUT, "65 exchanges stored", || stored(&collector) == 65);
    wait_until(TIMEOUT, "spool drained", || {
        metrics.spool_batches.load(Relaxed) == 0
    });
    stop(exporter, handle, Duration::from_secs(1));
    let st = collector.state.lock().unwrap();
    let mut pids: Vec<u32> = st
        .stored
        .values()
        .flat_map(|b| b.exchanges.iter().map(|e| e.pid))
        .collect();
    pids.sort_unstable();
    assert_eq!(pids, (1..=65).collect::<Vec<_>>(), "each exchange once");
    // The spooled batches kept the first run's instance id; the new ones have their own.
    let instances: BTreeSet<_> = st.stored.keys().map(|k| k.1.clone()).collect();
    assert_eq!(instances.len(), 2);
    assert_eq!(spooled_exchanges(&spool_dir), (0, 0));
    assert_eq!(metrics.exchanges_acked.load(Relaxed), 65);
}

#[test]
fn the_spool_cap_is_kept_and_what_it_refuses_is_counted() {
    let spool = tempfile::tempdir().unwrap();
    let addr = closed_port();
    let url = format!("http://{addr}");
    let cap: u64 = 12_000;
    let (exporter, mut handle, metrics) = start(&[
        "--collector",
        &url,
        "--collector-insecure",
        "--spool-dir",
        spool.path().to_str().unwrap(),
        "--spool-max-bytes",
        "12000",
        "--export-batch-max-bytes",
        "4096",
        "--export-queue-max-bytes",
        "16384",
        "--export-batch-max-delay",
        "10ms",
    ]);
    for n in 1..=100 {
        handle.offer(exchange(n, 700), &CLOCK);
        std::thread::sleep(Duration::from_millis(2));
    }
    let m = &metrics;
    wait_until(TIMEOUT, "spool_full drops", || {
        m.dropped_total(DropReason::SpoolFull) > 0
    });
    stop(exporter, handle, Duration::from_millis(300));
    let (on_disk, bytes) = spooled_exchanges(spool.path());
    assert!(bytes <= cap, "{bytes} > {cap}");
    assert!(m.spool_bytes.load(Relaxed) <= cap);
    let dropped: u64 = DropReason::ALL.iter().map(|r| m.dropped_total(*r)).sum();
    assert_eq!(
        on_disk + dropped,
        100,
        "spooled {on_disk}, dropped {dropped}"
    );
    assert!(m.dropped_total(DropReason::SpoolFull) > 0);
}
