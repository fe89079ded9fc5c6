//! Scores every worked example of docs/SCORING.md and checks the result excerpt printed after
//! it, so that the documentation cannot drift from the code.

use serde_json::Value;

use super::score_json;

fn scoring_md() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/SCORING.md");
    std::fs::read_to_string(path).expect("docs/SCORING.md")
}

/// The examples: (name, is an error example, request, expected excerpt).
fn examples(doc: &str) -> Vec<(String, bool, Value, Value)> {
    let mut out = Vec::new();
    for (start, _) in doc.match_indices("<!-- example") {
        let header = &doc[start..start + doc[start..].find("-->").unwrap()];
        let (kind, name) = header
            .trim_start_matches("<!-- ")
            .split_once(':')
            .expect("<!-- example: NAME -->");
        let mut blocks = doc[start..].split("```json\n").skip(1).map(|rest| {
            let body = &rest[..rest.find("\n```").expect("a closed ```json block")];
            serde_json::from_str::<Value>(body)
                .unwrap_or_else(|e| panic!("example {name}: {e}\n{body}"))
        });
        let request = blocks.next().expect("a request block");
        let expected = blocks.next().expect("an expected block");
        out.push((
            name.trim().to_owned(),
            kind == "example-error",
            request,
            expected,
        ));
    }
    out
}

/// Whether `actual` has every field of `expected` with the same value; arrays must have the
/// same length and match element by element.
fn contains(actual: &Value, expected: &Value, path: &str) -> Result<(), String> {
    match (actual, expected) {
        (Value::Object(a), Value::Object(e)) => {
            for (key, value) in e {
                let path = format!("{path}.{key}");
                let got = a.get(key).ok_or_else(|| format!("{path} is missing"))?;
                contains(got, value, &path)?;
            }
            Ok(())
        }
        (Value::Array(a), Value::Array(e)) if a.len() == e.len() => a
            .iter()
            .zip(e)
            .enumerate()
            .try_for_each(|(i, (a, e))| contains(a, e, &format!("{path}[{i}]"))),
        _ if actual == expected => Ok(()),
        _ => Err(format!("{path} is {actual}, the doc says {expected}")),
    }
}

#[test]
fn every_worked_example_scores_as_documented() {
    let doc = scoring_md();
    let examples = examples(&doc);
    let names: Vec<&str> = examples.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(
        names,
        [
            "jee-main",
            "jee-advanced",
            "neet",
            "gate",
            "cat",
            "upsc",
            "revisions",
            "rubric",
            "bad-attempt"
        ]
    );
    for (name, is_error, request, expected) in examples {
        let outcome = score_json(&request.to_string());
        let actual = match (is_error, outcome) {
            (false, Ok(result)) => serde_json::to_value(&result).unwrap(),
            (true, Err(err)) => serde_json::to_value(&err).unwrap(),
            (_, Ok(result)) => panic!("example {name} should fail but scored {result:?}"),
            (_, Err(err)) => panic!("example {name}: {err}"),
        };
        if is_error {
            assert_eq!(actual, expected, "example {name}");
        } else if let Err(e) = contains(&actual, &expected, "result") {
            panic!("example {name}: {e}\nactual: {actual:#}");
        }
    }
}
