//! The routing key a request carries, `_capture.routing_key`: it tells the control plane which
//! requests belong to a sandbox (they carry a key) and which are baseline traffic (none).
//!
//! The key `sd-routing-key` travels in the context-propagation headers of the tracing systems
//! in use, so it is looked for in each of them, in this order, and the first valid one wins:
//! 1. `baggage` (W3C Baggage): `key=value;property, key2=value2`, values percent-encoded;
//! 2. `tracestate` (W3C Trace Context §3.3): `key=value, key2=value2`, values not encoded;
//! 3. `uberctx-sd-routing-key` (Jaeger baggage), value percent-encoded;
//! 4. `ot-baggage-sd-routing-key` (OpenTracing baggage), value percent-encoded.
//!
//! Header names match without regard to case (HTTP/2 sends them lowercase); a header that
//! appears several times is read in every occurrence. A value that is empty, longer than
//! [`MAX_LEN`] bytes once decoded, or holds control characters is ignored.

use capture_model::exchange::Headers;

/// The baggage / tracestate entry that holds the routing key.
pub const KEY: &str = "sd-routing-key";
/// Longest routing key kept, in bytes (decoded).
pub const MAX_LEN: usize = 256;

/// The routing key of a request with these headers, if it carries one.
pub fn routing_key(headers: &Headers) -> Option<String> {
    let named = |name: &'static str| headers.values(name);
    named("baggage")
        .find_map(from_baggage)
        .or_else(|| named("tracestate").find_map(from_tracestate))
        .or_else(|| named("uberctx-sd-routing-key").find_map(decoded))
        .or_else(|| named("ot-baggage-sd-routing-key").find_map(decoded))
}

/// W3C Baggage: `list-member *( OWS "," OWS list-member )`, where
/// `list-member = key OWS "=" OWS value *( OWS ";" OWS property )` and the value is
/// percent-encoded.
fn from_baggage(value: &str) -> Option<String> {
    value.split(',').find_map(|member| {
        let entry = member.split(';').next()?;
        let (key, value) = entry.split_once('=')?;
        (key.trim() == KEY).then(|| decoded(value)).flatten()
    })
}

/// W3C Trace Context `tracestate`: `list-member *( OWS "," OWS list-member )` with
/// `list-member = key "=" value`; values are printable ASCII and are not encoded.
fn from_tracestate(value: &str) -> Option<String> {
    value.split(',').find_map(|member| {
        let (key, value) = member.split_once('=')?;
        (key.trim() == KEY).then(|| valid(value.trim())).flatten()
    })
}

/// The percent-decoded, trimmed value, when it is a usable key.
fn decoded(value: &str) -> Option<String> {
    let text = percent_encoding::percent_decode_str(value.trim())
        .decode_utf8()
        .ok()?;
    valid(text.trim())
}

fn valid(value: &str) -> Option<String> {
    (!value.is_empty() && value.len() <= MAX_LEN && !value.chars().any(char::is_control))
        .then(|| value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(headers: &[(&str, &str)]) -> Option<String> {
        let headers: Headers = headers.iter().copied().collect();
        routing_key(&headers)
    }

    #[test]
    fn baggage_forms() {
        assert_eq!(
            key(&[("baggage", "sd-routing-key=abc123")]).as_deref(),
            Some("abc123")
        );
        // Other members, optional whitespace, properties, percent-encoding (W3C Baggage examples).
        assert_eq!(
            key(&[(
                "Baggage",
                "userId=alice, sd-routing-key = k%20x%2C1 ;ttl=60;flag, other=v"
            )])
            .as_deref(),
            Some("k x,1")
        );
        // A second baggage header is read too.
        assert_eq!(
            key(&[("baggage", "a=b"), ("baggage", "sd-routing-key=second")]).as_deref(),
            Some("second")
        );
        // Keys match exactly: a longer or differently spelled key is another entry.
        assert_eq!(
            key(&[("baggage", "sd-routing-key-x=1,xsd-routing-key=2")]),
            None
        );
        assert_eq!(key(&[("baggage", "sd-routing-key")]), None);
        assert_eq!(key(&[("baggage", "sd-routing-key=")]), None);
        // Not UTF-8 once decoded, or control characters: ignored.
        assert_eq!(key(&[("baggage", "sd-routing-key=%FF")]), None);
        assert_eq!(key(&[("baggage", "sd-routing-key=a%0Ab")]), None);
    }

    #[test]
    fn tracestate_forms() {
        assert_eq!(
            key(&[(
                "tracestate",
                "rojo=00f067aa0ba902b7,sd-routing-key=r1,congo=t61rcWkgMzE"
            )])
            .as_deref(),
            Some("r1")
        );
        // tracestate values are not percent-decoded.
        assert_eq!(
            key(&[("TraceState", "sd-routing-key=a%20b")]).as_deref(),
            Some("a%20b")
        );
    }

    #[test]
    fn jaeger_and_opentracing_headers() {
        assert_eq!(
            key(&[("uberctx-sd-routing-key", "j%2Fk")]).as_deref(),
            Some("j/k")
        );
        assert_eq!(
            key(&[("Ot-Baggage-Sd-Routing-Key", " ot1 ")]).as_deref(),
            Some("ot1")
        );
    }

    #[test]
    fn precedence_and_absence() {
        let all = [
            ("ot-baggage-sd-routing-key", "ot"),
            ("uberctx-sd-routing-key", "uber"),
            ("tracestate", "sd-routing-key=ts"),
            ("baggage", "sd-routing-key=bag"),
        ];
        assert_eq!(key(&all).as_deref(), Some("bag"));
        assert_eq!(key(&all[..3]).as_deref(), Some("ts"));
        assert_eq!(key(&all[..2]).as_deref(), Some("uber"));
        assert_eq!(key(&all[..1]).as_deref(), Some("ot"));
        // An invalid earlier source does not hide a valid later one.
        assert_eq!(
            key(&[
                ("baggage", "sd-routing-key="),
                ("tracestate", "sd-routing-key=ts")
            ])
            .as_deref(),
            Some("ts")
        );
        assert_eq!(key(&[("content-type", "text/plain")]), None);
        assert_eq!(key(&[]), None);
    }

    #[test]
    fn overlong_keys_are_ignored() {
        let long = "k".repeat(MAX_LEN + 1);
        assert_eq!(key(&[("baggage", &format!("sd-routing-key={long}"))]), None);
        let max = "k".repeat(MAX_LEN);
        assert_eq!(
            key(&[("baggage", &format!("sd-routing-key={max}"))]).as_deref(),
            Some(max.as_str())
        );
    }
}
