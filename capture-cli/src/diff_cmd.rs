//! `capture diff`: the capture-diff engine over two files of HAR entries.
//!
//! `--noise FILE` (repeatable) is either a saved noise model (the JSON `--save-noise` writes)
//! or a second run of the baseline (HAR entries), from which the A/A model is learned against
//! `--baseline`. Models from several files are merged.

use std::{io::IsTerminal as _, path::PathBuf};

use anyhow::Context as _;
use capture_diff::{DiffOptions, FailOn, NoiseModel, diff};
use capture_model::har_read::{self, ReadEntry};
use clap::{Args, ValueEnum};

#[derive(Args, Debug)]
pub struct DiffArgs {
    /// The baseline's entries (JSONL or HAR).
    #[arg(long)]
    baseline: PathBuf,
    /// The candidate's entries (JSONL or HAR).
    #[arg(long)]
    candidate: PathBuf,
    /// A/A noise: a second baseline run (JSONL or HAR) or a saved noise model (JSON).
    #[arg(long)]
    noise: Vec<PathBuf>,
    /// Write the full report as JSON.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Write the learned noise model, to pass as --noise next time.
    #[arg(long, value_name = "FILE")]
    save_noise: Option<PathBuf>,
    /// Exit 1 on red findings only (default), or also on yellow, inconclusive and unpaired.
    #[arg(long, value_enum, default_value_t = FailOnArg::Red)]
    fail_on: FailOnArg,
    /// Colour the summary: auto (a terminal, and NO_COLOR unset), always, never.
    #[arg(long, value_enum, default_value_t = Color::Auto)]
    color: Color,
    /// diffy's relative threshold, percent.
    #[arg(long, default_value_t = 20.0)]
    relative_threshold: f64,
    /// diffy's absolute threshold, percent.
    #[arg(long, default_value_t = 0.03)]
    absolute_threshold: f64,
    /// Values longer than this (characters) are cut in the report (counted in
    /// summary.values_truncated).
    #[arg(long, value_name = "N", default_value_t = 256)]
    max_value_chars: usize,
    /// Findings listed per pair (the rest counted in summary.findings_dropped).
    #[arg(long, value_name = "N", default_value_t = 100)]
    max_findings_per_pair: usize,
    /// Header whose value is not compared (only its presence); repeatable.
    #[arg(long, value_name = "NAME")]
    volatile_header: Vec<String>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum FailOnArg {
    Red,
    Yellow,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Color {
    Auto,
    Always,
    Never,
}

fn read(path: &PathBuf) -> anyhow::Result<Vec<ReadEntry>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    har_read::read_entries(&text).with_context(|| format!("{}", path.display()))
}

pub fn run(args: &DiffArgs) -> anyhow::Result<u8> {
    let baseline = read(&args.baseline)?;
    let candidate = read(&args.candidate)?;
    let opts = DiffOptions {
        relative_threshold: args.relative_threshold,
        absolute_threshold: args.absolute_threshold,
        volatile_headers: args
            .volatile_header
            .iter()
            .map(|h| h.to_ascii_lowercase())
            .collect(),
        max_value_chars: args.max_value_chars,
        max_findings_per_pair: args.max_findings_per_pair,
    };
    let mut noise = NoiseModel::new();
    for path in &args.noise {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let model = match serde_json::from_str::<NoiseModel>(&text) {
            Ok(model) => model,
            Err(_) => {
                let again = har_read::read_entries(&text).with_context(|| {
                    format!("{} (neither a noise model nor HAR)", path.display())
                })?;
                NoiseModel::learn_with(&baseline, &again, &opts)
            }
        };
        noise.merge(&model);
    }
    if let Some(path) = &args.save_noise {
        let json = serde_json::to_vec_pretty(&noise).context("noise model")?;
        std::fs::write(path, json).with_context(|| format!("cannot write {}", path.display()))?;
    }
    let report = diff(&baseline, &candidate, &noise, &opts);
    if let Some(path) = &args.json {
        let json = serde_json::to_vec_pretty(&report).context("report")?;
        std::fs::write(path, json).with_context(|| format!("cannot write {}", path.display()))?;
    }
    let color = match args.color {
        Color::Always => true,
        Color::Never => false,
        Color::Auto => std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
    };
    print!("{}", report.render_terminal(color));
    let fail_on = match args.fail_on {
        FailOnArg::Red => FailOn::Red,
        FailOnArg::Yellow => FailOn::Yellow,
    };
    Ok(u8::try_from(report.exit_code(fail_on)).unwrap_or(1))
}
