//! One `Ingest.Push` call: an encoded batch with the bearer token, compressed, bounded by the
//! request timeout; and what its status means for the batch.

use std::{
    future::Future,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll, ready},
    time::Duration,
};

use bytes::{Bytes, BytesMut};
use capture_proto::v1;
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use tonic::{
    Code, GrpcMethod, Request, Status,
    body::Body,
    codec::CompressionEncoding,
    codegen::http::{self, HeaderValue, uri::PathAndQuery},
    metadata::{Ascii, MetadataValue},
    transport::{Channel, channel::ResponseFuture},
};

use super::{batch::PushCodec, settings::Compression};

const PUSH_PATH: &str = "/capture.v1.Ingest/Push";

/// The collector's Ingest service over one (lazily connected, reconnecting) channel.
#[derive(Clone, Debug)]
pub struct Collector {
    grpc: Client,
    /// With zstd: the same channel sending gzip, for a collector that does not take zstd
    /// (one older than zstd export answers UNIMPLEMENTED); `gzip_only` says it was needed.
    gzip: Option<Client>,
    gzip_only: Arc<AtomicBool>,
    timeout: Duration,
}

/// A gRPC client of the channel and how it writes the batch.
#[derive(Clone, Debug)]
struct Client {
    grpc: tonic::client::Grpc<Transport>,
    codec: PushCodec,
}

impl Collector {
    pub fn new(channel: Channel, compression: Compression, timeout: Duration) -> Self {
        let plain = tonic::client::Grpc::new(Transport(channel));
        let gzip = || Client {
            grpc: plain.clone().send_compressed(CompressionEncoding::Gzip),
            codec: PushCodec::plain(),
        };
        let (grpc, gzip) = match compression {
            // Compressed by the codec, flagged by the transport (see `Transport`).
            Compression::Zstd => (
                Client {
                    grpc: plain.clone(),
                    codec: PushCodec::zstd(),
                },
                Some(gzip()),
            ),
            Compression::Gzip => (gzip(), None),
            Compression::None => (
                Client {
                    grpc: plain.clone(),
                    codec: PushCodec::plain(),
                },
                None,
            ),
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
        Client { mut grpc, codec }: Client,
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
        if codec.is_zstd() {
            request.extensions_mut().insert(SelfCompressed);
        }
        let call = async {
            grpc.ready()
                .await
                .map_err(|e| Status::unavailable(format!("collector not reachable: {e}")))?;
            grpc.unary(request, PathAndQuery::from_static(PUSH_PATH), codec)
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

/// Marks a request whose message the codec compressed itself (zstd).
#[derive(Clone, Copy, Debug)]
struct SelfCompressed;

/// The channel, and for a [`SelfCompressed`] request what tonic would have done had it
/// compressed the message: `grpc-encoding: zstd`, and the message's compressed flag set
/// (the first byte of the body: a unary call's body is one length-prefixed message).
#[derive(Clone, Debug)]
struct Transport(Channel);

impl tonic::codegen::Service<http::Request<Body>> for Transport {
    type Response = http::Response<Body>;
    type Error = tonic::transport::Error;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        if request
            .extensions_mut()
            .remove::<SelfCompressed>()
            .is_some()
        {
            request
                .headers_mut()
                .insert("grpc-encoding", HeaderValue::from_static("zstd"));
            request = request.map(|body| {
                Body::new(FlagCompressed {
                    inner: body,
                    flagged: false,
                })
            });
        }
        self.0.call(request)
    }
}

/// A request body whose first byte (the first message's compressed flag) is set to 1.
struct FlagCompressed {
    inner: Body,
    flagged: bool,
}

impl HttpBody for FlagCompressed {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let frame = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        if self.flagged {
            return Poll::Ready(frame);
        }
        Poll::Ready(frame.map(|frame| {
            frame.map(|frame| match frame.into_data() {
                Ok(data) if !data.is_empty() => {
                    self.flagged = true;
                    // tonic's frame shares its buffer with what it writes next, so this is one
                    // copy of the compressed message per push (not per exchange).
                    let mut data = BytesMut::from(&data[..]);
                    data[0] = 1;
                    Frame::data(data.freeze())
                }
                Ok(data) => Frame::data(data),
                Err(frame) => frame,
            })
        }))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
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
