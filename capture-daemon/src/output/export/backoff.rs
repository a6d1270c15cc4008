//! Exponential backoff with full jitter between retries of a failed push: the n-th retry waits
//! a uniformly random time in `[0, min(max, initial * 2^n)]` ("full jitter", as in the AWS
//! architecture blog's *Exponential Backoff And Jitter*), so daemons that lost the collector
//! together do not come back in lockstep. A success resets it.

use std::time::Duration;

#[derive(Clone, Debug)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    /// Failures since the last success.
    attempt: u32,
    rng: XorShift64,
}

impl Backoff {
    /// `seed` makes the jitter reproducible in tests; give it something random otherwise.
    pub fn new(initial: Duration, max: Duration, seed: u64) -> Self {
        Self {
            initial,
            max: max.max(initial),
            attempt: 0,
            rng: XorShift64::new(seed),
        }
    }

    /// The ceiling of the next wait: `min(max, initial * 2^attempt)`.
    pub fn ceiling(&self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(31)).unwrap_or(u32::MAX);
        self.initial
            .checked_mul(factor)
            .map_or(self.max, |d| d.min(self.max))
    }

    /// How long to wait before the next attempt, after one more failure.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        if nanos == 0 {
            return Duration::ZERO;
        }
        Duration::from_nanos(self.rng.next() % (nanos + 1))
    }

    /// Failures since the last success.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// Marsaglia's xorshift64: jitter needs spread, not secrecy.
#[derive(Clone, Debug)]
struct XorShift64(u64);

impl XorShift64 {
    fn new(seed: u64) -> Self {
        // Zero is the one state xorshift never leaves.
        Self(if seed == 0 {
            0x9E37_79B9_7F4A_7C15
        } else {
            seed
        })
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn ceiling_doubles_up_to_the_max_and_resets() {
        let mut b = Backoff::new(100 * MS, 30_000 * MS, 7);
        let mut ceilings = Vec::new();
        for _ in 0..12 {
            ceilings.push(b.ceiling());
            b.next_delay();
        }
        assert_eq!(
            &ceilings[..5],
            &[100 * MS, 200 * MS, 400 * MS, 800 * MS, 1600 * MS]
        );
        assert_eq!(ceilings[9], 30_000 * MS, "{ceilings:?}");
        assert_eq!(ceilings[11], 30_000 * MS);
        b.reset();
        assert_eq!(b.ceiling(), 100 * MS);
        assert_eq!(b.attempts(), 0);
    }

    #[test]
    fn delays_are_jittered_within_the_ceiling() {
        let mut b = Backoff::new(100 * MS, 30_000 * MS, 42);
        for _ in 0..10_000 {
            let ceiling = b.ceiling();
            let d = b.next_delay();
            assert!(d <= ceiling, "{d:?} > {ceiling:?}");
        }
        // Full jitter spreads over the whole range: at the cap, delays below a tenth and above
        // nine tenths of it both occur.
        let delays: Vec<Duration> = (0..1000).map(|_| b.next_delay()).collect();
        assert!(delays.iter().any(|d| *d < 3_000 * MS));
        assert!(delays.iter().any(|d| *d > 27_000 * MS));
    }

    #[test]
    fn huge_attempt_counts_do_not_overflow() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(60), 1);
        for _ in 0..100 {
            b.next_delay();
        }
        assert_eq!(b.ceiling(), Duration::from_secs(60));
    }
}
