//! The score writer: one task that stores the results of concurrent `score.attempt` jobs in
//! batches, as the journal writer does for job states. Stored one transaction per job, a result
//! cost Postgres more than everything else the job did; batched, the statements and the commit
//! are shared by every job that finished scoring meanwhile. A job waits for its own result to
//! be committed before it completes. Each batch also checks which key version of its tests is
//! the newest (`store::save_current_scores`), so a job learns that a test's key was
//! revised without asking Postgres itself.

use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};

use super::store::{self, Saved, ScoreRow, StoreError};

/// Results written in one transaction at most.
const MAX_BATCH: usize = 256;
/// Batches written at once: while one waits for its commit the next fills.
const CONCURRENT_BATCHES: usize = 2;

type Reply = oneshot::Sender<Result<Saved, StoreError>>;

/// A handle to the writer; clone it freely. The task ends when the last handle is dropped.
#[derive(Clone)]
pub struct ScoreWriter {
    tx: mpsc::Sender<(ScoreRow, Reply)>,
}

impl ScoreWriter {
    pub fn spawn(pg: PgPool) -> ScoreWriter {
        let (tx, rx) = mpsc::channel(MAX_BATCH * 2);
        tokio::spawn(run(pg, rx));
        ScoreWriter { tx }
    }

    /// Stores one scored attempt, unless its test has a newer key version; returns once it is
    /// committed. A Postgres error comes back to the job (which retries with backoff): the
    /// writer itself never waits out an outage.
    pub async fn save(&self, row: ScoreRow) -> Result<Saved, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send((row, reply))
            .await
            .map_err(|_| StoreError::WriterStopped)?;
        rx.await.map_err(|_| StoreError::WriterStopped)?
    }
}

async fn run(pg: PgPool, rx: mpsc::Receiver<(ScoreRow, Reply)>) {
    crate::runtime::batcher::run(rx, MAX_BATCH, CONCURRENT_BATCHES, |items| {
        let pg = pg.clone();
        async move { write(&pg, items).await }
    })
    .await;
}

/// Writes a batch and answers each job. When Postgres refuses the batch itself (not the
/// connection), each row is written alone, so one bad row fails only its own job.
async fn write(pg: &PgPool, items: Vec<(ScoreRow, Reply)>) {
    let (rows, replies): (Vec<ScoreRow>, Vec<Reply>) = items.into_iter().unzip();
    match store::save_current_scores(pg, &rows).await {
        Ok(saved) => {
            for (reply, saved) in replies.into_iter().zip(saved) {
                let _ = reply.send(Ok(saved));
            }
        }
        Err(StoreError::Database(sqlx::Error::Database(e))) if rows.len() > 1 => {
            tracing::warn!(error = %e, rows = rows.len(), "score batch refused; writing its rows one by one");
            for (row, reply) in rows.into_iter().zip(replies) {
                let outcome = store::save_current_scores(pg, std::slice::from_ref(&row))
                    .await
                    .map(|saved| saved.into_iter().next().expect("one answer per row"));
                let _ = reply.send(outcome);
            }
        }
        Err(e) => {
            let message = e.to_string();
            for reply in replies {
                let _ = reply.send(Err(StoreError::BatchFailed(message.clone())));
            }
        }
    }
}
