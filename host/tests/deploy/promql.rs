//! What a PromQL expression of the dashboard refers to: its metric names and the label names it
//! matches or groups by. Just enough of PromQL's lexical grammar to tell a metric name from a
//! function, a keyword, a label, a duration or a Grafana variable; not a validating parser.

/// The names one expression refers to.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct References {
    /// Series names, as written (a histogram's `_bucket` included).
    pub metrics: Vec<String>,
    /// Label names matched inside a selector's braces, with the series name the selector has.
    pub matched: Vec<(Option<String>, String)>,
    /// Label names of `by`, `without`, `on`, `ignoring`, `group_left` and `group_right` lists.
    pub grouped: Vec<String>,
}

/// One lexical token.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    /// A name: a metric, function, keyword or label.
    Name(String),
    /// A quoted string.
    Text,
    /// One of `( { [`.
    Open(char),
    /// One of `) } ]`.
    Close(char),
    /// `,`.
    Comma,
    /// A number, a duration, a Grafana variable (`$stage`, `${…}`) or an operator.
    Other,
}

/// Words that are neither metrics nor labels when no `(` follows them.
const KEYWORDS: [&str; 8] = [
    "and", "or", "unless", "bool", "offset", "atan2", "inf", "nan",
];

/// Words whose parenthesised list holds label names.
const GROUPING: [&str; 6] = [
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// The metric and label names `expr` refers to, or why it cannot be read.
pub fn references(expr: &str) -> Result<References, String> {
    let tokens = tokenize(expr)?;
    balanced(&tokens)?;
    let mut found = References::default();
    let mut at = 0;
    while let Some(token) = tokens.get(at) {
        let next = tokens.get(at + 1);
        at = match token {
            Token::Name(name) if GROUPING.contains(&name.to_ascii_lowercase().as_str()) => {
                if next == Some(&Token::Open('(')) {
                    let (labels, after) = names_until(&tokens, at + 2, ')')?;
                    found.grouped.extend(labels);
                    after
                } else {
                    at + 1
                }
            }
            // A function, an aggregation (`sum by (…) (…)` too) or a keyword.
            Token::Name(name)
                if next == Some(&Token::Open('('))
                    || next.is_some_and(is_aggregation_modifier)
                    || KEYWORDS.contains(&name.to_ascii_lowercase().as_str()) =>
            {
                at + 1
            }
            Token::Name(name) => {
                found.metrics.push(name.clone());
                if next == Some(&Token::Open('{')) {
                    matchers(&tokens, at + 2, Some(name), &mut found)?
                } else {
                    at + 1
                }
            }
            Token::Open('{') => matchers(&tokens, at + 1, None, &mut found)?,
            // A range or subquery: durations and variables only.
            Token::Open('[') => closing(&tokens, at + 1, ']')?,
            _ => at + 1,
        };
    }
    Ok(found)
}

/// Whether every bracket is closed by its own kind.
fn balanced(tokens: &[Token]) -> Result<(), String> {
    let mut open = Vec::new();
    for token in tokens {
        match token {
            Token::Open(bracket) => open.push(*bracket),
            Token::Close(bracket) => {
                let expected = match open.pop() {
                    Some('(') => ')',
                    Some('{') => '}',
                    Some(_) => ']',
                    None => return Err(format!("`{bracket}` closes nothing")),
                };
                if *bracket != expected {
                    return Err(format!("`{bracket}` where `{expected}` was expected"));
                }
            }
            _ => {}
        }
    }
    match open.pop() {
        Some(bracket) => Err(format!("`{bracket}` is not closed")),
        None => Ok(()),
    }
}

/// The label matchers of a selector whose `{` is just before `at`; the index after its `}`.
fn matchers(
    tokens: &[Token],
    at: usize,
    metric: Option<&String>,
    found: &mut References,
) -> Result<usize, String> {
    let (labels, after) = names_until(tokens, at, '}')?;
    // Each matcher starts with a bare label name. `{__name__=…}` and Prometheus 3's quoted names
    // would hide a name from the catalogue check.
    let starts = std::iter::once(at).chain(
        (at..after)
            .filter(|&index| tokens[index] == Token::Comma)
            .map(|index| index + 1),
    );
    for start in starts {
        if !matches!(tokens.get(start), Some(Token::Name(_) | Token::Close('}'))) {
            return Err("write the metric before the braces and label names without quotes".into());
        }
    }
    if labels.iter().any(|label| label == "__name__") {
        return Err("write the metric before the braces, not as __name__".into());
    }
    found
        .matched
        .extend(labels.into_iter().map(|label| (metric.cloned(), label)));
    Ok(after)
}

/// The names from `at` up to the `close` that ends the list; the index after it.
fn names_until(tokens: &[Token], at: usize, close: char) -> Result<(Vec<String>, usize), String> {
    let after = closing(tokens, at, close)?;
    let names = tokens[at..after - 1]
        .iter()
        .filter_map(|token| match token {
            Token::Name(name) => Some(name.clone()),
            _ => None,
        })
        .collect();
    Ok((names, after))
}

/// The index after the `close` that balances an opening just before `at`.
fn closing(tokens: &[Token], at: usize, close: char) -> Result<usize, String> {
    let mut depth = 0usize;
    for (index, token) in tokens.iter().enumerate().skip(at) {
        match token {
            Token::Open(_) => depth += 1,
            Token::Close(found) if depth == 0 => {
                return if *found == close {
                    Ok(index + 1)
                } else {
                    Err(format!("`{found}` where `{close}` was expected"))
                };
            }
            Token::Close(_) => depth -= 1,
            _ => {}
        }
    }
    Err(format!("missing `{close}`"))
}

/// Whether `token` is `by` or `without`, which may follow an aggregation's name.
fn is_aggregation_modifier(token: &Token) -> bool {
    let Token::Name(name) = token else {
        return false;
    };
    ["by", "without"].contains(&name.to_ascii_lowercase().as_str())
}

fn is_name_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':'
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// The tokens of `expr`.
fn tokenize(expr: &str) -> Result<Vec<Token>, String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut tokens = Vec::new();
    let mut at = 0;
    let take_while = |mut at: usize, keep: fn(char) -> bool| {
        while chars.get(at).is_some_and(|&c| keep(c)) {
            at += 1;
        }
        at
    };
    while let Some(&c) = chars.get(at) {
        if c.is_whitespace() {
            at += 1;
        } else if c == '#' {
            at = take_while(at, |c| c != '\n');
        } else if matches!(c, '"' | '\'' | '`') {
            at += 1;
            loop {
                match chars.get(at) {
                    None => return Err("a string is not closed".into()),
                    Some('\\') if c != '`' => at += 2,
                    Some(&end) if end == c => break,
                    Some(_) => at += 1,
                }
            }
            at += 1;
            tokens.push(Token::Text);
        } else if c == '$' {
            at = if chars.get(at + 1) == Some(&'{') {
                take_while(at, |c| c != '}') + 1
            } else {
                take_while(at + 1, is_name_char)
            };
            tokens.push(Token::Other);
        } else if c.is_ascii_digit() || c == '.' {
            at = take_while(at, |c| c.is_ascii_alphanumeric() || c == '.' || c == '_');
            tokens.push(Token::Other);
        } else if is_name_start(c) {
            let end = take_while(at, is_name_char);
            tokens.push(Token::Name(chars[at..end].iter().collect()));
            at = end;
        } else {
            tokens.push(match c {
                '(' | '{' | '[' => Token::Open(c),
                ')' | '}' | ']' => Token::Close(c),
                ',' => Token::Comma,
                _ => Token::Other,
            });
            at += 1;
        }
    }
    Ok(tokens)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|name| name.to_string()).collect()
    }

    #[test]
    fn finds_metrics_not_functions_keywords_labels_or_durations() {
        let found = references(
            r#"histogram_quantile(0.99, sum by (stage, le) (rate(stagehost_stage_processing_seconds_bucket{stage=~"$stage"}[$__rate_interval])))"#,
        )
        .unwrap();
        assert_eq!(
            found.metrics,
            names(&["stagehost_stage_processing_seconds_bucket"])
        );
        assert_eq!(found.grouped, names(&["stage", "le"]));
        assert_eq!(
            found.matched,
            vec![(
                Some("stagehost_stage_processing_seconds_bucket".to_string()),
                "stage".to_string()
            )]
        );

        let found = references(
            "sum(rate(a_total[5m:1m] offset 1h)) without (instance) \
             / on (stage) group_left (topic) b > bool 0 and c or inf",
        )
        .unwrap();
        assert_eq!(found.metrics, names(&["a_total", "b", "c"]));
        assert_eq!(found.grouped, names(&["instance", "stage", "topic"]));
    }

    #[test]
    fn a_name_that_is_not_a_function_is_a_metric() {
        // `up` and a misspelt name are metrics to check, whatever they look like.
        let found = references("up + rate(stagehost_stage_event_in_total[1m])").unwrap();
        assert_eq!(
            found.metrics,
            names(&["up", "stagehost_stage_event_in_total"])
        );
    }

    #[test]
    fn hidden_names_and_broken_brackets_are_refused() {
        assert!(references(r#"{__name__="stagehost_build_info"}"#).is_err());
        assert!(references(r#"{"stagehost_build_info"}"#).is_err());
        assert!(references("sum(rate(x[5m])").is_err());
        assert!(references(r#"x{stage="a}"#).is_err());
    }
}
