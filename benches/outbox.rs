//! The web tier: `cargo bench --bench outbox`.
//!
//! How fast the release daemon relays jobs a web tier enqueued in its own transactions
//! (`quizworker_enqueue()`, docs/sql/outbox.sql, docs/WEB_TIER.md) from the platform's database
//! to the journal and then Redis, and how fast it sends completion webhooks, with real Redis and
//! Postgres. The platform's database is a second database of the run's own, with the outbox
//! applied from docs/sql/outbox.sql. The daemon runs the `indexing` queue only, so the relayed
//! `diag.noop` jobs (queue `default`) stay in Redis for the bench to count and take.
//!
//! Parts:
//! 1. Throughput: BENCH_OUTBOX_JOBS rows committed in one transaction; reported: jobs per second
//!    from that commit to the last job in Redis' ready list (LLEN polled every 2 ms), and the
//!    daemon's CPU time per job. Checked: each job journaled once and in Redis once.
//! 2. Latency: BENCH_OUTBOX_LATENCY_JOBS rows, one transaction each, at BENCH_OUTBOX_RATE per
//!    second; the bench takes each job off the ready list with BLPOP as it arrives. Reported:
//!    commit-to-Redis latency p50, p99 and max (the commit's return to BLPOP's, one clock).
//! 3. Webhooks: BENCH_WEBHOOKS jobs completed in one statement (each queues a delivery through
//!    the journal's trigger) to an endpoint served by the bench (axum on 127.0.0.1, answering
//!    204). Reported: deliveries per second from that commit to the last delivery recorded.
//!    Checked: the server got one request per delivery, each delivery `delivered`.
//!
//! Knobs (environment, with defaults): BENCH_OUTBOX_JOBS=20000, BENCH_OUTBOX_LATENCY_JOBS=2000,
//! BENCH_OUTBOX_RATE=500 (jobs/s), BENCH_WEBHOOKS=5000 (0 skips a part),
//! DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres, REDIS_URL=redis://127.0.0.1:6379.
//!
//! Prints a Markdown report on stdout and progress on stderr; exits non-zero if anything failed.

mod common;

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use common::harness::Harness;
use common::{KnobReader, Report, Run, RunSpec, per_sec, percentile, thousands};
use sqlx::postgres::PgPoolOptions;
use sqlx::{AssertSqlSafe, PgPool};

const OUTBOX_SQL: &str = include_str!("../docs/sql/outbox.sql");
/// The aims of the web tier issue.
const AIM_JOBS_PER_SEC: f64 = 10_000.0;
const AIM_P99_MS: f64 = 50.0;
const AIM_DELIVERIES_PER_SEC: f64 = 1000.0;
/// The signing secret of the bench's endpoint.
const SECRET: &str = "whsec_YmVuY2gtc2VjcmV0LW9mLXRoaXJ0eS10d28tYnl0ZXMh";
/// Waiting for the daemon fails after this.
const DEADLINE: Duration = Duration::from_secs(300);

struct Knobs {
    jobs: u64,
    latency_jobs: u64,
    rate: f64,
    webhooks: u64,
}

impl Knobs {
    fn read(reader: &mut KnobReader) -> Result<Knobs> {
        Ok(Knobs {
            jobs: reader.read("BENCH_OUTBOX_JOBS", 20_000, "")?,
            latency_jobs: reader.read("BENCH_OUTBOX_LATENCY_JOBS", 2000, "")?,
            rate: reader.rate("BENCH_OUTBOX_RATE", 500.0)?,
            webhooks: reader.read("BENCH_WEBHOOKS", 5000, "")?,
        })
    }
}

fn main() -> ExitCode {
    common::main("outbox", "bench", Knobs::read, |knobs, harness| {
        harness.report.machine(
            "Load average at start (/proc/loadavg)",
            common::load_average(),
        );
        harness.report.workload(
            "`diag.noop` jobs enqueued with `quizworker_enqueue('diag.noop', '{}')` into a \
             platform database on the same Postgres server; the daemon relays them (journal, \
             then Redis) and does not run them",
        );
        run(knobs, harness);
        harness.report.machine(
            "Load average at end (/proc/loadavg)",
            common::load_average(),
        );
    })
}

fn run(knobs: &Knobs, harness: &mut Harness) {
    // The endpoint is up before the run, so that its port can go into the config file.
    let runtime = tokio::runtime::Runtime::new().expect("a Tokio runtime");
    let (port, received) = match runtime.block_on(start_endpoint()) {
        Ok(endpoint) => endpoint,
        Err(e) => return harness.fail("endpoint", e),
    };
    let config = common::config_toml(
        "outbox",
        &format!(
            "[webhooks.endpoints.bench]\nurl = \"http://127.0.0.1:{port}/hooks\"\n\
             secret_env = \"BENCH_WEBHOOK_SECRET\"\nkinds = [\"diag.noop\"]\n\
             allow_private = true\n\n"
        ),
        common::queue_table("indexing", 8, "5m", 5),
    );
    let spec = RunSpec::new("indexing", config).env("BENCH_WEBHOOK_SECRET", SECRET);
    harness.with_run(spec, async |run, report| {
        let platform = Platform::create(run).await?;
        let result = async {
            let mut daemon = run
                .start_daemon_with(
                    "daemon",
                    &[("QUIZWORKER_OUTBOX__URL", platform.url.clone())],
                )
                .await?;
            let pid = daemon.child.id();
            if knobs.jobs > 0 {
                throughput(run, &platform, knobs.jobs, pid, report).await?;
            }
            if knobs.latency_jobs > 0 {
                latency(run, &platform, knobs, report).await?;
            }
            if knobs.webhooks > 0 {
                webhooks(run, knobs.webhooks, &received, report).await?;
            }
            daemon.stop().await
        }
        .await;
        platform.drop(run).await;
        result
    });
    drop(runtime);
}

/// A local webhook endpoint answering 204; counts what it got.
async fn start_endpoint() -> Result<(u16, Arc<AtomicU64>)> {
    let received = Arc::new(AtomicU64::new(0));
    let counter = received.clone();
    let app = axum::Router::new().route(
        "/hooks",
        axum::routing::post(move || {
            let counter = counter.clone();
            async move {
                counter.fetch_add(1, Ordering::Relaxed);
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("bind the endpoint")?;
    let port = listener.local_addr()?.port();
    // On a thread of its own, so that it answers whatever the bench's runtime is doing.
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("the endpoint's runtime");
        runtime.block_on(async move {
            let listener =
                tokio::net::TcpListener::from_std(listener.into_std().expect("std listener"))
                    .expect("listener");
            let _ = axum::serve(listener, app).await;
        });
    });
    Ok((port, received))
}

/// The platform's database, next to the run's.
struct Platform {
    name: String,
    url: String,
    pool: PgPool,
}

impl Platform {
    async fn create(run: &Run) -> Result<Platform> {
        let name = format!("{}_platform", run.db_name);
        sqlx::query(AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&run.pg)
            .await
            .context("CREATE DATABASE for the platform")?;
        let url = common::with_database(&run.db_url, &name)?;
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .connect(&url)
            .await
            .context("connect to the platform database")?;
        sqlx::raw_sql(OUTBOX_SQL)
            .execute(&pool)
            .await
            .context("docs/sql/outbox.sql")?;
        Ok(Platform { name, url, pool })
    }

    async fn drop(self, run: &Run) {
        self.pool.close().await;
        let dropped = sqlx::query(AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
            self.name
        )))
        .execute(&run.pg)
        .await;
        if let Err(e) = dropped {
            eprintln!("bench: could not drop {}: {e}", self.name);
        }
    }
}

fn ready_list(run: &Run) -> String {
    format!("{}default:active", run.prefix)
}

async fn llen(run: &Run) -> Result<u64> {
    redis::cmd("LLEN")
        .arg(ready_list(run))
        .query_async(&mut run.redis.clone())
        .await
        .context("LLEN")
}

async fn throughput(
    run: &Run,
    platform: &Platform,
    jobs: u64,
    pid: u32,
    report: &mut Report,
) -> Result<()> {
    eprintln!("bench: part 1, {jobs} rows in one commit");
    let cpu_before = common::cpu_seconds(pid).unwrap_or(0.0);
    let ids: Vec<String> = sqlx::query_scalar(
        "SELECT quizworker_enqueue('diag.noop', '{}') FROM generate_series(1, $1)",
    )
    .bind(i64::try_from(jobs)?)
    .fetch_all(&platform.pool)
    .await
    .context("enqueue into the outbox")?;
    let committed = Instant::now();
    while llen(run).await? < jobs {
        ensure!(
            committed.elapsed() < DEADLINE,
            "not relayed within {DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let secs = committed.elapsed().as_secs_f64();
    let cpu = common::cpu_seconds(pid).unwrap_or(0.0) - cpu_before;
    let journaled: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs WHERE id = ANY($1)")
        .bind(&ids)
        .fetch_one(&run.pg)
        .await?;
    ensure!(journaled == jobs as i64, "{journaled} of {jobs} journaled");
    ensure!(llen(run).await? == jobs, "more jobs in Redis than relayed");
    let rate = jobs as f64 / secs;
    report.figure(
        format!(
            "relay: {} rows of one commit, commit to the last in Redis",
            thousands(jobs)
        ),
        format!(
            "{} ({secs:.2} s; aim ≥ {AIM_JOBS_PER_SEC:.0}/s: {})",
            per_sec(rate, "jobs"),
            if rate >= AIM_JOBS_PER_SEC {
                "met"
            } else {
                "NOT met"
            }
        ),
    );
    report.figure(
        "relay: the daemon's CPU per job",
        format!("{:.1} µs", cpu / jobs as f64 * 1e6),
    );
    redis::cmd("DEL")
        .arg(ready_list(run))
        .query_async::<()>(&mut run.redis.clone())
        .await?;
    Ok(())
}

async fn latency(run: &Run, platform: &Platform, knobs: &Knobs, report: &mut Report) -> Result<()> {
    let n = knobs.latency_jobs;
    eprintln!("bench: part 2, {n} commits at {}/s", knobs.rate);
    // BLPOP blocks its connection: one of its own.
    let client = redis::Client::open(run.redis_url.as_str())?;
    let mut taker = client.get_multiplexed_async_connection().await?;
    let list = ready_list(run);
    let taking = tokio::spawn(async move {
        let mut arrived: HashMap<String, Instant> = HashMap::new();
        while (arrived.len() as u64) < n {
            let popped: Option<(String, String)> = redis::cmd("BLPOP")
                .arg(&list)
                .arg(1.0)
                .query_async(&mut taker)
                .await?;
            if let Some((_, id)) = popped {
                arrived.insert(id, Instant::now());
            }
        }
        Ok::<_, anyhow::Error>(arrived)
    });
    let mut committed: HashMap<String, Instant> = HashMap::new();
    let started = Instant::now();
    for i in 0..n {
        let due = started + Duration::from_secs_f64(i as f64 / knobs.rate);
        tokio::time::sleep_until(due.into()).await;
        let id: String = sqlx::query_scalar("SELECT quizworker_enqueue('diag.noop', '{}')")
            .fetch_one(&platform.pool)
            .await?;
        committed.insert(id, Instant::now());
    }
    let arrived = tokio::time::timeout(DEADLINE, taking)
        .await
        .context("not every job arrived")???;
    let mut millis: Vec<f64> = committed
        .iter()
        .map(|(id, at)| {
            let arrival = arrived.get(id).context("a job that never arrived")?;
            Ok(arrival.saturating_duration_since(*at).as_secs_f64() * 1000.0)
        })
        .collect::<Result<_>>()?;
    millis.sort_by(f64::total_cmp);
    let p99 = percentile(&millis, 0.99);
    report.figure(
        format!(
            "relay: commit-to-Redis latency, {n} commits at {}/s",
            knobs.rate
        ),
        format!(
            "p50 {:.1} ms, p99 {p99:.1} ms, max {:.1} ms (aim p99 < {AIM_P99_MS:.0} ms: {})",
            percentile(&millis, 0.5),
            millis.last().copied().unwrap_or(0.0),
            if p99 < AIM_P99_MS { "met" } else { "NOT met" }
        ),
    );
    Ok(())
}

async fn webhooks(run: &Run, n: u64, received: &AtomicU64, report: &mut Report) -> Result<()> {
    eprintln!("bench: part 3, {n} webhooks");
    let before = received.load(Ordering::Relaxed);
    // Jobs as a worker would leave them running, then completed in one statement: the journal's
    // trigger queues a delivery for each.
    sqlx::query(
        "INSERT INTO jobs (id, queue, kind, payload, state, attempts, max_attempts, created_at)
         SELECT 'B' || lpad(i::text, 25, '0'), 'default', 'diag.noop', '{}', 'running', 1, 1, now()
           FROM generate_series(1, $1) AS i",
    )
    .bind(i64::try_from(n)?)
    .execute(&run.pg)
    .await?;
    sqlx::query("UPDATE jobs SET state = 'completed', result = 'null' WHERE id LIKE 'B%'")
        .execute(&run.pg)
        .await?;
    let committed = Instant::now();
    loop {
        let (delivered, pending): (i64, i64) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE state = 'delivered'),
                    count(*) FILTER (WHERE state = 'pending')
               FROM webhook_deliveries",
        )
        .fetch_one(&run.pg)
        .await?;
        if pending == 0 {
            ensure!(delivered == n as i64, "{delivered} of {n} delivered");
            break;
        }
        ensure!(
            committed.elapsed() < DEADLINE,
            "{delivered} of {n} delivered in {DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let secs = committed.elapsed().as_secs_f64();
    let got = received.load(Ordering::Relaxed) - before;
    ensure!(
        got == n,
        "the endpoint got {got} requests for {n} deliveries"
    );
    let rate = n as f64 / secs;
    report.figure(
        format!("webhooks: {} deliveries to a local endpoint", thousands(n)),
        format!(
            "{} ({secs:.2} s; aim ≥ {AIM_DELIVERIES_PER_SEC:.0}/s: {})",
            per_sec(rate, "deliveries"),
            if rate >= AIM_DELIVERIES_PER_SEC {
                "met"
            } else {
                "NOT met"
            }
        ),
    );
    Ok(())
}
