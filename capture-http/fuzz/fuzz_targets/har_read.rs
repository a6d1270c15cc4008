//! Fuzzes the HAR reader (`capture_model::har_read`): arbitrary text, read as JSONL or whole
//! HAR files. It must never panic, and whatever it accepts must be a fixed point of the
//! writer and the reader: an entry read, rendered by the project's HAR writer, read again and
//! rendered again gives the same line.
#![no_main]

use capture_model::clock::WallClock;
use capture_model::{har, har_read};
use libfuzzer_sys::fuzz_target;

const UNIX: WallClock = WallClock::with_offset_ns(0);

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(entries) = har_read::read_entries(text) else {
        return;
    };
    for entry in entries {
        let line = har::entry_json_line(&entry.exchange, &UNIX);
        let again = har_read::read_entries(&line).expect("the writer's line reads back");
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].replay, None);
        assert_eq!(har::entry_json_line(&again[0].exchange, &UNIX), line);
    }
});
