//! The engine end to end: entries in, verdicts out.

use capture_model::{
    exchange::{Exchange, Header, Incomplete},
    fixtures::representative_redacted,
    har_read::ReadEntry,
};
use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;

/// A GET of `target` answered by `status` with `body` (JSON text) at time `start`.
fn entry(target: &str, start: u64, status: u16, body: &str) -> ReadEntry {
    let mut ex: Exchange = representative_redacted();
    ex.request.method = "GET".into();
    ex.request.target = target.into();
    ex.request.body = Default::default();
    ex.timing.request_start_ns = start;
    if let Some(r) = &mut ex.response {
        r.status = status;
        r.headers = vec![Header::new("Content-Type", "application/json")].into();
        r.body.data = body.as_bytes().to_vec();
        r.body.decoded_from = None;
    }
    ReadEntry {
        exchange: ex,
        replay: None,
        line: 1,
    }
}

/// `n` requests to `/items/<i>` whose bodies `f(i)` gives.
fn run(n: u64, f: impl Fn(u64) -> Value) -> Vec<ReadEntry> {
    (0..n)
        .map(|i| entry(&format!("/items/{i}"), i, 200, &f(i).to_string()))
        .collect()
}

fn field<'r>(report: &'r Report, path: &str) -> &'r report::FieldReport {
    report
        .endpoints
        .iter()
        .flat_map(|e| &e.fields)
        .find(|f| f.path == path)
        .unwrap_or_else(|| panic!("no field {path} in {report:#?}"))
}

fn opts() -> DiffOptions {
    DiffOptions::default()
}

#[test]
fn volatile_fields_are_green_and_a_real_change_is_red() {
    // Baseline twice, candidate once: `ts` and `token` change on every response, `tags` are
    // shuffled every time, `price` changes only in the candidate.
    let body = |i: u64, run: u64, price: u64| {
        let tags = if (i + run).is_multiple_of(2) {
            json!(["a", "b", "c"])
        } else {
            json!(["c", "a", "b"])
        };
        json!({"id": i, "price": price, "ts": 1000 * run + i, "token": format!("t{run}-{i}"), "tags": tags})
    };
    let a1 = run(10, |i| body(i, 1, 10));
    let a2 = run(10, |i| body(i, 2, 10));
    let b = run(10, |i| body(i, 4, 12));
    let noise = NoiseModel::learn(&a1, &a2);
    assert_eq!(
        noise.endpoints["shop/checkout h1 GET /items/{id}"].pairs,
        10
    );
    let report = diff(&a1, &b, &noise, &opts());

    let price = field(&report, "body.price");
    assert_eq!(price.verdict, Verdict::Red);
    assert_eq!(
        (price.raw_differences, price.noise_differences),
        (10, Some(0))
    );
    assert_eq!(price.reason, "never differs in A/A (10 pairs)");
    for path in ["body.ts", "body.token", "body.tags"] {
        let f = field(&report, path);
        assert_eq!(f.verdict, Verdict::Green, "{path}");
    }
    assert_eq!(
        field(&report, "body.tags").kinds,
        vec![FindingKind::Reorder]
    );
    assert_eq!(report.summary.pairs.red, 10);
    assert_eq!(report.summary.findings.red, 10);
    assert_eq!(report.summary.verdict, Verdict::Red);
    assert_eq!(report.exit_code(FailOn::Red), 1);
    let pair = &report.pairs[0];
    let finding = pair
        .findings
        .iter()
        .find(|f| f.path == "body.price")
        .unwrap();
    assert_eq!(finding.pointer, "/body/price");
    assert_eq!(
        (finding.old.clone(), finding.new.clone()),
        (Some(json!(10)), Some(json!(12)))
    );

    // The same diff of the baseline's second run: nothing but noise.
    let report = diff(&a1, &a2, &noise, &opts());
    assert_eq!(
        report.summary.findings.red + report.summary.findings.yellow,
        0
    );
    assert_eq!(report.summary.verdict, Verdict::Green);
    assert_eq!(report.exit_code(FailOn::Yellow), 0);
}

#[test]
fn without_noise_data_changes_are_yellow_and_red_rules_still_hold() {
    let a = vec![
        entry("/x", 0, 200, r#"{"n":1,"s":"a","gone":1}"#),
        entry("/y", 0, 200, r#"{"n":1}"#),
    ];
    let b = vec![
        entry("/x", 0, 200, r#"{"n":"1","s":"b"}"#),
        entry("/y", 0, 503, r#"{"n":1}"#),
    ];
    let report = diff(&a, &b, &NoiseModel::new(), &opts());
    assert_eq!(field(&report, "body.n").verdict, Verdict::Red); // type change
    assert_eq!(field(&report, "body.s").verdict, Verdict::Yellow);
    assert_eq!(field(&report, "body.s").reason, "changed (no A/A data)");
    assert_eq!(field(&report, "body.gone").verdict, Verdict::Red); // present in 1/1
    assert_eq!(field(&report, "status").verdict, Verdict::Red);
    assert!(report.render_terminal(false).contains("no A/A noise model"));
}

#[test]
fn always_present_versus_sometimes_present_removal() {
    // `opt` is in half the baseline responses; `must` in all. The candidate drops both.
    let a = run(4, |i| {
        if i.is_multiple_of(2) {
            json!({"must": 1, "opt": 1})
        } else {
            json!({"must": 1})
        }
    });
    let b = run(4, |_| json!({}));
    let report = diff(&a, &b, &NoiseModel::learn(&a, &a), &opts());
    assert_eq!(field(&report, "body.must").verdict, Verdict::Red);
    assert_eq!(
        field(&report, "body.must").reason,
        "always-present field removed"
    );
    assert_eq!(field(&report, "body.opt").verdict, Verdict::Yellow);
    assert_eq!(field(&report, "body.opt").present_rate, 0.5);
}

#[test]
fn content_type_change_is_red_but_a_charset_change_is_not() {
    let mk = |ct: &str| {
        let mut e = entry("/x", 0, 200, "{}");
        if let Some(r) = &mut e.exchange.response {
            r.headers = vec![Header::new("content-type", ct)].into();
        }
        vec![e]
    };
    let base = mk("application/json");
    let report = diff(&base, &mk("text/html"), &NoiseModel::new(), &opts());
    assert_eq!(field(&report, "headers.content-type").verdict, Verdict::Red);
    let report = diff(
        &base,
        &mk("application/json; charset=utf-8"),
        &NoiseModel::new(),
        &opts(),
    );
    assert_eq!(
        field(&report, "headers.content-type").verdict,
        Verdict::Yellow
    );
}

#[test]
fn a_and_a_rates_and_thresholds_decide_green_or_yellow() {
    // A/A: `v` differs in 4 of 10 pairs. A/B: in 6 of 10 (relative 20 %: noise) or 7 of 10
    // (27 %: real, and some A/A noise, so yellow).
    let aa1 = run(10, |i| json!({"v": i}));
    let aa2 = run(10, |i| json!({"v": if i < 4 { 100 + i } else { i }}));
    let noise = NoiseModel::learn(&aa1, &aa2);
    let ab6 = run(10, |i| json!({"v": if i < 6 { 100 + i } else { i }}));
    let report = diff(&aa1, &ab6, &noise, &opts());
    let v = field(&report, "body.v");
    assert_eq!(
        (v.verdict, v.raw_differences, v.noise_differences),
        (Verdict::Green, 6, Some(4))
    );
    assert_eq!(v.noise_rate, Some(0.4));
    let ab7 = run(10, |i| json!({"v": if i < 7 { 100 + i } else { i }}));
    let report = diff(&aa1, &ab7, &noise, &opts());
    assert_eq!(field(&report, "body.v").verdict, Verdict::Yellow);
    assert_eq!(
        field(&report, "body.v").reason,
        "differs more than in A/A (4/10)"
    );
    assert_eq!(report.exit_code(FailOn::Red), 0);
    assert_eq!(report.exit_code(FailOn::Yellow), 1);
}

#[test]
fn classify_rules_exactly() {
    let o = opts();
    let stats = |ab_differs, ab_present, aa_pairs, aa_differs, aa_present| FieldStats {
        ab_pairs: 10,
        ab_differs,
        ab_present,
        aa_pairs,
        aa_differs,
        aa_present,
    };
    let cases = [
        (
            FindingKind::StatusChange,
            "status",
            stats(1, 10, 0, 0, 0),
            Verdict::Red,
        ),
        (
            FindingKind::StatusChange,
            "status",
            stats(5, 10, 10, 5, 10),
            Verdict::Green,
        ),
        (
            FindingKind::TypeChange,
            "body.a",
            stats(1, 10, 0, 0, 0),
            Verdict::Red,
        ),
        (
            FindingKind::Remove,
            "body.a",
            stats(10, 10, 10, 0, 10),
            Verdict::Red,
        ),
        (
            FindingKind::Remove,
            "body.a",
            stats(5, 5, 10, 0, 5),
            Verdict::Yellow,
        ),
        // Present in every A/B baseline but not in every A/A one: sometimes present.
        (
            FindingKind::Remove,
            "body.a",
            stats(10, 10, 10, 0, 9),
            Verdict::Yellow,
        ),
        (
            FindingKind::Add,
            "body.a",
            stats(10, 0, 10, 0, 0),
            Verdict::Yellow,
        ),
        (
            FindingKind::Replace,
            "body.a",
            stats(10, 10, 10, 0, 10),
            Verdict::Red,
        ),
        (
            FindingKind::Reorder,
            "body.a",
            stats(10, 10, 10, 0, 10),
            Verdict::Red,
        ),
        (
            FindingKind::Reorder,
            "body.a",
            stats(10, 10, 10, 10, 10),
            Verdict::Green,
        ),
        (
            FindingKind::Replace,
            "body.a",
            stats(10, 10, 0, 0, 0),
            Verdict::Yellow,
        ),
        (
            FindingKind::Replace,
            "body.a",
            stats(10, 10, 10, 2, 10),
            Verdict::Yellow,
        ),
        (
            FindingKind::Replace,
            "body.a",
            stats(6, 10, 10, 4, 10),
            Verdict::Green,
        ),
    ];
    for (kind, path, s, expected) in cases {
        let (got, reason) = classify(kind, path, None, None, s, &o);
        assert_eq!(got, expected, "{kind:?} {s:?}: {reason}");
    }
    // The A/A count is scaled to the A/B pairs: 2 of 20 A/A is 1 of 10.
    let scaled = FieldStats {
        ab_pairs: 10,
        ab_differs: 1,
        ab_present: 10,
        aa_pairs: 20,
        aa_differs: 2,
        aa_present: 20,
    };
    assert_eq!(
        classify(FindingKind::Replace, "body.a", None, None, scaled, &o).0,
        Verdict::Green
    );
}

#[test]
fn truncated_or_incomplete_pairs_are_inconclusive_never_green() {
    let a = vec![
        entry("/a", 0, 200, "{}"),
        entry("/b", 0, 200, "{}"),
        entry("/c", 0, 200, "{}"),
    ];
    let mut b = a.clone();
    if let Some(r) = &mut b[0].exchange.response {
        r.body.truncated = true;
    }
    b[1].exchange.incomplete = Some(Incomplete::ConnectionClosed);
    b[2].exchange.response = None;
    let report = diff(&a, &b, &NoiseModel::new(), &opts());
    assert_eq!(report.summary.pairs.inconclusive, 3);
    assert_eq!(report.summary.pairs.green, 0);
    assert_eq!(report.summary.verdict, Verdict::Inconclusive);
    let reasons: Vec<_> = report
        .pairs
        .iter()
        .map(|p| p.reason.clone().unwrap())
        .collect();
    assert_eq!(
        reasons,
        [
            "candidate response body truncated",
            "candidate incomplete: connection_closed",
            "candidate no response",
        ]
    );
    assert_eq!(report.exit_code(FailOn::Red), 0);
    assert_eq!(report.exit_code(FailOn::Yellow), 1);
}

#[test]
fn unpaired_are_listed_on_each_side() {
    let a = vec![entry("/a", 0, 200, "{}"), entry("/gone", 0, 200, "{}")];
    let b = vec![
        entry("/a", 0, 200, "{}"),
        entry("/new", 0, 200, "{}"),
        entry("/new", 1, 200, "{}"),
    ];
    let report = diff(&a, &b, &NoiseModel::new(), &opts());
    assert_eq!(report.summary.unpaired_baseline, 1);
    assert_eq!(report.summary.unpaired_candidate, 2);
    assert_eq!(report.unpaired.baseline[0].target, "/gone");
    assert_eq!(
        report
            .unpaired
            .candidate
            .iter()
            .map(|e| e.index)
            .collect::<Vec<_>>(),
        [1, 2]
    );
    assert_eq!(report.exit_code(FailOn::Red), 0);
    assert_eq!(report.exit_code(FailOn::Yellow), 1);
    assert!(
        report
            .render_terminal(false)
            .contains("unpaired candidate: 2 (e.g. GET /new at line 1)")
    );
}

#[test]
fn limits_are_counted() {
    let long = "x".repeat(300);
    let a = vec![entry(
        "/a",
        0,
        200,
        &json!({"s": long, "t": 1, "u": 1}).to_string(),
    )];
    let b = vec![entry(
        "/a",
        0,
        200,
        &json!({"s": "y", "t": 2, "u": 2}).to_string(),
    )];
    let o = DiffOptions {
        max_findings_per_pair: 2,
        max_value_chars: 10,
        ..opts()
    };
    let report = diff(&a, &b, &NoiseModel::new(), &o);
    assert_eq!(report.summary.findings_dropped, 1);
    assert_eq!(report.summary.values_truncated, 1);
    assert_eq!(report.pairs[0].findings[0].old, Some(json!("xxxxxxxxxx…")));
}

#[test]
fn terminal_summary_shows_colours_only_when_asked() {
    let a = vec![entry("/a", 0, 200, r#"{"p":1}"#)];
    let b = vec![entry("/a", 0, 200, r#"{"p":2}"#)];
    let report = diff(&a, &b, &NoiseModel::learn(&a, &a), &opts());
    let plain = report.render_terminal(false);
    assert_eq!(
        plain,
        "RED  1 pairs: 1 red, 0 yellow, 0 green, 0 inconclusive; unpaired 0 baseline / 0 candidate\n  \
         RED    shop/checkout h1 GET /a  body.p  replace: 1 of 1 pairs (100%), A/A 0 (0%); never differs in A/A (1 pairs) (1 → 2)\n"
    );
    let colored = report.render_terminal(true);
    assert!(colored.contains("\u{1b}[1m\u{1b}[31mRED"), "{colored:?}");
    assert!(!plain.contains('\u{1b}'));
    // And the JSON report reads back.
    let json = serde_json::to_string(&report).unwrap();
    assert_eq!(serde_json::from_str::<Report>(&json).unwrap(), report);
}

fn bodies() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        (-5_i64..5).prop_map(Value::from),
        "[a-c]{0,2}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map("[a-d]|id", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    /// diff(x, x) has no finding and nothing unpaired.
    #[test]
    fn diff_of_x_with_x_is_empty(items in proptest::collection::vec((bodies(), 0_u64..3, prop_oneof![Just(200_u16), Just(404)]), 0..8)) {
        let x: Vec<ReadEntry> = items
            .iter()
            .map(|(b, start, status)| entry("/p", *start, *status, &b.to_string()))
            .collect();
        let report = diff(&x, &x, &NoiseModel::learn(&x, &x), &opts());
        prop_assert_eq!(report.summary.findings, Counts::default());
        prop_assert_eq!(report.summary.pairs.green, x.len() as u64);
        prop_assert!(report.pairs.is_empty());
        prop_assert_eq!(report.summary.unpaired_baseline + report.summary.unpaired_candidate, 0);
        prop_assert_eq!(report.exit_code(FailOn::Yellow), 0);
    }

    /// Any two bodies: diff(x, x) of a single pair is empty whatever its shape.
    #[test]
    fn field_diff_of_a_body_with_itself_is_empty(body in bodies()) {
        let doc = crate::fields::Doc::of(&entry("/p", 0, 200, &body.to_string()).exchange).unwrap();
        prop_assert!(crate::fields::diff_docs(&doc, &doc.clone(), &[]).is_empty());
    }
}
