//! capture-model: what a capture is, independent of how it was captured.
//!
//! [`exchange`] is the decoded request/response pair (its fields in [`headers`]) that the daemon's decoders produce and its
//! redaction rewrites; [`har`] renders it as a HAR 1.2 entry (the JSONL output and the
//! collector's export) and [`har_read`] reads such entries back (replay and diff); [`wire`] converts it to and from the `capture.v1` protobuf form that
//! travels from the daemon to the collector; [`clock`] turns the kernel's monotonic timestamps
//! into wall-clock time. No eBPF, Kubernetes or async runtime here: the collector and the
//! `capture` CLI depend on this crate, never on the daemon.
// Unsafe only to call the escaper's SSSE3 loop once the CPU is known to have it (`json`).
#![deny(unsafe_code)]

pub mod clock;
pub mod exchange;
#[cfg(any(test, feature = "fixtures"))]
pub mod fixtures;
pub mod har;
pub mod har_read;
pub mod headers;
mod json;
pub mod uri;
pub mod wire;
