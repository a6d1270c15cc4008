//! Property tests: random chunked encodings and random pipelines, fed at random split
//! points, decode to exactly what was encoded.

use proptest::prelude::*;

use super::tests::exchanges;
use super::*;
use capture_model::exchange::Header;

/// Feeds `stream` on `side` cut at `cuts` (positions, any order, out of range ignored),
/// with increasing timestamps from `ts`.
fn feed_split(
    conn: &mut Http1Conn,
    side: Side,
    stream: &[u8],
    cuts: &[usize],
    ts: &mut u64,
    out: &mut Vec<Http1Output>,
) {
    let mut cuts: Vec<usize> = cuts
        .iter()
        .copied()
        .filter(|&c| c > 0 && c < stream.len())
        .collect();
    cuts.sort_unstable();
    cuts.dedup();
    let mut from = 0;
    for to in cuts.into_iter().chain([stream.len()]) {
        *ts += 1;
        conn.on_data(side, &stream[from..to], *ts, out);
        from = to;
    }
}

fn no_errors(out: &[Http1Output]) -> bool {
    !out.iter().any(|o| matches!(o, Http1Output::Error(_)))
}

#[derive(Clone, Debug)]
enum Ext {
    None,
    Name(String),
    Token(String, String),
    Quoted(String, String),
}

fn ext() -> impl Strategy<Value = Ext> {
    let name = "[a-z][a-z0-9-]{0,8}";
    prop_oneof![
        Just(Ext::None),
        name.prop_map(Ext::Name),
        (name, "[a-zA-Z0-9]{1,8}").prop_map(|(n, v)| Ext::Token(n, v)),
        (name, "[a-z ;=]{0,10}").prop_map(|(n, v)| Ext::Quoted(n, v)),
    ]
}

fn render_ext(e: &Ext, spaced: bool) -> String {
    let sp = if spaced { " " } else { "" };
    match e {
        Ext::None => String::new(),
        Ext::Name(n) => format!("{sp};{sp}{n}"),
        Ext::Token(n, v) => format!("{sp};{n}={v}"),
        Ext::Quoted(n, v) => format!(";{n}=\"{v}\""),
    }
}

/// Header field value without leading or trailing whitespace (RFC 9110 §5.5).
fn field_value() -> impl Strategy<Value = String> {
    "[!-~]([ -~]{0,16}[!-~])?"
}

#[derive(Clone, Debug)]
struct ChunkedCase {
    body: Vec<u8>,
    sizes: Vec<usize>,
    exts: Vec<(Ext, bool)>,
    upper_hex: bool,
    trailers: Vec<(String, String)>,
    cuts: Vec<usize>,
}

fn chunked_case() -> impl Strategy<Value = ChunkedCase> {
    (
        prop::collection::vec(any::<u8>(), 0..2000),
        prop::collection::vec(1usize..700, 1..20),
        prop::collection::vec((ext(), any::<bool>()), 1..8),
        any::<bool>(),
        prop::collection::vec(("[A-Za-z][A-Za-z0-9-]{0,10}", field_value()), 0..4),
        prop::collection::vec(0usize..4000, 0..12),
    )
        .prop_map(
            |(body, sizes, exts, upper_hex, trailers, cuts)| ChunkedCase {
                body,
                sizes,
                exts,
                upper_hex,
                trailers,
                cuts,
            },
        )
}

fn encode_chunked(c: &ChunkedCase) -> Vec<u8> {
    let mut wire = Vec::new();
    let mut rest = c.body.as_slice();
    let mut i = 0;
    while !rest.is_empty() {
        let n = c.sizes[i % c.sizes.len()].min(rest.len());
        let (e, spaced) = &c.exts[i % c.exts.len()];
        let size = if c.upper_hex {
            format!("{n:X}")
        } else {
            format!("{n:x}")
        };
        wire.extend_from_slice(format!("{size}{}\r\n", render_ext(e, *spaced)).as_bytes());
        wire.extend_from_slice(&rest[..n]);
        wire.extend_from_slice(b"\r\n");
        rest = &rest[n..];
        i += 1;
    }
    let (e, spaced) = &c.exts[i % c.exts.len()];
    wire.extend_from_slice(format!("0{}\r\n", render_ext(e, *spaced)).as_bytes());
    for (name, value) in &c.trailers {
        wire.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    wire.extend_from_slice(b"\r\n");
    wire
}

#[derive(Clone, Debug)]
struct Message {
    method: &'static str,
    status: u16,
    req_body: Vec<u8>,
    req_chunked: bool,
    resp_body: Vec<u8>,
    resp_chunked: bool,
}

fn message() -> impl Strategy<Value = Message> {
    (
        prop::sample::select(vec!["GET", "POST", "PUT", "HEAD", "DELETE", "PATCH"]),
        prop::sample::select(vec![200u16, 201, 204, 304, 404, 500]),
        prop::collection::vec(any::<u8>(), 0..300),
        any::<bool>(),
        prop::collection::vec(any::<u8>(), 0..300),
        any::<bool>(),
    )
        .prop_map(
            |(method, status, req_body, req_chunked, resp_body, resp_chunked)| Message {
                method,
                status,
                req_body,
                req_chunked,
                resp_body,
                resp_chunked,
            },
        )
}

fn simple_chunked(body: &[u8]) -> Vec<u8> {
    let mut w = Vec::new();
    for c in body.chunks(97) {
        w.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
        w.extend_from_slice(c);
        w.extend_from_slice(b"\r\n");
    }
    w.extend_from_slice(b"0\r\n\r\n");
    w
}

/// Whether the response to `m` carries a body on the wire (RFC 9112 §6.3 rule 1).
fn response_has_body(m: &Message) -> bool {
    m.method != "HEAD" && m.status != 204 && m.status != 304
}

fn encode_request(i: usize, m: &Message) -> Vec<u8> {
    let mut w = format!("{} /item/{i} HTTP/1.1\r\nHost: test\r\n", m.method).into_bytes();
    if m.req_chunked {
        w.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
        w.extend(simple_chunked(&m.req_body));
    } else {
        w.extend_from_slice(format!("Content-Length: {}\r\n\r\n", m.req_body.len()).as_bytes());
        w.extend_from_slice(&m.req_body);
    }
    w
}

fn encode_response(m: &Message) -> Vec<u8> {
    let mut w = format!("HTTP/1.1 {} X\r\n", m.status).into_bytes();
    if !response_has_body(m) {
        // HEAD, 204 and 304 may announce a length; no body follows.
        if m.status != 204 {
            w.extend_from_slice(format!("Content-Length: {}\r\n", m.resp_body.len()).as_bytes());
        }
        w.extend_from_slice(b"\r\n");
    } else if m.resp_chunked {
        w.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
        w.extend(simple_chunked(&m.resp_body));
    } else {
        w.extend_from_slice(format!("Content-Length: {}\r\n\r\n", m.resp_body.len()).as_bytes());
        w.extend_from_slice(&m.resp_body);
    }
    w
}

fn check_pipeline(msgs: &[Message], out: &[Http1Output]) -> Result<(), TestCaseError> {
    prop_assert!(
        no_errors(out),
        "errors: {:?}",
        out.iter()
            .filter(|o| matches!(o, Http1Output::Error(_)))
            .collect::<Vec<_>>()
    );
    let ex = exchanges(out);
    prop_assert_eq!(ex.len(), msgs.len());
    for (i, (e, m)) in ex.iter().zip(msgs).enumerate() {
        prop_assert_eq!(&e.request.method, m.method);
        prop_assert_eq!(&e.request.target, &format!("/item/{i}"));
        prop_assert_eq!(&e.request.body.data, &m.req_body);
        let r = e
            .response
            .as_ref()
            .ok_or_else(|| TestCaseError::fail("no response"))?;
        prop_assert_eq!(r.status, m.status);
        let want: &[u8] = if response_has_body(m) {
            &m.resp_body
        } else {
            &[]
        };
        prop_assert_eq!(r.body.data.as_slice(), want);
        prop_assert_eq!(e.incomplete, None);
        prop_assert!(e.timing.request_start_ns <= e.timing.request_end_ns);
        prop_assert!(r.body.data.len() as u64 == r.body.wire_size);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn chunked_bodies_round_trip(c in chunked_case(), as_request in any::<bool>()) {
        let wire = encode_chunked(&c);
        let mut conn = Http1Conn::new(Http1Limits::default());
        let mut out = Vec::new();
        let mut ts = 0;
        let (req_stream, resp_stream) = if as_request {
            let mut r = b"POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            r.extend_from_slice(&wire);
            (r, b"HTTP/1.1 204 No Content\r\n\r\n".to_vec())
        } else {
            let mut r = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            r.extend_from_slice(&wire);
            (b"GET /c HTTP/1.1\r\n\r\n".to_vec(), r)
        };
        feed_split(&mut conn, Side::Request, &req_stream, &c.cuts, &mut ts, &mut out);
        feed_split(&mut conn, Side::Response, &resp_stream, &c.cuts, &mut ts, &mut out);
        prop_assert!(no_errors(&out), "{:?}", out);
        let ex = exchanges(&out);
        prop_assert_eq!(ex.len(), 1);
        let (body, trailers) = if as_request {
            (&ex[0].request.body, &ex[0].request.trailers)
        } else {
            let r = ex[0].response.as_ref().ok_or_else(|| TestCaseError::fail("no response"))?;
            (&r.body, &r.trailers)
        };
        prop_assert_eq!(&body.data, &c.body);
        prop_assert_eq!(body.wire_size, c.body.len() as u64);
        prop_assert!(!body.truncated);
        let want: Headers = c.trailers.iter().map(|(n, v)| Header::new(n.clone(), v.clone())).collect();
        prop_assert_eq!(trailers, &want);
        prop_assert_eq!(conn.buffered_bytes(), 0);
    }

    /// Requests all sent first (pipelined), then all responses.
    #[test]
    fn pipelines_yield_every_exchange_in_order(
        msgs in prop::collection::vec(message(), 1..10),
        req_cuts in prop::collection::vec(0usize..6000, 0..20),
        resp_cuts in prop::collection::vec(0usize..6000, 0..20),
    ) {
        let requests: Vec<u8> = msgs.iter().enumerate().flat_map(|(i, m)| encode_request(i, m)).collect();
        let responses: Vec<u8> = msgs.iter().flat_map(encode_response).collect();
        let mut conn = Http1Conn::new(Http1Limits::default());
        let mut out = Vec::new();
        let mut ts = 0;
        feed_split(&mut conn, Side::Request, &requests, &req_cuts, &mut ts, &mut out);
        feed_split(&mut conn, Side::Response, &responses, &resp_cuts, &mut ts, &mut out);
        check_pipeline(&msgs, &out)?;
        prop_assert_eq!(conn.buffered_bytes(), 0);
    }

    /// Keep-alive: each request, then its response, each cut at random points.
    #[test]
    fn keep_alive_yields_every_exchange_in_order(
        msgs in prop::collection::vec(message(), 1..10),
        cuts in prop::collection::vec(0usize..400, 0..6),
    ) {
        let mut conn = Http1Conn::new(Http1Limits::default());
        let mut out = Vec::new();
        let mut ts = 0;
        for (i, m) in msgs.iter().enumerate() {
            feed_split(&mut conn, Side::Request, &encode_request(i, m), &cuts, &mut ts, &mut out);
            feed_split(&mut conn, Side::Response, &encode_response(m), &cuts, &mut ts, &mut out);
        }
        check_pipeline(&msgs, &out)?;
        let ex = exchanges(&out);
        for pair in ex.windows(2) {
            prop_assert!(pair[0].timing.response_end_ns < Some(pair[1].timing.request_start_ns));
        }
    }

    /// Whatever arrives (garbage, gaps, closes, valid messages), the decoder does not panic
    /// and holds no more than its limits allow.
    #[test]
    fn arbitrary_input_stays_bounded(
        events in prop::collection::vec(
            (0u8..5, prop::collection::vec(any::<u8>(), 0..200), 0u64..500),
            0..40,
        ),
    ) {
        let limits = Http1Limits { max_body_bytes: 256, max_header_bytes: 256, max_pipelined: 4, max_header_fields: 16 };
        let mut conn = Http1Conn::new(limits.clone());
        let mut out = Vec::new();
        for (i, (kind, bytes, n)) in events.iter().enumerate() {
            let ts = i as u64;
            match kind {
                0 => conn.on_data(Side::Request, bytes, ts, &mut out),
                1 => conn.on_data(Side::Response, bytes, ts, &mut out),
                2 => {
                    // A valid pair now and then, so the state machine goes everywhere.
                    conn.on_data(Side::Request, b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello", ts, &mut out);
                    conn.on_data(Side::Response, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n", ts, &mut out);
                }
                3 => conn.on_gap(if n % 2 == 0 { Side::Request } else { Side::Response }, *n, ts, &mut out),
                _ => conn.flush(&mut out),
            }
            // Queue of at most 4 requests, each with a head and body, a response in
            // progress, and the side buffers.
            let bound = 4 * (2 * 256 + 2 * 256) + 6 * 256 + 4096;
            prop_assert!(conn.buffered_bytes() <= bound, "{} > {}", conn.buffered_bytes(), bound);
        }
        conn.on_close(1000, &mut out);
        prop_assert_eq!(conn.buffered_bytes(), 0);
    }
}
