//! `capture-daemon`: parse the configuration, resolve targets, open the output, load and
//! attach the kernel programs, then run the pipeline until SIGINT/SIGTERM.
//!
//! Exit codes: 0 success, 2 usage or configuration error (before anything is attached),
//! 1 runtime failure.
#![forbid(unsafe_code)]

use std::{process::ExitCode, sync::Arc};

use capture_daemon::{
    audit,
    config::{Config, ConfigError, LogFormat},
    control,
    ebpf::Capture,
    export::Exporter,
    kubernetes,
    metrics::{self, Metrics},
    pipeline::Pipeline,
    sink::JsonlSink,
    targets,
};
use capture_model::exchange::Workload;
use tracing::{error, info};

fn main() -> ExitCode {
    let cfg = match Config::from_args(std::env::args_os()) {
        Ok(c) => c,
        Err(ConfigError::Help(text)) => {
            print!("{text}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("capture-daemon: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging(cfg.log_format);
    let targets = match targets::resolve(&cfg.target_cgroups, &cfg.target_pids) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("capture-daemon: {e}");
            return ExitCode::from(2);
        }
    };
    if cfg.kubernetes
        && let Err(e) = kubernetes::cgroups::check_root(&cfg.cgroup_root)
    {
        eprintln!("capture-daemon: {e}");
        return ExitCode::from(e.exit_code());
    }
    let sink = match cfg.output.as_deref().map(JsonlSink::open) {
        None => JsonlSink::discard(),
        Some(Ok(s)) => s,
        Some(Err(e)) => {
            eprintln!(
                "capture-daemon: --output {}: {e}",
                cfg.output.as_deref().unwrap_or_default()
            );
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("capture-daemon: starting the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let json_logs = cfg.log_format == LogFormat::Json;
    let metrics = Metrics::new();
    // Before anything is attached: a spool in use or an unusable token file is a
    // configuration error.
    let exporter = match &cfg.export {
        None => None,
        Some(settings) => match Exporter::start(settings, Arc::clone(&metrics)) {
            Ok(started) => Some(started),
            Err(e) => {
                eprintln!("capture-daemon: {e}");
                return ExitCode::from(if e.is_config() { 2 } else { 1 });
            }
        },
    };
    match runtime.block_on(run(cfg, targets, sink, metrics, exporter)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.downcast_ref::<control::StartError>().is_some() => {
            let code = e
                .downcast_ref::<control::StartError>()
                .map_or(1, control::StartError::exit_code);
            eprintln!("capture-daemon: {e:#}");
            ExitCode::from(code)
        }
        Err(e) => {
            // One line: in the log stream when it is JSON (collected), else plainly on stderr.
            if json_logs {
                error!("{e:#}");
            } else {
                eprintln!("capture-daemon: {e:#}");
            }
            ExitCode::from(1)
        }
    }
}

async fn run(
    cfg: Config,
    targets: std::collections::BTreeSet<targets::TargetCgroup>,
    sink: JsonlSink,
    metrics: Arc<Metrics>,
    exporter: Option<(Exporter, capture_daemon::export::ExportHandle)>,
) -> anyhow::Result<()> {
    if let Some(addr) = cfg.metrics_addr {
        metrics::serve(addr, Arc::clone(&metrics))
            .await
            .map_err(|e| anyhow::anyhow!("--metrics-addr {addr}: {e}"))?;
    }
    // Before loading: a kubeconfig that cannot be used is a configuration error (exit 2), and
    // nothing is attached before the configuration is known to be good.
    let control = control::start(&cfg, &targets, &metrics).await?;
    let mut capture = Capture::load(&cfg.kernel)?;
    metrics.set_kernel(capture.counter_reader());
    let ids = targets.iter().map(|t| t.id).collect();
    capture.set_targets(&ids)?;
    let node = Workload {
        node: cfg.node_name.clone(),
        ..Workload::default()
    };
    for t in &targets {
        audit::target_added(&node, t.id, &t.dir);
    }
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
    metrics.set_ready(!cfg.kubernetes);
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
            .finish(deadline, deadline + std::time::Duration::from_secs(5))
            .await;
    }
    result?;
    metrics.set_ready(false);
    drop(capture);
    info!("programs detached; exiting");
    Ok(())
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

fn init_logging(format: LogFormat) {
    // Audit lines are JSON whatever the format (see `audit`).
    audit::init_logging(format);
}
