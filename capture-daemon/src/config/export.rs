//! The exporter's settings from the command line: the `--collector*`, `--token-file`, `--spool-*`, `--daemon-id` and
//! `--export-*` flags (and their YAML keys), validated once at start-up. Every file they name
//! is read here, so an unreadable CA, certificate, key or token file stops the daemon with
//! exit code 2 before anything is attached, naming the flag.
//!
//! Secrets (the client key, the token) are read to check them but never shown: `Debug` leaves
//! them out and errors name the file, never its content.

use std::time::Duration;

use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity, Uri};

use super::{ConfigError, Flags};
use crate::output::export::{
    batch::BatchLimits,
    settings::{
        Compression, DEFAULT_BACKOFF_INITIAL, DEFAULT_BACKOFF_MAX, DEFAULT_MAX_IN_FLIGHT,
        DEFAULT_QUEUE_MAX_BYTES, DEFAULT_SPOOL_MAX_BYTES, DEFAULT_TIMEOUT, ExportSettings,
        MAX_BATCH_BYTES, SpoolSettings,
    },
    token,
};

fn invalid(flag: &'static str, value: impl ToString, reason: impl ToString) -> ConfigError {
    ConfigError::Invalid {
        flag,
        value: value.to_string(),
        reason: reason.to_string(),
    }
}

fn duration(
    flag: &'static str,
    v: Option<&str>,
    default: Duration,
) -> Result<Duration, ConfigError> {
    let d = match v {
        None => default,
        Some(s) => humantime::parse_duration(s).map_err(|e| invalid(flag, s, e))?,
    };
    if d.is_zero() {
        return Err(invalid(flag, v.unwrap_or("0"), "must be more than zero"));
    }
    Ok(d)
}

fn read_file(flag: &'static str, path: &std::path::Path) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path).map_err(|e| invalid(flag, path.display(), format!("cannot read it: {e}")))
}

fn certificates(flag: &'static str, path: &std::path::Path, pem: &[u8]) -> Result<(), ConfigError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(flag, path.display(), format!("not PEM certificates: {e}")))?;
    if certs.is_empty() {
        return Err(invalid(
            flag,
            path.display(),
            "holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
        ));
    }
    Ok(())
}

impl ExportSettings {
    /// The exporter settings of `f`; `None` without `--collector`. `node_name` is the default
    /// daemon id.
    pub fn from_flags(f: &Flags, node_name: Option<&str>) -> Result<Option<Self>, ConfigError> {
        let Some(url) = f.collector.clone() else {
            // Exporter flags without a collector are a mistake worth stopping for.
            let stray: [(&'static str, bool); 17] = [
                ("--collector-ca", f.collector_ca.is_some()),
                ("--collector-cert", f.collector_cert.is_some()),
                ("--collector-key", f.collector_key.is_some()),
                ("--token-file", f.token_file.is_some()),
                ("--collector-insecure", f.collector_insecure == Some(true)),
                ("--spool-dir", f.spool_dir.is_some()),
                ("--spool-max-bytes", f.spool_max_bytes.is_some()),
                ("--daemon-id", f.daemon_id.is_some()),
                (
                    "--export-batch-max-exchanges",
                    f.export_batch_max_exchanges.is_some(),
                ),
                (
                    "--export-batch-max-bytes",
                    f.export_batch_max_bytes.is_some(),
                ),
                (
                    "--export-batch-max-delay",
                    f.export_batch_max_delay.is_some(),
                ),
                (
                    "--export-queue-max-bytes",
                    f.export_queue_max_bytes.is_some(),
                ),
                ("--export-compression", f.export_compression.is_some()),
                ("--export-timeout", f.export_timeout.is_some()),
                (
                    "--export-backoff-initial",
                    f.export_backoff_initial.is_some(),
                ),
                ("--export-backoff-max", f.export_backoff_max.is_some()),
                ("--export-max-in-flight", f.export_max_in_flight.is_some()),
            ];
            if let Some((flag, _)) = stray.iter().find(|(_, set)| *set) {
                return Err(ConfigError::Usage(format!(
                    "{flag} needs --collector https://HOST:PORT (see capture-daemon --help)"
                )));
            }
            return Ok(None);
        };
        let insecure = f.collector_insecure.unwrap_or(false);
        let uri: Uri = url
            .parse()
            .map_err(|e| invalid("--collector", &url, format!("not a URL: {e}")))?;
        if uri.host().is_none_or(str::is_empty) {
            return Err(invalid("--collector", &url, "has no host"));
        }
        if uri.path_and_query().is_some_and(|p| p.as_str() != "/") {
            return Err(invalid(
                "--collector",
                &url,
                "must be https://HOST:PORT, without a path",
            ));
        }
        let tls = match uri.scheme_str() {
            Some("https") => {
                if insecure {
                    return Err(invalid(
                        "--collector-insecure",
                        "true",
                        "only applies to an http:// collector; https:// is always verified",
                    ));
                }
                true
            }
            Some("http") => {
                if !insecure {
                    return Err(invalid(
                        "--collector",
                        &url,
                        "plaintext http:// sends captured traffic and the token unencrypted; \
                         use https://, or add --collector-insecure to allow it",
                    ));
                }
                false
            }
            _ => {
                return Err(invalid(
                    "--collector",
                    &url,
                    "must start with https:// (or http:// with --collector-insecure)",
                ));
            }
        };
        let mut endpoint =
            Endpoint::from_shared(url.clone()).map_err(|e| invalid("--collector", &url, e))?;
        if tls {
            endpoint = endpoint
                .tls_config(tls_config(f)?)
                .map_err(|e| invalid("--collector", &url, format!("TLS set-up: {e}")))?;
        } else {
            for (flag, set) in [
                ("--collector-ca", f.collector_ca.is_some()),
                ("--collector-cert", f.collector_cert.is_some()),
                ("--collector-key", f.collector_key.is_some()),
            ] {
                if set {
                    return Err(ConfigError::Usage(format!(
                        "{flag} needs an https:// --collector (see capture-daemon --help)"
                    )));
                }
            }
        }
        if let Some(path) = &f.token_file {
            token::read_token(path).map_err(|e| invalid("--token-file", path.display(), e))?;
        }

        let daemon_id = match f.daemon_id.as_deref().or(node_name) {
            Some(id) => id.to_owned(),
            None => {
                return Err(ConfigError::Usage(
                    "no node name to use as --daemon-id: give --daemon-id or --node-name".into(),
                ));
            }
        };
        if daemon_id.is_empty()
            || daemon_id.len() > 253
            || !daemon_id.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(invalid(
                "--daemon-id",
                &daemon_id,
                "must be 1 to 253 visible ASCII characters",
            ));
        }

        let defaults = BatchLimits::default();
        let max_exchanges = f
            .export_batch_max_exchanges
            .unwrap_or(defaults.max_exchanges);
        if !(1..=100_000).contains(&max_exchanges) {
            return Err(invalid(
                "--export-batch-max-exchanges",
                max_exchanges,
                "must be between 1 and 100000",
            ));
        }
        let max_bytes = f.export_batch_max_bytes.unwrap_or(defaults.max_bytes);
        if !(1024..=MAX_BATCH_BYTES).contains(&max_bytes) {
            return Err(invalid(
                "--export-batch-max-bytes",
                max_bytes,
                format!(
                    "must be between 1024 and {MAX_BATCH_BYTES} (gRPC's usual 4 MiB message limit)"
                ),
            ));
        }
        let max_delay = duration(
            "--export-batch-max-delay",
            f.export_batch_max_delay.as_deref(),
            defaults.max_delay,
        )?;
        let queue_max_bytes = f.export_queue_max_bytes.unwrap_or(DEFAULT_QUEUE_MAX_BYTES);
        if queue_max_bytes < 2 * max_bytes as u64 {
            return Err(invalid(
                "--export-queue-max-bytes",
                queue_max_bytes,
                format!("must be at least twice --export-batch-max-bytes ({max_bytes})"),
            ));
        }
        let spool = match (&f.spool_dir, f.spool_max_bytes) {
            (None, Some(_)) => {
                return Err(ConfigError::Usage(
                    "--spool-max-bytes needs --spool-dir (see capture-daemon --help)".into(),
                ));
            }
            (None, None) => None,
            (Some(dir), max) => {
                let max_bytes_spool = max.unwrap_or(DEFAULT_SPOOL_MAX_BYTES);
                let least = max_bytes as u64 + crate::output::export::spool::HEADER_LEN + 1024;
                if max_bytes_spool < least {
                    return Err(invalid(
                        "--spool-max-bytes",
                        max_bytes_spool,
                        format!("must hold at least one batch ({least} bytes)"),
                    ));
                }
                if dir.as_os_str().is_empty() {
                    return Err(invalid("--spool-dir", "", "must not be empty"));
                }
                Some(SpoolSettings {
                    dir: dir.clone(),
                    max_bytes: max_bytes_spool,
                })
            }
        };
        let compression = match f.export_compression.as_deref().unwrap_or("zstd") {
            "zstd" => Compression::Zstd,
            "gzip" => Compression::Gzip,
            "none" => Compression::None,
            other => {
                return Err(invalid(
                    "--export-compression",
                    other,
                    "expected zstd, gzip or none",
                ));
            }
        };
        let request_timeout = duration(
            "--export-timeout",
            f.export_timeout.as_deref(),
            DEFAULT_TIMEOUT,
        )?;
        let backoff_initial = duration(
            "--export-backoff-initial",
            f.export_backoff_initial.as_deref(),
            DEFAULT_BACKOFF_INITIAL,
        )?;
        let backoff_max = duration(
            "--export-backoff-max",
            f.export_backoff_max.as_deref(),
            DEFAULT_BACKOFF_MAX,
        )?;
        if backoff_max < backoff_initial {
            return Err(invalid(
                "--export-backoff-max",
                humantime::format_duration(backoff_max),
                format!(
                    "must be at least --export-backoff-initial ({})",
                    humantime::format_duration(backoff_initial)
                ),
            ));
        }
        let max_in_flight = f.export_max_in_flight.unwrap_or(DEFAULT_MAX_IN_FLIGHT);
        if !(1..=64).contains(&max_in_flight) {
            return Err(invalid(
                "--export-max-in-flight",
                max_in_flight,
                "must be between 1 and 64",
            ));
        }
        Ok(Some(Self {
            url,
            insecure,
            endpoint,
            token_file: f.token_file.clone(),
            daemon_id,
            batch: BatchLimits {
                max_exchanges,
                max_bytes,
                max_delay,
            },
            queue_max_bytes,
            spool,
            compression,
            request_timeout,
            backoff_initial,
            backoff_max,
            max_in_flight,
        }))
    }
}

/// The client's TLS: `--collector-ca` instead of the system roots, and the client certificate
/// of `--collector-cert`/`--collector-key`. Checked here so a bad file is a start-up error.
fn tls_config(f: &Flags) -> Result<ClientTlsConfig, ConfigError> {
    let mut tls = ClientTlsConfig::new();
    tls = match &f.collector_ca {
        Some(path) => {
            let pem = read_file("--collector-ca", path)?;
            certificates("--collector-ca", path, &pem)?;
            tls.ca_certificate(Certificate::from_pem(pem))
        }
        None => tls.with_native_roots(),
    };
    match (&f.collector_cert, &f.collector_key) {
        (None, None) => {}
        (Some(_), None) => {
            return Err(ConfigError::Usage(
                "--collector-cert needs --collector-key (see capture-daemon --help)".into(),
            ));
        }
        (None, Some(_)) => {
            return Err(ConfigError::Usage(
                "--collector-key needs --collector-cert (see capture-daemon --help)".into(),
            ));
        }
        (Some(cert_path), Some(key_path)) => {
            let cert = read_file("--collector-cert", cert_path)?;
            certificates("--collector-cert", cert_path, &cert)?;
            let key = read_file("--collector-key", key_path)?;
            // The parser's error may quote the file; say only what is wrong.
            PrivateKeyDer::from_pem_slice(&key).map_err(|_| {
                invalid(
                    "--collector-key",
                    key_path.display(),
                    "holds no PEM private key (PKCS#8, PKCS#1 or SEC1)",
                )
            })?;
            tls = tls.identity(Identity::from_pem(cert, key));
        }
    }
    Ok(tls)
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, ConfigError};

    fn parse(args: &[&str]) -> Result<Config, ConfigError> {
        Config::from_args(
            [
                "capture-daemon",
                "--target-pid",
                "1",
                "--node-name",
                "node-a",
            ]
            .iter()
            .chain(args)
            .copied(),
        )
    }

    fn error(args: &[&str]) -> String {
        parse(args).unwrap_err().to_string()
    }

    struct Files {
        dir: tempfile::TempDir,
    }

    impl Files {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            let ca = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
            std::fs::write(dir.path().join("ca.pem"), ca.cert.pem()).unwrap();
            std::fs::write(dir.path().join("key.pem"), ca.signing_key.serialize_pem()).unwrap();
            std::fs::write(dir.path().join("empty.pem"), "").unwrap();
            std::fs::write(dir.path().join("token"), "s3cret-token\n").unwrap();
            std::fs::write(dir.path().join("blank-token"), "\n").unwrap();
            Self { dir }
        }

        fn path(&self, name: &str) -> String {
            self.dir.path().join(name).display().to_string()
        }
    }

    #[test]
    fn defaults_and_no_stdout_with_a_collector() {
        let c = parse(&["--collector", "https://collector.example:4317"]).unwrap();
        let e = c.export.unwrap();
        assert_eq!(e.daemon_id, "node-a");
        assert_eq!(e.batch, super::BatchLimits::default());
        assert_eq!(e.queue_max_bytes, super::DEFAULT_QUEUE_MAX_BYTES);
        assert_eq!(e.compression, super::Compression::Zstd);
        assert!(!e.insecure && e.spool.is_none());
        // Exchanges go to the collector only, unless --output says otherwise.
        assert_eq!(c.output, None);
        let c = parse(&["--collector", "https://c:1", "--output", "-"]).unwrap();
        assert_eq!(c.output.as_deref(), Some("-"));
    }

    #[test]
    fn plaintext_needs_the_explicit_flag() {
        let e = error(&["--collector", "http://collector:4317"]);
        assert!(
            e.contains("--collector") && e.contains("--collector-insecure"),
            "{e}"
        );
        let c = parse(&[
            "--collector",
            "http://collector:4317",
            "--collector-insecure",
        ])
        .unwrap();
        assert!(c.export.unwrap().insecure);
        let e = error(&["--collector", "https://c:1", "--collector-insecure"]);
        assert!(e.starts_with("--collector-insecure"), "{e}");
        let e = error(&["--collector", "ftp://c:1"]);
        assert!(e.starts_with("--collector"), "{e}");
        let e = error(&["--collector", "https://c:1/v1/push"]);
        assert!(e.contains("without a path"), "{e}");
    }

    #[test]
    fn files_are_checked_at_start_up() {
        let f = Files::new();
        let ok = parse(&[
            "--collector",
            "https://localhost:1",
            "--collector-ca",
            &f.path("ca.pem"),
            "--collector-cert",
            &f.path("ca.pem"),
            "--collector-key",
            &f.path("key.pem"),
            "--token-file",
            &f.path("token"),
        ]);
        assert!(ok.is_ok(), "{:?}", ok.err());

        let e = error(&[
            "--collector",
            "https://c:1",
            "--collector-ca",
            &f.path("missing"),
        ]);
        assert!(
            e.starts_with("--collector-ca") && e.contains("cannot read"),
            "{e}"
        );
        let e = error(&[
            "--collector",
            "https://c:1",
            "--collector-ca",
            &f.path("empty.pem"),
        ]);
        assert!(
            e.starts_with("--collector-ca") && e.contains("no PEM"),
            "{e}"
        );
        let e = error(&[
            "--collector",
            "https://c:1",
            "--collector-cert",
            &f.path("ca.pem"),
        ]);
        assert!(e.contains("--collector-cert needs --collector-key"), "{e}");
        let e = error(&[
            "--collector",
            "https://c:1",
            "--collector-key",
            &f.path("key.pem"),
        ]);
        assert!(e.contains("--collector-key needs --collector-cert"), "{e}");
        let e = error(&[
            "--collector",
            "https://c:1",
            "--collector-cert",
            &f.path("ca.pem"),
            "--collector-key",
            &f.path("ca.pem"),
        ]);
        assert!(
            e.starts_with("--collector-key") && e.contains("no PEM private key"),
            "{e}"
        );
        let e = error(&[
            "--collector",
            "https://c:1",
            "--token-file",
            &f.path("nope"),
        ]);
        assert!(
            e.starts_with("--token-file") && e.contains("cannot read"),
            "{e}"
        );
        let e = error(&[
            "--collector",
            "https://c:1",
            "--token-file",
            &f.path("blank-token"),
        ]);
        assert!(e.starts_with("--token-file") && e.contains("empty"), "{e}");
    }

    #[test]
    fn secrets_never_show_in_debug_or_errors() {
        let f = Files::new();
        let c = parse(&[
            "--collector",
            "https://localhost:1",
            "--collector-cert",
            &f.path("ca.pem"),
            "--collector-key",
            &f.path("key.pem"),
            "--token-file",
            &f.path("token"),
        ])
        .unwrap();
        let debug = format!("{c:?}");
        assert!(!debug.contains("s3cret"), "{debug}");
        assert!(!debug.contains("PRIVATE KEY"), "{debug}");
        let key = std::fs::read_to_string(f.path("key.pem")).unwrap();
        let body = key.lines().nth(1).unwrap();
        assert!(!debug.contains(body));
    }

    #[test]
    fn limits_are_checked_and_name_their_flag() {
        for (args, flag) in [
            (
                &["--export-batch-max-exchanges", "0"][..],
                "--export-batch-max-exchanges",
            ),
            (
                &["--export-batch-max-bytes", "100"],
                "--export-batch-max-bytes",
            ),
            (
                &["--export-batch-max-bytes", "8000000"],
                "--export-batch-max-bytes",
            ),
            (
                &["--export-batch-max-delay", "0s"],
                "--export-batch-max-delay",
            ),
            (
                &["--export-queue-max-bytes", "1000"],
                "--export-queue-max-bytes",
            ),
            (&["--export-compression", "br"], "--export-compression"),
            (&["--export-timeout", "soon"], "--export-timeout"),
            (
                &[
                    "--export-backoff-initial",
                    "10s",
                    "--export-backoff-max",
                    "1s",
                ],
                "--export-backoff-max",
            ),
            (
                &["--spool-dir", "/tmp/s", "--spool-max-bytes", "10"],
                "--spool-max-bytes",
            ),
            (&["--daemon-id", "has space"], "--daemon-id"),
            (&["--export-max-in-flight", "0"], "--export-max-in-flight"),
        ] {
            let mut all = vec!["--collector", "https://c:1"];
            all.extend_from_slice(args);
            let e = error(&all);
            assert!(e.starts_with(flag), "{args:?}: {e}");
        }
        let e = error(&["--collector", "https://c:1", "--spool-max-bytes", "100000"]);
        assert!(e.contains("--spool-max-bytes needs --spool-dir"), "{e}");
        // Exporter flags without a collector.
        let e = error(&["--token-file", "/x"]);
        assert!(e.contains("--token-file needs --collector"), "{e}");
        let c = parse(&[
            "--collector",
            "https://c:1",
            "--spool-dir",
            "/tmp/spool",
            "--daemon-id",
            "edge-7",
            "--export-batch-max-delay",
            "250ms",
        ])
        .unwrap();
        let e = c.export.unwrap();
        assert_eq!(e.daemon_id, "edge-7");
        assert_eq!(e.batch.max_delay, std::time::Duration::from_millis(250));
        assert_eq!(e.spool.unwrap().max_bytes, super::DEFAULT_SPOOL_MAX_BYTES);
    }

    #[test]
    fn yaml_keys_match_the_flags() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.yaml");
        std::fs::write(
            &path,
            "target-pid: [7]\ncollector: http://c:1\ncollector-insecure: true\n\
             spool-dir: /tmp/spool\nspool-max-bytes: 100000000\ndaemon-id: from-file\n\
             export-batch-max-exchanges: 64\nexport-compression: none\n",
        )
        .unwrap();
        let c = Config::from_args([
            "capture-daemon",
            "--config",
            path.to_str().unwrap(),
            "--daemon-id",
            "from-flag",
        ])
        .unwrap();
        let e = c.export.unwrap();
        assert_eq!(e.daemon_id, "from-flag");
        assert!(e.insecure);
        assert_eq!(e.compression, super::Compression::None);
        assert_eq!(e.batch.max_exchanges, 64);
        assert_eq!(e.spool.unwrap().max_bytes, 100_000_000);
    }
}
