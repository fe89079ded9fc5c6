//! The Rust producer: enqueues through the protocol's script like any producer, then journals
//! the job as waiting, so that maintenance can put it back if Redis loses it. The CLI's
//! `enqueue` goes through here.

use chrono::Utc;
use quizworker_jobs::{Envelope, JobPayload, Queue};
use sqlx::PgPool;

use crate::config::Config;
use crate::runtime::journal::store;
use crate::runtime::queue::{Enqueued, RedisQueues};

#[derive(Clone)]
pub struct Producer {
    redis: RedisQueues,
    pg: PgPool,
    /// Each queue's attempt limit, for the journal row of a job whose envelope sets none.
    limits: Vec<(Queue, u32)>,
}

impl Producer {
    pub fn new(config: &Config, redis: RedisQueues, pg: PgPool) -> Producer {
        let limits = Queue::ALL
            .into_iter()
            .map(|q| (q, config.queue(q).max_attempts))
            .collect();
        Producer { redis, pg, limits }
    }

    /// Enqueues an envelope on a queue. Redis first: a job the journal knows of but Redis never
    /// got would be put back by maintenance, a job no producer meant to send would not.
    pub async fn enqueue(&self, queue: Queue, envelope: &Envelope) -> anyhow::Result<Enqueued> {
        let enqueued = self.redis.enqueue(queue, envelope).await?;
        if enqueued.created {
            let limit = envelope.max_attempts.unwrap_or_else(|| {
                self.limits
                    .iter()
                    .find(|(q, _)| *q == queue)
                    .map_or(1, |(_, limit)| *limit)
            });
            store::insert_waiting(&self.pg, queue.name(), envelope, limit).await?;
        }
        Ok(enqueued)
    }

    /// Enqueues a typed job on its kind's queue, created now.
    pub async fn push<P: JobPayload>(&self, payload: &P) -> anyhow::Result<Enqueued> {
        let envelope = Envelope::new(payload, Utc::now())?;
        self.enqueue(P::QUEUE, &envelope).await
    }
}
