//! One raw tracepoint on `sys_exit` that copies the socket traffic of opted-in cgroups into a
//! ring buffer.
//!
//! At syscall exit the arguments are still in the saved user registers (`pt_regs`) and the
//! return value says how many bytes actually moved, so no `sys_enter` program and no argument
//! stash are needed: one program invocation per syscall, no hash update, no perf record. It
//! filters first (syscall number, then the current cgroup in `TARGET_CGROUPS`), then advances
//! the connection's byte position and copies the bytes out in chunk events. Whatever cannot be
//! copied (a limit, a failed read, sendfile) still produces an event with `cap_len < len`, so
//! user space sees every byte position either as data or as a gap.
//!
//! Syscall numbers and register offsets are per architecture (x86_64, aarch64). 32-bit compat
//! syscalls share the tracepoint and cannot be told apart here without CO-RE, so 32-bit
//! processes are not supported.
// On the host (`cargo build --workspace`, clippy) this compiles as an empty program against std,
// so the whole workspace builds and is linted; capture-daemon/build.rs builds the real object
// for bpfel-unknown-none.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

use aya_ebpf::{
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_pid_tgid, bpf_ktime_get_ns,
        bpf_probe_read_kernel, bpf_probe_read_user, bpf_probe_read_user_buf, generated::bpf_loop,
    },
    macros::{map, raw_tracepoint},
    maps::{HashMap, LruHashMap, PerCpuArray, RingBuf},
    programs::RawTracePointContext,
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

/// Per-connection generation and byte positions. LRU so that fds of processes that died
/// without closing them are recycled rather than filling the map.
#[map]
static CONNS: LruHashMap<ConnKey, ConnState> = LruHashMap::with_max_entries(65536, 0);

/// Connections user space found not to be TCP sockets (files, pipes, UDP, unix sockets) or not
/// HTTP/1.
#[map]
static MUTED: LruHashMap<MutedKey, u8> = LruHashMap::with_max_entries(65536, 0);

/// Events to user space. User space may resize it at load time (`--ring-buffer-bytes`).
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(16 * 1024 * 1024, 0);

/// Events are written without waking the reader (user space drains on a short timer) until
/// this many bytes are waiting, then with a forced wakeup. Waking the reader for every event
/// costs the captured process a cross-CPU wakeup per syscall. Set by user space at load.
#[unsafe(no_mangle)]
static WAKEUP_BYTES: u64 = 1 << 20;

/// Chunk events one syscall may produce (`--max-capture-bytes-per-syscall` / 16 KiB); bytes past
/// them are reported as a gap. Set by user space at load.
#[unsafe(no_mangle)]
static MAX_CHUNKS: u32 = MAX_CHUNKS_PER_CALL;

/// iovecs walked per readv/writev/recvmsg/sendmsg (`--max-iovecs`); the rest is a gap.
#[unsafe(no_mangle)]
static MAX_IOVS: u32 = MAX_IOVECS;

#[map]
static SCRATCH: PerCpuArray<EventBuf> = PerCpuArray::with_max_entries(1, 0);

/// The state of the copy in progress, for the `bpf_loop` callback. In a map rather than on the
/// caller's stack so the callback starts from the same verifier state whichever syscall path
/// called it; on the stack each path made the verifier re-walk the callback until it ran out
/// of its instruction budget.
#[map]
static COPY: PerCpuArray<CopyState> = PerCpuArray::with_max_entries(1, 0);

#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

#[repr(C)]
struct EventBuf {
    header: EventHeader,
    data: [u8; MAX_CHUNK],
}

/// Syscall numbers and `struct pt_regs` offsets (arch/x86/include/asm/ptrace.h).
#[cfg(any(
    bpf_target_arch = "x86_64",
    all(not(target_arch = "bpf"), target_arch = "x86_64")
))]
mod arch {
    pub const NR: usize = 120; // orig_ax
    /// di, si, dx, r10, r8, r9: the syscall argument registers, preserved until return.
    pub const ARGS: [usize; 6] = [112, 104, 96, 56, 72, 64];
    pub const NR_IS_I32: bool = false;
    pub const READ: i64 = 0;
    pub const WRITE: i64 = 1;
    pub const CLOSE: i64 = 3;
    pub const READV: i64 = 19;
    pub const WRITEV: i64 = 20;
    pub const SENDFILE: i64 = 40;
    pub const CONNECT: i64 = 42;
    pub const ACCEPT: i64 = 43;
    pub const SENDTO: i64 = 44;
    pub const RECVFROM: i64 = 45;
    pub const SENDMSG: i64 = 46;
    pub const RECVMSG: i64 = 47;
    pub const ACCEPT4: i64 = 288;
}

/// Syscall numbers (asm-generic/unistd.h) and `struct pt_regs` offsets
/// (arch/arm64/include/asm/ptrace.h). x0 holds the return value at exit; orig_x0 keeps arg 0.
#[cfg(any(
    bpf_target_arch = "aarch64",
    all(not(target_arch = "bpf"), target_arch = "aarch64")
))]
mod arch {
    pub const NR: usize = 280; // syscallno (s32)
    pub const ARGS: [usize; 6] = [272, 8, 16, 24, 32, 40];
    pub const NR_IS_I32: bool = true;
    pub const READ: i64 = 63;
    pub const WRITE: i64 = 64;
    pub const CLOSE: i64 = 57;
    pub const READV: i64 = 65;
    pub const WRITEV: i64 = 66;
    pub const SENDFILE: i64 = 71;
    pub const CONNECT: i64 = 203;
    pub const ACCEPT: i64 = 202;
    pub const SENDTO: i64 = 206;
    pub const RECVFROM: i64 = 207;
    pub const SENDMSG: i64 = 211;
    pub const RECVMSG: i64 = 212;
    pub const ACCEPT4: i64 = 242;
}

const EINPROGRESS: i64 = 115;
const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
const BPF_RB_NO_WAKEUP: u64 = 1;
const BPF_RB_FORCE_WAKEUP: u64 = 2;
const BPF_RB_AVAIL_DATA: u64 = 0;

/// The saved user registers of the syscall that is returning.
struct Regs(u64);

impl Regs {
    #[inline(always)]
    fn read(&self, offset: usize) -> u64 {
        // SAFETY: `pt_regs` of the current task, read with bpf_probe_read_kernel, which fails
        // cleanly rather than faulting.
        unsafe { bpf_probe_read_kernel((self.0 + offset as u64) as *const u64) }.unwrap_or(0)
    }

    #[inline(always)]
    fn nr(&self) -> i64 {
        let raw = self.read(arch::NR);
        if arch::NR_IS_I32 {
            raw as u32 as i32 as i64
        } else {
            raw as i64
        }
    }

    #[inline(always)]
    fn arg(&self, n: usize) -> u64 {
        self.read(arch::ARGS[n])
    }
}

/// The ring-buffer output flags for the next event (see `WAKEUP_BYTES`).
#[inline(always)]
fn wakeup_flags() -> u64 {
    // SAFETY: a read of a constant the loader may have rewritten; volatile so the compiler
    // does not fold the default in.
    let threshold = unsafe { core::ptr::read_volatile(&WAKEUP_BYTES) };
    if EVENTS.query(BPF_RB_AVAIL_DATA) >= threshold {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    }
}

#[inline(always)]
fn bump(index: u32, by: u64) {
    if let Some(c) = COUNTERS.get_ptr_mut(index) {
        // SAFETY: per-CPU slot, only this CPU writes it while the program runs.
        unsafe { *c += by };
    }
}

/// The cgroup filter: the current cgroup id when it is a target.
#[inline(always)]
fn targeted() -> Option<u64> {
    let cgroup = unsafe { bpf_get_current_cgroup_id() };
    // SAFETY: the value is only tested for presence.
    unsafe { TARGET_CGROUPS.get(&cgroup) }.map(|_| cgroup)
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
fn header(key: &ConnKey, generation: u64, dir: u8, ev_kind: u8, cgroup_id: u64) -> EventHeader {
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
        cgroup_id,
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
    if EVENTS.output::<[u8]>(bytes, wakeup_flags()).is_err() {
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
    /// Chunk events emitted so far, against `MAX_CHUNKS`.
    chunks: u64,
}

/// One step per iteration: for an iovec array, load the next iovec when the current one is
/// used up; then copy one chunk. Returns 1 to stop. One callback for both shapes keeps a single
/// `bpf_loop` call site, which the verifier checks once.
extern "C" fn copy_step(_index: u32, _ctx: *mut core::ffi::c_void) -> i64 {
    let Some(st) = COPY.get_ptr_mut(0) else {
        return 1;
    };
    // SAFETY: per-CPU map value; the program runs with migration disabled and the copy in
    // progress is the only user.
    let st = unsafe { &mut *st };
    if st.done >= st.total {
        return 1;
    }
    if st.rem == 0 {
        // SAFETY: a constant the loader may have rewritten; volatile so it is not folded.
        let max_iovs = unsafe { core::ptr::read_volatile(&MAX_IOVS) };
        if st.idx >= st.iovcnt || st.idx >= u64::from(max_iovs) {
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
    // SAFETY: a constant the loader may have rewritten; volatile so it is not folded.
    if st.chunks >= u64::from(unsafe { core::ptr::read_volatile(&MAX_CHUNKS) }) {
        return 1;
    }
    let mut n = st.rem;
    if n > MAX_CHUNK as u64 {
        n = MAX_CHUNK as u64;
    }
    emit_chunk(&st.hdr, st.pos + st.done, st.src, n, true, 0);
    st.chunks += 1;
    st.src += n;
    st.rem -= n;
    st.done += n;
    0
}

/// Copies `total` bytes from `src` (a plain buffer when `iovcnt == 0`, else an iovec array),
/// in chunk events, then reports whatever a limit left uncopied as one gap event.
#[inline(always)]
fn emit_transfer(hdr: &EventHeader, pos: u64, src: u64, iovcnt: u64, total: u64) {
    let plain = iovcnt == 0;
    let Some(st) = COPY.get_ptr_mut(0) else {
        return;
    };
    let state = CopyState {
        hdr: *hdr,
        pos,
        total,
        done: 0,
        // A plain buffer is one iovec that is already loaded.
        src: if plain { src } else { 0 },
        iov: src,
        iovcnt,
        idx: 0,
        rem: if plain { total } else { 0 },
        chunks: 0,
    };
    // SAFETY: per-CPU map value, see copy_step. Written through the raw pointer and read back
    // volatile below: the callback changes it behind any reference we could hold.
    unsafe { st.write(state) };
    // SAFETY: bpf_loop calls `copy_step` at most the given number of times; it takes its state
    // from COPY, not from the context pointer.
    // SAFETY: constants the loader may have rewritten; volatile so they are not folded.
    let steps =
        unsafe { core::ptr::read_volatile(&MAX_CHUNKS) + core::ptr::read_volatile(&MAX_IOVS) };
    unsafe {
        bpf_loop(
            steps,
            copy_step as *mut core::ffi::c_void,
            core::ptr::null_mut(),
            0,
        );
    }
    // SAFETY: as above; the callback has finished with it.
    let done = unsafe { core::ptr::read_volatile(&raw const (*st).done) };
    if done < total {
        emit_chunk(hdr, pos + done, 0, total - done, false, flags::LIMIT_HIT);
    }
}

/// How a syscall moves its bytes.
#[derive(Clone, Copy)]
enum Via {
    /// `(fd, buf, count)`: read, write, recvfrom, sendto.
    Buf,
    /// `(fd, iov, iovcnt)`: readv, writev.
    Iov,
    /// `(fd, msghdr)`: recvmsg, sendmsg; the iovecs are in the msghdr.
    Msg,
    /// sendfile: bytes move kernel-side; only their count is known.
    Kernel,
}

#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn sys_exit(ctx: RawTracePointContext) -> i32 {
    // TP_PROTO(struct pt_regs *regs, long ret)
    let regs = Regs(ctx.arg::<u64>(0));
    let ret = ctx.arg::<i64>(1);
    let nr = regs.nr();
    let (dir, via) = match nr {
        arch::READ | arch::RECVFROM => (direction::INGRESS, Via::Buf),
        arch::WRITE | arch::SENDTO => (direction::EGRESS, Via::Buf),
        arch::READV => (direction::INGRESS, Via::Iov),
        arch::WRITEV => (direction::EGRESS, Via::Iov),
        arch::RECVMSG => (direction::INGRESS, Via::Msg),
        arch::SENDMSG => (direction::EGRESS, Via::Msg),
        arch::SENDFILE => (direction::EGRESS, Via::Kernel),
        arch::CONNECT | arch::ACCEPT | arch::ACCEPT4 | arch::CLOSE => {
            if let Some(cgroup_id) = targeted() {
                on_lifecycle(&ctx, &regs, nr, ret, cgroup_id);
            }
            return 0;
        }
        _ => return 0,
    };
    if ret <= 0 {
        return 0;
    }
    let Some(cgroup_id) = targeted() else {
        return 0;
    };
    on_transfer(&regs, dir, via, ret as u64, cgroup_id);
    0
}

#[inline(always)]
fn on_transfer(regs: &Regs, dir: u8, via: Via, n: u64, cgroup_id: u64) {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let key = ConnKey {
        tgid,
        fd: regs.arg(0) as u32,
    };
    let Some(state) = conn_for_transfer(&key) else {
        return;
    };
    // SAFETY: map value pointer valid for the program's duration. Two threads transferring on
    // one fd at the same instant could race here; user space's reordering absorbs that.
    let (generation, pos) = unsafe {
        let pos = (*state).pos[(dir & 1) as usize];
        (*state).pos[(dir & 1) as usize] = pos + n;
        ((*state).generation, pos)
    };
    let hdr = header(&key, generation, dir, kind::DATA, cgroup_id);
    // (buffer or iovec array, iovec count; 0 for a plain buffer)
    let (src, iovcnt) = match via {
        Via::Buf => (regs.arg(1), 0),
        Via::Iov => (regs.arg(1), regs.arg(2)),
        Via::Msg => {
            // `struct user_msghdr`: msg_iov at 16, msg_iovlen at 24.
            let msg = regs.arg(1);
            // SAFETY: user memory via bpf_probe_read_user, which fails cleanly.
            let iov = unsafe { bpf_probe_read_user((msg + 16) as *const u64) }.unwrap_or(0);
            let iovlen = unsafe { bpf_probe_read_user((msg + 24) as *const u64) }.unwrap_or(0);
            (iov, iovlen)
        }
        Via::Kernel => {
            emit_chunk(&hdr, pos, 0, n, false, flags::UNCOPYABLE);
            return;
        }
    };
    // An iovec array with no entries moved nothing; (0, 0) would read as a plain buffer.
    if iovcnt == 0 && !matches!(via, Via::Buf) {
        emit_chunk(&hdr, pos, 0, n, false, flags::LIMIT_HIT);
        return;
    }
    emit_transfer(&hdr, pos, src, iovcnt, n);
}

/// connect, accept/accept4 (a connection opens) and close (it ends).
#[inline(always)]
fn on_lifecycle(ctx: &RawTracePointContext, regs: &Regs, nr: i64, ret: i64, cgroup_id: u64) {
    match nr {
        // connect(fd, addr, addrlen): 0, or EINPROGRESS for a non-blocking socket.
        arch::CONNECT if ret == 0 || ret == -EINPROGRESS => {
            on_open(
                ctx,
                regs.arg(0) as u32,
                regs.arg(1),
                flags::ROLE_CLIENT,
                NO_FD,
                cgroup_id,
            );
        }
        // accept(fd, upeer_sockaddr, upeer_addrlen[, flags]): the new fd; the address is filled.
        arch::ACCEPT | arch::ACCEPT4 if ret >= 0 => {
            on_open(
                ctx,
                ret as u32,
                regs.arg(1),
                flags::ROLE_SERVER,
                regs.arg(0) as u32,
                cgroup_id,
            );
        }
        arch::CLOSE if ret == 0 => on_close(regs.arg(0) as u32, cgroup_id),
        _ => {}
    }
}

fn on_open(
    ctx: &RawTracePointContext,
    fd: u32,
    sockaddr: u64,
    role: u16,
    listen_fd: u32,
    cgroup_id: u64,
) {
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
    buf.header = header(&key, generation, 0, kind::OPEN, cgroup_id);
    buf.header.flags = role;
    // SAFETY: SockAddr (24 bytes) fits in the data array; it is written as bytes.
    let raw = unsafe {
        core::slice::from_raw_parts(&addr as *const SockAddr as *const u8, size_of::<SockAddr>())
    };
    buf.data[..size_of::<SockAddr>()].copy_from_slice(raw);
    buf.header.cap_len = size_of::<SockAddr>() as u32;
    // SAFETY: see emit_chunk.
    let bytes = unsafe {
        core::slice::from_raw_parts(
            buf as *const EventBuf as *const u8,
            EVENT_HEADER_LEN + size_of::<SockAddr>(),
        )
    };
    // A wakeup right away, unlike data: the daemon names the socket from /proc while it still
    // exists (a short-lived client may be gone 10 ms later), and opens are once per connection.
    if EVENTS.output::<[u8]>(bytes, BPF_RB_FORCE_WAKEUP).is_err() {
        bump(counter::EVENTS_LOST, 1);
    } else {
        bump(counter::EVENTS, 1);
    }
}

/// close(fd) succeeded: the connection ends; a reused fd number starts a new generation.
#[inline(always)]
fn on_close(fd: u32, cgroup_id: u64) {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let key = ConnKey { tgid, fd };
    let Some(state) = CONNS.get_ptr_mut(&key) else {
        return;
    };
    // SAFETY: map value pointer valid for the program's duration.
    let (generation, muted) = unsafe { ((*state).generation, (*state).muted) };
    let _ = CONNS.remove(&key);
    let _ = MUTED.remove(&MutedKey {
        tgid,
        fd,
        generation,
    });
    if muted != 0 {
        return;
    }
    let hdr = header(&key, generation, 0, kind::CLOSE, cgroup_id);
    if EVENTS.output::<EventHeader>(&hdr, wakeup_flags()).is_err() {
        bump(counter::EVENTS_LOST, 1);
    } else {
        bump(counter::EVENTS, 1);
    }
}

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // SAFETY: the verifier rejects any program with a reachable panic path, so a loaded
    // program never gets here.
    unsafe { core::hint::unreachable_unchecked() }
}

/// The host build's entry point: nothing runs there (see the top of this file).
#[cfg(not(target_arch = "bpf"))]
fn main() {}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
