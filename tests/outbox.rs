//! The outbox (docs/WEB_TIER.md, docs/sql/outbox.sql): jobs enqueued inside the web tier's own
//! transactions, in a database of its own, relayed by the daemon to the journal and then Redis,
//! each exactly once, also with two daemons, a Redis flushed after the relay, and Postgres
//! going away.

mod common;

use std::time::{Duration, Instant};

use common::{DEADLINE, Daemon, OwnRedis, Proxy, TestEnv, port_of, seen, wait_until};
use serde_json::json;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

const OUTBOX_SQL: &str = include_str!("../docs/sql/outbox.sql");

/// The platform's database: a second database of the test's own, with the outbox applied from
/// docs/sql/outbox.sql as a web tier applies it.
struct Platform {
    url: String,
    pool: PgPool,
    name: String,
    admin: PgPool,
}

impl Platform {
    async fn new(env: &TestEnv) -> Platform {
        let name = format!(
            "qw_platform_{}",
            ulid::Ulid::new().to_string().to_lowercase()
        );
        let admin = env.pool.clone();
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&admin)
            .await
            .expect("create the platform database");
        let (base, _) = env
            .database_url
            .rsplit_once('/')
            .expect("a database URL ends in its name");
        let url = format!("{base}/{name}");
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .connect(&url)
            .await
            .expect("connect to the platform database");
        sqlx::raw_sql(OUTBOX_SQL)
            .execute(&pool)
            .await
            .expect("docs/sql/outbox.sql applies");
        Platform {
            url,
            pool,
            name,
            admin,
        }
    }

    /// Enqueues `count` jobs in one transaction of the web tier's; returns their ids.
    async fn enqueue(&self, count: i64, kind: &str, payload: &str) -> Vec<String> {
        sqlx::query_scalar("SELECT quizworker_enqueue($1, $2::json) FROM generate_series(1, $3)")
            .bind(kind)
            .bind(payload)
            .bind(count)
            .fetch_all(&self.pool)
            .await
            .expect("quizworker_enqueue")
    }

    async fn unrelayed(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM quizworker.outbox WHERE relayed_at IS NULL")
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    /// Drops the platform's database, after stopping `relays`, the daemons that connect to it.
    /// They must stop first: a relay reconnecting during `DROP DATABASE ... WITH (FORCE)` can
    /// hang it for ever (the new backend waits at startup for the database's lock, which the
    /// drop holds while it waits for every backend, that one too, to answer a signal barrier).
    async fn drop_database(self, relays: impl IntoIterator<Item = Daemon>) {
        relays.into_iter().for_each(drop);
        self.pool.close().await;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        )))
        .execute(&self.admin)
        .await
        .expect("drop the platform database");
    }
}

/// Waits until the journal has `count` jobs, every one of them completed.
async fn wait_all_completed(env: &TestEnv, count: i64, within: Duration) {
    let jobs = wait_until(&format!("{count} jobs completed"), within, async || {
        let (jobs, completed): (i64, i64) = sqlx::query_as(
            "SELECT count(*), count(*) FILTER (WHERE state = 'completed') FROM jobs",
        )
        .fetch_one(&env.pool)
        .await
        .unwrap();
        match completed == count {
            true => Ok(jobs),
            false => Err(format!("{completed} of {jobs} are\n{}", env.daemon_logs())),
        }
    })
    .await;
    assert_eq!(jobs, count);
}

/// Every job of the journal ran exactly once: one attempt, recorded once.
async fn assert_each_ran_once(env: &TestEnv, ids: &[String]) {
    let (journaled, once, attempt_rows): (i64, i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE attempts = 1),
                (SELECT count(*) FROM job_attempts WHERE job_id = ANY($1))
           FROM jobs WHERE id = ANY($1)",
    )
    .bind(ids)
    .fetch_one(&env.pool)
    .await
    .unwrap();
    let n = ids.len() as i64;
    assert_eq!((journaled, once, attempt_rows), (n, n, n));
}

#[sqlx::test]
async fn a_rolled_back_enqueue_makes_no_job_and_a_committed_one_exactly_one(pool: PgPool) {
    let env = TestEnv::new(pool).await;
    let platform = Platform::new(&env).await;
    let daemon = env.spawn_daemon_with(&[], &[("QUIZWORKER_OUTBOX__URL", &platform.url)]);

    let mut tx = platform.pool.begin().await.unwrap();
    let rolled_back: String =
        sqlx::query_scalar("SELECT quizworker_enqueue('diag.sleep', '{\"ms\": 5}')")
            .fetch_one(&mut *tx)
            .await
            .unwrap();
    tx.rollback().await.unwrap();

    let mut tx = platform.pool.begin().await.unwrap();
    sqlx::query("CREATE TABLE attempts_submitted (id int)")
        .execute(&mut *tx)
        .await
        .unwrap();
    let committed: String =
        sqlx::query_scalar("SELECT quizworker_enqueue('diag.sleep', '{\"ms\": 5}')")
            .fetch_one(&mut *tx)
            .await
            .unwrap();
    tx.commit().await.unwrap();

    let job = env.wait_for_state(&committed, "completed").await;
    assert_eq!(job.result, Some(json!({"slept_ms": 5})));
    assert_eq!(job.attempts, 1);
    assert_eq!(env.job(&rolled_back).await.map(|j| j.state), None);
    let journaled: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs")
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert_eq!(journaled, 1);
    assert_eq!(platform.unrelayed().await, 0);
    // The id is a ULID whose time is the enqueue's.
    let ulid: ulid::Ulid = committed.parse().unwrap();
    let age = chrono::Utc::now() - chrono::DateTime::<chrono::Utc>::from(ulid.datetime());
    assert!(age < chrono::Duration::seconds(60), "{age}");
    platform.drop_database([daemon]).await;
}

#[sqlx::test]
async fn idempotency_keys_hold_across_the_outbox_and_the_script(pool: PgPool) {
    let env = TestEnv::new(pool).await;
    let platform = Platform::new(&env).await;
    let daemon = env.spawn_daemon_with(&[], &[("QUIZWORKER_OUTBOX__URL", &platform.url)]);

    // Twice through the outbox: one job, the first id returned both times.
    let (first, second): (String, String) = sqlx::query_as(
        "SELECT quizworker_enqueue('diag.noop', '{}', idempotency_key => 'attempt-7'),
                quizworker_enqueue('diag.noop', '{}', idempotency_key => 'attempt-7')",
    )
    .fetch_one(&platform.pool)
    .await
    .unwrap();
    assert_eq!(first, second);
    env.wait_for_state(&first, "completed").await;

    // A key first used through the script: the outbox's row makes no job and says whose key.
    let by_script = env.enqueue("diag.noop", "{}", &["--idempotency-key", "attempt-8"]);
    let by_outbox: String = sqlx::query_scalar(
        "SELECT quizworker_enqueue('diag.noop', '{}', idempotency_key => 'attempt-8')",
    )
    .fetch_one(&platform.pool)
    .await
    .unwrap();
    assert_ne!(by_outbox, by_script);
    let duplicate_of = wait_until("the outbox row relayed", DEADLINE, async || {
        let row: Option<Option<String>> = sqlx::query_scalar(
            "SELECT duplicate_of FROM quizworker.outbox WHERE id = $1 AND relayed_at IS NOT NULL",
        )
        .bind(&by_outbox)
        .fetch_optional(&platform.pool)
        .await
        .unwrap();
        row.ok_or_else(|| "it is not".to_owned())
    })
    .await;
    assert_eq!(duplicate_of.as_deref(), Some(by_script.as_str()));
    assert_eq!(env.job(&by_outbox).await.map(|j| j.state), None);
    // And the outbox now answers that key with the job that holds it.
    let again: String = sqlx::query_scalar(
        "SELECT quizworker_enqueue('diag.noop', '{}', idempotency_key => 'attempt-8')",
    )
    .fetch_one(&platform.pool)
    .await
    .unwrap();
    assert_eq!(again, by_script);
    platform.drop_database([daemon]).await;
}

#[sqlx::test]
async fn each_kind_defaults_to_its_catalogue_queue(pool: PgPool) {
    let env = TestEnv::new(pool).await;
    let platform = Platform::new(&env).await;
    for kind in quizworker_jobs::catalogue::KINDS {
        let id: String = sqlx::query_scalar("SELECT quizworker_enqueue($1, '{}')")
            .bind(kind.name)
            .fetch_one(&platform.pool)
            .await
            .unwrap();
        let queue: String = sqlx::query_scalar("SELECT queue FROM quizworker.outbox WHERE id = $1")
            .bind(&id)
            .fetch_one(&platform.pool)
            .await
            .unwrap();
        assert_eq!(queue, kind.queue.name(), "{}", kind.name);
    }
    let refused =
        sqlx::query_scalar::<_, String>("SELECT quizworker_enqueue('search.reindex', '{}')")
            .fetch_one(&platform.pool)
            .await
            .unwrap_err()
            .to_string();
    assert!(
        refused.contains("no default queue for kind \"search.reindex\""),
        "{refused}"
    );
    platform.drop_database([]).await;
}

#[sqlx::test]
async fn two_daemons_relay_ten_thousand_rows_and_each_job_runs_once(pool: PgPool) {
    let env = TestEnv::new(pool).await;
    let platform = Platform::new(&env).await;
    let outbox = [("QUIZWORKER_OUTBOX__URL", platform.url.as_str())];
    let first = env.spawn_daemon_with(&[], &outbox);
    let second = env.spawn_daemon_with(&[], &outbox);

    let mut ids = Vec::new();
    for _ in 0..20 {
        ids.extend(platform.enqueue(500, "diag.noop", "{}").await);
    }
    wait_all_completed(&env, 10_000, Duration::from_secs(180)).await;
    assert_each_ran_once(&env, &ids).await;
    assert_eq!(platform.unrelayed().await, 0);
    for daemon in [&first, &second] {
        assert!(
            !daemon.log_text().contains("relaying the outbox failed"),
            "{}",
            daemon.log_text()
        );
    }
    platform.drop_database([first, second]).await;
}

#[sqlx::test]
async fn a_redis_flushed_right_after_the_relay_loses_no_job(pool: PgPool) {
    let redis = OwnRedis::start();
    let env = TestEnv::with_redis(pool, common::FAST_CONFIG, &redis.url).await;
    let platform = Platform::new(&env).await;
    // Only the relay runs: no worker takes the jobs before Redis loses them.
    let relay = env.spawn_daemon_with(
        &["--queues", "scoring"],
        &[("QUIZWORKER_OUTBOX__URL", &platform.url)],
    );
    let ids = platform.enqueue(500, "diag.noop", "{}").await;
    wait_until("every row relayed", DEADLINE, async || {
        let left = platform.unrelayed().await;
        seen(left == 0, || {
            format!("{left} are not\n{}", relay.log_text())
        })
    })
    .await;
    let _: () = env.redis_cmd(&redis::cmd("FLUSHALL")).await;

    env.cli_ok(&["recover"]);
    let _workers = env.spawn_daemon(&["--queues", "default"]);
    wait_all_completed(&env, 500, DEADLINE).await;
    assert_each_ran_once(&env, &ids).await;
    platform.drop_database([relay]).await;
}

#[sqlx::test]
async fn the_relay_waits_out_postgres_going_away(pool: PgPool) {
    let env = TestEnv::new(pool).await;
    let platform = Platform::new(&env).await;
    let proxy = Proxy::start(port_of(&env.database_url));
    let through_proxy =
        |url: &str| url.replace(&format!(":{}/", port_of(url)), &format!(":{}/", proxy.port));
    let (outbox_url, journal_url) = (
        through_proxy(&platform.url),
        through_proxy(&env.database_url),
    );
    let daemon = env.spawn_daemon_with(
        &[],
        &[
            ("QUIZWORKER_OUTBOX__URL", &outbox_url),
            ("DATABASE_URL", &journal_url),
        ],
    );
    let mut ids = platform.enqueue(100, "diag.noop", "{}").await;
    wait_all_completed(&env, 100, DEADLINE).await;

    // Both databases go away (as in a restart); the web tier, which reaches its database
    // directly, goes on enqueueing.
    proxy.cut();
    for _ in 0..5 {
        ids.extend(platform.enqueue(40, "diag.noop", "{}").await);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    daemon.wait_for_log("relaying the outbox failed");
    proxy.restore();
    wait_all_completed(&env, 300, Duration::from_secs(60)).await;
    assert_each_ran_once(&env, &ids).await;
    assert_eq!(platform.unrelayed().await, 0);
    platform.drop_database([daemon]).await;
}

/// Redis drops every connection of two relaying daemons (a failover, CLIENT KILL) again and
/// again while rows are relayed: no row is lost and no job runs twice.
#[sqlx::test]
async fn redis_connections_killed_while_relaying_lose_no_job_and_run_none_twice(pool: PgPool) {
    // A Redis of its own: killing every client of the shared one would hit other tests.
    let redis = OwnRedis::start();
    let env = TestEnv::with_redis(pool, common::FAST_CONFIG, &redis.url).await;
    let platform = Platform::new(&env).await;
    // Rounds of 100 rows, so that a commit of 1,000 takes several and a cut lands amid them.
    let outbox = [
        ("QUIZWORKER_OUTBOX__URL", platform.url.as_str()),
        ("QUIZWORKER_OUTBOX__BATCH", "100"),
    ];
    let first = env.spawn_daemon_with(&[], &outbox);
    let second = env.spawn_daemon_with(&[], &outbox);

    const ROUNDS: usize = 5;
    const ROWS: i64 = 1000;
    let mut ids = Vec::new();
    for _ in 0..ROUNDS {
        ids.extend(platform.enqueue(ROWS, "diag.noop", "{}").await);
        // Cut once the relay has committed its first round of this commit's rows.
        let start = Instant::now();
        while platform.unrelayed().await == ROWS {
            assert!(start.elapsed() < DEADLINE, "{}", env.daemon_logs());
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        env.kill_redis_connections().await;
    }
    first.wait_for_log("the worker died");
    second.wait_for_log("the worker died");

    wait_all_completed(&env, ROUNDS as i64 * ROWS, Duration::from_secs(120)).await;
    assert_each_ran_once(&env, &ids).await;
    assert_eq!(platform.unrelayed().await, 0);
    platform.drop_database([first, second]).await;
}
