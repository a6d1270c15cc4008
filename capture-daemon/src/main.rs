//! `capture-daemon`: parse the configuration, run the daemon (see [`capture_daemon::run`])
//! until SIGINT/SIGTERM, and turn the outcome into the exit code.
//!
//! Exit codes: 0 success, 2 usage or configuration error (before anything is attached),
//! 1 runtime failure.
#![forbid(unsafe_code)]

use std::process::ExitCode;

/// mimalloc instead of glibc malloc: decoding and writing an exchange allocates a few dozen
/// small strings and buffers, and glibc spent about a third of the HTTP/1 decoder's time on
/// them (docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use capture_daemon::{
    Failure,
    config::{Config, ConfigError, LogFormat},
};

fn main() -> ExitCode {
    let outcome = match Config::from_args(std::env::args_os()) {
        Ok(cfg) => {
            let json_logs = cfg.log_format == LogFormat::Json;
            capture_daemon::run(cfg).map_err(|e| (e, json_logs))
        }
        Err(ConfigError::Help(text)) => {
            print!("{text}");
            Ok(())
        }
        Err(e) => Err((Failure::Usage(e.to_string()), false)),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err((failure, json_logs)) => {
            // A runtime failure under JSON logs was logged as one line already.
            if !(json_logs && matches!(failure, Failure::Runtime(_))) {
                eprintln!("capture-daemon: {failure}");
            }
            ExitCode::from(failure.exit_code())
        }
    }
}
