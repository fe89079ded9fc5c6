//! `ai.evaluate`'s tables: the grade of each answer by attempt and question
//! (`ai_evaluations`), and the answers a job could not grade (`ai_evaluation_failures`). The
//! usage ledger (`ai_usage`) is `store`'s.

use std::collections::HashMap;

use quizworker_jobs::ai::grading::{CriterionGrade, Grade};
use quizworker_jobs::scoring::Marks;
use serde_json::Value;
use sqlx::PgPool;

use super::store::{EarlierFailure, Spent};

/// A grade stored earlier for an answer.
pub struct StoredGrade {
    /// What it was graded from (`grading::grade_key`): reused only under the same key.
    pub grade_key: String,
    pub grade: Grade,
    /// The job that graded it.
    pub job_id: String,
}

type GradeRow = (String, String, String, Value, String, String);

fn read_grade(
    (question_id, grade_key, awarded, criteria, feedback, job_id): GradeRow,
) -> Option<(String, StoredGrade)> {
    let criteria: Vec<CriterionGrade> = serde_json::from_value(criteria).ok()?;
    let awarded: Marks = awarded.parse().ok()?;
    Some((
        question_id,
        StoredGrade {
            grade_key,
            grade: Grade {
                criteria,
                awarded,
                feedback,
            },
            job_id,
        },
    ))
}

/// The grades stored for an attempt, by question id. A row that no longer reads back is left
/// out (graded again, and the new grade replaces it).
pub async fn grades_of(
    pg: &PgPool,
    attempt_id: &str,
) -> sqlx::Result<HashMap<String, StoredGrade>> {
    let rows: Vec<GradeRow> = sqlx::query_as(
        "SELECT question_id, grade_key, awarded, criteria, feedback, job_id
           FROM ai_evaluations WHERE attempt_id = $1",
    )
    .bind(attempt_id)
    .fetch_all(pg)
    .await?;
    Ok(rows.into_iter().filter_map(read_grade).collect())
}

/// A new grade of one answer.
pub struct NewGrade<'a> {
    pub attempt_id: &'a str,
    pub question_id: &'a str,
    pub grade_key: &'a str,
    pub model: &'a str,
    pub prompt_version: &'a str,
    pub grade: &'a Grade,
    pub max_marks: Marks,
    pub spent: Spent,
    pub duration_ms: i64,
    pub job_id: &'a str,
}

/// Stores a grade and returns the one stored now: this one, or the grade another job stored
/// meanwhile under the same key (the first stands, so every job applies the same marks). A
/// grade under another key (the answer or the rubric has changed since) is replaced.
pub async fn store_grade(pg: &PgPool, new: NewGrade<'_>) -> sqlx::Result<Option<StoredGrade>> {
    let criteria = serde_json::to_value(&new.grade.criteria).unwrap_or(Value::Null);
    let row: Option<GradeRow> = sqlx::query_as(
        "WITH stored AS (
            INSERT INTO ai_evaluations (attempt_id, question_id, grade_key, model, prompt_version,
                                        awarded, max_marks, criteria, feedback, requests,
                                        input_tokens, cached_tokens, output_tokens, cost_usd,
                                        duration_ms, job_id)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)
            ON CONFLICT (attempt_id, question_id) DO UPDATE
               SET grade_key = EXCLUDED.grade_key, model = EXCLUDED.model,
                   prompt_version = EXCLUDED.prompt_version, awarded = EXCLUDED.awarded,
                   max_marks = EXCLUDED.max_marks, criteria = EXCLUDED.criteria,
                   feedback = EXCLUDED.feedback, requests = EXCLUDED.requests,
                   input_tokens = EXCLUDED.input_tokens, cached_tokens = EXCLUDED.cached_tokens,
                   output_tokens = EXCLUDED.output_tokens, cost_usd = EXCLUDED.cost_usd,
                   duration_ms = EXCLUDED.duration_ms, job_id = EXCLUDED.job_id,
                   created_at = now()
             WHERE ai_evaluations.grade_key <> EXCLUDED.grade_key
            RETURNING question_id, grade_key, awarded, criteria, feedback, job_id)
         SELECT * FROM stored
         UNION ALL
         SELECT question_id, grade_key, awarded, criteria, feedback, job_id FROM ai_evaluations
          WHERE attempt_id = $1 AND question_id = $2 AND NOT EXISTS (SELECT FROM stored)",
    )
    .bind(new.attempt_id)
    .bind(new.question_id)
    .bind(new.grade_key)
    .bind(new.model)
    .bind(new.prompt_version)
    .bind(new.grade.awarded.to_string())
    .bind(new.max_marks.to_string())
    .bind(criteria)
    .bind(&new.grade.feedback)
    .bind(new.spent.requests)
    .bind(new.spent.input_tokens)
    .bind(new.spent.cached_tokens)
    .bind(new.spent.output_tokens)
    .bind(new.spent.cost_usd)
    .bind(new.duration_ms)
    .bind(new.job_id)
    .fetch_optional(pg)
    .await?;
    Ok(row.and_then(read_grade).map(|(_, stored)| stored))
}

/// Why an answer could not be graded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The reply did not match the schema, or its marks were off the range or the step, twice.
    InvalidReply,
    /// The model refused.
    Refused,
    /// The provider's content filter stopped the reply.
    ContentFilter,
    /// The API refused the request (a 4xx other than 401, 403, 404, 408, 409, 429).
    ClientError,
    /// The answer is longer than `ai.max_answer_chars`: not sent.
    TooLong,
}

impl Reason {
    pub fn name(self) -> &'static str {
        match self {
            Reason::InvalidReply => "invalid_reply",
            Reason::Refused => "refused",
            Reason::ContentFilter => "content_filter",
            Reason::ClientError => "client_error",
            Reason::TooLong => "too_long",
        }
    }
}

pub struct Failure<'a> {
    pub job_id: &'a str,
    pub question_id: &'a str,
    pub attempt_id: &'a str,
    pub attempt: u32,
    pub model: &'a str,
    pub prompt_version: &'a str,
    pub reason: Reason,
    pub detail: &'a str,
    pub reply: Option<&'a str>,
}

pub async fn record_failure(pg: &PgPool, failure: Failure<'_>) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO ai_evaluation_failures (job_id, question_id, attempt_id, attempt, model,
                                             prompt_version, reason, detail, reply)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         ON CONFLICT (job_id, question_id) DO NOTHING",
    )
    .bind(failure.job_id)
    .bind(failure.question_id)
    .bind(failure.attempt_id)
    .bind(i32::try_from(failure.attempt).unwrap_or(i32::MAX))
    .bind(failure.model)
    .bind(failure.prompt_version)
    .bind(failure.reason.name())
    .bind(failure.detail)
    .bind(failure.reply)
    .execute(pg)
    .await?;
    Ok(())
}

/// The answers a job failed to grade in its earlier attempts, by question id.
pub async fn failures_of(
    pg: &PgPool,
    job_id: &str,
) -> sqlx::Result<HashMap<String, EarlierFailure>> {
    let rows: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT question_id, reason, detail FROM ai_evaluation_failures WHERE job_id = $1",
    )
    .bind(job_id)
    .fetch_all(pg)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, reason, detail)| (id, EarlierFailure { reason, detail }))
        .collect())
}
