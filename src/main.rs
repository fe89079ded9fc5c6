//! The `quizworker` binary: parses the command line, sets up logging, and turns the outcome of
//! the command into an exit code (README, "The CLI").

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use quizworker::cli::{Cli, Command, LogFormat};
use quizworker::commands::failure::{Failure, error_text, is_broken_pipe};
use quizworker::ops::logging;

fn main() -> ExitCode {
    // clap prints its own usage errors and exits with 2 (`Failure::Usage`), 0 for --help.
    let cli = Cli::parse();
    let json_logs = cli.log_format == LogFormat::Json;
    logging::init(
        if json_logs {
            logging::Format::Json
        } else {
            logging::Format::Human
        },
        default_log_filter(&cli.command),
    );
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            report(
                &anyhow::Error::new(e).context("could not start the async runtime"),
                json_logs,
            );
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(quizworker::commands::execute(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        // Whoever read our output has all they wanted (`jobs list | head -1`): nothing failed.
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            report(&e, json_logs);
            ExitCode::from(Failure::of(&e).exit_code())
        }
    }
}

/// The daemon logs its work; the operator's commands only warn, so their output stays clean.
/// The libraries' own info lines (apalis' "Worker ... started" per queue, Postgres notices
/// relayed by sqlx) repeat what ours say, so they show from warn up.
fn default_log_filter(command: &Command) -> &'static str {
    match command {
        Command::Run { .. } => "info,sqlx=warn,apalis=warn,apalis_core=warn,apalis_redis=warn",
        _ => "warn",
    }
}

/// The error that ends the process, printed whatever RUST_LOG says. Best effort: standard
/// error may be gone too.
fn report(error: &anyhow::Error, json_logs: bool) {
    let text = error_text(error);
    let line = if json_logs {
        // One JSON object like every other line, so that journald or Loki pipelines keep the
        // line that says why the process ended.
        serde_json::json!({
            "timestamp": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            "level": "ERROR",
            "message": "quizworker stopped on an error",
            "error": text,
            "target": "quizworker",
        })
        .to_string()
    } else {
        format!("error: {text}")
    };
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}
