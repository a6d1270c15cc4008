//! `capture-collector diff` over stored traffic, on both stores and over the gRPC API: a
//! deliberate change is red, a field that also changes between two baseline captures is green
//! once the organisation's noise model has learned it, and models are per organisation.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{os::unix::fs::PermissionsExt as _, path::Path, sync::Arc};

use capture_diff::{Report, Verdict};
use capture_model::wire;
use capture_proto::v1 as pb;
use common::{pg::Postgres, *};

const KEY_HEX: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

/// Five orders, as one side saw them: `at` changes on every capture (a timestamp), `price`
/// only where `price` says.
fn side(routing_key: &str, at: &str, price: &str) -> Vec<pb::Exchange> {
    (0..5_u32)
        .map(|i| {
            let mut ex = exchange(i * 5);
            if let Some(r) = &mut ex.response {
                let body =
                    format!(r#"{{"id":{i},"status":"created","at":"{at}-{i}","price":"{price}"}}"#);
                r.body.wire_size = body.len() as u64;
                r.body.data = body.into_bytes();
                r.body.decoded_from = None;
                r.headers
                    .retain(|h| !h.name.eq_ignore_ascii_case("content-encoding"));
            }
            let mut pb = wire::to_proto(&ex, &CLOCK);
            pb.routing_key = Some(routing_key.into());
            pb
        })
        .collect()
}

async fn push_sides(channel: &tonic::transport::Channel, token: &str) {
    let mut client = ingest(channel, token);
    for (seq, exchanges) in [
        (1, side("base", "2026-12-06T10:00:00", "12.50")),
        (2, side("base-again", "2026-12-06T10:05:00", "12.50")),
        (3, side("cand", "2026-12-06T10:10:00", "13.00")),
    ] {
        client
            .push(pb::ExchangeBatch {
                daemon_id: "node-a".into(),
                instance_id: "run-1".into(),
                sequence: seq,
                exchanges,
            })
            .await
            .unwrap();
    }
}

fn key_file(dir: &Path) -> std::path::PathBuf {
    let key = dir.join("key");
    std::fs::write(&key, KEY_HEX).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    key
}

fn field<'a>(report: &'a Report, suffix: &str) -> &'a capture_diff::report::FieldReport {
    report
        .endpoints
        .iter()
        .flat_map(|e| &e.fields)
        .find(|f| f.path.ends_with(suffix))
        .unwrap_or_else(|| panic!("no field {suffix} in {report:#?}"))
}

fn diff(args: &[&str], json: &Path) -> (i32, Report) {
    let mut all = vec!["diff", "--json", path(json)];
    all.extend_from_slice(args);
    let out = run(&all);
    let report = serde_json::from_slice(
        &std::fs::read(json)
            .unwrap_or_else(|_| panic!("no report: {}", String::from_utf8_lossy(&out.stderr))),
    )
    .unwrap();
    (out.status.code().unwrap(), report)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smart_diff_on_stored_traffic_locally_and_remotely_with_per_org_models() {
    let pg = Postgres::start(false).map(Arc::new);
    let mut stores: Vec<(&str, Vec<String>, tempfile::TempDir)> = Vec::new();
    let tmp = tempfile::tempdir().unwrap();
    let key = key_file(tmp.path());
    stores.push((
        "file",
        vec![
            "--store".into(),
            format!("file:{}", tmp.path().join("data").display()),
            "--encryption-key".into(),
            path(&key).into(),
        ],
        tmp,
    ));
    if let Some(pg) = &pg {
        let tmp = tempfile::tempdir().unwrap();
        let key = key_file(tmp.path());
        stores.push((
            "postgres",
            vec![
                "--store".into(),
                pg.database("diff"),
                "--db-password-file".into(),
                path(&pg.password_file()).into(),
                "--encryption-key".into(),
                path(&key).into(),
            ],
            tmp,
        ));
    }
    for (name, store, tmp) in &stores {
        let store: Vec<&str> = store.iter().map(String::as_str).collect();
        let a = token_in(&store, "org-a");
        let b = token_in(&store, "org-b");
        let collector = Collector::start_in(&store, &tmp.path().join("tls"), &[]);
        let channel = collector.channel().await;
        push_sides(&channel, &a).await;
        push_sides(&channel, &b).await;
        let json = tmp.path().join("report.json");
        let sel = [
            "--baseline",
            "routing-key=base",
            "--candidate",
            "routing-key=cand",
        ];

        // org-a learns its noise from the A/A capture: `at` is green, `price` red, exit 1.
        let mut args = vec!["--org", "org-a", "--noise", "routing-key=base-again"];
        args.extend(sel);
        args.extend(&store);
        let (code, report) = diff(&args, &json);
        assert_eq!(code, 1, "{name}: red means exit 1");
        assert_eq!(report.summary.pairs.total(), 5, "{name}");
        assert_eq!(field(&report, "price").verdict, Verdict::Red, "{name}");
        assert_eq!(field(&report, "at").verdict, Verdict::Green, "{name}");
        assert_eq!(
            report.summary.unpaired_baseline + report.summary.unpaired_candidate,
            0
        );

        // The model is stored: without --noise the next run still calls `at` noise.
        let mut args = vec!["--org", "org-a"];
        args.extend(sel);
        args.extend(&store);
        let (_, again) = diff(&args, &json);
        assert_eq!(
            field(&again, "at").verdict,
            Verdict::Green,
            "{name}: stored model used"
        );

        // org-b has no model of its own and never reads org-a's: with no A/A data a change is
        // yellow (not proven to matter, not known to be noise), `at` included.
        let mut args = vec!["--org", "org-b"];
        args.extend(sel);
        args.extend(&store);
        let (code, other) = diff(&args, &json);
        assert_eq!(code, 0, "{name}: nothing red without a model");
        assert_eq!(
            field(&other, "at").verdict,
            Verdict::Yellow,
            "{name}: a model crossed organisations"
        );
        assert_eq!(field(&other, "price").verdict, Verdict::Yellow, "{name}");

        // The same operation over the authenticated API: the token names org-a.
        let token_file = tmp.path().join("a.token");
        std::fs::write(&token_file, &a).unwrap();
        let url = collector.url();
        let (code, remote) = diff(
            &[
                "--collector",
                &url,
                "--token-file",
                path(&token_file),
                "--ca",
                path(&collector.ca),
                "--baseline",
                "routing-key=base",
                "--candidate",
                "routing-key=cand",
            ],
            &json,
        );
        assert_eq!(code, 1, "{name}");
        assert_eq!(remote, again, "{name}: remote and local reports agree");
        // A selection over the collector's limit is refused as bad input (exit 2).
        let out = run(&[
            &["diff", "--org", "org-a", "--max-diff-exchanges", "3"][..],
            &sel,
            &store,
        ]
        .concat());
        assert_eq!(out.status.code(), Some(2), "{name}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("--max-diff-exchanges"));
        // --fail-on yellow with nothing but noise differing: the A/A pair itself is clean.
        let mut args = vec![
            "--org",
            "org-a",
            "--baseline",
            "routing-key=base",
            "--candidate",
            "routing-key=base-again",
            "--fail-on",
            "yellow",
        ];
        args.extend(&store);
        let (code, aa) = diff(&args, &json);
        assert_eq!(code, 0, "{name}: {:#?}", aa.summary);
    }
}

#[test]
fn diff_usage_errors_exit_2() {
    for args in [
        &[
            "diff",
            "--baseline",
            "routing-key=a",
            "--candidate",
            "routing-key=b",
        ][..],
        &[
            "diff",
            "--data",
            "/tmp/x",
            "--baseline",
            "colour=a",
            "--candidate",
            "routing-key=b",
            "--org",
            "a",
        ],
        &[
            "diff",
            "--collector",
            "https://127.0.0.1:1",
            "--baseline",
            "routing-key=a",
            "--candidate",
            "routing-key=b",
        ],
    ] {
        let out = run(args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
