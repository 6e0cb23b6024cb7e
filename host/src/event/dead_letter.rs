//! The dead-letter envelope: the seed's fields (`original_event`, `error`, `timestamp`) plus
//! where the event came from and which plugin version failed on it.

use serde::{Deserialize, Serialize};

/// Where a failed event was read from.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Origin {
    /// The stage that failed on it.
    pub stage: String,
    /// The topic it was read from (`http` for the ingress).
    pub source_topic: String,
    /// Its partition (-1 for the ingress).
    pub partition: i32,
    /// Its offset (-1 for the ingress).
    pub offset: i64,
}

/// One dead letter as published to the dead-letter topic.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The failed event's body: its JSON when it parses, otherwise its text.
    pub original_event: serde_json::Value,
    /// Why it failed.
    pub error: String,
    /// When it was dead-lettered (RFC 3339).
    pub timestamp: String,
    /// Where it came from.
    #[serde(flatten)]
    pub origin: Origin,
    /// Content hash of the plugin version that handled it.
    pub plugin_version: String,
    /// The failed event's id.
    pub event_id: String,
    /// How many times it was attempted.
    pub attempts: u32,
    /// The failed event's type (`ce_type`), for replays.
    #[serde(default)]
    pub event_type: Option<String>,
}

impl DeadLetter {
    /// Builds a dead letter for `payload`, keeping it as JSON when it is JSON.
    pub fn new(
        payload: &[u8],
        error: String,
        origin: Origin,
        plugin_version: &str,
        event_id: &str,
    ) -> Self {
        let original_event = serde_json::from_slice(payload).unwrap_or_else(|_| {
            serde_json::Value::String(String::from_utf8_lossy(payload).into_owned())
        });
        Self {
            original_event,
            error,
            timestamp: super::cloudevents::now_rfc3339(),
            origin,
            plugin_version: plugin_version.to_string(),
            event_id: event_id.to_string(),
            attempts: 1,
            event_type: None,
        }
    }

    /// The envelope as JSON bytes.
    pub fn to_json(&self) -> Vec<u8> {
        // Serializing plain strings, numbers and a JSON value cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin() -> Origin {
        Origin {
            stage: "warehouse".into(),
            source_topic: "OrderConfirmed".into(),
            partition: 2,
            offset: 41,
        }
    }

    #[test]
    fn keeps_json_bodies_as_json_and_adds_context() {
        let letter = DeadLetter::new(
            br#"{"order_id":"o-1"}"#,
            "rejected: bad".into(),
            origin(),
            "sha256:ab",
            "id-1",
        );
        let json: serde_json::Value = serde_json::from_slice(&letter.to_json()).unwrap();
        assert_eq!(json["original_event"]["order_id"], "o-1");
        assert_eq!(json["error"], "rejected: bad");
        assert_eq!(json["stage"], "warehouse");
        assert_eq!(json["source_topic"], "OrderConfirmed");
        assert_eq!(json["partition"], 2);
        assert_eq!(json["offset"], 41);
        assert_eq!(json["plugin_version"], "sha256:ab");
        assert_eq!(json["event_id"], "id-1");
        assert!(json["timestamp"].as_str().unwrap().ends_with('Z'));
    }

    #[test]
    fn keeps_non_json_bodies_as_text() {
        let letter = DeadLetter::new(b"{not json", "x".into(), origin(), "v", "id");
        assert_eq!(letter.original_event, serde_json::json!("{not json"));
    }
}
