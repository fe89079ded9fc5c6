//! The Postgres backend: an index's documents in `search_documents`, each build of it a
//! generation (`search_indexes`: the live one, and the one a rebuild writes). Writes take the
//! index's row `FOR SHARE`, so a rebuild's start and swap (`FOR UPDATE`) wait for the writes in
//! flight, and every write after its start goes into the build as well. Searches go through
//! the SQL function `quizworker_search` (migrations/20261130000015_search.sql).

use quizworker_jobs::indexing::{CheckedDeletion, CheckedDocument, IndexSchema};
use serde::Serialize;
use serde_json::Value;
use sqlx::{PgConnection, PgPool};

use super::backend::{Applied, Build, SearchIndex, Swapped, newest_per_id, store_error};
use crate::config::IndexConfig;
use crate::families::JobError;

pub struct PostgresIndex<'a> {
    pg: &'a PgPool,
    name: &'a str,
    config: &'a IndexConfig,
    schema: IndexSchema,
}

/// The generations a write goes to, with the text-search configuration of each.
struct Targets {
    live: i64,
    generations: Vec<i64>,
    configs: Vec<String>,
}

/// An index's row, as a write reads it.
#[derive(sqlx::FromRow)]
struct IndexRow {
    backend: String,
    live_generation: i64,
    live_config: String,
    building_generation: Option<i64>,
    building_config: Option<String>,
}

/// Rows to write, column by column (one array per column of the statement).
#[derive(Default)]
struct Rows {
    ids: Vec<String>,
    versions: Vec<i64>,
    documents: Vec<Option<Value>>,
    text: [Vec<String>; 4],
    typo: Vec<String>,
}

impl Rows {
    fn len(&self) -> usize {
        self.ids.len()
    }
}

/// Writes `rows` into each of `generations`, each row only over an older version; returns the
/// generation of each row written.
const WRITE: &str = "
INSERT INTO search_documents AS d (index_name, generation, id, version, document,
                                   text_search_config, text_a, text_b, text_c, text_d, typo_text)
SELECT $1, g.generation, u.id, u.version, u.document, g.config::regconfig,
       u.a, u.b, u.c, u.d, u.typo
  FROM unnest($2::bigint[], $3::text[]) AS g (generation, config)
 CROSS JOIN unnest($4::text[], $5::bigint[], $6::jsonb[], $7::text[], $8::text[], $9::text[],
                   $10::text[], $11::text[]) AS u (id, version, document, a, b, c, d, typo)
ON CONFLICT (index_name, generation, id) DO UPDATE
   SET version = excluded.version, document = excluded.document,
       text_search_config = excluded.text_search_config,
       text_a = excluded.text_a, text_b = excluded.text_b, text_c = excluded.text_c,
       text_d = excluded.text_d, typo_text = excluded.typo_text
 WHERE excluded.version > d.version
RETURNING d.generation";

impl<'a> PostgresIndex<'a> {
    pub fn new(pg: &'a PgPool, name: &'a str, config: &'a IndexConfig) -> Self {
        PostgresIndex {
            pg,
            name,
            config,
            schema: config.schema(),
        }
    }

    /// The index's row, made on first use with the config's text-search configuration.
    async fn ensure(&self) -> Result<(), JobError> {
        sqlx::query(
            "INSERT INTO search_indexes (name, backend, text_search_config, filterable, live_generation)
             VALUES ($1, 'postgres', $2::regconfig, $3, nextval('search_generations'))
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(self.name)
        .bind(&self.config.text_search_config)
        .bind(&self.config.filterable)
        .execute(self.pg)
        .await
        .map_err(|e| self.db_error(e))?;
        Ok(())
    }

    /// Where a write goes, the index's row held `FOR SHARE` by `tx` until it ends.
    async fn targets(&self, tx: &mut PgConnection) -> Result<Targets, JobError> {
        for _ in 0..2 {
            let row: Option<IndexRow> = sqlx::query_as(
                "SELECT backend, live_generation, text_search_config::text AS live_config,
                        building_generation, building_text_search_config::text AS building_config
                   FROM search_indexes WHERE name = $1 FOR SHARE",
            )
            .bind(self.name)
            .fetch_optional(&mut *tx)
            .await
            .map_err(store_error)?;
            let Some(row) = row else {
                self.ensure().await?;
                continue;
            };
            if row.backend != "postgres" {
                return Err(JobError::Permanent(format!(
                    "index `{}` is kept in {}, but its config says postgres: rebuild it \
                     (`quizworker index rebuild {}`) to move it",
                    self.name, row.backend, self.name
                )));
            }
            let mut targets = Targets {
                live: row.live_generation,
                generations: vec![row.live_generation],
                configs: vec![row.live_config],
            };
            if let (Some(generation), Some(config)) = (row.building_generation, row.building_config)
            {
                targets.generations.push(generation);
                targets.configs.push(config);
            }
            return Ok(targets);
        }
        Err(JobError::Transient(format!(
            "index `{}`: its row in search_indexes was not found after it was made",
            self.name
        )))
    }

    fn document_rows(&self, documents: &[&CheckedDocument]) -> Rows {
        let mut rows = Rows::default();
        for doc in documents {
            let text = self.schema.weighted_text(&doc.document);
            rows.ids.push(doc.id.clone());
            rows.versions.push(doc.version.0);
            rows.documents
                .push(Some(Value::Object(doc.document.clone())));
            for (column, text) in rows.text.iter_mut().zip(text.weights) {
                column.push(text);
            }
            rows.typo.push(text.typo);
        }
        rows
    }

    fn tombstone_rows(deletions: &[&CheckedDeletion]) -> Rows {
        let mut rows = Rows::default();
        for deletion in deletions {
            rows.ids.push(deletion.id.clone());
            rows.versions.push(deletion.version.0);
            rows.documents.push(None);
            for column in rows.text.iter_mut() {
                column.push(String::new());
            }
            rows.typo.push(String::new());
        }
        rows
    }

    async fn write(
        &self,
        conn: &mut PgConnection,
        generations: &[i64],
        configs: &[String],
        rows: &Rows,
    ) -> Result<Vec<i64>, JobError> {
        sqlx::query_scalar(WRITE)
            .bind(self.name)
            .bind(generations)
            .bind(configs)
            .bind(&rows.ids)
            .bind(&rows.versions)
            .bind(&rows.documents)
            .bind(&rows.text[0])
            .bind(&rows.text[1])
            .bind(&rows.text[2])
            .bind(&rows.text[3])
            .bind(&rows.typo)
            .fetch_all(conn)
            .await
            .map_err(|e| self.db_error(e))
    }

    /// Writes rows into the live generation and any build, in one transaction.
    async fn write_live(&self, rows: Rows, dropped: usize) -> Result<Applied, JobError> {
        let mut tx = self.pg.begin().await.map_err(store_error)?;
        let targets = self.targets(&mut tx).await?;
        let written = self
            .write(&mut tx, &targets.generations, &targets.configs, &rows)
            .await?;
        tx.commit().await.map_err(store_error)?;
        let written = written.iter().filter(|g| **g == targets.live).count();
        Ok(Applied {
            written,
            stale: rows.len() - written + dropped,
        })
    }

    /// A missing text-search configuration can only be mended in the config; anything else
    /// may pass.
    fn db_error(&self, error: sqlx::Error) -> JobError {
        if let sqlx::Error::Database(db) = &error
            && db.code().as_deref() == Some("42704")
        {
            return JobError::Permanent(format!(
                "index `{}`: {} (search.indexes.{}.text_search_config)",
                self.name,
                db.message(),
                self.name
            ));
        }
        store_error(error)
    }
}

impl SearchIndex for PostgresIndex<'_> {
    async fn upsert(&self, documents: &[CheckedDocument]) -> Result<Applied, JobError> {
        let (kept, dropped) = newest_per_id(documents, |d| &d.id, |d| d.version.0);
        self.write_live(self.document_rows(&kept), dropped).await
    }

    async fn delete(&self, deletions: &[CheckedDeletion]) -> Result<Applied, JobError> {
        let (kept, dropped) = newest_per_id(deletions, |d| &d.id, |d| d.version.0);
        self.write_live(Self::tombstone_rows(&kept), dropped).await
    }

    async fn begin_rebuild(&self) -> Result<Build, JobError> {
        self.ensure().await?;
        let mut tx = self.pg.begin().await.map_err(store_error)?;
        let left: Option<i64> = sqlx::query_scalar(
            "SELECT building_generation FROM search_indexes WHERE name = $1 FOR UPDATE",
        )
        .bind(self.name)
        .fetch_one(&mut *tx)
        .await
        .map_err(store_error)?;
        if let Some(left) = left {
            tracing::warn!(
                index = self.name,
                generation = left,
                "dropping the build of a rebuild that did not finish"
            );
            delete_generation(&mut tx, self.name, left).await?;
        }
        let generation: i64 = sqlx::query_scalar(
            "UPDATE search_indexes
                SET building_generation = nextval('search_generations'),
                    building_text_search_config = $2::regconfig
              WHERE name = $1
          RETURNING building_generation",
        )
        .bind(self.name)
        .bind(&self.config.text_search_config)
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| self.db_error(e))?;
        tx.commit().await.map_err(store_error)?;
        Ok(Build { generation })
    }

    async fn write_rebuild(
        &self,
        build: Build,
        documents: &[CheckedDocument],
    ) -> Result<Applied, JobError> {
        let (kept, dropped) = newest_per_id(documents, |d| &d.id, |d| d.version.0);
        let rows = self.document_rows(&kept);
        let mut conn = self.pg.acquire().await.map_err(store_error)?;
        // A row not written has a newer version in the build already: it is there either way.
        self.write(
            &mut conn,
            &[build.generation],
            std::slice::from_ref(&self.config.text_search_config),
            &rows,
        )
        .await?;
        Ok(Applied {
            written: rows.len(),
            stale: dropped,
        })
    }

    async fn finish_rebuild(&self, build: Build, expected: u64) -> Result<Swapped, JobError> {
        // The build is a whole index written at once. Until the table is analyzed the planner
        // takes the new generation for a few rows and reads every one of them in each search
        // (a second over 100,000 documents, where the full-text index answers in milliseconds);
        // autovacuum gets to it only later, and not at all where it is off.
        if let Err(e) = sqlx::query("ANALYZE search_documents")
            .execute(self.pg)
            .await
        {
            tracing::warn!(index = self.name, error = %e,
                "could not analyze search_documents; searches may be slow until autovacuum does");
        }
        let mut tx = self.pg.begin().await.map_err(store_error)?;
        let (live, building): (i64, Option<i64>) = sqlx::query_as(
            "SELECT live_generation, building_generation FROM search_indexes
              WHERE name = $1 FOR UPDATE",
        )
        .bind(self.name)
        .fetch_one(&mut *tx)
        .await
        .map_err(store_error)?;
        if building != Some(build.generation) {
            return Err(JobError::Transient(format!(
                "index `{}`: the build {} is no longer the one under way; the rebuild starts again",
                self.name, build.generation
            )));
        }
        // Deletions carry over (an older upsert arriving after the swap stays out), and so
        // does a live document newer than the source's row (a source that lags, e.g. a replica).
        sqlx::query(
            "INSERT INTO search_documents AS d (index_name, generation, id, version, document,
                         text_search_config, text_a, text_b, text_c, text_d, typo_text)
             SELECT l.index_name, $2, l.id, l.version, l.document, $3::regconfig,
                    l.text_a, l.text_b, l.text_c, l.text_d, l.typo_text
               FROM search_documents l
              WHERE l.index_name = $1 AND l.generation = $4
                AND (l.document IS NULL OR EXISTS (
                       SELECT 1 FROM search_documents n
                        WHERE n.index_name = $1 AND n.generation = $2 AND n.id = l.id
                          AND n.version < l.version))
             ON CONFLICT (index_name, generation, id) DO UPDATE
                SET version = excluded.version, document = excluded.document,
                    text_a = excluded.text_a, text_b = excluded.text_b, text_c = excluded.text_c,
                    text_d = excluded.text_d, typo_text = excluded.typo_text
              WHERE excluded.version > d.version",
        )
        .bind(self.name)
        .bind(build.generation)
        .bind(&self.config.text_search_config)
        .bind(live)
        .execute(&mut *tx)
        .await
        .map_err(|e| self.db_error(e))?;
        let (documents, rows): (i64, i64) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE document IS NOT NULL), count(*)
               FROM search_documents WHERE index_name = $1 AND generation = $2",
        )
        .bind(self.name)
        .bind(build.generation)
        .fetch_one(&mut *tx)
        .await
        .map_err(store_error)?;
        if (rows as u64) < expected {
            return Err(JobError::Permanent(format!(
                "index `{}`: the build holds {rows} documents and deletions, fewer than the {expected} good rows of the source (does the source query return an id twice?); the live index is kept",
                self.name
            )));
        }
        sqlx::query(
            "UPDATE search_indexes
                SET live_generation = $2, building_generation = NULL,
                    text_search_config = building_text_search_config,
                    building_text_search_config = NULL,
                    filterable = $3, backend = 'postgres', rebuilt_at = now()
              WHERE name = $1",
        )
        .bind(self.name)
        .bind(build.generation)
        .bind(&self.config.filterable)
        .execute(&mut *tx)
        .await
        .map_err(store_error)?;
        tx.commit().await.map_err(store_error)?;
        // After the swap: no search reads the old generation any more.
        let mut conn = self.pg.acquire().await.map_err(store_error)?;
        if let Err(e) = delete_generation(&mut conn, self.name, live).await {
            tracing::warn!(index = self.name, generation = live, error = %e,
                "could not remove the old index; the next rebuild does not see it, delete its rows by hand");
        }
        Ok(Swapped {
            documents: documents as u64,
        })
    }

    async fn abandon_rebuild(&self, build: Build) -> Result<(), JobError> {
        let mut tx = self.pg.begin().await.map_err(store_error)?;
        sqlx::query(
            "UPDATE search_indexes SET building_generation = NULL, building_text_search_config = NULL
              WHERE name = $1 AND building_generation = $2",
        )
        .bind(self.name)
        .bind(build.generation)
        .execute(&mut *tx)
        .await
        .map_err(store_error)?;
        delete_generation(&mut tx, self.name, build.generation).await?;
        tx.commit().await.map_err(store_error)
    }
}

async fn delete_generation(
    conn: &mut PgConnection,
    name: &str,
    generation: i64,
) -> Result<(), JobError> {
    sqlx::query("DELETE FROM search_documents WHERE index_name = $1 AND generation = $2")
        .bind(name)
        .bind(generation)
        .execute(conn)
        .await
        .map_err(store_error)?;
    Ok(())
}

/// One hit of `quizworker_search`.
#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct Hit {
    pub id: String,
    pub rank: f32,
    pub snippet: String,
    pub document: Value,
}

/// Runs `quizworker_search`, as the web tier would.
pub async fn search(
    pg: &PgPool,
    index: &str,
    query: &str,
    filters: &Value,
    limit: i32,
    offset: i32,
) -> sqlx::Result<Vec<Hit>> {
    sqlx::query_as("SELECT id, rank, snippet, document FROM quizworker_search($1, $2, $3, $4, $5)")
        .bind(index)
        .bind(query)
        .bind(filters)
        .bind(limit)
        .bind(offset)
        .fetch_all(pg)
        .await
}
