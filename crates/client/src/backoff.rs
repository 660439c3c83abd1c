//! How long to wait between reconnect attempts: the one policy for every
//! client of callinvite (the library's resume, the desktop app's sign-in
//! again), on `backon`'s exponential backoff.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};

/// The library's waits before each attempt to resume a session: from 100 ms,
/// doubling, at most 4 s.
pub(crate) const RESUME_FIRST: Duration = Duration::from_millis(100);
pub(crate) const RESUME_MAX: Duration = Duration::from_secs(4);

/// Waits that start at `first` and double up to `max`, each a random amount
/// between half and all of that, so that clients cut off together do not all
/// come back at the same instant. Never ends.
pub fn reconnect_waits(first: Duration, max: Duration) -> impl Iterator<Item = Duration> + Send {
    // backon's jitter adds up to the whole wait again: halve both ends.
    ExponentialBuilder::new()
        .with_min_delay(first / 2)
        .with_max_delay(max / 2)
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_from_first_to_max_with_jitter_between_half_and_all() {
        let first = Duration::from_millis(100);
        let max = Duration::from_secs(4);
        let waits: Vec<Duration> = reconnect_waits(first, max).take(12).collect();
        // 100, 200, 400, 800, 1600, 3200 ms, then 4 s: each between half and all.
        let mut nominal = first;
        for (i, w) in waits.iter().enumerate() {
            assert!(
                *w >= nominal / 2 && *w <= nominal,
                "wait {i} is {w:?}, outside {:?}..={nominal:?}",
                nominal / 2
            );
            nominal = (nominal * 2).min(max);
        }
        assert!(waits[11] >= max / 2, "capped: {:?}", waits[11]);
    }

    #[test]
    fn waits_are_not_all_the_same() {
        let a: Vec<Duration> = reconnect_waits(RESUME_FIRST, RESUME_MAX).take(8).collect();
        let b: Vec<Duration> = reconnect_waits(RESUME_FIRST, RESUME_MAX).take(8).collect();
        assert_ne!(a, b, "two clients got the same jitter");
    }
}
