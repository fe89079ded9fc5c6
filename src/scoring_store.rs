//! The scoring tables: tests by key version, attempts, results, the candidates' statistics
//! and test reports. The `score.*` handlers call these; the scoring itself is pure
//! (`quizworker_jobs::scoring`).

use chrono::{DateTime, Utc};
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
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Stores a test's key version, or checks that the stored one is the same.
pub async fn store_test(pg: &PgPool, test: &TestDef) -> Result<(), StoreError> {
    let definition = serde_json::to_value(test).map_err(|e| StoreError::Corrupt(e.to_string()))?;
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
    .fetch_one(pg)
    .await?;
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

/// One attempt with its fresh result, to be stored.
pub struct Scored<'a> {
    pub attempt: &'a Value,
    pub submitted_at: Option<DateTime<Utc>>,
    pub result: &'a AttemptResult,
}

/// Stores attempts and their results, replacing earlier results of the same attempts, and the
/// candidates' statistics with them. One transaction, a few statements whatever the count.
pub async fn save_scores(pg: &PgPool, scored: &[Scored<'_>]) -> Result<(), StoreError> {
    if scored.is_empty() {
        return Ok(());
    }
    let n = scored.len();
    let mut ids = Vec::with_capacity(n);
    let mut tests = Vec::with_capacity(n);
    let mut candidates = Vec::with_capacity(n);
    let mut attempts = Vec::with_capacity(n);
    let mut submitted = Vec::with_capacity(n);
    let mut versions = Vec::with_capacity(n);
    let mut marks = Vec::with_capacity(n);
    let mut max_marks = Vec::with_capacity(n);
    let mut provisional = Vec::with_capacity(n);
    let mut results = Vec::with_capacity(n);
    // Contributions: one row per attempt and section or topic.
    let (mut c_attempt, mut c_candidate, mut c_scope, mut c_name) =
        (vec![], vec![], vec![], vec![]);
    let (mut c_seen, mut c_judged, mut c_correct) = (vec![], vec![], vec![]);
    for s in scored {
        let r = s.result;
        ids.push(r.attempt_id.as_str());
        tests.push(&*r.test_id);
        candidates.push(r.candidate_id.as_deref());
        attempts.push(s.attempt);
        submitted.push(s.submitted_at);
        versions.push(i64::from(r.key_version));
        marks.push(r.total.marks.to_string());
        max_marks.push(r.total.max_marks.to_string());
        provisional.push(r.provisional);
        results.push(serde_json::to_value(r).map_err(|e| StoreError::Corrupt(e.to_string()))?);
        if let Some(candidate) = r.candidate_id.as_deref() {
            let sections = r.sections.iter().map(|x| ("section", &*x.id, &x.summary));
            let topics = r.topics.iter().map(|x| ("topic", &*x.topic, &x.summary));
            for (scope, name, summary) in sections.chain(topics) {
                c_attempt.push(r.attempt_id.as_str());
                c_candidate.push(candidate);
                c_scope.push(scope);
                c_name.push(name);
                c_seen.push(summary.counts.questions() as i32);
                c_judged.push(summary.counts.judged() as i32);
                c_correct.push(summary.counts.correct as i32);
            }
        }
    }

    let mut tx = pg.begin().await?;
    sqlx::query(
        "INSERT INTO score_attempts (attempt_id, test_id, candidate_id, attempt, submitted_at)
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::jsonb[], $5::timestamptz[])
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
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO score_results (attempt_id, test_id, candidate_id, key_version, marks,
                                    max_marks, provisional, result)
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::int8[], $5::text[],
                              $6::text[], $7::bool[], $8::jsonb[])
         ON CONFLICT (attempt_id) DO UPDATE
            SET test_id = EXCLUDED.test_id, candidate_id = EXCLUDED.candidate_id,
                key_version = EXCLUDED.key_version, marks = EXCLUDED.marks,
                max_marks = EXCLUDED.max_marks, provisional = EXCLUDED.provisional,
                result = EXCLUDED.result, scored_at = now(),
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
    .execute(&mut *tx)
    .await?;
    sqlx::query("DELETE FROM score_candidate_contributions WHERE attempt_id = ANY($1)")
        .bind(&ids)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "INSERT INTO score_candidate_contributions
                (attempt_id, candidate_id, scope, name, seen, judged, correct)
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::int4[],
                              $6::int4[], $7::int4[])",
    )
    .bind(&c_attempt)
    .bind(&c_candidate)
    .bind(&c_scope)
    .bind(&c_name)
    .bind(&c_seen)
    .bind(&c_judged)
    .bind(&c_correct)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// A stored attempt, as submitted.
#[derive(sqlx::FromRow)]
pub struct StoredAttempt {
    pub attempt_id: String,
    pub attempt: Value,
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
        "SELECT attempt_id, attempt, submitted_at FROM score_attempts
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
