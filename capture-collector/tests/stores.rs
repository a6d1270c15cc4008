//! The same behaviour from both stores, through the real binary: the embedded segment files and
//! a real PostgreSQL started for the test (`common::pg`). Then what only PostgreSQL does: two
//! replicas on one database (shared dedup, watch across replicas, one killed mid-stream),
//! row-level security refusing a cross-organisation read, and a `pg_dump` without a secret.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{
    collections::{BTreeMap, BTreeSet},
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use capture_collector::{
    metrics::Metrics,
    org::OrgName,
    storage::{Access, DbOptions, Location, Storage, StorageConfig},
};
use capture_model::{har, wire};
use capture_proto::v1::{self as pb};
use common::{pg::Postgres, *};
use tonic::Code;

const KEY_HEX: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

/// One store under test and the flags that name it.
struct Store {
    _pg: Option<Arc<Postgres>>,
    args: Vec<String>,
    tmp: tempfile::TempDir,
    location: Location,
    key: PathBuf,
    password_file: Option<PathBuf>,
}

impl Store {
    fn file() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        let key = key_file(tmp.path());
        Self {
            _pg: None,
            args: vec![
                "--store".into(),
                format!("file:{}", data.display()),
                "--encryption-key".into(),
                path(&key).into(),
            ],
            location: Location::File(data),
            tmp,
            key,
            password_file: None,
        }
    }

    fn postgres(pg: &Arc<Postgres>, db: &str) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let url = pg.database(db);
        let key = key_file(tmp.path());
        let password = pg.password_file();
        Self {
            _pg: Some(Arc::clone(pg)),
            args: vec![
                "--store".into(),
                url.clone(),
                "--db-password-file".into(),
                path(&password).into(),
                "--encryption-key".into(),
                path(&key).into(),
            ],
            location: Location::Postgres(url),
            tmp,
            key,
            password_file: Some(password),
        }
    }

    fn args(&self) -> Vec<&str> {
        self.args.iter().map(String::as_str).collect()
    }

    fn tls(&self) -> PathBuf {
        self.tmp.path().join("tls")
    }

    fn collector(&self, extra: &[&str]) -> Collector {
        Collector::start_in(&self.args(), &self.tls(), extra)
    }

    fn export(&self, org: &str) -> (serde_json::Value, String) {
        export_in(
            &self.args(),
            &self.tmp.path().join(format!("{org}.har")),
            org,
            &[],
        )
    }

    /// The store opened in this process, as the collector opens it.
    async fn open(&self, access: Access) -> Storage {
        let key = capture_collector::seal::SealKey::load(&self.key).unwrap();
        Storage::open(
            StorageConfig {
                location: self.location.clone(),
                flag: "--store".into(),
                key: Some(Arc::new(key)),
                key_flag: Some(self.key.clone()),
                segment_bytes: 1 << 20,
                db: DbOptions {
                    password_file: self.password_file.clone(),
                    max_connections: 4,
                    watch_poll: Duration::from_secs(1),
                },
            },
            Metrics::new(),
            access,
        )
        .await
        .unwrap()
    }
}

fn key_file(dir: &Path) -> PathBuf {
    let key = dir.join("key");
    std::fs::write(&key, KEY_HEX).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    key
}

fn both(test: &str) -> Vec<(&'static str, Store)> {
    let mut stores = vec![("file", Store::file())];
    if let Some(pg) = Postgres::start(false) {
        stores.push(("postgres", Store::postgres(&Arc::new(pg), test)));
    }
    stores
}

fn with_routing_key(mut b: pb::ExchangeBatch, key: &str) -> pb::ExchangeBatch {
    for e in &mut b.exchanges {
        e.routing_key = Some(key.into());
    }
    b
}

/// Push, dedup, export byte for byte as the daemon renders, tokens, revocation, isolation,
/// watch with a filter, models: the same answers from both stores.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_stores_behave_the_same() {
    for (name, store) in both("same") {
        let acme = token_in(&store.args(), "acme");
        let acme2 = token_in(&store.args(), "acme");
        let other = token_in(&store.args(), "other");
        let collector = store.collector(&[]);
        let channel = collector.channel().await;
        let mut client = ingest(&channel, &acme);

        // A watcher with a filter, opened before the pushes.
        let mut watcher = watch(&channel, &acme)
            .watch(pb::WatchRequest {
                routing_key: "blue".into(),
                ..pb::WatchRequest::default()
            })
            .await
            .unwrap()
            .into_inner();
        let mut other_watcher = watch(&channel, &other)
            .watch(pb::WatchRequest::default())
            .await
            .unwrap()
            .into_inner();

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
                },
                "{name}"
            );
        }
        let ack = client
            .push(batch("node-a", "run-1", 2, 100..120))
            .await
            .unwrap()
            .into_inner();
        assert!(ack.duplicate && ack.stored == 0, "{name}: {ack:?}");
        let ack = client
            .push(with_routing_key(
                batch("node-a", "run-2", 1, 10..12),
                "blue",
            ))
            .await
            .unwrap()
            .into_inner();
        assert!(!ack.duplicate && ack.stored == 2, "{name}");

        // The watcher sees only the routing key it asked for, in order.
        for want in [10, 11] {
            let got = tokio::time::timeout(Duration::from_secs(10), watcher.message())
                .await
                .unwrap_or_else(|_| panic!("{name}: watch timed out"))
                .unwrap()
                .unwrap();
            assert_eq!(got.daemon_id, "node-a", "{name}");
            assert_eq!(got.exchange.unwrap().pid, want, "{name}");
        }
        // The other organisation's watcher saw nothing of acme's.
        assert!(
            tokio::time::timeout(Duration::from_millis(1500), other_watcher.message())
                .await
                .is_err(),
            "{name}: a watcher saw another organisation's exchange"
        );

        // Export: every entry is the daemon's own line, in storage order.
        let (har_json, text) = store.export("acme");
        assert_eq!(
            exported_pids(&har_json),
            (0..12).collect::<Vec<_>>(),
            "{name}"
        );
        let lines: Vec<&str> = text
            .lines()
            .skip(1)
            .take(10)
            .map(|l| l.trim_end_matches(','))
            .collect();
        for (n, line) in (0..10).zip(lines) {
            assert_eq!(
                line,
                har::entry_json_line(&exchange(n), &CLOCK),
                "{name}: entry {n}"
            );
        }
        let out = run(&[
            &["export", "--org", "nobody", "--har", "/dev/null"][..],
            &store.args(),
        ]
        .concat());
        assert_eq!(out.status.code(), Some(2), "{name}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("--org nobody"),
            "{name}"
        );

        // Another organisation's token writes to, and exports, only its own organisation.
        ingest(&channel, &other)
            .push(batch("node-b", "run-1", 1, 50..52))
            .await
            .unwrap();
        assert_eq!(exported_pids(&store.export("other").0), [50, 51], "{name}");
        assert_eq!(exported_pids(&store.export("acme").0).len(), 12, "{name}");

        // Revocation takes effect on the next call; the organisation's other token still works.
        let mut args = vec!["token", "revoke", "--org", "acme"];
        args.extend(store.args());
        args.push(&acme[..8]);
        let out = run(&args);
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let err = client
            .push(batch("node-a", "run-1", 4, 20..21))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "{name}");
        ingest(&channel, &acme2)
            .push(batch("node-a", "run-1", 4, 20..21))
            .await
            .unwrap();
        let mut args = vec!["token", "list", "--org", "acme"];
        args.extend(store.args());
        let list = run(&args);
        let text = String::from_utf8_lossy(&list.stdout);
        assert_eq!(text.lines().count(), 3, "{name}: {text}");
        assert_eq!(text.matches("revoked").count(), 1, "{name}: {text}");
        drop(collector);

        // Models: per organisation, sealed, never read across organisations.
        let storage = store.open(Access::Read).await;
        let acme_org = OrgName::parse("acme").unwrap();
        let other_org = OrgName::parse("other").unwrap();
        storage
            .put_model(&acme_org, "noise.v1", b"model-of-acme-secret")
            .await
            .unwrap();
        assert_eq!(
            storage
                .get_model(&acme_org, "noise.v1")
                .await
                .unwrap()
                .as_deref(),
            Some(&b"model-of-acme-secret"[..]),
            "{name}"
        );
        assert_eq!(
            storage.get_model(&other_org, "noise.v1").await.unwrap(),
            None,
            "{name}"
        );
        storage
            .put_model(&acme_org, "noise.v1", b"v2")
            .await
            .unwrap();
        assert_eq!(
            storage
                .get_model(&acme_org, "noise.v1")
                .await
                .unwrap()
                .as_deref(),
            Some(&b"v2"[..]),
            "{name}"
        );
        assert!(storage.put_model(&acme_org, "../x", b"v").await.is_err());
        storage.close().await;
        if name == "file" {
            let data = store.tmp.path().join("data");
            let model = std::fs::read(data.join("models/acme/noise.v1")).unwrap();
            assert!(
                !model.windows(2).any(|w| w == b"v2"),
                "model stored in the clear"
            );
            // Copied into another organisation's place, it does not open there.
            std::fs::create_dir_all(data.join("models/other")).unwrap();
            std::fs::copy(
                data.join("models/acme/noise.v1"),
                data.join("models/other/noise.v1"),
            )
            .unwrap();
            let storage = store.open(Access::Read).await;
            assert!(storage.get_model(&other_org, "noise.v1").await.is_err());
            storage.close().await;
        }
    }
}

/// Retention removes what is older than the organisation's period, and counts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_removes_old_exchanges() {
    for (name, store) in both("retention") {
        let acme = token_in(&store.args(), "acme");
        let keep = token_in(&store.args(), "keep");
        let collector = store.collector(&[
            "--org-retention",
            "acme=5s",
            "--retention-interval",
            "1s",
            "--segment-bytes",
            "4096",
            "--metrics-addr",
            "127.0.0.1:0",
        ]);
        let channel = collector.channel().await;
        for seq in 1..=6 {
            let first = u32::try_from(seq).unwrap() * 4;
            ingest(&channel, &acme)
                .push(batch("node-a", "run-1", seq, first..first + 4))
                .await
                .unwrap();
        }
        ingest(&channel, &keep)
            .push(batch("node-a", "run-1", 1, 0..4))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_secs(6)).await;
        // A push after the old ones expired: it is kept.
        ingest(&channel, &acme)
            .push(batch("node-a", "run-1", 7, 100..101))
            .await
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        let metric = if name == "file" {
            "capture_collector_retention_segments_removed_total"
        } else {
            "capture_collector_retention_exchanges_removed_total"
        };
        loop {
            let pids = exported_pids(&store.export("acme").0);
            if pids == [100] {
                break;
            }
            assert!(Instant::now() < deadline, "{name}: still stored: {pids:?}");
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        assert_eq!(
            exported_pids(&store.export("keep").0),
            [0, 1, 2, 3],
            "{name}"
        );
        // The counter moves just after the delete commits: wait for it, then expect exactly.
        let want = if name == "file" { 6 } else { 24 };
        let removed = loop {
            let metrics = http_get(collector.metrics.unwrap(), "/metrics");
            let removed: u64 = metrics
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{metric} ")))
                .unwrap()
                .parse()
                .unwrap();
            if removed >= want || Instant::now() > deadline {
                break removed;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        // File: one segment a batch (4 exchanges of about 1.3 KiB past --segment-bytes 4096).
        assert_eq!(removed, want, "{name}");
    }
}

fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    text
}

fn postgres() -> Option<Arc<Postgres>> {
    Postgres::start(false).map(Arc::new)
}

/// Two collectors on one database: pushes to both at once, a watcher on one sees pushes to
/// the other, one is killed mid-stream and the daemon's retries go to the other; every
/// exchange is stored exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_one_database_and_survive_a_kill() {
    let Some(pg) = postgres() else { return };
    let store = Store::postgres(&pg, "replicas");
    let token = token_in(&store.args(), "acme");
    let mut a = store.collector(&[]);
    let b = store.collector(&["--watch-poll", "30s"]);
    let (ca, cb) = (a.channel().await, b.channel().await);

    // Watch on B, push on A: seen through the notification, not the 30 s poll.
    let mut watcher = watch(&cb, &token)
        .watch(pb::WatchRequest::default())
        .await
        .unwrap()
        .into_inner();
    ingest(&ca, &token)
        .push(batch("node-z", "run-1", 1, 900..902))
        .await
        .unwrap();
    for want in [900, 901] {
        let got = tokio::time::timeout(Duration::from_secs(5), watcher.message())
            .await
            .expect("the watcher on B saw A's push")
            .unwrap()
            .unwrap();
        assert_eq!(got.exchange.unwrap().pid, want);
    }
    // The same batch pushed to B is a duplicate: the dedup is the database's.
    let ack = ingest(&cb, &token)
        .push(batch("node-z", "run-1", 1, 900..902))
        .await
        .unwrap()
        .into_inner();
    assert!(ack.duplicate);

    // Two daemons: one exports to A, the other to B, at once; A is killed mid-stream.
    let batches: u64 = 200;
    let per_batch: u32 = 4;
    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let mut pushers = Vec::new();
    for lane in 0..8_u64 {
        let channel = if lane % 2 == 0 {
            ca.clone()
        } else {
            cb.clone()
        };
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
    loop {
        if acked.lock().unwrap().len() >= 30 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    a.kill9();
    for pusher in pushers {
        pusher.await.unwrap();
    }
    let acked_before = acked.lock().unwrap().clone();
    assert!(
        (acked_before.len() as u64) < batches,
        "A was killed after everything was acked"
    );

    // The daemon retries everything not acknowledged, and some that were, on B.
    let mut client = ingest(&cb, &token);
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

    let (har_json, _) = store.export("acme");
    let mut counts: BTreeMap<u64, u32> = BTreeMap::new();
    for pid in exported_pids(&har_json) {
        *counts.entry(pid).or_default() += 1;
    }
    let want: BTreeSet<u64> = (1..=batches)
        .flat_map(|s| (s * u64::from(per_batch))..(s + 1) * u64::from(per_batch))
        .chain([900, 901])
        .collect();
    assert_eq!(counts.keys().copied().collect::<BTreeSet<_>>(), want);
    assert!(
        counts.values().all(|&c| c == 1),
        "an exchange was stored twice"
    );
}

/// Row-level security: a session scoped to one organisation reads and writes none of
/// another's rows, even when it asks for them by name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row_level_security_refuses_cross_organisation_reads() {
    let Some(pg) = postgres() else { return };
    let store = Store::postgres(&pg, "rls");
    let a = token_in(&store.args(), "org-a");
    let b = token_in(&store.args(), "org-b");
    let collector = store.collector(&[]);
    let channel = collector.channel().await;
    ingest(&channel, &a)
        .push(batch("n", "r", 1, 0..3))
        .await
        .unwrap();
    ingest(&channel, &b)
        .push(batch("n", "r", 1, 3..8))
        .await
        .unwrap();
    drop(collector);
    let storage = store.open(Access::Read).await;
    storage
        .put_model(&OrgName::parse("org-b").unwrap(), "m", b"b's model")
        .await
        .unwrap();
    storage.close().await;

    let as_a = |sql: &str| pg.psql_as_app("rls", &["SET app.org = 'org-a'", sql]);
    // The collector's role sees org-a's rows only, whatever the query asks for.
    assert_eq!(as_a("SELECT count(*) FROM exchanges").unwrap().trim(), "3");
    assert_eq!(
        as_a("SELECT count(*) FROM exchanges WHERE org = 'org-b'")
            .unwrap()
            .trim(),
        "0"
    );
    for table in ["batches", "tokens", "models", "orgs"] {
        assert_eq!(
            as_a(&format!("SELECT count(*) FROM {table} WHERE org = 'org-b'"))
                .unwrap()
                .trim(),
            "0",
            "{table}"
        );
    }
    // Without an organisation it sees nothing.
    assert_eq!(
        pg.psql_as_app("rls", &["SELECT count(*) FROM exchanges"])
            .unwrap()
            .trim(),
        "0"
    );
    // Writing a row of another organisation is refused.
    let err = as_a("INSERT INTO models (org, name, payload) VALUES ('org-b', 'planted', '\\x00')")
        .unwrap_err();
    assert!(err.contains("row-level security"), "{err}");
    let err = as_a("UPDATE exchanges SET org = 'org-b'").unwrap_err();
    assert!(err.contains("row-level security"), "{err}");
    // The superuser (RLS does not apply to it) sees both: the rows are there.
    assert_eq!(pg.psql("rls", "SELECT count(*) FROM exchanges").trim(), "8");
}

/// Payloads are sealed before they reach PostgreSQL: a dump holds no header value, body or
/// token, and the rows' sealed payloads open under their own organisation only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_dump_holds_no_secret() {
    let Some(pg) = postgres() else { return };
    let store = Store::postgres(&pg, "dump");
    let token = token_in(&store.args(), "acme");
    let collector = store.collector(&[]);
    let channel = collector.channel().await;
    let mut b = batch("node-a", "run-1", 1, 0..5);
    for e in &mut b.exchanges {
        if let Some(r) = &mut e.request {
            r.headers.push(pb::Header {
                name: "x-secret-header".into(),
                value: "hunter2-header-value".into(),
            });
            r.body = Some(pb::Body {
                data: b"{\"card\":\"4111-1111-1111-1111-hunter2\"}".to_vec(),
                wire_size: 40,
                ..pb::Body::default()
            });
        }
    }
    ingest(&channel, &token).push(b).await.unwrap();
    drop(collector);
    let dump = pg.dump("dump");
    let text = String::from_utf8_lossy(&dump);
    // The dump is real: the rows and what is meant to be clear are there.
    assert!(text.contains("COPY public.exchanges"), "{text}");
    assert!(
        text.contains("checkout"),
        "the workload column is in the dump"
    );
    for secret in [
        "hunter2",
        "4111-1111",
        "x-secret-header",
        "orders.shop.svc",
        "curl/8.5.0",
        "req-0000",
        "page=",
        &token[4..],
    ] {
        assert!(
            !text.contains(secret),
            "{secret:?} is in the clear in the dump"
        );
    }
    // Nor hex-encoded (bytea dumps as hex).
    let hex: String = b"hunter2".iter().map(|b| format!("{b:02x}")).collect();
    assert!(!text.contains(&hex), "hunter2 is in the dump as hex");
    let (har_json, _) = store.export("acme");
    assert_eq!(exported_pids(&har_json), [0, 1, 2, 3, 4]);
    // A wrong key is refused before anything is read.
    std::fs::write(&store.key, "ff".repeat(32)).unwrap();
    let out = run(&[
        &["export", "--org", "acme", "--har", "/dev/null"][..],
        &store.args(),
    ]
    .concat());
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--encryption-key"));
}

/// Start-up on PostgreSQL: migrations are applied once even when replicas start together,
/// a key is required, and the password never reaches the logs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_start_up_migrates_and_needs_a_key() {
    let Some(pg) = postgres() else { return };
    let store = Store::postgres(&pg, "startup");
    let first = store.collector(&[]);
    let second = store.collector(&[]);
    assert_eq!(
        pg.psql(
            "startup",
            "SELECT version, success FROM _sqlx_migrations ORDER BY version"
        )
        .trim(),
        "1|t\n2|t"
    );
    drop((first, second));
    let url = pg.database("nokey");
    let out = run(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--dev-tls",
        path(&store.tls()),
        "--store",
        &url,
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--encryption-key"));
    // A bad password: a runtime failure that does not print the password.
    let bad = url.replace("capture@", "capture:wrong-password-123@");
    let out = run(&["token", "list", "--org", "acme", "--store", &bad]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("wrong-password-123"), "{stderr}");
    assert!(stderr.contains("***"), "{stderr}");
}

/// TLS to the database: `sslmode=verify-full` against the cluster's CA connects (and the
/// server says the collector's connections are encrypted); against another CA it is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_to_the_database_is_verified() {
    let Some(pg) = postgres() else { return };
    let url = pg.database("tls");
    let password = pg.password_file();
    let ca = pg.ca();
    let tls_url = format!(
        "{url}?sslmode=verify-full&sslrootcert={}&application_name=capture-tls",
        ca.display()
    );
    let out = run(&[
        "token",
        "create",
        "--org",
        "acme",
        "--store",
        &tls_url,
        "--db-password-file",
        path(&password),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tmp = tempfile::tempdir().unwrap();
    let key = key_file(tmp.path());
    let collector = Collector::start_in(
        &[
            "--store",
            &tls_url,
            "--db-password-file",
            path(&password),
            "--encryption-key",
            path(&key),
        ],
        &tmp.path().join("tls"),
        &[],
    );
    let ssl = pg.psql(
        "postgres",
        "SELECT bool_and(s.ssl), count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
         WHERE a.application_name = 'capture-tls'",
    );
    let (all_ssl, count) = ssl.trim().split_once('|').unwrap();
    assert_eq!(all_ssl, "t", "{ssl}");
    assert!(count.parse::<u32>().unwrap() >= 1, "{ssl}");
    drop(collector);
    // Another CA: the certificate does not verify, nothing connects.
    let other = capture_collector::tls::generate(&["localhost"]).unwrap();
    let other_ca = tmp.path().join("other-ca.pem");
    std::fs::write(&other_ca, other.ca_pem).unwrap();
    let bad_url = format!(
        "{url}?sslmode=verify-full&sslrootcert={}",
        other_ca.display()
    );
    let out = run(&[
        "token",
        "list",
        "--org",
        "acme",
        "--store",
        &bad_url,
        "--db-password-file",
        path(&password),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.to_lowercase().contains("certificate"), "{stderr}");
}

#[test]
fn store_urls_are_checked() {
    let out = run(&["token", "list", "--org", "acme", "--store", "mysql://x"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--store"));
    let out = run(&[
        "token",
        "list",
        "--org",
        "acme",
        "--data",
        "/tmp/x",
        "--store",
        "file:/tmp/y",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let out = run(&["token", "list", "--org", "acme"]);
    assert_eq!(out.status.code(), Some(2));
    let _ = wire::to_proto;
}

/// Token scopes, the same on both stores: every RPC with a token of each scope, a token
/// without the scope refused with PERMISSION_DENIED before its message is read, counted by
/// RPC and missing scope, and audited with the masked token; allowed reads audited with the
/// masked token too. A record from before scopes (no scopes field / NULL column) keeps ingest
/// and read, and `token list` shows every token's scopes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_scopes_gate_every_rpc_on_both_stores() {
    use capture_proto::v1::diff_client::DiffClient;
    let test = "scopes";
    for (name, store) in both(test) {
        let ingest_only = token_scoped(&store.args(), "acme", "");
        let read_only = token_scoped(&store.args(), "acme", "read");
        let admin_only = token_scoped(&store.args(), "acme", "admin");
        let both_scopes = token_scoped(&store.args(), "acme", "read,ingest");
        let legacy = token_scoped(&store.args(), "acme", "ingest");
        // Make the last one a record from before scopes existed.
        let legacy_masked = capture_collector::tokens::mask(&legacy);
        match &store.location {
            Location::File(dir) => {
                let file = dir.join("tokens.json");
                let mut json: serde_json::Value =
                    serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
                for t in json["tokens"].as_array_mut().unwrap() {
                    if t["masked"] == legacy_masked.as_str() {
                        t.as_object_mut().unwrap().remove("scopes").unwrap();
                    }
                }
                std::fs::write(&file, serde_json::to_vec(&json).unwrap()).unwrap();
            }
            Location::Postgres(_) => {
                store._pg.as_ref().unwrap().psql(
                    test,
                    &format!("UPDATE tokens SET scopes = NULL WHERE masked = '{legacy_masked}'"),
                );
            }
        }
        let listed = run(&[&["token", "list", "--org", "acme"][..], &store.args()].concat());
        let listed = String::from_utf8(listed.stdout).unwrap();
        let line = |token: &str| {
            let masked = capture_collector::tokens::mask(token);
            listed
                .lines()
                .find(|l| l.starts_with(&masked))
                .unwrap_or_else(|| panic!("{name}: {masked} not listed: {listed}"))
                .split_whitespace()
                .collect::<Vec<_>>()
        };
        assert!(listed.starts_with("TOKEN"), "{name}: {listed}");
        assert_eq!(line(&ingest_only)[2..], ["ingest", "active"], "{name}");
        assert_eq!(line(&read_only)[2..], ["read", "active"], "{name}");
        assert_eq!(line(&admin_only)[2..], ["admin", "active"], "{name}");
        assert_eq!(line(&both_scopes)[2..], ["ingest,read", "active"], "{name}");
        assert_eq!(
            line(&legacy)[2..],
            ["ingest,read", "(legacy)", "active"],
            "{name}"
        );
        // No token is printed by the listing.
        for t in [&ingest_only, &read_only, &admin_only, &both_scopes, &legacy] {
            assert!(!listed.contains(&t[8..]), "{name}: {listed}");
        }

        let collector = store.collector(&["--metrics-addr", "127.0.0.1:0"]);
        let channel = collector.channel().await;
        let tokens = [
            ("ingest", &ingest_only, [true, false, false]),
            ("read", &read_only, [false, true, true]),
            ("admin", &admin_only, [false, false, false]),
            ("ingest,read", &both_scopes, [true, true, true]),
            ("legacy", &legacy, [true, true, true]),
        ];
        let mut seq = 0;
        for (label, token, [may_push, may_watch, may_diff]) in tokens {
            seq += 1;
            let pushed = ingest(&channel, token)
                .push(batch("node-a", "run-1", seq, 0..1))
                .await;
            match (may_push, pushed) {
                (true, Ok(ack)) => assert_eq!(ack.into_inner().stored, 1, "{name} {label}"),
                (false, Err(s)) => {
                    assert_eq!(s.code(), Code::PermissionDenied, "{name} {label}: {s:?}");
                    assert!(s.message().contains("ingest scope"), "{name}: {s:?}");
                }
                (want, got) => panic!("{name} {label}: push allowed={want}, got {got:?}"),
            }
            let watched = watch(&channel, token)
                .watch(pb::WatchRequest::default())
                .await;
            match (may_watch, watched) {
                (true, Ok(_)) => {}
                (false, Err(s)) => {
                    assert_eq!(s.code(), Code::PermissionDenied, "{name} {label}: {s:?}");
                    assert!(s.message().contains("read scope"), "{name}: {s:?}");
                }
                (want, got) => panic!(
                    "{name} {label}: watch allowed={want}, got {:?}",
                    got.map(|_| ())
                ),
            }
            let diffed = DiffClient::with_interceptor(channel.clone(), bearer(token))
                .diff(pb::DiffRequest {
                    baseline: Some(pb::Selector {
                        namespace: "shop".into(),
                        ..pb::Selector::default()
                    }),
                    candidate: Some(pb::Selector {
                        namespace: "pay".into(),
                        ..pb::Selector::default()
                    }),
                    ..pb::DiffRequest::default()
                })
                .await;
            match (may_diff, diffed) {
                (true, Ok(report)) => {
                    assert!(
                        !report.into_inner().report_json.is_empty(),
                        "{name} {label}"
                    )
                }
                (false, Err(s)) => {
                    assert_eq!(s.code(), Code::PermissionDenied, "{name} {label}: {s:?}");
                }
                (want, got) => panic!("{name} {label}: diff allowed={want}, got {got:?}"),
            }
        }
        let metrics = http_get(collector.metrics.unwrap(), "/metrics");
        for (rpc, scope, n) in [
            ("push", "ingest", 2),
            ("push", "read", 0),
            ("watch", "read", 2),
            ("watch", "ingest", 0),
            ("diff", "read", 2),
            ("diff", "admin", 0),
        ] {
            let want = format!(
                "capture_collector_scope_denied_total{{rpc=\"{rpc}\",scope=\"{scope}\"}} {n}\n"
            );
            assert!(metrics.contains(&want), "{name}: {want} in {metrics}");
        }
        // The refusals and every read are audited with the masked token, never the token.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let logs = collector.logs();
        let audit: Vec<serde_json::Value> = logs
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["target"] == "audit")
            .collect();
        let events = |event: &str, token: &str| {
            let masked = capture_collector::tokens::mask(token);
            audit
                .iter()
                .filter(|v| v["event"] == event && v["token"] == masked.as_str())
                .count()
        };
        assert_eq!(events("scope_denied", &read_only), 1, "{name}: {logs}");
        assert_eq!(events("scope_denied", &ingest_only), 2, "{name}: {logs}");
        assert_eq!(events("scope_denied", &admin_only), 3, "{name}: {logs}");
        for t in [&read_only, &both_scopes, &legacy] {
            assert_eq!(events("watch_start", t), 1, "{name}: {logs}");
            assert_eq!(events("diff", t), 1, "{name}: {logs}");
        }
        for t in [&ingest_only, &read_only, &admin_only, &both_scopes, &legacy] {
            assert!(!logs.contains(&t[8..]), "{name}: a token in the log");
        }
    }
}
