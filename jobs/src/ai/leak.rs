//! The leak check: a hint that states the key is rejected. What counts as stating it:
//!
//! - `mcq`, `msq`: a correct option named by its id (`option B`, `(B)`, `B)`; an id longer than
//!   one character anywhere as a word), or its text (as words, ignoring case and spacing; a text
//!   that is a number counts as that number). For `msq`, any one correct option is a leak.
//! - `integer`: the number, however written (`42`, `42.0`, `042`, `4,2` is not; `1,000` is
//!   1000), alone or as a fraction `84/2`.
//! - `numeric`: any number within `answer` ± `tolerance`, or a fraction whose value is.
//!
//! Signs are ignored (`-3` states 3), and digits glued to a letter before them are not a number
//! (`H2O`, `x2`). Numbers written in words, in scientific notation or in LaTeX (`\frac{1}{2}`)
//! are not seen: the prompt tells the model not to state the key at all, and this check is the
//! net under it, not a proof.

use std::fmt;

use crate::ai::payloads::{Answer, HintQuestion, QuestionType};
use crate::ai::reply::Hints;

/// Decimal places kept: keys and hints are compared exactly up to here.
const SCALE_DIGITS: usize = 18;
const SCALE: i128 = 1_000_000_000_000_000_000;
/// Integer digits at most: 10^19 x 10^18 still fits an i128.
const MAX_INT_DIGITS: usize = 19;

/// A decimal number read exactly: the value times 10^18. Decimals past the 18th are dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Number(i128);

impl Number {
    /// `[+-]digits[.digits]` or `[+-].digits`, spaces around allowed; `None` for anything else
    /// or a number of more than 19 integer digits.
    pub fn parse(text: &str) -> Option<Number> {
        let text = text.trim();
        let (negative, digits) = match text.as_bytes().first() {
            Some(b'-') => (true, &text[1..]),
            Some(b'+') => (false, &text[1..]),
            _ => (false, text),
        };
        let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
        let all_digits = |t: &str| t.bytes().all(|b| b.is_ascii_digit());
        if (int.is_empty() && frac.is_empty()) || !all_digits(int) || !all_digits(frac) {
            return None;
        }
        let n = Number::from_digits(int, frac)?;
        Some(if negative { Number(-n.0) } else { n })
    }

    fn from_digits(int: &str, frac: &str) -> Option<Number> {
        let int = int.trim_start_matches('0');
        if int.len() > MAX_INT_DIGITS {
            return None;
        }
        let digit = |b: u8| i128::from(b - b'0');
        let whole = int.bytes().fold(0_i128, |v, b| v * 10 + digit(b));
        let kept = frac.len().min(SCALE_DIGITS);
        let part = frac.as_bytes()[..kept]
            .iter()
            .fold(0_i128, |v, &b| v * 10 + digit(b));
        let part = part * 10_i128.pow((SCALE_DIGITS - kept) as u32);
        Some(Number(whole * SCALE + part))
    }

    pub fn is_integer(self) -> bool {
        self.0 % SCALE == 0
    }

    pub fn is_negative(self) -> bool {
        self.0 < 0
    }
}

impl fmt::Display for Number {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let magnitude = self.0.unsigned_abs();
        let scale = SCALE.unsigned_abs();
        let (whole, part) = (magnitude / scale, magnitude % scale);
        if part == 0 {
            write!(f, "{sign}{whole}")
        } else {
            let decimals = format!("{part:018}");
            write!(f, "{sign}{whole}.{}", decimals.trim_end_matches('0'))
        }
    }
}

/// A number as a hint writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mention {
    Value(Number),
    /// `p/q` of two whole numbers, q > 0.
    Ratio(Number, Number),
}

/// Every number in `text`: each run of digits with its decimals, each `p/q` of whole numbers
/// (and its parts), and `1,000`-style grouped numbers read both ways.
fn numbers_in(text: &str) -> Vec<Mention> {
    let mut found = scan(text);
    let ungrouped = without_thousands_separators(text);
    if ungrouped != text {
        found.extend(scan(&ungrouped));
    }
    found
}

fn scan(text: &str) -> Vec<Mention> {
    let b = text.as_bytes();
    let digit = |i: usize| b.get(i).is_some_and(u8::is_ascii_digit);
    let mut found = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let starts = digit(i) || (b[i] == b'.' && digit(i + 1));
        if !starts {
            i += 1;
            continue;
        }
        // Digits glued to a letter are part of a name (H2O, x2), not a number.
        let glued = i > 0 && b[i - 1].is_ascii_alphabetic();
        let start = i;
        while digit(i) {
            i += 1;
        }
        let int = &text[start..i];
        let mut frac = "";
        if b.get(i) == Some(&b'.') && digit(i + 1) {
            let from = i + 1;
            i = from;
            while digit(i) {
                i += 1;
            }
            frac = &text[from..i];
        }
        if glued {
            continue;
        }
        let Some(value) = Number::from_digits(int, frac) else {
            continue;
        };
        found.push(Mention::Value(value));
        if frac.is_empty() && b.get(i) == Some(&b'/') && digit(i + 1) {
            let from = i + 1;
            let mut j = from;
            while digit(j) {
                j += 1;
            }
            if let Some(denominator) = Number::from_digits(&text[from..j], "")
                && denominator.0 > 0
            {
                found.push(Mention::Ratio(value, denominator));
            }
        }
    }
    found
}

/// `1,000` and `12,345,678` without their commas: a comma between a digit and exactly three
/// digits not followed by another.
fn without_thousands_separators(text: &str) -> String {
    let b = text.as_bytes();
    let digit = |i: usize| b.get(i).is_some_and(u8::is_ascii_digit);
    let mut out = String::with_capacity(text.len());
    for (i, c) in text.char_indices() {
        let separator =
            c == ',' && i > 0 && digit(i - 1) && (1..=3).all(|k| digit(i + k)) && !digit(i + 4);
        if !separator {
            out.push(c);
        }
    }
    out
}

/// The numbers from `low` to `high`, both included.
#[derive(Debug, Clone, Copy)]
struct Range {
    low: Number,
    high: Number,
}

impl Range {
    fn exactly(n: Number) -> Range {
        Range { low: n, high: n }
    }

    fn holds(self, n: i128) -> bool {
        (self.low.0..=self.high.0).contains(&n)
    }

    /// Whether the mention, or its negation, lies in the range.
    fn meets(self, mention: Mention) -> bool {
        match mention {
            Mention::Value(n) => self.holds(n.0) || self.holds(-n.0),
            Mention::Ratio(p, q) => {
                let q = q.0 / SCALE;
                let within = |p: i128| match (self.low.0.checked_mul(q), self.high.0.checked_mul(q))
                {
                    (Some(low), Some(high)) => (low..=high).contains(&p),
                    _ => false,
                };
                within(p.0) || within(-p.0)
            }
        }
    }
}

/// A hint that states the key: which hint, and what it stated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leak {
    /// `nudge`, `method` or `near_solution`.
    pub hint: &'static str,
    pub stated: String,
}

impl fmt::Display for Leak {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the {} hint states the answer ({})",
            self.hint, self.stated
        )
    }
}

/// The first hint that states the question's key, if any. A question without a key
/// (`subjective`) has nothing to leak.
pub fn find_leak(question: &HintQuestion, hints: &Hints) -> Option<Leak> {
    for (name, text) in hints.named() {
        if let Some(stated) = states_key(question, text) {
            return Some(Leak { hint: name, stated });
        }
    }
    None
}

/// What of the key `text` states, if anything.
fn states_key(question: &HintQuestion, text: &str) -> Option<String> {
    let number_in = |range: Range| numbers_in(text).into_iter().find(|m| range.meets(*m));
    let describe = |m: Mention| match m {
        Mention::Value(n) => format!("the number {n}"),
        Mention::Ratio(p, q) => format!("the fraction {p}/{q}"),
    };
    match (question.kind, &question.answer) {
        (QuestionType::Integer, Some(Answer::One(key))) => {
            let key = Number::parse(key)?;
            number_in(Range::exactly(key)).map(describe)
        }
        (QuestionType::Numeric, Some(Answer::One(key))) => {
            let key = Number::parse(key)?;
            let tolerance = question
                .tolerance
                .as_deref()
                .and_then(Number::parse)
                .map_or(0, |t| t.0.abs());
            let range = Range {
                low: Number(key.0.checked_sub(tolerance)?),
                high: Number(key.0.checked_add(tolerance)?),
            };
            number_in(range).map(describe)
        }
        (QuestionType::Mcq | QuestionType::Msq, Some(answer)) => {
            let keys: Vec<&str> = match answer {
                Answer::One(id) => vec![id.as_str()],
                Answer::Many(ids) => ids.iter().map(String::as_str).collect(),
            };
            for option in question
                .options
                .iter()
                .filter(|o| keys.contains(&o.id.as_str()))
            {
                if names_option(text, &option.id) {
                    return Some(format!("option {}", option.id));
                }
                let stated = match Number::parse(&option.text) {
                    Some(n) => number_in(Range::exactly(n)).is_some(),
                    None => has_phrase(text, &option.text),
                };
                if stated {
                    return Some(format!("the text of option {}", option.id));
                }
            }
            None
        }
        _ => None,
    }
}

/// Words before a one-character option id that make it a reference to that option.
const OPTION_WORDS: &[&str] = &["option", "choice", "answer", "choose", "pick", "select"];

/// Whether `text` names the option `id`: as a whole word when the id is longer than one
/// character; a one-character id (`A`, which is also a word) only as `(A)`, `A)`, `[A]` or
/// after "option", "choice", "answer (is)", "choose", "pick", "select".
fn names_option(text: &str, id: &str) -> bool {
    // ASCII lower-casing keeps every byte where it was, so positions in `haystack` are
    // positions in `text`.
    let haystack = text.to_ascii_lowercase();
    let needle = id.to_ascii_lowercase();
    let single = id.chars().count() == 1;
    let mut from = 0;
    while let Some(offset) = haystack[from..].find(&needle) {
        let start = from + offset;
        let end = start + needle.len();
        from = end;
        let before = &text[..start];
        let after = &text[end..];
        let bounded = !before
            .chars()
            .next_back()
            .is_some_and(char::is_alphanumeric)
            && !after.chars().next().is_some_and(char::is_alphanumeric);
        if !bounded {
            continue;
        }
        if !single {
            return true;
        }
        // One character: its case as given, in brackets or after an option word.
        let exact = &text[start..end] == id;
        if exact && (after.starts_with(')') || (before.ends_with('[') && after.starts_with(']'))) {
            return true;
        }
        let words: Vec<String> = before
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .rev()
            .take(2)
            .map(str::to_lowercase)
            .collect();
        let referring = match words.as_slice() {
            [last, ..] if OPTION_WORDS.contains(&last.as_str()) => true,
            [last, previous] => last == "is" && previous == "answer",
            _ => false,
        };
        // Only spaces and light punctuation between the word and the id.
        let gap = before
            .chars()
            .rev()
            .take_while(|c| !c.is_alphanumeric())
            .all(|c| c.is_whitespace() || ":\"'(".contains(c));
        if referring && gap {
            return true;
        }
    }
    false
}

/// Whether `text` holds `phrase` as whole words, ignoring case and runs of spaces. Phrases of
/// fewer than three characters are not looked for (a one-letter option text is a word of any
/// sentence).
fn has_phrase(text: &str, phrase: &str) -> bool {
    let normalize = |t: &str| {
        t.split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .to_lowercase()
    };
    let (text, phrase) = (normalize(text), normalize(phrase));
    if phrase.chars().count() < 3 {
        return false;
    }
    let starts_word = phrase.chars().next().is_some_and(char::is_alphanumeric);
    let ends_word = phrase
        .chars()
        .next_back()
        .is_some_and(char::is_alphanumeric);
    let mut from = 0;
    while let Some(offset) = text[from..].find(&phrase) {
        let start = from + offset;
        let end = start + phrase.len();
        from = start + phrase.chars().next().map_or(1, char::len_utf8);
        let open = !starts_word
            || !text[..start]
                .chars()
                .next_back()
                .is_some_and(char::is_alphanumeric);
        let close = !ends_word
            || !text[end..]
                .chars()
                .next()
                .is_some_and(char::is_alphanumeric);
        if open && close {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn question(value: serde_json::Value) -> HintQuestion {
        let q: HintQuestion = serde_json::from_value(value).unwrap();
        q.check().unwrap();
        q
    }

    fn hints(near_solution: &str) -> Hints {
        Hints {
            nudge: "Think about what the question asks.".into(),
            method: "Write down what you know.".into(),
            near_solution: near_solution.into(),
        }
    }

    fn leak(q: &HintQuestion, near_solution: &str) -> Option<String> {
        find_leak(q, &hints(near_solution)).map(|l| l.to_string())
    }

    #[test]
    fn numbers_are_read_exactly() {
        for (text, shown) in [
            ("42", "42"),
            ("007", "7"),
            ("-0.50", "-0.5"),
            (".25", "0.25"),
        ] {
            assert_eq!(Number::parse(text).unwrap().to_string(), shown, "{text}");
        }
        let long = "9".repeat(20);
        for bad in ["", "-", ".", "1e3", "4,2", "x", "1.2.3", long.as_str()] {
            assert_eq!(Number::parse(bad), None, "{bad}");
        }
        assert!(Number::parse("7.000").unwrap().is_integer());
        assert!(!Number::parse("7.001").unwrap().is_integer());
    }

    #[test]
    fn an_integer_key_is_found_however_it_is_written() {
        let q = question(json!({"id": "q", "type": "integer", "text": "6 x 7?", "answer": "42"}));
        for text in [
            "It is 42.",
            "so x = 42.0",
            "x=042",
            "-42",
            "84/2 of them",
            "(42)",
        ] {
            assert!(leak(&q, text).is_some(), "{text}");
        }
        for text in [
            "Multiply 6 by 7.",
            "It is 4.2 less than 46.2? no",
            "H42O",
            "420",
            "4 2",
        ] {
            assert_eq!(leak(&q, text), None, "{text}");
        }
        assert_eq!(
            leak(&q, "The product is 42.").unwrap(),
            "the near_solution hint states the answer (the number 42)"
        );
        let thousand =
            question(json!({"id": "q", "type": "integer", "text": "?", "answer": "1000"}));
        assert!(leak(&thousand, "about 1,000 of them").is_some());
        assert_eq!(leak(&thousand, "counts 1,2,3"), None);
    }

    #[test]
    fn a_numeric_key_leaks_anywhere_within_its_tolerance() {
        let q = question(json!({"id": "q", "type": "numeric", "text": "g?",
                                "answer": "9.81", "tolerance": "0.01"}));
        for text in [
            "g is 9.8 here",
            "about 9.82",
            "9.81",
            "9.815 m/s2",
            "981/100",
        ] {
            assert!(leak(&q, text).is_some(), "{text}");
        }
        for text in ["9.79", "9.83", "10", "use 9.7 as a first guess"] {
            assert_eq!(leak(&q, text), None, "{text}");
        }
        let exact = question(json!({"id": "q", "type": "numeric", "text": "?", "answer": "0.5"}));
        assert!(leak(&exact, "it is 1/2").is_some());
        assert!(leak(&exact, "it is .50").is_some());
        assert_eq!(leak(&exact, "it is 0.51"), None);
    }

    #[test]
    fn an_option_leaks_by_id_or_by_text() {
        let q = question(
            json!({"id": "q", "type": "mcq", "text": "Capital of France?",
            "options": [{"id": "A", "text": "Berlin"}, {"id": "B", "text": "Paris"},
                        {"id": "C", "text": "Rome"}, {"id": "D", "text": "Madrid"}],
            "answer": "B"}),
        );
        for text in [
            "The answer is B.",
            "Pick option B",
            "choose (B)",
            "B) is right",
            "It is Paris.",
            "it is   PARIS, of course",
            "answer: b",
        ] {
            assert!(leak(&q, text).is_some(), "{text}");
        }
        for text in [
            "B is for bread; think of rivers.",
            "Option A is wrong, and so is C.",
            "Parisian cafés are famous.",
            "Think about the Seine.",
        ] {
            assert_eq!(leak(&q, text), None, "{text}");
        }
        assert_eq!(
            leak(&q, "Select option B.").unwrap(),
            "the near_solution hint states the answer (option B)"
        );
    }

    #[test]
    fn any_correct_option_of_an_msq_leaks_and_numeric_texts_are_numbers() {
        let q = question(json!({"id": "q", "type": "msq", "text": "Primes?",
            "options": [{"id": "opt1", "text": "2"}, {"id": "opt2", "text": "4"},
                        {"id": "opt3", "text": "7"}],
            "answer": ["opt1", "opt3"]}));
        assert!(leak(&q, "opt3 is one").is_some());
        assert!(leak(&q, "seven... I mean 7.0").is_some());
        assert_eq!(leak(&q, "4 is even, so it is out"), None);
    }

    #[test]
    fn a_subjective_question_has_no_key_to_leak() {
        let q = question(json!({"id": "q", "type": "subjective", "text": "Explain 42."}));
        assert_eq!(leak(&q, "42"), None);
    }
}
