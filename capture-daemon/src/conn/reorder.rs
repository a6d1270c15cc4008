//! Putting each direction's events back in byte order: events that arrive ahead of a hole wait
//! (bounded by `--max-conn-buffer-bytes`); a hole not filled within `REORDER_WAIT_NS` becomes a
//! counted gap, and what waited behind it is delivered.

use super::*;

/// How long a hole in a byte stream is waited for (events of one connection can reach the ring
/// buffer out of order when two threads use the socket at once) before it becomes a gap.
pub(super) const REORDER_WAIT_NS: u64 = 200_000_000;

impl ConnTable {
    #[expect(
        clippy::too_many_arguments,
        reason = "one event's fields, passed through"
    )]
    pub(super) fn on_data(
        &mut self,
        id: ConnId,
        dir: Direction,
        pos: u64,
        len: u64,
        payload: &[u8],
        ts_ns: u64,
        out: &mut Vec<Exchange>,
    ) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        conn.last_ts_ns = conn.last_ts_ns.max(ts_ns);
        if matches!(conn.proto, Proto::Off) {
            return;
        }
        let stream = &mut conn.streams[dir.index()];
        let next = *stream.next_pos.get_or_insert(pos);
        if pos < next {
            // Overlaps bytes already delivered (should not happen): keep only the new tail.
            let skip = next - pos;
            if skip >= len {
                return;
            }
            let cut = (skip as usize).min(payload.len());
            return self.on_data(id, dir, next, len - skip, &payload[cut..], ts_ns, out);
        }
        if pos > next && ts_ns <= self.loss_until_ns && stream.pending.is_empty() {
            // Behind events the kernel lost: the hole is a gap at once (see `kernel_lost`),
            // and this event is in order after it.
            Metrics::add(&self.metrics.loss_gaps, 1);
            self.deliver(id, dir, pos - next, &[], ts_ns, out);
        } else if pos > next {
            stream.pending_bytes += payload.len();
            stream.pending.insert(
                pos,
                Pending {
                    len,
                    data: payload.to_vec(),
                    ts_ns,
                },
            );
            if stream.pending_bytes > self.limits.max_conn_buffer_bytes {
                Metrics::add(&self.metrics.reorder_gaps, 1);
                self.metrics.evicted(Eviction::Memory);
                self.skip_to_pending(id, dir, out);
            }
            return;
        }
        self.deliver(id, dir, len, payload, ts_ns, out);
        self.drain_pending(id, dir, out);
    }

    /// Delivers in-order pending events after `next_pos` advanced.
    pub(super) fn drain_pending(&mut self, id: ConnId, dir: Direction, out: &mut Vec<Exchange>) {
        loop {
            let Some(conn) = self.conns.get_mut(&id) else {
                return;
            };
            let stream = &mut conn.streams[dir.index()];
            let Some(next) = stream.next_pos else {
                return;
            };
            let Some(entry) = stream.pending.first_entry() else {
                return;
            };
            if *entry.key() > next {
                return;
            }
            let (pos, p) = entry.remove_entry();
            stream.pending_bytes -= p.data.len();
            if pos + p.len <= next {
                continue;
            }
            let skip = (next - pos) as usize;
            let data = if skip < p.data.len() {
                &p.data[skip..]
            } else {
                &[][..]
            };
            self.deliver(id, dir, p.len - skip as u64, data, p.ts_ns, out);
        }
    }

    /// Gives up waiting for the hole before the first pending event: it becomes a gap.
    pub(super) fn skip_to_pending(&mut self, id: ConnId, dir: Direction, out: &mut Vec<Exchange>) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        let stream = &mut conn.streams[dir.index()];
        let (Some(next), Some((&first, p))) = (stream.next_pos, stream.pending.first_key_value())
        else {
            return;
        };
        let ts = p.ts_ns;
        if first > next {
            self.deliver(id, dir, first - next, &[], ts, out);
        }
        self.drain_pending(id, dir, out);
    }
}
