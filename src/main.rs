//! The `quizworker` binary: parses the command line, sets up logging, and turns the outcome of
//! the command into an exit code.

use std::process::ExitCode;

use clap::Parser;
use quizworker::cli::{Cli, Command, LogFormat};
use quizworker::ops::logging;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli);
    let json_logs = cli.log_format == LogFormat::Json;
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: could not start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(quizworker::commands::execute(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if json_logs {
                // One JSON object like every other line, so that journald or Loki pipelines
                // keep the line that says why the process ended; printed whatever RUST_LOG says.
                let line = serde_json::json!({
                    "timestamp": chrono::Utc::now()
                        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                    "level": "ERROR",
                    "message": "quizworker stopped on an error",
                    "error": format!("{e:#}"),
                    "target": "quizworker",
                });
                eprintln!("{line}");
            } else {
                // Escaped like every log line for people: the error may quote input.
                eprintln!("error: {}", logging::escape_control(&format!("{e:#}")));
            }
            ExitCode::FAILURE
        }
    }
}

fn init_logging(cli: &Cli) {
    // The daemon logs its work; the operator's commands only warn, so their output stays clean.
    // The libraries' own info lines (apalis' "Worker ... started" per queue, Postgres notices
    // relayed by sqlx) repeat what ours say, so they show from warn up.
    let default = match cli.command {
        Command::Run { .. } => "info,sqlx=warn,apalis=warn,apalis_core=warn,apalis_redis=warn",
        _ => "warn",
    };
    let format = match cli.log_format {
        LogFormat::Human => logging::Format::Human,
        LogFormat::Json => logging::Format::Json,
    };
    logging::init(format, default);
}
