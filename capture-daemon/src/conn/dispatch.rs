//! Delivering a direction's bytes, in order, to the connection's decoder: recognising the
//! protocol from the first bytes (HTTP/1 start lines, the HTTP/2 preface or frames, or not
//! HTTP), choosing the HTTP/2 decoder for a connection joined mid-way, feeding the decoder
//! (with the gap, if bytes were lost), following an `Upgrade: h2c`, and handing the
//! exchanges on with the connection's metadata.

use super::*;

/// Bytes of traffic looked at without finding an HTTP/1 message start before a connection is
/// declared not HTTP and switched off in the kernel.
pub(super) const SNIFF_LIMIT: u64 = 64 * 1024;

impl ConnTable {
    /// Feeds `len` in-order bytes, of which `payload` (a prefix) was captured: advances the
    /// position, recognises the protocol on the first bytes, names the connection if it was
    /// first seen mid-stream, then hands the bytes to the decoder.
    pub(super) fn deliver(
        &mut self,
        id: ConnId,
        dir: Direction,
        len: u64,
        payload: &[u8],
        ts_ns: u64,
        out: &mut Vec<Exchange>,
    ) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        conn.streams[dir.index()].next_pos =
            Some(conn.streams[dir.index()].next_pos.unwrap_or(0) + len);
        let missing = len.saturating_sub(payload.len() as u64);
        if missing > 0 {
            Metrics::add(&self.metrics.gap_bytes, missing);
        }
        // Mid-stream HTTP/2: which side is the client is only known once the fd is named.
        let mut h2_mid_stream = false;
        if let Proto::Unknown = conn.proto {
            match self.detect(id, dir, len, payload) {
                Detected::Protocol => {}
                Detected::H2MidStream => h2_mid_stream = true,
                Detected::NotYet => return,
            }
        }
        if self.conns.get(&id).is_some_and(|c| c.unnamed) && !self.name(id) {
            return;
        }
        if h2_mid_stream {
            self.start_h2_mid_stream(id, dir);
        }
        self.feed(id, dir, payload, missing, ts_ns, out);
    }

    /// Recognises the protocol from a transfer's first bytes and sets the decoder; mutes the
    /// connection when it is not HTTP.
    fn detect(&mut self, id: ConnId, dir: Direction, len: u64, payload: &[u8]) -> Detected {
        let Some(conn) = self.conns.get_mut(&id) else {
            return Detected::NotYet;
        };
        if payload.is_empty() {
            return Detected::NotYet;
        }
        match sniff(payload) {
            Sniff::Request => {
                conn.proto = Proto::Http1 {
                    decoder: Box::new(Http1Conn::new(self.limits.http1.clone())),
                    request_dir: dir,
                }
            }
            Sniff::Response => {
                conn.proto = Proto::Http1 {
                    decoder: Box::new(Http1Conn::new(self.limits.http1.clone())),
                    request_dir: opposite(dir),
                }
            }
            Sniff::H2Preface => {
                // RFC 9113 §3.4: the client sends the preface.
                Metrics::add(&self.metrics.h2_connections_preface, 1);
                conn.proto = Proto::Http2 {
                    decoder: Box::new(Http2Conn::new(self.limits.http2.clone())),
                    request_dir: dir,
                }
            }
            Sniff::H2Frames => return Detected::H2MidStream,
            Sniff::NotHttp => {
                conn.proto = Proto::Off;
                Metrics::add(&self.metrics.connections_not_http, 1);
                self.mute(id);
                return Detected::NotYet;
            }
            Sniff::Unknown => {
                conn.sniffed += len;
                if conn.sniffed > SNIFF_LIMIT {
                    conn.proto = Proto::Off;
                    Metrics::add(&self.metrics.connections_not_http, 1);
                    self.mute(id);
                }
                return Detected::NotYet;
            }
        }
        Detected::Protocol
    }

    /// Chooses the HTTP/2 decoder for a connection whose start was not seen, now that it is
    /// named (or known to be unnameable).
    fn start_h2_mid_stream(&mut self, id: ConnId, dir: Direction) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        let limits = self.limits.http2.clone();
        conn.proto = match conn.meta.role {
            // The server's traffic comes in on a server's socket.
            Some(role) => {
                let request_dir = match role {
                    Role::Client => Direction::Egress,
                    Role::Server => Direction::Ingress,
                };
                let side = side_of(dir, request_dir);
                let decoder = if conn.seen_open && side == Side::Response {
                    // A fresh connection whose server sent its SETTINGS before the client's
                    // preface was captured (servers may write first): decoded from its
                    // start.
                    Metrics::add(&self.metrics.h2_connections_preface, 1);
                    Http2Conn::new(limits)
                } else {
                    Metrics::add(&self.metrics.h2_connections_mid_stream, 1);
                    Http2Conn::mid_stream(limits, side)
                };
                Proto::Http2 {
                    decoder: Box::new(decoder),
                    request_dir,
                }
            }
            // The fd was gone before it could be named: which end is the client is not
            // guessed (a wrong guess swaps requests and responses), it is read from the
            // frames.
            None => {
                Metrics::add(&self.metrics.h2_connections_mid_stream, 1);
                Proto::Http2Undecided {
                    held: Box::new(Undecided::new(limits)),
                    first_dir: dir,
                }
            }
        };
    }

    /// Hands the bytes (and the count of bytes lost after them) to the connection's decoder
    /// and moves what it decoded on.
    fn feed(
        &mut self,
        id: ConnId,
        dir: Direction,
        payload: &[u8],
        missing: u64,
        ts_ns: u64,
        out: &mut Vec<Exchange>,
    ) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        match &mut conn.proto {
            Proto::Http1 {
                decoder,
                request_dir,
            } => {
                let side = side_of(dir, *request_dir);
                let request_dir = *request_dir;
                let mut outputs = std::mem::take(&mut self.scratch);
                if !payload.is_empty() {
                    decoder.on_data(side, payload, ts_ns, &mut outputs);
                }
                if missing > 0 {
                    decoder.on_gap(side, missing, ts_ns, &mut outputs);
                }
                let upgraded = decoder.is_upgraded();
                let h2c = if upgraded {
                    take_h2c_upgrade(&mut outputs)
                } else {
                    None
                };
                if upgraded
                    && h2c.is_none()
                    && let Some(conn) = self.conns.get_mut(&id)
                {
                    conn.proto = Proto::Off;
                }
                self.emit(id, &mut outputs, out);
                self.scratch = outputs;
                match h2c {
                    Some(ex) => self.switch_to_h2c(id, request_dir, ex, ts_ns, out),
                    None if upgraded => {
                        // What follows (WebSocket, CONNECT tunnels) is not HTTP: stop the
                        // kernel sending it.
                        self.mute(id);
                    }
                    None => {}
                }
            }
            Proto::Http2 {
                decoder,
                request_dir,
            } => {
                let side = side_of(dir, *request_dir);
                let mut outputs = std::mem::take(&mut self.scratch_h2);
                if !payload.is_empty() {
                    decoder.on_data(side, payload, ts_ns, &mut outputs);
                }
                if missing > 0 {
                    decoder.on_gap(side, missing, ts_ns, &mut outputs);
                }
                self.emit_h2(id, &mut outputs, out);
                self.scratch_h2 = outputs;
            }
            Proto::Http2Undecided { held, first_dir } => {
                let first_dir = *first_dir;
                let dropped = held.on_data(
                    dir == first_dir,
                    payload,
                    missing,
                    ts_ns,
                    self.limits.max_conn_buffer_bytes,
                );
                if dropped > 0 {
                    Metrics::add(&self.metrics.h2_undecided_bytes_dropped, dropped as u64);
                }
                let Some(first_sender) = held.first_sender() else {
                    return;
                };
                let Proto::Http2Undecided { held, .. } =
                    std::mem::replace(&mut conn.proto, Proto::Off)
                else {
                    return;
                };
                let request_dir = match first_sender {
                    Sender::Client => first_dir,
                    Sender::Server => opposite(first_dir),
                };
                tracing::debug!(conn = %id, ?request_dir, "HTTP/2 sides read from the frames");
                let mut outputs = std::mem::take(&mut self.scratch_h2);
                let decoder = held.decode(first_sender, &mut outputs);
                conn.proto = Proto::Http2 {
                    decoder: Box::new(decoder),
                    request_dir,
                };
                self.emit_h2(id, &mut outputs, out);
                self.scratch_h2 = outputs;
            }
            Proto::Unknown | Proto::Off => {}
        }
    }

    /// After an accepted `Upgrade: h2c` (RFC 7540 §3.2) the connection goes on as HTTP/2,
    /// with the upgrade request as stream 1, fed the bytes that followed the switch.
    pub(super) fn switch_to_h2c(
        &mut self,
        id: ConnId,
        request_dir: Direction,
        upgrade: Exchange,
        ts_ns: u64,
        out: &mut Vec<Exchange>,
    ) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        let Proto::Http1 { decoder, .. } = &mut conn.proto else {
            return;
        };
        let leftover = [
            decoder.take_upgrade_leftover(Side::Request),
            decoder.take_upgrade_leftover(Side::Response),
        ];
        let settings = http2::upgrade_settings(&upgrade.request);
        let mut h2 = Http2Conn::upgraded(
            self.limits.http2.clone(),
            upgrade.request,
            upgrade.timing.request_start_ns,
            upgrade.timing.request_end_ns,
            settings.as_deref(),
        );
        let mut h2_out = std::mem::take(&mut self.scratch_h2);
        // The server's frames follow its 101 at once; the client's preface comes after it.
        h2.on_data(Side::Response, &leftover[1], ts_ns, &mut h2_out);
        h2.on_data(Side::Request, &leftover[0], ts_ns, &mut h2_out);
        conn.proto = Proto::Http2 {
            decoder: Box::new(h2),
            request_dir,
        };
        Metrics::add(&self.metrics.h2_connections_upgrade, 1);
        self.emit_h2(id, &mut h2_out, out);
        self.scratch_h2 = h2_out;
    }

    /// Turns decoder outputs into exchanges carrying this connection's metadata.
    pub(super) fn emit(&self, id: ConnId, outputs: &mut Vec<Http1Output>, out: &mut Vec<Exchange>) {
        for o in outputs.drain(..) {
            match o {
                Http1Output::Exchange(ex) => self.deliver_exchange(id, ex, out),
                Http1Output::Error(reason) => self.metrics.parse_error(reason),
                Http1Output::Upgraded { .. } => {}
            }
        }
    }

    /// [`emit`](Self::emit) for the HTTP/2 decoder.
    pub(super) fn emit_h2(
        &self,
        id: ConnId,
        outputs: &mut Vec<Http2Output>,
        out: &mut Vec<Exchange>,
    ) {
        for o in outputs.drain(..) {
            match o {
                Http2Output::Exchange(ex) => self.deliver_exchange(id, ex, out),
                Http2Output::Error(reason) => self.metrics.h2_parse_error(reason),
                Http2Output::Limit(limit) => self.metrics.h2_limit(limit),
            }
        }
    }

    /// Stamps an exchange with this connection's metadata, counts it, and hands it on.
    pub(super) fn deliver_exchange(&self, id: ConnId, mut ex: Exchange, out: &mut Vec<Exchange>) {
        let (meta, cgroup_id) = self
            .conns
            .get(&id)
            .map(|c| (c.meta.clone(), c.cgroup_id))
            .unwrap_or_else(|| {
                let meta = ConnMeta {
                    id: id.to_string().into(),
                    ..ConnMeta::default()
                };
                (meta, 0)
            });
        ex.conn = meta;
        ex.pid = id.tgid;
        ex.cgroup_id = cgroup_id;
        ex.workload = Arc::clone(&self.node_workload);
        self.count_exchange(&ex);
        out.push(ex);
    }

    pub(super) fn count_exchange(&self, ex: &Exchange) {
        Metrics::add(
            match ex.protocol {
                Protocol::H1 => &self.metrics.exchanges_h1,
                Protocol::H2 => &self.metrics.exchanges_h2,
                Protocol::Grpc => &self.metrics.exchanges_grpc,
            },
            1,
        );
        if ex.incomplete.is_some() {
            Metrics::add(&self.metrics.incomplete_exchanges, 1);
        }
        if ex.incomplete == Some(Incomplete::HpackStateUnknown) {
            Metrics::add(&self.metrics.h2_hpack_state_unknown, 1);
        }
        // Cut at --max-body-bytes as captured (the wire body is longer), or as decoded: a
        // content coding that inflated to the cap (a decompression bomb may be far smaller
        // than the cap on the wire and still be cut).
        let max = self.limits.http1.max_body_bytes;
        let truncated = |b: &capture_model::exchange::Body| {
            b.truncated
                && (b.wire_size > max as u64
                    || (b.decoded_from.is_some() && b.decoded_size() >= max as u64))
        };
        if truncated(&ex.request.body) {
            Metrics::add(&self.metrics.body_truncations, 1);
        }
        if ex.response.as_ref().is_some_and(|r| truncated(&r.body)) {
            Metrics::add(&self.metrics.body_truncations, 1);
        }
    }
}

/// Which message side bytes flowing in `dir` carry, on a connection whose requests flow in
/// `request_dir`.
fn side_of(dir: Direction, request_dir: Direction) -> Side {
    if dir == request_dir {
        Side::Request
    } else {
        Side::Response
    }
}

pub(super) fn opposite(dir: Direction) -> Direction {
    match dir {
        Direction::Ingress => Direction::Egress,
        Direction::Egress => Direction::Ingress,
    }
}

/// What [`ConnTable::detect`] found.
enum Detected {
    /// A decoder is set.
    Protocol,
    /// HTTP/2 frames of a connection whose start was not seen: the decoder is chosen once
    /// the connection is named.
    H2MidStream,
    /// Not decided (or not HTTP): nothing to feed.
    NotYet,
}

enum Sniff {
    Request,
    Response,
    /// The HTTP/2 client preface (prior knowledge).
    H2Preface,
    /// HTTP/2 frames: a connection whose start was not seen.
    H2Frames,
    NotHttp,
    Unknown,
}

/// Decides the protocol from the first bytes of a transfer.
fn sniff(payload: &[u8]) -> Sniff {
    // RFC 9113 §3.4 connection preface (whole, or the start of it in a short first write).
    let n = payload.len().min(http2::frame::PREFACE.len());
    if n >= 3 && payload[..n] == http2::frame::PREFACE[..n] {
        return Sniff::H2Preface;
    }
    // A TLS handshake record (RFC 8446 §5.1) is not HTTP and never turns into it.
    if payload.len() >= 3 && payload[0] == 0x16 && payload[1] == 0x03 {
        return Sniff::NotHttp;
    }
    if http1::looks_like_request(payload) {
        Sniff::Request
    } else if http1::looks_like_response(payload) {
        Sniff::Response
    } else if http2::frame::looks_like_frames(payload) {
        Sniff::H2Frames
    } else {
        Sniff::Unknown
    }
}

/// Takes the exchange of an accepted `Upgrade: h2c` out of an HTTP/1 decoder's outputs: the
/// exchange just before `Upgraded`. Its request becomes HTTP/2 stream 1, whose response comes
/// in HTTP/2, so the 101 is not written as an exchange of its own.
fn take_h2c_upgrade(outputs: &mut Vec<Http1Output>) -> Option<Exchange> {
    let at = outputs
        .iter()
        .position(|o| matches!(o, Http1Output::Upgraded { .. }))?;
    let ex_at = outputs[..at]
        .iter()
        .rposition(|o| matches!(o, Http1Output::Exchange(_)))?;
    match &outputs[ex_at] {
        Http1Output::Exchange(ex) if http2::is_h2c_upgrade(ex) => {}
        _ => return None,
    }
    match outputs.remove(ex_at) {
        Http1Output::Exchange(ex) => Some(ex),
        _ => None,
    }
}
