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
    exchange::Workload,
    kubernetes,
    metrics::{self, Metrics},
    pipeline::Pipeline,
    sink::JsonlSink,
    targets,
};
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
    let sink = match JsonlSink::open(&cfg.output) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("capture-daemon: --output {}: {e}", cfg.output);
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
    match runtime.block_on(run(cfg, targets, sink)) {
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
) -> anyhow::Result<()> {
    let metrics = Metrics::new();
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
    let pipeline = Pipeline::new(&cfg, sink, Arc::clone(&metrics)).with_control(control);
    // With --kubernetes, ready once the node's pods are listed and their targets in place.
    metrics.set_ready(!cfg.kubernetes);
    info!(targets = targets.len(), output = %cfg.output, "capture started");
    pipeline
        .run(&mut capture, shutdown_signal(), cfg.shutdown_deadline)
        .await?;
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
