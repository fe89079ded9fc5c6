//! PDF report cards and test reports with printpdf: page layout (text placed cell by cell, rules and bars drawn
//! as vectors, tables carried over pages with their header repeated) and the choice of a font
//! for every run of text from the configured list. Builds bytes; the file is `files`'.
//!
//! Fonts are parsed once per process and embedded as subsets of the glyphs a document uses
//! (printpdf's `text_layout` feature). Embedded whole, they made a 3-page card 390 KB (DejaVu
//! Sans) to 2.6 MB (with WenQuanYi), and compressing them took 90% of its 70 to 770 ms; subset,
//! a card is 20 to 35 KB and takes 8 to 12 ms.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::OnceLock;

use chrono::{DateTime, SecondsFormat, Utc};
use printpdf::{
    BuiltinFont, Color, FontId, Line, LinePoint, Mm, Op, PaintMode, ParsedFont, PdfDocument,
    PdfFontHandle, PdfPage, PdfParseErrorSeverity, PdfSaveOptions, Point, Pt, Rect, Rgb, TextItem,
};
use quizworker_jobs::scoring::{AttemptResult, Counts, Marks, Outcome, RoundedDecimal, TestDef};
use serde::Deserialize;

/// The configured fonts, read from disk on first use and kept for the life of the process.
pub struct Fonts {
    paths: Vec<PathBuf>,
    loaded: OnceLock<Loaded>,
}

struct Loaded {
    fonts: Vec<LoadedFont>,
    /// Fonts that could not be read, for the job's warnings.
    problems: Vec<String>,
}

struct LoadedFont {
    font: ParsedFont,
}

impl Fonts {
    pub fn new(paths: Vec<PathBuf>) -> Fonts {
        Fonts {
            paths,
            loaded: OnceLock::new(),
        }
    }

    /// Blocking on first use (it reads the files): call from a blocking thread.
    fn get(&self) -> &Loaded {
        self.loaded.get_or_init(|| {
            let mut fonts = Vec::new();
            let mut problems = Vec::new();
            for path in &self.paths {
                match std::fs::read(path) {
                    Ok(bytes) => match ParsedFont::from_bytes(&bytes, 0, &mut Vec::new()) {
                        Some(font) if font.cmap_subtable.is_some() => {
                            fonts.push(LoadedFont { font })
                        }
                        _ => problems.push(format!(
                            "font {} is not a usable TTF/TTC font",
                            path.display()
                        )),
                    },
                    Err(e) => problems.push(format!("font {} unreadable: {e}", path.display())),
                }
            }
            if !problems.is_empty() {
                tracing::warn!(?problems, "some configured fonts are not used");
            }
            Loaded { fonts, problems }
        })
    }
}

/// A finished PDF.
pub struct Pdf {
    pub bytes: Vec<u8>,
    pub pages: usize,
    /// Characters no configured font has, and fonts that could not be read.
    pub warnings: Vec<String>,
}

/// What a report card shows.
pub struct ReportCard<'a> {
    pub result: &'a AttemptResult,
    pub test: Option<&'a TestDef>,
    pub candidate_id: Option<&'a str>,
    pub rank: Option<i64>,
    pub percentile: Option<&'a str>,
    pub submitted_at: Option<DateTime<Utc>>,
}

const PAGE_W: f32 = 595.28;
const PAGE_H: f32 = 841.89;
const MARGIN: f32 = 42.0;
const BODY: f32 = 9.5;
const ROW: f32 = 15.0;
const GREY: (f32, f32, f32) = (0.55, 0.55, 0.55);
const LIGHT: (f32, f32, f32) = (0.88, 0.9, 0.93);
const BAR: (f32, f32, f32) = (0.16, 0.42, 0.75);
const BLACK: (f32, f32, f32) = (0.0, 0.0, 0.0);

/// A table column: its title, width in points, and whether numbers align right in it.
struct Column {
    title: &'static str,
    width: f32,
    right: bool,
}

const fn col(title: &'static str, width: f32, right: bool) -> Column {
    Column {
        title,
        width,
        right,
    }
}

/// Builds a candidate's report card.
pub fn report_card(card: &ReportCard<'_>, fonts: &Fonts) -> Pdf {
    let r = card.result;
    let title = card
        .test
        .and_then(|t| t.title.as_deref())
        .unwrap_or(&r.test_id);
    let mut w = Writer::new(fonts.get(), &format!("Report card: {title}"));
    w.text(MARGIN, w.y, 18.0, "Report card", BLACK);
    w.y -= 24.0;
    w.text(MARGIN, w.y, 12.0, title, BLACK);
    w.y -= 20.0;
    let candidate = card.candidate_id.unwrap_or("-");
    let submitted = card
        .submitted_at
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true))
        .unwrap_or_else(|| "-".into());
    for (label, value) in [
        ("Candidate", candidate),
        ("Attempt", r.attempt_id.as_str()),
        ("Test", &*r.test_id),
        ("Submitted", submitted.as_str()),
    ] {
        w.label_value(label, value);
    }
    w.y -= 6.0;
    let total = format!(
        "{} / {}{}",
        r.total.marks.display(2),
        r.total.max_marks.display(2),
        exact_note(r.total.marks)
    );
    let rank = card
        .rank
        .map(|r| r.to_string())
        .unwrap_or_else(|| "-".into());
    let counts = &r.total.counts;
    let summary = format!(
        "{} correct, {} incorrect, {} partial, {} unattempted; accuracy {}",
        counts.correct,
        counts.incorrect,
        counts.partial,
        counts.unattempted,
        percent(r.total.accuracy_percent())
    );
    for (label, value) in [
        ("Total", total.as_str()),
        ("Rank", rank.as_str()),
        ("Percentile", card.percentile.unwrap_or("-")),
        ("Answers", summary.as_str()),
    ] {
        w.label_value(label, value);
    }
    if r.provisional {
        w.label_value("Note", "provisional: some answers await evaluation");
    }
    w.y -= 10.0;

    // Sections.
    w.heading("Sections");
    let columns = [
        col("Section", 150.0, false),
        col("Marks", 55.0, true),
        col("Max", 50.0, true),
        col("Correct", 50.0, true),
        col("Incorrect", 55.0, true),
        col("Unattempted", 75.0, true),
        col("Accuracy", 65.0, true),
    ];
    let section_title = |id: &str| -> String {
        card.test
            .and_then(|t| t.sections.iter().find(|s| s.id == id))
            .and_then(|s| s.title.clone())
            .map(|t| format!("{t} ({id})"))
            .unwrap_or_else(|| id.to_owned())
    };
    let rows: Vec<Vec<String>> = r
        .sections
        .iter()
        .map(|s| {
            let c = &s.summary.counts;
            vec![
                section_title(&s.id),
                s.summary.marks.display(2).to_string(),
                s.summary.max_marks.display(2).to_string(),
                c.correct.to_string(),
                c.incorrect.to_string(),
                c.unattempted.to_string(),
                percent(s.summary.accuracy_percent()),
            ]
        })
        .collect();
    w.table(&columns, &rows);
    w.y -= 10.0;

    // Bar chart of the sections' marks out of their maximum, drawn as vectors.
    w.heading("Section scores");
    let label_w = 140.0;
    let bar_w = PAGE_W - 2.0 * MARGIN - label_w - 70.0;
    for s in &r.sections {
        w.ensure(ROW + 4.0);
        let y = w.y;
        let label = w.fit(&s.id, BODY, label_w - 6.0);
        w.text(MARGIN, y, BODY, &label, BLACK);
        let share = share(s.summary.marks, s.summary.max_marks);
        w.rect(MARGIN + label_w, y - 2.0, bar_w, 10.0, LIGHT);
        if share > 0.0 {
            w.rect(MARGIN + label_w, y - 2.0, bar_w * share, 10.0, BAR);
        }
        let value = format!(
            "{} / {}",
            s.summary.marks.display(2),
            s.summary.max_marks.display(2)
        );
        w.text(MARGIN + label_w + bar_w + 6.0, y, BODY, &value, BLACK);
        w.y -= ROW + 2.0;
    }
    w.y -= 10.0;

    // Every question, over as many pages as it takes.
    w.heading("Questions");
    let columns = [
        col("#", 30.0, true),
        col("Section", 110.0, false),
        col("Question", 110.0, false),
        col("Outcome", 100.0, false),
        col("Marks", 55.0, true),
        col("Max", 50.0, true),
        col("Time (s)", 55.0, true),
    ];
    let rows: Vec<Vec<String>> = r
        .sections
        .iter()
        .flat_map(|s| s.questions.iter().map(move |q| (s, q)))
        .enumerate()
        .map(|(i, (s, q))| {
            vec![
                (i + 1).to_string(),
                s.id.to_string(),
                q.id.to_string(),
                outcome(q.outcome).to_owned(),
                q.marks.display(2).to_string(),
                q.max_marks.display(2).to_string(),
                q.time_spent_ms
                    .map(|ms| format!("{:.0}", ms as f64 / 1000.0))
                    .unwrap_or_default(),
            ]
        })
        .collect();
    w.table(&columns, &rows);
    w.finish()
}

fn exact_note(marks: Marks) -> String {
    if marks.denom() == 1 {
        String::new()
    } else {
        format!(" (exactly {marks})")
    }
}

fn percent(p: Option<RoundedDecimal>) -> String {
    p.map(|p| format!("{p}%")).unwrap_or_else(|| "-".into())
}

/// `marks / max` between 0 and 1 for a bar (a negative score draws no bar).
fn share(marks: Marks, max: Marks) -> f32 {
    if !max.is_positive() || !marks.is_positive() {
        return 0.0;
    }
    let value =
        (marks.numer() as f64 / marks.denom() as f64) / (max.numer() as f64 / max.denom() as f64);
    value.clamp(0.0, 1.0) as f32
}

fn outcome(o: Outcome) -> &'static str {
    match o {
        Outcome::Correct => "correct",
        Outcome::Incorrect => "incorrect",
        Outcome::Partial => "partial",
        Outcome::Unattempted => "unattempted",
        Outcome::Dropped => "dropped",
        Outcome::PendingEvaluation => "pending evaluation",
        Outcome::OverLimit => "over the limit",
    }
}

/// One piece of a run of text, in one font.
struct Piece {
    font: Face,
    text: String,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Face {
    /// Index into the configured fonts.
    External(usize),
    /// The built-in Helvetica, WinAnsi (Latin-1) only.
    Helvetica,
}

/// Places text and shapes on pages, top down; `y` is the baseline of the next line.
struct Writer<'f> {
    fonts: &'f Loaded,
    doc: PdfDocument,
    ids: Vec<Option<FontId>>,
    pages: Vec<Vec<Op>>,
    ops: Vec<Op>,
    y: f32,
    warnings: BTreeSet<String>,
    /// The header of the table being drawn, repeated on each new page.
    table_header: Option<Vec<(String, f32, bool)>>,
}

impl<'f> Writer<'f> {
    fn new(fonts: &'f Loaded, title: &str) -> Writer<'f> {
        Writer {
            fonts,
            doc: PdfDocument::new(title),
            ids: vec![None; fonts.fonts.len()],
            pages: Vec::new(),
            ops: Vec::new(),
            y: PAGE_H - MARGIN - 12.0,
            warnings: fonts.problems.iter().cloned().collect(),
            table_header: None,
        }
    }

    fn new_page(&mut self) {
        let ops = std::mem::take(&mut self.ops);
        self.pages.push(ops);
        self.y = PAGE_H - MARGIN - 12.0;
        if let Some(header) = self.table_header.clone() {
            self.header_row(&header);
        }
    }

    /// Starts a new page unless `space` points fit above the bottom margin.
    fn ensure(&mut self, space: f32) {
        if self.y - space < MARGIN + 20.0 {
            self.new_page();
        }
    }

    fn heading(&mut self, text: &str) {
        self.ensure(ROW * 3.0);
        self.text(MARGIN, self.y, 12.0, text, BLACK);
        self.y -= 18.0;
    }

    fn label_value(&mut self, label: &str, value: &str) {
        self.ensure(ROW);
        self.text(MARGIN, self.y, BODY, label, GREY);
        let value = self.fit(value, BODY, PAGE_W - 2.0 * MARGIN - 80.0);
        self.text(MARGIN + 80.0, self.y, BODY, &value, BLACK);
        self.y -= ROW;
    }

    /// A table: header row, then the rows, a rule under each; the header comes again at the top
    /// of every page the table runs onto.
    fn table(&mut self, columns: &[Column], rows: &[Vec<String>]) {
        let header: Vec<(String, f32, bool)> = columns
            .iter()
            .map(|c| (c.title.to_owned(), c.width, c.right))
            .collect();
        self.ensure(ROW * 2.0);
        self.header_row(&header);
        self.table_header = Some(header);
        for row in rows {
            self.ensure(ROW);
            let mut x = MARGIN;
            for (cell, column) in row.iter().zip(columns) {
                self.cell(x, cell, column.width, column.right, BLACK);
                x += column.width;
            }
            self.rule(self.y - 4.0, LIGHT);
            self.y -= ROW;
        }
        self.table_header = None;
    }

    fn header_row(&mut self, header: &[(String, f32, bool)]) {
        let mut x = MARGIN;
        for (title, width, right) in header {
            self.cell(x, title, *width, *right, GREY);
            x += width;
        }
        self.rule(self.y - 4.0, GREY);
        self.y -= ROW;
    }

    fn cell(&mut self, x: f32, text: &str, width: f32, right: bool, color: (f32, f32, f32)) {
        let text = self.fit(text, BODY, width - 6.0);
        let x = if right {
            x + width - 6.0 - self.width(&text, BODY)
        } else {
            x
        };
        self.text(x, self.y, BODY, &text, color);
    }

    fn rule(&mut self, y: f32, color: (f32, f32, f32)) {
        self.ops.push(Op::SetOutlineColor { col: rgb(color) });
        self.ops.push(Op::SetOutlineThickness { pt: Pt(0.5) });
        self.ops.push(Op::DrawLine {
            line: Line {
                points: vec![point(MARGIN, y), point(PAGE_W - MARGIN, y)],
                is_closed: false,
            },
        });
    }

    fn rect(&mut self, x: f32, y: f32, width: f32, height: f32, color: (f32, f32, f32)) {
        self.ops.push(Op::SetFillColor { col: rgb(color) });
        self.ops.push(Op::DrawRectangle {
            rectangle: Rect {
                x: Pt(x),
                y: Pt(y),
                width: Pt(width),
                height: Pt(height),
                mode: Some(PaintMode::Fill),
                winding_order: None,
            },
        });
    }

    /// `text` at (x, y), split into runs that each have a font with every glyph.
    fn text(&mut self, x: f32, y: f32, size: f32, text: &str, color: (f32, f32, f32)) {
        let mut x = x;
        for piece in self.pieces(text) {
            let handle = match piece.font {
                Face::External(i) => PdfFontHandle::External(self.font_id(i)),
                Face::Helvetica => PdfFontHandle::Builtin(BuiltinFont::Helvetica),
            };
            self.ops.extend([
                Op::StartTextSection,
                Op::SetFillColor { col: rgb(color) },
                Op::SetFont {
                    font: handle,
                    size: Pt(size),
                },
                Op::SetTextCursor {
                    pos: Point { x: Pt(x), y: Pt(y) },
                },
                Op::ShowText {
                    items: vec![TextItem::Text(piece.text.clone())],
                },
                Op::EndTextSection,
            ]);
            x += self.piece_width(&piece, size);
        }
    }

    fn font_id(&mut self, i: usize) -> FontId {
        if let Some(id) = &self.ids[i] {
            return id.clone();
        }
        let id = self.doc.add_font(&self.fonts.fonts[i].font);
        self.ids[i] = Some(id.clone());
        id
    }

    /// The run itself in the first configured font that has all its characters; otherwise
    /// pieces, each character in the first font that has it (spaces stay with the piece), the
    /// built-in Helvetica for Latin-1 that no font has, and `?` with a warning for the rest.
    fn pieces(&mut self, text: &str) -> Vec<Piece> {
        let loaded: &'f Loaded = self.fonts;
        let fonts = &loaded.fonts;
        let has = |i: usize, c: char| fonts[i].font.lookup_glyph_index(c as u32).is_some();
        let printable = text.chars().map(|c| if c.is_control() { ' ' } else { c });
        let text: String = printable.collect();
        if let Some(i) = (0..fonts.len()).find(|&i| text.chars().all(|c| has(i, c))) {
            return vec![Piece {
                font: Face::External(i),
                text,
            }];
        }
        let mut pieces: Vec<Piece> = Vec::new();
        for c in text.chars() {
            let current = pieces.last().map(|p| p.font);
            let (face, c) = if c == ' ' && current.is_some() {
                (current.unwrap_or(Face::Helvetica), c)
            } else if let Some(f) = current.filter(|f| match f {
                Face::External(i) => has(*i, c),
                Face::Helvetica => latin1(c),
            }) {
                (f, c)
            } else if let Some(i) = (0..fonts.len()).find(|&i| has(i, c)) {
                (Face::External(i), c)
            } else if latin1(c) {
                (Face::Helvetica, c)
            } else {
                self.warnings.insert(format!(
                    "no configured font has U+{:04X} ({c}); it prints as ?",
                    c as u32
                ));
                (current.unwrap_or(Face::Helvetica), '?')
            };
            match pieces.last_mut() {
                Some(p) if p.font == face => p.text.push(c),
                _ => pieces.push(Piece {
                    font: face,
                    text: c.to_string(),
                }),
            }
        }
        pieces
    }

    fn width(&mut self, text: &str, size: f32) -> f32 {
        self.pieces(text)
            .iter()
            .map(|p| self.piece_width(p, size))
            .sum()
    }

    fn piece_width(&self, piece: &Piece, size: f32) -> f32 {
        match piece.font {
            Face::External(i) => {
                let font = &self.fonts.fonts[i].font;
                let units = f32::from(font.pdf_font_metrics.units_per_em.max(1));
                piece
                    .text
                    .chars()
                    .map(|c| {
                        font.lookup_glyph_index(c as u32)
                            .map_or(0.5, |g| f32::from(font.get_horizontal_advance(g)) / units)
                    })
                    .sum::<f32>()
                    * size
            }
            // Helvetica's widths, roughly: enough to fit cells.
            Face::Helvetica => {
                piece
                    .text
                    .chars()
                    .map(|c| match c {
                        'i' | 'j' | 'l' | '.' | ',' | ' ' | '\'' | '|' | '!' | ':' | ';' => 0.28,
                        'm' | 'w' | 'M' | 'W' | '@' => 0.85,
                        c if c.is_ascii_uppercase() => 0.67,
                        _ => 0.56,
                    })
                    .sum::<f32>()
                    * size
            }
        }
    }

    /// `text`, cut with "..." to fit `width`.
    fn fit(&mut self, text: &str, size: f32, width: f32) -> String {
        if self.width(text, size) <= width {
            return text.to_owned();
        }
        let chars: Vec<char> = text.chars().collect();
        let (mut low, mut high) = (0, chars.len());
        while low < high {
            let mid = (low + high).div_ceil(2);
            let candidate: String = chars[..mid].iter().collect::<String>() + "...";
            if self.width(&candidate, size) <= width {
                low = mid;
            } else {
                high = mid - 1;
            }
        }
        chars[..low].iter().collect::<String>() + "..."
    }

    fn finish(mut self) -> Pdf {
        let last = std::mem::take(&mut self.ops);
        self.pages.push(last);
        let count = self.pages.len();
        let pages: Vec<Vec<Op>> = std::mem::take(&mut self.pages);
        let mut done = Vec::with_capacity(count);
        for (n, ops) in pages.into_iter().enumerate() {
            self.ops = ops;
            let footer = format!("Page {} of {count}", n + 1);
            let x = PAGE_W - MARGIN - self.width(&footer, 8.0);
            self.text(x, MARGIN - 12.0, 8.0, &footer, GREY);
            done.push(PdfPage::new(
                Mm(210.0),
                Mm(297.0),
                std::mem::take(&mut self.ops),
            ));
        }
        // Subsetting is printpdf's default, named here because the speed depends on it.
        let options = PdfSaveOptions {
            subset_fonts: true,
            ..PdfSaveOptions::default()
        };
        let mut save_warnings = Vec::new();
        let bytes = self.doc.with_pages(done).save(&options, &mut save_warnings);
        // printpdf embeds a font whole when it cannot subset it: the PDF is right, only slow
        // and large, so this is for the operator's log, not the job's warnings.
        for w in save_warnings
            .iter()
            .filter(|w| w.severity == PdfParseErrorSeverity::Error)
        {
            tracing::warn!(warning = %w.msg, "printpdf could not save the PDF as it should");
        }
        Pdf {
            bytes,
            pages: count,
            warnings: self.warnings.into_iter().collect(),
        }
    }
}

fn latin1(c: char) -> bool {
    (c as u32) <= 0xFF
}

fn rgb((r, g, b): (f32, f32, f32)) -> Color {
    Color::Rgb(Rgb {
        r,
        g,
        b,
        icc_profile: None,
    })
}

fn point(x: f32, y: f32) -> LinePoint {
    LinePoint {
        p: Point { x: Pt(x), y: Pt(y) },
        bezier: false,
    }
}

/// The statistics `score.finalize_test` stored (`score_test_reports.statistics`), as far as the
/// test report shows them.
#[derive(Debug, Deserialize)]
pub struct Statistics {
    pub test_id: String,
    pub key_version: u32,
    pub candidates: u64,
    pub max_marks: Marks,
    pub mean: Option<Marks>,
    pub median: Option<Marks>,
    pub highest: Option<Marks>,
    pub lowest: Option<Marks>,
    pub distribution: Vec<ScoreCount>,
    pub sections: Vec<SectionStatistics>,
    pub questions: Vec<QuestionStatistics>,
}

#[derive(Debug, Deserialize)]
pub struct ScoreCount {
    pub marks: Marks,
    pub candidates: u64,
}

#[derive(Debug, Deserialize)]
pub struct SectionStatistics {
    pub id: String,
    pub max_marks: Marks,
    pub mean: Option<Marks>,
    pub median: Option<Marks>,
    pub highest: Option<Marks>,
    pub lowest: Option<Marks>,
}

#[derive(Debug, Deserialize)]
pub struct QuestionStatistics {
    pub id: String,
    pub section: String,
    pub counts: Counts,
    pub facility_percent: Option<String>,
    pub accuracy_percent: Option<String>,
    /// `None` for a dropped question.
    pub difficulty: Option<String>,
}

/// Questions listed as the hardest and as the easiest.
const EXTREMES: usize = 10;

/// Builds a test's analytics report: summary, histogram of the totals, section averages, and
/// the hardest and easiest questions by facility (share of candidates answering correctly).
pub fn test_report(stats: &Statistics, test: Option<&TestDef>, fonts: &Fonts) -> Pdf {
    let title = test
        .and_then(|t| t.title.as_deref())
        .unwrap_or(&stats.test_id);
    let mut w = Writer::new(fonts.get(), &format!("Test report: {title}"));
    w.text(MARGIN, w.y, 18.0, "Test report", BLACK);
    w.y -= 24.0;
    w.text(MARGIN, w.y, 12.0, title, BLACK);
    w.y -= 20.0;
    let show = |m: Option<Marks>| m.map(|m| m.display(2).to_string()).unwrap_or("-".into());
    let key_version = stats.key_version.to_string();
    let candidates = stats.candidates.to_string();
    let max = stats.max_marks.display(2).to_string();
    for (label, value) in [
        ("Test", stats.test_id.as_str()),
        ("Key version", key_version.as_str()),
        ("Candidates", candidates.as_str()),
        ("Maximum", max.as_str()),
        ("Mean", show(stats.mean).as_str()),
        ("Median", show(stats.median).as_str()),
        ("Highest", show(stats.highest).as_str()),
        ("Lowest", show(stats.lowest).as_str()),
    ] {
        w.label_value(label, value);
    }
    w.y -= 10.0;

    w.heading("Score distribution");
    histogram(&mut w, stats);
    w.y -= 10.0;

    w.heading("Section averages");
    let columns = [
        col("Section", 165.0, false),
        col("Max", 60.0, true),
        col("Mean", 60.0, true),
        col("Median", 60.0, true),
        col("Highest", 60.0, true),
        col("Lowest", 60.0, true),
    ];
    let rows: Vec<Vec<String>> = stats
        .sections
        .iter()
        .map(|s| {
            vec![
                s.id.clone(),
                s.max_marks.display(2).to_string(),
                show(s.mean),
                show(s.median),
                show(s.highest),
                show(s.lowest),
            ]
        })
        .collect();
    w.table(&columns, &rows);
    w.y -= 10.0;

    let mut judged: Vec<&QuestionStatistics> = stats
        .questions
        .iter()
        .filter(|q| q.difficulty.is_some())
        .collect();
    let facility = |q: &QuestionStatistics| {
        f64::from(q.counts.correct) / f64::from(q.counts.questions().max(1))
    };
    judged.sort_by(|a, b| {
        facility(a)
            .total_cmp(&facility(b))
            .then_with(|| a.id.cmp(&b.id))
    });
    let columns = [
        col("Question", 85.0, false),
        col("Section", 105.0, false),
        col("Facility", 60.0, true),
        col("Accuracy", 60.0, true),
        col("Correct", 50.0, true),
        col("Incorrect", 55.0, true),
        col("Unattempted", 75.0, true),
    ];
    let row = |q: &&QuestionStatistics| {
        let pct = |p: &Option<String>| p.as_deref().map_or("-".into(), |p| format!("{p}%"));
        vec![
            q.id.clone(),
            q.section.clone(),
            pct(&q.facility_percent),
            pct(&q.accuracy_percent),
            q.counts.correct.to_string(),
            q.counts.incorrect.to_string(),
            q.counts.unattempted.to_string(),
        ]
    };
    w.heading("Hardest questions");
    let hardest: Vec<Vec<String>> = judged.iter().take(EXTREMES).map(row).collect();
    w.table(&columns, &hardest);
    w.y -= 10.0;
    w.heading("Easiest questions");
    let easiest: Vec<Vec<String>> = judged.iter().rev().take(EXTREMES).map(row).collect();
    w.table(&columns, &easiest);
    w.finish()
}

/// The totals' distribution as vertical bars, one per band of [`score_bands`].
fn histogram(w: &mut Writer<'_>, stats: &Statistics) {
    let Some(bands) = score_bands(&stats.distribution, stats.max_marks) else {
        w.label_value("", "no candidates");
        return;
    };
    let tallest = bands.counts.iter().copied().max().unwrap_or(1).max(1);
    let chart_h = 140.0;
    w.ensure(chart_h + 40.0);
    let base = w.y - chart_h;
    let slot = (PAGE_W - 2.0 * MARGIN) / bands.counts.len() as f32;
    for (i, &count) in bands.counts.iter().enumerate() {
        let x = MARGIN + slot * i as f32;
        let h = (chart_h - 14.0) * count as f32 / tallest as f32;
        if count > 0 {
            w.rect(x + slot * 0.1, base, slot * 0.8, h, BAR);
        }
        let from = bands.first + i as f64 * bands.width;
        let label = format!("{}-{}", mark_label(from), mark_label(from + bands.width));
        let size = if slot < 40.0 { 6.0 } else { 8.0 };
        let label = w.fit(&label, size, slot - 2.0);
        w.text(x + 1.0, base - 10.0, size, &label, GREY);
        w.text(
            x + slot * 0.1,
            base + h + 3.0,
            size,
            &count.to_string(),
            BLACK,
        );
    }
    w.rule(base, GREY);
    w.y = base - 24.0;
}

/// The most bars the score chart draws: the page has room for about this many labelled ones.
const MAX_BANDS: usize = 20;

/// Candidates per band of marks: band `i` holds `first + i * width <= marks < first + (i + 1) *
/// width`.
#[derive(Debug, PartialEq)]
struct Bands {
    first: f64,
    width: f64,
    counts: Vec<u64>,
}

/// Bands of a tenth of the maximum (at least one mark) from the lowest score's to the highest's,
/// as long as that is at most [`MAX_BANDS`] bands. Scores spread wider, as a harsh negative
/// marking allows (one candidate a trillion marks below the rest), get wider bands of a round
/// width instead, so the chart stays readable and still counts every candidate; the number of
/// bands never follows the marks. `None` for no candidates.
fn score_bands(distribution: &[ScoreCount], max_marks: Marks) -> Option<Bands> {
    let value = |m: Marks| m.numer() as f64 / m.denom() as f64;
    let lowest = distribution
        .iter()
        .map(|d| value(d.marks))
        .reduce(f64::min)?;
    let highest = distribution
        .iter()
        .map(|d| value(d.marks))
        .reduce(f64::max)?;
    let tenth = (value(max_marks) / 10.0).max(1.0);
    let bands_of = |width: f64| (highest / width).floor() - (lowest / width).floor() + 1.0;
    let width = if bands_of(tenth) <= MAX_BANDS as f64 {
        tenth
    } else {
        // Width w puts at most (highest - lowest) / w + 1 bands between the two scores.
        round_up_1_2_5((highest - lowest) / (MAX_BANDS - 1) as f64).max(tenth)
    };
    let first_band = (lowest / width).floor();
    let count = bands_of(width).clamp(1.0, MAX_BANDS as f64) as usize;
    let mut counts = vec![0u64; count];
    for d in distribution {
        // Clamped: float rounding must not put a score outside the chart.
        let band = ((value(d.marks) / width).floor() - first_band).clamp(0.0, (count - 1) as f64);
        counts[band as usize] += d.candidates;
    }
    Some(Bands {
        first: first_band * width,
        width,
        counts,
    })
}

/// The least of 1, 2 and 5 times a power of ten that is at least `x` (which is positive).
fn round_up_1_2_5(x: f64) -> f64 {
    let power = 10f64.powi(x.log10().floor() as i32);
    [1.0, 2.0, 5.0, 10.0, 20.0]
        .into_iter()
        .map(|step| step * power)
        .find(|&width| width >= x)
        .unwrap_or(x)
}

/// A band's bound for its label: whole marks, and a power of ten once they would not fit.
fn mark_label(marks: f64) -> String {
    if marks.abs() < 1e6 {
        format!("{marks:.0}")
    } else {
        format!("{marks:.0e}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn distribution(scores: &[(Marks, u64)]) -> Vec<ScoreCount> {
        scores
            .iter()
            .map(|&(marks, candidates)| ScoreCount { marks, candidates })
            .collect()
    }

    fn m(text: &str) -> Marks {
        text.parse().unwrap()
    }

    #[test]
    fn bands_are_a_tenth_of_the_maximum_when_the_scores_allow() {
        let scores = distribution(&[(m("-3"), 1), (m("7"), 2), (m("40"), 1)]);
        let bands = score_bands(&scores, m("40")).unwrap();
        assert_eq!(bands.width, 4.0);
        assert_eq!(bands.first, -4.0);
        assert_eq!(bands.counts, [1, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        assert_eq!(score_bands(&[], m("40")), None);
    }

    #[test]
    fn scores_a_trillion_marks_apart_get_wide_bands_not_a_trillion_of_them() {
        let scores = distribution(&[(m("-1000000000000"), 1), (m("4"), 2)]);
        let bands = score_bands(&scores, m("4")).unwrap();
        assert!(bands.counts.len() <= MAX_BANDS, "{bands:?}");
        assert_eq!(bands.width, 1e11);
        assert_eq!(bands.first, -1e12);
        assert_eq!(bands.counts.first(), Some(&1));
        assert_eq!(bands.counts.last(), Some(&2));
        assert_eq!(mark_label(bands.first), "-1e12");
    }

    #[test]
    fn bands_stay_few_at_the_ends_of_the_marks_range() {
        let ends = [
            (Marks::integer(i64::MIN), 3),
            (Marks::integer(i64::MAX), 5),
            (m("1/3"), 7),
        ];
        for max in [m("1"), Marks::integer(i64::MAX), Marks::integer(i64::MIN)] {
            let bands = score_bands(&distribution(&ends), max).unwrap();
            assert!((1..=MAX_BANDS).contains(&bands.counts.len()), "{bands:?}");
            assert_eq!(bands.counts.iter().sum::<u64>(), 15, "{bands:?}");
        }
    }
}
