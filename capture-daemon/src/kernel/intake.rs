//! Ring-buffer records to typed events. The layout is `capture_common::EventHeader` followed by
//! the payload; fields are decoded one by one from native-endian bytes, so a short or foreign
//! record is an error, never undefined behaviour.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use capture_common::{EVENT_HEADER_LEN, direction, flags, kind};

use capture_model::exchange::Role;

/// One connection: (tgid, fd, generation). The generation changes when the fd is reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId {
    pub tgid: u32,
    pub fd: u32,
    pub generation: u64,
}

impl std::fmt::Display for ConnId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}", self.tgid, self.fd, self.generation)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Received by the captured process.
    Ingress = 0,
    /// Sent by the captured process.
    Egress = 1,
}

impl Direction {
    pub fn index(self) -> usize {
        self as usize
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// `len` bytes at `pos`; the first `payload.len()` of them were captured, the rest is a gap.
    Data {
        conn: ConnId,
        direction: Direction,
        pos: u64,
        len: u64,
        payload: &'a [u8],
        ts_ns: u64,
        /// sendfile: the payload never passed through user memory.
        uncopyable: bool,
        /// cgroup v2 id of the process that made the syscall.
        cgroup_id: u64,
    },
    Open {
        conn: ConnId,
        role: Option<Role>,
        peer: Option<SocketAddr>,
        /// The socket hooks read the local end from the socket itself; the syscall hook
        /// leaves it to /proc.
        local: Option<SocketAddr>,
        /// accept: the listening fd, whose address is this connection's local one.
        listen_fd: Option<u32>,
        ts_ns: u64,
        cgroup_id: u64,
    },
    Close {
        conn: ConnId,
        ts_ns: u64,
    },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MalformedEvent {
    #[error("record of {0} bytes is shorter than an event header")]
    Short(usize),
    #[error("record announces {announced} payload bytes but carries {present}")]
    PayloadLength { announced: usize, present: usize },
    #[error("unknown event kind {0}")]
    Kind(u8),
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_ne_bytes([b[at], b[at + 1]])
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_ne_bytes(a)
}

/// Parses one ring-buffer record. Offsets follow `capture_common::EventHeader`.
pub fn parse(record: &[u8]) -> Result<Event<'_>, MalformedEvent> {
    if record.len() < EVENT_HEADER_LEN {
        return Err(MalformedEvent::Short(record.len()));
    }
    let ev_kind = record[0];
    let dir = record[1];
    let ev_flags = u16_at(record, 2);
    let conn = ConnId {
        fd: u32_at(record, 4),
        tgid: u32_at(record, 8),
        generation: u64_at(record, 16),
    };
    let pos = u64_at(record, 24);
    let len = u64::from(u32_at(record, 32));
    let cap_len = u32_at(record, 36) as usize;
    let ts_ns = u64_at(record, 40);
    let cgroup_id = u64_at(record, 48);
    let body = &record[EVENT_HEADER_LEN..];
    if body.len() < cap_len {
        return Err(MalformedEvent::PayloadLength {
            announced: cap_len,
            present: body.len(),
        });
    }
    let payload = &body[..cap_len];
    match ev_kind {
        kind::DATA => Ok(Event::Data {
            conn,
            direction: if dir == direction::EGRESS {
                Direction::Egress
            } else {
                Direction::Ingress
            },
            pos,
            len,
            payload,
            ts_ns,
            uncopyable: ev_flags & flags::UNCOPYABLE != 0,
            cgroup_id,
        }),
        kind::OPEN => {
            let role = if ev_flags & flags::ROLE_SERVER != 0 {
                Some(Role::Server)
            } else if ev_flags & flags::ROLE_CLIENT != 0 {
                Some(Role::Client)
            } else {
                None
            };
            let listen_fd = (payload.len() >= 8)
                .then(|| u32_at(payload, 4))
                .filter(|&fd| fd != capture_common::NO_FD);
            let local = if ev_flags & flags::ENDPOINTS != 0 {
                payload.get(24..).and_then(sockaddr)
            } else {
                None
            };
            Ok(Event::Open {
                conn,
                role,
                peer: sockaddr(payload),
                local,
                listen_fd,
                ts_ns,
                cgroup_id,
            })
        }
        kind::CLOSE => Ok(Event::Close { conn, ts_ns }),
        other => Err(MalformedEvent::Kind(other)),
    }
}

/// `capture_common::SockAddr`: family u16, port (network order) u16, listen fd u32, address
/// [u8; 16].
fn sockaddr(b: &[u8]) -> Option<SocketAddr> {
    if b.len() < 24 {
        return None;
    }
    let family = u16_at(b, 0);
    let port = u16::from_be_bytes([b[2], b[3]]);
    let ip = match family {
        2 => IpAddr::V4(Ipv4Addr::new(b[8], b[9], b[10], b[11])),
        10 => {
            let mut a = [0u8; 16];
            a.copy_from_slice(&b[8..24]);
            IpAddr::V6(Ipv6Addr::from(a))
        }
        _ => return None,
    };
    Some(crate::kernel::procnet::unmap(SocketAddr::new(ip, port)))
}

/// Encodes an event the way the kernel lays it out: the inverse of [`parse`], for tests and for
/// the pipeline benchmark, which replay records without a kernel.
pub fn encode(h: &capture_common::EventHeader, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(EVENT_HEADER_LEN + payload.len());
    v.push(h.kind);
    v.push(h.direction);
    v.extend_from_slice(&h.flags.to_ne_bytes());
    v.extend_from_slice(&h.fd.to_ne_bytes());
    v.extend_from_slice(&h.tgid.to_ne_bytes());
    v.extend_from_slice(&h.tid.to_ne_bytes());
    v.extend_from_slice(&h.generation.to_ne_bytes());
    v.extend_from_slice(&h.pos.to_ne_bytes());
    v.extend_from_slice(&h.len.to_ne_bytes());
    v.extend_from_slice(&h.cap_len.to_ne_bytes());
    v.extend_from_slice(&h.ts_ns.to_ne_bytes());
    v.extend_from_slice(&h.cgroup_id.to_ne_bytes());
    debug_assert_eq!(v.len(), EVENT_HEADER_LEN);
    v.extend_from_slice(payload);
    v
}

#[cfg(test)]
pub(crate) mod tests {
    use capture_common::EventHeader;

    use super::*;

    pub(crate) use super::encode as record;

    #[test]
    fn data_event_round_trips() {
        let h = EventHeader {
            kind: kind::DATA,
            direction: direction::EGRESS,
            fd: 7,
            tgid: 42,
            generation: 99,
            pos: 1000,
            len: 10,
            cap_len: 4,
            ts_ns: 5,
            cgroup_id: 1234,
            ..Default::default()
        };
        let r = record(&h, b"GET ");
        let Event::Data {
            conn,
            direction,
            pos,
            len,
            payload,
            ts_ns,
            uncopyable,
            cgroup_id,
        } = parse(&r).unwrap()
        else {
            panic!("not data");
        };
        assert_eq!(
            conn,
            ConnId {
                tgid: 42,
                fd: 7,
                generation: 99
            }
        );
        assert_eq!(
            (direction, pos, len, payload, ts_ns, uncopyable, cgroup_id),
            (Direction::Egress, 1000, 10, &b"GET "[..], 5, false, 1234)
        );
    }

    #[test]
    fn open_event_carries_role_and_peer() {
        let h = EventHeader {
            kind: kind::OPEN,
            flags: flags::ROLE_CLIENT,
            cap_len: 24,
            ..Default::default()
        };
        let mut sa = vec![0u8; 24];
        sa[..2].copy_from_slice(&2u16.to_ne_bytes());
        sa[2..4].copy_from_slice(&8080u16.to_be_bytes());
        sa[8..12].copy_from_slice(&[127, 0, 0, 1]);
        let r = record(&h, &sa);
        assert_eq!(
            parse(&r).unwrap(),
            Event::Open {
                conn: ConnId {
                    tgid: 0,
                    fd: 0,
                    generation: 0
                },
                role: Some(Role::Client),
                peer: Some("127.0.0.1:8080".parse().unwrap()),
                local: None,
                listen_fd: Some(0),
                ts_ns: 0,
                cgroup_id: 0,
            }
        );
    }

    /// The socket hooks' OPEN: both ends, the local one after the peer; the record may be
    /// longer than the event.
    #[test]
    fn open_event_from_the_socket_carries_both_ends() {
        let h = EventHeader {
            kind: kind::OPEN,
            flags: flags::ROLE_SERVER | flags::ENDPOINTS,
            cap_len: 48,
            ..Default::default()
        };
        let mut sa = vec![0u8; 64];
        sa[..2].copy_from_slice(&2u16.to_ne_bytes());
        sa[2..4].copy_from_slice(&40000u16.to_be_bytes());
        sa[4..8].copy_from_slice(&capture_common::NO_FD.to_ne_bytes());
        sa[8..12].copy_from_slice(&[10, 0, 0, 2]);
        sa[24..26].copy_from_slice(&10u16.to_ne_bytes());
        sa[26..28].copy_from_slice(&443u16.to_be_bytes());
        sa[32..48].copy_from_slice(&std::net::Ipv6Addr::LOCALHOST.octets());
        let Event::Open {
            role,
            peer,
            local,
            listen_fd,
            ..
        } = parse(&record(&h, &sa)).unwrap()
        else {
            panic!("not open");
        };
        assert_eq!(role, Some(Role::Server));
        assert_eq!(peer, Some("10.0.0.2:40000".parse().unwrap()));
        assert_eq!(local, Some("[::1]:443".parse().unwrap()));
        assert_eq!(listen_fd, None);
    }

    #[test]
    fn short_and_lying_records_are_errors() {
        assert_eq!(parse(&[0u8; 10]), Err(MalformedEvent::Short(10)));
        let h = EventHeader {
            kind: kind::DATA,
            cap_len: 100,
            ..Default::default()
        };
        assert_eq!(
            parse(&record(&h, b"abc")),
            Err(MalformedEvent::PayloadLength {
                announced: 100,
                present: 3
            })
        );
        let h = EventHeader {
            kind: 77,
            ..Default::default()
        };
        assert_eq!(parse(&record(&h, b"")), Err(MalformedEvent::Kind(77)));
    }
}
