//! Live configuration: the `--config` file is read again whenever its content changes (checked
//! every 2 s; a Kubernetes ConfigMap update swaps a symlink, and reading through the path
//! follows it).
//!
//! `paused`, `namespace-include` and `namespace-exclude` take effect at once. Any other key that
//! changed is reported as needing a restart and keeps its running value. An invalid file is
//! rejected as a whole: the daemon keeps its settings, logs why and counts it. Flags given on
//! the command line still win over the file, so a key set by a flag never changes live.

use std::{path::PathBuf, sync::Arc, sync::atomic::Ordering::Relaxed, time::Duration};

use tokio::sync::watch;
use tracing::{info, warn};

use crate::{
    config::Config,
    control::{ControlMetrics, kubernetes::pod::NamespaceFilter},
    telemetry::audit,
};

/// How often the file is looked at.
pub const POLL_EVERY: Duration = Duration::from_secs(2);
/// Keys applied without a restart.
pub const LIVE_KEYS: [&str; 3] = ["paused", "namespace-include", "namespace-exclude"];

pub struct ConfigReloader {
    path: PathBuf,
    current: Config,
    last_text: Option<Vec<u8>>,
    read_error: bool,
    paused: watch::Sender<bool>,
    namespaces: watch::Sender<NamespaceFilter>,
    metrics: Arc<ControlMetrics>,
}

impl ConfigReloader {
    /// `None` without `--config`: nothing to watch.
    pub fn new(
        cfg: &Config,
        paused: watch::Sender<bool>,
        namespaces: watch::Sender<NamespaceFilter>,
        metrics: Arc<ControlMetrics>,
    ) -> Option<Self> {
        let path = cfg.source.file.clone()?;
        let last_text = std::fs::read(&path).ok();
        Some(Self {
            path,
            current: cfg.clone(),
            last_text,
            read_error: false,
            paused,
            namespaces,
            metrics,
        })
    }

    pub async fn run(mut self) {
        let mut tick = tokio::time::interval(POLL_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.check();
        }
    }

    /// Reads the file; applies it when its content changed.
    pub fn check(&mut self) {
        let text = match std::fs::read(&self.path) {
            Ok(t) => {
                self.read_error = false;
                t
            }
            Err(e) => {
                if !self.read_error {
                    warn!(file = %self.path.display(), error = %e, "cannot read the configuration file; current settings kept");
                    self.read_error = true;
                }
                return;
            }
        };
        if self.last_text.as_ref() == Some(&text) {
            return;
        }
        self.last_text = Some(text);
        let new = match Config::from_cli(self.current.source.cli.clone()) {
            Ok(c) => c,
            Err(e) => {
                self.metrics.config_reload_errors.fetch_add(1, Relaxed);
                let reason = e.to_string();
                warn!(error = %reason, "configuration change rejected; current settings kept");
                audit::config_rejected(&self.path, &reason);
                return;
            }
        };
        let changed = changed_keys(&self.current, &new);
        if changed.is_empty() {
            return;
        }
        let (applied, restart): (Vec<String>, Vec<String>) = changed
            .into_iter()
            .partition(|k| LIVE_KEYS.contains(&k.as_str()));
        self.metrics.config_reloads.fetch_add(1, Relaxed);
        audit::config_changed(&self.path, &applied, &restart);
        if !restart.is_empty() {
            warn!(
                keys = restart.join(","),
                "configuration keys changed that take effect only after a restart"
            );
        }
        if new.paused != self.current.paused {
            info!(
                paused = new.paused,
                "pause state changed by the configuration"
            );
            self.paused.send_replace(new.paused);
        }
        if new.namespace_include != self.current.namespace_include
            || new.namespace_exclude != self.current.namespace_exclude
        {
            self.namespaces.send_replace(NamespaceFilter {
                include: new.namespace_include.clone(),
                exclude: new.namespace_exclude.clone(),
            });
        }
        // Only the live keys move; the rest stay as the daemon runs them, and keep being
        // reported until the file matches them again or the daemon restarts.
        self.current.paused = new.paused;
        self.current.namespace_include = new.namespace_include;
        self.current.namespace_exclude = new.namespace_exclude;
        for key in LIVE_KEYS {
            set_key(&mut self.current.source.merged, &new.source.merged, key);
        }
    }
}

/// Keys (as written in the file) whose merged value differs between two configurations.
fn changed_keys(old: &Config, new: &Config) -> Vec<String> {
    let (Ok(serde_json::Value::Object(a)), Ok(serde_json::Value::Object(b))) = (
        serde_json::to_value(&old.source.merged),
        serde_json::to_value(&new.source.merged),
    ) else {
        return Vec::new();
    };
    let mut keys: Vec<String> = a
        .keys()
        .chain(b.keys())
        .filter(|k| a.get(*k) != b.get(*k))
        .cloned()
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

fn set_key(into: &mut crate::config::Flags, from: &crate::config::Flags, key: &str) {
    match key {
        "paused" => into.paused = from.paused,
        "namespace-include" => into.namespace_include.clone_from(&from.namespace_include),
        "namespace-exclude" => into.namespace_exclude.clone_from(&from.namespace_exclude),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reloader(
        dir: &std::path::Path,
        text: &str,
    ) -> (
        ConfigReloader,
        watch::Receiver<bool>,
        watch::Receiver<NamespaceFilter>,
    ) {
        let path = dir.join("config.yaml");
        std::fs::write(&path, text).unwrap();
        let cfg =
            Config::from_args(["capture-daemon", "--config", path.to_str().unwrap()]).unwrap();
        let (ptx, prx) = watch::channel(cfg.paused);
        let (ntx, nrx) = watch::channel(NamespaceFilter::default());
        let r = ConfigReloader::new(&cfg, ptx, ntx, Arc::new(ControlMetrics::default())).unwrap();
        (r, prx, nrx)
    }

    #[test]
    fn pause_and_namespaces_apply_live_other_keys_need_a_restart() {
        let tmp = tempfile::tempdir().unwrap();
        let (mut r, mut paused, mut ns) = reloader(tmp.path(), "target-pid: [1]\n");
        r.check();
        assert!(!paused.has_changed().unwrap());

        std::fs::write(&r.path, "target-pid: [1]\npaused: true\n").unwrap();
        r.check();
        assert!(paused.has_changed().unwrap());
        assert!(*paused.borrow_and_update());
        assert_eq!(r.metrics.config_reloads.load(Relaxed), 1);

        std::fs::write(
            &r.path,
            "target-pid: [1]\npaused: true\nnamespace-exclude: [kube-system]\nmax-body-bytes: 5\n",
        )
        .unwrap();
        r.check();
        assert!(!paused.has_changed().unwrap());
        assert_eq!(
            ns.borrow_and_update().exclude,
            vec!["kube-system".to_string()]
        );
        // max-body-bytes is not applied live.
        assert_eq!(r.current.http1.max_body_bytes, 1024 * 1024);

        // An invalid file changes nothing and is counted.
        std::fs::write(&r.path, "target-pid: [1]\npaused: maybe\n").unwrap();
        r.check();
        assert_eq!(r.metrics.config_reload_errors.load(Relaxed), 1);
        assert!(!paused.has_changed().unwrap());

        std::fs::write(&r.path, "target-pid: [1]\npaused: false\n").unwrap();
        r.check();
        assert!(!*paused.borrow_and_update());
        assert!(ns.borrow_and_update().exclude.is_empty());
    }

    #[test]
    fn a_configmap_style_symlink_swap_is_seen() {
        let tmp = tempfile::tempdir().unwrap();
        // kubelet: config.yaml -> ..data/config.yaml, ..data -> ..<timestamp>/ swapped atomically.
        let v1 = tmp.path().join("..v1");
        let v2 = tmp.path().join("..v2");
        std::fs::create_dir(&v1).unwrap();
        std::fs::create_dir(&v2).unwrap();
        std::fs::write(v1.join("config.yaml"), "target-pid: [1]\n").unwrap();
        std::fs::write(v2.join("config.yaml"), "target-pid: [1]\npaused: true\n").unwrap();
        std::os::unix::fs::symlink("..v1", tmp.path().join("..data")).unwrap();
        let path = tmp.path().join("config.yaml");
        std::os::unix::fs::symlink("..data/config.yaml", &path).unwrap();
        let cfg =
            Config::from_args(["capture-daemon", "--config", path.to_str().unwrap()]).unwrap();
        let (ptx, mut prx) = watch::channel(cfg.paused);
        let (ntx, _nrx) = watch::channel(NamespaceFilter::default());
        let mut r =
            ConfigReloader::new(&cfg, ptx, ntx, Arc::new(ControlMetrics::default())).unwrap();
        std::os::unix::fs::symlink("..v2", tmp.path().join("..data.tmp")).unwrap();
        std::fs::rename(tmp.path().join("..data.tmp"), tmp.path().join("..data")).unwrap();
        r.check();
        assert!(*prx.borrow_and_update());
    }

    #[test]
    fn a_flag_wins_over_the_file_live_too() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("config.yaml");
        std::fs::write(&path, "target-pid: [1]\n").unwrap();
        let cfg = Config::from_args([
            "capture-daemon",
            "--config",
            path.to_str().unwrap(),
            "--paused=false",
        ])
        .unwrap();
        let (ptx, prx) = watch::channel(cfg.paused);
        let (ntx, _nrx) = watch::channel(NamespaceFilter::default());
        let mut r =
            ConfigReloader::new(&cfg, ptx, ntx, Arc::new(ControlMetrics::default())).unwrap();
        std::fs::write(&path, "target-pid: [1]\npaused: true\n").unwrap();
        r.check();
        assert!(!prx.has_changed().unwrap());
    }
}
