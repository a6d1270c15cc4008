//! Scenario tests. Every scenario goes through [`check`], which also feeds it split at every
//! byte boundary and one byte at a time and requires the same output.

use super::*;
use capture_model::exchange::{Header, HttpVersion};

/// One step of a connection's input.
#[derive(Clone, Debug)]
pub(super) enum Ev {
    Data(Side, Vec<u8>, u64),
    Gap(Side, u64, u64),
    Close(u64),
    Flush,
}

pub(super) fn req(bytes: impl AsRef<[u8]>, ts: u64) -> Ev {
    Ev::Data(Side::Request, bytes.as_ref().to_vec(), ts)
}

pub(super) fn resp(bytes: impl AsRef<[u8]>, ts: u64) -> Ev {
    Ev::Data(Side::Response, bytes.as_ref().to_vec(), ts)
}

pub(super) fn run_with(limits: &Http1Limits, script: &[Ev]) -> Vec<Http1Output> {
    let mut conn = Http1Conn::new(limits.clone());
    let mut out = Vec::new();
    for ev in script {
        match ev {
            Ev::Data(side, bytes, ts) => conn.on_data(*side, bytes, *ts, &mut out),
            Ev::Gap(side, len, ts) => conn.on_gap(*side, *len, *ts, &mut out),
            Ev::Close(ts) => conn.on_close(*ts, &mut out),
            Ev::Flush => conn.flush(&mut out),
        }
    }
    out
}

/// `script` with every data event cut into pieces of at most `n` bytes (`n == 0`: cut once,
/// at `at`), keeping each piece's timestamp.
fn split_script(script: &[Ev], piece: Option<usize>, at: usize) -> Vec<Ev> {
    let mut split = Vec::new();
    for ev in script {
        match ev {
            Ev::Data(side, bytes, ts) => match piece {
                Some(n) => split.extend(bytes.chunks(n).map(|c| Ev::Data(*side, c.to_vec(), *ts))),
                None if at > 0 && at < bytes.len() => {
                    split.push(Ev::Data(*side, bytes[..at].to_vec(), *ts));
                    split.push(Ev::Data(*side, bytes[at..].to_vec(), *ts));
                }
                None => split.push(ev.clone()),
            },
            other => split.push(other.clone()),
        }
    }
    split
}

/// Runs `script` whole, then with its data events split at every byte boundary (each event
/// alone, and all of them at once), and one byte at a time; all runs must give the same
/// output. Returns it.
pub(super) fn check_with(limits: &Http1Limits, script: &[Ev]) -> Vec<Http1Output> {
    let whole = run_with(limits, script);
    assert_eq!(
        run_with(limits, &split_script(script, Some(1), 0)),
        whole,
        "fed one byte at a time"
    );
    let longest = script
        .iter()
        .map(|e| {
            if let Ev::Data(_, b, _) = e {
                b.len()
            } else {
                0
            }
        })
        .max()
        .unwrap_or(0);
    for at in 1..longest {
        assert_eq!(
            run_with(limits, &split_script(script, None, at)),
            whole,
            "every event split at {at}"
        );
    }
    for (i, ev) in script.iter().enumerate() {
        let Ev::Data(side, bytes, ts) = ev else {
            continue;
        };
        for at in 1..bytes.len() {
            let mut split = script.to_vec();
            split.splice(
                i..=i,
                [
                    Ev::Data(*side, bytes[..at].to_vec(), *ts),
                    Ev::Data(*side, bytes[at..].to_vec(), *ts),
                ],
            );
            assert_eq!(run_with(limits, &split), whole, "event {i} split at {at}");
        }
    }
    whole
}

pub(super) fn check(script: &[Ev]) -> Vec<Http1Output> {
    check_with(&Http1Limits::default(), script)
}

pub(super) fn exchanges(out: &[Http1Output]) -> Vec<Exchange> {
    out.iter()
        .filter_map(|o| match o {
            Http1Output::Exchange(e) => Some(e.clone()),
            _ => None,
        })
        .collect()
}

fn errors(out: &[Http1Output]) -> Vec<ParseErrorReason> {
    out.iter()
        .filter_map(|o| match o {
            Http1Output::Error(e) => Some(*e),
            _ => None,
        })
        .collect()
}

fn h(name: &str, value: &str) -> Header {
    Header::new(name, value)
}

fn body(data: &[u8]) -> Body {
    Body {
        data: data.to_vec(),
        wire_size: data.len() as u64,
        ..Body::default()
    }
}

fn response(ex: &Exchange) -> &Response {
    ex.response.as_ref().expect("exchange has a response")
}

/// method, target, status (0 without response), request body, response body, incomplete.
fn summary(ex: &Exchange) -> (String, String, u16, Vec<u8>, Vec<u8>, Option<Incomplete>) {
    (
        ex.request.method.clone(),
        ex.request.target.clone(),
        ex.response.as_ref().map_or(0, |r| r.status),
        ex.request.body.data.clone(),
        ex.response.as_ref().map_or(vec![], |r| r.body.data.clone()),
        ex.incomplete,
    )
}

fn s(
    method: &str,
    target: &str,
    status: u16,
    req_body: &[u8],
    resp_body: &[u8],
    inc: Option<Incomplete>,
) -> (String, String, u16, Vec<u8>, Vec<u8>, Option<Incomplete>) {
    (
        method.into(),
        target.into(),
        status,
        req_body.to_vec(),
        resp_body.to_vec(),
        inc,
    )
}

#[test]
fn get_keep_alive_exact_exchange() {
    let request = "GET /a?q=1 HTTP/1.1\r\nHost: example.test\r\nuser-agent: t/1\r\nX-Dup: 1\r\nx-dup: 2\r\n\r\n";
    let reply = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nhello";
    let out = check(&[
        req(request, 10),
        resp(reply, 20),
        req("GET /b HTTP/1.1\r\nHost: example.test\r\n\r\n", 30),
        resp("HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n", 40),
    ]);
    assert_eq!(errors(&out), vec![]);
    let ex = exchanges(&out);
    assert_eq!(ex.len(), 2);
    let expected = Exchange {
        protocol: Protocol::H1,
        request: Request {
            method: "GET".into(),
            target: "/a?q=1".into(),
            version: HttpVersion::Http11,
            headers: vec![
                h("Host", "example.test"),
                h("user-agent", "t/1"),
                h("X-Dup", "1"),
                h("x-dup", "2"),
            ]
            .into(),
            headers_size: request.len() as u64,
            body: Body::default(),
            trailers: vec![].into(),
        },
        response: Some(Response {
            status: 200,
            reason: "OK".into(),
            version: HttpVersion::Http11,
            headers: vec![h("Content-Length", "5"), h("Content-Type", "text/plain")].into(),
            headers_size: (reply.len() - 5) as u64,
            body: body(b"hello"),
            trailers: vec![].into(),
        }),
        timing: Timing {
            request_start_ns: 10,
            request_end_ns: 10,
            response_start_ns: Some(20),
            response_end_ns: Some(20),
        },
        incomplete: None,
        conn: ConnMeta::default(),
        pid: 0,
        workload: Default::default(),
        redacted: vec![],
        routing_key: None,
        grpc: None,
        cgroup_id: 0,
    };
    assert_eq!(ex[0], expected);
    assert_eq!(summary(&ex[1]), s("GET", "/b", 404, b"", b"", None));
    assert_eq!(response(&ex[1]).reason, "Not Found");
    assert_eq!(
        ex[1].timing,
        Timing {
            request_start_ns: 30,
            request_end_ns: 30,
            response_start_ns: Some(40),
            response_end_ns: Some(40)
        }
    );
}

#[test]
fn timings_follow_first_and_last_bytes() {
    let out = check(&[
        req("POST /up HTTP/1.1\r\nContent-Length: 6\r\n\r\nab", 100),
        req("cd", 110),
        req("ef", 120),
        resp("HTTP/1.1 201 Created\r\nContent-", 200),
        resp("Length: 3\r\n\r\nok", 210),
        resp("!", 230),
    ]);
    let ex = exchanges(&out);
    assert_eq!(
        summary(&ex[0]),
        s("POST", "/up", 201, b"abcdef", b"ok!", None)
    );
    assert_eq!(
        ex[0].timing,
        Timing {
            request_start_ns: 100,
            request_end_ns: 120,
            response_start_ns: Some(200),
            response_end_ns: Some(230)
        }
    );
}

#[test]
fn chunked_with_extensions_and_trailers() {
    let request = "POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n4;ext=1\r\nWiki\r\n5 ; a=\"q;x\" ;b\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nX-Req-Trailer: yes\r\n\r\n";
    let reply = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: Grpc-Status\r\n\r\n3\r\nabc\r\n1a\r\nabcdefghijklmnopqrstuvwxyz\r\n0;last\r\nGrpc-Status: 0\r\ngrpc-message: fine\r\n\r\n";
    let out = check(&[
        req(request, 1),
        resp(reply, 2),
        req("GET /next HTTP/1.1\r\n\r\n", 3),
        resp(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            4,
        ),
    ]);
    assert_eq!(errors(&out), vec![]);
    let ex = exchanges(&out);
    assert_eq!(ex.len(), 2);
    assert_eq!(
        summary(&ex[0]),
        s(
            "POST",
            "/c",
            200,
            b"Wikipedia in\r\n\r\nchunks.",
            b"abcabcdefghijklmnopqrstuvwxyz",
            None
        )
    );
    assert_eq!(ex[0].request.trailers, vec![h("X-Req-Trailer", "yes")]);
    assert_eq!(ex[0].request.body.wire_size, 23);
    assert_eq!(
        response(&ex[0]).trailers,
        vec![h("Grpc-Status", "0"), h("grpc-message", "fine")]
    );
    assert_eq!(response(&ex[0]).body.wire_size, 29);
    assert_eq!(summary(&ex[1]), s("GET", "/next", 200, b"", b"", None));
    assert_eq!(response(&ex[1]).trailers, vec![]);
}

#[test]
fn chunked_bare_lf_and_upper_hex() {
    let out = check(&[
        req("GET / HTTP/1.1\n\n", 1),
        resp(
            "HTTP/1.1 200 OK\nTransfer-Encoding: chunked\n\nA\n0123456789\n0\n\n",
            2,
        ),
    ]);
    assert_eq!(
        summary(&exchanges(&out)[0]),
        s("GET", "/", 200, b"", b"0123456789", None)
    );
}

#[test]
fn invalid_chunk_size_is_an_error() {
    let out = check(&[
        req("GET / HTTP/1.1\r\n\r\n", 1),
        resp(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\nzz\r\n",
            2,
        ),
        req("GET /2 HTTP/1.1\r\n\r\n", 3),
        resp("HTTP/1.1 204 No Content\r\n\r\n", 4),
    ]);
    assert_eq!(errors(&out), vec![ParseErrorReason::InvalidChunkedEncoding]);
    let ex = exchanges(&out);
    assert_eq!(
        summary(&ex[0]),
        s("GET", "/", 200, b"", b"abc", Some(Incomplete::ParseError))
    );
    assert!(response(&ex[0]).body.truncated);
    assert_eq!(summary(&ex[1]), s("GET", "/2", 204, b"", b"", None));
}

#[test]
fn chunk_size_overflow_and_long_extension_are_errors() {
    let out = run_with(
        &Http1Limits::default(),
        &[
            req("GET / HTTP/1.1\r\n\r\n", 1),
            resp(
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000000\r\n",
                2,
            ),
        ],
    );
    assert_eq!(errors(&out), vec![ParseErrorReason::InvalidChunkedEncoding]);
    let ext = format!(
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1;{}\r\n",
        "e".repeat(5000)
    );
    let out = run_with(
        &Http1Limits::default(),
        &[req("GET / HTTP/1.1\r\n\r\n", 1), resp(ext, 2)],
    );
    assert_eq!(errors(&out), vec![ParseErrorReason::InvalidChunkedEncoding]);
}

#[test]
fn close_delimited_response_ends_at_close() {
    let out = check(&[
        req("GET /stream HTTP/1.1\r\nHost: h\r\n\r\n", 1),
        resp(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\npart one, ",
            2,
        ),
        resp("part two", 3),
        Ev::Close(9),
    ]);
    let ex = exchanges(&out);
    assert_eq!(ex.len(), 1);
    assert_eq!(
        summary(&ex[0]),
        s("GET", "/stream", 200, b"", b"part one, part two", None)
    );
    assert_eq!(ex[0].timing.response_end_ns, Some(3));
    assert!(!response(&ex[0]).body.truncated);
}

#[test]
fn http10_without_length_and_keep_alive() {
    let out = check(&[
        req("GET /old HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", 1),
        resp(
            "HTTP/1.0 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nhi",
            2,
        ),
        req("GET /old2 HTTP/1.0\r\n\r\n", 3),
        resp("HTTP/1.0 200 OK\r\n\r\nuntil the end", 4),
        Ev::Close(5),
    ]);
    let ex = exchanges(&out);
    assert_eq!(ex.len(), 2);
    assert_eq!(ex[0].request.version, HttpVersion::Http10);
    assert_eq!(response(&ex[0]).version, HttpVersion::Http10);
    assert_eq!(summary(&ex[0]), s("GET", "/old", 200, b"", b"hi", None));
    assert_eq!(
        summary(&ex[1]),
        s("GET", "/old2", 200, b"", b"until the end", None)
    );
}

#[test]
fn head_204_304_have_no_body() {
    let out = check(&[
        req(
            "HEAD /h HTTP/1.1\r\n\r\nGET /n HTTP/1.1\r\n\r\nGET /c HTTP/1.1\r\nIf-None-Match: \"x\"\r\n\r\nGET /last HTTP/1.1\r\n\r\n",
            1,
        ),
        resp(
            "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nHTTP/1.1 204 No Content\r\nContent-Length: 10\r\n\r\nHTTP/1.1 304 Not Modified\r\nContent-Length: 1000\r\nTransfer-Encoding: chunked\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nbody",
            2,
        ),
    ]);
    assert_eq!(errors(&out), vec![]);
    let got: Vec<_> = exchanges(&out).iter().map(summary).collect();
    assert_eq!(
        got,
        vec![
            s("HEAD", "/h", 200, b"", b"", None),
            s("GET", "/n", 204, b"", b"", None),
            s("GET", "/c", 304, b"", b"", None),
            s("GET", "/last", 200, b"", b"body", None),
        ]
    );
}

#[test]
fn interim_responses_are_skipped_and_100_continue_body_follows() {
    let out = check(&[
        req(
            "PUT /f HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 7\r\n\r\n",
            1,
        ),
        resp("HTTP/1.1 100 Continue\r\n\r\n", 2),
        req("payload", 3),
        resp(
            "HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
            4,
        ),
    ]);
    assert_eq!(errors(&out), vec![]);
    let ex = exchanges(&out);
    assert_eq!(ex.len(), 1);
    assert_eq!(
        summary(&ex[0]),
        s("PUT", "/f", 200, b"payload", b"ok", None)
    );
    assert_eq!(response(&ex[0]).headers, vec![h("Content-Length", "2")]);
    assert_eq!(
        ex[0].timing,
        Timing {
            request_start_ns: 1,
            request_end_ns: 3,
            response_start_ns: Some(4),
            response_end_ns: Some(4)
        }
    );
}

#[test]
fn early_response_waits_for_the_request_body() {
    let out = check(&[
        req("POST /big HTTP/1.1\r\nContent-Length: 10\r\n\r\n01234", 1),
        resp(
            "HTTP/1.1 413 Payload Too Large\r\nContent-Length: 0\r\n\r\n",
            2,
        ),
        req("56789", 3),
    ]);
    let ex = exchanges(&out);
    assert_eq!(ex.len(), 1);
    assert_eq!(
        summary(&ex[0]),
        s("POST", "/big", 413, b"0123456789", b"", None)
    );
    assert_eq!(ex[0].timing.request_end_ns, 3);
}

#[test]
fn pipelined_requests_answered_in_order() {
    let out = check(&[
        req(
            "GET /1 HTTP/1.1\r\n\r\nPOST /2 HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcHEAD /3 HTTP/1.1\r\n\r\nGET /4 HTTP/1.1\r\n\r\n",
            1,
        ),
        resp(
            "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n1HTTP/1.1 201 Created\r\nContent-Length: 1\r\n\r\n2",
            2,
        ),
        resp(
            "HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\n4\r\n0\r\n\r\n",
            3,
        ),
    ]);
    assert_eq!(errors(&out), vec![]);
    let got: Vec<_> = exchanges(&out).iter().map(summary).collect();
    assert_eq!(
        got,
        vec![
            s("GET", "/1", 200, b"", b"1", None),
            s("POST", "/2", 201, b"abc", b"2", None),
            s("HEAD", "/3", 200, b"", b"", None),
            s("GET", "/4", 200, b"", b"4", None),
        ]
    );
}

#[test]
fn many_keep_alive_exchanges() {
    let mut script = Vec::new();
    for i in 0..50u64 {
        script.push(req(format!("GET /{i} HTTP/1.1\r\n\r\n"), i * 10));
        script.push(resp(
            format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{}",
                i.to_string().len(),
                i
            ),
            i * 10 + 5,
        ));
    }
    let out = run_with(&Http1Limits::default(), &script);
    let ex = exchanges(&out);
    assert_eq!(ex.len(), 50);
    for (i, e) in ex.iter().enumerate() {
        assert_eq!(
            summary(e),
            s(
                "GET",
                &format!("/{i}"),
                200,
                b"",
                i.to_string().as_bytes(),
                None
            )
        );
        assert_eq!(e.timing.response_start_ns, Some(i as u64 * 10 + 5));
    }
    assert_eq!(
        run_with(&Http1Limits::default(), &split_script(&script, Some(7), 0)),
        out
    );
}

#[test]
fn leading_empty_lines_are_ignored() {
    let out = check(&[
        req(
            "\r\n\r\nGET / HTTP/1.1\r\n\r\n\r\nGET /2 HTTP/1.1\r\n\r\n",
            1,
        ),
        resp(
            "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
            2,
        ),
    ]);
    assert_eq!(errors(&out), vec![]);
    let ex = exchanges(&out);
    assert_eq!(ex.len(), 2);
    assert_eq!(ex[0].request.headers_size, 18);
}

#[test]
fn websocket_upgrade_stops_decoding() {
    let out = check(&[
        req(
            "GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
            1,
        ),
        resp(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
            2,
        ),
        req("\u{81}\u{5}hello", 3),
        resp("GET / HTTP/1.1\r\n\r\n", 4),
        Ev::Close(5),
    ]);
    assert_eq!(errors(&out), vec![]);
    assert_eq!(out.len(), 2);
    let ex = exchanges(&out);
    assert_eq!(summary(&ex[0]), s("GET", "/ws", 101, b"", b"", None));
    assert_eq!(out[1], Http1Output::Upgraded { status: 101 });
}

#[test]
fn upgrade_leftover_bytes_are_kept_for_the_caller() {
    let mut conn = Http1Conn::new(Http1Limits::default());
    let mut out = Vec::new();
    conn.on_data(
        Side::Request,
        b"GET / HTTP/1.1\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n",
        1,
        &mut out,
    );
    conn.on_data(
        Side::Response,
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n\x00\x00\x00\x04",
        2,
        &mut out,
    );
    assert!(conn.is_upgraded());
    conn.on_data(
        Side::Request,
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        3,
        &mut out,
    );
    conn.on_data(Side::Response, b"\x00\x00\x00", 4, &mut out);
    assert_eq!(out.len(), 2);
    assert_eq!(out[1], Http1Output::Upgraded { status: 101 });
    assert_eq!(
        conn.take_upgrade_leftover(Side::Response),
        b"\x00\x00\x00\x04\x00\x00\x00"
    );
    assert_eq!(
        conn.take_upgrade_leftover(Side::Request),
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
    );
    assert_eq!(conn.take_upgrade_leftover(Side::Request), b"");
    conn.on_close(5, &mut out);
    assert_eq!(out.len(), 2);
}

#[test]
fn connect_tunnel() {
    let out = check(&[
        req(
            "CONNECT example.test:443 HTTP/1.1\r\nHost: example.test:443\r\n\r\n",
            1,
        ),
        resp(
            "HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 4\r\n\r\ndeny",
            2,
        ),
        req(
            "CONNECT example.test:443 HTTP/1.1\r\nHost: example.test:443\r\n\r\n",
            3,
        ),
        resp("HTTP/1.1 200 Connection Established\r\n\r\n\x16\x03\x01", 4),
        req("\x16\x03\x01\x02\x00", 5),
    ]);
    assert_eq!(errors(&out), vec![]);
    let ex = exchanges(&out);
    assert_eq!(
        summary(&ex[0]),
        s("CONNECT", "example.test:443", 407, b"", b"deny", None)
    );
    assert_eq!(
        summary(&ex[1]),
        s("CONNECT", "example.test:443", 200, b"", b"", None)
    );
    assert_eq!(out.last(), Some(&Http1Output::Upgraded { status: 200 }));
}

#[test]
fn response_without_request_is_counted_and_skipped() {
    let out = check(&[
        resp(
            "HTTP/1.1 200 OK\r\nContent-Length: 22\r\n\r\nHTTP/1.1 500 no, body\n",
            1,
        ),
        req("GET /x HTTP/1.1\r\n\r\n", 2),
        resp("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx", 3),
    ]);
    assert_eq!(errors(&out), vec![ParseErrorReason::ResponseWithoutRequest]);
    let ex = exchanges(&out);
    assert_eq!(ex.len(), 1);
    assert_eq!(summary(&ex[0]), s("GET", "/x", 200, b"", b"x", None));
}

#[test]
fn transfer_encoding_wins_over_content_length() {
    let out = check(&[
        req(
            "POST / HTTP/1.1\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n",
            1,
        ),
        resp(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 1\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
            2,
        ),
    ]);
    assert_eq!(errors(&out), vec![]);
    assert_eq!(
        summary(&exchanges(&out)[0]),
        s("POST", "/", 200, b"hi", b"abc", None)
    );
}

#[test]
fn response_transfer_coding_without_chunked_runs_until_close() {
    let out = check(&[
        req("GET / HTTP/1.1\r\n\r\n", 1),
        resp(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nraw bytes",
            2,
        ),
        Ev::Close(3),
    ]);
    assert_eq!(
        summary(&exchanges(&out)[0]),
        s("GET", "/", 200, b"", b"raw bytes", None)
    );
}

#[test]
fn request_framing_errors_resync_to_the_next_request() {
    let out = check(&[
        req(
            "POST /a HTTP/1.1\r\nContent-Length: 12x\r\n\r\nbody\r\nPOST /b HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\nxx\r\nGET /c HTTP/1.1\r\nContent-Length: 3, 3\r\n\r\nabc",
            1,
        ),
        resp("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 2),
    ]);
    assert_eq!(
        errors(&out),
        vec![
            ParseErrorReason::InvalidContentLength,
            ParseErrorReason::UnsupportedTransferEncoding
        ]
    );
    let ex = exchanges(&out);
    assert_eq!(ex.len(), 1);
    assert_eq!(summary(&ex[0]), s("GET", "/c", 200, b"abc", b"", None));
}

#[test]
fn response_with_conflicting_lengths_is_a_parse_error() {
    let out = check(&[
        req("GET /a HTTP/1.1\r\n\r\n", 1),
        resp(
            "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
            2,
        ),
        req("GET /b HTTP/1.1\r\n\r\n", 3),
        resp("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 4),
    ]);
    assert_eq!(errors(&out), vec![ParseErrorReason::InvalidContentLength]);
    let ex = exchanges(&out);
    assert_eq!(
        summary(&ex[0]),
        s("GET", "/a", 200, b"", b"", Some(Incomplete::ParseError))
    );
    assert_eq!(summary(&ex[1]), s("GET", "/b", 200, b"", b"", None));
}

#[test]
fn invalid_response_head_loses_that_response() {
    let out = check(&[
        req("GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n", 1),
        resp(
            "HTTP/1.1 2x0 OK\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nb",
            2,
        ),
    ]);
    assert_eq!(errors(&out), vec![ParseErrorReason::InvalidResponseHead]);
    let ex = exchanges(&out);
    assert_eq!(
        summary(&ex[0]),
        s("GET", "/a", 0, b"", b"", Some(Incomplete::ParseError))
    );
    assert_eq!(summary(&ex[1]), s("GET", "/b", 200, b"", b"b", None));
}

#[test]
fn garbage_fails_fast_and_resyncs() {
    // A TLS record on the request side fails at its first bytes, not after 64 KiB.
    let mut tls = vec![
        0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
    ];
    tls.extend_from_slice(&[0xab; 40]);
    let mut conn = Http1Conn::new(Http1Limits::default());
    let mut out = Vec::new();
    conn.on_data(Side::Request, &tls, 1, &mut out);
    assert_eq!(errors(&out), vec![ParseErrorReason::InvalidRequestHead]);
    assert!(conn.buffered_bytes() < tls.len());
    let out = check(&[
        req("hello there\nGET /ok HTTP/1.1\r\n\r\n", 1),
        resp("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 2),
    ]);
    assert_eq!(errors(&out), vec![ParseErrorReason::InvalidRequestHead]);
    assert_eq!(
        summary(&exchanges(&out)[0]),
        s("GET", "/ok", 200, b"", b"", None)
    );
}

#[test]
fn header_too_large_is_an_error_then_resync() {
    let limits = Http1Limits {
        max_header_bytes: 64,
        ..Http1Limits::default()
    };
    let big = format!("GET /big HTTP/1.1\r\nX-Long: {}\r\n\r\n", "v".repeat(100));
    let out = check_with(
        &limits,
        &[
            req(format!("{big}GET /small HTTP/1.1\r\n\r\n"), 1),
            resp("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 2),
        ],
    );
    assert_eq!(errors(&out), vec![ParseErrorReason::HeaderTooLarge]);
    let ex = exchanges(&out);
    assert_eq!(ex.len(), 1);
    assert_eq!(summary(&ex[0]), s("GET", "/small", 200, b"", b"", None));
    // A start line alone longer than the limit.
    let long_line = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(100));
    let out = check_with(&limits, &[req(long_line, 1)]);
    assert_eq!(errors(&out), vec![ParseErrorReason::HeaderTooLarge]);
}

#[test]
fn trailer_section_too_large() {
    let limits = Http1Limits {
        max_header_bytes: 64,
        ..Http1Limits::default()
    };
    let out = check_with(
        &limits,
        &[
            req("GET / HTTP/1.1\r\n\r\n", 1),
            resp(
                format!(
                    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\nX: {}\r\n\r\n",
                    "t".repeat(80)
                ),
                2,
            ),
        ],
    );
    assert_eq!(errors(&out), vec![ParseErrorReason::HeaderTooLarge]);
    assert_eq!(
        summary(&exchanges(&out)[0]),
        s("GET", "/", 200, b"", b"a", Some(Incomplete::ParseError))
    );
}

#[test]
fn invalid_trailers_are_dropped_but_the_message_kept() {
    let out = check(&[
        req("GET / HTTP/1.1\r\n\r\n", 1),
        resp(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\nno colon here\r\n\r\n",
            2,
        ),
    ]);
    assert_eq!(errors(&out), vec![ParseErrorReason::InvalidTrailers]);
    let ex = exchanges(&out);
    assert_eq!(summary(&ex[0]), s("GET", "/", 200, b"", b"a", None));
    assert_eq!(response(&ex[0]).trailers, vec![]);
}

#[test]
fn body_cap_counts_but_does_not_keep() {
    let limits = Http1Limits {
        max_body_bytes: 10,
        ..Http1Limits::default()
    };
    let out = check_with(
        &limits,
        &[
            req(
                "POST / HTTP/1.1\r\nContent-Length: 25\r\n\r\n0123456789abcdefghijklmno",
                1,
            ),
            resp(
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n8\r\n01234567\r\n8\r\n89abcdef\r\n0\r\n\r\n",
                2,
            ),
        ],
    );
    let ex = exchanges(&out);
    let rb = &ex[0].request.body;
    assert_eq!(
        (rb.data.as_slice(), rb.wire_size, rb.truncated),
        (&b"0123456789"[..], 25, true)
    );
    let sb = &response(&ex[0]).body;
    assert_eq!(
        (sb.data.as_slice(), sb.wire_size, sb.truncated),
        (&b"0123456789"[..], 16, true)
    );
    assert_eq!(ex[0].incomplete, None);
}

#[test]
fn content_encoding_is_decoded() {
    use std::io::Write as _;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(b"{\"decoded\":true}").unwrap();
    let gz = gz.finish().unwrap();
    let mut reply = format!(
        "HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: {}\r\n\r\n",
        gz.len()
    )
    .into_bytes();
    reply.extend_from_slice(&gz);
    let out = check(&[req("GET / HTTP/1.1\r\n\r\n", 1), resp(&reply, 2)]);
    let ex = exchanges(&out);
    let b = &response(&ex[0]).body;
    assert_eq!(b.data, b"{\"decoded\":true}");
    assert_eq!(
        (
            b.wire_size,
            b.truncated,
            b.decoded_from.as_deref(),
            b.decode_error.as_deref()
        ),
        (gz.len() as u64, false, Some("gzip"), None)
    );
    assert_eq!(
        response(&ex[0]).headers.get(0).unwrap(),
        h("Content-Encoding", "gzip")
    );
    // Unknown coding: raw bytes, flagged.
    let out = check(&[
        req("GET / HTTP/1.1\r\n\r\n", 1),
        resp(
            "HTTP/1.1 200 OK\r\nContent-Encoding: compress\r\nContent-Length: 3\r\n\r\nabc",
            2,
        ),
    ]);
    let b = response(&exchanges(&out)[0]).body.clone();
    assert_eq!(
        (b.data.as_slice(), b.truncated, b.decode_error.as_deref()),
        (&b"abc"[..], true, Some("unsupported content coding"))
    );
}

#[test]
fn gap_inside_a_known_length_body_keeps_step() {
    let out = check(&[
        req("POST /up HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc", 1),
        Ev::Gap(Side::Request, 4, 2),
        req("hij", 3),
        resp("HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\n12", 4),
        Ev::Gap(Side::Response, 6, 5),
        req("GET /next HTTP/1.1\r\n\r\n", 6),
        resp(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
            7,
        ),
        Ev::Gap(Side::Response, 3, 8),
        resp("\r\n3\r\nxyz\r\n0\r\n\r\n", 9),
    ]);
    assert_eq!(errors(&out), vec![]);
    let ex = exchanges(&out);
    assert_eq!(ex.len(), 2);
    assert_eq!(
        summary(&ex[0]),
        s("POST", "/up", 200, b"abc", b"12", Some(Incomplete::Gap))
    );
    let rb = &ex[0].request.body;
    assert_eq!((rb.wire_size, rb.truncated), (10, true));
    assert_eq!(ex[0].timing.request_end_ns, 3);
    assert_eq!(ex[0].timing.response_end_ns, Some(4));
    assert_eq!(
        (
            response(&ex[0]).body.wire_size,
            response(&ex[0]).body.truncated
        ),
        (8, true)
    );
    assert_eq!(
        summary(&ex[1]),
        s("GET", "/next", 200, b"", b"ab", Some(Incomplete::Gap))
    );
    assert_eq!(response(&ex[1]).body.wire_size, 8);
}

#[test]
fn gap_in_close_delimited_body() {
    let out = check(&[
        req("GET / HTTP/1.1\r\n\r\n", 1),
        resp("HTTP/1.0 200 OK\r\n\r\nab", 2),
        Ev::Gap(Side::Response, 100, 3),
        resp("cd", 4),
        Ev::Close(5),
    ]);
    let ex = exchanges(&out);
    assert_eq!(
        summary(&ex[0]),
        s("GET", "/", 200, b"", b"ab", Some(Incomplete::Gap))
    );
    assert_eq!(response(&ex[0]).body.wire_size, 104);
}

#[test]
fn gap_past_the_body_resyncs_at_the_next_message() {
    let out = check(&[
        req("POST /a HTTP/1.1\r\nContent-Length: 10\r\n\r\n0123", 1),
        // Lost: the rest of /a and all of request /b.
        Ev::Gap(Side::Request, 30, 2),
        req("ody bytes\r\nGET /c HTTP/1.1\r\n\r\n", 3),
        resp(
            "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\naHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nbHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nc",
            4,
        ),
    ]);
    // /a is paired with the first response; the response meant for the lost /b pairs with /c
    // (no way to know), and the third has no request left.
    assert_eq!(errors(&out), vec![ParseErrorReason::ResponseWithoutRequest]);
    let ex = exchanges(&out);
    assert_eq!(ex.len(), 2);
    assert_eq!(
        summary(&ex[0]),
        s("POST", "/a", 200, b"0123", b"a", Some(Incomplete::Gap))
    );
    assert_eq!(ex[0].request.body.wire_size, 10);
    assert!(ex[0].request.body.truncated);
    assert_eq!(summary(&ex[1]), s("GET", "/c", 200, b"", b"b", None));
}

#[test]
fn gap_in_request_head_drops_it() {
    let out = check(&[
        req("GET /lost HTTP/1.1\r\nHo", 1),
        Ev::Gap(Side::Request, 5, 2),
        req("ple.test\r\n\r\nGET /kept HTTP/1.1\r\n\r\n", 3),
        resp("HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nkept", 4),
    ]);
    assert_eq!(errors(&out), vec![]);
    let ex = exchanges(&out);
    assert_eq!(ex.len(), 1);
    assert_eq!(summary(&ex[0]), s("GET", "/kept", 200, b"", b"kept", None));
    assert_eq!(ex[0].timing.request_start_ns, 3);
}

#[test]
fn gap_after_a_message_finds_a_start_right_away() {
    let out = check(&[
        req("GET /1 HTTP/1.1\r\n\r\n", 1),
        Ev::Gap(Side::Request, 19, 2),
        req("GET /3 HTTP/1.1\r\n\r\n", 3),
        resp("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n1", 4),
        Ev::Gap(Side::Response, 38, 5),
        resp("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n3", 6),
    ]);
    // The lost response (to /2, which was lost too) is attributed to the oldest waiting
    // request, /3, and the response that follows has no request left.
    assert_eq!(errors(&out), vec![ParseErrorReason::ResponseWithoutRequest]);
    let ex = exchanges(&out);
    assert_eq!(ex.len(), 2);
    assert_eq!(summary(&ex[0]), s("GET", "/1", 200, b"", b"1", None));
    assert_eq!(
        summary(&ex[1]),
        s("GET", "/3", 0, b"", b"", Some(Incomplete::Gap))
    );
    assert_eq!(ex[1].timing.request_start_ns, 3);
}

#[test]
fn resync_skips_status_text_inside_a_body() {
    let out = check(&[
        req("GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n", 1),
        resp(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nabcde\r\n",
            2,
        ),
        Ev::Gap(Side::Response, 1000, 3),
        // Body bytes after the gap quote a status line; the line after it is no field line.
        resp(
            "text HTTP/1.1 200 OK and more\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nb",
            4,
        ),
    ]);
    assert_eq!(errors(&out), vec![]);
    let ex = exchanges(&out);
    assert_eq!(
        summary(&ex[0]),
        s("GET", "/a", 200, b"", b"abcde", Some(Incomplete::Gap))
    );
    assert!(response(&ex[0]).body.truncated);
    assert_eq!(summary(&ex[1]), s("GET", "/b", 200, b"", b"b", None));
}

#[test]
fn close_with_pending_work() {
    let out = check(&[
        req(
            "GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\nPOST /c HTTP/1.1\r\nContent-Length: 5\r\n\r\nab",
            1,
        ),
        resp("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n01234", 2),
        Ev::Close(3),
    ]);
    let got: Vec<_> = exchanges(&out).iter().map(summary).collect();
    assert_eq!(
        got,
        vec![
            s(
                "GET",
                "/a",
                200,
                b"",
                b"01234",
                Some(Incomplete::ConnectionClosed)
            ),
            s("GET", "/b", 0, b"", b"", Some(Incomplete::ConnectionClosed)),
            s(
                "POST",
                "/c",
                0,
                b"ab",
                b"",
                Some(Incomplete::ConnectionClosed)
            ),
        ]
    );
    let ex = exchanges(&out);
    assert!(response(&ex[0]).body.truncated);
    assert!(ex[2].request.body.truncated);
    assert_eq!(ex[2].request.body.wire_size, 2);
}

#[test]
fn flush_emits_pending_and_resyncs_after() {
    let limits = Http1Limits::default();
    let mut conn = Http1Conn::new(limits);
    let mut out = Vec::new();
    conn.on_data(
        Side::Request,
        b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n",
        1,
        &mut out,
    );
    conn.on_data(
        Side::Response,
        b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nab",
        2,
        &mut out,
    );
    assert!(conn.buffered_bytes() > 0);
    conn.flush(&mut out);
    let got: Vec<_> = exchanges(&out).iter().map(summary).collect();
    assert_eq!(
        got,
        vec![
            s("GET", "/a", 200, b"", b"ab", Some(Incomplete::Flushed)),
            s("GET", "/b", 0, b"", b"", Some(Incomplete::NoResponse))
        ]
    );
    assert_eq!(conn.buffered_bytes(), 0);
    // The rest of the cut body is skipped, then decoding goes on.
    out.clear();
    conn.on_data(Side::Response, b"cd", 3, &mut out);
    conn.on_data(Side::Request, b"GET /c HTTP/1.1\r\n\r\n", 4, &mut out);
    conn.on_data(
        Side::Response,
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nc",
        5,
        &mut out,
    );
    assert_eq!(errors(&out), vec![]);
    assert_eq!(
        summary(&exchanges(&out)[0]),
        s("GET", "/c", 200, b"", b"c", None)
    );
}

#[test]
fn flush_in_a_script() {
    let out = check(&[
        req("POST /a HTTP/1.1\r\nContent-Length: 6\r\n\r\nabc", 1),
        Ev::Flush,
        req("def", 2),
        req("GET /b HTTP/1.1\r\n\r\n", 3),
        resp(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n",
            4,
        ),
        Ev::Flush,
        Ev::Flush,
        resp("0\r\nX-T: 1\r\n\r\n", 5),
        Ev::Close(6),
    ]);
    assert_eq!(errors(&out), vec![]);
    let got: Vec<_> = exchanges(&out).iter().map(summary).collect();
    assert_eq!(
        got,
        vec![
            s("POST", "/a", 0, b"abc", b"", Some(Incomplete::Flushed)),
            s("GET", "/b", 200, b"", b"ok", Some(Incomplete::Flushed))
        ]
    );
    let ex = exchanges(&out);
    assert!(ex[0].request.body.truncated);
    assert_eq!(response(&ex[1]).trailers, vec![]);
    assert!(response(&ex[1]).body.truncated);
}

#[test]
fn pipeline_overflow_evicts_the_oldest() {
    let limits = Http1Limits {
        max_pipelined: 2,
        ..Http1Limits::default()
    };
    let out = check_with(
        &limits,
        &[
            req(
                "GET /1 HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\n\r\nGET /3 HTTP/1.1\r\n\r\n",
                1,
            ),
            resp("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx", 2),
        ],
    );
    assert_eq!(errors(&out), vec![ParseErrorReason::PipelineOverflow]);
    let got: Vec<_> = exchanges(&out).iter().map(summary).collect();
    assert_eq!(
        got,
        vec![
            s("GET", "/1", 0, b"", b"", Some(Incomplete::NoResponse)),
            s("GET", "/2", 200, b"", b"x", None)
        ]
    );
}

#[test]
fn header_values_lossy_obs_fold_and_odd_spacing() {
    let out = check(&[
        req(b"GET  /sp  HTTP/1.1\r\nX-Bin: caf\xe9\r\n\r\n", 1),
        resp(
            "HTTP/1.1  200  Fine\r\nX-Folded: a\r\n  b\r\nServer : s\r\nContent-Length: 0\r\n\r\n",
            2,
        ),
    ]);
    assert_eq!(errors(&out), vec![]);
    let ex = exchanges(&out);
    assert_eq!(ex[0].request.target, "/sp");
    assert_eq!(ex[0].request.headers, vec![h("X-Bin", "caf\u{fffd}")]);
    let r = response(&ex[0]);
    assert_eq!(r.reason, "Fine");
    assert_eq!(r.headers.get(0).unwrap().name, "X-Folded");
    assert!(
        r.headers.get(0).unwrap().value.starts_with('a')
            && r.headers.get(0).unwrap().value.ends_with('b')
    );
    assert_eq!(r.headers.get(1).unwrap(), h("Server", "s"));
}

#[test]
fn utf8_heads_keep_their_fields_exactly() {
    // A UTF-8 head becomes the fields' text as it is (spans); non-ASCII values, empty values,
    // spaces before the colon and a head split across reads all come out as on the wire.
    let head = "HTTP/1.1 200 OK\r\nX-Name: café ☕\r\nX-Empty:\r\nServer : s\r\nContent-Length: 2\r\n\r\nok";
    let (a, b) = head.as_bytes().split_at(22);
    let out = check(&[
        req(b"GET /\xc3\xa9 HTTP/1.1\r\nX-Who: Zo\xc3\xab\r\n\r\n", 1),
        resp(a, 2),
        resp(b, 3),
    ]);
    assert_eq!(errors(&out), vec![]);
    let ex = exchanges(&out);
    assert_eq!(ex[0].request.target, "/é");
    assert_eq!(ex[0].request.headers, vec![h("X-Who", "Zoë")]);
    let r = response(&ex[0]);
    assert_eq!(
        r.headers,
        vec![
            h("X-Name", "café ☕"),
            h("X-Empty", ""),
            h("Server", "s"),
            h("Content-Length", "2")
        ]
    );
    assert_eq!(r.body.data, b"ok");
}

#[test]
fn buffered_bytes_tracks_held_data() {
    let mut conn = Http1Conn::new(Http1Limits::default());
    let mut out = Vec::new();
    assert_eq!(conn.buffered_bytes(), 0);
    conn.on_data(
        Side::Request,
        b"POST / HTTP/1.1\r\nContent-Len",
        1,
        &mut out,
    );
    assert_eq!(conn.buffered_bytes(), 28);
    conn.on_data(Side::Request, b"gth: 4\r\n\r\nabcd", 2, &mut out);
    assert!(conn.buffered_bytes() >= 4);
    conn.on_data(
        Side::Response,
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        3,
        &mut out,
    );
    assert_eq!(exchanges(&out).len(), 1);
    assert_eq!(conn.buffered_bytes(), 0);
}

#[test]
fn reasons_have_distinct_snake_case_labels() {
    let labels: Vec<&str> = ParseErrorReason::ALL.iter().map(|r| r.as_str()).collect();
    let mut unique = labels.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), labels.len());
    assert_eq!(labels.len(), 10);
    for l in labels {
        assert!(
            l.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
            "{l}"
        );
    }
}

#[test]
fn sniffing() {
    for yes in [
        &b"GET / HTTP/1.1\r\n"[..],
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST /api/v1/items?x=1 HTTP/1.0\n",
        b"M-SEARCH * HTTP/1.1\r\n",
        b"PROPFIND /dav HTTP/1.1\r\n",
        b"POST ",
        b"GET /partial-tar",
        b"OPTIONS * HTT",
    ] {
        assert!(looks_like_request(yes), "{}", String::from_utf8_lossy(yes));
    }
    for no in [
        &b""[..],
        b"GE",
        b"GET",
        b"get / HTTP/1.1\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        b"GET / HTTP/2\r\n",
        b"GET /a b HTTP/1.1\r\n",
        b"FOO /x",
        b"HTTP/1.1 200 OK\r\n",
        b"\x16\x03\x01\x02\x00",
        b"GET  / HTTP/1.1\r\n",
    ] {
        assert!(!looks_like_request(no), "{}", String::from_utf8_lossy(no));
    }
    for yes in [
        &b"HTTP/1.1 200 OK\r\n"[..],
        b"HTTP/1.0 404",
        b"HTTP/1.1 204\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 500 Internal Server",
    ] {
        assert!(looks_like_response(yes), "{}", String::from_utf8_lossy(yes));
    }
    for no in [
        &b"HTTP/1.1 20"[..],
        b"HTTP/2 200\r\n",
        b"HTTP/1.1 2000\r\n",
        b"http/1.1 200 OK\r\n",
        b"GET / HTTP/1.1\r\n",
        b"HTTP/1.1 200 O\x01K\r\n",
    ] {
        assert!(!looks_like_response(no), "{}", String::from_utf8_lossy(no));
    }
}

#[test]
fn errors_never_carry_header_values() {
    let secret = "Bearer sk-live-0123456789";
    let out = check(&[
        req(
            format!(
                "GET / HTTP/1.1\r\nAuthorization: {secret}\r\nContent-Length: {secret}\r\n\r\n"
            ),
            1,
        ),
        resp(
            format!(
                "HTTP/1.1 200 OK\r\nSet-Cookie: {secret}\r\nContent-Encoding: {secret}\r\nContent-Length: 4\r\n\r\nbody"
            ),
            2,
        ),
    ]);
    assert!(!errors(&out).is_empty());
    for o in &out {
        match o {
            Http1Output::Error(e) => {
                assert!(!format!("{e} {e:?} {}", e.as_str()).contains("sk-live"));
            }
            Http1Output::Exchange(ex) => {
                for b in [&ex.request.body, &response(ex).body] {
                    assert!(!b.decode_error.as_deref().unwrap_or("").contains("sk-live"));
                }
            }
            Http1Output::Upgraded { .. } => {}
        }
    }
}

#[test]
fn too_many_header_lines_are_refused() {
    let many: String = (0..600).map(|i| format!("x{i}: v\r\n")).collect();
    let ok: String = (0..300).map(|i| format!("x{i}: v\r\n")).collect();
    let out = run_with(
        &Http1Limits::default(),
        &[
            req(
                format!("GET /many HTTP/1.1\r\n{many}\r\nGET /ok HTTP/1.1\r\n{ok}\r\n"),
                1,
            ),
            resp("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 2),
        ],
    );
    assert_eq!(errors(&out), vec![ParseErrorReason::TooManyHeaderFields]);
    let ex = exchanges(&out);
    assert_eq!(ex.len(), 1);
    assert_eq!(ex[0].request.target, "/ok");
    assert_eq!(ex[0].request.headers.len(), 300);
}

/// `max_header_fields` is the caller's: a head at it is kept, one past it refused (counted as
/// its own reason), and the connection carries on; trailers obey it too.
#[test]
fn the_header_field_cap_is_configurable_and_counted() {
    let limits = Http1Limits {
        max_header_fields: 3,
        ..Http1Limits::default()
    };
    let out = run_with(
        &limits,
        &[
            req(
                "GET /four HTTP/1.1\r\na: 1\r\nb: 2\r\nc: 3\r\nd: 4\r\n\r\nGET /three HTTP/1.1\r\na: 1\r\nb: 2\r\nc: 3\r\n\r\n",
                1,
            ),
            resp(
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nt1: 1\r\nt2: 2\r\nt3: 3\r\nt4: 4\r\n\r\n",
                2,
            ),
        ],
    );
    assert_eq!(
        errors(&out),
        vec![
            ParseErrorReason::TooManyHeaderFields,
            ParseErrorReason::TooManyHeaderFields
        ]
    );
    let ex = exchanges(&out);
    assert_eq!(ex.len(), 1);
    assert_eq!(ex[0].request.target, "/three");
    assert_eq!(ex[0].request.headers.len(), 3);
    let response = ex[0].response.as_ref().unwrap();
    assert_eq!(response.status, 200);
    assert!(response.trailers.is_empty());
    let few = Http1Limits {
        max_header_fields: 1,
        ..Http1Limits::default()
    };
    let out = run_with(
        &few,
        &[
            req("GET /one HTTP/1.1\r\nHost: a\r\n\r\n", 1),
            resp("HTTP/1.1 204 No Content\r\n\r\n", 2),
        ],
    );
    assert!(errors(&out).is_empty());
    assert_eq!(exchanges(&out).len(), 1);
}

#[test]
fn debug_output_holds_no_captured_bytes() {
    let mut conn = Http1Conn::new(Http1Limits::default());
    let mut out = Vec::new();
    conn.on_data(Side::Request, b"POST / HTTP/1.1\r\nAuthorization: Bearer sk-live-1\r\nContent-Length: 20\r\n\r\nsecret-body", 1, &mut out);
    conn.on_data(
        Side::Response,
        b"HTTP/1.1 200 OK\r\nSet-Cookie: sk-live-2",
        2,
        &mut out,
    );
    let debug = format!("{conn:?}");
    assert!(debug.contains("queued: 1"), "{debug}");
    assert!(
        !debug.contains("sk-live") && !debug.contains("secret"),
        "{debug}"
    );
}
