//! `capture replay`: send recorded requests to a target, record what comes back.
//!
//! Each entry of `--input` becomes one request to `--target`: scheme, host and port replaced,
//! path and query sent byte for byte, `Host` / `:authority` the target's. HTTP/1.1 entries go
//! over HTTP/1.1, HTTP/2 and gRPC entries over h2c (prior knowledge); gRPC only when unary.
//! Requests are sent concurrently (`--concurrency`), paced by [`crate::schedule`], and written
//! to `--output` in input order, one HAR entry each with `_replay`.
//!
//! What is not sent, and counted on stderr: unsafe methods without `--allow-unsafe` (gRPC calls
//! are unsafe unless `--safe-grpc GLOB` names them), truncated or incomplete recordings,
//! streaming gRPC, requests whose redacted credential has no `--credential` source, request
//! bodies in a content coding that cannot be re-applied. The output never holds a credential:
//! the recorded request is the one from the input (already redacted) with the target's `Host`,
//! and credential fields in responses are removed and listed in `_capture.redacted`.

use std::{
    collections::BTreeMap,
    io::Write as _,
    net::SocketAddr,
    path::PathBuf,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use capture_model::{
    clock::WallClock,
    exchange::{
        Body, ConnMeta, Exchange, Grpc, Headers, HttpVersion, Protocol, Request, Response, Role,
    },
    har::{self, Replay, ReplayVerdict},
    har_read::{self, ReadEntry},
};
use clap::Args;
use http_body_util::{BodyExt as _, Full};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use tokio::sync::Semaphore;

use crate::{
    credentials::{Credentials, Secret, needs_credential},
    schedule::{Pacing, TokenBucket, offsets},
};

#[derive(Args, Debug)]
pub struct ReplayArgs {
    /// Recorded entries: the daemon's JSONL or a HAR file.
    #[arg(long)]
    input: PathBuf,
    /// Where to send them: http://HOST:PORT (https is not supported).
    #[arg(long)]
    target: String,
    /// At most N requests a second (a token bucket: requests queue, none is dropped).
    #[arg(long, value_name = "N", conflicts_with = "speed", value_parser = positive)]
    rate: Option<f64>,
    /// Keep the recorded gaps between requests, divided by X.
    #[arg(long, value_name = "X", value_parser = positive)]
    speed: Option<f64>,
    /// With --speed: the longest wait between two requests (e.g. 2s, 500ms).
    #[arg(long, value_name = "DUR", value_parser = humantime::parse_duration, requires = "speed")]
    max_wait: Option<Duration>,
    /// Requests in flight at once.
    #[arg(long, value_name = "N", default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..))]
    concurrency: u16,
    /// Re-inject a redacted header or query parameter (`query:NAME`) from the environment or a
    /// file: NAME=env:VAR or NAME=file:PATH. Never a literal value.
    #[arg(long, value_name = "NAME=env:VAR|file:PATH")]
    credential: Vec<String>,
    /// Also send POST, PUT, PATCH, DELETE (and other unsafe methods) and gRPC calls.
    #[arg(long)]
    allow_unsafe: bool,
    /// gRPC methods (`package.Service/Method` globs) that are safe to send without
    /// --allow-unsafe.
    #[arg(long, value_name = "GLOB")]
    safe_grpc: Vec<String>,
    /// Set the `sd-routing-key` member of `baggage` to KEY (replacing one already there).
    #[arg(long, value_name = "KEY")]
    routing_key: Option<String>,
    /// Where to write one HAR entry per request (JSONL, with `_replay`).
    #[arg(long)]
    output: PathBuf,
    /// Give up on a request after this long (e.g. 30s).
    #[arg(long, value_name = "DUR", default_value = "30s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Keep at most this many bytes of each response body; the rest is counted, not kept, and
    /// the entry is marked truncated.
    #[arg(long, value_name = "BYTES", default_value_t = 16 * 1024 * 1024)]
    max_body: usize,
}

fn positive(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err("expected a positive number".into()),
    }
}

/// The target: scheme and authority only.
#[derive(Clone, Debug)]
struct Target {
    url: String,
    authority: String,
    addr: Option<SocketAddr>,
}

impl Target {
    fn parse(text: &str) -> anyhow::Result<Self> {
        let uri: http::Uri = text.parse().context("--target is not a URL")?;
        if uri.scheme_str() != Some("http") {
            bail!("--target: only http:// targets are supported (HTTP/1.1 and h2c)");
        }
        let authority = uri
            .authority()
            .context("--target has no host")?
            .as_str()
            .to_owned();
        if uri.path() != "/" && !uri.path().is_empty() {
            bail!("--target: give scheme, host and port only; the path comes from each entry");
        }
        Ok(Self {
            url: format!("http://{authority}"),
            addr: authority.parse().ok(),
            authority,
        })
    }
}

/// Why a request was not sent (the `_replay.reason` word and the stderr count).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Skip {
    Incomplete,
    UnsafeMethod,
    GrpcStreaming,
    MissingCredential,
    RequestContentCoding,
    UnsupportedTarget,
}

impl Skip {
    fn as_str(self) -> &'static str {
        match self {
            Self::Incomplete => "incomplete",
            Self::UnsafeMethod => "unsafe_method",
            Self::GrpcStreaming => "grpc_streaming",
            Self::MissingCredential => "missing_credential",
            Self::RequestContentCoding => "request_content_coding",
            Self::UnsupportedTarget => "unsupported_target",
        }
    }
}

/// A request ready to send, and what to record of it.
struct Prepared {
    protocol: Protocol,
    request: http::Request<Full<Bytes>>,
    /// The request as recorded: input headers (redacted) with the target's Host, no credential.
    recorded: Request,
    injected: Vec<String>,
    redacted: Vec<String>,
}

pub fn run(args: &ReplayArgs) -> anyhow::Result<u8> {
    let target = Target::parse(&args.target)?;
    let credentials = Credentials::load(&args.credential)?;
    let safe_grpc = args
        .safe_grpc
        .iter()
        .map(|g| glob::Pattern::new(g).with_context(|| format!("--safe-grpc {g}: not a glob")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let text = std::fs::read_to_string(&args.input)
        .with_context(|| format!("cannot read {}", args.input.display()))?;
    let entries = har_read::read_entries(&text)
        .with_context(|| format!("{} is not HAR", args.input.display()))?;
    let pacing = match (args.rate, args.speed) {
        (Some(rate), _) => Pacing::Rate(rate),
        (None, Some(factor)) => Pacing::Speed {
            factor,
            max_wait: args.max_wait,
        },
        (None, None) => Pacing::Unpaced,
    };
    let source_name = args.input.file_name().map_or_else(
        || args.input.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let plan = Plan {
        target,
        credentials,
        safe_grpc,
        allow_unsafe: args.allow_unsafe,
        routing_key: args.routing_key.clone(),
        timeout: args.timeout,
        max_body: args.max_body,
        source_name,
    };
    let lines = runtime.block_on(replay_all(
        Arc::new(plan),
        entries,
        pacing,
        usize::from(args.concurrency),
    ));
    let mut out = std::fs::File::create(&args.output)
        .with_context(|| format!("cannot create {}", args.output.display()))?;
    let mut counts: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut buf = Vec::new();
    for (line, verdict, reason, truncated) in &lines {
        if *truncated {
            *counts.entry("response_truncated").or_default() += 1;
        }
        buf.extend_from_slice(line);
        buf.push(b'\n');
        let key = match verdict {
            ReplayVerdict::Sent => "sent",
            ReplayVerdict::Error => "error",
            ReplayVerdict::Skipped => "skipped",
        };
        *counts.entry(key).or_default() += 1;
        if let Some(reason) = reason {
            *counts.entry(reason).or_default() += 1;
        }
    }
    out.write_all(&buf)
        .with_context(|| format!("cannot write {}", args.output.display()))?;
    let summary: Vec<String> = counts.iter().map(|(k, v)| format!("{k} {v}")).collect();
    eprintln!(
        "capture replay: {} requests: {}",
        lines.len(),
        summary.join(", ")
    );
    Ok(u8::from(counts.get("error").copied().unwrap_or(0) > 0))
}

struct Plan {
    target: Target,
    credentials: Credentials,
    safe_grpc: Vec<glob::Pattern>,
    allow_unsafe: bool,
    routing_key: Option<String>,
    timeout: Duration,
    max_body: usize,
    source_name: String,
}

/// One output line, its verdict, the reason word of a skip or error, and whether the response
/// body was cut at `--max-body`.
type Line = (Vec<u8>, ReplayVerdict, Option<&'static str>, bool);

/// The HTTP/1.1 client and the h2c (prior knowledge) client.
type Clients = (
    Client<HttpConnector, Full<Bytes>>,
    Client<HttpConnector, Full<Bytes>>,
);

const UNIX: WallClock = WallClock::with_offset_ns(0);

async fn replay_all(
    plan: Arc<Plan>,
    entries: Vec<ReadEntry>,
    pacing: Pacing,
    concurrency: usize,
) -> Vec<Line> {
    let mut http1 = HttpConnector::new();
    http1.set_nodelay(true);
    let h1: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build(http1.clone());
    let h2: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build(http1);
    let clients = Arc::new((h1, h2));

    // Send order: recorded time for --speed, input order otherwise.
    let mut order: Vec<usize> = (0..entries.len()).collect();
    if matches!(pacing, Pacing::Speed { .. }) {
        order.sort_by_key(|&i| (entries[i].exchange.timing.request_start_ns, i));
    }
    let starts: Vec<u64> = order
        .iter()
        .map(|&i| entries[i].exchange.timing.request_start_ns)
        .collect();
    let at = offsets(pacing, &starts);
    let mut bucket = match pacing {
        Pacing::Rate(rate) => Some(TokenBucket::new(rate)),
        _ => None,
    };
    let entries = Arc::new(entries);
    let semaphore = Arc::new(Semaphore::new(concurrency));
    let t0 = tokio::time::Instant::now();
    let mut tasks = Vec::with_capacity(order.len());
    for (k, &i) in order.iter().enumerate() {
        let entry = &entries[i];
        let replay = |verdict, reason: Option<&'static str>, injected: Vec<String>| Replay {
            pair_id: pair_id(i, &entry.exchange),
            source: format!("{}:{}", plan.source_name, entry.line),
            target: plan.target.url.clone(),
            verdict,
            reason: reason.map(str::to_owned),
            injected,
        };
        let prepared = match prepare(&plan, &entry.exchange) {
            Ok(p) => p,
            Err(skip) => {
                let mut line = Vec::new();
                let r = replay(ReplayVerdict::Skipped, Some(skip.as_str()), Vec::new());
                har::write_entry_with_replay(&entry.exchange, &UNIX, &r, &mut line);
                tasks.push((
                    i,
                    tokio::spawn(async move {
                        (line, ReplayVerdict::Skipped, Some(skip.as_str()), false)
                    }),
                ));
                continue;
            }
        };
        tokio::time::sleep_until(t0 + at[k]).await;
        let Ok(permit) = Arc::clone(&semaphore).acquire_owned().await else {
            break; // never closed
        };
        if let Some(bucket) = &mut bucket {
            bucket.take().await;
        }
        let plan = Arc::clone(&plan);
        let clients = Arc::clone(&clients);
        let entries = Arc::clone(&entries);
        let mut base = replay(ReplayVerdict::Sent, None, prepared.injected.clone());
        tasks.push((
            i,
            tokio::spawn(async move {
                let source = &entries[i].exchange;
                let (exchange, verdict, reason) = send(&plan, &clients, source, prepared).await;
                drop(permit);
                base.verdict = verdict;
                base.reason = reason.map(str::to_owned);
                let mut line = Vec::new();
                har::write_entry_with_replay(&exchange, &UNIX, &base, &mut line);
                let truncated = exchange.response.as_ref().is_some_and(|r| r.body.truncated);
                (line, verdict, reason, truncated)
            }),
        ));
    }
    let mut done: Vec<(usize, Line)> = Vec::with_capacity(tasks.len());
    for (i, task) in tasks {
        if let Ok(line) = task.await {
            done.push((i, line));
        }
    }
    done.sort_by_key(|(i, _)| *i);
    done.into_iter().map(|(_, line)| line).collect()
}

/// Stable across replays of one recording: the entry's position and a checksum of its entry.
fn pair_id(index: usize, ex: &Exchange) -> String {
    let line = har::entry_json_line(ex, &UNIX);
    format!("{}-{:08x}", index + 1, crc32fast::hash(line.as_bytes()))
}

/// RFC 9110 §9.2.1.
const SAFE_METHODS: [&str; 3] = ["GET", "HEAD", "OPTIONS"];

/// Fields the client sets itself (besides the connection-specific ones, `is_hop_by_hop`), plus
/// `accept-encoding`: responses are asked for uncompressed so bodies compare as captured.
const NOT_FORWARDED: [&str; 4] = ["host", "content-length", "accept-encoding", "baggage"];

/// Number of gRPC length-prefixed messages in `data`, `None` when it is not a whole sequence.
fn grpc_messages(data: &[u8]) -> Option<usize> {
    let mut rest = data;
    let mut n = 0;
    while !rest.is_empty() {
        let len = u32::from_be_bytes(rest.get(1..5)?.try_into().ok()?);
        rest = rest.get(5 + usize::try_from(len).ok()?..)?;
        n += 1;
    }
    Some(n)
}

fn origin_form(target: &str) -> Option<String> {
    if target.starts_with('/') {
        return Some(target.to_owned());
    }
    let after = target.find("://")? + 3;
    let rest = &target[after..];
    let path = rest.find(['/', '?']).map_or("/", |i| &rest[i..]);
    Some(if path.starts_with('?') {
        format!("/{path}")
    } else {
        path.to_owned()
    })
}

/// `baggage` with `sd-routing-key` set to `key` (W3C Baggage: comma-separated members).
fn baggage_with(existing: Option<String>, key: &str) -> String {
    let encoded: String =
        percent_encoding::utf8_percent_encode(key, percent_encoding::NON_ALPHANUMERIC).to_string();
    let mut members: Vec<String> = existing
        .iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|m| !m.is_empty())
        .filter(|m| m.split(['=', ';']).next().map(str::trim) != Some("sd-routing-key"))
        .map(str::to_owned)
        .collect();
    members.push(format!("sd-routing-key={encoded}"));
    members.join(",")
}

fn prepare(plan: &Plan, ex: &Exchange) -> Result<Prepared, Skip> {
    let request = &ex.request;
    if ex.incomplete.is_some() || request.body.truncated {
        return Err(Skip::Incomplete);
    }
    let grpc = ex.protocol == Protocol::Grpc;
    let path_and_query = origin_form(&request.target).ok_or(Skip::UnsupportedTarget)?;
    let method_name = path_and_query
        .split('?')
        .next()
        .unwrap_or("")
        .trim_start_matches('/');
    if grpc {
        let declared_safe = plan.safe_grpc.iter().any(|g| g.matches(method_name));
        if !plan.allow_unsafe && !declared_safe {
            return Err(Skip::UnsafeMethod);
        }
        let unary_response = ex
            .response
            .as_ref()
            .is_none_or(|r| grpc_messages(&r.body.data).is_some_and(|n| n <= 1));
        if grpc_messages(&request.body.data) != Some(1) || !unary_response {
            return Err(Skip::GrpcStreaming);
        }
    } else if !plan.allow_unsafe && !SAFE_METHODS.contains(&request.method.as_str()) {
        return Err(Skip::UnsafeMethod);
    }
    // Credentials: every redacted name that needs one must have a source.
    let mut injected = Vec::new();
    let mut inject_headers: Vec<(String, &Secret)> = Vec::new();
    let mut inject_query: Vec<(String, &Secret)> = Vec::new();
    for name in ex.redacted.iter().filter(|n| needs_credential(n)) {
        let secret = plan.credentials.get(name).ok_or(Skip::MissingCredential)?;
        injected.push(name.clone());
        match name.strip_prefix("query:") {
            Some(param) => inject_query.push((param.to_owned(), secret)),
            None => inject_headers.push((name.clone(), secret)),
        }
    }
    let mut body = request.body.data.clone();
    match request.body.decoded_from.as_deref() {
        None => {}
        Some("gzip" | "x-gzip") => {
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            enc.write_all(&body)
                .map_err(|_| Skip::RequestContentCoding)?;
            body = enc.finish().map_err(|_| Skip::RequestContentCoding)?;
        }
        Some("deflate") => {
            let mut enc =
                flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
            enc.write_all(&body)
                .map_err(|_| Skip::RequestContentCoding)?;
            body = enc.finish().map_err(|_| Skip::RequestContentCoding)?;
        }
        Some(_) => return Err(Skip::RequestContentCoding),
    }

    let mut uri_pq = path_and_query.clone();
    for (param, secret) in &inject_query {
        let pair: String = form_urlencoded::Serializer::new(String::new())
            .append_pair(param, secret.expose())
            .finish();
        uri_pq.push(if uri_pq.contains('?') { '&' } else { '?' });
        uri_pq.push_str(&pair);
    }
    let version = if ex.request.version == HttpVersion::Http2 || grpc {
        HttpVersion::Http2
    } else {
        HttpVersion::Http11
    };
    let uri: http::Uri = format!("{}{uri_pq}", plan.target.url)
        .parse()
        .map_err(|_| Skip::UnsupportedTarget)?;
    let method =
        http::Method::from_bytes(request.method.as_bytes()).map_err(|_| Skip::UnsupportedTarget)?;
    let mut builder = http::Request::builder().method(method).uri(uri).version(
        if version == HttpVersion::Http2 {
            http::Version::HTTP_2
        } else {
            http::Version::HTTP_11
        },
    );
    let mut recorded_headers = Headers::new();
    let host_name = if version == HttpVersion::Http2 {
        ":authority"
    } else {
        "Host"
    };
    recorded_headers.push(host_name, &plan.target.authority);
    let mut baggage: Option<String> = None;
    for h in &request.headers {
        let lower = h.name.to_ascii_lowercase();
        if lower == "baggage" {
            baggage = Some(match baggage {
                Some(b) => format!("{b},{}", h.value),
                None => h.value.to_owned(),
            });
        }
        if lower.starts_with(':')
            || capture_model::exchange::is_hop_by_hop(&lower)
            || NOT_FORWARDED.contains(&lower.as_str())
        {
            continue;
        }
        let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(h.name.as_bytes()),
            http::HeaderValue::from_str(h.value),
        ) else {
            continue;
        };
        builder = builder.header(name, value);
        recorded_headers.push(h.name, h.value);
    }
    let baggage = match &plan.routing_key {
        Some(key) => Some(baggage_with(baggage, key)),
        None => baggage,
    };
    if let Some(b) = &baggage {
        builder = builder.header("baggage", b.as_str());
        recorded_headers.push("baggage", b);
    }
    if grpc {
        // gRPC over HTTP/2 requires `te: trailers` (the gRPC HTTP/2 protocol spec).
        builder = builder.header("te", "trailers");
        recorded_headers.push("te", "trailers");
    }
    for (name, secret) in &inject_headers {
        builder = builder.header(name.as_str(), secret.expose());
    }
    let wire_size = body.len() as u64;
    let http_request = builder
        .body(Full::new(Bytes::from(body)))
        .map_err(|_| Skip::UnsupportedTarget)?;
    let headers_size = (request.method.len()
        + path_and_query.len()
        + 12
        + recorded_headers
            .iter()
            .map(|h| h.name.len() + h.value.len() + 4)
            .sum::<usize>()
        + 2) as u64;
    let recorded = Request {
        method: request.method.clone(),
        target: path_and_query,
        version,
        headers: recorded_headers,
        headers_size,
        body: Body {
            data: request.body.data.clone(),
            wire_size,
            truncated: false,
            decoded_from: request.body.decoded_from.clone(),
            decode_error: None,
            decoded_size: None,
        },
        trailers: Headers::new(),
    };
    Ok(Prepared {
        protocol: ex.protocol,
        request: http_request,
        recorded,
        injected,
        redacted: ex.redacted.clone(),
    })
}

fn unix_now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .ok()
        .and_then(|d| u64::try_from(d.as_nanos()).ok())
        .unwrap_or(0)
}

/// Response fields that carry credentials: never written (their names go to `redacted`).
const RESPONSE_CREDENTIALS: [&str; 4] = [
    "set-cookie",
    "set-cookie2",
    "authorization",
    "proxy-authorization",
];

async fn send(
    plan: &Plan,
    clients: &Clients,
    source: &Exchange,
    prepared: Prepared,
) -> (Exchange, ReplayVerdict, Option<&'static str>) {
    let Prepared {
        protocol,
        request,
        recorded,
        injected: _,
        mut redacted,
    } = prepared;
    let h2 = recorded.version == HttpVersion::Http2;
    let client = if h2 { &clients.1 } else { &clients.0 };
    let start = unix_now_ns();
    let mut ex = Exchange {
        protocol,
        request: recorded,
        response: None,
        timing: capture_model::exchange::Timing {
            request_start_ns: start,
            request_end_ns: start,
            response_start_ns: None,
            response_end_ns: None,
        },
        incomplete: None,
        conn: ConnMeta {
            src: None,
            dst: plan.target.addr,
            role: Some(Role::Client),
            id: Arc::default(),
        },
        pid: std::process::id(),
        workload: Default::default(),
        redacted: Vec::new(),
        routing_key: plan
            .routing_key
            .clone()
            .or_else(|| source.routing_key.clone()),
        grpc: None,
        cgroup_id: 0,
    };
    let result = tokio::time::timeout(plan.timeout, async {
        let response = client
            .request(request)
            .await
            .map_err(|e| if e.is_connect() { "connect" } else { "request" })?;
        let head_at = unix_now_ns();
        let (parts, mut body) = response.into_parts();
        let mut data = Vec::new();
        let mut wire = 0_u64;
        let mut truncated = false;
        let mut trailers = Headers::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|_| "response_body")?;
            match frame.into_data() {
                Ok(chunk) => {
                    wire += chunk.len() as u64;
                    let room = plan.max_body.saturating_sub(data.len());
                    if chunk.len() > room {
                        truncated = true;
                    }
                    data.extend_from_slice(&chunk[..chunk.len().min(room)]);
                }
                Err(frame) => {
                    if let Ok(t) = frame.into_trailers() {
                        trailers = header_list(&t);
                    }
                }
            }
        }
        Ok::<_, &'static str>((parts, head_at, data, wire, truncated, trailers))
    })
    .await
    .unwrap_or(Err("timeout"));
    let end = unix_now_ns();
    let (parts, head_at, data, wire, truncated, trailers) = match result {
        Ok(r) => r,
        Err(reason) => {
            ex.incomplete = Some(capture_model::exchange::Incomplete::NoResponse);
            ex.redacted = redacted;
            return (ex, ReplayVerdict::Error, Some(reason));
        }
    };
    let mut headers = header_list(&parts.headers);
    let mut trailers = trailers;
    for list in [&mut headers, &mut trailers] {
        list.retain(|h| {
            let lower = h.name.to_ascii_lowercase();
            let keep = !RESPONSE_CREDENTIALS.contains(&lower.as_str());
            if !keep {
                redacted.push(lower);
            }
            keep
        });
    }
    redacted.sort();
    redacted.dedup();
    ex.redacted = redacted;
    let mut body = Body {
        data,
        wire_size: wire,
        truncated,
        decoded_from: None,
        decode_error: None,
        decoded_size: None,
    };
    decode_content(&headers, &mut body, plan.max_body);
    let status = parts.status;
    ex.timing.response_start_ns = Some(head_at.max(start));
    ex.timing.response_end_ns = Some(end.max(head_at).max(start));
    if protocol == Protocol::Grpc {
        let all = headers.iter().chain(&trailers);
        let find = |name: &str| {
            all.clone()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| h.value.to_owned())
        };
        let path = ex.request.target.trim_start_matches('/');
        let (service, method) = path.split_once('/').unwrap_or((path, ""));
        ex.grpc = Some(Grpc {
            service: service.to_owned(),
            method: method.split('?').next().unwrap_or("").to_owned(),
            status: find("grpc-status").and_then(|s| s.parse().ok()),
            message: find("grpc-message").map(|m| {
                percent_encoding::percent_decode_str(&m)
                    .decode_utf8_lossy()
                    .into_owned()
            }),
        });
    }
    ex.response = Some(Response {
        status: status.as_u16(),
        reason: if h2 {
            String::new()
        } else {
            status.canonical_reason().unwrap_or("").to_owned()
        },
        version: if h2 {
            HttpVersion::Http2
        } else {
            HttpVersion::Http11
        },
        headers_size: headers
            .iter()
            .map(|h| h.name.len() + h.value.len() + 4)
            .sum::<usize>() as u64
            + 17,
        headers,
        body,
        trailers,
    });
    (ex, ReplayVerdict::Sent, None)
}

fn header_list(map: &http::HeaderMap) -> Headers {
    map.iter()
        .map(|(name, value)| (name.as_str(), String::from_utf8_lossy(value.as_bytes())))
        .collect()
}

/// Decodes a gzip or deflate response body as the daemon does (the capture holds decoded
/// bodies); any other coding is kept as is and named in `decode_error`.
fn decode_content(headers: &Headers, body: &mut Body, max: usize) {
    use std::io::Read as _;
    let Some(coding) = capture_model::exchange::header_value(headers, "content-encoding")
        .map(|c| c.trim().to_ascii_lowercase())
        .filter(|c| !c.is_empty() && c != "identity")
    else {
        return;
    };
    let mut out = Vec::new();
    let limit = u64::try_from(max).unwrap_or(u64::MAX) + 1;
    let result = match coding.as_str() {
        "gzip" | "x-gzip" => flate2::read::MultiGzDecoder::new(body.data.as_slice())
            .take(limit)
            .read_to_end(&mut out),
        "deflate" => flate2::read::ZlibDecoder::new(body.data.as_slice())
            .take(limit)
            .read_to_end(&mut out),
        _ => {
            body.decode_error = Some(format!("unsupported content coding {coding}"));
            return;
        }
    };
    match result {
        Ok(_) => {
            if out.len() > max {
                out.truncate(max);
                body.truncated = true;
            }
            body.data = out;
            body.decoded_from = Some(coding);
        }
        Err(_) => body.decode_error = Some(format!("corrupt {coding} stream")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use capture_model::exchange::Header;

    #[test]
    fn baggage_routing_key_replaces_and_keeps_others() {
        assert_eq!(baggage_with(None, "sb-1"), "sd-routing-key=sb%2D1");
        assert_eq!(
            baggage_with(Some("a=1, sd-routing-key=old;p=1,b=2".into()), "new"),
            "a=1,b=2,sd-routing-key=new"
        );
    }

    #[test]
    fn origin_forms() {
        assert_eq!(origin_form("/a?b").as_deref(), Some("/a?b"));
        assert_eq!(origin_form("http://h:1/a?b").as_deref(), Some("/a?b"));
        assert_eq!(origin_form("http://h:1?b").as_deref(), Some("/?b"));
        assert_eq!(origin_form("http://h:1").as_deref(), Some("/"));
        assert_eq!(origin_form("*"), None);
    }

    #[test]
    fn grpc_message_counts() {
        assert_eq!(grpc_messages(b""), Some(0));
        assert_eq!(grpc_messages(b"\0\0\0\0\x02hi"), Some(1));
        assert_eq!(grpc_messages(b"\0\0\0\0\x02hi\0\0\0\0\0"), Some(2));
        assert_eq!(grpc_messages(b"\0\0\0\0\x05hi"), None);
    }

    fn plan(allow_unsafe: bool, creds: &[String]) -> Plan {
        Plan {
            target: Target::parse("http://127.0.0.1:9").unwrap(),
            credentials: Credentials::load(creds).unwrap(),
            safe_grpc: vec![glob::Pattern::new("shop.Catalog/*").unwrap()],
            allow_unsafe,
            routing_key: None,
            timeout: Duration::from_secs(1),
            max_body: 1024,
            source_name: "in".into(),
        }
    }

    #[test]
    fn safety_and_credentials_decide_what_is_sent() {
        let mut ex = capture_model::fixtures::representative_redacted();
        // POST is unsafe.
        assert_eq!(
            prepare(&plan(false, &[]), &ex).err(),
            Some(Skip::UnsafeMethod)
        );
        // Allowed, but `authorization` was redacted and has no source.
        assert_eq!(
            prepare(&plan(true, &[]), &ex).err(),
            Some(Skip::MissingCredential)
        );
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "Bearer s3cret\n").unwrap();
        let p = prepare(
            &plan(true, &[format!("authorization=file:{}", token.display())]),
            &ex,
        )
        .unwrap();
        assert_eq!(p.injected, ["authorization"]);
        assert_eq!(p.request.headers()["authorization"], "Bearer s3cret");
        assert_eq!(
            p.request.uri().to_string(),
            "http://127.0.0.1:9/api/orders?page=2&sort=created%20desc"
        );
        assert!(
            p.recorded
                .headers
                .iter()
                .all(|h| !h.value.contains("s3cret"))
        );
        assert_eq!(
            p.recorded.headers.get(0).unwrap(),
            Header::new("Host", "127.0.0.1:9")
        );
        // Incomplete recordings are never sent.
        ex.incomplete = Some(capture_model::exchange::Incomplete::Gap);
        assert_eq!(prepare(&plan(true, &[]), &ex).err(), Some(Skip::Incomplete));
    }

    #[test]
    fn grpc_needs_allow_unsafe_or_a_safe_glob_and_must_be_unary() {
        let mut ex = capture_model::fixtures::representative_redacted();
        ex.redacted.clear();
        ex.protocol = Protocol::Grpc;
        ex.request.version = HttpVersion::Http2;
        ex.request.target = "/shop.Orders/Create".into();
        ex.request.body.data = b"\0\0\0\0\x01x".to_vec();
        ex.response.as_mut().unwrap().body.data = Vec::new();
        assert_eq!(
            prepare(&plan(false, &[]), &ex).err(),
            Some(Skip::UnsafeMethod)
        );
        ex.request.target = "/shop.Catalog/List".into();
        assert!(prepare(&plan(false, &[]), &ex).is_ok());
        ex.request.body.data = b"\0\0\0\0\x01x\0\0\0\0\x01y".to_vec();
        assert_eq!(
            prepare(&plan(false, &[]), &ex).err(),
            Some(Skip::GrpcStreaming)
        );
    }

    /// A real HTTP/2 (h2c) and HTTP/1.1 server on loopback: answers JSON, or a gRPC message with
    /// `grpc-status` trailers on `/shop.Catalog/*`, with a `Set-Cookie` to be removed, and
    /// reports what it received.
    async fn server() -> (
        SocketAddr,
        tokio::sync::mpsc::UnboundedReceiver<(String, String, http::HeaderMap)>,
    ) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let tx = tx.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        move |req: http::Request<hyper::body::Incoming>| {
                            let tx = tx.clone();
                            async move {
                                let version = format!("{:?}", req.version());
                                let (parts, body) = req.into_parts();
                                let _ = body.collect().await;
                                let path = parts
                                    .uri
                                    .path_and_query()
                                    .map(ToString::to_string)
                                    .unwrap_or_default();
                                let _ = tx.send((version, path.clone(), parts.headers));
                                let grpc = path.starts_with("/shop.Catalog/");
                                let builder = http::Response::builder()
                                    .header("set-cookie", "s=server-secret");
                                let (builder, data, trailers) = if grpc {
                                    let mut trailers = http::HeaderMap::new();
                                    trailers
                                        .insert("grpc-status", http::HeaderValue::from_static("5"));
                                    trailers.insert(
                                        "grpc-message",
                                        http::HeaderValue::from_static("not%20found"),
                                    );
                                    (
                                        builder.header("content-type", "application/grpc"),
                                        Bytes::from_static(b"\0\0\0\0\x02ok"),
                                        Some(Ok::<_, std::convert::Infallible>(trailers)),
                                    )
                                } else {
                                    (
                                        builder.header("content-type", "application/json"),
                                        Bytes::from_static(b"{\"ok\":true}"),
                                        None,
                                    )
                                };
                                let body =
                                    Full::new(data).with_trailers(std::future::ready(trailers));
                                Ok::<_, std::convert::Infallible>(builder.body(body).unwrap())
                            }
                        },
                    );
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(io, service)
                        .await;
                });
            }
        });
        (addr, rx)
    }

    #[tokio::test]
    async fn h2c_grpc_and_http1_are_sent_and_recorded() {
        let (addr, mut received) = server().await;
        let mut plan = plan(true, &[]);
        plan.target = Target::parse(&format!("http://{addr}")).unwrap();
        plan.routing_key = Some("sb".into());

        let mut h1 = capture_model::fixtures::representative_redacted();
        h1.redacted.clear();
        h1.request.method = "GET".into();
        h1.request.target = "/v1/x?b=2&a=1".into();
        h1.request.headers.push("baggage", "a=1,sd-routing-key=old");
        let mut h2 = h1.clone();
        h2.protocol = Protocol::H2;
        h2.request.version = HttpVersion::Http2;
        h2.request.headers = vec![
            Header::new(":method", "GET"),
            Header::new(":path", "/v1/x?b=2&a=1"),
            Header::new("accept", "application/json"),
        ]
        .into();
        let mut grpc = h2.clone();
        grpc.protocol = Protocol::Grpc;
        grpc.request.method = "POST".into();
        grpc.request.target = "/shop.Catalog/Get".into();
        grpc.request.headers = vec![Header::new("content-type", "application/grpc")].into();
        grpc.request.body.data = b"\0\0\0\0\x01x".to_vec();
        grpc.response.as_mut().unwrap().body.data = b"\0\0\0\0\x01y".to_vec();
        let entries: Vec<ReadEntry> = [h1, h2, grpc]
            .into_iter()
            .map(|exchange| ReadEntry {
                exchange,
                replay: None,
                line: 1,
            })
            .collect();
        let lines = replay_all(std::sync::Arc::new(plan), entries, Pacing::Unpaced, 2).await;
        let verdicts: Vec<_> = lines.iter().map(|l| (l.1, l.2)).collect();
        assert_eq!(verdicts, [(ReplayVerdict::Sent, None); 3]);

        let mut got = Vec::new();
        for _ in 0..3 {
            got.push(received.recv().await.unwrap());
        }
        got.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        assert_eq!(
            got.iter()
                .map(|g| (g.0.as_str(), g.1.as_str()))
                .collect::<Vec<_>>(),
            [
                ("HTTP/1.1", "/v1/x?b=2&a=1"),
                ("HTTP/2.0", "/shop.Catalog/Get"),
                ("HTTP/2.0", "/v1/x?b=2&a=1")
            ]
        );
        assert_eq!(got[0].2["baggage"], "a=1,sd-routing-key=sb");
        assert_eq!(got[0].2["host"], addr.to_string().as_str());
        assert_eq!(got[1].2["te"], "trailers");

        let read = |line: &[u8]| {
            har_read::read_entries(std::str::from_utf8(line).unwrap())
                .unwrap()
                .remove(0)
        };
        let http1 = read(&lines[0].0);
        assert_eq!(
            http1.exchange.response.as_ref().unwrap().body.data,
            b"{\"ok\":true}"
        );
        assert!(
            http1
                .exchange
                .response
                .as_ref()
                .unwrap()
                .headers
                .iter()
                .all(|h| h.name != "set-cookie")
        );
        assert!(http1.exchange.redacted.contains(&"set-cookie".to_owned()));
        let text = String::from_utf8_lossy(&lines[0].0);
        assert!(!text.contains("server-secret"), "{text}");
        let h2c = read(&lines[1].0);
        assert_eq!(
            h2c.exchange.response.as_ref().unwrap().version,
            HttpVersion::Http2
        );
        assert_eq!(
            h2c.exchange.request.headers.get(0).unwrap(),
            Header::new(":authority", addr.to_string())
        );
        let g = read(&lines[2].0);
        assert_eq!(
            g.exchange.grpc,
            Some(Grpc {
                service: "shop.Catalog".into(),
                method: "Get".into(),
                status: Some(5),
                message: Some("not found".into()),
            })
        );
        assert_eq!(
            g.exchange.response.as_ref().unwrap().body.data,
            b"\0\0\0\0\x02ok"
        );
        assert_eq!(g.replay.unwrap().verdict, ReplayVerdict::Sent);
    }

    #[tokio::test]
    async fn max_body_cuts_and_marks_the_response() {
        let (addr, _received) = server().await;
        let mut plan = plan(true, &[]);
        plan.target = Target::parse(&format!("http://{addr}")).unwrap();
        plan.max_body = 4;
        let mut ex = capture_model::fixtures::representative_redacted();
        ex.redacted.clear();
        ex.request.method = "GET".into();
        let entries = vec![ReadEntry {
            exchange: ex,
            replay: None,
            line: 1,
        }];
        let lines = replay_all(std::sync::Arc::new(plan), entries, Pacing::Unpaced, 1).await;
        assert!(lines[0].3, "counted as truncated");
        let read = har_read::read_entries(std::str::from_utf8(&lines[0].0).unwrap()).unwrap();
        let body = &read[0].exchange.response.as_ref().unwrap().body;
        assert_eq!(
            (body.data.as_slice(), body.wire_size, body.truncated),
            (&b"{\"ok"[..], 11, true)
        );
    }
}
