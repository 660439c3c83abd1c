//! The one rate limiter of the server, sans-I/O: `now` is passed in, so its
//! tests run at chosen instants without sleeping.
//!
//! A [`Rate`] (how many per how long, and how the budget comes back) is
//! kept apart from the [`RateLimit`] state (one `Option<Instant>` and a
//! count, 24 bytes), so a map of many limited keys, or a connection, holds
//! only the state. Three users:
//! - the message rate of one connection ([`Refill::Steady`]: a token bucket
//!   of `--messages-per-second` tokens refilled continuously);
//! - the logins of one user id ([`Refill::Window`], one second);
//! - the failed logins of one address ([`Refill::Window`], one minute).

use std::time::{Duration, Instant};

/// How a spent budget comes back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refill {
    /// Continuously, `limit` per `period`, up to a burst of `limit` (a token
    /// bucket).
    Steady,
    /// All at once, `period` after the first use of the budget (a fixed
    /// window starting at its first use).
    Window,
}

/// At most `limit` per `period`, coming back as `refill` says.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Rate {
    pub(crate) limit: u32,
    pub(crate) period: Duration,
    pub(crate) refill: Refill,
}

/// What has been used of one [`Rate`]'s budget. Starts with it all unused.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct RateLimit {
    /// [`Refill::Window`]: when the current window started.
    /// [`Refill::Steady`]: when the budget is whole again (the theoretical
    /// arrival time of the generic cell rate algorithm, equivalent to a
    /// token bucket); `None` or past means whole.
    at: Option<Instant>,
    /// [`Refill::Window`]: uses in the current window (unused for steady).
    used: u32,
}

impl Rate {
    /// For [`Refill::Steady`]: the time one use takes to come back.
    fn interval(&self) -> Duration {
        self.period / self.limit.max(1)
    }

    /// For [`Refill::Window`]: whether a window that started at `start` is
    /// still running at `now`.
    fn running(&self, start: Instant, now: Instant) -> bool {
        now.saturating_duration_since(start) < self.period
    }
}

impl RateLimit {
    /// Uses in the current window at `now` ([`Refill::Window`]).
    fn window_used(&self, rate: &Rate, now: Instant) -> u32 {
        match self.at {
            Some(start) if rate.running(start, now) => self.used,
            _ => 0,
        }
    }

    /// Whether one more use is within `rate` at `now`; uses nothing.
    pub(crate) fn allows(&self, rate: &Rate, now: Instant) -> bool {
        match rate.refill {
            Refill::Window => self.window_used(rate, now) < rate.limit,
            Refill::Steady => {
                let whole_at = self.at.map_or(now, |t| t.max(now));
                (whole_at + rate.interval()).saturating_duration_since(now) <= rate.period
            }
        }
    }

    /// Uses one if `rate` allows it at `now`; returns whether it did.
    pub(crate) fn try_take(&mut self, rate: &Rate, now: Instant) -> bool {
        let allowed = self.allows(rate, now);
        if allowed {
            self.take(rate, now);
        }
        allowed
    }

    /// Uses one at `now` whether or not `rate` allows it, and returns the
    /// uses in the current window, this one included ([`Refill::Window`];
    /// for [`Refill::Steady`] it returns 0 and only moves the refill time).
    pub(crate) fn take(&mut self, rate: &Rate, now: Instant) -> u32 {
        match rate.refill {
            Refill::Window => {
                if self.window_used(rate, now) == 0 {
                    self.at = Some(now);
                    self.used = 0;
                }
                self.used = self.used.saturating_add(1);
                self.used
            }
            Refill::Steady => {
                let whole_at = self.at.map_or(now, |t| t.max(now));
                self.at = Some(whole_at + rate.interval());
                0
            }
        }
    }

    /// Whether the whole budget is back at `now`: the state is the same as a
    /// new one's, so a map of them may forget it.
    pub(crate) fn idle(&self, rate: &Rate, now: Instant) -> bool {
        match (rate.refill, self.at) {
            (_, None) => true,
            (Refill::Window, Some(start)) => !rate.running(start, now),
            (Refill::Steady, Some(t)) => t <= now,
        }
    }

    /// Time from `now` until the current window ends ([`Refill::Window`]),
    /// or until the whole budget is back ([`Refill::Steady`]); zero if idle.
    pub(crate) fn resets_in(&self, rate: &Rate, now: Instant) -> Duration {
        match (rate.refill, self.at) {
            (_, None) => Duration::ZERO,
            (Refill::Window, Some(start)) => rate
                .period
                .saturating_sub(now.saturating_duration_since(start)),
            (Refill::Steady, Some(t)) => t.saturating_duration_since(now),
        }
    }

    /// Whether it was ever used.
    pub(crate) fn started(&self) -> bool {
        self.at.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn window(limit: u32, secs: u64) -> Rate {
        Rate {
            limit,
            period: Duration::from_secs(secs),
            refill: Refill::Window,
        }
    }

    fn steady(per_second: u32) -> Rate {
        Rate {
            limit: per_second,
            period: Duration::from_secs(1),
            refill: Refill::Steady,
        }
    }

    #[test]
    fn state_is_small() {
        // An `Option<Instant>` and a u32: smaller than the 32-byte
        // (f64, f64, Instant) token bucket a connection held before.
        assert!(std::mem::size_of::<RateLimit>() <= 24);
    }

    #[test]
    fn steady_allows_a_burst_of_the_limit_then_one_per_interval() {
        let t0 = Instant::now();
        let rate = steady(4);
        let mut r = RateLimit::default();
        for _ in 0..4 {
            assert!(r.try_take(&rate, t0));
        }
        assert!(!r.try_take(&rate, t0));
        assert!(!r.try_take(&rate, t0 + 249 * MS));
        assert!(r.try_take(&rate, t0 + 250 * MS));
        assert!(!r.try_take(&rate, t0 + 250 * MS));
        assert!(!r.idle(&rate, t0 + 999 * MS));
        assert_eq!(r.resets_in(&rate, t0 + 250 * MS), 1000 * MS);
        // After a full period it is whole again, never more than whole.
        let later = t0 + 1250 * MS;
        assert!(r.idle(&rate, later));
        for _ in 0..4 {
            assert!(r.try_take(&rate, later + 10 * Duration::from_secs(1)));
        }
        assert!(!r.try_take(&rate, later + 10 * Duration::from_secs(1)));
    }

    #[test]
    fn steady_with_a_zero_limit_still_allows_one_per_period() {
        let t0 = Instant::now();
        let rate = steady(0);
        let mut r = RateLimit::default();
        assert!(r.try_take(&rate, t0));
        assert!(!r.try_take(&rate, t0 + 999 * MS));
        assert!(r.try_take(&rate, t0 + 1000 * MS));
    }

    #[test]
    fn window_allows_the_limit_until_the_window_ends_then_all_of_it_again() {
        let t0 = Instant::now();
        let rate = window(2, 1);
        let mut r = RateLimit::default();
        assert!(r.idle(&rate, t0));
        assert!(r.try_take(&rate, t0 + 100 * MS));
        assert!(r.try_take(&rate, t0 + 500 * MS));
        assert!(!r.allows(&rate, t0 + 1099 * MS));
        assert!(!r.try_take(&rate, t0 + 1099 * MS));
        assert_eq!(r.resets_in(&rate, t0 + 600 * MS), 500 * MS);
        // The window started at the first use, 100 ms in.
        assert!(r.idle(&rate, t0 + 1100 * MS));
        assert!(r.try_take(&rate, t0 + 1100 * MS));
        assert!(r.try_take(&rate, t0 + 1100 * MS));
        assert!(!r.try_take(&rate, t0 + 1100 * MS));
    }

    #[test]
    fn take_counts_past_the_limit_and_a_new_window_starts_at_one() {
        let t0 = Instant::now();
        let rate = window(3, 60);
        let mut r = RateLimit::default();
        let counts: Vec<u32> = (0..5).map(|i| r.take(&rate, t0 + i * MS)).collect();
        assert_eq!(counts, [1, 2, 3, 4, 5]);
        assert!(!r.allows(&rate, t0 + Duration::from_secs(59)));
        assert_eq!(r.take(&rate, t0 + Duration::from_secs(60)), 1);
        assert_eq!(
            r.resets_in(&rate, t0 + Duration::from_secs(61)),
            Duration::from_secs(59)
        );
    }
}
