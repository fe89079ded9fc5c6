//! The scoring tables: tests by key version, attempts, results, the candidates' statistics
//! and test reports. The `score.*` handlers call these; the scoring itself is pure
//! (`quizworker_jobs::scoring`).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use quizworker_jobs::exports::results_sheet::SheetResult;
use quizworker_jobs::scoring::{AttemptResult, Standing, TestDef};
use serde_json::Value;
use sqlx::PgPool;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The caller sent a test under a key version already stored with other content.
    #[error(
        "key version {key_version} of test `{test_id}` is already stored with a different definition; a revised key needs a new key_version"
    )]
    KeyVersionTaken { test_id: String, key_version: u32 },
    #[error("stored data does not read back: {0}")]
    Corrupt(String),
    /// A batch of results could not be written (the score writer shares one error among the
    /// jobs of the batch).
    #[error("the batch of results could not be written: {0}")]
    BatchFailed(String),
    #[error("the score writer has stopped")]
    WriterStopped,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// The two-key advisory lock space of key versions (the first key; the second is the test id's
/// hash). A new key version is stored under the test's lock held exclusively, and
/// [`save_current_scores`] checks and writes results under it held shared: so a result checked
/// against the newest key version has committed before a newer version can be stored, and a
/// rescore that follows the new version reads it.
const KEY_VERSION_LOCK: i32 = 0x5157_4b56; // "QWKV"

/// Stores a test's key version, or checks that the stored one is the same.
pub async fn store_test(pg: &PgPool, test: &TestDef) -> Result<(), StoreError> {
    let definition = serde_json::to_value(test).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let mut tx = pg.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
        .bind(KEY_VERSION_LOCK)
        .bind(&test.test_id)
        .execute(&mut *tx)
        .await?;
    let same: bool = sqlx::query_scalar(
        "WITH inserted AS (
            INSERT INTO score_tests (test_id, key_version, definition) VALUES ($1, $2, $3)
            ON CONFLICT (test_id, key_version) DO NOTHING
            RETURNING true AS same)
         SELECT same FROM inserted
         UNION ALL
         SELECT definition = $3 FROM score_tests WHERE test_id = $1 AND key_version = $2
         LIMIT 1",
    )
    .bind(&test.test_id)
    .bind(i64::from(test.key_version))
    .bind(&definition)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    if same {
        Ok(())
    } else {
        Err(StoreError::KeyVersionTaken {
            test_id: test.test_id.clone(),
            key_version: test.key_version,
        })
    }
}

/// A stored key version of a test: the given one, or the newest.
pub async fn load_test(
    pg: &PgPool,
    test_id: &str,
    key_version: Option<u32>,
) -> Result<Option<TestDef>, StoreError> {
    let definition: Option<Value> = sqlx::query_scalar(
        "SELECT definition FROM score_tests
          WHERE test_id = $1 AND ($2::bigint IS NULL OR key_version = $2)
          ORDER BY key_version DESC LIMIT 1",
    )
    .bind(test_id)
    .bind(key_version.map(i64::from))
    .fetch_optional(pg)
    .await?;
    definition
        .map(|d| serde_json::from_value(d).map_err(|e| StoreError::Corrupt(e.to_string())))
        .transpose()
}

/// The newest stored key version of a test, if the test is stored at all.
pub async fn newest_key_version(pg: &PgPool, test_id: &str) -> Result<Option<u32>, StoreError> {
    let newest: Option<i32> =
        sqlx::query_scalar("SELECT max(key_version) FROM score_tests WHERE test_id = $1")
            .bind(test_id)
            .fetch_one(pg)
            .await?;
    newest
        .map(|v| u32::try_from(v).map_err(|_| StoreError::Corrupt(format!("key version {v}"))))
        .transpose()
}

/// One attempt with its fresh result, ready to store. Built by the job that scored it, so the
/// JSON is written on that job's thread, not on the writer's.
#[derive(Debug)]
pub struct ScoreRow {
    attempt_id: String,
    test_id: String,
    candidate_id: Option<String>,
    /// The attempt as JSON text, as it is stored for rescoring.
    attempt: String,
    submitted_at: Option<DateTime<Utc>>,
    key_version: i64,
    marks: String,
    max_marks: String,
    provisional: bool,
    result: String,
    /// What a result sheet shows of the result (`SheetResult`).
    sheet: String,
    /// What the attempt adds to its candidate's statistics, as the JSON list of
    /// `score_results.contributions`; `None` without a candidate.
    contributions: Option<String>,
}

/// One entry of `score_results.contributions`: a section's or a topic's counts.
#[derive(serde::Serialize)]
struct Contribution<'a> {
    scope: &'static str,
    name: &'a str,
    seen: u32,
    judged: u32,
    correct: u32,
}

impl ScoreRow {
    pub fn new(
        attempt: String,
        submitted_at: Option<DateTime<Utc>>,
        result: &AttemptResult,
    ) -> Result<ScoreRow, StoreError> {
        let contributions = match result.candidate_id {
            None => None,
            Some(_) => {
                let sections = result
                    .sections
                    .iter()
                    .map(|x| ("section", &*x.id, &x.summary));
                let topics = result
                    .topics
                    .iter()
                    .map(|x| ("topic", &*x.topic, &x.summary));
                let list: Vec<Contribution> = sections
                    .chain(topics)
                    .map(|(scope, name, summary)| Contribution {
                        scope,
                        name,
                        seen: summary.counts.questions(),
                        judged: summary.counts.judged(),
                        correct: summary.counts.correct,
                    })
                    .collect();
                Some(json_text(&list, 64 * list.len())?)
            }
        };
        Ok(ScoreRow {
            attempt_id: result.attempt_id.clone(),
            test_id: result.test_id.to_string(),
            candidate_id: result.candidate_id.clone(),
            attempt,
            submitted_at,
            key_version: i64::from(result.key_version),
            marks: result.total.marks.to_string(),
            max_marks: result.total.max_marks.to_string(),
            provisional: result.provisional,
            result: json_text(result, 256 * result.questions().count() + 4096)?,
            sheet: json_text(&SheetResult::from(result), 1024)?,
            contributions,
        })
    }
}

/// What became of a row given to [`save_current_scores`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Saved {
    Stored,
    /// Not stored: its test has a newer key version than the one it was scored against.
    Stale {
        newest: u32,
    },
}

/// Stores the rows scored against their test's newest key version, as [`save_scores`] does,
/// and leaves out the others, saying which version is the newest. This is how a process learns
/// of a key revision made elsewhere without asking Postgres for the newest version per job.
pub async fn save_current_scores(pg: &PgPool, rows: &[ScoreRow]) -> Result<Vec<Saved>, StoreError> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let mut tests: Vec<&str> = rows.iter().map(|r| r.test_id.as_str()).collect();
    tests.sort_unstable();
    tests.dedup();
    let mut tx = begin_batch(pg).await?;
    sqlx::query(
        "SELECT count(pg_advisory_xact_lock_shared($1, hashtext(t))) FROM unnest($2::text[]) AS t",
    )
    .bind(KEY_VERSION_LOCK)
    .bind(&tests)
    .execute(&mut *tx)
    .await?;
    // A statement of its own, after the locks: its snapshot sees every key version stored
    // before them.
    let newest: HashMap<String, i32> = sqlx::query_as(
        "SELECT test_id, max(key_version) FROM score_tests WHERE test_id = ANY($1) GROUP BY test_id",
    )
    .bind(&tests)
    .fetch_all(&mut *tx)
    .await?
    .into_iter()
    .collect();
    let saved: Vec<Saved> = rows
        .iter()
        .map(|row| match newest.get(&row.test_id) {
            Some(&version) if i64::from(version) > row.key_version => Saved::Stale {
                newest: u32::try_from(version).unwrap_or(u32::MAX),
            },
            _ => Saved::Stored,
        })
        .collect();
    let current: Vec<&ScoreRow> = rows
        .iter()
        .zip(&saved)
        .filter(|(_, saved)| **saved == Saved::Stored)
        .map(|(row, _)| row)
        .collect();
    write_rows(&mut tx, current).await?;
    tx.commit().await?;
    Ok(saved)
}

/// Stores attempts and their results, replacing earlier results of the same attempts, and the
/// candidates' statistics with them. One transaction, a few statements whatever the count.
pub async fn save_scores(pg: &PgPool, rows: &[ScoreRow]) -> Result<(), StoreError> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut tx = begin_batch(pg).await?;
    write_rows(&mut tx, rows.iter().collect()).await?;
    tx.commit().await?;
    Ok(())
}

/// Begins a transaction that writes a batch of scores, set up for it:
/// - cached plans: the daemon's connections plan every statement afresh (for the journal: see
///   `commands::connect_postgres`), which here would re-plan the foreign-key check of each
///   result (measured: a quarter of Postgres' time on these writes), while its lookup by
///   primary key is served well by a cached plan;
/// - memory: a batch's documents reach Postgres as arrays that it holds while it inserts them,
///   and past the default `work_mem` (4 MB, about 200 results) it spilled them to a temporary
///   file first;
/// - no wait for the commit to reach the disk: a job completes only once its end is journaled,
///   in a later transaction whose commit does wait, and that flush takes these writes with it.
///   If Postgres crashes before, the job is not completed and runs again.
async fn begin_batch(
    pg: &PgPool,
) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, StoreError> {
    let mut tx = pg.begin().await?;
    sqlx::query(
        "SELECT set_config('plan_cache_mode', 'auto', true), set_config('work_mem', '64MB', true),
                set_config('synchronous_commit', 'off', true)",
    )
    .execute(&mut *tx)
    .await?;
    Ok(tx)
}

/// Writes rows in a transaction begun by [`begin_batch`].
///
/// An upsert cannot touch one row twice, so an attempt that appears again in `rows` is written
/// in a later round of the same transaction: the last one wins. Rows are written in attempt id
/// order, so two batches sharing attempts lock them in the same order and cannot deadlock.
async fn write_rows(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    mut pending: Vec<&ScoreRow>,
) -> Result<(), StoreError> {
    while !pending.is_empty() {
        let mut seen = std::collections::HashSet::new();
        let (mut round, later): (Vec<&ScoreRow>, Vec<&ScoreRow>) = pending
            .into_iter()
            .partition(|row| seen.insert(row.attempt_id.as_str()));
        round.sort_unstable_by(|a, b| a.attempt_id.cmp(&b.attempt_id));
        write_round(tx, &round).await?;
        pending = later;
    }
    Ok(())
}

async fn write_round(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    rows: &[&ScoreRow],
) -> Result<(), StoreError> {
    let ids: Vec<&str> = rows.iter().map(|r| r.attempt_id.as_str()).collect();
    let tests: Vec<&str> = rows.iter().map(|r| r.test_id.as_str()).collect();
    let candidates: Vec<Option<&str>> = rows.iter().map(|r| r.candidate_id.as_deref()).collect();
    let attempts: Vec<&str> = rows.iter().map(|r| r.attempt.as_str()).collect();
    let submitted: Vec<Option<DateTime<Utc>>> = rows.iter().map(|r| r.submitted_at).collect();
    sqlx::query(
        "INSERT INTO score_attempts (attempt_id, test_id, candidate_id, attempt, submitted_at)
         SELECT id, test, candidate, attempt::json, submitted
           FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[])
             AS t(id, test, candidate, attempt, submitted)
         ON CONFLICT (attempt_id) DO UPDATE
            SET test_id = EXCLUDED.test_id, candidate_id = EXCLUDED.candidate_id,
                attempt = EXCLUDED.attempt,
                submitted_at = COALESCE(EXCLUDED.submitted_at, score_attempts.submitted_at),
                updated_at = now()",
    )
    .bind(&ids)
    .bind(&tests)
    .bind(&candidates)
    .bind(&attempts)
    .bind(&submitted)
    .execute(&mut **tx)
    .await?;

    let versions: Vec<i64> = rows.iter().map(|r| r.key_version).collect();
    let marks: Vec<&str> = rows.iter().map(|r| r.marks.as_str()).collect();
    let max_marks: Vec<&str> = rows.iter().map(|r| r.max_marks.as_str()).collect();
    let provisional: Vec<bool> = rows.iter().map(|r| r.provisional).collect();
    let results: Vec<&str> = rows.iter().map(|r| r.result.as_str()).collect();
    let sheets: Vec<&str> = rows.iter().map(|r| r.sheet.as_str()).collect();
    let contributions: Vec<Option<&str>> =
        rows.iter().map(|r| r.contributions.as_deref()).collect();
    sqlx::query(
        "INSERT INTO score_results (attempt_id, test_id, candidate_id, key_version, marks,
                                    max_marks, provisional, result, sheet, contributions)
         SELECT id, test, candidate, version, marks, max_marks, provisional, result::json,
                sheet::json, contributions::json
           FROM UNNEST($1::text[], $2::text[], $3::text[], $4::int8[], $5::text[],
                       $6::text[], $7::bool[], $8::text[], $9::text[], $10::text[])
             AS t(id, test, candidate, version, marks, max_marks, provisional, result, sheet,
                  contributions)
         ON CONFLICT (attempt_id) DO UPDATE
            SET test_id = EXCLUDED.test_id, candidate_id = EXCLUDED.candidate_id,
                key_version = EXCLUDED.key_version, marks = EXCLUDED.marks,
                max_marks = EXCLUDED.max_marks, provisional = EXCLUDED.provisional,
                result = EXCLUDED.result, sheet = EXCLUDED.sheet,
                contributions = EXCLUDED.contributions, scored_at = now(),
                rank = NULL, percentile = NULL, finalized_at = NULL",
    )
    .bind(&ids)
    .bind(&tests)
    .bind(&candidates)
    .bind(&versions)
    .bind(&marks)
    .bind(&max_marks)
    .bind(&provisional)
    .bind(&results)
    .bind(&sheets)
    .bind(&contributions)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// A stored attempt with its test, as `ai.evaluate` reads it before grading.
#[derive(sqlx::FromRow)]
pub struct AttemptOfTest {
    pub test_id: String,
    /// The attempt's JSON text.
    pub attempt: String,
}

/// The stored attempt `attempt_id`, if any.
pub async fn load_attempt(
    pg: &PgPool,
    attempt_id: &str,
) -> Result<Option<AttemptOfTest>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT test_id, attempt::text AS attempt FROM score_attempts WHERE attempt_id = $1",
    )
    .bind(attempt_id)
    .fetch_optional(pg)
    .await?)
}

/// A stored attempt held for a change of its responses (the marks `ai.evaluate` awards), until
/// [`AttemptForUpdate::save`] commits its rescored result (dropped, nothing changes). It holds
/// the test's key-version lock shared, taken first as the score writer takes it, then the
/// attempt's row: no key version can be stored meanwhile, so a result scored against `newest`
/// is current when it commits, and a resubmission of the attempt waits and replaces it after.
pub struct AttemptForUpdate {
    tx: sqlx::Transaction<'static, sqlx::Postgres>,
    /// The test's newest key version.
    pub newest: u32,
    /// The attempt's JSON text, as stored now.
    pub attempt: String,
    pub submitted_at: Option<DateTime<Utc>>,
}

/// Holds the attempt `attempt_id` of test `test_id`; `None` if no such attempt is stored.
pub async fn attempt_for_update(
    pg: &PgPool,
    test_id: &str,
    attempt_id: &str,
) -> Result<Option<AttemptForUpdate>, StoreError> {
    let mut tx = begin_batch(pg).await?;
    sqlx::query("SELECT pg_advisory_xact_lock_shared($1, hashtext($2))")
        .bind(KEY_VERSION_LOCK)
        .bind(test_id)
        .execute(&mut *tx)
        .await?;
    let newest: Option<i32> =
        sqlx::query_scalar("SELECT max(key_version) FROM score_tests WHERE test_id = $1")
            .bind(test_id)
            .fetch_one(&mut *tx)
            .await?;
    let row: Option<(String, Option<DateTime<Utc>>)> = sqlx::query_as(
        "SELECT attempt::text, submitted_at FROM score_attempts
          WHERE attempt_id = $1 AND test_id = $2 FOR UPDATE",
    )
    .bind(attempt_id)
    .bind(test_id)
    .fetch_optional(&mut *tx)
    .await?;
    let (Some(newest), Some((attempt, submitted_at))) = (newest, row) else {
        return Ok(None);
    };
    Ok(Some(AttemptForUpdate {
        tx,
        newest: u32::try_from(newest)
            .map_err(|_| StoreError::Corrupt(format!("key version {newest}")))?,
        attempt,
        submitted_at,
    }))
}

impl AttemptForUpdate {
    /// Stores the attempt and its result (`row`, scored against [`Self::newest`]) and commits.
    pub async fn save(mut self, row: ScoreRow) -> Result<(), StoreError> {
        write_rows(&mut self.tx, vec![&row]).await?;
        self.tx.commit().await?;
        Ok(())
    }
}

/// A stored attempt, as submitted.
#[derive(sqlx::FromRow)]
pub struct StoredAttempt {
    pub attempt_id: String,
    /// The attempt's JSON text.
    pub attempt: String,
    pub submitted_at: Option<DateTime<Utc>>,
}

pub async fn count_attempts(pg: &PgPool, test_id: &str) -> Result<i64, StoreError> {
    Ok(
        sqlx::query_scalar("SELECT count(*) FROM score_attempts WHERE test_id = $1")
            .bind(test_id)
            .fetch_one(pg)
            .await?,
    )
}

/// A page of a test's attempts in id order, after `after`.
pub async fn attempts_page(
    pg: &PgPool,
    test_id: &str,
    after: &str,
    limit: i64,
) -> Result<Vec<StoredAttempt>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT attempt_id, attempt::text AS attempt, submitted_at FROM score_attempts
          WHERE test_id = $1 AND attempt_id > $2 ORDER BY attempt_id LIMIT $3",
    )
    .bind(test_id)
    .bind(after)
    .bind(limit)
    .fetch_all(pg)
    .await?)
}

/// A page of a test's results in attempt id order, after `after`.
pub async fn results_page(
    pg: &PgPool,
    test_id: &str,
    after: &str,
    limit: i64,
) -> Result<Vec<AttemptResult>, StoreError> {
    let rows: Vec<Value> = sqlx::query_scalar(
        "SELECT result FROM score_results
          WHERE test_id = $1 AND attempt_id > $2 ORDER BY attempt_id LIMIT $3",
    )
    .bind(test_id)
    .bind(after)
    .bind(limit)
    .fetch_all(pg)
    .await?;
    rows.into_iter()
        .map(|v| serde_json::from_value(v).map_err(|e| StoreError::Corrupt(e.to_string())))
        .collect()
}

/// `value` as JSON text, written into room for `expected` bytes (a 90-question result is about
/// 20 KB: grown from empty, it was copied eight times on the way).
fn json_text<T: serde::Serialize + ?Sized>(
    value: &T,
    expected: usize,
) -> Result<String, StoreError> {
    let mut text = Vec::with_capacity(expected);
    serde_json::to_writer(&mut text, value).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    String::from_utf8(text).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// Writes ranks and percentiles.
pub async fn save_standings(pg: &PgPool, standings: &[Standing]) -> Result<(), StoreError> {
    let ids: Vec<&str> = standings.iter().map(|s| s.attempt_id.as_str()).collect();
    let ranks: Vec<i64> = standings.iter().map(|s| i64::from(s.rank)).collect();
    let percentiles: Vec<String> = standings.iter().map(|s| s.percentile.to_string()).collect();
    sqlx::query(
        "UPDATE score_results r SET rank = i.rank, percentile = i.percentile, finalized_at = now()
           FROM UNNEST($1::text[], $2::int8[], $3::text[]) AS i(attempt_id, rank, percentile)
          WHERE r.attempt_id = i.attempt_id",
    )
    .bind(&ids)
    .bind(&ranks)
    .bind(&percentiles)
    .execute(pg)
    .await?;
    Ok(())
}

pub async fn save_report(
    pg: &PgPool,
    test_id: &str,
    key_version: u32,
    candidates: usize,
    statistics: &Value,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO score_test_reports (test_id, key_version, candidates, statistics)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT (test_id) DO UPDATE
            SET key_version = EXCLUDED.key_version, candidates = EXCLUDED.candidates,
                statistics = EXCLUDED.statistics, finalized_at = now()",
    )
    .bind(test_id)
    .bind(i64::from(key_version))
    .bind(i64::try_from(candidates).unwrap_or(i64::MAX))
    .bind(statistics)
    .execute(pg)
    .await?;
    Ok(())
}
