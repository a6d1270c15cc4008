//! Unit tests of the HTTP/2 decoder, fed real frames and HPACK blocks.

use super::frame::{
    CONTINUATION, DATA, FLAG_END_HEADERS, FLAG_END_STREAM, FLAG_PADDED, FLAG_PRIORITY, GOAWAY,
    HEADERS, PING, PRIORITY, PUSH_PROMISE, RST_STREAM, SETTINGS, WINDOW_UPDATE, write_frame,
};
use super::hpack::Indexing;
use super::testing::{Wire, exchanges, get, refs, run};
use super::*;
use capture_model::exchange::{Body, Header, Protocol};

fn errors(out: &[Http2Output]) -> Vec<H2ErrorReason> {
    out.iter()
        .filter_map(|o| match o {
            Http2Output::Error(e) => Some(*e),
            _ => None,
        })
        .collect()
}

fn limits_hit(out: &[Http2Output]) -> Vec<H2Limit> {
    out.iter()
        .filter_map(|o| match o {
            Http2Output::Limit(l) => Some(*l),
            _ => None,
        })
        .collect()
}

fn names(headers: &Headers) -> Vec<&str> {
    headers.iter().map(|h| h.name).collect()
}

fn simple() -> Wire {
    let mut w = Wire::new();
    w.request(1, &refs(&get("/a?x=1")), true);
    w.response(
        1,
        &[(":status", "200"), ("content-type", "text/plain")],
        false,
    );
    w.server_data(1, b"hel", false);
    w.server_data(1, b"lo", true);
    w
}

#[test]
fn prior_knowledge_get() {
    let w = simple();
    let mut c = Http2Conn::new(Http2Limits::default());
    let out = run(&mut c, &w);
    assert_eq!(errors(&out), vec![]);
    let ex = exchanges(&out);
    assert_eq!(ex.len(), 1);
    let ex = ex[0];
    assert_eq!(ex.protocol, Protocol::H2);
    assert_eq!(ex.request.method, "GET");
    assert_eq!(ex.request.target, "/a?x=1");
    assert_eq!(ex.request.version, HttpVersion::Http2);
    assert_eq!(
        names(&ex.request.headers),
        [":method", ":scheme", ":authority", ":path", "user-agent"]
    );
    let r = ex.response.as_ref().unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.reason, "");
    assert_eq!(r.version, HttpVersion::Http2);
    assert_eq!(r.body.data, b"hello");
    assert_eq!(r.body.wire_size, 5);
    assert!(!r.body.truncated);
    assert!(r.headers_size > 0 && ex.request.headers_size > 0);
    assert_eq!(ex.incomplete, None);
    assert_eq!(ex.timing.request_start_ns, 1);
    assert_eq!(ex.timing.response_end_ns, Some(2));
    assert_eq!(c.open_streams(), 0);
}

/// Every split point of both byte streams gives the same exchange.
#[test]
fn every_split_point() {
    let mut w = simple();
    // Add padding, priority, CONTINUATION and control frames to cut through.
    let block = Wire::block(&mut w.client_enc, &refs(&get("/b")));
    let mut headers = vec![3u8]; // pad length
    headers.extend_from_slice(&[0, 0, 0, 0, 16]); // priority
    headers.extend_from_slice(&block[..4]);
    headers.extend_from_slice(&[0, 0, 0]);
    write_frame(
        &mut w.client,
        HEADERS,
        FLAG_PADDED | FLAG_PRIORITY | FLAG_END_STREAM,
        3,
        &headers,
    );
    write_frame(&mut w.client, CONTINUATION, 0, 3, &block[4..6]);
    write_frame(
        &mut w.client,
        CONTINUATION,
        FLAG_END_HEADERS,
        3,
        &block[6..],
    );
    write_frame(&mut w.client, PING, 0, 0, &[1; 8]);
    write_frame(&mut w.client, PRIORITY, 0, 3, &[0, 0, 0, 1, 5]);
    write_frame(&mut w.server, WINDOW_UPDATE, 0, 0, &[0, 0, 1, 0]);
    w.response(3, &[(":status", "404")], false);
    write_frame(
        &mut w.server,
        DATA,
        FLAG_PADDED | FLAG_END_STREAM,
        3,
        b"\x02no\0\0",
    );
    let mut whole = Http2Conn::new(Http2Limits::default());
    let want = run(&mut whole, &w);
    let want_ex = exchanges(&want);
    assert_eq!(want_ex.len(), 2);
    assert_eq!(want_ex[1].request.target, "/b");
    assert_eq!(want_ex[1].response.as_ref().unwrap().body.data, b"no");
    assert_eq!(errors(&want), vec![]);
    for (side, bytes) in [(Side::Request, &w.client), (Side::Response, &w.server)] {
        for cut in 0..=bytes.len() {
            let mut c = Http2Conn::new(Http2Limits::default());
            let mut out = Vec::new();
            if side == Side::Request {
                c.on_data(Side::Request, &bytes[..cut], 1, &mut out);
                c.on_data(Side::Request, &bytes[cut..], 1, &mut out);
                c.on_data(Side::Response, &w.server, 2, &mut out);
            } else {
                c.on_data(Side::Request, &w.client, 1, &mut out);
                c.on_data(Side::Response, &bytes[..cut], 2, &mut out);
                c.on_data(Side::Response, &bytes[cut..], 2, &mut out);
            }
            c.on_close(3, &mut out);
            assert_eq!(out, want, "{side:?} cut at {cut}");
        }
    }
    // Byte by byte, both sides interleaved.
    let mut c = Http2Conn::new(Http2Limits::default());
    let mut out = Vec::new();
    for i in 0..w.client.len().max(w.server.len()) {
        if let Some(b) = w.client.get(i) {
            c.on_data(Side::Request, std::slice::from_ref(b), 1, &mut out);
        }
        if i >= w.client.len() / 2
            && let Some(b) = w.server.get(i - w.client.len() / 2)
        {
            c.on_data(Side::Response, std::slice::from_ref(b), 2, &mut out);
        }
    }
    let rest = w
        .server
        .len()
        .saturating_sub(w.client.len() - w.client.len() / 2);
    c.on_data(
        Side::Response,
        &w.server[w.server.len() - rest..],
        2,
        &mut out,
    );
    c.on_close(3, &mut out);
    assert_eq!(exchanges(&out).len(), 2);
}

#[test]
fn hundred_interleaved_streams() {
    let mut w = Wire::new();
    let ids: Vec<u32> = (0..100).map(|i| 1 + 2 * i).collect();
    for &id in &ids {
        w.request(id, &refs(&get(&format!("/item/{id}"))), false);
        w.client_data(id, format!("req-{id}-").as_bytes(), false);
    }
    for &id in &ids {
        w.client_data(id, b"end", true);
        w.response(id, &[(":status", "200"), ("x-id", &id.to_string())], false);
    }
    for part in 0..3 {
        for &id in ids.iter().rev() {
            w.server_data(id, format!("{id}:{part};").as_bytes(), part == 2);
        }
    }
    let mut c = Http2Conn::new(Http2Limits::default());
    let out = run(&mut c, &w);
    let ex = exchanges(&out);
    assert_eq!(ex.len(), 100);
    for e in ex {
        let id: u32 = e
            .request
            .target
            .trim_start_matches("/item/")
            .parse()
            .unwrap();
        assert_eq!(e.request.body.data, format!("req-{id}-end").as_bytes());
        let r = e.response.as_ref().unwrap();
        assert_eq!(r.body.data, format!("{id}:0;{id}:1;{id}:2;").as_bytes());
        assert_eq!(
            header_value(&r.headers, "x-id"),
            Some(id.to_string().as_str())
        );
        assert_eq!(e.incomplete, None);
    }
}

use capture_model::exchange::header_value;

#[test]
fn reset_goaway_and_close() {
    let mut w = Wire::new();
    w.request(1, &refs(&get("/reset")), true);
    w.request(3, &refs(&get("/refused")), true);
    w.request(5, &refs(&get("/refused-too")), true);
    w.request(7, &refs(&get("/open-at-close")), false);
    write_frame(&mut w.server, RST_STREAM, 0, 1, &[0, 0, 0, 8]);
    // Last stream processed: 1.
    write_frame(&mut w.server, GOAWAY, 0, 0, &[0, 0, 0, 1, 0, 0, 0, 0]);
    let mut c = Http2Conn::new(Http2Limits::default());
    let mut out = Vec::new();
    c.on_data(Side::Request, &w.client, 1, &mut out);
    c.on_data(Side::Response, &w.server, 2, &mut out);
    let ex = exchanges(&out);
    let got: Vec<(&str, Option<Incomplete>)> = ex
        .iter()
        .map(|e| (e.request.target.as_str(), e.incomplete))
        .collect();
    assert_eq!(
        got,
        vec![
            ("/reset", Some(Incomplete::Reset)),
            ("/refused", Some(Incomplete::Reset)),
            ("/refused-too", Some(Incomplete::Reset)),
            ("/open-at-close", Some(Incomplete::Reset)),
        ]
    );
    // A stream still open at close.
    let mut w = Wire::new();
    w.request(1, &refs(&get("/slow")), true);
    w.response(1, &[(":status", "200")], false);
    w.server_data(1, b"part", false);
    let mut c = Http2Conn::new(Http2Limits::default());
    let out = run(&mut c, &w);
    let ex = exchanges(&out);
    assert_eq!(ex[0].incomplete, Some(Incomplete::ConnectionClosed));
    assert_eq!(ex[0].response.as_ref().unwrap().body.data, b"part");
}

#[test]
fn flush_marks_what_was_cut() {
    let mut w = Wire::new();
    w.request(1, &refs(&get("/no-response")), true);
    w.request(3, &refs(&get("/half")), true);
    w.response(3, &[(":status", "200")], false);
    let mut c = Http2Conn::new(Http2Limits::default());
    let mut out = Vec::new();
    c.on_data(Side::Request, &w.client, 1, &mut out);
    c.on_data(Side::Response, &w.server, 2, &mut out);
    c.flush(&mut out);
    let ex = exchanges(&out);
    assert_eq!(ex[0].incomplete, Some(Incomplete::NoResponse));
    assert_eq!(ex[1].incomplete, Some(Incomplete::Flushed));
    assert_eq!(
        c.buffered_bytes(),
        c.halves
            .iter()
            .map(|h| h.hpack.table().size())
            .sum::<usize>()
    );
}

#[test]
fn interim_responses_are_skipped_and_trailers_kept() {
    let mut w = Wire::new();
    w.request(
        1,
        &[
            (":method", "POST"),
            (":scheme", "http"),
            (":authority", "a"),
            (":path", "/up"),
            ("expect", "100-continue"),
        ],
        false,
    );
    w.response(1, &[(":status", "100")], false);
    w.client_data(1, b"body", false);
    w.request(1, &[("x-checksum", "abc")], true);
    w.response(1, &[(":status", "201")], false);
    w.server_data(1, b"ok", false);
    w.response(1, &[("x-trailer", "t")], true);
    let mut c = Http2Conn::new(Http2Limits::default());
    let out = run(&mut c, &w);
    let ex = exchanges(&out);
    assert_eq!(ex.len(), 1);
    assert_eq!(
        ex[0].request.trailers,
        vec![Header::new("x-checksum", "abc")]
    );
    let r = ex[0].response.as_ref().unwrap();
    assert_eq!(r.status, 201);
    assert_eq!(r.trailers, vec![Header::new("x-trailer", "t")]);
    assert_eq!(ex[0].incomplete, None);
}

#[test]
fn server_push_is_its_own_exchange() {
    let mut w = Wire::new();
    w.request(1, &refs(&get("/page")), true);
    let block = Wire::block(&mut w.server_enc, &refs(&get("/style.css")));
    let mut payload = vec![0, 0, 0, 2];
    payload.extend_from_slice(&block);
    write_frame(&mut w.server, PUSH_PROMISE, FLAG_END_HEADERS, 1, &payload);
    w.response(1, &[(":status", "200")], false);
    w.server_data(1, b"<html>", true);
    w.response(
        2,
        &[(":status", "200"), ("content-type", "text/css")],
        false,
    );
    w.server_data(2, b"body{}", true);
    let mut c = Http2Conn::new(Http2Limits::default());
    let out = run(&mut c, &w);
    let ex = exchanges(&out);
    let got: Vec<(&str, &[u8])> = ex
        .iter()
        .map(|e| {
            (
                e.request.target.as_str(),
                e.response.as_ref().unwrap().body.data.as_slice(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![("/page", &b"<html>"[..]), ("/style.css", b"body{}")]
    );
}

fn grpc_request(path: &str) -> Vec<(&'static str, String)> {
    vec![
        (":method", "POST".into()),
        (":scheme", "http".into()),
        (":path", path.into()),
        (":authority", "grpc.test:50051".into()),
        ("content-type", "application/grpc".into()),
        ("te", "trailers".into()),
    ]
}

fn grpc_frame(flag: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = vec![flag];
    v.extend_from_slice(&u32::try_from(payload.len()).unwrap().to_be_bytes());
    v.extend_from_slice(payload);
    v
}

#[test]
fn grpc_messages_split_across_frames_and_trailers() {
    let mut w = Wire::new();
    w.request(
        1,
        &refs(&grpc_request("/helloworld.Greeter/SayHello")),
        false,
    );
    let msg = grpc_frame(0, b"\x0a\x05world");
    w.client_data(1, &msg[..3], false);
    w.client_data(1, &msg[3..], true);
    w.response(
        1,
        &[(":status", "200"), ("content-type", "application/grpc")],
        false,
    );
    let mut replies = grpc_frame(0, b"\x0a\x0bHello world");
    replies.extend(grpc_frame(0, b"\x0a\x01!"));
    for piece in replies.chunks(4) {
        w.server_data(1, piece, false);
    }
    w.response(1, &[("grpc-status", "0"), ("grpc-message", "")], true);
    let mut c = Http2Conn::new(Http2Limits::default());
    let out = run(&mut c, &w);
    assert_eq!(errors(&out), vec![]);
    let ex = exchanges(&out)[0];
    assert_eq!(ex.protocol, Protocol::Grpc);
    assert_eq!(ex.request.body.data, msg);
    assert_eq!(ex.response.as_ref().unwrap().body.data, replies);
    let g = ex.grpc.as_ref().unwrap();
    assert_eq!(
        (g.service.as_str(), g.method.as_str(), g.status),
        ("helloworld.Greeter", "SayHello", Some(0))
    );
    assert_eq!(g.message.as_deref(), Some(""));
}

#[test]
fn grpc_trailers_only_and_gzip() {
    let mut w = Wire::new();
    w.request(1, &refs(&grpc_request("/pkg.Svc/Missing")), false);
    w.client_data(1, &grpc_frame(0, b""), true);
    w.response(
        1,
        &[
            (":status", "200"),
            ("content-type", "application/grpc"),
            ("grpc-status", "12"),
            ("grpc-message", "method%20not%20found"),
        ],
        true,
    );
    let mut req = grpc_request("/pkg.Svc/Zipped");
    req.push(("grpc-encoding", "gzip".into()));
    w.request(3, &refs(&req), false);
    let zipped = {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(b"a compressed request message").unwrap();
        e.finish().unwrap()
    };
    let wire_msg = grpc_frame(1, &zipped);
    w.client_data(3, &wire_msg[..10], false);
    w.client_data(3, &wire_msg[10..], true);
    w.response(
        3,
        &[
            (":status", "200"),
            ("content-type", "application/grpc+proto"),
        ],
        false,
    );
    w.response(3, &[("grpc-status", "0")], true);
    let mut c = Http2Conn::new(Http2Limits::default());
    let out = run(&mut c, &w);
    let ex = exchanges(&out);
    let g = ex[0].grpc.as_ref().unwrap();
    assert_eq!(g.status, Some(12));
    assert_eq!(g.message.as_deref(), Some("method not found"));
    assert!(ex[0].response.as_ref().unwrap().trailers.is_empty());
    assert_eq!(
        ex[1].request.body.data,
        grpc_frame(0, b"a compressed request message")
    );
    assert_eq!(ex[1].request.body.decoded_from.as_deref(), Some("gzip"));
    assert_eq!(ex[1].request.body.wire_size, wire_msg.len() as u64);
    assert_eq!(ex[1].grpc.as_ref().unwrap().status, Some(0));
}

#[test]
fn never_indexed_fields_are_dropped_unless_harmless() {
    let mut w = Wire::new();
    let mut block = Vec::new();
    for (n, v) in refs(&get("/secret")) {
        w.client_enc.field(
            n.as_bytes(),
            v.as_bytes(),
            Indexing::Incremental,
            &mut block,
        );
    }
    w.client_enc
        .field(b"x-api-key", b"k3y-s3cret", Indexing::Never, &mut block);
    w.client_enc
        .field(b"content-type", b"text/plain", Indexing::Never, &mut block);
    w.client_enc
        .field(b":path", b"/still-here", Indexing::Never, &mut block);
    write_frame(
        &mut w.client,
        HEADERS,
        FLAG_END_HEADERS | FLAG_END_STREAM,
        1,
        &block,
    );
    w.response(1, &[(":status", "204")], true);
    let mut c = Http2Conn::new(Http2Limits::default());
    let out = run(&mut c, &w);
    let ex = exchanges(&out)[0];
    assert!(!names(&ex.request.headers).contains(&"x-api-key"));
    assert!(names(&ex.request.headers).contains(&"content-type"));
    assert_eq!(ex.redacted, vec!["x-api-key".to_string()]);
    assert!(!format!("{out:?}").contains("s3cret"));
}

#[test]
fn header_list_limit_cuts_fields() {
    let limits = Http2Limits {
        max_header_list_bytes: 300,
        ..Http2Limits::default()
    };
    let mut w = Wire::new();
    let mut fields = get("/big");
    for i in 0..10 {
        fields.push(("x-filler", format!("{i}-{}", "v".repeat(20))));
    }
    w.request(1, &refs(&fields), true);
    w.response(1, &[(":status", "200")], true);
    // Larger on the wire than the limit: the block is not even collected.
    let huge: Vec<(&str, String)> = vec![("x-huge", "h".repeat(400))];
    let mut f3 = get("/huge");
    f3.extend(huge);
    w.request(3, &refs(&f3), true);
    w.request(5, &refs(&get("/after")), true);
    w.response(5, &[(":status", "200")], true);
    let mut c = Http2Conn::new(limits);
    let out = run(&mut c, &w);
    let ex = exchanges(&out);
    assert_eq!(ex[0].incomplete, Some(Incomplete::ParseError));
    assert!(ex[0].request.headers.len() < fields.len());
    assert_eq!(ex[0].request.target, "/big");
    assert_eq!(
        limits_hit(&out),
        vec![H2Limit::HeaderList, H2Limit::HeaderList]
    );
    // The table of the client side is unknown after the skipped block; /after is still
    // decoded (a stream of its own) with what resolves.
    let after = ex
        .iter()
        .find(|e| e.response.is_some() && e.request.target != "/big");
    assert!(after.is_some(), "{ex:?}");
}

#[test]
fn stream_limit_ignores_streams_but_keeps_the_table() {
    let limits = Http2Limits {
        max_streams: 1,
        ..Http2Limits::default()
    };
    let mut w = Wire::new();
    w.request(1, &refs(&get("/one")), true);
    // Refused, but its block inserts x-new into the table...
    let mut f = get("/two");
    f.push(("x-new", "v".into()));
    w.request(3, &refs(&f), true);
    w.server_data(3, b"ignored", true);
    w.response(1, &[(":status", "200")], true);
    // ... which stream 5 refers to by index.
    w.request(5, &refs(&f), true);
    w.response(5, &[(":status", "200")], true);
    let mut c = Http2Conn::new(limits);
    let mut out = Vec::new();
    // Stream 5 is opened after stream 1 is done.
    let five = find(&w.client, b"\x01\x05\x00\x00\x00\x05") - 3;
    let one_done = find(&w.server, b"\x01\x05\x00\x00\x00\x01") + 6 + 1;
    c.on_data(Side::Request, &w.client[..five], 1, &mut out);
    c.on_data(Side::Response, &w.server[..one_done], 2, &mut out);
    c.on_data(Side::Request, &w.client[five..], 3, &mut out);
    c.on_data(Side::Response, &w.server[one_done..], 4, &mut out);
    c.on_close(5, &mut out);
    assert_eq!(limits_hit(&out), vec![H2Limit::Streams]);
    let ex = exchanges(&out);
    assert_eq!(ex.len(), 2);
    assert_eq!(ex[1].request.target, "/two");
    assert_eq!(header_value(&ex[1].request.headers, "x-new"), Some("v"));
    assert_eq!(ex[1].incomplete, None);
}

#[test]
fn connection_body_budget_cuts_bodies() {
    let limits = Http2Limits {
        max_conn_body_bytes: 10,
        ..Http2Limits::default()
    };
    let mut w = Wire::new();
    w.request(1, &refs(&get("/a")), true);
    w.request(3, &refs(&get("/b")), true);
    w.response(1, &[(":status", "200")], false);
    w.response(3, &[(":status", "200")], false);
    w.server_data(1, b"0123456", false);
    w.server_data(3, b"0123456", false);
    w.server_data(1, b"", true);
    w.server_data(3, b"", true);
    let mut c = Http2Conn::new(limits);
    let out = run(&mut c, &w);
    assert_eq!(limits_hit(&out), vec![H2Limit::ConnBodyBytes]);
    let ex = exchanges(&out);
    assert_eq!(ex[0].response.as_ref().unwrap().body.data, b"0123456");
    let cut = &ex[1].response.as_ref().unwrap().body;
    assert_eq!(
        (cut.data.as_slice(), cut.truncated, cut.wire_size),
        (&b"012"[..], true, 7)
    );
}

#[test]
fn shed_bodies_cut_open_streams_and_keep_them_in_step() {
    let mut w = Wire::new();
    w.request(1, &refs(&get("/a")), true);
    w.request(3, &refs(&get("/b")), true);
    w.response(1, &[(":status", "200")], false);
    w.response(3, &[(":status", "200")], false);
    w.server_data(1, b"before", false);
    let shed_at = w.server.len();
    w.server_data(1, b"after", true);
    w.server_data(3, b"all of it", true);
    let mut c = Http2Conn::new(Http2Limits::default());
    let mut out = Vec::new();
    c.on_data(Side::Request, &w.client, 1, &mut out);
    c.on_data(Side::Response, &w.server[..shed_at], 2, &mut out);
    let held = c.buffered_bytes();
    assert_eq!(c.shed_bodies(), 6);
    assert_eq!(c.buffered_bytes(), held - 6);
    c.on_data(Side::Response, &w.server[shed_at..], 3, &mut out);
    c.on_close(4, &mut out);
    let ex = exchanges(&out);
    assert_eq!(ex.len(), 2);
    let cut = &ex[0].response.as_ref().unwrap().body;
    assert_eq!(
        (cut.data.as_slice(), cut.truncated, cut.wire_size),
        (&b""[..], true, 11)
    );
    // Stream 3 held nothing then: its body is whole.
    assert_eq!(ex[1].request.target, "/b");
    let whole = &ex[1].response.as_ref().unwrap().body;
    assert_eq!(
        (whole.data.as_slice(), whole.truncated),
        (&b"all of it"[..], false)
    );
}

#[test]
fn max_frame_size_is_honoured() {
    let mut w = Wire::new();
    w.request(1, &refs(&get("/big")), true);
    w.response(1, &[(":status", "200")], false);
    // 20000 > 16384 and the client never raised SETTINGS_MAX_FRAME_SIZE.
    w.server_data(1, &vec![b'x'; 20_000], true);
    let mut c = Http2Conn::new(Http2Limits::default());
    let out = run(&mut c, &w);
    assert!(errors(&out).contains(&H2ErrorReason::FrameTooLarge));
    assert_eq!(exchanges(&out)[0].incomplete, Some(Incomplete::Gap));

    // Raised by the client's SETTINGS: accepted.
    let mut w = Wire::bare();
    w.client.extend_from_slice(PREFACE);
    write_frame(&mut w.client, SETTINGS, 0, 0, &[0, 5, 0, 1, 0, 0]);
    write_frame(&mut w.server, SETTINGS, 0, 0, &[]);
    w.request(1, &refs(&get("/big")), true);
    w.response(1, &[(":status", "200")], false);
    w.server_data(1, &vec![b'x'; 20_000], true);
    let mut c = Http2Conn::new(Http2Limits::default());
    let out = run(&mut c, &w);
    assert_eq!(errors(&out), vec![]);
    assert_eq!(
        exchanges(&out)[0]
            .response
            .as_ref()
            .unwrap()
            .body
            .data
            .len(),
        20_000
    );
}

#[test]
fn bad_preface_resynchronises() {
    let mut w = simple();
    w.client[3] = b'X';
    let mut c = Http2Conn::new(Http2Limits::default());
    let out = run(&mut c, &w);
    assert_eq!(errors(&out)[0], H2ErrorReason::InvalidPreface);
}

#[test]
fn gap_inside_data_keeps_the_stream_in_step() {
    let mut w = Wire::new();
    w.request(1, &refs(&get("/a")), true);
    w.response(1, &[(":status", "200")], false);
    w.server_data(1, b"0123456789", true);
    w.request(3, &refs(&get("/b")), true);
    w.response(3, &[(":status", "200")], false);
    w.server_data(3, b"fine", true);
    let mut c = Http2Conn::new(Http2Limits::default());
    let mut out = Vec::new();
    c.on_data(Side::Request, &w.client, 1, &mut out);
    // Lose 4 bytes in the middle of the first DATA payload.
    let at = find(&w.server, b"0123") + 3;
    c.on_data(Side::Response, &w.server[..at], 2, &mut out);
    c.on_gap(Side::Response, 4, 2, &mut out);
    c.on_data(Side::Response, &w.server[at + 4..], 2, &mut out);
    let ex = exchanges(&out);
    assert_eq!(ex.len(), 2);
    let r = ex[0].response.as_ref().unwrap();
    assert_eq!(
        (r.body.data.as_slice(), r.body.wire_size),
        (&b"012"[..], 10)
    );
    assert!(r.body.truncated);
    assert_eq!(ex[0].incomplete, Some(Incomplete::Gap));
    assert_eq!(ex[1].incomplete, None);
    assert_eq!(ex[1].response.as_ref().unwrap().body.data, b"fine");
}

fn find(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len()).position(|w| w == needle).unwrap()
}

#[test]
fn gap_across_frames_resynchronises_and_the_table_recovers() {
    let mut w = Wire::new();
    w.request(1, &refs(&get("/a")), true);
    w.request(3, &refs(&get("/b")), true);
    w.response(1, &[(":status", "200"), ("x-server", "s")], false);
    w.server_data(1, b"aaaa", true);
    let lost_from = w.server.len();
    w.response(3, &[(":status", "200"), ("x-lost", "1")], false);
    w.server_data(3, b"bb", true);
    let lost_to = w.server.len() - 3;
    // Next write: a new stream whose response refers to entries of the lost block.
    w.request(5, &refs(&get("/c")), true);
    let resync_at = w.server.len();
    w.response(
        5,
        &[(":status", "200"), ("x-lost", "1"), ("x-fresh", "y")],
        false,
    );
    w.server_data(5, b"cc", true);
    // And after a size update to 0, everything decodes again.
    w.request(7, &refs(&get("/d")), true);
    let mut block = Vec::new();
    w.server_enc.set_max_size(0, &mut block);
    w.server_enc.set_max_size(4096, &mut block);
    for (n, v) in [(":status", "200"), ("x-lost", "1")] {
        w.server_enc.field(
            n.as_bytes(),
            v.as_bytes(),
            Indexing::Incremental,
            &mut block,
        );
    }
    write_frame(
        &mut w.server,
        HEADERS,
        FLAG_END_HEADERS | FLAG_END_STREAM,
        7,
        &block,
    );

    let mut c = Http2Conn::new(Http2Limits::default());
    let mut out = Vec::new();
    // Stream 5 is opened after the gap (streams open during a gap are marked `gap`).
    let five = find(&w.client, b"\x01\x05\x00\x00\x00\x05") - 3;
    c.on_data(Side::Request, &w.client[..five], 1, &mut out);
    c.on_data(Side::Response, &w.server[..lost_from], 2, &mut out);
    // The gap ends 3 bytes into the last DATA frame of stream 3; the rest of that write
    // arrives, then the next write starts at a frame boundary.
    c.on_gap(Side::Response, (lost_to - lost_from) as u64, 2, &mut out);
    c.on_data(Side::Response, &w.server[lost_to..resync_at], 2, &mut out);
    c.on_data(Side::Request, &w.client[five..], 2, &mut out);
    c.on_data(Side::Response, &w.server[resync_at..], 3, &mut out);
    c.on_close(4, &mut out);
    let ex = exchanges(&out);
    let by_target = |t: &str| *ex.iter().find(|e| e.request.target == t).unwrap();
    assert_eq!(by_target("/a").incomplete, None);
    assert_eq!(by_target("/b").incomplete, Some(Incomplete::Gap));
    let c5 = by_target("/c");
    assert_eq!(c5.incomplete, Some(Incomplete::HpackStateUnknown));
    let h = &c5.response.as_ref().unwrap().headers;
    assert_eq!(
        header_value(h, ":status"),
        Some("200"),
        "static entries decode"
    );
    assert_eq!(header_value(h, "x-fresh"), Some("y"), "literals decode");
    assert_eq!(header_value(h, "x-lost"), None, "never guessed");
    assert_eq!(c5.response.as_ref().unwrap().body.data, b"cc");
    let d7 = by_target("/d");
    assert_eq!(d7.incomplete, None, "recovered after the size update");
    assert_eq!(
        header_value(&d7.response.as_ref().unwrap().headers, "x-lost"),
        Some("1")
    );
}

#[test]
fn mid_stream_join_decodes_what_it_can() {
    // The connection ran before the capture: both encoders have entries the decoder never
    // saw, and stream 1 is a long call that started before.
    let mut w = Wire::new();
    w.request(1, &refs(&grpc_request("/chat.Chat/Stream")), false);
    w.response(
        1,
        &[(":status", "200"), ("content-type", "application/grpc")],
        false,
    );
    let mut before = Wire::bare();
    std::mem::swap(&mut before.client_enc, &mut w.client_enc);
    std::mem::swap(&mut before.server_enc, &mut w.server_enc);
    // What is captured:
    before.client_data(1, &grpc_frame(0, b"late"), true);
    before.server_data(1, &grpc_frame(0, b"reply"), false);
    before.response(1, &[("grpc-status", "0")], true);
    before.request(3, &refs(&grpc_request("/chat.Chat/Stream")), true);
    before.response(
        3,
        &[(":status", "200"), ("content-type", "application/grpc")],
        false,
    );
    before.response(3, &[("grpc-status", "0")], true);
    assert!(frame::looks_like_frames(&before.client));
    let mut c = Http2Conn::mid_stream(Http2Limits::default(), Side::Request);
    let out = run(&mut c, &before);
    let ex = exchanges(&out);
    assert_eq!(ex.len(), 2, "{ex:#?}");
    let early = ex.iter().find(|e| e.request.method.is_empty()).unwrap();
    assert_eq!(early.incomplete, Some(Incomplete::HpackStateUnknown));
    assert_eq!(early.request.body.data, grpc_frame(0, b"late"));
    assert_eq!(
        early.response.as_ref().unwrap().body.data,
        grpc_frame(0, b"reply")
    );
    assert_eq!(
        early.response.as_ref().unwrap().trailers,
        vec![Header::new("grpc-status", "0")]
    );
    let next = ex.iter().find(|e| e.request.method == "POST").unwrap();
    // Its headers were all indexed entries from before the capture: unresolved.
    assert_eq!(next.incomplete, Some(Incomplete::HpackStateUnknown));
    assert_eq!(next.request.method, "POST", "static :method still decodes");
}

#[test]
fn h2c_upgrade_makes_the_request_stream_one() {
    let request = Request {
        method: "GET".into(),
        target: "/up".into(),
        version: HttpVersion::Http11,
        headers: vec![
            Header::new("Host", "svc"),
            Header::new("Connection", "Upgrade, HTTP2-Settings"),
            Header::new("Upgrade", "h2c"),
            Header::new("HTTP2-Settings", "AAUAAQAA"),
        ]
        .into(),
        headers_size: 80,
        body: Body::default(),
        trailers: Headers::new(),
    };
    let settings = upgrade_settings(&request).unwrap();
    assert_eq!(settings, [0, 5, 0, 1, 0, 0]);
    let mut c = Http2Conn::upgraded(Http2Limits::default(), request, 1, 1, Some(&settings));
    let mut w = Wire::new();
    w.response(1, &[(":status", "200")], false);
    // Allowed by the client's HTTP2-Settings (max frame 65536).
    w.server_data(1, &vec![b'z'; 20_000], true);
    let out = run(&mut c, &w);
    assert_eq!(errors(&out), vec![]);
    let ex = exchanges(&out);
    assert_eq!(ex.len(), 1);
    assert_eq!(ex[0].request.version, HttpVersion::Http11);
    assert_eq!(ex[0].request.target, "/up");
    assert_eq!(ex[0].response.as_ref().unwrap().version, HttpVersion::Http2);
    assert_eq!(ex[0].response.as_ref().unwrap().body.data.len(), 20_000);
    assert_eq!(ex[0].incomplete, None);
}

#[test]
fn debug_shows_no_content() {
    let mut w = simple();
    w.request(3, &[(":method", "GET"), (":path", "/s3cret-path")], false);
    let mut c = Http2Conn::new(Http2Limits::default());
    let mut out = Vec::new();
    c.on_data(Side::Request, &w.client, 1, &mut out);
    c.on_data(Side::Response, &w.server, 2, &mut out);
    assert!(!format!("{c:?}").contains("s3cret"));
}

// ----- joined mid-way with the sides unknown (`undecided`) -----

/// Feeds `first` then `other` (the direction seen first, then the other one) to an
/// [`Undecided`] and says who it found sent `first`.
fn first_sender(first: &[u8], other: &[u8]) -> Option<Sender> {
    let mut u = Undecided::new(Http2Limits::default());
    assert_eq!(u.on_data(true, first, 0, 1, usize::MAX), 0);
    if !other.is_empty() {
        u.on_data(false, other, 0, 2, usize::MAX);
    }
    u.first_sender()
}

#[test]
fn undecided_reads_the_sides_from_pseudo_headers() {
    let mut w = Wire::bare();
    w.request(5, &refs(&get("/x")), true);
    w.response(5, &[(":status", "204")], true);
    assert_eq!(first_sender(&w.client, &[]), Some(Sender::Client));
    assert_eq!(first_sender(&w.server, &[]), Some(Sender::Server));
    // A status not in the static table is still a literal under the static name.
    let mut w = Wire::bare();
    w.response(5, &[(":status", "299"), ("x-a", "b")], true);
    assert_eq!(first_sender(&w.server, &[]), Some(Sender::Server));

    // Nothing in the first direction says it: the other one does.
    let mut quiet = Vec::new();
    write_frame(&mut quiet, WINDOW_UPDATE, 0, 0, &[0, 0, 1, 0]);
    write_frame(&mut quiet, SETTINGS, 1, 0, &[]);
    write_frame(&mut quiet, PING, 1, 0, &[0; 8]);
    let mut w = Wire::bare();
    w.request(5, &refs(&get("/x")), true);
    w.response(5, &[(":status", "200")], true);
    assert_eq!(first_sender(&quiet, &[]), None);
    assert_eq!(first_sender(&quiet, &w.client), Some(Sender::Server));
    assert_eq!(first_sender(&quiet, &w.server), Some(Sender::Client));
}

#[test]
fn undecided_push_and_even_streams_mean_the_server() {
    // PUSH_PROMISE carries a request's fields, yet it is the server that sends it.
    let mut w = Wire::bare();
    let block = Wire::block(&mut w.server_enc, &refs(&get("/style.css")));
    let mut payload = vec![0, 0, 0, 2];
    payload.extend_from_slice(&block);
    write_frame(&mut w.server, PUSH_PROMISE, FLAG_END_HEADERS, 1, &payload);
    write_frame(&mut w.server, WINDOW_UPDATE, 0, 0, &[0, 0, 1, 0]);
    assert_eq!(first_sender(&w.server, &[]), Some(Sender::Server));
    // HEADERS on a pushed (even) stream, even without pseudo-headers.
    let mut w = Wire::bare();
    w.response(2, &[("x-trailer", "t")], true);
    write_frame(&mut w.server, WINDOW_UPDATE, 0, 0, &[0, 0, 1, 0]);
    assert_eq!(first_sender(&w.server, &[]), Some(Sender::Server));
}

#[test]
fn undecided_bodies_and_trailers_say_nothing() {
    let mut w = Wire::bare();
    w.client_data(1, &grpc_frame(0, b"ping"), false);
    w.request(1, &[("grpc-x", "1")], true);
    w.server_data(1, &grpc_frame(0, b"pong"), false);
    w.response(1, &[("grpc-status", "0")], true);
    assert_eq!(first_sender(&w.client, &w.server), None);
    assert_eq!(first_sender(&w.server, &w.client), None);
    // Fields that refer to entries from before the capture say nothing either.
    let mut before = Wire::bare();
    before.request(1, &[(":path", "/p"), (":authority", "a")], true);
    let mut w = Wire::bare();
    w.client_enc = before.client_enc;
    w.request(3, &[(":path", "/p"), (":authority", "a")], true);
    write_frame(&mut w.client, WINDOW_UPDATE, 0, 0, &[0, 0, 1, 0]);
    assert_eq!(first_sender(&w.client, &[]), None);
}

/// What was held is decoded as a decoder that knew the sides would have: the same exchanges,
/// requests as requests.
#[test]
fn undecided_decodes_what_it_held() {
    let mut w = Wire::bare();
    // The server's end of a stream from before the capture comes first.
    w.server_data(1, b"earlier", true);
    let first = std::mem::take(&mut w.server);
    w.request(3, &refs(&get("/three")), false);
    w.client_data(3, b"up", true);
    w.response(3, &[(":status", "200")], false);
    w.server_data(3, b"down", true);
    let mut u = Undecided::new(Http2Limits::default());
    u.on_data(true, &first, 0, 1, usize::MAX);
    assert_eq!(u.first_sender(), None);
    u.on_data(false, &w.client, 0, 2, usize::MAX);
    assert_eq!(u.first_sender(), Some(Sender::Server));
    assert!(u.held_bytes() > 0);
    let mut out = Vec::new();
    let mut c = u.decode(Sender::Server, &mut out);
    c.on_data(Side::Response, &w.server, 3, &mut out);
    c.on_close(4, &mut out);

    let mut want = Vec::new();
    let mut direct = Http2Conn::mid_stream(Http2Limits::default(), Side::Response);
    direct.on_data(Side::Response, &first, 1, &mut want);
    direct.on_data(Side::Request, &w.client, 2, &mut want);
    direct.on_data(Side::Response, &w.server, 3, &mut want);
    direct.on_close(4, &mut want);
    assert_eq!(out, want);
    let ex = exchanges(&out);
    assert_eq!(ex.len(), 2);
    let three = ex.iter().find(|e| e.request.target == "/three").unwrap();
    assert_eq!(three.request.body.data, b"up");
    assert_eq!(three.response.as_ref().unwrap().body.data, b"down");
    let early = ex.iter().find(|e| e.request.target.is_empty()).unwrap();
    assert_eq!(early.response.as_ref().unwrap().body.data, b"earlier");
    assert!(early.request.body.data.is_empty());
}

/// Past the bound what is held is dropped; the decoder then starts by looking for frame
/// headers on both sides.
#[test]
fn undecided_hold_is_bounded() {
    let mut body = Vec::new();
    for _ in 0..3 {
        write_frame(&mut body, DATA, 0, 1, &[b'x'; 100]);
    }
    let mut u = Undecided::new(Http2Limits::default());
    assert_eq!(u.on_data(true, &body[..150], 0, 1, 200), 0);
    assert_eq!(u.on_data(true, &body[150..], 0, 2, 200), body.len());
    assert_eq!(u.held_bytes(), 0);
    // The frame reader stays in step through the dropped bytes.
    let mut w = Wire::bare();
    w.response(3, &[(":status", "200")], true);
    assert_eq!(u.on_data(true, &w.server, 3, 3, 200), 0);
    assert_eq!(u.first_sender(), Some(Sender::Server));
    let mut out = Vec::new();
    let mut c = u.decode(Sender::Server, &mut out);
    c.on_close(4, &mut out);
    let ex = exchanges(&out);
    assert_eq!(ex.len(), 1);
    assert_eq!(ex[0].response.as_ref().unwrap().status, 200);
}
