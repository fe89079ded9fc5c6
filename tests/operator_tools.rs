//! The operator's tools keep working whatever is stored or sent: any journaled job shows, the
//! metrics stay small, log lines cannot be forged, no password shows, no command panics, and
//! each kind of failure has its exit code. Also what a newcomer reads first: `check`,
//! `migrate`, the help texts and the README's table of commands.

mod common;

use std::fs;
use std::process::{Command, Output, Stdio};

use clap::CommandFactory;
use common::{DEADLINE, TestEnv, http_get, seen, wait_until};
use quizworker::cli::Cli;
use quizworker_jobs::{Envelope, Queue};
use serde_json::{Value, json};
use sqlx::PgPool;

/// Exit codes (README, "The CLI").
const FAILED: i32 = 1;
const USAGE: i32 = 2;
const BAD_INPUT: i32 = 3;
const UNREACHABLE: i32 = 4;

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Asserts the command exited with `code`, said `message` on standard error, and did not panic.
fn assert_fails(output: &Output, code: i32, message: &str, what: &str) {
    let err = stderr(output);
    assert_eq!(output.status.code(), Some(code), "{what}: {err}");
    assert!(
        err.contains(message),
        "{what}: {err:?} should say {message:?}"
    );
    assert!(!err.contains("panicked"), "{what} panicked: {err}");
}

/// Journals a job straight into the table, the way a producer's bytes may sit there.
async fn insert_job(env: &TestEnv, id: &str, kind: &str, payload: &str, result: Option<&str>) {
    sqlx::query(
        "INSERT INTO jobs (id, queue, kind, payload, state, attempts, max_attempts, result,
                           created_at, finished_at)
         VALUES ($1, 'default', $2, $3::json, 'completed', 1, 3, $4::jsonb, now(), now())",
    )
    .bind(id)
    .bind(kind)
    .bind(payload)
    .bind(result)
    .execute(&env.pool)
    .await
    .expect("insert a job");
}

fn nested(depth: usize) -> String {
    format!("{}{}", "[".repeat(depth), "]".repeat(depth))
}

// --- 1. Any stored job shows ---------------------------------------------------------------------

#[sqlx::test]
async fn jobs_list_and_show_show_payloads_serde_json_cannot_read(pool: PgPool) {
    let env = TestEnv::new(pool).await;
    let deep = nested(300);
    let lone_surrogate = r#"{"note": "\ud800"}"#;
    insert_job(
        &env,
        "01KAAAAAAAAAAAAAAAAAAAAAC1",
        "diag.noop",
        "{}",
        Some("null"),
    )
    .await;
    insert_job(
        &env,
        "01KAAAAAAAAAAAAAAAAAAAAAC2",
        "diag.noop",
        &deep,
        Some(&deep),
    )
    .await;
    insert_job(
        &env,
        "01KAAAAAAAAAAAAAAAAAAAAAC3",
        "diag.noop",
        lone_surrogate,
        None,
    )
    .await;

    let table = env.cli_ok(&["jobs", "list"]);
    for id in ["C1", "C2", "C3"] {
        assert!(
            table.contains(&format!("01KAAAAAAAAAAAAAAAAAAAAA{id}")),
            "{table}"
        );
    }
    let listed = env.cli_json(&["jobs", "list", "--json"]);
    let payloads: Vec<&Value> = listed
        .as_array()
        .expect("an array")
        .iter()
        .map(|job| &job["payload"])
        .collect();
    // Newest first: created in the same instant, so by id.
    assert_eq!(
        payloads,
        [&json!(lone_surrogate), &json!(deep), &json!({})],
        "what serde_json cannot read is shown as its stored text"
    );

    let shown = env.cli_json(&["jobs", "show", "01KAAAAAAAAAAAAAAAAAAAAAC2", "--json"]);
    assert_eq!(shown["payload"], json!(deep));
    assert_eq!(shown["result"], json!(deep));
    let text = env.cli_ok(&["jobs", "show", "01KAAAAAAAAAAAAAAAAAAAAAC3"]);
    assert!(
        text.contains(r#"payload      {"note": "\ud800"}"#),
        "{text}"
    );
    assert!(text.contains("not readable as JSON here"), "{text}");
}

// --- 2. /metrics stays small whatever kinds producers send --------------------------------------

#[sqlx::test]
async fn unknown_kinds_count_under_one_label_value(pool: PgPool) {
    let config = format!(
        "{}\n[http]\nqueue_sample_interval = \"100ms\"\n",
        common::FAST_CONFIG
    );
    let env = TestEnv::with_config(pool, &config).await;
    let daemon = env.spawn_daemon(&[]);
    let producer = env.producer().await;
    const KINDS: usize = 300;
    for i in 0..KINDS {
        let envelope =
            Envelope::from_parts(&format!("made.up.{i}"), &json!({}), chrono::Utc::now());
        producer
            .enqueue(Queue::Default, &envelope)
            .await
            .expect("enqueue");
    }
    wait_until(&format!("{KINDS} jobs failed"), DEADLINE, async || {
        let failed: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs WHERE state = 'failed'")
            .fetch_one(&env.pool)
            .await
            .unwrap();
        seen(failed == KINDS as i64, || {
            format!("{failed} are\n{}", daemon.log_text())
        })
    })
    .await;

    let (status, metrics) = http_get(daemon.http_addr(), "/metrics");
    assert_eq!(status, 200);
    let counted =
        r#"quizworker_jobs_finished_total{queue="default",kind="(unknown)",outcome="failed"} 300"#;
    assert!(metrics.contains(counted), "no {counted} in:\n{metrics}");
    assert!(
        !metrics.contains("made.up"),
        "a producer's kind is a label:\n{metrics}"
    );
    let series = metrics
        .lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .count();
    assert!(series < 200, "{series} series:\n{metrics}");
}

// --- 3. Log lines cannot be forged ----------------------------------------------------------------

#[sqlx::test]
async fn control_characters_from_input_are_escaped_in_log_lines(pool: PgPool) {
    let env = TestEnv::new(pool).await;
    let daemon = env.spawn_daemon(&[]);
    let kind = "evil\nINFO forged: all is well\u{0}";
    let envelope = Envelope::from_parts(kind, &json!({}), chrono::Utc::now());
    let id = envelope.id.to_string();
    env.producer()
        .await
        .enqueue(Queue::Default, &envelope)
        .await
        .expect("enqueue");
    env.wait_for_state(&id, "failed").await;
    daemon.wait_for_log("job failed");

    let log = fs::read(&daemon.log).expect("the log");
    assert!(!log.contains(&0), "a NUL reached the log");
    let log = String::from_utf8_lossy(&log);
    for line in log.lines().filter(|line| line.contains("forged")) {
        assert!(line.contains(r"evil\nINFO forged"), "a forged line:\n{log}");
    }
    assert!(
        log.contains(r"well\u{0}"),
        "the NUL is not shown escaped:\n{log}"
    );

    let listed = env.cli_ok(&["jobs", "list"]);
    assert!(
        !listed.lines().any(|line| line.starts_with("INFO forged")),
        "{listed}"
    );
}

// --- 4. No password in connection errors, whatever form it takes ---------------------------------

#[sqlx::test]
async fn passwords_given_as_query_parameters_are_masked(pool: PgPool) {
    let env = TestEnv::new(pool).await;
    const PG_SECRET: &str = "Pg-query-s3cret-81d0";
    const REDIS_SECRET: &str = "Redis-query-s3cret-3b7a";
    let (_, db_rest) = env.database_url.rsplit_once('@').expect("user@host");
    // No such role: the login fails, and the error must name the URL.
    let postgres = format!("postgres://qw_nobody@{db_rest}?password={PG_SECRET}");
    let redis_answering = format!("{}/?password={REDIS_SECRET}", env.redis_url);
    let redis_refusing = format!("redis://127.0.0.1:1/?password={REDIS_SECRET}");

    // (args, DATABASE_URL, REDIS_URL, what the output must say)
    let cases: [(&[&str], &str, &str, &[&str]); 4] = [
        (
            &["check"],
            &postgres,
            &redis_answering,
            &[
                "could not connect to Postgres at postgres://qw_nobody@",
                "?password=***",
                "role \"qw_nobody\" does not exist",
                "/?password=***, key prefix",
            ],
        ),
        (
            &["check"],
            &env.database_url,
            &redis_refusing,
            &["could not connect to Redis at redis://127.0.0.1:1/?password=***"],
        ),
        (
            &["run"],
            &postgres,
            &redis_answering,
            &["could not connect to Postgres at postgres://qw_nobody@"],
        ),
        (
            &["queues"],
            &env.database_url,
            &redis_refusing,
            &["could not connect to Redis at redis://127.0.0.1:1/?password=***"],
        ),
    ];
    // Every run at once: redis-rs takes a while to give up on a port that refuses it.
    let mut runs = Vec::new();
    for (args, database_url, redis_url, says) in cases {
        for format in ["human", "json"] {
            for rust_log in ["warn", "trace"] {
                let child = env
                    .command()
                    .args(args)
                    .env("DATABASE_URL", database_url)
                    .env("REDIS_URL", redis_url)
                    .env("QUIZWORKER_LOG_FORMAT", format)
                    .env("RUST_LOG", rust_log)
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .expect("run quizworker");
                let case = format!("{args:?} with {format} logs at {rust_log}");
                runs.push((case, format, child, says));
            }
        }
    }
    for (case, format, child, says) in runs {
        let output = child.wait_with_output().expect("wait for quizworker");
        let out = format!("{}{}", stdout(&output), stderr(&output));
        assert_eq!(output.status.code(), Some(UNREACHABLE), "{case}:\n{out}");
        for secret in [PG_SECRET, REDIS_SECRET] {
            assert!(!out.contains(secret), "{case} showed a password:\n{out}");
        }
        let readable = if format == "json" {
            format!(
                "{}{}",
                stdout(&output),
                decoded_json_lines(&stderr(&output))
            )
        } else {
            out.clone()
        };
        for expected in says {
            assert!(
                readable.contains(expected),
                "{case}: no {expected:?} in:\n{out}"
            );
        }
    }
}

/// The `message` and `error` fields of each JSON log line, decoded.
fn decoded_json_lines(text: &str) -> String {
    let mut decoded = String::new();
    for line in text.lines() {
        let value: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        for field in ["message", "error"] {
            if let Some(text) = value[field].as_str() {
                decoded.push_str(text);
                decoded.push('\n');
            }
        }
    }
    decoded
}

// --- 5. No panic, and each thing said once ---------------------------------------------------------

/// Runs a command whose standard output nobody reads (`quizworker ... | head -0`).
fn with_stdout_closed(mut command: Command) -> Output {
    let (reader, writer) = std::io::pipe().expect("a pipe");
    drop(reader);
    command
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .expect("run quizworker")
}

#[sqlx::test]
async fn a_reader_that_goes_away_ends_commands_quietly(pool: PgPool) {
    let env = TestEnv::new(pool).await;
    for i in 0..20 {
        insert_job(
            &env,
            &format!("01KAAAAAAAAAAAAAAAAAAAAA{i:02}"),
            "diag.noop",
            "{}",
            None,
        )
        .await;
    }
    let score_file = env.dir.path().join("score.json");
    fs::write(&score_file, DOCS_EXAMPLE).expect("write the score file");
    let runs: [&[&str]; 6] = [
        &["jobs", "list"],
        &["jobs", "list", "--json"],
        &["jobs", "show", "01KAAAAAAAAAAAAAAAAAAAAA07"],
        &["queues"],
        &["score", score_file.to_str().expect("a UTF-8 path")],
        &["--help"],
    ];
    for args in runs {
        let mut command = env.command();
        command.args(args).env("RUST_LOG", "warn");
        let output = with_stdout_closed(command);
        assert_eq!(
            output.status.code(),
            Some(0),
            "{args:?}: {}",
            stderr(&output)
        );
        assert_eq!(stderr(&output), "", "{args:?} said something");
    }
}

/// A complete `score` input (docs/SCORING.md's smallest test).
const DOCS_EXAMPLE: &str = r#"{
  "test": {"test_id": "quiz", "key_version": 1, "marking": {"correct": 1},
           "sections": [{"id": "s", "questions": [{"id": "q1", "type": "mcq", "answer": "A"}]}]},
  "attempt": {"attempt_id": "a-1", "test_id": "quiz",
              "responses": [{"question": "q1", "answer": "A"}]}
}"#;

#[sqlx::test]
async fn bad_flags_and_files_are_errors_not_panics_or_defaults(pool: PgPool) {
    let env = TestEnv::new(pool).await;
    let output = env.cli(&["enqueue", "diag.noop", "--delay", "300000y"]);
    assert_fails(
        &output,
        BAD_INPUT,
        "--delay 300000years is too long",
        "--delay 300000y",
    );

    let missing = env.dir.path().join("no-such-config.toml");
    for args in [&["check"][..], &["jobs", "list"][..]] {
        let output = env
            .command()
            .args(args)
            .env("QUIZWORKER_CONFIG", &missing)
            .output()
            .expect("run quizworker");
        assert_fails(
            &output,
            BAD_INPUT,
            "does not exist",
            "a missing config file",
        );
        let output = env
            .command()
            .arg("--config")
            .arg(&missing)
            .args(args)
            .output()
            .expect("run quizworker");
        assert_fails(&output, BAD_INPUT, "does not exist", "a missing --config");
    }

    // A directory nobody can make, root included: its parent is a file.
    let file = env.dir.path().join("a-file");
    fs::write(&file, "").expect("write a file");
    let output = env
        .command()
        .args(["check", "--json"])
        .env("QUIZWORKER_EXPORTS__DIRECTORY", file.join("exports"))
        .output()
        .expect("run quizworker");
    assert_fails(
        &output,
        FAILED,
        "failed checks: exports",
        "an unusable export directory",
    );
    let checks: Value = serde_json::from_slice(&output.stdout).expect("JSON");
    let exports = checks
        .as_array()
        .and_then(|checks| checks.iter().find(|c| c["check"] == "exports"))
        .expect("an exports check");
    assert_eq!(exports["ok"], false, "{checks}");
    assert!(
        exports["detail"]
            .as_str()
            .unwrap()
            .contains("cannot create"),
        "{checks}"
    );
}

#[sqlx::test]
async fn errors_say_each_thing_once_and_echo_little_of_the_input(pool: PgPool) {
    let env = TestEnv::new(pool).await;
    let output = env
        .command()
        .args(["queues"])
        .env("REDIS_URL", "redis://127.0.0.1:1")
        .output()
        .expect("run quizworker");
    assert_fails(
        &output,
        UNREACHABLE,
        "could not connect to Redis",
        "Redis away",
    );
    assert_eq!(
        stderr(&output).matches("refused").count(),
        1,
        "{}",
        stderr(&output)
    );

    let (_, db_rest) = env.database_url.rsplit_once('@').expect("user@host");
    let output = env
        .command()
        .args(["jobs", "list"])
        .env("DATABASE_URL", format!("postgres://qw_nobody@{db_rest}"))
        .output()
        .expect("run quizworker");
    assert_fails(
        &output,
        UNREACHABLE,
        "role \"qw_nobody\" does not exist",
        "no such role",
    );
    let err = stderr(&output);
    assert_eq!(err.matches("does not exist").count(), 1, "{err}");
    assert!(!err.contains(" at line "), "{err}");

    let long = "x".repeat(5000);
    for args in [
        &["enqueue", long.as_str()][..],
        &["jobs", "show", long.as_str()][..],
        &["jobs", "list", "--state", long.as_str()][..],
        &["enqueue", "diag.noop", "--queue", long.as_str()][..],
    ] {
        let output = env.cli(args);
        let err = stderr(&output);
        assert!(!output.status.success(), "{args:?}");
        assert!(err.len() < 400, "{} bytes of error: {err}", err.len());
        assert!(err.contains(&format!("`{}…`", "x".repeat(40))), "{err}");
    }
}

// --- 6. Exit codes, and `score`'s documented errors -------------------------------------------------

#[sqlx::test]
async fn exit_codes_tell_usage_bad_input_and_outages_apart(pool: PgPool) {
    let env = TestEnv::new(pool).await;
    let cases: [(&[&str], i32, &str); 6] = [
        (&["jobs"], USAGE, "Usage"),
        (&["jobs", "list", "--limit", "many"], USAGE, "invalid value"),
        (
            &[
                "jobs",
                "retry",
                "01KAAAAAAAAAAAAAAAAAAAAAAA",
                "--state",
                "failed",
            ],
            USAGE,
            "not both",
        ),
        (
            &["enqueue", "diag.sleep", "--payload", "{}"],
            BAD_INPUT,
            "missing field `ms`",
        ),
        (
            &["jobs", "list", "--state", "done"],
            BAD_INPUT,
            "unknown job state `done`",
        ),
        (
            &["jobs", "show", "01KAAAAAAAAAAAAAAAAAAAAAAA"],
            FAILED,
            "no job with id",
        ),
    ];
    for (args, code, message) in cases {
        assert_fails(&env.cli(args), code, message, &format!("{args:?}"));
    }
    let output = env
        .command()
        .args(["jobs", "list"])
        .env("DATABASE_URL", "postgres://postgres@127.0.0.1:1/test")
        .output()
        .expect("run quizworker");
    assert_fails(
        &output,
        UNREACHABLE,
        "could not connect to Postgres",
        "Postgres away",
    );
    for (variable, url, says) in [
        ("REDIS_URL", "redis://127.0.0.1:port", "invalid Redis URL"),
        (
            "DATABASE_URL",
            "postgres://127.0.0.1:port/x",
            "invalid Postgres URL",
        ),
    ] {
        let output = env
            .command()
            .arg("queues")
            .env(variable, url)
            .output()
            .expect("run quizworker");
        assert_fails(&output, BAD_INPUT, says, url);
    }
}

#[test]
fn score_json_prints_the_documented_error_object() {
    let dir = tempfile::tempdir().expect("temp dir");
    let bad = dir.path().join("bad.json");
    let mut request: Value = serde_json::from_str(DOCS_EXAMPLE).expect("JSON");
    request["attempt"]["responses"] = json!([{"question": "q9", "answer": "A"},
                                             {"question": "q1", "answer": "E"}]);
    fs::write(&bad, request.to_string()).expect("write");
    let score = |args: &[&str]| {
        Command::new(common::BIN)
            .args(args)
            .env_remove("QUIZWORKER_CONFIG")
            .output()
            .expect("run quizworker")
    };

    let output = score(&["score", "--json", bad.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(BAD_INPUT), "{}", stderr(&output));
    let error: Value = serde_json::from_slice(&output.stdout).expect("JSON on stdout");
    assert_eq!(error["error"], "invalid_attempt", "{error}");
    let problems = error["problems"].as_array().expect("problems");
    assert_eq!(problems.len(), 2, "{error}");
    assert_eq!(problems[0]["question"], "q9");
    assert_eq!(problems[0]["response"], 0);

    let output = score(&["score", "--json", "/no/such/file.json"]);
    assert_eq!(output.status.code(), Some(BAD_INPUT));
    let error: Value = serde_json::from_slice(&output.stdout).expect("JSON on stdout");
    assert_eq!(error["error"], "unreadable", "{error}");

    let output = score(&["score", bad.to_str().unwrap()]);
    assert_fails(
        &output,
        BAD_INPUT,
        "the test has no such question",
        "score without --json",
    );
    assert_eq!(stdout(&output), "");
}

// --- 8. `check` and `migrate` say what they used and did ------------------------------------------

#[sqlx::test]
async fn check_names_its_config_file_database_and_prefix(pool: PgPool) {
    let env = TestEnv::new(pool).await;
    let checks = env.cli_json(&["check", "--json"]);
    let detail = |name: &str| -> String {
        checks
            .as_array()
            .and_then(|checks| checks.iter().find(|c| c["check"] == name))
            .and_then(|c| c["detail"].as_str())
            .unwrap_or_else(|| panic!("no {name} check in {checks}"))
            .to_owned()
    };
    let config_file = fs::canonicalize(env.dir.path().join("config.toml")).unwrap();
    assert!(
        detail("config").contains(config_file.to_str().unwrap()),
        "{checks}"
    );
    assert!(detail("postgres").contains(&env.database_url), "{checks}");
    assert!(
        detail("redis").contains(&format!("key prefix `{}`", env.prefix)),
        "{checks}"
    );
    assert!(detail("exports").contains("writable"), "{checks}");
}

#[sqlx::test(migrations = false)]
async fn migrate_says_how_many_migrations_it_applied(pool: PgPool) {
    let env = TestEnv::new(pool).await;
    let all = quizworker::commands::MIGRATOR.iter().count();
    let first = env.cli_ok(&["migrate"]);
    assert!(
        first.contains(&format!("applied {all} migration(s)")),
        "{first}"
    );
    let second = env.cli_ok(&["migrate"]);
    assert!(second.contains("applied 0 migrations"), "{second}");
}

// --- 9. Help texts, kinds, UTC ------------------------------------------------------------------------

#[test]
fn every_flag_and_argument_has_a_help_text() {
    fn walk(command: &clap::Command, path: &str, blank: &mut Vec<String>) {
        for arg in command.get_arguments() {
            let id = arg.get_id().as_str();
            if arg.get_help().is_none() && !matches!(id, "help" | "version") {
                blank.push(format!("{path} {id}"));
            }
        }
        for sub in command.get_subcommands() {
            walk(sub, &format!("{path} {}", sub.get_name()), blank);
        }
    }
    let mut blank = Vec::new();
    walk(&Cli::command(), "quizworker", &mut blank);
    assert!(blank.is_empty(), "no help text: {blank:?}");

    let output = Command::new(common::BIN)
        .args(["enqueue", "--help"])
        .output()
        .expect("run quizworker");
    let help = stdout(&output);
    for kind in quizworker_jobs::catalogue::KINDS {
        assert!(help.contains(kind.name), "{} is not in:\n{help}", kind.name);
    }
}

#[sqlx::test]
async fn the_cli_labels_its_times_as_utc(pool: PgPool) {
    let env = TestEnv::new(pool).await;
    insert_job(&env, "01KAAAAAAAAAAAAAAAAAAAAAD1", "diag.noop", "{}", None).await;
    let shown = env.cli_ok(&["jobs", "show", "01KAAAAAAAAAAAAAAAAAAAAAD1"]);
    let created = shown
        .lines()
        .find(|line| line.starts_with("created"))
        .expect("a created line");
    assert!(created.ends_with(" UTC"), "{shown}");
    let listed = env.cli_ok(&["jobs", "list"]);
    assert!(listed.contains(" UTC"), "{listed}");
}

// --- 12. Tests leave no keys in Redis --------------------------------------------------------------

#[sqlx::test]
async fn a_test_environment_takes_its_redis_keys_with_it(pool: PgPool) {
    let env = TestEnv::new(pool).await;
    let (redis_url, prefix) = (env.redis_url.clone(), env.prefix.clone());
    {
        let _daemon = env.spawn_daemon(&[]);
        let id = env.enqueue("diag.noop", "{}", &["--idempotency-key", "once"]);
        env.wait_for_state(&id, "completed").await;
    }
    let client = redis::Client::open(redis_url.as_str()).expect("Redis URL");
    let mut conn = client.get_connection().expect("connect to Redis");
    assert!(
        !common::keys_with_prefix(&mut conn, &prefix)
            .expect("scan")
            .is_empty(),
        "the daemon made keys"
    );
    drop(env);
    let left = common::keys_with_prefix(&mut conn, &prefix).expect("scan");
    assert!(left.is_empty(), "left in Redis: {left:?}");
}

// --- 13. The README and scripts name what exists ------------------------------------------------------

#[test]
fn the_readme_lists_every_command_and_test_sh_names_real_tests() {
    let root = env!("CARGO_MANIFEST_DIR");
    let readme = fs::read_to_string(format!("{root}/README.md")).expect("README");
    let mut missing = Vec::new();
    for command in Cli::command().get_subcommands() {
        let leaves: Vec<String> = if command.has_subcommands() {
            command
                .get_subcommands()
                .map(|sub| format!("quizworker {} {}", command.get_name(), sub.get_name()))
                .collect()
        } else {
            vec![format!("quizworker {}", command.get_name())]
        };
        missing.extend(
            leaves
                .into_iter()
                .filter(|leaf| !readme.contains(leaf.as_str())),
        );
    }
    // `queues pause` and `resume` share a row: "quizworker queues pause Q` / `resume Q".
    missing.retain(|leaf| leaf != "quizworker queues resume");
    assert!(missing.is_empty(), "not in the README: {missing:?}");

    let test_sh = fs::read_to_string(format!("{root}/scripts/test.sh")).expect("test.sh");
    for name in test_sh.split("--test ").skip(1) {
        let name: String = name
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        assert!(
            fs::metadata(format!("{root}/tests/{name}.rs")).is_ok(),
            "scripts/test.sh names a test file that does not exist: {name}"
        );
    }
}
