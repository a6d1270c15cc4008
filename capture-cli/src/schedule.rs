//! When each replayed request is sent.
//!
//! `--rate N`: a token bucket of one token refilled N times a second; a request waits for its
//! token (queues), none is dropped, so requests leave at most N a second, evenly spaced.
//! `--speed X`: the recorded gaps between requests, divided by X, each capped at `--max-wait`.
//! Neither: as fast as `--concurrency` allows.

use std::time::Duration;

use tokio::time::Instant;

/// A token bucket of capacity one: `take` returns at most once per interval, and a caller that
/// comes late does not earn a burst.
#[derive(Debug)]
pub struct TokenBucket {
    interval: Duration,
    next: Option<Instant>,
}

impl TokenBucket {
    /// `rate` tokens a second (positive, finite: the flag parser checks).
    pub fn new(rate: f64) -> Self {
        Self {
            interval: Duration::from_secs_f64(1.0 / rate),
            next: None,
        }
    }

    /// Waits for the next token.
    pub async fn take(&mut self) {
        let now = Instant::now();
        let at = self.next.map_or(now, |next| next.max(now));
        tokio::time::sleep_until(at).await;
        self.next = Some(at + self.interval);
    }
}

/// How to pace requests.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Pacing {
    Unpaced,
    Rate(f64),
    Speed {
        factor: f64,
        max_wait: Option<Duration>,
    },
}

/// The earliest offset from the start at which each request may leave, for requests recorded
/// at `starts` (nanoseconds, in send order). `--rate` is not an offset but a [`TokenBucket`].
pub fn offsets(pacing: Pacing, starts: &[u64]) -> Vec<Duration> {
    match pacing {
        Pacing::Unpaced | Pacing::Rate(_) => vec![Duration::ZERO; starts.len()],
        Pacing::Speed { factor, max_wait } => {
            let mut at = Duration::ZERO;
            let mut out = Vec::with_capacity(starts.len());
            let mut previous = starts.first().copied();
            for &start in starts {
                let gap_ns = previous.map_or(0, |p| start.saturating_sub(p));
                previous = Some(start);
                #[expect(clippy::cast_precision_loss, reason = "gaps are far below 2^52 ns")]
                let scaled = Duration::from_secs_f64(gap_ns as f64 / 1e9 / factor);
                at += max_wait.map_or(scaled, |cap| scaled.min(cap));
                out.push(at);
            }
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn bucket_spaces_tokens_and_gives_no_burst_after_a_pause() {
        let mut bucket = TokenBucket::new(4.0);
        let t0 = Instant::now();
        for _ in 0..3 {
            bucket.take().await;
        }
        assert_eq!(t0.elapsed(), Duration::from_millis(500));
        tokio::time::sleep(Duration::from_secs(2)).await;
        let t1 = Instant::now();
        bucket.take().await;
        bucket.take().await;
        assert_eq!(t1.elapsed(), Duration::from_millis(250));
    }

    #[test]
    fn speed_scales_gaps_and_max_wait_caps_each() {
        let s = 1_000_000_000;
        let starts = [10 * s, 12 * s, 12 * s, 112 * s];
        assert_eq!(
            offsets(
                Pacing::Speed {
                    factor: 2.0,
                    max_wait: None
                },
                &starts
            ),
            [
                Duration::ZERO,
                Duration::from_secs(1),
                Duration::from_secs(1),
                Duration::from_secs(51)
            ]
        );
        assert_eq!(
            offsets(
                Pacing::Speed {
                    factor: 2.0,
                    max_wait: Some(Duration::from_secs(3))
                },
                &starts
            ),
            [
                Duration::ZERO,
                Duration::from_secs(1),
                Duration::from_secs(1),
                Duration::from_secs(4)
            ]
        );
    }
}
