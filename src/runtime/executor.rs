//! The executor runs one job taken off a queue, as a named pipeline: read the envelope, record
//! the attempt's start, run the handler under its timeout, turn the outcome into a state
//! (completed, retrying after a backoff, failed), record it, and schedule the retry.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use quizworker_jobs::limits::{ECHO_BYTES, shorten, shorten_quoted};
use quizworker_jobs::{Envelope, Queue};
use serde_json::Value;
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinSet;
use tokio_util::task::AbortOnDropHandle;
use tracing::Instrument;
use ulid::Ulid;

use crate::config::Config;
use crate::families::{self, JobContext, JobError, Services};
use crate::ops::metrics::{self, AttemptMetrics};
use crate::runtime::backoff;
use crate::runtime::journal::{self, Finish, JobStart, Journal, StartOutcome};
use crate::runtime::maintenance;
use crate::runtime::process::{Process, STALE_MARGIN};
use crate::runtime::queue::RedisQueues;

/// The kind recorded for a job whose envelope could not be read.
pub const MALFORMED_KIND: &str = "(malformed)";

#[derive(Clone)]
pub struct Executor {
    config: Arc<Config>,
    journal: Journal,
    queues: RedisQueues,
    services: Arc<Services>,
    process: Process,
    /// Every job task of this process, so that shutdown can stop the ones it abandons.
    tasks: Arc<Mutex<JoinSet<()>>>,
    /// Jobs under way in this process, by id: a second delivery of one of them is not run,
    /// a dead worker's jobs that still run are not handed back, and shutdown records the
    /// attempts it abandons.
    running: Arc<Mutex<HashMap<String, RunningJob>>>,
    /// Told whenever a job of this process ends.
    ended: Arc<Notify>,
}

struct RunningJob {
    /// The worker that took it off Redis (its id is in that worker's in-flight set).
    worker: String,
    /// Its attempt, once the journal has recorded the start.
    attempt: Option<u32>,
}

/// Takes a job out of the running set when its task ends, also when the task is aborted.
struct RunningGuard {
    id: String,
    running: Arc<Mutex<HashMap<String, RunningJob>>>,
    ended: Arc<Notify>,
}

impl Drop for RunningGuard {
    fn drop(&mut self) {
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.id);
        self.ended.notify_waiters();
    }
}

impl Executor {
    pub fn new(
        config: Arc<Config>,
        journal: Journal,
        queues: RedisQueues,
        services: Services,
        process: Process,
    ) -> Self {
        Executor {
            config,
            journal,
            queues,
            services: Arc::new(services),
            process,
            tasks: Arc::default(),
            running: Arc::default(),
            ended: Arc::default(),
        }
    }

    /// Runs one job in a task of its own and waits for it. If the caller goes away (the
    /// worker died with Redis), the job still finishes and its outcome reaches the journal;
    /// only [`Executor::interrupt_running`] stops it. A job already under way in this process
    /// is not run again beside itself.
    pub async fn run(&self, queue: Queue, worker: String, id: String, raw: Vec<u8>) {
        let guard = {
            let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(first) = running.get(&id) {
                tracing::warn!(job = %id, %queue, first_worker = %first.worker,
                    "a second delivery of a job that is running in this process; not run");
                return;
            }
            running.insert(
                id.clone(),
                RunningJob {
                    worker: worker.clone(),
                    attempt: None,
                },
            );
            RunningGuard {
                id: id.clone(),
                running: self.running.clone(),
                ended: self.ended.clone(),
            }
        };
        let (done, finished) = oneshot::channel();
        let executor = self.clone();
        {
            let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
            while tasks.try_join_next().is_some() {}
            tasks.spawn(async move {
                let _guard = guard;
                executor.execute(queue, &worker, &id, &raw).await;
                let _ = done.send(());
            });
        }
        let _ = finished.await;
    }

    /// The ids of the jobs that `worker` took and that are still under way in this process.
    pub fn running_of(&self, worker: &str) -> HashSet<String> {
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(_, job)| job.worker == worker)
            .map(|(id, _)| id.clone())
            .collect()
    }

    pub fn is_running(&self, id: &str) -> bool {
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(id)
    }

    /// Told whenever a job of this process ends. Enable a `notified()` future before looking
    /// at [`Executor::is_running`], or an end in between is missed.
    pub fn job_ended(&self) -> Arc<Notify> {
        self.ended.clone()
    }

    /// Waits until no job runs in this process.
    pub async fn until_idle(&self) {
        loop {
            let notified = self.ended.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self
                .running
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_empty()
            {
                return;
            }
            notified.await;
        }
    }

    /// Runs one job. Every outcome, bad input included, ends up in the journal; nothing here
    /// returns an error to the transport, because retries are ours to decide.
    async fn execute(&self, queue: Queue, worker: &str, id: &str, raw: &[u8]) {
        let decoded = Envelope::decode_within(raw, &self.config.limits).and_then(|envelope| {
            if envelope.id.to_string() == id {
                Ok(envelope)
            } else {
                Err(quizworker_jobs::EnvelopeError::Malformed(format!(
                    "the envelope's id {} differs from its Redis id {id}",
                    envelope.id
                )))
            }
        });
        let start = match &decoded {
            Ok(envelope) => JobStart {
                id: id.to_owned(),
                queue: queue.to_string(),
                kind: journal::sanitize_text(&envelope.kind),
                payload: journal::json_text(envelope.payload.get()),
                idempotency_key: envelope
                    .idempotency_key
                    .as_deref()
                    .map(journal::sanitize_text),
                max_attempts: envelope
                    .max_attempts
                    .unwrap_or(self.config.queue(queue).max_attempts),
                created_at: envelope.created_at,
                webhook: envelope.webhook.as_deref().map(journal::sanitize_text),
                worker: worker.to_owned(),
                process: self.process.name().to_owned(),
                stale_after: self.stale_after(queue),
            },
            Err(_) => self.malformed_start(queue, worker, id, raw),
        };

        let (attempt, max_attempts) = match self.journal.start(start).await {
            Ok(StartOutcome::Run {
                attempt,
                max_attempts,
            }) => (attempt, max_attempts),
            Ok(StartOutcome::Skip(journal::JobState::Running)) => {
                tracing::warn!(job = id, %queue,
                    "a second delivery of a job that runs in another live process; not run");
                // Its process may have died just now, its lease not yet run out: this delivery
                // is dropped, so someone must put the job back if so. Not pushed again here: a
                // copy reaching the live process' own worker would break its acknowledgement.
                tokio::spawn(maintenance::watch_beside(
                    self.config.clone(),
                    self.services.pg.clone(),
                    self.queues.clone(),
                    queue,
                    id.to_owned(),
                    self.process.lease(),
                ));
                return;
            }
            Ok(StartOutcome::Skip(state)) => {
                tracing::info!(job = id, %queue, %state, "not running a job that is already {state}");
                return;
            }
            Err(e) => {
                tracing::error!(job = id, %queue, error = %e, "could not journal the start of a job; it is not run");
                return;
            }
        };

        let envelope = match decoded {
            Ok(envelope) => envelope,
            Err(e) => {
                tracing::warn!(job = id, %queue, error = %e, "malformed job");
                metrics::failed_without_running(queue, MALFORMED_KIND);
                self.record(
                    id,
                    attempt,
                    Finish::Failed {
                        error: e.to_string(),
                    },
                )
                .await;
                return;
            }
        };
        let span = tracing::info_span!("job", job = id, kind = %envelope.kind, %queue, attempt);
        self.attempt(queue, envelope, attempt, max_attempts)
            .instrument(span)
            .await;
    }

    async fn attempt(&self, queue: Queue, envelope: Envelope, attempt: u32, max_attempts: u32) {
        let id = envelope.id.to_string();
        if attempt > max_attempts {
            let error = format!(
                "attempt {attempt} is over the limit of {max_attempts}: the earlier attempts were lost when their worker process died"
            );
            tracing::warn!("{error}");
            metrics::failed_without_running(queue, &envelope.kind);
            self.record(&id, attempt, Finish::Failed { error }).await;
            return;
        }

        if let Some(job) = self
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(&id)
        {
            job.attempt = Some(attempt);
        }
        let measured = AttemptMetrics::start(queue, &envelope.kind);
        let outcome = self
            .run_handler(queue, envelope, attempt, max_attempts)
            .await;
        let finish = self.decide(queue, attempt, max_attempts, outcome);
        measured.end(&finish);
        match &finish {
            Finish::Completed { .. } => tracing::debug!("completed"),
            Finish::Retrying { error, run_at } => {
                tracing::info!(%error, %run_at, "attempt failed; will retry")
            }
            Finish::Failed { error } => tracing::warn!(%error, "job failed"),
            Finish::Snoozed { reason, run_at } => {
                tracing::info!(%reason, %run_at, "the job waits; this attempt does not count")
            }
            Finish::Interrupted => {}
        }
        let retry_at = match &finish {
            Finish::Retrying { run_at, .. } | Finish::Snoozed { run_at, .. } => Some(*run_at),
            _ => None,
        };
        self.record(&id, attempt, finish).await;
        if let Some(run_at) = retry_at
            && let Err(e) = self.queues.schedule_retry(queue, &id, run_at).await
        {
            tracing::error!(error = %e, "could not schedule the next attempt in Redis; the journal still has it waiting, and maintenance puts it back");
        }
    }

    /// The handler runs in its own task: a panic is caught there, and a CPU-heavy job does not
    /// hold up the worker that feeds the others. On a queue with a rate, the task first waits
    /// for a unit of it (unless the handler meters itself: `families::meters_own_rate`).
    async fn run_handler(
        &self,
        queue: Queue,
        envelope: Envelope,
        attempt: u32,
        max_attempts: u32,
    ) -> Result<Value, JobError> {
        let ctx = JobContext::new(
            envelope.id.to_string(),
            attempt,
            max_attempts,
            self.journal.clone(),
            self.config.journal.progress_interval,
        );
        let timeout = self.config.queue(queue).timeout;
        let services = self.services.clone();
        let mut task = AbortOnDropHandle::new(tokio::spawn(
            async move {
                // Inside the attempt: the wait for the queue's rate counts against its timeout,
                // and a wait cut short by it has reserved nothing.
                if !families::meters_own_rate(queue) {
                    services
                        .rates
                        .acquire(queue)
                        .await
                        .map_err(|e| JobError::Transient(format!("{e}: {}", e.source)))?;
                }
                families::dispatch(&envelope, &ctx, &services).await
            }
            .instrument(tracing::Span::current()),
        ));
        match tokio::time::timeout(timeout, &mut task).await {
            Ok(Ok(result)) => result,
            Ok(Err(join_error)) if join_error.is_panic() => {
                let panic = join_error.into_panic();
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a non-text panic".to_owned());
                Err(JobError::Transient(format!(
                    "the handler panicked: {message}"
                )))
            }
            Ok(Err(_)) => Err(JobError::Transient("the handler was cancelled".to_owned())),
            Err(_) => {
                task.abort();
                Err(JobError::Transient(format!(
                    "timed out after {}",
                    humantime::format_duration(timeout)
                )))
            }
        }
    }

    fn decide(
        &self,
        queue: Queue,
        attempt: u32,
        max_attempts: u32,
        outcome: Result<Value, JobError>,
    ) -> Finish {
        match outcome {
            Ok(result) => Finish::Completed {
                result: journal::sanitize_json(result),
            },
            Err(JobError::Permanent(error)) => Finish::Failed {
                error: error_text(&error),
            },
            Err(JobError::Transient(error)) if attempt < max_attempts => {
                let wait = backoff::delay(
                    &self.config.queue(queue).backoff,
                    attempt,
                    rand::random::<f64>(),
                );
                Finish::Retrying {
                    error: error_text(&error),
                    run_at: Utc::now() + wait,
                }
            }
            Err(JobError::Transient(error)) => Finish::Failed {
                error: error_text(&format!(
                    "{error} (attempt {attempt} of {max_attempts}: no attempts left)"
                )),
            },
            Err(JobError::Snooze { until, reason }) => Finish::Snoozed {
                reason: error_text(&reason),
                run_at: until,
            },
        }
    }

    async fn record(&self, id: &str, attempt: u32, finish: Finish) {
        if let Err(e) = self.journal.finish(id, attempt, finish).await {
            tracing::error!(job = id, error = %e, "could not journal the end of an attempt");
        }
    }

    /// Stops every job still running and records its attempt as interrupted (the job back to
    /// queued). Called at shutdown once the wait for running jobs is over.
    pub async fn interrupt_running(&self) -> usize {
        // Read before the tasks are stopped: a stopped task takes its job out of the set.
        let running: Vec<(String, u32)> = self
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter_map(|(id, job)| job.attempt.map(|attempt| (id.clone(), attempt)))
            .collect();
        self.tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .abort_all();
        for (id, attempt) in &running {
            self.record(id, *attempt, Finish::Interrupted).await;
        }
        running.len()
    }

    /// Records as failed a job that Redis holds in a form no worker can take (an entry without
    /// its payload, metadata apalis cannot read, an id not in canonical form): `raw` is what
    /// Redis had of it, if anything. A job the journal has finished, or that runs, is left as
    /// it is.
    pub async fn fail_unreadable(
        &self,
        queue: Queue,
        worker: &str,
        id: &Ulid,
        raw: &[u8],
        reason: &str,
    ) {
        let id = id.to_string();
        let start = self.malformed_start(queue, worker, &id, raw);
        match self.journal.start(start).await {
            Ok(StartOutcome::Run { attempt, .. }) => {
                metrics::failed_without_running(queue, MALFORMED_KIND);
                let error = error_text(reason);
                self.record(&id, attempt, Finish::Failed { error }).await;
            }
            Ok(StartOutcome::Skip(_)) => {}
            Err(e) => {
                tracing::error!(job = %id, %queue, error = %e, "could not journal an unreadable job");
            }
        }
    }

    /// How long after its start an attempt of this queue cannot still be running.
    fn stale_after(&self, queue: Queue) -> std::time::Duration {
        self.config.queue(queue).timeout + STALE_MARGIN
    }

    /// The journal entry of a job whose envelope cannot be read: the raw text kept for the
    /// operator (only its ends if the job is over `limits.max_job_bytes`), one attempt allowed.
    fn malformed_start(&self, queue: Queue, worker: &str, id: &str, raw: &[u8]) -> JobStart {
        let payload = if raw.len() > self.config.limits.max_job_bytes {
            let text = String::from_utf8_lossy(raw);
            Value::String(shorten(&text, OVERSIZED_JOB_EXCERPT_BYTES).into_owned())
        } else {
            serde_json::from_slice::<Value>(raw)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(raw).into_owned()))
        };
        let created_at = id
            .parse::<Ulid>()
            .map(|ulid| DateTime::<Utc>::from(ulid.datetime()))
            .unwrap_or_else(|_| Utc::now());
        JobStart {
            id: id.to_owned(),
            queue: queue.to_string(),
            kind: MALFORMED_KIND.to_owned(),
            payload: journal::json_text(&payload.to_string()),
            idempotency_key: None,
            max_attempts: 1,
            created_at,
            webhook: None,
            worker: worker.to_owned(),
            process: self.process.name().to_owned(),
            stale_after: self.stale_after(queue),
        }
    }
}

/// The most bytes of an error that the journal and the log keep: a handler's message may quote
/// its input, and a producer's input may be large (docs/PROTOCOL.md, section 6).
const MAX_ERROR_BYTES: usize = 16 * 1024;
/// What the journal keeps of a job refused for its size.
const OVERSIZED_JOB_EXCERPT_BYTES: usize = 1024;

/// An error as the journal and the log keep it: what it quotes between backticks cut to a few
/// hundred bytes (twice `ECHO_BYTES`, so that a quote the decoder or the scorer already cut is
/// left as it is), all of it to `MAX_ERROR_BYTES`.
fn error_text(error: &str) -> String {
    let quoted_short = shorten_quoted(error, 2 * ECHO_BYTES);
    journal::sanitize_text(&shorten(&quoted_short, MAX_ERROR_BYTES))
}
