//! The group-commit loop that the journal writer and the score writer share: items sent by many
//! jobs are taken off a channel in batches and written by a bounded number of concurrent
//! writes. Under load the next batch fills while earlier ones are being written, so no timer is
//! needed to gather items, and a lone item is written at once.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;

/// Runs until every sender of `rx` is dropped and the last batch is written. `write` gets each
/// batch (at most `max_batch` items); at most `concurrent` of them are written at once.
pub async fn run<T, W, F>(mut rx: mpsc::Receiver<T>, max_batch: usize, concurrent: usize, write: W)
where
    T: Send + 'static,
    W: Fn(Vec<T>) -> F,
    F: Future<Output = ()> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(concurrent));
    let mut writes = JoinSet::new();
    let mut batch = Vec::with_capacity(max_batch);
    while rx.recv_many(&mut batch, max_batch).await > 0 {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            break;
        };
        // Items that arrived while we waited for a slot join this batch.
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(item) => batch.push(item),
                Err(_) => break,
            }
        }
        let written = write(std::mem::replace(&mut batch, Vec::with_capacity(max_batch)));
        writes.spawn(async move {
            written.await;
            drop(slot);
        });
        while writes.try_join_next().is_some() {}
    }
    while writes.join_next().await.is_some() {}
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// Items sent while a write is under way are gathered into the next batch, no batch is
    /// larger than asked, and every item is written once, in order within its batch.
    #[tokio::test]
    async fn items_sent_during_a_write_form_the_next_batch() {
        let (tx, rx) = mpsc::channel(100);
        let batches = Arc::new(Mutex::new(Vec::<Vec<u32>>::new()));
        let (gate_tx, gate_rx) = tokio::sync::watch::channel(false);
        let seen = batches.clone();
        let writer = tokio::spawn(run(rx, 4, 1, move |batch: Vec<u32>| {
            let (seen, mut gate) = (seen.clone(), gate_rx.clone());
            async move {
                // The first batch waits until the rest has been sent.
                if batch.first() == Some(&0) {
                    let _ = gate.wait_for(|open| *open).await;
                }
                seen.lock().unwrap().push(batch);
            }
        }));
        tx.send(0).await.unwrap();
        tokio::task::yield_now().await;
        for i in 1..10 {
            tx.send(i).await.unwrap();
        }
        gate_tx.send(true).unwrap();
        drop(tx);
        writer.await.unwrap();
        let batches = batches.lock().unwrap().clone();
        assert!(batches.iter().all(|b| b.len() <= 4), "{batches:?}");
        assert_eq!(batches.concat(), (0..10).collect::<Vec<_>>(), "{batches:?}");
        assert!(batches.len() <= 4, "items were gathered: {batches:?}");
    }
}
