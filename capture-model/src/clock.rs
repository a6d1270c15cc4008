//! Wall-clock time for kernel timestamps.
//!
//! The eBPF programs stamp events with `bpf_ktime_get_ns`, which reads `CLOCK_MONOTONIC`: it
//! counts from boot and never jumps, but says nothing about the date. [`WallClock`] holds the
//! offset between `CLOCK_REALTIME` and `CLOCK_MONOTONIC`, sampled once, and turns a kernel
//! timestamp into a [`SystemTime`] (HAR `startedDateTime`).
//!
//! The offset is a snapshot: if the wall clock is later stepped (`settimeofday`, an NTP step),
//! timestamps converted with an old [`WallClock`] keep the old offset until a new one is sampled
//! with [`WallClock::now`]. NTP slewing moves both clocks alike and does not matter.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::{
    sys::time::TimeSpec,
    time::{ClockId, clock_gettime},
};

const NANOS_PER_SEC: i128 = 1_000_000_000;

/// Last nanosecond of the year 9999: the latest instant an RFC 3339 date can name.
const MAX_WALL_NS: i128 = 253_402_300_800 * NANOS_PER_SEC - 1;

/// Converts `CLOCK_MONOTONIC` nanoseconds to wall-clock time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WallClock {
    /// `CLOCK_REALTIME - CLOCK_MONOTONIC`, in nanoseconds.
    offset_ns: i128,
}

impl WallClock {
    /// Samples both clocks now. The realtime reading is taken between two monotonic readings
    /// and paired with their midpoint, so a preemption between the reads costs at most half of
    /// it in accuracy.
    pub fn now() -> Self {
        let before = read(ClockId::CLOCK_MONOTONIC);
        let real = read(ClockId::CLOCK_REALTIME);
        let after = read(ClockId::CLOCK_MONOTONIC);
        let monotonic = before + (after - before) / 2;
        Self {
            offset_ns: real - monotonic,
        }
    }

    /// A clock with a fixed offset (`CLOCK_REALTIME - CLOCK_MONOTONIC`), for tests and replay.
    pub const fn with_offset_ns(offset_ns: i128) -> Self {
        Self { offset_ns }
    }

    /// `CLOCK_REALTIME - CLOCK_MONOTONIC`, in nanoseconds.
    pub const fn offset_ns(&self) -> i128 {
        self.offset_ns
    }

    /// The wall-clock time of a `CLOCK_MONOTONIC` timestamp.
    ///
    /// The result is clamped to the Unix epoch .. the end of year 9999, so it can always be
    /// written as an RFC 3339 date; only a nonsensical offset gets near either end.
    pub fn to_system_time(&self, mono_ns: u64) -> SystemTime {
        let wall_ns = (i128::from(mono_ns) + self.offset_ns).clamp(0, MAX_WALL_NS);
        // Both conversions hold after the clamp: secs < 2^38, nanos < 10^9.
        let secs = u64::try_from(wall_ns / NANOS_PER_SEC).unwrap_or(0);
        let nanos = u32::try_from(wall_ns % NANOS_PER_SEC).unwrap_or(0);
        UNIX_EPOCH + Duration::new(secs, nanos)
    }

    /// The wall-clock time of a `CLOCK_MONOTONIC` timestamp in nanoseconds since the Unix
    /// epoch (the wire form's timestamps), clamped to what a `u64` holds: the epoch .. the
    /// year 2554. Within that range `to_system_time(t)` and
    /// `WallClock::with_offset_ns(0).to_system_time(to_unix_ns(t))` are the same instant.
    pub fn to_unix_ns(&self, mono_ns: u64) -> u64 {
        let wall_ns = (i128::from(mono_ns) + self.offset_ns).clamp(0, i128::from(u64::MAX));
        u64::try_from(wall_ns).unwrap_or(u64::MAX)
    }
}

#[expect(
    clippy::expect_used,
    reason = "clock_gettime fails only for an unsupported clock id or a bad pointer: Linux has \
              had both clocks since 2.6 and nix passes its own buffer. std's Instant::now and \
              SystemTime::now make the same calls and panic the same way"
)]
fn read(clock: ClockId) -> i128 {
    let ts = clock_gettime(clock).expect("CLOCK_MONOTONIC and CLOCK_REALTIME are always readable");
    timespec_ns(&ts)
}

fn timespec_ns(ts: &TimeSpec) -> i128 {
    i128::from(ts.tv_sec()) * NANOS_PER_SEC + i128::from(ts.tv_nsec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_offset_maps_exactly() {
        // 2024-05-01T12:00:00.123Z is 1_714_564_800.123 s after the epoch.
        let clock = WallClock::with_offset_ns(1_714_564_800_123_000_000 - 5_000_000_000);
        assert_eq!(
            clock.to_system_time(5_000_000_000),
            UNIX_EPOCH + Duration::new(1_714_564_800, 123_000_000)
        );
        assert_eq!(
            clock.to_system_time(5_000_000_001),
            UNIX_EPOCH + Duration::new(1_714_564_800, 123_000_001)
        );
    }

    #[test]
    fn out_of_range_is_clamped() {
        assert_eq!(WallClock::with_offset_ns(-10).to_system_time(5), UNIX_EPOCH);
        let far = WallClock::with_offset_ns(i128::MAX / 2).to_system_time(u64::MAX);
        assert_eq!(
            far,
            UNIX_EPOCH + Duration::new(253_402_300_799, 999_999_999)
        );
    }

    #[test]
    fn unix_ns_agrees_with_system_time_and_clamps() {
        let clock = WallClock::with_offset_ns(1_714_564_800_123_000_000 - 5_000_000_000);
        let unix = clock.to_unix_ns(5_000_000_001);
        assert_eq!(unix, 1_714_564_800_123_000_001);
        assert_eq!(
            WallClock::with_offset_ns(0).to_system_time(unix),
            clock.to_system_time(5_000_000_001)
        );
        assert_eq!(WallClock::with_offset_ns(-10).to_unix_ns(5), 0);
        assert_eq!(
            WallClock::with_offset_ns(i128::MAX / 2).to_unix_ns(1),
            u64::MAX
        );
    }

    #[test]
    fn now_agrees_with_system_time() {
        let clock = WallClock::now();
        let mono = read(ClockId::CLOCK_MONOTONIC);
        let converted = clock.to_system_time(u64::try_from(mono).unwrap_or(0));
        let system = SystemTime::now();
        let skew = match system.duration_since(converted) {
            Ok(d) => d,
            Err(e) => e.duration(),
        };
        assert!(skew < Duration::from_secs(1), "skew {skew:?}");
    }
}
