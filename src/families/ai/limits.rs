//! What an AI request must clear before it is sent, and settle once its reply is in: the daily
//! spend cap (`ai.daily_spend_cap_usd`, counted in Postgres over every process), a unit of the
//! `ai` queue's rate (requests a minute), and the tokens reckoned for it under
//! `ai.tokens_per_minute` (both in Redis, shared by every process: `runtime::rate_limit`).

use chrono::{DateTime, Utc};
use quizworker_jobs::Queue;
use quizworker_jobs::ai::budget::{estimate_tokens, next_spend_day, settlement};
use quizworker_jobs::ai::reply::Usage;
use serde_json::Value;
use sqlx::PgPool;

use crate::families::{JobError, Services};
use crate::ops::metrics;
use crate::runtime::rate_limit::{Meter, RateLimitError};

/// A request cleared to go, with the tokens it reserved.
#[must_use = "a reservation is settled with the reply, or released without one"]
pub struct Admitted {
    reserved: u64,
}

/// Clears one request with `body`: the cap first (a request it stops waits for nothing else),
/// then the rate and the tokens. A cap that is reached ends the attempt with
/// [`JobError::Snooze`] until the next UTC day; requests already sent finish.
pub async fn admit(services: &Services, body: &Value) -> Result<Admitted, JobError> {
    if let Some(cap) = services.ai.config.daily_spend_cap_usd {
        check_spend(&services.pg, cap).await?;
    }
    services
        .rates
        .acquire(Queue::Ai)
        .await
        .map_err(rate_error)?;
    let reserved = if services.rates.is_limited(Meter::AiTokens) {
        estimate_tokens(body, services.ai.config.output_tokens_estimate)
    } else {
        0
    };
    services
        .rates
        .acquire_n(Meter::AiTokens, reserved)
        .await
        .map_err(rate_error)?;
    Ok(Admitted { reserved })
}

/// The reply came: its `usage` settles what was reserved (a reply without one leaves the
/// estimate standing). A failure here is logged, not the job's: the reply is already paid for.
pub async fn settle(services: &Services, admitted: Admitted, usage: Option<&Usage>) {
    if let Some(usage) = usage {
        adjust(services, settlement(admitted.reserved, usage)).await;
    }
}

/// No completion came (an error status, no answer): a provider does not count the tokens of a
/// request it refused, so they are given back.
pub async fn release(services: &Services, admitted: Admitted) {
    let reserved = i64::try_from(admitted.reserved).unwrap_or(i64::MAX);
    adjust(services, -reserved).await;
}

async fn adjust(services: &Services, tokens: i64) {
    if let Err(e) = services.rates.settle(Meter::AiTokens, tokens).await {
        tracing::warn!(error = %e, source = %e.source, tokens,
            "could not settle a request's tokens; the limit keeps its estimate");
    }
}

/// Fails with a snooze to the next UTC day if today's spend has reached `cap`. The day and the
/// time are Postgres': the ledger's rows are stamped with its clock.
async fn check_spend(pg: &PgPool, cap: f64) -> Result<(), JobError> {
    let (now, spent) = spent_today(pg).await.map_err(|e| {
        JobError::Transient(format!("the AI spend of today could not be read: {e}"))
    })?;
    if spent < cap {
        return Ok(());
    }
    let until = next_spend_day(now);
    metrics::ai_spend_cap_reached();
    tracing::warn!(cap_usd = cap, spent_usd = spent, %until,
        "the daily AI spend cap is reached; AI requests wait for the next UTC day");
    Err(JobError::Snooze {
        until,
        reason: format!(
            "the daily AI spend cap (ai.daily_spend_cap_usd = {cap}) is reached: {spent:.4} USD spent on {} (UTC)",
            now.date_naive()
        ),
    })
}

/// Postgres' time and what the replies of its UTC day have cost so far.
pub async fn spent_today(pg: &PgPool) -> sqlx::Result<(DateTime<Utc>, f64)> {
    sqlx::query_as(
        "SELECT now(), coalesce((SELECT sum(cost_usd) FROM ai_spend_daily
                                  WHERE day = (now() AT TIME ZONE 'UTC')::date), 0)",
    )
    .fetch_one(pg)
    .await
}

fn rate_error(e: RateLimitError) -> JobError {
    JobError::Transient(format!("{e}: {}", e.source))
}
