//! Small helpers for reporting measurements.

use std::time::Duration;

/// The value at quantile `q` (0.0..=1.0) of `samples`, by nearest rank. Sorts in place.
pub fn quantile(samples: &mut [Duration], q: f64) -> Duration {
    if samples.is_empty() {
        return Duration::ZERO;
    }
    samples.sort_unstable();
    let rank = ((samples.len() as f64 - 1.0) * q).round() as usize;
    samples[rank.min(samples.len() - 1)]
}

/// A `kB` field of `/proc/self/status` (Linux), in bytes.
fn status_bytes(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<u64>().ok())
        .map(|kb| kb * 1024)
}

/// Peak resident memory of this process, in bytes.
pub fn peak_rss_bytes() -> Option<u64> {
    status_bytes("VmHWM:")
}

/// Current resident memory of this process, in bytes.
pub fn rss_bytes() -> Option<u64> {
    status_bytes("VmRSS:")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_by_nearest_rank() {
        let mut s: Vec<Duration> = (1..=101).map(Duration::from_millis).collect();
        assert_eq!(quantile(&mut s, 0.5), Duration::from_millis(51));
        assert_eq!(quantile(&mut s, 0.99), Duration::from_millis(100));
        assert_eq!(quantile(&mut [], 0.5), Duration::ZERO);
    }
}
