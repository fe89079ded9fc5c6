//! The exports family (`export.*` jobs, queue `exports`): the `handler`, what it reads from
//! the scoring tables (`store`), the export directory it writes to (`files`), the XLSX sheet
//! (`xlsx`), and the PDFs: page layout (`pdf`), shaped text (`typeset`), the report card
//! (`card`, with its `logo`), the test report (`test_report`) and what they are drawn with
//! (`assets`).

pub mod assets;
pub mod card;
pub mod files;
mod handler;
mod logo;
pub mod pdf;
pub mod store;
pub mod test_report;
pub mod typeset;
mod xlsx;

pub use handler::{report_pdf, results_csv, test_report_pdf};
