//! Batches: exchanges gathered into one `ExchangeBatch` push, closed by count, by bytes or by
//! age, whichever comes first, and numbered 1, 2, 3, ... within the daemon's run (instance).
//!
//! A batch is encoded once, as its exchanges arrive, and kept as protobuf bytes from then on:
//! in the queue, in the spool and on the wire. Each exchange is appended as field 4 of
//! `ExchangeBatch` and the identifying fields (1-3) are appended when the batch closes; a
//! protobuf parser accepts fields in any order, so the bytes decode as the same
//! `ExchangeBatch` as the canonical encoding (checked in the tests below). That keeps memory
//! compact (no model or message values are held), makes the queue's byte bound exact, and lets
//! a spooled batch go out without being decoded.

use std::{sync::Arc, time::Duration};

use bytes::{BufMut as _, Bytes};
use capture_model::wire;
use capture_proto::v1;
use prost::{
    Message as _,
    encoding::{WireType, encode_key, encode_varint},
};
use tokio::time::Instant;
use tonic::{
    Status,
    codec::{BufferSettings, Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
};

/// Field number of `ExchangeBatch.exchanges`.
const EXCHANGES_FIELD: u32 = 4;

/// Something that writes the bytes of one `capture.v1.Exchange` message: the exporter's
/// [`wire::Encoder`], which encodes straight from the borrowed model, or a built message.
pub trait ExchangeBytes {
    /// Bytes of the message, without a length delimiter.
    fn encoded_len(&self) -> usize;
    /// Appends exactly [`Self::encoded_len`] bytes.
    fn encode(&self, buf: &mut Vec<u8>);
}

impl ExchangeBytes for wire::Encoder<'_> {
    fn encoded_len(&self) -> usize {
        self.encoded_len()
    }

    fn encode(&self, buf: &mut Vec<u8>) {
        self.encode(buf);
    }
}

impl ExchangeBytes for v1::Exchange {
    fn encoded_len(&self) -> usize {
        prost::Message::encoded_len(self)
    }

    fn encode(&self, buf: &mut Vec<u8>) {
        // Writing to a Vec cannot run out of room.
        let _ = prost::Message::encode(self, buf);
    }
}

/// Which batch: the daemon run that formed it and its number within the run.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BatchId {
    pub instance_id: Arc<str>,
    pub sequence: u64,
}

impl std::fmt::Display for BatchId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.instance_id, self.sequence)
    }
}

/// A closed batch: an encoded `ExchangeBatch`.
#[derive(Clone, Debug)]
pub struct EncodedBatch {
    pub id: BatchId,
    /// Exchanges in it.
    pub exchanges: u32,
    pub bytes: Bytes,
}

impl EncodedBatch {
    pub fn len(&self) -> u64 {
        self.bytes.len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.exchanges == 0
    }
}

/// When a batch closes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchLimits {
    /// `--export-batch-max-exchanges`.
    pub max_exchanges: u32,
    /// `--export-batch-max-bytes`: encoded exchanges; a single larger exchange goes alone.
    pub max_bytes: usize,
    /// `--export-batch-max-delay`: the oldest exchange waits at most this long.
    pub max_delay: Duration,
}

impl Default for BatchLimits {
    fn default() -> Self {
        Self {
            max_exchanges: 512,
            max_bytes: 1024 * 1024,
            max_delay: Duration::from_secs(1),
        }
    }
}

/// Forms batches out of exchanges.
#[derive(Debug)]
pub struct Batcher {
    daemon_id: String,
    instance_id: Arc<str>,
    next_sequence: u64,
    limits: BatchLimits,
    buf: Vec<u8>,
    count: u32,
    /// When the open batch got its first exchange.
    opened: Option<Instant>,
}

impl Batcher {
    pub fn new(daemon_id: String, instance_id: Arc<str>, limits: BatchLimits) -> Self {
        Self {
            daemon_id,
            instance_id,
            next_sequence: 1,
            limits,
            buf: Vec::new(),
            count: 0,
            opened: None,
        }
    }

    pub fn instance_id(&self) -> &Arc<str> {
        &self.instance_id
    }

    /// Bytes of the open batch so far.
    pub fn pending_bytes(&self) -> u64 {
        self.buf.len() as u64
    }

    pub fn pending_exchanges(&self) -> u32 {
        self.count
    }

    /// When the open batch must close, if it has anything.
    pub fn deadline(&self) -> Option<Instant> {
        self.opened.map(|t| t + self.limits.max_delay)
    }

    /// Adds one exchange; batches it closes (none, one or two) go to `closed`.
    pub fn add(&mut self, ex: &impl ExchangeBytes, now: Instant, closed: &mut Vec<EncodedBatch>) {
        let len = ex.encoded_len();
        // Key (1 byte for field 4) + length varint + message.
        let framed = 1 + prost::length_delimiter_len(len) + len;
        if self.count > 0 && self.buf.len() + framed > self.limits.max_bytes {
            closed.extend(self.close());
        }
        if self.count == 0 {
            self.opened = Some(now);
        }
        self.buf.reserve(framed);
        encode_key(EXCHANGES_FIELD, WireType::LengthDelimited, &mut self.buf);
        encode_varint(len as u64, &mut self.buf);
        ex.encode(&mut self.buf);
        self.count += 1;
        if self.count >= self.limits.max_exchanges || self.buf.len() >= self.limits.max_bytes {
            closed.extend(self.close());
        }
    }

    /// Closes the open batch, if it has anything, and numbers it.
    pub fn close(&mut self) -> Option<EncodedBatch> {
        if self.count == 0 {
            return None;
        }
        let sequence = self.next_sequence;
        self.next_sequence += 1;
        let head = v1::ExchangeBatch {
            daemon_id: self.daemon_id.clone(),
            instance_id: self.instance_id.to_string(),
            sequence,
            exchanges: Vec::new(),
        };
        let mut buf = std::mem::take(&mut self.buf);
        buf.reserve_exact(head.encoded_len());
        let _ = head.encode(&mut buf);
        let exchanges = std::mem::take(&mut self.count);
        self.opened = None;
        Some(EncodedBatch {
            id: BatchId {
                instance_id: Arc::clone(&self.instance_id),
                sequence,
            },
            exchanges,
            bytes: Bytes::from(buf),
        })
    }
}

/// The `Ingest.Push` codec for batches that are already encoded: the request body is written
/// as it is, the `PushAck` is decoded with prost.
#[derive(Clone, Copy, Debug, Default)]
pub struct PushCodec;

#[derive(Clone, Copy, Debug, Default)]
pub struct EncodedBatchEncoder;

impl Encoder for EncodedBatchEncoder {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Codec for PushCodec {
    type Encode = Bytes;
    type Decode = v1::PushAck;
    type Encoder = EncodedBatchEncoder;
    type Decoder = AckDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        EncodedBatchEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        AckDecoder(tonic_prost::ProstDecoder::new(BufferSettings::default()))
    }
}

/// Decodes `PushAck` (prost's decoder, named so the codec type stays nameable).
#[derive(Debug)]
pub struct AckDecoder(tonic_prost::ProstDecoder<v1::PushAck>);

impl Decoder for AckDecoder {
    type Item = v1::PushAck;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<v1::PushAck>, Status> {
        self.0.decode(src)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exchange(n: u32, body: usize) -> v1::Exchange {
        v1::Exchange {
            protocol: v1::Protocol::H1 as i32,
            request: Some(v1::Request {
                method: "GET".into(),
                target: format!("/item/{n}"),
                body: Some(v1::Body {
                    data: vec![b'x'; body],
                    wire_size: body as u64,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            pid: n,
            ..Default::default()
        }
    }

    fn batcher(limits: BatchLimits) -> Batcher {
        Batcher::new("node-a".into(), Arc::from("0190abcd"), limits)
    }

    #[test]
    fn encoding_decodes_as_the_canonical_batch() {
        let mut b = batcher(BatchLimits::default());
        let mut closed = Vec::new();
        let exchanges: Vec<_> = (0..3).map(|n| exchange(n, 10)).collect();
        for ex in &exchanges {
            b.add(ex, Instant::now(), &mut closed);
        }
        assert!(closed.is_empty());
        let batch = b.close().unwrap();
        assert_eq!(batch.exchanges, 3);
        assert_eq!(batch.id.sequence, 1);
        let decoded = v1::ExchangeBatch::decode(batch.bytes.clone()).unwrap();
        let canonical = v1::ExchangeBatch {
            daemon_id: "node-a".into(),
            instance_id: "0190abcd".into(),
            sequence: 1,
            exchanges,
        };
        assert_eq!(decoded, canonical);
        // Same fields, other order: same length.
        assert_eq!(batch.bytes.len(), canonical.encoded_len());
        assert!(b.close().is_none());
    }

    #[test]
    fn closes_by_count_and_numbers_in_order() {
        let mut b = batcher(BatchLimits {
            max_exchanges: 2,
            ..BatchLimits::default()
        });
        let mut closed = Vec::new();
        for n in 0..5 {
            b.add(&exchange(n, 1), Instant::now(), &mut closed);
        }
        assert_eq!(closed.len(), 2);
        assert_eq!(
            closed.iter().map(|c| c.id.sequence).collect::<Vec<_>>(),
            [1, 2]
        );
        assert_eq!(b.pending_exchanges(), 1);
        assert_eq!(b.close().unwrap().id.sequence, 3);
    }

    #[test]
    fn closes_by_bytes_and_sends_an_oversized_exchange_alone() {
        let mut b = batcher(BatchLimits {
            max_bytes: 1000,
            ..BatchLimits::default()
        });
        let mut closed = Vec::new();
        b.add(&exchange(0, 400), Instant::now(), &mut closed);
        b.add(&exchange(1, 400), Instant::now(), &mut closed);
        assert!(closed.is_empty());
        // Would pass 1000: the open batch closes first.
        b.add(&exchange(2, 400), Instant::now(), &mut closed);
        assert_eq!(closed.len(), 1);
        assert_eq!(closed[0].exchanges, 2);
        // Bigger than a batch on its own: closes the open one, then goes alone.
        b.add(&exchange(3, 5000), Instant::now(), &mut closed);
        assert_eq!(
            closed.iter().map(|c| c.exchanges).collect::<Vec<_>>(),
            [2, 1, 1]
        );
        assert!(closed[2].bytes.len() > 5000);
        assert_eq!(b.pending_exchanges(), 0);
        assert!(b.deadline().is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn deadline_follows_the_first_exchange() {
        let mut b = batcher(BatchLimits {
            max_delay: Duration::from_millis(250),
            ..BatchLimits::default()
        });
        let mut closed = Vec::new();
        let t0 = Instant::now();
        b.add(&exchange(0, 1), t0, &mut closed);
        tokio::time::advance(Duration::from_millis(100)).await;
        b.add(&exchange(1, 1), Instant::now(), &mut closed);
        assert_eq!(b.deadline(), Some(t0 + Duration::from_millis(250)));
    }
}
