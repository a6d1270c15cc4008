//! The exchange model in the `capture.v1` wire form (proto/capture/v1/capture.proto), and back.
//!
//! [`to_proto`] is what a daemon sends to the collector; [`from_proto`] is how the collector
//! reads it, so both render HAR entries with the one renderer in [`crate::har`]. [`Encoder`]
//! writes the bytes of `to_proto` straight from the borrowed exchange, without building the
//! message (the daemon's exporter encodes every exchange this way).
//!
//! Timing: the model holds `CLOCK_MONOTONIC` nanoseconds of the node; the wire holds Unix
//! nanoseconds, converted with the daemon's [`WallClock`]. [`from_proto`] puts the Unix
//! nanoseconds into the model's timing fields, so an exchange read from the wire is rendered
//! with `WallClock::with_offset_ns(0)`: then
//! `har::entry_json_line(&from_proto(to_proto(ex, clock))?, &WallClock::with_offset_ns(0))` is
//! byte for byte `har::entry_json_line(ex, clock)` for every exchange whose edges fall between
//! 1970 and the year 2554, the range of Unix nanoseconds in a `u64` (outside it, timestamps
//! are clamped and the clamped edges no longer keep their distances).
//!
//! The wire form is read defensively: it comes from another machine. An unknown enum value, a
//! malformed address, a status beyond `u16` or a missing request is a [`WireError`], never a
//! panic. An absent `connection`, `workload` or body reads as empty, as proto3 has it.

mod encode;

use std::net::SocketAddr;

use capture_proto::v1 as pb;

pub use encode::Encoder;

use crate::{
    clock::WallClock,
    exchange::{
        Body, ConnMeta, Exchange, Grpc, Header, Headers, HttpVersion, Incomplete, Protocol,
        Request, Response, Role, Timing, Workload,
    },
};

/// Longest piece of a bad value quoted in a [`WireError`]: enough to recognise it, not enough
/// to fill a log line with whatever a peer sent.
const QUOTE_MAX: usize = 64;

/// Why a wire exchange could not be read into the model.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("exchange has no {0}")]
    Missing(&'static str),
    #[error("unknown {field} value {value}")]
    UnknownEnum { field: &'static str, value: i32 },
    #[error("unknown incomplete reason {0:?}")]
    UnknownIncomplete(String),
    #[error("{field} is not an ip:port address: {value:?}")]
    BadAddress { field: &'static str, value: String },
    #[error("response status {0} is out of range")]
    StatusOutOfRange(u32),
}

/// The wire form of `ex`; `clock` turns its monotonic timestamps into Unix time.
pub fn to_proto(ex: &Exchange, clock: &WallClock) -> pb::Exchange {
    let timing = &ex.timing;
    pb::Exchange {
        protocol: protocol_to_proto(ex.protocol) as i32,
        request: Some(request_to_proto(&ex.request)),
        response: ex.response.as_ref().map(response_to_proto),
        timing: Some(pb::Timing {
            request_start_unix_nanos: clock.to_unix_ns(timing.request_start_ns),
            request_end_unix_nanos: clock.to_unix_ns(timing.request_end_ns),
            response_start_unix_nanos: timing.response_start_ns.map(|ns| clock.to_unix_ns(ns)),
            response_end_unix_nanos: timing.response_end_ns.map(|ns| clock.to_unix_ns(ns)),
        }),
        incomplete: ex.incomplete.map(|reason| reason.as_str().to_owned()),
        connection: Some(pb::Connection {
            id: ex.conn.id.to_string(),
            src: ex.conn.src.map(|addr| addr.to_string()),
            dst: ex.conn.dst.map(|addr| addr.to_string()),
            role: match ex.conn.role {
                None => pb::Role::Unspecified,
                Some(Role::Client) => pb::Role::Client,
                Some(Role::Server) => pb::Role::Server,
            } as i32,
        }),
        pid: ex.pid,
        workload: Some(pb::Workload {
            namespace: ex.workload.namespace.clone(),
            pod: ex.workload.pod.clone(),
            container: ex.workload.container.clone(),
            owner_kind: ex.workload.owner_kind.clone(),
            owner_name: ex.workload.owner_name.clone(),
            node: ex.workload.node.clone(),
        }),
        redacted: ex.redacted.clone(),
        routing_key: ex.routing_key.clone(),
        grpc: ex.grpc.as_ref().map(|g| pb::Grpc {
            service: g.service.clone(),
            method: g.method.clone(),
            status: g.status,
            message: g.message.clone(),
        }),
        cgroup_id: ex.cgroup_id,
    }
}

/// The model of a wire exchange. Its timing fields hold Unix nanoseconds: render it with
/// `WallClock::with_offset_ns(0)` (see the module documentation).
pub fn from_proto(pb: pb::Exchange) -> Result<Exchange, WireError> {
    let protocol = protocol_from_proto(pb.protocol)?;
    let request = request_from_proto(pb.request.ok_or(WireError::Missing("request"))?)?;
    let response = pb.response.map(response_from_proto).transpose()?;
    let timing = pb.timing.ok_or(WireError::Missing("timing"))?;
    let incomplete = pb
        .incomplete
        .as_deref()
        .map(incomplete_from_proto)
        .transpose()?;
    let connection = pb.connection.unwrap_or_default();
    let role = role_from_proto(connection.role)?;
    let workload = pb.workload.unwrap_or_default();
    Ok(Exchange {
        protocol,
        request,
        response,
        timing: Timing {
            request_start_ns: timing.request_start_unix_nanos,
            request_end_ns: timing.request_end_unix_nanos,
            response_start_ns: timing.response_start_unix_nanos,
            response_end_ns: timing.response_end_unix_nanos,
        },
        incomplete,
        conn: ConnMeta {
            src: address(connection.src.as_deref(), "connection.src")?,
            dst: address(connection.dst.as_deref(), "connection.dst")?,
            role,
            id: connection.id.into(),
        },
        pid: pb.pid,
        workload: Workload {
            namespace: workload.namespace,
            pod: workload.pod,
            container: workload.container,
            owner_kind: workload.owner_kind,
            owner_name: workload.owner_name,
            node: workload.node,
        }
        .into(),
        redacted: pb.redacted,
        routing_key: pb.routing_key,
        grpc: pb.grpc.map(|g| Grpc {
            service: g.service,
            method: g.method,
            status: g.status,
            message: g.message,
        }),
        cgroup_id: pb.cgroup_id,
    })
}

/// Whether [`from_proto`] would accept `pb`, without building anything: the first error it
/// would return, or `Ok`. The collector checks every exchange of a batch this way before it
/// stores the batch.
pub fn check(pb: &pb::Exchange) -> Result<(), WireError> {
    protocol_from_proto(pb.protocol)?;
    let request = pb.request.as_ref().ok_or(WireError::Missing("request"))?;
    version_from_proto(request.version, "request.version")?;
    if let Some(response) = &pb.response {
        status_from_proto(response.status)?;
        version_from_proto(response.version, "response.version")?;
    }
    pb.timing.as_ref().ok_or(WireError::Missing("timing"))?;
    pb.incomplete
        .as_deref()
        .map(incomplete_from_proto)
        .transpose()?;
    let connection = pb.connection.as_ref();
    role_from_proto(connection.map_or(0, |c| c.role))?;
    address(connection.and_then(|c| c.src.as_deref()), "connection.src")?;
    address(connection.and_then(|c| c.dst.as_deref()), "connection.dst")?;
    Ok(())
}

fn protocol_from_proto(value: i32) -> Result<Protocol, WireError> {
    match enum_value::<pb::Protocol>(value, "protocol")? {
        pb::Protocol::H1 => Ok(Protocol::H1),
        pb::Protocol::H2 => Ok(Protocol::H2),
        pb::Protocol::Grpc => Ok(Protocol::Grpc),
        pb::Protocol::Unspecified => Err(WireError::UnknownEnum {
            field: "protocol",
            value,
        }),
    }
}

fn role_from_proto(value: i32) -> Result<Option<Role>, WireError> {
    Ok(match enum_value::<pb::Role>(value, "connection.role")? {
        pb::Role::Unspecified => None,
        pb::Role::Client => Some(Role::Client),
        pb::Role::Server => Some(Role::Server),
    })
}

fn incomplete_from_proto(text: &str) -> Result<Incomplete, WireError> {
    Incomplete::parse(text).ok_or_else(|| WireError::UnknownIncomplete(quote(text)))
}

fn status_from_proto(status: u32) -> Result<u16, WireError> {
    u16::try_from(status).map_err(|_| WireError::StatusOutOfRange(status))
}

fn protocol_to_proto(protocol: Protocol) -> pb::Protocol {
    match protocol {
        Protocol::H1 => pb::Protocol::H1,
        Protocol::H2 => pb::Protocol::H2,
        Protocol::Grpc => pb::Protocol::Grpc,
    }
}

fn version_to_proto(version: HttpVersion) -> i32 {
    let version = match version {
        HttpVersion::Http10 => pb::HttpVersion::HttpVersion10,
        HttpVersion::Http11 => pb::HttpVersion::HttpVersion11,
        HttpVersion::Http2 => pb::HttpVersion::HttpVersion2,
    };
    version as i32
}

fn version_from_proto(value: i32, field: &'static str) -> Result<HttpVersion, WireError> {
    match enum_value::<pb::HttpVersion>(value, field)? {
        pb::HttpVersion::HttpVersion10 => Ok(HttpVersion::Http10),
        pb::HttpVersion::HttpVersion11 => Ok(HttpVersion::Http11),
        pb::HttpVersion::HttpVersion2 => Ok(HttpVersion::Http2),
        pb::HttpVersion::Unspecified => Err(WireError::UnknownEnum { field, value }),
    }
}

fn enum_value<E: TryFrom<i32>>(value: i32, field: &'static str) -> Result<E, WireError> {
    E::try_from(value).map_err(|_| WireError::UnknownEnum { field, value })
}

fn headers_to_proto(headers: &Headers) -> Vec<pb::Header> {
    headers
        .iter()
        .map(|h| pb::Header {
            name: h.name.to_owned(),
            value: h.value.to_owned(),
        })
        .collect()
}

fn headers_from_proto(headers: Vec<pb::Header>) -> Headers {
    headers
        .into_iter()
        .map(|h| Header {
            name: h.name,
            value: h.value,
        })
        .collect()
}

fn body_to_proto(body: &Body) -> pb::Body {
    pb::Body {
        data: body.data.clone(),
        wire_size: body.wire_size,
        truncated: body.truncated,
        decoded_from: body.decoded_from.clone(),
        decode_error: body.decode_error.clone(),
        decoded_size: body.decoded_size,
    }
}

fn body_from_proto(body: Option<pb::Body>) -> Body {
    let body = body.unwrap_or_default();
    Body {
        data: body.data,
        wire_size: body.wire_size,
        truncated: body.truncated,
        decoded_from: body.decoded_from,
        decode_error: body.decode_error,
        decoded_size: body.decoded_size,
    }
}

fn request_to_proto(request: &Request) -> pb::Request {
    pb::Request {
        method: request.method.clone(),
        target: request.target.clone(),
        version: version_to_proto(request.version),
        headers: headers_to_proto(&request.headers),
        headers_size: request.headers_size,
        body: Some(body_to_proto(&request.body)),
        trailers: headers_to_proto(&request.trailers),
    }
}

fn request_from_proto(request: pb::Request) -> Result<Request, WireError> {
    Ok(Request {
        version: version_from_proto(request.version, "request.version")?,
        method: request.method,
        target: request.target,
        headers: headers_from_proto(request.headers),
        headers_size: request.headers_size,
        body: body_from_proto(request.body),
        trailers: headers_from_proto(request.trailers),
    })
}

fn response_to_proto(response: &Response) -> pb::Response {
    pb::Response {
        status: u32::from(response.status),
        reason: response.reason.clone(),
        version: version_to_proto(response.version),
        headers: headers_to_proto(&response.headers),
        headers_size: response.headers_size,
        body: Some(body_to_proto(&response.body)),
        trailers: headers_to_proto(&response.trailers),
    }
}

fn response_from_proto(response: pb::Response) -> Result<Response, WireError> {
    Ok(Response {
        status: status_from_proto(response.status)?,
        version: version_from_proto(response.version, "response.version")?,
        reason: response.reason,
        headers: headers_from_proto(response.headers),
        headers_size: response.headers_size,
        body: body_from_proto(response.body),
        trailers: headers_from_proto(response.trailers),
    })
}

fn address(text: Option<&str>, field: &'static str) -> Result<Option<SocketAddr>, WireError> {
    text.map(|text| {
        text.parse().map_err(|_| WireError::BadAddress {
            field,
            value: quote(text),
        })
    })
    .transpose()
}

/// At most [`QUOTE_MAX`] bytes of `text`, cut at a character boundary.
fn quote(text: &str) -> String {
    let mut end = text.len().min(QUOTE_MAX);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

#[cfg(test)]
pub(crate) mod tests {
    use proptest::{collection::vec, option, prelude::*, strategy::ValueTree as _};

    use super::*;
    use crate::har;

    /// A node whose monotonic clock started at 2024-05-01T00:00:00Z.
    const CLOCK: WallClock = WallClock::with_offset_ns(1_714_521_600_000_000_000);
    const UNIX: WallClock = WallClock::with_offset_ns(0);

    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-zA-Z0-9 /:._-]{0,24}",
            // Control characters, quotes, the replacement character lossy decoding leaves,
            // line separators, astral characters.
            "[\\x00-\\x1f\"\\\\\u{7f}\u{85}\u{fffd}\u{2028}\u{1F600}é€a]{0,16}",
        ]
    }

    fn headers() -> impl Strategy<Value = Headers> {
        vec(
            (
                prop_oneof![
                    Just("Host".to_owned()),
                    Just("content-type".to_owned()),
                    Just(":authority".to_owned()),
                    Just(":scheme".to_owned()),
                    Just("Location".to_owned()),
                    Just("grpc-status".to_owned()),
                    text(),
                ],
                text(),
            )
                .prop_map(|(name, value)| Header { name, value }),
            0..6,
        )
        .prop_map(Headers::from)
    }

    fn body() -> impl Strategy<Value = Body> {
        (
            prop_oneof![
                vec(any::<u8>(), 0..64),
                text().prop_map(String::into_bytes),
                Just(b"{\"json\":true}".to_vec()),
            ],
            any::<u64>(),
            any::<bool>(),
            option::of(prop_oneof![Just("gzip".to_owned()), Just("br".to_owned())]),
            option::of(text()),
            option::of(any::<u64>()),
        )
            .prop_map(
                |(data, wire_size, truncated, decoded_from, decode_error, decoded_size)| Body {
                    data,
                    wire_size,
                    truncated,
                    decoded_from,
                    decode_error,
                    decoded_size,
                },
            )
    }

    fn version() -> impl Strategy<Value = HttpVersion> {
        prop_oneof![
            Just(HttpVersion::Http10),
            Just(HttpVersion::Http11),
            Just(HttpVersion::Http2),
        ]
    }

    fn request() -> impl Strategy<Value = Request> {
        (
            prop_oneof![Just("GET".to_owned()), Just("CONNECT".to_owned()), text()],
            prop_oneof![
                Just("/p?q=a+b&x=%2F&caf%C3%A9=%E2%82%AC&bad=%ZZ".to_owned()),
                Just("*".to_owned()),
                Just("http://abs.example/x".to_owned()),
                Just("db.example:5432".to_owned()),
                text(),
            ],
            version(),
            headers(),
            any::<u64>(),
            body(),
            headers(),
        )
            .prop_map(
                |(method, target, version, headers, headers_size, body, trailers)| Request {
                    method,
                    target,
                    version,
                    headers,
                    headers_size,
                    body,
                    trailers,
                },
            )
    }

    fn response() -> impl Strategy<Value = Response> {
        (
            any::<u16>(),
            text(),
            version(),
            headers(),
            any::<u64>(),
            body(),
            headers(),
        )
            .prop_map(
                |(status, reason, version, headers, headers_size, body, trailers)| Response {
                    status,
                    reason,
                    version,
                    headers,
                    headers_size,
                    body,
                    trailers,
                },
            )
    }

    fn socket_addr() -> impl Strategy<Value = SocketAddr> {
        prop_oneof![
            (any::<[u8; 4]>(), any::<u16>())
                .prop_map(|(ip, port)| SocketAddr::from((std::net::Ipv4Addr::from(ip), port))),
            (any::<[u8; 16]>(), any::<u16>(), any::<u32>()).prop_map(|(ip, port, scope)| {
                SocketAddr::V6(std::net::SocketAddrV6::new(ip.into(), port, 0, scope))
            }),
        ]
    }

    /// Edges within a day of each other, any order, anywhere within ten years of the clock's
    /// start (the wall clock must not clamp: see the module documentation).
    fn timing() -> impl Strategy<Value = Timing> {
        let edge = 0..86_400_000_000_000_u64;
        (
            0..315_360_000_000_000_000_u64,
            edge.clone(),
            option::of(edge.clone()),
            option::of(edge),
        )
            .prop_map(|(base, request_end, response_start, response_end)| Timing {
                request_start_ns: base,
                request_end_ns: base + request_end,
                response_start_ns: response_start.map(|d| base + d),
                response_end_ns: response_end.map(|d| base + d),
            })
    }

    fn workload() -> impl Strategy<Value = Workload> {
        vec(option::of(text()), 6).prop_map(|mut f| Workload {
            node: f.pop().flatten(),
            owner_name: f.pop().flatten(),
            owner_kind: f.pop().flatten(),
            container: f.pop().flatten(),
            pod: f.pop().flatten(),
            namespace: f.pop().flatten(),
        })
    }

    /// Any exchange, edge cases included (also the HAR reader's round-trip property).
    pub(crate) fn exchange() -> impl Strategy<Value = Exchange> {
        (
            prop_oneof![Just(Protocol::H1), Just(Protocol::H2), Just(Protocol::Grpc)],
            request(),
            option::of(response()),
            timing(),
            option::of(proptest::sample::select(Incomplete::ALL.to_vec())),
            (
                option::of(socket_addr()),
                option::of(socket_addr()),
                option::of(prop_oneof![Just(Role::Client), Just(Role::Server)]),
                text(),
            ),
            any::<u32>(),
            workload(),
            (
                vec(text(), 0..3),
                option::of(text()),
                option::of((text(), text(), option::of(any::<u32>()), option::of(text()))),
                any::<u64>(),
            ),
        )
            .prop_map(
                |(
                    protocol,
                    request,
                    response,
                    timing,
                    incomplete,
                    (src, dst, role, id),
                    pid,
                    workload,
                    (redacted, routing_key, grpc, cgroup_id),
                )| Exchange {
                    protocol,
                    request,
                    response,
                    timing,
                    incomplete,
                    conn: ConnMeta {
                        src,
                        dst,
                        role,
                        id: id.into(),
                    },
                    pid,
                    workload: workload.into(),
                    redacted,
                    routing_key,
                    grpc: grpc.map(|(service, method, status, message)| Grpc {
                        service,
                        method,
                        status,
                        message,
                    }),
                    cgroup_id,
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// The collector renders exactly the entry the daemon's JSONL sink writes.
        #[test]
        fn wire_round_trip_renders_the_same_entry(ex in exchange()) {
            let wire = to_proto(&ex, &CLOCK);
            prop_assert_eq!(check(&wire), Ok(()));
            let back = from_proto(wire.clone()).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(
                har::entry_json_line(&back, &UNIX),
                har::entry_json_line(&ex, &CLOCK)
            );
            // Everything but the clock survives as it was, the cgroup id included.
            let mut unshifted = back.clone();
            let shift = |ns: u64| ns - CLOCK.to_unix_ns(0);
            unshifted.timing = Timing {
                request_start_ns: shift(back.timing.request_start_ns),
                request_end_ns: shift(back.timing.request_end_ns),
                response_start_ns: back.timing.response_start_ns.map(shift),
                response_end_ns: back.timing.response_end_ns.map(shift),
            };
            prop_assert_eq!(&unshifted, &ex);
            // And through the bytes: prost encodes and decodes it unchanged.
            let bytes = prost::Message::encode_to_vec(&wire);
            let decoded: pb::Exchange = prost::Message::decode(bytes.as_slice())
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(decoded, wire);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// The borrowed encoder writes exactly prost's bytes of `to_proto`.
        #[test]
        fn encoder_writes_the_bytes_of_to_proto(ex in exchange()) {
            let expected = prost::Message::encode_to_vec(&to_proto(&ex, &CLOCK));
            let encoder = Encoder::new(&ex, &CLOCK);
            prop_assert_eq!(encoder.encoded_len(), expected.len());
            let mut bytes = b"earlier".to_vec();
            encoder.encode(&mut bytes);
            prop_assert_eq!(&bytes[..7], b"earlier");
            prop_assert_eq!(&bytes[7..], expected.as_slice());
        }
    }

    #[test]
    fn encoder_writes_defaults_as_prost_does() {
        // Zero timestamps, empty strings and an empty exchange: every proto3 default left out,
        // every optional and message field written.
        let mut ex = crate::fixtures::representative();
        ex.timing = Timing::default();
        ex.pid = 0;
        ex.cgroup_id = 0;
        ex.conn = ConnMeta::default();
        ex.request.method = String::new();
        ex.request.headers = vec![Header::new("", "")].into();
        ex.redacted = vec![String::new()];
        ex.routing_key = Some(String::new());
        ex.workload = Workload {
            pod: Some(String::new()),
            ..Workload::default()
        }
        .into();
        ex.grpc = Some(Grpc {
            status: Some(0),
            message: Some(String::new()),
            ..Grpc::default()
        });
        for clock in [CLOCK, UNIX] {
            let expected = prost::Message::encode_to_vec(&to_proto(&ex, &clock));
            let mut bytes = Vec::new();
            Encoder::new(&ex, &clock).encode(&mut bytes);
            assert_eq!(bytes, expected);
        }
    }

    /// `from_proto`, asserting `check` agrees with it.
    fn read(pb: pb::Exchange) -> Result<Exchange, WireError> {
        let checked = check(&pb);
        let read = from_proto(pb);
        assert_eq!(checked.clone().err(), read.clone().err());
        read
    }

    fn sample() -> pb::Exchange {
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        let ex = exchange()
            .new_tree(&mut runner)
            .map(|tree| tree.current())
            .unwrap_or_else(|e| panic!("{e}"));
        to_proto(&ex, &CLOCK)
    }

    #[test]
    fn unknown_enums_are_errors() {
        let mut pb = sample();
        pb.protocol = 99;
        assert_eq!(
            read(pb).unwrap_err(),
            WireError::UnknownEnum {
                field: "protocol",
                value: 99
            }
        );
        let mut pb = sample();
        pb.protocol = pb::Protocol::Unspecified as i32;
        assert!(matches!(
            read(pb),
            Err(WireError::UnknownEnum {
                field: "protocol",
                ..
            })
        ));
        let mut pb = sample();
        if let Some(request) = &mut pb.request {
            request.version = pb::HttpVersion::Unspecified as i32;
        }
        assert!(matches!(
            read(pb),
            Err(WireError::UnknownEnum {
                field: "request.version",
                ..
            })
        ));
        let mut pb = sample();
        pb.response = Some(pb::Response {
            version: -3,
            ..pb::Response::default()
        });
        assert!(matches!(
            read(pb),
            Err(WireError::UnknownEnum {
                field: "response.version",
                value: -3
            })
        ));
        let mut pb = sample();
        if let Some(connection) = &mut pb.connection {
            connection.role = 7;
        }
        assert!(matches!(
            read(pb),
            Err(WireError::UnknownEnum {
                field: "connection.role",
                value: 7
            })
        ));
    }

    #[test]
    fn malformed_values_are_errors() {
        for bad in [
            "10.0.0.1",
            "[fd00::1]",
            "host:80",
            "",
            "10.0.0.1:99999",
            "::1:80",
        ] {
            let mut pb = sample();
            if let Some(connection) = &mut pb.connection {
                connection.dst = Some(bad.to_owned());
            }
            assert!(
                matches!(
                    read(pb),
                    Err(WireError::BadAddress {
                        field: "connection.dst",
                        ..
                    })
                ),
                "{bad}"
            );
        }
        let mut pb = sample();
        pb.incomplete = Some("Gap".into());
        assert_eq!(
            read(pb).unwrap_err(),
            WireError::UnknownIncomplete("Gap".into())
        );
        let mut pb = sample();
        pb.response = Some(pb::Response {
            status: 70_000,
            version: pb::HttpVersion::HttpVersion11 as i32,
            ..pb::Response::default()
        });
        assert_eq!(read(pb).unwrap_err(), WireError::StatusOutOfRange(70_000));
        let mut pb = sample();
        pb.request = None;
        assert_eq!(read(pb).unwrap_err(), WireError::Missing("request"));
        let mut pb = sample();
        pb.timing = None;
        assert_eq!(read(pb).unwrap_err(), WireError::Missing("timing"));
    }

    #[test]
    fn errors_quote_little_of_a_bad_value() {
        let mut pb = sample();
        pb.incomplete = Some("é".repeat(1000));
        let message = read(pb).unwrap_err().to_string();
        assert!(message.len() < 200, "{message}");
    }

    #[test]
    fn absent_parts_read_as_empty() {
        let pb = pb::Exchange {
            protocol: pb::Protocol::H1 as i32,
            request: Some(pb::Request {
                method: "GET".into(),
                target: "/".into(),
                version: pb::HttpVersion::HttpVersion11 as i32,
                ..pb::Request::default()
            }),
            timing: Some(pb::Timing::default()),
            ..pb::Exchange::default()
        };
        let ex = read(pb).unwrap();
        assert_eq!(ex.conn, ConnMeta::default());
        assert_eq!(ex.workload, Default::default());
        assert_eq!(ex.request.body, Body::default());
        assert!(ex.response.is_none() && ex.incomplete.is_none() && ex.grpc.is_none());
    }

    #[test]
    fn every_incomplete_reason_parses_back() {
        for reason in Incomplete::ALL {
            assert_eq!(Incomplete::parse(reason.as_str()), Some(reason));
        }
        assert_eq!(Incomplete::parse("connection-closed"), None);
    }
}
