//! Loading and attaching the kernel programs, and the maps user space drives: the target
//! cgroups, the muted connections and the per-CPU counters. Dropping [`Capture`] detaches
//! every program; nothing is pinned, so nothing outlives the daemon.

use std::{collections::BTreeSet, sync::Arc};

use crate::telemetry::metrics::{Families, Source};
use aya::{
    Btf, Ebpf, EbpfLoader,
    maps::{HashMap, MapData, PerCpuArray, RingBuf},
    programs::{
        FExit, KProbe, RawTracePoint, fexit::FExitLinkId, kprobe::KProbeLinkId,
        raw_trace_point::RawTracePointLinkId,
    },
};
use capture_common::{MutedKey, counter};
use prometheus::proto::MetricType;
use tracing::{debug, info, warn};

/// The object built by build.rs from `capture-ebpf`.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/capture"));

/// Which hook the daemon may use (`--kernel-hook`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum HookChoice {
    /// The best hook this kernel has, in the order of [`Hook`]: the socket tracepoints, else
    /// fentry, else kprobes (both only with the kernel's BTF), else the syscall tracepoint.
    #[default]
    Auto,
    /// Only the socket tracepoints; loading fails where the kernel lacks them.
    Socket,
    /// Only fexit programs on `inet{,6}_sendmsg`/`inet{,6}_recvmsg` (BPF trampolines and
    /// BTF).
    Fentry,
    /// Only kprobes and kretprobes on `inet{,6}_sendmsg`/`inet{,6}_recvmsg`.
    Kprobe,
    /// Only the syscall tracepoint (the last resort), e.g. to test it on a kernel that has
    /// better.
    Syscall,
}

impl std::str::FromStr for HookChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Self::Auto),
            "socket" => Ok(Self::Socket),
            "fentry" => Ok(Self::Fentry),
            "kprobe" => Ok(Self::Kprobe),
            "syscall" => Ok(Self::Syscall),
            other => Err(format!(
                "{other:?} is not auto, socket, fentry, kprobe or syscall"
            )),
        }
    }
}

/// The hook the programs are attached to. The probe order is the order of preference.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    /// `sock:sock_send_length`, `sock:sock_recv_length` and `sock:inet_sock_set_state`
    /// (Linux 6.3+): only socket I/O runs a program.
    SocketTracepoints,
    /// fexit on the TCP `proto_ops` `inet{,6}_sendmsg`/`inet{,6}_recvmsg` (and
    /// `inet_sendpage`, sendfile's path before 6.5) and `sock:inet_sock_set_state`: only
    /// socket I/O runs a program, at about the cost of the tracepoints (kernels with BPF
    /// trampolines and BTF, before 6.3). Not `sock_sendmsg`: Debian's 6.1 inlines it into
    /// `__sys_sendto`, and a probe there misses `send()`. Tested on Debian's 6.1 and 5.10
    /// (`cargo xtask vm-test`).
    Fentry,
    /// kprobe + kretprobe on the same functions as [`Hook::Fentry`]: only socket I/O runs a
    /// program, but each probe costs a trap.
    Kprobes,
    /// `raw_syscalls:sys_exit`: every syscall of every process runs a program.
    SyscallTracepoint,
}

impl Hook {
    /// The metric label and log value.
    pub fn label(self) -> &'static str {
        match self {
            Self::SocketTracepoints => "socket_tracepoints",
            Self::Fentry => "fentry",
            Self::Kprobes => "kprobes",
            Self::SyscallTracepoint => "syscall_tracepoint",
        }
    }

    /// (program, attach point) pairs: the one place that says what each hook attaches.
    fn attachments(
        self,
        floor: Option<Floor>,
        copy_loop: CopyLoop,
    ) -> &'static [(&'static str, Attach)] {
        use Attach::{FExit, KProbe, RawTp};
        const STATE: (&str, Attach) = ("sock_state", RawTp("inet_sock_set_state"));
        match (self, floor, copy_loop) {
            (Self::SocketTracepoints, None, _) => &[
                STATE,
                ("sock_send", RawTp("sock_send_length")),
                ("sock_recv", RawTp("sock_recv_length")),
            ],
            (Self::Fentry, None, CopyLoop::BpfLoop) => &[
                STATE,
                ("fexit_inet_send", FExit("inet_sendmsg")),
                ("fexit_inet6_send", FExit("inet6_sendmsg")),
                ("fexit_inet_recv", FExit("inet_recvmsg")),
                ("fexit_inet6_recv", FExit("inet6_recvmsg")),
                ("fexit_inet_sendpage", FExit(SENDPAGE)),
            ],
            (Self::Fentry, None, CopyLoop::Unrolled) => &[
                STATE,
                ("fexit_inet_send_unrolled", FExit("inet_sendmsg")),
                ("fexit_inet6_send_unrolled", FExit("inet6_sendmsg")),
                ("fexit_inet_recv_unrolled", FExit("inet_recvmsg")),
                ("fexit_inet6_recv_unrolled", FExit("inet6_recvmsg")),
                ("fexit_inet_sendpage", FExit(SENDPAGE)),
            ],
            (Self::Kprobes, None, CopyLoop::BpfLoop) => &[
                STATE,
                ("kprobe_sock_send", KProbe("inet_sendmsg")),
                ("kprobe_sock_send", KProbe("inet6_sendmsg")),
                ("kretprobe_sock_send", KProbe("inet_sendmsg")),
                ("kretprobe_sock_send", KProbe("inet6_sendmsg")),
                ("kprobe_sock_send", KProbe(SENDPAGE)),
                ("kretprobe_sock_send", KProbe(SENDPAGE)),
                ("kprobe_sock_recv", KProbe("inet_recvmsg")),
                ("kprobe_sock_recv", KProbe("inet6_recvmsg")),
                ("kretprobe_sock_recv", KProbe("inet_recvmsg")),
                ("kretprobe_sock_recv", KProbe("inet6_recvmsg")),
            ],
            (Self::Kprobes, None, CopyLoop::Unrolled) => &[
                STATE,
                ("kprobe_sock_send", KProbe("inet_sendmsg")),
                ("kprobe_sock_send", KProbe("inet6_sendmsg")),
                ("kretprobe_sock_send_unrolled", KProbe("inet_sendmsg")),
                ("kretprobe_sock_send_unrolled", KProbe("inet6_sendmsg")),
                ("kprobe_sock_send", KProbe(SENDPAGE)),
                ("kretprobe_sock_send_unrolled", KProbe(SENDPAGE)),
                ("kprobe_sock_recv", KProbe("inet_recvmsg")),
                ("kprobe_sock_recv", KProbe("inet6_recvmsg")),
                ("kretprobe_sock_recv_unrolled", KProbe("inet_recvmsg")),
                ("kretprobe_sock_recv_unrolled", KProbe("inet6_recvmsg")),
            ],
            (Self::SyscallTracepoint, None, CopyLoop::BpfLoop) => {
                &[("sys_exit", RawTp("sys_exit"))]
            }
            (Self::SyscallTracepoint, None, CopyLoop::Unrolled) => {
                &[("sys_exit_unrolled", RawTp("sys_exit"))]
            }
            (_, Some(Floor::Empty), _) => &[
                ("floor_empty", RawTp("sock_send_length")),
                ("floor_empty", RawTp("sock_recv_length")),
            ],
            (_, Some(Floor::Copy), _) => &[
                ("floor_copy", RawTp("sock_send_length")),
                ("floor_copy", RawTp("sock_recv_length")),
            ],
        }
    }
}

impl Hook {
    /// [`Hook::attachments`] less [`SENDPAGE`] where the kernel does not have it.
    fn attachments_here(
        self,
        floor: Option<Floor>,
        copy_loop: CopyLoop,
        has_sendpage: bool,
    ) -> impl Iterator<Item = (&'static str, Attach)> {
        self.attachments(floor, copy_loop)
            .iter()
            .copied()
            .filter(move |(_, at)| {
                has_sendpage || !matches!(at, Attach::FExit(SENDPAGE) | Attach::KProbe(SENDPAGE))
            })
    }
}

/// sendfile's path into TCP before Linux 6.5 (later kernels send its pages through
/// `inet_sendmsg`): attached by the fentry and kprobe hooks where the kernel has it.
const SENDPAGE: &str = "inet_sendpage";

/// Where a program attaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Attach {
    /// A raw tracepoint, by name.
    RawTp(&'static str),
    /// fexit on a kernel function (needs the kernel's BTF to load).
    FExit(&'static str),
    /// kprobe or kretprobe (the program's own kind) on a kernel function.
    KProbe(&'static str),
}

/// One attachment, to detach on pause.
#[derive(Debug)]
enum Link {
    RawTp(RawTracePointLinkId),
    FExit(FExitLinkId),
    KProbe(KProbeLinkId),
}

/// What the kprobe and fentry programs need from the kernel's BTF (`/sys/kernel/btf/vmlinux`):
/// where `sk` is in `struct socket`, where `stack` is in `struct task_struct`, and where the
/// user registers sit on a task's kernel stack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelLayout {
    pub socket_sk: u32,
    pub task_stack: u32,
    pub stack_to_regs: u32,
    /// Whether the kernel has [`SENDPAGE`].
    pub has_sendpage: bool,
}

/// THREAD_SIZE of x86_64 and arm64 kernels without KASAN (which doubles it; no distribution
/// kernel enables it), with 4K or 16K pages; the user registers are the last `struct pt_regs`
/// below its top (`task_pt_regs()`; x86_64 kernels with FRED, 6.9+, keep 16 bytes of padding
/// above them, but those kernels have the socket tracepoints).
pub(crate) const THREAD_SIZE: u32 = 16 * 1024;

/// The kernel stack size: [`THREAD_SIZE`], except on arm64 kernels with vmapped stacks
/// (`CONFIG_VMAP_STACK`, on by default) and pages larger than it (64K-page kernels such as
/// RHEL's aarch64 one), whose stacks are one page (`THREAD_SHIFT` in
/// arch/arm64/include/asm/memory.h).
pub(crate) fn thread_size(arm64: bool, page_size: u32, vmap_stack: bool) -> u32 {
    if arm64 && vmap_stack && page_size > THREAD_SIZE {
        page_size
    } else {
        THREAD_SIZE
    }
}

impl KernelLayout {
    /// Reads the layout of the running kernel from its BTF.
    pub fn from_btf(data: &[u8]) -> Result<Self, crate::kernel::btf::BtfError> {
        let page_size = u32::try_from(rustix::param::page_size()).unwrap_or(u32::MAX);
        Self::from_btf_for(data, cfg!(target_arch = "aarch64"), page_size)
    }

    /// The layout of a kernel for x86_64 or arm64 with pages of `page_size` bytes, from its
    /// BTF (a task's stack is vmapped when `task_struct` has `stack_vm_area`).
    pub(crate) fn from_btf_for(
        data: &[u8],
        arm64: bool,
        page_size: u32,
    ) -> Result<Self, crate::kernel::btf::BtfError> {
        let btf = crate::kernel::btf::Btf::parse(data)?;
        let socket = btf.struct_layout("socket")?;
        let task = btf.struct_layout("task_struct")?;
        let regs = btf.struct_layout("pt_regs")?;
        let vmap_stack = task.offset("task_struct", "stack_vm_area").is_ok();
        let stack = thread_size(arm64, page_size, vmap_stack);
        Ok(Self {
            socket_sk: socket.offset("socket", "sk")?,
            task_stack: task.offset("task_struct", "stack")?,
            stack_to_regs: stack.saturating_sub(regs.size),
            has_sendpage: btf.has_function(SENDPAGE)?,
        })
    }
}

/// How the programs loop over a transfer's chunks and iovecs, chosen at load by probing the
/// kernel for the `bpf_loop` helper.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CopyLoop {
    /// `bpf_loop` (Linux 5.17+): the verifier checks the step once; the step count is only
    /// bounded by the configuration.
    BpfLoop,
    /// A loop the verifier walks step by step, for older kernels: at most
    /// [`capture_common::UNROLLED_STEPS`] chunks and iovecs per syscall, whatever the
    /// configuration says; the rest is a gap, counted as a truncation.
    Unrolled,
}

impl CopyLoop {
    /// The metric label and log value.
    pub fn label(self) -> &'static str {
        match self {
            Self::BpfLoop => "bpf_loop",
            Self::Unrolled => "unrolled",
        }
    }
}

/// The oldest kernel the programs load on: the BPF ring buffer came in Linux 5.8. (5.10 is the
/// oldest tested, in `cargo xtask vm-test`.)
pub const MIN_KERNEL: (u32, u32) = (5, 8);

/// `major.minor` of a kernel release string such as `6.1.0-41-cloud-amd64`.
pub fn parse_release(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.trim().split(['.', '-', '+']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// Refuses a kernel older than [`MIN_KERNEL`], naming both versions, before anything is
/// loaded. A release that does not parse is let through: the load itself will say what is
/// missing.
pub fn check_kernel_version(release: &str) -> Result<(), EbpfError> {
    match parse_release(release) {
        Some(found) if found < MIN_KERNEL => Err(EbpfError::KernelTooOld {
            found: release.trim().to_owned(),
            min: format!("{}.{}", MIN_KERNEL.0, MIN_KERNEL.1),
        }),
        _ => Ok(()),
    }
}

/// Benchmark only (`--kernel-floor`): instead of capturing, attach a program that does nothing
/// or only copies, on the socket tracepoints, to measure what the hook itself costs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Floor {
    Empty,
    Copy,
}

impl std::str::FromStr for Floor {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "empty" => Ok(Self::Empty),
            "copy" => Ok(Self::Copy),
            other => Err(format!("{other:?} is not empty or copy")),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EbpfError {
    #[error(
        "this capture-daemon was built with AYA_BUILD_SKIP=1 and holds no eBPF programs; \
         rebuild it without AYA_BUILD_SKIP (cargo xtask build-ebpf installs the toolchain)"
    )]
    NoObject,
    #[error(
        "not allowed to load eBPF programs ({0}); run as root or with CAP_BPF and CAP_PERFMON \
         (plus CAP_SYS_RESOURCE on kernels that charge BPF memory to RLIMIT_MEMLOCK)"
    )]
    Permission(String),
    #[error(
        "the kernel does not support what capture needs ({0}); it needs Linux 5.8 or newer \
         with BPF ring buffers and raw tracepoints"
    )]
    Unsupported(String),
    #[error("Linux {found} is too old for capture: the minimum is Linux {min} (BPF ring buffer)")]
    KernelTooOld { found: String, min: String },
    #[error("loading the eBPF programs failed: {0}")]
    Load(String),
}

/// Limits the kernel programs enforce, set at load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelLimits {
    pub ring_buffer_bytes: u32,
    /// Bytes of one syscall copied at most; the rest is reported as a gap.
    pub max_capture_bytes_per_syscall: u32,
    pub max_iovecs: u32,
    /// Entries of the target cgroup map (`--max-target-cgroups`).
    pub max_target_cgroups: u32,
    /// Where to attach (`--kernel-hook`).
    pub hook: HookChoice,
    /// Benchmark only: a floor program instead of capture (`--kernel-floor`).
    pub floor: Option<Floor>,
}

impl Default for KernelLimits {
    fn default() -> Self {
        Self {
            ring_buffer_bytes: 16 * 1024 * 1024,
            max_capture_bytes_per_syscall: capture_common::MAX_CHUNKS_PER_CALL
                * capture_common::MAX_CHUNK as u32,
            max_iovecs: capture_common::MAX_IOVECS,
            max_target_cgroups: 4096,
            hook: HookChoice::Auto,
            floor: None,
        }
    }
}

impl KernelLimits {
    /// Chunk events per syscall: the byte limit in 16 KiB chunks, rounded up.
    pub fn max_chunks(&self) -> u32 {
        self.max_capture_bytes_per_syscall
            .div_ceil(capture_common::MAX_CHUNK as u32)
    }
}

/// Kernel-side counters, summed over CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelCounters {
    pub events: u64,
    pub events_lost: u64,
    pub bytes_lost: u64,
    pub truncations: u64,
    pub conn_table_full: u64,
    pub unknown_syscall: u64,
}

/// The loaded and attached programs.
pub struct Capture {
    ebpf: Ebpf,
    targets: HashMap<MapData, u64, u8>,
    muted: HashMap<MapData, MutedKey, u8>,
    counters: Arc<KernelCounterReader>,
    target_set: BTreeSet<u64>,
    hook: Hook,
    floor: Option<Floor>,
    copy_loop: CopyLoop,
    /// Whether the kernel has [`SENDPAGE`] to attach to.
    has_sendpage: bool,
    /// The attachments, one per (program, attach point); empty while paused (detached).
    links: Vec<(&'static str, Link)>,
}

/// Reads the kernel's per-CPU counters and the programs' run statistics; shared with the
/// metrics endpoint so a scrape sees the kernel's numbers as they are, not as of the last tick.
pub struct KernelCounterReader {
    counters: PerCpuArray<MapData, u64>,
    /// (program name, kernel program id) of the attached hook's programs; ids change when a
    /// program is loaded again to resume (fexit before 5.13, see [`attach_one`]).
    programs: std::sync::Mutex<Vec<(&'static str, u32)>>,
    hook: Hook,
    copy_loop: CopyLoop,
}

/// A program's time inside the kernel, as `kernel.bpf_stats_enabled` accounts it (zero while
/// the sysctl is off).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProgramStats {
    pub run_time_ns: u64,
    pub run_count: u64,
}

impl KernelCounterReader {
    /// Events the kernel could not hand over so far (one map lookup: cheap enough for every
    /// drain).
    pub fn events_lost(&self) -> u64 {
        self.counters
            .get(&counter::EVENTS_LOST, 0)
            .map(|per_cpu| per_cpu.iter().sum())
            .unwrap_or(0)
    }

    pub fn read(&self) -> KernelCounters {
        let sum = |index: u32| -> u64 {
            self.counters
                .get(&index, 0)
                .map(|per_cpu| per_cpu.iter().sum())
                .unwrap_or(0)
        };
        KernelCounters {
            events: sum(counter::EVENTS),
            events_lost: sum(counter::EVENTS_LOST),
            bytes_lost: sum(counter::BYTES_LOST),
            truncations: sum(counter::TRUNCATIONS),
            conn_table_full: sum(counter::CONN_TABLE_FULL),
            unknown_syscall: sum(counter::UNKNOWN_SYSCALL),
        }
    }

    /// The hook the programs are attached to.
    pub fn hook(&self) -> Hook {
        self.hook
    }

    /// (program name, kernel program id) of the hook's programs now.
    pub fn program_ids(&self) -> Vec<(&'static str, u32)> {
        self.programs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Run statistics of each program of the hook, by program name.
    pub fn program_stats(&self) -> Vec<(&'static str, ProgramStats)> {
        let programs = self.program_ids();
        let mut stats: Vec<(&'static str, ProgramStats)> = programs
            .iter()
            .map(|(name, _)| (*name, ProgramStats::default()))
            .collect();
        for info in aya::programs::loaded_programs().filter_map(Result::ok) {
            if let Some(i) = programs.iter().position(|(_, id)| *id == info.id()) {
                stats[i].1 = ProgramStats {
                    run_time_ns: u64::try_from(info.run_time().as_nanos()).unwrap_or(u64::MAX),
                    run_count: info.run_count(),
                };
            }
        }
        stats
    }
}

impl Source for KernelCounterReader {
    fn collect(&self, out: &mut Families) {
        let k = self.read();
        for (name, help, value) in [
            (
                "capture_kernel_events_total",
                "Events the kernel programs handed to the ring buffer.",
                k.events,
            ),
            (
                "capture_kernel_events_lost_total",
                "Events the kernel could not hand over (ring buffer full).",
                k.events_lost,
            ),
            (
                "capture_kernel_bytes_lost_total",
                "Payload bytes of the events lost in the kernel.",
                k.bytes_lost,
            ),
            (
                "capture_kernel_truncations_total",
                "Transfers the kernel copied only in part (iovec or chunk limits); the rest is a gap.",
                k.truncations,
            ),
            (
                "capture_kernel_conn_table_full_total",
                "Connections the kernel could not track (connection map full).",
                k.conn_table_full,
            ),
            (
                "capture_kernel_unknown_syscall_total",
                "Socket I/O of a target process through a syscall the programs do not walk (sendmmsg, recvmmsg, splice, io_uring); its bytes are not seen.",
                k.unknown_syscall,
            ),
        ] {
            out.counter(name, help, value);
        }
        out.labelled(
            "capture_kernel_hook_info",
            "The hook the kernel programs are attached to.",
            MetricType::GAUGE,
            &["hook"],
            [(&[self.hook.label()][..], 1)],
        );
        out.labelled(
            "capture_kernel_copy_loop_info",
            "How the kernel programs loop over a transfer's chunks: bpf_loop (Linux 5.17+) or \
             unrolled (older kernels; at most 64 chunks and iovecs per syscall).",
            MetricType::GAUGE,
            &["loop"],
            [(&[self.copy_loop.label()][..], 1)],
        );
        let stats = self.program_stats();
        // Seconds, not nanoseconds: Prometheus names carry base units (promtool rejects `_ns`).
        #[expect(
            clippy::cast_precision_loss,
            reason = "nanoseconds stay exact in an f64 for over 100 days of program run time"
        )]
        let seconds = |ns: u64| ns as f64 / 1e9;
        out.labelled_f64(
            "capture_kernel_program_run_seconds_total",
            "Time the kernel programs ran, counted while kernel.bpf_stats_enabled is 1.",
            MetricType::COUNTER,
            &["program"],
            stats
                .iter()
                .map(|(name, s)| (std::slice::from_ref(name), seconds(s.run_time_ns))),
        );
        out.labelled(
            "capture_kernel_program_runs_total",
            "Times the kernel programs ran, counted while kernel.bpf_stats_enabled is 1.",
            MetricType::COUNTER,
            &["program"],
            stats
                .iter()
                .map(|(name, s)| (std::slice::from_ref(name), s.run_count)),
        );
    }
}

impl Capture {
    /// Loads the programs with a ring buffer of `ring_buffer_bytes` and attaches them to the
    /// hook `limits.hook` allows, probing in order of preference. Until targets are set
    /// nothing is captured: every program returns at its first check.
    pub fn load(limits: &KernelLimits) -> Result<Self, EbpfError> {
        Self::load_with(limits, None)
    }

    /// [`Capture::load`], with the copy loop forced (tests run the unrolled variant on a
    /// kernel that has `bpf_loop`).
    pub fn load_with(
        limits: &KernelLimits,
        force_loop: Option<CopyLoop>,
    ) -> Result<Self, EbpfError> {
        let ring_buffer_bytes = limits.ring_buffer_bytes;
        if OBJECT.is_empty() {
            return Err(EbpfError::NoObject);
        }
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map_err(|e| EbpfError::Load(format!("reading /proc/sys/kernel/osrelease: {e}")))?;
        check_kernel_version(&release)?;
        // Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK; later ones ignore it.
        if let Err(e) = nix::sys::resource::setrlimit(
            nix::sys::resource::Resource::RLIMIT_MEMLOCK,
            nix::sys::resource::RLIM_INFINITY,
            nix::sys::resource::RLIM_INFINITY,
        ) {
            debug!(error = %e, "could not raise RLIMIT_MEMLOCK");
        }
        // The kprobe and fentry hooks need three layouts from the kernel's BTF; without them
        // those hooks are not tried.
        let layout = match std::fs::read("/sys/kernel/btf/vmlinux") {
            Ok(data) => KernelLayout::from_btf(&data)
                .map_err(|e| debug!(error = %e, "kernel BTF unusable: no kprobe or fentry hook"))
                .ok(),
            Err(e) => {
                debug!(error = %e, "no kernel BTF: no kprobe or fentry hook");
                None
            }
        };
        let unset = KernelLayout {
            socket_sk: 24,
            task_stack: 0,
            stack_to_regs: 0,
            has_sendpage: false,
        };
        let globals = layout.unwrap_or(unset);
        let mut ebpf = EbpfLoader::new()
            // The programs use no CO-RE relocations: parsing the kernel's BTF would only cost
            // tens of MiB of peak memory (fexit programs parse it when that hook is tried).
            .btf(None)
            .override_global("SOCKET_SK", &globals.socket_sk, true)
            .override_global("TASK_STACK", &globals.task_stack, true)
            .override_global("STACK_TO_REGS", &globals.stack_to_regs, true)
            .map_max_entries("EVENTS", ring_buffer_bytes)
            .map_max_entries("TARGET_CGROUPS", limits.max_target_cgroups)
            .override_global("MAX_CHUNKS", &limits.max_chunks(), true)
            .override_global("MAX_IOVS", &limits.max_iovecs, true)
            .load(OBJECT)
            .map_err(classify_load_error)?;
        let copy_loop = match force_loop {
            Some(l) => l,
            None => probe_copy_loop(&mut ebpf)?,
        };
        let candidates: Vec<Hook> = match (limits.floor, limits.hook) {
            // The floor programs live on the socket tracepoints only.
            (Some(_), _) | (None, HookChoice::Socket) => vec![Hook::SocketTracepoints],
            (None, HookChoice::Fentry) => vec![Hook::Fentry],
            (None, HookChoice::Kprobe) => vec![Hook::Kprobes],
            (None, HookChoice::Syscall) => vec![Hook::SyscallTracepoint],
            // Without the layouts from BTF the fentry and kprobe programs could not find the
            // syscall's registers: they are not tried.
            (None, HookChoice::Auto) if layout.is_none() => {
                vec![Hook::SocketTracepoints, Hook::SyscallTracepoint]
            }
            (None, HookChoice::Auto) => vec![
                Hook::SocketTracepoints,
                Hook::Fentry,
                Hook::Kprobes,
                Hook::SyscallTracepoint,
            ],
        };
        if layout.is_none() && matches!(candidates[..], [Hook::Fentry | Hook::Kprobes]) {
            return Err(EbpfError::Unsupported(
                "the kprobe and fentry hooks need the kernel's BTF (/sys/kernel/btf/vmlinux)"
                    .into(),
            ));
        }
        let mut kernel_btf = None;
        let mut chosen = None;
        for (i, &hook) in candidates.iter().enumerate() {
            match attach_hook(
                &mut ebpf,
                hook,
                limits.floor,
                copy_loop,
                globals.has_sendpage,
                &mut kernel_btf,
            ) {
                Ok(links) => {
                    chosen = Some((hook, links));
                    break;
                }
                // Another hook may still work; a permission problem will not go away.
                Err(e) if i + 1 < candidates.len() && !matches!(e, EbpfError::Permission(_)) => {
                    info!(hook = hook.label(), reason = %e, "kernel hook unavailable, trying the next");
                }
                Err(e) => return Err(e),
            }
        }
        let Some((hook, links)) = chosen else {
            return Err(EbpfError::Unsupported("no kernel hook to try".into()));
        };
        info!(
            hook = hook.label(),
            copy_loop = copy_loop.label(),
            kernel = release.trim(),
            floor = ?limits.floor,
            "kernel programs attached"
        );
        if copy_loop == CopyLoop::Unrolled
            && limits.max_chunks() + limits.max_iovecs > capture_common::UNROLLED_STEPS
        {
            warn!(
                max_chunks = limits.max_chunks(),
                max_iovecs = limits.max_iovecs,
                steps = capture_common::UNROLLED_STEPS,
                "this kernel has no bpf_loop: at most {} chunks and iovecs per syscall are \
                 copied, the rest is a gap (capture_kernel_truncations_total)",
                capture_common::UNROLLED_STEPS
            );
        }
        let programs = program_ids(&ebpf, hook, limits.floor, copy_loop, globals.has_sendpage)?;
        let targets = take_hash(&mut ebpf, "TARGET_CGROUPS")?;
        let muted = take_hash(&mut ebpf, "MUTED")?;
        let counters = Arc::new(KernelCounterReader {
            counters: ebpf
                .take_map("COUNTERS")
                .ok_or_else(|| EbpfError::Load("map COUNTERS missing".into()))?
                .try_into()
                .map_err(|e| EbpfError::Load(format!("COUNTERS: {e}")))?,
            programs: std::sync::Mutex::new(programs),
            hook,
            copy_loop,
        });
        Ok(Self {
            ebpf,
            targets,
            muted,
            counters,
            target_set: BTreeSet::new(),
            hook,
            floor: limits.floor,
            copy_loop,
            has_sendpage: globals.has_sendpage,
            links,
        })
    }

    /// How the programs loop over a transfer's chunks.
    pub fn copy_loop(&self) -> CopyLoop {
        self.copy_loop
    }

    /// The hook the programs are attached to.
    pub fn hook(&self) -> Hook {
        self.hook
    }

    /// True when a floor program runs instead of capture: its records are to be discarded.
    pub fn is_floor(&self) -> bool {
        self.floor.is_some()
    }

    /// Detaches the programs (pause): from now on nothing is looked at, not even filtered.
    /// The maps stay, so [`Capture::attach`] resumes with the same targets.
    pub fn detach(&mut self) -> Result<(), EbpfError> {
        while let Some((name, link)) = self.links.pop() {
            detach(&mut self.ebpf, name, link)?;
        }
        Ok(())
    }

    /// Attaches the programs again after [`Capture::detach`].
    pub fn attach(&mut self) -> Result<(), EbpfError> {
        if self.links.is_empty() {
            // Every program is loaded by now: no BTF is parsed again.
            let mut no_btf = None;
            self.links = attach_hook(
                &mut self.ebpf,
                self.hook,
                self.floor,
                self.copy_loop,
                self.has_sendpage,
                &mut no_btf,
            )?;
            let ids = program_ids(
                &self.ebpf,
                self.hook,
                self.floor,
                self.copy_loop,
                self.has_sendpage,
            )?;
            *self
                .counters
                .programs
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = ids;
        }
        Ok(())
    }

    pub fn is_attached(&self) -> bool {
        !self.links.is_empty()
    }

    /// Cgroups in the kernel's target set now.
    pub fn target_count(&self) -> usize {
        self.target_set.len()
    }

    /// The ring buffer the programs write events into (taken once).
    pub fn take_events(&mut self) -> Result<RingBuf<MapData>, EbpfError> {
        self.ebpf
            .take_map("EVENTS")
            .ok_or_else(|| EbpfError::Load("map EVENTS missing or already taken".into()))?
            .try_into()
            .map_err(|e| EbpfError::Load(format!("EVENTS: {e}")))
    }

    /// Makes the kernel's target set exactly `ids`: removals first (so a full map makes
    /// room), then additions. On an error the set is left as far as it got, and the recorded
    /// set says exactly what the kernel holds, so the next call finishes the job.
    pub fn set_targets(&mut self, ids: &BTreeSet<u64>) -> Result<(), EbpfError> {
        let stale: Vec<u64> = self.target_set.difference(ids).copied().collect();
        for id in stale {
            match self.targets.remove(&id) {
                Ok(()) => {}
                // Already gone from the map: nothing to undo.
                Err(aya::maps::MapError::KeyNotFound) => {}
                Err(e) => {
                    warn!(cgroup_id = id, error = %e, "removing target cgroup");
                    continue;
                }
            }
            self.target_set.remove(&id);
        }
        let new: Vec<u64> = ids.difference(&self.target_set).copied().collect();
        for id in new {
            self.targets
                .insert(id, 1, 0)
                .map_err(|e| EbpfError::Load(format!("adding target cgroup {id}: {e}")))?;
            self.target_set.insert(id);
        }
        Ok(())
    }

    /// Tells the kernel to stop sending this generation of this fd.
    pub fn mute(&mut self, key: MutedKey) {
        if let Err(e) = self.muted.insert(key, 1, 0) {
            debug!(tgid = key.tgid, fd = key.fd, error = %e, "mute failed");
        }
    }

    pub fn counters(&self) -> KernelCounters {
        self.counters.read()
    }

    pub fn counter_reader(&self) -> Arc<KernelCounterReader> {
        Arc::clone(&self.counters)
    }
}

fn raw_tracepoint<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut RawTracePoint, EbpfError> {
    ebpf.program_mut(name)
        .ok_or_else(|| EbpfError::Load(format!("program {name} missing from the object")))?
        .try_into()
        .map_err(|e| EbpfError::Load(format!("{name}: {e}")))
}

/// Loads (verifies) the hook's programs and attaches each. On an error nothing of this hook
/// stays attached. A kernel without the tracepoints or functions fails the attach (ENOENT);
/// one without the helpers the programs call, or without BPF trampolines, fails the load.
/// `btf` is the kernel's BTF, parsed on first need (fexit programs load against it).
/// (program name, kernel program id) of each loaded program of `hook`.
fn program_ids(
    ebpf: &Ebpf,
    hook: Hook,
    floor: Option<Floor>,
    copy_loop: CopyLoop,
    has_sendpage: bool,
) -> Result<Vec<(&'static str, u32)>, EbpfError> {
    let mut programs: Vec<(&'static str, u32)> = Vec::new();
    for (name, _) in hook.attachments_here(floor, copy_loop, has_sendpage) {
        if programs.iter().any(|(n, _)| *n == name) {
            continue;
        }
        let id = ebpf
            .program(name)
            .ok_or_else(|| EbpfError::Load(format!("program {name} missing from the object")))?
            .info()
            .map_err(|e| classify_program_error(name, &e))?
            .id();
        programs.push((name, id));
    }
    Ok(programs)
}

fn attach_hook(
    ebpf: &mut Ebpf,
    hook: Hook,
    floor: Option<Floor>,
    copy_loop: CopyLoop,
    has_sendpage: bool,
    btf: &mut Option<Btf>,
) -> Result<Vec<(&'static str, Link)>, EbpfError> {
    let mut links = Vec::new();
    let mut result = Ok(());
    for (name, at) in hook.attachments_here(floor, copy_loop, has_sendpage) {
        match attach_one(ebpf, name, at, btf) {
            Ok(link) => links.push((name, link)),
            Err(e) => {
                result = Err(e);
                break;
            }
        }
    }
    if let Err(e) = result {
        for (name, link) in links {
            let _ = detach(ebpf, name, link);
        }
        return Err(e);
    }
    Ok(links)
}

fn attach_one(
    ebpf: &mut Ebpf,
    name: &'static str,
    at: Attach,
    btf: &mut Option<Btf>,
) -> Result<Link, EbpfError> {
    let program = ebpf
        .program_mut(name)
        .ok_or_else(|| EbpfError::Load(format!("program {name} missing from the object")))?;
    let fail =
        |what: String| move |e: aya::programs::ProgramError| classify_program_error(&what, &e);
    match at {
        Attach::RawTp(tracepoint) => {
            let program: &mut RawTracePoint = program
                .try_into()
                .map_err(|e| EbpfError::Load(format!("{name}: {e}")))?;
            if program.fd().is_err() {
                program.load().map_err(fail(name.to_owned()))?;
            }
            program
                .attach(tracepoint)
                .map(Link::RawTp)
                .map_err(fail(format!("raw tracepoint {tracepoint}")))
        }
        Attach::FExit(function) => {
            let program: &mut FExit = program
                .try_into()
                .map_err(|e| EbpfError::Load(format!("{name}: {e}")))?;
            let mut load = |program: &mut FExit| -> Result<(), EbpfError> {
                let btf = match btf {
                    Some(b) => b,
                    None => btf.insert(Btf::from_sys_fs().map_err(|e| {
                        EbpfError::Unsupported(format!("reading the kernel's BTF: {e}"))
                    })?),
                };
                program
                    .load(function, btf)
                    .map_err(fail(format!("{name} (fexit {function})")))
            };
            let reattach = program.fd().is_ok();
            if !reattach {
                load(program)?;
            }
            match program.attach() {
                Ok(link) => Ok(Link::FExit(link)),
                // Before Linux 5.13 a tracing program attaches once: its target is consumed by
                // the first link, and attaching again (resuming after a pause) is ENOENT. A
                // fresh load of the same program attaches.
                Err(e) if reattach && is_enoent(&e) => {
                    debug!(
                        program = name,
                        "fexit program loaded again to attach after a pause"
                    );
                    program
                        .unload()
                        .map_err(fail(format!("unloading {name}")))?;
                    load(program)?;
                    program
                        .attach()
                        .map(Link::FExit)
                        .map_err(fail(format!("fexit {function}")))
                }
                Err(e) => Err(fail(format!("fexit {function}"))(e)),
            }
        }
        Attach::KProbe(function) => {
            let program: &mut KProbe = program
                .try_into()
                .map_err(|e| EbpfError::Load(format!("{name}: {e}")))?;
            if program.fd().is_err() {
                program.load().map_err(fail(name.to_owned()))?;
            }
            program
                .attach(function, 0)
                .map(Link::KProbe)
                .map_err(fail(format!("kprobe {function}")))
        }
    }
}

fn detach(ebpf: &mut Ebpf, name: &'static str, link: Link) -> Result<(), EbpfError> {
    let program = ebpf
        .program_mut(name)
        .ok_or_else(|| EbpfError::Load(format!("program {name} missing from the object")))?;
    let wrong = |e: aya::programs::ProgramError| EbpfError::Load(format!("{name}: {e}"));
    let result = match link {
        Link::RawTp(l) => <&mut RawTracePoint>::try_from(program)
            .map_err(wrong)?
            .detach(l),
        Link::FExit(l) => <&mut FExit>::try_from(program).map_err(wrong)?.detach(l),
        Link::KProbe(l) => <&mut KProbe>::try_from(program).map_err(wrong)?.detach(l),
    };
    result.map_err(|e| classify_program_error(name, &e))
}

/// Loads the never-attached `probe_bpf_loop` program: the verifier accepts it only where the
/// kernel has `bpf_loop`. A permission problem is not an answer and is reported as such.
fn probe_copy_loop(ebpf: &mut Ebpf) -> Result<CopyLoop, EbpfError> {
    let program = raw_tracepoint(ebpf, "probe_bpf_loop")?;
    match program.load() {
        Ok(()) => {
            program
                .unload()
                .map_err(|e| classify_program_error("probe_bpf_loop", &e))?;
            Ok(CopyLoop::BpfLoop)
        }
        Err(e) => match classify_program_error("probe_bpf_loop", &e) {
            e @ EbpfError::Permission(_) => Err(e),
            e => {
                debug!(reason = %e, "no bpf_loop: the copy loop is unrolled");
                Ok(CopyLoop::Unrolled)
            }
        },
    }
}

fn take_hash<K: aya::Pod, V: aya::Pod>(
    ebpf: &mut Ebpf,
    name: &str,
) -> Result<HashMap<MapData, K, V>, EbpfError> {
    ebpf.take_map(name)
        .ok_or_else(|| EbpfError::Load(format!("map {name} missing")))?
        .try_into()
        .map_err(|e| EbpfError::Load(format!("{name}: {e}")))
}

/// EPERM (a missing capability: the verifier never answers with it), or EACCES that is not
/// the verifier's (the verifier refuses a program with EACCES too, and then another hook may
/// still load). aya writes "Verifier output" into every load error, empty or not, so EPERM is
/// recognised by itself.
fn is_permission(text: &str) -> bool {
    text.contains("Operation not permitted")
        || (text.contains("Permission denied") && !text.contains("Verifier output"))
}

fn classify_load_error(e: aya::EbpfError) -> EbpfError {
    // The OS error (EPERM without CAP_BPF) is in the source chain, not in the top message.
    let mut text = format!("{e:#}");
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        let line = s.to_string();
        if !text.contains(&line) {
            text.push_str(&format!(": {line}"));
        }
        source = s.source();
    }
    if is_permission(&text) {
        EbpfError::Permission(text)
    } else if text.contains("ringbuf") || text.contains("Invalid argument") {
        EbpfError::Unsupported(text)
    } else {
        EbpfError::Load(text)
    }
}

/// Whether the syscall under `e` failed with ENOENT.
fn is_enoent(e: &aya::programs::ProgramError) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return io.raw_os_error() == Some(libc::ENOENT);
        }
        source = s.source();
    }
    false
}

fn classify_program_error(what: &str, e: &aya::programs::ProgramError) -> EbpfError {
    let mut text = format!("{what}: {e}");
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    if is_permission(&text) {
        EbpfError::Permission(text)
    } else if text.contains("No such file") {
        EbpfError::Unsupported(text)
    } else {
        EbpfError::Load(text)
    }
}

/// Registers an eBPF map's fd (ring buffer, log buffer) with tokio's reactor.
#[expect(
    unsafe_code,
    reason = "tokio's AsyncFd::register is unsafe since tokio#8587"
)]
pub fn register<T: std::os::fd::AsRawFd>(inner: T) -> std::io::Result<tokio::io::unix::AsyncFd<T>> {
    // SAFETY: `inner` owns its file descriptor (an aya map) and nothing replaces or closes it
    // while the AsyncFd holds it; dropping the AsyncFd deregisters before `inner` is dropped.
    unsafe { tokio::io::unix::AsyncFd::register(inner) }.map_err(std::io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Loads and attaches every program for real: the verifier must accept them on this
    /// kernel. Needs root (CI runs as root); fails rather than skips without it.
    #[tokio::test]
    async fn programs_load_and_attach() {
        let mut capture = Capture::load(&KernelLimits {
            ring_buffer_bytes: 1 << 20,
            ..KernelLimits::default()
        })
        .expect("eBPF programs must load (run as root)");
        let ids = BTreeSet::from([1u64, 2, 3]);
        capture.set_targets(&ids).unwrap();
        assert_eq!(kernel_targets(&capture), ids);
        capture.set_targets(&BTreeSet::from([3u64])).unwrap();
        assert_eq!(kernel_targets(&capture), BTreeSet::from([3u64]));
        assert_eq!(capture.target_set, BTreeSet::from([3u64]));
        let _ring = capture.take_events().unwrap();
        assert_eq!(capture.counters().events_lost, 0);
    }

    /// Waits (5 s at most) for `done`: the kernel frees a link whose last fd is closed from a
    /// work queue, so it leaves the kernel's list a moment after `detach` returns.
    fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !done() {
            assert!(
                std::time::Instant::now() < deadline,
                "{what}: not within 5 s"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    /// The keys of the kernel's `TARGET_CGROUPS` map, read from the kernel (not the recorded
    /// copy in `target_set`).
    fn kernel_targets(capture: &Capture) -> BTreeSet<u64> {
        capture.targets.keys().map(Result::unwrap).collect()
    }

    /// A cgroup v2 directory that removes itself (after its processes are gone).
    struct TestCgroup(std::path::PathBuf);

    impl TestCgroup {
        fn new(tag: &str) -> Self {
            let mount = crate::kernel::targets::cgroup2_mount().unwrap();
            let dir = mount.join(format!("capture-unit-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir(&dir);
            std::fs::create_dir(&dir).unwrap();
            Self(dir)
        }
    }

    impl Drop for TestCgroup {
        fn drop(&mut self) {
            for _ in 0..50 {
                if std::fs::remove_dir(&self.0).is_ok() {
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
    }

    /// python3 in `cgroup` (or none) connects to `port`, sends `msg` with one write and one
    /// writev, reads the reply and closes; returns its pid.
    fn python_client(cgroup: Option<&TestCgroup>, port: u16, msg: &str) -> std::process::Child {
        let script = format!(
            "import os,socket; s=socket.create_connection(('127.0.0.1',{port})); \
             s.sendall(b'{msg}'); os.writev(s.fileno(), [b'-a', b'-bc']); \
             s.recv(100); s.close()"
        );
        let enter = cgroup.map_or(String::new(), |c| {
            format!("echo $$ > {}/cgroup.procs && ", c.0.display())
        });
        std::process::Command::new("sh")
            .args(["-c", &format!("{enter}exec python3 -c \"{script}\"")])
            .spawn()
            .unwrap()
    }

    /// Loaded programs targeting a fresh cgroup, with a listener for its clients to talk to.
    struct Rig {
        capture: Capture,
        cg: TestCgroup,
        ring: RingBuf<MapData>,
        listener: std::net::TcpListener,
        port: u16,
    }

    impl Rig {
        fn new(tag: &str, limits: KernelLimits) -> Self {
            Self::with_loop(tag, limits, None)
        }

        fn with_loop(tag: &str, limits: KernelLimits, copy_loop: Option<CopyLoop>) -> Self {
            let mut capture = Capture::load_with(&limits, copy_loop).unwrap();
            if let Some(l) = copy_loop {
                assert_eq!(capture.copy_loop(), l);
            }
            let cg = TestCgroup::new(&format!("{tag}-{}", capture.hook().label()));
            capture
                .set_targets(&BTreeSet::from([
                    crate::kernel::targets::cgroup_id(&cg.0).unwrap()
                ]))
                .unwrap();
            let ring = capture.take_events().unwrap();
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let port = listener.local_addr().unwrap().port();
            Self {
                capture,
                cg,
                ring,
                listener,
                port,
            }
        }

        /// Accepts one client, reads `expect` bytes, answers "pong".
        fn serve(&self, expect: usize) -> Vec<u8> {
            self.serve_from(expect).0
        }

        /// [`Rig::serve`], also returning the client's address.
        fn serve_from(&self, expect: usize) -> (Vec<u8>, std::net::SocketAddr) {
            use std::io::{Read as _, Write as _};
            let (mut s, client) = self.listener.accept().unwrap();
            let mut buf = vec![0u8; expect];
            s.read_exact(&mut buf).unwrap();
            s.write_all(b"pong").unwrap();
            (buf, client)
        }

        /// Every record the kernel has sent so far.
        fn records(&mut self) -> Vec<Vec<u8>> {
            std::iter::from_fn(|| self.ring.next().map(|r| r.to_vec())).collect()
        }
    }

    /// Auto picks the socket tracepoints on a kernel that has them (6.3+), as this one; before
    /// 6.3, fentry (every kernel `cargo xtask vm-test` boots has BPF trampolines and BTF).
    #[tokio::test]
    async fn auto_prefers_the_socket_tracepoints() {
        let capture = Capture::load(&KernelLimits {
            ring_buffer_bytes: 1 << 16,
            ..KernelLimits::default()
        })
        .unwrap();
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
        let mut parts = release.trim().split(['.', '-']);
        let major: u32 = parts.next().unwrap().parse().unwrap();
        let minor: u32 = parts.next().unwrap().parse().unwrap();
        let expected = if (major, minor) >= (6, 3) {
            Hook::SocketTracepoints
        } else {
            Hook::Fentry
        };
        assert_eq!(capture.hook(), expected, "kernel {release}");
        let forced = Capture::load(&KernelLimits {
            ring_buffer_bytes: 1 << 16,
            hook: HookChoice::Syscall,
            ..KernelLimits::default()
        })
        .unwrap();
        assert_eq!(forced.hook(), Hook::SyscallTracepoint);
    }

    /// The floor programs load and attach (the benchmark runs them).
    #[tokio::test]
    async fn floor_programs_load() {
        for floor in [Floor::Empty, Floor::Copy] {
            let capture = Capture::load(&KernelLimits {
                ring_buffer_bytes: 1 << 16,
                floor: Some(floor),
                ..KernelLimits::default()
            })
            .unwrap();
            assert!(capture.is_floor());
            assert_eq!(capture.links.len(), 2, "{floor:?}");
        }
    }

    #[tokio::test]
    async fn captures_target_cgroup_only_socket_hook() {
        captures_target_cgroup_only(HookChoice::Socket, None);
    }

    #[tokio::test]
    async fn captures_target_cgroup_only_syscall_hook() {
        captures_target_cgroup_only(HookChoice::Syscall, None);
    }

    /// The copy loop of kernels without `bpf_loop` (before 5.17), forced on this one.
    #[tokio::test]
    async fn captures_target_cgroup_only_syscall_hook_unrolled() {
        captures_target_cgroup_only(HookChoice::Syscall, Some(CopyLoop::Unrolled));
    }

    /// The probe finds `bpf_loop` on a kernel that has it (5.17+) and not on older ones.
    #[tokio::test]
    async fn copy_loop_is_probed() {
        let capture = Capture::load(&KernelLimits {
            ring_buffer_bytes: 1 << 16,
            ..KernelLimits::default()
        })
        .unwrap();
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
        let expected = if parse_release(&release).unwrap() >= (5, 17) {
            CopyLoop::BpfLoop
        } else {
            CopyLoop::Unrolled
        };
        assert_eq!(capture.copy_loop(), expected, "kernel {release}");
    }

    /// A missing capability stops the hook search (another hook will not load either); a
    /// verifier rejection does not. The texts are aya's, as seen without CAP_PERFMON and on
    /// Linux 6.1's verifier.
    #[test]
    fn permission_errors_are_told_from_verifier_rejections() {
        assert!(is_permission(
            "sock_state: the BPF_PROG_LOAD syscall returned Operation not permitted (os error 1). \
             Verifier output: : Operation not permitted (os error 1)"
        ));
        assert!(is_permission(
            "map error: failed to create map `COPY`: Operation not permitted (os error 1)"
        ));
        assert!(is_permission(
            "bpf_link_create: Permission denied (os error 13)"
        ));
        assert!(!is_permission(
            "sys_exit: the BPF_PROG_LOAD syscall returned Permission denied (os error 13). \
             Verifier output: R2 min value is negative\nprocessed 9 insns"
        ));
    }

    #[test]
    fn kernel_version_floor() {
        assert_eq!(parse_release("6.1.0-41-cloud-amd64\n"), Some((6, 1)));
        assert_eq!(parse_release("5.10.0-35-amd64"), Some((5, 10)));
        assert_eq!(parse_release("6.18.44-fc-v1300"), Some((6, 18)));
        assert_eq!(parse_release("4.19+"), Some((4, 19)));
        assert_eq!(parse_release("garbage"), None);
        assert!(check_kernel_version("5.8.0").is_ok());
        assert!(check_kernel_version("5.10.0-35-amd64").is_ok());
        assert!(check_kernel_version("weird").is_ok());
        let err = check_kernel_version("5.4.0-150-generic\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "Linux 5.4.0-150-generic is too old for capture: the minimum is Linux 5.8 (BPF ring buffer)"
        );
        assert_eq!(
            check_kernel_version("4.19.0").unwrap_err().to_string(),
            "Linux 4.19.0 is too old for capture: the minimum is Linux 5.8 (BPF ring buffer)"
        );
    }

    /// The kernel side end to end: only the target cgroup is seen; OPEN, DATA (exact bytes and
    /// positions, through write and writev), CLOSE arrive in order. The socket hooks name both
    /// ends from the socket.
    fn captures_target_cgroup_only(hook: HookChoice, copy_loop: Option<CopyLoop>) {
        use crate::kernel::intake::{self, Direction, Event};

        let limits = KernelLimits {
            ring_buffer_bytes: 1 << 22,
            hook,
            ..KernelLimits::default()
        };
        // The tag names the copy loop too: the tests of one hook run in parallel, each in a
        // cgroup of its own.
        let tag = match copy_loop {
            None => "ebpf",
            Some(CopyLoop::BpfLoop) => "ebpf-bpf-loop",
            Some(CopyLoop::Unrolled) => "ebpf-unrolled",
        };
        let mut rig = Rig::with_loop(tag, limits, copy_loop);
        let port = rig.port;
        let mut outside = python_client(None, port, "outside-marker");
        rig.serve("outside-marker-a-bc".len());
        assert!(outside.wait().unwrap().success());
        let mut inside = python_client(Some(&rig.cg), port, "hello");
        let (got, client_addr) = rig.serve_from(10);
        assert_eq!(got, b"hello-a-bc");
        let pid = inside.id();
        assert!(inside.wait().unwrap().success());

        let records = rig.records();
        let events: Vec<Event<'_>> = records.iter().map(|r| intake::parse(r).unwrap()).collect();
        let socket = events.iter().find_map(|e| match e {
            Event::Open {
                conn,
                role,
                peer,
                local,
                ..
            } if conn.tgid == pid => {
                assert_eq!(*role, Some(capture_model::exchange::Role::Client));
                assert_eq!(
                    *peer,
                    Some(std::net::SocketAddr::from(([127, 0, 0, 1], port)))
                );
                let expected_local = (hook != HookChoice::Syscall).then_some(client_addr);
                assert_eq!(*local, expected_local);
                Some(*conn)
            }
            _ => None,
        });
        let opened = socket.is_some();
        let mut egress = Vec::new();
        let mut ingress = Vec::new();
        let mut closed = false;
        for e in &events {
            match e {
                Event::Data {
                    conn,
                    direction,
                    pos,
                    len,
                    payload,
                    ..
                } if Some(*conn) == socket => {
                    assert_eq!(*len, payload.len() as u64, "nothing may be left uncaptured");
                    let stream = if *direction == Direction::Egress {
                        &mut egress
                    } else {
                        &mut ingress
                    };
                    assert_eq!(*pos, stream.len() as u64, "positions are contiguous");
                    stream.extend_from_slice(payload);
                }
                Event::Close { conn, .. } if Some(*conn) == socket => closed = true,
                Event::Data { payload, .. } => {
                    assert!(
                        !payload.windows(14).any(|w| w == b"outside-marker"),
                        "the process outside the cgroup was captured"
                    );
                }
                _ => {}
            }
        }
        assert!(opened, "no OPEN event for the client's connect");
        assert_eq!(egress, b"hello-a-bc");
        assert_eq!(ingress, b"pong");
        assert!(closed, "no CLOSE event");
        let counters = rig.capture.counters();
        assert_eq!(counters.events_lost, 0);
        assert!(
            counters.events >= events.len() as u64,
            "{counters:?} for {} events",
            events.len()
        );
    }

    #[tokio::test]
    async fn per_syscall_limit_reports_the_rest_as_a_gap_socket_hook() {
        per_syscall_limit_reports_the_rest_as_a_gap(HookChoice::Socket);
    }

    #[tokio::test]
    async fn per_syscall_limit_reports_the_rest_as_a_gap_syscall_hook() {
        per_syscall_limit_reports_the_rest_as_a_gap(HookChoice::Syscall);
    }

    /// A transfer larger than `--max-capture-bytes-per-syscall` is copied up to the limit and
    /// the rest arrives as a gap event of the right length, counted as a truncation.
    fn per_syscall_limit_reports_the_rest_as_a_gap(hook: HookChoice) {
        use crate::kernel::intake::{self, Direction, Event};

        let limits = KernelLimits {
            ring_buffer_bytes: 1 << 22,
            max_capture_bytes_per_syscall: 16 * 1024,
            hook,
            ..KernelLimits::default()
        };
        let mut rig = Rig::new("limit", limits);
        let big = "y".repeat(40_000);
        let mut client = python_client(Some(&rig.cg), rig.port, &big);
        rig.serve(40_005);
        let pid = client.id();
        assert!(client.wait().unwrap().success());

        let records = rig.records();
        let events: Vec<Event<'_>> = records.iter().map(|r| intake::parse(r).unwrap()).collect();
        let socket = events
            .iter()
            .find_map(|e| match e {
                Event::Open { conn, .. } if conn.tgid == pid => Some(*conn),
                _ => None,
            })
            .expect("OPEN event");
        let egress: Vec<(u64, u64, usize)> = events
            .iter()
            .filter_map(|e| match e {
                Event::Data {
                    conn,
                    direction: Direction::Egress,
                    pos,
                    len,
                    payload,
                    ..
                } if *conn == socket => Some((*pos, *len, payload.len())),
                _ => None,
            })
            .collect();
        // One 16 KiB chunk, then the rest of the 40000-byte send as a gap; then writev's bytes.
        assert_eq!(egress[0], (0, 16_384, 16_384), "{egress:?}");
        assert_eq!(egress[1], (16_384, 40_000 - 16_384, 0), "{egress:?}");
        assert_eq!(egress[2].0, 40_000, "{egress:?}");
        assert!(rig.capture.counters().truncations >= 1);
    }

    /// Without `bpf_loop` the copy stops after `UNROLLED_STEPS` steps (one per iovec loaded,
    /// one per chunk), whatever `--max-iovecs` allows: a writev of 400 one-byte iovecs is
    /// copied for its first 32 bytes, the other 368 arrive as one gap, counted.
    #[tokio::test]
    async fn unrolled_copy_stops_at_its_step_bound() {
        use crate::kernel::intake::{self, Direction, Event};

        assert_eq!(capture_common::UNROLLED_STEPS, 64);
        let limits = KernelLimits {
            ring_buffer_bytes: 1 << 22,
            max_iovecs: 1000,
            hook: HookChoice::Syscall,
            ..KernelLimits::default()
        };
        let mut rig = Rig::with_loop("unrolled", limits, Some(CopyLoop::Unrolled));
        let port = rig.port;
        let script = format!(
            "import os,socket; s=socket.create_connection(('127.0.0.1',{port})); \
             os.writev(s.fileno(), [bytes([65 + i % 26]) for i in range(400)]); \
             s.recv(100); s.close()"
        );
        let mut client = std::process::Command::new("sh")
            .args([
                "-c",
                &format!(
                    "echo $$ > {}/cgroup.procs && exec python3 -c \"{script}\"",
                    rig.cg.0.display()
                ),
            ])
            .spawn()
            .unwrap();
        let sent = rig.serve(400);
        let pid = client.id();
        assert!(client.wait().unwrap().success());
        let records = rig.records();
        let events: Vec<Event<'_>> = records.iter().map(|r| intake::parse(r).unwrap()).collect();
        let socket = events
            .iter()
            .find_map(|e| match e {
                Event::Open { conn, .. } if conn.tgid == pid => Some(*conn),
                _ => None,
            })
            .expect("OPEN event");
        let mut copied = Vec::new();
        let mut gaps = Vec::new();
        for e in &events {
            if let Event::Data {
                conn,
                direction: Direction::Egress,
                pos,
                len,
                payload,
                ..
            } = e
                && *conn == socket
            {
                if payload.is_empty() {
                    gaps.push((*pos, *len));
                } else {
                    assert_eq!(*pos, copied.len() as u64);
                    copied.extend_from_slice(payload);
                }
            }
        }
        assert_eq!(copied, sent[..32]);
        assert_eq!(gaps, [(32, 368)]);
        assert!(rig.capture.counters().truncations >= 1);
    }

    #[tokio::test]
    async fn detach_stops_everything_and_attach_resumes_socket_hook() {
        detach_stops_everything_and_attach_resumes(HookChoice::Socket);
    }

    #[tokio::test]
    async fn detach_stops_everything_and_attach_resumes_syscall_hook() {
        detach_stops_everything_and_attach_resumes(HookChoice::Syscall);
    }

    /// Pause detaches the programs: a target cgroup's traffic produces no event at all; resume
    /// attaches them again with the same targets.
    fn detach_stops_everything_and_attach_resumes(hook: HookChoice) {
        let limits = KernelLimits {
            ring_buffer_bytes: 1 << 20,
            max_target_cgroups: 16,
            hook,
            ..KernelLimits::default()
        };
        let mut rig = Rig::new("pause", limits);
        // A link another test is creating at this moment fails the lookup (EAGAIN); ours are
        // settled before we count, and a missing one of ours fails the counts below. The ids
        // are read each time: resuming may load a program again (fexit before 5.13).
        let kernel_links = |capture: &Capture| {
            let progs: BTreeSet<u32> = capture.counters.program_ids().iter().map(|p| p.1).collect();
            aya::programs::loaded_links()
                .filter_map(Result::ok)
                .filter(|l| progs.contains(&l.program_id()))
                .count()
        };
        let linked = kernel_links(&rig.capture);
        assert_eq!(linked, rig.capture.links.len());
        assert!(linked > 0);
        rig.capture.detach().unwrap();
        assert!(!rig.capture.is_attached());
        wait_until("the kernel unlinks the programs", || {
            kernel_links(&rig.capture) == 0
        });
        let before = rig.capture.counters().events;
        let mut client = python_client(Some(&rig.cg), rig.port, "paused");
        rig.serve(11);
        assert!(client.wait().unwrap().success());
        assert!(rig.records().is_empty());
        assert_eq!(rig.capture.counters().events, before);

        rig.capture.attach().unwrap();
        rig.capture.attach().unwrap(); // idempotent
        assert_eq!(kernel_links(&rig.capture), linked);
        let mut client = python_client(Some(&rig.cg), rig.port, "resumed");
        rig.serve(12);
        assert!(client.wait().unwrap().success());
        assert!(!rig.records().is_empty());
        assert_eq!(kernel_targets(&rig.capture).len(), 1);
    }

    /// The target map is as large as --max-target-cgroups says: one more does not fit.
    #[tokio::test]
    async fn target_map_size_follows_the_limit() {
        let mut capture = Capture::load(&KernelLimits {
            ring_buffer_bytes: 1 << 16,
            max_target_cgroups: 2,
            ..KernelLimits::default()
        })
        .unwrap();
        capture.set_targets(&BTreeSet::from([1u64, 2])).unwrap();
        assert!(capture.set_targets(&BTreeSet::from([1u64, 2, 3])).is_err());
        assert_eq!(capture.target_count(), 2);
        assert_eq!(kernel_targets(&capture), BTreeSet::from([1u64, 2]));
        // Removals come first, so swapping within the limit works.
        capture.set_targets(&BTreeSet::from([3u64, 4])).unwrap();
        assert_eq!(kernel_targets(&capture), BTreeSet::from([3u64, 4]));
        assert_eq!(capture.target_set, BTreeSet::from([3u64, 4]));
    }

    /// Nothing outlives the daemon: no link while paused, and once `Capture` and the runtime
    /// (whose task pumps the kernel log map) are gone, as at process exit, the kernel has no
    /// program, link or map of it left; nothing is pinned.
    #[test]
    fn nothing_is_left_after_drop() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut capture = runtime
            .block_on(async {
                Capture::load(&KernelLimits {
                    ring_buffer_bytes: 1 << 16,
                    ..KernelLimits::default()
                })
            })
            .unwrap();
        let prog = capture.counters.program_ids()[0].1;
        let info = aya::programs::loaded_programs()
            .filter_map(Result::ok)
            .find(|p| p.id() == prog)
            .unwrap();
        let maps = info.map_ids().unwrap().unwrap_or_default();
        assert!(!maps.is_empty());
        let links_to = |prog: u32| {
            aya::programs::loaded_links()
                .filter_map(Result::ok)
                .filter(|l| l.program_id() == prog)
                .count()
        };
        assert_eq!(links_to(prog), 1);
        capture.detach().unwrap();
        wait_until("paused: no link", || links_to(prog) == 0);
        capture.attach().unwrap();
        assert_eq!(links_to(prog), 1);
        drop(capture);
        drop(runtime);
        // Freeing is deferred to an RCU grace period; give it a moment.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let prog_left = aya::programs::loaded_programs()
                .filter_map(Result::ok)
                .any(|p| p.id() == prog);
            let maps_left = aya::maps::loaded_maps()
                .filter_map(Result::ok)
                .any(|m| maps.contains(&m.id()));
            if !prog_left && !maps_left && links_to(prog) == 0 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "left behind: program {prog_left}, maps {:?}",
                aya::maps::loaded_maps()
                    .filter_map(Result::ok)
                    .filter(|m| maps.contains(&m.id()))
                    .map(|m| m.name_as_str().unwrap_or_default().to_string())
                    .collect::<Vec<_>>()
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}
