//! Handlers of the diagnostic kinds.

use std::time::Duration;

use quizworker_jobs::diag::{Fail, FailOutcome, Noop, Sleep};
use serde_json::{Value, json};

use super::{JobContext, JobError};

pub async fn noop(_: Noop) -> Result<Value, JobError> {
    Ok(Value::Null)
}

pub async fn sleep(job: Sleep, ctx: &JobContext) -> Result<Value, JobError> {
    // Sleep in slices so progress moves and a long sleep shows it is alive.
    const SLICES: u64 = 20;
    let slice = Duration::from_millis(job.ms / SLICES);
    for done in 1..=SLICES {
        tokio::time::sleep(slice).await;
        ctx.progress(
            (done * 100 / SLICES) as u8,
            format!("slept {} of {} ms", job.ms * done / SLICES, job.ms),
        );
    }
    tokio::time::sleep(Duration::from_millis(job.ms % SLICES)).await;
    Ok(json!({ "slept_ms": job.ms }))
}

pub async fn fail(job: Fail, ctx: &JobContext) -> Result<Value, JobError> {
    match job.outcome(ctx.attempt) {
        FailOutcome::Succeed => Ok(json!({ "succeeded_on_attempt": ctx.attempt })),
        FailOutcome::FailTransient => Err(JobError::Transient(format!(
            "diag.fail: planned failure {} of {}",
            ctx.attempt, job.times
        ))),
        FailOutcome::FailPermanent => Err(JobError::Permanent(
            "diag.fail: planned permanent failure".to_owned(),
        )),
    }
}
