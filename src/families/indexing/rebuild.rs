//! A whole index built again from its source: one rebuild of an index at a time (a Postgres
//! advisory lock, held on a connection of its own, so it goes if the process dies), the
//! source read in batches from one read-only snapshot, each row checked and written beside
//! the live index, the rows read checked against the snapshot's count, and the build swapped
//! in. Searches read the live index throughout; upserts and deletes during the rebuild go to
//! both (`backend::SearchIndex`).

use std::time::{Duration, Instant};

use quizworker_jobs::indexing::BadDocument;
use serde::Serialize;
use sqlx::{Connection, PgPool};

use super::backend::{Applied, SearchIndex, store_error};
use super::source::Source;
use crate::config::{IndexConfig, SearchConfig};
use crate::families::JobError;

/// How often a rebuild that found another one under way looks again.
const OTHER_REBUILD_POLL: Duration = Duration::from_secs(5);

/// Bad rows a rebuild keeps to name in its error; it counts them all.
pub const NAMED_BAD_ROWS: usize = 50;

/// What a rebuild did.
#[derive(Debug, Clone, Serialize)]
pub struct Rebuilt {
    pub index: String,
    pub backend: &'static str,
    /// Rows the source query returned.
    pub rows: u64,
    /// Documents now in the index.
    pub documents: u64,
    /// Rows refused (no primary key, a field not in a strict schema, too large, ...).
    pub bad: u64,
    pub seconds: f64,
    /// The first [`NAMED_BAD_ROWS`] refused rows.
    #[serde(skip)]
    pub bad_rows: Vec<BadDocument>,
}

/// Rebuilds `name` through `index`. `progress` is told the percent and a line of text.
pub async fn rebuild<I: SearchIndex>(
    index: &I,
    pg: &PgPool,
    name: &str,
    config: &IndexConfig,
    search: &SearchConfig,
    progress: &(dyn Fn(u8, String) + Sync),
) -> Result<Rebuilt, JobError> {
    let query = config.source.as_deref().ok_or_else(|| {
        JobError::Permanent(format!(
            "index `{name}` has no source: set search.indexes.{name}.source to the SQL query that returns its documents"
        ))
    })?;
    // Detached from the pool: closing it (or the process dying) releases the lock.
    let mut lock = pg.acquire().await.map_err(store_error)?.detach();
    let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtextextended($1, 0))")
        .bind(format!("quizworker:search-rebuild:{name}"))
        .fetch_one(&mut lock)
        .await
        .map_err(store_error)?;
    if !locked {
        // Waiting is not failing: however long the other rebuild takes, this one keeps its
        // attempts, looks again every few seconds and then rebuilds from the newer source.
        return Err(JobError::Snooze {
            until: chrono::Utc::now() + OTHER_REBUILD_POLL,
            reason: format!(
                "a rebuild of index `{name}` is already under way; this one waits for it to end"
            ),
        });
    }
    let result = rebuild_locked(index, name, config, search, query, progress).await;
    let _ = lock.close().await;
    result
}

async fn rebuild_locked<I: SearchIndex>(
    index: &I,
    name: &str,
    config: &IndexConfig,
    search: &SearchConfig,
    query: &str,
    progress: &(dyn Fn(u8, String) + Sync),
) -> Result<Rebuilt, JobError> {
    let started = Instant::now();
    let mut source = Source::open(&search.source.url_env, query, search.rebuild_batch).await?;
    if source.count == 0 {
        source.close().await;
        return Err(JobError::Permanent(format!(
            "the source of index `{name}` returned no rows; the live index is kept (an empty build is never swapped in)"
        )));
    }
    let total = source.count;
    let build = index.begin_rebuild().await?;
    let schema = config.schema();
    let mut rows = 0u64;
    let mut bad = 0u64;
    let mut bad_rows = Vec::new();
    let mut applied = Applied::default();
    let written: Result<(), JobError> = async {
        loop {
            let batch = source.next_batch().await?;
            if batch.is_empty() {
                return Ok(());
            }
            let mut good = Vec::with_capacity(batch.len());
            for value in batch {
                let position = rows as usize;
                rows += 1;
                match schema.check_document("source row", position, value) {
                    Ok(doc) => good.push(doc),
                    Err(e) => {
                        bad += 1;
                        if bad_rows.len() < NAMED_BAD_ROWS {
                            bad_rows.push(e);
                        }
                    }
                }
            }
            applied.add(index.write_rebuild(build, &good).await?);
            progress(
                (rows * 100 / total.max(1)).min(99) as u8,
                format!("{rows} of {total} rows written beside the live index"),
            );
        }
    }
    .await;
    source.close().await;
    let checked = written.and_then(|()| {
        if rows == total {
            Ok(())
        } else {
            Err(JobError::Transient(format!(
                "read {rows} rows of the source of index `{name}`, but its snapshot counted {total}; the live index is kept"
            )))
        }
    });
    let swapped = match checked {
        Ok(()) => index.finish_rebuild(build, applied.written as u64).await,
        Err(e) => Err(e),
    };
    let swapped = match swapped {
        Ok(swapped) => swapped,
        Err(e) => {
            if let Err(abandon) = index.abandon_rebuild(build).await {
                tracing::warn!(index = name, error = %abandon, "could not drop an unfinished build; the next rebuild drops it");
            }
            return Err(e);
        }
    };
    progress(
        100,
        format!("{rows} rows read, {} documents live", swapped.documents),
    );
    Ok(Rebuilt {
        index: name.to_owned(),
        backend: config.backend.name(),
        rows,
        documents: swapped.documents,
        bad,
        seconds: started.elapsed().as_secs_f64(),
        bad_rows,
    })
}

/// The permanent error of a job (or command) that wrote its good documents but refused some:
/// each refused one named, up to `named`, and how many more.
pub fn refused(what: &str, total_bad: u64, named: &[BadDocument]) -> String {
    let list: Vec<String> = named.iter().map(ToString::to_string).collect();
    let more = total_bad.saturating_sub(named.len() as u64);
    format!(
        "{what}, but {total_bad} {} refused: {}{}",
        if total_bad == 1 { "was" } else { "were" },
        list.join("; "),
        if more > 0 {
            format!("; and {more} more")
        } else {
            String::new()
        }
    )
}
