//! The dead-letter envelope: the seed's fields (`original_event`, `error`, `timestamp`) plus
//! where the event came from and which plugin version failed on it.
//!
//! A dead letter always fits in one Kafka record. The event that failed may be as large as the
//! broker allows (a 900 KB JSON string), and quoting it can make it larger still (each control
//! byte becomes six characters once escaped), so [`DeadLetter::to_json`] keeps the serialized
//! letter within [`DEFAULT_MAX_BYTES`]: texts too long for it (`original_event`, `error` — a
//! schema violation may quote the whole value —, `event_id`, `event_type`) are cut on a char
//! boundary, end with a `… (N bytes truncated)` marker, and the letter's `truncated` field gives
//! each cut text's whole size and SHA-256 digest. The original event stays readable at the
//! `source_topic`, `partition` and `offset` the letter names.

use std::collections::BTreeMap;
use std::io;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Default bound of a serialized dead letter, in bytes: far below Kafka's default record limit
/// (`message.max.bytes`, about 1 MB), with room for the record's key and headers.
pub const DEFAULT_MAX_BYTES: usize = 64 * 1024;

/// The smallest bound [`DeadLetter::to_json_within`] honours: room for the envelope's own
/// fields, the truncation markers and the digests.
pub const MIN_MAX_BYTES: usize = 2 * 1024;

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

/// A text of the letter that was cut to make the letter fit: what it was before.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Cut {
    /// Its whole size in bytes (for `original_event`: the record's value as read).
    pub size_bytes: usize,
    /// SHA-256 of those bytes, lowercase hex: compare it with the record at the letter's
    /// `source_topic`, `partition` and `offset`.
    pub sha256: String,
}

impl Cut {
    /// The size and digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self {
            size_bytes: bytes.len(),
            sha256: Sha256::digest(bytes)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect(),
        }
    }
}

/// One dead letter as published to the dead-letter topic.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The failed event's body: its JSON when it parses, otherwise its text. When the letter
    /// had to be shortened: the beginning of the body's text, then a truncation marker.
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
    /// The fields cut so that the letter fits in a Kafka record, by name, with what each was
    /// before. Absent when nothing was cut.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub truncated: BTreeMap<String, Cut>,
    /// The failed event's body exactly as read: what a cut `original_event` is measured and
    /// digested from. Not serialized (empty in letters read back from the topic).
    #[serde(skip)]
    raw: Vec<u8>,
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
            truncated: BTreeMap::new(),
            raw: payload.to_vec(),
        }
    }

    /// The kind of failure, as the `reason` label of `stagehost_stage_dead_letters_total`
    /// names it (`schema`, `rejected`, `trap`, `timeout`, …), read from the error's prefix;
    /// `other` for an error no stage writes.
    pub fn reason(&self) -> &'static str {
        REASONS
            .iter()
            .find(|(prefix, _)| self.error.starts_with(prefix))
            .map_or("other", |(_, reason)| reason)
    }

    /// Whether `original_event` holds only the beginning of the failed event.
    pub fn is_original_truncated(&self) -> bool {
        self.truncated.contains_key(ORIGINAL_EVENT)
    }

    /// The envelope as JSON bytes, at most [`DEFAULT_MAX_BYTES`] long.
    pub fn to_json(&self) -> Vec<u8> {
        self.to_json_within(DEFAULT_MAX_BYTES)
    }

    /// The envelope as JSON bytes, at most `max_bytes` long (at least [`MIN_MAX_BYTES`]):
    /// whole when it fits, otherwise with its long texts cut (see the module documentation).
    pub fn to_json_within(&self, max_bytes: usize) -> Vec<u8> {
        let max_bytes = max_bytes.max(MIN_MAX_BYTES);
        let whole = serialize(self);
        if whole.len() <= max_bytes {
            return whole;
        }
        let texts = self.long_texts();
        // The letter with every long text cut to nothing: what is left is for their beginnings.
        let skeleton = serialize(&self.shortened(&texts, &[Some(0); LONG_TEXTS], true));
        let mut room = max_bytes.saturating_sub(skeleton.len());
        loop {
            let budgets = share(&texts, room);
            let letter = serialize(&self.shortened(&texts, &budgets, false));
            // Measured, not guessed; the skeleton over-counts, so this holds the first time.
            if letter.len() <= max_bytes || room == 0 {
                return letter;
            }
            room /= 2;
        }
    }

    /// The texts that may be long, in [`LONG_TEXTS`] order.
    fn long_texts(&self) -> [LongText<'_>; LONG_TEXTS] {
        let original = if self.raw.is_empty() {
            match &self.original_event {
                serde_json::Value::String(text) => text.clone(),
                other => other.to_string(),
            }
        } else {
            String::from_utf8_lossy(&self.raw).into_owned()
        };
        let original_bytes = if self.raw.is_empty() {
            original.as_bytes().to_vec()
        } else {
            self.raw.clone()
        };
        let mut event_type =
            LongText::of("event_type", self.event_type.as_deref().unwrap_or_default());
        if self.event_type.is_none() {
            // Nothing to cut: serialized as `null`.
            event_type.whole_len = 0;
        }
        [
            LongText {
                name: ORIGINAL_EVENT,
                whole_len: json_len(&self.original_event),
                cut: Cut::of(&original_bytes),
                text: std::borrow::Cow::Owned(original),
            },
            LongText::of("error", &self.error),
            LongText::of("event_id", &self.event_id),
            event_type,
        ]
    }

    /// A copy with text `i` cut to `budgets[i]` escaped bytes (`None`: kept whole); with
    /// `placeholder`, every cut text gets the longest marker there can be.
    fn shortened(
        &self,
        texts: &[LongText<'_>; LONG_TEXTS],
        budgets: &[Option<usize>; LONG_TEXTS],
        placeholder: bool,
    ) -> DeadLetter {
        let mut cut = texts.iter().zip(budgets).map(|(text, budget)| {
            budget.map(|budget| {
                let kept = prefix_within(&text.text, budget);
                let dropped = if placeholder {
                    usize::MAX
                } else {
                    text.text.len() - kept.len()
                };
                (
                    format!("{kept}{}", truncation_marker(dropped)),
                    (text.name.to_string(), text.cut.clone()),
                )
            })
        });
        let mut next = || cut.next().flatten();
        let (original, error, event_id, event_type) = (next(), next(), next(), next());
        let truncated = [&original, &error, &event_id, &event_type]
            .into_iter()
            .flatten()
            .map(|(_, entry)| entry.clone())
            .collect();
        DeadLetter {
            original_event: original
                .map(|(text, _)| serde_json::Value::String(text))
                .unwrap_or_else(|| self.original_event.clone()),
            error: error.map_or_else(|| self.error.clone(), |(text, _)| text),
            timestamp: self.timestamp.clone(),
            origin: self.origin.clone(),
            plugin_version: self.plugin_version.clone(),
            event_id: event_id.map_or_else(|| self.event_id.clone(), |(text, _)| text),
            attempts: self.attempts,
            event_type: event_type
                .map(|(text, _)| text)
                .or_else(|| self.event_type.clone()),
            truncated,
            raw: Vec::new(),
        }
    }
}

/// The error prefixes a stage writes, and the reason each stands for (the stage's failure
/// kinds; a test in `stage::processor` keeps the two lists in step).
const REASONS: [(&str, &str); 11] = [
    ("undecodable: ", "undecodable"),
    ("schema violation: ", "schema"),
    ("rejected: ", "rejected"),
    ("retry: ", "retries_exhausted"),
    ("timeout: ", "timeout"),
    ("trap: ", "trap"),
    ("memory limit: ", "trap"),
    ("trapped ", "trap"),
    ("invalid plugin output: ", "bad_output"),
    ("state full: ", "state_full"),
    ("too large: ", "too_large"),
];

/// Name of the `original_event` field (and its key in `truncated`).
const ORIGINAL_EVENT: &str = "original_event";
/// How many texts of a letter may be cut.
const LONG_TEXTS: usize = 4;

/// A text of the letter that may be too long.
struct LongText<'a> {
    /// Its field.
    name: &'static str,
    /// Its serialized size when kept whole.
    whole_len: usize,
    /// Its text, cut from the front when it does not fit.
    text: std::borrow::Cow<'a, str>,
    /// Its size and digest.
    cut: Cut,
}

impl<'a> LongText<'a> {
    fn of(name: &'static str, text: &'a str) -> Self {
        Self {
            name,
            whole_len: json_len(text),
            text: std::borrow::Cow::Borrowed(text),
            cut: Cut::of(text.as_bytes()),
        }
    }
}

/// The marker ending a cut text.
pub fn truncation_marker(dropped_bytes: usize) -> String {
    format!("… ({dropped_bytes} bytes truncated)")
}

/// Shares `room` serialized bytes between the texts, smallest first, so that a short text is
/// kept whole and the long ones split what is left evenly: `None` for a text kept whole,
/// otherwise how many escaped bytes of it to keep.
fn share(texts: &[LongText<'_>; LONG_TEXTS], mut room: usize) -> [Option<usize>; LONG_TEXTS] {
    let mut order: Vec<usize> = (0..LONG_TEXTS).collect();
    order.sort_by_key(|&i| texts[i].whole_len);
    let mut budgets = [None; LONG_TEXTS];
    for (done, &i) in order.iter().enumerate() {
        let fair = room / (LONG_TEXTS - done);
        if texts[i].whole_len <= fair {
            room -= texts[i].whole_len;
        } else {
            budgets[i] = Some(fair);
            room -= fair;
        }
    }
    budgets
}

/// The longest beginning of `text`, ending on a char boundary, whose JSON-escaped form takes
/// at most `budget` bytes. Each char's escaped size is measured with `serde_json` itself.
fn prefix_within(text: &str, budget: usize) -> &str {
    let mut used = 0;
    for (at, c) in text.char_indices() {
        let mut buffer = [0; 4];
        // Minus the two quotes around the one-char string.
        used += json_len(&*c.encode_utf8(&mut buffer)) - 2;
        if used > budget {
            return &text[..at];
        }
    }
    text
}

/// The serialized size of `value`, without building it.
fn json_len(value: &(impl Serialize + ?Sized)) -> usize {
    let mut counter = Counter(0);
    // Writing to a counter cannot fail, and neither can serializing strings and JSON values.
    serde_json::to_writer(&mut counter, value).ok();
    counter.0
}

fn serialize(letter: &DeadLetter) -> Vec<u8> {
    // Serializing plain strings, numbers and a JSON value cannot fail.
    serde_json::to_vec(letter).unwrap_or_default()
}

/// An `io::Write` that only counts.
struct Counter(usize);

impl io::Write for Counter {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.0 += bytes.len();
        Ok(bytes.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin() -> Origin {
        Origin {
            stage: "warehouse".into(),
            source_topic: "ThingConfirmed".into(),
            partition: 2,
            offset: 41,
        }
    }

    fn hex_digest(bytes: &[u8]) -> String {
        Cut::of(bytes).sha256
    }

    #[test]
    fn keeps_json_bodies_as_json_and_adds_context() {
        let letter = DeadLetter::new(
            br#"{"thing_id":"o-1"}"#,
            "rejected: bad".into(),
            origin(),
            "sha256:ab",
            "id-1",
        );
        let json: serde_json::Value = serde_json::from_slice(&letter.to_json()).unwrap();
        assert_eq!(json["original_event"]["thing_id"], "o-1");
        assert_eq!(json["error"], "rejected: bad");
        assert_eq!(json["stage"], "warehouse");
        assert_eq!(json["source_topic"], "ThingConfirmed");
        assert_eq!(json["partition"], 2);
        assert_eq!(json["offset"], 41);
        assert_eq!(json["plugin_version"], "sha256:ab");
        assert_eq!(json["event_id"], "id-1");
        assert!(json["timestamp"].as_str().unwrap().ends_with('Z'));
        assert!(json.get("truncated").is_none(), "{json}");
    }

    #[test]
    fn the_reason_is_read_from_the_errors_prefix() {
        let reason =
            |error: &str| DeadLetter::new(b"{}", error.into(), origin(), "v", "id").reason();
        assert_eq!(reason("rejected: no stock"), "rejected");
        assert_eq!(reason("schema violation: \"x\" is not an object"), "schema");
        assert_eq!(reason("memory limit: grew past 1 byte"), "trap");
        assert_eq!(reason("something odd"), "other");
    }

    #[test]
    fn keeps_non_json_bodies_as_text() {
        let letter = DeadLetter::new(b"{not json", "x".into(), origin(), "v", "id");
        assert_eq!(letter.original_event, serde_json::json!("{not json"));
    }

    /// Checks the bound, the envelope and the record of the cut original.
    fn assert_bounded(payload: &[u8], error: String) -> serde_json::Value {
        let mut letter = DeadLetter::new(payload, error, origin(), "sha256:ab", "id-1");
        letter.attempts = 3;
        letter.event_type = Some("ThingPacked".into());
        let bytes = letter.to_json();
        assert!(bytes.len() <= DEFAULT_MAX_BYTES, "{} bytes", bytes.len());
        // Not much room wasted either.
        assert!(
            bytes.len() > DEFAULT_MAX_BYTES * 3 / 4,
            "{} bytes",
            bytes.len()
        );
        let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        for field in ["stage", "source_topic", "partition", "offset", "timestamp"] {
            assert!(!json[field].is_null(), "{field} missing: {json}");
        }
        assert_eq!(json["attempts"], 3);
        assert_eq!(json["event_type"], "ThingPacked");
        let cut = &json["truncated"]["original_event"];
        assert_eq!(cut["size_bytes"], payload.len());
        assert_eq!(cut["sha256"], hex_digest(payload));
        let kept = json["original_event"].as_str().unwrap();
        let (text, marker) = kept.rsplit_once("… (").unwrap();
        assert!(String::from_utf8_lossy(payload).starts_with(text));
        assert_eq!(
            marker,
            format!("{} bytes truncated)", payload.len() - text.len())
        );
        // The letter reads back, and knows it is cut.
        let back: DeadLetter = serde_json::from_slice(&bytes).unwrap();
        assert!(back.is_original_truncated());
        json
    }

    #[test]
    fn a_900_kb_json_string_and_its_quoting_error_fit() {
        let payload = format!("\"{}\"", "x".repeat(900 * 1024));
        // Schema errors quote the value.
        let error = format!("schema violation: {payload} is not of type \"object\"");
        let json = assert_bounded(payload.as_bytes(), error.clone());
        let cut = &json["truncated"]["error"];
        assert_eq!(cut["size_bytes"], error.len());
        assert_eq!(cut["sha256"], hex_digest(error.as_bytes()));
        let kept = json["error"].as_str().unwrap();
        assert!(kept.starts_with("schema violation: \"xxx"), "{kept:.80}");
        assert!(kept.ends_with(" bytes truncated)"), "{kept:.80}");
        // Both got a fair share.
        assert!(kept.len() > DEFAULT_MAX_BYTES / 3, "{}", kept.len());
    }

    #[test]
    fn two_hundred_kb_of_control_bytes_fit_after_escaping() {
        // Not JSON (raw control bytes in a string): kept as text, each byte escaped as \u0001.
        let mut payload = vec![b'"'];
        payload.extend(std::iter::repeat_n(1u8, 200 * 1024));
        payload.push(b'"');
        let error = "undecodable: body is not JSON: control character".to_string();
        let json = assert_bounded(&payload, error.clone());
        assert_eq!(json["error"], error.as_str());
        assert!(json["truncated"].get("error").is_none());
    }

    #[test]
    fn cuts_on_char_boundaries_and_huge_ids_too() {
        let payload = "é🦀\n".repeat(100_000);
        let id = "i".repeat(300_000);
        let mut letter = DeadLetter::new(payload.as_bytes(), "e".into(), origin(), "v", &id);
        letter.event_type = Some("t".repeat(300_000));
        for max in [MIN_MAX_BYTES, 10_000, DEFAULT_MAX_BYTES] {
            let bytes = letter.to_json_within(max);
            assert!(bytes.len() <= max, "{} > {max}", bytes.len());
            let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            for field in ["original_event", "event_id", "event_type"] {
                assert!(
                    json["truncated"][field]["size_bytes"].as_u64().is_some(),
                    "{field}"
                );
            }
            let kept = json["original_event"].as_str().unwrap();
            let text = kept.rsplit_once("… (").unwrap().0;
            assert!(payload.starts_with(text));
        }
    }

    #[test]
    fn a_bound_below_the_minimum_is_raised_to_it() {
        let payload = "y".repeat(50_000);
        let letter = DeadLetter::new(payload.as_bytes(), "e".into(), origin(), "v", "id");
        let bytes = letter.to_json_within(10);
        assert!(bytes.len() <= MIN_MAX_BYTES && bytes.len() > MIN_MAX_BYTES / 2);
    }

    #[test]
    fn prefixes_are_measured_escaped() {
        assert_eq!(prefix_within("\u{1}\u{1}\u{1}", 12), "\u{1}\u{1}");
        assert_eq!(prefix_within("ab\"c", 3), "ab");
        assert_eq!(prefix_within("ab\"c", 4), "ab\"");
        assert_eq!(prefix_within("é", 1), "");
        assert_eq!(prefix_within("abc", 100), "abc");
    }
}
