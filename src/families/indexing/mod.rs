//! The indexing family: `index.upsert`, `index.delete` and `index.rebuild` (`handler`), over
//! two backends behind one trait (`backend`): Postgres full-text search in the daemon's own
//! tables (`postgres`) and Meilisearch over HTTP (`meilisearch`). A rebuild reads the
//! platform's database through a read-only connection (`source`) and swaps the new build in
//! (`rebuild`). The checks of documents and versions are pure (`quizworker_jobs::indexing`).

pub mod backend;
mod handler;
pub mod meilisearch;
pub mod postgres;
pub mod rebuild;
pub mod source;

pub use handler::{delete, rebuild, run_rebuild, upsert};

use crate::config::{Config, IndexConfig, SearchConfig};
use crate::families::JobError;
use meilisearch::Meilisearch;

/// What the indexing handlers share, built once per process.
pub struct IndexingService {
    pub config: SearchConfig,
    pub meilisearch: Meilisearch,
}

impl IndexingService {
    /// Fails on settings no job could mend (TLS cannot be set up).
    pub fn new(config: &Config) -> anyhow::Result<IndexingService> {
        Ok(IndexingService {
            meilisearch: Meilisearch::new(&config.search.meilisearch)?,
            config: config.search.clone(),
        })
    }

    /// The index of that name, or a permanent error naming the indexes there are.
    pub fn index(&self, name: &str) -> Result<&IndexConfig, JobError> {
        self.config
            .indexes
            .get(name)
            .ok_or_else(|| JobError::Permanent(unknown_index(&self.config, name)))
    }
}

/// "unknown index `x` (indexes: a, b)", for a job or the CLI.
pub fn unknown_index(config: &SearchConfig, name: &str) -> String {
    let known: Vec<&str> = config.indexes.keys().map(String::as_str).collect();
    format!(
        "unknown index `{}` (indexes in [search.indexes]: {})",
        quizworker_jobs::limits::shorten(name, 80),
        if known.is_empty() {
            "none".to_owned()
        } else {
            known.join(", ")
        }
    )
}
