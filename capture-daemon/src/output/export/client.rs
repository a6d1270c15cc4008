//! One `Ingest.Push` call: an encoded batch with the bearer token, compressed, bounded by the
//! request timeout; and what its status means for the batch.

use std::{
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use capture_proto::v1;
use tonic::{
    Code, GrpcMethod, Request, Status,
    codec::CompressionEncoding,
    codegen::http::uri::PathAndQuery,
    metadata::{Ascii, MetadataValue},
    transport::Channel,
};

use super::{batch::PushCodec, settings::Compression};

const PUSH_PATH: &str = "/capture.v1.Ingest/Push";

/// The collector's Ingest service over one (lazily connected, reconnecting) channel.
#[derive(Clone, Debug)]
pub struct Collector {
    grpc: tonic::client::Grpc<Channel>,
    /// With zstd: the same channel sending gzip, for a collector that does not take zstd
    /// (one older than zstd export answers UNIMPLEMENTED); `gzip_only` says it was needed.
    gzip: Option<tonic::client::Grpc<Channel>>,
    gzip_only: Arc<AtomicBool>,
    timeout: Duration,
}

impl Collector {
    pub fn new(channel: Channel, compression: Compression, timeout: Duration) -> Self {
        let plain = tonic::client::Grpc::new(channel);
        let (grpc, gzip) = match compression {
            Compression::Zstd => (
                plain.clone().send_compressed(CompressionEncoding::Zstd),
                Some(plain.send_compressed(CompressionEncoding::Gzip)),
            ),
            Compression::Gzip => (plain.send_compressed(CompressionEncoding::Gzip), None),
            Compression::None => (plain, None),
        };
        Self {
            grpc,
            gzip,
            gzip_only: Arc::new(AtomicBool::new(false)),
            timeout,
        }
    }

    /// Pushes one encoded batch. The future owns what it needs, so it can be held across
    /// other work and dropped to cancel the call.
    pub fn push(
        &self,
        batch: Bytes,
        authorization: Option<MetadataValue<Ascii>>,
    ) -> impl Future<Output = Result<v1::PushAck, Status>> + Send + 'static {
        let gzip_only = Arc::clone(&self.gzip_only);
        let (grpc, fallback) = match &self.gzip {
            Some(gzip) if gzip_only.load(Ordering::Relaxed) => (gzip.clone(), None),
            Some(gzip) => (self.grpc.clone(), Some(gzip.clone())),
            None => (self.grpc.clone(), None),
        };
        let timeout = self.timeout;
        async move {
            let result = Self::call(grpc, batch.clone(), authorization.clone(), timeout).await;
            match (result, fallback) {
                // A collector that does not decode zstd says so before it reads the batch.
                (Err(status), Some(gzip)) if status.code() == Code::Unimplemented => {
                    if !gzip_only.swap(true, Ordering::Relaxed) {
                        tracing::warn!(
                            status = %status.message(),
                            "the collector does not take zstd: pushes go gzip from now on \
                             (upgrade the collector, or --export-compression gzip)"
                        );
                    }
                    Self::call(gzip, batch, authorization, timeout).await
                }
                (result, _) => result,
            }
        }
    }

    async fn call(
        mut grpc: tonic::client::Grpc<Channel>,
        batch: Bytes,
        authorization: Option<MetadataValue<Ascii>>,
        timeout: Duration,
    ) -> Result<v1::PushAck, Status> {
        let mut request = Request::new(batch);
        // Tells the server how long the call may take (grpc-timeout).
        request.set_timeout(timeout);
        if let Some(value) = authorization {
            request.metadata_mut().insert("authorization", value);
        }
        request
            .extensions_mut()
            .insert(GrpcMethod::new("capture.v1.Ingest", "Push"));
        let call = async {
            grpc.ready()
                .await
                .map_err(|e| Status::unavailable(format!("collector not reachable: {e}")))?;
            grpc.unary(request, PathAndQuery::from_static(PUSH_PATH), PushCodec)
                .await
        };
        match tokio::time::timeout(timeout, call).await {
            Ok(result) => result.map(tonic::Response::into_inner),
            Err(_) => Err(Status::deadline_exceeded(format!(
                "no answer within {}",
                humantime::format_duration(timeout)
            ))),
        }
    }
}

/// What a push's status means for its batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Try again after a backoff: the collector may be down, restarting, overloaded.
    Transient,
    /// The token was refused: wait for a new one, do not hammer the collector.
    Auth,
    /// The collector will never take this batch: drop it and count it.
    Rejected,
    /// A status a working collector does not send (wrong server, misconfiguration): retried
    /// with backoff like a transient one, but logged as an error.
    Unexpected,
}

pub fn verdict(code: Code) -> Verdict {
    match code {
        Code::Unavailable
        | Code::DeadlineExceeded
        | Code::ResourceExhausted
        | Code::Aborted
        | Code::Internal
        | Code::Unknown
        | Code::Cancelled => Verdict::Transient,
        Code::Unauthenticated | Code::PermissionDenied => Verdict::Auth,
        // OUT_OF_RANGE is what a gRPC server answers to a message past its size limit.
        Code::InvalidArgument | Code::OutOfRange => Verdict::Rejected,
        _ => Verdict::Unexpected,
    }
}

/// Whether a status means the collector could not be reached (for the connected gauge).
pub fn is_disconnect(code: Code) -> bool {
    matches!(code, Code::Unavailable | Code::DeadlineExceeded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts() {
        assert_eq!(verdict(Code::Unavailable), Verdict::Transient);
        assert_eq!(verdict(Code::ResourceExhausted), Verdict::Transient);
        assert_eq!(verdict(Code::Unauthenticated), Verdict::Auth);
        assert_eq!(verdict(Code::PermissionDenied), Verdict::Auth);
        assert_eq!(verdict(Code::InvalidArgument), Verdict::Rejected);
        assert_eq!(verdict(Code::Unimplemented), Verdict::Unexpected);
    }
}
