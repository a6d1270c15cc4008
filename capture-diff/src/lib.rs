//! capture-diff: Smart Diff. Did my change alter behaviour?
//!
//! Pure: HAR entries in (read with [`capture_model::har_read`]), a report out; no I/O. The
//! `capture diff` command and `capture-collector diff` both run it.
//!
//! ```text
//! let noise = NoiseModel::learn(&baseline, &baseline_again);   // A/A: what differs anyway
//! let report = diff(&baseline, &candidate, &noise, &DiffOptions::default());
//! println!("{}", report.render_terminal(true));
//! std::process::exit(report.exit_code(FailOn::Red));
//! ```
//!
//! - [`pairing`]: which candidate exchange answers which baseline one (replay pair id, else
//!   request fingerprint, k-th with k-th in time order); the rest is unpaired, never dropped.
//! - [`endpoint`]: (workload, protocol, method, route template) with identifier segments as
//!   `{id}`, or gRPC `service/method`; the unit of the noise statistics.
//! - [`fields`]: the field diff of one pair (status, gRPC status, headers, JSON bodies
//!   structurally, other bodies byte-wise), each finding with an RFC 6901 pointer and an
//!   index-free path.
//! - [`noise`]: the A/A [`NoiseModel`] (serde; `learn`, `merge`) and twitter/diffy's
//!   relative/absolute thresholds.
//! - [`report`]: the [`Report`] (serde JSON), [`Report::render_terminal`] and
//!   [`Report::exit_code`].
//!
//! Verdicts, per finding, in this order: a pair with a truncated or incomplete side is
//! **inconclusive** (no findings, never green); a field that differs in A/B no more than diffy's
//! thresholds allow over its A/A rate is **green** (noise); a status or gRPC status change, a
//! JSON type change, a content-type change, or the removal of a field present in every baseline
//! response is **red**; a replaced or reordered field that never differs in A/A is **red**; the
//! rest (additions, removals of sometimes-present fields, changes with no A/A data or with some
//! A/A noise that the A/B rate clearly exceeds) is **yellow**.
#![forbid(unsafe_code)]

pub mod endpoint;
pub mod fields;
pub mod noise;
pub mod pairing;
pub mod report;

use std::collections::{BTreeMap, BTreeSet};

use capture_model::{exchange::Exchange, har_read::ReadEntry};
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use crate::{
    endpoint::Endpoint,
    fields::FindingKind,
    noise::NoiseModel,
    report::{FailOn, Finding, Report, Verdict},
};
use crate::{
    fields::{Doc, RawFinding},
    report::{Counts, EndpointReport, EntryRef, FieldReport, PairReport, Summary, Unpaired},
};

/// Knobs of the diff; every limit is here, and the report counts when one is hit.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DiffOptions {
    /// diffy's relative threshold, percent (`-threshold.relative`, default 20).
    pub relative_threshold: f64,
    /// diffy's absolute threshold, percent (`-threshold.absolute`, default 0.03).
    pub absolute_threshold: f64,
    /// Values longer than this (characters of their JSON text) are cut in the report.
    pub max_value_chars: usize,
    /// Findings listed per pair; more are counted in `summary.findings_dropped`.
    pub max_findings_per_pair: usize,
    /// Lowercase header names whose values are not compared, on top of the built-in set
    /// ([`fields::VOLATILE_HEADERS`]).
    pub volatile_headers: Vec<String>,
}

impl Default for DiffOptions {
    fn default() -> Self {
        Self {
            relative_threshold: 20.0,
            absolute_threshold: 0.03,
            max_value_chars: 256,
            max_findings_per_pair: 100,
            volatile_headers: Vec::new(),
        }
    }
}

/// Why a side cannot be compared, if it cannot.
pub fn inconclusive_reason(ex: &Exchange) -> Option<String> {
    if let Some(incomplete) = ex.incomplete {
        return Some(format!("incomplete: {}", incomplete.as_str()));
    }
    let Some(response) = &ex.response else {
        return Some("no response".into());
    };
    if ex.request.body.truncated {
        return Some("request body truncated".into());
    }
    if response.body.truncated {
        return Some("response body truncated".into());
    }
    if response.body.decode_error.is_some() {
        return Some("response body not decoded".into());
    }
    None
}

/// One compared pair, before classification.
struct Compared {
    baseline: usize,
    candidate: usize,
    endpoint: Endpoint,
    inconclusive: Option<String>,
    findings: Vec<RawFinding>,
}

/// A/B counts of one endpoint.
#[derive(Default)]
struct AbStats {
    pairs: Counts,
    conclusive: u64,
    present: BTreeMap<String, u64>,
    differs: BTreeMap<String, u64>,
}

/// What decides a finding's verdict: the A/B and A/A counts of its field.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FieldStats {
    /// Conclusive A/B pairs of the endpoint, and those where the field differs or is present
    /// on the baseline side.
    pub ab_pairs: u64,
    pub ab_differs: u64,
    pub ab_present: u64,
    /// A/A pairs of the endpoint (0: no A/A data), and those where the field differs or is
    /// present.
    pub aa_pairs: u64,
    pub aa_differs: u64,
    pub aa_present: u64,
}

/// The verdict of a finding of `kind` at `path` (with its values, for the content-type rule),
/// and the rule that decided it.
pub fn classify(
    kind: FindingKind,
    path: &str,
    old: Option<&Value>,
    new: Option<&Value>,
    stats: FieldStats,
    opts: &DiffOptions,
) -> (Verdict, String) {
    let s = stats;
    if s.aa_pairs > 0 {
        #[expect(clippy::cast_precision_loss, reason = "pair counts are far below 2^52")]
        let scaled = s.aa_differs as f64 * s.ab_pairs as f64 / s.aa_pairs as f64;
        #[expect(clippy::cast_precision_loss, reason = "pair counts are far below 2^52")]
        let real = noise::is_real(
            s.ab_differs as f64,
            scaled,
            s.ab_pairs as f64,
            opts.relative_threshold,
            opts.absolute_threshold,
        );
        if !real {
            return (
                Verdict::Green,
                format!(
                    "noise: differs in {}/{} A/A pairs",
                    s.aa_differs, s.aa_pairs
                ),
            );
        }
    }
    let media = |v: Option<&Value>| {
        v.and_then(Value::as_str).map(|t| {
            t.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
    };
    match kind {
        FindingKind::StatusChange => return (Verdict::Red, "status changed".into()),
        FindingKind::TypeChange => return (Verdict::Red, "type changed".into()),
        FindingKind::Replace if path == "headers.content-type" && media(old) != media(new) => {
            return (Verdict::Red, "content type changed".into());
        }
        _ => {}
    }
    let always_present = s.ab_pairs > 0
        && s.ab_present == s.ab_pairs
        && (s.aa_pairs == 0 || s.aa_present == s.aa_pairs);
    match kind {
        FindingKind::Remove if always_present => {
            (Verdict::Red, "always-present field removed".into())
        }
        FindingKind::Remove => (Verdict::Yellow, "sometimes-present field removed".into()),
        FindingKind::Add => (Verdict::Yellow, "field added".into()),
        _ if s.aa_pairs > 0 && s.aa_differs == 0 => (
            Verdict::Red,
            format!("never differs in A/A ({} pairs)", s.aa_pairs),
        ),
        _ if s.aa_pairs > 0 => (
            Verdict::Yellow,
            format!("differs more than in A/A ({}/{})", s.aa_differs, s.aa_pairs),
        ),
        _ => (Verdict::Yellow, "changed (no A/A data)".into()),
    }
}

fn entry_ref(entries: &[ReadEntry], index: usize) -> EntryRef {
    let e = &entries[index];
    EntryRef {
        index,
        line: e.line,
        pair_id: e.replay.as_ref().map(|r| r.pair_id.clone()),
        method: e.exchange.request.method.clone(),
        target: e.exchange.request.target.clone(),
    }
}

/// A value cut to `max` characters of JSON text (then a string ending in `…`).
fn cut_value(v: Option<Value>, max: usize, truncated: &mut u64) -> Option<Value> {
    let v = v?;
    let text = match &v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    if text.chars().count() <= max {
        return Some(v);
    }
    *truncated += 1;
    let cut: String = text.chars().take(max).collect();
    Some(Value::from(format!("{cut}…")))
}

/// Pairs `baseline` with `candidate`, diffs each pair, classifies every finding against the A/B
/// rates and the `noise` model, and reports.
pub fn diff(
    baseline: &[ReadEntry],
    candidate: &[ReadEntry],
    noise: &NoiseModel,
    opts: &DiffOptions,
) -> Report {
    let pairing = pairing::pair(baseline, candidate);
    let mut compared = Vec::with_capacity(pairing.pairs.len());
    let mut stats: BTreeMap<Endpoint, AbStats> = BTreeMap::new();
    for &(i, j) in &pairing.pairs {
        let (b, c) = (&baseline[i].exchange, &candidate[j].exchange);
        let endpoint = Endpoint::of(b);
        let ab = stats.entry(endpoint.clone()).or_default();
        let inconclusive = inconclusive_reason(b)
            .map(|r| format!("baseline {r}"))
            .or_else(|| inconclusive_reason(c).map(|r| format!("candidate {r}")));
        let docs = Doc::of(b).zip(Doc::of(c));
        let (inconclusive, findings) = match (inconclusive, docs) {
            (None, Some((db, dc))) => {
                ab.conclusive += 1;
                for path in db.present_paths() {
                    *ab.present.entry(path).or_default() += 1;
                }
                let findings = fields::diff_docs(&db, &dc, &opts.volatile_headers);
                let paths: BTreeSet<&str> = findings.iter().map(|f| f.path.as_str()).collect();
                for path in paths {
                    *ab.differs.entry(path.to_owned()).or_default() += 1;
                }
                (None, findings)
            }
            (reason, _) => (
                Some(reason.unwrap_or_else(|| "no response".into())),
                Vec::new(),
            ),
        };
        compared.push(Compared {
            baseline: i,
            candidate: j,
            endpoint,
            inconclusive,
            findings,
        });
    }

    let mut summary = Summary {
        unpaired_baseline: pairing.unpaired_baseline.len() as u64,
        unpaired_candidate: pairing.unpaired_candidate.len() as u64,
        skipped_baseline: pairing.skipped_baseline as u64,
        skipped_candidate: pairing.skipped_candidate as u64,
        noise_pairs: noise.endpoints.values().map(|e| e.pairs).sum(),
        ..Summary::default()
    };
    // Per endpoint and field: the verdicts, kinds and first example seen.
    struct FieldAcc {
        verdict: Verdict,
        reason: String,
        kinds: BTreeSet<FindingKind>,
        example: (Option<Value>, Option<Value>),
    }
    let mut field_acc: BTreeMap<(Endpoint, String), FieldAcc> = BTreeMap::new();
    let mut pairs = Vec::new();
    for c in compared {
        let ab = stats.get(&c.endpoint);
        let aa = noise.endpoints.get(&c.endpoint.key());
        let mut verdict = Verdict::Green;
        let mut findings = Vec::new();
        if c.inconclusive.is_some() {
            verdict = Verdict::Inconclusive;
        }
        let total = c.findings.len();
        for f in c.findings {
            let aa_field = aa
                .and_then(|n| n.fields.get(&f.path))
                .copied()
                .unwrap_or_default();
            let field_stats = FieldStats {
                ab_pairs: ab.map_or(0, |s| s.conclusive),
                ab_differs: ab
                    .and_then(|s| s.differs.get(&f.path))
                    .copied()
                    .unwrap_or(0),
                ab_present: ab
                    .and_then(|s| s.present.get(&f.path))
                    .copied()
                    .unwrap_or(0),
                aa_pairs: aa.map_or(0, |n| n.pairs),
                aa_differs: aa_field.differs,
                aa_present: aa_field.present,
            };
            let (v, reason) = classify(
                f.kind,
                &f.path,
                f.old.as_ref(),
                f.new.as_ref(),
                field_stats,
                opts,
            );
            verdict = verdict.max(v);
            summary.findings.add(v);
            let acc = field_acc
                .entry((c.endpoint.clone(), f.path.clone()))
                .or_insert_with(|| FieldAcc {
                    verdict: v,
                    reason: reason.clone(),
                    kinds: BTreeSet::new(),
                    example: (f.old.clone(), f.new.clone()),
                });
            if v > acc.verdict {
                acc.verdict = v;
                acc.reason = reason;
                acc.example = (f.old.clone(), f.new.clone());
            }
            acc.kinds.insert(f.kind);
            if findings.len() < opts.max_findings_per_pair {
                findings.push(Finding {
                    pointer: f.pointer,
                    path: f.path,
                    kind: f.kind,
                    old: cut_value(f.old, opts.max_value_chars, &mut summary.values_truncated),
                    new: cut_value(f.new, opts.max_value_chars, &mut summary.values_truncated),
                    verdict: v,
                });
            }
        }
        summary.findings_dropped += (total - findings.len()) as u64;
        summary.pairs.add(verdict);
        if let Some(s) = stats.get_mut(&c.endpoint) {
            s.pairs.add(verdict);
        }
        summary.verdict = summary.verdict.max(verdict);
        if verdict != Verdict::Green || !findings.is_empty() {
            pairs.push(PairReport {
                endpoint: c.endpoint.to_string(),
                verdict,
                reason: c.inconclusive,
                baseline: entry_ref(baseline, c.baseline),
                candidate: entry_ref(candidate, c.candidate),
                findings,
            });
        }
    }
    // Worst first, then in baseline order.
    pairs.sort_by(|a, b| {
        b.verdict
            .cmp(&a.verdict)
            .then(a.baseline.index.cmp(&b.baseline.index))
    });

    let mut endpoints: Vec<EndpointReport> = stats
        .into_iter()
        .map(|(endpoint, ab)| {
            let aa = noise.endpoints.get(&endpoint.key());
            #[expect(clippy::cast_precision_loss, reason = "pair counts are far below 2^52")]
            let rate = |n: u64, d: u64| if d == 0 { 0.0 } else { n as f64 / d as f64 };
            let mut fields: Vec<FieldReport> = field_acc
                .range((endpoint.clone(), String::new())..)
                .take_while(|((e, _), _)| *e == endpoint)
                .map(|((_, path), acc)| {
                    let raw = ab.differs.get(path).copied().unwrap_or(0);
                    let aa_pairs = aa.map_or(0, |n| n.pairs);
                    let aa_differs = aa.and_then(|n| n.fields.get(path)).map_or(0, |f| f.differs);
                    let mut truncated = 0;
                    let example_old = cut_value(acc.example.0.clone(), 40, &mut truncated);
                    let example_new = cut_value(acc.example.1.clone(), 40, &mut truncated);
                    FieldReport {
                        path: path.clone(),
                        verdict: acc.verdict,
                        raw_differences: raw,
                        raw_rate: rate(raw, ab.conclusive),
                        noise_differences: (aa_pairs > 0).then_some(aa_differs),
                        noise_rate: (aa_pairs > 0).then(|| rate(aa_differs, aa_pairs)),
                        present_rate: rate(
                            ab.present.get(path).copied().unwrap_or(0),
                            ab.conclusive,
                        ),
                        kinds: acc.kinds.iter().copied().collect(),
                        reason: acc.reason.clone(),
                        example_old,
                        example_new,
                    }
                })
                .collect();
            fields.sort_by(|a, b| b.verdict.cmp(&a.verdict).then(a.path.cmp(&b.path)));
            let verdict = [Verdict::Red, Verdict::Yellow, Verdict::Inconclusive]
                .into_iter()
                .find(|v| match v {
                    Verdict::Red => ab.pairs.red > 0,
                    Verdict::Yellow => ab.pairs.yellow > 0,
                    _ => ab.pairs.inconclusive > 0,
                })
                .unwrap_or(Verdict::Green);
            EndpointReport {
                endpoint,
                verdict,
                pairs: ab.pairs,
                noise_pairs: aa.map_or(0, |n| n.pairs),
                fields,
            }
        })
        .collect();
    endpoints.sort_by(|a, b| b.verdict.cmp(&a.verdict).then(a.endpoint.cmp(&b.endpoint)));

    Report {
        summary,
        endpoints,
        pairs,
        unpaired: Unpaired {
            baseline: pairing
                .unpaired_baseline
                .iter()
                .map(|&i| entry_ref(baseline, i))
                .collect(),
            candidate: pairing
                .unpaired_candidate
                .iter()
                .map(|&j| entry_ref(candidate, j))
                .collect(),
        },
    }
}

#[cfg(test)]
mod tests;
