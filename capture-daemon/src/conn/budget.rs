//! The memory of all connections together (`--max-buffered-bytes`). Each connection's own
//! holdings are bounded (bodies by `--max-body-bytes`, reordering by
//! `--max-conn-buffer-bytes`, HTTP/2 bodies by `--max-h2-conn-body-bytes`), but their sum
//! over `--max-connections` is not: a few thousand slow uploads would hold gigabytes. What
//! they hold is counted after every eighth of the budget captured (memory only grows with
//! captured bytes), and when it is over, the connections holding most drop their bodies
//! (cut where they are and flagged truncated, as at `--max-body-bytes`) and the bytes waiting
//! behind their holes (a gap), until a quarter of the budget is free. Heads, HPACK state and
//! framing stay, so every exchange is still written and decoding goes on in step.

use super::*;

impl ConnTable {
    /// Counts what the connections hold once `--max-buffered-bytes / 8` more bytes were
    /// captured, and sheds the largest holders when that is over the budget. Called after
    /// each batch of events.
    pub fn enforce_budget(&mut self, out: &mut Vec<Exchange>) {
        let budget = self.limits.max_buffered_bytes;
        if self.captured_since_count < budget / 8 {
            return;
        }
        self.captured_since_count = 0;
        let mut held: Vec<(usize, ConnId)> = self
            .conns
            .iter()
            .map(|(id, c)| (c.held_bytes(), *id))
            .filter(|(bytes, _)| *bytes > 0)
            .collect();
        let mut total = held.iter().map(|(b, _)| *b).fold(0, usize::saturating_add);
        if total > budget {
            held.sort_unstable_by_key(|&(bytes, _)| std::cmp::Reverse(bytes));
            let target = budget - budget / 4;
            for (bytes, id) in held {
                if total <= target {
                    break;
                }
                let freed = self.shed(id, out);
                if freed == 0 {
                    // Heads and framing only: nothing to drop.
                    continue;
                }
                tracing::debug!(conn = %id, held = bytes, freed, "over --max-buffered-bytes: bodies dropped");
                Metrics::add(&self.metrics.memory_sheds, 1);
                Metrics::add(&self.metrics.memory_shed_bytes, freed as u64);
                total = total.saturating_sub(freed);
            }
        }
        self.metrics
            .buffered_bytes
            .store(total as u64, std::sync::atomic::Ordering::Relaxed);
    }

    /// Drops what `id` holds that can go without losing step: the bytes waiting behind its
    /// holes (the hole and they become one gap) and its bodies. Returns the bytes freed.
    fn shed(&mut self, id: ConnId, out: &mut Vec<Exchange>) -> usize {
        let mut freed = 0usize;
        for dir in [Direction::Ingress, Direction::Egress] {
            freed = freed.saturating_add(self.drop_pending(id, dir, out));
        }
        let Some(conn) = self.conns.get_mut(&id) else {
            return freed;
        };
        let from_bodies = match &mut conn.proto {
            Proto::Http1 { decoder, .. } => decoder.shed_bodies(),
            Proto::Http2 { decoder, .. } => decoder.shed_bodies(),
            Proto::Http2Undecided { held, .. } => {
                // Bytes whose direction is not known yet cannot be cut in step: the
                // connection (older than the capture, already closed) is given up.
                let bytes = held.held_bytes();
                let Proto::Http2Undecided { held, .. } =
                    std::mem::replace(&mut conn.proto, Proto::Off)
                else {
                    return freed;
                };
                self.drop_undecided(id, &held);
                self.mute(id);
                bytes
            }
            Proto::Unknown | Proto::Off => 0,
        };
        freed.saturating_add(from_bodies)
    }

    /// Gives up the hole before `dir`'s waiting bytes and those bytes too: one gap up to the
    /// end of the last of them. Returns the bytes freed.
    fn drop_pending(&mut self, id: ConnId, dir: Direction, out: &mut Vec<Exchange>) -> usize {
        let Some(conn) = self.conns.get_mut(&id) else {
            return 0;
        };
        let stream = &mut conn.streams[dir.index()];
        let (Some(next), Some(end), Some(ts_ns)) = (
            stream.next_pos,
            stream.pending.iter().map(|(pos, p)| pos + p.len).max(),
            stream.pending.values().map(|p| p.ts_ns).max(),
        ) else {
            return 0;
        };
        let freed = std::mem::take(&mut stream.pending_bytes);
        stream.pending.clear();
        Metrics::add(&self.metrics.reorder_gaps, 1);
        if end > next {
            self.deliver(id, dir, end - next, &[], ts_ns, out);
        }
        freed
    }
}

impl Conn {
    /// Bytes this connection holds: waiting behind holes, and in its decoder.
    pub(super) fn held_bytes(&self) -> usize {
        let waiting = self.streams[0]
            .pending_bytes
            .saturating_add(self.streams[1].pending_bytes);
        let decoder = match &self.proto {
            Proto::Http1 { decoder, .. } => decoder.buffered_bytes(),
            Proto::Http2 { decoder, .. } => decoder.buffered_bytes(),
            Proto::Http2Undecided { held, .. } => held.held_bytes(),
            Proto::Unknown | Proto::Off => 0,
        };
        waiting.saturating_add(decoder)
    }
}
