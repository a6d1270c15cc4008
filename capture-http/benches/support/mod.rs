//! Shared by the capture-http benches.

/// CPU seconds this thread has run: other processes on a busy machine disturb it far less
/// than wall-clock time.
pub fn thread_cpu_s() -> f64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID)
        .map_or(f64::NAN, |t| t.tv_sec() as f64 + t.tv_nsec() as f64 * 1e-9)
}
