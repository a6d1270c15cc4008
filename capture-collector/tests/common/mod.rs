//! Shared by the collector's tests and its benchmark: the real binary started as a child
//! (killed when dropped), tokens issued through its CLI, TLS clients trusting its dev CA, and
//! realistic exchanges.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod pg;

use capture_test_support::ChildProcess;
use std::{
    io::{BufRead as _, BufReader},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    sync::mpsc,
    time::Duration,
};

use capture_model::{
    clock::WallClock,
    exchange::{
        Body, ConnMeta, Exchange, Header, Headers, HttpVersion, Incomplete, Protocol, Request,
        Response, Role, Timing, Workload,
    },
    wire,
};
use capture_proto::v1::{self as pb, ingest_client::IngestClient, watch_client::WatchClient};
use tonic::{
    Request as TonicRequest, Status,
    metadata::MetadataValue,
    service::interceptor::InterceptedService,
    transport::{Certificate, Channel, ClientTlsConfig, Endpoint},
};

pub const BIN: &str = env!("CARGO_BIN_EXE_capture-collector");

/// The node clock the sample exchanges were captured with: 2024-05-01T12:00:00Z at
/// monotonic 5 s.
pub const CLOCK: WallClock = WallClock::with_offset_ns(1_714_564_800_000_000_000 - 5_000_000_000);

pub fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .output()
        .expect("run capture-collector")
}

/// Issues a token for `org` through the CLI.
pub fn token(data: &Path, org: &str) -> String {
    token_in(&["--data", path(data)], org)
}

/// Issues a token for `org` through the CLI, in the store named by `store` (`--data DIR`, or
/// `--store URL` and its flags), with the scopes `ingest` and `read`: these tests push and
/// watch with one token (the scope tests issue their own).
pub fn token_in(store: &[&str], org: &str) -> String {
    token_scoped(store, org, "ingest,read")
}

/// Issues a token for `org` with `scopes` (`--scope` as given; empty: the default).
pub fn token_scoped(store: &[&str], org: &str, scopes: &str) -> String {
    let mut args = vec!["token", "create", "--org", org];
    if !scopes.is_empty() {
        args.extend_from_slice(&["--scope", scopes]);
    }
    args.extend_from_slice(store);
    let out = run(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

pub fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A `capture-collector serve` child with dev TLS, on a port of its choosing.
pub struct Collector {
    pub child: ChildProcess,
    pub addr: SocketAddr,
    pub ca: PathBuf,
    pub metrics: Option<SocketAddr>,
    pub stderr: PathBuf,
}

impl Collector {
    pub fn start(data: &Path, tls: &Path, extra: &[&str]) -> Self {
        Self::start_in(&["--data", path(data)], tls, extra)
    }

    /// A collector on the store named by `store` (`--data DIR`, or `--store URL` and its
    /// flags); its log goes beside `tls`.
    pub fn start_in(store: &[&str], tls: &Path, extra: &[&str]) -> Self {
        let stderr = tls.with_extension(format!("stderr-{}", rand_suffix()));
        let mut child = ChildProcess::spawn(
            Command::new(BIN)
                .args(["serve", "--listen", "127.0.0.1:0", "--dev-tls", path(tls)])
                .args(store)
                .args(extra)
                .stdout(Stdio::piped())
                .stderr(std::fs::File::create(&stderr).unwrap()),
            "capture-collector serve",
        )
        .expect("spawn capture-collector serve");
        let stdout = child.child_mut().stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut ca = None;
        let mut metrics = None;
        loop {
            let line = match rx.recv_timeout(Duration::from_secs(30)) {
                Ok(line) => line,
                Err(_) => {
                    child.kill();
                    panic!(
                        "collector did not start: {}",
                        std::fs::read_to_string(&stderr).unwrap_or_default()
                    );
                }
            };
            if let Some(path) = line.strip_prefix("dev TLS CA certificate: ") {
                ca = Some(PathBuf::from(path));
            } else if let Some(url) = line.strip_prefix("metrics on http://") {
                metrics = Some(url.trim_end_matches("/metrics").parse().unwrap());
            } else if let Some(addr) = line.strip_prefix("listening on ") {
                return Self {
                    child,
                    addr: addr.parse().unwrap(),
                    ca: ca.expect("dev CA printed before the address"),
                    metrics,
                    stderr,
                };
            }
        }
    }

    pub fn url(&self) -> String {
        format!("https://localhost:{}", self.addr.port())
    }

    pub fn kill9(&mut self) {
        self.child.kill();
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    pub async fn channel(&self) -> Channel {
        tls_channel(self.addr, &self.ca).await
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.child.kill();
        let _ = std::fs::remove_file(&self.stderr);
    }
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher as _, RandomState};
    RandomState::new().hash_one(std::time::SystemTime::now())
}

pub async fn tls_channel(addr: SocketAddr, ca: &Path) -> Channel {
    let pem = std::fs::read(ca).unwrap();
    Endpoint::from_shared(format!("https://localhost:{}", addr.port()))
        .unwrap()
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

#[derive(Clone)]
pub struct Bearer(pub MetadataValue<tonic::metadata::Ascii>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut request: TonicRequest<()>) -> Result<TonicRequest<()>, Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}

pub fn bearer(token: &str) -> Bearer {
    Bearer(format!("Bearer {token}").parse().unwrap())
}

pub type Ingest = IngestClient<InterceptedService<Channel, Bearer>>;
pub type Watch = WatchClient<InterceptedService<Channel, Bearer>>;

pub fn ingest(channel: &Channel, token: &str) -> Ingest {
    IngestClient::with_interceptor(channel.clone(), bearer(token))
}

pub fn watch(channel: &Channel, token: &str) -> Watch {
    WatchClient::with_interceptor(channel.clone(), bearer(token))
}

fn h(name: &str, value: &str) -> Header {
    Header::new(name, value)
}

/// A realistic exchange (a JSON API call, about 1.2 KiB on the wire), numbered by `pid`, in
/// one of a few shapes: HTTP/1.1, HTTP/2, gRPC with trailers, incomplete without response,
/// binary body, IPv6.
pub fn exchange(n: u32) -> Exchange {
    let body = format!(
        r#"{{"order":{n},"items":[{{"sku":"book-{n}","qty":1,"price":"12.50"}}],"note":"{}"}}"#,
        "x".repeat(300)
    );
    let response_body = format!(
        r#"{{"id":{n},"status":"created","eta":"{}"}}"#,
        "y".repeat(400)
    );
    let start = 5_000_000_000 + u64::from(n) * 1_000_000;
    let mut ex = Exchange {
        protocol: Protocol::H1,
        request: Request {
            method: "POST".into(),
            target: format!("/api/orders?page={n}&sort=created%20desc"),
            version: HttpVersion::Http11,
            headers: vec![
                h("Host", "orders.shop.svc:8080"),
                h("User-Agent", "curl/8.5.0"),
                h("Content-Type", "application/json"),
                h("Content-Length", &body.len().to_string()),
                h("X-Request-Id", &format!("req-{n:08}")),
            ]
            .into(),
            headers_size: 187,
            body: Body {
                wire_size: body.len() as u64,
                data: body.into_bytes(),
                ..Body::default()
            },
            trailers: Headers::new(),
        },
        response: Some(Response {
            status: 201,
            reason: "Created".into(),
            version: HttpVersion::Http11,
            headers: vec![
                h("Content-Type", "application/json"),
                h("Content-Encoding", "gzip"),
                h("Location", &format!("/api/orders/{n}")),
            ]
            .into(),
            headers_size: 158,
            body: Body {
                wire_size: 120,
                data: response_body.into_bytes(),
                decoded_from: Some("gzip".into()),
                ..Body::default()
            },
            trailers: Headers::new(),
        }),
        timing: Timing {
            request_start_ns: start,
            request_end_ns: start + 250_000,
            response_start_ns: Some(start + 12_750_000),
            response_end_ns: Some(start + 13_000_000),
        },
        incomplete: None,
        conn: ConnMeta {
            src: Some("10.244.1.17:48122".parse().unwrap()),
            dst: Some("10.96.12.5:8080".parse().unwrap()),
            role: Some(Role::Client),
            id: format!("{n}:7:1").into(),
        },
        pid: n,
        workload: Workload {
            namespace: Some("shop".into()),
            pod: Some("checkout-7d9f8b6c5d-x2x4q".into()),
            container: Some("app".into()),
            owner_kind: Some("Deployment".into()),
            owner_name: Some("checkout".into()),
            node: Some("node-a".into()),
        }
        .into(),
        redacted: vec!["authorization".into()],
        routing_key: None,
        grpc: None,
        cgroup_id: 4242,
    };
    match n % 5 {
        1 => {
            ex.protocol = Protocol::H2;
            ex.request.version = HttpVersion::Http2;
            ex.request.headers = vec![
                h(":method", "POST"),
                h(":scheme", "https"),
                h(":authority", "api.shop:443"),
                h(":path", &ex.request.target.clone()),
            ]
            .into();
            if let Some(r) = &mut ex.response {
                r.version = HttpVersion::Http2;
                r.reason = String::new();
            }
        }
        2 => {
            ex.protocol = Protocol::Grpc;
            ex.request.version = HttpVersion::Http2;
            ex.request.target = "/shop.v1.Orders/Get".into();
            ex.request.body.data = vec![0, 0, 0, 0, 5, 8, 1, 18, 1, 0xff];
            if let Some(r) = &mut ex.response {
                r.version = HttpVersion::Http2;
                r.trailers = vec![h("grpc-status", "0"), h("grpc-message", "caf\u{e9}")].into();
            }
            ex.grpc = Some(capture_model::exchange::Grpc {
                service: "shop.v1.Orders".into(),
                method: "Get".into(),
                status: Some(0),
                message: None,
            });
            ex.routing_key = Some("canary".into());
        }
        3 => {
            ex.response = None;
            ex.incomplete = Some(Incomplete::NoResponse);
            ex.timing.response_start_ns = None;
            ex.timing.response_end_ns = None;
        }
        4 => {
            ex.conn.src = Some("[fd00::17]:48122".parse().unwrap());
            ex.conn.dst = Some("[fd00::5]:443".parse().unwrap());
            ex.conn.role = Some(Role::Server);
            std::sync::Arc::make_mut(&mut ex.workload).owner_name = Some("payments".into());
            std::sync::Arc::make_mut(&mut ex.workload).namespace = Some("pay".into());
        }
        _ => {}
    }
    ex
}

pub fn batch(
    daemon: &str,
    instance: &str,
    sequence: u64,
    pids: std::ops::Range<u32>,
) -> pb::ExchangeBatch {
    pb::ExchangeBatch {
        daemon_id: daemon.into(),
        instance_id: instance.into(),
        sequence,
        exchanges: pids.map(|n| wire::to_proto(&exchange(n), &CLOCK)).collect(),
    }
}

/// Exports `org` through the CLI and returns the parsed HAR and the raw text.
pub fn export(data: &Path, org: &str, extra: &[&str]) -> (serde_json::Value, String) {
    let har = data.with_extension(format!("{org}.har"));
    export_in(&["--data", path(data)], &har, org, extra)
}

/// Exports `org` from the store named by `store` through the CLI, via the file `har`.
pub fn export_in(
    store: &[&str],
    har: &Path,
    org: &str,
    extra: &[&str],
) -> (serde_json::Value, String) {
    let mut args = vec!["export", "--org", org, "--har", path(har)];
    args.extend_from_slice(store);
    args.extend_from_slice(extra);
    let out = run(&args);
    assert!(
        out.status.success(),
        "export: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(har).unwrap();
    let _ = std::fs::remove_file(har);
    (
        serde_json::from_str(&text).expect("the export is JSON"),
        text,
    )
}

/// The `pid`s of the exported entries, in order.
pub fn exported_pids(har: &serde_json::Value) -> Vec<u64> {
    har["log"]["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["_capture"]["pid"].as_u64().unwrap())
        .collect()
}
