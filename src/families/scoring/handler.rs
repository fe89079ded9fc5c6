//! Handlers of the `score.*` jobs: the pure scoring of `quizworker_jobs::scoring`, with tests
//! from `prepared_tests` and results stored by `writer` (one attempt) or `store`
//! (pages of a test's attempts).

use quizworker_jobs::scoring::{Attempt, TestAnalytics};
use quizworker_jobs::scoring::{FinalizeTest, RescoreTest, SubmittedAttempt};
use serde_json::{Value, json};

use super::store::{self, Saved, ScoreRow, StoreError};
use crate::families::{JobContext, JobError, Services};

/// Attempts read, scored and written per round trip by a rescore or a finalization.
const PAGE: i64 = 500;
/// How many problem attempts a failure message names before it says "and N more".
const NAMED: usize = 10;

impl From<StoreError> for JobError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::KeyVersionTaken { .. } => JobError::Permanent(e.to_string()),
            StoreError::Corrupt(_)
            | StoreError::Database(_)
            | StoreError::BatchFailed(_)
            | StoreError::WriterStopped => JobError::Transient(format!("scoring store: {e}")),
        }
    }
}

/// How often a job scores its attempt again because the test's key was revised meanwhile,
/// before it gives up the attempt (and retries after a backoff).
const REVISIONS_FOLLOWED: usize = 3;

pub async fn score_attempt(
    submitted: SubmittedAttempt<'_>,
    services: &Services,
) -> Result<Value, JobError> {
    let pg = &services.pg;
    let SubmittedAttempt { job, attempt_text } = submitted;
    let mut test = match job.test {
        Some(test) => services.tests.sent(pg, test).await?,
        None => {
            let Some(test_id) = job.attempt.test_id.as_deref() else {
                return Err(JobError::Permanent(
                    "score.attempt needs `test`, or `attempt.test_id` naming a stored test".into(),
                ));
            };
            services.tests.newest_known(pg, test_id).await?
        }
    };
    for _ in 0..REVISIONS_FOLLOWED {
        let result = test
            .score(&job.attempt)
            .map_err(|e| JobError::Permanent(e.to_string()))?;
        let row = ScoreRow::new(attempt_text.to_owned(), job.submitted_at, &result)?;
        match services.scores.save(row).await? {
            Saved::Stored => {
                return Ok(json!({
                    "attempt_id": result.attempt_id,
                    "test_id": &*result.test_id,
                    "key_version": result.key_version,
                    "marks": result.total.marks,
                    "max_marks": result.total.max_marks,
                    "provisional": result.provisional,
                }));
            }
            Saved::Stale { newest } => {
                services.tests.learned_newest(test.test_id(), newest);
                test = services
                    .tests
                    .stored(pg, test.test_id(), Some(newest))
                    .await?;
            }
        }
    }
    Err(JobError::Transient(format!(
        "the key of test `{}` was revised {REVISIONS_FOLLOWED} times while this attempt was scored",
        test.test_id()
    )))
}

pub async fn rescore_test(
    job: RescoreTest,
    ctx: &JobContext,
    services: &Services,
) -> Result<Value, JobError> {
    let pg = &services.pg;
    let test = match (job.test, job.test_id) {
        (Some(test), _) => services.tests.sent(pg, test).await?,
        (None, Some(test_id)) => services.tests.stored(pg, &test_id, job.key_version).await?,
        (None, None) => {
            return Err(JobError::Permanent(
                "score.rescore_test needs `test` (the revised test) or `test_id`".into(),
            ));
        }
    };
    let test_id = test.test_id().to_owned();
    let total = store::count_attempts(pg, &test_id).await?;
    let (mut done, mut failed) = (0i64, Vec::new());
    let mut after = String::new();
    loop {
        let page = store::attempts_page(pg, &test_id, &after, PAGE).await?;
        let Some(last) = page.last() else { break };
        after = last.attempt_id.clone();
        done += page.len() as i64;
        let mut rows = Vec::with_capacity(page.len());
        for stored in page {
            let scored = serde_json::from_str::<Attempt>(&stored.attempt)
                .map_err(|e| e.to_string())
                .and_then(|attempt| test.score(&attempt).map_err(|e| e.to_string()));
            match scored {
                Ok(result) => {
                    rows.push(ScoreRow::new(stored.attempt, stored.submitted_at, &result)?)
                }
                Err(e) => failed.push(format!("{}: {e}", stored.attempt_id)),
            }
        }
        store::save_scores(pg, &rows).await?;
        ctx.progress(
            percent(done, total),
            format!("rescored {done} of {total} attempts"),
        );
    }
    if !failed.is_empty() {
        return Err(JobError::Permanent(format!(
            "{} of {done} attempts of test `{test_id}` could not be scored against key version {} and keep their old results: {}",
            failed.len(),
            test.key_version(),
            named(&failed)
        )));
    }
    Ok(json!({
        "test_id": test_id,
        "key_version": test.key_version(),
        "rescored": done,
    }))
}

pub async fn finalize_test(
    job: FinalizeTest,
    ctx: &JobContext,
    services: &Services,
) -> Result<Value, JobError> {
    let pg = &services.pg;
    let test = services.tests.stored(pg, &job.test_id, None).await?;
    let total = store::count_attempts(pg, &job.test_id).await?;
    let mut analytics = TestAnalytics::new(&test);
    let (mut read, mut problems) = (0i64, Vec::new());
    let mut after = String::new();
    loop {
        let page = store::results_page(pg, &job.test_id, &after, PAGE).await?;
        let Some(last) = page.last() else { break };
        after = last.attempt_id.clone();
        for result in &page {
            if let Err(e) = analytics.add(result) {
                problems.push(e.to_string());
            }
        }
        read += page.len() as i64;
        ctx.progress(
            (percent(read, total) / 2).min(50),
            format!("read {read} of {total} results"),
        );
    }
    if !problems.is_empty() {
        return Err(JobError::Permanent(format!(
            "test `{}` cannot be finalized: {} of {read} results do not fit key version {}: {}",
            job.test_id,
            problems.len(),
            test.key_version(),
            named(&problems)
        )));
    }
    let finalized = analytics
        .finish()
        .map_err(|e| JobError::Permanent(e.to_string()))?;
    for (i, chunk) in finalized.standings.chunks(PAGE as usize).enumerate() {
        store::save_standings(pg, chunk).await?;
        let written = (i * PAGE as usize + chunk.len()) as i64;
        ctx.progress(
            50 + percent(written, read) / 2,
            format!("ranked {written} of {read}"),
        );
    }
    let statistics = serde_json::to_value(&finalized.statistics)
        .map_err(|e| JobError::Permanent(format!("statistics do not serialize: {e}")))?;
    store::save_report(
        pg,
        &job.test_id,
        test.key_version(),
        finalized.standings.len(),
        &statistics,
    )
    .await?;
    Ok(json!({
        "test_id": job.test_id,
        "key_version": test.key_version(),
        "candidates": finalized.standings.len(),
    }))
}

fn percent(done: i64, total: i64) -> u8 {
    if total <= 0 {
        100
    } else {
        (done.min(total) * 100 / total) as u8
    }
}

fn named(items: &[String]) -> String {
    let mut text = items[..items.len().min(NAMED)].join("; ");
    if items.len() > NAMED {
        text.push_str(&format!("; and {} more", items.len() - NAMED));
    }
    text
}
