//! A whole test's analytics once its attempts are scored (`score.finalize_test`): ranks that
//! ties share, NTA percentiles exact to 7 decimals, and test and question statistics.

use std::cmp::Reverse;
use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

use num_rational::Ratio;
use num_traits::{CheckedAdd, CheckedDiv, CheckedMul, Zero};
use serde::{Serialize, Serializer};

use super::marks::{Marks, RoundedDecimal};
use super::prepared::PreparedTest;
use super::result::{AttemptResult, Counts, DISPLAY_DECIMALS};

/// Competition ranks ("1224"): a candidate's rank is 1 + the number of candidates with more
/// marks, so equal marks share a rank and the next rank skips. In the order of `scores`.
pub fn competition_ranks(scores: &[Marks]) -> Vec<u32> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_unstable_by_key(|&i| Reverse(scores[i]));
    let mut ranks = vec![0; scores.len()];
    for (position, &i) in order.iter().enumerate() {
        ranks[i] = if position > 0 && scores[order[position - 1]] == scores[i] {
            ranks[order[position - 1]]
        } else {
            position as u32 + 1
        };
    }
    ranks
}

/// NTA percentiles: 100 x (candidates with marks equal to or below yours) / candidates. In the
/// order of `scores`.
pub fn nta_percentiles(scores: &[Marks]) -> Vec<Percentile> {
    let mut sorted = scores.to_vec();
    sorted.sort_unstable();
    let candidates = scores.len() as u64;
    scores
        .iter()
        .map(|s| Percentile {
            at_or_below: sorted.partition_point(|x| x <= s) as u64,
            candidates,
        })
        .collect()
}

/// An exact NTA percentile, `100 * at_or_below / candidates`. It shows (and serializes) as a
/// decimal rounded half up to 7 places, the way NTA publishes it: `"99.9876543"`,
/// `"100.0000000"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Percentile {
    pub at_or_below: u64,
    pub candidates: u64,
}

impl fmt::Display for Percentile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const PLACES: u32 = 7;
        let scale = 10_u128.pow(PLACES);
        let numer = 100 * u128::from(self.at_or_below) * scale;
        let denom = u128::from(self.candidates.max(1));
        // Percentiles are never negative, so half up and half away from zero agree.
        let rounded = (2 * numer + denom) / (2 * denom);
        write!(
            f,
            "{}.{:0width$}",
            rounded / scale,
            rounded % scale,
            width = PLACES as usize
        )
    }
}

impl Serialize for Percentile {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// One bar of a histogram: candidates with `from <= marks < to`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HistogramBar {
    pub from: Marks,
    pub to: Marks,
    pub candidates: u64,
}

/// At most this many bars.
const MAX_BARS: i64 = 10_000;

/// Candidates per bar of `width` marks, bars aligned on multiples of `width`, from the lowest
/// score's bar to the highest's (empty bars included). Empty for no scores; `None` if `width`
/// is not positive, the bars would be more than 10,000, or their bounds do not fit in marks.
pub fn histogram(scores: &[Marks], width: Marks) -> Option<Vec<HistogramBar>> {
    if !width.is_positive() {
        return None;
    }
    let bar = |m: Marks| -> Option<i64> {
        let q = m.ratio().checked_mul(&width.ratio().recip())?;
        // `Ratio::floor` overflows near i64::MIN; with a positive denominator (a ratio keeps
        // its sign in the numerator), Euclid's quotient is the floor.
        Some(q.numer().div_euclid(*q.denom()))
    };
    let (Some(&low), Some(&high)) = (scores.iter().min(), scores.iter().max()) else {
        return Some(Vec::new());
    };
    let (first, last) = (bar(low)?, bar(high)?);
    // Scores at both ends of the marks' range are bars more than i64 apart.
    if last.checked_sub(first)? >= MAX_BARS {
        return None;
    }
    let mut bars: Vec<HistogramBar> = (first..=last)
        .map(|b| {
            Some(HistogramBar {
                from: width.checked_mul(Marks::integer(b))?,
                to: width.checked_mul(Marks::integer(b.checked_add(1)?))?,
                candidates: 0,
            })
        })
        .collect::<Option<_>>()?;
    for &s in scores {
        bars[(bar(s)? - first) as usize].candidates += 1;
    }
    Some(bars)
}

/// Why a result cannot join a test's analytics.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnalyticsError {
    #[error("attempt `{attempt_id}` was scored for test `{test_id}`, not this one")]
    WrongTest { attempt_id: String, test_id: String },
    #[error(
        "attempt `{attempt_id}` was scored with key version {found}, not {expected}: rescore it first"
    )]
    WrongKeyVersion {
        attempt_id: String,
        found: u32,
        expected: u32,
    },
    #[error("attempt `{attempt_id}` is provisional: some subjective answers await evaluation")]
    Provisional { attempt_id: String },
    #[error("attempt `{attempt_id}` is already counted")]
    Duplicate { attempt_id: String },
    #[error("attempt `{attempt_id}` does not list the test's questions in the test's order")]
    QuestionsDiffer { attempt_id: String },
    #[error("the sum of all candidates' marks overflowed")]
    Overflow,
}

/// A candidate's place in the test.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Standing {
    pub attempt_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub candidate_id: Option<String>,
    pub marks: Marks,
    pub rank: u32,
    pub percentile: Percentile,
    /// NTA publishes subject percentiles beside the total's.
    pub sections: Vec<SectionStanding>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SectionStanding {
    pub id: Arc<str>,
    pub marks: Marks,
    pub rank: u32,
    pub percentile: Percentile,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TestStatistics {
    pub test_id: String,
    pub key_version: u32,
    pub candidates: u64,
    pub max_marks: Marks,
    #[serde(flatten)]
    pub marks: MarkStatistics,
    /// Every score obtained, highest first, with how many candidates obtained it.
    pub distribution: Vec<ScoreCount>,
    pub sections: Vec<SectionStatistics>,
    pub questions: Vec<QuestionStatistics>,
}

/// Mean, median, highest and lowest marks; all `None` when there are no candidates. The mean
/// and median are exact (the median of an even count is the mean of the middle two).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MarkStatistics {
    pub mean: Option<Marks>,
    pub median: Option<Marks>,
    pub highest: Option<Marks>,
    pub lowest: Option<Marks>,
}

impl Serialize for MarkStatistics {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Out {
            mean: Option<Marks>,
            mean_display: Option<RoundedDecimal>,
            median: Option<Marks>,
            median_display: Option<RoundedDecimal>,
            highest: Option<Marks>,
            lowest: Option<Marks>,
        }
        let display = |m: Option<Marks>| m.map(|m| m.display(DISPLAY_DECIMALS));
        Out {
            mean: self.mean,
            mean_display: display(self.mean),
            median: self.median,
            median_display: display(self.median),
            highest: self.highest,
            lowest: self.lowest,
        }
        .serialize(serializer)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScoreCount {
    pub marks: Marks,
    pub candidates: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SectionStatistics {
    pub id: Arc<str>,
    pub max_marks: Marks,
    #[serde(flatten)]
    pub marks: MarkStatistics,
}

/// How one question fared across all candidates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuestionStatistics {
    pub id: Arc<str>,
    pub section: Arc<str>,
    pub topic: Option<Arc<str>>,
    /// Totals over all candidates; `counts.questions()` is the number of candidates.
    pub counts: Counts,
}

/// Classical difficulty bands of the facility index (share of candidates who answered
/// correctly): easy from 70%, difficult below 30%.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Difficulty {
    Easy,
    Moderate,
    Difficult,
}

impl QuestionStatistics {
    /// Correct answers per judged answer, as a percentage to 2 decimals.
    pub fn accuracy_percent(&self) -> Option<RoundedDecimal> {
        self.counts.accuracy_percent()
    }

    /// The facility index: correct answers per candidate, as a percentage to 2 decimals.
    /// Higher is easier.
    pub fn facility_percent(&self) -> Option<RoundedDecimal> {
        let candidates = self.counts.questions();
        (candidates > 0).then(|| {
            RoundedDecimal::new(
                100 * i128::from(self.counts.correct),
                i128::from(candidates),
                2,
            )
        })
    }

    /// `None` for a dropped question (nobody was judged on it) or no candidates.
    pub fn difficulty(&self) -> Option<Difficulty> {
        let candidates = u64::from(self.counts.questions());
        if candidates == 0 || self.counts.dropped > 0 {
            return None;
        }
        let correct = 100 * u64::from(self.counts.correct);
        Some(if correct >= 70 * candidates {
            Difficulty::Easy
        } else if correct >= 30 * candidates {
            Difficulty::Moderate
        } else {
            Difficulty::Difficult
        })
    }
}

impl Serialize for QuestionStatistics {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Out<'a> {
            id: &'a str,
            section: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            topic: Option<&'a str>,
            counts: &'a Counts,
            accuracy_percent: Option<RoundedDecimal>,
            facility_percent: Option<RoundedDecimal>,
            difficulty: Option<Difficulty>,
        }
        Out {
            id: &self.id,
            section: &self.section,
            topic: self.topic.as_deref(),
            counts: &self.counts,
            accuracy_percent: self.accuracy_percent(),
            facility_percent: self.facility_percent(),
            difficulty: self.difficulty(),
        }
        .serialize(serializer)
    }
}

/// Standings and statistics of a finalized test.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finalized {
    /// In the order the results were added.
    pub standings: Vec<Standing>,
    pub statistics: TestStatistics,
}

/// Collects results one at a time, so that a test with a million candidates needs only their
/// marks in memory, not their whole results.
#[derive(Debug)]
pub struct TestAnalytics<'t> {
    test: &'t PreparedTest,
    seen: HashSet<String>,
    entries: Vec<Entry>,
    questions: Vec<Counts>,
}

#[derive(Debug)]
struct Entry {
    attempt_id: String,
    candidate_id: Option<String>,
    marks: Marks,
    sections: Vec<Marks>,
}

impl<'t> TestAnalytics<'t> {
    pub fn new(test: &'t PreparedTest) -> Self {
        TestAnalytics {
            test,
            seen: HashSet::new(),
            entries: Vec::new(),
            questions: vec![Counts::default(); test.question_count()],
        }
    }

    /// Adds one final result of this test under its current key. A result that does not
    /// belong is refused and leaves the analytics as they were.
    pub fn add(&mut self, result: &AttemptResult) -> Result<(), AnalyticsError> {
        let attempt_id = || result.attempt_id.clone();
        if *result.test_id != *self.test.test_id() {
            return Err(AnalyticsError::WrongTest {
                attempt_id: attempt_id(),
                test_id: result.test_id.to_string(),
            });
        }
        if result.key_version != self.test.key_version() {
            return Err(AnalyticsError::WrongKeyVersion {
                attempt_id: attempt_id(),
                found: result.key_version,
                expected: self.test.key_version(),
            });
        }
        if result.provisional {
            return Err(AnalyticsError::Provisional {
                attempt_id: attempt_id(),
            });
        }
        let same_questions = result.sections.len() == self.test.sections.len()
            && result.questions().count() == self.test.question_count()
            && result
                .questions()
                .zip(&self.test.questions)
                .all(|(r, q)| r.id == q.id);
        if !same_questions {
            return Err(AnalyticsError::QuestionsDiffer {
                attempt_id: attempt_id(),
            });
        }
        if !self.seen.insert(result.attempt_id.clone()) {
            return Err(AnalyticsError::Duplicate {
                attempt_id: attempt_id(),
            });
        }
        for (counts, q) in self.questions.iter_mut().zip(result.questions()) {
            counts.add(q.outcome, q.answered);
        }
        self.entries.push(Entry {
            attempt_id: result.attempt_id.clone(),
            candidate_id: result.candidate_id.clone(),
            marks: result.total.marks,
            sections: result.sections.iter().map(|s| s.summary.marks).collect(),
        });
        Ok(())
    }

    pub fn finish(self) -> Result<Finalized, AnalyticsError> {
        let test = self.test;
        let totals: Vec<Marks> = self.entries.iter().map(|e| e.marks).collect();
        let by_section: Vec<Vec<Marks>> = (0..test.sections.len())
            .map(|s| self.entries.iter().map(|e| e.sections[s]).collect())
            .collect();
        let ranks = competition_ranks(&totals);
        let percentiles = nta_percentiles(&totals);
        let section_ranks: Vec<Vec<u32>> =
            by_section.iter().map(|m| competition_ranks(m)).collect();
        let section_percentiles: Vec<Vec<Percentile>> =
            by_section.iter().map(|m| nta_percentiles(m)).collect();

        let statistics = TestStatistics {
            test_id: test.test_id().to_owned(),
            key_version: test.key_version(),
            candidates: totals.len() as u64,
            max_marks: test.max_marks(),
            marks: mark_statistics(&totals)?,
            distribution: distribution(&totals),
            sections: test
                .sections
                .iter()
                .zip(&by_section)
                .map(|(s, marks)| {
                    Ok(SectionStatistics {
                        id: s.id.clone(),
                        max_marks: s.max.marks,
                        marks: mark_statistics(marks)?,
                    })
                })
                .collect::<Result<_, _>>()?,
            questions: test
                .questions
                .iter()
                .zip(self.questions)
                .map(|(q, counts)| QuestionStatistics {
                    id: q.id.clone(),
                    section: test.sections[q.section].id.clone(),
                    topic: q.topic.map(|t| test.topics[t].clone()),
                    counts,
                })
                .collect(),
        };
        let standings = self
            .entries
            .into_iter()
            .enumerate()
            .map(|(i, e)| Standing {
                sections: test
                    .sections
                    .iter()
                    .enumerate()
                    .map(|(s, plan)| SectionStanding {
                        id: plan.id.clone(),
                        marks: e.sections[s],
                        rank: section_ranks[s][i],
                        percentile: section_percentiles[s][i],
                    })
                    .collect(),
                attempt_id: e.attempt_id,
                candidate_id: e.candidate_id,
                marks: e.marks,
                rank: ranks[i],
                percentile: percentiles[i],
            })
            .collect();
        Ok(Finalized {
            standings,
            statistics,
        })
    }
}

/// [`TestAnalytics`] over a list of results in one call.
pub fn finalize<'r>(
    test: &PreparedTest,
    results: impl IntoIterator<Item = &'r AttemptResult>,
) -> Result<Finalized, AnalyticsError> {
    let mut analytics = TestAnalytics::new(test);
    for r in results {
        analytics.add(r)?;
    }
    analytics.finish()
}

fn mark_statistics(marks: &[Marks]) -> Result<MarkStatistics, AnalyticsError> {
    if marks.is_empty() {
        return Ok(MarkStatistics::default());
    }
    let mut sum: Ratio<i128> = Ratio::zero();
    for m in marks {
        let m = Ratio::new_raw(i128::from(m.numer()), i128::from(m.denom()));
        sum = sum.checked_add(&m).ok_or(AnalyticsError::Overflow)?;
    }
    let mean = sum
        .checked_div(&Ratio::from_integer(marks.len() as i128))
        .ok_or(AnalyticsError::Overflow)?;
    let mean = to_marks(mean)?;
    let mut sorted = marks.to_vec();
    sorted.sort_unstable();
    let n = sorted.len();
    let median = if n % 2 == 1 {
        sorted[n / 2]
    } else {
        let (a, b) = (sorted[n / 2 - 1], sorted[n / 2]);
        let sum = a.checked_add(b).ok_or(AnalyticsError::Overflow)?;
        sum.checked_mul(Marks::new(1, 2).expect("1/2"))
            .ok_or(AnalyticsError::Overflow)?
    };
    Ok(MarkStatistics {
        mean: Some(mean),
        median: Some(median),
        highest: sorted.last().copied(),
        lowest: sorted.first().copied(),
    })
}

fn to_marks(r: Ratio<i128>) -> Result<Marks, AnalyticsError> {
    let numer = i64::try_from(*r.numer()).map_err(|_| AnalyticsError::Overflow)?;
    let denom = i64::try_from(*r.denom()).map_err(|_| AnalyticsError::Overflow)?;
    Marks::new(numer, denom).ok_or(AnalyticsError::Overflow)
}

fn distribution(marks: &[Marks]) -> Vec<ScoreCount> {
    let mut sorted = marks.to_vec();
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    let mut out: Vec<ScoreCount> = Vec::new();
    for m in sorted {
        match out.last_mut() {
            Some(last) if last.marks == m => last.candidates += 1,
            _ => out.push(ScoreCount {
                marks: m,
                candidates: 1,
            }),
        }
    }
    out
}
