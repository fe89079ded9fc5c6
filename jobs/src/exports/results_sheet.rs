//! A test's result sheet, cell by cell: the header and one record per attempt, with text that a
//! spreadsheet could take for a formula neutralised. The CSV quoting (RFC 4180) and the file are
//! the daemon's (`src/families/exports/`); nothing here does I/O.

use std::borrow::Cow;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use crate::exports::CsvOptions;
use crate::scoring::{AttemptResult, Counts, Marks};

/// The part of a result that a sheet shows, stored beside the whole result
/// (`score_results.sheet`): an export reads a few hundred bytes per attempt instead of the
/// whole result (19 KB for a 90-question test). It reads from a whole result as well.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SheetResult {
    pub marks: Marks,
    pub max_marks: Marks,
    pub counts: Counts,
    pub sections: Vec<SheetSection>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SheetSection {
    pub id: String,
    pub marks: Marks,
    pub counts: Counts,
}

impl From<&AttemptResult> for SheetResult {
    fn from(result: &AttemptResult) -> Self {
        SheetResult {
            marks: result.total.marks,
            max_marks: result.total.max_marks,
            counts: result.total.counts,
            sections: result
                .sections
                .iter()
                .map(|s| SheetSection {
                    id: s.id.to_string(),
                    marks: s.summary.marks,
                    counts: s.summary.counts,
                })
                .collect(),
        }
    }
}

/// One attempt as the sheet shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct SheetRow {
    pub attempt_id: String,
    pub candidate_id: Option<String>,
    /// `None` until `score.finalize_test` ran.
    pub rank: Option<i64>,
    pub percentile: Option<String>,
    pub submitted_at: Option<DateTime<Utc>>,
    pub result: SheetResult,
}

/// The columns of a test's sheet: fixed ones, then each section's marks, then counts.
#[derive(Debug, Clone)]
pub struct ResultsSheet {
    options: CsvOptions,
    sections: Vec<String>,
}

impl ResultsSheet {
    /// A sheet with a column per section, in the test's order. Checks the options.
    pub fn new(options: CsvOptions, sections: Vec<String>) -> Result<ResultsSheet, String> {
        options.validate()?;
        Ok(ResultsSheet { options, sections })
    }

    pub fn options(&self) -> &CsvOptions {
        &self.options
    }

    /// The header record.
    pub fn header(&self) -> Vec<String> {
        let exact = self.options.exact_fractions;
        let mut cells: Vec<String> = ["attempt_id", "candidate", "rank", "percentile", "marks"]
            .map(String::from)
            .into();
        if exact {
            cells.push("marks_exact".into());
        }
        cells.push("max_marks".into());
        if exact {
            cells.push("max_marks_exact".into());
        }
        for section in &self.sections {
            cells.push(neutralise(&format!("{section} marks")).into_owned());
            if exact {
                cells.push(neutralise(&format!("{section} marks_exact")).into_owned());
            }
        }
        for name in [
            "correct",
            "incorrect",
            "partial",
            "unattempted",
            "accuracy_percent",
            "submitted_at",
        ] {
            cells.push(name.into());
        }
        cells
    }

    /// The record of one attempt as CSV text, into `out` (cleared first, so that one buffer
    /// serves a whole export). Has as many cells as [`header`](Self::header).
    pub fn record(&self, row: &SheetRow, out: &mut Vec<String>) {
        out.clear();
        let mut cells = Vec::with_capacity(out.capacity());
        self.cells(row, &mut cells);
        out.extend(cells.into_iter().map(Cell::into_csv));
    }

    /// The record of one attempt as typed cells, into `out` (cleared first). Has as many cells
    /// as [`header`](Self::header).
    pub fn cells(&self, row: &SheetRow, out: &mut Vec<Cell>) {
        out.clear();
        let r = &row.result;
        out.push(Cell::Text(row.attempt_id.clone()));
        out.push(Cell::text_or_empty(row.candidate_id.as_deref()));
        out.push(
            row.rank
                .map_or(Cell::Empty, |r| Cell::Number(r.to_string())),
        );
        out.push(match row.percentile.as_deref() {
            Some(p) if is_plain_number(p) => Cell::Number(p.to_owned()),
            other => Cell::text_or_empty(other),
        });
        self.marks(r.marks, out);
        self.marks(r.max_marks, out);
        for id in &self.sections {
            match r.sections.iter().find(|s| &s.id == id) {
                Some(section) => self.marks(section.marks, out),
                // A result scored under a key version without this section.
                None => {
                    out.push(Cell::Empty);
                    if self.options.exact_fractions {
                        out.push(Cell::Empty);
                    }
                }
            }
        }
        let c = &r.counts;
        for count in [c.correct, c.incorrect, c.partial, c.unattempted] {
            out.push(Cell::Number(count.to_string()));
        }
        out.push(
            c.accuracy_percent()
                .map_or(Cell::Empty, |a| Cell::Number(a.to_string())),
        );
        out.push(row.submitted_at.map_or(Cell::Empty, |t| {
            Cell::Text(t.to_rfc3339_opts(SecondsFormat::AutoSi, true))
        }));
    }

    fn marks(&self, marks: Marks, out: &mut Vec<Cell>) {
        out.push(Cell::Number(
            marks.display(self.options.decimals).to_string(),
        ));
        if self.options.exact_fractions {
            out.push(if marks.denom() == 1 {
                Cell::Number(marks.to_string())
            } else {
                Cell::Fraction(marks.to_string())
            });
        }
    }
}

/// A cell of a sheet, by what a spreadsheet must make of it.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Empty,
    /// Text as the producer gave it (names, ids): a CSV neutralises what could be a formula.
    Text(String),
    /// A plain decimal number (`-1.25`, `40`), for the spreadsheet to add up.
    Number(String),
    /// Exact marks (`4/3`, `-1/3`): text, which spreadsheets would otherwise read as a date
    /// (`4/3` is the 4th of March or the 3rd of April) or a formula.
    Fraction(String),
}

impl Cell {
    fn text_or_empty(text: Option<&str>) -> Cell {
        text.map_or(Cell::Empty, |t| Cell::Text(t.to_owned()))
    }

    /// The cell as CSV text: text neutralised, a fraction behind an apostrophe (the mark of a
    /// text cell, as for neutralised ones) so that no spreadsheet takes it for a date.
    pub fn into_csv(self) -> String {
        match self {
            Cell::Empty => String::new(),
            Cell::Text(text) => match neutralise(&text) {
                Cow::Borrowed(_) => text,
                Cow::Owned(neutralised) => neutralised,
            },
            Cell::Number(number) => number,
            Cell::Fraction(fraction) => format!("'{fraction}"),
        }
    }
}

/// Characters that make a spreadsheet read a cell as a formula (OWASP, "CSV Injection"), or that
/// some of them strip before doing so.
const FORMULA_TRIGGERS: [char; 7] = ['=', '+', '-', '@', '\t', '\r', '\n'];

/// Text a spreadsheet will show as text: a cell starting with `=`, `+`, `-`, `@`, a tab, a
/// carriage return or a line feed gets a leading `'`, as OWASP advises, so that
/// `=HYPERLINK(...)` shows as written instead of running. Other text is returned as it is.
///
/// ```
/// use quizworker_jobs::exports::results_sheet::neutralise;
/// assert_eq!(neutralise("=1+2"), "'=1+2");
/// assert_eq!(neutralise("Asha, \"A\""), "Asha, \"A\"");
/// ```
pub fn neutralise(text: &str) -> Cow<'_, str> {
    if text.starts_with(FORMULA_TRIGGERS) {
        Cow::Owned(format!("'{text}"))
    } else {
        Cow::Borrowed(text)
    }
}

/// `-?digits(.digits)?`
fn is_plain_number(text: &str) -> bool {
    let digits = text.strip_prefix('-').unwrap_or(text);
    let (int, frac) = match digits.split_once('.') {
        Some((int, frac)) => (int, Some(frac)),
        None => (digits, None),
    };
    let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    all_digits(int) && frac.is_none_or(all_digits)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(correct: u32, incorrect: u32, unattempted: u32) -> Counts {
        Counts {
            correct,
            incorrect,
            unattempted,
            answered: correct + incorrect,
            ..Counts::default()
        }
    }

    fn row() -> SheetRow {
        SheetRow {
            attempt_id: "a-1".into(),
            candidate_id: Some("=HYPERLINK(\"http://x\")".into()),
            rank: Some(3),
            percentile: Some("66.6666667".into()),
            submitted_at: Some("2026-11-22T10:00:00Z".parse().unwrap()),
            result: SheetResult {
                marks: "-1/3".parse().unwrap(),
                max_marks: "3".parse().unwrap(),
                counts: counts(0, 1, 2),
                sections: vec![SheetSection {
                    id: "maths".into(),
                    marks: "-1/3".parse().unwrap(),
                    counts: counts(0, 1, 2),
                }],
            },
        }
    }

    #[test]
    fn formula_text_is_neutralised_and_numbers_stay_numbers() {
        for text in ["=1+1", "+1", "-cmd", "@SUM(A1)", "\tx", "\rx", "\nx"] {
            assert_eq!(neutralise(text), format!("'{text}"));
        }
        for text in ["Asha", "", "1=1", "'quoted", "नेहा", "王芳"] {
            assert_eq!(neutralise(text), text);
        }
        for number in ["-1.33", "-4", "0", "12.50", "100.0000000"] {
            assert!(is_plain_number(number), "{number}");
        }
        for text in ["-1/3", "-", "-.5", "-1.", "-1e3", "--1", "1/3"] {
            assert!(!is_plain_number(text), "{text}");
        }
        // Fractions are text whatever their sign: 4/3 would be a date.
        assert_eq!(Cell::Fraction("4/3".into()).into_csv(), "'4/3");
        assert_eq!(Cell::Fraction("-1/3".into()).into_csv(), "'-1/3");
    }

    #[test]
    fn a_record_has_a_cell_per_column() {
        let options = CsvOptions {
            exact_fractions: true,
            ..CsvOptions::default()
        };
        let sheet = ResultsSheet::new(options, vec!["maths".into(), "+extra".into()]).unwrap();
        let header = sheet.header();
        assert_eq!(
            header,
            [
                "attempt_id",
                "candidate",
                "rank",
                "percentile",
                "marks",
                "marks_exact",
                "max_marks",
                "max_marks_exact",
                "maths marks",
                "maths marks_exact",
                "'+extra marks",
                "'+extra marks_exact",
                "correct",
                "incorrect",
                "partial",
                "unattempted",
                "accuracy_percent",
                "submitted_at"
            ]
        );
        let mut out = Vec::new();
        sheet.record(&row(), &mut out);
        assert_eq!(
            out,
            [
                "a-1",
                "'=HYPERLINK(\"http://x\")",
                "3",
                "66.6666667",
                "-0.33",
                "'-1/3",
                "3.00",
                "3",
                "-0.33",
                "'-1/3",
                "",
                "",
                "0",
                "1",
                "0",
                "2",
                "0.00",
                "2026-11-22T10:00:00Z"
            ]
        );
    }

    #[test]
    fn decimals_follow_the_options() {
        let options = CsvOptions {
            decimals: 0,
            ..CsvOptions::default()
        };
        let sheet = ResultsSheet::new(options, vec!["maths".into()]).unwrap();
        let mut out = Vec::new();
        let mut unranked = row();
        unranked.rank = None;
        unranked.percentile = None;
        unranked.submitted_at = None;
        sheet.record(&unranked, &mut out);
        assert_eq!(out.len(), sheet.header().len());
        assert_eq!(&out[2..7], ["", "", "0", "3", "0"]);
        assert_eq!(out.last().unwrap(), "");
        assert!(
            ResultsSheet::new(
                CsvOptions {
                    delimiter: 'x',
                    ..CsvOptions::default()
                },
                vec![]
            )
            .is_err()
        );
    }
}
