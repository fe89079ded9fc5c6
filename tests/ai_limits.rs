//! The AI jobs' limits against a local server speaking the chat-completions API (wiremock):
//! the daily spend cap holding jobs until the next UTC day without spending their attempts,
//! requests and tokens a minute held across two daemons, a job that runs once when Redis drops
//! its connections, and `quizworker check`'s report of the provider.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Days, Utc};
use common::ai::{self, API_KEY, AiEnv, completions, timed};
use common::{DEADLINE, FAST_CONFIG, OwnRedis, TestEnv, seen, wait_until};
use quizworker::config::Config;
use quizworker::runtime::rate_limit::{Meter, RateLimits};
use quizworker_jobs::ai::AiHints;
use serde_json::{Value, json};
use sqlx::PgPool;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// With prices to reach a cap with; `ai_extra` is added to `[ai]`.
fn config(ai_extra: &str) -> String {
    ai::config(
        "test-model",
        &format!("cached_input_price_per_million = 0.5\n{ai_extra}"),
    )
}

impl AiEnv {
    async fn new(pool: PgPool, ai_extra: &str) -> AiEnv {
        AiEnv::start(pool, &config(ai_extra)).await
    }

    async fn with_redis(pool: PgPool, ai_extra: &str, redis: &OwnRedis) -> AiEnv {
        AiEnv {
            env: TestEnv::with_redis(pool, &config(ai_extra), &redis.url).await,
            server: MockServer::start().await,
        }
    }

    fn hints(&self, questions: Value) -> String {
        self.env.enqueue(
            "ai.hints",
            &json!({"questions": questions}).to_string(),
            &[],
        )
    }

    /// Jobs of four questions, `questions` in all, pushed at once (the CLI would take a
    /// process per job, and the limit would wait for them).
    async fn push_jobs_of_four(&self, questions: usize) -> Vec<String> {
        let producer = self.env.producer().await;
        let mut ids = Vec::new();
        for j in 0..questions / 4 {
            let questions: Vec<Value> = (0..4).map(|i| question(j * 4 + i)).collect();
            let job: AiHints = serde_json::from_value(json!({"questions": questions})).unwrap();
            ids.push(producer.push(&job).await.unwrap().id);
        }
        ids
    }

    /// The question text of each request the server received, in order.
    async fn asked(&self) -> Vec<String> {
        self.server
            .received_requests()
            .await
            .unwrap_or_default()
            .iter()
            .map(|r| question_text(&r.body_json::<Value>().unwrap()))
            .collect()
    }
}

/// The question's text in a request's user message (`"text":"..."` in the JSON between the
/// delimiters).
fn question_text(body: &Value) -> String {
    let user = body["messages"][1]["content"].as_str().unwrap_or_default();
    let start = user
        .find("<question>")
        .map_or(0, |i| i + "<question>".len());
    let end = user.find("</question>").unwrap_or(user.len());
    let question: Value = serde_json::from_str(user[start..end].trim()).unwrap_or(Value::Null);
    question["text"].as_str().unwrap_or_default().to_owned()
}

/// Hints that state no key of the questions below, billing `prompt` input and `completion`
/// output tokens (200 and 40 cost 0.00028 USD at the prices above).
fn reply(prompt: u64, completion: u64) -> ResponseTemplate {
    let content = json!({
        "nudge": "Look closely at what the question asks.",
        "method": "Recall the definition that applies here.",
        "near_solution": "Work it through step by step and stop before the last step."
    });
    ResponseTemplate::new(200).set_body_json(json!({
        "id": "chatcmpl-1", "object": "chat.completion", "model": "test-model",
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": content.to_string(), "refusal": null}}],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                  "total_tokens": prompt + completion}
    }))
}

fn question(i: usize) -> Value {
    json!({"id": format!("q{i}"), "type": "integer",
           "text": format!("What is {i} x 7?"), "answer": (i * 7).to_string()})
}

/// Units a second between the first and the last of `times`, each of the `per_request` units.
fn measured_rate(times: &[Instant], per_request: f64) -> f64 {
    let span = times[times.len() - 1]
        .duration_since(times[0])
        .as_secs_f64();
    (times.len() - 1) as f64 * per_request / span
}

/// When a waiting job runs next, and why it waits.
#[derive(Debug, sqlx::FromRow)]
struct Waiting {
    scheduled_at: Option<DateTime<Utc>>,
    last_error: Option<String>,
}

async fn waiting(env: &TestEnv, id: &str) -> Waiting {
    sqlx::query_as("SELECT scheduled_at, last_error FROM jobs WHERE id = $1")
        .bind(id)
        .fetch_one(&env.pool)
        .await
        .unwrap()
}

/// A cap reached by the first reply: the job's second question is not asked, the job waits in
/// `scheduled` for the next UTC midnight with its attempts left as they were, the reason shown
/// by `jobs show`; on the next day (the ledger moved back a day, the job made due as midnight
/// would) it runs, and each question was asked once.
#[sqlx::test(migrations = false)]
async fn the_spend_cap_holds_a_job_until_the_next_utc_day_without_spending_attempts(pool: PgPool) {
    // One request at a time, so the first reply is billed before the second is cleared.
    let t = AiEnv::new(pool, "daily_spend_cap_usd = 0.0001\nconcurrency = 1").await;
    completions()
        .respond_with(reply(200, 40))
        .mount(&t.server)
        .await;
    let daemon = t.daemon_with(&[API_KEY]);

    let id = t.hints(json!([question(1), question(2)]));
    let job = t.env.wait_for_state(&id, "scheduled").await;
    let before = Utc::now();
    assert_eq!(t.asked().await, ["What is 1 x 7?"]);
    let job_row = waiting(&t.env, &id).await;
    // Attempt 1 ran and did not count: 3 attempts are left, as before it ran.
    assert_eq!(
        (job.attempts, job.max_attempts - job.attempts),
        (1, 3),
        "{job_row:?}"
    );
    let midnight = before
        .date_naive()
        .checked_add_days(Days::new(1))
        .unwrap()
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc();
    assert_eq!(job_row.scheduled_at, Some(midnight), "{job_row:?}");
    let reason = job_row.last_error.unwrap();
    assert!(
        reason.contains(
            "daily AI spend cap (ai.daily_spend_cap_usd = 0.0001) is reached: 0.0003 USD spent"
        ),
        "{reason}"
    );
    let attempts = t.env.attempts(&id).await;
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].outcome, "snoozed");
    let shown = t.env.cli_ok(&["jobs", "show", &id]);
    assert!(shown.contains("scheduled"), "{shown}");
    assert!(shown.contains("daily AI spend cap"), "{shown}");
    assert!(shown.contains("snoozed"), "{shown}");
    daemon.wait_for_log("the daily AI spend cap is reached");

    // Redis holds it for midnight.
    let scheduled = format!("{}:scheduled", t.env.queue("ai"));
    let due: Option<f64> = t
        .env
        .redis_cmd(redis::cmd("ZSCORE").arg(&scheduled).arg(&id))
        .await;
    assert_eq!(due, Some(midnight.timestamp() as f64));

    // The next day: today's spend is yesterday's, and the job is due.
    sqlx::query("UPDATE ai_spend_daily SET day = day - 1")
        .execute(&t.env.pool)
        .await
        .unwrap();
    // Rather than wait for midnight, the operator runs it now.
    let out = t.env.cli_ok(&["jobs", "run-now", &id]);
    assert!(out.contains("made 1 job(s) due now"), "{out}");
    let job = t.env.wait_for_state(&id, "completed").await;
    let result = job.result.unwrap();
    assert_eq!(
        (result["generated"].as_u64(), result["cached"].as_u64()),
        (Some(1), Some(1)),
        "{result}"
    );
    assert_eq!(t.asked().await, ["What is 1 x 7?", "What is 2 x 7?"]);
    assert_eq!((job.attempts, job.max_attempts), (2, 4));
    let outcomes: Vec<String> = t
        .env
        .attempts(&id)
        .await
        .into_iter()
        .map(|a| a.outcome)
        .collect();
    assert_eq!(outcomes, ["snoozed", "completed"]);
}

/// A job whose questions are all cached sends no request, so the cap does not hold it.
#[sqlx::test(migrations = false)]
async fn a_reached_cap_does_not_hold_a_job_that_needs_no_request(pool: PgPool) {
    let t = AiEnv::new(pool, "daily_spend_cap_usd = 0.0001").await;
    completions()
        .respond_with(reply(200, 40))
        .expect(1)
        .mount(&t.server)
        .await;
    let _daemon = t.daemon_with(&[API_KEY]);
    let first = t.hints(json!([question(1)]));
    t.env.wait_for_state(&first, "completed").await;
    // The cap is reached now; the same question again comes from the cache.
    let second = t.hints(json!([question(1)]));
    let job = t.env.wait_for_state(&second, "completed").await;
    assert_eq!(job.result.unwrap()["cached"], 1);
    // A new question waits.
    let third = t.hints(json!([question(2)]));
    t.env.wait_for_state(&third, "scheduled").await;
    t.server.verify().await;
}

/// Today's spend is kept in a row per connection's backend, so that replies stored at once do
/// not queue on one row's lock; the cap counts every row of the day.
#[sqlx::test(migrations = false)]
async fn the_spend_cap_counts_what_every_connection_recorded(pool: PgPool) {
    let t = AiEnv::new(pool, "daily_spend_cap_usd = 0.015").await;
    completions()
        .respond_with(reply(200, 40))
        .mount(&t.server)
        .await;
    t.env.cli_ok(&["migrate"]);

    // Two replies billed on two connections at once land in their backends' rows.
    let mut held = Vec::new();
    let mut expected: Vec<(i16, i64)> = Vec::new();
    for _ in 0..2 {
        let mut conn = t.env.pool.acquire().await.unwrap();
        let shard: i32 = sqlx::query_scalar("SELECT pg_backend_pid() % 16")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        sqlx::query(
            "INSERT INTO ai_usage (job_id, kind, model, prompt_version, outcome, input_tokens,
                                   cached_tokens, output_tokens, cost_usd, duration_ms)
             VALUES ('j', 'ai.hints', 'test-model', 'hints-v1', 'answered', 1, 0, 1, 0.01, 1)",
        )
        .execute(&mut *conn)
        .await
        .unwrap();
        match expected.iter_mut().find(|(s, _)| i32::from(*s) == shard) {
            Some((_, requests)) => *requests += 1,
            None => expected.push((i16::try_from(shard).unwrap(), 1)),
        }
        held.push(conn);
    }
    expected.sort();
    let rows: Vec<(i16, i64)> =
        sqlx::query_as("SELECT shard, requests FROM ai_spend_daily ORDER BY shard")
            .fetch_all(&t.env.pool)
            .await
            .unwrap();
    assert_eq!(rows, expected);

    // 0.01 USD in each of two rows: neither reaches the cap of 0.015, the day's sum does.
    sqlx::query("DELETE FROM ai_spend_daily")
        .execute(&t.env.pool)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO ai_spend_daily (day, shard, requests, cost_usd)
         SELECT (now() AT TIME ZONE 'UTC')::date, shard, 1, 0.01 FROM generate_series(0, 1) shard",
    )
    .execute(&t.env.pool)
    .await
    .unwrap();
    let _daemon = t.daemon_with(&[API_KEY]);
    let id = t.hints(json!([question(1)]));
    let job = t.env.wait_for_state(&id, "scheduled").await;
    let reason = job.last_error.unwrap();
    assert!(reason.contains("0.0200 USD spent"), "{reason}");
    assert!(t.asked().await.is_empty());
}

/// `rate` on the ai queue (requests a minute) holds at the server with two daemons sharing it.
#[sqlx::test(migrations = false)]
async fn the_request_rate_holds_across_two_daemons(pool: PgPool) {
    const REQUESTS: usize = 48;
    const RATE: f64 = 8.0;
    let t = AiEnv::new(pool, "").await;
    let times = Arc::new(Mutex::new(Vec::new()));
    completions()
        .respond_with(timed(&times, reply(200, 40)))
        .mount(&t.server)
        .await;
    let rate = [API_KEY, ("QUIZWORKER_QUEUES__AI__RATE", "480/min")];
    let _daemons = [t.daemon_with(&rate), t.daemon_with(&rate)];
    let ids = t.push_jobs_of_four(REQUESTS).await;
    for id in &ids {
        t.env.wait_for_state(id, "completed").await;
    }
    assert_both_processes_ran(&t.env).await;
    let times = times.lock().unwrap().clone();
    assert_eq!(times.len(), REQUESTS);
    let measured = measured_rate(&times, 1.0);
    eprintln!("{REQUESTS} requests: {measured:.2}/s at the server (limit {RATE}/s)");
    assert!(measured <= RATE * 1.05, "{measured:.2}/s is over {RATE}/s");
    assert!(
        measured >= RATE * 0.8,
        "{measured:.2}/s: the limit slowed requests too much"
    );
}

/// `ai.tokens_per_minute` holds at the server with two daemons sharing it, counted as the
/// replies bill them. Each reply bills far more than the request was reckoned to take (1,000
/// tokens against an estimate near 500), so the rate holds only if every reply's debt is
/// settled.
#[sqlx::test(migrations = false)]
async fn the_token_rate_holds_across_two_daemons_by_the_tokens_billed(pool: PgPool) {
    const REQUESTS: usize = 40;
    const TOKENS_PER_REQUEST: f64 = 1000.0;
    const TOKENS_PER_SECOND: f64 = 5000.0;
    let t = AiEnv::new(
        pool,
        "tokens_per_minute = 300000\noutput_tokens_estimate = 100",
    )
    .await;
    let times = Arc::new(Mutex::new(Vec::new()));
    completions()
        .respond_with(timed(&times, reply(800, 200)))
        .mount(&t.server)
        .await;
    let _daemons = [t.daemon_with(&[API_KEY]), t.daemon_with(&[API_KEY])];
    let ids = t.push_jobs_of_four(REQUESTS).await;
    for id in &ids {
        t.env.wait_for_state(id, "completed").await;
    }
    assert_both_processes_ran(&t.env).await;
    let times = times.lock().unwrap().clone();
    assert_eq!(times.len(), REQUESTS);
    let measured = measured_rate(&times, TOKENS_PER_REQUEST);
    eprintln!(
        "{REQUESTS} requests: {measured:.0} tokens/s at the server (limit {TOKENS_PER_SECOND}/s)"
    );
    assert!(
        measured <= TOKENS_PER_SECOND * 1.05,
        "{measured:.0} tokens/s is over {TOKENS_PER_SECOND}/s"
    );
    assert!(
        measured >= TOKENS_PER_SECOND * 0.8,
        "{measured:.0} tokens/s: the limit slowed requests too much"
    );
}

async fn assert_both_processes_ran(env: &TestEnv) {
    let processes: i64 =
        sqlx::query_scalar("SELECT count(DISTINCT process) FROM jobs WHERE kind = 'ai.hints'")
            .fetch_one(&env.pool)
            .await
            .unwrap();
    assert_eq!(processes, 2, "both processes should have run jobs");
}

/// Two limiters on one Redis key, as two processes have: tokens taken with a cost and settled
/// with what was really used hold the limit between them, and tokens given back let the next
/// request go sooner.
#[sqlx::test(migrations = false)]
async fn reserved_tokens_are_settled_across_two_limiters(pool: PgPool) {
    let env = TestEnv::with_config(pool, &config("tokens_per_minute = 600000")).await;
    let config: Config = env.config();
    let limiters: Vec<RateLimits> = {
        let mut limiters = Vec::new();
        for _ in 0..2 {
            let conn = quizworker::runtime::queue::connect(&config).await.unwrap();
            limiters.push(RateLimits::new(&config, conn));
        }
        limiters
    };
    // 10,000 tokens a second; each of 20 acquires reserves 500 and settles to 1,000 used.
    let started = Instant::now();
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let limiter = limiters[i % 2].clone();
            tokio::spawn(async move {
                limiter.acquire_n(Meter::AiTokens, 500).await.unwrap();
                let at = Instant::now();
                limiter.settle(Meter::AiTokens, 500).await.unwrap();
                at
            })
        })
        .collect();
    let mut times = Vec::new();
    for task in tasks {
        times.push(task.await.unwrap());
    }
    times.sort();
    let measured = measured_rate(&times, 1000.0);
    assert!(measured <= 10_000.0 * 1.05, "{measured:.0} tokens/s");
    assert!(measured >= 10_000.0 * 0.8, "{measured:.0} tokens/s");

    // Given back: a request reckoned at 5,000 tokens (half a second) that used none lets the
    // next go at once.
    tokio::time::sleep(Duration::from_millis(200)).await;
    limiters[0].acquire_n(Meter::AiTokens, 5000).await.unwrap();
    limiters[0].settle(Meter::AiTokens, -5000).await.unwrap();
    let asked = Instant::now();
    limiters[1].acquire_n(Meter::AiTokens, 10).await.unwrap();
    assert!(
        asked.elapsed() < Duration::from_millis(100),
        "waited {:?} after the tokens were given back",
        asked.elapsed()
    );
    assert!(started.elapsed() < DEADLINE);
}

/// Redis drops every connection of the daemon (a failover, CLIENT KILL) while a job asks its
/// questions: the job runs on in its process, is not run a second time, and each question is
/// asked once.
#[sqlx::test(migrations = false)]
async fn redis_connections_killed_mid_hints_ask_each_question_once(pool: PgPool) {
    const QUESTIONS: usize = 40;
    // A Redis of its own: killing every client of the shared one would hit other tests.
    let redis = OwnRedis::start();
    let t = AiEnv::with_redis(pool, "concurrency = 4", &redis).await;
    completions()
        .respond_with(reply(200, 40).set_delay(Duration::from_millis(100)))
        .mount(&t.server)
        .await;
    let daemon = t.daemon_with(&[API_KEY]);
    let id = t.hints(json!((0..QUESTIONS).map(question).collect::<Vec<_>>()));
    wait_until("8 requests made", DEADLINE, async || {
        let asked = t.server.received_requests().await.unwrap_or_default().len();
        seen(asked >= 8, || format!("{asked} are"))
    })
    .await;
    t.env.kill_redis_connections().await;
    daemon.wait_for_log("the worker died");

    let job = t.env.wait_for_state(&id, "completed").await;
    assert_eq!(
        job.attempts,
        1,
        "the job ran once: {job:?}\n{}",
        daemon.log_text()
    );
    assert_eq!(job.result.unwrap()["generated"], QUESTIONS);
    let mut per_question: HashMap<String, usize> = HashMap::new();
    for text in t.asked().await {
        *per_question.entry(text).or_default() += 1;
    }
    assert_eq!(per_question.len(), QUESTIONS);
    assert!(
        per_question.values().all(|n| *n == 1),
        "a question was asked twice: {per_question:?}"
    );
}

/// `quizworker check` reports the provider once AI is set up: it answers and lists the model,
/// lists others only, has no model list, or cannot be reached; without `[ai]` it is not set up.
#[sqlx::test]
async fn check_reports_the_ai_provider(pool: PgPool) {
    let t = AiEnv::new(pool, "").await;
    let check = |base_url: &str, key: Option<&str>, config: Option<&std::path::Path>| {
        let mut command = t.env.command();
        command
            .args(["check", "--json"])
            .env("QUIZWORKER_EXPORTS__DIRECTORY", t.env.exports_dir())
            .env_remove("AI_API_KEY");
        if !base_url.is_empty() {
            command.env("QUIZWORKER_AI__BASE_URL", base_url);
        }
        if let Some(key) = key {
            command.env("AI_API_KEY", key);
        }
        if let Some(config) = config {
            command.env("QUIZWORKER_CONFIG", config);
        }
        let out = command.output().unwrap();
        let results: Vec<Value> = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
        let ai = results
            .iter()
            .find(|r| r["check"] == "ai")
            .cloned()
            .unwrap_or(Value::Null);
        (out.status.code(), ai)
    };
    let base_url = format!("{}/v1", t.server.uri());

    // The model is listed; the key is sent.
    let listed = Mock::given(method("GET"))
        .and(path("/v1/models"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"object": "list", "data": [
            {"id": "other-model", "object": "model"}, {"id": "test-model", "object": "model"}]})),
        )
        .mount_as_scoped(&t.server)
        .await;
    let (code, ai) = check(&base_url, Some("sk-test-key"), None);
    assert_eq!(code, Some(0), "{ai}");
    let detail = ai["detail"].as_str().unwrap();
    assert!(
        detail.contains("model `test-model` is among its 2 models"),
        "{detail}"
    );
    assert!(detail.contains("key set (AI_API_KEY)"), "{detail}");
    let requests = t.server.received_requests().await.unwrap();
    assert_eq!(
        requests
            .last()
            .unwrap()
            .headers
            .get("authorization")
            .unwrap(),
        "Bearer sk-test-key"
    );
    drop(listed);

    // Only other models.
    let others = Mock::given(method("GET"))
        .and(path("/v1/models"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"object": "list", "data": [
            {"id": "gpt-4o-mini", "object": "model"}]})),
        )
        .mount_as_scoped(&t.server)
        .await;
    let (code, ai) = check(&base_url, None, None);
    assert_ne!(code, Some(0));
    assert_eq!(ai["ok"], false);
    let detail = ai["detail"].as_str().unwrap();
    assert!(
        detail.contains("model `test-model` (ai.model) is not among its models: `gpt-4o-mini`"),
        "{detail}"
    );
    assert!(detail.contains("no key (AI_API_KEY unset)"), "{detail}");
    drop(others);

    // A wrong key.
    let refused = Mock::given(method("GET"))
        .and(path("/v1/models"))
        .respond_with(ResponseTemplate::new(401).set_body_json(
            json!({"error": {"message": "Incorrect API key provided", "type": "invalid_request_error"}}),
        ))
        .mount_as_scoped(&t.server)
        .await;
    let (code, ai) = check(&base_url, Some("sk-wrong"), None);
    assert_ne!(code, Some(0));
    let detail = ai["detail"].as_str().unwrap();
    assert!(
        detail.contains("401: Incorrect API key provided"),
        "{detail}"
    );
    assert!(detail.contains("check AI_API_KEY"), "{detail}");
    drop(refused);

    // No model list (wiremock answers 404 to what no mock matches).
    let (code, ai) = check(&base_url, None, None);
    assert_eq!(code, Some(0), "{ai}");
    assert!(
        ai["detail"].as_str().unwrap().contains("has no model list"),
        "{ai}"
    );

    // Nothing listens.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_url = format!("http://{}/v1", closed.local_addr().unwrap());
    drop(closed);
    let (code, ai) = check(&closed_url, None, None);
    assert_ne!(code, Some(0));
    assert!(
        ai["detail"]
            .as_str()
            .unwrap()
            .contains("could not be reached"),
        "{ai}"
    );

    // No [ai] and no key: not set up, and not a failure.
    let plain = t.env.dir.path().join("plain.toml");
    std::fs::write(&plain, FAST_CONFIG).unwrap();
    let (code, ai) = check("", None, Some(&plain));
    assert_eq!(code, Some(0), "{ai}");
    assert!(
        ai["detail"].as_str().unwrap().starts_with("not set up"),
        "{ai}"
    );
}
