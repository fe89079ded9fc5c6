//! The daemon's side of systemd's `Type=notify` and `WatchdogSec=`
//! (`systemd/quizworker.service`): READY=1 once the pool's workers run, WATCHDOG=1 while they
//! are alive, STOPPING=1 when a shutdown begins. Outside systemd (no `NOTIFY_SOCKET`, no
//! `WATCHDOG_USEC`) each of these does nothing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sd_notify::NotifyState;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::ops::health::Health;

/// Tells systemd that start-up is over: Redis and Postgres answered and every worker runs.
/// The pool calls it when it logs "quizworker ready".
pub fn ready(status: &str) {
    notify(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// Tells systemd that the process is stopping of its own accord (a signal), so the running
/// jobs it waits for are not mistaken for a hang.
pub fn stopping() {
    notify(&[
        NotifyState::Stopping,
        NotifyState::Status("stopping: waiting for running jobs"),
    ]);
}

fn notify(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "could not notify systemd");
    }
}

/// Feeds the watchdog; of failures in a row, only the first is logged.
fn feed(failing: &mut bool) {
    match sd_notify::notify(&[NotifyState::Watchdog]) {
        Ok(()) => *failing = false,
        Err(e) if !*failing => {
            tracing::warn!(error = %e, "could not feed systemd's watchdog");
            *failing = true;
        }
        Err(_) => {}
    }
}

/// Feeds systemd's watchdog at half the interval it asked for (`WATCHDOG_USEC`, for this
/// process when `WATCHDOG_PID` is set), so that a process whose workers are stuck is killed
/// and restarted. `None` when systemd wants no watchdog.
///
/// Fed while every worker runs, and while workers are down because Redis or Postgres does not
/// answer: the pool waits for them with backoff, and a restart would not bring them back
/// sooner (it would only turn an outage into a restart loop). Starved when workers stay down
/// for more than half the interval while both services answer, and when the runtime itself
/// hangs (this task stops running). Once `stopping` is cancelled it is fed regardless, so that
/// a long drain of running jobs is not cut short.
pub fn spawn_watchdog(health: Arc<Health>, stopping: CancellationToken) -> Option<JoinHandle<()>> {
    let interval = sd_notify::watchdog_enabled()?;
    let feed_every = interval / 2;
    let check_every = (feed_every / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
    tracing::info!(interval = ?interval, "feeding systemd's watchdog");
    Some(tokio::spawn(async move {
        let mut verdict = Verdict::new(feed_every);
        let mut last_feed: Option<Instant> = None;
        let mut starving = false;
        let mut failing = false;
        loop {
            let now = Instant::now();
            let alive = stopping.is_cancelled()
                || verdict.alive(now, health.workers_running(), health.services_answer());
            if alive {
                if starving {
                    tracing::info!("workers are back; feeding systemd's watchdog again");
                    starving = false;
                }
                if last_feed.is_none_or(|at| now - at >= feed_every) {
                    feed(&mut failing);
                    last_feed = Some(now);
                }
            } else if !starving {
                tracing::error!(problems = %health.problems().join("; "),
                    "workers are down while Redis and Postgres answer; no longer feeding systemd's watchdog");
                starving = true;
            }
            tokio::time::sleep(check_every).await;
        }
    }))
}

/// Whether the process is alive in the watchdog's sense, from samples of its health.
struct Verdict {
    /// How long workers may be down while Redis and Postgres answer: a worker that died is
    /// replaced within a fraction of a second, so only a longer gap means something is stuck.
    grace: Duration,
    /// Start-up is bounded by `TimeoutStartSec=`, not the watchdog (systemd arms it at READY=1).
    started: bool,
    stuck_since: Option<Instant>,
}

impl Verdict {
    fn new(grace: Duration) -> Verdict {
        Verdict {
            grace,
            started: false,
            stuck_since: None,
        }
    }

    fn alive(&mut self, now: Instant, workers_running: bool, services_answer: bool) -> bool {
        self.started |= workers_running;
        if !self.started || workers_running || !services_answer {
            self.stuck_since = None;
            return true;
        }
        let since = *self.stuck_since.get_or_insert(now);
        now - since <= self.grace
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starved_only_when_workers_stay_down_while_the_services_answer() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut verdict = Verdict::new(Duration::from_secs(1));
        // Starting up: no worker yet, for longer than the grace.
        assert!(verdict.alive(at(0), false, true));
        assert!(verdict.alive(at(5_000), false, true));
        assert!(verdict.alive(at(5_100), true, true));
        // A worker dies and is replaced within the grace.
        assert!(verdict.alive(at(6_000), false, true));
        assert!(verdict.alive(at(6_900), false, true));
        assert!(verdict.alive(at(7_000), true, true));
        // Redis is away: the pool waits for it, however long.
        assert!(verdict.alive(at(8_000), false, false));
        assert!(verdict.alive(at(60_000), false, false));
        // Redis is back but the workers do not come back.
        assert!(verdict.alive(at(61_000), false, true));
        assert!(verdict.alive(at(62_000), false, true));
        assert!(!verdict.alive(at(62_001), false, true));
        assert!(!verdict.alive(at(70_000), false, true));
        assert!(verdict.alive(at(71_000), true, true));
    }
}
