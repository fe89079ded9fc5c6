//! `enqueue`: the operator's producer, on the same path as every other producer.

use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Datelike, TimeDelta, Utc};
use quizworker_jobs::{Envelope, catalogue};
use serde_json::{Value, json};

use super::failure::{Mark, bad_input, excerpt};
use super::output::{self, outln};
use crate::cli::EnqueueArgs;
use crate::config::Config;
use crate::runtime::producer::Producer;

pub async fn enqueue(config: &Config, args: EnqueueArgs) -> anyhow::Result<()> {
    let Some(kind) = catalogue::kind(&args.kind) else {
        let known: Vec<&str> = catalogue::KINDS.iter().map(|k| k.name).collect();
        return Err(bad_input(format!(
            "unknown job kind {} (known kinds: {})",
            excerpt(&args.kind),
            known.join(", ")
        )));
    };
    let payload: Value = serde_json::from_str(&args.payload)
        .context("--payload is not valid JSON")
        .bad_input()?;
    (kind.validate)(&payload).map_err(|e| {
        bad_input(format!(
            "--payload does not match kind `{}`: {e}",
            kind.name
        ))
    })?;
    let queue = match &args.queue {
        Some(name) => super::parse_queue("--queue", name)?,
        None => kind.queue,
    };
    if args.max_attempts.is_some_and(|n| !(1..=1000).contains(&n)) {
        return Err(bad_input("--max-attempts must be from 1 to 1000"));
    }

    let now = Utc::now();
    let mut envelope = Envelope::from_parts(kind.name, &payload, now);
    envelope.idempotency_key = args.idempotency_key;
    envelope.max_attempts = args.max_attempts;
    envelope.run_at = args.delay.map(|delay| run_at(now, delay)).transpose()?;

    let redis = super::connect_redis(config).await?;
    let producer = Producer::new(config, redis, super::connect_postgres(config).await?);
    let enqueued = producer.enqueue(queue, &envelope).await?;
    if args.json {
        output::print_json(
            &json!({ "id": enqueued.id, "queue": queue.name(), "created": enqueued.created }),
        )?;
    } else {
        outln!("{}", enqueued.id)?;
        if !enqueued.created {
            output::note("the idempotency key was already used: that is the existing job's id");
        }
    }
    Ok(())
}

/// When a job delayed by `delay` from `now` runs. The wire format's times are RFC 3339, whose
/// years have four digits.
fn run_at(now: DateTime<Utc>, delay: Duration) -> anyhow::Result<DateTime<Utc>> {
    TimeDelta::from_std(delay)
        .ok()
        .and_then(|delay| now.checked_add_signed(delay))
        .filter(|at| at.year() <= 9999)
        .ok_or_else(|| {
            bad_input(format!(
                "--delay {} is too long: a job must run before the year 10000",
                humantime::format_duration(delay)
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delay_past_the_year_9999_is_refused_not_a_panic() {
        let now = Utc::now();
        let hour = Duration::from_secs(3600);
        assert_eq!(run_at(now, hour).unwrap(), now + hour);
        for years in ["9000y", "300000y", "500000000y"] {
            let delay = humantime::parse_duration(years).unwrap();
            let err = run_at(now, delay).unwrap_err().to_string();
            assert!(err.contains("too long"), "{years}: {err}");
        }
    }
}
