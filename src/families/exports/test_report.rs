//! A finalized test's analytics report: summary, the distribution of the totals as a
//! histogram of even bands, section averages, and the hardest and easiest questions.

use quizworker_jobs::exports::text_runs::isolate;
use quizworker_jobs::scoring::{Counts, Marks, TestDef};
use serde::Deserialize;

use super::pdf::{BAR, BLACK, Fonts, GREY, MARGIN, PAGE_W, Pdf, Writer, col};

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
    let mut w = Writer::new(
        fonts,
        &format!("Test report: {title}"),
        format!("Test report - {}", isolate(title)),
    );
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
        col("Question", 80.0, false),
        col("Section", 90.0, false),
        col("Facility", 55.0, true),
        col("Accuracy", 55.0, true),
        col("Correct", 50.0, true),
        col("Incorrect", 55.0, true),
        col("Partial", 45.0, true),
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
            q.counts.partial.to_string(),
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

/// The totals' distribution as vertical bars, one per band of [`score_bands`], over a marks
/// axis labelled at every band's bounds, and a candidates axis.
fn histogram(w: &mut Writer<'_>, stats: &Statistics) {
    let Some(bands) = score_bands(&stats.distribution, stats.max_marks) else {
        w.label_value("", "no candidates");
        return;
    };
    let tallest = bands.counts.iter().copied().max().unwrap_or(1).max(1);
    let chart_h = 140.0;
    let left = MARGIN + 24.0;
    let chart_w = PAGE_W - MARGIN - left;
    w.ensure(chart_h + 60.0);
    w.text(MARGIN, w.y, 8.0, "Candidates", GREY);
    w.y -= 6.0;
    let base = w.y - chart_h;
    let slot = chart_w / bands.counts.len() as f32;
    let size = if slot < 30.0 { 6.0 } else { 8.0 };
    // The candidates axis, with its highest count.
    w.line((left, base), (left, base + chart_h), GREY);
    let top = tallest.to_string();
    let top_w = w.width(&top, size);
    w.text(left - 3.0 - top_w, base + chart_h - 14.0, size, &top, GREY);
    let zero_w = w.width("0", size);
    w.text(left - 3.0 - zero_w, base - 2.0, size, "0", GREY);
    for (i, &count) in bands.counts.iter().enumerate() {
        let x = left + slot * i as f32;
        let h = (chart_h - 14.0) * count as f32 / tallest as f32;
        if count > 0 {
            w.rect(x + slot * 0.1, base, slot * 0.8, h, BAR);
            let label = count.to_string();
            let label_w = w.width(&label, size);
            w.text(
                x + (slot - label_w) / 2.0,
                base + h + 3.0,
                size,
                &label,
                BLACK,
            );
        }
    }
    // The marks axis: every band's bounds, under the edges of its bar.
    w.rule(base, GREY);
    for i in 0..=bands.counts.len() {
        let x = left + slot * i as f32;
        let label = mark_label(bands.first + i as f64 * bands.width);
        let label_w = w.width(&label, size);
        w.line((x, base), (x, base - 3.0), GREY);
        w.text(x - label_w / 2.0, base - 11.0, size, &label, GREY);
    }
    let title = format!(
        "Total marks, in bands of {}: a bar counts the totals from its left bound up to, not \
         including, its right one",
        mark_label(bands.width)
    );
    let title_w = w.width(&title, 8.0);
    w.text(
        left + (chart_w - title_w) / 2.0,
        base - 24.0,
        8.0,
        &title,
        GREY,
    );
    w.y = base - 40.0;
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

/// Bands of an even, round width (1, 2 or 5 times a power of ten, at least a tenth of the
/// maximum and at least one mark), starting at a multiple of it, from the lowest score's band
/// to the highest's, as long as that is at most [`MAX_BANDS`] bands. Scores spread wider, as a
/// harsh negative marking allows (one candidate a trillion marks below the rest), get wider
/// round bands instead, so the chart stays readable and still counts every candidate; the
/// number of bands never follows the marks. `None` for no candidates.
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
    let tenth = round_up_1_2_5((value(max_marks) / 10.0).max(1.0));
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
    fn bands_are_a_round_tenth_of_the_maximum_when_the_scores_allow() {
        let scores = distribution(&[(m("-3"), 1), (m("7"), 2), (m("40"), 1)]);
        let bands = score_bands(&scores, m("40")).unwrap();
        assert_eq!(bands.width, 5.0);
        assert_eq!(bands.first, -5.0);
        assert_eq!(bands.counts, [1, 0, 2, 0, 0, 0, 0, 0, 0, 1]);
        // JEE Advanced's 180 marks: bands of 20, not 18.
        let scores = distribution(&[(m("-31"), 1), (m("10"), 1), (m("21"), 1)]);
        let bands = score_bands(&scores, m("180")).unwrap();
        assert_eq!((bands.first, bands.width), (-40.0, 20.0));
        assert_eq!(bands.counts, [1, 0, 1, 1]);
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
