//! Never-indexed fields (RFC 7541 §6.2.3): the sender's hint that a field is sensitive. The
//! decoder drops them before the exchange exists, except the few that only describe the message.

/// Fields an HTTP/2 sender may mark never-indexed (RFC 7541 §6.2.3) that are kept anyway:
/// they describe the message, never a secret, and exchanges are hard to read without them.
const NEVER_INDEXED_KEPT: [&str; 9] = [
    "accept",
    "accept-encoding",
    "content-encoding",
    "content-length",
    "content-type",
    "grpc-encoding",
    "grpc-status",
    "te",
    "user-agent",
];

/// Whether a never-indexed HTTP/2 field (the sender's hint that it is sensitive) is kept.
/// Every other never-indexed field is dropped by the HTTP/2 decoder before the exchange exists
/// and listed in `_capture.redacted`; pseudo-headers are always kept (`:path` and
/// `:authority` are redacted like every request target). See docs/security-model.md.
pub fn keeps_never_indexed(name: &str) -> bool {
    NEVER_INDEXED_KEPT
        .iter()
        .any(|kept| kept.eq_ignore_ascii_case(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_indexed_allowlist() {
        for kept in [
            "content-type",
            "Content-Length",
            "grpc-status",
            "user-agent",
        ] {
            assert!(keeps_never_indexed(kept), "{kept}");
        }
        for dropped in ["authorization", "x-api-key", "cookie", "x-session", ""] {
            assert!(!keeps_never_indexed(dropped), "{dropped}");
        }
    }
}
