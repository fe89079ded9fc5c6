//! `search` and `index rebuild`: an index searched from the command line as the web tier
//! searches it (Postgres: the SQL function `quizworker_search`; Meilisearch: its search
//! route), and a rebuild run in this process, with its progress on standard error.

use serde::Serialize;
use serde_json::{Map, Value};

use super::connect_postgres;
use super::failure::{bad_input, excerpt};
use super::output::{self, outln};
use crate::cli::{IndexCommand, SearchArgs};
use crate::config::{Config, IndexConfig, SearchBackend};
use crate::families::JobError;
use crate::families::indexing::meilisearch::Meilisearch;
use crate::families::indexing::rebuild::refused;
use crate::families::indexing::{IndexingService, postgres, run_rebuild, unknown_index};

/// One hit, whichever the backend.
#[derive(Debug, Serialize)]
struct Hit {
    id: String,
    rank: f64,
    snippet: String,
    document: Value,
}

pub async fn search(config: &Config, args: SearchArgs) -> anyhow::Result<()> {
    let index = index_config(config, &args.index)?;
    let filters = parse_filters(&args.filter)?;
    let hits = match index.backend {
        SearchBackend::Postgres => search_postgres(config, &args, &filters).await?,
        SearchBackend::Meilisearch => search_meilisearch(config, index, &args, &filters).await?,
    };
    if args.json {
        return output::print_json(&hits);
    }
    let mut table = output::table(&["RANK", "ID", "SNIPPET"]);
    for hit in &hits {
        table.add_row(vec![
            format!("{:.3}", hit.rank),
            output::text(&hit.id),
            output::cell(Some(&hit.snippet), 100),
        ]);
    }
    outln!("{table}")?;
    output::note(&format!(
        "{} hit(s) in index `{}` ({})",
        hits.len(),
        output::text(&args.index),
        index.backend.name()
    ));
    Ok(())
}

async fn search_postgres(
    config: &Config,
    args: &SearchArgs,
    filters: &Map<String, Value>,
) -> anyhow::Result<Vec<Hit>> {
    let pg = connect_postgres(config).await?;
    let filters = Value::Object(filters.clone());
    let hits = postgres::search(
        &pg,
        &args.index,
        &args.query,
        &filters,
        args.limit as i32,
        args.offset as i32,
    )
    .await;
    match hits {
        Ok(hits) => Ok(hits
            .into_iter()
            .map(|h| Hit {
                id: h.id,
                rank: f64::from(h.rank),
                snippet: h.snippet,
                document: h.document,
            })
            .collect()),
        // The function's own refusals: an index with no documents yet, a filter on a field
        // that is not filterable.
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("22023") => {
            Err(bad_input(e.message().to_owned()))
        }
        Err(e) => Err(e.into()),
    }
}

async fn search_meilisearch(
    config: &Config,
    index: &IndexConfig,
    args: &SearchArgs,
    filters: &Map<String, Value>,
) -> anyhow::Result<Vec<Hit>> {
    let meili = Meilisearch::new(&config.search.meilisearch)?;
    let filter = (!filters.is_empty()).then(|| {
        filters
            .iter()
            .map(|(field, value)| format!("{field} = {value}"))
            .collect::<Vec<_>>()
            .join(" AND ")
    });
    let answer = meili
        .search(&args.index, &args.query, filter, args.limit, args.offset)
        .await
        .map_err(job_error)?
        .map_err(|e| bad_input(format!("Meilisearch: {} ({})", e.message, e.code)))?;
    let searchable = index.schema().searchable_by_weight().join(",");
    let hits = answer["hits"].as_array().cloned().unwrap_or_default();
    Ok(hits
        .into_iter()
        .map(|mut hit| {
            let formatted = hit
                .as_object_mut()
                .and_then(|h| h.remove("_formatted"))
                .unwrap_or(Value::Null);
            let rank = hit
                .as_object_mut()
                .and_then(|h| h.remove("_rankingScore"))
                .and_then(|r| r.as_f64())
                .unwrap_or(0.0);
            let id = match &hit[&index.primary_key] {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            let text_of = |field: &str| formatted[field].as_str().map(str::to_owned);
            let fields: Vec<&str> = searchable.split(',').collect();
            let snippet = fields
                .iter()
                .filter_map(|f| text_of(f))
                .find(|t| t.contains("<mark>"))
                .or_else(|| fields.iter().find_map(|f| text_of(f)))
                .unwrap_or_default();
            Hit {
                id,
                rank,
                snippet,
                document: hit,
            }
        })
        .collect())
}

pub async fn index(config: &Config, command: IndexCommand) -> anyhow::Result<()> {
    match command {
        IndexCommand::Rebuild { index, json } => rebuild(config, &index, json).await,
    }
}

async fn rebuild(config: &Config, name: &str, json: bool) -> anyhow::Result<()> {
    let index = index_config(config, name)?;
    let pg = connect_postgres(config).await?;
    let indexing = IndexingService::new(config)?;
    let last = std::sync::Mutex::new(None::<u8>);
    // One line per percent, not per batch.
    let progress = |percent: u8, message: String| {
        let mut last = last.lock().unwrap_or_else(|p| p.into_inner());
        if *last != Some(percent) {
            *last = Some(percent);
            output::note(&format!("{percent:>3}% {message}"));
        }
    };
    let rebuilt = run_rebuild(&pg, &indexing, name, index, &progress)
        .await
        .map_err(job_error)?;
    if json {
        output::print_json(&rebuilt)?;
    } else {
        outln!(
            "rebuilt index `{}` ({}): {} rows read, {} documents live, {} refused, in {:.1}s",
            output::text(name),
            rebuilt.backend,
            rebuilt.rows,
            rebuilt.documents,
            rebuilt.bad,
            rebuilt.seconds
        )?;
    }
    if rebuilt.bad > 0 {
        return Err(bad_input(refused(
            &format!("rebuilt index `{name}`"),
            rebuilt.bad,
            &rebuilt.bad_rows,
        )));
    }
    Ok(())
}

fn index_config<'a>(config: &'a Config, name: &str) -> anyhow::Result<&'a IndexConfig> {
    config
        .search
        .indexes
        .get(name)
        .ok_or_else(|| bad_input(unknown_index(&config.search, name)))
}

/// `FIELD=VALUE` pairs as a JSON object; VALUE as JSON if it reads as JSON, else as text.
fn parse_filters(pairs: &[String]) -> anyhow::Result<Map<String, Value>> {
    let mut filters = Map::new();
    for pair in pairs {
        let Some((field, value)) = pair.split_once('=') else {
            return Err(bad_input(format!(
                "--filter {} is not FIELD=VALUE",
                excerpt(pair)
            )));
        };
        if field.is_empty() {
            return Err(bad_input(format!(
                "--filter {} has no field",
                excerpt(pair)
            )));
        }
        let value = serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.into()));
        filters.insert(field.to_owned(), value);
    }
    Ok(filters)
}

/// A rebuild's or a search's failure, as the CLI reports it: what no retry mends is bad input.
fn job_error(error: JobError) -> anyhow::Error {
    match error {
        JobError::Permanent(message) => bad_input(message),
        JobError::Transient(message) => anyhow::anyhow!(message),
        // The command does not run again later: only the reason is the operator's.
        JobError::Snooze { reason, .. } => anyhow::anyhow!(reason),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_read_json_or_text() {
        let pairs = ["test_id=t1", "year=2026", "open=true", "name=\"x y\""].map(String::from);
        let filters = parse_filters(&pairs).unwrap();
        assert_eq!(
            Value::Object(filters),
            serde_json::json!({"test_id": "t1", "year": 2026, "open": true, "name": "x y"})
        );
        assert!(parse_filters(&["nofield".into()]).is_err());
        assert!(parse_filters(&["=x".into()]).is_err());
    }
}
