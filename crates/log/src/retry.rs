//! Trying again after a failure, with the policy as data: how long to wait
//! first, by what factor the wait grows, its cap, how many tries, which
//! errors are worth another try, and one rate-limited log line per failure.
//!
//! ```
//! use std::time::Duration;
//! use agentflow_log::{Backoff, Retry, Throttle};
//!
//! static LINES: Throttle = Throttle::per_second(1);
//! const POLICY: Retry<std::io::Error> = Retry {
//!     backoff: Backoff::forever(Duration::from_millis(100), Duration::from_secs(5)),
//!     retryable: |e| e.kind() != std::io::ErrorKind::InvalidData,
//!     lines: &LINES,
//! };
//! # async fn demo() {
//! let answer = POLICY
//!     .run(|| async { Ok::<_, std::io::Error>(42) }, |e, suppressed| {
//!         tracing::warn!(error = %e, suppressed, "it failed, retrying");
//!     })
//!     .await;
//! # }
//! ```

use std::time::Duration;

use crate::Throttle;

/// How many times an operation is tried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tries {
    /// Until it succeeds (or fails in a way not worth another try).
    Forever,
    /// At most this many times in all (the first try included).
    AtMost(u32),
}

/// Waits that grow by `factor` from `first` up to `cap`, for `tries`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    pub first: Duration,
    pub factor: u32,
    pub cap: Duration,
    pub tries: Tries,
}

impl Backoff {
    /// Doubling from `first` up to `cap`, without end.
    pub const fn forever(first: Duration, cap: Duration) -> Self {
        Self {
            first,
            factor: 2,
            cap,
            tries: Tries::Forever,
        }
    }

    /// Doubling from `first` up to `cap`, `tries` times in all.
    pub const fn at_most(tries: u32, first: Duration, cap: Duration) -> Self {
        Self {
            first,
            factor: 2,
            cap,
            tries: Tries::AtMost(tries),
        }
    }

    /// The wait after the `failures`-th failure in a row (1 for the first):
    /// `first * factor^(failures-1)`, at most `cap`.
    pub fn delay(&self, failures: u32) -> Duration {
        let mut d = self.first;
        for _ in 1..failures {
            if d >= self.cap {
                break;
            }
            d = d.saturating_mul(self.factor);
        }
        d.min(self.cap)
    }

    /// Whether `failures` failures in a row use up the tries.
    pub fn gives_up_after(&self, failures: u32) -> bool {
        match self.tries {
            Tries::Forever => false,
            Tries::AtMost(n) => failures >= n,
        }
    }
}

/// A [`Backoff`] together with which errors are worth another try and the
/// throttle of the line logged for each failure.
pub struct Retry<E: 'static> {
    pub backoff: Backoff,
    pub retryable: fn(&E) -> bool,
    /// The log line of a failure (`warn` in [`Retry::run`]) is written only
    /// when this lets it through: during an outage every caller fails at
    /// once, and one line a second says as much as thousands.
    pub lines: &'static Throttle,
}

impl<E: 'static> Retry<E> {
    /// Runs `op` until it succeeds, fails with an error not `retryable`, or
    /// the tries are used up (then the last error is returned). After each
    /// failure worth retrying, `warn(error, suppressed)` is called if the
    /// throttle lets the line through (`suppressed`: lines held back since
    /// the last one), and the backoff's wait passes.
    pub async fn run<T, F, Fut>(&self, op: F, warn: impl FnMut(&E, u64)) -> Result<T, E>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        self.run_with(op, warn, tokio::time::sleep).await
    }

    /// [`Retry::run`] for a policy that never gives up on any error: the
    /// value, once `op` returns one.
    pub async fn until_ok<T, F, Fut>(&self, op: F, warn: impl FnMut(&E, u64)) -> T
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        assert_eq!(
            self.backoff.tries,
            Tries::Forever,
            "until_ok retries forever"
        );
        match self.run(op, warn).await {
            Ok(v) => v,
            // Only an error not `retryable` ends a policy without a limit.
            Err(_) => panic!("until_ok with a policy that gives up on some errors"),
        }
    }

    async fn run_with<T, F, Fut, S, SFut>(
        &self,
        mut op: F,
        mut warn: impl FnMut(&E, u64),
        mut sleep: S,
    ) -> Result<T, E>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        S: FnMut(Duration) -> SFut,
        SFut: Future<Output = ()>,
    {
        let mut failures = 0;
        loop {
            let e = match op().await {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            failures += 1;
            if !(self.retryable)(&e) || self.backoff.gives_up_after(failures) {
                return Err(e);
            }
            if let Some(suppressed) = self.lines.allow() {
                warn(&e, suppressed);
            }
            sleep(self.backoff.delay(failures)).await;
        }
    }
}

/// Every error is worth another try.
pub fn always<E>(_: &E) -> bool {
    true
}

#[cfg(test)]
mod tests {
    use std::cell::{Cell, RefCell};

    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn the_wait_grows_by_the_factor_up_to_the_cap() {
        let b = Backoff::forever(100 * MS, 5000 * MS);
        let delays: Vec<_> = (1..=9).map(|n| b.delay(n).as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000]);
        assert_eq!(b.delay(u32::MAX), 5000 * MS, "no overflow");
        let tripling = Backoff {
            factor: 3,
            ..Backoff::at_most(4, MS, 20 * MS)
        };
        let delays: Vec<_> = (1..=4).map(|n| tripling.delay(n).as_millis()).collect();
        assert_eq!(delays, [1, 3, 9, 20]);
    }

    /// Runs `policy` over `outcomes` (one per try; `Ok` after the last),
    /// recording the waits and the lines.
    fn run(
        policy: &Retry<&'static str>,
        outcomes: &[Result<u32, &'static str>],
    ) -> (Result<u32, &'static str>, u32, Vec<Duration>, u32) {
        let tries = Cell::new(0);
        let waits = RefCell::new(Vec::new());
        let lines = Cell::new(0);
        let result = futures::executor::block_on(policy.run_with(
            || {
                let n = tries.get();
                tries.set(n + 1);
                let out = outcomes.get(n as usize).copied().unwrap_or(Ok(n));
                async move { out }
            },
            |_, _| lines.set(lines.get() + 1),
            |d| {
                waits.borrow_mut().push(d);
                async {}
            },
        ));
        (result, tries.get(), waits.into_inner(), lines.get())
    }

    #[test]
    fn a_retryable_error_is_tried_again_after_the_backoff() {
        static LINES: Throttle = Throttle::per_second(100);
        let policy = Retry {
            backoff: Backoff::forever(100 * MS, 300 * MS),
            retryable: always,
            lines: &LINES,
        };
        let (result, tries, waits, lines) = run(&policy, &[Err("down"), Err("down"), Err("down")]);
        assert_eq!(result, Ok(3));
        assert_eq!(tries, 4);
        assert_eq!(waits, [100 * MS, 200 * MS, 300 * MS]);
        assert_eq!(lines, 3);
    }

    #[test]
    fn an_error_not_retryable_is_returned_at_once() {
        static LINES: Throttle = Throttle::per_second(100);
        let policy = Retry {
            backoff: Backoff::forever(100 * MS, 300 * MS),
            retryable: |e: &&str| *e != "refused",
            lines: &LINES,
        };
        let (result, tries, waits, lines) = run(&policy, &[Err("down"), Err("refused")]);
        assert_eq!(result, Err("refused"));
        assert_eq!(tries, 2);
        assert_eq!(waits, [100 * MS]);
        assert_eq!(lines, 1);
    }

    #[test]
    fn the_tries_run_out_with_the_last_error() {
        static LINES: Throttle = Throttle::per_second(100);
        let policy = Retry {
            backoff: Backoff::at_most(3, 10 * MS, 15 * MS),
            retryable: always,
            lines: &LINES,
        };
        let (result, tries, waits, _) = run(&policy, &[Err("a"), Err("b"), Err("c"), Err("d")]);
        assert_eq!(result, Err("c"));
        assert_eq!(tries, 3);
        assert_eq!(waits, [10 * MS, 15 * MS], "no wait after the last try");
    }

    #[test]
    fn the_lines_are_throttled_but_the_tries_are_not() {
        static LINES: Throttle = Throttle::per_second(1);
        let policy = Retry {
            backoff: Backoff::forever(Duration::ZERO, Duration::ZERO),
            retryable: always,
            lines: &LINES,
        };
        let (result, tries, _, lines) = run(&policy, &[Err("x"); 50]);
        assert_eq!(result, Ok(50));
        assert_eq!(tries, 51);
        assert_eq!(lines, 1);
    }
}
