//! A candidate's report card, as a school sends it to parents: the institution, the
//! candidate's name in their own script, total, rank and percentile, a table and a chart of the
//! sections, and every question.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use quizworker_jobs::exports::card_text;
use quizworker_jobs::exports::text_runs::isolate;
use quizworker_jobs::scoring::{AttemptResult, Marks, Outcome, RoundedDecimal, TestDef};

use super::logo::Logo;
use super::pdf::{
    BAR, BLACK, BODY, Fonts, GREY, LIGHT, MARGIN, NEGATIVE, PAGE_W, Pdf, ROW, Writer, col,
};

/// What a report card shows.
pub struct ReportCard<'a> {
    pub result: &'a AttemptResult,
    pub test: Option<&'a TestDef>,
    pub candidate_id: Option<&'a str>,
    /// The attempt's `candidate_name`, printed as given.
    pub candidate_name: Option<&'a str>,
    pub rank: Option<i64>,
    pub percentile: Option<&'a str>,
    pub submitted_at: Option<DateTime<Utc>>,
}

/// What every card of a school carries: from `[exports]` in the configuration.
pub struct CardStyle<'a> {
    pub institution: &'a str,
    pub logo: Option<&'a Logo>,
    pub timezone: Tz,
}

/// The logo's height on the page, in points.
const LOGO_H: f32 = 40.0;

/// Builds a candidate's report card.
pub fn report_card(card: &ReportCard<'_>, style: &CardStyle<'_>, fonts: &Fonts) -> Pdf {
    let r = card.result;
    let title = card
        .test
        .and_then(|t| t.title.as_deref())
        .unwrap_or(&r.test_id);
    let name = card
        .candidate_name
        .or(card.candidate_id)
        .unwrap_or(&r.attempt_id);
    let footer = format!("{} - {}", isolate(name), isolate(title));
    let mut w = Writer::new(fonts, &format!("Report card: {name}, {title}"), footer);

    // The school, its logo at the left.
    let mut text_x = MARGIN;
    if let Some(logo) = style.logo {
        let bottom = w.y + 12.0 - LOGO_H;
        let width = logo.draw(&mut w, MARGIN, bottom, LOGO_H);
        text_x += width + 12.0;
    }
    if !style.institution.is_empty() {
        w.text(text_x, w.y - 4.0, 14.0, style.institution, BLACK);
    }
    w.text(text_x, w.y - 22.0, 10.0, "Report card", GREY);
    w.y -= LOGO_H.max(28.0) + 14.0;

    w.paragraph(name, 18.0, BLACK);
    w.paragraph(title, 12.0, BLACK);
    w.y -= 6.0;
    let submitted = card
        .submitted_at
        .map(|t| card_text::local_time(t, style.timezone))
        .unwrap_or_else(|| "-".into());
    if card.candidate_name.is_some()
        && let Some(id) = card.candidate_id
    {
        w.label_value("Candidate ID", id);
    }
    w.label_value("Attempt", &r.attempt_id);
    w.label_value("Submitted", &submitted);
    w.y -= 6.0;

    let total = format!(
        "{} out of {}",
        card_text::marks(r.total.marks),
        card_text::marks(r.total.max_marks)
    );
    let rank = card
        .rank
        .map(|r| r.to_string())
        .unwrap_or_else(|| "-".into());
    let percentile = card
        .percentile
        .and_then(card_text::percentile)
        .unwrap_or_else(|| "-".into());
    let counts = &r.total.counts;
    let summary = format!(
        "{} correct, {} incorrect, {} partly correct, {} not attempted; accuracy {}",
        counts.correct,
        counts.incorrect,
        counts.partial,
        counts.unattempted,
        percent(r.total.accuracy_percent())
    );
    w.label_value("Total", &total);
    w.label_value("Rank", &rank);
    w.label_value("Percentile", &percentile);
    w.label_value("Answers", &summary);
    if r.provisional {
        w.label_value("Note", "provisional: some answers await evaluation");
    }
    w.y -= 10.0;

    // Sections.
    let section_title = |id: &str| -> String {
        card.test
            .and_then(|t| t.sections.iter().find(|s| s.id == id))
            .and_then(|s| s.title.clone())
            .unwrap_or_else(|| id.to_owned())
    };
    w.heading("Sections");
    let columns = [
        col("Section", 125.0, false),
        col("Marks", 70.0, true),
        col("Max", 45.0, true),
        col("Correct", 45.0, true),
        col("Incorrect", 50.0, true),
        col("Partial", 40.0, true),
        col("Not attempted", 85.0, true),
        col("Accuracy", 50.0, true),
    ];
    let rows: Vec<Vec<String>> = r
        .sections
        .iter()
        .map(|s| {
            let c = &s.summary.counts;
            vec![
                section_title(&s.id),
                card_text::marks(s.summary.marks),
                card_text::marks(s.summary.max_marks),
                c.correct.to_string(),
                c.incorrect.to_string(),
                c.partial.to_string(),
                c.unattempted.to_string(),
                percent(s.summary.accuracy_percent()),
            ]
        })
        .collect();
    w.table(&columns, &rows);
    w.y -= 10.0;

    // Each section's marks out of its maximum; a negative score is a bar to the left of the
    // zero axis, in red.
    w.heading("Section scores");
    let label_w = 130.0;
    let chart_w = PAGE_W - 2.0 * MARGIN - label_w - 90.0;
    let lowest = r
        .sections
        .iter()
        .map(|s| share(s.summary.marks, s.summary.max_marks))
        .fold(0.0f32, f32::min);
    // The axis sits where zero is on a scale from the lowest share (at most 0) to 1.
    let span = 1.0 - lowest;
    let axis = MARGIN + label_w + chart_w * (-lowest / span);
    let top = w.y + 10.0;
    for s in &r.sections {
        w.ensure(ROW + 4.0);
        let y = w.y;
        let label = section_title(&s.id);
        let label = w.fit(&label, BODY, label_w - 6.0);
        w.text(MARGIN, y, BODY, &label, BLACK);
        w.rect(MARGIN + label_w, y - 2.0, chart_w, 10.0, LIGHT);
        let share = share(s.summary.marks, s.summary.max_marks);
        let length = chart_w * share.abs() / span;
        if share > 0.0 {
            w.rect(axis, y - 2.0, length, 10.0, BAR);
        } else if share < 0.0 {
            w.rect(axis - length, y - 2.0, length, 10.0, NEGATIVE);
        }
        let value = format!(
            "{} / {}",
            card_text::marks(s.summary.marks),
            card_text::marks(s.summary.max_marks)
        );
        w.text(MARGIN + label_w + chart_w + 6.0, y, BODY, &value, BLACK);
        w.y -= ROW + 2.0;
    }
    if lowest < 0.0 {
        w.line((axis, top), (axis, w.y + 10.0), BLACK);
        w.text(axis - 2.5, w.y + 2.0, 7.0, "0", GREY);
        w.y -= 6.0;
    }
    w.y -= 10.0;

    // Every question, over as many pages as it takes.
    w.heading("Questions");
    let columns = [
        col("#", 30.0, true),
        col("Section", 110.0, false),
        col("Question", 100.0, false),
        col("Outcome", 90.0, false),
        col("Marks", 70.0, true),
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
                section_title(&s.id),
                q.id.to_string(),
                outcome(q.outcome).to_owned(),
                card_text::marks(q.marks),
                card_text::marks(q.max_marks),
                q.time_spent_ms
                    .map(|ms| format!("{:.0}", ms as f64 / 1000.0))
                    .unwrap_or_default(),
            ]
        })
        .collect();
    w.table(&columns, &rows);
    w.finish()
}

fn percent(p: Option<RoundedDecimal>) -> String {
    p.map(|p| format!("{p}%")).unwrap_or_else(|| "-".into())
}

/// `marks / max` between -1 and 1 for a bar (0 without a positive maximum).
fn share(marks: Marks, max: Marks) -> f32 {
    if !max.is_positive() {
        return 0.0;
    }
    let value =
        (marks.numer() as f64 / marks.denom() as f64) / (max.numer() as f64 / max.denom() as f64);
    value.clamp(-1.0, 1.0) as f32
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
