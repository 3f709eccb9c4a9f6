//! Stall detection: a process that was stopped (SIGSTOP, a frozen VM, a
//! swap storm) for longer than its consumer-group session may have lost its
//! partitions without knowing it yet, while its actors still hold results of
//! agent calls. Until the group protocol has had time to tell it (a
//! heartbeat round trip, then a revocation of lost partitions), it must not
//! call agents or append: another node may own those workflows now.
//!
//! A thread of its own ticks every [`TICK`]; a tick that comes much later
//! than due means the process stalled. [`hold_while_suspect`] waits while
//! the last tick is overdue or a stall was seen recently. The stall mark is
//! set before the tick time moves on, so a reader sees one or the other.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const TICK: Duration = Duration::from_millis(50);

struct Liveness {
    base: Instant,
    /// Milliseconds since `base` of the last tick.
    last_tick: AtomicU64,
    /// Until when (ms since `base`) to hold after a stall.
    hold_until: AtomicU64,
    /// A gap between ticks longer than this is a stall.
    stall: Duration,
    /// How long to hold after a stall.
    hold: Duration,
}

static LIVENESS: OnceLock<Liveness> = OnceLock::new();

/// Starts the watch for this process. `session_timeout` is the consumer
/// group's: a stall of a third of it is suspicious (the session may expire
/// before the next heartbeat), and after one the engine holds for half of
/// it, time for a heartbeat (every fifth) to learn whether the partitions
/// are still ours.
pub(crate) fn start(session_timeout: Duration) {
    let mut started = false;
    let l = LIVENESS.get_or_init(|| {
        started = true;
        Liveness {
            base: Instant::now(),
            last_tick: AtomicU64::new(0),
            hold_until: AtomicU64::new(0),
            stall: (session_timeout / 3).max(Duration::from_millis(500)),
            hold: session_timeout / 2,
        }
    });
    if !started {
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("liveness".into())
        .spawn(move || {
            loop {
                std::thread::sleep(TICK);
                let now = l.now_ms();
                let gap = now.saturating_sub(l.last_tick.load(Ordering::SeqCst));
                if gap > l.stall.as_millis() as u64 {
                    tracing::warn!(stalled = ?Duration::from_millis(gap),
                        "this process was stalled; holding agent calls and appends until the group confirms its partitions");
                    metrics::counter!(crate::metrics::STALLS).increment(1);
                    l.hold_until
                        .store(now + l.hold.as_millis() as u64, Ordering::SeqCst);
                }
                l.last_tick.store(now, Ordering::SeqCst);
            }
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the stall watch");
    }
}

impl Liveness {
    fn now_ms(&self) -> u64 {
        self.base.elapsed().as_millis() as u64
    }

    fn suspect(&self) -> bool {
        let now = self.now_ms();
        now < self.hold_until.load(Ordering::SeqCst)
            || now.saturating_sub(self.last_tick.load(Ordering::SeqCst))
                > self.stall.as_millis() as u64
    }
}

/// Waits while this process may have lost its partitions unknowingly (see
/// the module's doc). Meanwhile a revocation of lost partitions stops the
/// actors that wait here.
pub(crate) async fn hold_while_suspect() {
    let Some(l) = LIVENESS.get() else {
        return;
    };
    while l.suspect() {
        tokio::time::sleep(TICK).await;
    }
}
