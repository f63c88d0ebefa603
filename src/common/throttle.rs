//! Repeated errors logged once per interval with a count, so an unreachable apiserver costs a
//! line every few seconds instead of a flood (one line per failed retry).

use std::time::{Duration, Instant};

/// Counts occurrences and says when to log: the first at once, then at most once per interval,
/// with how many happened since the last line.
#[derive(Debug)]
pub struct Throttle {
    interval: Duration,
    last: Option<Instant>,
    count: u64,
}

impl Throttle {
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            last: None,
            count: 0,
        }
    }

    /// One more occurrence at `now`: `Some(n)` when it is time to log `n` occurrences.
    pub fn hit(&mut self, now: Instant) -> Option<u64> {
        self.count += 1;
        match self.last {
            Some(t) if now.saturating_duration_since(t) < self.interval => None,
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.count))
            }
        }
    }

    /// Things work again: the next occurrence logs at once.
    pub fn reset(&mut self) {
        self.last = None;
        self.count = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_logs_then_once_per_interval_with_the_count() {
        let t0 = Instant::now();
        let mut t = Throttle::new(Duration::from_secs(10));
        assert_eq!(t.hit(t0), Some(1));
        for s in 1..10 {
            assert_eq!(t.hit(t0 + Duration::from_secs(s)), None);
        }
        assert_eq!(t.hit(t0 + Duration::from_secs(10)), Some(10));
        t.reset();
        assert_eq!(t.hit(t0 + Duration::from_secs(11)), Some(1));
    }
}
