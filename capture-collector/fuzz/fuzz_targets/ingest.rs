//! Fuzzes the collector's ingest path with what an authenticated `Ingest.Push` delivers:
//! arbitrary bytes decoded as an `ExchangeBatch` (the prost decode tonic's codec runs, under
//! the `--max-batch-bytes` cap), then `capture_collector::ingest::ingest`, the function the
//! gRPC handler calls: validation, then a durable write into a real file store in a
//! temporary directory.
//!
//! It must never panic, and what it stores must read back: every batch acknowledged as
//! stored is read from the store again, exchange for exchange equal to what was sent, and
//! each stored exchange converts to the model (`wire::from_proto`) as export and diff need.
//! The store is closed (its writer thread joined) and replaced after every stored batch, so
//! the read-back stays O(batch), disk use stays bounded, and no writer thread is alive when
//! the process exits (LeakSanitizer would take its buffers for leaks).
#![no_main]

use std::sync::{Arc, Mutex, OnceLock};

use capture_collector::{
    ingest::{self, IngestError},
    metrics::Metrics,
    org::OrgName,
    storage::{Access, DbOptions, Location, Selection, Storage, StorageConfig},
};
use capture_model::wire;
use libfuzzer_sys::fuzz_target;

/// The collector's defaults (`--max-batch-bytes`, `--max-batch-exchanges`).
const MAX_BATCH_BYTES: usize = 16 << 20;
const MAX_EXCHANGES: usize = 4096;
/// Stored batches per store before it is replaced.
const ROTATE: u32 = 1;

struct Harness {
    runtime: tokio::runtime::Runtime,
    metrics: Arc<Metrics>,
    state: Mutex<Option<Open>>,
}

struct Open {
    _dir: tempfile::TempDir,
    storage: Storage,
    stored: u32,
}

fn harness() -> &'static Harness {
    static H: OnceLock<Harness> = OnceLock::new();
    H.get_or_init(|| Harness {
        runtime: tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime"),
        metrics: Metrics::new(),
        state: Mutex::new(None),
    })
}

fn open(h: &Harness) -> Open {
    // tmpfs when there is one: the store fsyncs every batch.
    let base = if std::path::Path::new("/dev/shm").is_dir() {
        std::path::PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    let dir = tempfile::Builder::new()
        .prefix("capture-collector-fuzz-")
        .tempdir_in(base)
        .expect("a temporary directory");
    let config = StorageConfig {
        location: Location::File(dir.path().to_owned()),
        flag: "--data (fuzz)".into(),
        key: None,
        key_flag: None,
        segment_bytes: 1 << 20,
        db: DbOptions::default(),
    };
    let storage = h
        .runtime
        .block_on(Storage::open(config, Arc::clone(&h.metrics), Access::Serve))
        .expect("opening a fresh file store");
    Open {
        _dir: dir,
        storage,
        stored: 0,
    }
}

fuzz_target!(|data: &[u8]| {
    let h = harness();
    let Ok(batch) = ingest::decode(data, MAX_BATCH_BYTES) else {
        return;
    };
    let sent = batch.clone();
    let mut state = h.state.lock().unwrap_or_else(|p| p.into_inner());
    let open_now = state.get_or_insert_with(|| open(h));
    let org = OrgName::parse(&format!("f{}", open_now.stored)).expect("an organisation name");
    let result = h.runtime.block_on(ingest::ingest(
        &open_now.storage,
        &h.metrics,
        &org,
        batch,
        MAX_EXCHANGES,
    ));
    match result {
        Ok(done) => {
            assert!(
                ingest::validate(&sent, MAX_EXCHANGES).is_ok(),
                "stored a batch that does not validate"
            );
            assert!(
                !done.ack.duplicate,
                "a fresh organisation has no duplicates"
            );
            assert_eq!(done.ack.sequence, sent.sequence);
            assert_eq!(done.ack.stored as usize, sent.exchanges.len());
            let mut back = Vec::new();
            h.runtime
                .block_on(
                    open_now
                        .storage
                        .read(&org, &Selection::default(), &mut |stored| {
                            back.push(stored.exchange);
                            Ok(())
                        }),
                )
                .expect("reading back a stored batch");
            assert_eq!(back, sent.exchanges, "a stored batch reads back changed");
            for exchange in back {
                wire::from_proto(exchange).expect("a stored exchange converts to the model");
            }
            open_now.stored += 1;
            if open_now.stored >= ROTATE
                && let Some(old) = state.take()
            {
                h.runtime.block_on(old.storage.close());
            }
        }
        Err(IngestError::Storage(e)) => panic!("a valid batch was not stored: {e}"),
        Err(e) => {
            assert!(
                ingest::validate(&sent, MAX_EXCHANGES).is_err(),
                "refused a batch that validates: {e}"
            );
        }
    }
});
