//! `email preview|deliveries|suppressions`: a platform checks its templates before a send; an
//! operator sees what became of each message of a job, and keeps the suppression list.

use std::io::Read;
use std::path::Path;

use anyhow::Context;
use serde_json::{Value, json};

use super::connect_postgres;
use super::failure::{Mark, bad_input, excerpt};
use super::output::{self, outln};
use crate::cli::{EmailCommand, SuppressionsCommand};
use crate::config::Config;
use crate::families::email::{ledger, suppressions, templates};

pub async fn execute(config: &Config, command: EmailCommand) -> anyhow::Result<()> {
    match command {
        EmailCommand::Preview {
            template,
            vars,
            locale,
            templates,
            json,
        } => {
            let dir = templates.unwrap_or_else(|| config.email.templates.clone());
            preview(
                config,
                &dir,
                &template,
                vars.as_deref(),
                locale.as_deref(),
                json,
            )
        }
        EmailCommand::Deliveries { job_id, json } => deliveries(config, &job_id, json).await,
        EmailCommand::Suppressions(command) => suppressions_command(config, command).await,
    }
}

fn preview(
    config: &Config,
    dir: &Path,
    name: &str,
    vars: Option<&Path>,
    locale: Option<&str>,
    json: bool,
) -> anyhow::Result<()> {
    let all = templates::load(dir, &config.email.default_locale).bad_input()?;
    let vars = match vars {
        Some(path) => read_vars(path)?,
        None => json!({}),
    };
    let email = all.render(name, locale, &vars).bad_input()?;
    if json {
        return output::print_json(&json!({
            "variant": email.variant,
            "subject": email.subject,
            "text": email.text,
            "html": email.html,
        }));
    }
    outln!("Template: {} ({})", email.variant, dir.display())?;
    outln!("Subject:  {}", email.subject)?;
    outln!("\n--- text ---\n{}", email.text.trim_end())?;
    match &email.html {
        Some(html) => outln!("\n--- html ---\n{}", html.trim_end())?,
        None => outln!("\n--- html ---\n(none: the message is text only)")?,
    }
    Ok(())
}

fn read_vars(path: &Path) -> anyhow::Result<Value> {
    let mut text = String::new();
    if path == Path::new("-") {
        std::io::stdin()
            .read_to_string(&mut text)
            .context("could not read standard input")
            .bad_input()?;
    } else {
        text = std::fs::read_to_string(path)
            .with_context(|| format!("could not read {}", path.display()))
            .bad_input()?;
    }
    let vars: Value = serde_json::from_str(&text)
        .map_err(|e| bad_input(format!("{} is not JSON: {e}", path.display())))?;
    if !vars.is_object() {
        return Err(bad_input(format!(
            "{} must hold a JSON object of variables",
            path.display()
        )));
    }
    Ok(vars)
}

async fn deliveries(config: &Config, job_id: &str, json: bool) -> anyhow::Result<()> {
    let pg = connect_postgres(config).await?;
    let rows = ledger::of_job(&pg, job_id).await?;
    if rows.is_empty() {
        return Err(bad_input(format!(
            "no messages recorded for job {}: not an email job, or it has not run yet",
            excerpt(job_id)
        )));
    }
    if json {
        return output::print_json(&rows);
    }
    let mut table = output::table(&["#", "ADDRESS", "STATUS", "ATTEMPT", "UPDATED", "REPLY"]);
    for d in &rows {
        table.add_row(vec![
            d.recipient.to_string(),
            output::cell(Some(&d.address), 60),
            format!("{:?}", d.status).to_lowercase(),
            d.attempt
                .map(|a| a.to_string())
                .unwrap_or_else(|| "-".into()),
            output::time(Some(d.updated_at)),
            output::cell(d.reply.as_deref(), 80),
        ]);
    }
    outln!("{table}")?;
    Ok(())
}

async fn suppressions_command(config: &Config, command: SuppressionsCommand) -> anyhow::Result<()> {
    let pg = connect_postgres(config).await?;
    match command {
        SuppressionsCommand::List { json } => {
            let list = suppressions::list(&pg).await?;
            if json {
                return output::print_json(&list);
            }
            let mut table = output::table(&["ADDRESS", "REASON", "SINCE", "JOB", "REPLY"]);
            for s in &list {
                table.add_row(vec![
                    output::text(&s.address),
                    s.reason.clone(),
                    output::time(Some(s.created_at)),
                    output::cell(s.job_id.as_deref(), 26),
                    output::cell(s.reply.as_deref(), 80),
                ]);
            }
            outln!("{table}")?;
            output::note(&format!("{} suppressed", list.len()));
        }
        SuppressionsCommand::Add { address } => {
            check_address(&address)?;
            if suppressions::add(&pg, &address, "manual", None, None).await? {
                outln!("suppressed {}", suppressions::normalize(&address))?;
            } else {
                outln!(
                    "{} was already suppressed",
                    suppressions::normalize(&address)
                )?;
            }
        }
        SuppressionsCommand::Remove { address } => {
            if suppressions::remove(&pg, &address).await? {
                outln!("removed {}", suppressions::normalize(&address))?;
            } else {
                return Err(bad_input(format!(
                    "{} is not on the suppression list",
                    excerpt(&address)
                )));
            }
        }
    }
    Ok(())
}

fn check_address(address: &str) -> anyhow::Result<()> {
    address.parse::<lettre::Address>().map(drop).map_err(|e| {
        bad_input(format!(
            "{} is not an email address ({e})",
            excerpt(address)
        ))
    })
}
