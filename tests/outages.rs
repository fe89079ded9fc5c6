//! Outages: Redis or Postgres goes away for a while. The daemon waits them out with backoff,
//! neither crashing nor dropping work, and resumes when they return. Each test puts a TCP
//! proxy of its own between the daemon and the service and cuts it, so the shared servers
//! stay up for the other tests.

mod common;

use std::time::{Duration, Instant};

use common::{DEADLINE, Proxy, TestEnv, port_of, seen, wait_until};
use sqlx::PgPool;

#[sqlx::test]
async fn the_daemon_waits_out_a_redis_outage_and_resumes(pool: PgPool) {
    let env = TestEnv::new(pool).await;
    let proxy = Proxy::start(port_of(&env.redis_url));
    let proxied = format!("redis://127.0.0.1:{}", proxy.port);
    let mut daemon = env.spawn_daemon_with(&[], &[("REDIS_URL", &proxied)]);
    let before = env.enqueue("diag.noop", "{}", &[]);
    env.wait_for_state(&before, "completed").await;

    let http = daemon.http_addr();
    assert_eq!(common::http_get(http, "/readyz").0, 200);
    proxy.cut();
    daemon.wait_for_log("waiting for Redis");
    let (status, body) = common::http_get(http, "/readyz");
    assert_eq!(status, 503, "not ready while Redis is away: {body}");
    assert!(body.contains("Redis does not answer"), "{body}");
    // Producers still reach Redis; the daemon does not.
    let during: Vec<String> = (0..5)
        .map(|_| env.enqueue("diag.noop", "{}", &[]))
        .collect();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        daemon.child.try_wait().unwrap().is_none(),
        "the daemon lives through the outage"
    );
    assert!(env.job(&during[0]).await.unwrap().state == "queued");

    proxy.restore();
    for id in &during {
        env.wait_for_state(id, "completed").await;
    }
    assert!(daemon.child.try_wait().unwrap().is_none());
    wait_until("ready again", DEADLINE, async || {
        let (status, body) = common::http_get(http, "/readyz");
        seen(status == 200, || format!("{status} {body}"))
    })
    .await;
}

#[sqlx::test]
async fn the_daemon_waits_out_a_postgres_outage_without_losing_results(pool: PgPool) {
    let env = TestEnv::new(pool).await;
    let proxy = Proxy::start(port_of(&env.database_url));
    let proxied = env.database_url.replace(
        &format!(":{}/", port_of(&env.database_url)),
        &format!(":{}/", proxy.port),
    );
    let mut daemon = env.spawn_daemon_with(&[], &[("DATABASE_URL", &proxied)]);
    let running = env.enqueue("diag.sleep", r#"{"ms": 1500}"#, &[]);
    env.wait_for_state(&running, "running").await;

    let http = daemon.http_addr();
    proxy.cut();
    // The running job ends while Postgres is away, and more jobs arrive.
    let during: Vec<String> = (0..5)
        .map(|_| env.enqueue("diag.noop", "{}", &[]))
        .collect();
    daemon.wait_for_log("journal write failed; retrying");
    let (status, body) = common::http_get(http, "/readyz");
    assert_eq!(status, 503, "not ready while Postgres is away: {body}");
    assert!(body.contains("Postgres does not answer"), "{body}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        daemon.child.try_wait().unwrap().is_none(),
        "the daemon lives through the outage"
    );

    proxy.restore();
    let start = Instant::now();
    let job = env.wait_for_state(&running, "completed").await;
    assert_eq!(job.attempts, 1, "its result was kept, not rerun");
    for id in &during {
        env.wait_for_state(id, "completed").await;
    }
    assert!(start.elapsed() < DEADLINE);
    assert!(daemon.child.try_wait().unwrap().is_none());
}
