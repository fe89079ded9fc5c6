//! Running quizworker in production: the systemd unit (`systemd-analyze verify`, `Type=notify`
//! readiness and the watchdog over a notification socket of the test's own), the health and
//! metrics server, and logs that never show a password.

mod common;

use std::collections::HashMap;
use std::fs;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{DEADLINE, Daemon, FAST_CONFIG, OwnRedis, TestEnv, http_get, wait_until};
use sqlx::PgPool;

const UNIT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/systemd/quizworker.service");

/// The unit with `ExecStart=` pointing at the binary under test, written to `dir`.
fn unit_for_test(dir: &Path) -> std::path::PathBuf {
    let unit = fs::read_to_string(UNIT).expect("read the unit");
    assert!(
        unit.contains("ExecStart=/usr/local/bin/quizworker run\n"),
        "the unit runs /usr/local/bin/quizworker run"
    );
    let path = dir.join("quizworker.service");
    fs::write(
        &path,
        unit.replace("/usr/local/bin/quizworker", common::BIN),
    )
    .expect("write the unit");
    path
}

#[test]
fn the_unit_file_passes_systemd_analyze_verify() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = unit_for_test(dir.path());
    let output = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze runs (scripts/services.sh installs Debian's systemd package)");
    let complaints = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success() && complaints.trim().is_empty(),
        "systemd-analyze verify: {}\n{complaints}",
        output.status
    );

    let unit = fs::read_to_string(UNIT).unwrap();
    let settings: HashMap<&str, &str> = unit
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.split_once('='))
        .collect();
    for (key, value) in [
        ("Type", "notify"),
        ("NotifyAccess", "main"),
        ("Restart", "on-failure"),
        ("User", "quizworker"),
        ("Group", "quizworker"),
        ("EnvironmentFile", "-/etc/quizworker/quizworker.env"),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ReadWritePaths", "/var/lib/quizworker"),
        ("CapabilityBoundingSet", ""),
    ] {
        assert_eq!(settings.get(key), Some(&value), "{key}= in the unit");
    }
    // systemd's SIGKILL must not cut the drain short: running jobs get shutdown_timeout, then
    // the journal writer up to 10 s.
    let stop = humantime::parse_duration(settings["TimeoutStopSec"]).unwrap();
    let drain = quizworker::config::Config::default()
        .worker
        .shutdown_timeout;
    assert!(
        stop >= drain + Duration::from_secs(10),
        "TimeoutStopSec={stop:?} leaves no room after shutdown_timeout={drain:?}"
    );
    assert!(humantime::parse_duration(settings["WatchdogSec"]).is_ok());

    // What `systemd-analyze security` makes of it, without a running systemd.
    let output = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(&path)
        .output()
        .expect("systemd-analyze security");
    let text = String::from_utf8_lossy(&output.stdout);
    let exposure: f64 = text
        .lines()
        .find_map(|line| line.split("quizworker.service: ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|level| level.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{text}"));
    assert!(exposure <= 2.0, "exposure {exposure} is above 2.0:\n{text}");
}

/// Receives what the daemon tells "systemd" on a socket of the test's own.
struct NotifySocket {
    socket: UnixDatagram,
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
}

impl NotifySocket {
    fn bind() -> NotifySocket {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("notify.sock");
        let socket = UnixDatagram::bind(&path).expect("bind the notify socket");
        NotifySocket {
            socket,
            _dir: dir,
            path,
        }
    }

    /// The next message, or None if none comes within `within`.
    fn recv(&self, within: Duration) -> Option<String> {
        self.socket
            .set_read_timeout(Some(within))
            .expect("read timeout");
        let mut buf = [0u8; 4096];
        match self.socket.recv(&mut buf) {
            Ok(n) => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                None
            }
            Err(e) => panic!("notify socket: {e}"),
        }
    }

    /// Waits for a message with `line` in it and returns that message.
    fn wait_for(&self, line: &str, daemon: &Daemon) -> String {
        let start = Instant::now();
        loop {
            let left = DEADLINE.saturating_sub(start.elapsed());
            match self.recv(left.max(Duration::from_millis(1))) {
                Some(message) if message.lines().any(|l| l == line) => return message,
                Some(_) => {}
                None => panic!(
                    "no {line} within {DEADLINE:?}; the daemon logged:\n{}",
                    daemon.log_text()
                ),
            }
        }
    }
}

/// `quizworker run` under a shell that sets `WATCHDOG_PID` to the daemon's own pid (the shell
/// `exec`s it, so it keeps the pid), the way systemd does.
fn spawn_notifying(
    env: &TestEnv,
    socket: &NotifySocket,
    watchdog_usec: u64,
    watchdog_pid: Option<u32>,
) -> Daemon {
    let base = env.command();
    let mut command = Command::new("sh");
    let pid = watchdog_pid.map_or_else(|| "$$".to_owned(), |pid| pid.to_string());
    command
        .arg("-c")
        .arg(format!("WATCHDOG_PID={pid} exec \"$0\" run"))
        .arg(common::BIN);
    for (key, value) in base.get_envs() {
        match value {
            Some(value) => command.env(key, value),
            None => command.env_remove(key),
        };
    }
    let log = env
        .dir
        .path()
        .join(format!("daemon-{}.log", ulid::Ulid::new()));
    let child = command
        .env("NOTIFY_SOCKET", &socket.path)
        .env("WATCHDOG_USEC", watchdog_usec.to_string())
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("spawn quizworker run");
    Daemon { child, log }
}

#[sqlx::test]
async fn type_notify_says_ready_feeds_the_watchdog_and_says_stopping(pool: PgPool) {
    let env = TestEnv::new(pool).await;
    let socket = NotifySocket::bind();
    let mut daemon = spawn_notifying(&env, &socket, 200_000, None);

    let ready = socket.wait_for("READY=1", &daemon);
    assert!(
        daemon.log_text().contains("quizworker ready"),
        "READY=1 came before the workers ran:\n{}",
        daemon.log_text()
    );
    assert!(ready.contains("STATUS=running queues default,"), "{ready}");

    // 200 ms watchdog: fed every 100 ms or so.
    let start = Instant::now();
    let mut feeds = 0;
    while feeds < 5 {
        let message = socket.wait_for("WATCHDOG=1", &daemon);
        assert!(!message.contains("READY=1"), "{message}");
        feeds += 1;
    }
    let took = start.elapsed();
    assert!(
        took < Duration::from_secs(2),
        "5 watchdog feeds took {took:?}"
    );

    daemon.signal("TERM");
    socket.wait_for("STOPPING=1", &daemon);
    assert_eq!(daemon.wait_exit(DEADLINE), Some(0), "{}", daemon.log_text());
}

#[sqlx::test]
async fn a_watchdog_meant_for_another_process_is_not_fed(pool: PgPool) {
    let env = TestEnv::new(pool).await;
    let socket = NotifySocket::bind();
    // sd_watchdog_enabled(3): WATCHDOG_PID names the process the watchdog is for.
    let _daemon = spawn_notifying(&env, &socket, 200_000, Some(1));
    socket.wait_for("READY=1", &_daemon);
    while let Some(message) = socket.recv(Duration::from_secs(1)) {
        assert!(!message.contains("WATCHDOG=1"), "{message}");
    }
}

/// While Redis is away the workers are down and `/readyz` says why, but the watchdog is still
/// fed: the daemon waits for Redis, and being restarted by systemd would not bring it back.
#[sqlx::test]
async fn while_redis_is_away_readyz_says_so_and_the_watchdog_is_still_fed(pool: PgPool) {
    let redis = OwnRedis::start();
    let env = TestEnv::with_redis(pool, FAST_CONFIG, &redis.url).await;
    let socket = NotifySocket::bind();
    let daemon = spawn_notifying(&env, &socket, 200_000, None);
    socket.wait_for("READY=1", &daemon);
    let addr = daemon.http_addr();
    assert_eq!(http_get(addr, "/readyz"), (200, "ready\n".to_owned()));

    drop(redis);
    let body = wait_until(
        "/readyz says Redis does not answer",
        DEADLINE,
        async || match http_get(addr, "/readyz") {
            (503, body) if body.contains("Redis does not answer") => Ok(body),
            (status, body) => Err(format!("it says {status} {body:?}\n{}", daemon.log_text())),
        },
    )
    .await;
    assert!(body.starts_with("not ready\n"), "{body}");
    assert!(body.contains("workers down: "), "{body}");
    assert_eq!(http_get(addr, "/healthz"), (200, "ok\n".to_owned()));
    let (_, metrics) = http_get(addr, "/metrics");
    assert!(metrics.contains("\nquizworker_ready 0\n"), "{metrics}");
    assert!(
        metrics.contains(r#"quizworker_worker_restarts_total{queue="default"} "#),
        "{metrics}"
    );

    // Drain what was sent before, then the feeding goes on.
    while socket.recv(Duration::from_millis(1)).is_some() {}
    for _ in 0..3 {
        socket.wait_for("WATCHDOG=1", &daemon);
    }
}

#[sqlx::test]
async fn health_readiness_and_metrics_over_http(pool: PgPool) {
    let config = format!("{FAST_CONFIG}\n[http]\nqueue_sample_interval = \"100ms\"\n");
    let env = TestEnv::with_config(pool, &config).await;
    let daemon = env.spawn_daemon(&[]);
    let addr = daemon.http_addr();

    assert_eq!(http_get(addr, "/healthz"), (200, "ok\n".to_owned()));
    assert_eq!(http_get(addr, "/readyz"), (200, "ready\n".to_owned()));
    assert_eq!(http_get(addr, "/nothing-here").0, 404);

    let done = env.enqueue("diag.noop", "{}", &[]);
    let retried = env.enqueue("diag.fail", r#"{"times": 1}"#, &[]);
    let failed = env.enqueue("diag.fail", r#"{"permanent": true}"#, &[]);
    env.wait_for_state(&done, "completed").await;
    env.wait_for_state(&retried, "completed").await;
    env.wait_for_state(&failed, "failed").await;

    // Waiting jobs show in the queue depth once sampled: pause the queue and add three.
    env.cli_ok(&["queues", "pause", "default"]);
    daemon.wait_for_log("queue paused by an operator");
    for _ in 0..3 {
        env.enqueue("diag.noop", "{}", &[]);
    }
    let depth = r#"quizworker_queue_depth{queue="default",state="ready"} 3"#;
    let metrics = wait_until(&format!("{depth} in /metrics"), DEADLINE, async || {
        let (status, body) = http_get(addr, "/metrics");
        assert_eq!(status, 200);
        match body.contains(depth) {
            true => Ok(body),
            false => Err(body),
        }
    })
    .await;

    for expected in [
        r#"quizworker_jobs_finished_total{queue="default",kind="diag.noop",outcome="completed"} 1"#,
        r#"quizworker_jobs_finished_total{queue="default",kind="diag.fail",outcome="retrying"} 1"#,
        r#"quizworker_jobs_finished_total{queue="default",kind="diag.fail",outcome="completed"} 1"#,
        r#"quizworker_jobs_finished_total{queue="default",kind="diag.fail",outcome="failed"} 1"#,
        r#"quizworker_job_retries_total{queue="default",kind="diag.fail"} 1"#,
        r#"quizworker_job_duration_seconds_bucket{queue="default",kind="diag.noop",le="+Inf"} 1"#,
        r#"quizworker_job_duration_seconds_count{queue="default",kind="diag.fail"} 3"#,
        r#"quizworker_queue_depth{queue="default",state="scheduled"} 0"#,
        r#"quizworker_queue_oldest_waiting_seconds{queue="default"} "#,
        r#"quizworker_queue_depth{queue="scoring",state="ready"} 0"#,
        "# TYPE quizworker_journal_write_lag_seconds histogram",
        "quizworker_journal_write_lag_seconds_bucket{le=\"+Inf\"} ",
        "# TYPE quizworker_journal_batch_size histogram",
        "quizworker_journal_batch_size_count ",
        "# HELP quizworker_jobs_finished_total ",
        "\nquizworker_up 1\n",
        "\nquizworker_ready 1\n",
    ] {
        assert!(metrics.contains(expected), "no {expected:?} in:\n{metrics}");
    }
    // Six changes at least went to the journal: three starts and three ends.
    let changes: f64 = metrics
        .lines()
        .find_map(|line| line.strip_prefix("quizworker_journal_write_lag_seconds_count "))
        .and_then(|n| n.parse().ok())
        .expect("a lag count");
    assert!(changes >= 6.0, "{changes} journal changes:\n{metrics}");
}

/// Starts `quizworker ARGS` with the given URLs, log format and `RUST_LOG` (None: the default
/// filter).
fn spawn_with_urls(
    env: &TestEnv,
    args: &[&str],
    urls: (&str, &str),
    format: &str,
    rust_log: Option<&str>,
) -> std::process::Child {
    let mut command = env.command();
    command
        .args(args)
        .env("DATABASE_URL", urls.0)
        .env("REDIS_URL", urls.1)
        .env("QUIZWORKER_LOG_FORMAT", format)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    match rust_log {
        Some(filter) => command.env("RUST_LOG", filter),
        None => command.env_remove("RUST_LOG"),
    };
    command.spawn().expect("run quizworker")
}

#[sqlx::test]
async fn passwords_in_urls_never_reach_the_logs(pool: PgPool) {
    let env = TestEnv::new(pool).await;
    const PG_SECRET: &str = "Pg-s3cret-4f9a";
    const REDIS_SECRET: &str = "Redis-s3cret-7c2e";
    let after_scheme = env.redis_url.split_once("//").expect("a URL").1;
    let redis_host = after_scheme
        .rsplit_once('@')
        .map_or(after_scheme, |(_, host)| host);
    // The test's Redis has no password, so AUTH with one fails.
    let redis_with_password = format!("redis://:{REDIS_SECRET}@{redis_host}");
    // The test's Postgres lets anyone in from 127.0.0.1, so a wrong password alone would not
    // fail: a role that does not exist does.
    let (_, db_rest) = env.database_url.rsplit_once('@').expect("user@host");
    let postgres_with_password = format!("postgres://qw_nobody:{PG_SECRET}@{db_rest}");

    // (URLs, what the error must say: the service, redacted, and why it failed)
    let cases = [
        (
            (
                postgres_with_password.as_str(),
                redis_with_password.as_str(),
            ),
            "could not connect to Postgres at postgres://qw_nobody:***@",
            "role \"qw_nobody\" does not exist",
        ),
        (
            (env.database_url.as_str(), redis_with_password.as_str()),
            "could not connect to Redis at redis://:***@",
            "Password authentication failed",
        ),
    ];
    // Every run at once: a refused Redis password takes redis-rs several seconds to give up on.
    let mut runs = Vec::new();
    for (urls, names_the_service, gives_the_reason) in cases {
        for format in ["human", "json"] {
            for rust_log in [None, Some("trace")] {
                for args in [&["run"][..], &["check"][..]] {
                    let child = spawn_with_urls(&env, args, urls, format, rust_log);
                    let case = format!(
                        "{args:?} with {format} logs and RUST_LOG={rust_log:?}, \
                         the {} failing",
                        if names_the_service.contains("Redis") {
                            "Redis password"
                        } else {
                            "Postgres login"
                        }
                    );
                    runs.push((case, child, names_the_service, gives_the_reason));
                }
            }
        }
    }
    for (case, child, names_the_service, gives_the_reason) in runs {
        let output = child.wait_with_output().expect("wait for quizworker");
        let stderr = String::from_utf8_lossy(&output.stderr);
        let mut out = format!("{}{stderr}", String::from_utf8_lossy(&output.stdout));
        if case.contains("json logs") {
            // Every line is JSON, the final error included; its text is searched decoded.
            for line in stderr.lines() {
                let value: serde_json::Value = serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("{case}: not JSON ({e}): {line}"));
                for field in ["message", "error"] {
                    if let Some(text) = value[field].as_str() {
                        out.push_str(&format!("\n{text}"));
                    }
                }
            }
        }
        assert!(!output.status.success(), "{case} succeeded:\n{out}");
        for secret in [PG_SECRET, REDIS_SECRET] {
            assert!(!out.contains(secret), "{case} showed a password:\n{out}");
        }
        assert!(out.contains(names_the_service), "{case}:\n{out}");
        assert!(out.contains(gives_the_reason), "{case}:\n{out}");
    }
}
