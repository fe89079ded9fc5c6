//! Report cards print names in every script of India, Arabic and Urdu, Chinese, Japanese,
//! Korean and Latin with diacritics as HarfBuzz shapes them, and read like a card a school
//! sends to parents (issue 15).
//!
//! The oracle is HarfBuzz itself (`hb-shape` of Debian's `libharfbuzz-bin`): for each name, the
//! glyphs the PDF's content stream draws, read back with qpdf, are the glyphs `hb-shape` gives
//! for the same font file and text, at the positions it gives. The PDF embeds a subset of each
//! font with glyphs renumbered, so a drawn glyph is matched to the font's own by its outline
//! and advance (TrueType), or by its CID (CID-keyed CFF, the CJK fonts). Page images
//! (`pdftoppm`) are written to `target/test-artifacts/cards/` for a person to look at.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine;
use common::TestEnv;
use serde_json::{Value, json};
use sqlx::PgPool;
use ttf_parser::{Face, GlyphId, OutlineBuilder};

/// A name in each script the issue lists.
const NAMES: [(&str, &str); 15] = [
    ("latin", "Zoë Ångström-Łukasiewicz Nguyễn José"),
    ("devanagari", "प्रिया शर्मा"),
    ("bengali", "সৌমিত্র চট্টোপাধ্যায়"),
    ("gurmukhi", "ਹਰਪ੍ਰੀਤ ਕੌਰ"),
    ("gujarati", "પ્રિયંકા પટેલ"),
    ("odia", "ସୌମ୍ୟ ପଟ୍ଟନାୟକ"),
    ("tamil", "செல்வி தமிழ்ச்செல்வன்"),
    ("telugu", "శ్రీనివాస్ రెడ్డి"),
    ("kannada", "ಶ್ರೀಕಾಂತ್ ಹೆಗ್ಡೆ"),
    ("malayalam", "ശ്രീക്കുട്ടി മേനോൻ"),
    ("arabic", "فاطمة الزهراء"),
    ("urdu", "عائشہ صدیقی"),
    ("chinese", "张伟"),
    ("japanese", "さとう ゆうこ"),
    ("korean", "김민준"),
];

fn test_def() -> Value {
    json!({
        "test_id": "names", "key_version": 1, "title": "Mock test 3",
        "marking": {"correct": 4, "incorrect": -1},
        "sections": [
            {"id": "maths", "title": "Mathematics", "questions": [
                {"id": "m1", "type": "mcq", "answer": "A"},
                {"id": "m2", "type": "mcq", "answer": "B"}
            ]},
            {"id": "physics", "title": "Physics", "questions": [
                {"id": "p1", "type": "mcq", "answer": "C"},
                {"id": "p2", "type": "mcq", "answer": "D"}
            ]}
        ]
    })
}

/// Scores an attempt carrying `name` and exports its report card; returns the job's result.
async fn card_of(env: &TestEnv, attempt_id: &str, name: &str, responses: Value) -> Value {
    let payload = json!({
        "test": test_def(),
        "attempt": {"attempt_id": attempt_id, "candidate_id": format!("id-{attempt_id}"),
                    "candidate_name": name, "responses": responses},
        "submitted_at": "2026-11-22T09:06:42Z",
    });
    let id = env.enqueue("score.attempt", &payload.to_string(), &[]);
    env.wait_for_state(&id, "completed").await;
    let id = env.enqueue(
        "export.report_pdf",
        &json!({"attempt_id": attempt_id}).to_string(),
        &[],
    );
    let result = env.wait_for_state(&id, "completed").await.result.unwrap();
    common::tool("qpdf", &["--check", result["path"].as_str().unwrap()]);
    result
}

/// Where page images go: `target/test-artifacts/cards/`.
fn artifacts() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("the target directory")
        .join("test-artifacts/cards");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Renders every page of `pdf` to `NAME-N.png` at 80 dpi and prints their paths.
fn page_images(pdf: &str, name: &str) -> Vec<PathBuf> {
    let dir = artifacts();
    let prefix = dir.join(name);
    common::tool(
        "pdftoppm",
        &["-png", "-r", "80", pdf, prefix.to_str().unwrap()],
    );
    let mut images: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(&format!("{name}-"))
        })
        .collect();
    images.sort();
    for image in &images {
        println!("page image: {}", image.display());
    }
    images
}

#[sqlx::test]
async fn names_in_every_script_are_drawn_as_harfbuzz_shapes_them(pool: PgPool) {
    let env = TestEnv::new(pool).await;
    let _daemon = env.spawn_daemon_with_exports();
    let responses = json!([{"question": "m1", "answer": "A"}, {"question": "p1", "answer": "A"}]);
    let mut failures = Vec::new();
    for (script, name) in NAMES {
        let result = card_of(&env, script, name, responses.clone()).await;
        assert_eq!(result["warnings"], json!([]), "{script}: {result}");
        let path = result["path"].as_str().unwrap();
        page_images(path, script);
        let text = common::tool("pdftotext", &["-enc", "UTF-8", path, "-"]);
        if !text.contains(name) {
            failures.push(format!("{script}: pdftotext has no {name:?} in\n{text}"));
        }
        let runs = drawn_runs(Path::new(path));
        let Some(drawn) = name_glyphs(&runs, name) else {
            failures.push(format!(
                "{script}: no drawn runs spell {name:?}: {:?}",
                runs.iter().map(|r| &r.text).collect::<Vec<_>>()
            ));
            continue;
        };
        let font = font_for(name);
        let expected = hb_shape(&font, name);
        if let Err(e) = compare(&font, &drawn, &expected) {
            failures.push(format!("{script} ({name}): {e}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[sqlx::test]
async fn a_card_names_the_school_and_reads_for_parents(pool: PgPool) {
    let logo = std::env::temp_dir().join(format!("logo-{}.png", ulid::Ulid::new()));
    std::fs::write(
        &logo,
        base64::engine::general_purpose::STANDARD
            .decode(
                "iVBORw0KGgoAAAANSUhEUgAAABAAAAAQCAIAAACQkWg2AAAAPElEQVR4nO3LERYAIQBAwU4SL8dx/\
                 DmO4zheXv4cd8C9R6/xCREfTJixIFixYceBE1/8UFy4Mdxww7nhB7VTWRBd4tK2AAAAAElFTkSuQmCC",
            )
            .unwrap(),
    )
    .unwrap();
    let config = format!(
        "{}\n[exports]\ninstitution = \"Kendriya Vidyalaya No. 2, Pune\"\ntimezone = \
         \"Asia/Kolkata\"\nlogo = \"{}\"\n",
        common::FAST_CONFIG,
        logo.display()
    );
    let env = TestEnv::with_config(pool, &config).await;
    let _daemon = env.spawn_daemon_with_exports();
    // 60 questions, so the card runs onto a second page; maths goes negative.
    let mut test = test_def();
    test["sections"][0]["questions"] = json!(
        (1..=30)
            .map(|i| json!({"id": format!("m{i}"), "type": "mcq", "answer": "A"}))
            .collect::<Vec<_>>()
    );
    test["sections"][1]["questions"] = json!(
        (1..=30)
            .map(|i| json!({"id": format!("p{i}"), "type": "mcq", "answer": "A"}))
            .collect::<Vec<_>>()
    );
    let mut responses: Vec<Value> = (1..=5)
        .map(|i| json!({"question": format!("m{i}"), "answer": "B"}))
        .collect();
    responses.extend((1..=7).map(|i| json!({"question": format!("p{i}"), "answer": "A"})));
    // A name of 27 words: wrapped over lines, never cut; one character no font has.
    let long_name = format!(
        "{} प्रिया शर्मा \u{E000}",
        (1..=25)
            .map(|i| format!("Venkata{i}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let payload = json!({
        "test": test,
        "attempt": {"attempt_id": "parents-1", "candidate_id": "cand-77",
                    "candidate_name": long_name, "responses": responses},
        "submitted_at": "2026-11-22T09:06:42Z",
    });
    let id = env.enqueue("score.attempt", &payload.to_string(), &[]);
    env.wait_for_state(&id, "completed").await;
    let id = env.enqueue("score.finalize_test", r#"{"test_id": "names"}"#, &[]);
    env.wait_for_state(&id, "completed").await;
    let id = env.enqueue("export.report_pdf", r#"{"attempt_id": "parents-1"}"#, &[]);
    let result = env.wait_for_state(&id, "completed").await.result.unwrap();
    let path = result["path"].as_str().unwrap();
    common::tool("qpdf", &["--check", path]);
    page_images(path, "parents");
    let _ = std::fs::remove_file(&logo);

    let warnings = result["warnings"].to_string();
    assert!(
        warnings.contains("U+E000") && result["warnings"].as_array().unwrap().len() == 1,
        "{warnings}"
    );
    let pages = result["pages"].as_u64().unwrap();
    assert!(pages >= 2, "{result}");
    let text = common::tool("pdftotext", &["-enc", "UTF-8", path, "-"]);
    let words: Vec<&str> = text.split_whitespace().collect();
    for i in 1..=25 {
        let word = format!("Venkata{i}");
        assert!(words.contains(&word.as_str()), "{word} is cut: {text}");
    }
    let page_1: String = text
        .split('\u{c}')
        .next()
        .unwrap()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    let name_words = long_name.replace('\u{E000}', "");
    let name_words = name_words.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        page_1.contains(name_words.trim()),
        "the whole name, in order, on page 1: {page_1}"
    );
    for expected in [
        "Kendriya Vidyalaya No. 2, Pune",
        "22 November 2026, 14:36 IST",
        "cand-77",
        "Mathematics",
        "Physics",
        // 7 correct of 4 marks, 5 incorrect of -1: 23 out of 240.
        "23 out of 240",
        "100.00",
        "प्रिया शर्मा",
    ] {
        assert!(text.contains(expected), "no {expected:?} in\n{text}");
    }
    assert!(!text.contains("Mathematics (maths)"), "{text}");
    assert!(!text.contains("2026-11-22T09:06:42Z"), "{text}");
    // Every page names the candidate and its number.
    for page in 1..=pages {
        let page_text = common::tool(
            "pdftotext",
            &[
                "-enc",
                "UTF-8",
                "-f",
                &page.to_string(),
                "-l",
                &page.to_string(),
                path,
                "-",
            ],
        );
        assert!(
            page_text.contains("Venkata1 ")
                && page_text.contains(&format!("Page {page} of {pages}")),
            "page {page}: {page_text}"
        );
    }
    // The logo is on the card.
    let images = common::tool("pdfimages", &["-list", path]);
    assert_eq!(images.lines().count(), 3, "one image: {images}");
    // Maths' -5 marks: a red bar to the left of the zero axis.
    let content = page_content(Path::new(path), 0);
    assert!(content.contains("0.78 0.25 0.2 rg"), "no negative bar");
    let runs = drawn_runs(Path::new(path));
    assert!(
        runs.iter()
            .any(|r| r.text.contains('\u{E000}') && r.glyphs.iter().any(|g| g.code == 0)),
        "the missing character prints as the font's .notdef box"
    );
}

// ------------------------------------------------------------------------------------------
// The oracle: hb-shape

/// One glyph as HarfBuzz places it, in font units.
#[derive(Debug)]
struct HbGlyph {
    gid: u16,
    dx: f32,
    dy: f32,
    ax: f32,
}

/// A configured font file and face.
struct FontRef {
    path: PathBuf,
    index: u32,
}

/// The first default font that has every character of `name`, as the daemon picks it.
fn font_for(name: &str) -> FontRef {
    for spec in quizworker::config::DEFAULT_FONTS {
        let (path, index) = quizworker::families::exports::typeset::font_spec(Path::new(spec));
        let bytes = std::fs::read(&path).unwrap();
        let face = Face::parse(&bytes, index).unwrap();
        if name.chars().all(|c| face.glyph_index(c).is_some()) {
            return FontRef { path, index };
        }
    }
    panic!("no default font has {name}");
}

fn hb_shape(font: &FontRef, text: &str) -> Vec<HbGlyph> {
    let output = Command::new("hb-shape")
        .env("LANG", "C.UTF-8")
        .args([
            "--no-glyph-names",
            "--output-format=json",
            &format!("--face-index={}", font.index),
            font.path.to_str().unwrap(),
            text,
        ])
        .output()
        .expect("hb-shape runs (libharfbuzz-bin; scripts/services.sh installs it)");
    assert!(output.status.success(), "{output:?}");
    let glyphs: Vec<Value> = serde_json::from_slice(&output.stdout).unwrap();
    glyphs
        .iter()
        .map(|g| HbGlyph {
            gid: g["g"].as_u64().unwrap() as u16,
            dx: g["dx"].as_f64().unwrap() as f32,
            dy: g["dy"].as_f64().unwrap() as f32,
            ax: g["ax"].as_f64().unwrap() as f32,
        })
        .collect()
}

/// The drawn glyphs of `name` against HarfBuzz's: same glyphs, same positions to 1/50 pt.
fn compare(font: &FontRef, drawn: &NameGlyphs, expected: &[HbGlyph]) -> Result<(), String> {
    let bytes = std::fs::read(&font.path).unwrap();
    let face = Face::parse(&bytes, font.index).unwrap();
    let upem = f32::from(face.units_per_em());
    let scale = drawn.size / upem;
    if drawn.glyphs.len() != expected.len() {
        return Err(format!(
            "{} glyphs drawn, HarfBuzz gives {}: drawn {:?}, expected {:?}",
            drawn.glyphs.len(),
            expected.len(),
            drawn.glyphs,
            expected
        ));
    }
    let mut pen = 0.0;
    let (x0, y0) = (drawn.glyphs[0].x, drawn.glyphs[0].y);
    let (ex0, ey0) = (expected[0].dx * scale, expected[0].dy * scale);
    for (i, (glyph, hb)) in drawn.glyphs.iter().zip(expected).enumerate() {
        if !drawn.program.same_glyph(glyph.code, &face, hb.gid) {
            return Err(format!(
                "glyph {i}: drawn code {} is not the font's glyph {} (drawn {:?}, expected {:?})",
                glyph.code, hb.gid, drawn.glyphs, expected
            ));
        }
        let want = (pen * scale + hb.dx * scale - ex0, hb.dy * scale - ey0);
        let got = (glyph.x - x0, glyph.y - y0);
        if (want.0 - got.0).abs() > 0.02 || (want.1 - got.1).abs() > 0.02 {
            return Err(format!(
                "glyph {i} (gid {}): at {got:?} from the first, HarfBuzz puts it at {want:?}",
                hb.gid
            ));
        }
        pen += hb.ax;
    }
    Ok(())
}

// ------------------------------------------------------------------------------------------
// What the PDF draws, read back with qpdf

#[derive(Debug, Clone, Copy)]
struct DrawnGlyph {
    code: u16,
    x: f32,
    y: f32,
}

/// The embedded font program of a drawn run.
#[derive(Clone)]
enum Program {
    /// `/FontFile2`: a TrueType subset, glyphs renumbered.
    TrueType(Vec<u8>),
    /// `/FontFile3`: CFF; under Identity-H a code is a CID (CID-keyed) or a glyph id.
    Cff,
}

impl Program {
    /// Whether code `code` of this program draws glyph `gid` of the original font `face`.
    fn same_glyph(&self, code: u16, face: &Face<'_>, gid: u16) -> bool {
        match self {
            Program::TrueType(bytes) => {
                let Ok(subset) = Face::parse(bytes, 0) else {
                    return false;
                };
                outline(&subset, code) == outline(face, gid)
                    && subset.glyph_hor_advance(GlyphId(code))
                        == face.glyph_hor_advance(GlyphId(gid))
            }
            Program::Cff => {
                let cid = face
                    .tables()
                    .cff
                    .and_then(|cff| cff.glyph_cid(GlyphId(gid)))
                    .unwrap_or(gid);
                code == cid
            }
        }
    }
}

/// A glyph's outline as a list of drawing commands, for comparing two fonts' glyphs.
fn outline(face: &Face<'_>, gid: u16) -> Vec<(char, Vec<i32>)> {
    struct Commands(Vec<(char, Vec<i32>)>);
    impl OutlineBuilder for Commands {
        fn move_to(&mut self, x: f32, y: f32) {
            self.0.push(('M', vec![x as i32, y as i32]));
        }
        fn line_to(&mut self, x: f32, y: f32) {
            self.0.push(('L', vec![x as i32, y as i32]));
        }
        fn quad_to(&mut self, x1: f32, y1: f32, x: f32, y: f32) {
            self.0
                .push(('Q', vec![x1 as i32, y1 as i32, x as i32, y as i32]));
        }
        fn curve_to(&mut self, x1: f32, y1: f32, x2: f32, y2: f32, x: f32, y: f32) {
            self.0.push((
                'C',
                vec![
                    x1 as i32, y1 as i32, x2 as i32, y2 as i32, x as i32, y as i32,
                ],
            ));
        }
        fn close(&mut self) {
            self.0.push(('Z', vec![]));
        }
    }
    let mut commands = Commands(Vec::new());
    face.outline_glyph(GlyphId(gid), &mut commands);
    commands.0
}

/// A run of text as drawn: its `/ActualText`, font and size, and its glyphs on the page.
struct DrawnRun {
    text: String,
    program: Program,
    size: f32,
    glyphs: Vec<DrawnGlyph>,
}

/// The glyphs of the consecutive runs whose texts spell `name`.
struct NameGlyphs {
    program: Program,
    size: f32,
    glyphs: Vec<DrawnGlyph>,
}

fn name_glyphs(runs: &[DrawnRun], name: &str) -> Option<NameGlyphs> {
    for start in 0..runs.len() {
        let mut text = String::new();
        for end in start..runs.len() {
            text.push_str(&runs[end].text);
            if text == name {
                return Some(NameGlyphs {
                    program: runs[start].program.clone(),
                    size: runs[start].size,
                    glyphs: runs[start..=end]
                        .iter()
                        .flat_map(|r| r.glyphs.iter().copied())
                        .collect(),
                });
            }
            if !name.starts_with(&text) {
                break;
            }
        }
    }
    None
}

/// The PDF as qpdf's JSON (version 2), streams decoded.
struct PdfObjects {
    json: Value,
}

impl PdfObjects {
    fn read(pdf: &Path) -> PdfObjects {
        let text = common::tool(
            "qpdf",
            &[
                "--json=2",
                "--json-stream-data=inline",
                "--decode-level=generalized",
                pdf.to_str().unwrap(),
            ],
        );
        PdfObjects {
            json: serde_json::from_str(&text).unwrap(),
        }
    }

    fn object(&self, reference: &str) -> &Value {
        &self.json["qpdf"][1][format!("obj:{reference}")]
    }

    /// A value, following it if it is a reference.
    fn resolve<'a>(&'a self, value: &'a Value) -> &'a Value {
        match value.as_str() {
            Some(r) if r.ends_with(" R") => {
                let object = self.object(r);
                if object.get("value").is_some() {
                    &object["value"]
                } else {
                    &object["stream"]["dict"]
                }
            }
            _ => value,
        }
    }

    fn stream_data(&self, reference: &str) -> Vec<u8> {
        let data = self.object(reference)["stream"]["data"].as_str().unwrap();
        base64::engine::general_purpose::STANDARD
            .decode(data)
            .unwrap()
    }

    fn pages(&self) -> Vec<Value> {
        self.json["pages"].as_array().unwrap().clone()
    }
}

/// The content of page `n` (from 0), decoded.
fn page_content(pdf: &Path, n: usize) -> String {
    let objects = PdfObjects::read(pdf);
    let page = &objects.pages()[n];
    let mut content = Vec::new();
    for part in page["contents"].as_array().unwrap() {
        content.extend(objects.stream_data(part.as_str().unwrap()));
    }
    String::from_utf8_lossy(&content).into_owned()
}

/// A drawn font: its glyph widths (thousandths of an em), program, and the text of each code
/// (`/ToUnicode`).
struct DrawnFont {
    widths: HashMap<u16, f32>,
    program: Program,
    to_unicode: HashMap<u16, String>,
}

/// The `bfchar` and `bfrange` entries of a `/ToUnicode` CMap.
fn to_unicode(data: &[u8]) -> HashMap<u16, String> {
    let code = |bytes: &[u8]| u16::from_be_bytes([bytes[0], *bytes.get(1).unwrap_or(&0)]);
    let mut map = HashMap::new();
    let mut operands = Vec::new();
    for token in tokens(data) {
        match token {
            Token::Op(op) if op == "endbfchar" => {
                for pair in operands.chunks(2) {
                    if let [Token::Str(from), Token::Str(to)] = pair {
                        map.insert(code(from), utf16(to));
                    }
                }
                operands.clear();
            }
            Token::Op(op) if op == "endbfrange" => {
                for triple in operands.chunks(3) {
                    if let [Token::Str(first), Token::Str(last), Token::Str(to)] = triple {
                        let start = utf16(to);
                        for (k, c) in (code(first)..=code(last)).enumerate() {
                            let mut chars: Vec<char> = start.chars().collect();
                            if let Some(end) = chars.last_mut() {
                                *end = char::from_u32(*end as u32 + k as u32).unwrap_or(*end);
                            }
                            map.insert(c, chars.into_iter().collect());
                        }
                    }
                }
                operands.clear();
            }
            Token::Op(_) => operands.clear(),
            other => operands.push(other),
        }
    }
    map
}

fn drawn_font(objects: &PdfObjects, font: &Value) -> DrawnFont {
    let font = objects.resolve(font);
    let descendant = objects.resolve(&font["/DescendantFonts"]);
    let descendant = objects.resolve(&descendant[0]);
    let mut widths = HashMap::new();
    let w = objects.resolve(&descendant["/W"]);
    let w = w.as_array().cloned().unwrap_or_default();
    let mut i = 0;
    while i < w.len() {
        let first = w[i].as_f64().unwrap() as u16;
        match &w[i + 1] {
            Value::Array(list) => {
                for (k, width) in list.iter().enumerate() {
                    widths.insert(first + k as u16, width.as_f64().unwrap() as f32);
                }
                i += 2;
            }
            last => {
                let last = last.as_f64().unwrap() as u16;
                let width = w[i + 2].as_f64().unwrap() as f32;
                for code in first..=last {
                    widths.insert(code, width);
                }
                i += 3;
            }
        }
    }
    let descriptor = objects.resolve(&descendant["/FontDescriptor"]);
    let program = if let Some(file) = descriptor["/FontFile2"].as_str() {
        Program::TrueType(objects.stream_data(file))
    } else {
        Program::Cff
    };
    let to_unicode = font["/ToUnicode"]
        .as_str()
        .map(|r| to_unicode(&objects.stream_data(r)))
        .unwrap_or_default();
    DrawnFont {
        widths,
        program,
        to_unicode,
    }
}

/// Every run of text the PDF draws, page by page: its text is the `/ActualText` of its span,
/// or for a run outside a span (right to left) its glyphs' `/ToUnicode` text, right to left.
fn drawn_runs(pdf: &Path) -> Vec<DrawnRun> {
    let objects = PdfObjects::read(pdf);
    let mut runs = Vec::new();
    for page in objects.pages() {
        let page_dict = objects.resolve(&page["object"]);
        let resources = objects.resolve(&page_dict["/Resources"]);
        let font_dict = objects.resolve(&resources["/Font"]);
        let mut fonts: HashMap<String, DrawnFont> = HashMap::new();
        let mut content = Vec::new();
        for part in page["contents"].as_array().unwrap() {
            content.extend(objects.stream_data(part.as_str().unwrap()));
        }
        let mut operands: Vec<Token> = Vec::new();
        let mut font = String::new();
        let mut size = 0.0f32;
        let mut origin = (0.0f32, 0.0f32);
        let mut pen = 0.0f32;
        let mut run: Option<DrawnRun> = None;
        // A run outside any span, whose text comes from the font's /ToUnicode.
        let mut unmarked = false;
        for token in tokens(&content) {
            let Token::Op(op) = token else {
                operands.push(token);
                continue;
            };
            match op.as_str() {
                "BDC" => {
                    let text = operands.iter().find_map(|t| match t {
                        Token::Dict(entries) => entries.iter().find_map(|(k, v)| match v {
                            Token::Str(bytes) if k == "ActualText" => Some(utf16(bytes)),
                            _ => None,
                        }),
                        _ => None,
                    });
                    if let Some(text) = text {
                        run = Some(DrawnRun {
                            text,
                            program: Program::Cff,
                            size: 0.0,
                            glyphs: Vec::new(),
                        });
                    }
                }
                "EMC" => runs.extend(run.take()),
                "BT" if run.is_none() => {
                    unmarked = true;
                    run = Some(DrawnRun {
                        text: String::new(),
                        program: Program::Cff,
                        size: 0.0,
                        glyphs: Vec::new(),
                    });
                }
                "ET" if unmarked => {
                    unmarked = false;
                    if let Some(mut done) = run.take() {
                        let map = &fonts[&font].to_unicode;
                        done.text = done
                            .glyphs
                            .iter()
                            .rev()
                            .map(|g| map.get(&g.code).cloned().unwrap_or_default())
                            .collect();
                        runs.push(done);
                    }
                }
                "Tf" => {
                    if let [Token::Name(name), Token::Num(s)] = &operands[..] {
                        font = name.clone();
                        size = *s;
                        if !fonts.contains_key(&font) {
                            let drawn = drawn_font(&objects, &font_dict[format!("/{font}")]);
                            fonts.insert(font.clone(), drawn);
                        }
                        if let Some(run) = &mut run {
                            run.program = fonts[&font].program.clone();
                            run.size = size;
                        }
                    }
                }
                "Tm" => {
                    if let [.., Token::Num(x), Token::Num(y)] = &operands[..] {
                        origin = (*x, *y);
                        pen = 0.0;
                    }
                }
                "TJ" | "Tj" => {
                    let items: Vec<Token> = match operands.pop() {
                        Some(Token::Array(items)) => items,
                        Some(other) => vec![other],
                        None => Vec::new(),
                    };
                    for item in items {
                        match item {
                            Token::Str(bytes) => {
                                for pair in bytes.chunks(2) {
                                    let code =
                                        u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
                                    if let Some(run) = &mut run {
                                        run.glyphs.push(DrawnGlyph {
                                            code,
                                            x: origin.0 + pen,
                                            y: origin.1,
                                        });
                                    }
                                    let width = fonts
                                        .get(&font)
                                        .and_then(|f| f.widths.get(&code).copied())
                                        .unwrap_or(0.0);
                                    pen += width / 1000.0 * size;
                                }
                            }
                            Token::Num(n) => pen -= n / 1000.0 * size,
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
            operands.clear();
        }
    }
    runs
}

fn utf16(bytes: &[u8]) -> String {
    let bytes = bytes.strip_prefix(&[0xFE, 0xFF]).unwrap_or(bytes);
    let units: Vec<u16> = bytes
        .chunks(2)
        .map(|p| u16::from_be_bytes([p[0], *p.get(1).unwrap_or(&0)]))
        .collect();
    String::from_utf16_lossy(&units)
}

/// A token of a content stream.
#[derive(Debug, Clone)]
enum Token {
    Num(f32),
    Name(String),
    Str(Vec<u8>),
    Array(Vec<Token>),
    Dict(Vec<(String, Token)>),
    Op(String),
}

/// The tokens of a content stream, arrays and dictionaries nested.
fn tokens(data: &[u8]) -> Vec<Token> {
    let mut i = 0;
    let mut out = Vec::new();
    while let Some(token) = next_token(data, &mut i) {
        out.push(token);
    }
    out
}

fn next_token(data: &[u8], i: &mut usize) -> Option<Token> {
    let delimiter = |b: u8| b"()<>[]{}/%".contains(&b) || b.is_ascii_whitespace();
    loop {
        while *i < data.len() && data[*i].is_ascii_whitespace() {
            *i += 1;
        }
        if *i < data.len() && data[*i] == b'%' {
            while *i < data.len() && data[*i] != b'\n' {
                *i += 1;
            }
            continue;
        }
        break;
    }
    let b = *data.get(*i)?;
    match b {
        b'[' => {
            *i += 1;
            let mut items = Vec::new();
            loop {
                while *i < data.len() && data[*i].is_ascii_whitespace() {
                    *i += 1;
                }
                if data.get(*i) == Some(&b']') {
                    *i += 1;
                    return Some(Token::Array(items));
                }
                items.push(next_token(data, i)?);
            }
        }
        b'<' if data.get(*i + 1) == Some(&b'<') => {
            *i += 2;
            let mut entries = Vec::new();
            loop {
                while *i < data.len() && data[*i].is_ascii_whitespace() {
                    *i += 1;
                }
                if data.get(*i) == Some(&b'>') {
                    *i += 2;
                    return Some(Token::Dict(entries));
                }
                let Token::Name(key) = next_token(data, i)? else {
                    return None;
                };
                let value = next_token(data, i)?;
                entries.push((key, value));
            }
        }
        b'<' => {
            let end = *i + data[*i..].iter().position(|&c| c == b'>')?;
            let hex: Vec<u8> = data[*i + 1..end]
                .iter()
                .copied()
                .filter(|c| c.is_ascii_hexdigit())
                .collect();
            *i = end + 1;
            let bytes = hex
                .chunks(2)
                .map(|p| {
                    let text = std::str::from_utf8(p).unwrap();
                    u8::from_str_radix(&format!("{text:0<2}"), 16).unwrap()
                })
                .collect();
            Some(Token::Str(bytes))
        }
        b'(' => {
            let mut depth = 0;
            let mut bytes = Vec::new();
            *i += 1;
            while *i < data.len() {
                let c = data[*i];
                *i += 1;
                match c {
                    b'\\' => {
                        let e = data[*i];
                        *i += 1;
                        bytes.push(match e {
                            b'n' => b'\n',
                            b'r' => b'\r',
                            b't' => b'\t',
                            other => other,
                        });
                    }
                    b'(' => {
                        depth += 1;
                        bytes.push(c);
                    }
                    b')' if depth == 0 => break,
                    b')' => {
                        depth -= 1;
                        bytes.push(c);
                    }
                    _ => bytes.push(c),
                }
            }
            Some(Token::Str(bytes))
        }
        b'/' => {
            let start = *i + 1;
            *i += 1;
            while *i < data.len() && !delimiter(data[*i]) {
                *i += 1;
            }
            Some(Token::Name(
                String::from_utf8_lossy(&data[start..*i]).into_owned(),
            ))
        }
        _ => {
            let start = *i;
            while *i < data.len() && !delimiter(data[*i]) {
                *i += 1;
            }
            if *i == start {
                *i += 1;
                return next_token(data, i);
            }
            let word = String::from_utf8_lossy(&data[start..*i]).into_owned();
            Some(match word.parse::<f32>() {
                Ok(n) => Token::Num(n),
                Err(_) => Token::Op(word),
            })
        }
    }
}
