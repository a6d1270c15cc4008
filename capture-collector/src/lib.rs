//! capture-collector: the reference ingest side of the control plane.
//!
//! Daemons push batches of exchanges over gRPC on rustls TLS (`server`), authenticated by
//! bearer tokens that each name one organisation (`tokens`, names in `org`). Each batch is
//! stored once, durably, in the organisation's append-only segments (`store`), sealed when a
//! key is given (`seal`), then streamed to the organisation's watchers. `export` turns an
//! organisation's store into a HAR file and `watch_client` follows the live stream on a
//! terminal, both rendering entries with the daemon's own HAR code. `tls` loads or generates
//! the server certificate; `metrics` counts what was stored, refused and streamed.
//!
//! `storage` is the one interface over the two stores (`store`'s segment files, or
//! PostgreSQL); `diff` runs the Smart Diff engine over stored traffic with per-organisation
//! noise models kept in the store.
#![forbid(unsafe_code)]

pub mod diff;
pub mod export;
pub mod guard;
pub mod ingest;
pub mod metrics;
pub mod org;
pub mod seal;
pub mod server;
pub mod storage;
pub mod store;
pub mod tls;
pub mod tokens;
pub mod watch_client;
