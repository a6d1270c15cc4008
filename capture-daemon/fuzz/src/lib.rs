//! The decoder modules of capture-daemon, compiled from their own source files so the fuzz
//! targets exercise exactly the shipped code without building the daemon (and its eBPF
//! programs). The modules only use `crate::exchange`, `crate::body` and (HTTP/2, for the
//! never-indexed allowlist) `crate::redact`, which are here too.
#![forbid(unsafe_code)]

#[path = "../../src/body.rs"]
pub mod body;
#[path = "../../src/exchange.rs"]
pub mod exchange;
#[path = "../../src/http1/mod.rs"]
pub mod http1;
#[path = "../../src/http2/mod.rs"]
pub mod http2;
#[path = "../../src/redact.rs"]
pub mod redact;
