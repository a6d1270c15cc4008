//! The real `capture-collector` binary, over real TLS, with real tonic clients: acks and
//! deduplication, authentication and revocation, plaintext refusal, organisation isolation,
//! kill -9 and restart, encryption at rest, export, watch, limits and exit codes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{
    collections::{BTreeMap, BTreeSet},
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::TcpStream,
    os::unix::fs::PermissionsExt as _,
    process::{Command, Stdio},
    sync::{Arc, Mutex, mpsc},
    time::Duration,
};

use capture_model::{clock::WallClock, har, wire};
use capture_proto::v1::{self as pb, ingest_client::IngestClient};
use common::*;
use tonic::Code;

fn dirs() -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let tls = tmp.path().join("tls");
    (tmp, data, tls)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_is_acked_deduplicated_and_exported_as_the_daemon_renders_it() {
    let (_tmp, data, tls) = dirs();
    let token = token(&data, "acme");
    let collector = Collector::start(&data, &tls, &[]);
    let mut client = ingest(&collector.channel().await, &token);

    for (seq, pids) in [(1, 0..4), (2, 4..9), (3, 9..10)] {
        let ack = client
            .push(batch("node-a", "run-1", seq, pids.clone()))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            ack,
            pb::PushAck {
                sequence: seq,
                duplicate: false,
                stored: pids.len() as u32
            }
        );
    }
    // A retry of a stored batch, even with other content, stores nothing.
    let ack = client
        .push(batch("node-a", "run-1", 2, 100..120))
        .await
        .unwrap()
        .into_inner();
    assert!(ack.duplicate && ack.stored == 0, "{ack:?}");
    // Another run of the same daemon restarts its sequences: not a duplicate.
    let ack = client
        .push(batch("node-a", "run-2", 1, 10..11))
        .await
        .unwrap()
        .into_inner();
    assert!(!ack.duplicate && ack.stored == 1);

    // Export while the server runs.
    let (har_json, text) = export(&data, "acme", &[]);
    assert_eq!(har_json["log"]["version"], "1.2");
    assert_eq!(har_json["log"]["creator"]["name"], "capture-collector");
    assert_eq!(exported_pids(&har_json), (0..11).collect::<Vec<_>>());
    // Each entry line is byte for byte what the daemon's JSONL sink writes.
    let lines: Vec<&str> = text
        .lines()
        .skip(1)
        .take(11)
        .map(|l| l.trim_end_matches(','))
        .collect();
    for (n, line) in (0..11).zip(lines) {
        assert_eq!(
            line,
            har::entry_json_line(&exchange(n), &CLOCK),
            "entry {n}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_missing_and_revoked_tokens_are_refused_and_store_nothing() {
    let (_tmp, data, tls) = dirs();
    let good = token(&data, "acme");
    let other = token(&data, "acme");
    let collector = Collector::start(&data, &tls, &["--metrics-addr", "127.0.0.1:0"]);
    let channel = collector.channel().await;

    // Wrong token of the right form, a garbage token, no token at all.
    let mut forged = good.clone().into_bytes();
    forged[20] = if forged[20] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).unwrap();
    for bad in [forged.as_str(), "cap_nonsense", "Basic dXNlcjpwYXNz"] {
        let err = ingest(&channel, bad)
            .push(batch("node-a", "run-1", 1, 0..2))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "{bad}");
    }
    let err = IngestClient::new(channel.clone())
        .push(batch("node-a", "run-1", 1, 0..2))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);

    ingest(&channel, &good)
        .push(batch("node-a", "run-1", 1, 0..2))
        .await
        .unwrap();
    // Revoked while the server runs: refused on the next call, no restart.
    let out = run(&[
        "token",
        "revoke",
        "--data",
        path(&data),
        "--org",
        "acme",
        &good[..8],
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = ingest(&channel, &good)
        .push(batch("node-a", "run-1", 2, 2..4))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    // The other token of the organisation still works.
    ingest(&channel, &other)
        .push(batch("node-a", "run-1", 3, 4..5))
        .await
        .unwrap();

    let (har_json, _) = export(&data, "acme", &[]);
    assert_eq!(exported_pids(&har_json), [0, 1, 4]);

    // Audit lines name the refusals, never a token.
    let logs = collector.logs();
    assert!(logs.contains("auth_rejected"), "{logs}");
    for t in [&good, &other, &forged] {
        assert!(!logs.contains(&t[8..]), "a token reached the log");
    }
    let metrics = http_get(collector.metrics.unwrap(), "/metrics");
    assert!(
        metrics.contains("capture_collector_auth_rejected_total{reason=\"revoked\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("capture_collector_auth_rejected_total{reason=\"unknown\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("capture_collector_auth_rejected_total{reason=\"missing\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("capture_collector_auth_rejected_total{reason=\"malformed\"} 2"),
        "{metrics}"
    );
}

fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_clients_are_refused() {
    let (_tmp, data, tls) = dirs();
    let token = token(&data, "acme");
    let collector = Collector::start(&data, &tls, &[]);

    // A plaintext gRPC client: the HTTP/2 preface is not a TLS ClientHello.
    let plain = tonic::transport::Endpoint::from_shared(format!("http://{}", collector.addr))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(5));
    let result = match plain.connect().await {
        Ok(channel) => ingest(&channel, &token)
            .push(batch("node-a", "run-1", 1, 0..1))
            .await
            .map(|_| ()),
        Err(e) => Err(tonic::Status::unavailable(e.to_string())),
    };
    assert!(result.is_err(), "a plaintext push was accepted");

    // Raw bytes: the answer is a TLS alert or nothing, never an HTTP/2 frame.
    let mut stream = TcpStream::connect(collector.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    assert!(
        answer.is_empty() || answer[0] == 0x15,
        "plaintext got an answer: {answer:02x?}"
    );

    // Nothing was stored, and TLS clients are still served.
    ingest(&collector.channel().await, &token)
        .push(batch("node-a", "run-1", 1, 7..8))
        .await
        .unwrap();
    let (har_json, _) = export(&data, "acme", &[]);
    assert_eq!(exported_pids(&har_json), [7]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn organisations_cannot_see_or_write_each_other() {
    let (_tmp, data, tls) = dirs();
    let a = token(&data, "org-a");
    let b = token(&data, "org-b");
    let collector = Collector::start(&data, &tls, &[]);
    let channel = collector.channel().await;

    let mut watch_a = watch(&channel, &a)
        .watch(pb::WatchRequest::default())
        .await
        .unwrap()
        .into_inner();
    let mut watch_b = watch(&channel, &b)
        .watch(pb::WatchRequest::default())
        .await
        .unwrap()
        .into_inner();

    // Same daemon id and sequence in both organisations: neither is a duplicate of the other.
    ingest(&channel, &a)
        .push(batch("node-a", "run-1", 1, 0..3))
        .await
        .unwrap();
    let ack = ingest(&channel, &b)
        .push(batch("node-a", "run-1", 1, 100..101))
        .await
        .unwrap()
        .into_inner();
    assert!(!ack.duplicate);

    let mut seen_a = Vec::new();
    while seen_a.len() < 3 {
        let msg = tokio::time::timeout(Duration::from_secs(10), watch_a.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        seen_a.push(msg.exchange.unwrap().pid);
    }
    let msg = tokio::time::timeout(Duration::from_secs(10), watch_b.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(seen_a, [0, 1, 2]);
    assert_eq!(msg.exchange.unwrap().pid, 100, "B saw an exchange of A");
    // Nothing more arrives on either side.
    assert!(
        tokio::time::timeout(Duration::from_millis(500), watch_a.message())
            .await
            .is_err()
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(500), watch_b.message())
            .await
            .is_err()
    );

    let (har_a, _) = export(&data, "org-a", &[]);
    let (har_b, _) = export(&data, "org-b", &[]);
    assert_eq!(exported_pids(&har_a), [0, 1, 2]);
    assert_eq!(exported_pids(&har_b), [100]);
    // A token of A cannot revoke B's through A's name.
    let out = run(&[
        "token",
        "revoke",
        "--data",
        path(&data),
        "--org",
        "org-a",
        &b,
    ]);
    assert_eq!(out.status.code(), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_filters_and_strips_bodies_and_ends_on_revoke() {
    let (_tmp, data, tls) = dirs();
    let token = token(&data, "acme");
    let collector = Collector::start(&data, &tls, &[]);
    let channel = collector.channel().await;
    let mut by_workload = watch(&channel, &token)
        .watch(pb::WatchRequest {
            namespace: "pay".into(),
            workload: "payments".into(),
            headers_only: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut by_key = watch(&channel, &token)
        .watch(pb::WatchRequest {
            routing_key: "canary".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    // Shapes by pid % 5: 2 is gRPC with routing key "canary", 4 is the "pay/payments" one.
    ingest(&channel, &token)
        .push(batch("node-a", "run-1", 1, 0..10))
        .await
        .unwrap();
    for want in [4, 9] {
        let ex = by_workload
            .message()
            .await
            .unwrap()
            .unwrap()
            .exchange
            .unwrap();
        assert_eq!(ex.pid, want);
        let request = ex.request.unwrap();
        let body = request.body.unwrap();
        assert!(body.data.is_empty() && body.wire_size > 0);
        assert!(!request.headers.is_empty());
    }
    for want in [2, 7] {
        let ex = by_key.message().await.unwrap().unwrap().exchange.unwrap();
        assert_eq!(ex.pid, want);
        assert!(!ex.request.unwrap().body.unwrap().data.is_empty());
    }
    let out = run(&[
        "token",
        "revoke",
        "--data",
        path(&data),
        "--org",
        "acme",
        &token,
    ]);
    assert!(out.status.success());
    let end = tokio::time::timeout(Duration::from_secs(5), by_key.message())
        .await
        .expect("the stream ends within seconds of the revoke");
    assert_eq!(end.unwrap_err().code(), Code::Unauthenticated);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_watcher_is_told_what_it_missed_and_ingest_goes_on() {
    let (_tmp, data, tls) = dirs();
    let token = token(&data, "acme");
    let collector = Collector::start(
        &data,
        &tls,
        &["--watch-buffer", "8", "--metrics-addr", "127.0.0.1:0"],
    );
    let channel = collector.channel().await;
    // A separate connection, so its flow control window fills up on its own.
    let mut stream = watch(&collector.channel().await, &token)
        .watch(pb::WatchRequest::default())
        .await
        .unwrap()
        .into_inner();
    let mut client = ingest(&channel, &token);
    let total: u32 = 4000;
    for seq in 0..u64::from(total / 100) {
        let first = u32::try_from(seq).unwrap() * 100;
        tokio::time::timeout(
            Duration::from_secs(10),
            client.push(batch("node-a", "run-1", seq + 1, first..first + 100)),
        )
        .await
        .expect("ingest is not held back by the watcher")
        .unwrap();
    }
    let mut received = 0_u64;
    let mut skipped = 0_u64;
    while received + skipped < u64::from(total) {
        let msg = tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        skipped += msg.skipped;
        received += u64::from(msg.exchange.is_some());
    }
    assert_eq!(received + skipped, u64::from(total));
    assert!(skipped > 0, "the watcher never lagged");
    let metrics = http_get(collector.metrics.unwrap(), "/metrics");
    assert!(
        metrics.contains(&format!("capture_collector_watch_lagged_total {skipped}")),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_mid_stream_and_restarted_every_exchange_is_stored_once() {
    let (_tmp, data, tls) = dirs();
    let token = token(&data, "acme");
    let mut collector = Collector::start(&data, &tls, &["--segment-bytes", "65536"]);
    let batches: u64 = 300;
    let per_batch: u32 = 4;
    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let channel = collector.channel().await;

    // Eight pushers, each with its own share of the sequences, pushing as fast as acks come.
    let mut pushers = Vec::new();
    for lane in 0..8_u64 {
        let mut client = ingest(&channel, &token);
        let acked = Arc::clone(&acked);
        pushers.push(tokio::spawn(async move {
            for seq in (1..=batches).filter(|s| s % 8 == lane) {
                let first = u32::try_from(seq).unwrap() * per_batch;
                match client
                    .push(batch("node-a", "run-1", seq, first..first + per_batch))
                    .await
                {
                    Ok(_) => {
                        acked.lock().unwrap().insert(seq);
                    }
                    Err(_) => return,
                }
            }
        }));
    }
    // Kill -9 once some, not all, batches are acknowledged.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let n = acked.lock().unwrap().len();
        if n >= 40 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "only {n} batches acknowledged within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    collector.kill9();
    for pusher in pushers {
        pusher.await.unwrap();
    }
    let acked_before: BTreeSet<u64> = acked.lock().unwrap().clone();
    assert!(
        (acked_before.len() as u64) < batches,
        "the collector was killed after everything was acked"
    );

    // Restart and redeliver everything not acknowledged, plus some that were.
    let collector = Collector::start(&data, &tls, &["--segment-bytes", "65536"]);
    let mut client = ingest(&collector.channel().await, &token);
    let mut duplicates = 0;
    for seq in 1..=batches {
        if acked_before.contains(&seq) && seq % 3 != 0 {
            continue;
        }
        let first = u32::try_from(seq).unwrap() * per_batch;
        let ack = client
            .push(batch("node-a", "run-1", seq, first..first + per_batch))
            .await
            .unwrap()
            .into_inner();
        if acked_before.contains(&seq) {
            assert!(ack.duplicate, "acked batch {seq} was stored again");
        }
        duplicates += u32::from(ack.duplicate);
    }
    assert!(duplicates > 0);

    let (har_json, _) = export(&data, "acme", &[]);
    let mut counts: BTreeMap<u64, u32> = BTreeMap::new();
    for pid in exported_pids(&har_json) {
        *counts.entry(pid).or_default() += 1;
    }
    let want: BTreeSet<u64> = (1..=batches)
        .flat_map(|s| (s * u64::from(per_batch))..(s + 1) * u64::from(per_batch))
        .collect();
    assert_eq!(counts.keys().copied().collect::<BTreeSet<_>>(), want);
    assert!(
        counts.values().all(|&c| c == 1),
        "an exchange was stored twice"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_at_rest_and_needs_the_right_key() {
    let (tmp, data, tls) = dirs();
    let key = tmp.path().join("key");
    std::fs::write(&key, [7_u8; 32]).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    // A key others can read is refused.
    let out = Command::new(BIN)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data",
            path(&data),
            "--dev-tls",
            path(&tls),
        ])
        .args(["--encryption-key", path(&key)])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--encryption-key"));
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();

    let token = token(&data, "acme");
    let collector = Collector::start(&data, &tls, &["--encryption-key", path(&key)]);
    let mut ex = exchange(1);
    ex.request.body.data = b"password=hunter2-very-secret".to_vec();
    ex.request.headers.push("X-Api-Key", "sk-live-abcdef");
    let secret_batch = pb::ExchangeBatch {
        daemon_id: "node-secret".into(),
        instance_id: "run-1".into(),
        sequence: 1,
        exchanges: vec![wire::to_proto(&ex, &CLOCK)],
    };
    ingest(&collector.channel().await, &token)
        .push(secret_batch)
        .await
        .unwrap();
    drop(collector);

    for entry in walk(&data.join("orgs")) {
        let bytes = std::fs::read(&entry).unwrap();
        for needle in [&b"hunter2"[..], b"sk-live", b"orders.shop", b"node-secret"] {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle),
                "{} holds plaintext",
                entry.display()
            );
        }
    }
    // Without the key, or with another: refused with exit 2, no garbage.
    let har = tmp.path().join("out.har");
    let out = run(&[
        "export",
        "--data",
        path(&data),
        "--org",
        "acme",
        "--har",
        path(&har),
    ]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let wrong = tmp.path().join("wrong");
    std::fs::write(&wrong, [8_u8; 32]).unwrap();
    std::fs::set_permissions(&wrong, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = run(&[
        "export",
        "--data",
        path(&data),
        "--org",
        "acme",
        "--har",
        path(&har),
        "--encryption-key",
        path(&wrong),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not the key"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!har.exists());
    // A server without the key refuses to start on encrypted data.
    let out = Command::new(BIN)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data",
            path(&data),
            "--dev-tls",
            path(&tls),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));

    let (har_json, _) = export(&data, "acme", &["--encryption-key", path(&key)]);
    let entries = har_json["log"]["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(
        entries[0]["request"]["postData"]["text"],
        "password=hunter2-very-secret"
    );
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_refuse_and_count() {
    let (_tmp, data, tls) = dirs();
    let token = token(&data, "acme");
    let collector = Collector::start(
        &data,
        &tls,
        &[
            "--max-batch-bytes",
            "16384",
            "--max-batch-exchanges",
            "8",
            "--metrics-addr",
            "127.0.0.1:0",
        ],
    );
    let mut client = ingest(&collector.channel().await, &token);
    let err = client
        .push(batch("node-a", "run-1", 1, 0..9))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("--max-batch-exchanges"),
        "{}",
        err.message()
    );
    let mut big = batch("node-a", "run-1", 1, 0..1);
    big.exchanges[0]
        .request
        .as_mut()
        .unwrap()
        .body
        .as_mut()
        .unwrap()
        .data = vec![b'a'; 20_000];
    let err = client.push(big.clone()).await.unwrap_err();
    assert_eq!(err.code(), Code::OutOfRange, "{err:?}");
    // Compressed, the same batch is a few hundred bytes: the limit is on what it decompresses
    // to, and the answer is the same (not RESOURCE_EXHAUSTED, which a daemon would retry).
    let mut zstd = ingest(&collector.channel().await, &token)
        .send_compressed(tonic::codec::CompressionEncoding::Zstd);
    let err = zstd.push(big).await.unwrap_err();
    assert_eq!(err.code(), Code::OutOfRange, "{err:?}");
    let mut malformed = batch("node-a", "run-1", 1, 0..1);
    malformed.exchanges[0].protocol = 42;
    let err = client.push(malformed).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = client
        .push(batch("node-a", "run-1", 0, 0..1))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    // The connection is still good, and a zstd batch within the limits is stored.
    client
        .push(batch("node-a", "run-1", 1, 0..8))
        .await
        .unwrap();
    let ack = zstd
        .push(batch("node-a", "run-1", 2, 0..8))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ack.stored, 8);

    let metrics = http_get(collector.metrics.unwrap(), "/metrics");
    for line in [
        "capture_collector_batches_rejected_total{reason=\"too_many_exchanges\"} 1",
        "capture_collector_batches_rejected_total{reason=\"batch_too_large\"} 2",
        "capture_collector_batches_rejected_total{reason=\"malformed\"} 2",
        "capture_collector_batches_stored_total 2",
        "capture_collector_exchanges_stored_total 16",
    ] {
        assert!(metrics.contains(line), "{line} not in {metrics}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watch_command_prints_lines_and_har_entries() {
    let (tmp, data, tls) = dirs();
    let token = token(&data, "acme");
    let token_file = tmp.path().join("token");
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    let collector = Collector::start(&data, &tls, &["--metrics-addr", "127.0.0.1:0"]);
    let spawn = |extra: &[&str]| {
        Command::new(BIN)
            .args([
                "watch",
                "--collector",
                &collector.url(),
                "--token-file",
                path(&token_file),
            ])
            .args(["--ca", path(&collector.ca)])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut lines_child = spawn(&["--namespace", "shop"]);
    let mut json_child = spawn(&["--json", "--workload", "payments"]);
    // Both streams are subscribed once the collector counts them, not after a guessed delay.
    let metrics_addr = collector.metrics.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let metrics = http_get(metrics_addr, "/metrics");
        if metrics.lines().any(|l| l == "capture_collector_watchers 2") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the two watch streams did not subscribe within 30 s: {metrics}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    ingest(&collector.channel().await, &token)
        .push(batch("node-a", "run-1", 1, 0..5))
        .await
        .unwrap();
    let lines = line_reader(lines_child.stdout.take().unwrap());
    let next_line = |rx: &mpsc::Receiver<String>, what: &str| {
        rx.recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("no {what} from watch within 30 s: {e}"))
    };
    let first = next_line(&lines, "first line");
    assert_eq!(
        first,
        "12:00:00.000  shop/checkout  POST http://orders.shop.svc:8080/api/orders?page=0&sort=created%20desc  201  13.0 ms"
    );
    let second = next_line(&lines, "second line");
    assert!(
        second.starts_with(
            "12:00:00.001  shop/checkout  POST https://api.shop:443/api/orders?page=1"
        ),
        "{second}"
    );
    let json = line_reader(json_child.stdout.take().unwrap());
    let entry = next_line(&json, "JSON entry");
    let from_wire = wire::from_proto(wire::to_proto(&exchange(4), &CLOCK)).unwrap();
    assert_eq!(
        entry,
        har::entry_json_line(&from_wire, &WallClock::with_offset_ns(0))
    );
    assert_eq!(entry, har::entry_json_line(&exchange(4), &CLOCK));
    let _ = lines_child.kill();
    let _ = json_child.kill();
    let _ = lines_child.wait();
    let _ = json_child.wait();

    // A revoked token: exit 1 with a message that says so.
    run(&[
        "token",
        "revoke",
        "--data",
        path(&data),
        "--org",
        "acme",
        &token,
    ]);
    let out = spawn(&[]).wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("refused the token"));
}

#[test]
fn usage_errors_exit_2_and_name_the_flag() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let d = path(&data);
    let cases: &[(&[&str], &str)] = &[
        (&["serve", "--data", d, "--dev-tls", d], "--listen"),
        (
            &["serve", "--listen", "nowhere", "--data", d, "--dev-tls", d],
            "--listen",
        ),
        (
            &["serve", "--listen", "127.0.0.1:0", "--data", d],
            "--tls-cert",
        ),
        (
            &[
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--data",
                d,
                "--tls-cert",
                d,
            ],
            "--tls-key",
        ),
        (
            &[
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--data",
                d,
                "--dev-tls",
                d,
                "--max-batch-bytes",
                "5",
            ],
            "--max-batch-bytes",
        ),
        (
            &[
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--data",
                d,
                "--dev-tls",
                d,
                "--segment-bytes",
                "x",
            ],
            "--segment-bytes",
        ),
        (
            &[
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--data",
                d,
                "--tls-cert",
                "/nonexistent",
                "--tls-key",
                "/nonexistent",
            ],
            "--tls-cert",
        ),
        (
            &["token", "create", "--data", d, "--org", "Bad/Name"],
            "--org",
        ),
        (
            &[
                "export",
                "--data",
                d,
                "--org",
                "nobody",
                "--har",
                "/dev/null",
            ],
            "--data",
        ),
        (
            &[
                "watch",
                "--collector",
                "http://127.0.0.1:1",
                "--token-file",
                d,
            ],
            "--collector",
        ),
        (
            &[
                "watch",
                "--collector",
                "https://127.0.0.1:1",
                "--token-file",
                "/nonexistent",
            ],
            "--token-file",
        ),
        (&["frobnicate"], "frobnicate"),
    ];
    for (args, flag) in cases {
        let out = run(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains(flag),
            "{args:?} does not name {flag}: {stderr}"
        );
    }
    token(&data, "acme");
    token(&data, "acme");
    let out = run(&["token", "revoke", "--data", d, "--org", "acme", "cap_"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("2 tokens"));
    let out = run(&[
        "export",
        "--data",
        d,
        "--org",
        "nobody",
        "--har",
        "/dev/null",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--org nobody"));
    let list = run(&["token", "list", "--data", d, "--org", "acme"]);
    assert!(list.status.success());
    let text = String::from_utf8_lossy(&list.stdout);
    assert_eq!(text.lines().count(), 3, "{text}");
    assert!(text.contains('…') && text.contains("active"));
    let out = run(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_watch_streams_and_exits_cleanly() {
    let (_tmp, data, tls) = dirs();
    let token = token(&data, "acme");
    let mut collector = Collector::start(&data, &tls, &[]);
    let channel = collector.channel().await;
    let mut stream = watch(&channel, &token)
        .watch(pb::WatchRequest::default())
        .await
        .unwrap()
        .into_inner();
    ingest(&channel, &token)
        .push(batch("node-a", "run-1", 1, 0..1))
        .await
        .unwrap();
    assert!(stream.message().await.unwrap().is_some());
    let pid = nix::unistd::Pid::from_raw(i32::try_from(collector.child.pid()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let end = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("the watch stream ends on shutdown");
    assert_eq!(end.unwrap_err().code(), Code::Unavailable);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let exit = loop {
        if let Some(exit) = collector.child.try_wait().unwrap() {
            break exit;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the collector did not exit on SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(exit.code(), Some(0), "{}", collector.logs());
}

/// The lines of a child's output, read on a thread, so that a test waits for each with a
/// deadline instead of blocking for ever on a silent child.
fn line_reader(out: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}
