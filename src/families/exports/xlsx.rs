//! A result sheet as an Excel workbook (rust_xlsxwriter): numbers in number cells, names,
//! ids and exact fractions in text cells (so `4/3` never becomes a date), the header row
//! frozen and the columns sized, so that it opens without an import dialog.

use std::io::{self, Write};

use quizworker_jobs::exports::results_sheet::{Cell, ResultsSheet};
use rust_xlsxwriter::{Format, Workbook, XlsxError};
use tokio::sync::mpsc;

use super::files::{AtomicFile, WrittenFile};
use super::handler::Batch;

/// The most result rows a sheet holds: Excel's 1,048,576 rows less the header.
pub const MAX_ROWS: i64 = 1_048_575;

/// The blocking half of an xlsx export: rows into the workbook as they come, the workbook
/// into the atomic file, committed once the reader says every row came.
pub(super) fn write_workbook(
    mut file: AtomicFile,
    sheet: &ResultsSheet,
    mut rx: mpsc::Receiver<Batch>,
) -> io::Result<(WrittenFile, u64)> {
    let mut workbook = Workbook::new();
    // Rows go to a temporary file as they are written, not into memory.
    let worksheet = workbook
        .add_worksheet_with_constant_memory()
        .map_err(xlsx_error)?;
    let header = sheet.header();
    for (col, title) in header.iter().enumerate() {
        let col = column(col)?;
        worksheet
            .set_column_width(col, width_of(title))
            .map_err(xlsx_error)?;
    }
    let bold = Format::new().set_bold();
    for (col, title) in header.iter().enumerate() {
        worksheet
            .write_string_with_format(0, column(col)?, title, &bold)
            .map_err(xlsx_error)?;
    }
    worksheet.set_freeze_panes(1, 0).map_err(xlsx_error)?;
    let mut cells = Vec::new();
    let mut rows = 0u64;
    loop {
        match rx.blocking_recv() {
            Some(Batch::Rows(batch)) => {
                for row in &batch {
                    rows += 1;
                    let line = u32::try_from(rows).map_err(|_| too_many())?;
                    sheet.cells(row, &mut cells);
                    for (col, cell) in cells.iter().enumerate() {
                        let col = column(col)?;
                        let written = match cell {
                            Cell::Empty => continue,
                            Cell::Number(number) => match number.parse::<f64>() {
                                Ok(value) => worksheet.write_number(line, col, value),
                                Err(_) => worksheet.write_string(line, col, number),
                            },
                            Cell::Text(text) | Cell::Fraction(text) => {
                                worksheet.write_string(line, col, text)
                            }
                        };
                        written.map_err(xlsx_error)?;
                    }
                }
            }
            Some(Batch::End) => break,
            None => {
                return Err(io::Error::other(
                    "the export stopped before its last row; nothing was written",
                ));
            }
        }
    }
    let bytes = workbook.save_to_buffer().map_err(xlsx_error)?;
    file.write_all(&bytes)?;
    Ok((file.commit()?, rows))
}

/// A column's width in characters: its title's, and room for a date or a name.
fn width_of(title: &str) -> f64 {
    let wide = matches!(title, "candidate" | "submitted_at" | "attempt_id");
    let chars = title.chars().count() as f64 + 2.0;
    if wide {
        chars.max(24.0)
    } else {
        chars.max(10.0)
    }
}

fn column(index: usize) -> io::Result<u16> {
    u16::try_from(index)
        .map_err(|_| io::Error::other("the sheet has more columns than xlsx allows"))
}

fn too_many() -> io::Error {
    io::Error::other(format!("an xlsx sheet holds at most {MAX_ROWS} rows"))
}

fn xlsx_error(e: XlsxError) -> io::Error {
    io::Error::other(format!("xlsx: {e}"))
}
