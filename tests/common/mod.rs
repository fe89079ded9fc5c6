//! The test harness: each test gets its own Postgres database (`#[sqlx::test]`), its own Redis
//! key prefix, and a config with short timings, and drives the real `quizworker` binary.
#![allow(dead_code)] // each test file uses a different part of the harness

use std::fs;
use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use sqlx::PgPool;

pub mod ai;
mod proxy;
mod smtp;
#[allow(unused_imports)] // each test file uses a different part of the harness
pub use proxy::{Proxy, port_of};
#[allow(unused_imports)] // each test file uses a different part of the harness
pub use smtp::{
    Attachment, ReceivedMessage, Rule, SinkTls, SmtpSink, SmtpSinkOptions, Stage, message_to,
};

pub const BIN: &str = env!("CARGO_BIN_EXE_quizworker");

/// How long any wait in a test may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// Polls `check` until it gives `Ok`, and returns that; the test fails once `within` has
/// passed, with `what` was awaited and what the last check saw (its `Err`). Every wait of the
/// tests on a condition goes through here: never a sleep in the hope that it is long enough.
pub async fn wait_until<T>(
    what: &str,
    within: Duration,
    mut check: impl AsyncFnMut() -> Result<T, String>,
) -> T {
    let start = Instant::now();
    loop {
        match check().await {
            Ok(value) => return value,
            Err(seen) => assert!(
                start.elapsed() < within,
                "{what}: not so after {within:?}; {seen}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `Ok(())` if `done`, else what was seen: for [`wait_until`]'s checks.
pub fn seen(done: bool, seen: impl FnOnce() -> String) -> Result<(), String> {
    if done { Ok(()) } else { Err(seen()) }
}

pub struct TestEnv {
    pub pool: PgPool,
    pub database_url: String,
    pub redis_url: String,
    pub prefix: String,
    pub dir: tempfile::TempDir,
    pub redis: redis::aio::MultiplexedConnection,
}

/// Settings that make retries, orphan recovery and shutdown quick enough to test.
pub const FAST_CONFIG: &str = r#"
[worker]
heartbeat_interval = "1s"
missed_heartbeats = 2
poll_interval = "100ms"
shutdown_timeout = "10s"
pause_check_interval = "100ms"

[queues.default]
concurrency = 50
timeout = "20s"
max_attempts = 3
backoff = { base = "1s", cap = "2s", jitter = 0.0 }
"#;

impl TestEnv {
    pub async fn new(pool: PgPool) -> TestEnv {
        Self::with_config(pool, FAST_CONFIG).await
    }

    pub async fn with_config(pool: PgPool, config: &str) -> TestEnv {
        let redis_url =
            std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
        Self::with_redis(pool, config, &redis_url).await
    }

    /// A test environment on a Redis of the test's own (see [`OwnRedis`]).
    pub async fn with_redis(pool: PgPool, config: &str, redis_url: &str) -> TestEnv {
        let options = pool.connect_options();
        let database_url = format!(
            "postgres://{}@{}:{}/{}",
            options.get_username(),
            options.get_host(),
            options.get_port(),
            options
                .get_database()
                .expect("sqlx::test names its database")
        );
        let redis_url = redis_url.to_owned();
        let prefix = format!("test-{}:", ulid::Ulid::new());
        let dir = tempfile::tempdir().expect("temp dir");
        fs::write(dir.path().join("config.toml"), config).expect("write config");
        let client = redis::Client::open(redis_url.as_str()).expect("redis url");
        let redis = client
            .get_multiplexed_async_connection()
            .await
            .expect("Redis must run on REDIS_URL (scripts/services.sh starts it)");
        TestEnv {
            pool,
            database_url,
            redis_url,
            prefix,
            dir,
            redis,
        }
    }

    /// The daemon's config as this test sets it.
    pub fn config(&self) -> quizworker::config::Config {
        // Config::load also reads the test process' environment; the fields it may set there
        // are overridden below.
        let mut config = quizworker::config::Config::load(&self.dir.path().join("config.toml"))
            .expect("the test's config loads");
        config.redis.url = self.redis_url.clone();
        config.redis.prefix = self.prefix.clone();
        config.postgres.url = self.database_url.clone();
        config
    }

    /// The Rust producer API, on this test's Redis and database.
    pub async fn producer(&self) -> quizworker::runtime::producer::Producer {
        let config = self.config();
        let redis = quizworker::runtime::queue::RedisQueues::connect(&config)
            .await
            .expect("connect to Redis");
        quizworker::runtime::producer::Producer::new(&config, redis, self.pool.clone())
    }

    /// The Redis queue name of a queue in this test.
    pub fn queue(&self, queue: &str) -> String {
        format!("{}{}", self.prefix, queue)
    }

    pub fn command(&self) -> Command {
        let mut command = Command::new(BIN);
        command
            .env("QUIZWORKER_CONFIG", self.dir.path().join("config.toml"))
            .env("DATABASE_URL", &self.database_url)
            .env("REDIS_URL", &self.redis_url)
            .env("QUIZWORKER_REDIS__PREFIX", &self.prefix)
            // Tests run side by side: each daemon's health server takes a free port (it logs it;
            // see `Daemon::http_addr`).
            .env("QUIZWORKER_HTTP__LISTEN", "127.0.0.1:0")
            .env_remove("QUIZWORKER_LOG_FORMAT")
            .env("RUST_LOG", "info");
        command
    }

    /// Runs a CLI command and returns its output, whatever the exit code.
    pub fn cli(&self, args: &[&str]) -> Output {
        self.command().args(args).output().expect("run quizworker")
    }

    /// Runs a CLI command that must succeed and returns its standard output.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        let output = self.cli(args);
        assert!(
            output.status.success(),
            "quizworker {args:?} failed: {}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).expect("utf-8 output")
    }

    pub fn cli_json(&self, args: &[&str]) -> Value {
        let out = self.cli_ok(args);
        serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("{args:?} printed no JSON ({e}): {out}"))
    }

    /// Enqueues through the CLI and returns the job id.
    pub fn enqueue(&self, kind: &str, payload: &str, extra: &[&str]) -> String {
        let mut args = vec!["enqueue", kind, "--payload", payload, "--json"];
        args.extend_from_slice(extra);
        self.cli_json(&args)["id"]
            .as_str()
            .expect("enqueue prints an id")
            .to_owned()
    }

    /// Starts `quizworker run` and waits until it says it is ready.
    pub fn spawn_daemon(&self, args: &[&str]) -> Daemon {
        self.spawn_daemon_with(args, &[])
    }

    /// Where this test's daemons write exports: a folder of the test's own.
    pub fn exports_dir(&self) -> PathBuf {
        self.dir.path().join("exports")
    }

    /// Starts `quizworker run` writing exports into [`TestEnv::exports_dir`].
    pub fn spawn_daemon_with_exports(&self) -> Daemon {
        let dir = self.exports_dir();
        let dir = dir.to_str().expect("the temp dir's path is UTF-8");
        self.spawn_daemon_with(&[], &[("QUIZWORKER_EXPORTS__DIRECTORY", dir)])
    }

    /// Starts `quizworker run` with extra environment (say, a proxy's address for a service).
    pub fn spawn_daemon_with(&self, args: &[&str], env: &[(&str, &str)]) -> Daemon {
        let log = self
            .dir
            .path()
            .join(format!("daemon-{}.log", ulid::Ulid::new()));
        let file = fs::File::create(&log).expect("log file");
        let child = self
            .command()
            .arg("run")
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("spawn quizworker run");
        let daemon = Daemon { child, log };
        daemon.wait_for_log("quizworker ready");
        daemon
    }

    pub async fn job(&self, id: &str) -> Option<JobRow> {
        sqlx::query_as(
            "SELECT state, attempts, max_attempts, last_error, result, progress FROM jobs WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .expect("query jobs")
    }

    /// Waits until the job is in `state` and returns it.
    pub async fn wait_for_state(&self, id: &str, state: &str) -> JobRow {
        wait_until(
            &format!("job {id} in {state}"),
            DEADLINE,
            async || match self.job(id).await {
                Some(job) if job.state == state => Ok(job),
                job => Err(format!("it is {job:?}\n{}", self.daemon_logs())),
            },
        )
        .await
    }

    /// Waits until the job has reported at least `percent` progress (it is under way).
    pub async fn wait_for_progress(&self, id: &str, percent: i16) -> JobRow {
        wait_until(
            &format!("job {id} at {percent}%"),
            DEADLINE,
            async || match self.job(id).await {
                Some(job) if job.progress >= percent => Ok(job),
                job => Err(format!("it is {job:?}\n{}", self.daemon_logs())),
            },
        )
        .await
    }

    /// Every daemon log of this test, for a failure message.
    pub fn daemon_logs(&self) -> String {
        let mut logs = String::new();
        for entry in fs::read_dir(self.dir.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("daemon-") {
                let text = fs::read_to_string(entry.path()).unwrap_or_default();
                logs.push_str(&format!("--- {name}\n{text}\n"));
            }
        }
        logs
    }

    pub async fn attempts(&self, id: &str) -> Vec<AttemptRow> {
        sqlx::query_as(
            "SELECT attempt, outcome, error, started_at, finished_at, worker
               FROM job_attempts WHERE job_id = $1 ORDER BY attempt",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await
        .expect("query attempts")
    }

    pub async fn redis_cmd<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> T {
        cmd.query_async(&mut self.redis.clone())
            .await
            .expect("redis command")
    }

    /// Drops every connection to Redis but the test's own, as a failover or a `CLIENT KILL`
    /// does, and checks there were some (the daemons under test had connected). Only for a test
    /// with an [`OwnRedis`]: on the shared server it would cut the other tests' daemons too.
    pub async fn kill_redis_connections(&self) {
        let normal: i64 = self
            .redis_cmd(redis::cmd("CLIENT").arg(&["KILL", "TYPE", "normal", "SKIPME", "yes"]))
            .await;
        let pubsub: i64 = self
            .redis_cmd(redis::cmd("CLIENT").arg(&["KILL", "TYPE", "pubsub"]))
            .await;
        assert!(
            normal + pubsub > 0,
            "the daemons had no connections to kill"
        );
    }
}

/// A Redis server of the test's own, for tests that flush or cut it; killed when dropped.
pub struct OwnRedis {
    child: Child,
    pub url: String,
    pub port: u16,
}

impl OwnRedis {
    pub fn start() -> OwnRedis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server runs (scripts/services.sh installs it)");
        let url = format!("redis://127.0.0.1:{port}");
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                start.elapsed() < DEADLINE,
                "redis-server on {port} did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        OwnRedis { child, url, port }
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct JobRow {
    pub state: String,
    pub attempts: i32,
    pub max_attempts: i32,
    pub last_error: Option<String>,
    pub result: Option<Value>,
    pub progress: i16,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AttemptRow {
    pub attempt: i32,
    pub outcome: String,
    pub error: Option<String>,
    pub started_at: chrono::DateTime<chrono::Utc>,
    pub finished_at: Option<chrono::DateTime<chrono::Utc>>,
    pub worker: String,
}

/// Runs a tool of poppler-utils or qpdf on a file and returns its standard output.
pub fn tool(program: &str, args: &[&str]) -> String {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} runs (scripts/services.sh installs it): {e}"));
    assert!(
        output.status.success(),
        "{program} {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("utf-8 output")
}

/// GET over plain HTTP/1.1 (the daemon's health and metrics server): the status and the body.
pub fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use std::io::Write;
    let mut stream = std::net::TcpStream::connect(addr).expect("connect to the http server");
    stream.set_read_timeout(Some(DEADLINE)).expect("timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("send the request");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .expect("read the response");
    let (head, body) = response
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    (status, body.to_owned())
}

/// A running `quizworker run`; killed when dropped.
pub struct Daemon {
    pub child: Child,
    pub log: PathBuf,
}

impl Daemon {
    pub fn log_text(&self) -> String {
        let mut text = String::new();
        if let Ok(mut file) = fs::File::open(&self.log) {
            let _ = file.read_to_string(&mut text);
        }
        text
    }

    pub fn wait_for_log(&self, needle: &str) {
        let start = Instant::now();
        while !self.log_text().contains(needle) {
            assert!(
                start.elapsed() < DEADLINE,
                "the daemon did not log {needle:?} in {DEADLINE:?}:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Where the daemon's health and metrics server listens, from its log line
    /// "http listening addr=...".
    pub fn http_addr(&self) -> std::net::SocketAddr {
        self.wait_for_log("http listening");
        let text = self.log_text();
        let line = text
            .lines()
            .find(|line| line.contains("http listening"))
            .expect("the line is there");
        line.split("addr=")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|addr| addr.parse().ok())
            .unwrap_or_else(|| panic!("no address in {line:?}"))
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill -{signal} failed");
    }

    /// Waits for the process to exit and returns its exit code (None if killed by a signal).
    pub fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status.code();
            }
            assert!(
                start.elapsed() < within,
                "the daemon did not exit within {within:?}:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Each test leaves Redis as it found it: every key it made is under its own prefix, and goes
/// when its environment does (after its daemons, which are declared later and dropped first).
impl Drop for TestEnv {
    fn drop(&mut self) {
        // A test's own Redis may be gone already: then there is nothing to clean.
        let _ = delete_keys(&self.redis_url, &self.prefix);
    }
}

/// Deletes every key that starts with `prefix` and returns how many there were.
pub fn delete_keys(redis_url: &str, prefix: &str) -> redis::RedisResult<usize> {
    let client = redis::Client::open(redis_url)?;
    let mut conn = client.get_connection_with_timeout(Duration::from_secs(2))?;
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let keys = keys_with_prefix(&mut conn, prefix)?;
    for chunk in keys.chunks(500) {
        redis::cmd("UNLINK").arg(chunk).exec(&mut conn)?;
    }
    Ok(keys.len())
}

/// Every key that starts with `prefix` (a test's prefix has no glob characters).
pub fn keys_with_prefix(
    conn: &mut redis::Connection,
    prefix: &str,
) -> redis::RedisResult<Vec<String>> {
    let mut keys = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}*"))
            .arg("COUNT")
            .arg(1000)
            .query(conn)?;
        keys.extend(batch);
        if next == 0 {
            return Ok(keys);
        }
        cursor = next;
    }
}
