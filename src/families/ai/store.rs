//! The AI family's tables: hints by cache key (`ai_hints`), the questions whose hints could not
//! be had (`ai_hint_failures`), and every billed reply (`ai_usage`).

use std::collections::HashMap;

use quizworker_jobs::ai::Hints;
use serde_json::Value;
use sqlx::PgPool;

/// Hints stored earlier under a cache key.
pub struct Stored {
    pub hints: Hints,
    /// The job that generated them.
    pub job_id: String,
}

/// The hints stored under each of `cache_keys` that has some, by cache key: one query for a
/// job's questions. Hints that no longer read back are treated as absent (generated again, and
/// the new ones not stored over them).
pub async fn cached(pg: &PgPool, cache_keys: &[String]) -> sqlx::Result<HashMap<String, Stored>> {
    let rows: Vec<(String, Value, String)> =
        sqlx::query_as("SELECT cache_key, hints, job_id FROM ai_hints WHERE cache_key = ANY($1)")
            .bind(cache_keys)
            .fetch_all(pg)
            .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(key, hints, job_id)| {
            let hints = serde_json::from_value(hints).ok()?;
            Some((key, Stored { hints, job_id }))
        })
        .collect())
}

/// What one question's requests cost, summed.
#[derive(Debug, Clone, Copy, Default)]
pub struct Spent {
    pub requests: i32,
    pub input_tokens: i64,
    pub cached_tokens: i64,
    pub output_tokens: i64,
    pub cost_usd: f64,
}

/// New hints; their model, prompt version and job are those of the usage stored with them. A
/// question stored meanwhile by another job keeps its first hints.
pub struct NewHints<'a> {
    pub cache_key: &'a str,
    pub question: Value,
    pub hints: &'a Hints,
    pub spent: Spent,
    pub duration_ms: i64,
}

/// Stores new hints with the usage of the reply that brought them, in one statement: one
/// commit for both, and neither without the other.
pub async fn store(pg: &PgPool, usage: UsageRow<'_>, new: NewHints<'_>) -> sqlx::Result<()> {
    let hints = serde_json::to_value(new.hints).unwrap_or(Value::Null);
    let query = sqlx::query(
        "WITH usage AS (
             INSERT INTO ai_usage (job_id, kind, model, prompt_version, outcome, input_tokens,
                                   cached_tokens, output_tokens, cost_usd, duration_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
         )
         INSERT INTO ai_hints (cache_key, model, prompt_version, question, hints, requests,
                               input_tokens, cached_tokens, output_tokens, cost_usd, duration_ms,
                               job_id)
         VALUES ($11, $3, $4, $12, $13, $14, $15, $16, $17, $18, $19, $1)
         ON CONFLICT (cache_key) DO NOTHING",
    );
    bind_usage(query, &usage)
        .bind(new.cache_key)
        .bind(new.question)
        .bind(hints)
        .bind(new.spent.requests)
        .bind(new.spent.input_tokens)
        .bind(new.spent.cached_tokens)
        .bind(new.spent.output_tokens)
        .bind(new.spent.cost_usd)
        .bind(new.duration_ms)
        .execute(pg)
        .await?;
    Ok(())
}

/// Why a question's hints could not be had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The hints stated the key twice (the second time after a regeneration).
    Leak,
    /// The reply did not match the schema twice.
    InvalidReply,
    /// The model refused.
    Refused,
    /// The provider's content filter stopped the reply.
    ContentFilter,
    /// The API refused the request (a 4xx other than 401, 403, 404, 408, 409, 429).
    ClientError,
}

impl Reason {
    pub fn name(self) -> &'static str {
        match self {
            Reason::Leak => "leak",
            Reason::InvalidReply => "invalid_reply",
            Reason::Refused => "refused",
            Reason::ContentFilter => "content_filter",
            Reason::ClientError => "client_error",
        }
    }
}

pub struct Failure<'a> {
    pub job_id: &'a str,
    pub question_id: &'a str,
    pub attempt: u32,
    pub cache_key: &'a str,
    pub model: &'a str,
    pub prompt_version: &'a str,
    pub reason: Reason,
    pub detail: &'a str,
    pub reply: Option<&'a str>,
}

pub async fn record_failure(pg: &PgPool, failure: Failure<'_>) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO ai_hint_failures (job_id, question_id, attempt, cache_key, model,
                                       prompt_version, reason, detail, reply)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         ON CONFLICT (job_id, question_id) DO NOTHING",
    )
    .bind(failure.job_id)
    .bind(failure.question_id)
    .bind(i32::try_from(failure.attempt).unwrap_or(i32::MAX))
    .bind(failure.cache_key)
    .bind(failure.model)
    .bind(failure.prompt_version)
    .bind(failure.reason.name())
    .bind(failure.detail)
    .bind(failure.reply)
    .execute(pg)
    .await?;
    Ok(())
}

/// A question that failed in an earlier attempt of the job: its reason and detail.
pub struct EarlierFailure {
    pub reason: String,
    pub detail: String,
}

/// The questions of a job that failed in its earlier attempts, by question id.
pub async fn failures_of(
    pg: &PgPool,
    job_id: &str,
) -> sqlx::Result<HashMap<String, EarlierFailure>> {
    let rows: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT question_id, reason, detail FROM ai_hint_failures WHERE job_id = $1",
    )
    .bind(job_id)
    .fetch_all(pg)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, reason, detail)| (id, EarlierFailure { reason, detail }))
        .collect())
}

/// One billed reply.
pub struct UsageRow<'a> {
    pub job_id: &'a str,
    pub kind: &'a str,
    pub model: &'a str,
    pub prompt_version: &'a str,
    /// `answered`, `invalid`, `leak`, `refused` or `filtered`.
    pub outcome: &'static str,
    pub input_tokens: i64,
    pub cached_tokens: i64,
    pub output_tokens: i64,
    pub cost_usd: f64,
    pub duration_ms: i64,
}

pub async fn record_usage(pg: &PgPool, row: UsageRow<'_>) -> sqlx::Result<()> {
    let query = sqlx::query(
        "INSERT INTO ai_usage (job_id, kind, model, prompt_version, outcome, input_tokens,
                               cached_tokens, output_tokens, cost_usd, duration_ms)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    );
    bind_usage(query, &row).execute(pg).await?;
    Ok(())
}

/// Binds `row` as the parameters $1 to $10 of an insert into `ai_usage`.
fn bind_usage<'q>(
    query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    row: &UsageRow<'q>,
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    query
        .bind(row.job_id)
        .bind(row.kind)
        .bind(row.model)
        .bind(row.prompt_version)
        .bind(row.outcome)
        .bind(row.input_tokens)
        .bind(row.cached_tokens)
        .bind(row.output_tokens)
        .bind(row.cost_usd)
        .bind(row.duration_ms)
}
