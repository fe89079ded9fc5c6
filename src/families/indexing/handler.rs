//! Handlers of `index.upsert`, `index.delete` and `index.rebuild`. Each document (deletion,
//! source row) is checked alone: the good ones are written, and if any was refused the job then
//! fails for good, its error naming each refused one, since no retry would mend them.

use quizworker_jobs::indexing::{
    BadDocument, CheckedDeletion, CheckedDocument, IndexDelete, IndexRebuild, IndexUpsert,
};
use quizworker_jobs::{JobPayload, limits::shorten};
use serde_json::{Value, json};
use sqlx::PgPool;

use super::IndexingService;
use super::backend::{Applied, SearchIndex};
use super::meilisearch::MeilisearchIndex;
use super::postgres::PostgresIndex;
use super::rebuild::{self, NAMED_BAD_ROWS, Rebuilt, refused};
use crate::config::{IndexConfig, SearchBackend};
use crate::families::{JobContext, JobError, Services};

pub async fn upsert(
    job: IndexUpsert,
    _ctx: &JobContext,
    services: &Services,
) -> Result<Value, JobError> {
    let config = services.indexing.index(&job.index)?;
    check_count(
        IndexUpsert::KIND,
        "documents",
        job.documents.len(),
        services.indexing.config.max_documents,
    )?;
    let schema = config.schema();
    let total = job.documents.len();
    let (good, bad) = split(
        job.documents
            .into_iter()
            .enumerate()
            .map(|(i, value)| schema.check_document("documents", i, value)),
    );
    let applied = write(services, &job.index, config, Writes::Documents(&good)).await?;
    finish(&job.index, config, "documents", total, applied, &bad)
}

pub async fn delete(
    job: IndexDelete,
    _ctx: &JobContext,
    services: &Services,
) -> Result<Value, JobError> {
    let config = services.indexing.index(&job.index)?;
    check_count(
        IndexDelete::KIND,
        "deletions",
        job.deletions.len(),
        services.indexing.config.max_documents,
    )?;
    let schema = config.schema();
    let (good, bad) = split(
        job.deletions
            .iter()
            .enumerate()
            .map(|(i, value)| schema.check_deletion(i, value)),
    );
    let applied = write(services, &job.index, config, Writes::Deletions(&good)).await?;
    let total = job.deletions.len();
    finish(&job.index, config, "deletions", total, applied, &bad)
}

/// The checked items of a job apart from those refused.
fn split<T>(checked: impl Iterator<Item = Result<T, BadDocument>>) -> (Vec<T>, Vec<BadDocument>) {
    let mut good = Vec::new();
    let mut bad = Vec::new();
    for item in checked {
        match item {
            Ok(item) => good.push(item),
            Err(refused) => bad.push(refused),
        }
    }
    (good, bad)
}

/// What an upsert or a delete writes.
enum Writes<'a> {
    Documents(&'a [CheckedDocument]),
    Deletions(&'a [CheckedDeletion]),
}

/// Writes through the index's backend; nothing to write is no call at all.
async fn write(
    services: &Services,
    name: &str,
    config: &IndexConfig,
    writes: Writes<'_>,
) -> Result<Applied, JobError> {
    async fn to<I: SearchIndex>(index: &I, writes: Writes<'_>) -> Result<Applied, JobError> {
        match writes {
            Writes::Documents(documents) => index.upsert(documents).await,
            Writes::Deletions(deletions) => index.delete(deletions).await,
        }
    }
    let empty = match writes {
        Writes::Documents(documents) => documents.is_empty(),
        Writes::Deletions(deletions) => deletions.is_empty(),
    };
    if empty {
        return Ok(Applied::default());
    }
    let pg = &services.pg;
    match config.backend {
        SearchBackend::Postgres => to(&PostgresIndex::new(pg, name, config), writes).await,
        SearchBackend::Meilisearch => {
            let meili = &services.indexing.meilisearch;
            to(&MeilisearchIndex::new(meili, pg, name, config), writes).await
        }
    }
}

pub async fn rebuild(
    job: IndexRebuild,
    ctx: &JobContext,
    services: &Services,
) -> Result<Value, JobError> {
    let indexing = &services.indexing;
    let config = indexing.index(&job.index)?;
    let progress = |percent: u8, message: String| ctx.progress(percent, message);
    let rebuilt = run_rebuild(&services.pg, indexing, &job.index, config, &progress).await?;
    if rebuilt.bad > 0 {
        return Err(JobError::Permanent(refused(
            &format!(
                "rebuilt index `{}` ({} documents live)",
                rebuilt.index, rebuilt.documents
            ),
            rebuilt.bad,
            &rebuilt.bad_rows,
        )));
    }
    Ok(json!(rebuilt))
}

/// A rebuild through the index's backend, for the job and for `quizworker index rebuild`.
pub async fn run_rebuild(
    pg: &PgPool,
    indexing: &IndexingService,
    name: &str,
    config: &IndexConfig,
    progress: &(dyn Fn(u8, String) + Sync),
) -> Result<Rebuilt, JobError> {
    let search = &indexing.config;
    match config.backend {
        SearchBackend::Postgres => {
            let index = PostgresIndex::new(pg, name, config);
            rebuild::rebuild(&index, pg, name, config, search, progress).await
        }
        SearchBackend::Meilisearch => {
            let index = MeilisearchIndex::new(&indexing.meilisearch, pg, name, config);
            rebuild::rebuild(&index, pg, name, config, search, progress).await
        }
    }
}

fn check_count(kind: &str, field: &str, count: usize, max: usize) -> Result<(), JobError> {
    if count == 0 {
        return Err(JobError::Permanent(format!("{kind}: `{field}` is empty")));
    }
    if count > max {
        return Err(JobError::Permanent(format!(
            "{kind}: {count} {field}, more than search.max_documents = {max}"
        )));
    }
    Ok(())
}

/// The job's result, or, if some were refused, its permanent error naming each.
fn finish(
    index: &str,
    config: &IndexConfig,
    field: &str,
    total: usize,
    applied: Applied,
    bad: &[BadDocument],
) -> Result<Value, JobError> {
    if bad.is_empty() {
        return Ok(json!({
            "index": index,
            "backend": config.backend.name(),
            field: total,
            "written": applied.written,
            "stale": applied.stale,
        }));
    }
    let named = &bad[..bad.len().min(NAMED_BAD_ROWS)];
    Err(JobError::Permanent(refused(
        &format!(
            "index `{}`: {} of {total} {field} written ({} stale)",
            shorten(index, 80),
            applied.written,
            applied.stale
        ),
        bad.len() as u64,
        named,
    )))
}
