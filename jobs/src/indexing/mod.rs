//! The indexing family: the payloads of `index.upsert`, `index.delete` and `index.rebuild`, an
//! index's schema (`schema`: what a document of it may hold and how each field is weighted),
//! the check of each document against it, and versions (`version`: which of two writes of a
//! document is the newer). Writing to Postgres or Meilisearch is the daemon's
//! (src/families/indexing/).

mod payloads;
pub mod schema;
pub mod version;

pub use payloads::{IndexDelete, IndexRebuild, IndexUpsert};
pub use schema::{
    BadDocument, CheckedDeletion, CheckedDocument, IndexSchema, SchemaError, Weight, WeightedText,
};
pub use version::{Version, VersionType};
