//! The collector under abuse, through the real binary over real TLS: oversized, malformed and
//! undecodable batches; a flood of wrong tokens (rate-limited per peer, audited within a cap,
//! unknown and revoked refused alike); TLS handshakes that never finish; an organisation
//! flooding bad batches beside another that keeps ingesting and watching. Each test checks
//! the counters on `/metrics`, that nothing bad was stored, and the collector's peak RSS
//! (`VmHWM`) against the bound stated in docs/security-model.md.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{
    io::{Read as _, Write as _},
    net::{IpAddr, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use capture_proto::v1::{self as pb, ingest_client::IngestClient};
use common::*;
use prost::{Message as _, bytes::BufMut as _};
use tonic::{
    Code, Status,
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
    transport::{Certificate, Channel, ClientTlsConfig, Endpoint},
};

/// The peak RSS every abuse test must stay under (docs/security-model.md, "Collector under
/// abuse"): these tests run with `--max-batch-bytes` of at most 1 MiB.
const VM_HWM_BOUND_KIB: u64 = 128 * 1024;

fn vm_hwm_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn check_memory(collector: &Collector, test: &str) -> u64 {
    let hwm = vm_hwm_kib(collector.child.pid());
    eprintln!("{test}: collector VmHWM {hwm} KiB");
    assert!(
        hwm < VM_HWM_BOUND_KIB,
        "{test}: collector peak RSS {hwm} KiB, bound {VM_HWM_BOUND_KIB} KiB"
    );
    hwm
}

fn metrics(collector: &Collector) -> String {
    let mut stream = TcpStream::connect(collector.metrics.unwrap()).unwrap();
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    text
}

/// The value of the metric line starting with `series ` (name and labels).
fn metric(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("{series} not in {text}"))
        .trim()
        .parse()
        .unwrap()
}

/// The audit lines of the collector's log.
fn audit_lines(collector: &Collector) -> Vec<serde_json::Value> {
    collector
        .logs()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["target"] == "audit")
        .collect()
}

/// A TLS channel to the collector from the local address `from` (127.0.0.x: another peer).
async fn channel_from(collector: &Collector, from: IpAddr) -> Channel {
    let pem = std::fs::read(&collector.ca).unwrap();
    Endpoint::from_shared(format!("https://localhost:{}", collector.addr.port()))
        .unwrap()
        .local_address(Some(from))
        .tls_config(
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(pem))
                .domain_name("localhost"),
        )
        .unwrap()
        .connect()
        .await
        .expect("TLS connect")
}

/// Sends raw bytes as the `Ingest.Push` request message.
#[derive(Clone, Copy, Default)]
struct Raw;

struct RawEncoder;
struct AckDecoder;

impl Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for AckDecoder {
    type Item = pb::PushAck;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<pb::PushAck>, Status> {
        pb::PushAck::decode(src)
            .map(Some)
            .map_err(|e| Status::internal(e.to_string()))
    }
}

impl Codec for Raw {
    type Encode = Vec<u8>;
    type Decode = pb::PushAck;
    type Encoder = RawEncoder;
    type Decoder = AckDecoder;

    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }

    fn decoder(&mut self) -> AckDecoder {
        AckDecoder
    }
}

async fn push_raw(channel: &Channel, token: &str, bytes: Vec<u8>) -> Result<pb::PushAck, Status> {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready()
        .await
        .map_err(|e| Status::unknown(e.to_string()))?;
    let mut request = tonic::Request::new(bytes);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    grpc.unary(
        request,
        http::uri::PathAndQuery::from_static("/capture.v1.Ingest/Push"),
        Raw,
    )
    .await
    .map(tonic::Response::into_inner)
}

/// A batch of `n` exchanges whose request bodies make it about `n * 10 KiB` encoded.
fn big_batch(sequence: u64, n: u32) -> pb::ExchangeBatch {
    let mut b = batch("node-big", "run-1", sequence, 0..n);
    for e in &mut b.exchanges {
        if let Some(body) = e.request.as_mut().and_then(|r| r.body.as_mut()) {
            body.data = vec![b'x'; 10 * 1024];
        }
    }
    b
}

/// Oversized, too many exchanges, malformed and undecodable batches: each refused with a clear
/// status before anything is stored, counted by reason; the connection carries on and a
/// good batch after them is stored; the export holds the good batch only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_batches_are_refused_counted_and_store_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let token = token(&data, "acme");
    let collector = Collector::start(
        &data,
        &tmp.path().join("tls"),
        &[
            "--max-batch-bytes",
            "65536",
            "--max-batch-exchanges",
            "8",
            "--metrics-addr",
            "127.0.0.1:0",
        ],
    );
    let channel = collector.channel().await;
    let mut client = IngestClient::with_interceptor(channel.clone(), bearer(&token))
        .max_encoding_message_size(64 << 20);

    // Past --max-batch-bytes (about 200 KiB): OUT_OF_RANGE from the decoder.
    let too_big = big_batch(1, 20);
    assert!(too_big.encoded_len() > 65536);
    let s = client.push(too_big).await.unwrap_err();
    assert_eq!(s.code(), Code::OutOfRange, "{s:?}");
    // Past --max-batch-exchanges.
    let s = client
        .push(batch("node-a", "run-1", 1, 0..9))
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
    assert!(s.message().contains("--max-batch-exchanges"), "{s:?}");
    // Malformed: sequence 0, no daemon id, an exchange without its request.
    let mut zero = batch("node-a", "run-1", 1, 0..1);
    zero.sequence = 0;
    let mut anonymous = batch("node-a", "run-1", 1, 0..1);
    anonymous.daemon_id.clear();
    let mut headless = batch("node-a", "run-1", 1, 0..2);
    headless.exchanges[1].request = None;
    for (bad, says) in [
        (zero, "sequence"),
        (anonymous, "daemon_id"),
        (headless, "exchange 1"),
    ] {
        let s = client.push(bad).await.unwrap_err();
        assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
        assert!(s.message().contains(says), "{says}: {s:?}");
    }
    // Not protobuf at all: a truncated varint, an invalid wire type, a length past the end.
    for garbage in [vec![0x18, 0xff], vec![0x0f, 0x01], vec![0x0a, 0x7f, b'x']] {
        let s = push_raw(&channel, &token, garbage).await.unwrap_err();
        assert_eq!(s.code(), Code::Internal, "{s:?}");
        assert!(s.message().contains("decode"), "{s:?}");
    }
    // A good batch, on the same connection, afterwards.
    let ack = client
        .push(batch("node-a", "run-1", 1, 0..3))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ack.stored, 3);
    let text = metrics(&collector);
    for (reason, n) in [
        ("batch_too_large", 1),
        ("too_many_exchanges", 1),
        ("malformed", 3),
        ("invalid_protobuf", 3),
        ("storage_error", 0),
    ] {
        assert_eq!(
            metric(
                &text,
                &format!("capture_collector_batches_rejected_total{{reason=\"{reason}\"}}")
            ),
            n,
            "{reason}"
        );
    }
    assert_eq!(metric(&text, "capture_collector_batches_stored_total"), 1);
    assert_eq!(metric(&text, "capture_collector_exchanges_stored_total"), 3);
    check_memory(&collector, "bad batches");
    drop(collector);
    let (har, _) = export(&data, "acme", &[]);
    assert_eq!(exported_pids(&har), vec![0, 1, 2]);
}

/// A flood of wrong tokens from one address: after --auth-failure-burst refusals its calls
/// are refused unread (RESOURCE_EXHAUSTED), even with a good token, while another address
/// pushes as usual; every refusal is counted, and audited up to
/// --audit-refusals-per-second, the rest counted as suppressed and announced by the next
/// line. Unknown and revoked tokens get the same answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_wrong_tokens_is_rate_limited_per_peer_and_its_audit_capped() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let good = token(&data, "acme");
    let revoked = token(&data, "acme");
    let out = run(&[
        "token",
        "revoke",
        "--data",
        path(&data),
        "--org",
        "acme",
        &revoked,
    ]);
    assert!(out.status.success());
    let collector = Collector::start(
        &data,
        &tmp.path().join("tls"),
        &[
            "--auth-failure-burst",
            "5",
            "--auth-failures-per-minute",
            "6",
            "--audit-refusals-per-second",
            "3",
            "--metrics-addr",
            "127.0.0.1:0",
        ],
    );
    let attacker = channel_from(&collector, "127.0.0.1".parse().unwrap()).await;
    // Unknown and revoked: the same code and message.
    let unknown = format!("cap_{}", "A".repeat(43));
    let a = ingest(&attacker, &unknown)
        .push(batch("node-a", "run-1", 1, 0..1))
        .await
        .unwrap_err();
    let b = ingest(&attacker, &revoked)
        .push(batch("node-a", "run-1", 1, 0..1))
        .await
        .unwrap_err();
    assert_eq!((a.code(), a.message()), (b.code(), b.message()));
    assert_eq!(a.code(), Code::Unauthenticated);

    let started = Instant::now();
    let mut unauthenticated = 2;
    let mut limited = 0;
    for i in 0..60_u32 {
        let wrong = format!("cap_{:0>43}", i);
        let s = ingest(&attacker, &wrong)
            .push(batch("node-a", "run-1", 1, 0..1))
            .await
            .unwrap_err();
        match s.code() {
            Code::Unauthenticated => unauthenticated += 1,
            Code::ResourceExhausted => limited += 1,
            other => panic!("{other:?}: {s:?}"),
        }
    }
    let elapsed = started.elapsed().as_secs();
    // 5 in a row, then one more every 10 s (6 a minute).
    assert!(
        (5..=5 + 1 + elapsed / 10).contains(&unauthenticated),
        "{unauthenticated} refused as unauthenticated in {elapsed} s"
    );
    assert_eq!(unauthenticated + limited, 62);
    // The good token from the limited address is refused unread too...
    let s = ingest(&attacker, &good)
        .push(batch("node-a", "run-1", 1, 0..1))
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::ResourceExhausted, "{s:?}");
    limited += 1;
    // ...and from another address it works.
    let other = channel_from(&collector, "127.0.0.2".parse().unwrap()).await;
    let ack = ingest(&other, &good)
        .push(batch("node-a", "run-1", 1, 0..2))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ack.stored, 2);

    // One more refusal after a quiet second writes a line and says how many were left out.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let _ = ingest(&attacker, &unknown)
        .push(batch("node-a", "run-1", 1, 0..1))
        .await
        .unwrap_err();
    limited += 1;
    let text = metrics(&collector);
    let rejected: u64 = ["unknown", "revoked", "malformed"]
        .iter()
        .map(|r| {
            metric(
                &text,
                &format!("capture_collector_auth_rejected_total{{reason=\"{r}\"}}"),
            )
        })
        .sum();
    assert_eq!(rejected, unauthenticated);
    assert_eq!(
        metric(&text, "capture_collector_auth_rate_limited_total"),
        limited
    );
    let refusals = unauthenticated + limited;
    let suppressed = metric(&text, "capture_collector_audit_suppressed_total");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let audit = audit_lines(&collector);
    let written = audit
        .iter()
        .filter(|v| v["event"] == "auth_rejected" || v["event"] == "auth_rate_limited")
        .count() as u64;
    assert_eq!(written + suppressed, refusals, "{audit:?}");
    assert!(suppressed > 0);
    let announced: u64 = audit
        .iter()
        .filter(|v| v["event"] == "audit_suppressed")
        .map(|v| v["suppressed"].as_u64().unwrap())
        .sum();
    // Every suppression is announced by the line after it (the last refusal came after a
    // quiet second, so nothing is left unannounced).
    assert_eq!(announced, suppressed, "{audit:?}");
    // No more than 3 refusal lines in any one second (the loop took `elapsed` seconds).
    assert!(
        written <= 3 * (elapsed + 3),
        "{written} lines in {elapsed} s"
    );
    assert!(!collector.logs().contains(&good[8..]));
    check_memory(&collector, "wrong tokens");
}

/// Connections that never finish the TLS handshake: each is cut at --tls-handshake-timeout
/// and counted; while they are open a good client connects and pushes; past
/// --max-pending-handshakes new connections are closed unanswered and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_tls_handshakes_time_out_and_do_not_stop_a_good_client() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let token = token(&data, "acme");
    let collector = Collector::start(
        &data,
        &tmp.path().join("tls"),
        &[
            "--tls-handshake-timeout",
            "2s",
            "--max-pending-handshakes",
            "64",
            "--metrics-addr",
            "127.0.0.1:0",
        ],
    );
    let open = |n: usize| -> Vec<TcpStream> {
        (0..n)
            .map(|i| {
                let mut s = TcpStream::connect(collector.addr).unwrap();
                // Half say nothing, half start a ClientHello and stop.
                if i % 2 == 1 {
                    s.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc])
                        .unwrap();
                }
                s
            })
            .collect()
    };
    let stalled = open(50);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        metric(
            &metrics(&collector),
            "capture_collector_tls_handshakes_pending"
        ),
        50
    );
    // A good client beside them.
    let channel = collector.channel().await;
    let ack = ingest(&channel, &token)
        .push(batch("node-a", "run-1", 1, 0..2))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ack.stored, 2);
    // Each stalled connection is closed by the collector at the timeout.
    let started = Instant::now();
    for mut s in stalled {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0_u8; 64];
        match s.read(&mut buf) {
            Ok(0) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            other => panic!("a stalled handshake was not cut: {other:?}"),
        }
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    let text = metrics(&collector);
    assert_eq!(
        metric(&text, "capture_collector_tls_handshake_timeouts_total"),
        50
    );
    assert_eq!(metric(&text, "capture_collector_tls_handshakes_pending"), 0);

    // Past the cap: 80 stalled, 16 of them closed unanswered at once.
    let stalled = open(80);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let text = metrics(&collector);
    assert_eq!(
        metric(&text, "capture_collector_tls_handshakes_refused_total"),
        16
    );
    assert_eq!(
        metric(&text, "capture_collector_tls_handshakes_pending"),
        64
    );
    drop(stalled);
    // Closed by the client: failures, not timeouts; the slots come back.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let text = metrics(&collector);
    assert_eq!(metric(&text, "capture_collector_tls_handshakes_pending"), 0);
    assert_eq!(
        metric(&text, "capture_collector_tls_handshake_failures_total"),
        64
    );
    let channel = collector.channel().await;
    let ack = ingest(&channel, &token)
        .push(batch("node-a", "run-1", 2, 0..1))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ack.stored, 1);
    check_memory(&collector, "stalled handshakes");
}

/// One organisation floods the collector with bad batches (oversized, malformed, not
/// protobuf) from several connections while another organisation's client pushes and
/// watches: every good batch is acknowledged and streamed, nothing of the flood is stored,
/// and memory stays under the bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_organisation_flooding_bad_batches_leaves_another_unaffected() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let good = token(&data, "acme");
    let evil = token(&data, "evil");
    let collector = Collector::start(
        &data,
        &tmp.path().join("tls"),
        &[
            "--max-batch-bytes",
            "1048576",
            "--max-concurrent-pushes",
            "2",
            "--metrics-addr",
            "127.0.0.1:0",
        ],
    );
    let stop = Arc::new(AtomicBool::new(false));
    let refused = Arc::new(AtomicU64::new(0));
    let too_big = big_batch(1, 120);
    assert!(too_big.encoded_len() > 1 << 20);
    // Just under the cap, and malformed in its last exchange: read and decoded whole, then
    // refused.
    let mut heavy = big_batch(1, 80);
    assert!(heavy.encoded_len() < 1 << 20);
    heavy.exchanges[79].request = None;
    let mut flooders = Vec::new();
    for f in 0..4_u64 {
        let channel = collector.channel().await;
        let (stop, refused, evil, too_big, heavy) = (
            Arc::clone(&stop),
            Arc::clone(&refused),
            evil.clone(),
            too_big.clone(),
            heavy.clone(),
        );
        flooders.push(tokio::spawn(async move {
            let mut client = IngestClient::with_interceptor(channel.clone(), bearer(&evil))
                .max_encoding_message_size(64 << 20);
            let mut i = 0_u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let result = match (i + f) % 4 {
                    0 => client.push(too_big.clone()).await.map(drop),
                    3 => client.push(heavy.clone()).await.map(drop),
                    1 => {
                        let mut b = batch("node-evil", "run-1", i, 0..4);
                        b.exchanges[2].timing = None;
                        client.push(b).await.map(drop)
                    }
                    _ => push_raw(&channel, &evil, vec![0x0a, 0xff, 0xff, 0xff, 0x0f])
                        .await
                        .map(drop),
                };
                let s = result.expect_err("a bad batch was accepted");
                assert!(
                    matches!(
                        s.code(),
                        Code::OutOfRange | Code::InvalidArgument | Code::Internal
                    ),
                    "{s:?}"
                );
                refused.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let channel = collector.channel().await;
    let mut watcher = watch(&channel, &good)
        .watch(pb::WatchRequest::default())
        .await
        .unwrap()
        .into_inner();
    let mut client = ingest(&channel, &good);
    let started = Instant::now();
    for seq in 1..=30_u32 {
        let ack = client
            .push(batch(
                "node-a",
                "run-1",
                u64::from(seq),
                seq * 5..seq * 5 + 5,
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(ack.stored, 5);
    }
    let mut seen = Vec::new();
    while seen.len() < 150 {
        let item = tokio::time::timeout(Duration::from_secs(10), watcher.message())
            .await
            .expect("the watcher starved")
            .unwrap()
            .unwrap();
        assert_eq!(item.skipped, 0);
        seen.push(item.exchange.unwrap().pid);
    }
    let good_elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    for f in flooders {
        f.await.unwrap();
    }
    assert_eq!(seen, (5..155).collect::<Vec<u32>>());
    let refused = refused.load(Ordering::Relaxed);
    eprintln!("{refused} bad batches refused while 30 good ones went through in {good_elapsed:?}");
    assert!(
        refused >= 30,
        "the flood was too thin to mean anything: {refused}"
    );
    let text = metrics(&collector);
    let counted: u64 = ["batch_too_large", "malformed", "invalid_protobuf"]
        .iter()
        .map(|r| {
            metric(
                &text,
                &format!("capture_collector_batches_rejected_total{{reason=\"{r}\"}}"),
            )
        })
        .sum();
    assert_eq!(counted, refused);
    assert_eq!(metric(&text, "capture_collector_batches_stored_total"), 30);
    // Four flooders and a good client on two push slots: some waited.
    let queued = metric(&text, "capture_collector_pushes_queued_total");
    eprintln!("{queued} pushes waited for a slot");
    assert!(queued > 0);
    check_memory(&collector, "bad-batch flood");
    drop(collector);
    let (har, _) = export(&data, "acme", &[]);
    assert_eq!(exported_pids(&har), (5..155).collect::<Vec<u64>>());
    let (har, _) = export(&data, "evil", &[]);
    assert!(exported_pids(&har).is_empty());
}

#[test]
fn the_bound_is_the_documented_one() {
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/security-model.md"
    ))
    .unwrap();
    assert!(
        doc.contains(&format!("{} MiB", VM_HWM_BOUND_KIB / 1024)),
        "docs/security-model.md does not state the {} MiB bound",
        VM_HWM_BOUND_KIB / 1024
    );
}
