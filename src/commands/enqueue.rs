//! `enqueue`: the operator's producer, on the same path as every other producer.

use anyhow::{Context, bail};
use chrono::Utc;
use quizworker_jobs::{Envelope, Queue, catalogue};
use serde_json::{Value, json};

use crate::cli::EnqueueArgs;
use crate::config::Config;
use crate::runtime::producer::Producer;
use crate::runtime::queue::RedisQueues;

pub async fn enqueue(config: &Config, args: EnqueueArgs) -> anyhow::Result<()> {
    let Some(kind) = catalogue::kind(&args.kind) else {
        let known: Vec<&str> = catalogue::KINDS.iter().map(|k| k.name).collect();
        bail!(
            "unknown job kind `{}` (known kinds: {})",
            args.kind,
            known.join(", ")
        );
    };
    let payload: Value =
        serde_json::from_str(&args.payload).context("--payload is not valid JSON")?;
    (kind.validate)(&payload)
        .map_err(|e| anyhow::anyhow!("--payload does not match kind `{}`: {e}", kind.name))?;
    let queue = match &args.queue {
        Some(name) => name.parse::<Queue>().context("in --queue")?,
        None => kind.queue,
    };
    if args.max_attempts.is_some_and(|n| !(1..=1000).contains(&n)) {
        bail!("--max-attempts must be from 1 to 1000");
    }

    let now = Utc::now();
    let mut envelope = Envelope::from_parts(kind.name, &payload, now);
    envelope.idempotency_key = args.idempotency_key;
    envelope.max_attempts = args.max_attempts;
    envelope.run_at = args.delay.map(|delay| now + delay);

    let redis = RedisQueues::connect(config).await?;
    let producer = Producer::new(config, redis, super::connect_postgres(config).await?);
    let enqueued = producer.enqueue(queue, &envelope).await?;
    if args.json {
        println!(
            "{}",
            json!({ "id": enqueued.id, "queue": queue.name(), "created": enqueued.created })
        );
    } else {
        println!("{}", enqueued.id);
        if !enqueued.created {
            eprintln!("the idempotency key was already used: that is the existing job's id");
        }
    }
    Ok(())
}
