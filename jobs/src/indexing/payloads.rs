//! The payloads of the indexing jobs. Documents and deletions are taken as plain JSON values
//! and checked one by one against the index's schema ([`crate::indexing::schema`]), so that
//! one bad document fails alone, named, while the others of its job are written.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::payload::{JobPayload, Queue};

/// Adds or replaces documents of an index. Each document is a JSON object holding the index's
/// primary key and version fields; a document is written only if its version is newer than
/// the one the index holds for its id (document or deletion).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndexUpsert {
    /// The index's name, as configured in `[search.indexes.NAME]`.
    pub index: String,
    /// At least one, at most `search.max_documents` (config).
    pub documents: Vec<Value>,
}

impl JobPayload for IndexUpsert {
    const KIND: &'static str = "index.upsert";
    const QUEUE: Queue = Queue::Indexing;
}

/// Removes documents from an index. Each deletion is `{"id": ..., "version": ...}`: it is kept
/// as a tombstone, so that an older upsert arriving later (a delayed retry) does not bring the
/// document back, while a newer one does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndexDelete {
    pub index: String,
    /// At least one, at most `search.max_documents`.
    pub deletions: Vec<Value>,
}

impl JobPayload for IndexDelete {
    const KIND: &'static str = "index.delete";
    const QUEUE: Queue = Queue::Indexing;
}

/// Builds the whole index again from its `source` query on the platform's database, beside the
/// live index, and swaps it in when it is complete.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndexRebuild {
    pub index: String,
}

impl JobPayload for IndexRebuild {
    const KIND: &'static str = "index.rebuild";
    const QUEUE: Queue = Queue::Indexing;
}
