//! Configuration: command-line flags and an optional YAML file with the same keys, parsed and
//! validated once at start-up into [`Config`]. Flags win over the file. Every error names the
//! flag (or file key) and the bad value, and the daemon exits 2 before anything is attached.

pub mod export;
pub mod reload;

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::Parser;
use serde::{Deserialize, Serialize};

use crate::kernel::programs::{Floor, HookChoice, KernelLimits};
pub use crate::telemetry::audit::LogFormat;
use capture_http::{http1::Http1Limits, http2::Http2Limits};

/// Flags and file keys. Every field is optional here so file values and defaults can be
/// layered; [`Config`] is the validated result.
#[derive(Parser, Deserialize, Serialize, Debug, Default, Clone, PartialEq)]
#[command(
    name = "capture-daemon",
    version,
    about = "Captures the HTTP exchanges of opted-in cgroups with eBPF, redacts them and writes them out."
)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Flags {
    /// Capture the processes of this cgroup v2 directory (repeatable).
    #[arg(long = "target-cgroup", value_name = "DIR")]
    #[serde(default)]
    pub target_cgroup: Vec<PathBuf>,
    /// Capture the cgroup of this process (repeatable).
    #[arg(long = "target-pid", value_name = "PID")]
    #[serde(default)]
    pub target_pid: Vec<u32>,
    /// Capture the pods of this node annotated `traffic-capture/enabled: "true"` (needs
    /// --node-name or NODE_NAME).
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub kubernetes: Option<bool>,
    /// Where exchanges go, one JSON (HAR entry) per line; `-` is stdout.
    #[arg(long, value_name = "PATH|-")]
    pub output: Option<String>,
    /// Drop bodies; keep start lines, headers and sizes.
    #[arg(long = "headers-only", num_args = 0..=1, default_missing_value = "true")]
    pub headers_only: Option<bool>,
    /// Bodies longer than this are cut and flagged truncated (default 1 MiB).
    #[arg(long = "max-body-bytes", value_name = "N")]
    pub max_body_bytes: Option<usize>,
    /// Also remove this header, both directions (repeatable, case-insensitive).
    #[arg(long = "redact-header", value_name = "NAME")]
    #[serde(default)]
    pub redact_header: Vec<String>,
    /// Also remove this query parameter from request URLs (repeatable).
    #[arg(long = "redact-query", value_name = "PARAM")]
    #[serde(default)]
    pub redact_query: Vec<String>,
    /// Also replace the value of this body field in JSON, form and multipart bodies
    /// (repeatable, case-insensitive, `-` and `_` alike).
    #[arg(long = "redact-body-field", value_name = "NAME")]
    #[serde(default)]
    pub redact_body_field: Vec<String>,
    /// Do not redact the default body fields (password, secret, access_token, ...); only the
    /// --redact-body-field names. Credentials in bodies then leave the node.
    #[arg(
        long = "no-default-body-redaction",
        num_args = 0..=1,
        default_missing_value = "true"
    )]
    pub no_default_body_redaction: Option<bool>,
    /// Serve Prometheus metrics, /healthz and /readyz on this address.
    #[arg(long = "metrics-addr", value_name = "ADDR")]
    pub metrics_addr: Option<String>,
    /// `text` or `json`.
    #[arg(long = "log-format", value_name = "text|json")]
    pub log_format: Option<String>,
    /// YAML file with any of these settings (keys as the flag names); flags win.
    #[arg(long, value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Size of the kernel-to-daemon ring buffer; a power of two (default 16 MiB).
    #[arg(long = "ring-buffer-bytes", value_name = "N")]
    pub ring_buffer_bytes: Option<u32>,
    /// Bytes of one read/write copied at most; the rest is reported as a gap (default 4 MiB).
    #[arg(long = "max-capture-bytes-per-syscall", value_name = "N")]
    pub max_capture_bytes_per_syscall: Option<u32>,
    /// iovecs walked per readv/writev/recvmsg/sendmsg; the rest is a gap (default 64).
    #[arg(long = "max-iovecs", value_name = "N")]
    pub max_iovecs: Option<u32>,
    /// Kernel hook: `auto` (the socket tracepoints where the kernel has them, else the
    /// syscall tracepoint), or one of `socket`, `syscall`, `fentry`, `kprobe` forced (for
    /// testing; `fentry` and `kprobe` are experimental). The environment variable serves test
    /// harnesses (default auto).
    #[arg(
        long = "kernel-hook",
        env = "CAPTURE_KERNEL_HOOK",
        value_name = "auto|socket|fentry|kprobe|syscall"
    )]
    pub kernel_hook: Option<String>,
    /// Benchmark only: attach a program that does nothing (`empty`) or only copies (`copy`)
    /// on the socket tracepoints instead of capturing; its records are dropped.
    #[arg(long = "kernel-floor", value_name = "empty|copy", hide = true)]
    pub kernel_floor: Option<String>,
    /// Most connections tracked at once; new ones past it are not captured (default 16384).
    #[arg(long = "max-connections", value_name = "N")]
    pub max_connections: Option<usize>,
    /// Most bytes buffered for one connection (reordering + an unfinished message head);
    /// past it the connection skips ahead and counts a gap (default 4 MiB).
    #[arg(long = "max-conn-buffer-bytes", value_name = "N")]
    pub max_conn_buffer_bytes: Option<usize>,
    /// Most bytes all connections together may hold (bodies, reordering); past it the
    /// connections holding most drop their bodies (cut and flagged truncated) until a quarter
    /// is free again (default 256 MiB).
    #[arg(long = "max-buffered-bytes", value_name = "N")]
    pub max_buffered_bytes: Option<usize>,
    /// Largest request or response head (start line + headers) accepted (default 64 KiB).
    #[arg(long = "max-header-bytes", value_name = "N")]
    pub max_header_bytes: Option<usize>,
    /// Most field lines in one request or response head or trailer section (default 512).
    #[arg(long = "max-header-fields", value_name = "N")]
    pub max_header_fields: Option<usize>,
    /// Most requests waiting for their responses on one connection (default 64).
    #[arg(long = "max-pipelined", value_name = "N")]
    pub max_pipelined: Option<usize>,
    /// A connection with no traffic for this long is flushed and forgotten, e.g. `5m` (default 5m).
    #[arg(long = "idle-timeout", value_name = "DURATION")]
    pub idle_timeout: Option<String>,
    /// How long SIGTERM may spend flushing before the daemon exits anyway, e.g. `5s` (default 5s).
    #[arg(long = "shutdown-deadline", value_name = "DURATION")]
    pub shutdown_deadline: Option<String>,
    /// How often the kernel ring buffer is drained, e.g. `2ms` (default 2ms, 1ms to 1s). The
    /// kernel never wakes the daemon for data, so this bounds how late an exchange is written
    /// and how much work each wakeup does.
    #[arg(long = "drain-interval", value_name = "DURATION")]
    pub drain_interval: Option<String>,
    /// Linux scheduling policy of the daemon's threads: `batch` (default; SCHED_BATCH, never
    /// preempts the workload when it wakes) or `normal` (SCHED_OTHER).
    #[arg(long = "cpu-scheduling", value_name = "batch|normal")]
    pub cpu_scheduling: Option<String>,
    /// Node name reported in `_capture.workload.node` (default: the host name).
    #[arg(long = "node-name", env = "NODE_NAME", value_name = "NAME")]
    pub node_name: Option<String>,
    /// HTTP/2: largest header list kept per header block (RFC 9113 §6.5.2 size: name + value
    /// + 32 per field); fields past it are dropped (default 65536).
    #[arg(long = "max-h2-header-list-bytes", value_name = "N")]
    pub max_h2_header_list_bytes: Option<usize>,
    /// HTTP/2: streams tracked at once per connection; more are counted and ignored
    /// (default 1000).
    #[arg(long = "max-h2-streams", value_name = "N")]
    pub max_h2_streams: Option<usize>,
    /// HTTP/2: largest HPACK dynamic table kept per direction; a peer announcing more leaves
    /// the table partly unknown (default 65536).
    #[arg(long = "max-hpack-table-bytes", value_name = "N")]
    pub max_hpack_table_bytes: Option<usize>,
    /// HTTP/2: body bytes held for all open streams of one connection together; past it
    /// bodies are cut (default 16 MiB).
    #[arg(long = "max-h2-conn-body-bytes", value_name = "N")]
    pub max_h2_conn_body_bytes: Option<usize>,
    /// With --kubernetes: only capture pods of this namespace (repeatable; none = all).
    #[arg(long = "namespace-include", value_name = "NS")]
    #[serde(default)]
    pub namespace_include: Vec<String>,
    /// With --kubernetes: never capture pods of this namespace (repeatable; wins over include).
    #[arg(long = "namespace-exclude", value_name = "NS")]
    #[serde(default)]
    pub namespace_exclude: Vec<String>,
    /// With --kubernetes: the API server from this kubeconfig (default: in-cluster, then
    /// $KUBECONFIG or ~/.kube/config).
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// With --kubernetes: the node's cgroup v2 hierarchy (default /sys/fs/cgroup).
    #[arg(long = "cgroup-root", value_name = "DIR")]
    pub cgroup_root: Option<PathBuf>,
    /// Most cgroups captured at once, the size of the kernel's target map (default 4096).
    #[arg(long = "max-target-cgroups", value_name = "N")]
    pub max_target_cgroups: Option<u32>,
    /// Detach the programs: capture nothing until unpaused (re-read live from --config).
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub paused: Option<bool>,
    /// Also send exchanges to this collector over gRPC+TLS, `https://HOST:PORT`.
    #[arg(long, value_name = "https://HOST:PORT")]
    pub collector: Option<String>,
    /// Trust this CA (PEM) for the collector instead of the system roots.
    #[arg(long = "collector-ca", value_name = "FILE")]
    pub collector_ca: Option<PathBuf>,
    /// Client certificate (PEM) presented to the collector (mTLS); needs --collector-key.
    #[arg(long = "collector-cert", value_name = "FILE")]
    pub collector_cert: Option<PathBuf>,
    /// Private key (PEM) of --collector-cert.
    #[arg(long = "collector-key", value_name = "FILE")]
    pub collector_key: Option<PathBuf>,
    /// Bearer token for the collector, read from this file and re-read when it changes.
    #[arg(long = "token-file", value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Allow a plaintext `http://` collector (no TLS: traffic and token unencrypted).
    #[arg(long = "collector-insecure", num_args = 0..=1, default_missing_value = "true")]
    pub collector_insecure: Option<bool>,
    /// Keep batches the collector has not acknowledged in this directory (survives outages
    /// and restarts).
    #[arg(long = "spool-dir", value_name = "DIR")]
    pub spool_dir: Option<PathBuf>,
    /// Most bytes the spool may hold; past it the newest batches are dropped (default 1 GiB).
    #[arg(long = "spool-max-bytes", value_name = "N")]
    pub spool_max_bytes: Option<u64>,
    /// Name of this daemon for the collector (default: the node name).
    #[arg(long = "daemon-id", value_name = "ID")]
    pub daemon_id: Option<String>,
    /// Most exchanges in one pushed batch (default 512).
    #[arg(long = "export-batch-max-exchanges", value_name = "N")]
    pub export_batch_max_exchanges: Option<u32>,
    /// Most bytes (encoded) in one pushed batch (default 1 MiB, at most 3 MiB).
    #[arg(long = "export-batch-max-bytes", value_name = "N")]
    pub export_batch_max_bytes: Option<usize>,
    /// Longest an exchange waits for its batch to fill, e.g. `1s` (default 1s).
    #[arg(long = "export-batch-max-delay", value_name = "DURATION")]
    pub export_batch_max_delay: Option<String>,
    /// Most bytes of exchanges the exporter holds in memory; past it new ones are dropped
    /// (default 64 MiB).
    #[arg(long = "export-queue-max-bytes", value_name = "N")]
    pub export_queue_max_bytes: Option<u64>,
    /// `zstd`, `gzip` or `none` (default zstd; a collector that does not take zstd is sent
    /// gzip).
    #[arg(long = "export-compression", value_name = "zstd|gzip|none")]
    pub export_compression: Option<String>,
    /// Longest one push (and a connection attempt) may take, e.g. `10s` (default 10s).
    #[arg(long = "export-timeout", value_name = "DURATION")]
    pub export_timeout: Option<String>,
    /// First wait before retrying a failed push (default 100ms); it doubles per failure.
    #[arg(long = "export-backoff-initial", value_name = "DURATION")]
    pub export_backoff_initial: Option<String>,
    /// Longest wait between retries (default 30s).
    #[arg(long = "export-backoff-max", value_name = "DURATION")]
    pub export_backoff_max: Option<String>,
    /// Pushes sent before the first is acknowledged (default 4; 1 keeps the collector's
    /// storage order equal to the capture order).
    #[arg(long = "export-max-in-flight", value_name = "N")]
    pub export_max_in_flight: Option<usize>,
}

/// `--drain-interval` default: short enough that one wakeup's work (a few hundred exchanges at
/// tens of thousands per second) never holds a busy core for long; see docs/benchmarks.md.
pub const DEFAULT_DRAIN_INTERVAL: Duration = Duration::from_millis(2);
const MIN_DRAIN_INTERVAL: Duration = Duration::from_millis(1);
const MAX_DRAIN_INTERVAL: Duration = Duration::from_secs(1);
/// `--max-buffered-bytes`: half the chart's memory limit for the daemon (512 MiB).
const DEFAULT_MAX_BUFFERED_BYTES: usize = 256 * 1024 * 1024;
/// Below this the budget would shed the bodies of ordinary traffic.
const MIN_MAX_BUFFERED_BYTES: usize = 64 * 1024;

/// The validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub target_cgroups: Vec<PathBuf>,
    pub target_pids: Vec<u32>,
    /// `--output`; `None` when a collector is set and no `--output` is given.
    pub output: Option<String>,
    pub headers_only: bool,
    pub redact_headers: Vec<String>,
    pub redact_query: Vec<String>,
    /// `--redact-body-field` names.
    pub redact_body_fields: Vec<String>,
    /// Whether the default body fields are redacted (not `--no-default-body-redaction`).
    pub default_body_redaction: bool,
    pub metrics_addr: Option<SocketAddr>,
    pub log_format: LogFormat,
    pub kernel: KernelLimits,
    pub max_connections: usize,
    pub max_conn_buffer_bytes: usize,
    /// `--max-buffered-bytes`.
    pub max_buffered_bytes: usize,
    pub http1: Http1Limits,
    pub idle_timeout: Duration,
    pub shutdown_deadline: Duration,
    /// `--drain-interval`.
    pub drain_interval: Duration,
    /// `--cpu-scheduling batch`: run as SCHED_BATCH.
    pub sched_batch: bool,
    pub node_name: Option<String>,
    pub http2: Http2Limits,
    pub kubernetes: bool,
    pub namespace_include: Vec<String>,
    pub namespace_exclude: Vec<String>,
    pub kubeconfig: Option<PathBuf>,
    pub cgroup_root: PathBuf,
    pub paused: bool,
    /// The gRPC exporter, when `--collector` is set.
    pub export: Option<crate::output::export::ExportSettings>,
    /// What this configuration was made from, to read the file again when it changes.
    pub source: ConfigSource,
}

/// The command line and file behind a [`Config`].
#[derive(Clone, Debug, Default)]
pub struct ConfigSource {
    /// The flags as given on the command line.
    pub cli: Flags,
    /// The `--config` file.
    pub file: Option<PathBuf>,
    /// The flags with the file's values filled in.
    pub merged: Flags,
}

/// A configuration error: the flag (or file) it concerns and what is wrong with it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{flag} {value:?}: {reason}")]
    Invalid {
        flag: &'static str,
        value: String,
        reason: String,
    },
    #[error("--config {path}: {reason}")]
    File { path: String, reason: String },
    #[error("{0}")]
    Usage(String),
    /// `--help` or `--version`: not an error; the text goes to stdout and the exit code is 0.
    #[error("{0}")]
    Help(String),
}

fn invalid(flag: &'static str, value: impl ToString, reason: impl ToString) -> ConfigError {
    ConfigError::Invalid {
        flag,
        value: value.to_string(),
        reason: reason.to_string(),
    }
}

impl Flags {
    /// Fills every setting this one left unset from `file`.
    fn or_file(mut self, file: Flags) -> Flags {
        macro_rules! fill {
            ($($opt:ident),*) => { $( if self.$opt.is_none() { self.$opt = file.$opt; } )* };
        }
        macro_rules! extend {
            ($($list:ident),*) => { $( if self.$list.is_empty() { self.$list = file.$list; } )* };
        }
        fill!(
            kubernetes,
            output,
            headers_only,
            no_default_body_redaction,
            max_body_bytes,
            metrics_addr,
            log_format,
            ring_buffer_bytes,
            max_capture_bytes_per_syscall,
            max_iovecs,
            kernel_hook,
            kernel_floor,
            max_connections,
            max_conn_buffer_bytes,
            max_buffered_bytes,
            max_header_bytes,
            max_header_fields,
            max_pipelined,
            idle_timeout,
            shutdown_deadline,
            drain_interval,
            cpu_scheduling,
            node_name,
            max_h2_header_list_bytes,
            max_h2_streams,
            max_hpack_table_bytes,
            max_h2_conn_body_bytes,
            kubeconfig,
            cgroup_root,
            max_target_cgroups,
            paused,
            collector,
            collector_ca,
            collector_cert,
            collector_key,
            token_file,
            collector_insecure,
            spool_dir,
            spool_max_bytes,
            daemon_id,
            export_batch_max_exchanges,
            export_batch_max_bytes,
            export_batch_max_delay,
            export_queue_max_bytes,
            export_compression,
            export_timeout,
            export_backoff_initial,
            export_backoff_max,
            export_max_in_flight
        );
        extend!(
            target_cgroup,
            target_pid,
            redact_header,
            redact_query,
            redact_body_field,
            namespace_include,
            namespace_exclude
        );
        self
    }
}

impl Config {
    /// Parses `args` (with the program name first) and the `--config` file they name.
    pub fn from_args<I, T>(args: I) -> Result<Config, ConfigError>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let flags = Flags::try_parse_from(args).map_err(|e| {
            if matches!(
                e.kind(),
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion
            ) {
                return ConfigError::Help(e.to_string());
            }
            // Keep clap's first line (what is wrong) and point at --help, on one line.
            let text = e.to_string();
            let first = text.lines().next().unwrap_or("invalid arguments").trim();
            let first = first.strip_prefix("error: ").unwrap_or(first);
            ConfigError::Usage(format!("{first} (see capture-daemon --help)"))
        })?;
        Config::from_cli(flags)
    }

    /// Reads the `--config` file `cli` names (if any), fills in what the flags leave unset and
    /// validates the result. Called again when the file changes.
    pub fn from_cli(cli: Flags) -> Result<Config, ConfigError> {
        let flags = cli.clone();
        let flags = match &flags.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
                    path: path.display().to_string(),
                    reason: e.to_string(),
                })?;
                let file: Flags = serde_norway::from_str(&text).map_err(|e| ConfigError::File {
                    path: path.display().to_string(),
                    reason: e.to_string(),
                })?;
                flags.clone().or_file(file)
            }
            None => flags,
        };
        let mut config = Config::validate(flags.clone())?;
        config.source = ConfigSource {
            file: cli.config.clone(),
            cli,
            merged: flags,
        };
        Ok(config)
    }

    fn validate(f: Flags) -> Result<Config, ConfigError> {
        let kubernetes = f.kubernetes.unwrap_or(false);
        if !kubernetes && f.target_cgroup.is_empty() && f.target_pid.is_empty() {
            return Err(ConfigError::Usage(
                "nothing to capture: give --target-cgroup DIR, --target-pid PID or --kubernetes \
                 (see capture-daemon --help)"
                    .into(),
            ));
        }
        if kubernetes && f.node_name.as_deref().is_none_or(str::is_empty) {
            return Err(invalid(
                "--node-name",
                "",
                "required with --kubernetes (give --node-name or set NODE_NAME from the \
                 downward API's spec.nodeName)",
            ));
        }
        for (flag, list) in [
            ("--namespace-include", &f.namespace_include),
            ("--namespace-exclude", &f.namespace_exclude),
        ] {
            if let Some(ns) = list.iter().find(|ns| !is_namespace_name(ns)) {
                return Err(invalid(
                    flag,
                    ns,
                    "not a namespace name (lowercase letters, digits and '-', at most 63)",
                ));
            }
        }
        if let Some(path) = &f.kubeconfig
            && !path.is_file()
        {
            return Err(invalid("--kubeconfig", path.display(), "no such file"));
        }
        let cgroup_root = f
            .cgroup_root
            .clone()
            .unwrap_or_else(|| PathBuf::from("/sys/fs/cgroup"));
        if !cgroup_root.is_absolute() {
            return Err(invalid(
                "--cgroup-root",
                cgroup_root.display(),
                "must be an absolute path",
            ));
        }
        let max_target_cgroups = f.max_target_cgroups.unwrap_or(4096);
        if !(1..=MAX_TARGET_CGROUPS).contains(&max_target_cgroups) {
            return Err(invalid(
                "--max-target-cgroups",
                max_target_cgroups,
                format!("must be between 1 and {MAX_TARGET_CGROUPS}"),
            ));
        }
        if f.target_cgroup.len() + f.target_pid.len() > max_target_cgroups as usize {
            return Err(invalid(
                "--max-target-cgroups",
                max_target_cgroups,
                "fewer than the --target-cgroup and --target-pid given",
            ));
        }
        let http1_defaults = Http1Limits::default();
        let max_body_bytes = f.max_body_bytes.unwrap_or(http1_defaults.max_body_bytes);
        let max_header_bytes = f
            .max_header_bytes
            .unwrap_or(http1_defaults.max_header_bytes);
        if max_header_bytes < 256 {
            return Err(invalid(
                "--max-header-bytes",
                max_header_bytes,
                "must be at least 256",
            ));
        }
        let max_header_fields = f
            .max_header_fields
            .unwrap_or(http1_defaults.max_header_fields);
        if max_header_fields == 0 {
            return Err(invalid("--max-header-fields", 0, "must be at least 1"));
        }
        let max_pipelined = f.max_pipelined.unwrap_or(http1_defaults.max_pipelined);
        if max_pipelined == 0 {
            return Err(invalid("--max-pipelined", 0, "must be at least 1"));
        }
        let ring_buffer_bytes = f.ring_buffer_bytes.unwrap_or(16 * 1024 * 1024);
        if !ring_buffer_bytes.is_power_of_two() || ring_buffer_bytes < 64 * 1024 {
            return Err(invalid(
                "--ring-buffer-bytes",
                ring_buffer_bytes,
                "must be a power of two of at least 65536",
            ));
        }
        let kernel_defaults = KernelLimits::default();
        let max_capture_bytes_per_syscall = f
            .max_capture_bytes_per_syscall
            .unwrap_or(kernel_defaults.max_capture_bytes_per_syscall);
        let max_iovecs = f.max_iovecs.unwrap_or(kernel_defaults.max_iovecs);
        if max_capture_bytes_per_syscall == 0 {
            return Err(invalid(
                "--max-capture-bytes-per-syscall",
                0,
                "must be at least 1",
            ));
        }
        if max_iovecs == 0 || max_iovecs > 1024 {
            return Err(invalid(
                "--max-iovecs",
                max_iovecs,
                "must be between 1 and 1024 (IOV_MAX)",
            ));
        }
        let hook = match f.kernel_hook.as_deref() {
            None => HookChoice::Auto,
            Some(v) => v
                .parse()
                .map_err(|why: String| invalid("--kernel-hook", v, &why))?,
        };
        let floor = match f.kernel_floor.as_deref() {
            None => None,
            Some(v) => Some(
                v.parse::<Floor>()
                    .map_err(|why: String| invalid("--kernel-floor", v, &why))?,
            ),
        };
        let kernel = KernelLimits {
            ring_buffer_bytes,
            max_capture_bytes_per_syscall,
            max_iovecs,
            max_target_cgroups,
            hook,
            floor,
        };
        if kernel.max_chunks() + max_iovecs > capture_common::MAX_LOOP_STEPS {
            return Err(invalid(
                "--max-capture-bytes-per-syscall",
                max_capture_bytes_per_syscall,
                "too large for one bpf_loop (at most 8 million 16 KiB chunks)",
            ));
        }
        let max_connections = f.max_connections.unwrap_or(16384);
        if max_connections == 0 {
            return Err(invalid("--max-connections", 0, "must be at least 1"));
        }
        let max_conn_buffer_bytes = f.max_conn_buffer_bytes.unwrap_or(4 * 1024 * 1024);
        if max_conn_buffer_bytes < max_header_bytes {
            return Err(invalid(
                "--max-conn-buffer-bytes",
                max_conn_buffer_bytes,
                format!("must be at least --max-header-bytes ({max_header_bytes})"),
            ));
        }
        let max_buffered_bytes = f.max_buffered_bytes.unwrap_or(DEFAULT_MAX_BUFFERED_BYTES);
        if max_buffered_bytes < MIN_MAX_BUFFERED_BYTES {
            return Err(invalid(
                "--max-buffered-bytes",
                max_buffered_bytes,
                format!("must be at least {MIN_MAX_BUFFERED_BYTES}"),
            ));
        }
        let metrics_addr = f
            .metrics_addr
            .as_deref()
            .map(|a| {
                a.parse::<SocketAddr>()
                    .map_err(|e| invalid("--metrics-addr", a, e))
            })
            .transpose()?;
        let log_format = match f.log_format.as_deref().unwrap_or("text") {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => return Err(invalid("--log-format", other, "expected text or json")),
        };
        let duration = |flag: &'static str, v: Option<&str>, default: Duration| match v {
            None => Ok(default),
            Some(s) => humantime::parse_duration(s).map_err(|e| invalid(flag, s, e)),
        };
        let idle_timeout = duration(
            "--idle-timeout",
            f.idle_timeout.as_deref(),
            Duration::from_secs(300),
        )?;
        let shutdown_deadline = duration(
            "--shutdown-deadline",
            f.shutdown_deadline.as_deref(),
            Duration::from_secs(5),
        )?;
        let drain_interval = duration(
            "--drain-interval",
            f.drain_interval.as_deref(),
            DEFAULT_DRAIN_INTERVAL,
        )?;
        if !(MIN_DRAIN_INTERVAL..=MAX_DRAIN_INTERVAL).contains(&drain_interval) {
            return Err(invalid(
                "--drain-interval",
                f.drain_interval.as_deref().unwrap_or_default(),
                "must be between 1ms and 1s",
            ));
        }
        let sched_batch = match f.cpu_scheduling.as_deref().unwrap_or("batch") {
            "batch" => true,
            "normal" => false,
            other => {
                return Err(invalid(
                    "--cpu-scheduling",
                    other,
                    "expected batch or normal",
                ));
            }
        };
        let http2 = http2_limits(&f, max_body_bytes)?;
        for name in &f.redact_header {
            if name.is_empty() || !name.bytes().all(is_token_byte) {
                return Err(invalid("--redact-header", name, "not a valid header name"));
            }
        }
        for p in &f.redact_query {
            if p.is_empty() {
                return Err(invalid("--redact-query", p, "must not be empty"));
            }
        }
        for name in &f.redact_body_field {
            if name.trim().is_empty() {
                return Err(invalid("--redact-body-field", name, "must not be empty"));
            }
            if name.trim().len() > crate::redact::body::MAX_BODY_FIELD_LEN {
                return Err(invalid(
                    "--redact-body-field",
                    name,
                    "longer than 128 bytes",
                ));
            }
        }
        let host_name = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_string());
        let export = crate::output::export::ExportSettings::from_flags(
            &f,
            f.node_name.as_deref().or(host_name.as_deref()),
        )?;
        // With a collector, exchanges go to stdout only when asked: in a container stdout
        // ends up in the node's logs.
        let output = match (f.output, &export) {
            (Some(o), _) => Some(o),
            (None, None) => Some("-".into()),
            (None, Some(_)) => None,
        };
        Ok(Config {
            target_cgroups: f.target_cgroup,
            target_pids: f.target_pid,
            output,
            headers_only: f.headers_only.unwrap_or(false),
            redact_headers: f.redact_header,
            redact_query: f.redact_query,
            redact_body_fields: f.redact_body_field,
            default_body_redaction: !f.no_default_body_redaction.unwrap_or(false),
            metrics_addr,
            log_format,
            kernel,
            max_connections,
            max_conn_buffer_bytes,
            max_buffered_bytes,
            http1: Http1Limits {
                max_body_bytes,
                max_header_bytes,
                max_pipelined,
                max_header_fields,
            },
            idle_timeout,
            shutdown_deadline,
            drain_interval,
            sched_batch,
            node_name: f.node_name,
            http2,
            kubernetes,
            namespace_include: f.namespace_include,
            namespace_exclude: f.namespace_exclude,
            kubeconfig: f.kubeconfig,
            cgroup_root,
            paused: f.paused.unwrap_or(false),
            source: ConfigSource::default(),
            export,
        })
    }
}

/// The HTTP/2 limits of `f`, validated.
fn http2_limits(f: &Flags, max_body_bytes: usize) -> Result<Http2Limits, ConfigError> {
    let defaults = Http2Limits::default();
    let max_header_list_bytes = f
        .max_h2_header_list_bytes
        .unwrap_or(defaults.max_header_list_bytes);
    if max_header_list_bytes < 256 {
        return Err(invalid(
            "--max-h2-header-list-bytes",
            max_header_list_bytes,
            "must be at least 256",
        ));
    }
    let max_streams = f.max_h2_streams.unwrap_or(defaults.max_streams);
    if max_streams == 0 {
        return Err(invalid("--max-h2-streams", 0, "must be at least 1"));
    }
    let max_hpack_table_bytes = f
        .max_hpack_table_bytes
        .unwrap_or(defaults.max_hpack_table_bytes);
    // RFC 9113 §6.5.2: the table size setting is a 32-bit value.
    if max_hpack_table_bytes > u32::MAX as usize {
        return Err(invalid(
            "--max-hpack-table-bytes",
            max_hpack_table_bytes,
            "must be at most 4294967295",
        ));
    }
    let max_conn_body_bytes = f
        .max_h2_conn_body_bytes
        .unwrap_or(defaults.max_conn_body_bytes);
    if max_conn_body_bytes == 0 {
        return Err(invalid("--max-h2-conn-body-bytes", 0, "must be at least 1"));
    }
    Ok(Http2Limits {
        max_body_bytes,
        max_header_list_bytes,
        max_streams,
        max_hpack_table_bytes,
        max_conn_body_bytes,
    })
}

/// Largest `--max-target-cgroups`: the kernel map is allocated at that size up front.
pub const MAX_TARGET_CGROUPS: u32 = 1 << 20;

/// RFC 1123 label, what Kubernetes allows as a namespace name.
fn is_namespace_name(ns: &str) -> bool {
    !ns.is_empty()
        && ns.len() <= 63
        && ns
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !ns.starts_with('-')
        && !ns.ends_with('-')
}

/// RFC 9110 §5.6.2 `tchar`.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, ConfigError> {
        Config::from_args(std::iter::once("capture-daemon").chain(args.iter().copied()))
    }

    #[test]
    fn defaults() {
        let c = parse(&["--target-pid", "1"]).unwrap();
        assert_eq!(c.output.as_deref(), Some("-"));
        assert!(c.export.is_none());
        assert_eq!(c.http1.max_body_bytes, 1024 * 1024);
        assert_eq!(c.idle_timeout, Duration::from_secs(300));
        assert_eq!(c.drain_interval, Duration::from_millis(2));
        assert!(c.sched_batch);
        assert!(!c.headers_only);
    }

    #[test]
    fn max_buffered_bytes_from_flag_and_file_with_a_floor() {
        assert_eq!(
            parse(&["--target-pid", "1"]).unwrap().max_buffered_bytes,
            256 * 1024 * 1024
        );
        let c = parse(&["--target-pid", "1", "--max-buffered-bytes", "1048576"]).unwrap();
        assert_eq!(c.max_buffered_bytes, 1 << 20);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.yaml");
        std::fs::write(&file, "max-buffered-bytes: 2097152\n").unwrap();
        let c = parse(&["--target-pid", "1", "--config", file.to_str().unwrap()]).unwrap();
        assert_eq!(c.max_buffered_bytes, 2 << 20);
        let e = parse(&["--target-pid", "1", "--max-buffered-bytes", "4096"])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--max-buffered-bytes") && e.contains("4096"),
            "{e}"
        );
    }

    #[test]
    fn cpu_scheduling_is_batch_or_normal() {
        let c = parse(&["--target-pid", "1", "--cpu-scheduling", "normal"]).unwrap();
        assert!(!c.sched_batch);
        let e = parse(&["--target-pid", "1", "--cpu-scheduling", "idle"]).unwrap_err();
        assert!(e.to_string().contains("--cpu-scheduling"), "{e}");
    }

    #[test]
    fn drain_interval_is_bounded() {
        let c = parse(&["--target-pid", "1", "--drain-interval", "10ms"]).unwrap();
        assert_eq!(c.drain_interval, Duration::from_millis(10));
        for bad in ["500us", "2s", "soon"] {
            let e = parse(&["--target-pid", "1", "--drain-interval", bad]).unwrap_err();
            assert!(e.to_string().contains("--drain-interval"), "{bad}: {e}");
        }
    }

    #[test]
    fn http2_limits_from_flags_and_file() {
        let c = parse(&["--target-pid", "1"]).unwrap();
        assert_eq!(c.http2, Http2Limits::default());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.yaml");
        std::fs::write(
            &path,
            "target-pid: [7]\nmax-h2-streams: 5\nmax-hpack-table-bytes: 8192\n\
             max-h2-header-list-bytes: 4096\nmax-h2-conn-body-bytes: 100\n",
        )
        .unwrap();
        let c = parse(&[
            "--config",
            path.to_str().unwrap(),
            "--max-h2-streams",
            "9",
            "--max-body-bytes",
            "50",
        ])
        .unwrap();
        assert_eq!(
            c.http2,
            Http2Limits {
                max_body_bytes: 50,
                max_header_list_bytes: 4096,
                max_streams: 9,
                max_hpack_table_bytes: 8192,
                max_conn_body_bytes: 100,
            }
        );
        for (flag, value) in [
            ("--max-h2-streams", "0"),
            ("--max-h2-header-list-bytes", "100"),
            ("--max-h2-conn-body-bytes", "0"),
            ("--max-hpack-table-bytes", "99999999999"),
        ] {
            let e = parse(&["--target-pid", "1", flag, value]).unwrap_err();
            assert!(
                e.to_string().contains(flag) && e.to_string().contains(value),
                "{e}"
            );
        }
    }

    #[test]
    fn header_field_cap_from_flag_and_file() {
        let c = parse(&["--target-pid", "1"]).unwrap();
        assert_eq!(c.http1.max_header_fields, 512);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.yaml");
        std::fs::write(&path, "target-pid: [7]\nmax-header-fields: 64\n").unwrap();
        let c = parse(&["--config", path.to_str().unwrap()]).unwrap();
        assert_eq!(c.http1.max_header_fields, 64);
        let c = parse(&[
            "--config",
            path.to_str().unwrap(),
            "--max-header-fields",
            "9",
        ])
        .unwrap();
        assert_eq!(c.http1.max_header_fields, 9);
        let e = parse(&["--target-pid", "1", "--max-header-fields", "0"]).unwrap_err();
        assert!(e.to_string().contains("--max-header-fields"), "{e}");
    }

    #[test]
    fn unknown_flag_is_one_line_naming_it() {
        let e = parse(&["--target-pid", "1", "--bogus"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("--bogus"), "{e}");
        assert!(!e.contains('\n'), "{e}");
    }

    #[test]
    fn bad_values_name_flag_and_value() {
        let e = parse(&["--target-pid", "1", "--log-format", "xml"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("--log-format") && e.contains("xml"), "{e}");
        let e = parse(&["--target-pid", "1", "--ring-buffer-bytes", "1000"]).unwrap_err();
        assert!(e.to_string().contains("--ring-buffer-bytes"), "{e}");
        let e = parse(&["--target-pid", "1", "--max-iovecs", "0"]).unwrap_err();
        assert!(e.to_string().contains("--max-iovecs"), "{e}");
        let c = parse(&[
            "--target-pid",
            "1",
            "--max-capture-bytes-per-syscall",
            "20000",
        ])
        .unwrap();
        assert_eq!(c.kernel.max_chunks(), 2);
        let e = parse(&["--target-pid", "1", "--idle-timeout", "soon"]).unwrap_err();
        assert!(e.to_string().contains("--idle-timeout"), "{e}");
        let e = parse(&["--target-pid", "1", "--redact-header", "bad name"]).unwrap_err();
        assert!(e.to_string().contains("--redact-header"), "{e}");
        assert!(parse(&[]).is_err());
    }

    #[test]
    fn file_fills_what_flags_leave_and_flags_win() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.yaml");
        std::fs::write(
            &path,
            "target-pid: [7]\noutput: /tmp/x.jsonl\nmax-body-bytes: 10\nredact-header: [X-Api-Key]\n",
        )
        .unwrap();
        let c = parse(&["--config", path.to_str().unwrap(), "--max-body-bytes", "20"]).unwrap();
        assert_eq!(c.target_pids, vec![7]);
        assert_eq!(c.output.as_deref(), Some("/tmp/x.jsonl"));
        assert_eq!(c.http1.max_body_bytes, 20);
        assert_eq!(c.redact_headers, vec!["X-Api-Key".to_string()]);
    }

    #[test]
    fn body_redaction_flags_and_file_keys() {
        let c = parse(&["--target-pid", "1"]).unwrap();
        assert!(c.default_body_redaction);
        assert!(c.redact_body_fields.is_empty());
        let c = parse(&[
            "--target-pid",
            "1",
            "--redact-body-field",
            "pin",
            "--redact-body-field",
            "otp",
            "--no-default-body-redaction",
        ])
        .unwrap();
        assert!(!c.default_body_redaction);
        assert_eq!(c.redact_body_fields, ["pin", "otp"]);
        let e = parse(&["--target-pid", "1", "--redact-body-field", " "]).unwrap_err();
        assert!(e.to_string().contains("--redact-body-field"), "{e}");
        let long = "x".repeat(129);
        let e = parse(&["--target-pid", "1", "--redact-body-field", &long]).unwrap_err();
        assert!(e.to_string().contains("--redact-body-field"), "{e}");

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.yaml");
        std::fs::write(
            &path,
            "target-pid: [7]\nredact-body-field: [pin]\nno-default-body-redaction: true\n",
        )
        .unwrap();
        let c = parse(&["--config", path.to_str().unwrap()]).unwrap();
        assert_eq!(c.redact_body_fields, ["pin"]);
        assert!(!c.default_body_redaction);
        let c = parse(&[
            "--config",
            path.to_str().unwrap(),
            "--no-default-body-redaction=false",
        ])
        .unwrap();
        assert!(c.default_body_redaction);
    }

    #[test]
    fn unknown_file_key_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.yaml");
        std::fs::write(&path, "target-pid: [7]\nmax-bodyy-bytes: 10\n").unwrap();
        let e = parse(&["--config", path.to_str().unwrap()])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--config") && e.contains("max-bodyy-bytes"),
            "{e}"
        );
    }

    #[test]
    fn kubernetes_mode_flags() {
        let c = parse(&[
            "--kubernetes",
            "--node-name",
            "node-1",
            "--namespace-include",
            "shop",
            "--namespace-exclude",
            "kube-system",
            "--cgroup-root",
            "/host/sys/fs/cgroup",
            "--max-target-cgroups",
            "128",
        ])
        .unwrap();
        assert!(c.kubernetes);
        assert_eq!(c.node_name.as_deref(), Some("node-1"));
        assert_eq!(c.namespace_include, vec!["shop".to_string()]);
        assert_eq!(c.namespace_exclude, vec!["kube-system".to_string()]);
        assert_eq!(c.cgroup_root, PathBuf::from("/host/sys/fs/cgroup"));
        assert_eq!(c.kernel.max_target_cgroups, 128);
        assert!(!c.paused);
        let c = parse(&["--kubernetes=true", "--node-name", "n", "--paused"]).unwrap();
        assert!(c.paused);
        assert_eq!(c.cgroup_root, PathBuf::from("/sys/fs/cgroup"));
        assert_eq!(c.kernel.max_target_cgroups, 4096);
        // Static targets alone still need no node name.
        assert!(!parse(&["--target-pid", "1"]).unwrap().kubernetes);
    }

    #[test]
    fn kubernetes_mode_bad_values_name_the_flag() {
        // Without a node name (NODE_NAME is read by clap: clear it for this process' parse).
        let e = Config::from_cli(Flags {
            kubernetes: Some(true),
            ..Flags::default()
        })
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("--node-name") && e.contains("--kubernetes"),
            "{e}"
        );
        let k = ["--kubernetes", "--node-name", "n"];
        for (flag, value, want) in [
            ("--namespace-include", "Shop", "--namespace-include"),
            ("--namespace-exclude", "a_b", "--namespace-exclude"),
            ("--cgroup-root", "relative/dir", "--cgroup-root"),
            ("--max-target-cgroups", "0", "--max-target-cgroups"),
            ("--max-target-cgroups", "99999999", "--max-target-cgroups"),
            ("--kubeconfig", "/nonexistent/kubeconfig", "--kubeconfig"),
            ("--paused", "maybe", "--paused"),
        ] {
            let mut args = k.to_vec();
            args.extend([flag, value]);
            let e = parse(&args).unwrap_err().to_string();
            assert!(e.contains(want) && e.contains(value), "{flag} {value}: {e}");
        }
        let e = parse(&[
            "--target-pid",
            "1",
            "--target-pid",
            "2",
            "--max-target-cgroups",
            "1",
        ])
        .unwrap_err()
        .to_string();
        assert!(e.contains("--max-target-cgroups"), "{e}");
    }

    #[test]
    fn kubernetes_keys_in_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.yaml");
        std::fs::write(
            &path,
            "kubernetes: true\nnode-name: n1\nnamespace-exclude: [kube-system]\npaused: true\n\
             cgroup-root: /host/sys/fs/cgroup\nmax-target-cgroups: 10\n",
        )
        .unwrap();
        let c = parse(&["--config", path.to_str().unwrap()]).unwrap();
        assert!(c.kubernetes && c.paused);
        assert_eq!(c.namespace_exclude, vec!["kube-system".to_string()]);
        assert_eq!(c.kernel.max_target_cgroups, 10);
        assert_eq!(c.source.file.as_deref(), Some(path.as_path()));
        assert_eq!(c.source.merged.paused, Some(true));
        assert_eq!(c.source.cli.paused, None);
    }
}
