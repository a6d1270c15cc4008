//! HTTP/2 joined mid-way on a connection whose role is not known: which end is the client.
//!
//! A connection first seen mid-way is named from `/proc`. When its socket is gone by then (a
//! short-lived connection closed before the daemon read its events), nothing outside the bytes
//! says which direction carries the requests, and a guess swaps requests and responses whenever
//! it is wrong. The frames say it (RFC 9113): a header block with `:method` or `:path` is a
//! request and one with `:status` a response (these names are in HPACK's static table, so they
//! decode with an unknown dynamic table); PUSH_PROMISE, and HEADERS on an even stream, come from
//! the server. SETTINGS, PING or WINDOW_UPDATE say nothing, and neither do bodies.
//!
//! [`Undecided`] holds the bytes of both directions in arrival order while a probe (an
//! [`Http2Conn`] that tracks no streams) reads them for such a sign; once one is seen, the held
//! bytes are decoded from the start with the sides known. What is held is bounded: past the
//! bound it is dropped (and the decoder later starts by looking for frame headers on both
//! sides), and a connection that ends before a sign is seen yields nothing rather than
//! exchanges whose request and response may be swapped.

use super::{Http2Conn, Http2Limits, Http2Output};
use crate::http1::Side;

/// Which end of the connection sent a direction's frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sender {
    Client,
    Server,
}

impl Sender {
    fn other(self) -> Self {
        match self {
            Self::Client => Self::Server,
            Self::Server => Self::Client,
        }
    }
}

/// Bytes of one transfer, held until the sides are known.
struct Held {
    /// In the direction seen first (else the other one).
    first: bool,
    data: Vec<u8>,
    /// Bytes lost right after `data`.
    lost: u64,
    ts_ns: u64,
}

/// An HTTP/2 connection joined mid-way whose sides are not known yet. See the module docs.
///
/// Its `Debug` shows sizes only: the held bytes are captured traffic.
pub struct Undecided {
    probe: Http2Conn,
    held: Vec<Held>,
    held_bytes: usize,
    /// Held bytes were dropped at the bound: the decoder starts out of frame sync.
    dropped: bool,
}

impl std::fmt::Debug for Undecided {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Undecided")
            .field("held", &self.held.len())
            .field("held_bytes", &self.held_bytes)
            .field("dropped", &self.dropped)
            .field("sender", &self.probe.sender())
            .finish()
    }
}

impl Undecided {
    /// The direction seen first is the one whose next byte starts a frame (it was detected by
    /// [`super::frame::looks_like_frames`]); the other looks for a frame header.
    pub fn new(limits: Http2Limits) -> Self {
        Self {
            probe: Http2Conn::probe(limits),
            held: Vec::new(),
            held_bytes: 0,
            dropped: false,
        }
    }

    /// `data`, then `lost` bytes that were not captured, crossed the socket in the direction
    /// seen first (`first`) or the other. Held until the sides are known, at most `max_held`
    /// bytes: past that, what is held is dropped. Returns the number of bytes dropped.
    pub fn on_data(
        &mut self,
        first: bool,
        data: &[u8],
        lost: u64,
        ts_ns: u64,
        max_held: usize,
    ) -> usize {
        let side = if first { Side::Request } else { Side::Response };
        // The probe emits nothing; its parse errors are counted when the decoder meets them.
        let mut ignored = Vec::new();
        if !data.is_empty() {
            self.probe.on_data(side, data, ts_ns, &mut ignored);
        }
        if lost > 0 {
            self.probe.on_gap(side, lost, ts_ns, &mut ignored);
        }
        self.held_bytes += data.len();
        self.held.push(Held {
            first,
            data: data.to_vec(),
            lost,
            ts_ns,
        });
        if self.first_sender().is_some() || self.held_bytes <= max_held {
            return 0;
        }
        let dropped = self.held_bytes;
        self.held = Vec::new();
        self.held_bytes = 0;
        self.dropped = true;
        dropped
    }

    /// Which end sent the frames of the direction seen first, once known.
    pub fn first_sender(&self) -> Option<Sender> {
        let (half, sender) = self.probe.sender()?;
        Some(if half == 0 { sender } else { sender.other() })
    }

    /// Bytes held now.
    pub fn held_bytes(&self) -> usize {
        self.held_bytes
    }

    /// The sides are known (`first_sender` sent the frames of the direction seen first): the
    /// decoder, fed what was held; what it produced is appended to `out`.
    pub fn decode(self, first_sender: Sender, out: &mut Vec<Http2Output>) -> Http2Conn {
        let first_side = match first_sender {
            Sender::Client => Side::Request,
            Sender::Server => Side::Response,
        };
        let other_side = match first_side {
            Side::Request => Side::Response,
            Side::Response => Side::Request,
        };
        let limits = self.probe.limits.clone();
        let mut conn = if self.dropped {
            Http2Conn::mid_stream_resync(limits)
        } else {
            Http2Conn::mid_stream(limits, first_side)
        };
        for h in self.held {
            let side = if h.first { first_side } else { other_side };
            if !h.data.is_empty() {
                conn.on_data(side, &h.data, h.ts_ns, out);
            }
            if h.lost > 0 {
                conn.on_gap(side, h.lost, h.ts_ns, out);
            }
        }
        conn
    }
}
