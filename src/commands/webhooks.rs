//! `webhooks list|redeliver`: what was sent to which endpoint and how it answered; sending
//! again what a web tier missed.

use serde_json::json;

use super::connect_postgres;
use super::failure::{bad_input, excerpt};
use super::output::{self, outln};
use crate::cli::WebhooksCommand;
use crate::config::Config;
use crate::webhooks::store::{self, DeliveryFilter};

const STATES: [&str; 3] = ["pending", "delivered", "failed"];

pub async fn execute(config: &Config, command: WebhooksCommand) -> anyhow::Result<()> {
    match command {
        WebhooksCommand::List {
            job,
            state,
            limit,
            json,
        } => {
            if let Some(state) = &state
                && !STATES.contains(&state.as_str())
            {
                return Err(bad_input(format!(
                    "unknown delivery state {} in --state (states: {})",
                    excerpt(state),
                    STATES.join(", ")
                )));
            }
            list(config, &DeliveryFilter { job, state }, limit, json).await
        }
        WebhooksCommand::Redeliver { ids, json } => redeliver(config, &ids, json).await,
    }
}

async fn list(
    config: &Config,
    filter: &DeliveryFilter,
    limit: i64,
    json: bool,
) -> anyhow::Result<()> {
    let pg = connect_postgres(config).await?;
    let rows = store::list(&pg, filter, limit).await?;
    if json {
        return output::print_json(&rows);
    }
    let mut table = output::table(&[
        "ID", "JOB", "ENDPOINT", "EVENT", "STATE", "ATTEMPTS", "STATUS", "CREATED", "ERROR",
    ]);
    for d in &rows {
        table.add_row(vec![
            output::text(&d.id),
            output::text(&d.job_id),
            output::text(&d.endpoint),
            d.event.clone(),
            d.state.clone(),
            d.attempts.to_string(),
            d.last_status
                .map(|s| s.to_string())
                .unwrap_or_else(|| "-".into()),
            output::time(Some(d.created_at)),
            output::cell(d.last_error.as_deref(), 60),
        ]);
    }
    outln!("{table}")?;
    Ok(())
}

async fn redeliver(config: &Config, ids: &[String], json: bool) -> anyhow::Result<()> {
    let pg = connect_postgres(config).await?;
    let made = store::redeliver(&pg, ids).await?;
    let missing: Vec<&String> = ids
        .iter()
        .filter(|id| !made.iter().any(|(old, _)| old == *id))
        .collect();
    if json {
        output::print_json(&json!({
            "redelivered": made.iter().map(|(old, new)| json!({"of": old, "id": new}))
                .collect::<Vec<_>>(),
            "not_found": missing,
        }))?;
    } else {
        for (old, new) in &made {
            outln!("{old}: sent again as {new}")?;
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        let names: Vec<String> = missing.iter().map(|id| excerpt(id)).collect();
        anyhow::bail!("no delivery with id {}", names.join(", "))
    }
}
