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

/// A `capture.v1.Exchange` message already encoded (by the pipeline, see `super::Offered`),
/// copied into the batch: one memcpy of the message, cheaper than freeing the exchange's parts
/// on this thread was (measured in docs/benchmarks.md, session 24).
pub struct Encoded<'a>(pub &'a [u8]);

impl ExchangeBytes for Encoded<'_> {
    fn encoded_len(&self) -> usize {
        self.0.len()
    }

    fn encode(&self, buf: &mut Vec<u8>) {
        buf.extend_from_slice(self.0);
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
    /// Room reserved for a new batch: about the size of the last one. A batch grown by doubling
    /// from nothing took fresh pages (zeroed by the kernel) and copies at every step, a third
    /// of the exporter thread's time in the export bench.
    expected_bytes: usize,
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
            expected_bytes: 0,
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
            self.buf.reserve(self.expected_bytes.max(framed));
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
        let head_len = head.encoded_len();
        buf.reserve_exact(head_len);
        let _ = head.encode(&mut buf);
        // The queue counts a batch by its bytes: room left over when traffic fell (a batch
        // closed by its delay, smaller than the one before) is not kept with it.
        if buf.capacity() - buf.len() > buf.len() / 4 {
            buf.shrink_to_fit();
        }
        // An eighth more than this one, for batches closed by count whose exchanges vary.
        self.expected_bytes = (buf.len() + buf.len() / 8).min(self.limits.max_bytes + head_len);
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
/// as it is, or zstd-compressed here (see [`PushCodec::zstd`]); the `PushAck` is decoded with
/// prost.
#[derive(Clone, Copy, Debug, Default)]
pub struct PushCodec {
    zstd: bool,
}

impl PushCodec {
    /// Writes the batch as it is (tonic compresses it, if the client was told to).
    pub fn plain() -> Self {
        Self { zstd: false }
    }

    /// Writes the batch zstd-compressed with this thread's reused context. tonic's own zstd
    /// makes a new context (and its tables, a few MiB of fresh pages) for every message, which
    /// was a third of what compression cost the exporter. The message must then be sent
    /// flagged compressed with `grpc-encoding: zstd` (`client::Transport` does it).
    pub fn zstd() -> Self {
        Self { zstd: true }
    }

    pub fn is_zstd(&self) -> bool {
        self.zstd
    }
}

#[derive(Clone, Copy, Debug, Default)]
pub struct EncodedBatchEncoder {
    zstd: bool,
}

/// zstd's level for pushes: its default, as tonic's was.
const ZSTD_LEVEL: i32 = zstd::DEFAULT_COMPRESSION_LEVEL;

thread_local! {
    /// Per thread that encodes pushes: one compression context and one output buffer, kept
    /// between pushes.
    static ZSTD: std::cell::RefCell<Option<(zstd::bulk::Compressor<'static>, Vec<u8>)>> =
        const { std::cell::RefCell::new(None) };
}

/// `batch` as one zstd frame (its size in the frame header), appended to `out`.
pub fn zstd_compress(batch: &[u8], out: &mut impl bytes::BufMut) -> std::io::Result<()> {
    ZSTD.with_borrow_mut(|slot| {
        let (compressor, frame) = match slot {
            Some(kept) => kept,
            None => slot.insert((zstd::bulk::Compressor::new(ZSTD_LEVEL)?, Vec::new())),
        };
        frame.clear();
        frame.reserve(zstd::zstd_safe::compress_bound(batch.len()));
        compressor.compress_to_buffer(batch, frame)?;
        out.put_slice(frame);
        Ok(())
    })
}

impl Encoder for EncodedBatchEncoder {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        if self.zstd {
            zstd_compress(&item, dst)
                .map_err(|e| Status::internal(format!("zstd compression failed: {e}")))
        } else {
            dst.put(item);
            Ok(())
        }
    }
}

impl Codec for PushCodec {
    type Encode = Bytes;
    type Decode = v1::PushAck;
    type Encoder = EncodedBatchEncoder;
    type Decoder = AckDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        EncodedBatchEncoder { zstd: self.zstd }
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

    /// The reused context writes whole frames that stand alone: each decodes to its own batch,
    /// says its size, and nothing of an earlier (larger) batch leaks into a later one.
    #[test]
    fn zstd_frames_from_the_reused_context_decode_alone() {
        let mut b = batcher(BatchLimits::default());
        let mut closed = Vec::new();
        for (n, body) in [(0, 20_000), (1, 10), (2, 3000)] {
            b.add(&exchange(n, body), Instant::now(), &mut closed);
            closed.extend(b.close());
        }
        let mut frames = Vec::new();
        for batch in &closed {
            let mut frame = bytes::BytesMut::new();
            zstd_compress(&batch.bytes, &mut frame).unwrap();
            frames.push(frame);
        }
        for (batch, frame) in closed.iter().zip(&frames) {
            assert_eq!(
                zstd::zstd_safe::get_frame_content_size(frame).ok(),
                Some(Some(batch.bytes.len() as u64))
            );
            let plain = zstd::stream::decode_all(&frame[..]).unwrap();
            assert_eq!(plain, batch.bytes);
            v1::ExchangeBatch::decode(&plain[..]).unwrap();
        }
    }

    /// A batch after the first gets the room of the one before up front: its exchanges are
    /// written without the buffer moving. After a smaller batch, the room shrinks with it.
    #[test]
    fn batches_reserve_the_room_of_the_last_one() {
        let mut b = batcher(BatchLimits {
            max_exchanges: 8,
            ..BatchLimits::default()
        });
        let mut closed = Vec::new();
        for n in 0..8 {
            b.add(&exchange(n, 10_000), Instant::now(), &mut closed);
        }
        assert_eq!(closed.len(), 1);
        let first = closed[0].bytes.len();
        b.add(&exchange(8, 10_000), Instant::now(), &mut closed);
        assert!(b.buf.capacity() >= first, "{} < {first}", b.buf.capacity());
        let at = b.buf.as_ptr();
        for n in 9..16 {
            b.add(&exchange(n, 10_000), Instant::now(), &mut closed);
            if n < 15 {
                assert_eq!(b.buf.as_ptr(), at, "moved at exchange {n}");
            }
        }
        assert_eq!(closed.len(), 2);
        b.add(&exchange(16, 10), Instant::now(), &mut closed);
        closed.extend(b.close());
        assert!(b.expected_bytes < 1000, "{}", b.expected_bytes);
    }
}
