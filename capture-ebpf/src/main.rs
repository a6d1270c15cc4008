//! The kernel programs: they copy the socket traffic of opted-in cgroups into a ring buffer.
//!
//! Two hooks do the same job; the daemon attaches one, chosen at load by probing the kernel:
//! - **Socket tracepoints** (preferred): raw tracepoints on `sock:sock_send_length` and
//!   `sock:sock_recv_length` (`sock_send`, `sock_recv`), which fire only for socket I/O, from
//!   `sock_sendmsg`/`sock_recvmsg`, with the socket and the byte count. The syscall's
//!   arguments (fd, buffer or iovecs) still sit in the task's saved user registers
//!   (`bpf_task_pt_regs`), so the copy is the same as on the syscall hook. Connection state
//!   comes from `sock:inet_sock_set_state` (`sock_state`): the handshake gives the role, the
//!   socket gives both addresses, and the move to `TCP_CLOSE` ends the connection. Processes
//!   that nobody opted in pay nothing on other syscalls.
//! - **Syscall tracepoint** (last resort): one raw tracepoint on `sys_exit` (`sys_exit`). At
//!   syscall exit the arguments are still in the saved user registers (`pt_regs`) and the
//!   return value says how many bytes moved, so no `sys_enter` program and no argument stash
//!   are needed. Every syscall of every process on the node passes through it.
//!
//! Both filter first (the current cgroup in `TARGET_CGROUPS`), then advance the connection's
//! byte position and copy the bytes out in chunk events, reserved in the ring buffer and filled
//! in place (one copy). Whatever cannot be copied (a limit, a failed read, sendfile) still
//! produces an event with `cap_len < len`, so user space sees every byte position either as
//! data or as a gap. `floor_empty` and `floor_copy` exist only for the benchmark: the least a
//! program on the socket hook can cost, and the least a copy can.
//!
//! Syscall numbers and register offsets are per architecture (x86_64, aarch64). 32-bit compat
//! syscalls cannot be told apart here without CO-RE, so 32-bit processes are not supported.
// On the host (`cargo build --workspace`, clippy) this compiles as an empty program against std,
// so the whole workspace builds and is linted; capture-daemon/build.rs builds the real object
// for bpfel-unknown-none.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

use aya_ebpf::{
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_pid_tgid, bpf_ktime_get_ns,
        bpf_probe_read_kernel, bpf_probe_read_user, generated,
        generated::{bpf_get_current_task, bpf_get_current_task_btf, bpf_loop, bpf_task_pt_regs},
    },
    macros::{fexit, kprobe, kretprobe, map, raw_tracepoint},
    maps::{HashMap, LruHashMap, PerCpuArray, RingBuf},
    programs::{FExitContext, ProbeContext, RawTracePointContext, RetProbeContext},
};
use capture_common::{
    ConnKey, ConnState, EVENT_HEADER_LEN, EventHeader, MAX_CHUNK, MAX_CHUNKS_PER_CALL, MAX_IOVECS,
    MutedKey, NO_FD, OpenAddrs, SockAddr, UNROLLED_STEPS, counter, direction, flags, kind,
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

/// Socket hooks: TCP sockets by `struct sock` address, from the handshake (the role) and from
/// the first transfer of a target process (the fd that owns it), until `TCP_CLOSE`.
#[map]
static SOCKS: LruHashMap<u64, SockInfo> = LruHashMap::with_max_entries(65536, 0);

/// Events to user space. User space may resize it at load time (`--ring-buffer-bytes`).
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(16 * 1024 * 1024, 0);

/// Chunk events one syscall may produce (`--max-capture-bytes-per-syscall` / 16 KiB); bytes past
/// them are reported as a gap. Set by user space at load.
#[unsafe(no_mangle)]
static MAX_CHUNKS: u32 = MAX_CHUNKS_PER_CALL;

/// iovecs walked per readv/writev/recvmsg/sendmsg (`--max-iovecs`); the rest is a gap.
#[unsafe(no_mangle)]
static MAX_IOVS: u32 = MAX_IOVECS;

/// Offsets of `skc_v6_daddr` and `skc_v6_rcv_saddr` in `struct sock_common`, which depend on
/// the kernel's configuration (the IPv4 fields before them have not moved since 2.6). The
/// defaults are those of x86_64 and arm64 kernels with network namespaces; user space may set
/// them at load.
#[unsafe(no_mangle)]
static SK_V6_DADDR: u32 = capture_common::arch::sock_common::V6_DADDR;
#[unsafe(no_mangle)]
static SK_V6_SADDR: u32 = capture_common::arch::sock_common::V6_RCV_SADDR;

/// kprobe and fentry hooks (kernels before 6.3): offsets the loader reads from the kernel's
/// BTF. `struct socket`'s `sk`; `struct task_struct`'s `stack` (0: unknown, the hooks do
/// nothing); and the user registers' place on the task's kernel stack (`task_pt_regs()`:
/// stack + THREAD_SIZE - padding - sizeof(struct pt_regs)). These hooks cannot use
/// `bpf_task_pt_regs` (5.15+) on the older kernels they exist for.
#[unsafe(no_mangle)]
static SOCKET_SK: u32 = 24;
#[unsafe(no_mangle)]
static TASK_STACK: u32 = 0;
#[unsafe(no_mangle)]
static STACK_TO_REGS: u32 = 16384 - 168;

/// kprobe hook: the socket and flags of each thread's `inet{,6}_sendmsg`/`inet{,6}_recvmsg` in
/// progress, from entry to return. Only target processes are stashed.
#[map]
static STASH: LruHashMap<u64, Stashed> = LruHashMap::with_max_entries(16384, 0);

/// The state of the copy in progress, for the `bpf_loop` callback. In a map rather than on the
/// caller's stack so the callback starts from the same verifier state whichever syscall path
/// called it; on the stack each path made the verifier re-walk the callback until it ran out
/// of its instruction budget.
#[map]
static COPY: PerCpuArray<CopyState> = PerCpuArray::with_max_entries(1, 0);

#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

#[repr(C)]
#[derive(Clone, Copy)]
struct Stashed {
    sock: u64,
    flags: u64,
}

/// A TCP socket seen by `sock_state` or by a transfer.
#[repr(C)]
#[derive(Clone, Copy)]
struct SockInfo {
    /// `flags::ROLE_*` from the handshake; 0 when the socket was established before load.
    role: u16,
    /// 1 once a target process transferred on it: `owner` and `generation` are set.
    owned: u16,
    owner: ConnKey,
    generation: u64,
}

#[cfg(any(
    bpf_target_arch = "aarch64",
    all(not(target_arch = "bpf"), target_arch = "aarch64")
))]
use capture_common::arch::aarch64 as arch;
/// Syscall numbers and `struct pt_regs` offsets of the architecture the programs are built for
/// (`capture_common::arch`; the aarch64 table is checked against Debian's arm64 kernel).
#[cfg(any(
    bpf_target_arch = "x86_64",
    all(not(target_arch = "bpf"), target_arch = "x86_64")
))]
use capture_common::arch::x86_64 as arch;

const EINPROGRESS: i64 = 115;
const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
const MSG_PEEK: u32 = 2;
const BPF_RB_NO_WAKEUP: u64 = 1;
const BPF_RB_FORCE_WAKEUP: u64 = 2;
/// include/net/tcp_states.h
const TCP_ESTABLISHED: i32 = 1;
const TCP_SYN_SENT: i32 = 2;
const TCP_SYN_RECV: i32 = 3;
const TCP_CLOSE: i32 = 7;
/// `struct sock_common` (include/net/sock.h): skc_daddr, skc_rcv_saddr, skc_dport (network
/// order), skc_num (host order), skc_family, skc_state.
const SKC_DADDR: u64 = capture_common::arch::sock_common::DADDR;
const SKC_RCV_SADDR: u64 = capture_common::arch::sock_common::RCV_SADDR;
const SKC_DPORT: u64 = capture_common::arch::sock_common::DPORT;
const SKC_NUM: u64 = capture_common::arch::sock_common::NUM;
const SKC_FAMILY: u64 = capture_common::arch::sock_common::FAMILY;
const SKC_STATE: u64 = capture_common::arch::sock_common::STATE;

/// The saved user registers of the current task's syscall.
struct Regs(u64);

impl Regs {
    /// The current task's user registers, from a hook inside the syscall.
    #[inline(always)]
    fn current() -> Self {
        // SAFETY: both helpers take no pointer from us; the result is only read through
        // bpf_probe_read_kernel.
        Self(unsafe { bpf_task_pt_regs(bpf_get_current_task_btf()) } as u64)
    }

    /// The current task's user registers, found on its kernel stack as `task_pt_regs()` does,
    /// with the offsets the loader read from BTF; None when it could not read them.
    #[inline(always)]
    fn from_task_stack() -> Option<Self> {
        // SAFETY: constants the loader may have rewritten; volatile so they are not folded.
        let (stack_off, to_regs) = unsafe {
            (
                core::ptr::read_volatile(&TASK_STACK),
                core::ptr::read_volatile(&STACK_TO_REGS),
            )
        };
        if stack_off == 0 {
            return None;
        }
        // SAFETY: the helper takes no argument; the task is only read through
        // bpf_probe_read_kernel, which fails cleanly.
        let task = unsafe { bpf_get_current_task() };
        let stack =
            unsafe { bpf_probe_read_kernel((task + u64::from(stack_off)) as *const u64) }.ok()?;
        if stack == 0 {
            return None;
        }
        Some(Self(stack + u64::from(to_regs)))
    }

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
    unsafe { TARGET_CGROUPS.get(cgroup) }.map(|_| cgroup)
}

/// Starts a new generation of (tgid, fd): after accept/connect, on the first transfer of a
/// connection opened before capture began, or when the fd now names another socket.
#[inline(always)]
fn new_conn(key: &ConnKey, sk: u64) -> Option<*mut ConnState> {
    let state = ConnState {
        generation: unsafe { bpf_ktime_get_ns() },
        pos: [0, 0],
        muted: 0,
        _pad: 0,
        sk,
    };
    if CONNS.insert(key, state, 0).is_err() {
        bump(counter::CONN_TABLE_FULL, 1);
        return None;
    }
    CONNS.get_ptr_mut(key)
}

/// The connection state for a transfer, and whether its socket had already ended (the
/// generation is to be closed after this transfer); None when the fd is muted or
/// untrackable. On the socket hooks (`sk != 0`) a new generation is announced with an OPEN
/// event, and a generation whose fd now names another socket is closed first.
#[inline(always)]
fn conn_for_transfer(key: &ConnKey, sk: u64, cgroup_id: u64) -> Option<(*mut ConnState, bool)> {
    let mut ended = false;
    let state = match CONNS.get_ptr_mut(key) {
        // SAFETY: map value pointers stay valid for the duration of the program.
        Some(s) if sk == 0 || unsafe { (*s).sk } == sk => s,
        found => {
            if let Some(old) = found {
                // The fd was closed and reused for another socket without a TCP_CLOSE in
                // between (not TCP, or closed before it was established): end the old one.
                // SAFETY: as above.
                let (generation, muted) = unsafe { ((*old).generation, (*old).muted) };
                if muted == 0 {
                    emit_close(key, generation, cgroup_id);
                }
            }
            let s = new_conn(key, sk)?;
            if sk != 0 {
                // SAFETY: as above.
                let generation = unsafe { (*s).generation };
                match announce_socket(key, generation, sk, cgroup_id) {
                    Announced::NotIp => {
                        unsafe { (*s).muted = 1 };
                        return None;
                    }
                    Announced::Live => {}
                    Announced::Ended => ended = true,
                }
            }
            s
        }
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
    if unsafe { MUTED.get(muted_key) }.is_some() {
        unsafe { (*state).muted = 1 };
        return None;
    }
    Some((state, ended))
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

/// Reserves a record of the header plus `N` bytes, writes the header and copies `n <= N`
/// bytes from user memory at `src` straight into it. Returns false when the ring is full.
#[inline(always)]
fn output_copy<const N: usize>(hdr: &EventHeader, src: u64, n: usize) -> bool {
    let Some(mut record) = EVENTS.reserve_bytes(EVENT_HEADER_LEN + N, 0) else {
        return false;
    };
    let base = record.as_mut_ptr();
    let mut h = *hdr;
    // The clamp must survive: LLVM knows every caller passes `n <= N` and would drop it, and
    // verifiers before 6.x then follow an impossible path (Linux 6.1 saw `n == 16384` reach
    // the 8 KiB record, after comparisons whose ranges contradict, and refused the program).
    // SAFETY: a read of a local; volatile only so that LLVM cannot reason about its value.
    let n = unsafe { core::ptr::read_volatile(&n) };
    let n = if n > N { N } else { n };
    // SAFETY: the record is EVENT_HEADER_LEN + N bytes and 8-aligned; the copy writes at most
    // N bytes after the header and fails cleanly on unmapped user memory.
    let failed = n > 0
        && unsafe {
            generated::bpf_probe_read_user(
                base.add(EVENT_HEADER_LEN).cast(),
                n as u32,
                src as *const core::ffi::c_void,
            )
        } != 0;
    if failed {
        h.cap_len = 0;
        h.flags |= flags::READ_FAILED;
    } else {
        h.cap_len = n as u32;
    }
    // SAFETY: as above; EventHeader is repr(C) and 8-aligned like the record.
    unsafe { core::ptr::write(base.cast::<EventHeader>(), h) };
    record.submit(BPF_RB_NO_WAKEUP);
    true
}

/// Emits one chunk event of `len` bytes at `pos`, copying up to `MAX_CHUNK` of them from `src`
/// (`src == 0` or `copy == false` copies nothing: a gap event). The record is reserved in one
/// of a few sizes (at most twice the payload) and filled in place: the bytes are copied once,
/// from the process into the ring.
#[inline(always)]
fn emit_chunk(hdr: &EventHeader, pos: u64, src: u64, len: u64, copy: bool, extra_flags: u16) {
    let mut h = *hdr;
    h.pos = pos;
    h.len = len as u32;
    h.flags = hdr.flags | extra_flags;
    let mut n = if copy && src != 0 { len as usize } else { 0 };
    if n > MAX_CHUNK {
        n = MAX_CHUNK;
    }
    if n < len as usize && extra_flags & flags::LIMIT_HIT != 0 {
        bump(counter::TRUNCATIONS, 1);
    }
    let ok = if n == 0 {
        output_copy::<0>(&h, 0, 0)
    } else if n <= 256 {
        output_copy::<256>(&h, src, n)
    } else if n <= 1024 {
        output_copy::<1024>(&h, src, n)
    } else if n <= 2048 {
        output_copy::<2048>(&h, src, n)
    } else if n <= 4096 {
        output_copy::<4096>(&h, src, n)
    } else if n <= 8192 {
        output_copy::<8192>(&h, src, n)
    } else {
        output_copy::<MAX_CHUNK>(&h, src, n)
    };
    if ok {
        bump(counter::EVENTS, 1);
    } else {
        bump(counter::EVENTS_LOST, 1);
        bump(counter::BYTES_LOST, len);
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
/// in chunk events, then reports whatever a limit left uncopied as one gap event. `LOOP`: with
/// `bpf_loop` (Linux 5.17+), else a loop of at most `UNROLLED_STEPS` steps the verifier walks
/// step by step (bounded loops, 5.3+); the loader picks the program variant by probing for the
/// helper.
#[inline(always)]
fn emit_transfer<const LOOP: bool>(hdr: &EventHeader, pos: u64, src: u64, iovcnt: u64, total: u64) {
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
    // SAFETY: constants the loader may have rewritten; volatile so they are not folded.
    let steps =
        unsafe { core::ptr::read_volatile(&MAX_CHUNKS) + core::ptr::read_volatile(&MAX_IOVS) };
    if LOOP {
        // SAFETY: bpf_loop calls `copy_step` at most the given number of times; it takes its
        // state from COPY, not from the context pointer.
        unsafe {
            bpf_loop(
                steps,
                copy_step as *mut core::ffi::c_void,
                core::ptr::null_mut(),
                0,
            );
        }
    } else {
        let mut i = 0;
        while i < UNROLLED_STEPS && i < steps {
            if copy_step(i, core::ptr::null_mut()) != 0 {
                break;
            }
            i += 1;
        }
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

/// The transfer syscalls: direction and shape; None for every other syscall.
#[inline(always)]
fn transfer_syscall(nr: i64) -> Option<(u8, Via)> {
    Some(match nr {
        arch::READ | arch::RECVFROM => (direction::INGRESS, Via::Buf),
        arch::WRITE | arch::SENDTO => (direction::EGRESS, Via::Buf),
        arch::READV => (direction::INGRESS, Via::Iov),
        arch::WRITEV => (direction::EGRESS, Via::Iov),
        arch::RECVMSG => (direction::INGRESS, Via::Msg),
        arch::SENDMSG => (direction::EGRESS, Via::Msg),
        arch::SENDFILE => (direction::EGRESS, Via::Kernel),
        _ => return None,
    })
}

// ---- Socket hooks ------------------------------------------------------------------------

#[raw_tracepoint(tracepoint = "sock_send_length")]
pub fn sock_send(ctx: RawTracePointContext) -> i32 {
    on_socket_io(&ctx, direction::EGRESS);
    0
}

#[raw_tracepoint(tracepoint = "sock_recv_length")]
pub fn sock_recv(ctx: RawTracePointContext) -> i32 {
    on_socket_io(&ctx, direction::INGRESS);
    0
}

/// `TP_PROTO(struct sock *sk, int ret, int flags)`: `ret` bytes moved through `sk` in the
/// current task's syscall.
#[inline(always)]
fn on_socket_io(ctx: &RawTracePointContext, dir: u8) {
    let ret = ctx.arg::<u64>(1) as i32;
    if ret <= 0 {
        return;
    }
    // A peek leaves the bytes in the socket: the read that takes them is the one to count.
    if dir == direction::INGRESS && ctx.arg::<u64>(2) as u32 & MSG_PEEK != 0 {
        return;
    }
    let Some(cgroup_id) = targeted() else {
        return;
    };
    let sk = ctx.arg::<u64>(0);
    let regs = Regs::current();
    transfer_in_syscall::<true>(&regs, dir, ret as u64, cgroup_id, sk);
}

/// `n` bytes moved through `sk` inside the syscall whose registers are `regs`.
#[inline(always)]
fn transfer_in_syscall<const LOOP: bool>(regs: &Regs, dir: u8, n: u64, cgroup_id: u64, sk: u64) {
    let Some((sys_dir, via)) = transfer_syscall(regs.nr()) else {
        bump(counter::UNKNOWN_SYSCALL, 1);
        return;
    };
    if sys_dir != dir {
        bump(counter::UNKNOWN_SYSCALL, 1);
        return;
    }
    on_transfer::<LOOP>(regs, dir, via, n, cgroup_id, sk);
}

// ---- fentry and kprobe hooks (kernels before 6.3) ------------------------------------------
//
// `int inet_sendmsg(struct socket *sock, struct msghdr *msg, size_t size)` and
// `int inet_recvmsg(struct socket *sock, struct msghdr *msg, size_t size, int flags)`, and
// their IPv6 twins `inet6_sendmsg`/`inet6_recvmsg` (same signatures, unchanged from 5.x to
// 6.x): every TCP write and read of a process goes through one of them, as the socket
// tracepoints do from 6.3. They are the `proto_ops` of the socket, called from `socket.c`
// (another compilation unit), so never inlined away; `sock_sendmsg` itself is, into
// `__sys_sendto`, on Debian's 6.1, and a probe there misses `send()`. The byte count is their
// return value, so the programs run at return (fexit; kprobe entry stashes the arguments for
// the kretprobe). `sock->sk` is the connection's socket; the syscall's arguments come from the
// task's saved user registers, as on the other hooks.

/// `ret` bytes moved through `sock` (a `struct socket *`) in the current task's syscall.
#[inline(always)]
fn on_sock_call<const LOOP: bool>(sock: u64, ret: i32, msg_flags: u32, dir: u8) {
    if ret <= 0 {
        return;
    }
    if dir == direction::INGRESS && msg_flags & MSG_PEEK != 0 {
        return;
    }
    let Some(cgroup_id) = targeted() else {
        return;
    };
    // SAFETY: a constant the loader may have rewritten; volatile so it is not folded.
    let sk_off = unsafe { core::ptr::read_volatile(&SOCKET_SK) };
    // SAFETY: kernel memory through bpf_probe_read_kernel, which fails cleanly.
    let Ok(sk) = (unsafe { bpf_probe_read_kernel((sock + u64::from(sk_off)) as *const u64) })
    else {
        return;
    };
    let Some(regs) = Regs::from_task_stack() else {
        return;
    };
    transfer_in_syscall::<LOOP>(&regs, dir, ret as u64, cgroup_id, sk);
}

#[inline(always)]
fn fexit_send<const LOOP: bool>(ctx: &FExitContext) -> i32 {
    // (sock, msg, size) then the return value.
    on_sock_call::<LOOP>(
        ctx.arg::<u64>(0),
        ctx.arg::<u64>(3) as i32,
        0,
        direction::EGRESS,
    );
    0
}

#[inline(always)]
fn fexit_recv<const LOOP: bool>(ctx: &FExitContext) -> i32 {
    // (sock, msg, size, flags) then the return value.
    on_sock_call::<LOOP>(
        ctx.arg::<u64>(0),
        ctx.arg::<u64>(4) as i32,
        ctx.arg::<u64>(3) as u32,
        direction::INGRESS,
    );
    0
}

// An fexit program is loaded for one kernel function: one program per function and loop.

#[fexit(function = "inet_sendmsg")]
pub fn fexit_inet_send(ctx: FExitContext) -> i32 {
    fexit_send::<true>(&ctx)
}

#[fexit(function = "inet6_sendmsg")]
pub fn fexit_inet6_send(ctx: FExitContext) -> i32 {
    fexit_send::<true>(&ctx)
}

#[fexit(function = "inet_recvmsg")]
pub fn fexit_inet_recv(ctx: FExitContext) -> i32 {
    fexit_recv::<true>(&ctx)
}

#[fexit(function = "inet6_recvmsg")]
pub fn fexit_inet6_recv(ctx: FExitContext) -> i32 {
    fexit_recv::<true>(&ctx)
}

#[fexit(function = "inet_sendmsg")]
pub fn fexit_inet_send_unrolled(ctx: FExitContext) -> i32 {
    fexit_send::<false>(&ctx)
}

#[fexit(function = "inet6_sendmsg")]
pub fn fexit_inet6_send_unrolled(ctx: FExitContext) -> i32 {
    fexit_send::<false>(&ctx)
}

#[fexit(function = "inet_recvmsg")]
pub fn fexit_inet_recv_unrolled(ctx: FExitContext) -> i32 {
    fexit_recv::<false>(&ctx)
}

#[fexit(function = "inet6_recvmsg")]
pub fn fexit_inet6_recv_unrolled(ctx: FExitContext) -> i32 {
    fexit_recv::<false>(&ctx)
}

/// `int inet_sendpage(struct socket *sock, struct page *page, int offset, size_t size, int
/// flags)`: sendfile's path to a TCP socket before 6.5 (from 6.5 it is `inet_sendmsg`); only
/// the byte count is known, as on the other hooks. The loader attaches it only where the
/// kernel has the function. Nothing is copied, so one program serves both copy loops.
#[fexit(function = "inet_sendpage")]
pub fn fexit_inet_sendpage(ctx: FExitContext) -> i32 {
    on_sock_call::<false>(
        ctx.arg::<u64>(0),
        ctx.arg::<u64>(5) as i32,
        0,
        direction::EGRESS,
    );
    0
}

/// Entry of `inet{,6}_sendmsg`/`inet{,6}_recvmsg` (and `inet_sendpage`): stashes the socket (and the recv flags) of
/// a target process's thread for the return probe.
#[inline(always)]
fn kprobe_stash(ctx: &ProbeContext, has_flags: bool) -> u32 {
    if targeted().is_none() {
        return 0;
    }
    let Some(sock) = ctx.arg::<u64>(0) else {
        return 0;
    };
    let flags = if has_flags {
        ctx.arg::<u64>(3).unwrap_or(0)
    } else {
        0
    };
    let _ = STASH.insert(bpf_get_current_pid_tgid(), Stashed { sock, flags }, 0);
    0
}

#[inline(always)]
fn kretprobe_io<const LOOP: bool>(ctx: &RetProbeContext, dir: u8) -> u32 {
    let id = bpf_get_current_pid_tgid();
    // SAFETY: the value is copied out before the entry is removed.
    let Some(stashed) = (unsafe { STASH.get(id) }).copied() else {
        return 0;
    };
    let _ = STASH.remove(id);
    let ret = ctx.ret::<u64>() as i32;
    on_sock_call::<LOOP>(stashed.sock, ret, stashed.flags as u32, dir);
    0
}

// A kprobe program attaches to any number of functions: the loader puts each on the IPv4 and
// the IPv6 function.

#[kprobe]
pub fn kprobe_sock_send(ctx: ProbeContext) -> u32 {
    kprobe_stash(&ctx, false)
}

#[kprobe]
pub fn kprobe_sock_recv(ctx: ProbeContext) -> u32 {
    kprobe_stash(&ctx, true)
}

#[kretprobe]
pub fn kretprobe_sock_send(ctx: RetProbeContext) -> u32 {
    kretprobe_io::<true>(&ctx, direction::EGRESS)
}

#[kretprobe]
pub fn kretprobe_sock_recv(ctx: RetProbeContext) -> u32 {
    kretprobe_io::<true>(&ctx, direction::INGRESS)
}

#[kretprobe]
pub fn kretprobe_sock_send_unrolled(ctx: RetProbeContext) -> u32 {
    kretprobe_io::<false>(&ctx, direction::EGRESS)
}

#[kretprobe]
pub fn kretprobe_sock_recv_unrolled(ctx: RetProbeContext) -> u32 {
    kretprobe_io::<false>(&ctx, direction::INGRESS)
}

/// `TP_PROTO(const struct sock *sk, const int oldstate, const int newstate)`: the handshake
/// names the socket's role; `TCP_CLOSE` ends the connection of the fd that owned it. Runs for
/// every TCP socket on the node (often in softirq context, where the current task is
/// unrelated), a few times per connection.
#[raw_tracepoint(tracepoint = "inet_sock_set_state")]
pub fn sock_state(ctx: RawTracePointContext) -> i32 {
    let sk = ctx.arg::<u64>(0);
    let old = ctx.arg::<u64>(1) as i32;
    let new = ctx.arg::<u64>(2) as i32;
    match new {
        TCP_ESTABLISHED => {
            let role = match old {
                TCP_SYN_SENT => flags::ROLE_CLIENT,
                TCP_SYN_RECV => flags::ROLE_SERVER,
                _ => return 0,
            };
            let info = SockInfo {
                role,
                owned: 0,
                owner: ConnKey::default(),
                generation: 0,
            };
            let _ = SOCKS.insert(sk, info, 0);
        }
        TCP_CLOSE => {
            // SAFETY: the value is copied out before the entry is removed.
            let Some(info) = (unsafe { SOCKS.get(sk) }).copied() else {
                return 0;
            };
            let _ = SOCKS.remove(sk);
            if info.owned == 0 {
                return 0;
            }
            let key = info.owner;
            let Some(state) = CONNS.get_ptr_mut(key) else {
                return 0;
            };
            // SAFETY: map value pointer valid for the program's duration.
            let (generation, muted, owner_sk) =
                unsafe { ((*state).generation, (*state).muted, (*state).sk) };
            if generation != info.generation || owner_sk != sk {
                // The fd already names a newer connection.
                return 0;
            }
            let _ = CONNS.remove(key);
            let _ = MUTED.remove(MutedKey {
                tgid: key.tgid,
                fd: key.fd,
                generation,
            });
            if muted == 0 {
                emit_close(&key, generation, 0);
            }
        }
        _ => {}
    }
    0
}

/// What [`announce_socket`] found the socket of a new generation to be.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Announced {
    /// Not an IP socket: nothing to capture.
    NotIp,
    /// A socket to follow until its `TCP_CLOSE`.
    Live,
    /// A TCP connection already closed (reset) before this, its first transfer, was seen: no
    /// `TCP_CLOSE` will come to end the generation, so it ends after this transfer.
    Ended,
}

/// A new generation on a socket hook: records which fd owns `sk` (so `TCP_CLOSE` can end it)
/// and, for a socket whose handshake was seen, emits OPEN with the role and both addresses
/// read from the socket.
#[inline(always)]
fn announce_socket(key: &ConnKey, generation: u64, sk: u64, cgroup_id: u64) -> Announced {
    let read_u16 = |off: u64| unsafe { bpf_probe_read_kernel((sk + off) as *const u16) };
    let family = read_u16(SKC_FAMILY).unwrap_or(0);
    if family != AF_INET && family != AF_INET6 {
        return Announced::NotIp;
    }
    // SAFETY: the value is copied out.
    let known = unsafe { SOCKS.get(sk) }.copied();
    // A transfer whose connection was reset meanwhile: on loopback a write to a peer that has
    // closed (a health check that connected and left) brings the peer's reset back before the
    // send returns, so `TCP_CLOSE` has passed before the hook at its end. Followed like any
    // other, the generation would outlive the socket, and the next socket the kernel hands
    // out at the same address (the slab's last freed one) on the same fd number would
    // continue it, unnamed. A TCP socket keeps its peer's port once closed; an unconnected
    // UDP socket (also `TCP_CLOSE`) has none.
    // SAFETY: kernel memory through bpf_probe_read_kernel, which fails cleanly.
    let state = unsafe { bpf_probe_read_kernel((sk + SKC_STATE) as *const u8) }.unwrap_or(0);
    let ended =
        known.is_none() && i32::from(state) == TCP_CLOSE && read_u16(SKC_DPORT).unwrap_or(0) != 0;
    let role = if ended {
        // Named here and now (the fd may name another socket by the time user space could
        // look in /proc), without a role: its handshake was not seen.
        0
    } else {
        let info = SockInfo {
            role: known.map_or(0, |k| k.role),
            owned: 1,
            owner: *key,
            generation,
        };
        let _ = SOCKS.insert(sk, info, 0);
        if info.role == 0 {
            // Established before the programs were loaded, or not TCP: user space names it
            // from /proc once its bytes look like HTTP.
            return Announced::Live;
        }
        info.role
    };
    let mut hdr = header(key, generation, 0, kind::OPEN, cgroup_id);
    hdr.flags = role | flags::ENDPOINTS;
    emit_open(&hdr, &socket_addrs(sk, family), BPF_RB_NO_WAKEUP);
    if ended {
        Announced::Ended
    } else {
        Announced::Live
    }
}

/// Both ends of an IP socket, read from its `sock_common`.
#[inline(always)]
fn socket_addrs(sk: u64, family: u16) -> OpenAddrs {
    let read_u16 = |off: u64| unsafe { bpf_probe_read_kernel((sk + off) as *const u16) };
    let mut addrs = OpenAddrs::default();
    addrs.peer.listen_fd = NO_FD;
    addrs.local.listen_fd = NO_FD;
    addrs.peer.family = family;
    addrs.local.family = family;
    addrs.peer.port_be = read_u16(SKC_DPORT).unwrap_or(0);
    addrs.local.port_be = read_u16(SKC_NUM).unwrap_or(0).to_be();
    let read_ip = |off: u64, out: &mut [u8; 16], v6: bool| {
        // SAFETY: kernel memory through bpf_probe_read_kernel, which fails cleanly.
        if v6 {
            if let Ok(a) = unsafe { bpf_probe_read_kernel((sk + off) as *const [u8; 16]) } {
                *out = a;
            }
        } else if let Ok(a) = unsafe { bpf_probe_read_kernel((sk + off) as *const [u8; 4]) } {
            out[..4].copy_from_slice(&a);
        }
    };
    if family == AF_INET {
        read_ip(SKC_DADDR, &mut addrs.peer.addr, false);
        read_ip(SKC_RCV_SADDR, &mut addrs.local.addr, false);
    } else {
        // SAFETY: constants the loader may have rewritten; volatile so they are not folded.
        let (d, s) = unsafe {
            (
                core::ptr::read_volatile(&SK_V6_DADDR),
                core::ptr::read_volatile(&SK_V6_SADDR),
            )
        };
        read_ip(u64::from(d), &mut addrs.peer.addr, true);
        read_ip(u64::from(s), &mut addrs.local.addr, true);
    }
    addrs
}

// ---- Syscall hook (last resort) ------------------------------------------------------------

#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn sys_exit(ctx: RawTracePointContext) -> i32 {
    on_sys_exit::<true>(&ctx)
}

/// `sys_exit` for kernels without `bpf_loop` (before 5.17): the copy loop is bounded by
/// `UNROLLED_STEPS` and checked step by step by the verifier.
#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn sys_exit_unrolled(ctx: RawTracePointContext) -> i32 {
    on_sys_exit::<false>(&ctx)
}

#[inline(always)]
fn on_sys_exit<const LOOP: bool>(ctx: &RawTracePointContext) -> i32 {
    // TP_PROTO(struct pt_regs *regs, long ret)
    let regs = Regs(ctx.arg::<u64>(0));
    let ret = ctx.arg::<i64>(1);
    let nr = regs.nr();
    let Some((dir, via)) = transfer_syscall(nr) else {
        if matches!(
            nr,
            arch::CONNECT | arch::ACCEPT | arch::ACCEPT4 | arch::CLOSE
        ) && let Some(cgroup_id) = targeted()
        {
            on_lifecycle(&regs, nr, ret, cgroup_id);
        }
        return 0;
    };
    if ret <= 0 || peeked(&regs, nr) {
        return 0;
    }
    let Some(cgroup_id) = targeted() else {
        return 0;
    };
    on_transfer::<LOOP>(&regs, dir, via, ret as u64, cgroup_id, 0);
    0
}

/// A `recvfrom(fd, buf, len, flags, ...)` or `recvmsg(fd, msg, flags)` with `MSG_PEEK`: the
/// bytes stay in the socket and the read that takes them is the one to count (the socket hooks
/// get the flags from their tracepoint). Counting a peek would put its bytes in the stream
/// twice: curl peeks one byte to check that a kept-alive connection is still open.
#[inline(always)]
fn peeked(regs: &Regs, nr: i64) -> bool {
    let flags = match nr {
        arch::RECVFROM => regs.arg(3),
        arch::RECVMSG => regs.arg(2),
        _ => return false,
    };
    flags as u32 & MSG_PEEK != 0
}

/// `n` bytes moved through fd `arg(0)`; `sk` is the socket on the socket hooks, 0 on the
/// syscall hook.
#[inline(always)]
fn on_transfer<const LOOP: bool>(regs: &Regs, dir: u8, via: Via, n: u64, cgroup_id: u64, sk: u64) {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let key = ConnKey {
        tgid,
        fd: regs.arg(0) as u32,
    };
    let Some((state, ended)) = conn_for_transfer(&key, sk, cgroup_id) else {
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
    emit_data::<LOOP>(regs, &hdr, via, pos, n);
    if ended {
        emit_close(&key, generation, cgroup_id);
        let _ = CONNS.remove(key);
    }
}

/// The DATA of `n` bytes at stream position `pos` whose buffers `regs` name.
#[inline(always)]
fn emit_data<const LOOP: bool>(regs: &Regs, hdr: &EventHeader, via: Via, pos: u64, n: u64) {
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
            emit_chunk(hdr, pos, 0, n, false, flags::UNCOPYABLE);
            return;
        }
    };
    // An iovec array with no entries moved nothing; (0, 0) would read as a plain buffer.
    if iovcnt == 0 && !matches!(via, Via::Buf) {
        emit_chunk(hdr, pos, 0, n, false, flags::LIMIT_HIT);
        return;
    }
    emit_transfer::<LOOP>(hdr, pos, src, iovcnt, n);
}

/// connect, accept/accept4 (a connection opens) and close (it ends).
#[inline(always)]
fn on_lifecycle(regs: &Regs, nr: i64, ret: i64, cgroup_id: u64) {
    match nr {
        // connect(fd, addr, addrlen): 0, or EINPROGRESS for a non-blocking socket.
        arch::CONNECT if ret == 0 || ret == -EINPROGRESS => {
            on_open(
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
                ret as u32,
                regs.arg(1),
                flags::ROLE_SERVER,
                regs.arg(0) as u32,
                cgroup_id,
            );
        }
        arch::CLOSE if ret == 0 => on_close(regs.arg(0) as u32),
        _ => {}
    }
}

fn on_open(fd: u32, sockaddr: u64, role: u16, listen_fd: u32, cgroup_id: u64) {
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
        if family == AF_INET
            && let Ok(a) = unsafe { bpf_probe_read_user((sockaddr + 4) as *const [u8; 4]) }
        {
            addr.addr[..4].copy_from_slice(&a);
        } else if family == AF_INET6
            && let Ok(a) = unsafe { bpf_probe_read_user((sockaddr + 8) as *const [u8; 16]) }
        {
            addr.addr = a;
        }
    }
    let Some(state) = new_conn(&key, 0) else {
        return;
    };
    // SAFETY: map value pointer valid for the program's duration.
    let generation = unsafe { (*state).generation };
    if role == flags::ROLE_CLIENT && addr.family != AF_INET && addr.family != AF_INET6 {
        // A unix-domain or other non-IP connect: nothing to capture on this fd.
        unsafe { (*state).muted = 1 };
        return;
    }
    let mut hdr = header(&key, generation, 0, kind::OPEN, cgroup_id);
    hdr.flags = role;
    let addrs = OpenAddrs {
        peer: addr,
        local: SockAddr::default(),
    };
    // The one forced wakeup, on this hook only: the daemon names the socket's local end from
    // /proc while it still exists (a short-lived client may be gone 10 ms later), and opens are
    // once per connection. The socket hooks read both ends from the socket instead.
    emit_open(&hdr, &addrs, BPF_RB_FORCE_WAKEUP);
}

/// Outputs an OPEN event (header and addresses), reserved and written in place.
#[inline(always)]
fn emit_open(hdr: &EventHeader, addrs: &OpenAddrs, wakeup: u64) {
    match EVENTS.reserve::<OpenEvent>(0) {
        Some(mut record) => {
            let mut h = *hdr;
            h.cap_len = size_of::<OpenAddrs>() as u32;
            record.write(OpenEvent {
                header: h,
                addrs: *addrs,
            });
            record.submit(wakeup);
            bump(counter::EVENTS, 1);
        }
        None => bump(counter::EVENTS_LOST, 1),
    }
}

#[repr(C)]
struct OpenEvent {
    header: EventHeader,
    addrs: OpenAddrs,
}

/// Outputs a CLOSE event for one generation of (tgid, fd).
#[inline(always)]
fn emit_close(key: &ConnKey, generation: u64, cgroup_id: u64) {
    let hdr = header(key, generation, 0, kind::CLOSE, cgroup_id);
    match EVENTS.reserve::<EventHeader>(0) {
        Some(mut record) => {
            record.write(hdr);
            record.submit(BPF_RB_NO_WAKEUP);
            bump(counter::EVENTS, 1);
        }
        None => bump(counter::EVENTS_LOST, 1),
    }
}

/// close(fd) succeeded: the connection ends; a reused fd number starts a new generation.
#[inline(always)]
fn on_close(fd: u32) {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let key = ConnKey { tgid, fd };
    let Some(state) = CONNS.get_ptr_mut(key) else {
        return;
    };
    // SAFETY: map value pointer valid for the program's duration.
    let (generation, muted) = unsafe { ((*state).generation, (*state).muted) };
    let _ = CONNS.remove(key);
    let _ = MUTED.remove(MutedKey {
        tgid,
        fd,
        generation,
    });
    if muted == 0 {
        emit_close(&key, generation, 0);
    }
}

// ---- Probes ---------------------------------------------------------------------------------

/// Never attached: the loader loads it to learn whether the kernel has `bpf_loop` (5.17+),
/// which decides between `sys_exit` and `sys_exit_unrolled`.
#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn probe_bpf_loop(_ctx: RawTracePointContext) -> i32 {
    // SAFETY: one call of a callback that does nothing.
    unsafe {
        bpf_loop(
            1,
            probe_step as *mut core::ffi::c_void,
            core::ptr::null_mut(),
            0,
        );
    }
    0
}

extern "C" fn probe_step(_index: u32, _ctx: *mut core::ffi::c_void) -> i64 {
    1
}

// ---- The floor, for the benchmark -----------------------------------------------------------

/// Nothing at all, on the socket hooks: what attaching a program costs by itself.
#[raw_tracepoint(tracepoint = "sock_send_length")]
pub fn floor_empty(_ctx: RawTracePointContext) -> i32 {
    0
}

/// The least a capture can do on the socket hooks: the target check, the syscall's registers,
/// and one copy of the first buffer (at most 16 KiB) into a ring record reserved in place. No
/// connection state, no positions, no iovec walk beyond the first.
#[raw_tracepoint(tracepoint = "sock_send_length")]
pub fn floor_copy(ctx: RawTracePointContext) -> i32 {
    let ret = ctx.arg::<u64>(1) as i32;
    if ret <= 0 {
        return 0;
    }
    let Some(cgroup_id) = targeted() else {
        return 0;
    };
    let regs = Regs::current();
    let Some((dir, via)) = transfer_syscall(regs.nr()) else {
        return 0;
    };
    let src = match via {
        Via::Buf => regs.arg(1),
        Via::Iov => {
            // SAFETY: user memory via bpf_probe_read_user, which fails cleanly.
            unsafe { bpf_probe_read_user(regs.arg(1) as *const u64) }.unwrap_or(0)
        }
        Via::Msg | Via::Kernel => 0,
    };
    let key = ConnKey {
        tgid: (bpf_get_current_pid_tgid() >> 32) as u32,
        fd: regs.arg(0) as u32,
    };
    let hdr = header(&key, 0, dir, kind::DATA, cgroup_id);
    emit_chunk(&hdr, 0, src, ret as u64, true, 0);
    0
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
