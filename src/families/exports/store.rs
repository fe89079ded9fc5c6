//! What the `export.*` jobs read from the scoring tables (`families::scoring::store` writes them): a test's
//! results as a stream of sheet rows, in rank order, and one attempt's result for its report
//! card.

use chrono::{DateTime, Utc};
use futures::{Stream, StreamExt};
use quizworker_jobs::exports::results_sheet::{SheetResult, SheetRow};
use quizworker_jobs::scoring::{AttemptResult, TestDef};
use sqlx::PgPool;
use sqlx::types::Json;

use super::test_report::Statistics;
use crate::families::scoring::store::StoreError;

/// How many results a test has.
pub async fn count_results(pg: &PgPool, test_id: &str) -> Result<i64, StoreError> {
    Ok(
        sqlx::query_scalar("SELECT count(*) FROM score_results WHERE test_id = $1")
            .bind(test_id)
            .fetch_one(pg)
            .await?,
    )
}

type SheetRecord = (
    String,
    Option<String>,
    Option<i32>,
    Option<String>,
    Option<DateTime<Utc>>,
    Json<SheetResult>,
);

/// Every result of a test, best rank first (unranked ones last), then by attempt id: rows come
/// off the connection as they are read, so memory does not grow with the test.
pub fn sheet_rows<'a>(
    pg: &'a PgPool,
    test_id: &'a str,
) -> impl Stream<Item = Result<SheetRow, StoreError>> + Send + 'a {
    sqlx::query_as::<_, SheetRecord>(
        "SELECT r.attempt_id, r.candidate_id, r.rank, r.percentile, a.submitted_at, r.sheet
           FROM score_results r JOIN score_attempts a USING (attempt_id)
          WHERE r.test_id = $1
          ORDER BY r.rank NULLS LAST, r.attempt_id",
    )
    .bind(test_id)
    .fetch(pg)
    .map(|row| {
        let (attempt_id, candidate_id, rank, percentile, submitted_at, Json(result)) = row?;
        Ok(SheetRow {
            attempt_id,
            candidate_id,
            rank: rank.map(i64::from),
            percentile,
            submitted_at,
            result,
        })
    })
}

/// One attempt's stored result with what a report card shows beside it.
pub struct CardData {
    pub result: AttemptResult,
    /// The key version the result was scored against (`None` if it is gone).
    pub test: Option<TestDef>,
    pub candidate_id: Option<String>,
    /// The attempt's `candidate_name`, as the producer sent it.
    pub candidate_name: Option<String>,
    pub rank: Option<i64>,
    pub percentile: Option<String>,
    pub submitted_at: Option<DateTime<Utc>>,
}

type CardRecord = (
    Json<AttemptResult>,
    Option<Json<TestDef>>,
    Option<String>,
    Option<String>,
    Option<i32>,
    Option<String>,
    Option<DateTime<Utc>>,
);

/// The result of an attempt for its report card, or `None` if the attempt has none.
pub async fn report_card(pg: &PgPool, attempt_id: &str) -> Result<Option<CardData>, StoreError> {
    let row: Option<CardRecord> = sqlx::query_as(
        "SELECT r.result, t.definition, a.candidate_id, a.attempt->>'candidate_name', r.rank,
                r.percentile, a.submitted_at
           FROM score_results r JOIN score_attempts a USING (attempt_id)
           LEFT JOIN score_tests t ON t.test_id = r.test_id AND t.key_version = r.key_version
          WHERE r.attempt_id = $1",
    )
    .bind(attempt_id)
    .fetch_optional(pg)
    .await?;
    Ok(row.map(
        |(Json(result), test, candidate_id, candidate_name, rank, percentile, submitted_at)| {
            CardData {
                result,
                test: test.map(|Json(t)| t),
                candidate_id,
                candidate_name,
                rank: rank.map(i64::from),
                percentile,
                submitted_at,
            }
        },
    ))
}

/// A finalized test's statistics and its definition, or `None` if it was never finalized.
pub async fn test_report(
    pg: &PgPool,
    test_id: &str,
) -> Result<Option<(Statistics, Option<TestDef>)>, StoreError> {
    let row: Option<(Json<Statistics>, Option<Json<TestDef>>)> = sqlx::query_as(
        "SELECT r.statistics, t.definition
           FROM score_test_reports r
           LEFT JOIN score_tests t ON t.test_id = r.test_id AND t.key_version = r.key_version
          WHERE r.test_id = $1",
    )
    .bind(test_id)
    .fetch_optional(pg)
    .await?;
    Ok(row.map(|(Json(stats), test)| (stats, test.map(|Json(t)| t))))
}
