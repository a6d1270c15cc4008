//! Per-architecture syscall numbers and `struct pt_regs` offsets the kernel programs use to
//! read a syscall's number and arguments from the saved user registers. Both tables are always
//! compiled, so the daemon's tests can check each against its architecture's kernel (the
//! aarch64 one against Debian's arm64 packages: `capture-daemon/src/kernel/arch_check.rs`);
//! `capture-ebpf` picks one by its `bpf_target_arch` cfg. [`sock_common`] is the same on both.

/// x86_64: syscall numbers from `asm/unistd_64.h`, offsets in `struct pt_regs`
/// (arch/x86/include/asm/ptrace.h).
pub mod x86_64 {
    /// `orig_ax`: the syscall number, kept until the syscall returns.
    pub const NR: usize = 120;
    /// di, si, dx, r10, r8, r9: the syscall argument registers, preserved until return.
    pub const ARGS: [usize; 6] = [112, 104, 96, 56, 72, 64];
    /// Whether the syscall number is a 32-bit field (`orig_ax` is 64-bit).
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

/// aarch64: syscall numbers from `asm-generic/unistd.h`, offsets in `struct pt_regs`
/// (arch/arm64/include/asm/ptrace.h). x0 holds the return value at exit; `orig_x0` keeps
/// argument 0.
pub mod aarch64 {
    /// `syscallno` (s32).
    pub const NR: usize = 280;
    /// `orig_x0`, then `regs[1..=5]`.
    pub const ARGS: [usize; 6] = [272, 8, 16, 24, 32, 40];
    /// Whether the syscall number is a 32-bit field (`syscallno` is s32).
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

/// Byte offsets in the kernel's `struct sock_common` (include/net/sock.h) the programs read a
/// socket's addresses from, on x86_64 and arm64 alike (checked against both kernels' BTF).
pub mod sock_common {
    /// `skc_daddr` (network order).
    pub const DADDR: u64 = 0;
    /// `skc_rcv_saddr` (network order).
    pub const RCV_SADDR: u64 = 4;
    /// `skc_dport` (network order).
    pub const DPORT: u64 = 12;
    /// `skc_num` (host order).
    pub const NUM: u64 = 14;
    /// `skc_family`.
    pub const FAMILY: u64 = 16;
    /// `skc_state` (one byte, `TCP_*` of include/net/tcp_states.h).
    pub const STATE: u64 = 18;
    /// `skc_v6_daddr`: depends on the kernel's configuration (the IPv4 fields before it have
    /// not moved since 2.6); this is the default of kernels with network namespaces, which
    /// user space may override at load.
    pub const V6_DADDR: u32 = 56;
    /// `skc_v6_rcv_saddr`, as [`V6_DADDR`].
    pub const V6_RCV_SADDR: u32 = 72;
}
