//! The test definition as the web tier writes it: sections of questions, answer keys and
//! marking schemes (docs/SCORING.md, section "The test").
//!
//! These types check the JSON's shape only (serde's errors name the first field that is wrong);
//! what the values mean (a key option that does not exist, a range whose minimum exceeds its
//! maximum) is checked by [`PreparedTest::new`](super::PreparedTest::new), which lists every
//! problem.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::decimal::Rounding;
use super::marks::Marks;
use super::rubric::{Criterion, Rubric};

/// One test under one answer key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestDef {
    pub test_id: String,
    /// Raised by the web tier on every key revision; every result records the version it was
    /// scored with, so a rescore after a challenge can be told from the original.
    pub key_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Marking for every question of the test unless a section or question says otherwise.
    #[serde(default, skip_serializing_if = "Marking::is_empty")]
    pub marking: Marking,
    #[serde(default, skip_serializing_if = "MarkingByType::is_empty")]
    pub marking_by_type: MarkingByType,
    pub sections: Vec<Section>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Section {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Marking::is_empty")]
    pub marking: Marking,
    #[serde(default, skip_serializing_if = "MarkingByType::is_empty")]
    pub marking_by_type: MarkingByType,
    /// "Attempt any N of these" (NEET's section B, JEE Main 2021-23's numericals), per group:
    /// `{"B": 10}` evaluates only the first 10 answered questions of group `B` in the section's
    /// order; later answers are `over_limit` and score nothing.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attempt_limits: BTreeMap<String, u32>,
    pub questions: Vec<Question>,
}

/// Marks for the three ways a question can end, plus the MSQ scheme. Every field is optional at
/// every level; a question takes each field from the most specific level that sets it (see
/// [`PreparedTest`](super::PreparedTest) and docs/SCORING.md). Unset at every level, `incorrect`
/// and `unattempted` are 0 and `msq` is all-or-nothing; `correct` has no default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Marking {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correct: Option<Marks>,
    /// Usually negative: `"-1"`, `"-1/3"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incorrect: Option<Marks>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unattempted: Option<Marks>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub msq: Option<MsqScheme>,
}

impl Marking {
    pub fn is_empty(&self) -> bool {
        *self == Marking::default()
    }
}

/// Marking for the questions of one type, at test or section level.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MarkingByType {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mcq: Option<Marking>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub msq: Option<Marking>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub integer: Option<Marking>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub numeric: Option<Marking>,
}

impl MarkingByType {
    pub fn is_empty(&self) -> bool {
        *self == MarkingByType::default()
    }

    /// The marking for questions of `question_type` (subjective questions have none).
    pub fn get(&self, question_type: QuestionType) -> Option<&Marking> {
        match question_type {
            QuestionType::Mcq => self.mcq.as_ref(),
            QuestionType::Msq => self.msq.as_ref(),
            QuestionType::Integer => self.integer.as_ref(),
            QuestionType::Numeric => self.numeric.as_ref(),
            QuestionType::Subjective => None,
        }
    }
}

/// How an MSQ answer that is not exactly the key is marked. An exact answer always gets
/// `correct` and an empty one `unattempted`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "scheme", rename_all = "snake_case", deny_unknown_fields)]
pub enum MsqScheme {
    /// Anything but the exact key gets `incorrect` (GATE: `incorrect` 0). (Written `{}` so
    /// that serde refuses unknown fields beside the tag, which it does not for unit variants.)
    AllOrNothing {},
    /// JEE Advanced: any wrong option chosen gets `incorrect` (-2); otherwise `per_option`
    /// (default 1) for each correct option chosen. With +4/-2 and four options this gives
    /// +4, +3, +2, +1, 0 or -2.
    Partial {
        #[serde(default = "one")]
        per_option: Marks,
    },
    /// Any wrong option chosen gets `incorrect`; otherwise `correct` x (correct options chosen)
    /// / (correct options in the key).
    Proportional {},
}

fn one() -> Marks {
    Marks::integer(1)
}

/// What happens to a question dropped after challenges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DropPolicy {
    /// Every candidate gets the question's `correct` mark.
    MarksToAll,
    /// Candidates who answered it get `correct`; the others get `unattempted`.
    MarksToAttempted,
    /// Nobody scores it and it leaves the maximum marks.
    Removed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QuestionType {
    Mcq,
    Msq,
    Integer,
    Numeric,
    Subjective,
}

impl QuestionType {
    pub fn name(self) -> &'static str {
        match self {
            QuestionType::Mcq => "mcq",
            QuestionType::Msq => "msq",
            QuestionType::Integer => "integer",
            QuestionType::Numeric => "numeric",
            QuestionType::Subjective => "subjective",
        }
    }
}

impl fmt::Display for QuestionType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One question. On the wire its `type` and type-specific fields sit beside the common ones
/// (`{"id": "q1", "type": "mcq", "answer": "B"}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "QuestionWire", into = "QuestionWire")]
pub struct Question {
    pub id: String,
    /// A free tag ("kinematics") for per-topic statistics.
    pub topic: Option<String>,
    /// A part of its section ("A", "B") that the section's `attempt_limits` may name.
    pub group: Option<String>,
    /// Overrides the section's and test's marking, field by field.
    pub marking: Marking,
    /// Set when a key revision drops the question.
    pub dropped: Option<DropPolicy>,
    pub kind: QuestionKind,
}

/// A question's type with its answer key. A key is optional only so that a dropped question
/// need not have one; [`PreparedTest::new`](super::PreparedTest::new) requires it otherwise.
#[derive(Debug, Clone, PartialEq)]
pub enum QuestionKind {
    /// One correct option. `also_accepted` lists further options a key revision accepts.
    Mcq {
        options: Vec<String>,
        answer: Option<String>,
        also_accepted: Vec<String>,
    },
    /// One or more correct options; `answer` is the set of them.
    Msq {
        options: Vec<String>,
        answer: Option<Vec<String>>,
    },
    /// A whole number, written as a string (`"42"`).
    Integer {
        answer: Option<String>,
        also_accepted: Vec<String>,
    },
    /// A decimal number matched against a value, a value with a tolerance, or a range.
    Numeric {
        answer: Option<NumericKey>,
        also_accepted: Vec<NumericKey>,
        rounding: Option<Rounding>,
    },
    /// Free text, marked later by a person or the AI job (`ai.evaluate`, which needs the
    /// `rubric`), out of `max_marks`.
    Subjective {
        max_marks: Marks,
        rubric: Option<Rubric>,
    },
}

impl QuestionKind {
    pub fn question_type(&self) -> QuestionType {
        match self {
            QuestionKind::Mcq { .. } => QuestionType::Mcq,
            QuestionKind::Msq { .. } => QuestionType::Msq,
            QuestionKind::Integer { .. } => QuestionType::Integer,
            QuestionKind::Numeric { .. } => QuestionType::Numeric,
            QuestionKind::Subjective { .. } => QuestionType::Subjective,
        }
    }
}

/// An accepted numeric answer; numbers are strings so that they stay exact. Both forms are
/// inclusive: `{"value": "9.8", "tolerance": "0.05"}` accepts 9.75 to 9.85.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NumericKey {
    Value {
        value: String,
        tolerance: Option<String>,
    },
    Range {
        min: String,
        max: String,
    },
}

/// The options of an MCQ or MSQ that does not list its own.
pub const DEFAULT_OPTIONS: [&str; 4] = ["A", "B", "C", "D"];

/// The flat JSON form of a question: serde checks field names and types here, and the
/// conversion checks which fields belong to which type.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct QuestionWire {
    id: String,
    #[serde(rename = "type")]
    question_type: QuestionType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    topic: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    options: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    answer: Option<KeyWire>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    also_accepted: Option<Vec<KeyWire>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rounding: Option<Rounding>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max_marks: Option<Marks>,
    /// Subjective only, with `rubric`: the question's text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rubric: Option<Vec<Criterion>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    model_answer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    step: Option<Marks>,
    #[serde(default, skip_serializing_if = "Marking::is_empty")]
    marking: Marking,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    dropped: Option<DropPolicy>,
}

/// An answer key as written: a string, a list of strings or a numeric key object.
enum KeyWire {
    Text(String),
    List(Vec<String>),
    Numeric(NumericKey),
}

impl KeyWire {
    fn shape(&self) -> &'static str {
        match self {
            KeyWire::Text(_) => "a string",
            KeyWire::List(_) => "a list",
            KeyWire::Numeric(_) => "an object",
        }
    }
}

impl TryFrom<QuestionWire> for Question {
    type Error = String;

    fn try_from(w: QuestionWire) -> Result<Self, String> {
        let id = w.id;
        let t = w.question_type;
        let wrong = |what: String| format!("question `{id}` ({t}): {what}");
        let not_for = |field: &str, present: bool| -> Result<(), String> {
            if present {
                Err(wrong(format!("`{field}` does not apply to {t} questions")))
            } else {
                Ok(())
            }
        };
        let expect = |wanted: &str, key: &KeyWire| {
            wrong(format!(
                "an answer is {wanted} for {t} questions, not {}",
                key.shape()
            ))
        };
        let options = || {
            w.options
                .clone()
                .unwrap_or_else(|| DEFAULT_OPTIONS.map(String::from).to_vec())
        };
        let texts = |keys: Option<Vec<KeyWire>>| -> Result<Vec<String>, String> {
            keys.unwrap_or_default()
                .into_iter()
                .map(|k| match k {
                    KeyWire::Text(s) => Ok(s),
                    other => Err(expect("a string", &other)),
                })
                .collect()
        };
        let single = |key: Option<KeyWire>| -> Result<Option<String>, String> {
            match key {
                None => Ok(None),
                Some(KeyWire::Text(s)) => Ok(Some(s)),
                Some(other) => Err(expect("a string", &other)),
            }
        };
        let is_mcq_or_msq = matches!(t, QuestionType::Mcq | QuestionType::Msq);
        not_for("options", w.options.is_some() && !is_mcq_or_msq)?;
        not_for(
            "rounding",
            w.rounding.is_some() && t != QuestionType::Numeric,
        )?;
        not_for(
            "max_marks",
            w.max_marks.is_some() && t != QuestionType::Subjective,
        )?;
        not_for(
            "also_accepted",
            w.also_accepted.is_some() && matches!(t, QuestionType::Msq | QuestionType::Subjective),
        )?;
        not_for(
            "answer",
            w.answer.is_some() && t == QuestionType::Subjective,
        )?;
        let subjective = t == QuestionType::Subjective;
        not_for("text", w.text.is_some() && !subjective)?;
        not_for("rubric", w.rubric.is_some() && !subjective)?;
        not_for("model_answer", w.model_answer.is_some() && !subjective)?;
        not_for("step", w.step.is_some() && !subjective)?;
        let rubric = match (w.rubric, w.text) {
            (Some(criteria), Some(text)) => Some(Rubric {
                text,
                criteria,
                model_answer: w.model_answer,
                step: w.step,
            }),
            (Some(_), None) => {
                return Err(wrong(
                    "a `rubric` needs the question's `text` (the model grades against both)"
                        .to_owned(),
                ));
            }
            (None, _) if w.model_answer.is_some() || w.step.is_some() => {
                return Err(wrong(
                    "`model_answer` and `step` belong to a `rubric`, which is missing".to_owned(),
                ));
            }
            (None, text) => {
                if text.is_some() {
                    return Err(wrong(
                        "`text` goes with a `rubric`, which is missing".to_owned(),
                    ));
                }
                None
            }
        };
        let kind = match t {
            QuestionType::Mcq => QuestionKind::Mcq {
                options: options(),
                answer: single(w.answer)?,
                also_accepted: texts(w.also_accepted)?,
            },
            QuestionType::Msq => QuestionKind::Msq {
                options: options(),
                answer: match w.answer {
                    None => None,
                    Some(KeyWire::List(list)) => Some(list),
                    Some(other) => return Err(expect("a list of options", &other)),
                },
            },
            QuestionType::Integer => QuestionKind::Integer {
                answer: single(w.answer)?,
                also_accepted: texts(w.also_accepted)?,
            },
            QuestionType::Numeric => {
                let numeric = |key: KeyWire| match key {
                    KeyWire::Numeric(k) => Ok(k),
                    other => Err(expect(
                        "an object ({\"value\": ..} or {\"min\": .., \"max\": ..})",
                        &other,
                    )),
                };
                QuestionKind::Numeric {
                    answer: w.answer.map(numeric).transpose()?,
                    also_accepted: w
                        .also_accepted
                        .unwrap_or_default()
                        .into_iter()
                        .map(numeric)
                        .collect::<Result<_, _>>()?,
                    rounding: w.rounding,
                }
            }
            QuestionType::Subjective => QuestionKind::Subjective {
                max_marks: w
                    .max_marks
                    .ok_or_else(|| wrong("`max_marks` is required".to_owned()))?,
                rubric,
            },
        };
        Ok(Question {
            id,
            topic: w.topic,
            group: w.group,
            marking: w.marking,
            dropped: w.dropped,
            kind,
        })
    }
}

impl From<Question> for QuestionWire {
    fn from(q: Question) -> Self {
        let question_type = q.kind.question_type();
        let (mut options, mut answer, mut also_accepted, mut rounding, mut max_marks) =
            (None, None, None, None, None);
        let (mut text, mut rubric, mut model_answer, mut step) = (None, None, None, None);
        let texts =
            |v: Vec<String>| (!v.is_empty()).then(|| v.into_iter().map(KeyWire::Text).collect());
        match q.kind {
            QuestionKind::Mcq {
                options: o,
                answer: a,
                also_accepted: x,
            } => {
                options = Some(o);
                answer = a.map(KeyWire::Text);
                also_accepted = texts(x);
            }
            QuestionKind::Msq {
                options: o,
                answer: a,
            } => {
                options = Some(o);
                answer = a.map(KeyWire::List);
            }
            QuestionKind::Integer {
                answer: a,
                also_accepted: x,
            } => {
                answer = a.map(KeyWire::Text);
                also_accepted = texts(x);
            }
            QuestionKind::Numeric {
                answer: a,
                also_accepted: x,
                rounding: r,
            } => {
                answer = a.map(KeyWire::Numeric);
                also_accepted =
                    (!x.is_empty()).then(|| x.into_iter().map(KeyWire::Numeric).collect());
                rounding = r;
            }
            QuestionKind::Subjective {
                max_marks: m,
                rubric: r,
            } => {
                max_marks = Some(m);
                if let Some(r) = r {
                    text = Some(r.text);
                    rubric = Some(r.criteria);
                    model_answer = r.model_answer;
                    step = r.step;
                }
            }
        }
        QuestionWire {
            id: q.id,
            question_type,
            topic: q.topic,
            group: q.group,
            options,
            answer,
            also_accepted,
            rounding,
            max_marks,
            text,
            rubric,
            model_answer,
            step,
            marking: q.marking,
            dropped: q.dropped,
        }
    }
}

impl Serialize for KeyWire {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            KeyWire::Text(s) => s.serialize(serializer),
            KeyWire::List(list) => list.serialize(serializer),
            KeyWire::Numeric(key) => key.serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for KeyWire {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;

        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = KeyWire;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "an answer key: a string (\"B\", \"42\"), a list of options ([\"A\", \"C\"]) \
                     or a numeric key ({\"value\": \"9.8\"}, {\"min\": \"1.5\", \"max\": \"1.6\"})",
                )
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<KeyWire, E> {
                Ok(KeyWire::Text(v.to_owned()))
            }

            fn visit_string<E: de::Error>(self, v: String) -> Result<KeyWire, E> {
                Ok(KeyWire::Text(v))
            }

            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<KeyWire, A::Error> {
                Vec::deserialize(de::value::SeqAccessDeserializer::new(seq)).map(KeyWire::List)
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<KeyWire, A::Error> {
                NumericKey::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(KeyWire::Numeric)
            }
        }

        deserializer.deserialize_any(KeyVisitor)
    }
}

/// The flat JSON form of a numeric key.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct NumericKeyWire {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tolerance: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    min: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max: Option<String>,
}

impl Serialize for NumericKey {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let wire = match self.clone() {
            NumericKey::Value { value, tolerance } => NumericKeyWire {
                value: Some(value),
                tolerance,
                min: None,
                max: None,
            },
            NumericKey::Range { min, max } => NumericKeyWire {
                value: None,
                tolerance: None,
                min: Some(min),
                max: Some(max),
            },
        };
        wire.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for NumericKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let w = NumericKeyWire::deserialize(deserializer)?;
        match w {
            NumericKeyWire {
                value: Some(value),
                tolerance,
                min: None,
                max: None,
            } => Ok(NumericKey::Value { value, tolerance }),
            NumericKeyWire {
                value: None,
                tolerance: None,
                min: Some(min),
                max: Some(max),
            } => Ok(NumericKey::Range { min, max }),
            _ => Err(de::Error::custom(
                "a numeric key is {\"value\": V} or {\"value\": V, \"tolerance\": T} or \
                 {\"min\": A, \"max\": B}",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn question(value: serde_json::Value) -> Result<Question, String> {
        serde_json::from_value(value).map_err(|e| e.to_string())
    }

    #[test]
    fn reads_each_question_type() {
        let q =
            question(json!({"id": "q1", "type": "mcq", "answer": "B", "topic": "optics"})).unwrap();
        assert_eq!(q.topic.as_deref(), Some("optics"));
        let QuestionKind::Mcq {
            options, answer, ..
        } = &q.kind
        else {
            panic!("{q:?}")
        };
        assert_eq!(options, &["A", "B", "C", "D"]);
        assert_eq!(answer.as_deref(), Some("B"));

        let q = question(json!({"id": "q2", "type": "msq", "answer": ["A", "C"]})).unwrap();
        assert!(matches!(q.kind, QuestionKind::Msq { answer: Some(ref a), .. } if a.len() == 2));

        let q = question(json!({
            "id": "q3", "type": "numeric", "answer": {"min": "1.50", "max": "1.60"},
            "also_accepted": [{"value": "2.5", "tolerance": "0.05"}],
            "rounding": {"mode": "round", "decimals": 2}
        }))
        .unwrap();
        let QuestionKind::Numeric {
            answer,
            also_accepted,
            rounding,
        } = &q.kind
        else {
            panic!("{q:?}")
        };
        assert!(matches!(answer, Some(NumericKey::Range { .. })));
        assert_eq!(also_accepted.len(), 1);
        assert_eq!(rounding.unwrap().decimals, 2);

        let q = question(json!({"id": "s1", "type": "subjective", "max_marks": 10})).unwrap();
        assert!(
            matches!(q.kind, QuestionKind::Subjective { max_marks, rubric: None } if max_marks == 10)
        );

        let q = question(json!({"id": "s2", "type": "subjective", "max_marks": "2.5",
            "text": "Why is the sky blue?", "step": "0.5", "model_answer": "Rayleigh scattering.",
            "rubric": [{"id": "c1", "description": "Names scattering", "marks": "1.5"},
                       {"id": "c2", "description": "Says blue scatters most", "marks": 1}]}))
        .unwrap();
        let QuestionKind::Subjective {
            rubric: Some(rubric),
            ..
        } = &q.kind
        else {
            panic!("{q:?}")
        };
        assert_eq!(rubric.text, "Why is the sky blue?");
        assert_eq!(rubric.criteria[0].marks, Marks::new(3, 2).unwrap());
        assert_eq!(rubric.step(), Marks::new(1, 2).unwrap());
        let back = serde_json::to_value(&q).unwrap();
        assert_eq!(back["rubric"][1]["marks"], "1");
        assert_eq!(question(back).unwrap(), q);
    }

    #[test]
    fn round_trips_through_json() {
        let text = json!({
            "id": "q3", "type": "numeric", "answer": {"value": "9.81", "tolerance": "0.01"},
            "marking": {"correct": "2", "incorrect": "0"}, "dropped": "marks_to_all"
        });
        let q = question(text.clone()).unwrap();
        let back = serde_json::to_value(&q).unwrap();
        assert_eq!(question(back).unwrap(), q);
    }

    #[test]
    fn shape_errors_name_the_question_and_the_field() {
        let cases = [
            (
                json!({"id": "q1", "type": "mcq", "answer": ["A", "B"]}),
                "question `q1` (mcq): an answer is a string for mcq questions, not a list",
            ),
            (
                json!({"id": "q2", "type": "integer", "answer": "4", "options": ["A"]}),
                "`options` does not apply to integer questions",
            ),
            (
                json!({"id": "q3", "type": "subjective"}),
                "`max_marks` is required",
            ),
            (
                json!({"id": "q4", "type": "numeric", "answer": {"value": "1", "min": "0"}}),
                "a numeric key is",
            ),
            (
                json!({"id": "q5", "type": "mcq", "answer": "A", "negative": "-1"}),
                "unknown field `negative`",
            ),
            (
                json!({"id": "q6", "type": "essay"}),
                "unknown variant `essay`",
            ),
            (
                json!({"id": "q7", "type": "subjective", "max_marks": 2,
                       "rubric": [{"id": "c1", "description": "x", "marks": 2}]}),
                "a `rubric` needs the question's `text`",
            ),
            (
                json!({"id": "q8", "type": "subjective", "max_marks": 2, "step": "0.5"}),
                "`model_answer` and `step` belong to a `rubric`",
            ),
            (
                json!({"id": "q9", "type": "mcq", "answer": "A", "rubric": []}),
                "`rubric` does not apply to mcq questions",
            ),
            (
                json!({"id": "q10", "type": "subjective", "max_marks": 2, "text": "t",
                       "rubric": [{"id": "c1", "description": "x", "marks": 0.5}]}),
                "is a JSON float",
            ),
        ];
        for (value, expected) in cases {
            let err = question(value).unwrap_err();
            assert!(
                err.contains(expected),
                "{err:?} should contain {expected:?}"
            );
        }
    }

    #[test]
    fn msq_schemes_read_with_defaults() {
        let m: Marking = serde_json::from_value(json!({
            "correct": 4, "incorrect": "-2", "msq": {"scheme": "partial"}
        }))
        .unwrap();
        assert_eq!(
            m.msq,
            Some(MsqScheme::Partial {
                per_option: Marks::integer(1)
            })
        );
        let err = serde_json::from_value::<MsqScheme>(json!({"scheme": "all_or_nothing", "x": 1}))
            .unwrap_err();
        assert!(err.to_string().contains("unknown field `x`"), "{err}");
    }
}
