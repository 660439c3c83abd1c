//! Frame pacing: a screen source delivers at a fixed rate, from a
//! schedule, whatever a capture costs.

use std::time::{Duration, Instant};

/// Frame pacing at a fixed rate from a schedule (no drift: the n-th frame
/// is due at start + n × period), skipping ahead rather than bursting when
/// a capture took longer than a period.
#[derive(Debug)]
pub(crate) struct Pacer {
    period: Duration,
    next: Instant,
}

impl Pacer {
    pub(crate) fn new(fps: u32) -> Self {
        Pacer {
            period: Duration::from_secs(1) / fps.clamp(1, 120),
            next: Instant::now(),
        }
    }

    /// Sleeps until the next frame is due.
    pub(crate) fn wait(&mut self) {
        let now = Instant::now();
        if self.next > now {
            std::thread::sleep(self.next - now);
            self.next += self.period;
        } else if now - self.next > self.period {
            // More than a frame late: start the schedule afresh.
            self.next = now + self.period;
        } else {
            self.next += self.period;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pacer_holds_the_rate_without_drift() {
        let mut pacer = Pacer::new(50);
        let start = Instant::now();
        for _ in 0..10 {
            pacer.wait();
        }
        // The first frame is due at once, the tenth at 9 × 20 ms.
        let elapsed = start.elapsed();
        assert!(
            elapsed >= Duration::from_millis(175) && elapsed < Duration::from_millis(400),
            "{elapsed:?}"
        );
    }
}
