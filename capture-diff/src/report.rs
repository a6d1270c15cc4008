//! The report: JSON for machines ([`Report`] is `Serialize`), a coloured summary for people
//! ([`Report::render_terminal`]) and the exit code ([`Report::exit_code`]).

use std::{fmt::Write as _, str::FromStr};

use anstyle::{AnsiColor, Style};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{endpoint::Endpoint, fields::FindingKind};

/// The colour of a finding, a field, a pair or the whole diff.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Noise: differs as often between two runs of the baseline.
    #[default]
    Green,
    /// A side was truncated or incomplete: nothing can be said (never green).
    Inconclusive,
    /// A real difference that is not one of the red rules.
    Yellow,
    /// A behaviour change: status, type, content type, an always-present field removed, or a
    /// field that never differs in A/A.
    Red,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Green => "green",
            Self::Inconclusive => "inconclusive",
            Self::Yellow => "yellow",
            Self::Red => "red",
        }
    }

    fn style(self) -> Style {
        let color = match self {
            Self::Green => AnsiColor::Green,
            Self::Inconclusive => AnsiColor::Blue,
            Self::Yellow => AnsiColor::Yellow,
            Self::Red => AnsiColor::Red,
        };
        Style::new().fg_color(Some(color.into())).bold()
    }
}

/// What makes `capture diff` exit 1.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailOn {
    /// A red finding.
    #[default]
    Red,
    /// A red or yellow finding, an inconclusive pair or an unpaired exchange.
    Yellow,
}

#[derive(Debug, thiserror::Error)]
#[error("expected `red` or `yellow`")]
pub struct FailOnError;

impl FromStr for FailOn {
    type Err = FailOnError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "red" => Ok(Self::Red),
            "yellow" => Ok(Self::Yellow),
            _ => Err(FailOnError),
        }
    }
}

/// The whole diff.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub summary: Summary,
    /// Endpoints with at least one pair, worst first.
    pub endpoints: Vec<EndpointReport>,
    /// Pairs with a finding or inconclusive, worst first (pairs with no finding are counted in
    /// the summary only).
    pub pairs: Vec<PairReport>,
    pub unpaired: Unpaired,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// The worst pair verdict (green when there is no pair).
    pub verdict: Verdict,
    /// Pairs by verdict.
    pub pairs: Counts,
    /// Findings by verdict.
    pub findings: Counts,
    pub unpaired_baseline: u64,
    pub unpaired_candidate: u64,
    /// Replay entries that were never sent, left out of pairing.
    pub skipped_baseline: u64,
    pub skipped_candidate: u64,
    /// A/A pairs in the noise model.
    pub noise_pairs: u64,
    /// Limits hit: values cut at `max_value_chars`, findings beyond `max_findings_per_pair`.
    pub values_truncated: u64,
    pub findings_dropped: u64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub red: u64,
    pub yellow: u64,
    pub green: u64,
    pub inconclusive: u64,
}

impl Counts {
    pub fn add(&mut self, verdict: Verdict) {
        match verdict {
            Verdict::Red => self.red += 1,
            Verdict::Yellow => self.yellow += 1,
            Verdict::Green => self.green += 1,
            Verdict::Inconclusive => self.inconclusive += 1,
        }
    }

    pub fn total(&self) -> u64 {
        self.red + self.yellow + self.green + self.inconclusive
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EndpointReport {
    pub endpoint: Endpoint,
    pub verdict: Verdict,
    /// Pairs by verdict.
    pub pairs: Counts,
    /// A/A pairs the noise model holds for this endpoint.
    pub noise_pairs: u64,
    /// Fields that differed in at least one pair, worst first.
    pub fields: Vec<FieldReport>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FieldReport {
    /// Index-free path (`body.items[].price`).
    pub path: String,
    pub verdict: Verdict,
    /// Conclusive A/B pairs where the field differs, and that over all conclusive pairs.
    pub raw_differences: u64,
    pub raw_rate: f64,
    /// A/A pairs where it differs, and that over the A/A pairs (`None`: no A/A data).
    pub noise_differences: Option<u64>,
    pub noise_rate: Option<f64>,
    /// Baseline sides (A/B) that have the field, over conclusive pairs.
    pub present_rate: f64,
    /// The kinds of finding seen.
    pub kinds: Vec<FindingKind>,
    /// Why the verdict (the rule that decided it).
    pub reason: String,
    /// One example: the baseline and candidate values of the first finding.
    pub example_old: Option<Value>,
    pub example_new: Option<Value>,
}

/// Where an entry came from, for people to find it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryRef {
    /// Index in its input.
    pub index: usize,
    /// Line of its input.
    pub line: usize,
    pub pair_id: Option<String>,
    pub method: String,
    pub target: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PairReport {
    pub endpoint: String,
    pub verdict: Verdict,
    /// Why inconclusive (`response truncated`, `no response`, an `_capture.incomplete` reason).
    pub reason: Option<String>,
    pub baseline: EntryRef,
    pub candidate: EntryRef,
    pub findings: Vec<Finding>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    /// RFC 6901 pointer into the response document (`/body/items/3/price`).
    pub pointer: String,
    /// Index-free path (`body.items[].price`).
    pub path: String,
    pub kind: FindingKind,
    pub old: Option<Value>,
    pub new: Option<Value>,
    pub verdict: Verdict,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Unpaired {
    pub baseline: Vec<EntryRef>,
    pub candidate: Vec<EntryRef>,
}

/// Lines of each colour the terminal summary shows before "… and N more".
const TERMINAL_LINES: usize = 12;

impl Report {
    /// 0 when nothing fails `fail_on`, 1 when something does. (2, bad input, is the caller's.)
    pub fn exit_code(&self, fail_on: FailOn) -> i32 {
        let s = &self.summary;
        let failed = match fail_on {
            FailOn::Red => s.findings.red > 0 || s.pairs.red > 0,
            FailOn::Yellow => {
                s.findings.red + s.findings.yellow > 0
                    || s.pairs.red + s.pairs.yellow + s.pairs.inconclusive > 0
                    || s.unpaired_baseline + s.unpaired_candidate > 0
            }
        };
        i32::from(failed)
    }

    /// A summary a person reads in ten seconds: the verdict and counts, then the red and
    /// yellow fields per endpoint with their rates and an example, then the noise filtered out.
    /// ANSI colours when `color`.
    pub fn render_terminal(&self, color: bool) -> String {
        let paint = |verdict: Verdict, text: &str| {
            if color {
                let style = verdict.style();
                format!("{style}{text}{style:#}")
            } else {
                text.to_owned()
            }
        };
        let s = &self.summary;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{}  {} pairs: {} red, {} yellow, {} green, {} inconclusive; unpaired {} baseline / {} candidate",
            paint(s.verdict, &s.verdict.as_str().to_uppercase()),
            s.pairs.total(),
            s.pairs.red,
            s.pairs.yellow,
            s.pairs.green,
            s.pairs.inconclusive,
            s.unpaired_baseline,
            s.unpaired_candidate,
        );
        if s.noise_pairs == 0 {
            let _ = writeln!(
                out,
                "  no A/A noise model: pass --noise with a second baseline run to filter noise"
            );
        }
        for verdict in [Verdict::Red, Verdict::Yellow] {
            let rows: Vec<(&EndpointReport, &FieldReport)> = self
                .endpoints
                .iter()
                .flat_map(|e| e.fields.iter().map(move |f| (e, f)))
                .filter(|(_, f)| f.verdict == verdict)
                .collect();
            for (e, f) in rows.iter().take(TERMINAL_LINES) {
                let noise = match (f.noise_differences, f.noise_rate) {
                    (Some(n), Some(rate)) => format!("A/A {n} ({:.0}%)", rate * 100.0),
                    _ => "A/A -".to_owned(),
                };
                let kinds: Vec<&str> = f.kinds.iter().map(|k| k.as_str()).collect();
                let _ = writeln!(
                    out,
                    "  {} {}  {}  {}: {} of {} pairs ({:.0}%), {}; {}{}",
                    paint(verdict, &format!("{:<6}", verdict.as_str().to_uppercase())),
                    e.endpoint,
                    f.path,
                    kinds.join("/"),
                    f.raw_differences,
                    e.pairs.total() - e.pairs.inconclusive,
                    f.raw_rate * 100.0,
                    noise,
                    f.reason,
                    example(f),
                );
            }
            if rows.len() > TERMINAL_LINES {
                let _ = writeln!(
                    out,
                    "  … and {} more {} fields",
                    rows.len() - TERMINAL_LINES,
                    verdict.as_str()
                );
            }
        }
        let green: Vec<String> = self
            .endpoints
            .iter()
            .flat_map(|e| e.fields.iter())
            .filter(|f| f.verdict == Verdict::Green)
            .map(|f| f.path.clone())
            .collect();
        if !green.is_empty() {
            let mut names = green.clone();
            names.dedup();
            let shown: Vec<&str> = names
                .iter()
                .take(TERMINAL_LINES)
                .map(String::as_str)
                .collect();
            let _ = writeln!(
                out,
                "  {} noise filtered (differs as often in A/A): {}{}",
                paint(Verdict::Green, "green "),
                shown.join(", "),
                if names.len() > TERMINAL_LINES {
                    ", …"
                } else {
                    ""
                }
            );
        }
        let inconclusive: Vec<&PairReport> = self
            .pairs
            .iter()
            .filter(|p| p.verdict == Verdict::Inconclusive)
            .collect();
        if let Some(first) = inconclusive.first() {
            let _ = writeln!(
                out,
                "  {} {} pairs not compared (e.g. {} {}: {})",
                paint(Verdict::Inconclusive, "inconclusive"),
                inconclusive.len(),
                first.baseline.method,
                first.baseline.target,
                first.reason.as_deref().unwrap_or("incomplete"),
            );
        }
        for (side, list) in [
            ("baseline", &self.unpaired.baseline),
            ("candidate", &self.unpaired.candidate),
        ] {
            if let Some(first) = list.first() {
                let _ = writeln!(
                    out,
                    "  unpaired {side}: {} (e.g. {} {} at line {})",
                    list.len(),
                    first.method,
                    first.target,
                    first.line
                );
            }
        }
        out
    }
}

/// ` (old → new)` of a field's example, short.
fn example(f: &FieldReport) -> String {
    const WIDTH: usize = 40;
    let show = |v: &Option<Value>| match v {
        None => "∅".to_owned(),
        Some(v) => {
            let text = v.to_string();
            if text.chars().count() > WIDTH {
                let cut: String = text.chars().take(WIDTH).collect();
                format!("{cut}…")
            } else {
                text
            }
        }
    };
    if f.example_old.is_none() && f.example_new.is_none() {
        return String::new();
    }
    format!(" ({} → {})", show(&f.example_old), show(&f.example_new))
}
