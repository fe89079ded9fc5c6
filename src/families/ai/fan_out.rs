//! The loop `ai.hints` and `ai.evaluate` share: the items of a job under way together, progress
//! after each, and the attempt ended by the first error.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::StreamExt;

use crate::families::{JobContext, JobError};

/// How a handler names its items in the progress and in the error that ends an attempt.
pub(super) struct Wording {
    /// Follows "{settled} of {total}", e.g. "questions done".
    pub settled: &'static str,
    /// Why a retry does not redo the settled items, e.g. "the retry reuses their grades".
    pub retry: &'static str,
}

/// Runs `one(i)` for each of the `total` items, twice `concurrency` at a time, and returns
/// their outcomes in order. `one` holds one of the job's `concurrency` request slots only while
/// its request is out (`handler::request`): the other items under way are storing a reply or
/// waiting for a slot, so a slot's next request goes out as soon as its reply is in, not once
/// that reply is stored. `one` returns `Ok(None)` for an item not begun because the attempt is
/// ending; its first error sets `stop`, so that no further item begins, and ends the attempt
/// once those in flight have settled, a permanent error winning over a transient one.
///
/// `one` takes an index rather than the item: a closure over a reference to the item makes a
/// future the executor cannot prove `Send` for every lifetime.
pub(super) async fn fan_out<T, F, Fut>(
    ctx: &JobContext,
    total: usize,
    concurrency: usize,
    stop: &AtomicBool,
    wording: Wording,
    one: F,
) -> Result<Vec<T>, JobError>
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = Result<Option<T>, JobError>>,
{
    let Wording {
        settled: done,
        retry,
    } = wording;
    let mut outcomes: Vec<Option<T>> = (0..total).map(|_| None).collect();
    let mut settled = 0;
    let mut halted: Option<JobError> = None;
    {
        let one = &one;
        let mut stream = futures::stream::iter(0..total)
            .map(|i| async move { (i, one(i).await) })
            .buffer_unordered(concurrency.saturating_mul(2));
        while let Some((i, outcome)) = stream.next().await {
            match outcome {
                Ok(Some(outcome)) => {
                    outcomes[i] = Some(outcome);
                    settled += 1;
                    ctx.progress(
                        (settled * 100 / total).min(99) as u8,
                        format!("{settled} of {total} {done}"),
                    );
                }
                // Not begun: the attempt is ending.
                Ok(None) => {}
                Err(error) => {
                    stop.store(true, Ordering::Relaxed);
                    // A permanent error (a wrong key) wins over a transient one.
                    if !matches!(halted, Some(JobError::Permanent(_))) {
                        halted = Some(error);
                    }
                }
            }
        }
    }
    match halted {
        Some(JobError::Transient(reason)) => Err(JobError::Transient(format!(
            "{reason} ({settled} of {total} {done}; {retry})"
        ))),
        Some(permanent) => Err(permanent),
        None if settled < total => Err(JobError::Transient(format!(
            "the process is shutting down ({settled} of {total} {done}; {retry})"
        ))),
        // Every item settled, so every outcome is there.
        None => Ok(outcomes.into_iter().flatten().collect()),
    }
}
