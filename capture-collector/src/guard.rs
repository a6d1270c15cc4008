//! What keeps a hostile client from wearing the collector down: a per-peer limit on failed
//! authentications, and a limit on how many refusal audit lines are written.
//!
//! Failed authentications are counted per peer IP address (an IPv6 peer by its /64) in a
//! token bucket: a peer may fail
//! `burst` times in a row, then gets one more try every `60 / per_minute` seconds. While its
//! bucket is empty every call from that address is refused (`RESOURCE_EXHAUSTED`) before its
//! token is looked at, valid or not, so guessing costs the collector no HMAC and the guesser
//! gets nowhere. At most `max_peers` addresses are tracked; when the table is full of peers
//! still being limited, a new address is not tracked (counted): the table never grows past
//! its cap.
//!
//! Refusals are audited, but a flood of them would flood the log: at most
//! `audit_per_second` refusal lines are written in each second; the rest are counted, and
//! the next line written says how many were left out.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::Mutex,
    time::{Duration, Instant},
};

/// The address a peer's failures are counted under: IPv4 as is (and IPv4-mapped IPv6 as its
/// IPv4), IPv6 by its /64, which one host or one network usually holds whole, so rotating
/// through a prefix's addresses gains nothing.
pub fn peer_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// The limits of [`PeerLimiter`] and [`AuditLimiter`]; each is a flag of `serve`.
#[derive(Clone, Debug)]
pub struct AuthLimits {
    /// Failed authentications a peer may make in a row (`--auth-failure-burst`).
    pub burst: u32,
    /// Failed authentications a peer regains per minute (`--auth-failures-per-minute`).
    pub per_minute: u32,
    /// Peer addresses tracked at most (`--auth-max-peers`).
    pub max_peers: usize,
    /// Refusal audit lines written per second at most (`--audit-refusals-per-second`).
    pub audit_per_second: u32,
}

impl Default for AuthLimits {
    fn default() -> Self {
        Self {
            burst: 20,
            per_minute: 60,
            max_peers: 65_536,
            audit_per_second: 50,
        }
    }
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// What [`PeerLimiter::allow`] decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerState {
    Allowed,
    Limited,
}

pub struct PeerLimiter {
    burst: f64,
    per_second: f64,
    max_peers: usize,
    peers: Mutex<HashMap<IpAddr, Bucket>>,
}

impl PeerLimiter {
    pub fn new(limits: &AuthLimits) -> Self {
        Self {
            burst: f64::from(limits.burst.max(1)),
            per_second: f64::from(limits.per_minute) / 60.0,
            max_peers: limits.max_peers.max(1),
            peers: Mutex::new(HashMap::new()),
        }
    }

    fn refill(&self, bucket: &mut Bucket, now: Instant) {
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.per_second).min(self.burst);
        bucket.at = now;
    }

    /// Whether `peer` may try to authenticate now.
    pub fn allow(&self, peer: IpAddr, now: Instant) -> PeerState {
        let peer = peer_key(peer);
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        match peers.get_mut(&peer) {
            None => PeerState::Allowed,
            Some(bucket) => {
                self.refill(bucket, now);
                if bucket.tokens >= 1.0 {
                    PeerState::Allowed
                } else {
                    PeerState::Limited
                }
            }
        }
    }

    /// Records a failed authentication by `peer`. Returns `false` when the table was full and
    /// the peer is not tracked.
    pub fn failed(&self, peer: IpAddr, now: Instant) -> bool {
        let peer = peer_key(peer);
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        if !peers.contains_key(&peer) && peers.len() >= self.max_peers {
            // Forget the peers whose bucket has refilled: they are as good as new.
            let (burst, per_second) = (self.burst, self.per_second);
            peers.retain(|_, b| {
                let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
                b.tokens + elapsed * per_second < burst
            });
            if peers.len() >= self.max_peers {
                return false;
            }
        }
        let bucket = peers.entry(peer).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        self.refill(bucket, now);
        bucket.tokens = (bucket.tokens - 1.0).max(0.0);
        true
    }

    /// Addresses tracked now.
    pub fn tracked(&self) -> usize {
        self.peers.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// Whether to write a refusal audit line, and how many were left out before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuditDecision {
    /// Write it; `suppressed_before` lines were left out since the last one written.
    Write {
        suppressed_before: u64,
    },
    Suppress,
}

pub struct AuditLimiter {
    per_second: u32,
    state: Mutex<AuditWindow>,
}

struct AuditWindow {
    start: Option<Instant>,
    written: u32,
    suppressed: u64,
}

impl AuditLimiter {
    pub fn new(per_second: u32) -> Self {
        Self {
            per_second: per_second.max(1),
            state: Mutex::new(AuditWindow {
                start: None,
                written: 0,
                suppressed: 0,
            }),
        }
    }

    pub fn decide(&self, now: Instant) -> AuditDecision {
        let mut w = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if w.start
            .is_none_or(|s| now.saturating_duration_since(s) >= Duration::from_secs(1))
        {
            w.start = Some(now);
            w.written = 0;
        }
        if w.written < self.per_second {
            w.written += 1;
            let suppressed_before = std::mem::take(&mut w.suppressed);
            AuditDecision::Write { suppressed_before }
        } else {
            w.suppressed += 1;
            AuditDecision::Suppress
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_is_limited_after_its_burst_and_recovers_at_the_rate() {
        let limits = AuthLimits {
            burst: 3,
            per_minute: 60,
            max_peers: 2,
            audit_per_second: 1,
        };
        let l = PeerLimiter::new(&limits);
        let t0 = Instant::now();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        for _ in 0..3 {
            assert_eq!(l.allow(a, t0), PeerState::Allowed);
            assert!(l.failed(a, t0));
        }
        assert_eq!(l.allow(a, t0), PeerState::Limited);
        // Another peer is not affected.
        assert_eq!(l.allow(b, t0), PeerState::Allowed);
        // One try back per second (60 a minute).
        assert_eq!(
            l.allow(a, t0 + Duration::from_millis(500)),
            PeerState::Limited
        );
        assert_eq!(
            l.allow(a, t0 + Duration::from_millis(1000)),
            PeerState::Allowed
        );
        assert!(l.failed(a, t0 + Duration::from_millis(1000)));
        assert_eq!(
            l.allow(a, t0 + Duration::from_millis(1500)),
            PeerState::Limited
        );
        // The table is capped: a third peer is not tracked while two are limited...
        assert!(l.failed(b, t0));
        let c: IpAddr = "10.0.0.3".parse().unwrap();
        assert!(!l.failed(c, t0));
        assert_eq!(l.tracked(), 2);
        // ...and is once the others have recovered.
        assert!(l.failed(c, t0 + Duration::from_secs(10)));
        assert_eq!(l.tracked(), 1);
    }

    #[test]
    fn ipv6_peers_count_by_their_64() {
        let l = PeerLimiter::new(&AuthLimits {
            burst: 2,
            per_minute: 1,
            max_peers: 16,
            audit_per_second: 1,
        });
        let t0 = Instant::now();
        assert!(l.failed("2001:db8:1:2::1".parse().unwrap(), t0));
        assert!(l.failed("2001:db8:1:2:ffff::9".parse().unwrap(), t0));
        assert_eq!(
            l.allow("2001:db8:1:2::77".parse().unwrap(), t0),
            PeerState::Limited
        );
        assert_eq!(
            l.allow("2001:db8:1:3::1".parse().unwrap(), t0),
            PeerState::Allowed
        );
        assert_eq!(
            peer_key("::ffff:10.1.2.3".parse().unwrap()),
            "10.1.2.3".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn audit_lines_are_capped_per_second_and_the_gap_is_told() {
        let l = AuditLimiter::new(2);
        let t0 = Instant::now();
        assert_eq!(
            l.decide(t0),
            AuditDecision::Write {
                suppressed_before: 0
            }
        );
        assert_eq!(
            l.decide(t0),
            AuditDecision::Write {
                suppressed_before: 0
            }
        );
        for _ in 0..5 {
            assert_eq!(l.decide(t0), AuditDecision::Suppress);
        }
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(
            l.decide(t1),
            AuditDecision::Write {
                suppressed_before: 5
            }
        );
        assert_eq!(
            l.decide(t1),
            AuditDecision::Write {
                suppressed_before: 0
            }
        );
    }
}
