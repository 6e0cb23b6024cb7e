//! librdkafka properties written in `[kafka]` and its role tables: TOML's dotted keys and nested
//! tables become librdkafka's dotted names, `${VAR}` is filled from the environment, and
//! secrets never reach a log or an error message.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer};

use super::problem::Problem;

/// librdkafka properties by their dotted name (`security.protocol`, `sasl.password`, …).
///
/// In TOML, `security.protocol = "SASL_SSL"` is a dotted key (a table `security` holding
/// `protocol`); both that and a quoted `"security.protocol"` give the same property. Numbers
/// and booleans are accepted and passed on as text.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct KafkaSettings(BTreeMap<String, String>);

impl KafkaSettings {
    /// Settings from `(name, value)` pairs.
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        Self(
            pairs
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    /// Every property, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// The value of one property.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// Whether there are no properties.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Replaces every `${VAR}` in the values with the environment variable `VAR` (through
    /// `lookup`); `$${` stands for a literal `${`. A variable that is not set is a problem
    /// naming the variable and the key (`section` is the table's path, e.g. `kafka.producer`);
    /// its property is dropped (the configuration is rejected anyway).
    pub fn interpolate(
        &mut self,
        section: &str,
        lookup: &impl Fn(&str) -> Option<String>,
    ) -> Vec<Problem> {
        let mut problems = Vec::new();
        self.0
            .retain(|name, value| match interpolate(value, lookup) {
                Ok(filled) => {
                    *value = filled;
                    true
                }
                Err(message) => {
                    problems.push(Problem {
                        key: format!("{section}.{name}"),
                        message,
                    });
                    false
                }
            });
        problems
    }
}

/// Whether a property holds a secret whose value must never be shown.
pub fn is_secret(name: &str) -> bool {
    const MARKS: [&str; 6] = [
        "password",
        "secret",
        "passphrase",
        "key.pem",
        "ssl_key",
        "oauthbearer.config",
    ];
    let name = name.to_ascii_lowercase();
    MARKS.iter().any(|mark| name.contains(mark))
}

/// What is shown instead of a secret value.
pub const REDACTED: &str = "<redacted>";

impl fmt::Debug for KafkaSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.0.iter().map(|(name, value)| {
                let shown = if is_secret(name) { REDACTED } else { value };
                (name, shown)
            }))
            .finish()
    }
}

impl<'de> Deserialize<'de> for KafkaSettings {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let table = BTreeMap::<String, toml::Value>::deserialize(deserializer)?;
        let mut settings = BTreeMap::new();
        for (name, value) in table {
            flatten(name, value, &mut settings).map_err(serde::de::Error::custom)?;
        }
        Ok(Self(settings))
    }
}

/// Adds `value` under `name`, nested tables under `name.<key>`.
fn flatten(
    name: String,
    value: toml::Value,
    into: &mut BTreeMap<String, String>,
) -> Result<(), String> {
    let text = match value {
        toml::Value::String(text) => text,
        toml::Value::Integer(n) => n.to_string(),
        toml::Value::Float(x) => x.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        toml::Value::Table(table) => {
            for (key, value) in table {
                flatten(format!("{name}.{key}"), value, into)?;
            }
            return Ok(());
        }
        toml::Value::Array(_) | toml::Value::Datetime(_) => {
            return Err(format!(
                "the librdkafka property `{name}` must be a string, a number or a boolean \
                 (a list is written as one comma-separated string)"
            ));
        }
    };
    into.insert(name, text);
    Ok(())
}

/// Fills `${VAR}` in `value`; the error names the missing variable.
pub fn interpolate(
    value: &str,
    lookup: &impl Fn(&str) -> Option<String>,
) -> Result<String, String> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at..];
        if let Some(escaped) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = escaped;
        } else if let Some(open) = after.strip_prefix("${") {
            let end = open.find('}').ok_or_else(|| {
                "has a `${` without its closing `}` (write `$${` for a literal `${`)".to_string()
            })?;
            let variable = &open[..end];
            if variable.is_empty() {
                return Err("has an empty `${}`; name an environment variable".into());
            }
            let filled = lookup(variable).ok_or_else(|| {
                format!(
                    "refers to the environment variable {variable}, which is not set; \
                     export it before starting"
                )
            })?;
            out.push_str(&filled);
            rest = &open[end + 1..];
        } else {
            out.push('$');
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "PASS" => Some("s3cret".into()),
            "USER" => Some("alice".into()),
            _ => None,
        }
    }

    #[test]
    fn dotted_keys_and_nested_tables_become_dotted_names() {
        let settings: KafkaSettings = toml::from_str(
            "security.protocol = \"SASL_SSL\"\n\"sasl.mechanism\" = \"SCRAM-SHA-512\"\n\
             session.timeout.ms = 6000\nenable.idempotence = true\n[ssl.ca]\nlocation = \"/ca.pem\"\n",
        )
        .unwrap();
        assert_eq!(
            settings.iter().collect::<Vec<_>>(),
            vec![
                ("enable.idempotence", "true"),
                ("sasl.mechanism", "SCRAM-SHA-512"),
                ("security.protocol", "SASL_SSL"),
                ("session.timeout.ms", "6000"),
                ("ssl.ca.location", "/ca.pem"),
            ]
        );
    }

    #[test]
    fn a_list_is_refused_with_the_property_name() {
        let error = toml::from_str::<KafkaSettings>("sasl.mechanism = [\"A\", \"B\"]")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("`sasl.mechanism` must be a string"),
            "{error}"
        );
    }

    #[test]
    fn variables_are_filled_and_escapes_kept() {
        assert_eq!(
            interpolate("${USER}:${PASS}", &env).unwrap(),
            "alice:s3cret"
        );
        assert_eq!(interpolate("a$b$${PASS}", &env).unwrap(), "a$b${PASS}");
        assert_eq!(interpolate("plain", &env).unwrap(), "plain");
        assert!(interpolate("${PASS", &env).unwrap_err().contains("closing"));
    }

    #[test]
    fn a_missing_variable_names_the_variable_and_the_key() {
        let mut settings =
            KafkaSettings::from_pairs([("sasl.password", "${NOPE}"), ("sasl.username", "${USER}")]);
        let problems = settings.interpolate("kafka", &env);
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].key, "kafka.sasl.password");
        assert!(
            problems[0].message.contains("NOPE"),
            "{}",
            problems[0].message
        );
        assert_eq!(settings.get("sasl.username"), Some("alice"));
    }

    #[test]
    fn secrets_are_redacted_in_debug_output() {
        let settings = KafkaSettings::from_pairs([
            ("sasl.password", "hunter2"),
            ("ssl.key.password", "k3y"),
            ("sasl.oauthbearer.client.secret", "c1ient"),
            ("sasl.username", "alice"),
        ]);
        let shown = format!("{settings:?}");
        for secret in ["hunter2", "k3y", "c1ient"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert!(shown.contains("alice"), "{shown}");
        assert!(is_secret("ssl.keystore.password") && !is_secret("ssl.ca.location"));
    }
}
