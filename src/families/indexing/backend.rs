//! What a search backend does, whichever it is: write documents and deletions each only if
//! newer than what the index holds for its id, and build a whole index beside the live one and
//! swap it in. `postgres::PostgresIndex` and `meilisearch::MeilisearchIndex` implement it.

use std::future::Future;

use quizworker_jobs::indexing::{CheckedDeletion, CheckedDocument};
use serde::Serialize;

use crate::families::JobError;

/// What one write did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Applied {
    /// Documents (or deletions) written.
    pub written: usize,
    /// Not written: the index holds a version at least as new for the id (or the job named
    /// the id twice and an earlier entry had the newer version).
    pub stale: usize,
}

impl Applied {
    pub fn add(&mut self, other: Applied) {
        self.written += other.written;
        self.stale += other.stale;
    }
}

/// A build under way beside the live index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Build {
    pub generation: i64,
}

/// What a finished rebuild left live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Swapped {
    /// Documents in the index now.
    pub documents: u64,
}

/// One index in one backend. Every method is safe to run beside upserts and deletes of the
/// same index, in this process or another.
pub trait SearchIndex: Sync {
    /// Writes each document whose version is newer than the index's for its id (also into a
    /// build under way, so that a rebuild does not lose it).
    fn upsert(
        &self,
        documents: &[CheckedDocument],
    ) -> impl Future<Output = Result<Applied, JobError>> + Send;

    /// Deletes each id whose deletion is newer than what the index holds, keeping the
    /// deletion's version (a tombstone).
    fn delete(
        &self,
        deletions: &[CheckedDeletion],
    ) -> impl Future<Output = Result<Applied, JobError>> + Send;

    /// Starts a build beside the live index; a build left by a rebuild that died is dropped.
    /// The caller holds the index's rebuild lock.
    fn begin_rebuild(&self) -> impl Future<Output = Result<Build, JobError>> + Send;

    /// Writes a batch of the source into the build; a document already there in a newer
    /// version (written by an upsert during the rebuild) is kept. `written` counts the rows the
    /// batch leaves in the build (its own or a newer one), `stale` those it does not.
    fn write_rebuild(
        &self,
        build: Build,
        documents: &[CheckedDocument],
    ) -> impl Future<Output = Result<Applied, JobError>> + Send;

    /// Checks the build holds at least `expected` rows (the sum of `write_rebuild`'s
    /// `written`), swaps it in atomically, and removes the old index.
    fn finish_rebuild(
        &self,
        build: Build,
        expected: u64,
    ) -> impl Future<Output = Result<Swapped, JobError>> + Send;

    /// Drops a build that will not be finished; the live index is untouched.
    fn abandon_rebuild(&self, build: Build) -> impl Future<Output = Result<(), JobError>> + Send;
}

/// Keeps, of documents naming the same id, the one with the newest version (the first of
/// equals): one statement may not write a row twice, and the newest would win anyway.
/// Returns them in their order and how many were dropped.
pub fn newest_per_id<T>(
    items: &[T],
    id: impl Fn(&T) -> &str,
    version: impl Fn(&T) -> i64,
) -> (Vec<&T>, usize) {
    let mut best: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for (i, item) in items.iter().enumerate() {
        best.entry(id(item))
            .and_modify(|b| {
                if version(item) > version(&items[*b]) {
                    *b = i;
                }
            })
            .or_insert(i);
    }
    let kept: Vec<&T> = items
        .iter()
        .enumerate()
        .filter(|(i, item)| best.get(id(item)) == Some(i))
        .map(|(_, item)| item)
        .collect();
    let dropped = items.len() - kept.len();
    (kept, dropped)
}

/// A database error during an index write: the database may come back, so the job is retried.
pub fn store_error(error: sqlx::Error) -> JobError {
    JobError::Transient(format!("search index write failed: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_of_one_id_is_kept() {
        let items = [("a", 1), ("b", 5), ("a", 3), ("a", 3), ("b", 2)];
        let (kept, dropped) = newest_per_id(&items, |i| i.0, |i| i.1);
        assert_eq!(kept, [&("b", 5), &("a", 3)]);
        assert_eq!(dropped, 3);
    }
}
