//! Rate-limited log lines: one repeating fault (a record refused, a row
//! Postgres will not take, a broker that keeps failing) must not fill a disk
//! with the same line thousands of times a second.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Lets at most `per_interval` lines through in each interval and counts the
/// rest; the next line let through reports how many were held back.
///
/// ```
/// static LINES: agentflow_log::Throttle = agentflow_log::Throttle::per_second(1);
/// if let Some(suppressed) = LINES.allow() {
///     eprintln!("it failed again ({suppressed} similar lines suppressed)");
/// }
/// ```
pub struct Throttle {
    per_interval: u32,
    interval: Duration,
    window: Mutex<Window>,
}

struct Window {
    started: Option<Instant>,
    let_through: u32,
    suppressed: u64,
}

impl Throttle {
    pub const fn new(per_interval: u32, interval: Duration) -> Self {
        Self {
            per_interval,
            interval,
            window: Mutex::new(Window {
                started: None,
                let_through: 0,
                suppressed: 0,
            }),
        }
    }

    pub const fn per_second(lines: u32) -> Self {
        Self::new(lines, Duration::from_secs(1))
    }

    /// `Some(n)`: write the line, saying that `n` similar ones were held
    /// back since the last one written; `None`: hold it back.
    pub fn allow(&self) -> Option<u64> {
        self.allow_at(Instant::now())
    }

    fn allow_at(&self, now: Instant) -> Option<u64> {
        let mut w = self.window.lock().unwrap_or_else(|e| e.into_inner());
        if w.started
            .is_none_or(|s| now.duration_since(s) >= self.interval)
        {
            w.started = Some(now);
            w.let_through = 0;
        }
        if w.let_through < self.per_interval {
            w.let_through += 1;
            Some(std::mem::take(&mut w.suppressed))
        } else {
            w.suppressed += 1;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_cut_to_the_rate_and_counted() {
        let t = Throttle::new(2, Duration::from_secs(1));
        let t0 = Instant::now();
        assert_eq!(t.allow_at(t0), Some(0));
        assert_eq!(t.allow_at(t0), Some(0));
        for _ in 0..1000 {
            assert_eq!(t.allow_at(t0 + Duration::from_millis(500)), None);
        }
        assert_eq!(t.allow_at(t0 + Duration::from_secs(1)), Some(1000));
        assert_eq!(t.allow_at(t0 + Duration::from_secs(1)), Some(0));
        assert_eq!(t.allow_at(t0 + Duration::from_secs(1)), None);
    }
}
