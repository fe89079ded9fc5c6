//! The page layout the PDFs share (printpdf): text placed top down (shaped by `typeset`),
//! long text wrapped, table cells fitted, rules and bars drawn as vectors, tables carried over
//! pages with their header repeated (and kept on one page when they fit on one), and a footer
//! naming the document and the page on every page. The documents themselves are `card`'s and
//! `test_report`'s; the file is `files`'.
//!
//! Fonts are embedded as subsets of the glyphs a document uses (printpdf's `text_layout`
//! feature). Embedded whole, they made a 3-page card 390 KB to 2.6 MB, and compressing them
//! took 90% of its 70 to 770 ms; subset, a card is 20 to 35 KB.

use std::collections::BTreeSet;

use printpdf::{
    Color, Line, LinePoint, Mm, Op, PaintMode, PdfDocument, PdfPage, PdfParseErrorSeverity,
    PdfSaveOptions, Point, Pt, Rect, Rgb,
};

pub use super::typeset::Fonts;
use super::typeset::{Loaded, Typesetter};

/// A finished PDF.
pub struct Pdf {
    pub bytes: Vec<u8>,
    pub pages: usize,
    /// Characters no configured font has, and fonts that could not be read.
    pub warnings: Vec<String>,
}

pub(super) const PAGE_W: f32 = 595.28;
pub(super) const PAGE_H: f32 = 841.89;
pub(super) const MARGIN: f32 = 42.0;
pub(super) const BODY: f32 = 9.5;
pub(super) const ROW: f32 = 15.0;
pub(super) const GREY: (f32, f32, f32) = (0.45, 0.45, 0.45);
pub(super) const LIGHT: (f32, f32, f32) = (0.88, 0.9, 0.93);
pub(super) const BAR: (f32, f32, f32) = (0.16, 0.42, 0.75);
pub(super) const NEGATIVE: (f32, f32, f32) = (0.78, 0.25, 0.2);
pub(super) const BLACK: (f32, f32, f32) = (0.0, 0.0, 0.0);
/// Where the body's first baseline is on a page.
const TOP: f32 = PAGE_H - MARGIN - 12.0;
/// The lowest baseline of the body: the footer is below it.
const BOTTOM: f32 = MARGIN + 20.0;
/// Width of a label in a label-value line.
const LABEL_W: f32 = 90.0;

/// A table column: its title, width in points, and whether numbers align right in it.
pub(super) struct Column {
    pub title: &'static str,
    pub width: f32,
    pub right: bool,
}

pub(super) const fn col(title: &'static str, width: f32, right: bool) -> Column {
    Column {
        title,
        width,
        right,
    }
}

/// Places text and shapes on pages, top down; `y` is the baseline of the next line.
pub(super) struct Writer<'f> {
    set: Typesetter<'f>,
    doc: PdfDocument,
    pages: Vec<Vec<Op>>,
    ops: Vec<Op>,
    pub y: f32,
    problems: Vec<String>,
    /// The header of the table being drawn, repeated on each new page.
    table_header: Option<Vec<(String, f32, bool)>>,
    /// What the footer of every page says beside its number (the candidate, the test).
    footer: String,
}

impl<'f> Writer<'f> {
    pub fn new(fonts: &'f Fonts, title: &str, footer: String) -> Writer<'f> {
        let loaded: &'f Loaded = fonts.get();
        Writer {
            set: Typesetter::new(loaded),
            doc: PdfDocument::new(title),
            pages: Vec::new(),
            ops: Vec::new(),
            y: TOP,
            problems: loaded.problems.clone(),
            table_header: None,
            footer,
        }
    }

    pub fn doc(&mut self) -> &mut PdfDocument {
        &mut self.doc
    }

    pub fn ops(&mut self) -> &mut Vec<Op> {
        &mut self.ops
    }

    fn new_page(&mut self) {
        let ops = std::mem::take(&mut self.ops);
        self.pages.push(ops);
        self.y = TOP;
        if let Some(header) = self.table_header.clone() {
            self.header_row(&header);
        }
    }

    /// Starts a new page unless `space` points fit above the bottom margin.
    pub fn ensure(&mut self, space: f32) {
        if self.y - space < BOTTOM {
            self.new_page();
        }
    }

    pub fn heading(&mut self, text: &str) {
        self.ensure(ROW * 3.0);
        self.text(MARGIN, self.y, 12.0, text, BLACK);
        self.y -= 18.0;
    }

    /// A grey label and its value; a value too long for the line wraps onto the next lines.
    pub fn label_value(&mut self, label: &str, value: &str) {
        self.ensure(ROW);
        self.text(MARGIN, self.y, BODY, label, GREY);
        let lines = self.wrap(value, BODY, PAGE_W - 2.0 * MARGIN - LABEL_W);
        for line in lines {
            self.ensure(ROW);
            self.text(MARGIN + LABEL_W, self.y, BODY, &line, BLACK);
            self.y -= ROW;
        }
    }

    /// A paragraph at `size`, wrapped to the page's width.
    pub fn paragraph(&mut self, text: &str, size: f32, color: (f32, f32, f32)) {
        let leading = size * 1.35;
        for line in self.wrap(text, size, PAGE_W - 2.0 * MARGIN) {
            self.ensure(leading);
            self.text(MARGIN, self.y, size, &line, color);
            self.y -= leading;
        }
    }

    /// A table: header row, then the rows, a rule under each; the header comes again at the top
    /// of every page the table runs onto. A table that fits on one page is not split: it starts
    /// on the next page if this one has no room for it.
    pub fn table(&mut self, columns: &[Column], rows: &[Vec<String>]) {
        let header: Vec<(String, f32, bool)> = columns
            .iter()
            .map(|c| (c.title.to_owned(), c.width, c.right))
            .collect();
        let height = ROW * (rows.len() + 1) as f32;
        if height <= TOP - BOTTOM {
            self.ensure(height);
        } else {
            self.ensure(ROW * 2.0);
        }
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

    pub fn rule(&mut self, y: f32, color: (f32, f32, f32)) {
        self.line((MARGIN, y), (PAGE_W - MARGIN, y), color);
    }

    pub fn line(&mut self, from: (f32, f32), to: (f32, f32), color: (f32, f32, f32)) {
        self.ops.push(Op::SetOutlineColor { col: rgb(color) });
        self.ops.push(Op::SetOutlineThickness { pt: Pt(0.5) });
        self.ops.push(Op::DrawLine {
            line: Line {
                points: vec![point(from.0, from.1), point(to.0, to.1)],
                is_closed: false,
            },
        });
    }

    pub fn rect(&mut self, x: f32, y: f32, width: f32, height: f32, color: (f32, f32, f32)) {
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

    /// `text` shaped, its start at (x, y) on the baseline.
    pub fn text(&mut self, x: f32, y: f32, size: f32, text: &str, color: (f32, f32, f32)) {
        self.set
            .draw(&mut self.doc, &mut self.ops, text, (x, y), size, rgb(color));
    }

    pub fn width(&mut self, text: &str, size: f32) -> f32 {
        self.set.width(text, size)
    }

    /// `text`, cut with "..." to fit `width`: for table cells (ids), never for names.
    pub fn fit(&mut self, text: &str, size: f32, width: f32) -> String {
        if self.width(text, size) <= width {
            return text.to_owned();
        }
        // ends[k - 1]: where the first k characters end.
        let ends: Vec<usize> = text.char_indices().map(|(i, c)| i + c.len_utf8()).collect();
        let (mut low, mut high) = (0, ends.len());
        while low < high {
            let mid = (low + high).div_ceil(2);
            let candidate = format!("{}...", &text[..ends[mid - 1]]);
            if self.width(&candidate, size) <= width {
                low = mid;
            } else {
                high = mid - 1;
            }
        }
        let end = if low == 0 { 0 } else { ends[low - 1] };
        format!("{}...", &text[..end])
    }

    /// `text` in lines no wider than `width`, broken between words; a word wider than a line
    /// is broken between its characters (never inside a cluster of a character and its
    /// marks). Nothing is cut.
    pub fn wrap(&mut self, text: &str, size: f32, width: f32) -> Vec<String> {
        let mut lines = Vec::new();
        let mut line = String::new();
        for word in text.split_whitespace() {
            let candidate = if line.is_empty() {
                word.to_owned()
            } else {
                format!("{line} {word}")
            };
            if self.width(&candidate, size) <= width {
                line = candidate;
                continue;
            }
            if !line.is_empty() {
                lines.push(std::mem::take(&mut line));
            }
            let mut rest = word;
            while self.width(rest, size) > width {
                let cut = self.cut(rest, size, width);
                lines.push(rest[..cut].to_owned());
                rest = &rest[cut..];
            }
            line = rest.to_owned();
        }
        if !line.is_empty() || lines.is_empty() {
            lines.push(line);
        }
        lines
    }

    /// The longest start of `word` (at least one cluster) that fits `width`, as a byte length.
    fn cut(&mut self, word: &str, size: f32, width: f32) -> usize {
        let bounds = cluster_bounds(word);
        let mut best = bounds.first().copied().unwrap_or(word.len());
        for &end in &bounds {
            if self.width(&word[..end], size) <= width {
                best = end;
            } else {
                break;
            }
        }
        best
    }

    pub fn finish(mut self) -> Pdf {
        let last = std::mem::take(&mut self.ops);
        self.pages.push(last);
        let count = self.pages.len();
        let pages: Vec<Vec<Op>> = std::mem::take(&mut self.pages);
        let mut done = Vec::with_capacity(count);
        let footer = std::mem::take(&mut self.footer);
        for (n, ops) in pages.into_iter().enumerate() {
            self.ops = ops;
            let number = format!("Page {} of {count}", n + 1);
            let number_w = self.width(&number, 8.0);
            let x = PAGE_W - MARGIN - number_w;
            self.text(x, MARGIN - 12.0, 8.0, &number, GREY);
            let room = PAGE_W - 2.0 * MARGIN - number_w - 12.0;
            let footer = self.fit(&footer, 8.0, room);
            self.text(MARGIN, MARGIN - 12.0, 8.0, &footer, GREY);
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
        let missing: BTreeSet<char> = std::mem::take(&mut self.set.missing);
        let mut warnings = self.problems;
        warnings.extend(missing.into_iter().map(|c| {
            format!(
                "no configured font has U+{:04X} ({c}); it prints as a box",
                c as u32
            )
        }));
        Pdf {
            bytes,
            pages: count,
            warnings,
        }
    }
}

/// Byte offsets where a line may break inside a word: before each character that is not a
/// combining mark or a joiner, so a letter keeps its vowel signs and viramas.
fn cluster_bounds(word: &str) -> Vec<usize> {
    let mut bounds = Vec::new();
    let mut chars = word.char_indices().peekable();
    while let Some((_, c)) = chars.next() {
        if let Some(&(next_at, next)) = chars.peek()
            && !joins_previous(next)
            && !is_virama(c)
        {
            bounds.push(next_at);
        }
    }
    bounds.push(word.len());
    bounds
}

/// A character that belongs with the one before it: a combining mark (vowel signs, nukta,
/// virama, Arabic harakat) or a zero-width (non-)joiner.
fn joins_previous(c: char) -> bool {
    use unicode_script::UnicodeScript;
    if matches!(c, '\u{200C}' | '\u{200D}') || c.script() == unicode_script::Script::Inherited {
        return true;
    }
    // The Indic scripts' dependent signs: U+0900-0D7F, in each 128-code block, 0x00-0x03 and
    // 0x3A-0x4F, 0x51-0x57, 0x62-0x63.
    let u = c as u32;
    if (0x0900..=0x0D7F).contains(&u) {
        let offset = u & 0x7F;
        return offset <= 0x03
            || (0x3A..=0x4F).contains(&offset)
            || (0x51..=0x57).contains(&offset)
            || (0x62..=0x63).contains(&offset);
    }
    (0x064B..=0x065F).contains(&u) || u == 0x0670
}

/// A virama (halant) joins the next consonant into a conjunct: no break after it.
fn is_virama(c: char) -> bool {
    let u = c as u32;
    (0x0900..=0x0D7F).contains(&u) && (u & 0x7F) == 0x4D
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_break_between_clusters_never_inside_one() {
        // प्रि: प, virama, र, vowel sign i: one cluster.
        assert_eq!(cluster_bounds("प्रिया"), ["प्रि".len(), "प्रिया".len()]);
        assert_eq!(cluster_bounds("abc"), [1, 2, 3]);
    }
}
