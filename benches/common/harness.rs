//! The frame of every bench program: its knobs from the environment, its report, the run each
//! part that drives the daemon sets up and cleans up (on Ctrl-C too), and the exit code. A bench
//! only says what its knobs are and what its parts do.

use std::fmt::Display;
use std::process::ExitCode;
use std::str::FromStr;

use anyhow::{Result, anyhow, ensure};

use super::{Report, Run, RunSpec, env_or};

/// A bench program's `main`: reads its knobs with `read`, which also lists them for the report,
/// runs `parts`, then prints the report; fails if anything did. `name` titles the report and
/// `tag` ("bench" or "soak") starts the progress lines and names the run's database.
pub fn main<K>(
    name: &'static str,
    tag: &'static str,
    read: impl FnOnce(&mut KnobReader) -> Result<K>,
    parts: impl FnOnce(&K, &mut Harness),
) -> ExitCode {
    let mut reader = KnobReader::default();
    let read = read(&mut reader).and_then(|knobs| Ok((knobs, Servers::from_env()?)));
    let (knobs, servers) = match read {
        Ok(read) => read,
        Err(e) => {
            eprintln!("{tag}: error: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let mut harness = Harness {
        report: Report::new(name, tag, reader.listed),
        errors: Vec::new(),
        tag,
        servers,
    };
    parts(&knobs, &mut harness);
    harness.finish()
}

/// Reads a bench's knobs from the environment, each with its default, and lists them in the
/// order read for the report's Knobs table.
#[derive(Default)]
pub struct KnobReader {
    listed: Vec<(String, String)>,
}

impl KnobReader {
    /// The knob `name`, or `default` when it is not set; listed as its value followed by `unit`
    /// ("" for a count).
    pub fn read<T>(&mut self, name: &str, default: T, unit: &str) -> Result<T>
    where
        T: FromStr + Display,
        T::Err: Display,
    {
        let value = env_or(name, default)?;
        self.listed
            .push((name.to_owned(), format!("{value}{unit}")));
        Ok(value)
    }

    /// [`KnobReader::read`] for a knob that must be at least `min`.
    pub fn at_least<T>(&mut self, name: &str, default: T, min: T, unit: &str) -> Result<T>
    where
        T: FromStr + Display + PartialOrd,
        T::Err: Display,
    {
        let value = self.read(name, default, unit)?;
        ensure!(value >= min, "{name} must be at least {min}");
        Ok(value)
    }

    /// [`KnobReader::read`] for a rate of jobs per second, which must be more than 0.
    pub fn rate(&mut self, name: &str, default: f64) -> Result<f64> {
        let rate = self.read(name, default, " jobs/s")?;
        ensure!(rate.is_finite() && rate > 0.0, "{name} must be more than 0");
        Ok(rate)
    }
}

/// The servers a run makes its database and Redis keys on. Not knobs of the report: a run's
/// database and prefix are its own whatever servers it shares.
struct Servers {
    /// Any database on the server; the run's own database is created next to it.
    database_url: String,
    redis_url: String,
}

impl Servers {
    fn from_env() -> Result<Servers> {
        Ok(Servers {
            database_url: env_or(
                "DATABASE_URL",
                "postgres://postgres@127.0.0.1:5432/postgres".to_owned(),
            )?,
            redis_url: env_or("REDIS_URL", "redis://127.0.0.1:6379".to_owned())?,
        })
    }
}

/// What a bench's parts share: the report, what has failed so far, and the servers.
pub struct Harness {
    pub report: Report,
    /// Each becomes a **FAILED** note of the report, and makes the exit code a failure.
    errors: Vec<String>,
    tag: &'static str,
    servers: Servers,
}

impl Harness {
    /// Records that `part` failed; the bench goes on with its other parts.
    pub fn fail(&mut self, part: &str, error: anyhow::Error) {
        self.errors.push(format!("{part}: {error:#}"));
    }

    /// Sets up a run as `spec` says (its own database, Redis prefix and config file), runs `body`
    /// on it, then notes the daemon's warnings and removes the run, whether `body` succeeded,
    /// failed or was interrupted by Ctrl-C. In a Tokio runtime made here, so that a part without
    /// a run (the scoring bench's pure one) runs without one.
    pub fn with_run(
        &mut self,
        spec: RunSpec,
        body: impl AsyncFnOnce(&Run, &mut Report) -> Result<()>,
    ) {
        let runtime = tokio::runtime::Runtime::new().expect("a Tokio runtime");
        runtime.block_on(async {
            let setup = Run::setup(
                self.tag,
                spec,
                &self.servers.database_url,
                &self.servers.redis_url,
                &mut self.report,
            );
            let run = match setup.await {
                Ok(run) => run,
                Err(e) => return self.fail("setup", e),
            };
            // Ctrl-C drops `body` (and with it any daemon, which is killed, and any task it owns,
            // which is aborted) but still cleans up.
            let result = tokio::select! {
                result = body(&run, &mut self.report) => result,
                _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted by Ctrl-C")),
            };
            if let Err(e) = result {
                self.errors.push(format!("{e:#}"));
            }
            run.note_daemon_warnings(&mut self.report);
            if let Err(e) = run.teardown(&mut self.report).await {
                self.fail("cleanup", e);
            }
        });
    }

    /// Ends the bench: the errors go into the report as failures, the report to stdout and the
    /// errors again to stderr; fails if there are any.
    fn finish(mut self) -> ExitCode {
        for error in &self.errors {
            self.report.note(format!("**FAILED**: {error}"));
        }
        println!("{}", self.report.render());
        if self.errors.is_empty() {
            return ExitCode::SUCCESS;
        }
        for error in &self.errors {
            eprintln!("{}: error: {error}", self.tag);
        }
        ExitCode::FAILURE
    }
}
