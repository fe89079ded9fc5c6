//! The platform's database as a rebuild reads it: one connection of its own, read-only twice
//! over (`default_transaction_read_only` for the session, and a `READ ONLY` transaction), so a
//! source query cannot change the platform's data whatever it calls. The query's rows come
//! through a cursor, `rebuild_batch` at a time, each as a JSON object of its columns, all from
//! one snapshot: the count taken first is the count read.

use std::str::FromStr;

use serde_json::Value;
use sqlx::postgres::PgConnectOptions;
use sqlx::{AssertSqlSafe, ConnectOptions, Connection, PgConnection, Row};

use crate::families::JobError;
use crate::ops::redact::redacted;

pub struct Source {
    conn: PgConnection,
    batch: usize,
    /// Rows the query returns in the snapshot.
    pub count: u64,
}

impl Source {
    /// Connects with the URL in the environment variable `url_env`, opens a read-only snapshot
    /// and counts the rows of `query`.
    pub async fn open(url_env: &str, query: &str, batch: usize) -> Result<Source, JobError> {
        let url = std::env::var(url_env).map_err(|_| {
            JobError::Permanent(format!(
                "a rebuild reads the platform's database from the URL in {url_env} \
                 (search.source.url_env), which is not set"
            ))
        })?;
        let options = PgConnectOptions::from_str(&url)
            .map_err(|e| {
                JobError::Permanent(format!(
                    "{url_env} is not a Postgres URL ({}): {e}",
                    redacted(&url)
                ))
            })?
            .options([("default_transaction_read_only", "on")])
            .application_name("quizworker index.rebuild");
        let mut conn = options.connect().await.map_err(|e| {
            JobError::Transient(format!(
                "could not connect to the platform's database at {}: {e}",
                redacted(&url)
            ))
        })?;
        sqlx::raw_sql("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .execute(&mut conn)
            .await
            .map_err(source_error)?;
        // The query is the operator's (search.indexes.NAME.source), not a producer's, and runs
        // on a connection that cannot write.
        let count: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT count(*) FROM ({query}) AS source"
        )))
        .fetch_one(&mut conn)
        .await
        .map_err(source_error)?;
        sqlx::raw_sql(AssertSqlSafe(format!(
            "DECLARE quizworker_source NO SCROLL CURSOR FOR SELECT to_jsonb(source) FROM ({query}) AS source"
        )))
        .execute(&mut conn)
        .await
        .map_err(source_error)?;
        Ok(Source {
            conn,
            batch,
            count: count.max(0) as u64,
        })
    }

    /// The next rows, each a JSON object of its columns; empty at the end.
    pub async fn next_batch(&mut self) -> Result<Vec<Value>, JobError> {
        let rows = sqlx::raw_sql(AssertSqlSafe(format!(
            "FETCH FORWARD {} FROM quizworker_source",
            self.batch
        )))
        .fetch_all(&mut self.conn)
        .await
        .map_err(source_error)?;
        rows.iter()
            .map(|row| row.try_get::<Value, _>(0).map_err(source_error))
            .collect()
    }

    /// Ends the snapshot and the connection.
    pub async fn close(mut self) {
        let _ = sqlx::raw_sql("COMMIT").execute(&mut self.conn).await;
        let _ = self.conn.close().await;
    }
}

/// A query the database refuses (a syntax error, a missing table, a write in a read-only
/// transaction) is the config's to mend; a connection lost may come back.
fn source_error(error: sqlx::Error) -> JobError {
    match &error {
        sqlx::Error::Database(db) => JobError::Permanent(format!(
            "the source query failed on the platform's database: {} (search.indexes.*.source)",
            db.message()
        )),
        _ => JobError::Transient(format!("reading the platform's database failed: {error}")),
    }
}
