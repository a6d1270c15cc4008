//! Types shared by the kernel programs (`capture-ebpf`, `no_std`) and the daemon.
//!
//! Everything here is `#[repr(C)]` and plain data: the kernel writes these bytes into the ring
//! buffer and maps, user space reads them back. With the `user` feature each type also
//! implements `aya::Pod`. Change a layout here and both sides change with it; `EVENT_ABI`
//! guards against a daemon reading an object built from another layout.
#![no_std]

pub mod arch;

/// Bumped whenever a layout below changes.
pub const EVENT_ABI: u32 = 3;

/// Largest payload copied into one data event. A transfer larger than this is split into
/// several chunk events, each with its own byte position.
pub const MAX_CHUNK: usize = 16 * 1024;
/// Default bound on chunk events one syscall may produce (4 MiB); the daemon sets the real one
/// at load. Bytes beyond it are reported as a gap, never dropped silently.
pub const MAX_CHUNKS_PER_CALL: u32 = 256;
/// Default bound on iovecs walked for readv/writev/recvmsg/sendmsg; the rest is a gap.
pub const MAX_IOVECS: u32 = 64;
/// Upper bound on chunks + iovecs per syscall: `bpf_loop` accepts at most 1 << 23 iterations.
pub const MAX_LOOP_STEPS: u32 = 1 << 23;
/// Upper bound on chunks + iovecs per syscall on kernels without `bpf_loop` (before 5.17),
/// where the verifier walks every step of the copy loop: a limit of the kernel, not of the
/// configuration. Bytes past it are a gap, counted as a truncation.
pub const UNROLLED_STEPS: u32 = 64;

/// Event kinds, in `EventHeader::kind`.
pub mod kind {
    /// Bytes transferred on a connection; `cap_len` of them follow the header.
    pub const DATA: u8 = 1;
    /// A connection opened by `connect` (client) or `accept` (server); a `SockAddr` follows.
    pub const OPEN: u8 = 2;
    /// The fd was closed; the connection is over.
    pub const CLOSE: u8 = 3;
}

/// Directions, in `EventHeader::direction`.
pub mod direction {
    /// Bytes the process received (read, recv*).
    pub const INGRESS: u8 = 0;
    /// Bytes the process sent (write, send*).
    pub const EGRESS: u8 = 1;
}

/// Flags, in `EventHeader::flags`.
pub mod flags {
    /// OPEN: the process accepted this connection (it is the server).
    pub const ROLE_SERVER: u16 = 1 << 0;
    /// OPEN: the process connected out (it is the client).
    pub const ROLE_CLIENT: u16 = 1 << 1;
    /// DATA: the bytes went through a path whose payload is not copied (sendfile), so the whole
    /// event is a gap by design rather than by a limit.
    pub const UNCOPYABLE: u16 = 1 << 2;
    /// DATA: a limit (iovec count, chunks per call) cut the copy short.
    pub const LIMIT_HIT: u16 = 1 << 3;
    /// DATA: reading the user buffer failed (page not present); the bytes are a gap.
    pub const READ_FAILED: u16 = 1 << 4;
    /// OPEN: the kernel named both ends from the socket itself (the `local` half of
    /// `OpenAddrs` is filled), so user space need not look the connection up in /proc.
    pub const ENDPOINTS: u16 = 1 << 5;
}

/// Fixed header of every ring-buffer event. Followed by `cap_len` payload bytes (DATA) or an
/// `OpenAddrs` (OPEN). The ring record may be longer than the header and `cap_len` (the kernel
/// reserves records in a few fixed sizes and copies the payload into them in place); the bytes
/// past `cap_len` mean nothing.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventHeader {
    pub kind: u8,
    pub direction: u8,
    pub flags: u16,
    /// The file descriptor in the process (`tgid`).
    pub fd: u32,
    pub tgid: u32,
    pub tid: u32,
    /// Changes whenever `fd` is closed and reused, so (tgid, fd, generation) names one connection.
    pub generation: u64,
    /// Byte position of the first byte of this event within its direction of the connection.
    pub pos: u64,
    /// Bytes this event stands for on the wire.
    pub len: u32,
    /// Bytes of payload present after the header (`cap_len <= len`); the rest is a gap.
    pub cap_len: u32,
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) at syscall exit.
    pub ts_ns: u64,
    pub cgroup_id: u64,
}

pub const EVENT_HEADER_LEN: usize = core::mem::size_of::<EventHeader>();

/// `SockAddr::listen_fd` when there is none.
pub const NO_FD: u32 = u32::MAX;

/// Address carried by an OPEN event: the peer passed to `connect` or returned by `accept`.
/// `family` is `AF_INET` (2) or `AF_INET6` (10); zero when the process gave no address buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockAddr {
    pub family: u16,
    /// Network byte order, as in `sockaddr_in`.
    pub port_be: u16,
    /// accept: the listening fd the connection came from (its address is the local one);
    /// `NO_FD` otherwise.
    pub listen_fd: u32,
    /// IPv4 in the first 4 bytes, or IPv6.
    pub addr: [u8; 16],
}

/// Payload of an OPEN event: the peer (from connect/accept, or from the socket) and, with
/// `flags::ENDPOINTS`, the local address read from the socket; `family == 0` when unknown.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OpenAddrs {
    pub peer: SockAddr,
    pub local: SockAddr,
}

/// Key of the per-connection state map and of the switch-off map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ConnKey {
    pub tgid: u32,
    pub fd: u32,
}

/// Per-connection state kept by the kernel: identity generation and the byte position of each
/// direction, advanced by every transfer whether or not its bytes were copied.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnState {
    pub generation: u64,
    /// Indexed by `direction::*`.
    pub pos: [u64; 2],
    /// Set by user space (through `MUTED`) when the fd is not a TCP socket, or by the kernel
    /// when the socket is not an IP socket.
    pub muted: u32,
    pub _pad: u32,
    /// Socket hooks: the `struct sock` this fd named when the generation began. A transfer on
    /// the same fd through another socket means the fd was closed and reused: a new generation.
    /// Zero on the syscall hook, which sees only fds.
    pub sk: u64,
}

/// Key of the `MUTED` map: user space mutes one generation of one fd, so a reused fd number is
/// never muted by mistake.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct MutedKey {
    pub tgid: u32,
    pub fd: u32,
    pub generation: u64,
}

/// Indexes of the per-CPU `COUNTERS` array.
pub mod counter {
    /// Ring-buffer output failed: the event (and its bytes) never reached user space.
    pub const EVENTS_LOST: u32 = 0;
    pub const BYTES_LOST: u32 = 1;
    /// Chunks whose copy was cut short by a limit (`flags::LIMIT_HIT`).
    pub const TRUNCATIONS: u32 = 2;
    /// Events handed to the ring buffer.
    pub const EVENTS: u32 = 4;
    /// Connection-state map full: a transfer on an untracked fd could not be followed.
    pub const CONN_TABLE_FULL: u32 = 5;
    /// Socket hooks: socket I/O of a target process through a syscall whose buffers the
    /// programs do not walk (sendmmsg, recvmmsg, splice, io_uring); its bytes are not seen.
    pub const UNKNOWN_SYSCALL: u32 = 6;
    pub const COUNT: u32 = 8;
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: all four are `#[repr(C)]`, made only of integers and byte arrays, with explicit
    // padding fields, so every bit pattern is a valid value.
    unsafe impl aya::Pod for super::ConnKey {}
    unsafe impl aya::Pod for super::ConnState {}
    unsafe impl aya::Pod for super::MutedKey {}
    unsafe impl aya::Pod for super::EventHeader {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(EVENT_HEADER_LEN, 56);
        assert_eq!(core::mem::size_of::<SockAddr>(), 24);
        assert_eq!(core::mem::size_of::<ConnState>(), 40);
        assert_eq!(core::mem::size_of::<OpenAddrs>(), 48);
        assert_eq!(core::mem::size_of::<MutedKey>(), 16);
    }
}
