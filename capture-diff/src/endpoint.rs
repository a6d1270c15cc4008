//! Endpoints: what the noise statistics and the report are grouped by.
//!
//! An endpoint is (workload, protocol, method, route template). The template replaces path
//! segments that are identifiers (numbers, UUIDs, long hex, long base64url tokens) with `{id}`,
//! so `/users/42/orders` and `/users/7/orders` are one endpoint; a gRPC endpoint is its
//! `service/method`.

use std::fmt;

use capture_model::exchange::{Exchange, Protocol};
use serde::{Deserialize, Serialize};

/// (workload, protocol, method, route template).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Endpoint {
    /// `namespace/owner` (or `namespace/pod`) of the captured workload; empty when unknown
    /// (replayed traffic, captures outside Kubernetes).
    pub workload: String,
    /// `h1`, `h2` or `grpc`.
    pub protocol: String,
    pub method: String,
    /// The path with identifier segments as `{id}`, or `service/method` for gRPC.
    pub route: String,
}

impl Endpoint {
    /// The endpoint of an exchange.
    pub fn of(ex: &Exchange) -> Self {
        let w = &ex.workload;
        let workload = match (&w.namespace, &w.owner_name, &w.pod) {
            (Some(ns), Some(owner), _) => format!("{ns}/{owner}"),
            (Some(ns), None, Some(pod)) => format!("{ns}/{pod}"),
            (None, _, Some(pod)) => pod.clone(),
            _ => String::new(),
        };
        let route = match (&ex.grpc, ex.protocol) {
            (Some(grpc), _) => format!("{}/{}", grpc.service, grpc.method),
            (None, Protocol::Grpc) => path_of(&ex.request.target)
                .trim_start_matches('/')
                .to_owned(),
            (None, _) => route_template(path_of(&ex.request.target)),
        };
        Self {
            workload,
            protocol: ex.protocol.as_str().to_owned(),
            method: ex.request.method.clone(),
            route,
        }
    }

    /// The key of this endpoint in a [`crate::NoiseModel`] (its `Display` text).
    pub fn key(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.workload.is_empty() {
            write!(f, "{} ", self.workload)?;
        }
        write!(f, "{} {} {}", self.protocol, self.method, self.route)
    }
}

/// The path of a request target: without query and fragment, and without the scheme and
/// authority of an absolute-form target.
pub fn path_of(target: &str) -> &str {
    let without_query = target
        .split_once(['?', '#'])
        .map_or(target, |(path, _)| path);
    match without_query.find("://") {
        Some(i) => {
            let rest = &without_query[i + 3..];
            rest.find('/').map_or("/", |slash| &rest[slash..])
        }
        None => without_query,
    }
}

/// `path` with every identifier segment replaced by `{id}`.
pub fn route_template(path: &str) -> String {
    path.split('/')
        .map(|segment| {
            if is_identifier(segment) {
                "{id}"
            } else {
                segment
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// Numbers, UUIDs, hex of 16 digits or more, and base64url tokens of 22 characters or more that
/// mix digits, upper- and lowercase (a slug such as `best-practices-2024` is lowercase, so it
/// stays a route segment).
fn is_identifier(segment: &str) -> bool {
    if segment.is_empty() {
        return false;
    }
    let all = |f: fn(&u8) -> bool| segment.as_bytes().iter().all(f);
    if all(u8::is_ascii_digit) || is_uuid(segment) {
        return true;
    }
    if segment.len() >= 16 && all(u8::is_ascii_hexdigit) {
        return true;
    }
    let base64url = |b: &u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_');
    let any = |f: fn(&u8) -> bool| segment.as_bytes().iter().any(f);
    segment.len() >= 22
        && all(base64url)
        && any(u8::is_ascii_digit)
        && any(u8::is_ascii_uppercase)
        && any(u8::is_ascii_lowercase)
}

/// RFC 9562 text form: 8-4-4-4-12 hex digits.
fn is_uuid(segment: &str) -> bool {
    let groups: Vec<&str> = segment.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, len)| g.len() == len && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_templates() {
        let cases = [
            ("/users/42/orders", "/users/{id}/orders"),
            ("/users/0", "/users/{id}"),
            ("/o/3f2504e0-4f89-11d3-9a0c-0305e82c3301", "/o/{id}"),
            ("/o/3F2504E0-4F89-11D3-9A0C-0305E82C3301/x", "/o/{id}/x"),
            // 15 hex digits is a word-ish segment, 16 an identifier.
            ("/c/deadbeefcafe123", "/c/deadbeefcafe123"),
            ("/c/deadbeefcafe1234", "/c/{id}"),
            ("/t/aGVsbG8gd29ybGQgdGhpcyBp", "/t/{id}"),
            // Base64url needs 22 characters and digits, upper- and lowercase.
            ("/t/aGVsbG8gd29ybGQgdGhpc", "/t/aGVsbG8gd29ybGQgdGhpc"),
            (
                "/blog/best-practices-for-2024-releases",
                "/blog/best-practices-for-2024-releases",
            ),
            ("/v1/items", "/v1/items"),
            ("/", "/"),
            ("", ""),
            ("/a//b/", "/a//b/"),
        ];
        for (path, expected) in cases {
            assert_eq!(route_template(path), expected, "{path}");
        }
    }

    #[test]
    fn paths_of_targets() {
        assert_eq!(path_of("/a/b?x=1#f"), "/a/b");
        assert_eq!(path_of("http://h:80/a?x"), "/a");
        assert_eq!(path_of("http://h:80"), "/");
        assert_eq!(path_of("*"), "*");
    }

    #[test]
    fn endpoint_of_http_and_grpc() {
        let mut ex = capture_model::fixtures::representative_redacted();
        ex.request.target = "/api/orders/42?x=1".into();
        let e = Endpoint::of(&ex);
        assert_eq!(e.to_string(), "shop/checkout h1 POST /api/orders/{id}");
        ex.workload = Default::default();
        ex.grpc = Some(capture_model::exchange::Grpc {
            service: "shop.Orders".into(),
            method: "Get".into(),
            status: Some(0),
            message: None,
        });
        ex.protocol = Protocol::Grpc;
        assert_eq!(Endpoint::of(&ex).to_string(), "grpc POST shop.Orders/Get");
    }
}
