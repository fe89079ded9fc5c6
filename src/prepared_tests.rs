//! Prepared tests kept between jobs. Every `score.attempt` of a live test names the same test;
//! reading its definition from Postgres and preparing it again for each attempt cost 30 times
//! the scoring itself (benches/scoring.rs). Entries are keyed by test and key version, and a
//! key version never changes once stored (`scoring_store::store_test` refuses a different
//! definition under a stored version), so an entry never goes stale; only the question "which
//! version is the newest" is asked of Postgres each time.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use lru::LruCache;
use quizworker_jobs::scoring::{PreparedTest, TestDef};
use sqlx::PgPool;

use crate::handlers::JobError;
use crate::scoring_store;

/// Tests kept at once. A prepared 90-question test is tens of KB; a platform runs few tests at
/// the same moment, and the least recently used one goes first.
const CAPACITY: NonZeroUsize = NonZeroUsize::new(128).expect("not zero");

pub struct PreparedTests {
    entries: Mutex<LruCache<(String, u32), Arc<PreparedTest>>>,
}

impl Default for PreparedTests {
    fn default() -> Self {
        PreparedTests {
            entries: Mutex::new(LruCache::new(CAPACITY)),
        }
    }
}

impl PreparedTests {
    /// A test a job carries: checked, stored under its key version (or found identical to the
    /// stored one) and prepared, the first time; afterwards from memory.
    pub async fn sent(&self, pg: &PgPool, def: TestDef) -> Result<Arc<PreparedTest>, JobError> {
        if let Some(known) = self.get(&def.test_id, def.key_version)
            && *known.definition() == def
        {
            return Ok(known);
        }
        // Prepare before storing, so a test that does not hold together is never stored.
        let prepared = prepare(def)?;
        scoring_store::store_test(pg, prepared.definition()).await?;
        Ok(self.insert(prepared))
    }

    /// A stored test: the given key version, or the newest.
    pub async fn stored(
        &self,
        pg: &PgPool,
        test_id: &str,
        key_version: Option<u32>,
    ) -> Result<Arc<PreparedTest>, JobError> {
        let version = match key_version {
            Some(version) => version,
            None => scoring_store::newest_key_version(pg, test_id)
                .await?
                .ok_or_else(|| {
                    JobError::Permanent(format!(
                        "unknown test `{test_id}`: send the test with the attempt"
                    ))
                })?,
        };
        if let Some(known) = self.get(test_id, version) {
            return Ok(known);
        }
        let def = scoring_store::load_test(pg, test_id, Some(version))
            .await?
            .ok_or_else(|| {
                JobError::Permanent(format!(
                    "test `{test_id}` has no stored key version {version}"
                ))
            })?;
        Ok(self.insert(prepare(def)?))
    }

    fn get(&self, test_id: &str, key_version: u32) -> Option<Arc<PreparedTest>> {
        self.lock().get(&(test_id.to_owned(), key_version)).cloned()
    }

    fn insert(&self, prepared: PreparedTest) -> Arc<PreparedTest> {
        let prepared = Arc::new(prepared);
        let key = (prepared.test_id().to_owned(), prepared.key_version());
        self.lock().put(key, prepared.clone());
        prepared
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LruCache<(String, u32), Arc<PreparedTest>>> {
        // The cache holds no invariant a panicking holder could break.
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn prepare(def: TestDef) -> Result<PreparedTest, JobError> {
    PreparedTest::new(def).map_err(|e| JobError::Permanent(e.to_string()))
}
