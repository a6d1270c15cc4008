//! The connection table: puts each direction's bytes back in order by byte position, turns
//! holes into counted gaps, names the socket from `/proc`, picks the protocol, feeds the
//! decoder, and forgets connections on close, idle timeout, process exit or memory pressure.
//!
//! It is pure apart from the `/proc` look-up, which is injected, so it is driven in tests by
//! hand-made events exactly as the intake drives it from the ring buffer.

mod budget;
mod dispatch;
pub mod metrics;
mod naming;
mod reorder;

use std::{
    collections::{BTreeMap, HashMap},
    net::SocketAddr,
    sync::Arc,
};

use capture_common::MutedKey;

use self::metrics::{Eviction, Metrics};
use self::{naming::bound_address, reorder::REORDER_WAIT_NS};
use crate::kernel::{
    intake::{ConnId, Direction, Event},
    procnet::FdKind,
};
use capture_http::{
    http1::{self, Http1Conn, Http1Limits, Http1Output, Side},
    http2::{self, Http2Conn, Http2Limits, Http2Output, Sender, Undecided},
};
use capture_model::exchange::{ConnMeta, Exchange, Incomplete, Protocol, Role, Workload};

/// Connections idle this long are checked for a process that has exited (no close is traced
/// for fds a dying process leaves open).
const PROCESS_CHECK_IDLE_NS: u64 = 2_000_000_000;

#[derive(Clone, Debug)]
pub struct TableLimits {
    pub max_connections: usize,
    pub max_conn_buffer_bytes: usize,
    /// What all connections together may hold (`--max-buffered-bytes`, see `budget`).
    pub max_buffered_bytes: usize,
    pub idle_timeout_ns: u64,
    pub http1: Http1Limits,
    pub http2: Http2Limits,
}

/// Looks an fd up in `/proc` (injected for tests).
pub type Classifier = Box<dyn FnMut(u32, u32) -> FdKind + Send>;
/// Tells whether a process still exists (injected for tests).
pub type ProcessAlive = Box<dyn FnMut(u32) -> bool + Send>;

/// Refused connections remembered at most (see `ConnTable::refused`): 32 bytes each.
const MAX_REFUSED_REMEMBERED: usize = 65_536;

pub struct ConnTable {
    /// Keyed with foldhash, not SipHash: a lookup per kernel event, on keys the kernel makes
    /// (tgid, fd, a generation), which no peer chooses.
    conns: HashMap<ConnId, Conn, foldhash::fast::RandomState>,
    limits: TableLimits,
    metrics: Arc<Metrics>,
    /// The workload every exchange starts with: this node's name only (the Kubernetes layer
    /// replaces it with the pod's). Shared, not copied, per exchange.
    node_workload: Arc<Workload>,
    classify: Classifier,
    alive: ProcessAlive,
    /// Connections the kernel should stop sending; drained by the caller.
    mutes: Vec<MutedKey>,
    /// Connections refused at --max-connections, so the events the kernel sends until the mute
    /// takes effect neither count them again nor ask for the mute again. Forgotten on close,
    /// and all at once past [`MAX_REFUSED_REMEMBERED`] (a later event may then count one again).
    refused: std::collections::HashSet<ConnId, foldhash::fast::RandomState>,
    scratch: Vec<Http1Output>,
    scratch_h2: Vec<Http2Output>,
    /// Events up to this monotonic time may sit behind events the kernel lost (it could not
    /// hand them over: ring buffer full), so a hole before them is a loss, not a reordering,
    /// and is not waited for (see [`ConnTable::kernel_lost`]).
    loss_until_ns: u64,
    /// Payload bytes taken in since the connections' holdings were last counted (see
    /// [`ConnTable::enforce_budget`]).
    captured_since_count: usize,
}

/// What an OPEN event (or nothing, for a connection first seen mid-stream) says of a
/// connection.
#[derive(Clone, Copy, Debug, Default)]
struct Opened {
    role: Option<Role>,
    peer: Option<SocketAddr>,
    local: Option<SocketAddr>,
    listen_fd: Option<u32>,
}

struct Conn {
    meta: ConnMeta,
    streams: [Stream; 2],
    proto: Proto,
    last_ts_ns: u64,
    sniffed: u64,
    /// Not yet looked up in /proc: first seen mid-stream, with no accept/connect. Looked up
    /// once its bytes look like HTTP, so the many files a process reads cost no /proc reads.
    unnamed: bool,
    /// cgroup v2 id of the process, from the event that started tracking.
    cgroup_id: u64,
    /// accept/connect was seen: the connection's first bytes are captured.
    seen_open: bool,
}

#[derive(Default)]
struct Stream {
    /// Position of the next byte to deliver; None until the first event.
    next_pos: Option<u64>,
    /// Events that arrived ahead of `next_pos`, by position.
    pending: BTreeMap<u64, Pending>,
    pending_bytes: usize,
}

struct Pending {
    len: u64,
    data: Vec<u8>,
    ts_ns: u64,
}

enum Proto {
    /// No message start seen yet.
    Unknown,
    Http1 {
        decoder: Box<Http1Conn>,
        request_dir: Direction,
    },
    Http2 {
        decoder: Box<Http2Conn>,
        request_dir: Direction,
    },
    /// HTTP/2 joined mid-way, with the role unknown (the socket was gone from /proc): which
    /// direction carries the requests is read from the frames; until then bytes are held.
    Http2Undecided {
        held: Box<Undecided>,
        /// The direction whose frames were detected first.
        first_dir: Direction,
    },
    /// Not something we decode (or no longer: upgraded, not TCP, over a limit); events ignored.
    Off,
}

impl ConnTable {
    pub fn new(
        limits: TableLimits,
        metrics: Arc<Metrics>,
        node: Option<String>,
        classify: Classifier,
        alive: ProcessAlive,
    ) -> Self {
        Self {
            conns: HashMap::default(),
            limits,
            metrics,
            node_workload: Arc::new(Workload {
                node,
                ..Workload::default()
            }),
            classify,
            alive,
            mutes: Vec::new(),
            refused: std::collections::HashSet::default(),
            scratch: Vec::new(),
            scratch_h2: Vec::new(),
            loss_until_ns: 0,
            captured_since_count: 0,
        }
    }

    /// The kernel lost events (its lost-events counter moved), seen at monotonic time
    /// `now_ns`. Those events are never coming: every hole already waited for becomes a gap
    /// now, and so does any hole in events stamped until a reordering wait after `now_ns`
    /// (events lost before `now_ns` are followed in the ring by events stamped before or
    /// after it). Otherwise each stream of a busy node would wait 200 ms behind every loss,
    /// holding up to `--max-conn-buffer-bytes` a direction, while the daemon is already
    /// behind; an event that was only reordered inside that window is dropped as
    /// already-passed, when capture is already losing events.
    pub fn kernel_lost(&mut self, now_ns: u64, out: &mut Vec<Exchange>) {
        self.loss_until_ns = self
            .loss_until_ns
            .max(now_ns.saturating_add(REORDER_WAIT_NS));
        for (id, dir) in self.holes(|_| true) {
            Metrics::add(&self.metrics.loss_gaps, 1);
            self.skip_to_pending(id, dir, out);
        }
    }

    /// The streams waiting on a hole whose first pending event passes `waited`.
    fn holes(&self, waited: impl Fn(&Pending) -> bool) -> Vec<(ConnId, Direction)> {
        self.conns
            .iter()
            .flat_map(|(id, c)| {
                [Direction::Ingress, Direction::Egress]
                    .into_iter()
                    .filter(|dir| {
                        c.streams[dir.index()]
                            .pending
                            .values()
                            .next()
                            .is_some_and(&waited)
                    })
                    .map(|dir| (*id, dir))
            })
            .collect()
    }

    pub fn len(&self) -> usize {
        self.conns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    /// Connections the kernel should stop sending, since the last call.
    pub fn take_mutes(&mut self) -> Vec<MutedKey> {
        std::mem::take(&mut self.mutes)
    }

    /// Handles one event; finished exchanges are appended to `out`.
    pub fn on_event(&mut self, event: Event<'_>, out: &mut Vec<Exchange>) {
        match event {
            Event::Open {
                conn,
                role,
                peer,
                local,
                listen_fd,
                ts_ns,
                cgroup_id,
            } => {
                // A new generation of this fd: any previous state of the same id is stale.
                if let Some(old) = self.conns.remove(&conn) {
                    self.finish(conn, old, ts_ns, out);
                }
                let opened = Opened {
                    role,
                    peer,
                    local,
                    listen_fd,
                };
                self.track(conn, opened, ts_ns, cgroup_id);
            }
            Event::Data {
                conn,
                direction,
                pos,
                len,
                payload,
                ts_ns,
                uncopyable: _,
                cgroup_id,
            } => {
                Metrics::add(&self.metrics.events, 1);
                Metrics::add(&self.metrics.event_bytes, payload.len() as u64);
                self.captured_since_count += payload.len();
                if !self.conns.contains_key(&conn)
                    && !self.track(conn, Opened::default(), ts_ns, cgroup_id)
                {
                    return;
                }
                self.on_data(conn, direction, pos, len, payload, ts_ns, out);
            }
            Event::Close { conn, ts_ns } => {
                self.refused.remove(&conn);
                if let Some(c) = self.conns.remove(&conn) {
                    self.finish(conn, c, ts_ns, out);
                }
            }
        }
        self.metrics.connections_tracked.store(
            self.conns.len() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    /// Starts tracking a connection; false when it is not to be captured.
    fn track(&mut self, id: ConnId, opened: Opened, ts_ns: u64, cgroup_id: u64) -> bool {
        let Opened {
            role,
            peer,
            local,
            listen_fd,
        } = opened;
        if self.conns.len() >= self.limits.max_connections {
            if self.refused.len() >= MAX_REFUSED_REMEMBERED {
                self.refused.clear();
            }
            if self.refused.insert(id) {
                Metrics::add(&self.metrics.connections_refused, 1);
                self.mute(id);
            }
            return false;
        }
        Metrics::add(&self.metrics.connections_opened, 1);
        let mut meta = ConnMeta {
            role,
            id: id.to_string().into(),
            ..ConnMeta::default()
        };
        // accept/connect with an IP address: the kernel saw a TCP/IP socket being opened. /proc
        // is read later, when a short-lived connection may be closed and its fd number reused
        // by a file or another socket, so it may only add the local address, never overrule.
        let opened = match (role, peer) {
            (Some(role), Some(peer)) => Some((role, peer)),
            _ => None,
        };
        if let (Some((role, peer)), Some(local)) = (opened, local) {
            // The socket hooks read both ends from the socket: nothing to look up.
            tracing::debug!(conn = %id, ?role, %peer, %local, "connection opened");
            meta.set_endpoints(role, local, peer);
        } else if let Some((role, peer)) = opened {
            let proc_view = (self.classify)(id.tgid, id.fd);
            tracing::debug!(conn = %id, ?role, %peer, ?proc_view, "connection opened");
            match proc_view {
                FdKind::Tcp { local, remote, .. } if remote == peer => {
                    meta.set_endpoints(role, local, remote);
                }
                _ => {
                    meta.role = Some(role);
                    match role {
                        Role::Client => meta.dst = Some(peer),
                        Role::Server => {
                            meta.src = Some(peer);
                            // The listening socket outlives the connection: its address is ours.
                            if let Some(FdKind::Listener { local }) =
                                listen_fd.map(|lfd| (self.classify)(id.tgid, lfd))
                            {
                                meta.dst = Some(bound_address(local, peer));
                            }
                        }
                    }
                }
            }
        }
        self.conns.insert(
            id,
            Conn {
                meta,
                streams: Default::default(),
                proto: Proto::Unknown,
                last_ts_ns: ts_ns,
                sniffed: 0,
                // The kernel read both ends from a socket whose handshake it did not see
                // (one already closed when first seen): nothing /proc could add, and the fd
                // may by now name another socket.
                unnamed: opened.is_none() && local.is_none(),
                cgroup_id,
                seen_open: opened.is_some(),
            },
        );
        true
    }

    fn mute(&mut self, id: ConnId) {
        self.mutes.push(MutedKey {
            tgid: id.tgid,
            fd: id.fd,
            generation: id.generation,
        });
    }

    /// The connection is over: deliver what is pending and flush the decoder.
    fn finish(&mut self, id: ConnId, mut conn: Conn, ts_ns: u64, out: &mut Vec<Exchange>) {
        // Re-insert so pending deliveries find it, then remove for good.
        let has_pending = conn.streams.iter().any(|s| !s.pending.is_empty());
        if has_pending {
            conn.last_ts_ns = ts_ns;
            self.conns.insert(id, conn);
            for dir in [Direction::Ingress, Direction::Egress] {
                while self
                    .conns
                    .get(&id)
                    .is_some_and(|c| !c.streams[dir.index()].pending.is_empty())
                {
                    Metrics::add(&self.metrics.reorder_gaps, 1);
                    self.skip_to_pending(id, dir, out);
                }
            }
            let Some(c) = self.conns.remove(&id) else {
                return;
            };
            conn = c;
        }
        match std::mem::replace(&mut conn.proto, Proto::Off) {
            Proto::Http1 { mut decoder, .. } => {
                let mut outputs = Vec::new();
                decoder.on_close(ts_ns, &mut outputs);
                self.conns.insert(id, conn);
                self.emit(id, &mut outputs, out);
                self.conns.remove(&id);
            }
            Proto::Http2 { mut decoder, .. } => {
                let mut outputs = Vec::new();
                decoder.on_close(ts_ns, &mut outputs);
                self.conns.insert(id, conn);
                self.emit_h2(id, &mut outputs, out);
                self.conns.remove(&id);
            }
            Proto::Http2Undecided { held, .. } => self.drop_undecided(id, &held),
            Proto::Unknown | Proto::Off => {}
        }
    }

    /// Periodic work at monotonic time `now_ns`: gives up on old holes, evicts idle connections
    /// and those of exited processes.
    pub fn tick(&mut self, now_ns: u64, out: &mut Vec<Exchange>) {
        let stale_holes = self.holes(|p| now_ns.saturating_sub(p.ts_ns) > REORDER_WAIT_NS);
        let mut idle = Vec::new();
        let mut check_alive = Vec::new();
        for (id, c) in &self.conns {
            let quiet = now_ns.saturating_sub(c.last_ts_ns);
            if quiet > self.limits.idle_timeout_ns {
                idle.push(*id);
            } else if quiet > PROCESS_CHECK_IDLE_NS {
                check_alive.push(*id);
            }
        }
        for (id, dir) in stale_holes {
            Metrics::add(&self.metrics.reorder_gaps, 1);
            self.skip_to_pending(id, dir, out);
        }
        for id in idle {
            if let Some(c) = self.conns.remove(&id) {
                self.metrics.evicted(Eviction::Idle);
                self.flush_conn(id, c, out);
            }
        }
        let mut dead: HashMap<u32, bool> = HashMap::new();
        for id in check_alive {
            let gone = *dead
                .entry(id.tgid)
                .or_insert_with(|| !(self.alive)(id.tgid));
            if gone && let Some(c) = self.conns.remove(&id) {
                self.metrics.evicted(Eviction::ProcessGone);
                self.finish(id, c, now_ns, out);
            }
        }
        self.metrics.connections_tracked.store(
            self.conns.len() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    /// Emits everything still pending, at shutdown.
    pub fn flush_all(&mut self, out: &mut Vec<Exchange>) {
        let ids: Vec<ConnId> = self.conns.keys().copied().collect();
        for id in ids {
            if let Some(c) = self.conns.remove(&id) {
                self.flush_conn(id, c, out);
            }
        }
    }

    fn flush_conn(&mut self, id: ConnId, mut conn: Conn, out: &mut Vec<Exchange>) {
        match std::mem::replace(&mut conn.proto, Proto::Off) {
            Proto::Http1 { mut decoder, .. } => {
                let mut outputs = Vec::new();
                decoder.flush(&mut outputs);
                self.conns.insert(id, conn);
                self.emit(id, &mut outputs, out);
                self.conns.remove(&id);
            }
            Proto::Http2 { mut decoder, .. } => {
                let mut outputs = Vec::new();
                decoder.flush(&mut outputs);
                self.conns.insert(id, conn);
                self.emit_h2(id, &mut outputs, out);
                self.conns.remove(&id);
            }
            Proto::Http2Undecided { held, .. } => self.drop_undecided(id, &held),
            Proto::Unknown | Proto::Off => {}
        }
    }
}

impl ConnTable {
    /// An HTTP/2 connection ended before its frames said which end is the client: what was
    /// held is dropped (and counted) rather than written with requests and responses that may
    /// be swapped.
    fn drop_undecided(&self, id: ConnId, held: &Undecided) {
        tracing::debug!(conn = %id, ?held, "HTTP/2 connection ended with its sides unknown");
        Metrics::add(
            &self.metrics.h2_undecided_bytes_dropped,
            held.held_bytes() as u64,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::dispatch::SNIFF_LIMIT;
    use std::sync::atomic::Ordering::Relaxed;

    use super::*;
    use capture_model::exchange::Incomplete;

    const SERVER: SocketAddr =
        SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8080);
    const CLIENT: SocketAddr =
        SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 40000);

    fn limits() -> TableLimits {
        TableLimits {
            max_connections: 4,
            max_conn_buffer_bytes: 1024,
            max_buffered_bytes: 1 << 30,
            idle_timeout_ns: 10_000_000_000,
            http1: Http1Limits::default(),
            http2: Http2Limits::default(),
        }
    }

    fn table_with(kind: FdKind, limits: TableLimits, alive: bool) -> (ConnTable, Arc<Metrics>) {
        let metrics = Metrics::new();
        let t = ConnTable::new(
            limits,
            Arc::clone(&metrics),
            Some("node-a".into()),
            Box::new(move |_, _| kind.clone()),
            Box::new(move |_| alive),
        );
        (t, metrics)
    }

    fn server_table() -> (ConnTable, Arc<Metrics>) {
        table_with(
            FdKind::Tcp {
                local: SERVER,
                remote: CLIENT,
                role: Role::Server,
            },
            limits(),
            true,
        )
    }

    const CGROUP: u64 = 4026;
    const ID: ConnId = ConnId {
        tgid: 10,
        fd: 5,
        generation: 1,
    };

    fn data(dir: Direction, pos: u64, bytes: &[u8], ts_ns: u64) -> Event<'_> {
        data_on(ID, dir, pos, bytes, ts_ns)
    }

    fn data_on(id: ConnId, dir: Direction, pos: u64, bytes: &[u8], ts_ns: u64) -> Event<'_> {
        Event::Data {
            conn: id,
            direction: dir,
            pos,
            len: bytes.len() as u64,
            payload: bytes,
            ts_ns,
            cgroup_id: CGROUP,
            uncopyable: false,
        }
    }

    /// The kernel's OPEN of [`ID`].
    fn open(
        role: Option<Role>,
        peer: SocketAddr,
        local: Option<SocketAddr>,
        listen_fd: Option<u32>,
        ts_ns: u64,
    ) -> Event<'static> {
        Event::Open {
            conn: ID,
            role,
            peer: Some(peer),
            local,
            listen_fd,
            ts_ns,
            cgroup_id: CGROUP,
        }
    }

    const REQ: &[u8] = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n";
    const RESP: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

    /// The kernel's OPEN for a socket found already closed at its first transfer: both ends
    /// read from the socket, no role (the handshake was not seen).
    #[test]
    fn a_connection_the_kernel_found_closed_is_not_looked_up_in_proc() {
        // /proc says the fd is a live server connection: by now it may name another socket.
        let (mut t, _m) = server_table();
        let mut out = Vec::new();
        t.on_event(open(None, CLIENT, Some(SERVER), None, 1), &mut out);
        t.on_event(data(Direction::Ingress, 0, REQ, 2), &mut out);
        t.on_event(data(Direction::Egress, 0, RESP, 3), &mut out);
        t.on_event(Event::Close { conn: ID, ts_ns: 4 }, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].request.target, "/a");
        assert_eq!(out[0].conn.role, None);
        assert_eq!((out[0].conn.src, out[0].conn.dst), (None, None));
    }

    #[test]
    fn in_order_exchange_gets_connection_metadata() {
        let (mut t, m) = server_table();
        let mut out = Vec::new();
        t.on_event(data(Direction::Ingress, 0, REQ, 1), &mut out);
        t.on_event(data(Direction::Egress, 0, RESP, 2), &mut out);
        assert_eq!(out.len(), 1);
        let ex = &out[0];
        assert_eq!(ex.request.target, "/a");
        assert_eq!(ex.response.as_ref().unwrap().body.data, b"ok");
        assert_eq!(ex.conn.role, Some(Role::Server));
        assert_eq!((ex.conn.src, ex.conn.dst), (Some(CLIENT), Some(SERVER)));
        assert_eq!(&*ex.conn.id, "10:5:1");
        assert_eq!(ex.pid, 10);
        assert_eq!(
            ex.cgroup_id, CGROUP,
            "the workload key travels with the exchange"
        );
        assert_eq!(ex.workload.node.as_deref(), Some("node-a"));
        assert_eq!(m.exchanges_h1.load(Relaxed), 1);
        assert_eq!(m.gap_bytes.load(Relaxed), 0);
    }

    #[test]
    fn out_of_order_events_are_put_back_in_order() {
        let (mut t, m) = server_table();
        let mut out = Vec::new();
        t.on_event(data(Direction::Ingress, 0, REQ, 1), &mut out);
        // The response arrives in two events, the second first.
        t.on_event(data(Direction::Egress, 0, &RESP[..10], 2), &mut out);
        t.on_event(data(Direction::Egress, 20, &RESP[20..], 3), &mut out);
        assert!(out.is_empty());
        t.on_event(data(Direction::Egress, 10, &RESP[10..20], 4), &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].response.as_ref().unwrap().status, 200);
        assert_eq!(m.gap_bytes.load(Relaxed), 0);
    }

    #[test]
    fn stale_hole_becomes_a_counted_gap_and_decoding_resumes() {
        let (mut t, m) = server_table();
        let mut out = Vec::new();
        t.on_event(data(Direction::Ingress, 0, REQ, 1), &mut out);
        // Bytes REQ.len()..REQ.len()+7 never arrive; a second request follows.
        let pos2 = (REQ.len() + 7) as u64;
        t.on_event(
            data(
                Direction::Ingress,
                pos2,
                b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n",
                2,
            ),
            &mut out,
        );
        t.tick(2 + REORDER_WAIT_NS + 1, &mut out);
        assert_eq!(m.gap_bytes.load(Relaxed), 7);
        assert_eq!(m.reorder_gaps.load(Relaxed), 1);
        t.on_event(data(Direction::Egress, 0, RESP, 5), &mut out);
        t.on_event(
            data(Direction::Egress, RESP.len() as u64, RESP, 6),
            &mut out,
        );
        let targets: Vec<&str> = out.iter().map(|e| e.request.target.as_str()).collect();
        assert!(
            targets.contains(&"/b"),
            "decoding resumed after the gap: {targets:?}"
        );
    }

    #[test]
    fn holes_behind_a_kernel_loss_are_gaps_at_once_and_later_ones_wait_again() {
        let (mut t, m) = server_table();
        let mut out = Vec::new();
        let b = b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n";
        t.on_event(data(Direction::Ingress, 0, REQ, 1), &mut out);
        // A hole waiting when the loss is seen: a gap now, not 200 ms later.
        let pos = (REQ.len() + 7) as u64;
        t.on_event(data(Direction::Ingress, pos, b, 2), &mut out);
        assert_eq!(m.gap_bytes.load(Relaxed), 0);
        t.kernel_lost(1_000, &mut out);
        assert_eq!(m.gap_bytes.load(Relaxed), 7);
        assert_eq!(m.loss_gaps.load(Relaxed), 1);
        // A hole in events stamped within a reordering wait of the loss: a gap as it arrives,
        // nothing buffered.
        let pos = pos + b.len() as u64 + 11;
        t.on_event(
            data(Direction::Ingress, pos, b, 1_000 + REORDER_WAIT_NS),
            &mut out,
        );
        assert_eq!(m.gap_bytes.load(Relaxed), 18);
        assert_eq!(m.loss_gaps.load(Relaxed), 2);
        t.on_event(data(Direction::Egress, 0, RESP, 3), &mut out);
        t.on_event(
            data(Direction::Egress, RESP.len() as u64, RESP, 4),
            &mut out,
        );
        t.on_event(
            data(Direction::Egress, 2 * RESP.len() as u64, RESP, 5),
            &mut out,
        );
        let targets: Vec<&str> = out.iter().map(|e| e.request.target.as_str()).collect();
        assert_eq!(
            targets,
            ["/a", "/b", "/b"],
            "decoding resumed after each gap"
        );
        // Past the window a hole is waited for again (a reordering fills it).
        let pos = pos + b.len() as u64;
        let late = 1_000 + REORDER_WAIT_NS + 1;
        t.on_event(data(Direction::Ingress, pos + 10, &b[10..], late), &mut out);
        assert_eq!(m.gap_bytes.load(Relaxed), 18);
        t.on_event(data(Direction::Ingress, pos, &b[..10], late + 1), &mut out);
        assert_eq!(m.gap_bytes.load(Relaxed), 18);
        assert_eq!(m.loss_gaps.load(Relaxed), 2);
        assert_eq!(m.reorder_gaps.load(Relaxed), 0);
    }

    #[test]
    fn kernel_reported_gap_is_counted() {
        let (mut t, m) = server_table();
        let mut out = Vec::new();
        t.on_event(data(Direction::Ingress, 0, REQ, 1), &mut out);
        // A response event whose last 2 bytes were not copied.
        t.on_event(
            Event::Data {
                conn: ID,
                direction: Direction::Egress,
                pos: 0,
                len: RESP.len() as u64,
                payload: &RESP[..RESP.len() - 2],
                ts_ns: 2,
                cgroup_id: CGROUP,
                uncopyable: false,
            },
            &mut out,
        );
        assert_eq!(m.gap_bytes.load(Relaxed), 2);
        t.on_event(Event::Close { conn: ID, ts_ns: 3 }, &mut out);
        assert_eq!(out.len(), 1);
        assert!(
            out[0].incomplete.is_some(),
            "an exchange with lost bytes is marked"
        );
    }

    /// A short-lived client closed its socket and reused the fd number for a file before the
    /// daemon looked at /proc: what accept/connect said wins, nothing is muted.
    #[test]
    fn kernel_open_wins_over_a_reused_fd_in_proc() {
        let (mut t, m) = table_with(FdKind::NotTcp, limits(), true);
        let mut out = Vec::new();
        t.on_event(open(Some(Role::Client), SERVER, None, None, 0), &mut out);
        t.on_event(data(Direction::Egress, 0, REQ, 1), &mut out);
        t.on_event(data(Direction::Ingress, 0, RESP, 2), &mut out);
        t.on_event(Event::Close { conn: ID, ts_ns: 3 }, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].conn.role, Some(Role::Client));
        assert_eq!(out[0].conn.dst, Some(SERVER));
        assert!(t.take_mutes().is_empty());
        assert_eq!(m.connections_muted.load(Relaxed), 0);

        // /proc names another TCP connection on the reused fd: not ours either.
        let other = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9999);
        let (mut t, _) = table_with(
            FdKind::Tcp {
                local: CLIENT,
                remote: other,
                role: Role::Client,
            },
            limits(),
            true,
        );
        let mut out = Vec::new();
        t.on_event(open(Some(Role::Client), SERVER, None, None, 0), &mut out);
        t.on_event(data(Direction::Egress, 0, REQ, 1), &mut out);
        t.on_event(data(Direction::Ingress, 0, RESP, 2), &mut out);
        assert_eq!(out[0].conn.dst, Some(SERVER));
        assert_eq!(out[0].conn.src, None);
    }

    /// The accepted fd is already gone from /proc; the listening fd names the local address.
    #[test]
    fn accepted_connection_takes_its_address_from_the_listener() {
        let metrics = Metrics::new();
        let wildcard = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 8080);
        let mut t = ConnTable::new(
            limits(),
            metrics,
            None,
            Box::new(move |_, fd| {
                if fd == 3 {
                    FdKind::Listener { local: wildcard }
                } else {
                    FdKind::Gone
                }
            }),
            Box::new(|_| true),
        );
        let mut out = Vec::new();
        t.on_event(open(Some(Role::Server), CLIENT, None, Some(3), 0), &mut out);
        t.on_event(data(Direction::Ingress, 0, REQ, 1), &mut out);
        t.on_event(data(Direction::Egress, 0, RESP, 2), &mut out);
        assert_eq!(out[0].conn.src, Some(CLIENT));
        // Bound to 0.0.0.0, reached over loopback: the loopback address.
        assert_eq!(out[0].conn.dst, Some(SERVER));
    }

    /// A process reading its files must not cost a /proc look-up per fd: only bytes that look
    /// like HTTP make the daemon name the fd.
    #[test]
    fn only_http_looking_fds_are_looked_up() {
        let lookups = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = Arc::clone(&lookups);
        let mut t = ConnTable::new(
            limits(),
            Metrics::new(),
            None,
            Box::new(move |_, _| {
                counted.fetch_add(1, Relaxed);
                FdKind::Tcp {
                    local: SERVER,
                    remote: CLIENT,
                    role: Role::Server,
                }
            }),
            Box::new(|_| true),
        );
        let mut out = Vec::new();
        for fd in 10..20 {
            let conn = ConnId {
                tgid: 1,
                fd,
                generation: 1,
            };
            let elf = b"\x7fELF\x02\x01\x01\x00";
            t.on_event(
                Event::Data {
                    conn,
                    direction: Direction::Ingress,
                    pos: 0,
                    len: 8,
                    payload: elf,
                    ts_ns: 1,
                    cgroup_id: CGROUP,
                    uncopyable: false,
                },
                &mut out,
            );
            t.on_event(Event::Close { conn, ts_ns: 2 }, &mut out);
        }
        assert_eq!(
            lookups.load(Relaxed),
            0,
            "file reads were looked up in /proc"
        );
        t.on_event(data(Direction::Ingress, 0, REQ, 3), &mut out);
        t.on_event(data(Direction::Egress, 0, RESP, 4), &mut out);
        assert_eq!(lookups.load(Relaxed), 1);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].conn.dst, Some(SERVER));
    }

    #[test]
    fn non_tcp_fds_are_muted_once() {
        let (mut t, m) = table_with(FdKind::NotTcp, limits(), true);
        let mut out = Vec::new();
        t.on_event(data(Direction::Egress, 0, REQ, 1), &mut out);
        t.on_event(data(Direction::Egress, REQ.len() as u64, REQ, 2), &mut out);
        assert!(out.is_empty());
        assert_eq!(
            t.take_mutes(),
            vec![MutedKey {
                tgid: 10,
                fd: 5,
                generation: 1
            }]
        );
        assert_eq!(m.connections_muted.load(Relaxed), 1);
    }

    #[test]
    fn tls_and_h2_prefaces_are_not_http1() {
        let (mut t, m) = server_table();
        let mut out = Vec::new();
        t.on_event(
            data(
                Direction::Ingress,
                0,
                b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
                1,
            ),
            &mut out,
        );
        assert_eq!(t.take_mutes().len(), 1);
        assert_eq!(m.connections_not_http.load(Relaxed), 1);
    }

    #[test]
    fn close_flushes_a_request_without_response() {
        let (mut t, _) = server_table();
        let mut out = Vec::new();
        t.on_event(data(Direction::Ingress, 0, REQ, 1), &mut out);
        t.on_event(Event::Close { conn: ID, ts_ns: 2 }, &mut out);
        assert_eq!(out.len(), 1);
        assert!(out[0].response.is_none());
        assert!(out[0].incomplete.is_some());
        assert!(t.is_empty());
    }

    fn upload_head(path: &str, len: usize) -> Vec<u8> {
        format!("POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len}\r\n\r\n").into_bytes()
    }

    fn budget_limits(max_buffered_bytes: usize) -> TableLimits {
        TableLimits {
            max_buffered_bytes,
            max_conn_buffer_bytes: 1 << 20,
            ..limits()
        }
    }

    #[test]
    fn over_the_budget_the_largest_holder_drops_its_bodies_and_decoding_goes_on() {
        let (mut t, m) = table_with(
            FdKind::Tcp {
                local: SERVER,
                remote: CLIENT,
                role: Role::Server,
            },
            budget_limits(64 * 1024),
            true,
        );
        let big = ConnId { fd: 6, ..ID };
        let small = ConnId { fd: 7, ..ID };
        let mut out = Vec::new();
        let (big_head, small_head) = (upload_head("/big", 100_000), upload_head("/small", 20_000));
        t.on_event(data_on(big, Direction::Ingress, 0, &big_head, 1), &mut out);
        t.on_event(
            data_on(small, Direction::Ingress, 0, &small_head, 1),
            &mut out,
        );
        let chunk = vec![b'b'; 10_000];
        let mut big_pos = big_head.len() as u64;
        for _ in 0..6 {
            t.on_event(
                data_on(big, Direction::Ingress, big_pos, &chunk, 2),
                &mut out,
            );
            big_pos += chunk.len() as u64;
        }
        let small_pos = small_head.len() as u64;
        t.on_event(
            data_on(small, Direction::Ingress, small_pos, &chunk, 2),
            &mut out,
        );
        // 70 000 body bytes held, over 64 KiB: the big upload's 60 000 go, the small one's stay.
        t.enforce_budget(&mut out);
        assert_eq!(m.memory_sheds.load(Relaxed), 1);
        assert_eq!(m.memory_shed_bytes.load(Relaxed), 60_000);
        let left = m.buffered_bytes.load(Relaxed);
        assert!((10_000..12_000).contains(&left), "{left}");
        // Under the budget now: counting again changes nothing.
        for _ in 0..4 {
            t.on_event(
                data_on(big, Direction::Ingress, big_pos, &chunk, 3),
                &mut out,
            );
            big_pos += chunk.len() as u64;
        }
        t.enforce_budget(&mut out);
        assert_eq!(m.memory_sheds.load(Relaxed), 1);
        // Both uploads end and are answered: the big one's body is cut, its framing was kept.
        t.on_event(
            data_on(small, Direction::Ingress, small_pos + 10_000, &chunk, 4),
            &mut out,
        );
        t.on_event(data_on(big, Direction::Egress, 0, RESP, 5), &mut out);
        t.on_event(data_on(small, Direction::Egress, 0, RESP, 5), &mut out);
        assert_eq!(out.len(), 2, "{out:?}");
        let by_target = |target: &str| out.iter().find(|e| e.request.target == target).unwrap();
        let big_ex = by_target("/big");
        assert!(big_ex.request.body.truncated);
        assert!(big_ex.request.body.data.is_empty());
        assert_eq!(big_ex.request.body.wire_size, 100_000);
        assert_eq!(big_ex.response.as_ref().unwrap().body.data, b"ok");
        assert_eq!(big_ex.incomplete, None);
        let small_ex = by_target("/small");
        assert!(!small_ex.request.body.truncated);
        assert_eq!(small_ex.request.body.data, vec![b'b'; 20_000]);
    }

    #[test]
    fn over_the_budget_bytes_waiting_behind_a_hole_become_a_gap() {
        let (mut t, m) = table_with(
            FdKind::Tcp {
                local: SERVER,
                remote: CLIENT,
                role: Role::Server,
            },
            budget_limits(4096),
            true,
        );
        let mut out = Vec::new();
        let head = upload_head("/held", 8_000);
        let body_at = head.len() as u64;
        t.on_event(data(Direction::Ingress, 0, &head, 1), &mut out);
        // 1 000 bytes missing, 5 000 after them waiting for the hole to fill.
        let waiting = vec![b'w'; 5_000];
        t.on_event(
            data(Direction::Ingress, body_at + 1_000, &waiting, 2),
            &mut out,
        );
        t.enforce_budget(&mut out);
        assert_eq!(m.memory_sheds.load(Relaxed), 1);
        assert_eq!(m.memory_shed_bytes.load(Relaxed), 5_000);
        assert_eq!(m.reorder_gaps.load(Relaxed), 1);
        assert_eq!(m.gap_bytes.load(Relaxed), 6_000);
        // The hole's bytes arrive late and are passed; the rest of the body and the answer
        // are decoded in step.
        t.on_event(
            data(Direction::Ingress, body_at, &[b'l'; 1_000], 3),
            &mut out,
        );
        t.on_event(
            data(Direction::Ingress, body_at + 6_000, &[b'r'; 2_000], 3),
            &mut out,
        );
        t.on_event(data(Direction::Egress, 0, RESP, 4), &mut out);
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(out[0].request.target, "/held");
        assert!(out[0].request.body.truncated);
        assert_eq!(out[0].request.body.wire_size, 8_000);
        assert_eq!(out[0].response.as_ref().unwrap().body.data, b"ok");
    }

    #[test]
    fn idle_and_dead_process_connections_are_evicted() {
        let (mut t, m) = server_table();
        let mut out = Vec::new();
        t.on_event(data(Direction::Ingress, 0, REQ, 1), &mut out);
        t.tick(1 + 11_000_000_000, &mut out);
        assert!(t.is_empty());
        assert_eq!(out.len(), 1);
        assert!(matches!(
            out[0].incomplete,
            Some(Incomplete::Flushed | Incomplete::NoResponse)
        ));
        assert_eq!(m.evicted_idle.load(Relaxed), 1);

        let (mut t, m) = table_with(
            FdKind::Tcp {
                local: SERVER,
                remote: CLIENT,
                role: Role::Server,
            },
            limits(),
            false,
        );
        let mut out = Vec::new();
        t.on_event(data(Direction::Ingress, 0, REQ, 1), &mut out);
        t.tick(1 + 3_000_000_000, &mut out);
        assert!(t.is_empty());
        assert_eq!(m.evicted_process_gone.load(Relaxed), 1);
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn connection_limit_refuses_and_mutes() {
        let (mut t, m) = server_table();
        let mut out = Vec::new();
        let conn = |fd: u32| ConnId {
            tgid: 1,
            fd,
            generation: 1,
        };
        let data_on = |fd: u32, generation: u64, pos: u64| Event::Data {
            conn: ConnId {
                generation,
                ..conn(fd)
            },
            direction: Direction::Ingress,
            pos,
            len: REQ.len() as u64,
            payload: REQ,
            ts_ns: 1,
            cgroup_id: CGROUP,
            uncopyable: false,
        };
        for fd in 0..6 {
            t.on_event(data_on(fd, 1, 0), &mut out);
        }
        assert_eq!(t.len(), 4);
        assert_eq!(m.connections_refused.load(Relaxed), 2);
        assert_eq!(t.take_mutes().len(), 2);
        // Events of a refused connection that the kernel sent before the mute took effect: the
        // connection was counted and muted once.
        t.on_event(data_on(5, 1, REQ.len() as u64), &mut out);
        t.on_event(data_on(4, 1, REQ.len() as u64), &mut out);
        assert_eq!(m.connections_refused.load(Relaxed), 2);
        assert!(t.take_mutes().is_empty());
        // A new connection on a closed fd number is another connection.
        t.on_event(
            Event::Close {
                conn: conn(5),
                ts_ns: 2,
            },
            &mut out,
        );
        t.on_event(data_on(5, 2, 0), &mut out);
        assert_eq!(m.connections_refused.load(Relaxed), 3);
        assert_eq!(t.take_mutes().len(), 1);
    }

    // ----- HTTP/2 -----

    use capture_http::http2::frame::{
        DATA, FLAG_ACK, FLAG_END_HEADERS, FLAG_END_STREAM, HEADERS, PING, SETTINGS, WINDOW_UPDATE,
        write_frame,
    };
    use capture_http::http2::testing::{Wire, get, refs};
    use capture_model::exchange::header_value;

    fn h2_simple() -> Wire {
        let mut w = Wire::new();
        w.request(1, &refs(&get("/h2")), true);
        w.response(
            1,
            &[(":status", "200"), ("content-type", "text/plain")],
            false,
        );
        w.server_data(1, b"hello h2", true);
        w
    }

    #[test]
    fn h2_prior_knowledge_preface_is_decoded() {
        let (mut t, m) = server_table();
        let mut out = Vec::new();
        let w = h2_simple();
        // The preface arrives in its own short write, then the rest.
        t.on_event(data(Direction::Ingress, 0, &w.client[..5], 1), &mut out);
        t.on_event(data(Direction::Ingress, 5, &w.client[5..], 2), &mut out);
        t.on_event(data(Direction::Egress, 0, &w.server, 3), &mut out);
        assert_eq!(out.len(), 1);
        let ex = &out[0];
        assert_eq!(ex.protocol, Protocol::H2);
        assert_eq!(ex.request.target, "/h2");
        assert_eq!(ex.response.as_ref().unwrap().body.data, b"hello h2");
        assert_eq!(ex.conn.role, Some(Role::Server));
        assert_eq!(ex.pid, 10);
        assert!(t.take_mutes().is_empty());
        assert_eq!(m.exchanges_h2.load(Relaxed), 1);
        assert_eq!(m.exchanges_h1.load(Relaxed), 0);
        assert_eq!(m.h2_connections_preface.load(Relaxed), 1);
    }

    #[test]
    fn h2_client_role_maps_egress_to_requests() {
        let (mut t, m) = table_with(
            FdKind::Tcp {
                local: CLIENT,
                remote: SERVER,
                role: Role::Client,
            },
            limits(),
            true,
        );
        let mut out = Vec::new();
        let w = h2_simple();
        t.on_event(data(Direction::Egress, 0, &w.client, 1), &mut out);
        t.on_event(data(Direction::Ingress, 0, &w.server, 2), &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].conn.role, Some(Role::Client));
        assert_eq!(out[0].response.as_ref().unwrap().status, 200);
        assert_eq!(m.exchanges_h2.load(Relaxed), 1);
    }

    const UPGRADE_REQ: &[u8] = b"GET /up?x=1 HTTP/1.1\r\nHost: svc:8080\r\n\
Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n";
    const SWITCHING: &[u8] =
        b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n";

    /// The server side after its 101: SETTINGS, then the response to the upgrade request on
    /// stream 1, then a second stream's response. The client side: preface, SETTINGS, a
    /// second request on stream 3.
    fn upgraded_wire() -> (Wire, usize) {
        let mut w = Wire::new();
        w.response(1, &[(":status", "200")], false);
        w.server_data(1, b"upgraded!", true);
        let first = w.server.len();
        w.request(3, &refs(&get("/second")), true);
        w.response(3, &[(":status", "204")], true);
        (w, first)
    }

    #[test]
    fn h2c_upgrade_switches_to_http2_with_the_request_as_stream_1() {
        for split in [false, true] {
            let (mut t, m) = server_table();
            let mut out = Vec::new();
            let (w, first) = upgraded_wire();
            t.on_event(data(Direction::Ingress, 0, UPGRADE_REQ, 1), &mut out);
            let mut server = SWITCHING.to_vec();
            let at_101 = server.len();
            server.extend_from_slice(&w.server[..first]);
            if split {
                t.on_event(data(Direction::Egress, 0, &server[..at_101], 2), &mut out);
                t.on_event(
                    data(Direction::Egress, at_101 as u64, &server[at_101..], 3),
                    &mut out,
                );
            } else {
                // The 101 and the first frames in one write.
                t.on_event(data(Direction::Egress, 0, &server, 2), &mut out);
            }
            t.on_event(
                data(Direction::Ingress, UPGRADE_REQ.len() as u64, &w.client, 4),
                &mut out,
            );
            t.on_event(
                data(
                    Direction::Egress,
                    server.len() as u64,
                    &w.server[first..],
                    5,
                ),
                &mut out,
            );
            t.on_event(Event::Close { conn: ID, ts_ns: 6 }, &mut out);
            assert!(t.take_mutes().is_empty(), "h2c is decoded, not muted");
            let got: Vec<(&str, &str, u16, &[u8])> = out
                .iter()
                .map(|e| {
                    let r = e.response.as_ref().unwrap();
                    (
                        e.request.target.as_str(),
                        e.request.version.as_str(),
                        r.status,
                        r.body.data.as_slice(),
                    )
                })
                .collect();
            assert_eq!(
                got,
                vec![
                    ("/up?x=1", "HTTP/1.1", 200, &b"upgraded!"[..]),
                    ("/second", "HTTP/2", 204, b""),
                ],
                "split {split}"
            );
            assert!(out.iter().all(|e| e.incomplete.is_none()), "{out:?}");
            assert!(out.iter().all(|e| e.protocol == Protocol::H2));
            assert_eq!(m.h2_connections_upgrade.load(Relaxed), 1);
            assert_eq!(m.exchanges_h2.load(Relaxed), 2);
            assert_eq!(m.exchanges_h1.load(Relaxed), 0);
        }
    }

    #[test]
    fn websocket_upgrade_is_still_muted() {
        let (mut t, m) = server_table();
        let mut out = Vec::new();
        t.on_event(
            data(
                Direction::Ingress,
                0,
                b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
                1,
            ),
            &mut out,
        );
        t.on_event(
            data(
                Direction::Egress,
                0,
                b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
                2,
            ),
            &mut out,
        );
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].response.as_ref().unwrap().status, 101);
        assert_eq!(t.take_mutes().len(), 1);
        assert_eq!(m.h2_connections_upgrade.load(Relaxed), 0);
    }

    /// A connection opened before the capture: no preface, frames from the middle.
    #[test]
    fn h2_mid_stream_frames_are_detected() {
        let (mut t, m) = server_table();
        let mut out = Vec::new();
        let mut w = Wire::bare();
        w.request(5, &refs(&get("/later")), true);
        w.response(5, &[(":status", "200")], false);
        w.server_data(5, b"ok", true);
        t.on_event(data(Direction::Ingress, 1000, &w.client, 1), &mut out);
        t.on_event(data(Direction::Egress, 5000, &w.server, 2), &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].request.target, "/later");
        assert_eq!(out[0].response.as_ref().unwrap().body.data, b"ok");
        assert!(t.take_mutes().is_empty());
        assert_eq!(m.h2_connections_mid_stream.load(Relaxed), 1);

        // Stream 7 reuses fields the encoder indexed before the capture: unknown entries.
        let (mut t, m) = server_table();
        let mut out = Vec::new();
        let mut before = Wire::bare();
        before.request(1, &refs(&get("/old")), true);
        let mut w = Wire::bare();
        w.client_enc = std::mem::take(&mut before.client_enc);
        w.request(7, &refs(&get("/old")), true);
        w.response(7, &[(":status", "200")], true);
        t.on_event(data(Direction::Ingress, 1000, &w.client, 1), &mut out);
        t.on_event(data(Direction::Egress, 5000, &w.server, 2), &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].incomplete, Some(Incomplete::HpackStateUnknown));
        assert_eq!(out[0].request.method, "GET");
        assert_eq!(m.h2_hpack_state_unknown.load(Relaxed), 1);
    }

    /// Servers may write their SETTINGS before the client's preface is read: a connection
    /// whose accept was seen is still decoded from its start (tables known).
    #[test]
    fn h2_server_settings_before_the_preface() {
        let (mut t, m) = server_table();
        let mut out = Vec::new();
        t.on_event(open(Some(Role::Server), CLIENT, None, None, 0), &mut out);
        let mut w = Wire::new();
        // Both sides index fields; the second request refers to the first's entries.
        w.request(1, &refs(&get("/one")), true);
        w.request(3, &refs(&get("/one")), true);
        w.response(1, &[(":status", "200"), ("x-a", "b")], true);
        w.response(3, &[(":status", "200"), ("x-a", "b")], true);
        let settings_len = 9;
        t.on_event(
            data(Direction::Egress, 0, &w.server[..settings_len], 1),
            &mut out,
        );
        t.on_event(data(Direction::Ingress, 0, &w.client, 2), &mut out);
        t.on_event(
            data(
                Direction::Egress,
                settings_len as u64,
                &w.server[settings_len..],
                3,
            ),
            &mut out,
        );
        assert_eq!(out.len(), 2);
        assert!(out.iter().all(|e| e.incomplete.is_none()), "{out:?}");
        assert_eq!(
            header_value(&out[1].response.as_ref().unwrap().headers, "x-a"),
            Some("b")
        );
        assert_eq!(m.h2_connections_preface.load(Relaxed), 1);
        assert_eq!(m.h2_connections_mid_stream.load(Relaxed), 0);
    }

    // ----- HTTP/2 joined mid-way with the role unknown -----

    fn gone_table() -> (ConnTable, Arc<Metrics>) {
        table_with(FdKind::Gone, limits(), true)
    }

    fn late_fields(path: &str) -> Vec<(&'static str, String)> {
        let mut f = get(path);
        f.push(("x-session-marker", "m-1".into()));
        f
    }

    /// A connection that served `/early` on stream 1 before the capture (both HPACK tables
    /// hold entries the daemon never sees), then five requests: each one's client bytes and
    /// server bytes, as the end-to-end test's h2-peer sends them.
    fn late_h2() -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut w = Wire::new();
        let response = |len: usize| {
            [
                (":status", "200".to_string()),
                ("content-type", "text/plain".into()),
                ("x-peer", "h2-peer".into()),
                ("content-length", len.to_string()),
            ]
        };
        w.request(1, &refs(&late_fields("/early")), true);
        w.response(1, &refs(&response(12)), false);
        w.server_data(1, b"path=/early\n", true);
        let mut out = Vec::new();
        for i in 0..5u32 {
            let (c0, s0) = (w.client.len(), w.server.len());
            let path = format!("/late/{i}?n={i}");
            let body = format!("path={path}\n");
            w.request(3 + 2 * i, &refs(&late_fields(&path)), true);
            w.response(3 + 2 * i, &refs(&response(body.len())), false);
            w.server_data(3 + 2 * i, body.as_bytes(), true);
            out.push((w.client[c0..].to_vec(), w.server[s0..].to_vec()));
        }
        out
    }

    /// Feeds what the captured process sends and receives after `before` (transfers already
    /// made: direction, bytes) then [`late_h2`], then closes; `client`: it is the client.
    fn feed_late(
        t: &mut ConnTable,
        client: bool,
        before: &[(Direction, &[u8])],
        out: &mut Vec<Exchange>,
    ) {
        let (req, resp) = if client {
            (Direction::Egress, Direction::Ingress)
        } else {
            (Direction::Ingress, Direction::Egress)
        };
        let mut pos = [1000u64, 5000u64];
        let mut ts = 10;
        let mut send =
            |t: &mut ConnTable, dir: Direction, bytes: &[u8], out: &mut Vec<Exchange>| {
                t.on_event(data(dir, pos[dir.index()], bytes, ts), out);
                pos[dir.index()] += bytes.len() as u64;
                ts += 1;
            };
        for (dir, bytes) in before {
            send(t, *dir, bytes, out);
        }
        for (c, s) in late_h2() {
            send(t, req, &c, out);
            send(t, resp, &s, out);
        }
        t.on_event(
            Event::Close {
                conn: ID,
                ts_ns: ts,
            },
            out,
        );
    }

    /// Every late request once, with its own response; what is there is right, what is
    /// missing is flagged; the role is not claimed.
    fn assert_late_right(out: &[Exchange]) {
        let mut got: Vec<&Exchange> = out.iter().collect();
        got.sort_by(|a, b| a.request.target.cmp(&b.request.target));
        assert_eq!(got.len(), 5, "{out:#?}");
        for (i, ex) in got.iter().enumerate() {
            let path = format!("/late/{i}?n={i}");
            assert_eq!(ex.protocol, Protocol::H2);
            assert_eq!(ex.request.method, "GET", "{ex:#?}");
            assert_eq!(ex.request.target, path);
            assert!(ex.request.body.data.is_empty(), "{ex:#?}");
            assert!(
                header_value(&ex.request.headers, ":status").is_none(),
                "{ex:#?}"
            );
            // The marker was entered in the HPACK table by the request before the join: it is
            // there exactly when the table is known, and missing (flagged) when it is not.
            let marker = header_value(&ex.request.headers, "x-session-marker");
            match ex.incomplete {
                None => assert_eq!(marker, Some("m-1"), "{ex:#?}"),
                Some(Incomplete::HpackStateUnknown) => {
                    assert_eq!(marker, None, "a field from an unknown table: {ex:#?}");
                }
                Some(other) => panic!("incomplete {other:?}: {ex:#?}"),
            }
            let r = ex.response.as_ref().unwrap();
            assert_eq!(r.status, 200, "{ex:#?}");
            assert_eq!(r.body.data, format!("path={path}\n").as_bytes());
            assert!(header_value(&r.headers, ":method").is_none());
            assert_eq!(ex.conn.role, None, "the role is not guessed");
            assert_eq!((ex.conn.src, ex.conn.dst), (None, None));
        }
    }

    /// The end-to-end failure: the socket is gone from /proc when the daemon meets the
    /// connection, and the captured process is the client. Requests must not come out as
    /// responses.
    #[test]
    fn h2_mid_stream_client_with_role_unknown_is_not_swapped() {
        let (mut t, m) = gone_table();
        let mut out = Vec::new();
        feed_late(&mut t, true, &[], &mut out);
        assert_late_right(&out);
        assert_eq!(m.h2_connections_mid_stream.load(Relaxed), 1);
        assert_eq!(m.h2_undecided_bytes_dropped.load(Relaxed), 0);
        assert!(t.take_mutes().is_empty());
    }

    #[test]
    fn h2_mid_stream_server_with_role_unknown_is_right() {
        let (mut t, m) = gone_table();
        let mut out = Vec::new();
        feed_late(&mut t, false, &[], &mut out);
        assert_late_right(&out);
        assert_eq!(m.h2_undecided_bytes_dropped.load(Relaxed), 0);
    }

    /// The first transfers say nothing of the sides (WINDOW_UPDATE, PING ack, SETTINGS ack):
    /// they are held, and decoded once a request tells which end is the client.
    #[test]
    fn h2_mid_stream_role_unknown_holds_bytes_until_the_frames_tell() {
        let mut quiet = Vec::new();
        write_frame(&mut quiet, WINDOW_UPDATE, 0, 0, &[0, 0, 0x10, 0]);
        write_frame(&mut quiet, PING, FLAG_ACK, 0, &[7; 8]);
        let mut ack = Vec::new();
        write_frame(&mut ack, SETTINGS, FLAG_ACK, 0, &[]);
        for client in [true, false] {
            let (to_us, from_us) = if client {
                (Direction::Ingress, Direction::Egress)
            } else {
                (Direction::Egress, Direction::Ingress)
            };
            let (mut t, m) = gone_table();
            let mut out = Vec::new();
            feed_late(
                &mut t,
                client,
                &[(to_us, &quiet), (from_us, &ack), (to_us, &ack)],
                &mut out,
            );
            assert_late_right(&out);
            assert_eq!(m.h2_undecided_bytes_dropped.load(Relaxed), 0);
        }
    }

    /// Frames that never say which end is the client (bodies only) yield nothing, counted,
    /// rather than exchanges whose request and response may be swapped.
    #[test]
    fn h2_mid_stream_role_never_known_emits_nothing() {
        let (mut t, m) = gone_table();
        let mut out = Vec::new();
        let mut a = Vec::new();
        write_frame(&mut a, DATA, 0, 1, b"stream body, one way");
        write_frame(&mut a, DATA, 0, 1, b"more");
        let mut b = Vec::new();
        write_frame(&mut b, DATA, 0, 1, b"and the other way");
        write_frame(&mut b, WINDOW_UPDATE, 0, 1, &[0, 0, 1, 0]);
        t.on_event(data(Direction::Egress, 100, &a, 1), &mut out);
        t.on_event(data(Direction::Ingress, 100, &b, 2), &mut out);
        t.on_event(Event::Close { conn: ID, ts_ns: 3 }, &mut out);
        assert!(out.is_empty(), "{out:#?}");
        assert_eq!(
            m.h2_undecided_bytes_dropped.load(Relaxed),
            (a.len() + b.len()) as u64
        );
        assert_eq!(m.h2_connections_mid_stream.load(Relaxed), 1);
        assert!(t.take_mutes().is_empty());

        // Idle eviction drops them the same way.
        let (mut t, m) = gone_table();
        let mut out = Vec::new();
        t.on_event(data(Direction::Egress, 100, &a, 1), &mut out);
        t.tick(1 + 11_000_000_000, &mut out);
        assert!(out.is_empty());
        assert!(t.is_empty());
        assert_eq!(m.h2_undecided_bytes_dropped.load(Relaxed), a.len() as u64);
    }

    /// What is held is bounded by `--max-conn-buffer-bytes`: past it the bytes are dropped
    /// (counted), and decoding starts, out of frame sync, once the frames tell the sides.
    #[test]
    fn h2_mid_stream_role_unknown_hold_is_bounded() {
        let (mut t, m) = gone_table();
        let mut out = Vec::new();
        // A stream from before the capture, still sending a body to the captured client.
        let mut body = Vec::new();
        for _ in 0..4 {
            write_frame(&mut body, DATA, 0, 1, &[b'b'; 400]);
        }
        let cap = limits().max_conn_buffer_bytes;
        assert!(body.len() > cap);
        feed_late(
            &mut t,
            true,
            &[
                (Direction::Ingress, &body[..409 * 2]),
                (Direction::Ingress, &body[409 * 2..]),
            ],
            &mut out,
        );
        assert_late_right(&out);
        assert_eq!(
            m.h2_undecided_bytes_dropped.load(Relaxed),
            body.len() as u64
        );
    }

    /// HTTP/1 joined mid-way with the role unknown: the start lines say which direction is
    /// the request, whichever end the captured process is; the role is not claimed.
    #[test]
    fn h1_mid_stream_with_role_unknown_takes_sides_from_the_bytes() {
        for client in [true, false] {
            let (req, resp) = if client {
                (Direction::Egress, Direction::Ingress)
            } else {
                (Direction::Ingress, Direction::Egress)
            };
            let (mut t, _) = gone_table();
            let mut out = Vec::new();
            // The tail of a response body from before the capture comes first.
            let tail = b"...tail of an earlier body";
            t.on_event(data(resp, 700, tail, 1), &mut out);
            t.on_event(data(req, 300, REQ, 2), &mut out);
            t.on_event(data(resp, 700 + tail.len() as u64, RESP, 3), &mut out);
            t.on_event(Event::Close { conn: ID, ts_ns: 4 }, &mut out);
            assert_eq!(out.len(), 1, "{out:#?}");
            assert_eq!(out[0].request.method, "GET");
            assert_eq!(out[0].request.target, "/a");
            assert_eq!(out[0].response.as_ref().unwrap().status, 200);
            assert_eq!(out[0].response.as_ref().unwrap().body.data, b"ok");
            assert_eq!(out[0].conn.role, None);
        }
    }

    #[test]
    fn binary_that_is_not_h2_is_still_muted() {
        let (mut t, m) = server_table();
        let mut out = Vec::new();
        // One frame-like header whose length does not match: not claimed.
        let mut fake = Vec::new();
        write_frame(
            &mut fake,
            HEADERS,
            FLAG_END_HEADERS | FLAG_END_STREAM,
            1,
            &[0x82; 40],
        );
        fake.truncate(30);
        t.on_event(data(Direction::Ingress, 0, &fake, 1), &mut out);
        let mut pos = fake.len() as u64;
        let noise: Vec<u8> = (0..16_384u32).map(|i| (i * 7919 % 251) as u8 | 1).collect();
        while pos < SNIFF_LIMIT + 20_000 {
            t.on_event(data(Direction::Ingress, pos, &noise, 2), &mut out);
            pos += noise.len() as u64;
        }
        assert!(out.is_empty());
        assert_eq!(t.take_mutes().len(), 1);
        assert_eq!(m.connections_not_http.load(Relaxed), 1);
        assert_eq!(m.h2_connections_mid_stream.load(Relaxed), 0);
    }

    #[test]
    fn reorder_buffer_is_capped() {
        let (mut t, m) = server_table();
        let mut out = Vec::new();
        t.on_event(data(Direction::Ingress, 0, REQ, 1), &mut out);
        let big = vec![b'x'; 600];
        t.on_event(data(Direction::Ingress, 1000, &big, 2), &mut out);
        t.on_event(data(Direction::Ingress, 1600, &big, 3), &mut out);
        // 1200 pending bytes > the 1024 cap: the hole is given up on at once.
        assert_eq!(m.reorder_gaps.load(Relaxed), 1);
        assert_eq!(m.gap_bytes.load(Relaxed), 1000 - REQ.len() as u64);
    }
}
