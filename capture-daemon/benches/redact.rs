//! What body redaction costs the daemon per exchange: `RedactionPolicy::apply` with the default
//! body fields against the same policy with body redaction off (headers, query parameters and
//! userinfo only), on the same exchanges, in the same run.
//!
//! Each case is an exchange as the pipeline hands it over (decoded bodies, `Content-Type` set):
//! a GET with no body; a 1 KiB JSON POST and response with no credential in them; a JSON login
//! and its OAuth token response; a form login; a 64 KiB JSON response with no credential. The
//! exchange is cloned for every iteration (apply rewrites it), in both policies alike, so the
//! difference of the two figures is the cost of body redaction.
//!
//! Prints one line per case, `redact_<case>_ns` (with body redaction) and
//! `redact_<case>_baseline_ns`, each the median of 5 runs. Run with
//! `cargo bench -p capture-daemon --bench redact` (`-- --quick` for a short run).
#![expect(
    clippy::unwrap_used,
    reason = "a benchmark: a failed unwrap is a failed run"
)]

/// The daemon's allocator, so allocation costs are the daemon's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::hint::black_box;
use std::time::Instant;

use capture_daemon::redact::RedactionPolicy;
use capture_model::exchange::{
    Body, ConnMeta, Exchange, Header, Headers, HttpVersion, Protocol, Request, Response, Timing,
};

fn body(data: Vec<u8>) -> Body {
    Body {
        wire_size: data.len() as u64,
        data,
        ..Body::default()
    }
}

fn exchange(
    method: &str,
    content_type: Option<&str>,
    request: Vec<u8>,
    response: Vec<u8>,
) -> Exchange {
    let mut headers: Headers = vec![
        Header::new("Host", "orders.shop.svc:8080"),
        Header::new("User-Agent", "bench/1"),
        Header::new("Accept", "application/json"),
        Header::new("Authorization", "Bearer x"),
    ]
    .into();
    if let Some(ct) = content_type {
        headers.push("Content-Type", ct);
    }
    Exchange {
        protocol: Protocol::H1,
        request: Request {
            method: method.into(),
            target: "/api/v1/orders?page=2&sort=created".into(),
            version: HttpVersion::Http11,
            headers,
            headers_size: 200,
            body: body(request),
            trailers: Headers::new(),
        },
        response: Some(Response {
            status: 200,
            reason: "OK".into(),
            version: HttpVersion::Http11,
            headers: vec![
                Header::new("Content-Type", "application/json"),
                Header::new("Date", "Sun, 06 Dec 2026 18:00:00 GMT"),
            ]
            .into(),
            headers_size: 120,
            body: body(response),
            trailers: Headers::new(),
        }),
        timing: Timing {
            request_start_ns: 1,
            request_end_ns: 2,
            response_start_ns: Some(3),
            response_end_ns: Some(4),
        },
        conn: ConnMeta::default(),
        pid: 1,
        workload: Default::default(),
        incomplete: None,
        redacted: Vec::new(),
        routing_key: None,
        grpc: None,
        cgroup_id: 0,
    }
}

/// A JSON document of about `size` bytes of orders, with no credential field; each order
/// also has a member named `extra` (`""`: none).
fn orders(size: usize, extra: &str) -> Vec<u8> {
    let mut out = String::from("{\"orders\":[");
    let mut i = 0;
    while out.len() < size {
        if i > 0 {
            out.push(',');
        }
        if !extra.is_empty() {
            out.push_str(&format!("{{\"{extra}\":{i},"));
        } else {
            out.push('{');
        }
        out.push_str(&format!(
            "\"id\":{i},\"item\":\"book-{i}\",\"qty\":{},\"price\":12.5,\"customer\":{{\"name\":\"Ada Lovelace\",\"email\":\"ada@example.com\"}},\"tags\":[\"a\",\"b\"]}}",
            i % 7
        ));
        i += 1;
    }
    out.push_str("]}");
    out.into_bytes()
}

/// Median nanoseconds per `apply` (clone included) over `iterations`, of 5 runs.
fn measure(policy: &RedactionPolicy, ex: &Exchange, iterations: u32) -> f64 {
    let mut runs: Vec<f64> = (0..5)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..iterations {
                let mut e = ex.clone();
                policy.apply(black_box(&mut e));
                black_box(&e);
            }
            start.elapsed().as_nanos() as f64 / f64::from(iterations)
        })
        .collect();
    runs.sort_by(f64::total_cmp);
    runs[2]
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let scale = if quick { 1 } else { 10 };
    let with_body = RedactionPolicy::default();
    let without_body = RedactionPolicy::default().with_body_fields(&[], false);
    let login = br#"{"username":"alice@example.com","password":"correct horse battery staple","remember_me":true}"#;
    let token = br#"{"access_token":"eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl","token_type":"Bearer","expires_in":3600,"refresh_token":"8xLOxBtZp8","scope":"orders"}"#;
    let cases: Vec<(&str, Exchange, u32)> = vec![
        (
            "get_no_body",
            exchange("GET", None, Vec::new(), Vec::new()),
            20_000,
        ),
        (
            "json_1k_no_credential",
            exchange(
                "POST",
                Some("application/json"),
                orders(1024, ""),
                orders(1024, ""),
            ),
            10_000,
        ),
        (
            "json_login_and_token",
            exchange(
                "POST",
                Some("application/json"),
                login.to_vec(),
                token.to_vec(),
            ),
            10_000,
        ),
        (
            "form_login",
            exchange(
                "POST",
                Some("application/x-www-form-urlencoded"),
                b"username=alice%40example.com&password=correct+horse&csrf=abc123".to_vec(),
                b"{\"ok\":true}".to_vec(),
            ),
            10_000,
        ),
        (
            "json_64k_no_credential",
            exchange("GET", None, Vec::new(), orders(64 * 1024, "")),
            500,
        ),
        // `sort_key` holds `key`, a piece of `api_key`: the pre-check passes and the whole
        // body is scanned, to find nothing.
        (
            "json_64k_scanned_no_credential",
            exchange("GET", None, Vec::new(), orders(64 * 1024, "sort_key")),
            500,
        ),
    ];
    for (name, ex, iterations) in &cases {
        let iterations = iterations * scale / 10;
        let base = measure(&without_body, ex, iterations.max(1));
        let with = measure(&with_body, ex, iterations.max(1));
        println!("redact_{name}_ns {with:.0}");
        println!("redact_{name}_baseline_ns {base:.0}");
    }
    // The bodies were really redacted (a bench of a no-op measures nothing).
    let mut e = cases[2].1.clone();
    with_body.apply(&mut e);
    assert!(e.redacted.iter().any(|n| n == "body:password"));
    assert!(!e.request.body.data.windows(5).any(|w| w == b"horse"));
    let _ = std::str::from_utf8(&e.request.body.data).unwrap();
}
