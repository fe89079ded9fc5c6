//! The exports family: the payloads of the `export.*` jobs, and the pure part of a result
//! sheet (`results_sheet`). The CSV and PDF files themselves are the daemon's.

mod payloads;
pub mod results_sheet;

pub use payloads::{
    CsvOptions, DELIMITERS, ExportReportPdf, ExportResultsCsv, ExportTestReportPdf, MAX_DECIMALS,
};
