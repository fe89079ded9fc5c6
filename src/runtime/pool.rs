//! The worker pool: one apalis worker per queue this process runs, fed by apalis-redis, woken
//! by Redis pub/sub when jobs arrive, paused and resumed by operators, and supervised. A worker
//! dies when Redis goes away or refuses it; its jobs that still run in this process go on and
//! stay its own until they end, the others go back to the queue, and a new worker starts. One
//! that keeps dying takes the process down with a non-zero exit (systemd restarts it). A
//! shutdown lets running jobs finish, then hands the rest back to the queue.

use std::collections::{HashMap, HashSet, VecDeque};
use std::convert::Infallible;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use apalis::layers::WorkerBuilderExt;
use apalis_core::backend::codec::Codec;
use apalis_core::backend::ext::BackendExt;
use apalis_core::backend::ext::poll_strategy::Strategy;
use apalis_core::error::{BoxDynError, WorkerError};
use apalis_core::task::data::Data;
use apalis_core::task::task_id::TaskId;
use apalis_core::worker::builder::WorkerBuilder;
use apalis_core::worker::context::WorkerContext;
use apalis_redis::RedisStorage;
use futures::StreamExt;
use futures::channel::mpsc;
use quizworker_jobs::Queue;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::config::Config;
use crate::ops::health::Health;
use crate::runtime::executor::Executor;
use crate::runtime::process::Process;
use crate::runtime::queue::{self, HeldEntry, RedisQueues};

/// Hands apalis the bytes stored in Redis untouched: decoding is the executor's, so a payload
/// that is not even JSON fails as one job instead of killing the worker (docs/ARCHITECTURE.md).
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
    // If this worker dies (Redis went away) the job still finishes and its outcome reaches
    // the journal; the redelivery that follows finds it done.
    job.executor
        .run(job.queue, worker.name().to_owned(), id.to_string(), raw)
        .await;
    Ok(())
}

/// A worker that dies this often within [`RESTART_WINDOW`] while Redis answers is not going to
/// get better by itself: the process exits non-zero and systemd starts it afresh.
const MAX_RESTARTS: usize = 5;
const RESTART_WINDOW: Duration = Duration::from_secs(60);
/// The wait before a new worker starts after the first death; it doubles with every death
/// within [`RESTART_WINDOW`], up to [`MAX_WAIT`].
const FIRST_WAIT: Duration = Duration::from_millis(100);
const MAX_WAIT: Duration = Duration::from_secs(10);

/// What the pool's tasks share.
struct Shared {
    config: Arc<Config>,
    executor: Executor,
    redis: RedisQueues,
    health: Arc<Health>,
    /// Workers are named after the process (`runtime::process`).
    process_name: String,
    /// Each queue's current worker: its name, its context, and the sender that wakes it.
    current: Mutex<HashMap<Queue, Current>>,
    /// Dead workers whose jobs still run here, each released by a task of `releases`.
    held: Mutex<HashSet<(Queue, String)>>,
    releases: Mutex<JoinSet<()>>,
}

struct Current {
    name: String,
    context: WorkerContext,
    wake: mpsc::Sender<()>,
}

/// Runs workers for `queues` until `shutdown` resolves (Ok) or a worker keeps dying (Err).
pub async fn run(
    config: Arc<Config>,
    executor: Executor,
    redis: RedisQueues,
    health: Arc<Health>,
    process: &Process,
    queues: &[Queue],
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let shared = Arc::new(Shared {
        config: config.clone(),
        executor: executor.clone(),
        redis: redis.clone(),
        health,
        process_name: process.name().to_owned(),
        current: Mutex::new(HashMap::new()),
        held: Mutex::default(),
        releases: Mutex::default(),
    });
    for &queue in queues {
        shared.health.set_worker(queue, false);
    }
    let (stop, stopping) = watch::channel(false);
    let mut supervisors = JoinSet::new();
    for &queue in queues {
        let (shared, stopping) = (shared.clone(), stopping.clone());
        supervisors.spawn(async move { (queue, supervise(queue, shared, stopping).await) });
    }
    let channels = queues
        .iter()
        .map(|&q| (format!("tasks:{}:active:available", redis.name(q)), q))
        .collect();
    let listener = tokio::spawn(wake_on_publish(shared.clone(), channels));
    let pauser = tokio::spawn(follow_pauses(shared.clone()));
    let ready = async {
        while !shared.health.workers_running() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let names = queues
            .iter()
            .map(|q| q.name())
            .collect::<Vec<_>>()
            .join(",");
        tracing::info!(worker = %shared.process_name, queues = %names, "quizworker ready");
        crate::ops::systemd::ready(&format!("running queues {names}"));
        std::future::pending::<()>().await;
    };

    tokio::pin!(shutdown);
    let gave_up = tokio::select! {
        () = &mut shutdown => None,
        Some(ended) = supervisors.join_next() => Some(ended),
        () = ready => unreachable!("readiness never ends"),
    };
    let _ = stop.send(true);
    listener.abort();
    pauser.abort();
    let failure = match gave_up {
        None => {
            tracing::info!(timeout = ?config.worker.shutdown_timeout, "shutting down: waiting for running jobs");
            None
        }
        Some(Ok((_, Err(reason)))) => Some(reason),
        Some(Ok((queue, Ok(())))) => Some(format!("the {queue} worker stopped by itself")),
        Some(Err(e)) => Some(format!("a worker's supervisor failed: {e}")),
    };
    if let Some(reason) = &failure {
        tracing::error!("{reason}; stopping the other workers");
    }

    // Jobs of dead workers run on in the executor without a worker to wait for them.
    let drained = tokio::time::timeout(config.worker.shutdown_timeout, async {
        while supervisors.join_next().await.is_some() {}
        executor.until_idle().await;
    })
    .await;
    shared
        .releases
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .abort_all();
    if drained.is_err() {
        supervisors.abort_all();
        let interrupted = executor.interrupt_running().await;
        tracing::warn!(
            interrupted,
            "shutdown timeout reached; handing running jobs back"
        );
    }
    let mut workers: Vec<(Queue, String)> = shared
        .current
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .map(|(q, c)| (*q, c.name.clone()))
        .collect();
    workers.extend(
        shared
            .held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(),
    );
    // Nothing runs any more: every job still held goes back.
    for (queue, name) in workers {
        hand_back(&redis, queue, &name, &HashSet::new()).await;
    }
    match failure {
        Some(reason) => bail!(reason),
        None => Ok(()),
    }
}

/// Keeps one queue's worker running: builds it, runs it, and when it dies (Redis went away,
/// or refused it) hands its jobs back, waits for Redis and starts a new one. Returns `Err`
/// when the worker keeps dying.
async fn supervise(
    queue: Queue,
    shared: Arc<Shared>,
    mut stopping: watch::Receiver<bool>,
) -> Result<(), String> {
    let mut deaths: VecDeque<Instant> = VecDeque::new();
    let mut wait = FIRST_WAIT;
    for incarnation in 1u64.. {
        if *stopping.borrow() {
            return Ok(());
        }
        let name = format!("{}-{incarnation}", shared.process_name);
        let (worker, context, wake) = match build_worker(&shared, queue, &name).await {
            Ok(built) => built,
            Err(e) => {
                shared.health.set_redis(false);
                tracing::warn!(%queue, error = %e, retry_in = ?wait, "cannot start the worker; waiting for Redis");
                if wait_or_stop(&mut stopping, wait).await {
                    return Ok(());
                }
                wait = (wait * 2).min(MAX_WAIT);
                continue;
            }
        };
        shared.health.set_redis(true);
        wait = FIRST_WAIT;
        shared
            .current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                queue,
                Current {
                    name: name.clone(),
                    context: context.clone(),
                    wake,
                },
            );
        let run = worker;
        tokio::pin!(run);
        let mut registered = false;
        let outcome = loop {
            tokio::select! {
                outcome = &mut run => break outcome,
                _ = async { stopping.wait_for(|stop| *stop).await.map(drop) } => {
                    // Stop taking jobs; the running ones finish (the caller bounds how long).
                    let _ = context.stop();
                    break run.await;
                }
                // apalis says ready only once the worker is registered in Redis.
                () = tokio::time::sleep(Duration::from_millis(10)), if !registered => {
                    if context.is_ready() {
                        registered = true;
                        shared.health.set_worker(queue, true);
                    }
                }
            }
        };
        shared.health.set_worker(queue, false);
        if *stopping.borrow() && outcome.is_ok() {
            return Ok(());
        }
        let reason = match outcome {
            Ok(()) => "it stopped by itself".to_owned(),
            Err(e) => e.to_string(),
        };
        crate::ops::metrics::worker_died(queue);
        tracing::error!(%queue, %reason, "the worker died");
        // Its jobs go back now rather than when its heartbeat expires.
        let Some(discarded) = reclaim(&shared, queue, &name, &mut stopping).await else {
            return Ok(());
        };
        let now = Instant::now();
        // A death caused by entries apalis cannot read says nothing about the next worker once
        // they are out of the way; any other counts.
        if discarded == 0 {
            deaths.push_back(now);
        }
        while deaths.front().is_some_and(|t| now - *t > RESTART_WINDOW) {
            deaths.pop_front();
        }
        if deaths.len() > MAX_RESTARTS {
            return Err(format!(
                "the {queue} worker died {} times within {}s: {reason}",
                deaths.len(),
                RESTART_WINDOW.as_secs()
            ));
        }
        let restart_in = (FIRST_WAIT * 2u32.pow(deaths.len() as u32)).min(MAX_WAIT);
        tracing::info!(%queue, ?restart_in, "starting a new worker");
        if wait_or_stop(&mut stopping, restart_in).await {
            return Ok(());
        }
    }
    Ok(())
}

/// What a dead worker held goes where it belongs: entries apalis cannot read are taken out of
/// the queue and recorded as failed (they would kill every worker that fetched them), the jobs
/// still running here stay the dead worker's until they end, and the rest go back to the
/// queue. Tries until Redis answers. Returns how many entries were taken out, or `None` if the
/// pool was told to stop first.
async fn reclaim(
    shared: &Arc<Shared>,
    queue: Queue,
    worker: &str,
    stopping: &mut watch::Receiver<bool>,
) -> Option<usize> {
    let mut wait = FIRST_WAIT;
    loop {
        match reclaim_once(shared, queue, worker).await {
            Ok(discarded) => return Some(discarded),
            Err(e) => {
                shared.health.set_redis(false);
                tracing::warn!(%queue, worker, error = %e, retry_in = ?wait,
                    "cannot give a dead worker's jobs back yet; waiting for Redis");
                if wait_or_stop(stopping, wait).await {
                    return None;
                }
                wait = (wait * 2).min(MAX_WAIT);
            }
        }
    }
}

async fn reclaim_once(shared: &Arc<Shared>, queue: Queue, worker: &str) -> anyhow::Result<usize> {
    let running = shared.executor.running_of(worker);
    let unreadable: Vec<(HeldEntry, String)> = shared
        .redis
        .held_by(queue, worker)
        .await?
        .into_iter()
        .filter(|entry| !running.contains(&entry.id))
        .filter_map(|entry| entry.unreadable().map(|why| (entry, why)))
        .collect();
    for (entry, why) in &unreadable {
        tracing::error!(%queue, job = %entry.id, reason = %why,
            "taking out of the queue an entry no worker can read");
        if let Ok(id) = entry.id.parse::<ulid::Ulid>() {
            let raw = entry.data.as_deref().unwrap_or_default();
            let reason = format!("the job's entry in Redis cannot be read: {why}");
            shared
                .executor
                .fail_unreadable(queue, worker, &id, raw, &reason)
                .await;
        }
    }
    let ids: Vec<String> = unreadable.iter().map(|(e, _)| e.id.clone()).collect();
    shared.redis.discard(queue, worker, &ids).await?;
    let (back, kept) = shared.redis.hand_back(queue, worker, &running).await?;
    if back > 0 {
        tracing::info!(%queue, jobs = back, "handed jobs back to the queue");
    }
    if !kept.is_empty() {
        tracing::info!(%queue, jobs = kept.len(), worker,
            "jobs of the dead worker still run here; they stay its own until they end");
        let held = (queue, worker.to_owned());
        shared
            .held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(held.clone());
        let release = release_when_ended(shared.clone(), held, kept.into_iter().collect());
        shared
            .releases
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .spawn(release);
    }
    Ok(ids.len())
}

/// Takes the jobs a dead worker still holds out of its in-flight set as each ends (the journal
/// has its outcome, and a retry is scheduled apart), keeping the worker registered meanwhile:
/// if this process dies too, apalis' orphan recovery then gives them back once its heartbeat
/// has expired, and the journal lets them run again once this process' lease has.
async fn release_when_ended(shared: Arc<Shared>, held: (Queue, String), mut kept: HashSet<String>) {
    let (queue, worker) = (held.0, held.1.as_str());
    let ended = shared.executor.job_ended();
    // Said once per outage, not at every beat.
    let mut failing = false;
    loop {
        let notified = ended.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let done: Vec<String> = kept
            .iter()
            .filter(|id| !shared.executor.is_running(id))
            .cloned()
            .collect();
        match shared.redis.release(queue, worker, &done).await {
            Ok(still_held) => {
                failing = false;
                kept.retain(|id| !done.contains(id));
                if kept.is_empty() {
                    if still_held > 0 {
                        hand_back(&shared.redis, queue, worker, &HashSet::new()).await;
                    }
                    break;
                }
            }
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(%queue, worker, error = %e,
                    "cannot release a dead worker's ended jobs yet; trying again");
            }
            Err(_) => {}
        }
        tokio::select! {
            () = notified => {}
            () = tokio::time::sleep(shared.config.worker.heartbeat_interval) => {}
        }
    }
    shared
        .held
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&held);
}

/// A new worker for the queue: the future that runs it, its context, and its wake-up sender.
async fn build_worker(
    shared: &Shared,
    queue: Queue,
    name: &str,
) -> anyhow::Result<(
    impl Future<Output = Result<(), WorkerError>> + Send + use<>,
    WorkerContext,
    mpsc::Sender<()>,
)> {
    let config = &shared.config;
    let (wake_tx, wake_rx) = mpsc::channel::<()>(1);
    let storage_config = apalis_redis::Config::default()
        .queue(shared.redis.name(queue))
        .batch_size(config.fetch_batch(queue))
        .heartbeat_interval(config.worker.heartbeat_interval)
        .missed_heartbeats(config.worker.missed_heartbeats as usize)
        // Its per-task locking makes throughput fall as the backlog grows (docs/ARCHITECTURE.md).
        .lock_tasks(false)
        .persist_results(true)
        .emit_events(false);
    let storage = RedisStorage::<Vec<u8>>::new(queue::connect(config).await?)
        .with_config(storage_config)
        .with_codec(RawBytes)
        .poll_with_strategy(
            Strategy::new()
                .stream(wake_rx)
                .interval(config.worker.poll_interval),
        );
    let context = WorkerContext::new(name);
    let worker = WorkerBuilder::new(context.clone())
        .backend(storage)
        .concurrency(config.queue(queue).concurrency)
        .data(QueueJob {
            executor: shared.executor.clone(),
            queue,
        })
        .build(handle);
    Ok((worker.run(), context, wake_tx))
}

/// Sleeps, unless the pool is told to stop first; true if it was.
async fn wait_or_stop(stopping: &mut watch::Receiver<bool>, wait: Duration) -> bool {
    let stopped = tokio::select! {
        () = tokio::time::sleep(wait) => false,
        stopped = stopping.wait_for(|stop| *stop) => stopped.is_ok(),
    };
    stopped || *stopping.borrow()
}

async fn hand_back(redis: &RedisQueues, queue: Queue, worker: &str, running: &HashSet<String>) {
    match redis.hand_back(queue, worker, running).await {
        Ok((0, _)) => {}
        Ok((n, _)) => tracing::info!(%queue, jobs = n, "handed jobs back to the queue"),
        Err(e) => tracing::error!(%queue, error = %e,
            "could not hand jobs back; another worker takes them once this one's heartbeat expires"),
    }
}

/// Wakes a queue's worker when a producer publishes that a job is ready, so a new job starts
/// within milliseconds instead of at the next poll.
async fn wake_on_publish(shared: Arc<Shared>, channels: HashMap<String, Queue>) {
    let mut wait = Duration::from_millis(100);
    loop {
        let result: anyhow::Result<()> = async {
            let client = redis::Client::open(shared.config.redis.url.as_str())?;
            let mut pubsub = client.get_async_pubsub().await?;
            for channel in channels.keys() {
                pubsub.subscribe(channel).await?;
            }
            let mut messages = pubsub.on_message();
            while let Some(message) = messages.next().await {
                let Some(queue) = channels.get(message.get_channel_name()) else {
                    continue;
                };
                if let Some(current) = shared
                    .current
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get_mut(queue)
                {
                    // A full channel already holds a wake-up: nothing is lost by dropping this one.
                    let _ = current.wake.try_send(());
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
async fn follow_pauses(shared: Arc<Shared>) {
    let mut ticker = tokio::time::interval(shared.config.worker.pause_check_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Said once per outage, not at every tick.
    let mut failing = false;
    loop {
        ticker.tick().await;
        let paused = match shared.redis.paused().await {
            Ok(paused) => paused,
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, "could not read the paused queues");
                    failing = true;
                }
                continue;
            }
        };
        failing = false;
        let current = shared.current.lock().unwrap_or_else(|p| p.into_inner());
        for (queue, worker) in current.iter() {
            let context = &worker.context;
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
