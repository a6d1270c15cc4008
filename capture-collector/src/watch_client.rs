//! `watch`: follows an organisation's live exchanges on a terminal.
//!
//! One line per exchange: time (UTC), workload, method, URL, status, duration, and why it is
//! incomplete when it is. With `--json`, the HAR entry of each exchange instead, one per line,
//! the same bytes as the daemon's JSONL output. Captured text is printed with control
//! characters escaped: a header cannot drive the terminal.

use std::{
    fmt::Write as _,
    io::{self, Write as _},
    path::PathBuf,
    time::Duration,
};

use capture_model::{clock::WallClock, exchange::Exchange, har, wire};
use capture_proto::v1::{WatchRequest, watch_client::WatchClient};
use tonic::{
    Code, Request,
    metadata::{Ascii, MetadataValue},
    transport::{Certificate, Channel, ClientTlsConfig, Endpoint},
};

/// What to follow and how to print it.
#[derive(Debug)]
pub struct WatchArgs {
    pub collector: String,
    pub token_file: PathBuf,
    pub ca: Option<PathBuf>,
    pub filter: WatchRequest,
    pub json: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// Bad flags or files: exit 2.
    #[error("{0}")]
    Usage(String),
    /// The collector could not be reached or ended the stream with an error: exit 1.
    #[error("{0}")]
    Runtime(String),
}

/// A TLS channel to `collector` and the `authorization` value of the token in `token_file`:
/// what `watch` and `diff --collector` both start with.
pub async fn connect(
    collector: &str,
    token_file: &std::path::Path,
    ca: Option<&std::path::Path>,
) -> Result<(Channel, MetadataValue<Ascii>), WatchError> {
    if !collector.starts_with("https://") {
        return Err(WatchError::Usage(format!(
            "--collector {collector}: must be https://HOST:PORT (the collector only speaks TLS)"
        )));
    }
    let token = std::fs::read_to_string(token_file)
        .map_err(|e| WatchError::Usage(format!("--token-file {}: {e}", token_file.display())))?;
    let token = token.trim();
    if token.is_empty() {
        return Err(WatchError::Usage(format!(
            "--token-file {}: the file is empty",
            token_file.display()
        )));
    }
    let header: MetadataValue<Ascii> = format!("Bearer {token}").parse().map_err(|_| {
        WatchError::Usage(format!(
            "--token-file {}: not a token (unprintable characters)",
            token_file.display()
        ))
    })?;
    let mut tls = ClientTlsConfig::new();
    tls = match ca {
        Some(ca) => {
            let pem = std::fs::read(ca)
                .map_err(|e| WatchError::Usage(format!("--ca {}: {e}", ca.display())))?;
            tls.ca_certificate(Certificate::from_pem(pem))
        }
        None => tls.with_native_roots(),
    };
    let endpoint = Endpoint::from_shared(collector.to_owned())
        .map_err(|e| WatchError::Usage(format!("--collector {collector}: {e}")))?
        .connect_timeout(Duration::from_secs(10))
        .tls_config(tls)
        .map_err(|e| WatchError::Usage(format!("--ca: {e}")))?;
    let channel = endpoint.connect().await.map_err(|e| {
        WatchError::Runtime(format!("connecting to {collector}: {}", error_chain(&e)))
    })?;
    Ok((channel, header))
}

/// Connects, streams, and prints until the collector ends the stream (or stdout closes).
pub async fn run(args: WatchArgs) -> Result<(), WatchError> {
    let (channel, header) = connect(&args.collector, &args.token_file, args.ca.as_deref()).await?;
    let mut client = WatchClient::with_interceptor(channel, move |mut request: Request<()>| {
        request
            .metadata_mut()
            .insert("authorization", header.clone());
        Ok(request)
    });
    let mut stream = client
        .watch(args.filter)
        .await
        .map_err(|status| WatchError::Runtime(describe(&status)))?
        .into_inner();
    let stdout = io::stdout();
    let mut out = io::LineWriter::new(stdout.lock());
    let clock = WallClock::with_offset_ns(0);
    loop {
        let response = match stream.message().await {
            Ok(Some(response)) => response,
            Ok(None) => return Ok(()),
            Err(status) => return Err(WatchError::Runtime(describe(&status))),
        };
        if response.skipped > 0 {
            eprintln!(
                "capture-collector watch: {} exchanges skipped: this terminal read too slowly",
                response.skipped
            );
        }
        let Some(exchange) = response.exchange else {
            continue;
        };
        let line = match wire::from_proto(exchange) {
            Ok(exchange) if args.json => har::entry_json_line(&exchange, &clock),
            Ok(exchange) => summary_line(&exchange),
            Err(e) => {
                eprintln!("capture-collector watch: an exchange could not be read: {e}");
                continue;
            }
        };
        if let Err(e) = writeln!(out, "{line}") {
            // A closed pipe (`| head`) ends the watch quietly.
            if e.kind() == io::ErrorKind::BrokenPipe {
                return Ok(());
            }
            return Err(WatchError::Runtime(format!(
                "writing to standard output: {e}"
            )));
        }
    }
}

pub fn describe(status: &tonic::Status) -> String {
    match status.code() {
        Code::Unauthenticated => format!(
            "the collector refused the token: {} (is it revoked, or for another collector?)",
            status.message()
        ),
        Code::Unavailable => format!("the collector is unavailable: {}", status.message()),
        code => format!(
            "the collector ended the stream: {code:?}: {}",
            status.message()
        ),
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let _ = write!(text, ": {cause}");
        source = cause.source();
    }
    text
}

/// Escapes control characters so captured text cannot move the cursor or recolour the
/// terminal.
fn printable(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            if c.is_control() {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect()
}

/// `12:00:00.123  shop/checkout  POST http://orders/api  201  12.9 ms`
pub fn summary_line(ex: &Exchange) -> String {
    let clock = WallClock::with_offset_ns(0);
    let started =
        humantime::format_rfc3339_millis(clock.to_system_time(ex.timing.request_start_ns))
            .to_string();
    let time = started.get(11..23).unwrap_or(&started);
    let w = &ex.workload;
    let workload = match (
        w.namespace.as_deref(),
        w.owner_name.as_deref().or(w.pod.as_deref()),
    ) {
        (Some(ns), Some(name)) => format!("{ns}/{name}"),
        (None, Some(name)) => name.to_owned(),
        (Some(ns), None) => format!("{ns}/-"),
        (None, None) => "-".to_owned(),
    };
    let url = har::request_url(&ex.request, &ex.conn);
    let status = ex
        .response
        .as_ref()
        .map_or_else(|| "---".to_owned(), |r| r.status.to_string());
    let end = ex
        .timing
        .response_end_ns
        .or(ex.timing.response_start_ns)
        .unwrap_or(ex.timing.request_end_ns);
    let ms = end.saturating_sub(ex.timing.request_start_ns) as f64 / 1e6;
    let mut line = format!(
        "{time}  {}  {} {}  {status}  {ms:.1} ms",
        printable(&workload),
        printable(&ex.request.method),
        printable(&url),
    );
    if let Some(grpc) = &ex.grpc
        && let Some(code) = grpc.status
    {
        let _ = write!(line, "  grpc-status {code}");
    }
    if let Some(reason) = ex.incomplete {
        let _ = write!(line, "  [{}]", reason.as_str());
    }
    line
}
