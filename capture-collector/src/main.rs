//! `capture-collector`: serve the ingest endpoint, manage tokens, export and watch.
//!
//! ```text
//! capture-collector serve  --listen ADDR (--data DIR | --store file:DIR | --store postgres://…)
//!                          (--tls-cert FILE --tls-key FILE | --dev-tls DIR) [--encryption-key FILE]
//!                          [--retention DUR] [--org-retention ORG=DUR]...
//! capture-collector token  create|list|revoke (--data DIR | --store URL) --org NAME [TOKEN-PREFIX]
//! capture-collector export (--data DIR | --store URL) --org NAME --har FILE [--encryption-key FILE]
//! capture-collector watch  --collector https://HOST:PORT --token-file FILE [--ca FILE]
//!                          [--namespace NS] [--workload NAME] [--routing-key KEY] [--headers-only]
//! capture-collector diff   ((--data DIR | --store URL) --org NAME | --collector URL --token-file FILE)
//!                          --baseline SELECTOR --candidate SELECTOR [--noise SELECTOR]...
//!                          [--model NAME] [--json FILE] [--fail-on red|yellow]
//! ```
//!
//! Exit codes: 0 success, 2 usage or configuration error (the message names the flag and the
//! value), 1 runtime failure; `diff` also exits 1 when something is red.
#![forbid(unsafe_code)]

use std::{
    collections::HashMap,
    io::Write as _,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::ExitCode,
    sync::Arc,
    time::Duration,
};

use capture_collector::{
    export,
    guard::AuthLimits,
    metrics::Metrics,
    org::OrgName,
    seal::SealKey,
    server::{self, Limits, ServerConfig},
    storage::{Access, DbOptions, Location, Retention, Storage, StorageConfig, StorageError},
    tls,
    tokens::{self, Revoked, Scope},
    watch_client::{self, WatchArgs, WatchError},
};
use capture_proto::v1::WatchRequest;
use clap::{Args, Parser, Subcommand, ValueEnum};
use tracing::{error, info};

#[derive(Parser)]
#[command(
    name = "capture-collector",
    version,
    about = "Reference control-plane ingest for capture daemons: gRPC over TLS, tokens per \
             organisation, durable storage, live watch, HAR export."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve Ingest and Watch over TLS.
    Serve(Box<ServeArgs>),
    /// Issue, list and revoke tokens (local administration of the data directory).
    #[command(subcommand)]
    Token(TokenCommand),
    /// Write an organisation's stored exchanges as a HAR 1.2 file.
    Export(ExportArgs),
    /// Follow an organisation's exchanges live, one line each.
    Watch(WatchCliArgs),
    /// Smart Diff of stored traffic: a baseline selection against a candidate selection, with
    /// the organisation's noise model. Exit 0: nothing red; 1: red (or yellow with
    /// --fail-on yellow) or a runtime failure; 2: bad input.
    Diff(Box<DiffArgs>),
}

#[derive(Args)]
struct DiffArgs {
    /// Where the traffic is, when run next to the store (or give --collector).
    #[command(flatten)]
    store: StoreArgs,
    /// The organisation (local runs; remotely the token names it).
    #[arg(long, value_name = "NAME")]
    org: Option<OrgName>,
    /// Run the diff on this collector (`https://HOST:PORT`) over its authenticated API.
    #[arg(long, value_name = "URL", conflicts_with_all = ["data", "store"], requires = "token_file")]
    collector: Option<String>,
    /// File holding the token (with --collector).
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// CA certificate to trust (PEM, with --collector); the system roots otherwise.
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// The baseline traffic: `routing-key=K,workload=W,namespace=NS,since=T,until=T` (RFC 3339
    /// times; every key given must match).
    #[arg(long, value_name = "SELECTOR")]
    baseline: capture_collector::diff::Selector,
    /// The candidate traffic, as --baseline.
    #[arg(long, value_name = "SELECTOR")]
    candidate: capture_collector::diff::Selector,
    /// The baseline's traffic seen again (A/A): learned as noise and merged into the stored
    /// model before the diff. Repeatable.
    #[arg(long, value_name = "SELECTOR")]
    noise: Vec<capture_collector::diff::Selector>,
    /// Name of the organisation's noise model to use and update.
    #[arg(long, value_name = "NAME", default_value = "default")]
    model: String,
    /// Also write the JSON report here.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// What makes the exit code 1: a red finding, or also yellow ones.
    #[arg(long, value_name = "red|yellow", default_value = "red")]
    fail_on: capture_diff::FailOn,
    /// Exchanges one selection may hold (local runs; a collector has its own limit).
    #[arg(long, value_name = "N", default_value_t = 100_000,
          value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    max_diff_exchanges: u64,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Args)]
#[command(group = clap::ArgGroup::new("tls").required(true).args(["tls_cert", "dev_tls"]))]
struct ServeArgs {
    /// Address to listen on (`0.0.0.0:4317`, `[::]:4317`; port 0 picks one and prints it).
    #[arg(long, value_name = "ADDR")]
    listen: SocketAddr,
    #[command(flatten)]
    store: StoreArgs,
    /// Server certificate chain (PEM).
    #[arg(
        long,
        value_name = "FILE",
        requires = "tls_key",
        conflicts_with = "dev_tls"
    )]
    tls_cert: Option<PathBuf>,
    /// Server private key (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Generate (once) a development CA and a certificate for localhost, 127.0.0.1 and ::1
    /// in DIR, and print the CA's path.
    #[arg(long, value_name = "DIR")]
    dev_tls: Option<PathBuf>,
    /// Keep exchanges this long (`30d`, `12h`), for organisations without their own period;
    /// everything is kept when not given.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    retention: Option<Duration>,
    /// An organisation's own retention period (`acme=7d`); repeatable.
    #[arg(long, value_name = "ORG=DURATION", value_parser = parse_org_retention)]
    org_retention: Vec<(OrgName, Duration)>,
    /// How often retention is enforced.
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = humantime::parse_duration)]
    retention_interval: Duration,
    /// Rows one PostgreSQL retention delete removes at most.
    #[arg(long, value_name = "N", default_value_t = 10_000,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    retention_batch: u32,
    /// PostgreSQL: how often a watched organisation's shared log is read when no notification
    /// came (notifications wake watchers at once; this covers a listener reconnecting).
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = humantime::parse_duration)]
    watch_poll: Duration,
    /// Serve Prometheus metrics on /metrics at this address.
    #[arg(long, value_name = "ADDR")]
    metrics_addr: Option<SocketAddr>,
    /// Largest encoded batch accepted, bytes.
    #[arg(long, value_name = "BYTES", default_value_t = 16 << 20,
          value_parser = clap::value_parser!(u64).range(1024..=(1 << 30)))]
    max_batch_bytes: u64,
    /// Most exchanges in one batch.
    #[arg(long, value_name = "N", default_value_t = 4096,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    max_batch_exchanges: u64,
    /// A storage segment is closed once the next record would take it past this size, bytes.
    #[arg(long, value_name = "BYTES", default_value_t = 64 << 20,
          value_parser = clap::value_parser!(u64).range(4096..=(1 << 40)))]
    segment_bytes: u64,
    /// Exchanges each organisation's live stream keeps for slow watchers; a watcher further
    /// behind skips exchanges and is told how many.
    #[arg(long, value_name = "N", default_value_t = 1024,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    watch_buffer: u64,
    /// Watch streams open at once, over all organisations.
    #[arg(long, value_name = "N", default_value_t = 256,
          value_parser = clap::value_parser!(u64).range(1..=100_000))]
    max_watchers: u64,
    /// Exchanges one Smart Diff selection may hold; a bigger one is refused.
    #[arg(long, value_name = "N", default_value_t = 100_000,
          value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    max_diff_exchanges: u64,
    /// Failed authentications a peer address may make in a row before its calls are refused
    /// unread (RESOURCE_EXHAUSTED) until it regains tries.
    #[arg(long, value_name = "N", default_value_t = 20,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    auth_failure_burst: u32,
    /// Failed authentications a peer address regains per minute.
    #[arg(long, value_name = "N", default_value_t = 60,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    auth_failures_per_minute: u32,
    /// Peer addresses the failed-authentication limit tracks at most.
    #[arg(long, value_name = "N", default_value_t = 65_536,
          value_parser = clap::value_parser!(u64).range(16..=10_000_000))]
    auth_max_peers: u64,
    /// Refusal audit lines (unauthenticated, out of scope, rate-limited) written per second at
    /// most; the rest are counted and the next line says how many were left out.
    #[arg(long, value_name = "N", default_value_t = 50,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    audit_refusals_per_second: u32,
    /// Pushes read, decoded and stored at once; more wait their turn (their bodies unread).
    /// With --max-batch-bytes this bounds the memory batches take.
    #[arg(long, value_name = "N", default_value_t = 16,
          value_parser = clap::value_parser!(u64).range(1..=100_000))]
    max_concurrent_pushes: u64,
    /// Longest a client may take to finish its TLS handshake.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = humantime::parse_duration)]
    tls_handshake_timeout: Duration,
    /// TLS handshakes under way at once; a connection past it is closed unanswered.
    #[arg(long, value_name = "N", default_value_t = 1024,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    max_pending_handshakes: u64,
    /// Log format on standard error (audit lines are always JSON).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Issue a token for an organisation; it is printed once, on standard output.
    Create {
        #[command(flatten)]
        args: TokenArgs,
        /// What the token may do: `ingest` (push batches: what a node's daemon needs),
        /// `read` (watch, diff), `admin` (token management; no RPC takes it today).
        /// Repeatable or comma-separated. Default: `ingest` only.
        #[arg(long, value_name = "SCOPE", value_delimiter = ',')]
        scope: Vec<Scope>,
    },
    /// List an organisation's tokens, masked.
    List(TokenArgs),
    /// Revoke the token given whole, masked, or by a prefix of its masked form.
    Revoke {
        #[command(flatten)]
        args: TokenArgs,
        #[arg(value_name = "TOKEN-PREFIX")]
        prefix: String,
    },
}

/// Where the data is: every subcommand that stores or reads takes these.
#[derive(Args)]
struct StoreArgs {
    /// Data directory of the embedded store (the same as `--store file:DIR`).
    #[arg(long, value_name = "DIR", conflicts_with = "store")]
    data: Option<PathBuf>,
    /// `file:DIR` (the embedded store) or `postgres://USER@HOST:PORT/DB?sslmode=…` (`postgres://`
    /// alone: everything from the PG* environment). A password is better given with
    /// --db-password-file or PGPASSWORD than in the URL.
    #[arg(long, value_name = "URL", env = "CAPTURE_COLLECTOR_STORE")]
    store: Option<Location>,
    /// Seal every stored record with this 32-byte key (raw or hex; the file must be 0600).
    /// Required with PostgreSQL, except for `token`.
    #[arg(long, value_name = "FILE")]
    encryption_key: Option<PathBuf>,
    /// PostgreSQL: a file whose first line is the password.
    #[arg(long, value_name = "FILE", env = "CAPTURE_COLLECTOR_DB_PASSWORD_FILE")]
    db_password_file: Option<PathBuf>,
    /// PostgreSQL: connections in this collector's pool.
    #[arg(long, value_name = "N", default_value_t = 16,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    db_max_connections: u32,
}

impl StoreArgs {
    fn config(&self, segment_bytes: u64, watch_poll: Duration) -> Result<StorageConfig, Failure> {
        let (location, flag) = match (&self.data, &self.store) {
            (Some(dir), None) => (
                Location::File(dir.clone()),
                format!("--data {}", dir.display()),
            ),
            (None, Some(location)) => (location.clone(), format!("--store {location}")),
            _ => return Err(Failure::Usage("give --data DIR or --store URL".into())),
        };
        Ok(StorageConfig {
            location,
            flag,
            key: load_key(self.encryption_key.as_deref())?,
            key_flag: self.encryption_key.clone(),
            segment_bytes,
            db: DbOptions {
                password_file: self.db_password_file.clone(),
                max_connections: self.db_max_connections,
                watch_poll,
            },
        })
    }
}

fn parse_org_retention(s: &str) -> Result<(OrgName, Duration), String> {
    let (org, period) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: give ORG=DURATION"))?;
    let org = OrgName::parse(org).map_err(|e| e.to_string())?;
    let period = humantime::parse_duration(period).map_err(|e| format!("{period:?}: {e}"))?;
    Ok((org, period))
}

#[derive(Args)]
struct TokenArgs {
    #[command(flatten)]
    store: StoreArgs,
    #[arg(long, value_name = "NAME")]
    org: OrgName,
}

#[derive(Args)]
struct ExportArgs {
    #[command(flatten)]
    store: StoreArgs,
    #[arg(long, value_name = "NAME")]
    org: OrgName,
    /// Output file (`-` for standard output); written whole or not at all.
    #[arg(long, value_name = "FILE")]
    har: PathBuf,
}

#[derive(Args)]
struct WatchCliArgs {
    /// The collector, `https://HOST:PORT`.
    #[arg(long, value_name = "URL")]
    collector: String,
    /// File holding the token.
    #[arg(long, value_name = "FILE")]
    token_file: PathBuf,
    /// CA certificate to trust (PEM); the system roots otherwise.
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
    #[arg(long, value_name = "NS")]
    namespace: Option<String>,
    /// Owner (Deployment, ...) or pod name.
    #[arg(long, value_name = "NAME")]
    workload: Option<String>,
    #[arg(long, value_name = "KEY")]
    routing_key: Option<String>,
    /// Leave bodies out (their sizes stay).
    #[arg(long)]
    headers_only: bool,
    /// Print each exchange's HAR entry (one JSON object a line) instead of a summary line.
    #[arg(long)]
    json: bool,
}

/// How a command failed: the exit code follows.
enum Failure {
    Usage(String),
    Runtime(String),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // Help and version go to stdout with 0, errors to stderr with 2.
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    let result = match cli.command {
        Command::Serve(args) => serve(*args),
        Command::Token(command) => {
            init_logging(LogFormat::Text, "info");
            token(command)
        }
        Command::Export(args) => {
            init_logging(LogFormat::Text, "info");
            export(&args)
        }
        Command::Watch(args) => {
            init_logging(LogFormat::Text, "warn");
            watch(args)
        }
        Command::Diff(args) => {
            init_logging(LogFormat::Text, "warn");
            return diff(&args);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(message)) => {
            eprintln!("capture-collector: {message}");
            ExitCode::from(2)
        }
        Err(Failure::Runtime(message)) => {
            eprintln!("capture-collector: {message}");
            ExitCode::from(1)
        }
    }
}

fn load_key(path: Option<&Path>) -> Result<Option<Arc<SealKey>>, Failure> {
    path.map(|path| {
        SealKey::load(path)
            .map(Arc::new)
            .map_err(|e| Failure::Usage(format!("--encryption-key {}: {e}", path.display())))
    })
    .transpose()
}

fn storage_failure(e: StorageError) -> Failure {
    if e.is_config() {
        Failure::Usage(e.to_string())
    } else {
        Failure::Runtime(e.to_string())
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Failure::Runtime(format!("starting the runtime: {e}")))
}

fn serve(args: ServeArgs) -> Result<(), Failure> {
    let store = args.store.config(args.segment_bytes, args.watch_poll)?;
    let (identity, dev_ca) = match (&args.tls_cert, &args.tls_key, &args.dev_tls) {
        (Some(cert), Some(key), _) => (
            tls::load(cert, key)
                .map_err(|e| Failure::Usage(format!("--tls-cert/--tls-key: {e}")))?,
            None,
        ),
        (_, _, Some(dir)) => {
            let (identity, ca) = tls::dev_identity(dir)
                .map_err(|e| Failure::Usage(format!("--dev-tls {}: {e}", dir.display())))?;
            (identity, Some(ca))
        }
        _ => {
            return Err(Failure::Usage(
                "give --tls-cert and --tls-key, or --dev-tls".into(),
            ));
        }
    };
    init_logging(args.log_format, "info");
    let usize_of = |v: u64| usize::try_from(v).unwrap_or(usize::MAX);
    let config = ServerConfig {
        listen: args.listen,
        identity,
        store,
        retention: Retention {
            default: args.retention,
            per_org: args.org_retention.into_iter().collect::<HashMap<_, _>>(),
            interval: args.retention_interval,
            batch_rows: args.retention_batch,
        },
        limits: Limits {
            max_batch_bytes: usize_of(args.max_batch_bytes),
            max_batch_exchanges: usize_of(args.max_batch_exchanges),
            watch_buffer: usize_of(args.watch_buffer),
            max_watchers: usize_of(args.max_watchers),
            max_diff_exchanges: usize_of(args.max_diff_exchanges),
            auth: AuthLimits {
                burst: args.auth_failure_burst,
                per_minute: args.auth_failures_per_minute,
                max_peers: usize_of(args.auth_max_peers),
                audit_per_second: args.audit_refusals_per_second,
            },
            max_concurrent_pushes: usize_of(args.max_concurrent_pushes),
            tls_handshake_timeout: args.tls_handshake_timeout,
            max_pending_handshakes: usize_of(args.max_pending_handshakes),
        },
        metrics_addr: args.metrics_addr,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Runtime(format!("starting the runtime: {e}")))?;
    runtime.block_on(async move {
        let running = server::start(config).await.map_err(|e| match e {
            server::ServeError::Listen(..) | server::ServeError::Metrics(..) => {
                Failure::Usage(e.to_string())
            }
            server::ServeError::Store(e) => storage_failure(e),
            e => Failure::Runtime(e.to_string()),
        })?;
        // Plain lines on stdout for scripts (and tests) to read.
        let mut stdout = std::io::stdout().lock();
        if let Some(ca) = &dev_ca {
            let _ = writeln!(stdout, "dev TLS CA certificate: {}", ca.display());
        }
        if let Some(addr) = running.metrics_addr {
            let _ = writeln!(stdout, "metrics on http://{addr}/metrics");
        }
        let _ = writeln!(stdout, "listening on {}", running.addr);
        let _ = stdout.flush();
        drop(stdout);
        shutdown_signal().await;
        info!("shutting down: finishing pushes in flight");
        running.stop().await.map_err(|e| {
            error!(error = %e, "shutdown");
            Failure::Runtime(e.to_string())
        })
    })
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        error!("cannot install signal handlers; stop the collector with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => info!("SIGTERM received"),
        _ = int.recv() => info!("SIGINT received"),
    }
}

fn token(command: TokenCommand) -> Result<(), Failure> {
    let args = match &command {
        TokenCommand::List(args) => args,
        TokenCommand::Create { args, .. } | TokenCommand::Revoke { args, .. } => args,
    };
    let config = args.store.config(64 << 20, Duration::from_secs(1))?;
    let org = args.org.clone();
    runtime()?.block_on(async move {
        let storage = Storage::open(config, Metrics::new(), Access::Admin)
            .await
            .map_err(storage_failure)?;
        let result = match command {
            TokenCommand::Create { scope, .. } => {
                // Least privilege by default: a token given to a node pushes and reads nothing.
                let scopes = if scope.is_empty() {
                    vec![Scope::Ingest]
                } else {
                    scope
                };
                let (token, record) = storage
                    .create_token(&org, &scopes)
                    .await
                    .map_err(storage_failure)?;
                let scopes = tokens::scopes_to_string(&record.effective_scopes());
                info!(target: "audit", event = "token_create", org = %org, token = %record.masked, scopes = %scopes, "token issued");
                println!("{token}");
                eprintln!(
                    "token {} issued for organisation {org} with scopes {scopes}; it is shown only this once",
                    record.masked
                );
                Ok(())
            }
            TokenCommand::List(_) => {
                let listed = storage.list_tokens(&org).await.map_err(storage_failure)?;
                println!(
                    "{:<16}  {:<20}  {:<28}  STATUS",
                    "TOKEN", "CREATED", "SCOPES"
                );
                for t in listed {
                    let status = t
                        .revoked
                        .as_ref()
                        .map_or_else(|| "active".to_owned(), |at| format!("revoked {at}"));
                    let mut scopes = tokens::scopes_to_string(&t.effective_scopes());
                    if t.is_legacy() {
                        // Issued before scopes: replace it (docs/collector.md, "Token scopes").
                        scopes.push_str(" (legacy)");
                    }
                    println!(
                        "{:<16}  {:<20}  {:<28}  {status}",
                        t.masked, t.created, scopes
                    );
                }
                Ok(())
            }
            TokenCommand::Revoke { prefix, .. } => {
                match storage.revoke_token(&org, &prefix).await.map_err(|e| {
                    if e.is_config() {
                        Failure::Usage(format!("TOKEN-PREFIX: {e}"))
                    } else {
                        Failure::Runtime(e.to_string())
                    }
                })? {
                    Revoked::Now(t) => {
                        info!(target: "audit", event = "token_revoke", org = %org, token = %t.masked, "token revoked");
                        println!("revoked {}", t.masked);
                    }
                    Revoked::Already(t) => println!("{} was already revoked", t.masked),
                }
                Ok(())
            }
        };
        storage.close().await;
        result
    })
}

fn export(args: &ExportArgs) -> Result<(), Failure> {
    let config = args.store.config(64 << 20, Duration::from_secs(1))?;
    let flag = config.flag.clone();
    runtime()?.block_on(async move {
        let storage = Storage::open(config, Metrics::new(), Access::Read)
            .await
            .map_err(storage_failure)?;
        if !storage.has_org(&args.org).await.map_err(storage_failure)? {
            storage.close().await;
            return Err(Failure::Usage(format!(
                "--org {}: no such organisation in {}",
                args.org,
                flag.split_once(' ').map_or(flag.as_str(), |(_, v)| v)
            )));
        }
        // A read of the whole organisation: audited like watch and diff. It needs the store
        // itself (no token: the RPCs do not export), so the line names the local access.
        info!(target: "audit", event = "export", org = %args.org, token = "(none: local store access)", out = %args.har.display(), "export started");
        let summary = export::export_to(&storage, &args.org, &args.har).await;
        storage.close().await;
        let summary = summary.map_err(|e| Failure::Runtime(e.to_string()))?;
        eprintln!(
            "exported {} exchanges ({} batches) of organisation {} to {}",
            summary.exchanges,
            summary.batches,
            args.org,
            args.har.display()
        );
        if summary.unreadable > 0 {
            eprintln!(
                "{} stored exchanges could not be read and were left out",
                summary.unreadable
            );
        }
        Ok(())
    })
}

/// Runs the diff locally or on a collector, prints the summary, writes the JSON, and exits
/// 0 / 1 / 2 as `capture diff` does.
fn diff(args: &DiffArgs) -> ExitCode {
    let result = runtime().and_then(|rt| rt.block_on(diff_report(args)));
    let report = match result {
        Ok(report) => report,
        Err(Failure::Usage(m)) => {
            eprintln!("capture-collector: {m}");
            return ExitCode::from(2);
        }
        Err(Failure::Runtime(m)) => {
            eprintln!("capture-collector: {m}");
            return ExitCode::from(1);
        }
    };
    use std::io::IsTerminal as _;
    print!(
        "{}",
        report.render_terminal(std::io::stdout().is_terminal())
    );
    if let Some(path) = &args.json {
        let written = serde_json::to_vec_pretty(&report)
            .map_err(|e| e.to_string())
            .and_then(|json| {
                capture_collector::seal::write_atomically(path, &json, 0o600)
                    .map_err(|e| e.to_string())
            });
        if let Err(e) = written {
            eprintln!("capture-collector: --json {}: {e}", path.display());
            return ExitCode::from(1);
        }
    }
    ExitCode::from(u8::try_from(report.exit_code(args.fail_on)).unwrap_or(1))
}

async fn diff_report(args: &DiffArgs) -> Result<capture_diff::Report, Failure> {
    use capture_collector::diff::{self, DiffError};
    if let Some(collector) = &args.collector {
        let token_file = args
            .token_file
            .as_deref()
            .ok_or_else(|| Failure::Usage("--collector needs --token-file".into()))?;
        let (channel, header) = watch_client::connect(collector, token_file, args.ca.as_deref())
            .await
            .map_err(|e| match e {
                WatchError::Usage(m) => Failure::Usage(m),
                WatchError::Runtime(m) => Failure::Runtime(m),
            })?;
        let mut client = capture_proto::v1::diff_client::DiffClient::with_interceptor(
            channel,
            move |mut request: tonic::Request<()>| {
                request
                    .metadata_mut()
                    .insert("authorization", header.clone());
                Ok(request)
            },
        )
        .max_decoding_message_size(256 << 20);
        let response = client
            .diff(capture_proto::v1::DiffRequest {
                baseline: Some(args.baseline.to_proto()),
                candidate: Some(args.candidate.to_proto()),
                noise: args.noise.iter().map(diff::Selector::to_proto).collect(),
                model: args.model.clone(),
            })
            .await
            .map_err(|status| {
                let message = format!("{collector}: {}", watch_client::describe(&status));
                match status.code() {
                    tonic::Code::InvalidArgument | tonic::Code::ResourceExhausted => {
                        Failure::Usage(message)
                    }
                    _ => Failure::Runtime(message),
                }
            })?
            .into_inner();
        return serde_json::from_str(&response.report_json)
            .map_err(|e| Failure::Runtime(format!("{collector}: the report does not read: {e}")));
    }
    let org = args
        .org
        .clone()
        .ok_or_else(|| Failure::Usage("--org is required with --data or --store".into()))?;
    let config = args.store.config(64 << 20, Duration::from_secs(1))?;
    let storage = Storage::open(config, Metrics::new(), Access::Read)
        .await
        .map_err(storage_failure)?;
    let request = diff::DiffRequest {
        baseline: args.baseline.clone(),
        candidate: args.candidate.clone(),
        noise: args.noise.clone(),
        model: args.model.clone(),
        max_exchanges: usize::try_from(args.max_diff_exchanges).unwrap_or(usize::MAX),
    };
    let report = diff::run(
        &storage,
        &org,
        &request,
        &capture_diff::DiffOptions::default(),
    )
    .await;
    storage.close().await;
    report.map_err(|e| match e {
        DiffError::BadRequest(_) | DiffError::TooLarge { .. } => Failure::Usage(e.to_string()),
        e => Failure::Runtime(e.to_string()),
    })
}

fn watch(args: WatchCliArgs) -> Result<(), Failure> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Runtime(format!("starting the runtime: {e}")))?;
    let args = WatchArgs {
        collector: args.collector,
        token_file: args.token_file,
        ca: args.ca,
        filter: WatchRequest {
            namespace: args.namespace.unwrap_or_default(),
            workload: args.workload.unwrap_or_default(),
            routing_key: args.routing_key.unwrap_or_default(),
            headers_only: args.headers_only,
        },
        json: args.json,
    };
    runtime
        .block_on(watch_client::run(args))
        .map_err(|e| match e {
            WatchError::Usage(m) => Failure::Usage(m),
            WatchError::Runtime(m) => Failure::Runtime(m),
        })
}

/// Logs on standard error; audit lines (target `audit`) always as JSON objects.
fn init_logging(format: LogFormat, default_level: &str) {
    use tracing_subscriber::{
        Layer as _, filter::filter_fn, layer::SubscriberExt as _, util::SubscriberInitExt as _,
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let plain = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_writer(std::io::stderr)
            .boxed(),
    }
    .with_filter(filter_fn(|meta| meta.target() != "audit"));
    let audit = tracing_subscriber::fmt::layer()
        .json()
        .flatten_event(true)
        .with_writer(std::io::stderr)
        .with_filter(filter_fn(|meta| meta.target() == "audit"));
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(plain)
        .with(audit)
        .try_init();
}
