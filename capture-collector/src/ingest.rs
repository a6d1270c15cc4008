//! The ingest path, one function for everything that arrives on `Ingest.Push`: the gRPC
//! handler (`server`) and the fuzz target (`capture-collector/fuzz`) both call [`ingest`] on
//! a decoded batch, so what the fuzzer exercises is what a daemon's push reaches.
//!
//! decode (tonic's prost codec, or [`decode`] here: the same `prost::Message::decode` under
//! the same size cap) → [`validate`] (the wire contract, `capture_model::wire::check`, and
//! the batch limits) → store (deduplicated, durable before it returns).

use capture_proto::v1::{Exchange, ExchangeBatch, PushAck};
use prost::Message as _;

use crate::{
    metrics::{Metrics, Rejection},
    org::OrgName,
    storage::{Storage, StorageError},
    store::Appended,
};

/// Longest `daemon_id` accepted (a DNS name: node names are).
pub const MAX_DAEMON_ID: usize = 253;
pub const MAX_INSTANCE_ID: usize = 128;

/// Why a batch was not stored.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// Larger than `--max-batch-bytes` (tonic refuses these before decoding, `OUT_OF_RANGE`).
    #[error("{len} bytes in one batch; this collector takes at most {max} (--max-batch-bytes)")]
    TooLarge { len: usize, max: usize },
    /// Not a protobuf `ExchangeBatch`.
    #[error("not an ExchangeBatch: {0}")]
    Decode(String),
    /// A batch or exchange the wire contract does not allow.
    #[error("{0}")]
    Malformed(String),
    #[error(
        "{count} exchanges in one batch; this collector takes at most {max} (--max-batch-exchanges)"
    )]
    TooManyExchanges { count: usize, max: usize },
    #[error("storing the batch: {0}")]
    Storage(StorageError),
}

impl IngestError {
    /// The metric reason it is counted under.
    pub fn rejection(&self) -> Rejection {
        match self {
            Self::TooLarge { .. } => Rejection::BatchTooLarge,
            Self::Decode(_) | Self::Malformed(_) => Rejection::Malformed,
            Self::TooManyExchanges { .. } => Rejection::TooManyExchanges,
            Self::Storage(_) => Rejection::Storage,
        }
    }
}

/// What a stored push gives back: the acknowledgement, and the exchanges to publish to
/// watchers (empty for a duplicate).
#[derive(Debug)]
pub struct Ingested {
    pub ack: PushAck,
    /// Bytes appended to storage (0 for a duplicate).
    pub bytes: u64,
    pub daemon_id: String,
    pub exchanges: Vec<Exchange>,
}

/// Decodes `bytes` as an `ExchangeBatch` under the `--max-batch-bytes` cap, as tonic's codec
/// does for the handler.
pub fn decode(bytes: &[u8], max_batch_bytes: usize) -> Result<ExchangeBatch, IngestError> {
    if bytes.len() > max_batch_bytes {
        return Err(IngestError::TooLarge {
            len: bytes.len(),
            max: max_batch_bytes,
        });
    }
    ExchangeBatch::decode(bytes).map_err(|e| IngestError::Decode(e.to_string()))
}

/// Checks a decoded batch against the wire contract and `max_exchanges`.
pub fn validate(batch: &ExchangeBatch, max_exchanges: usize) -> Result<(), IngestError> {
    let malformed = |m: String| Err(IngestError::Malformed(m));
    if batch.daemon_id.is_empty() || batch.daemon_id.len() > MAX_DAEMON_ID {
        return malformed(format!("daemon_id must be 1 to {MAX_DAEMON_ID} bytes"));
    }
    if batch.instance_id.is_empty() || batch.instance_id.len() > MAX_INSTANCE_ID {
        return malformed(format!("instance_id must be 1 to {MAX_INSTANCE_ID} bytes"));
    }
    if batch.sequence == 0 {
        return malformed("sequence starts at 1".into());
    }
    // PostgreSQL's bigint holds the sequence; no daemon gets near it.
    if i64::try_from(batch.sequence).is_err() {
        return malformed("sequence must be below 2^63".into());
    }
    if batch.exchanges.len() > max_exchanges {
        return Err(IngestError::TooManyExchanges {
            count: batch.exchanges.len(),
            max: max_exchanges,
        });
    }
    for (i, exchange) in batch.exchanges.iter().enumerate() {
        capture_model::wire::check(exchange)
            .map_err(|e| IngestError::Malformed(format!("exchange {i}: {e}")))?;
    }
    Ok(())
}

/// Validates `batch` and stores it for `org` (nothing is stored unless it validates); counts
/// what was stored or refused in `metrics`.
pub async fn ingest(
    store: &Storage,
    metrics: &Metrics,
    org: &OrgName,
    batch: ExchangeBatch,
    max_exchanges: usize,
) -> Result<Ingested, IngestError> {
    let result = store_checked(store, org, batch, max_exchanges).await;
    match &result {
        Ok(done) if done.ack.duplicate => Metrics::add(&metrics.batches_duplicate, 1),
        Ok(done) => {
            Metrics::add(&metrics.batches_stored, 1);
            Metrics::add(&metrics.exchanges_stored, u64::from(done.ack.stored));
        }
        Err(e) => metrics.rejected(e.rejection()),
    }
    result
}

async fn store_checked(
    store: &Storage,
    org: &OrgName,
    batch: ExchangeBatch,
    max_exchanges: usize,
) -> Result<Ingested, IngestError> {
    validate(&batch, max_exchanges)?;
    let encoded = batch.encode_to_vec();
    let sequence = batch.sequence;
    match store
        .push(org, &batch, encoded)
        .await
        .map_err(IngestError::Storage)?
    {
        Appended::Stored { bytes } => Ok(Ingested {
            ack: PushAck {
                sequence,
                duplicate: false,
                stored: u32::try_from(batch.exchanges.len()).unwrap_or(u32::MAX),
            },
            bytes,
            daemon_id: batch.daemon_id,
            exchanges: batch.exchanges,
        }),
        Appended::Duplicate => Ok(Ingested {
            ack: PushAck {
                sequence,
                duplicate: true,
                stored: 0,
            },
            bytes: 0,
            daemon_id: batch.daemon_id,
            exchanges: Vec::new(),
        }),
    }
}
