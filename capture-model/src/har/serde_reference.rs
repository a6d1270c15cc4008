//! The HAR entry as it was written before `har` wrote JSON by hand: a tree of `Serialize`
//! structs that borrow from the exchange, serialised by `serde_json`. Kept for the tests only,
//! as the independent oracle that the hand-written writer must match byte for byte.

use std::{
    borrow::Cow,
    fmt,
    net::{IpAddr, SocketAddr},
};

use base64::{display::Base64Display, engine::general_purpose::STANDARD as BASE64};
use serde::{Serialize, Serializer};

use super::{BodyText, Edges, Replay, body_text, content_type, request_url, size};
use crate::{
    clock::WallClock,
    exchange::{Body, Exchange, Headers, Request, Response, header_value},
};

/// The entry of `ex` with its `_replay`, as `serde_json` writes it.
pub(super) fn write_entry_with_replay(
    ex: &Exchange,
    clock: &WallClock,
    replay: &Replay,
    out: &mut Vec<u8>,
) {
    #[derive(Serialize)]
    struct WithReplay<'a> {
        #[serde(flatten)]
        entry: HarEntry<'a>,
        #[serde(rename = "_replay")]
        replay: &'a Replay,
    }
    let url = request_url(&ex.request, &ex.conn);
    let entry = WithReplay {
        entry: HarEntry::new(ex, clock, &url),
        replay,
    };
    serde_json::to_writer(out, &entry).unwrap();
}

/// The entry of `ex` as `serde_json` writes it.
pub(super) fn write_entry(ex: &Exchange, clock: &WallClock, out: &mut Vec<u8>) {
    let url = request_url(&ex.request, &ex.conn);
    serde_json::to_writer(out, &HarEntry::new(ex, clock, &url)).unwrap();
}

/// Serialises a `Display` value as a JSON string, written piece by piece (no `String`).
fn display<T: fmt::Display, S: Serializer>(value: &T, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(value)
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct HarEntry<'a> {
    #[serde(serialize_with = "display")]
    started_date_time: humantime::Rfc3339Timestamp,
    time: f64,
    request: HarRequest<'a>,
    response: HarResponse<'a>,
    cache: Empty,
    timings: Timings,
    #[serde(rename = "serverIPAddress", skip_serializing_if = "Option::is_none")]
    server_ip_address: Option<IpAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    connection: Option<&'a str>,
    #[serde(rename = "_capture")]
    capture: Capture<'a>,
    #[serde(rename = "_trailers", skip_serializing_if = "NameValues::is_empty")]
    trailers: NameValues<'a>,
    #[serde(rename = "_grpc", skip_serializing_if = "Option::is_none")]
    grpc: Option<GrpcOut<'a>>,
}

/// `_grpc`: every field present, `null` when not known (no trailers seen, no message).
#[derive(Serialize)]
struct GrpcOut<'a> {
    service: &'a str,
    method: &'a str,
    status: Option<u32>,
    message: Option<&'a str>,
}

impl<'a> GrpcOut<'a> {
    fn new(g: &'a crate::exchange::Grpc) -> Self {
        Self {
            service: &g.service,
            method: &g.method,
            status: g.status,
            message: g.message.as_deref(),
        }
    }
}

impl<'a> HarEntry<'a> {
    /// `url` is [`request_url`] of the exchange.
    fn new(ex: &'a Exchange, clock: &WallClock, url: &'a str) -> Self {
        let timing = Edges::new(ex);
        let started = clock.to_system_time(ex.timing.request_start_ns);
        Self {
            // WallClock clamps to years 1970..=9999, which humantime always formats; the
            // format is UTC with a `Z`, whatever the local time zone.
            started_date_time: humantime::format_rfc3339_millis(started),
            time: ms(timing.total_ns()),
            request: HarRequest::new(&ex.request, url),
            response: ex
                .response
                .as_ref()
                .map_or_else(HarResponse::none, HarResponse::new),
            cache: Empty {},
            timings: Timings {
                blocked: -1,
                dns: -1,
                connect: -1,
                send: ms(timing.send_ns()),
                wait: ms(timing.wait_ns()),
                receive: ms(timing.receive_ns()),
                ssl: -1,
            },
            server_ip_address: ex.conn.dst.map(|dst| dst.ip()),
            connection: Some(&*ex.conn.id).filter(|id| !id.is_empty()),
            capture: Capture::new(ex),
            trailers: NameValues(ex.response.as_ref().map(|r| &r.trailers)),
            grpc: ex.grpc.as_ref().map(GrpcOut::new),
        }
    }
}

#[derive(Serialize)]
struct NameValue<'a> {
    name: Cow<'a, str>,
    value: Cow<'a, str>,
}

/// Header (or trailer) fields as a HAR list of `{"name", "value"}` objects.
struct NameValues<'a>(Option<&'a Headers>);

impl NameValues<'_> {
    fn is_empty(&self) -> bool {
        self.0.is_none_or(Headers::is_empty)
    }
}

impl Serialize for NameValues<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.into_iter().flatten().map(|h| NameValue {
            name: Cow::Borrowed(h.name),
            value: Cow::Borrowed(h.value),
        }))
    }
}

/// The decoded `name=value` pairs of a URL's query (application/x-www-form-urlencoded), as a
/// HAR list. Names and values are borrowed from the URL unless they need decoding.
struct QueryString<'a>(&'a str);

impl Serialize for QueryString<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let query = self.0.split_once('?').map_or("", |(_, rest)| {
            rest.split_once('#').map_or(rest, |(query, _)| query)
        });
        serializer.collect_seq(
            form_urlencoded::parse(query.as_bytes()).map(|(name, value)| NameValue { name, value }),
        )
    }
}

/// `{}` (HAR `cache`: nothing is known about caches).
#[derive(Serialize)]
struct Empty {}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct HarRequest<'a> {
    method: &'a str,
    url: &'a str,
    http_version: &'static str,
    /// Always empty: `Cookie` is always redacted.
    cookies: &'static [NameValue<'static>],
    headers: NameValues<'a>,
    query_string: QueryString<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    post_data: Option<PostData<'a>>,
    headers_size: i64,
    body_size: i64,
    #[serde(rename = "_trailers", skip_serializing_if = "NameValues::is_empty")]
    trailers: NameValues<'a>,
}

impl<'a> HarRequest<'a> {
    fn new(request: &'a Request, url: &'a str) -> Self {
        let body = &request.body;
        // A request has a body when it sent body bytes (RFC 9112 §6.3); GET/HEAD usually don't.
        let post_data = (body.wire_size > 0 || !body.data.is_empty()).then(|| {
            let text = body_text(body);
            PostData {
                mime_type: content_type(&request.headers),
                encoding: text.encoding(),
                text,
                size: body.decoded_size,
            }
        });
        Self {
            method: &request.method,
            url,
            http_version: request.version.as_str(),
            cookies: &[],
            headers: NameValues(Some(&request.headers)),
            query_string: QueryString(url),
            post_data,
            headers_size: size(request.headers_size),
            body_size: size(body.wire_size),
            trailers: NameValues(Some(&request.trailers)),
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PostData<'a> {
    mime_type: &'a str,
    text: BodyText<'a>,
    #[serde(rename = "_encoding", skip_serializing_if = "Option::is_none")]
    encoding: Option<&'static str>,
    #[serde(rename = "_size", skip_serializing_if = "Option::is_none")]
    size: Option<u64>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct HarResponse<'a> {
    status: u16,
    status_text: &'a str,
    http_version: &'static str,
    /// Always empty: `Set-Cookie` is always redacted.
    cookies: &'static [NameValue<'static>],
    headers: NameValues<'a>,
    content: Content<'a>,
    #[serde(rename = "redirectURL")]
    redirect_url: &'a str,
    headers_size: i64,
    body_size: i64,
}

impl<'a> HarResponse<'a> {
    fn new(response: &'a Response) -> Self {
        let text = body_text(&response.body);
        Self {
            status: response.status,
            status_text: &response.reason,
            http_version: response.version.as_str(),
            cookies: &[],
            headers: NameValues(Some(&response.headers)),
            content: Content {
                size: size(response.body.decoded_size()),
                mime_type: content_type(&response.headers),
                encoding: text.encoding(),
                text,
            },
            redirect_url: header_value(&response.headers, "location").unwrap_or(""),
            headers_size: size(response.headers_size),
            body_size: size(response.body.wire_size),
        }
    }

    /// HAR convention for a request that got no response (as browsers write it).
    fn none() -> Self {
        Self {
            status: 0,
            status_text: "",
            http_version: "",
            cookies: &[],
            headers: NameValues(None),
            content: Content {
                size: 0,
                mime_type: "",
                text: BodyText::Text(""),
                encoding: None,
            },
            redirect_url: "",
            headers_size: -1,
            body_size: -1,
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Content<'a> {
    size: i64,
    mime_type: &'a str,
    text: BodyText<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    encoding: Option<&'static str>,
}

impl Serialize for BodyText<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Text(text) => serializer.serialize_str(text),
            Self::Base64(data) => serializer.collect_str(&Base64Display::new(data, &BASE64)),
        }
    }
}

#[derive(Serialize)]
struct Timings {
    blocked: i8,
    dns: i8,
    connect: i8,
    send: f64,
    wait: f64,
    receive: f64,
    ssl: i8,
}

#[derive(Serialize)]
struct Capture<'a> {
    workload: WorkloadOut<'a>,
    conn: ConnOut,
    pid: u32,
    protocol: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    routing_key: Option<&'a str>,
    redacted: &'a [String],
    truncated: Truncated,
    original_size: OriginalSize,
    #[serde(skip_serializing_if = "Option::is_none")]
    incomplete: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content_decoding: Option<ContentDecoding<'a>>,
}
impl<'a> Capture<'a> {
    fn new(ex: &'a Exchange) -> Self {
        let w = &ex.workload;
        let response_body = ex.response.as_ref().map(|r| &r.body);
        let decoding = ContentDecoding {
            request: Decoding::of(&ex.request.body),
            response: response_body.and_then(Decoding::of),
        };
        Self {
            workload: WorkloadOut {
                namespace: w.namespace.as_deref(),
                pod: w.pod.as_deref(),
                container: w.container.as_deref(),
                owner_kind: w.owner_kind.as_deref(),
                owner_name: w.owner_name.as_deref(),
                node: w.node.as_deref(),
            },
            conn: ConnOut {
                src: ex.conn.src,
                dst: ex.conn.dst,
                role: ex.conn.role.map(|r| r.as_str()),
            },
            pid: ex.pid,
            protocol: ex.protocol.as_str(),
            routing_key: ex.routing_key.as_deref(),
            redacted: &ex.redacted,
            truncated: Truncated {
                request: ex.request.body.truncated,
                response: response_body.is_some_and(|b| b.truncated),
            },
            original_size: OriginalSize {
                request: ex.request.body.wire_size,
                response: response_body.map(|b| b.wire_size),
            },
            incomplete: ex.incomplete.map(|i| i.as_str()),
            content_decoding: (decoding.request.is_some() || decoding.response.is_some())
                .then_some(decoding),
        }
    }
}

#[derive(Serialize)]
struct WorkloadOut<'a> {
    namespace: Option<&'a str>,
    pod: Option<&'a str>,
    container: Option<&'a str>,
    owner_kind: Option<&'a str>,
    owner_name: Option<&'a str>,
    node: Option<&'a str>,
}

#[derive(Serialize)]
/// Addresses serialise as their `Display` text (`10.0.0.1:80`, `[fd00::1]:443`).
struct ConnOut {
    src: Option<SocketAddr>,
    dst: Option<SocketAddr>,
    role: Option<&'static str>,
}

#[derive(Serialize)]
struct Truncated {
    request: bool,
    response: bool,
}

#[derive(Serialize)]
struct OriginalSize {
    request: u64,
    /// `None` (null) when there is no response.
    response: Option<u64>,
}

#[derive(Serialize)]
struct ContentDecoding<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    request: Option<Decoding<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response: Option<Decoding<'a>>,
}

#[derive(Serialize)]
struct Decoding<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    decoded_from: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    decode_error: Option<&'a str>,
}

impl<'a> Decoding<'a> {
    fn of(body: &'a Body) -> Option<Self> {
        let decoding = Self {
            decoded_from: body.decoded_from.as_deref(),
            decode_error: body.decode_error.as_deref(),
        };
        (decoding.decoded_from.is_some() || decoding.decode_error.is_some()).then_some(decoding)
    }
}

/// Nanoseconds as HAR milliseconds. One rounding (a division), so `1_500_000` ns prints as
/// `1.5`; exact below 2^53 ns (104 days), far beyond any exchange. `json::millis` writes the
/// same text without the double.
fn ms(ns: u64) -> f64 {
    ns as f64 / 1_000_000.0
}
