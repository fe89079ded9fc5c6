//! The web tier's contract (docs/WEB_TIER.md): the status view `quizworker.job_status_v1`, with
//! the keys of `jobs show --json`, shows a job enqueued with the script while it waits; every
//! state change is told on Postgres' channel `quizworker_job_state` and on Redis'
//! `<prefix>events`.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::{DEADLINE, TestEnv, seen, wait_until};
use futures::StreamExt;
use quizworker_jobs::ENQUEUE_SCRIPT;
use serde_json::{Value, json};
use sqlx::PgPool;
use sqlx::postgres::PgListener;

/// Enqueues with the protocol's script alone, as a web tier does: nothing writes the journal.
async fn enqueue_with_script(env: &TestEnv, queue: &str, envelope: &Value) -> String {
    let (id, created): (String, i64) = redis::Script::new(ENQUEUE_SCRIPT)
        .arg(env.queue(queue))
        .arg(envelope.to_string())
        .invoke_async(&mut env.redis.clone())
        .await
        .expect("the script enqueues");
    assert_eq!(created, 1);
    id
}

fn envelope(kind: &str, payload: Value) -> Value {
    json!({"v": 1, "id": ulid::Ulid::new().to_string(), "kind": kind, "payload": payload,
           "created_at": chrono::Utc::now().to_rfc3339()})
}

/// The job as the view shows it, as JSON.
async fn in_view(env: &TestEnv, id: &str) -> Option<Value> {
    sqlx::query_scalar("SELECT to_json(s) FROM quizworker.job_status_v1 s WHERE id = $1")
        .bind(id)
        .fetch_optional(&env.pool)
        .await
        .expect("the view answers")
}

async fn wait_in_view(env: &TestEnv, id: &str, state: &str) -> (Value, Duration) {
    let start = Instant::now();
    loop {
        if let Some(row) = in_view(env, id).await
            && row["state"] == state
        {
            return (row, start.elapsed());
        }
        assert!(
            start.elapsed() < DEADLINE,
            "job {id} not {state} in the view: {:?}\n{}",
            in_view(env, id).await,
            env.daemon_logs()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[sqlx::test]
async fn the_view_has_the_keys_of_jobs_show_json(pool: PgPool) {
    let env = TestEnv::new(pool).await;
    let _daemon = env.spawn_daemon(&[]);
    let id = env.enqueue("diag.fail", r#"{"times": 0, "permanent": true}"#, &[]);
    env.wait_for_state(&id, "failed").await;

    let mut shown = env.cli_json(&["jobs", "show", &id, "--json"]);
    shown
        .as_object_mut()
        .unwrap()
        .remove("attempt_history")
        .expect("show has the history");
    let columns: Vec<String> = sqlx::query_scalar(
        "SELECT column_name::text FROM information_schema.columns
          WHERE table_schema = 'quizworker' AND table_name = 'job_status_v1'
          ORDER BY ordinal_position",
    )
    .fetch_all(&env.pool)
    .await
    .unwrap();
    let keys: BTreeSet<&str> = shown
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let columns_set: BTreeSet<&str> = columns.iter().map(String::as_str).collect();
    assert_eq!(keys, columns_set);

    let row = in_view(&env, &id).await.expect("in the view");
    for key in [
        "id",
        "queue",
        "kind",
        "state",
        "attempts",
        "max_attempts",
        "error",
        "payload",
    ] {
        assert_eq!(row[key], shown[key], "{key}");
    }
    assert!(
        row["error"].as_str().unwrap().contains("permanent"),
        "{row}"
    );

    // A job only in Redis (no daemon journaled it yet) shows with the same keys.
    let waiting = enqueue_with_script(&env, "indexing", &envelope("diag.noop", json!({}))).await;
    let mut shown = env.cli_json(&["jobs", "show", &waiting, "--json"]);
    shown.as_object_mut().unwrap().remove("attempt_history");
    let keys: BTreeSet<&str> = shown
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, columns_set);
}

#[sqlx::test]
async fn a_job_enqueued_with_the_script_shows_as_waiting_at_once(pool: PgPool) {
    let env = TestEnv::new(pool).await;
    // No worker runs the default queue, so its jobs wait.
    let _daemon = env.spawn_daemon(&["--queues", "scoring"]);

    let queued = enqueue_with_script(&env, "default", &envelope("diag.noop", json!({}))).await;
    let (row, took) = wait_in_view(&env, &queued, "queued").await;
    assert_eq!(row["queue"], "default");
    assert_eq!(row["attempts"], 0);
    assert_eq!(row["max_attempts"], 3, "the queue's limit (FAST_CONFIG)");
    assert!(took < Duration::from_secs(2), "took {took:?}");

    let mut later = envelope("diag.noop", json!({}));
    let run_at = chrono::Utc::now() + chrono::Duration::hours(1);
    later["run_at"] = json!(run_at.format("%Y-%m-%dT%H:%M:%SZ").to_string());
    later["max_attempts"] = json!(7);
    later["idempotency_key"] = json!("later-1");
    let scheduled = enqueue_with_script(&env, "default", &later).await;
    let (row, _) = wait_in_view(&env, &scheduled, "scheduled").await;
    assert_eq!(row["max_attempts"], 7);
    assert_eq!(row["idempotency_key"], "later-1");
    assert!(row["scheduled_at"].is_string(), "{row}");

    // An id nobody enqueued is not there at all.
    assert_eq!(in_view(&env, &ulid::Ulid::new().to_string()).await, None);

    // The notes the script left are read and deleted, so Redis does not grow with them: each
    // once the journal has its job (a note is never deleted before), so a moment after the view
    // shows it.
    let arrivals = format!("{}:arrivals", env.queue("default"));
    wait_until(&format!("{arrivals} emptied"), DEADLINE, async || {
        let left: i64 = env.redis_cmd(redis::cmd("XLEN").arg(&arrivals)).await;
        seen(left == 0, || format!("{left} notes are left"))
    })
    .await;

    // A worker of the default queue then runs it, once.
    let _worker = env.spawn_daemon(&["--queues", "default"]);
    wait_in_view(&env, &queued, "completed").await;
    assert_eq!(env.attempts(&queued).await.len(), 1);
}

#[sqlx::test]
async fn jobs_enqueued_while_no_daemon_runs_show_when_one_starts(pool: PgPool) {
    let env = TestEnv::new(pool).await;
    let ids = [
        enqueue_with_script(&env, "indexing", &envelope("diag.noop", json!({}))).await,
        enqueue_with_script(&env, "indexing", &envelope("diag.noop", json!({}))).await,
    ];
    assert_eq!(in_view(&env, &ids[0]).await, None);
    let _daemon = env.spawn_daemon(&["--queues", "scoring"]);
    for id in &ids {
        wait_in_view(&env, id, "queued").await;
    }
}

/// (state, attempts) of each event about `id`, until it is `last`.
async fn collect<S>(events: &mut S, id: &str, last: &str) -> Vec<(String, i64)>
where
    S: futures::Stream<Item = String> + Unpin,
{
    let mut seen = Vec::new();
    let deadline = Instant::now() + DEADLINE;
    while seen.last().is_none_or(|(state, _)| state != last) {
        let left = deadline.saturating_duration_since(Instant::now());
        let payload = tokio::time::timeout(left, events.next())
            .await
            .unwrap_or_else(|_| panic!("events of {id} so far: {seen:?}"))
            .expect("the stream of events goes on");
        let event: Value = serde_json::from_str(&payload).expect("events are JSON");
        if event["id"] == id {
            assert_eq!(event["kind"], "diag.fail");
            assert_eq!(event["queue"], "default");
            seen.push((
                event["state"].as_str().unwrap().to_owned(),
                event["attempts"].as_i64().unwrap(),
            ));
        }
    }
    seen
}

#[sqlx::test]
async fn every_state_change_is_told_on_postgres_and_on_redis(pool: PgPool) {
    let env = TestEnv::new(pool).await;
    let mut listener = PgListener::connect_with(&env.pool).await.unwrap();
    listener.listen("quizworker_job_state").await.unwrap();
    let mut notified = Box::pin(
        listener
            .into_stream()
            .map(|n| n.expect("the listener").payload().to_owned()),
    );
    let client = redis::Client::open(env.redis_url.as_str()).unwrap();
    let mut pubsub = client.get_async_pubsub().await.unwrap();
    pubsub
        .subscribe(format!("{}events", env.prefix))
        .await
        .unwrap();
    let mut published = Box::pin(
        pubsub
            .into_on_message()
            .map(|m| m.get_payload::<String>().expect("a text payload")),
    );

    let daemon = env.spawn_daemon(&[]);
    daemon.wait_for_log("repeating job events on Redis");
    // Fails its first attempt (retried after 1 s), then completes. Delayed, so that it is
    // journaled as waiting before a worker could take it.
    let id = env.enqueue("diag.fail", r#"{"times": 1}"#, &["--delay", "2s"]);
    let expected: Vec<(String, i64)> = [
        ("scheduled", 0),
        ("running", 1),
        ("retrying", 1),
        ("running", 2),
        ("completed", 2),
    ]
    .map(|(s, a)| (s.to_owned(), a))
    .into();
    assert_eq!(collect(&mut notified, &id, "completed").await, expected);
    assert_eq!(collect(&mut published, &id, "completed").await, expected);

    // An operator's changes are told too.
    let cancelled = env.enqueue("diag.noop", "{}", &["--delay", "1h"]);
    env.cli_ok(&["jobs", "cancel", &cancelled]);
    let mut states = Vec::new();
    while states.last().map(String::as_str) != Some("cancelled") {
        let payload = tokio::time::timeout(DEADLINE, notified.next())
            .await
            .expect("the cancel is told")
            .unwrap();
        let event: Value = serde_json::from_str(&payload).unwrap();
        if event["id"] == cancelled {
            states.push(event["state"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(states, ["scheduled", "cancelled"]);
}

/// The journal writes jobs hundreds to a statement: each row of a statement is told once, and an
/// update that changes no state or attempt (progress) tells nothing. A job that completes or
/// fails in such a statement gets one delivery per endpoint of its kind and per the one its
/// envelope names; one that does neither, none.
#[sqlx::test]
async fn each_row_of_a_many_row_statement_is_told_and_gets_its_deliveries(pool: PgPool) {
    let mut listener = PgListener::connect_with(&pool).await.unwrap();
    listener.listen("quizworker_job_state").await.unwrap();
    sqlx::query("INSERT INTO webhook_routes (kind, endpoint) VALUES ('diag.noop', 'lms')")
        .execute(&pool)
        .await
        .unwrap();
    let ids: Vec<String> = (0..4).map(|_| ulid::Ulid::new().to_string()).collect();
    // One job per kind-and-endpoint case: routed kind, routed kind naming its own endpoint,
    // unrouted kind naming one, unrouted kind naming none.
    let kinds = ["diag.noop", "diag.noop", "diag.fail", "diag.fail"];
    let webhooks = [None, Some("crm"), Some("crm"), None];
    sqlx::query(
        "INSERT INTO jobs (id, queue, kind, payload, state, max_attempts, created_at, webhook)
         SELECT id, 'default', kind, '{}', 'queued', 3, now(), webhook
           FROM UNNEST($1::text[], $2::text[], $3::text[]) AS t(id, kind, webhook)",
    )
    .bind(&ids)
    .bind(kinds)
    .bind(webhooks)
    .execute(&pool)
    .await
    .unwrap();
    let statements = [
        "UPDATE jobs SET state = 'running', attempts = 1",
        "UPDATE jobs SET progress = 50, progress_message = 'half'",
        "UPDATE jobs SET state = CASE WHEN kind = 'diag.noop' THEN 'completed' ELSE 'failed' END
          WHERE id <> $1",
    ];
    for statement in statements {
        sqlx::query(statement)
            .bind(&ids[3])
            .execute(&pool)
            .await
            .unwrap();
    }

    let mut told = BTreeSet::new();
    let expected: BTreeSet<(String, String, i64)> = ids
        .iter()
        .flat_map(|id| {
            [("queued", 0), ("running", 1)]
                .into_iter()
                .map(move |(state, attempts)| (id.clone(), state.to_owned(), attempts))
        })
        .chain(ids[..3].iter().zip(kinds).map(|(id, kind)| {
            let end = if kind == "diag.noop" {
                "completed"
            } else {
                "failed"
            };
            (id.clone(), end.to_owned(), 1)
        }))
        .collect();
    while told.len() < expected.len() {
        let notification = tokio::time::timeout(DEADLINE, listener.recv())
            .await
            .unwrap_or_else(|_| panic!("told so far: {told:?}"))
            .unwrap();
        let event: Value = serde_json::from_str(notification.payload()).unwrap();
        let row = (
            event["id"].as_str().unwrap().to_owned(),
            event["state"].as_str().unwrap().to_owned(),
            event["attempts"].as_i64().unwrap(),
        );
        assert!(told.insert(row.clone()), "told twice: {row:?}");
    }
    assert_eq!(told, expected);
    // Nothing more: the progress update told nothing. A marker notification sent after the
    // statements is the next thing to arrive.
    sqlx::query("SELECT pg_notify('quizworker_job_state', 'marker')")
        .execute(&pool)
        .await
        .unwrap();
    let next = tokio::time::timeout(DEADLINE, listener.recv())
        .await
        .expect("the marker arrives")
        .unwrap();
    assert_eq!(next.payload(), "marker");

    let deliveries: BTreeSet<(String, String, String)> =
        sqlx::query_as("SELECT job_id, endpoint, event FROM webhook_deliveries")
            .fetch_all(&pool)
            .await
            .unwrap()
            .into_iter()
            .collect();
    let delivery = |i: usize, endpoint: &str, event: &str| {
        (ids[i].clone(), endpoint.to_owned(), event.to_owned())
    };
    assert_eq!(
        deliveries,
        BTreeSet::from([
            delivery(0, "lms", "job.completed"),
            delivery(1, "lms", "job.completed"),
            delivery(1, "crm", "job.completed"),
            delivery(2, "crm", "job.failed"),
        ])
    );
}
