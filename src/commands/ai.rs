//! `ai usage`: what the AI jobs asked of the provider and what it cost, from the usage ledger
//! (`ai_usage`, one row per billed reply), so an operator sees spend before the invoice does.

use std::time::Duration;

use serde::Serialize;

use super::connect_postgres;
use super::failure::bad_input;
use super::output::{self, outln};
use crate::cli::AiCommand;
use crate::config::Config;

pub async fn execute(config: &Config, command: AiCommand) -> anyhow::Result<()> {
    match command {
        AiCommand::Usage { since, json } => usage(config, since, json).await,
    }
}

/// One day, model and kind.
#[derive(Debug, Serialize, sqlx::FromRow)]
struct Usage {
    /// The day, UTC.
    day: chrono::NaiveDate,
    model: String,
    kind: String,
    requests: i64,
    input_tokens: i64,
    cached_tokens: i64,
    output_tokens: i64,
    cost_usd: f64,
}

async fn usage(config: &Config, since: Duration, json: bool) -> anyhow::Result<()> {
    let seconds = i64::try_from(since.as_secs())
        .ok()
        .filter(|s| *s > 0)
        .ok_or_else(|| bad_input("--since must be at least one second (e.g. 24h, 7d)"))?;
    let pg = connect_postgres(config).await?;
    let rows: Vec<Usage> = sqlx::query_as(
        "SELECT (created_at AT TIME ZONE 'UTC')::date AS day, model, kind,
                count(*) AS requests,
                sum(input_tokens)::bigint AS input_tokens,
                sum(cached_tokens)::bigint AS cached_tokens,
                sum(output_tokens)::bigint AS output_tokens,
                sum(cost_usd) AS cost_usd
           FROM ai_usage
          WHERE created_at >= now() - make_interval(secs => $1)
          GROUP BY 1, 2, 3
          ORDER BY 1, 2, 3",
    )
    .bind(seconds as f64)
    .fetch_all(&pg)
    .await?;
    if json {
        return output::print_json(&rows);
    }
    let mut table = output::table(&[
        "DAY",
        "MODEL",
        "KIND",
        "REQUESTS",
        "INPUT",
        "CACHED",
        "OUTPUT",
        "COST (USD)",
    ]);
    for r in &rows {
        table.add_row(vec![
            r.day.to_string(),
            output::text(&r.model),
            output::text(&r.kind),
            r.requests.to_string(),
            r.input_tokens.to_string(),
            r.cached_tokens.to_string(),
            r.output_tokens.to_string(),
            format!("{:.4}", r.cost_usd),
        ]);
    }
    let total = |f: fn(&Usage) -> i64| rows.iter().map(f).sum::<i64>().to_string();
    table.add_row(vec![
        "total".to_owned(),
        String::new(),
        String::new(),
        total(|r| r.requests),
        total(|r| r.input_tokens),
        total(|r| r.cached_tokens),
        total(|r| r.output_tokens),
        format!("{:.4}", rows.iter().map(|r| r.cost_usd).sum::<f64>()),
    ]);
    outln!("{table}")?;
    output::note(&format!(
        "since {} ago; days in UTC",
        humantime::format_duration(since)
    ));
    Ok(())
}
