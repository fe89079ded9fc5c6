//! The payloads of the `export.*` jobs. They read what the `score.*` jobs stored and write
//! files into the daemon's export directory; the pure part of building a result sheet is in
//! [`crate::exports::results_sheet`].

use serde::{Deserialize, Serialize};

use crate::payload::{JobPayload, Queue};

/// Writes a result sheet of a test, CSV or XLSX (`options.format`): one row per scored attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportResultsCsv {
    /// A test stored by `score.attempt` or `score.rescore_test`.
    pub test_id: String,
    #[serde(default)]
    pub options: CsvOptions,
}

impl JobPayload for ExportResultsCsv {
    const KIND: &'static str = "export.results_csv";
    const QUEUE: Queue = Queue::Exports;
}

/// Writes an A4 PDF report card of one scored attempt: the test and the candidate, total, rank
/// and percentile, a table per section, a bar chart of the sections and every question.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportReportPdf {
    pub attempt_id: String,
}

impl JobPayload for ExportReportPdf {
    const KIND: &'static str = "export.report_pdf";
    const QUEUE: Queue = Queue::Exports;
}

/// Writes an A4 PDF analytics report of a finalized test (`score.finalize_test`): the score
/// distribution as a histogram, section averages, the hardest and easiest questions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportTestReportPdf {
    pub test_id: String,
}

impl JobPayload for ExportTestReportPdf {
    const KIND: &'static str = "export.test_report_pdf";
    const QUEUE: Queue = Queue::Exports;
}

/// How a result sheet is written. Every field may be left out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CsvOptions {
    /// `csv` (the default) or `xlsx`: an Excel workbook with typed cells, which opens without
    /// an import dialog. `delimiter` and `bom` are for CSV only.
    pub format: SheetFormat,
    /// The field separator: one of `,` `;` tab `|`. Spreadsheets in locales whose decimal
    /// separator is a comma expect `;`.
    pub delimiter: char,
    /// Start the file with a UTF-8 byte-order mark, which Excel needs to read UTF-8 names.
    pub bom: bool,
    /// Decimals of the marks (rounded half away from zero), 0 to 10.
    pub decimals: u32,
    /// Add a column with the exact marks (`"-1/3"`, `"353/6"`) after each rounded one.
    pub exact_fractions: bool,
}

/// The file a result sheet is written as.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SheetFormat {
    /// RFC 4180 text.
    #[default]
    Csv,
    /// An Office Open XML workbook: numbers as numbers, text as text, the header frozen.
    Xlsx,
}

/// The delimiters a sheet may use: none of them can start a number or a formula.
pub const DELIMITERS: [char; 4] = [',', ';', '\t', '|'];
/// The most decimals a sheet may show.
pub const MAX_DECIMALS: u32 = 10;

impl Default for CsvOptions {
    fn default() -> Self {
        CsvOptions {
            format: SheetFormat::Csv,
            delimiter: ',',
            bom: false,
            decimals: 2,
            exact_fractions: false,
        }
    }
}

impl CsvOptions {
    /// Every problem of the options, or `Ok`.
    pub fn validate(&self) -> Result<(), String> {
        let mut problems = Vec::new();
        if !DELIMITERS.contains(&self.delimiter) {
            problems.push(format!(
                "options.delimiter {:?} is not one of \",\", \";\", \"\\t\", \"|\"",
                self.delimiter
            ));
        }
        if self.format == SheetFormat::Xlsx && (self.delimiter != ',' || self.bom) {
            problems.push(
                "options.delimiter and options.bom are for CSV; an xlsx sheet has neither".into(),
            );
        }
        if self.decimals > MAX_DECIMALS {
            problems.push(format!(
                "options.decimals {} is more than {MAX_DECIMALS}",
                self.decimals
            ));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_default_and_validate() {
        let job: ExportResultsCsv = serde_json::from_str(r#"{"test_id": "t"}"#).unwrap();
        assert_eq!(job.options, CsvOptions::default());
        let job: ExportResultsCsv = serde_json::from_str(
            r#"{"test_id": "t", "options": {"delimiter": ";", "bom": true, "exact_fractions": true}}"#,
        )
        .unwrap();
        assert_eq!(job.options.delimiter, ';');
        assert_eq!(job.options.decimals, 2);
        job.options.validate().unwrap();
        let bad = CsvOptions {
            delimiter: '=',
            decimals: 11,
            ..CsvOptions::default()
        };
        let err = bad.validate().unwrap_err();
        assert!(
            err.contains("delimiter") && err.contains("decimals"),
            "{err}"
        );
        assert!(
            serde_json::from_str::<ExportResultsCsv>(
                r#"{"test_id": "t", "options": {"sep": ","}}"#
            )
            .is_err()
        );
        let xlsx: ExportResultsCsv =
            serde_json::from_str(r#"{"test_id": "t", "options": {"format": "xlsx", "bom": true}}"#)
                .unwrap();
        assert_eq!(xlsx.options.format, SheetFormat::Xlsx);
        assert!(xlsx.options.validate().unwrap_err().contains("bom"));
    }
}
