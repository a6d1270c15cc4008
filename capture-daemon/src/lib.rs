//! capture-daemon: captures the HTTP exchanges of opted-in workloads with eBPF.
//!
//! Data flows through the modules in this order:
//! `ebpf` (load, attach, target cgroups) -> `intake` (ring buffer events) -> `conn` (connection
//! table: byte positions, gaps, eviction; `procnet` names the sockets) -> `http1` or `http2`
//! (decoding, with `body` for content codings) -> `exchange` (the decoded value) -> `redact` ->
//! `har` -> `sink`, and beside it `export` (batches to a collector over gRPC+TLS, through
//! `wire`). `config` parses the command line and file once; `metrics` counts everything on the way.
//! What changes at run time reaches the pipeline through `control`: the target set (static, or
//! from `kubernetes`, the pod watcher) and the pause switch (`reload` re-reads the file);
//! `routing` reads the routing key of each request and `audit` logs every change.
#![deny(unsafe_code)]

pub mod audit;
pub mod config;
pub mod conn;
pub mod control;
pub mod ebpf;
pub mod export;
pub mod intake;
pub mod kubernetes;
pub mod metrics;
pub mod pipeline;
pub mod procnet;
pub mod redact;
pub mod reload;
pub mod routing;
pub mod sink;
pub mod targets;
