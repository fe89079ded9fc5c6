//! The worker pool: one apalis worker per queue this process runs, fed by apalis-redis, woken
//! by Redis pub/sub when jobs arrive, paused and resumed by operators, and supervised: a worker
//! that dies takes the process down with a non-zero exit (systemd restarts it), and a shutdown
//! lets running jobs finish, then hands the rest back to the queue.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use apalis::layers::WorkerBuilderExt;
use apalis_core::backend::codec::Codec;
use apalis_core::backend::ext::BackendExt;
use apalis_core::backend::ext::poll_strategy::Strategy;
use apalis_core::error::BoxDynError;
use apalis_core::task::data::Data;
use apalis_core::task::task_id::TaskId;
use apalis_core::worker::builder::WorkerBuilder;
use apalis_core::worker::context::WorkerContext;
use apalis_redis::RedisStorage;
use futures::StreamExt;
use futures::channel::mpsc;
use quizworker_jobs::Queue;
use tokio::task::JoinSet;

use crate::config::Config;
use crate::executor::Executor;
use crate::queue::{self, RedisQueues};

/// Hands apalis the bytes stored in Redis untouched: decoding is the executor's, so a payload
/// that is not even JSON fails as one job instead of killing the worker (shared/notes trap 1).
#[derive(Debug, Clone, Copy)]
struct RawBytes;

impl Codec<Vec<u8>> for RawBytes {
    type Error = Infallible;
    type Compact = Vec<u8>;

    fn encode(&self, value: &Vec<u8>) -> Result<Vec<u8>, Infallible> {
        Ok(value.clone())
    }

    fn decode(&self, value: &Vec<u8>) -> Result<Vec<u8>, Infallible> {
        Ok(value.clone())
    }
}

#[derive(Clone)]
struct QueueJob {
    executor: Executor,
    queue: Queue,
}

async fn handle(
    raw: Vec<u8>,
    id: TaskId,
    worker: WorkerContext,
    job: Data<QueueJob>,
) -> Result<(), BoxDynError> {
    job.executor
        .execute(job.queue, worker.name(), &id.to_string(), &raw)
        .await;
    Ok(())
}

struct RunningWorker {
    queue: Queue,
    context: WorkerContext,
}

/// Runs workers for `queues` until `shutdown` resolves (Ok) or a worker dies (Err).
pub async fn run(
    config: Arc<Config>,
    executor: Executor,
    redis: RedisQueues,
    queues: &[Queue],
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    // Unique per process, so a restart is never refused as "still active" and a dead
    // process' jobs are recognised as orphans (shared/notes traps 3 and 6).
    let worker_name = format!(
        "{}-{}-{}",
        hostname(),
        std::process::id(),
        ulid::Ulid::new()
    );
    let mut wakers = HashMap::new();
    let mut workers = Vec::new();
    let mut tasks = JoinSet::new();
    for &queue in queues {
        let queue_config = config.queue(queue);
        let (wake_tx, wake_rx) = mpsc::channel::<()>(1);
        wakers.insert(
            format!("tasks:{}:active:available", redis.name(queue)),
            wake_tx,
        );
        let storage_config = apalis_redis::Config::default()
            .queue(redis.name(queue))
            .batch_size(config.worker.fetch_batch)
            .heartbeat_interval(config.worker.heartbeat_interval)
            .missed_heartbeats(config.worker.missed_heartbeats as usize)
            // Its per-task locking makes throughput fall as the backlog grows (trap 10).
            .lock_tasks(false)
            .persist_results(true)
            .emit_events(false);
        let storage = RedisStorage::<Vec<u8>>::new(queue::connect(&config).await?)
            .with_config(storage_config)
            .with_codec(RawBytes)
            .poll_with_strategy(
                Strategy::new()
                    .stream(wake_rx)
                    .interval(config.worker.poll_interval),
            );
        let context = WorkerContext::new(&worker_name);
        let worker = WorkerBuilder::new(context.clone())
            .backend(storage)
            .concurrency(queue_config.concurrency)
            .data(QueueJob {
                executor: executor.clone(),
                queue,
            })
            .build(handle);
        tasks.spawn(async move { (queue, worker.run().await) });
        workers.push(RunningWorker { queue, context });
    }
    let listener = tokio::spawn(wake_on_publish(config.clone(), wakers));
    let pauser = tokio::spawn(follow_pauses(
        redis.clone(),
        workers
            .iter()
            .map(|w| (w.queue, w.context.clone()))
            .collect(),
        config.worker.pause_check_interval,
    ));
    tracing::info!(
        worker = %worker_name,
        queues = %queues.iter().map(|q| q.name()).collect::<Vec<_>>().join(","),
        "quizworker ready"
    );

    tokio::pin!(shutdown);
    let died = tokio::select! {
        () = &mut shutdown => None,
        Some(ended) = tasks.join_next() => Some(ended),
    };
    listener.abort();
    pauser.abort();
    for worker in &workers {
        let _ = worker.context.stop();
    }
    let death = match died {
        None => {
            tracing::info!(timeout = ?config.worker.shutdown_timeout, "shutting down: waiting for running jobs");
            None
        }
        Some(Ok((queue, Ok(())))) => Some(format!("the {queue} worker stopped by itself")),
        Some(Ok((queue, Err(e)))) => Some(format!("the {queue} worker died: {e}")),
        Some(Err(e)) => Some(format!("a worker task failed: {e}")),
    };
    if let Some(reason) = &death {
        tracing::error!("{reason}; stopping the other workers");
    }

    let drained = tokio::time::timeout(config.worker.shutdown_timeout, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tasks.abort_all();
        let interrupted = executor.interrupt_running().await;
        tracing::warn!(
            interrupted,
            "shutdown timeout reached; handing running jobs back"
        );
    }
    for worker in &workers {
        match redis.hand_back(worker.queue, &worker_name).await {
            Ok(0) => {}
            Ok(n) => {
                tracing::info!(queue = %worker.queue, jobs = n, "handed jobs back to the queue")
            }
            Err(e) => tracing::error!(queue = %worker.queue, error = %e,
                "could not hand jobs back; another process takes them once this one's heartbeat expires"),
        }
    }
    match death {
        Some(reason) => bail!(reason),
        None => Ok(()),
    }
}

/// Wakes a queue's worker when a producer publishes that a job is ready, so a new job starts
/// within milliseconds instead of at the next poll.
async fn wake_on_publish(config: Arc<Config>, mut wakers: HashMap<String, mpsc::Sender<()>>) {
    let mut wait = Duration::from_millis(100);
    loop {
        let result: anyhow::Result<()> = async {
            let client = redis::Client::open(config.redis.url.as_str())?;
            let mut pubsub = client.get_async_pubsub().await?;
            for channel in wakers.keys() {
                pubsub.subscribe(channel).await?;
            }
            let mut messages = pubsub.on_message();
            while let Some(message) = messages.next().await {
                if let Some(waker) = wakers.get_mut(message.get_channel_name()) {
                    // A full channel already holds a wake-up: nothing is lost by dropping this one.
                    let _ = waker.try_send(());
                }
            }
            bail!("the subscription ended")
        }
        .await;
        if let Err(e) = result {
            tracing::warn!(error = %e, retry_in = ?wait, "lost the Redis subscription; workers fall back to polling");
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(5));
    }
}

/// Applies `queues pause` and `queues resume` to this process' workers.
async fn follow_pauses(redis: RedisQueues, workers: Vec<(Queue, WorkerContext)>, every: Duration) {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let paused = match redis.paused().await {
            Ok(paused) => paused,
            Err(e) => {
                tracing::warn!(error = %e, "could not read the paused queues");
                continue;
            }
        };
        for (queue, context) in &workers {
            let want_paused = paused.contains(queue);
            if want_paused && context.is_running() {
                if context.pause().is_ok() {
                    tracing::info!(%queue, "queue paused by an operator");
                }
            } else if !want_paused && context.is_paused() && context.resume().is_ok() {
                tracing::info!(%queue, "queue resumed by an operator");
            }
        }
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".to_owned())
}

/// The queues to run: all of them, or the comma-separated list an operator gave.
pub fn select_queues(list: Option<&str>) -> anyhow::Result<Vec<Queue>> {
    let Some(list) = list else {
        return Ok(Queue::ALL.to_vec());
    };
    let mut queues = Vec::new();
    for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let queue: Queue = name.parse().context("in --queues")?;
        if !queues.contains(&queue) {
            queues.push(queue);
        }
    }
    if queues.is_empty() {
        bail!("--queues names no queue");
    }
    Ok(queues)
}
