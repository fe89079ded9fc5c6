//! Prepared tests kept between jobs. Every `score.attempt` of a live test names the same test;
//! reading its definition from Postgres and preparing it again for each attempt cost 30 times
//! the scoring itself (benches/scoring.rs). Entries are keyed by test and key version, and a
//! key version never changes once stored (`store::store_test` refuses a different
//! definition under a stored version), so an entry never goes stale.
//!
//! Which key version of a test is the newest is kept too, and may go stale: a key revised by
//! another job or process. Postgres is asked the first time; after that the score writer, which
//! checks every result against the newest version as it stores it, tells the job when a newer
//! one exists (`store::Saved::Stale`), and the job scores again and tells us.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, MutexGuard};

use lru::LruCache;
use quizworker_jobs::scoring::{PreparedTest, TestDef};
use sqlx::PgPool;

use super::store;
use crate::families::JobError;

/// Tests kept at once. A prepared 90-question test is tens of KB; a platform runs few tests at
/// the same moment, and the least recently used one goes first.
const CAPACITY: NonZeroUsize = NonZeroUsize::new(128).expect("not zero");

pub struct PreparedTests {
    entries: Mutex<LruCache<(String, u32), Arc<PreparedTest>>>,
    /// The newest key version of each test, as this process last learned it.
    newest: Mutex<LruCache<String, u32>>,
}

impl Default for PreparedTests {
    fn default() -> Self {
        PreparedTests {
            entries: Mutex::new(LruCache::new(CAPACITY)),
            newest: Mutex::new(LruCache::new(CAPACITY)),
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
        store::store_test(pg, prepared.definition()).await?;
        self.learned_newest(prepared.test_id(), prepared.key_version());
        Ok(self.insert(prepared))
    }

    /// The newest key version of a stored test as far as this process knows; see the module's
    /// doc for how a newer one becomes known.
    pub async fn newest_known(
        &self,
        pg: &PgPool,
        test_id: &str,
    ) -> Result<Arc<PreparedTest>, JobError> {
        let known = lock(&self.newest).get(test_id).copied();
        self.stored(pg, test_id, known).await
    }

    /// A stored test: the given key version, or the newest (asked of Postgres).
    pub async fn stored(
        &self,
        pg: &PgPool,
        test_id: &str,
        key_version: Option<u32>,
    ) -> Result<Arc<PreparedTest>, JobError> {
        let version = match key_version {
            Some(version) => version,
            None => {
                let newest = store::newest_key_version(pg, test_id)
                    .await?
                    .ok_or_else(|| {
                        JobError::Permanent(format!(
                            "unknown test `{test_id}`: send the test with the attempt"
                        ))
                    })?;
                self.learned_newest(test_id, newest);
                newest
            }
        };
        if let Some(known) = self.get(test_id, version) {
            return Ok(known);
        }
        let def = store::load_test(pg, test_id, Some(version))
            .await?
            .ok_or_else(|| {
                JobError::Permanent(format!(
                    "test `{test_id}` has no stored key version {version}"
                ))
            })?;
        Ok(self.insert(prepare(def)?))
    }

    /// Records that `version` of the test is stored: it becomes the newest known unless a
    /// newer one is.
    pub fn learned_newest(&self, test_id: &str, version: u32) {
        let mut newest = lock(&self.newest);
        match newest.get_mut(test_id) {
            Some(known) => *known = (*known).max(version),
            None => {
                newest.put(test_id.to_owned(), version);
            }
        }
    }

    fn get(&self, test_id: &str, key_version: u32) -> Option<Arc<PreparedTest>> {
        lock(&self.entries)
            .get(&(test_id.to_owned(), key_version))
            .cloned()
    }

    fn insert(&self, prepared: PreparedTest) -> Arc<PreparedTest> {
        let prepared = Arc::new(prepared);
        let key = (prepared.test_id().to_owned(), prepared.key_version());
        lock(&self.entries).put(key, prepared.clone());
        prepared
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The caches hold no invariant a panicking holder could break.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn prepare(def: TestDef) -> Result<PreparedTest, JobError> {
    PreparedTest::new(def).map_err(|e| JobError::Permanent(e.to_string()))
}
