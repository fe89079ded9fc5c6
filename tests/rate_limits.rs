//! Per-queue rate limits (`rate` in `[queues.<queue>]`): held across processes through Redis,
//! inside each job's attempt, absent for a queue without a rate, and shown to operators.

mod common;

use std::time::Duration;

use chrono::{DateTime, Utc};
use common::{DEADLINE, Daemon, OwnRedis, TestEnv, http_get, seen, wait_until};
use quizworker::runtime::queue;
use quizworker::runtime::rate_limit::{Meter, RateLimits};
use quizworker_jobs::Queue;
use serde_json::Value;
use sqlx::PgPool;

const RATE_VAR: &str = "QUIZWORKER_QUEUES__DEFAULT__RATE";

/// The value of one series in `/metrics`' text.
fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[sqlx::test]
async fn two_daemons_share_one_rate_through_redis(pool: PgPool) {
    const JOBS: usize = 100;
    const RATE: f64 = 20.0;
    let env = TestEnv::new(pool).await;
    // Both on the test's Redis prefix and database, each taking up to 50 default jobs at once
    // (FAST_CONFIG): without the shared limit they would finish 100 no-ops in well under a
    // second.
    let daemons: Vec<Daemon> = (0..2)
        .map(|_| env.spawn_daemon_with(&[], &[(RATE_VAR, "20/s")]))
        .collect();
    let producer = env.producer().await;
    for _ in 0..JOBS {
        producer
            .push(&quizworker_jobs::diag::Noop {})
            .await
            .expect("enqueue");
    }

    wait_until(&format!("{JOBS} jobs completed"), DEADLINE, async || {
        let done: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs WHERE state = 'completed'")
            .fetch_one(&env.pool)
            .await
            .unwrap();
        seen(done == JOBS as i64, || format!("{done} are"))
    })
    .await;

    // The journaled start of an attempt comes before its wait for the rate (the wait is inside
    // the attempt, under its timeout), so the start times show when jobs were taken, not when
    // the limit let them run. A no-op ends as soon as it has its unit: its end is the time to
    // measure.
    let finished: Vec<(DateTime<Utc>, String)> = sqlx::query_as(
        "SELECT finished_at, process FROM jobs WHERE state = 'completed' ORDER BY finished_at",
    )
    .fetch_all(&env.pool)
    .await
    .unwrap();
    assert_eq!(finished.len(), JOBS);
    let mut per_process = std::collections::BTreeMap::<&str, usize>::new();
    for (_, process) in &finished {
        *per_process.entry(process.as_str()).or_default() += 1;
    }
    assert_eq!(
        per_process.len(),
        2,
        "both processes ran jobs: {per_process:?}\n{}",
        env.daemon_logs()
    );
    let span = (finished[JOBS - 1].0 - finished[0].0)
        .to_std()
        .expect("ordered by finished_at")
        .as_secs_f64();
    let measured = (JOBS - 1) as f64 / span;
    println!(
        "{JOBS} jobs over two processes ({:?} each): {measured:.2} jobs/s over {span:.3} s (limit {RATE}/s)",
        per_process.values().collect::<Vec<_>>()
    );
    assert!(
        measured <= RATE * 1.05,
        "{measured:.2} jobs/s over {span:.3} s: above {RATE}/s + 5%"
    );

    // The limit in each process' /metrics, and the time its jobs spent waiting for it.
    let mut waited = 0.0;
    for daemon in &daemons {
        let (status, text) = http_get(daemon.http_addr(), "/metrics");
        assert_eq!(status, 200);
        for (series, value) in [
            (
                r#"quizworker_queue_rate_limit_per_second{queue="default"}"#,
                20.0,
            ),
            (
                r#"quizworker_queue_rate_limit_per_second{queue="emails"}"#,
                0.0,
            ),
        ] {
            assert_eq!(metric(&text, series), Some(value), "{series} in:\n{text}");
        }
        assert!(
            text.contains("# TYPE quizworker_rate_limit_wait_seconds_total counter"),
            "{text}"
        );
        waited += metric(
            &text,
            r#"quizworker_rate_limit_wait_seconds_total{queue="default"}"#,
        )
        .unwrap_or_else(|| panic!("no wait counter in:\n{text}"));
    }
    // 100 jobs at 20/s and 50 at once per process: most waited, some for seconds.
    assert!(waited > 1.0, "{waited} s waited in all");

    // An idle limit leaves nothing behind in Redis.
    let key = format!("{}rate:default", env.prefix);
    wait_until(&format!("{key} expired"), DEADLINE, async || {
        let exists: bool = env.redis_cmd(redis::cmd("EXISTS").arg(&key)).await;
        seen(!exists, || "it is there".into())
    })
    .await;
}

#[sqlx::test]
async fn a_wait_for_the_rate_counts_against_the_jobs_timeout(pool: PgPool) {
    let env = TestEnv::new(pool).await;
    let _daemon = env.spawn_daemon_with(
        &[],
        &[
            (RATE_VAR, "1/h"),
            ("QUIZWORKER_QUEUES__DEFAULT__TIMEOUT", "1s"),
        ],
    );
    let first = env.enqueue("diag.noop", "{}", &[]);
    env.wait_for_state(&first, "completed").await;
    // The hour's one unit is spent: the next job waits inside its attempt until the timeout
    // ends it, and a timeout is transient, so it is retried (and waits again).
    let second = env.enqueue("diag.noop", "{}", &[]);
    let job = env.wait_for_state(&second, "retrying").await;
    let error = job.last_error.unwrap_or_default();
    assert!(error.contains("timed out after 1s"), "{error}");
}

#[sqlx::test]
async fn a_queue_without_a_rate_is_not_slowed_and_the_rate_shows(pool: PgPool) {
    let env = TestEnv::new(pool).await;
    let mut config = env.config();
    config.queues.get_mut("default").unwrap().rate = Some("1/h".parse().unwrap());
    let conn = queue::connect(&config).await.expect("connect to Redis");
    let limits = RateLimits::new(&config, conn);

    // No rate: returns at once and asks Redis nothing (no key appears).
    for _ in 0..1000 {
        limits.acquire(Queue::Scoring).await.expect("unlimited");
    }
    let keys = common::keys_with_prefix(
        &mut redis::Client::open(env.redis_url.as_str())
            .unwrap()
            .get_connection()
            .unwrap(),
        &format!("{}rate:", env.prefix),
    )
    .unwrap();
    assert!(keys.is_empty(), "an unlimited queue wrote {keys:?}");

    // 1/h: the first unit at once, the second not for an hour. A wait given up reserves
    // nothing: the limit's state in Redis is what the first unit left.
    limits
        .acquire(Queue::Default)
        .await
        .expect("the first unit");
    let key = format!("{}rate:default", env.prefix);
    let state: String = env.redis_cmd(redis::cmd("GET").arg(&key)).await;
    let waited = tokio::time::timeout(Duration::from_millis(300), limits.acquire(Queue::Default));
    assert!(waited.await.is_err(), "a second unit within the hour");
    let after: String = env.redis_cmd(redis::cmd("GET").arg(&key)).await;
    assert_eq!(after, state, "the abandoned wait changed the limit");
    // The key lives until its next unit is due plus one interval: at most two hours here.
    let ttl_ms: i64 = env.redis_cmd(redis::cmd("PTTL").arg(&key)).await;
    assert!(
        ttl_ms > 3_600_000 && ttl_ms <= 7_200_000 + 5,
        "PTTL {ttl_ms}"
    );

    // With Redis gone, an unlimited queue still goes on; a limited one says why it cannot.
    let own = OwnRedis::start();
    let mut config = config.clone();
    config.redis.url = own.url.clone();
    let limits = RateLimits::new(&config, queue::connect(&config).await.expect("connect"));
    drop(own);
    limits
        .acquire(Queue::Scoring)
        .await
        .expect("no Redis needed");
    let error = limits
        .acquire(Queue::Default)
        .await
        .expect_err("Redis is gone");
    assert_eq!(error.meter, Meter::Queue(Queue::Default));
    assert_eq!(
        error.to_string(),
        "could not ask Redis for a slot of the default queue's rate limit"
    );

    // `quizworker queues`: the rate as configured, none elsewhere.
    let output = env
        .command()
        .env(RATE_VAR, "600/min")
        .args(["queues", "--json"])
        .output()
        .expect("run quizworker queues");
    assert!(output.status.success(), "{output:?}");
    let rows: Vec<Value> = serde_json::from_slice(&output.stdout).expect("JSON");
    for row in &rows {
        let expected = if row["queue"] == "default" {
            Value::from("600/min")
        } else {
            Value::Null
        };
        assert_eq!(row["rate"], expected, "{row}");
    }
    let output = env
        .command()
        .env(RATE_VAR, "600/min")
        .arg("queues")
        .output()
        .expect("run quizworker queues");
    let table = String::from_utf8(output.stdout).expect("UTF-8");
    let column = table
        .lines()
        .next()
        .and_then(|header| header.find(" RATE "))
        .unwrap_or_else(|| panic!("no RATE column in:\n{table}"))
        + 1;
    let rate_of = |queue: &str| {
        table
            .lines()
            .find(|line| line.split_whitespace().next() == Some(queue))
            .and_then(|line| line.get(column..))
            .and_then(|cell| cell.split_whitespace().next())
            .unwrap_or_else(|| panic!("no {queue} row in:\n{table}"))
            .to_owned()
    };
    assert_eq!(rate_of("default"), "600/min", "{table}");
    assert_eq!(rate_of("scoring"), "-", "{table}");

    // A bad rate stops the command with the key and the value, as bad input.
    let output = env
        .command()
        .env(RATE_VAR, "20/x")
        .arg("queues")
        .output()
        .expect("run quizworker queues");
    assert_eq!(output.status.code(), Some(3), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(r#"queues.default.rate: "20/x" is not a rate: unknown unit `x`"#),
        "{stderr}"
    );
}
