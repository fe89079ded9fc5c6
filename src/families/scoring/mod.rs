//! The scoring family (`score.*` jobs, queue `scoring`): the `handler`, the Postgres `store`
//! of tests, attempts and results, the `prepared_tests` kept between jobs, and the `writer`
//! that stores results of concurrent jobs in batches.

mod handler;
pub mod prepared_tests;
pub mod store;
pub mod writer;

pub(super) use handler::{finalize_test, rescore_test, score_attempt};
