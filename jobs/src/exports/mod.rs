//! The exports family: the payloads of the `export.*` jobs, the pure part of a result sheet
//! (`results_sheet`), how a report card words its numbers and times (`card_text`), and how a
//! line of text splits into runs of one direction, script and font (`text_runs`). The CSV, XLSX
//! and PDF files themselves are the daemon's.

pub mod card_text;
mod payloads;
pub mod results_sheet;
pub mod text_runs;

pub use payloads::{
    CsvOptions, DELIMITERS, ExportReportPdf, ExportResultsCsv, ExportTestReportPdf, MAX_DECIMALS,
    SheetFormat,
};
