//! Naming a captured fd from `/proc`: is it a TCP socket, what are its endpoints, and is the
//! process the client or the server. This also covers connections opened before the daemon
//! started, which the kernel side first sees mid-stream without an accept or connect.

use std::net::{IpAddr, SocketAddr};

use procfs::{
    net::{TcpNetEntry, TcpState},
    process::{FDTarget, Process},
};

use capture_model::exchange::Role;

/// What an fd turned out to be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FdKind {
    /// A TCP socket (IPv4 or IPv6).
    Tcp {
        local: SocketAddr,
        remote: SocketAddr,
        role: Role,
    },
    /// A listening TCP socket: nothing flows on it, but accepted connections share its address.
    Listener { local: SocketAddr },
    /// A file, pipe, unix socket, UDP socket...: nothing to capture.
    NotTcp,
    /// The process or fd is already gone, or the fd is a TCP socket no longer in the kernel's
    /// tables (reset or closed, the process not having closed the fd yet); nothing could be
    /// learnt.
    Gone,
}

/// Looks `fd` of `tgid` up in `/proc/<tgid>/fd` and the process's network namespace tables.
pub fn classify(tgid: u32, fd: u32) -> FdKind {
    let Ok(proc) = Process::new(tgid as i32) else {
        return FdKind::Gone;
    };
    let Ok(info) = proc.fd_from_fd(fd as i32) else {
        return FdKind::Gone;
    };
    let FDTarget::Socket(inode) = info.target else {
        return FdKind::NotTcp;
    };
    for table in [proc.tcp(), proc.tcp6()] {
        let Ok(entries) = table else {
            continue;
        };
        if let Some(kind) = find_in_table(&entries, inode) {
            return kind;
        }
    }
    // A TCP socket leaves the tables when it is reset or closed (state CLOSE), though the
    // process may still hold its fd: it is TCP, only nothing more can be learnt about it.
    socket_not_in_tables(tgid, fd)
}

/// A socket fd whose inode is in no TCP table: `Gone` if it is TCP (plain or MPTCP) or went
/// away meanwhile (the process exiting), else `NotTcp`. The kernel names the protocol of a
/// socket inode in its `system.sockprotoname` attribute.
fn socket_not_in_tables(tgid: u32, fd: u32) -> FdKind {
    let mut name = [0u8; 32];
    match rustix::fs::getxattr(
        format!("/proc/{tgid}/fd/{fd}"),
        "system.sockprotoname",
        &mut name,
    ) {
        Ok(len) => {
            let name = name[..len].strip_suffix(&[0]).unwrap_or(&name[..len]);
            if matches!(name, b"TCP" | b"TCPv6" | b"MPTCP" | b"MPTCPv6") {
                FdKind::Gone
            } else {
                FdKind::NotTcp
            }
        }
        // The fd or the process went away since it was found to be a socket.
        Err(rustix::io::Errno::NOENT | rustix::io::Errno::SRCH) => FdKind::Gone,
        Err(_) => FdKind::NotTcp,
    }
}

fn find_in_table(entries: &[TcpNetEntry], inode: u64) -> Option<FdKind> {
    let entry = entries.iter().find(|e| e.inode == inode)?;
    if entry.state == TcpState::Listen {
        return Some(FdKind::Listener {
            local: unmap(entry.local_address),
        });
    }
    let local = unmap(entry.local_address);
    // A connection whose local port is a listening port of this namespace was accepted.
    let role = if entries.iter().any(|e| {
        e.state == TcpState::Listen
            && e.local_address.port() == local.port()
            && (e.local_address.ip().is_unspecified() || unmap(e.local_address).ip() == local.ip())
    }) {
        Role::Server
    } else {
        Role::Client
    };
    Some(FdKind::Tcp {
        local,
        remote: unmap(entry.remote_address),
        role,
    })
}

/// Shows IPv4-mapped IPv6 addresses (dual-stack sockets) as the IPv4 address they are.
pub fn unmap(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), addr.port()),
            None => addr,
        },
        IpAddr::V4(_) => addr,
    }
}

#[cfg(test)]
mod tests {
    use std::{
        io::{Read as _, Write as _},
        net::{TcpListener, TcpStream},
        os::fd::AsRawFd as _,
    };

    use super::*;

    #[test]
    fn classifies_both_ends_of_a_real_connection() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mut client = TcpStream::connect(addr).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        client.write_all(b"x").unwrap();
        let mut b = [0u8; 1];
        server.read_exact(&mut b).unwrap();
        let me = std::process::id();

        let FdKind::Tcp {
            local,
            remote,
            role,
        } = classify(me, client.as_raw_fd() as u32)
        else {
            panic!("client socket not classified as TCP");
        };
        assert_eq!(role, Role::Client);
        assert_eq!(remote, addr);
        assert_eq!(local, client.local_addr().unwrap());

        let FdKind::Tcp {
            local,
            remote,
            role,
        } = classify(me, server.as_raw_fd() as u32)
        else {
            panic!("server socket not classified as TCP");
        };
        assert_eq!(role, Role::Server);
        assert_eq!(local, addr);
        assert_eq!(remote, client.local_addr().unwrap());
    }

    /// The peer reset the connection: the socket left /proc/net/tcp, the process still holds
    /// the fd. It must not be taken for something that is not TCP (and muted).
    #[test]
    fn reset_tcp_socket_is_gone_not_other() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        server.write_all(b"never read").unwrap();
        // Data left unread on close: the client's kernel sends a reset.
        drop(client);
        let mut b = [0u8; 1];
        assert!(server.read(&mut b).is_err(), "the reset arrived");
        assert_eq!(
            classify(std::process::id(), server.as_raw_fd() as u32),
            FdKind::Gone
        );
        let (unix, _) = std::os::unix::net::UnixStream::pair().unwrap();
        assert_eq!(
            classify(std::process::id(), unix.as_raw_fd() as u32),
            FdKind::NotTcp
        );
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        assert_eq!(
            classify(std::process::id(), udp.as_raw_fd() as u32),
            FdKind::NotTcp
        );
        // The fd went away between being found a socket and being asked what kind (the
        // process exiting): gone, not something else. (A number no fd has: a closed one
        // could be reused by a test running alongside.)
        assert_eq!(
            socket_not_in_tables(std::process::id(), 100_000),
            FdKind::Gone
        );
        assert_eq!(socket_not_in_tables(u32::MAX, 3), FdKind::Gone);
    }

    #[test]
    fn files_and_missing_fds_are_not_tcp() {
        let f = tempfile::tempfile().unwrap();
        assert_eq!(
            classify(std::process::id(), f.as_raw_fd() as u32),
            FdKind::NotTcp
        );
        assert_eq!(classify(std::process::id(), 100_000), FdKind::Gone);
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        assert_eq!(
            classify(std::process::id(), l.as_raw_fd() as u32),
            FdKind::Listener {
                local: l.local_addr().unwrap()
            }
        );
    }
}
