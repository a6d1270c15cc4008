//! capture-daemon: captures the HTTP exchanges of opted-in workloads with eBPF.
//!
//! The folders follow the data:
//! `kernel` (load and attach the programs, ring-buffer intake, target cgroups, /proc naming)
//! -> `conn` (connection table: order by byte position, gaps, eviction, dispatch to the
//! decoders of `capture-http`) -> `pipeline` (one loop that drains the kernel and moves
//! exchanges on) -> `redact` and `routing` (stages applied to every exchange) -> `output`
//! (the JSONL sink, and the gRPC exporter to a collector).
//!
//! Beside the flow: `control` holds what changes at run time (the target set, the pause
//! switch, and the Kubernetes pod watcher that feeds them); `config` parses the command line
//! and file once and hands each subsystem plain settings (and re-reads the file live);
//! `telemetry` (metrics, health, audit lines, logging) is used by all and uses none of them.
//! Dependencies point one way: config -> everything it configures; control -> kernel;
//! everything -> telemetry. [`run`] below is the one place that wires them (the composition
//! root: nothing imports it); `main.rs` parses the command line and maps a [`Failure`] to the
//! exit code.
#![deny(unsafe_code)]

pub mod config;
pub mod conn;
pub mod control;
pub mod kernel;
pub mod output;
pub mod pipeline;
pub mod redact;
pub mod routing;
pub mod telemetry;

use std::{collections::BTreeSet, collections::HashMap, sync::Arc, time::Duration};

use capture_model::exchange::Workload;
use tokio::sync::{mpsc, watch};
use tracing::{error, info};

use crate::{
    config::{Config, reload::ConfigReloader},
    conn::metrics::Metrics,
    control::{
        Control, ControlMetrics, TargetSnapshot,
        kubernetes::{self, cgroups::CgroupResolver, pod::NamespaceFilter, reconcile},
    },
    kernel::{
        programs::Capture,
        targets::{self, TargetCgroup},
    },
    output::{
        JsonlSink,
        export::{ExportHandle, Exporter, metrics::ExportMetrics},
    },
    pipeline::Pipeline,
    telemetry::{
        audit,
        metrics::{self as telemetry_metrics, Registry},
    },
};

/// Why the daemon stopped without success. Exit codes (DESIGN §10): a [`Failure::Usage`] is 2
/// (a flag, a file or a setting the operator must fix; nothing was attached), anything else 1.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error("{0}")]
    Usage(String),
    #[error("{0:#}")]
    Runtime(anyhow::Error),
}

impl Failure {
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Usage(_) => 2,
            Self::Runtime(_) => 1,
        }
    }

    fn usage(e: impl std::fmt::Display) -> Self {
        Self::Usage(e.to_string())
    }
}

/// Runs the daemon with a validated configuration until SIGINT/SIGTERM: resolves the targets,
/// opens the outputs, starts live control, loads and attaches the programs, runs the pipeline,
/// then flushes and detaches within `--shutdown-deadline`.
pub fn run(cfg: Config) -> Result<(), Failure> {
    audit::init_logging(cfg.log_format);
    let targets =
        targets::resolve(&cfg.target_cgroups, &cfg.target_pids).map_err(Failure::usage)?;
    if cfg.kubernetes {
        kubernetes::cgroups::check_root(&cfg.cgroup_root).map_err(|e| {
            if e.is_usage() {
                Failure::usage(e)
            } else {
                Failure::Runtime(e.into())
            }
        })?;
    }
    let sink = match cfg.output.as_deref() {
        None => JsonlSink::discard(),
        Some(path) => {
            JsonlSink::open(path).map_err(|e| Failure::Usage(format!("--output {path}: {e}")))?
        }
    };
    // After the usage checks (a usage error stays one line), before any thread is started:
    // threads inherit the policy.
    if cfg.sched_batch {
        batch_scheduling();
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Runtime(anyhow::anyhow!("starting the runtime: {e}")))?;
    let registry = Registry::new();
    let metrics = Metrics::new();
    register(&registry, Arc::clone(&metrics) as _)?;
    // Before anything is attached: a spool in use or an unusable token file is a
    // configuration error.
    let exporter = match &cfg.export {
        None => None,
        Some(settings) => {
            let export_metrics = Arc::new(ExportMetrics::default());
            let started = Exporter::start(settings, Arc::clone(&export_metrics)).map_err(|e| {
                if e.is_config() {
                    Failure::usage(e)
                } else {
                    Failure::Runtime(e.into())
                }
            })?;
            register(&registry, export_metrics)?;
            Some(started)
        }
    };
    let json_logs = cfg.log_format == crate::telemetry::audit::LogFormat::Json;
    runtime
        .block_on(capture(cfg, targets, sink, registry, metrics, exporter))
        .inspect_err(|e| {
            // One line: in the log stream when it is JSON (collected); main prints it otherwise.
            if json_logs && let Failure::Runtime(e) = e {
                error!("{e:#}");
            }
        })
}

fn register(
    registry: &Registry,
    source: Arc<dyn telemetry_metrics::Source>,
) -> Result<(), Failure> {
    registry
        .register(source)
        .map_err(|e| Failure::Runtime(anyhow::anyhow!("registering metrics: {e}")))
}

async fn capture(
    cfg: Config,
    targets: BTreeSet<TargetCgroup>,
    sink: JsonlSink,
    registry: Registry,
    metrics: Arc<Metrics>,
    exporter: Option<(Exporter, ExportHandle)>,
) -> Result<(), Failure> {
    let health = Arc::clone(registry.health());
    if let Some(addr) = cfg.metrics_addr {
        telemetry_metrics::serve(addr, registry.clone())
            .await
            .map_err(|e| Failure::Runtime(anyhow::anyhow!("--metrics-addr {addr}: {e}")))?;
    }
    let control_metrics = Arc::new(ControlMetrics::default());
    register(&registry, Arc::clone(&control_metrics) as _)?;
    // Before loading: a kubeconfig that cannot be used is a configuration error (exit 2), and
    // nothing is attached before the configuration is known to be good.
    let control = start_control(&cfg, &targets, control_metrics, Arc::clone(&health)).await?;
    let mut capture = Capture::load(&cfg.kernel).map_err(|e| Failure::Runtime(e.into()))?;
    register(&registry, capture.counter_reader() as _)?;
    let ids = targets.iter().map(|t| t.id).collect();
    capture
        .set_targets(&ids)
        .map_err(|e| Failure::Runtime(e.into()))?;
    let node = Workload {
        node: cfg.node_name.clone(),
        ..Workload::default()
    };
    for t in &targets {
        audit::target_added(&node, t.id, &t.dir);
    }
    release_startup_memory();
    let mut pipeline = Pipeline::new(&cfg, sink, Arc::clone(&metrics)).with_control(control);
    let (exporter, export_shutdown) = match exporter {
        Some((exporter, handle)) => {
            pipeline = pipeline.with_exporter(handle);
            let signal = exporter.shutdown_signal();
            (Some(exporter), Some(signal))
        }
        None => (None, None),
    };
    // With --kubernetes, ready once the node's pods are listed and their targets in place.
    health.set_ready(!cfg.kubernetes);
    info!(
        targets = targets.len(),
        output = cfg.output.as_deref().unwrap_or("none"),
        collector = cfg.export.as_ref().map_or("none", |e| e.url.as_str()),
        "capture started"
    );
    let deadline = cfg.shutdown_deadline;
    let shutdown = async move {
        shutdown_signal().await;
        // The exporter delivers what it holds while the pipeline flushes, in the same time.
        if let Some(signal) = export_shutdown {
            signal.begin(deadline);
        }
    };
    let result = pipeline.run(&mut capture, shutdown, deadline).await;
    // The pipeline dropped its handle: the exporter takes the last exchanges and stops.
    if let Some(exporter) = exporter {
        exporter
            .finish(deadline, deadline + Duration::from_secs(5))
            .await;
    }
    result.map_err(Failure::Runtime)?;
    health.set_ready(false);
    drop(capture);
    info!("programs detached; exiting");
    Ok(())
}

/// Hands the memory freed since start-up back to the OS. Loading the programs parses the
/// kernel's BTF and the eBPF object (about 30 MiB, freed once they are attached); mimalloc, the
/// daemon's allocator, keeps freed pages for reuse, so without this they stayed in the
/// daemon's RSS for its whole life (74 MiB idle against 45 MiB, docs/benchmarks.md).
fn release_startup_memory() {
    // SAFETY: `mi_collect` takes no pointers; it only walks mimalloc's own free lists, and is
    // a no-op for memory mimalloc does not manage (a test binary on the system allocator).
    #[allow(unsafe_code)]
    unsafe {
        libmimalloc_sys::mi_collect(true);
    }
}

/// Runs this thread (and so every thread started after it) as SCHED_BATCH: the daemon then
/// never preempts a workload thread when it wakes for its next drain. On a saturated node its
/// bursts otherwise stall the workload's threads on that core (docs/benchmarks.md: 0 to +5 % of
/// throughput in the saturated wrk runs, near the noise). Its share of the CPU is unchanged. Needs no privilege;
/// a failure is logged and the daemon runs on as SCHED_OTHER.
fn batch_scheduling() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: pid 0 is the calling thread; `param` is a valid `sched_param` that outlives the
    // call, which only reads it.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) };
    if rc == 0 {
        tracing::debug!("running as SCHED_BATCH (--cpu-scheduling batch)");
    } else {
        tracing::warn!(
            error = %std::io::Error::last_os_error(),
            "cannot switch to SCHED_BATCH; running as SCHED_OTHER"
        );
    }
}

/// Events buffered between the watcher and the reconciler.
const POD_EVENT_QUEUE: usize = 1024;

/// Starts what changes the daemon's state while it runs: the configuration reloader (when
/// `--config` is given) and, with `--kubernetes`, the pod watcher and reconciler. Returns the
/// pipeline's end.
async fn start_control(
    cfg: &Config,
    static_targets: &BTreeSet<TargetCgroup>,
    control_metrics: Arc<ControlMetrics>,
    health: Arc<telemetry_metrics::Health>,
) -> Result<Control, Failure> {
    let initial = TargetSnapshot {
        ids: static_targets.iter().map(|t| t.id).collect(),
        workloads: HashMap::new(),
        synced: !cfg.kubernetes,
    };
    let (targets_tx, targets_rx) = watch::channel(Arc::new(initial));
    let (paused_tx, paused_rx) = watch::channel(cfg.paused);
    let filter = NamespaceFilter {
        include: cfg.namespace_include.clone(),
        exclude: cfg.namespace_exclude.clone(),
    };
    let (namespaces_tx, namespaces_rx) = watch::channel(filter.clone());
    if cfg.kubernetes {
        let client = kubernetes::client(cfg.kubeconfig.as_deref())
            .await
            .map_err(|e| {
                if e.is_usage() {
                    Failure::usage(e)
                } else {
                    Failure::Runtime(e.into())
                }
            })?;
        let node = cfg.node_name.clone().unwrap_or_default();
        let settings = reconcile::Settings {
            node: node.clone(),
            namespaces: filter,
            max_targets: cfg.kernel.max_target_cgroups,
            retain_removed: cfg.idle_timeout + Duration::from_secs(60),
        };
        let rec = reconcile::Reconciler::new(
            settings,
            CgroupResolver::new(cfg.cgroup_root.clone()),
            static_targets,
            targets_tx,
            Arc::clone(&control_metrics),
        );
        let (events_tx, events_rx) = mpsc::channel(POD_EVENT_QUEUE);
        info!(node = %node, cgroup_root = %cfg.cgroup_root.display(), "watching this node's pods");
        tokio::spawn(kubernetes::watch::watch_pods(
            client,
            node,
            events_tx,
            Arc::clone(&control_metrics),
        ));
        tokio::spawn(kubernetes::watch::reconcile(rec, events_rx, namespaces_rx));
    } else {
        // Static targets never change: the pipeline keeps the initial snapshot.
        drop((targets_tx, namespaces_rx));
    }
    if let Some(reloader) =
        ConfigReloader::new(cfg, paused_tx, namespaces_tx, Arc::clone(&control_metrics))
    {
        tokio::spawn(reloader.run());
    }
    Ok(Control::new(targets_rx, paused_rx, control_metrics, health))
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        error!("cannot install signal handlers; stop the daemon with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => info!("SIGTERM received"),
        _ = int.recv() => info!("SIGINT received"),
    }
}
