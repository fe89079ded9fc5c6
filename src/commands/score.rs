//! `score FILE.json`: a platform checks its marking scheme offline, before a live test. The
//! result is JSON; with `--json` so is an error, in the form docs/SCORING.md shows
//! (`{"error": "invalid_attempt", "problems": [...]}`), on standard output.

use std::io::Read;
use std::path::Path;

use anyhow::Context;
use quizworker_jobs::scoring;
use serde_json::json;

use super::failure::{Mark, bad_input, error_text};
use super::output;

pub fn score_file(path: &Path, json: bool) -> anyhow::Result<()> {
    let text = match read(path) {
        Ok(text) => text,
        Err(e) => {
            if json {
                // The exit code says it failed even when nobody reads standard output.
                let _ =
                    output::print_json(&json!({"error": "unreadable", "message": error_text(&e)}));
            }
            return Err(e).bad_input();
        }
    };
    match scoring::score_json(&text) {
        Ok(result) => output::print_json(&result),
        Err(error) => {
            if json {
                let _ = output::print_json(&error);
            }
            Err(bad_input(format!(
                "{} does not score: {error}",
                path.display()
            )))
        }
    }
}

/// The file's text, or standard input's for `-`.
fn read(path: &Path) -> anyhow::Result<String> {
    if path == Path::new("-") {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("could not read standard input")?;
        Ok(text)
    } else {
        std::fs::read_to_string(path).with_context(|| format!("could not read {}", path.display()))
    }
}
