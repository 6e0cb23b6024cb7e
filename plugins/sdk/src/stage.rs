//! What stage logic returns, and parsing helpers that give messages naming the bad field.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// The event a stage is asked to handle; the bindings glue builds it from the WIT
/// `input-event`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StageInput {
    /// Stable identity of the event (the CloudEvents `ce_id`).
    pub id: String,
    /// The event's type (the CloudEvents `ce_type`, the input topic's `event_type`).
    pub event_type: String,
    /// The Kafka record key, when the record has one.
    pub key: Option<String>,
    /// The JSON payload, already validated by the host against the topic's schema.
    pub payload: String,
    /// Every header of the record as `(name, value)`, including the `ce_*` attributes.
    pub headers: Vec<(String, String)>,
    /// The source: a topic name, or `http` for the HTTP ingress.
    pub topic: String,
}

impl StageInput {
    /// An input with the given id, type, key and payload, no headers, from topic `topic`.
    #[must_use]
    pub fn new(
        id: impl Into<String>,
        event_type: impl Into<String>,
        key: Option<&str>,
        payload: impl Into<String>,
    ) -> Self {
        Self {
            id: id.into(),
            event_type: event_type.into(),
            key: key.map(str::to_owned),
            payload: payload.into(),
            headers: Vec::new(),
            topic: String::new(),
        }
    }

    /// The same input with one more header.
    #[must_use]
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// The value of the first header named exactly `name`.
    #[must_use]
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Checks that the record key is `expected`. Stateful stages call it: their state is
    /// scoped to the input partition, so an event keyed by anything else would read and
    /// write the state of the wrong partition.
    ///
    /// # Errors
    /// [`StageFailure::Reject`] naming the key, `field` and the expected value.
    pub fn expect_key(&self, field: &str, expected: &str) -> Result<(), StageFailure> {
        match self.key.as_deref() {
            Some(key) if key == expected => Ok(()),
            Some(key) => Err(StageFailure::Reject(format!(
                "the record key must be the {field} \"{expected}\" (got \"{key}\")"
            ))),
            None => Err(StageFailure::Reject(format!(
                "the record key must be the {field} \"{expected}\" (the record has no key)"
            ))),
        }
    }
}

/// One event a stage wants published; the bindings glue turns it into the WIT `output-event`
/// (with no extra headers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageOutput {
    /// Logical output name, mapped to a topic by the stage's `outputs` table in pipeline.toml.
    pub output: String,
    /// Kafka record key; `None` keeps the input's key.
    pub key: Option<String>,
    /// The JSON payload.
    pub payload: String,
}

impl StageOutput {
    /// Serializes `payload` to JSON as output `output`, keyed by `key`.
    ///
    /// # Errors
    /// [`StageFailure::Reject`] if the payload cannot be serialized (a map with non-string
    /// keys, a failing `Serialize` impl).
    pub fn json<T: Serialize>(output: &str, key: &str, payload: &T) -> Result<Self, StageFailure> {
        let payload = serde_json::to_string(payload).map_err(|e| {
            StageFailure::Reject(format!("cannot serialize the {output} payload: {e}"))
        })?;
        Ok(Self {
            output: output.to_owned(),
            key: Some(key.to_owned()),
            payload,
        })
    }
}

/// Why a stage could not handle an event; mirrors the WIT `stage-error` variant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StageFailure {
    /// The event is wrong and will never succeed: dead-letter it. The text names the problem.
    Reject(String),
    /// Transient: handling the same event again later may succeed.
    Retry(String),
}

impl StageFailure {
    /// The explanation, whatever the variant.
    #[must_use]
    pub fn message(&self) -> &str {
        match self {
            Self::Reject(m) | Self::Retry(m) => m,
        }
    }
}

impl std::fmt::Display for StageFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Reject(m) => write!(f, "reject: {m}"),
            Self::Retry(m) => write!(f, "retry: {m}"),
        }
    }
}

impl std::error::Error for StageFailure {}

/// Deserializes JSON text, reporting errors as `<path>: <serde message>`, where the path
/// is like `items[0].quantity` (no prefix when the error is at the top level).
fn from_json_with_path<T: DeserializeOwned>(text: &str) -> Result<T, String> {
    let mut de = serde_json::Deserializer::from_str(text);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        // `.` is the top level, `?` an unknown position (e.g. malformed JSON).
        if path == "." || path == "?" {
            e.inner().to_string()
        } else {
            format!("{path}: {}", e.inner())
        }
    })?;
    de.end().map_err(|e| e.to_string())?;
    Ok(value)
}

/// Parses an input event payload as `T`, rejecting with a message such as
/// `invalid OrderReceived payload: items[0].quantity: invalid type: ...`.
///
/// # Errors
/// [`StageFailure::Reject`] naming `what`, the field path and the JSON error.
pub fn parse_payload<T: DeserializeOwned>(payload: &str, what: &str) -> Result<T, StageFailure> {
    from_json_with_path(payload)
        .map_err(|e| StageFailure::Reject(format!("invalid {what} payload: {e}")))
}

/// Parses the stage's `config` table (the JSON object from `config::get-all`) as `T`,
/// rejecting with a message naming the offending key, e.g.
/// `invalid stage config: carriers[1]: invalid type: integer `3`, expected a string ...`.
/// The host knows a reject beginning `invalid stage config` for the operator's mistake: the
/// HTTP ingress answers it with 503, never the client's 400 (keep the prefix if you write
/// your own).
///
/// # Errors
/// [`StageFailure::Reject`] naming the key and the problem.
pub fn parse_config<T: DeserializeOwned>(json: &str) -> Result<T, StageFailure> {
    from_json_with_path(json)
        .map_err(|e| StageFailure::Reject(format!("invalid stage config: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    /// A payload with a nested list, for field paths.
    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Order {
        order_id: String,
        items: Vec<Item>,
    }

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Item {
        product_id: String,
        quantity: u64,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Cfg {
        #[serde(default = "default_name")]
        name: String,
        #[serde(default)]
        list: Vec<String>,
    }

    fn default_name() -> String {
        "dflt".into()
    }

    #[test]
    fn input_headers_and_keys() {
        let input = StageInput::new("e", "T", Some("k"), "{}")
            .with_header("ce_time", "2026-01-01T00:00:00Z")
            .with_header("ce_time", "later");
        assert_eq!(input.header("ce_time"), Some("2026-01-01T00:00:00Z"));
        assert_eq!(input.header("CE_TIME"), None);
        assert_eq!(input.expect_key("order_id", "k"), Ok(()));
        assert_eq!(
            input
                .expect_key("order_id", "o")
                .expect_err("other key")
                .message(),
            "the record key must be the order_id \"o\" (got \"k\")"
        );
        let keyless = StageInput::new("e", "T", None, "{}");
        assert!(
            keyless
                .expect_key("product_id", "p")
                .expect_err("no key")
                .message()
                .ends_with("(the record has no key)")
        );
    }

    #[test]
    fn json_output_is_keyed_and_serialized() {
        let out = StageOutput::json("received", "order-1", &serde_json::json!({"a": 1}))
            .expect("serializes");
        assert_eq!(out.output, "received");
        assert_eq!(out.key.as_deref(), Some("order-1"));
        assert_eq!(out.payload, r#"{"a":1}"#);
    }

    #[test]
    fn payload_errors_name_the_field_path() {
        let err = parse_payload::<Order>(
            r#"{"order_id":"o","customer_id":"c","items":[{"product_id":"p","quantity":"2","price":1}],"total":1}"#,
            "Order",
        )
        .expect_err("quantity is a string");
        let StageFailure::Reject(msg) = err else {
            panic!("expected reject, got {err:?}");
        };
        assert!(
            msg.starts_with("invalid Order payload: items[0].quantity: invalid type"),
            "{msg}"
        );
    }

    #[test]
    fn payload_errors_report_malformed_json_and_trailing_data() {
        let err = parse_payload::<Order>("{", "Order").expect_err("malformed");
        assert!(
            err.message().starts_with("invalid Order payload: "),
            "{err}"
        );
        assert!(err.message().contains("EOF"), "{err}");

        let err = parse_payload::<Cfg>("{} x", "Cfg").expect_err("trailing");
        assert!(err.message().contains("trailing characters"), "{err}");
    }

    #[test]
    fn config_defaults_apply_and_errors_name_the_key() {
        assert_eq!(
            parse_config::<Cfg>("{}").expect("empty config"),
            Cfg {
                name: "dflt".into(),
                list: vec![]
            }
        );
        let err = parse_config::<Cfg>(r#"{"list":["a",3]}"#).expect_err("bad element");
        assert!(
            err.message().starts_with("invalid stage config: list[1]: "),
            "{err}"
        );
        let err = parse_config::<Cfg>("{").expect_err("malformed");
        assert!(
            err.message()
                .starts_with("invalid stage config: EOF while parsing an object"),
            "{err}"
        );
        let err = parse_config::<Cfg>(r#"{"nmae":"x"}"#).expect_err("unknown key");
        assert!(err.message().contains("unknown field `nmae`"), "{err}");
        assert!(matches!(err, StageFailure::Reject(_)));
    }

    #[test]
    fn failure_display_and_message() {
        let f = StageFailure::Retry("later".into());
        assert_eq!(f.message(), "later");
        assert_eq!(f.to_string(), "retry: later");
        assert_eq!(StageFailure::Reject("no".into()).to_string(), "reject: no");
    }
}
