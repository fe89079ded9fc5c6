//! `score FILE.json`: a platform checks its marking scheme offline, before a live test.

use std::io::Read;
use std::path::Path;

use anyhow::Context;
use quizworker_jobs::scoring;

pub fn score_file(path: &Path) -> anyhow::Result<()> {
    let text = if path == Path::new("-") {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("could not read standard input")?;
        text
    } else {
        std::fs::read_to_string(path)
            .with_context(|| format!("could not read {}", path.display()))?
    };
    let result =
        scoring::score_json(&text).with_context(|| format!("{} does not score", path.display()))?;
    println!("{}", serde_json::to_string_pretty(&result)?);
    Ok(())
}
