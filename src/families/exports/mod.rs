//! The exports family (`export.*` jobs, queue `exports`): the `handler`, what it reads from
//! the scoring tables (`store`), the export directory it writes to (`files`) and the PDF
//! layout (`pdf`).

pub mod files;
mod handler;
pub mod pdf;
pub mod store;

pub use handler::{report_pdf, results_csv, test_report_pdf};
