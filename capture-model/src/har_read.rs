//! Reading HAR entries back into [`Exchange`]s: the inverse of [`crate::har`], for the
//! `capture replay` and `capture diff` tools.
//!
//! [`read_entries`] takes either what the daemon writes (one HAR entry per line, JSONL) or a
//! whole HAR file (`{"log":{"entries":[…]}}`), or several of either one after the other: the
//! input is read as a stream of JSON values, and a value with a `log` member contributes its
//! entries. Each entry is deserialised with serde into the shape [`crate::har`] writes and then
//! turned into an [`Exchange`] plus the `_replay` object [`crate::har::write_entry_with_replay`]
//! adds ([`ReadEntry`]).
//!
//! Rendering an entry read here with a wall clock of offset 0 gives back the line it was read
//! from, byte for byte (a property test holds it): timestamps come back as Unix-epoch
//! nanoseconds (`startedDateTime` has millisecond precision; the timings keep the edges' exact
//! gaps), and a request target that cannot be told from the URL alone is kept as the URL
//! (absolute form), which renders the same URL.
//!
//! Entries from other HAR writers (browsers) are read too: without `_capture` the protocol is
//! guessed from the HTTP version and content type, and sizes come from `bodySize`.
//!
//! Errors name the entry (its line) and the field, never a value: header values and bodies
//! carry credentials and personal data.

use std::{net::SocketAddr, time::UNIX_EPOCH};

use base64::{Engine as _, engine::general_purpose::STANDARD as BASE64};
use serde::Deserialize;
use serde_json::Value;

use crate::{
    exchange::{
        Body, ConnMeta, Exchange, Grpc, Header, Headers, HttpVersion, Incomplete, Protocol,
        Request, Response, Role, Timing, Workload, header_value,
    },
    har::{Replay, request_url},
};

/// One entry read back: the exchange and, for the output of `capture replay`, its `_replay`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadEntry {
    pub exchange: Exchange,
    pub replay: Option<Replay>,
    /// 1-based line of the input where the entry (or the HAR file holding it) starts.
    pub line: usize,
}

/// Why an input could not be read. The message names the line and the field, never a value.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HarReadError {
    /// Not JSON at all (or cut short).
    #[error("line {line}, column {column}: not valid JSON ({reason})")]
    Syntax {
        line: usize,
        column: usize,
        reason: &'static str,
    },
    /// JSON, but an entry's field is missing or has the wrong type or value.
    #[error("{location}: field `{field}`: {reason}")]
    Field {
        location: String,
        field: String,
        reason: String,
    },
}

/// Reads every HAR entry of `text` (JSONL, a whole HAR file, or a mix), in input order.
pub fn read_entries(text: &str) -> Result<Vec<ReadEntry>, HarReadError> {
    let mut out = Vec::new();
    let mut stream = serde_json::Deserializer::from_str(text).into_iter::<Value>();
    loop {
        let start = skip_whitespace(text, stream.byte_offset());
        let Some(next) = stream.next() else { break };
        let value = next.map_err(|e| HarReadError::Syntax {
            line: e.line(),
            column: e.column(),
            reason: match e.classify() {
                serde_json::error::Category::Eof => "unexpected end of input",
                _ => "syntax error",
            },
        })?;
        let line = line_of(text, start);
        if let Some(log) = value.as_object().and_then(|o| o.get("log")) {
            let entries = log
                .get("entries")
                .and_then(Value::as_array)
                .ok_or_else(|| HarReadError::Field {
                    location: format!("line {line}"),
                    field: "log.entries".into(),
                    reason: "missing or not a list".into(),
                })?;
            for (i, entry) in entries.iter().enumerate() {
                let location = format!("line {line}, log.entries[{i}]");
                out.push(read_value(entry.clone(), &location, line)?);
            }
        } else {
            out.push(read_value(value, &format!("line {line}"), line)?);
        }
    }
    Ok(out)
}

/// Reads one HAR entry from its JSON value; `location` names it in errors.
pub fn read_value(value: Value, location: &str, line: usize) -> Result<ReadEntry, HarReadError> {
    let entry: EntryIn = serde_path_to_error::deserialize(value).map_err(|e| {
        let field = e.path().to_string();
        let inner = e.into_inner();
        // serde's messages for a bad type or variant quote the value; only "missing field"
        // names nothing but the field.
        let message = inner.to_string();
        let reason = if message.starts_with("missing field") {
            message
        } else {
            "wrong type or value".to_owned()
        };
        HarReadError::Field {
            location: location.to_owned(),
            field,
            reason,
        }
    })?;
    entry.into_exchange(location, line)
}

fn skip_whitespace(text: &str, offset: usize) -> usize {
    text.get(offset..).map_or(offset, |rest| {
        offset + (rest.len() - rest.trim_start().len())
    })
}

fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()
        .get(..offset)
        .map_or(0, |before| before.iter().filter(|&&b| b == b'\n').count())
        + 1
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EntryIn {
    started_date_time: String,
    request: RequestIn,
    response: ResponseIn,
    timings: TimingsIn,
    #[serde(default)]
    connection: Option<String>,
    #[serde(rename = "_capture", default)]
    capture: Option<CaptureIn>,
    #[serde(rename = "_trailers", default)]
    trailers: Vec<NameValueIn>,
    #[serde(rename = "_grpc", default)]
    grpc: Option<GrpcIn>,
    #[serde(rename = "_replay", default)]
    replay: Option<Replay>,
}

#[derive(Deserialize)]
struct NameValueIn {
    name: String,
    value: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RequestIn {
    method: String,
    url: String,
    http_version: String,
    headers: Vec<NameValueIn>,
    #[serde(default)]
    post_data: Option<PostDataIn>,
    headers_size: i64,
    body_size: i64,
    #[serde(rename = "_trailers", default)]
    trailers: Vec<NameValueIn>,
}

#[derive(Deserialize)]
struct PostDataIn {
    #[serde(default)]
    text: String,
    /// Ours is `_encoding` (HAR 1.2 has no encoding for postData); accept the plain name too.
    #[serde(rename = "_encoding", alias = "encoding", default)]
    encoding: Option<String>,
    /// Ours: the text's size before the daemon's body redaction changed it.
    #[serde(rename = "_size", default)]
    size: Option<u64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ResponseIn {
    status: u16,
    status_text: String,
    http_version: String,
    headers: Vec<NameValueIn>,
    content: ContentIn,
    headers_size: i64,
    body_size: i64,
}

#[derive(Deserialize)]
struct ContentIn {
    #[serde(default)]
    size: i64,
    #[serde(default)]
    text: String,
    #[serde(default)]
    encoding: Option<String>,
}

#[derive(Deserialize)]
struct TimingsIn {
    send: f64,
    wait: f64,
    receive: f64,
}

#[derive(Deserialize)]
struct CaptureIn {
    #[serde(default)]
    workload: WorkloadIn,
    #[serde(default)]
    conn: ConnIn,
    #[serde(default)]
    pid: u32,
    protocol: String,
    #[serde(default)]
    routing_key: Option<String>,
    #[serde(default)]
    redacted: Vec<String>,
    #[serde(default)]
    truncated: TruncatedIn,
    original_size: Option<OriginalSizeIn>,
    #[serde(default)]
    incomplete: Option<String>,
    #[serde(default)]
    content_decoding: Option<ContentDecodingIn>,
}

#[derive(Deserialize, Default)]
struct WorkloadIn {
    namespace: Option<String>,
    pod: Option<String>,
    container: Option<String>,
    owner_kind: Option<String>,
    owner_name: Option<String>,
    node: Option<String>,
}

#[derive(Deserialize, Default)]
struct ConnIn {
    src: Option<String>,
    dst: Option<String>,
    role: Option<String>,
}

#[derive(Deserialize, Default)]
struct TruncatedIn {
    request: bool,
    response: bool,
}

#[derive(Deserialize)]
struct OriginalSizeIn {
    request: u64,
    response: Option<u64>,
}

#[derive(Deserialize, Default)]
struct ContentDecodingIn {
    #[serde(default)]
    request: Option<DecodingIn>,
    #[serde(default)]
    response: Option<DecodingIn>,
}

#[derive(Deserialize, Default, Clone)]
struct DecodingIn {
    #[serde(default)]
    decoded_from: Option<String>,
    #[serde(default)]
    decode_error: Option<String>,
}

#[derive(Deserialize)]
struct GrpcIn {
    service: String,
    method: String,
    status: Option<u32>,
    message: Option<String>,
}

/// Builds the field error of one entry.
fn field_error(location: &str, field: &str, reason: &str) -> HarReadError {
    HarReadError::Field {
        location: location.to_owned(),
        field: field.to_owned(),
        reason: reason.to_owned(),
    }
}

fn headers(list: Vec<NameValueIn>) -> Headers {
    list.into_iter()
        .map(|nv| Header::new(nv.name, nv.value))
        .collect()
}

fn version(text: &str) -> Option<HttpVersion> {
    match text {
        "HTTP/1.0" => Some(HttpVersion::Http10),
        "HTTP/1.1" => Some(HttpVersion::Http11),
        "HTTP/2" | "HTTP/2.0" | "h2" | "h2c" => Some(HttpVersion::Http2),
        _ => None,
    }
}

/// HAR milliseconds back to nanoseconds (`ms` in `har` divides once; this multiplies once and
/// rounds, which gives the same nanoseconds for any gap below 2^53 ns).
fn ns(ms: f64) -> Option<u64> {
    let ns = (ms * 1_000_000.0).round();
    // `as` saturates; the range check keeps the conversion exact.
    (ns.is_finite() && (0.0..1.8e19).contains(&ns)).then_some(ns as u64)
}

fn body_data(text: String, encoding: Option<&str>) -> Result<Vec<u8>, &'static str> {
    match encoding {
        None => Ok(text.into_bytes()),
        Some("base64") => BASE64
            .decode(text.as_bytes())
            .map_err(|_| "not valid base64"),
        Some(_) => Err("unknown encoding"),
    }
}

impl EntryIn {
    fn into_exchange(self, location: &str, line: usize) -> Result<ReadEntry, HarReadError> {
        let err = |field: &str, reason: &str| field_error(location, field, reason);
        let started = humantime::parse_rfc3339(&self.started_date_time)
            .map_err(|_| err("startedDateTime", "not an RFC 3339 date"))?;
        let started_ns = started
            .duration_since(UNIX_EPOCH)
            .ok()
            .and_then(|d| u64::try_from(d.as_nanos()).ok())
            .ok_or_else(|| err("startedDateTime", "outside 1970..2554"))?;
        let send = ns(self.timings.send).ok_or_else(|| err("timings.send", "not a duration"))?;
        let wait = ns(self.timings.wait).ok_or_else(|| err("timings.wait", "not a duration"))?;
        let receive =
            ns(self.timings.receive).ok_or_else(|| err("timings.receive", "not a duration"))?;

        let capture = self.capture;
        let request_version = version(&self.request.http_version)
            .ok_or_else(|| err("request.httpVersion", "unknown HTTP version"))?;
        let request_headers = headers(self.request.headers);
        let (truncated, original, decoding) = match &capture {
            Some(c) => (
                (c.truncated.request, c.truncated.response),
                c.original_size
                    .as_ref()
                    .map(|o| (Some(o.request), o.response)),
                c.content_decoding
                    .as_ref()
                    .map(|d| (d.request.clone(), d.response.clone())),
            ),
            None => ((false, false), None, None),
        };
        let (request_decoding, response_decoding) = decoding.unwrap_or_default();
        let har_size = |size: i64| u64::try_from(size).unwrap_or(0);
        let request_wire = original
            .and_then(|(request, _)| request)
            .unwrap_or_else(|| har_size(self.request.body_size));
        let (request_data, request_decoded_size) = match self.request.post_data {
            Some(post) => (
                body_data(post.text, post.encoding.as_deref())
                    .map_err(|reason| err("request.postData.text", reason))?,
                post.size,
            ),
            None => (Vec::new(), None),
        };
        // Redaction changes a body's length; `content.size` keeps the size before it.
        let body_redacted = capture
            .as_ref()
            .is_some_and(|c| c.redacted.iter().any(|name| name.starts_with("body:")));
        let request_decoding = request_decoding.unwrap_or_default();
        let mut request = Request {
            method: self.request.method,
            target: String::new(),
            version: request_version,
            headers: request_headers,
            headers_size: har_size(self.request.headers_size),
            body: Body {
                data: request_data,
                wire_size: request_wire,
                truncated: truncated.0,
                decoded_from: request_decoding.decoded_from,
                decode_error: request_decoding.decode_error,
                decoded_size: request_decoded_size,
            },
            trailers: headers(self.request.trailers),
        };

        // A response with no HTTP version is the HAR convention for "none".
        let response = if self.response.http_version.is_empty() {
            None
        } else {
            let r = self.response;
            let response_version = version(&r.http_version)
                .ok_or_else(|| err("response.httpVersion", "unknown HTTP version"))?;
            let text_body = r.content.encoding.is_none();
            let mut data = body_data(r.content.text, r.content.encoding.as_deref())
                .map_err(|reason| err("response.content.text", reason))?;
            // A text body cut by the capture limit inside a character is written without that
            // character's 1 to 3 bytes, but `content.size` counts them. They are read back as
            // an incomplete UTF-8 sequence of the same length (a 4-byte lead and continuation
            // bytes), which renders the same text and size.
            let cut = usize::try_from(r.content.size)
                .ok()
                .and_then(|size| size.checked_sub(data.len()))
                .filter(|cut| text_body && truncated.1 && !body_redacted && (1..=3).contains(cut));
            if let Some(cut) = cut {
                data.extend_from_slice(&[0xf0, 0x90, 0x80][..cut]);
            }
            // Any other difference is the size before redaction (`Body::decoded_size`).
            let decoded_size = u64::try_from(r.content.size)
                .ok()
                .filter(|&size| size != data.len() as u64);
            let decoding = response_decoding.unwrap_or_default();
            Some(Response {
                status: r.status,
                reason: r.status_text,
                version: response_version,
                headers: headers(r.headers),
                headers_size: har_size(r.headers_size),
                body: Body {
                    data,
                    wire_size: original
                        .and_then(|(_, response)| response)
                        .unwrap_or_else(|| har_size(r.body_size)),
                    truncated: truncated.1,
                    decoded_from: decoding.decoded_from,
                    decode_error: decoding.decode_error,
                    decoded_size,
                },
                trailers: headers(self.trailers),
            })
        };

        let request_end = started_ns.saturating_add(send);
        let answered = response.is_some() || wait > 0 || receive > 0;
        let response_start = answered.then(|| request_end.saturating_add(wait));
        let timing = Timing {
            request_start_ns: started_ns,
            request_end_ns: request_end,
            response_start_ns: response_start,
            response_end_ns: response_start.map(|start| start.saturating_add(receive)),
        };

        let (conn, pid, workload, protocol, routing_key, redacted, incomplete) = match capture {
            Some(c) => {
                let addr = |field: &str, text: Option<String>| {
                    text.map(|t| t.parse::<SocketAddr>())
                        .transpose()
                        .map_err(|_| err(field, "not a socket address"))
                };
                let role = match c.conn.role.as_deref() {
                    None => None,
                    Some("client") => Some(Role::Client),
                    Some("server") => Some(Role::Server),
                    Some(_) => return Err(err("_capture.conn.role", "unknown role")),
                };
                let protocol = match c.protocol.as_str() {
                    "h1" => Protocol::H1,
                    "h2" => Protocol::H2,
                    "grpc" => Protocol::Grpc,
                    _ => return Err(err("_capture.protocol", "unknown protocol")),
                };
                let incomplete = c
                    .incomplete
                    .as_deref()
                    .map(|text| {
                        Incomplete::parse(text)
                            .ok_or_else(|| err("_capture.incomplete", "unknown reason"))
                    })
                    .transpose()?;
                let conn = ConnMeta {
                    src: addr("_capture.conn.src", c.conn.src)?,
                    dst: addr("_capture.conn.dst", c.conn.dst)?,
                    role,
                    id: self.connection.unwrap_or_default().into(),
                };
                let w = c.workload;
                let workload = Workload {
                    namespace: w.namespace,
                    pod: w.pod,
                    container: w.container,
                    owner_kind: w.owner_kind,
                    owner_name: w.owner_name,
                    node: w.node,
                };
                (
                    conn,
                    c.pid,
                    workload,
                    protocol,
                    c.routing_key,
                    c.redacted,
                    incomplete,
                )
            }
            None => {
                let grpc = header_value(&request.headers, "content-type")
                    .is_some_and(|t| t.starts_with("application/grpc"));
                let protocol = match (request.version, grpc) {
                    (HttpVersion::Http2, true) => Protocol::Grpc,
                    (HttpVersion::Http2, false) => Protocol::H2,
                    _ => Protocol::H1,
                };
                let conn = ConnMeta {
                    id: self.connection.unwrap_or_default().into(),
                    ..ConnMeta::default()
                };
                let incomplete = response.is_none().then_some(Incomplete::NoResponse);
                (
                    conn,
                    0,
                    Workload::default(),
                    protocol,
                    None,
                    Vec::new(),
                    incomplete,
                )
            }
        };
        request.target = target_of(&request, &conn, &self.request.url);

        let grpc = self.grpc.map(|g| Grpc {
            service: g.service,
            method: g.method,
            status: g.status,
            message: g.message,
        });
        Ok(ReadEntry {
            exchange: Exchange {
                protocol,
                request,
                response,
                timing,
                incomplete,
                conn,
                pid,
                workload: workload.into(),
                redacted,
                routing_key,
                grpc,
                cgroup_id: 0,
            },
            replay: self.replay,
            line,
        })
    }
}

/// The request target that renders as `url`: the path and query after the authority
/// (origin-form), `*`, the authority of a CONNECT, or else the URL itself (absolute form,
/// which renders as itself).
fn target_of(request: &Request, conn: &ConnMeta, url: &str) -> String {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    let rest = &url[after_scheme..];
    let path_start = rest.find('/').map(|i| after_scheme + i);
    let mut candidates = Vec::with_capacity(3);
    if let Some(start) = path_start {
        candidates.push(url[start..].to_owned());
    } else {
        candidates.push("*".to_owned());
        candidates.push(rest.to_owned());
    }
    let mut probe = Request {
        method: request.method.clone(),
        target: String::new(),
        version: request.version,
        headers: request.headers.clone(),
        headers_size: 0,
        body: Body::default(),
        trailers: Headers::new(),
    };
    for candidate in candidates {
        probe.target = candidate;
        if request_url(&probe, conn) == url {
            return probe.target;
        }
    }
    url.to_owned()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::{
        clock::WallClock,
        fixtures::representative_redacted,
        har::{self, ReplayVerdict},
        wire::tests::exchange,
    };

    const CLOCK: WallClock = WallClock::with_offset_ns(1_714_521_600_000_000_000);
    const UNIX: WallClock = WallClock::with_offset_ns(0);

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// render → read → render gives the same bytes.
        #[test]
        fn render_read_render_is_identical(ex in exchange()) {
            let line = har::entry_json_line(&ex, &CLOCK);
            let read = read_entries(&line).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(read.len(), 1);
            prop_assert_eq!(har::entry_json_line(&read[0].exchange, &UNIX), line);
            prop_assert_eq!(&read[0].replay, &None);
        }
    }

    fn replay() -> Replay {
        Replay {
            pair_id: "3-0badcafe".into(),
            source: "in.jsonl:3".into(),
            target: "http://127.0.0.1:8080".into(),
            verdict: ReplayVerdict::Sent,
            reason: None,
            injected: vec!["authorization".into()],
        }
    }

    #[test]
    fn replay_is_written_last_and_read_back() {
        let ex = representative_redacted();
        let mut out = Vec::new();
        har::write_entry_with_replay(&ex, &CLOCK, &replay(), &mut out);
        let line = String::from_utf8(out).unwrap();
        let plain = har::entry_json_line(&ex, &CLOCK);
        assert_eq!(
            line,
            format!(
                "{},\"_replay\":{{\"pair_id\":\"3-0badcafe\",\"source\":\"in.jsonl:3\",\"target\":\"http://127.0.0.1:8080\",\"verdict\":\"sent\",\"injected\":[\"authorization\"]}}}}",
                plain.strip_suffix('}').unwrap()
            )
        );
        let read = read_entries(&line).unwrap();
        assert_eq!(read[0].replay, Some(replay()));
        let mut again = Vec::new();
        har::write_entry_with_replay(&read[0].exchange, &UNIX, &replay(), &mut again);
        assert_eq!(String::from_utf8(again).unwrap(), line);
    }

    #[test]
    fn reads_jsonl_and_whole_har_files_with_lines() {
        let ex = representative_redacted();
        let line = har::entry_json_line(&ex, &CLOCK);
        let jsonl = format!("{line}\n\n{line}\n");
        let read = read_entries(&jsonl).unwrap();
        assert_eq!(read.iter().map(|e| e.line).collect::<Vec<_>>(), vec![1, 3]);
        let har_file = format!(
            "{{\"log\":{{\"version\":\"1.2\",\"creator\":{{\"name\":\"x\",\"version\":\"1\"}},\n\"entries\":[{line},{line}]}}}}\n{line}"
        );
        let read = read_entries(&har_file).unwrap();
        assert_eq!(read.len(), 3);
        assert_eq!(read[2].line, 3);
        for entry in &read {
            assert_eq!(har::entry_json_line(&entry.exchange, &UNIX), line);
        }
        assert_eq!(read[0].exchange.request.target, ex.request.target);
    }

    #[test]
    fn errors_name_line_and_field_never_values() {
        let ex = representative_redacted();
        let good = har::entry_json_line(&ex, &CLOCK);
        let secret = "s3cret-token";
        let bad_type = good.replacen("\"status\":201", &format!("\"status\":\"{secret}\""), 1);
        let err = read_entries(&format!("{good}\n{bad_type}\n")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "line 2: field `response.status`: wrong type or value"
        );
        let bad_role = good.replacen("\"role\":\"client\"", &format!("\"role\":\"{secret}\""), 1);
        assert_eq!(
            read_entries(&bad_role).unwrap_err().to_string(),
            "line 1: field `_capture.conn.role`: unknown role"
        );
        let missing = good.replacen("\"method\":\"POST\",", "", 1);
        assert_eq!(
            read_entries(&missing).unwrap_err().to_string(),
            "line 1: field `request`: missing field `method`"
        );
        let bad_base64 = good.replacen(
            "\"mimeType\":\"application/json\",\"text\":\"{\\\"item\\\"",
            &format!(
                "\"mimeType\":\"x\",\"_encoding\":\"base64\",\"text\":\"{secret}!{{\\\"item\\\""
            ),
            1,
        );
        assert_ne!(bad_base64, good);
        let err = read_entries(&bad_base64).unwrap_err().to_string();
        assert_eq!(
            err,
            "line 1: field `request.postData.text`: not valid base64"
        );
        let cut = &good[..good.len() / 2];
        let err = read_entries(cut).unwrap_err();
        assert!(
            matches!(
                err,
                HarReadError::Syntax {
                    line: 1,
                    reason: "unexpected end of input",
                    ..
                }
            ),
            "{err}"
        );
        for input in [&bad_type, &bad_role, &bad_base64] {
            let e = read_entries(input).unwrap_err().to_string();
            assert!(!e.contains(secret), "{e}");
        }
    }

    #[test]
    fn foreign_har_without_capture_fields() {
        let text = r#"{"log":{"entries":[{"startedDateTime":"2024-05-01T12:00:00.000Z","time":3,"request":{"method":"GET","url":"https://api.example/v1/items?a=1","httpVersion":"HTTP/2.0","headers":[{"name":":authority","value":"api.example"},{"name":":scheme","value":"https"}],"queryString":[],"cookies":[],"headersSize":-1,"bodySize":0},"response":{"status":200,"statusText":"OK","httpVersion":"HTTP/2.0","headers":[],"cookies":[],"content":{"size":2,"mimeType":"application/json","text":"{}"},"redirectURL":"","headersSize":-1,"bodySize":-1},"cache":{},"timings":{"send":1,"wait":1.5,"receive":0.5}}]}}"#;
        let read = read_entries(text).unwrap();
        let ex = &read[0].exchange;
        assert_eq!(ex.protocol, Protocol::H2);
        assert_eq!(ex.request.target, "/v1/items?a=1");
        assert_eq!(ex.response.as_ref().unwrap().body.data, b"{}");
        assert_eq!(ex.incomplete, None);
        assert_eq!(
            ex.timing.response_end_ns.unwrap() - ex.timing.request_start_ns,
            3_000_000
        );
    }
}
