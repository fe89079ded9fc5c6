//! This process as the journal knows it: a name unique to the process (its workers are named
//! after it), and a lease in Postgres renewed at every heartbeat. While a process' lease is
//! fresh, the journal refuses to start a second delivery of a job whose current attempt that
//! process runs; once it has run out (the process died), the job may run again.

use std::time::Duration;

use sqlx::PgPool;

/// How long after its queue's timeout an attempt is taken as lost even if its process lives:
/// its handler has been stopped by then (the executor enforces the timeout).
pub const STALE_MARGIN: Duration = Duration::from_secs(60);

/// This process: `host-pid-ulid`, unique across restarts and hosts, so that a restart is never
/// refused by apalis as "still active" and a dead process' jobs are recognised as orphans.
#[derive(Debug, Clone)]
pub struct Process {
    name: String,
    /// How long the lease lasts after each renewal.
    lease: Duration,
}

impl Process {
    pub fn new(lease: Duration) -> Process {
        Process {
            name: format!(
                "{}-{}-{}",
                hostname(),
                std::process::id(),
                ulid::Ulid::new()
            ),
            lease,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// How long the lease lasts after each renewal.
    pub fn lease(&self) -> Duration {
        self.lease
    }

    /// Takes the lease for the first time.
    pub async fn register(&self, pg: &PgPool) -> sqlx::Result<()> {
        sqlx::query(
            "INSERT INTO processes (name, host, pid, lease_until)
             VALUES ($1, $2, $3, now() + $4::interval)
             ON CONFLICT (name) DO UPDATE
                SET heartbeat_at = now(), lease_until = now() + $4::interval",
        )
        .bind(&self.name)
        .bind(hostname())
        .bind(i32::try_from(std::process::id()).unwrap_or(i32::MAX))
        // Postgres' clock, not ours: leases are compared with its now() by every process.
        .bind(self.lease)
        .execute(pg)
        .await?;
        Ok(())
    }

    /// Renews the lease every `interval` until the task is aborted. A renewal that fails is
    /// tried again at the next beat; the lease is several beats long, so a short Postgres
    /// outage does not let it run out.
    pub async fn keep_alive(self, pg: PgPool, interval: Duration) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Said once per outage, not at every beat.
        let mut failing = false;
        loop {
            ticker.tick().await;
            match self.register(&pg).await {
                Ok(()) => failing = false,
                Err(e) if !failing => {
                    failing = true;
                    tracing::warn!(error = %e, "could not renew this process' lease in Postgres");
                }
                Err(_) => {}
            }
        }
    }

    /// Gives the lease up at a clean shutdown, once every attempt of this process has ended
    /// or been recorded as interrupted.
    pub async fn deregister(&self, pg: &PgPool) -> sqlx::Result<()> {
        sqlx::query("DELETE FROM processes WHERE name = $1")
            .bind(&self.name)
            .execute(pg)
            .await?;
        Ok(())
    }
}

/// Forgets processes whose lease ran out more than an hour ago (they died; a clean shutdown
/// deregisters). Returns how many.
pub async fn forget_dead(pg: &PgPool) -> sqlx::Result<u64> {
    let done = sqlx::query("DELETE FROM processes WHERE lease_until < now() - interval '1 hour'")
        .execute(pg)
        .await?;
    Ok(done.rows_affected())
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".to_owned())
}
