//! A line of text cut into the runs a shaping engine takes: one direction (the Unicode
//! bidirectional algorithm, UAX #9), one script (UAX #24) and one font each, in the order they
//! are drawn from left to right. Which font has which character is the caller's to say; the
//! shaping and the drawing are the daemon's (`src/families/exports/`).

use std::ops::Range;

use unicode_bidi::BidiInfo;
use unicode_script::{Script, UnicodeScript};

/// One run: shaped in one call, drawn where the previous run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    /// Bytes of the line, in logical (reading) order.
    pub range: Range<usize>,
    /// Right to left: the shaper gets it so and returns its glyphs in drawing order.
    pub rtl: bool,
    /// The run's script (`Common` only for a run of spaces, digits or punctuation alone).
    pub script: Script,
    /// The first font, by index, that has every character of the run; `None` if no font has
    /// them, and the run prints as placeholders.
    pub font: Option<usize>,
}

/// The runs of `line`, left to right. `has(font, c)`: whether font number `font` (of `fonts`)
/// has a glyph for `c`. A run takes the first font with all its characters; a run no single
/// font has is split, character by character, between the first fonts that have them, so that
/// a name in two scripts prints in the fonts of both. Spaces, digits, punctuation and combining
/// marks (scripts `Common` and `Inherited`) go with the text around them, as UAX #24 advises,
/// so that a name's words shape as one run.
pub fn runs(line: &str, fonts: usize, has: impl Fn(usize, char) -> bool) -> Vec<Run> {
    if line.is_empty() {
        return Vec::new();
    }
    let bidi = BidiInfo::new(line, None);
    let mut out = Vec::new();
    for paragraph in &bidi.paragraphs {
        let (levels, level_runs) = bidi.visual_runs(paragraph, paragraph.range.clone());
        for level_run in level_runs {
            let rtl = levels[level_run.start].is_rtl();
            let mut pieces = Vec::new();
            for (range, script) in script_runs(line, level_run) {
                font_runs(line, range, script, rtl, fonts, &has, &mut pieces);
            }
            // Inside a right-to-left run, the later pieces of the text are drawn first.
            if rtl {
                pieces.reverse();
            }
            out.extend(pieces);
        }
    }
    out
}

/// `range` cut where the script changes; `Common` and `Inherited` characters take the script
/// before them (or after them, at the start). Bidirectional controls are left out: they have
/// done their work in the ordering, and no font draws them.
fn script_runs(line: &str, range: Range<usize>) -> Vec<(Range<usize>, Script)> {
    let mut out: Vec<(Range<usize>, Script)> = Vec::new();
    let mut cut = false;
    for (i, c) in line[range.clone()].char_indices() {
        if is_bidi_control(c) {
            cut = true;
            continue;
        }
        let at = range.start + i;
        let end = at + c.len_utf8();
        let script = c.script();
        let neutral = matches!(script, Script::Common | Script::Inherited | Script::Unknown);
        match out.last_mut() {
            _ if std::mem::take(&mut cut) => {
                out.push((at..end, if neutral { Script::Common } else { script }));
            }
            Some((last, last_script)) if neutral || *last_script == script => {
                last.end = end;
            }
            Some((last, last_script)) if *last_script == Script::Common => {
                // A run of neutral characters only so far: it takes this script.
                last.end = end;
                *last_script = script;
            }
            _ => out.push((at..end, if neutral { Script::Common } else { script })),
        }
    }
    out
}

/// `text` as an isolate (FSI .. PDI): a line it is put in keeps the order of the text around
/// it, whichever direction `text` reads in. Without it, a footer that begins with an Arabic
/// name is a right-to-left line, and its Latin test title is drawn first, at the left.
pub fn isolate(text: &str) -> String {
    format!("\u{2068}{text}\u{2069}")
}

/// Characters that only steer the bidirectional algorithm: the marks (LRM, RLM, ALM), the
/// embeddings and overrides, and the isolates (LRI, RLI, FSI, PDI). Nothing draws them.
pub fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{200E}' | '\u{200F}' | '\u{061C}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// The pieces of one script run, each in one font (see [`runs`]).
fn font_runs(
    line: &str,
    range: Range<usize>,
    script: Script,
    rtl: bool,
    fonts: usize,
    has: &impl Fn(usize, char) -> bool,
    out: &mut Vec<Run>,
) {
    let text = &line[range.clone()];
    if let Some(font) = (0..fonts).find(|&f| text.chars().all(|c| has(f, c))) {
        out.push(Run {
            range,
            rtl,
            script,
            font: Some(font),
        });
        return;
    }
    let start = out.len();
    for (i, c) in text.char_indices() {
        let at = range.start + i;
        let end = at + c.len_utf8();
        let current = out[start..].last().map(|r| r.font);
        let font = match current {
            Some(Some(f)) if has(f, c) => Some(f),
            // A space or a mark no font of the run lacks stays with the run.
            Some(f) if c.is_whitespace() || c.script() == Script::Inherited => f,
            _ => (0..fonts).find(|&f| has(f, c)),
        };
        match out[start..].last_mut() {
            Some(last) if last.font == font => last.range.end = end,
            _ => out.push(Run {
                range: at..end,
                rtl,
                script,
                font,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Font 0 has Latin, font 1 Devanagari and the space, font 2 Arabic and the space.
    fn has(font: usize, c: char) -> bool {
        match font {
            0 => c.is_ascii(),
            1 => ('\u{0900}'..='\u{097F}').contains(&c) || c == ' ',
            2 => ('\u{0600}'..='\u{06FF}').contains(&c) || c == ' ',
            _ => false,
        }
    }

    fn texts(line: &str) -> Vec<(&str, bool, Option<usize>)> {
        runs(line, 3, has)
            .into_iter()
            .map(|r| (&line[r.range], r.rtl, r.font))
            .collect()
    }

    #[test]
    fn a_name_in_one_script_is_one_run_with_its_spaces() {
        assert_eq!(texts("प्रिया शर्मा"), [("प्रिया शर्मा", false, Some(1))]);
        assert_eq!(texts("Asha Rao"), [("Asha Rao", false, Some(0))]);
        assert_eq!(texts(""), []);
    }

    #[test]
    fn scripts_and_directions_split_a_line_into_runs_in_drawing_order() {
        assert_eq!(
            texts("Asha प्रिया"),
            [("Asha ", false, Some(0)), ("प्रिया", false, Some(1))]
        );
        // An Arabic name in a Latin line: its run is right to left, after the Latin one.
        assert_eq!(
            texts("Name: فاطمة زهراء"),
            [("Name: ", false, Some(0)), ("فاطمة زهراء", true, Some(2))]
        );
    }

    /// A name isolated (FSI .. PDI) keeps a line in the order of the text around it, whatever
    /// the name's direction; the controls themselves are in no run.
    #[test]
    fn isolates_order_the_line_and_are_not_drawn() {
        let line = format!("{} - Mock test 3", isolate("فاطمة زهراء"));
        let line = line.as_str();
        assert_eq!(
            texts(line),
            [
                ("فاطمة زهراء", true, Some(2)),
                (" - Mock test 3", false, Some(0))
            ]
        );
        // Without the isolate, the first strong letter is Arabic: a right-to-left line, its
        // Latin words drawn first (at the left).
        assert_eq!(
            texts("فاطمة زهراء - Mock test 3"),
            [
                ("Mock test 3", false, Some(0)),
                ("- ", true, Some(0)),
                ("فاطمة زهراء ", true, Some(2))
            ]
        );
        assert_eq!(
            texts("\u{200F}ab\u{200E}c"),
            [("ab", false, Some(0)), ("c", false, Some(0))]
        );
    }

    #[test]
    fn characters_no_font_has_get_no_font() {
        assert_eq!(
            texts("ab\u{E000}c"),
            [
                ("ab", false, Some(0)),
                ("\u{E000}", false, None),
                ("c", false, Some(0))
            ]
        );
    }
}
