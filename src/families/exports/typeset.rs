//! Text as the PDFs draw it: the configured fonts, each line cut into runs of one direction,
//! script and font (`quizworker_jobs::exports::text_runs`), every run shaped with rustybuzz
//! (HarfBuzz's shaping algorithm: conjuncts, reordered matras, reph, Arabic joining forms,
//! kerning, mark positioning), and the glyphs drawn with printpdf at the positions the shaper
//! gave, each run marked with its text (`/ActualText`) so that copying and `pdftotext` give
//! the text back in reading order.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use printpdf::xobject::DictItem;
use printpdf::{
    BuiltinFont, Codepoint, Color, FontId, Op, ParsedFont, PdfDocument, PdfFontHandle, Pt,
    TextItem, TextMatrix,
};
use quizworker_jobs::exports::text_runs::{self, Run};
use rustybuzz::{Direction, Face, ShapePlan, UnicodeBuffer};

self_cell::self_cell!(
    /// A font file's bytes and the shaper's view of them.
    struct FaceCell {
        owner: Vec<u8>,
        #[covariant]
        dependent: Face,
    }
);

/// One configured font: read at start, embedded (printpdf parses it) the first time a
/// document uses it, since parsing a CJK collection takes far longer than a card.
struct FontFile {
    path: PathBuf,
    index: u32,
    face: FaceCell,
    units_per_em: f32,
    pdf: OnceLock<Option<ParsedFont>>,
    /// Shape plans by script and direction: building one costs more than shaping a name.
    plans: Mutex<HashMap<(rustybuzz::Script, bool), Arc<ShapePlan>>>,
}

/// The configured fonts, read from disk on first use and kept for the life of the process.
pub struct Fonts {
    specs: Vec<PathBuf>,
    loaded: OnceLock<Loaded>,
}

pub(super) struct Loaded {
    fonts: Vec<FontFile>,
    /// Fonts that could not be read, for the job's warnings.
    pub(super) problems: Vec<String>,
}

impl Fonts {
    /// `specs`: font files in the order they are tried, each a path, with `#N` after a
    /// collection's path for its face N (`NotoSansCJK-Regular.ttc#2`; the first face without).
    pub fn new(specs: Vec<PathBuf>) -> Fonts {
        Fonts {
            specs,
            loaded: OnceLock::new(),
        }
    }

    /// Blocking on first use (it reads the files): call from a blocking thread.
    pub(super) fn get(&self) -> &Loaded {
        self.loaded.get_or_init(|| {
            let mut fonts = Vec::new();
            let mut problems = Vec::new();
            for spec in &self.specs {
                match FontFile::open(spec) {
                    Ok(font) => fonts.push(font),
                    Err(problem) => problems.push(problem),
                }
            }
            if !problems.is_empty() {
                tracing::warn!(?problems, "some configured fonts are not used");
            }
            Loaded { fonts, problems }
        })
    }
}

/// A font spec's path and face index: `path#N`, or the path and face 0.
pub fn font_spec(spec: &std::path::Path) -> (PathBuf, u32) {
    let text = spec.to_string_lossy();
    if let Some((path, index)) = text.rsplit_once('#')
        && let Ok(index) = index.parse()
    {
        return (PathBuf::from(path), index);
    }
    (spec.to_owned(), 0)
}

impl FontFile {
    fn open(spec: &std::path::Path) -> Result<FontFile, String> {
        let (path, index) = font_spec(spec);
        let bytes =
            std::fs::read(&path).map_err(|e| format!("font {} unreadable: {e}", spec.display()))?;
        let face = FaceCell::try_new(bytes, |bytes| {
            Face::from_slice(bytes, index)
                .ok_or_else(|| format!("font {} is not a usable TTF/OTF/TTC font", spec.display()))
        })?;
        let units_per_em = f32::from(face.borrow_dependent().units_per_em().max(1) as u16);
        Ok(FontFile {
            path,
            index,
            face,
            units_per_em,
            pdf: OnceLock::new(),
            plans: Mutex::new(HashMap::new()),
        })
    }

    fn has(&self, c: char) -> bool {
        self.face.borrow_dependent().glyph_index(c).is_some()
    }

    /// printpdf's parse of the font, for embedding; `None` if printpdf cannot read it.
    fn pdf(&self) -> Option<&ParsedFont> {
        self.pdf
            .get_or_init(|| {
                let font = ParsedFont::from_bytes(
                    self.face.borrow_owner(),
                    self.index as usize,
                    &mut Vec::new(),
                );
                if font.is_none() {
                    tracing::warn!(path = %self.path.display(), "printpdf cannot embed this font");
                }
                font
            })
            .as_ref()
    }

    fn plan(&self, script: rustybuzz::Script, rtl: bool) -> Arc<ShapePlan> {
        let mut plans = self.plans.lock().unwrap_or_else(|e| e.into_inner());
        plans
            .entry((script, rtl))
            .or_insert_with(|| {
                Arc::new(ShapePlan::new(
                    self.face.borrow_dependent(),
                    direction(rtl),
                    Some(script),
                    None,
                    &[],
                ))
            })
            .clone()
    }
}

fn direction(rtl: bool) -> Direction {
    if rtl {
        Direction::RightToLeft
    } else {
        Direction::LeftToRight
    }
}

/// A glyph of a shaped line: its id in its font, and where its origin is, in ems from the
/// line's start on the baseline.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Glyph {
    pub id: u16,
    pub x: f32,
    pub y: f32,
    /// Where the glyph's cluster starts in the run's text (bytes).
    pub cluster: u32,
}

/// One run of a shaped line, drawn in one font.
#[derive(Debug, Clone)]
pub struct ShapedRun {
    /// Index of the configured font, or `None` for the built-in Helvetica (no font loaded).
    pub font: Option<usize>,
    /// The run's text in reading order (see [`Typesetter::draw`] for how the PDF carries it).
    pub text: String,
    pub rtl: bool,
    pub glyphs: Vec<Glyph>,
}

/// A line of text after shaping: its runs left to right, and its width in ems.
#[derive(Debug, Clone)]
pub struct Shaped {
    pub runs: Vec<ShapedRun>,
    pub width: f32,
}

/// Helvetica's widths, roughly: enough to place Latin-1 text when no font could be read.
fn helvetica_width(c: char) -> f32 {
    match c {
        'i' | 'j' | 'l' | '.' | ',' | ' ' | '\'' | '|' | '!' | ':' | ';' => 0.28,
        'm' | 'w' | 'M' | 'W' | '@' => 0.85,
        c if c.is_ascii_uppercase() => 0.67,
        _ => 0.56,
    }
}

/// Shapes lines with the configured fonts, remembering the lines of one document (a card
/// draws the same numbers and words many times) and the characters no font has.
pub(super) struct Typesetter<'f> {
    fonts: &'f Loaded,
    ids: Vec<Option<FontId>>,
    lines: HashMap<String, Arc<Shaped>>,
    /// Characters no configured font has, named in the job's warnings.
    pub(super) missing: std::collections::BTreeSet<char>,
}

impl<'f> Typesetter<'f> {
    pub(super) fn new(fonts: &'f Loaded) -> Typesetter<'f> {
        Typesetter {
            fonts,
            ids: vec![None; fonts.fonts.len()],
            lines: HashMap::new(),
            missing: Default::default(),
        }
    }

    /// `line` shaped: control characters print as spaces.
    pub(super) fn shape(&mut self, line: &str) -> Arc<Shaped> {
        if let Some(shaped) = self.lines.get(line) {
            return shaped.clone();
        }
        let printable: String = line
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        let shaped = Arc::new(self.shape_line(&printable));
        self.lines.insert(line.to_owned(), shaped.clone());
        shaped
    }

    fn shape_line(&mut self, line: &str) -> Shaped {
        let fonts = &self.fonts.fonts;
        if fonts.is_empty() {
            return self.helvetica(line);
        }
        let runs = text_runs::runs(line, fonts.len(), |f, c| fonts[f].has(c));
        let mut out = Vec::with_capacity(runs.len());
        let mut pen = 0.0f32;
        for run in runs {
            let text = &line[run.range.clone()];
            let font = match run.font {
                Some(font) => font,
                None => {
                    // The first font's .notdef, a visible box, stands for each character.
                    self.missing
                        .extend(text.chars().filter(|c| !c.is_whitespace()));
                    0
                }
            };
            let glyphs = shape_run(&fonts[font], text, &run, &mut pen);
            out.push(ShapedRun {
                font: Some(font),
                text: text.to_owned(),
                rtl: run.rtl,
                glyphs,
            });
        }
        Shaped {
            runs: out,
            width: pen,
        }
    }

    /// Latin-1 in the built-in Helvetica, `?` for the rest: the last resort when no
    /// configured font could be read.
    fn helvetica(&mut self, line: &str) -> Shaped {
        let text: String = line
            .chars()
            .filter(|&c| !text_runs::is_bidi_control(c))
            .map(|c| {
                if (c as u32) <= 0xFF {
                    c
                } else {
                    self.missing.insert(c);
                    '?'
                }
            })
            .collect();
        let width = text.chars().map(helvetica_width).sum();
        Shaped {
            runs: vec![ShapedRun {
                font: None,
                text,
                rtl: false,
                glyphs: Vec::new(),
            }],
            width,
        }
    }

    /// The width of `line` at `size` points.
    pub(super) fn width(&mut self, line: &str, size: f32) -> f32 {
        self.shape(line).width * size
    }

    /// The ops that draw `line` with its start at (x, y) on the baseline.
    ///
    /// How a reader gets the text back: a left-to-right run is a marked-content span whose
    /// `/ActualText` is its text, since the glyphs of an Indic syllable come in another order
    /// than its letters (and one glyph may stand for several). A right-to-left run instead
    /// gives each glyph the text of its cluster (the font's `/ToUnicode`): readers such as
    /// poppler put right-to-left glyphs back in reading order themselves, and reversed the
    /// text of a span once more.
    pub(super) fn draw(
        &mut self,
        doc: &mut PdfDocument,
        ops: &mut Vec<Op>,
        line: &str,
        (x, y): (f32, f32),
        size: f32,
        color: Color,
    ) {
        let shaped = self.shape(line);
        for run in &shaped.runs {
            let handle = match run.font {
                Some(font) => match self.font_id(doc, font) {
                    Some(id) => PdfFontHandle::External(id),
                    None => continue,
                },
                None => PdfFontHandle::Builtin(BuiltinFont::Helvetica),
            };
            if !run.rtl {
                ops.push(Op::BeginMarkedContentWithProperties {
                    tag: "Span".into(),
                    properties: DictItem::Dict {
                        map: [("ActualText".to_owned(), utf16_text(&run.text))].into(),
                    },
                });
            }
            ops.push(Op::StartTextSection);
            ops.push(Op::SetFillColor { col: color.clone() });
            ops.push(Op::SetFont {
                font: handle,
                size: Pt(size),
            });
            if run.font.is_none() {
                ops.push(Op::SetTextCursor {
                    pos: printpdf::Point { x: Pt(x), y: Pt(y) },
                });
                ops.push(Op::ShowText {
                    items: vec![TextItem::Text(run.text.clone())],
                });
            }
            // One positioned glyph at a time: printpdf merges the glyphs of a baseline into
            // one `TJ`, its kerning numbers computed from the widths it embeds, so each glyph
            // lands where the shaper put it; a mark raised or lowered starts its own.
            let mut clusters_seen = std::collections::HashSet::new();
            for glyph in &run.glyphs {
                let text = if run.rtl {
                    // The first glyph of a cluster carries its text, the others none.
                    Some(if clusters_seen.insert(glyph.cluster) {
                        cluster_text(run, glyph.cluster).to_owned()
                    } else {
                        String::new()
                    })
                } else {
                    None
                };
                ops.push(Op::SetTextMatrix {
                    matrix: TextMatrix::Translate(Pt(x + glyph.x * size), Pt(y + glyph.y * size)),
                });
                ops.push(Op::ShowText {
                    items: vec![TextItem::GlyphIds(vec![Codepoint {
                        gid: glyph.id,
                        offset: 0.0,
                        cid: text,
                    }])],
                });
            }
            ops.push(Op::EndTextSection);
            if !run.rtl {
                ops.push(Op::EndMarkedContentWithProperties);
            }
        }
    }

    fn font_id(&mut self, doc: &mut PdfDocument, font: usize) -> Option<FontId> {
        if let Some(id) = &self.ids[font] {
            return Some(id.clone());
        }
        let id = doc.add_font(self.fonts.fonts[font].pdf()?);
        self.ids[font] = Some(id.clone());
        Some(id)
    }
}

/// The text of the cluster of `run` that starts at byte `start`: up to the next cluster's start.
fn cluster_text(run: &ShapedRun, start: u32) -> &str {
    let end = run
        .glyphs
        .iter()
        .map(|g| g.cluster)
        .filter(|&c| c > start)
        .min()
        .unwrap_or(run.text.len() as u32);
    run.text
        .get(start as usize..end as usize)
        .unwrap_or_default()
}

/// A PDF text string in UTF-16BE with its byte-order mark, as `/ActualText` wants it.
fn utf16_text(text: &str) -> DictItem {
    let mut data = vec![0xFE, 0xFF];
    for unit in text.encode_utf16() {
        data.extend(unit.to_be_bytes());
    }
    DictItem::String {
        data,
        literal: false,
    }
}

/// Shapes `text`, one run, with `font`; its glyphs placed from `pen` (in ems), which moves on
/// by the run's advance.
fn shape_run(font: &FontFile, text: &str, run: &Run, pen: &mut f32) -> Vec<Glyph> {
    let face = font.face.borrow_dependent();
    let script = rustybuzz::Script::from_iso15924_tag(rustybuzz::ttf_parser::Tag::from_bytes(
        &iso15924(run.script),
    ))
    .filter(|_| run.script != unicode_script::Script::Common)
    .unwrap_or(rustybuzz::script::LATIN);
    let mut buffer = UnicodeBuffer::new();
    buffer.push_str(text);
    buffer.set_direction(direction(run.rtl));
    buffer.set_script(script);
    let plan = font.plan(script, run.rtl);
    let shaped = rustybuzz::shape_with_plan(face, &plan, buffer);
    let em = font.units_per_em;
    let mut glyphs = Vec::with_capacity(shaped.len());
    for (info, position) in shaped.glyph_infos().iter().zip(shaped.glyph_positions()) {
        glyphs.push(Glyph {
            id: info.glyph_id as u16,
            x: *pen + position.x_offset as f32 / em,
            y: position.y_offset as f32 / em,
            cluster: info.cluster,
        });
        *pen += position.x_advance as f32 / em;
    }
    glyphs
}

/// The ISO 15924 code of a script (`Deva`), as 4 bytes.
fn iso15924(script: unicode_script::Script) -> [u8; 4] {
    let mut tag = [b' '; 4];
    for (slot, byte) in tag.iter_mut().zip(script.short_name().bytes()) {
        *slot = byte;
    }
    tag
}
