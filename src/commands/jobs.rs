//! `jobs list|show|retry|run-now|cancel`.

use anyhow::{Context, bail};
use quizworker_jobs::{Envelope, Queue};
use serde::Serialize;
use serde_json::json;

use super::failure::{bad_input, excerpt, usage};
use super::output::{self, outln};
use super::{connect_postgres, connect_redis, parse_queue};
use crate::cli::JobsCommand;
use crate::config::Config;
use crate::runtime::executor::MALFORMED_KIND;
use crate::runtime::journal::JobState;
use crate::runtime::journal::store::{self, JobFilter};
use crate::runtime::journal::stored_json::StoredJson;
use crate::runtime::queue::RedisQueues;

pub async fn execute(config: &Config, command: JobsCommand) -> anyhow::Result<()> {
    match command {
        JobsCommand::List {
            state,
            queue,
            kind,
            limit,
            json,
        } => {
            let filter = filter(state, queue, kind)?;
            list(config, &filter, limit, json).await
        }
        JobsCommand::Show { id, json } => show(config, &id, json).await,
        JobsCommand::Retry {
            ids,
            state,
            queue,
            kind,
            yes,
            json,
        } => {
            let filter = filter(state, queue, kind)?;
            retry(config, ids, &filter, yes, json).await
        }
        JobsCommand::RunNow { ids, json } => run_now(config, &ids, json).await,
        JobsCommand::Cancel { ids, json } => cancel(config, &ids, json).await,
    }
}

fn filter(
    state: Option<String>,
    queue: Option<String>,
    kind: Option<String>,
) -> anyhow::Result<JobFilter> {
    let state = state.map(|s| parse_state(&s)).transpose()?;
    if let Some(queue) = &queue {
        parse_queue("--queue", queue)?;
    }
    Ok(JobFilter { state, queue, kind })
}

fn parse_state(name: &str) -> anyhow::Result<JobState> {
    name.parse::<JobState>().map_err(|_| {
        let known: Vec<&str> = JobState::ALL.iter().map(|s| s.as_str()).collect();
        bad_input(format!(
            "unknown job state {} in --state (states: {})",
            excerpt(name),
            known.join(", ")
        ))
    })
}

async fn list(config: &Config, filter: &JobFilter, limit: i64, json: bool) -> anyhow::Result<()> {
    let pool = connect_postgres(config).await?;
    let jobs = store::list(&pool, filter, limit).await?;
    if json {
        return output::print_json(&jobs);
    }
    let mut table = output::table(&[
        "ID", "QUEUE", "KIND", "STATE", "ATTEMPTS", "PROGRESS", "CREATED", "ERROR",
    ]);
    for job in &jobs {
        table.add_row(vec![
            output::text(&job.id),
            output::text(&job.queue),
            output::text(&job.kind),
            job.state.clone(),
            format!("{}/{}", job.attempts, job.max_attempts),
            format!("{}%", job.progress),
            output::time(Some(job.created_at)),
            output::cell(job.last_error.as_deref(), 60),
        ]);
    }
    outln!("{table}")?;
    Ok(())
}

async fn show(config: &Config, id: &str, json: bool) -> anyhow::Result<()> {
    let pool = connect_postgres(config).await?;
    let Some(job) = store::get(&pool, id).await? else {
        return show_waiting(config, id, json).await;
    };
    let attempts = store::attempts(&pool, id).await?;
    if json {
        let mut value = serde_json::to_value(&job)?;
        value["attempt_history"] = serde_json::to_value(&attempts)?;
        return output::print_json(&value);
    }
    outln!("id           {}", output::text(&job.id))?;
    outln!("kind         {}", output::text(&job.kind))?;
    outln!("queue        {}", output::text(&job.queue))?;
    outln!("state        {}", job.state)?;
    outln!("attempts     {} of {}", job.attempts, job.max_attempts)?;
    outln!(
        "progress     {}%{}",
        job.progress,
        job.progress_message
            .as_deref()
            .map(|m| format!(" ({})", output::text(m)))
            .unwrap_or_default()
    )?;
    outln!("created      {}", output::time(Some(job.created_at)))?;
    if job.scheduled_at.is_some() {
        outln!("next run     {}", output::time(job.scheduled_at))?;
    }
    outln!("last started {}", output::time(job.attempted_at))?;
    outln!("finished     {}", output::time(job.finished_at))?;
    if let Some(key) = &job.idempotency_key {
        outln!("idempotency  {}", output::text(key))?;
    }
    if let Some(error) = &job.last_error {
        outln!("error        {}", output::text(error))?;
    }
    print_document("payload", &job.payload)?;
    if let Some(result) = &job.result {
        print_document("result", result)?;
    }
    let mut table = output::table(&[
        "ATTEMPT", "WORKER", "STARTED", "DURATION", "OUTCOME", "ERROR",
    ]);
    for a in &attempts {
        table.add_row(vec![
            a.attempt.to_string(),
            output::text(&a.worker),
            output::time(Some(a.started_at)),
            a.duration_ms
                .map(|ms| format!("{ms} ms"))
                .unwrap_or_else(|| "-".into()),
            a.outcome.clone(),
            output::cell(a.error.as_deref(), 80),
        ]);
    }
    outln!("\n{table}")?;
    Ok(())
}

/// A payload or result on one line; one that serde_json cannot read as JSON is shown as the
/// text stored, with why.
fn print_document(label: &str, document: &StoredJson) -> anyhow::Result<()> {
    outln!("{label:<13}{}", output::text(&document.to_string()))?;
    if let Err(e) = document.value() {
        outln!(
            "{:<13}(the stored text: it is not readable as JSON here: {e})",
            ""
        )?;
    }
    Ok(())
}

/// A job the journal does not know yet may still wait in Redis: it has not run.
async fn show_waiting(config: &Config, id: &str, json: bool) -> anyhow::Result<()> {
    let redis = connect_redis(config).await?;
    let Some((queue, envelope)) = find_in_redis(&redis, id).await? else {
        bail!("no job with id {}", excerpt(id));
    };
    let state = if envelope.run_at.is_some_and(|t| t > chrono::Utc::now()) {
        JobState::Scheduled
    } else {
        JobState::Queued
    };
    if json {
        // The keys of a journaled job (and the columns of quizworker.job_status_v1).
        return output::print_json(&json!({
            "id": id, "queue": queue.name(), "kind": envelope.kind, "state": state,
            "attempts": 0, "max_attempts": envelope.max_attempts
                .unwrap_or(config.queue(queue).max_attempts),
            "progress": 0, "progress_message": null, "error": null, "result": null,
            "payload": envelope.payload, "idempotency_key": envelope.idempotency_key,
            "worker": null, "created_at": envelope.created_at, "scheduled_at": envelope.run_at,
            "attempted_at": null, "finished_at": null, "attempt_history": [],
        }));
    }
    outln!("id           {}", output::text(id))?;
    outln!("kind         {}", output::text(&envelope.kind))?;
    outln!("queue        {queue}")?;
    outln!("state        {state} (waiting in Redis; it has not run yet)")?;
    outln!("created      {}", output::time(Some(envelope.created_at)))?;
    if let Some(run_at) = envelope.run_at {
        outln!("runs at      {}", output::time(Some(run_at)))?;
    }
    outln!("payload      {}", output::text(envelope.payload.get()))?;
    Ok(())
}

async fn find_in_redis(redis: &RedisQueues, id: &str) -> anyhow::Result<Option<(Queue, Envelope)>> {
    for queue in Queue::ALL {
        if let Some(raw) = redis.stored_job(queue, id).await? {
            let envelope = Envelope::decode(&raw)
                .with_context(|| format!("job {} in Redis is malformed", excerpt(id)))?;
            return Ok(Some((queue, envelope)));
        }
    }
    Ok(None)
}

#[derive(Serialize)]
struct RetryReport {
    retried: Vec<String>,
    skipped: Vec<Skipped>,
}

#[derive(Serialize)]
struct Skipped {
    id: String,
    reason: String,
}

/// A report of the jobs a command moved: as JSON, or its headline and a line per job skipped.
fn print_report(
    report: &impl Serialize,
    json: bool,
    headline: &str,
    skipped: &[Skipped],
) -> anyhow::Result<()> {
    if json {
        return output::print_json(report);
    }
    outln!("{headline}")?;
    for skipped in skipped {
        outln!("skipped {}: {}", output::text(&skipped.id), skipped.reason)?;
    }
    Ok(())
}

async fn retry(
    config: &Config,
    ids: Vec<String>,
    filter: &JobFilter,
    yes: bool,
    json: bool,
) -> anyhow::Result<()> {
    let bulk = filter.state.is_some() || filter.queue.is_some() || filter.kind.is_some();
    if ids.is_empty() != bulk {
        return Err(usage(
            "give job ids, or --state (with --queue/--kind) for a bulk retry, not both",
        ));
    }
    let pool = connect_postgres(config).await?;
    let ids = if bulk {
        let matching = store::ids_matching(&pool, filter).await?;
        if !yes {
            outln!(
                "{} job(s) match; run again with --yes to retry them",
                matching.len()
            )?;
            return Ok(());
        }
        matching
    } else {
        ids
    };

    let redis = connect_redis(config).await?;
    let mut report = RetryReport {
        retried: Vec::new(),
        skipped: Vec::new(),
    };
    let mut retryable = Vec::new();
    for id in &ids {
        match store::get(&pool, id).await? {
            None => report.skipped.push(Skipped {
                id: id.clone(),
                reason: "no such job in the journal".into(),
            }),
            Some(job) if job.kind == MALFORMED_KIND => report.skipped.push(Skipped {
                id: id.clone(),
                reason:
                    "its envelope is malformed; a retry cannot mend it, enqueue a corrected job"
                        .into(),
            }),
            Some(job) if job.state != "failed" && job.state != "cancelled" => {
                report.skipped.push(Skipped {
                    id: id.clone(),
                    reason: format!(
                        "it is {}, only failed or cancelled jobs are retried",
                        job.state
                    ),
                })
            }
            Some(_) => retryable.push(id.clone()),
        }
    }
    // Pushed before the commit: see `store::mark_for_retry`.
    let mut tx = pool.begin().await?;
    for job in store::mark_for_retry(&mut tx, &retryable).await? {
        let (queue, envelope) = job.envelope()?;
        redis.requeue(queue, &envelope, None).await?;
        report.retried.push(job.id);
    }
    tx.commit().await?;

    let headline = format!("retried {} job(s)", report.retried.len());
    print_report(&report, json, &headline, &report.skipped)?;
    if !bulk && report.retried.is_empty() {
        bail!("no job was retried");
    }
    Ok(())
}

#[derive(Serialize)]
struct RunNowReport {
    due: Vec<String>,
    skipped: Vec<Skipped>,
}

/// Makes jobs that wait in Redis' scheduled set due now. Only the score of the one entry that
/// is there changes (`RedisQueues::make_due`): nothing is pushed, so a job cannot end up twice
/// in Redis or run beside an attempt under way.
async fn run_now(config: &Config, ids: &[String], json: bool) -> anyhow::Result<()> {
    let pool = connect_postgres(config).await?;
    let redis = connect_redis(config).await?;
    let mut report = RunNowReport {
        due: Vec::new(),
        skipped: Vec::new(),
    };
    for id in ids {
        let queue = match store::get(&pool, id).await? {
            Some(job) if job.state == "scheduled" || job.state == "retrying" => {
                job.queue.parse()?
            }
            Some(job) => {
                report.skipped.push(Skipped {
                    id: id.clone(),
                    reason: format!(
                        "it is {}; only scheduled or retrying jobs wait for a time",
                        job.state
                    ),
                });
                continue;
            }
            // Enqueued and not journaled yet (no daemon has read its arrival).
            None => match find_in_redis(&redis, id).await? {
                Some((queue, _)) => queue,
                None => {
                    report.skipped.push(Skipped {
                        id: id.clone(),
                        reason: "no such job in the journal or in Redis".into(),
                    });
                    continue;
                }
            },
        };
        if redis.make_due(queue, id).await? {
            store::mark_due(&pool, id).await?;
            report.due.push(id.clone());
        } else {
            report.skipped.push(Skipped {
                id: id.clone(),
                reason: "it is not waiting in Redis' scheduled set: due or started already, \
                         or lost by Redis (`quizworker recover` puts such jobs back)"
                    .into(),
            });
        }
    }
    let headline = format!("made {} job(s) due now", report.due.len());
    print_report(&report, json, &headline, &report.skipped)?;
    if report.due.is_empty() {
        bail!("no job was made due");
    }
    Ok(())
}

async fn cancel(config: &Config, ids: &[String], json: bool) -> anyhow::Result<()> {
    let pool = connect_postgres(config).await?;
    let redis = connect_redis(config).await?;
    let mut cancelled = Vec::new();
    let mut errors = Vec::new();
    for id in ids {
        if let Some(queue) = store::cancel(&pool, id).await? {
            redis.remove_waiting(queue.parse()?, id).await?;
            cancelled.push(id.clone());
        } else if let Some(job) = store::get(&pool, id).await? {
            errors.push(format!("job {} is already {}", excerpt(id), job.state));
        } else if let Some((queue, envelope)) = find_in_redis(&redis, id).await? {
            let max_attempts = envelope
                .max_attempts
                .unwrap_or(config.queue(queue).max_attempts);
            store::insert_cancelled(&pool, queue.name(), &envelope, max_attempts).await?;
            redis.remove_waiting(queue, id).await?;
            cancelled.push(id.clone());
        } else {
            errors.push(format!("no job with id {}", excerpt(id)));
        }
    }
    if json {
        output::print_json(&json!({ "cancelled": cancelled, "errors": errors }))?;
    } else {
        for id in &cancelled {
            outln!("cancelled {}", output::text(id))?;
        }
    }
    if !errors.is_empty() {
        bail!(errors.join("; "));
    }
    Ok(())
}
