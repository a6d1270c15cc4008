//! What the exporter tests run against: certificates made for the test (rcgen), an in-process
//! collector implementing `Ingest` over real TLS (or over an in-memory pipe for the tests on
//! tokio's paused clock), and sample exchanges.

use std::{
    collections::{BTreeMap, VecDeque},
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use capture_daemon::{config::Config, output::export::ExportSettings};
use capture_model::{
    clock::WallClock,
    exchange::{
        Body, ConnMeta, Exchange, Header, Headers, HttpVersion, Protocol, Request, Response, Role,
        Timing, Workload,
    },
};
use capture_proto::v1::{self, ingest_server::IngestServer};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use tokio_stream::StreamExt as _;
use tonic::{
    Code, Request as GrpcRequest, Response as GrpcResponse, Status,
    codec::CompressionEncoding,
    transport::{Certificate, Channel, Endpoint, Identity, Server, ServerTlsConfig, Uri},
};

/// A node whose monotonic clock started at 2024-05-01T00:00:00Z.
pub const CLOCK: WallClock = WallClock::with_offset_ns(1_714_521_600_000_000_000);

/// A CA, a server certificate for `localhost`/`127.0.0.1` and a client certificate, in files.
pub struct Pki {
    pub dir: tempfile::TempDir,
    pub ca: PathBuf,
    pub ca_pem: String,
    pub server_cert_pem: String,
    pub server_key_pem: String,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl Pki {
    pub fn new() -> Self {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "capture exporter test CA");
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();

        let leaf = |names: Vec<String>, usage: ExtendedKeyUsagePurpose| {
            let mut params = CertificateParams::new(names).unwrap();
            params
                .distinguished_name
                .push(DnType::CommonName, "capture test leaf");
            params.extended_key_usages = vec![usage];
            let key = KeyPair::generate().unwrap();
            let cert = params.signed_by(&key, &ca).unwrap();
            (cert.pem(), key.serialize_pem())
        };
        let (server_cert_pem, server_key_pem) = leaf(
            vec!["localhost".into(), "127.0.0.1".into()],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let (client_cert_pem, client_key_pem) = leaf(
            vec!["node-test".into()],
            ExtendedKeyUsagePurpose::ClientAuth,
        );
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        let ca_pem = ca.pem();
        Self {
            ca: write("ca.pem", &ca_pem),
            client_cert: write("client.pem", &client_cert_pem),
            client_key: write("client.key", &client_key_pem),
            ca_pem,
            server_cert_pem,
            server_key_pem,
            dir,
        }
    }
}

/// How the test collector answered one push.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    Stored,
    Duplicate,
    Refused(Code),
}

/// One push the test collector received.
#[derive(Clone, Debug)]
pub struct Call {
    pub at: tokio::time::Instant,
    pub sequence: u64,
    pub exchanges: usize,
    pub encoding: Option<String>,
    pub authorization: Option<String>,
    pub client_cert: bool,
    pub answer: Answer,
}

/// A scripted failure for the next push.
#[derive(Clone, Debug)]
pub enum Fail {
    /// Answer this status, store nothing.
    With(Code),
    /// Store the batch, then answer UNAVAILABLE (an acknowledgement lost on the way).
    LoseAck,
}

/// What the test collector stored and saw.
#[derive(Default)]
pub struct State {
    /// Batches by (daemon id, instance id, sequence), stored once each.
    pub stored: BTreeMap<(String, String, u64), v1::ExchangeBatch>,
    pub calls: Vec<Call>,
    pub fail: VecDeque<Fail>,
    /// Tokens accepted as `Bearer <token>`; `None`: no authentication.
    pub tokens: Option<Vec<String>>,
    /// How long each push takes before it is answered (a slow disk).
    pub delay: Duration,
    /// Pushes being handled now, and the most at once.
    pub active: usize,
    pub max_active: usize,
    /// Decode gzip only, like a collector from before zstd export (read when it starts).
    pub gzip_only: bool,
}

impl State {
    pub fn stored_exchanges(&self) -> usize {
        self.stored.values().map(|b| b.exchanges.len()).sum()
    }
}

pub type Shared = Arc<Mutex<State>>;

#[derive(Clone)]
struct Ingest(Shared);

#[tonic::async_trait]
impl v1::ingest_server::Ingest for Ingest {
    async fn push(
        &self,
        request: GrpcRequest<v1::ExchangeBatch>,
    ) -> Result<GrpcResponse<v1::PushAck>, Status> {
        let header = |name: &str| {
            request
                .metadata()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let encoding = header("grpc-encoding");
        let authorization = header("authorization");
        let client_cert = request.peer_certs().is_some_and(|c| !c.is_empty());
        let batch = request.into_inner();
        let delay = {
            let mut state = self.0.lock().unwrap();
            state.active += 1;
            state.max_active = state.max_active.max(state.active);
            state.delay
        };
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let mut state = self.0.lock().unwrap();
        state.active -= 1;
        let mut call = Call {
            at: tokio::time::Instant::now(),
            sequence: batch.sequence,
            exchanges: batch.exchanges.len(),
            encoding,
            authorization: authorization.clone(),
            client_cert,
            answer: Answer::Stored,
        };
        if let Some(tokens) = &state.tokens {
            let ok = authorization
                .as_deref()
                .and_then(|a| a.strip_prefix("Bearer "))
                .is_some_and(|t| tokens.iter().any(|k| k == t));
            if !ok {
                call.answer = Answer::Refused(Code::Unauthenticated);
                state.calls.push(call);
                return Err(Status::unauthenticated("unknown or revoked token"));
            }
        }
        let fail = state.fail.pop_front();
        if let Some(Fail::With(code)) = fail {
            call.answer = Answer::Refused(code);
            state.calls.push(call);
            return Err(Status::new(code, "scripted failure"));
        }
        let key = (
            batch.daemon_id.clone(),
            batch.instance_id.clone(),
            batch.sequence,
        );
        let sequence = batch.sequence;
        let duplicate = state.stored.contains_key(&key);
        let stored = if duplicate {
            call.answer = Answer::Duplicate;
            0
        } else {
            let n = batch.exchanges.len() as u32;
            state.stored.insert(key, batch);
            n
        };
        if matches!(fail, Some(Fail::LoseAck)) {
            call.answer = Answer::Refused(Code::Unavailable);
            state.calls.push(call);
            return Err(Status::unavailable("scripted: acknowledgement lost"));
        }
        state.calls.push(call);
        Ok(GrpcResponse::new(v1::PushAck {
            sequence,
            duplicate,
            stored,
        }))
    }
}

fn service(state: &Shared) -> IngestServer<Ingest> {
    let gzip_only = state.lock().unwrap().gzip_only;
    let service =
        IngestServer::new(Ingest(Arc::clone(state))).accept_compressed(CompressionEncoding::Gzip);
    if gzip_only {
        service
    } else {
        service.accept_compressed(CompressionEncoding::Zstd)
    }
}

/// A collector on 127.0.0.1 over real TLS, on its own thread and runtime.
pub struct TestCollector {
    pub addr: SocketAddr,
    pub state: Shared,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TestCollector {
    /// Serves on `addr` (port 0: any). `client_ca`: require a client certificate from it.
    pub fn start(pki: &Pki, addr: SocketAddr, client_ca: bool, state: Shared) -> Self {
        let listener = std::net::TcpListener::bind(addr).unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let mut tls = ServerTlsConfig::new().identity(Identity::from_pem(
            &pki.server_cert_pem,
            &pki.server_key_pem,
        ));
        if client_ca {
            tls = tls.client_ca_root(Certificate::from_pem(&pki.ca_pem));
        }
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let svc = service(&state);
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let incoming = tonic::transport::server::TcpIncoming::from(listener);
                Server::builder()
                    .tls_config(tls)
                    .unwrap()
                    .serve_with_incoming_shutdown(svc, incoming, async {
                        let _ = stopped.await;
                    })
                    .await
                    .unwrap();
            });
        });
        Self {
            addr,
            state,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    pub fn url(&self) -> String {
        format!("https://localhost:{}", self.addr.port())
    }

    pub fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for TestCollector {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A collector in this runtime reached through in-memory pipes, for the paused clock (real
/// sockets would let the clock jump while bytes are in flight).
pub fn in_memory_collector(state: &Shared) -> Channel {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<tokio::io::DuplexStream>();
    let incoming =
        tokio_stream::wrappers::UnboundedReceiverStream::new(rx).map(Ok::<_, std::io::Error>);
    let svc = service(state);
    tokio::spawn(async move {
        Server::builder()
            .serve_with_incoming(svc, incoming)
            .await
            .unwrap();
    });
    Endpoint::from_static("http://collector.test").connect_with_connector_lazy(tower::service_fn(
        move |_: Uri| {
            let tx = tx.clone();
            async move {
                let (client, server) = tokio::io::duplex(1 << 16);
                tx.send(server)
                    .map_err(|_| std::io::Error::other("test collector gone"))?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(client))
            }
        },
    ))
}

/// Exporter settings from command-line flags, as the daemon parses them.
pub fn settings(flags: &[&str]) -> ExportSettings {
    let args = [
        "capture-daemon",
        "--target-pid",
        "1",
        "--daemon-id",
        "node-test",
    ]
    .iter()
    .chain(flags);
    Config::from_args(args.copied())
        .unwrap_or_else(|e| panic!("{flags:?}: {e}"))
        .export
        .expect("--collector given")
}

/// A whole exchange, numbered `n` (its pid), with a request body of `body` bytes.
pub fn exchange(n: u32, body: usize) -> Exchange {
    let start = 1_000_000_000 + u64::from(n) * 1_000_000;
    Exchange {
        protocol: Protocol::H1,
        request: Request {
            method: "POST".into(),
            target: format!("/orders/{n}?lang=en"),
            version: HttpVersion::Http11,
            headers: vec![
                Header::new("Host", "shop.test"),
                Header::new("Content-Type", "application/json"),
            ]
            .into(),
            headers_size: 80,
            body: Body {
                data: vec![b'a' + (n % 26) as u8; body],
                wire_size: body as u64,
                ..Body::default()
            },
            trailers: Headers::new(),
        },
        response: Some(Response {
            status: 201,
            reason: "Created".into(),
            version: HttpVersion::Http11,
            headers: vec![Header::new("Content-Type", "text/plain")].into(),
            headers_size: 60,
            body: Body {
                data: b"created".to_vec(),
                wire_size: 7,
                ..Body::default()
            },
            trailers: Headers::new(),
        }),
        timing: Timing {
            request_start_ns: start,
            request_end_ns: start + 10_000,
            response_start_ns: Some(start + 200_000),
            response_end_ns: Some(start + 250_000),
        },
        incomplete: None,
        conn: ConnMeta {
            src: Some("10.0.0.1:40000".parse().unwrap()),
            dst: Some("10.0.0.2:8080".parse().unwrap()),
            role: Some(Role::Server),
            id: format!("{n}:5:1").into(),
        },
        pid: n,
        workload: Workload {
            node: Some("node-test".into()),
            ..Workload::default()
        }
        .into(),
        redacted: vec!["Authorization".into()],
        routing_key: None,
        grpc: None,
        cgroup_id: 77,
    }
}

/// Polls `cond` every 10 ms (real time) until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + timeout;
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A local port nothing listens on (bound, then released).
pub fn closed_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}
