//! `capture`: replay recorded traffic against a new version, and diff what came back.
//!
//! `capture replay` ([`replay`]) reads the daemon's HAR entries, sends each request to
//! `--target` (paced by [`schedule`], credentials re-injected by [`credentials`]) and writes
//! one HAR entry per request with `_replay`. `capture diff` ([`diff_cmd`]) runs the
//! `capture-diff` engine over two such files. Exit codes: 0 fine, 1 something failed (a red
//! finding, a request that got no response), 2 bad input or usage.
#![forbid(unsafe_code)]

mod credentials;
mod diff_cmd;
mod replay;
mod schedule;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "capture",
    version,
    about = "Replay recorded HTTP traffic and diff the responses"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Send recorded requests to a target and record what comes back.
    Replay(replay::ReplayArgs),
    /// Compare a candidate's responses with a baseline's, noise filtered.
    Diff(diff_cmd::DiffArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Replay(args) => replay::run(&args),
        Command::Diff(args) => diff_cmd::run(&args),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            // Every error here is built from names, paths and fixed words: never a value.
            eprintln!("capture: {e:#}");
            ExitCode::from(2)
        }
    }
}
