//! The sender: takes due deliveries (shared by every daemon: `FOR UPDATE SKIP LOCKED`, and a
//! lease so that a delivery is not sent by two at once), sends them, and records each outcome.
//! Woken by the journal's trigger when a job finishes (`NOTIFY quizworker_webhooks`), and looks
//! every second besides. A delivery is sent at least once: if this process dies after the
//! endpoint answered and before the outcome is recorded, it is sent again once its lease runs
//! out, with the same `webhook-id`, for the receiver to recognise.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use quizworker_jobs::webhooks;
use sqlx::PgPool;
use sqlx::postgres::PgListener;

use super::Endpoint;
use super::client::{Client, Outcome};
use super::store::{self, Due, Settled};
use crate::config::Config;
use crate::runtime::backoff;

/// The channel the journal's trigger wakes the senders on (a macro, to build SQL text with it).
macro_rules! channel {
    () => {
        "quizworker_webhooks"
    };
}
pub(crate) use channel as CHANNEL;

/// How often the sender looks without being woken.
const POLL: Duration = Duration::from_secs(1);
/// How long after its attempt was taken a delivery may be taken again: the request's timeout
/// and a margin for recording the outcome.
const LEASE_MARGIN: Duration = Duration::from_secs(30);

pub struct Dispatcher {
    config: Arc<Config>,
    pg: PgPool,
    endpoints: HashMap<String, Endpoint>,
    client: Client,
}

impl Dispatcher {
    /// Fails on settings no delivery could mend: a secret missing from the environment or
    /// malformed, TLS that cannot be set up.
    pub fn new(config: Arc<Config>, pg: PgPool) -> anyhow::Result<Dispatcher> {
        let endpoints = super::endpoints(&config)?;
        let client = Client::new(&config.webhooks, &endpoints)?;
        Ok(Dispatcher {
            config,
            pg,
            endpoints,
            client,
        })
    }

    /// Sends deliveries until the task is aborted; waits out Postgres being away.
    pub async fn run(self) {
        let mut wait = Duration::from_millis(100);
        while let Err(e) = store::sync_routes(&self.pg, &self.config).await {
            tracing::warn!(error = %e, retry_in = ?wait, "could not write the webhook routes; retrying");
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(5));
        }
        let mut listener: Option<PgListener> = None;
        loop {
            if listener.is_none() {
                listener = listen(&self.pg).await;
            }
            let lease = self.config.webhooks.timeout + LEASE_MARGIN;
            let limit = i64::try_from(self.config.webhooks.concurrency).unwrap_or(i64::MAX);
            match store::take_due(&self.pg, limit, lease).await {
                Ok(due) if !due.is_empty() => {
                    wait = Duration::from_millis(100);
                    let settled: Vec<(Due, Settled)> = futures::stream::iter(due)
                        .map(|due| self.attempt(due))
                        .buffer_unordered(self.config.webhooks.concurrency)
                        .collect()
                        .await;
                    if let Err(e) = store::settle_all(&self.pg, &settled).await {
                        tracing::warn!(error = %e, deliveries = settled.len(),
                            "could not record webhooks' outcomes; they are sent again when their lease runs out");
                    }
                    continue;
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?wait, "could not take due webhooks; retrying");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(5));
                    continue;
                }
            }
            wait_for_work(&mut listener).await;
        }
    }

    /// One attempt of a delivery, and where it leaves the delivery.
    async fn attempt(&self, due: Due) -> (Due, Settled) {
        let outcome = match self.endpoints.get(&due.endpoint) {
            None => Outcome::Refused {
                error: format!(
                    "no endpoint named `{}` in [webhooks.endpoints]",
                    quizworker_jobs::limits::shorten(&due.endpoint, 100)
                ),
            },
            Some(endpoint) => {
                let job = due
                    .job
                    .clone()
                    .unwrap_or_else(|| serde_json::json!({"id": due.job_id}));
                let body = webhooks::body(&due.event, chrono::Utc::now(), &job);
                self.client.send(endpoint, &due.id, body).await.0
            }
        };
        let settled = self.settle(&due, outcome);
        match &settled {
            Settled::Delivered { status, .. } => {
                tracing::debug!(delivery = %due.id, job = %due.job_id, status, "webhook delivered")
            }
            Settled::Retry { at, error, .. } => {
                tracing::info!(delivery = %due.id, job = %due.job_id, %error, retry_at = %at,
                    "webhook attempt failed; will retry")
            }
            Settled::Failed { error, .. } => {
                tracing::warn!(delivery = %due.id, job = %due.job_id, %error, "webhook failed")
            }
        }
        (due, settled)
    }

    fn settle(&self, due: &Due, outcome: Outcome) -> Settled {
        let attempt = u32::try_from(due.attempts).unwrap_or(u32::MAX);
        let limit = self.config.webhooks.max_attempts;
        match outcome {
            Outcome::Delivered { status, response } => Settled::Delivered { status, response },
            Outcome::Refused { error } => Settled::Failed {
                status: None,
                response: None,
                error,
            },
            Outcome::Failed {
                status,
                response,
                error,
            } if attempt < limit => {
                let wait = backoff::delay(&self.config.webhooks.backoff, attempt, rand::random());
                Settled::Retry {
                    at: chrono::Utc::now() + wait,
                    status,
                    response,
                    error,
                }
            }
            Outcome::Failed {
                status,
                response,
                error,
            } => Settled::Failed {
                status,
                response,
                error: format!("{error} (attempt {attempt} of {limit}: no attempts left)"),
            },
        }
    }
}

async fn listen(pg: &PgPool) -> Option<PgListener> {
    let listening = async {
        let mut listener = PgListener::connect_with(pg).await?;
        listener.listen(CHANNEL!()).await?;
        Ok::<_, sqlx::Error>(listener)
    }
    .await;
    listening
        .inspect_err(
            |e| tracing::warn!(error = %e, "cannot listen for webhooks; polling meanwhile"),
        )
        .ok()
}

async fn wait_for_work(listener: &mut Option<PgListener>) {
    let Some(active) = listener else {
        tokio::time::sleep(POLL).await;
        return;
    };
    match tokio::time::timeout(POLL, active.try_recv()).await {
        Ok(Ok(Some(_))) => while active.next_buffered().is_some() {},
        Ok(Ok(None)) | Ok(Err(_)) => *listener = None,
        Err(_) => {}
    }
}
