//! Handlers of the `export.*` jobs: read the scoring tables (`store`), build the file with
//! the pure parts of `quizworker_jobs`, write it into the export directory (`files`).
//! The CLI's `quizworker export ...` calls the same functions without the daemon.

use std::io::{self, Write};
use std::sync::Arc;

use futures::TryStreamExt;
use quizworker_jobs::exports::results_sheet::{ResultsSheet, SheetRow};
use quizworker_jobs::exports::{
    ExportReportPdf, ExportResultsCsv, ExportTestReportPdf, SheetFormat,
};
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio::sync::mpsc;

use super::assets::PdfAssets;
use super::card::{self, ReportCard};
use super::files::{ExportDir, WrittenFile};
use super::pdf::Pdf;
use super::store as export_store;
use super::test_report;
use super::xlsx;
use crate::families::JobError;
use crate::families::scoring::store as scoring_store;

/// Where a handler reports progress: the job's journal entry, or nothing on the command line.
pub type Progress<'a> = &'a (dyn Fn(u8, String) + Send + Sync);

/// Rows handed from the database stream to the file writer at a time.
const BATCH: usize = 512;
/// Batches in flight between the two: this bounds the memory of an export.
const BATCHES_IN_FLIGHT: usize = 4;

const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

pub(super) enum Batch {
    Rows(Vec<SheetRow>),
    /// Every row was read: the file may be committed.
    End,
}

pub async fn results_csv(
    job: ExportResultsCsv,
    pg: &PgPool,
    exports: &ExportDir,
    progress: Progress<'_>,
) -> Result<Value, JobError> {
    let test = scoring_store::load_test(pg, &job.test_id, None)
        .await?
        .ok_or_else(|| unknown_test(&job.test_id))?;
    let sections = test.sections.iter().map(|s| s.id.clone()).collect();
    let sheet = ResultsSheet::new(job.options, sections)
        .map_err(|e| JobError::Permanent(format!("export.results_csv: {e}")))?;
    let total = export_store::count_results(pg, &job.test_id).await?;
    let format = sheet.options().format;
    if format == SheetFormat::Xlsx && total > xlsx::MAX_ROWS {
        return Err(JobError::Permanent(format!(
            "export.results_csv: test `{}` has {total} results; an xlsx sheet holds at most {} \
             (export it as CSV)",
            job.test_id,
            xlsx::MAX_ROWS
        )));
    }
    let (extension, format_name) = match format {
        SheetFormat::Csv => ("csv", "csv"),
        SheetFormat::Xlsx => ("xlsx", "xlsx"),
    };
    let file = exports
        .create("results", &job.test_id, extension)
        .map_err(|e| file_error(exports, e))?;

    let (tx, rx) = mpsc::channel(BATCHES_IN_FLIGHT);
    let writer = tokio::task::spawn_blocking(move || match format {
        SheetFormat::Csv => write_sheet(file, &sheet, rx),
        SheetFormat::Xlsx => xlsx::write_workbook(file, &sheet, rx),
    });
    let read = async {
        let mut rows = std::pin::pin!(export_store::sheet_rows(pg, &job.test_id).try_chunks(BATCH));
        let mut done = 0i64;
        while let Some(batch) = rows.try_next().await.map_err(|e| e.1)? {
            done += batch.len() as i64;
            if tx.send(Batch::Rows(batch)).await.is_err() {
                // The writer stopped on an error, which it returns below.
                return Ok(());
            }
            progress(
                percent(done, total).min(99),
                format!("wrote {done} of {total} rows"),
            );
        }
        let _ = tx.send(Batch::End).await;
        Ok::<(), scoring_store::StoreError>(())
    };
    let read = read.await;
    drop(tx);
    let written = writer
        .await
        .map_err(|e| JobError::Transient(format!("the sheet writer panicked: {e}")));
    // A read error leaves the writer without `End`: it removed its temporary file.
    read?;
    let (file, rows) = written?.map_err(|e| file_error(exports, e))?;
    progress(100, format!("wrote {rows} rows"));
    Ok(json!({
        "test_id": job.test_id,
        "format": format_name,
        "path": file.path,
        "file_name": file.file_name,
        "bytes": file.bytes,
        "rows": rows,
        "sha256": file.sha256,
    }))
}

pub async fn report_pdf(
    job: ExportReportPdf,
    pg: &PgPool,
    exports: &ExportDir,
    assets: &Arc<PdfAssets>,
) -> Result<Value, JobError> {
    let data = export_store::report_card(pg, &job.attempt_id)
        .await?
        .ok_or_else(|| {
            JobError::Permanent(format!(
                "unknown attempt `{}`: it has no stored result (score.attempt stores it)",
                job.attempt_id
            ))
        })?;
    let test_id = data.result.test_id.to_string();
    let (file, pages, warnings) =
        write_pdf(exports, assets, "report", &job.attempt_id, move |assets| {
            let card = ReportCard {
                result: &data.result,
                test: data.test.as_ref(),
                candidate_id: data.candidate_id.as_deref(),
                candidate_name: data.candidate_name.as_deref(),
                rank: data.rank,
                percentile: data.percentile.as_deref(),
                submitted_at: data.submitted_at,
            };
            let (style, logo_problem) = assets.card_style();
            let mut pdf = card::report_card(&card, &style, assets.fonts());
            pdf.warnings.extend(logo_problem);
            pdf
        })
        .await?;
    Ok(json!({
        "attempt_id": job.attempt_id,
        "test_id": test_id,
        "format": "pdf",
        "path": file.path,
        "file_name": file.file_name,
        "bytes": file.bytes,
        "pages": pages,
        "sha256": file.sha256,
        "warnings": warnings,
    }))
}

pub async fn test_report_pdf(
    job: ExportTestReportPdf,
    pg: &PgPool,
    exports: &ExportDir,
    assets: &Arc<PdfAssets>,
) -> Result<Value, JobError> {
    let (stats, test) = export_store::test_report(pg, &job.test_id)
        .await?
        .ok_or_else(|| {
            JobError::Permanent(format!(
                "test `{}` has no report: unknown test, or score.finalize_test has not run for it",
                job.test_id
            ))
        })?;
    let (file, pages, warnings) = write_pdf(
        exports,
        assets,
        "test-report",
        &job.test_id,
        move |assets| test_report::test_report(&stats, test.as_ref(), assets.fonts()),
    )
    .await?;
    Ok(json!({
        "test_id": job.test_id,
        "format": "pdf",
        "path": file.path,
        "file_name": file.file_name,
        "bytes": file.bytes,
        "pages": pages,
        "sha256": file.sha256,
        "warnings": warnings,
    }))
}

/// Renders a PDF and writes it atomically into the export directory as `{kind}-{label}-….pdf`.
/// Layout, font lookups and compression are CPU work: off the async threads.
async fn write_pdf(
    exports: &ExportDir,
    assets: &Arc<PdfAssets>,
    kind: &'static str,
    label: &str,
    render: impl FnOnce(&PdfAssets) -> Pdf + Send + 'static,
) -> Result<(WrittenFile, usize, Vec<String>), JobError> {
    let (assets, dir, label) = (assets.clone(), exports.clone(), label.to_owned());
    let written = tokio::task::spawn_blocking(move || -> io::Result<_> {
        let pdf = render(&assets);
        let mut file = dir.create(kind, &label, "pdf")?;
        file.write_all(&pdf.bytes)?;
        Ok((file.commit()?, pdf.pages, pdf.warnings))
    })
    .await
    .map_err(|e| JobError::Transient(format!("the PDF writer panicked: {e}")))?;
    written.map_err(|e| file_error(exports, e))
}

/// The blocking half of a CSV export: RFC 4180 records (quoted only where needed, CRLF line
/// ends) into the atomic file, committed once the reader says every row came.
fn write_sheet(
    mut file: crate::families::exports::files::AtomicFile,
    sheet: &ResultsSheet,
    mut rx: mpsc::Receiver<Batch>,
) -> io::Result<(WrittenFile, u64)> {
    let options = sheet.options();
    if options.bom {
        file.write_all(UTF8_BOM)?;
    }
    // `validate` allows ASCII delimiters only.
    let mut csv = csv::WriterBuilder::new()
        .delimiter(options.delimiter as u8)
        .terminator(csv::Terminator::CRLF)
        .quote_style(csv::QuoteStyle::Necessary)
        .from_writer(file);
    csv.write_record(sheet.header())?;
    let mut record = Vec::new();
    let mut rows = 0u64;
    loop {
        match rx.blocking_recv() {
            Some(Batch::Rows(batch)) => {
                for row in &batch {
                    sheet.record(row, &mut record);
                    csv.write_record(&record)?;
                }
                rows += batch.len() as u64;
            }
            Some(Batch::End) => break,
            None => {
                return Err(io::Error::other(
                    "the export stopped before its last row; nothing was written",
                ));
            }
        }
    }
    let file = csv.into_inner().map_err(|e| e.into_error())?;
    Ok((file.commit()?, rows))
}

fn unknown_test(test_id: &str) -> JobError {
    JobError::Permanent(format!(
        "unknown test `{test_id}`: no test of this id is stored (score.attempt stores it)"
    ))
}

fn file_error(exports: &ExportDir, e: io::Error) -> JobError {
    JobError::Transient(format!(
        "could not write into the export directory {}: {e}",
        exports.path().display()
    ))
}

fn percent(done: i64, total: i64) -> u8 {
    if total <= 0 {
        100
    } else {
        (done.min(total) * 100 / total) as u8
    }
}
