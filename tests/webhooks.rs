//! Completion webhooks (docs/WEB_TIER.md, section 4) through the real daemon to a local HTTP
//! server: signed so that the Standard Webhooks reference library (Python `standardwebhooks`,
//! tests/webhook_verify.py) accepts them, retried after a 500 and after a timeout, refused for
//! an address the endpoint may not reach, sent again from the CLI.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::{DEADLINE, TestEnv, seen, wait_until};
use quizworker_jobs::ENQUEUE_SCRIPT;
use serde_json::{Value, json};
use sqlx::PgPool;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

/// The signing secret the tests' endpoints use: `whsec_` and 32 bytes in base64.
const SECRET: &str = "whsec_dGVzdC1zZWNyZXQtb2YtdGhpcnR5LXR3by1ieXRlcyE=";
const SECRET_VAR: &str = "WEBHOOK_TEST_SECRET";

fn config(endpoints: &str) -> String {
    format!(
        "{}\n[webhooks]\ntimeout = \"1s\"\nmax_attempts = 3\n\
         backoff = {{ base = \"200ms\", cap = \"1s\", jitter = 0.0 }}\n{endpoints}",
        common::FAST_CONFIG
    )
}

fn endpoint(name: &str, url: &str, kinds: &[&str], allow_private: bool) -> String {
    format!(
        "[webhooks.endpoints.{name}]\nurl = \"{url}\"\nsecret_env = \"{SECRET_VAR}\"\n\
         kinds = {kinds:?}\nallow_private = {allow_private}\n"
    )
}

fn spawn(env: &TestEnv) -> common::Daemon {
    env.spawn_daemon_with(&[], &[(SECRET_VAR, SECRET)])
}

/// The deliveries of a job, as `webhooks list --job --json` prints them.
fn deliveries(env: &TestEnv, job: &str) -> Vec<Value> {
    env.cli_json(&["webhooks", "list", "--job", job, "--json"])
        .as_array()
        .expect("a list")
        .clone()
}

/// Waits until every delivery of `job` (at least `count`) is settled, and returns them.
async fn settled(env: &TestEnv, job: &str, count: usize) -> Vec<Value> {
    let what = format!("{count} deliveries of {job} settled");
    wait_until(&what, DEADLINE, async || {
        let rows = deliveries(env, job);
        match rows.len() >= count && rows.iter().all(|d| d["state"] != "pending") {
            true => Ok(rows),
            false => Err(format!("they are {rows:#?}\n{}", env.daemon_logs())),
        }
    })
    .await
}

fn header<'a>(request: &'a Request, name: &str) -> &'a str {
    request
        .headers
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .to_str()
        .unwrap()
}

/// What the reference library says of a request: "ok" or "invalid: ...".
fn verify(request: &Request, body: &[u8]) -> String {
    use std::io::Write;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/webhook_verify.py");
    let mut child = std::process::Command::new("python3")
        .args([
            script,
            SECRET,
            header(request, "webhook-id"),
            header(request, "webhook-timestamp"),
            header(request, "webhook-signature"),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    child.stdin.take().unwrap().write_all(body).unwrap();
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !stderr.contains("ModuleNotFoundError"),
        "pip install standardwebhooks (scripts/services.sh does): {stderr}"
    );
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

/// A local endpoint that answers every POST with `status`.
async fn endpoint_answering(status: u16) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(status))
        .mount(&server)
        .await;
    server
}

async fn enqueue_with_script(env: &TestEnv, envelope: &Value) {
    let (_, created): (String, i64) = redis::Script::new(ENQUEUE_SCRIPT)
        .arg(env.queue("default"))
        .arg(envelope.to_string())
        .invoke_async(&mut env.redis.clone())
        .await
        .unwrap();
    assert_eq!(created, 1);
}

#[sqlx::test]
async fn jobs_are_told_signed_as_the_spec_says_per_kind_and_per_job(pool: PgPool) {
    let server = endpoint_answering(204).await;
    let endpoints = endpoint(
        "lms",
        &format!("{}/hooks/lms", server.uri()),
        &["diag.noop"],
        true,
    ) + &endpoint("audit", &format!("{}/hooks/audit", server.uri()), &[], true);
    let env = TestEnv::with_config(pool, &config(&endpoints)).await;
    let _daemon = spawn(&env);

    // Per kind: every diag.noop goes to `lms`.
    let noop = env.enqueue("diag.noop", "{}", &[]);
    let rows = settled(&env, &noop, 1).await;
    assert_eq!(rows.len(), 1, "{rows:#?}");
    assert_eq!(rows[0]["state"], "delivered");
    assert_eq!(rows[0]["endpoint"], "lms");
    assert_eq!(rows[0]["last_status"], 204);

    // Per job: the envelope names `audit`; a failure is told too.
    let failing = ulid::Ulid::new().to_string();
    enqueue_with_script(
        &env,
        &json!({"v": 1, "id": failing, "kind": "diag.fail", "payload": {"permanent": true},
                "created_at": chrono::Utc::now().to_rfc3339(), "webhook": "audit"}),
    )
    .await;
    let rows = settled(&env, &failing, 1).await;
    assert_eq!(rows[0]["endpoint"], "audit");
    assert_eq!(rows[0]["event"], "job.failed");

    let requests = server.received_requests().await.unwrap();
    assert_eq!(requests.len(), 2);
    for request in &requests {
        assert_eq!(verify(request, &request.body), "ok");
        // A body changed on the way is refused: the check is real.
        let mut tampered = request.body.clone();
        tampered.push(b' ');
        assert!(verify(request, &tampered).starts_with("invalid"));
        let body: Value = serde_json::from_slice(&request.body).unwrap();
        assert!(body["data"].get("payload").is_none(), "{body}");
        let id = header(request, "webhook-id");
        assert!(id.starts_with("msg_"), "{id}");
        match request.url.path() {
            "/hooks/lms" => {
                assert_eq!(body["type"], "job.completed");
                assert_eq!(body["data"]["id"], noop.as_str());
                assert_eq!(body["data"]["state"], "completed");
                assert_eq!(body["data"]["attempts"], 1);
            }
            "/hooks/audit" => {
                assert_eq!(body["type"], "job.failed");
                assert_eq!(body["data"]["id"], failing.as_str());
                assert!(
                    body["data"]["error"]
                        .as_str()
                        .unwrap()
                        .contains("permanent")
                );
            }
            other => panic!("a request to {other}"),
        }
    }
}

#[sqlx::test]
async fn a_500_and_a_timeout_are_retried_until_delivered(pool: PgPool) {
    let server = MockServer::start().await;
    Mock::given(path("/flaky"))
        .respond_with(ResponseTemplate::new(500).set_body_string("database is down"))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(path("/flaky"))
        .respond_with(ResponseTemplate::new(200).set_body_string("thanks"))
        .mount(&server)
        .await;
    Mock::given(path("/slow"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(3)))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(path("/slow"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    let endpoints = endpoint(
        "flaky",
        &format!("{}/flaky", server.uri()),
        &["diag.noop"],
        true,
    ) + &endpoint(
        "slow",
        &format!("{}/slow", server.uri()),
        &["diag.noop"],
        true,
    );
    let env = TestEnv::with_config(pool, &config(&endpoints)).await;
    let _daemon = spawn(&env);

    let id = env.enqueue("diag.noop", "{}", &[]);
    let rows = settled(&env, &id, 2).await;
    for row in &rows {
        assert_eq!(row["state"], "delivered", "{row:#}");
        assert_eq!(row["attempts"], 2, "{row:#}");
        assert_eq!(row["last_status"], 200, "{row:#}");
    }
    let flaky = rows.iter().find(|r| r["endpoint"] == "flaky").unwrap();
    assert_eq!(flaky["last_response"], "thanks");
    let requests = server.received_requests().await.unwrap();
    let to = |p: &str| requests.iter().filter(|r| r.url.path() == p).count();
    // The slow endpoint got its first request, and a second once the first timed out.
    assert_eq!((to("/flaky"), to("/slow")), (2, 2));
    // A retry is the same message: the same webhook-id, signed again.
    let ids: Vec<&str> = requests
        .iter()
        .filter(|r| r.url.path() == "/flaky")
        .map(|r| header(r, "webhook-id"))
        .collect();
    assert_eq!(ids[0], ids[1]);
}

#[sqlx::test]
async fn an_endpoint_on_a_loopback_address_is_refused_unless_allowed(pool: PgPool) {
    let server = endpoint_answering(200).await;
    let port = server.address().port();
    let endpoints = endpoint(
        "by_name",
        &format!("http://localhost:{port}/hooks"),
        &["diag.noop"],
        false,
    ) + &endpoint(
        "by_address",
        &format!("http://127.0.0.1:{port}/hooks"),
        &["diag.noop"],
        false,
    );
    let env = TestEnv::with_config(pool, &config(&endpoints)).await;
    let _daemon = spawn(&env);

    let id = env.enqueue("diag.noop", "{}", &[]);
    let rows = settled(&env, &id, 2).await;
    for row in &rows {
        assert_eq!(row["state"], "failed", "{row:#}");
        assert_eq!(row["attempts"], 1, "refused at once, not retried: {row:#}");
        let error = row["last_error"].as_str().unwrap();
        assert!(error.contains("a loopback address"), "{error}");
        assert!(error.contains("allow_private"), "{error}");
    }
    assert!(server.received_requests().await.unwrap().is_empty());
}

#[sqlx::test]
async fn an_operator_sends_a_delivery_again_from_the_cli(pool: PgPool) {
    let server = endpoint_answering(200).await;
    let endpoints = endpoint(
        "lms",
        &format!("{}/hooks", server.uri()),
        &["diag.noop"],
        true,
    );
    let env = TestEnv::with_config(pool, &config(&endpoints)).await;
    let _daemon = spawn(&env);

    let id = env.enqueue("diag.noop", "{}", &[]);
    let first = settled(&env, &id, 1).await[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let out = env.cli_json(&["webhooks", "redeliver", &first, "--json"]);
    let again = out["redelivered"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(out["redelivered"][0]["of"], first.as_str());
    assert_ne!(again, first);
    let rows = settled(&env, &id, 2).await;
    let redelivery = rows.iter().find(|r| r["id"] == again.as_str()).unwrap();
    assert_eq!(redelivery["state"], "delivered");
    assert_eq!(redelivery["redelivery_of"], first.as_str());
    let ids: Vec<String> = server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .map(|r| header(r, "webhook-id").to_owned())
        .collect();
    assert_eq!(ids, [first.clone(), again]);

    // An id that is no delivery is named.
    let output = env.cli(&["webhooks", "redeliver", "msg_nope"]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("no delivery with id `msg_nope`"));
}

/// Maintenance prunes a finished job after its retention, and the job's deliveries go with it:
/// nothing of a pruned job is left to `webhooks list`.
#[sqlx::test]
async fn a_pruned_job_takes_its_deliveries_with_it(pool: PgPool) {
    let server = endpoint_answering(200).await;
    let endpoints = endpoint(
        "lms",
        &format!("{}/hooks", server.uri()),
        &["diag.noop"],
        true,
    );
    let config = format!(
        "{}\n[maintenance]\ninterval = \"1s\"\nkeep_completed = \"1s\"\n",
        config(&endpoints)
    );
    let env = TestEnv::with_config(pool, &config).await;
    let _daemon = spawn(&env);

    let id = env.enqueue("diag.noop", "{}", &[]);
    assert_eq!(settled(&env, &id, 1).await[0]["state"], "delivered");
    wait_until(
        &format!("job {id} and its deliveries deleted"),
        DEADLINE,
        async || {
            let left: i64 =
                sqlx::query_scalar("SELECT count(*) FROM webhook_deliveries WHERE job_id = $1")
                    .bind(&id)
                    .fetch_one(&env.pool)
                    .await
                    .unwrap();
            let job = env.job(&id).await;
            seen(left == 0 && job.is_none(), || {
                format!("{left} deliveries, job {job:?}\n{}", env.daemon_logs())
            })
        },
    )
    .await;
    assert!(deliveries(&env, &id).is_empty());
}
