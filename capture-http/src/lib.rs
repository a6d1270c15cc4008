//! capture-http: the passive HTTP decoders, bytes in and exchanges out.
//!
//! [`http1`] decodes HTTP/1.x (both sides of a connection, pipelining, chunked, resynchronising
//! after gaps; `http1::sniff` tells a start line from noise) and [`http2`] decodes HTTP/2
//! frames and HPACK (gRPC included, joined mid-way or from the preface). Both hand bodies to
//! [`body`], which removes content codings within a size cap. Everything here is pure: no I/O,
//! clocks, metrics or redaction; the caller passes kernel timestamps and counts what the
//! decoders report. That is what lets every input be tested at every split point and fuzzed
//! (`capture-http/fuzz`). The output is [`capture_model::exchange::Exchange`].
#![forbid(unsafe_code)]

pub mod body;
pub mod http1;
pub mod http2;

pub use capture_model::exchange;
