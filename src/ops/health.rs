//! What the process knows of its own health: which queues' workers run, and whether Redis and
//! Postgres answered lately. The pool and the journal writer report here; readiness (the HTTP
//! endpoint, systemd's notification) reads it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use quizworker_jobs::Queue;

#[derive(Debug, Default)]
pub struct Health {
    workers: Mutex<HashMap<Queue, bool>>,
    redis_down: AtomicBool,
    postgres_down: AtomicBool,
}

impl Health {
    pub fn set_worker(&self, queue: Queue, running: bool) {
        self.workers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(queue, running);
    }

    pub fn set_redis(&self, answering: bool) {
        self.redis_down.store(!answering, Ordering::Relaxed);
    }

    pub fn set_postgres(&self, answering: bool) {
        self.postgres_down.store(!answering, Ordering::Relaxed);
    }

    /// Every queue's worker runs.
    pub fn workers_running(&self) -> bool {
        let workers = self.workers.lock().unwrap_or_else(|p| p.into_inner());
        !workers.is_empty() && workers.values().all(|&running| running)
    }

    /// Redis and Postgres answered at last contact: workers that are down while they do are
    /// stuck rather than waiting for a service (what systemd's watchdog tells apart).
    pub fn services_answer(&self) -> bool {
        !self.redis_down.load(Ordering::Relaxed) && !self.postgres_down.load(Ordering::Relaxed)
    }

    /// The reasons the process is not ready, empty when it is.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.redis_down.load(Ordering::Relaxed) {
            problems.push("Redis does not answer".to_owned());
        }
        if self.postgres_down.load(Ordering::Relaxed) {
            problems.push("Postgres does not answer".to_owned());
        }
        let workers = self.workers.lock().unwrap_or_else(|p| p.into_inner());
        if workers.is_empty() {
            problems.push("no worker has started".to_owned());
        }
        let mut down: Vec<&str> = workers
            .iter()
            .filter(|(_, running)| !**running)
            .map(|(queue, _)| queue.name())
            .collect();
        down.sort_unstable();
        if !down.is_empty() {
            problems.push(format!("workers down: {}", down.join(", ")));
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_with_every_worker_and_both_services() {
        let health = Health::default();
        assert_eq!(health.problems(), ["no worker has started"]);
        health.set_worker(Queue::Default, true);
        health.set_worker(Queue::Scoring, false);
        assert_eq!(health.problems(), ["workers down: scoring"]);
        health.set_worker(Queue::Scoring, true);
        health.set_postgres(false);
        assert_eq!(health.problems(), ["Postgres does not answer"]);
        health.set_postgres(true);
        assert!(health.problems().is_empty());
        assert!(health.workers_running());
    }
}
