//! Writes the seed corpus of the ingest fuzz target (`capture-collector/fuzz`): encoded
//! `ExchangeBatch`es built with the project's own encoder (`capture_model::wire::to_proto`)
//! from the model's fixtures, valid ones in several shapes and a few that validation refuses.
//!
//! ```sh
//! cargo run -p capture-collector --example fuzz_seeds -- capture-collector/fuzz/seeds/ingest
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use capture_model::{
    clock::WallClock,
    exchange::{Exchange, Incomplete, Protocol},
    fixtures, wire,
};
use capture_proto::v1::ExchangeBatch;
use prost::Message as _;

fn batch(sequence: u64, exchanges: &[Exchange]) -> ExchangeBatch {
    let clock = WallClock::with_offset_ns(1_700_000_000_000_000_000);
    ExchangeBatch {
        daemon_id: "node-a".into(),
        instance_id: "run-1".into(),
        sequence,
        exchanges: exchanges
            .iter()
            .map(|e| wire::to_proto(e, &clock))
            .collect(),
    }
}

fn main() {
    let dir = PathBuf::from(std::env::args().nth(1).expect("the seed directory"));
    std::fs::create_dir_all(&dir).unwrap();
    let plain = fixtures::representative();
    let redacted = fixtures::representative_redacted();
    let mut no_response = plain.clone();
    no_response.response = None;
    no_response.incomplete = Some(Incomplete::NoResponse);
    no_response.timing.response_start_ns = None;
    no_response.timing.response_end_ns = None;
    let mut h2 = plain.clone();
    h2.protocol = Protocol::H2;
    let mut seeds: Vec<(&str, ExchangeBatch)> = vec![
        ("one", batch(1, std::slice::from_ref(&plain))),
        ("redacted", batch(2, std::slice::from_ref(&redacted))),
        ("no-response", batch(3, &[no_response])),
        ("h2", batch(4, &[h2])),
        (
            "three",
            batch(5, &[plain.clone(), redacted.clone(), plain.clone()]),
        ),
        ("empty", batch(6, &[])),
    ];
    let mut zero = batch(0, std::slice::from_ref(&plain));
    zero.sequence = 0;
    seeds.push(("sequence-zero", zero));
    let mut no_daemon = batch(7, std::slice::from_ref(&plain));
    no_daemon.daemon_id.clear();
    seeds.push(("no-daemon-id", no_daemon));
    for (name, b) in &seeds {
        std::fs::write(dir.join(name), b.encode_to_vec()).unwrap();
    }
    println!("{} seeds in {}", seeds.len(), dir.display());
}
