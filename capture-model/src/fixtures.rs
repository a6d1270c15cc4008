//! Example exchanges for tests, here and in the crates that render or redact them
//! (feature `fixtures`). [`representative`] is the exchange behind the golden HAR entry that
//! docs/output-schema.md shows.

use std::net::SocketAddr;

use crate::exchange::{
    Body, ConnMeta, Exchange, Header, Headers, HttpVersion, Protocol, Request, Response, Role,
    Timing, Workload,
};

/// A header field.
pub fn h(name: &str, value: &str) -> Header {
    Header::new(name, value)
}

/// A body captured whole: `data`, of that size on the wire.
pub fn body(data: &[u8]) -> Body {
    Body {
        data: data.to_vec(),
        wire_size: data.len() as u64,
        ..Body::default()
    }
}

/// A socket address; panics on a malformed one (fixtures are literals).
#[expect(clippy::unwrap_used, reason = "fixed, valid socket addresses")]
pub fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// A JSON API call from a Kubernetes client pod: POST with a JSON body, gzip response.
pub fn representative() -> Exchange {
    let response_json = br#"{"id":42,"status":"created"}"#;
    Exchange {
        protocol: Protocol::H1,
        request: Request {
            method: "POST".into(),
            target: "/api/orders?page=2&sort=created%20desc".into(),
            version: HttpVersion::Http11,
            headers: vec![
                h("Host", "orders.shop.svc:8080"),
                h("User-Agent", "curl/8.5.0"),
                h("Authorization", "Bearer eyJhbGciOi.secret"),
                h("Content-Type", "application/json"),
                h("Content-Length", "23"),
                h("Connection", "keep-alive"),
            ]
            .into(),
            headers_size: 187,
            body: body(br#"{"item":"book","qty":1}"#),
            trailers: Headers::new(),
        },
        response: Some(Response {
            status: 201,
            reason: "Created".into(),
            version: HttpVersion::Http11,
            headers: vec![
                h("Content-Type", "application/json"),
                h("Content-Encoding", "gzip"),
                h("Content-Length", "48"),
                h("Set-Cookie", "session=abc123; HttpOnly"),
                h("Location", "/api/orders/42"),
            ]
            .into(),
            headers_size: 158,
            body: Body {
                data: response_json.to_vec(),
                wire_size: 48,
                decoded_from: Some("gzip".into()),
                ..Body::default()
            },
            trailers: Headers::new(),
        }),
        timing: Timing {
            request_start_ns: 5_000_000_000,
            request_end_ns: 5_000_250_000,
            response_start_ns: Some(5_012_750_000),
            response_end_ns: Some(5_013_000_000),
        },
        incomplete: None,
        conn: ConnMeta {
            src: Some(addr("10.244.1.17:48122")),
            dst: Some(addr("10.96.12.5:8080")),
            role: Some(Role::Client),
            id: "4242:7:1".into(),
        },
        pid: 4242,
        workload: Workload {
            namespace: Some("shop".into()),
            pod: Some("checkout-7d9f8b6c5d-x2x4q".into()),
            container: Some("app".into()),
            owner_kind: Some("Deployment".into()),
            owner_name: Some("checkout".into()),
            node: Some("node-a".into()),
        }
        .into(),
        redacted: Vec::new(),
        routing_key: None,
        grpc: None,
        cgroup_id: 0,
    }
}

/// [`representative`] as the daemon's default redaction leaves it: `Authorization` and
/// `Connection` gone from the request, `Set-Cookie` from the response, and their names listed.
/// The daemon's redaction tests check that its policy produces exactly this.
pub fn representative_redacted() -> Exchange {
    let mut ex = representative();
    ex.request.headers.retain(|h| {
        !h.name.eq_ignore_ascii_case("authorization") && !h.name.eq_ignore_ascii_case("connection")
    });
    if let Some(response) = &mut ex.response {
        response
            .headers
            .retain(|h| !h.name.eq_ignore_ascii_case("set-cookie"));
    }
    ex.redacted = vec![
        "authorization".into(),
        "connection".into(),
        "set-cookie".into(),
    ];
    ex
}
