//! What one load request is (a URL and a body with the request's unique id put in) and how a
//! record of the done topic names the request it completes (its key, or a field of its JSON
//! payload).

use anyhow::Context;

/// The placeholder replaced by each request's unique id, in the URL and in the body.
pub const ID_PLACEHOLDER: &str = "{id}";

/// A text with [`ID_PLACEHOLDER`] wherever the request's unique id goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    /// The text around each placeholder: `parts.len() - 1` placeholders.
    parts: Vec<String>,
}

impl Template {
    /// A template of `text` (every `{id}` in it is a placeholder; other braces are text).
    pub fn new(text: &str) -> Self {
        Self {
            parts: text.split(ID_PLACEHOLDER).map(str::to_string).collect(),
        }
    }

    /// The template of `--body`: the text itself, or with a leading `@` the content of the
    /// file it names (as curl does).
    pub fn from_argument(argument: &str) -> anyhow::Result<Self> {
        match argument.strip_prefix('@') {
            Some(path) => {
                let text = std::fs::read_to_string(path).with_context(|| {
                    format!("cannot read the body template {path} (given as --body @{path})")
                })?;
                Ok(Self::new(&text))
            }
            None => Ok(Self::new(argument)),
        }
    }

    /// Whether the id goes somewhere in this text.
    pub fn has_placeholder(&self) -> bool {
        self.parts.len() > 1
    }

    /// The text with `id` in place of every placeholder.
    pub fn render(&self, id: &str) -> String {
        self.parts.join(id)
    }
}

/// The URL and body of every request; each rendered with the request's id.
#[derive(Debug, Clone)]
pub struct RequestTemplate {
    /// Where to post.
    pub url: Template,
    /// What to post.
    pub body: Template,
}

impl RequestTemplate {
    /// The request templates, refused when no request would differ from the next.
    pub fn new(url: &str, body: Template) -> anyhow::Result<Self> {
        let url = Template::new(url);
        anyhow::ensure!(
            url.has_placeholder() || body.has_placeholder(),
            "neither --url nor --body contains {ID_PLACEHOLDER}: put it where each request's \
             unique id goes (e.g. the body's idempotency field), or every request repeats the first"
        );
        Ok(Self { url, body })
    }

    /// The URL and body of request `id`.
    pub fn render(&self, id: &str) -> (String, String) {
        (self.url.render(id), self.body.render(id))
    }
}

/// How a record of the done topic names the request it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Matcher {
    /// The record's key is the request id.
    Key,
    /// A field of the record's JSON payload is the request id: the path of object keys
    /// (`--match-field a.b` looks at `payload["a"]["b"]`).
    Field(Vec<String>),
}

impl Matcher {
    /// The matcher of `--match-field`: none matches on the key.
    pub fn new(field: Option<&str>) -> Self {
        match field {
            None => Self::Key,
            Some(path) => Self::Field(path.split('.').map(str::to_string).collect()),
        }
    }

    /// The request id a record names, if any (a string or a number field; a key in UTF-8).
    pub fn request_id(&self, key: Option<&[u8]>, payload: Option<&[u8]>) -> Option<String> {
        match self {
            Self::Key => key
                .and_then(|k| std::str::from_utf8(k).ok())
                .map(str::to_string),
            Self::Field(path) => {
                let value: serde_json::Value = serde_json::from_slice(payload?).ok()?;
                let found = path.iter().try_fold(&value, |v, name| v.get(name))?;
                match found {
                    serde_json::Value::String(s) => Some(s.clone()),
                    serde_json::Value::Number(n) => Some(n.to_string()),
                    _ => None,
                }
            }
        }
    }
}

impl std::fmt::Display for Matcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Key => write!(f, "record key"),
            Self::Field(path) => write!(f, "payload field {}", path.join(".")),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn every_placeholder_is_replaced_and_other_braces_kept() {
        let template = Template::new(r#"{"ticket": "{id}", "copy": "{id}", "n": {"x": 1}}"#);
        assert_eq!(
            template.render("t-7"),
            r#"{"ticket": "t-7", "copy": "t-7", "n": {"x": 1}}"#
        );
        assert!(template.has_placeholder());
        assert!(!Template::new("{}").has_placeholder());
        assert_eq!(Template::new("{}").render("x"), "{}");
    }

    #[test]
    fn a_body_from_a_file_and_a_missing_file_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("item.json");
        std::fs::write(&path, r#"{"item_id": "{id}"}"#).unwrap();
        let template = Template::from_argument(&format!("@{}", path.display())).unwrap();
        assert_eq!(template.render("i-1"), r#"{"item_id": "i-1"}"#);
        let literal = Template::from_argument(r#"{"a": "{id}"}"#).unwrap();
        assert_eq!(literal.render("2"), r#"{"a": "2"}"#);
        let missing = Template::from_argument("@/no/such/template.json").unwrap_err();
        assert!(format!("{missing:#}").contains("/no/such/template.json"));
    }

    #[test]
    fn the_id_may_go_in_the_url_but_must_go_somewhere() {
        let in_url =
            RequestTemplate::new("http://h/items/{id}/readings", Template::new("{}")).unwrap();
        assert_eq!(
            in_url.render("s-3"),
            ("http://h/items/s-3/readings".into(), "{}".into())
        );
        let nowhere = RequestTemplate::new("http://h/items", Template::new("{}")).unwrap_err();
        assert!(nowhere.to_string().contains("{id}"));
    }

    #[test]
    fn a_record_is_matched_by_key_or_by_a_payload_field() {
        let payload = br#"{"ticket_id": "t-1", "n": 42, "inner": {"item": "i-9"}, "list": [1]}"#;
        let key = Matcher::new(None);
        assert_eq!(
            key.request_id(Some(b"k-1"), Some(payload)),
            Some("k-1".into())
        );
        assert_eq!(key.request_id(None, Some(payload)), None);
        let field = Matcher::new(Some("ticket_id"));
        assert_eq!(
            field.request_id(Some(b"k-1"), Some(payload)),
            Some("t-1".into())
        );
        let nested = Matcher::new(Some("inner.item"));
        assert_eq!(nested.request_id(None, Some(payload)), Some("i-9".into()));
        let number = Matcher::new(Some("n"));
        assert_eq!(number.request_id(None, Some(payload)), Some("42".into()));
        for absent in ["missing", "list", "inner.missing"] {
            assert_eq!(
                Matcher::new(Some(absent)).request_id(None, Some(payload)),
                None
            );
        }
        assert_eq!(field.request_id(None, Some(b"not json")), None);
        assert_eq!(field.request_id(None, None), None);
    }
}
