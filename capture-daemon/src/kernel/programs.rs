//! Loading and attaching the kernel programs, and the maps user space drives: the target
//! cgroups, the muted connections and the per-CPU counters. Dropping [`Capture`] detaches
//! every program; nothing is pinned, so nothing outlives the daemon.

use std::{collections::BTreeSet, sync::Arc};

use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap, MapData, PerCpuArray, RingBuf},
    programs::{RawTracePoint, raw_trace_point::RawTracePointLinkId},
};
use capture_common::{MutedKey, counter};

use crate::telemetry::metrics::{Families, Source};
use tracing::{debug, warn};

/// The object built by build.rs from `capture-ebpf`.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/capture"));

/// The one program: a raw tracepoint on `sys_exit`.
const PROGRAM: &str = "sys_exit";

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
        "the kernel does not support what capture needs ({0}); it needs Linux 5.17 or newer \
         with BPF ring buffers, bpf_loop and raw tracepoints"
    )]
    Unsupported(String),
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
}

impl Default for KernelLimits {
    fn default() -> Self {
        Self {
            ring_buffer_bytes: 16 * 1024 * 1024,
            max_capture_bytes_per_syscall: capture_common::MAX_CHUNKS_PER_CALL
                * capture_common::MAX_CHUNK as u32,
            max_iovecs: capture_common::MAX_IOVECS,
            max_target_cgroups: 4096,
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
}

/// The loaded and attached programs.
pub struct Capture {
    ebpf: Ebpf,
    targets: HashMap<MapData, u64, u8>,
    muted: HashMap<MapData, MutedKey, u8>,
    counters: Arc<KernelCounterReader>,
    target_set: BTreeSet<u64>,
    /// The attachment; `None` while paused (detached).
    link: Option<RawTracePointLinkId>,
}

/// Reads the kernel's per-CPU counters; shared with the metrics endpoint so a scrape sees
/// the kernel's numbers as they are, not as of the last tick.
pub struct KernelCounterReader(PerCpuArray<MapData, u64>);

impl KernelCounterReader {
    pub fn read(&self) -> KernelCounters {
        let sum = |index: u32| -> u64 {
            self.0
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
        }
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
        ] {
            out.counter(name, help, value);
        }
    }
}

impl Capture {
    /// Loads the programs with a ring buffer of `ring_buffer_bytes` and attaches them all.
    /// Until targets are set nothing is captured: every program returns at its first check.
    pub fn load(limits: &KernelLimits) -> Result<Self, EbpfError> {
        let ring_buffer_bytes = limits.ring_buffer_bytes;
        // Wake the reader when an eighth of the ring is waiting; otherwise the reader's drain
        // timer picks events up.
        let wakeup_bytes = u64::from(ring_buffer_bytes / 8);
        if OBJECT.is_empty() {
            return Err(EbpfError::NoObject);
        }
        // Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK; later ones ignore it.
        if let Err(e) = nix::sys::resource::setrlimit(
            nix::sys::resource::Resource::RLIMIT_MEMLOCK,
            nix::sys::resource::RLIM_INFINITY,
            nix::sys::resource::RLIM_INFINITY,
        ) {
            debug!(error = %e, "could not raise RLIMIT_MEMLOCK");
        }
        let mut ebpf = EbpfLoader::new()
            // The programs use no CO-RE relocations: parsing the kernel's BTF would only cost
            // tens of MiB of peak memory.
            .btf(None)
            .map_max_entries("EVENTS", ring_buffer_bytes)
            .map_max_entries("TARGET_CGROUPS", limits.max_target_cgroups)
            .override_global("WAKEUP_BYTES", &wakeup_bytes, true)
            .override_global("MAX_CHUNKS", &limits.max_chunks(), true)
            .override_global("MAX_IOVS", &limits.max_iovecs, true)
            .load(OBJECT)
            .map_err(classify_load_error)?;
        match aya_log::EbpfLogger::init(&mut ebpf) {
            Ok(logger) => spawn_kernel_log_pump(logger),
            Err(e) => warn!(error = %e, "kernel-side logs unavailable"),
        }
        let program: &mut RawTracePoint = ebpf
            .program_mut(PROGRAM)
            .ok_or_else(|| EbpfError::Load(format!("program {PROGRAM} missing from the object")))?
            .try_into()
            .map_err(|e| EbpfError::Load(format!("{PROGRAM}: {e}")))?;
        program
            .load()
            .map_err(|e| classify_program_error(PROGRAM, &e))?;
        let link = program
            .attach("sys_exit")
            .map_err(|e| classify_program_error("raw tracepoint sys_exit", &e))?;
        let targets = take_hash(&mut ebpf, "TARGET_CGROUPS")?;
        let muted = take_hash(&mut ebpf, "MUTED")?;
        let counters = Arc::new(KernelCounterReader(
            ebpf.take_map("COUNTERS")
                .ok_or_else(|| EbpfError::Load("map COUNTERS missing".into()))?
                .try_into()
                .map_err(|e| EbpfError::Load(format!("COUNTERS: {e}")))?,
        ));
        Ok(Self {
            ebpf,
            targets,
            muted,
            counters,
            target_set: BTreeSet::new(),
            link: Some(link),
        })
    }

    fn program(&mut self) -> Result<&mut RawTracePoint, EbpfError> {
        self.ebpf
            .program_mut(PROGRAM)
            .ok_or_else(|| EbpfError::Load(format!("program {PROGRAM} missing from the object")))?
            .try_into()
            .map_err(|e| EbpfError::Load(format!("{PROGRAM}: {e}")))
    }

    /// Detaches the program (pause): from now on no syscall is looked at, not even filtered.
    /// The maps stay, so [`Capture::attach`] resumes with the same targets.
    pub fn detach(&mut self) -> Result<(), EbpfError> {
        if let Some(link) = self.link.take() {
            self.program()?
                .detach(link)
                .map_err(|e| classify_program_error("detaching sys_exit", &e))?;
        }
        Ok(())
    }

    /// Attaches the program again after [`Capture::detach`].
    pub fn attach(&mut self) -> Result<(), EbpfError> {
        if self.link.is_none() {
            let link = self
                .program()?
                .attach("sys_exit")
                .map_err(|e| classify_program_error("raw tracepoint sys_exit", &e))?;
            self.link = Some(link);
        }
        Ok(())
    }

    pub fn is_attached(&self) -> bool {
        self.link.is_some()
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

fn take_hash<K: aya::Pod, V: aya::Pod>(
    ebpf: &mut Ebpf,
    name: &str,
) -> Result<HashMap<MapData, K, V>, EbpfError> {
    ebpf.take_map(name)
        .ok_or_else(|| EbpfError::Load(format!("map {name} missing")))?
        .try_into()
        .map_err(|e| EbpfError::Load(format!("{name}: {e}")))
}

fn is_permission(text: &str) -> bool {
    text.contains("Operation not permitted") || text.contains("Permission denied")
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

/// Forwards kernel-side `aya-log` records into `log`, which tracing-subscriber bridges.
fn spawn_kernel_log_pump(logger: aya_log::EbpfLogger<&'static dyn log::Log>) {
    let Ok(mut fd) = register(logger) else {
        warn!("kernel-side logs unavailable: cannot poll their buffer");
        return;
    };
    tokio::spawn(async move {
        loop {
            let Ok(mut guard) = fd.readable_mut().await else {
                return;
            };
            guard.get_inner_mut().flush();
            guard.clear_ready();
        }
    });
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
        capture.set_targets(&BTreeSet::from([3u64])).unwrap();
        assert_eq!(capture.target_set, BTreeSet::from([3u64]));
        let _ring = capture.take_events().unwrap();
        assert_eq!(capture.counters().events_lost, 0);
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
            let mut capture = Capture::load(&limits).unwrap();
            let cg = TestCgroup::new(tag);
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
            use std::io::{Read as _, Write as _};
            let (mut s, _) = self.listener.accept().unwrap();
            let mut buf = vec![0u8; expect];
            s.read_exact(&mut buf).unwrap();
            s.write_all(b"pong").unwrap();
            buf
        }

        /// Every record the kernel has sent so far.
        fn records(&mut self) -> Vec<Vec<u8>> {
            std::iter::from_fn(|| self.ring.next().map(|r| r.to_vec())).collect()
        }
    }

    /// The kernel side end to end: only the target cgroup is seen; OPEN, DATA (exact bytes and
    /// positions, through write and writev), CLOSE arrive in order.
    #[tokio::test]
    async fn captures_target_cgroup_only() {
        use crate::kernel::intake::{self, Direction, Event};

        let limits = KernelLimits {
            ring_buffer_bytes: 1 << 22,
            ..KernelLimits::default()
        };
        let mut rig = Rig::new("ebpf", limits);
        let port = rig.port;
        let mut outside = python_client(None, port, "outside-marker");
        rig.serve("outside-marker-a-bc".len());
        assert!(outside.wait().unwrap().success());
        let mut inside = python_client(Some(&rig.cg), port, "hello");
        assert_eq!(rig.serve(10), b"hello-a-bc");
        let pid = inside.id();
        assert!(inside.wait().unwrap().success());

        let records = rig.records();
        let events: Vec<Event<'_>> = records.iter().map(|r| intake::parse(r).unwrap()).collect();
        let socket = events.iter().find_map(|e| match e {
            Event::Open {
                conn, role, peer, ..
            } if conn.tgid == pid => {
                assert_eq!(*role, Some(capture_model::exchange::Role::Client));
                assert_eq!(
                    *peer,
                    Some(std::net::SocketAddr::from(([127, 0, 0, 1], port)))
                );
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

    /// A transfer larger than `--max-capture-bytes-per-syscall` is copied up to the limit and
    /// the rest arrives as a gap event of the right length, counted as a truncation.
    #[tokio::test]
    async fn per_syscall_limit_reports_the_rest_as_a_gap() {
        use crate::kernel::intake::{self, Direction, Event};

        let limits = KernelLimits {
            ring_buffer_bytes: 1 << 22,
            max_capture_bytes_per_syscall: 16 * 1024,
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

    /// Pause detaches the program: a target cgroup's traffic produces no event at all; resume
    /// attaches it again with the same targets.
    #[tokio::test]
    async fn detach_stops_everything_and_attach_resumes() {
        let limits = KernelLimits {
            ring_buffer_bytes: 1 << 20,
            max_target_cgroups: 16,
            ..KernelLimits::default()
        };
        let mut rig = Rig::new("pause", limits);
        rig.capture.detach().unwrap();
        assert!(!rig.capture.is_attached());
        let before = rig.capture.counters().events;
        let mut client = python_client(Some(&rig.cg), rig.port, "paused");
        rig.serve(11);
        assert!(client.wait().unwrap().success());
        assert!(rig.records().is_empty());
        assert_eq!(rig.capture.counters().events, before);

        rig.capture.attach().unwrap();
        rig.capture.attach().unwrap(); // idempotent
        let mut client = python_client(Some(&rig.cg), rig.port, "resumed");
        rig.serve(12);
        assert!(client.wait().unwrap().success());
        assert!(!rig.records().is_empty());
        assert_eq!(rig.capture.target_count(), 1);
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
        // Removals come first, so swapping within the limit works.
        capture.set_targets(&BTreeSet::from([3u64, 4])).unwrap();
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
        let info = capture.program().unwrap().info().unwrap();
        let prog = info.id();
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
        assert_eq!(links_to(prog), 0, "paused: no link");
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
