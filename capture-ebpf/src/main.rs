//! Syscall tracepoints that copy the socket traffic of opted-in cgroups into a ring buffer.
//!
//! Every program starts with the same filter: the current cgroup must be in `TARGET_CGROUPS`,
//! otherwise it returns at once. `sys_enter_*` stashes the arguments by `pid_tgid`; `sys_exit_*`
//! reads the return value (the bytes actually transferred), advances the connection's byte
//! position and copies those bytes out in chunk events. Whatever cannot be copied (a limit, a
//! failed read, sendfile) still produces an event with `cap_len < len`, so user space sees
//! every byte position either as data or as a gap.
#![no_std]
#![no_main]

use aya_ebpf::{
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_user,
        bpf_probe_read_user_buf, generated::bpf_loop,
    },
    macros::{map, tracepoint},
    maps::{HashMap, LruHashMap, PerCpuArray, RingBuf},
    programs::TracePointContext,
};
use aya_log_ebpf::warn;
use capture_common::{
    ConnKey, ConnState, EVENT_HEADER_LEN, EventHeader, MAX_CHUNK, MAX_CHUNKS_PER_CALL, MAX_IOVECS,
    MutedKey, NO_FD, SockAddr, counter, direction, flags, kind,
};

/// cgroup v2 ids (directory inode numbers) to capture; user space keeps it equal to the
/// opted-in set. Value unused.
#[map]
static TARGET_CGROUPS: HashMap<u64, u8> = HashMap::with_max_entries(4096, 0);

/// Arguments stashed by sys_enter, keyed by `pid_tgid`, taken back by sys_exit.
#[map]
static ARGS: HashMap<u64, SyscallArgs> = HashMap::with_max_entries(16384, 0);

/// Per-connection generation and byte positions. LRU so that fds of processes that died
/// without closing them are recycled rather than filling the map.
#[map]
static CONNS: LruHashMap<ConnKey, ConnState> = LruHashMap::with_max_entries(65536, 0);

/// Connections user space found not to be TCP sockets (files, pipes, UDP, unix sockets).
#[map]
static MUTED: LruHashMap<MutedKey, u8> = LruHashMap::with_max_entries(65536, 0);

/// Events to user space. User space may resize it at load time (`--ring-buffer-bytes`).
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(16 * 1024 * 1024, 0);

#[map]
static SCRATCH: PerCpuArray<EventBuf> = PerCpuArray::with_max_entries(1, 0);

#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

/// What a stashed syscall moves its bytes through.
mod args_kind {
    /// `buf`, `count`: read, write, recvfrom, sendto.
    pub const BUF: u8 = 1;
    /// `buf` is a `struct iovec *`, `count` the iovec count: readv, writev, recvmsg, sendmsg.
    pub const IOV: u8 = 2;
    /// `buf` is the peer `struct sockaddr *` given to connect.
    pub const CONNECT: u8 = 3;
    /// `buf` is the `struct sockaddr *` accept fills in (may be null).
    pub const ACCEPT: u8 = 4;
    /// sendfile: bytes move kernel-side; only their count is known.
    pub const SENDFILE: u8 = 5;
}

#[repr(C)]
#[derive(Clone, Copy)]
struct SyscallArgs {
    kind: u8,
    _pad: [u8; 3],
    fd: u32,
    buf: u64,
    count: u64,
}

#[repr(C)]
struct EventBuf {
    header: EventHeader,
    data: [u8; MAX_CHUNK],
}

// syscall tracepoint layout (see /sys/kernel/tracing/events/syscalls/*/format): the common
// header and `__syscall_nr` take 16 bytes, then six 8-byte argument slots; on exit `ret` is at 16.
const ARG0: usize = 16;
/// Passed to `stash` for an argument the syscall does not have.
const NO_ARG: usize = 6;
const RET: usize = 16;
const EINPROGRESS: i64 = 115;
const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;

#[inline(always)]
fn arg(ctx: &TracePointContext, n: usize) -> u64 {
    // SAFETY: every syscalls/sys_enter_* tracepoint has six 8-byte argument slots from ARG0 on;
    // read_at goes through bpf_probe_read, so a bad offset yields Err, not a fault.
    unsafe { ctx.read_at::<u64>(ARG0 + 8 * n) }.unwrap_or(0)
}

#[inline(always)]
fn ret(ctx: &TracePointContext) -> i64 {
    // SAFETY: as in `arg`, for sys_exit_* `ret` at offset 16.
    unsafe { ctx.read_at::<i64>(RET) }.unwrap_or(-1)
}

#[inline(always)]
fn bump(index: u32, by: u64) {
    if let Some(c) = COUNTERS.get_ptr_mut(index) {
        // SAFETY: per-CPU slot, only this CPU writes it while the program runs.
        unsafe { *c += by };
    }
}

/// The filter every program starts with.
#[inline(always)]
fn targeted() -> bool {
    let cgroup = unsafe { bpf_get_current_cgroup_id() };
    // SAFETY: the value is only tested for presence.
    unsafe { TARGET_CGROUPS.get(&cgroup) }.is_some()
}

#[inline(always)]
fn stash(
    ctx: &TracePointContext,
    kind: u8,
    fd_arg: usize,
    buf_arg: usize,
    count_arg: usize,
) -> u32 {
    if !targeted() {
        return 0;
    }
    let args = SyscallArgs {
        kind,
        _pad: [0; 3],
        fd: arg(ctx, fd_arg) as u32,
        buf: if buf_arg < NO_ARG {
            arg(ctx, buf_arg)
        } else {
            0
        },
        count: if count_arg < NO_ARG {
            arg(ctx, count_arg)
        } else {
            0
        },
    };
    let _ = ARGS.insert(&bpf_get_current_pid_tgid(), &args, 0);
    0
}

/// `struct user_msghdr`: msg_iov at 16, msg_iovlen at 24.
#[inline(always)]
fn stash_msg(ctx: &TracePointContext) -> u32 {
    if !targeted() {
        return 0;
    }
    let msg = arg(ctx, 1);
    // SAFETY: user memory is read with bpf_probe_read_user, which fails cleanly on bad pointers.
    let iov = unsafe { bpf_probe_read_user((msg + 16) as *const u64) }.unwrap_or(0);
    let iovlen = unsafe { bpf_probe_read_user((msg + 24) as *const u64) }.unwrap_or(0);
    let args = SyscallArgs {
        kind: args_kind::IOV,
        _pad: [0; 3],
        fd: arg(ctx, 0) as u32,
        buf: iov,
        count: iovlen,
    };
    let _ = ARGS.insert(&bpf_get_current_pid_tgid(), &args, 0);
    0
}

/// Takes back what sys_enter stashed for this thread.
#[inline(always)]
fn take_args() -> Option<SyscallArgs> {
    if !targeted() {
        return None;
    }
    let id = bpf_get_current_pid_tgid();
    // SAFETY: the value is copied out before the entry is removed.
    let args = unsafe { ARGS.get(&id) }.copied();
    match args {
        Some(a) => {
            let _ = ARGS.remove(&id);
            Some(a)
        }
        None => {
            bump(counter::ARGS_MISSING, 1);
            None
        }
    }
}

/// Starts a new generation of (tgid, fd): after accept/connect, or on the first transfer of a
/// connection opened before capture began.
#[inline(always)]
fn new_conn(key: &ConnKey) -> Option<*mut ConnState> {
    let state = ConnState {
        generation: unsafe { bpf_ktime_get_ns() },
        pos: [0, 0],
        muted: 0,
        _pad: 0,
    };
    if CONNS.insert(key, &state, 0).is_err() {
        bump(counter::CONN_TABLE_FULL, 1);
        return None;
    }
    CONNS.get_ptr_mut(key)
}

/// The connection state for a transfer, or None when the fd is muted or untrackable.
#[inline(always)]
fn conn_for_transfer(key: &ConnKey) -> Option<*mut ConnState> {
    let state = match CONNS.get_ptr_mut(key) {
        Some(s) => s,
        None => new_conn(key)?,
    };
    // SAFETY: map value pointers stay valid for the duration of the program.
    let generation = unsafe { (*state).generation };
    if unsafe { (*state).muted } != 0 {
        return None;
    }
    let muted_key = MutedKey {
        tgid: key.tgid,
        fd: key.fd,
        generation,
    };
    // SAFETY: presence test only.
    if unsafe { MUTED.get(&muted_key) }.is_some() {
        unsafe { (*state).muted = 1 };
        return None;
    }
    Some(state)
}

#[inline(always)]
fn header(key: &ConnKey, generation: u64, dir: u8, ev_kind: u8) -> EventHeader {
    let id = bpf_get_current_pid_tgid();
    EventHeader {
        kind: ev_kind,
        direction: dir,
        flags: 0,
        fd: key.fd,
        tgid: key.tgid,
        tid: id as u32,
        generation,
        pos: 0,
        len: 0,
        cap_len: 0,
        ts_ns: unsafe { bpf_ktime_get_ns() },
        cgroup_id: unsafe { bpf_get_current_cgroup_id() },
    }
}

/// Emits one chunk event of `len` bytes at `pos`, copying up to `MAX_CHUNK` of them from `src`
/// (`src == 0` or `copy == false` copies nothing: a gap event).
#[inline(always)]
fn emit_chunk(hdr: &EventHeader, pos: u64, src: u64, len: u64, copy: bool, extra_flags: u16) {
    let Some(buf) = SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: per-CPU scratch; nothing else on this CPU uses it while the program runs.
    let buf = unsafe { &mut *buf };
    buf.header = *hdr;
    buf.header.pos = pos;
    buf.header.len = len as u32;
    buf.header.flags = hdr.flags | extra_flags;
    let mut n = if copy && src != 0 { len as usize } else { 0 };
    if n > MAX_CHUNK {
        n = MAX_CHUNK;
    }
    if n > 0 {
        // SAFETY: bpf_probe_read_user fails cleanly on unmapped user memory.
        if unsafe { bpf_probe_read_user_buf(src as *const u8, &mut buf.data[..n]) }.is_err() {
            n = 0;
            buf.header.flags |= flags::READ_FAILED;
        }
    }
    buf.header.cap_len = n as u32;
    if n < len as usize && extra_flags & flags::LIMIT_HIT != 0 {
        bump(counter::TRUNCATIONS, 1);
    }
    // SAFETY: EventBuf is repr(C): the header is followed by the data array with no padding
    // (EVENT_HEADER_LEN is a multiple of 8), so the first EVENT_HEADER_LEN + n bytes are the event.
    let bytes = unsafe {
        core::slice::from_raw_parts(buf as *const EventBuf as *const u8, EVENT_HEADER_LEN + n)
    };
    if EVENTS.output::<[u8]>(bytes, 0).is_err() {
        bump(counter::EVENTS_LOST, 1);
        bump(counter::BYTES_LOST, len);
    } else {
        bump(counter::EVENTS, 1);
    }
}

/// State of one syscall's copy, carried through `bpf_loop` (the verifier checks the callback
/// once, whatever the iteration count, where an unrolled loop of this size is too complex).
#[repr(C)]
struct CopyState {
    hdr: EventHeader,
    pos: u64,
    total: u64,
    done: u64,
    /// Plain buffer: the buffer. Iovec mode: the current iovec's next byte.
    src: u64,
    /// Iovec mode: the array, its length, the next index, bytes left in the current one.
    iov: u64,
    iovcnt: u64,
    idx: u64,
    rem: u64,
}

/// One chunk of a plain buffer per iteration; returns 1 to stop.
extern "C" fn copy_buf_step(_index: u32, ctx: *mut core::ffi::c_void) -> i64 {
    // SAFETY: bpf_loop passes back the pointer given to it: a CopyState on the caller's stack.
    let st = unsafe { &mut *(ctx as *mut CopyState) };
    if st.done >= st.total {
        return 1;
    }
    let mut n = st.total - st.done;
    if n > MAX_CHUNK as u64 {
        n = MAX_CHUNK as u64;
    }
    emit_chunk(&st.hdr, st.pos + st.done, st.src + st.done, n, true, 0);
    st.done += n;
    0
}

/// One step over an iovec array per iteration: load the next iovec, or copy one chunk of the
/// current one; returns 1 to stop.
extern "C" fn copy_iov_step(_index: u32, ctx: *mut core::ffi::c_void) -> i64 {
    // SAFETY: as in copy_buf_step.
    let st = unsafe { &mut *(ctx as *mut CopyState) };
    if st.done >= st.total {
        return 1;
    }
    if st.rem == 0 {
        if st.idx >= st.iovcnt || st.idx >= MAX_IOVECS as u64 {
            return 1;
        }
        // SAFETY: `struct iovec { void *iov_base; size_t iov_len; }`, read from user memory.
        let Ok(entry) = (unsafe { bpf_probe_read_user((st.iov + st.idx * 16) as *const [u64; 2]) })
        else {
            return 1;
        };
        st.idx += 1;
        st.src = entry[0];
        st.rem = entry[1];
        if st.rem > st.total - st.done {
            st.rem = st.total - st.done;
        }
        return 0;
    }
    let mut n = st.rem;
    if n > MAX_CHUNK as u64 {
        n = MAX_CHUNK as u64;
    }
    emit_chunk(&st.hdr, st.pos + st.done, st.src, n, true, 0);
    st.src += n;
    st.rem -= n;
    st.done += n;
    0
}

/// Copies `total` bytes from a buffer (`iovcnt == None`) or an iovec array, in chunk events,
/// then reports whatever a limit left uncopied as one gap event.
#[inline(always)]
fn emit_transfer(hdr: &EventHeader, pos: u64, src: u64, iovcnt: Option<u64>, total: u64) {
    let mut st = CopyState {
        hdr: *hdr,
        pos,
        total,
        done: 0,
        src: if iovcnt.is_none() { src } else { 0 },
        iov: src,
        iovcnt: iovcnt.unwrap_or(0),
        idx: 0,
        rem: 0,
    };
    let (step, loops): (extern "C" fn(u32, *mut core::ffi::c_void) -> i64, u32) = match iovcnt {
        None => (copy_buf_step, MAX_CHUNKS_PER_CALL),
        Some(_) => (copy_iov_step, MAX_CHUNKS_PER_CALL + MAX_IOVECS),
    };
    // SAFETY: bpf_loop calls `step` at most `loops` times with a pointer to `st`, which lives
    // on this stack frame for the whole call.
    unsafe {
        bpf_loop(
            loops,
            step as *mut core::ffi::c_void,
            &mut st as *mut CopyState as *mut core::ffi::c_void,
            0,
        );
    }
    if st.done < total {
        emit_chunk(
            hdr,
            pos + st.done,
            0,
            total - st.done,
            false,
            flags::LIMIT_HIT,
        );
    }
}

#[inline(always)]
fn on_transfer_exit(ctx: &TracePointContext, dir: u8) -> u32 {
    let Some(args) = take_args() else {
        return 0;
    };
    let n = ret(ctx);
    if n <= 0 {
        return 0;
    }
    let n = n as u64;
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let key = ConnKey { tgid, fd: args.fd };
    let Some(state) = conn_for_transfer(&key) else {
        return 0;
    };
    // SAFETY: map value pointer valid for the program's duration. Two threads transferring on
    // one fd at the same instant could race here; user space's reordering absorbs that.
    let (generation, pos) = unsafe {
        let pos = (*state).pos[(dir & 1) as usize];
        (*state).pos[(dir & 1) as usize] = pos + n;
        ((*state).generation, pos)
    };
    let hdr = header(&key, generation, dir, kind::DATA);
    match args.kind {
        args_kind::BUF => emit_transfer(&hdr, pos, args.buf, None, n),
        args_kind::IOV => emit_transfer(&hdr, pos, args.buf, Some(args.count), n),
        _ => emit_chunk(&hdr, pos, 0, n, false, flags::UNCOPYABLE),
    }
    0
}

// read(fd, buf, count) / write(fd, buf, count)
#[tracepoint]
pub fn enter_read(ctx: TracePointContext) -> u32 {
    stash(&ctx, args_kind::BUF, 0, 1, 2)
}
#[tracepoint]
pub fn exit_read(ctx: TracePointContext) -> u32 {
    on_transfer_exit(&ctx, direction::INGRESS)
}
#[tracepoint]
pub fn enter_write(ctx: TracePointContext) -> u32 {
    stash(&ctx, args_kind::BUF, 0, 1, 2)
}
#[tracepoint]
pub fn exit_write(ctx: TracePointContext) -> u32 {
    on_transfer_exit(&ctx, direction::EGRESS)
}

// readv(fd, iov, iovcnt) / writev(fd, iov, iovcnt)
#[tracepoint]
pub fn enter_readv(ctx: TracePointContext) -> u32 {
    stash(&ctx, args_kind::IOV, 0, 1, 2)
}
#[tracepoint]
pub fn exit_readv(ctx: TracePointContext) -> u32 {
    on_transfer_exit(&ctx, direction::INGRESS)
}
#[tracepoint]
pub fn enter_writev(ctx: TracePointContext) -> u32 {
    stash(&ctx, args_kind::IOV, 0, 1, 2)
}
#[tracepoint]
pub fn exit_writev(ctx: TracePointContext) -> u32 {
    on_transfer_exit(&ctx, direction::EGRESS)
}

// recvfrom(fd, buf, len, flags, addr, addrlen) / sendto(fd, buf, len, flags, addr, addrlen)
#[tracepoint]
pub fn enter_recvfrom(ctx: TracePointContext) -> u32 {
    stash(&ctx, args_kind::BUF, 0, 1, 2)
}
#[tracepoint]
pub fn exit_recvfrom(ctx: TracePointContext) -> u32 {
    on_transfer_exit(&ctx, direction::INGRESS)
}
#[tracepoint]
pub fn enter_sendto(ctx: TracePointContext) -> u32 {
    stash(&ctx, args_kind::BUF, 0, 1, 2)
}
#[tracepoint]
pub fn exit_sendto(ctx: TracePointContext) -> u32 {
    on_transfer_exit(&ctx, direction::EGRESS)
}

// recvmsg(fd, msg, flags) / sendmsg(fd, msg, flags)
#[tracepoint]
pub fn enter_recvmsg(ctx: TracePointContext) -> u32 {
    stash_msg(&ctx)
}
#[tracepoint]
pub fn exit_recvmsg(ctx: TracePointContext) -> u32 {
    on_transfer_exit(&ctx, direction::INGRESS)
}
#[tracepoint]
pub fn enter_sendmsg(ctx: TracePointContext) -> u32 {
    stash_msg(&ctx)
}
#[tracepoint]
pub fn exit_sendmsg(ctx: TracePointContext) -> u32 {
    on_transfer_exit(&ctx, direction::EGRESS)
}

// sendfile64(out_fd, in_fd, offset, count): the payload never passes through user memory, so
// it is reported as a gap of the right length on out_fd.
#[tracepoint]
pub fn enter_sendfile(ctx: TracePointContext) -> u32 {
    stash(&ctx, args_kind::SENDFILE, 0, NO_ARG, NO_ARG)
}
#[tracepoint]
pub fn exit_sendfile(ctx: TracePointContext) -> u32 {
    on_transfer_exit(&ctx, direction::EGRESS)
}

// connect(fd, addr, addrlen)
#[tracepoint]
pub fn enter_connect(ctx: TracePointContext) -> u32 {
    stash(&ctx, args_kind::CONNECT, 0, 1, NO_ARG)
}
#[tracepoint]
pub fn exit_connect(ctx: TracePointContext) -> u32 {
    let Some(args) = take_args() else {
        return 0;
    };
    let r = ret(&ctx);
    if r != 0 && r != -EINPROGRESS {
        return 0;
    }
    on_open(&ctx, args.fd, args.buf, flags::ROLE_CLIENT, NO_FD);
    0
}

// accept(fd, upeer_sockaddr, upeer_addrlen) / accept4(..., flags): the new fd is the return value.
#[tracepoint]
pub fn enter_accept(ctx: TracePointContext) -> u32 {
    stash(&ctx, args_kind::ACCEPT, 0, 1, NO_ARG)
}
#[tracepoint]
pub fn exit_accept(ctx: TracePointContext) -> u32 {
    let Some(args) = take_args() else {
        return 0;
    };
    let r = ret(&ctx);
    if r < 0 {
        return 0;
    }
    on_open(&ctx, r as u32, args.buf, flags::ROLE_SERVER, args.fd);
    0
}

fn on_open(ctx: &TracePointContext, fd: u32, sockaddr: u64, role: u16, listen_fd: u32) {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let key = ConnKey { tgid, fd };
    let mut addr = SockAddr {
        listen_fd,
        ..SockAddr::default()
    };
    if sockaddr != 0 {
        // SAFETY: user memory via bpf_probe_read_user. `sockaddr_in{,6}`: family u16, port u16,
        // then the IPv4 address at 4 or (after flowinfo) the IPv6 address at 8.
        let family = unsafe { bpf_probe_read_user(sockaddr as *const u16) }.unwrap_or(0);
        let port = unsafe { bpf_probe_read_user((sockaddr + 2) as *const u16) }.unwrap_or(0);
        addr.family = family;
        addr.port_be = port;
        if family == AF_INET {
            if let Ok(a) = unsafe { bpf_probe_read_user((sockaddr + 4) as *const [u8; 4]) } {
                addr.addr[..4].copy_from_slice(&a);
            }
        } else if family == AF_INET6 {
            if let Ok(a) = unsafe { bpf_probe_read_user((sockaddr + 8) as *const [u8; 16]) } {
                addr.addr = a;
            }
        }
    }
    let Some(state) = new_conn(&key) else {
        warn!(
            ctx,
            "capture: connection table full, fd {} of {} not followed", fd, tgid
        );
        return;
    };
    // SAFETY: map value pointer valid for the program's duration.
    let generation = unsafe { (*state).generation };
    if role == flags::ROLE_CLIENT && addr.family != AF_INET && addr.family != AF_INET6 {
        // A unix-domain or other non-IP connect: nothing to capture on this fd.
        unsafe { (*state).muted = 1 };
        return;
    }
    let Some(buf) = SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: per-CPU scratch, see emit_chunk.
    let buf = unsafe { &mut *buf };
    buf.header = header(&key, generation, 0, kind::OPEN);
    buf.header.flags = role;
    // SAFETY: SockAddr (24 bytes) fits in the data array; it is written as bytes.
    let raw = unsafe {
        core::slice::from_raw_parts(&addr as *const SockAddr as *const u8, size_of::<SockAddr>())
    };
    buf.data[..size_of::<SockAddr>()].copy_from_slice(raw);
    buf.header.cap_len = size_of::<SockAddr>() as u32;
    let bytes = unsafe {
        core::slice::from_raw_parts(
            buf as *const EventBuf as *const u8,
            EVENT_HEADER_LEN + size_of::<SockAddr>(),
        )
    };
    if EVENTS.output::<[u8]>(bytes, 0).is_err() {
        bump(counter::EVENTS_LOST, 1);
    } else {
        bump(counter::EVENTS, 1);
    }
}

// close(fd): the connection ends; a reused fd number starts a new generation.
#[tracepoint]
pub fn enter_close(ctx: TracePointContext) -> u32 {
    if !targeted() {
        return 0;
    }
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let key = ConnKey {
        tgid,
        fd: arg(&ctx, 0) as u32,
    };
    let Some(state) = CONNS.get_ptr_mut(&key) else {
        return 0;
    };
    // SAFETY: map value pointer valid for the program's duration.
    let (generation, muted) = unsafe { ((*state).generation, (*state).muted) };
    let _ = CONNS.remove(&key);
    let muted_key = MutedKey {
        tgid,
        fd: key.fd,
        generation,
    };
    let _ = MUTED.remove(&muted_key);
    if muted != 0 {
        return 0;
    }
    let mut hdr = header(&key, generation, 0, kind::CLOSE);
    hdr.cap_len = 0;
    if EVENTS.output::<EventHeader>(&hdr, 0).is_err() {
        bump(counter::EVENTS_LOST, 1);
    } else {
        bump(counter::EVENTS, 1);
    }
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // SAFETY: the verifier rejects any program with a reachable panic path, so a loaded
    // program never gets here.
    unsafe { core::hint::unreachable_unchecked() }
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
