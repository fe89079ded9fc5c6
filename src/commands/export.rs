//! `export ...`: runs an export job's handler from the command line, against Postgres only, and
//! prints what the job would record.

use std::sync::Arc;

use quizworker_jobs::exports::{
    CsvOptions, ExportReportPdf, ExportResultsCsv, ExportTestReportPdf, SheetFormat,
};

use super::{connect_postgres, output};
use crate::cli::ExportCommand;
use crate::config::Config;
use crate::families::exports;
use crate::families::exports::assets::PdfAssets;
use crate::families::exports::files::ExportDir;

pub async fn execute(config: &Config, command: ExportCommand) -> anyhow::Result<()> {
    let pg = connect_postgres(config).await?;
    let quiet = |_percent: u8, _message: String| {};
    let result = match command {
        ExportCommand::ResultsCsv {
            test_id,
            out,
            delimiter,
            bom,
            decimals,
            exact_fractions,
            xlsx,
        } => {
            let dir = ExportDir::new(out.unwrap_or_else(|| config.exports.directory.clone()));
            let job = ExportResultsCsv {
                test_id,
                options: CsvOptions {
                    format: if xlsx {
                        SheetFormat::Xlsx
                    } else {
                        SheetFormat::Csv
                    },
                    delimiter,
                    bom,
                    decimals,
                    exact_fractions,
                },
            };
            exports::results_csv(job, &pg, &dir, &quiet).await?
        }
        ExportCommand::ReportPdf { attempt_id, out } => {
            let dir = ExportDir::new(out.unwrap_or_else(|| config.exports.directory.clone()));
            let assets = Arc::new(PdfAssets::new(&config.exports));
            exports::report_pdf(ExportReportPdf { attempt_id }, &pg, &dir, &assets).await?
        }
        ExportCommand::TestReportPdf { test_id, out } => {
            let dir = ExportDir::new(out.unwrap_or_else(|| config.exports.directory.clone()));
            let assets = Arc::new(PdfAssets::new(&config.exports));
            exports::test_report_pdf(ExportTestReportPdf { test_id }, &pg, &dir, &assets).await?
        }
    };
    output::print_json(&result)
}
