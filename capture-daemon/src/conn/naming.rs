//! Naming a connection first seen mid-stream (opened before the daemon, or an fd whose
//! accept/connect was not seen): its endpoints and role from `/proc`, or muting it when the
//! fd is not a TCP socket.

use super::*;

impl ConnTable {
    /// Looks a connection first seen mid-stream up in /proc, now that its bytes look like HTTP;
    /// false (and the kernel is told to stop) when it is not a TCP connection after all.
    pub(super) fn name(&mut self, id: ConnId) -> bool {
        let proc_view = (self.classify)(id.tgid, id.fd);
        tracing::debug!(conn = %id, ?proc_view, "naming a connection seen mid-stream");
        let Some(conn) = self.conns.get_mut(&id) else {
            return false;
        };
        conn.unnamed = false;
        match proc_view {
            FdKind::Tcp {
                local,
                remote,
                role,
            } => {
                conn.meta.set_endpoints(role, local, remote);
                true
            }
            FdKind::NotTcp | FdKind::Listener { .. } => {
                conn.proto = Proto::Off;
                Metrics::add(&self.metrics.connections_muted, 1);
                self.mute(id);
                false
            }
            // Closed before we looked: decode anyway, without addresses.
            FdKind::Gone => true,
        }
    }
}

/// A listener bound to the wildcard address accepted on some local address; for a loopback
/// peer that is the loopback address, otherwise it stays unspecified (the port is still right).
pub(super) fn bound_address(listen: SocketAddr, peer: SocketAddr) -> SocketAddr {
    if listen.ip().is_unspecified() && peer.ip().is_loopback() {
        SocketAddr::new(peer.ip(), listen.port())
    } else {
        listen
    }
}
