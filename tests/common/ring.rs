//! Helpers of the io_uring test binaries.

use std::time::{Duration, Instant};

use helix_wal::{IoUringConfig, IoUringStats, IoUringWorkerStorage};

/// Upper bound of any wait for the ring to go idle; reaching it is a hang, not slowness.
pub const IDLE_WAIT_LIMIT: Duration = Duration::from_secs(60);

/// The default configuration with buffered writes (and linked fsyncs) instead of direct I/O,
/// even for files from `open_direct`.
pub fn buffered() -> IoUringConfig {
    IoUringConfig {
        direct_io: false,
        ..IoUringConfig::default()
    }
}

/// Waits (yielding, not sleeping) until the ring has finished every request it started.
pub async fn wait_until_idle(storage: &IoUringWorkerStorage) -> IoUringStats {
    let start = Instant::now();
    loop {
        let stats = storage.stats();
        if stats.in_flight == 0 && stats.requests_completed == stats.requests_started {
            return stats;
        }
        assert!(
            start.elapsed() < IDLE_WAIT_LIMIT,
            "the ring never went idle: {stats:?}"
        );
        tokio::task::yield_now().await;
    }
}

/// Data whose bytes depend on a seed and their position, so any mix-up shows.
pub fn pattern(seed: u32, len: usize) -> Vec<u8> {
    (0..len)
        .map(|position| (seed.wrapping_mul(31).wrapping_add(position as u32 / 7) % 251) as u8)
        .collect()
}
