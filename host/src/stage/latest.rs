//! Outputs to a topic that keeps only the latest record per key
//! (`topics.<name>.latest_per_key`: a read model). The open work holds them, one per topic and
//! key (a later record replaces an earlier one in its place), and writes them with the commit,
//! so a document that several inputs of one unit of work update reaches Kafka once.

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use super::participant::Participant;
use super::retry::TopicPartition;
use crate::kafka::OutRecord;

/// The open work's latest record of each key of each latest-per-key topic.
#[derive(Default)]
pub struct LatestOutputs {
    held: Vec<OutRecord>,
    at: HashMap<(String, String), usize>,
}

impl LatestOutputs {
    /// Holds `record` in place of an earlier record of its topic and key; a record without a
    /// key cannot replace another and is given back, to be written as it is.
    pub fn hold(&mut self, record: OutRecord) -> Option<OutRecord> {
        let Some(key) = record.key.clone() else {
            return Some(record);
        };
        match self.at.entry((record.topic.clone(), key)) {
            Entry::Occupied(slot) => self.held[*slot.get()] = record,
            Entry::Vacant(slot) => {
                slot.insert(self.held.len());
                self.held.push(record);
            }
        }
        None
    }
}

impl Participant for LatestOutputs {
    fn closing_records(&mut self) -> Vec<OutRecord> {
        self.at.clear();
        std::mem::take(&mut self.held)
    }

    fn on_dropped(&mut self, _revoked: &[TopicPartition]) {
        self.at.clear();
        self.held.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::headers::RecordHeaders;

    fn record(topic: &str, key: Option<&str>, id: &str) -> OutRecord {
        OutRecord {
            topic: topic.into(),
            partition: None,
            key: key.map(str::to_string),
            payload: Some(id.as_bytes().to_vec()),
            headers: RecordHeaders::new(),
            id: id.into(),
        }
    }

    fn ids(records: &[OutRecord]) -> Vec<&str> {
        records.iter().map(|r| r.id.as_str()).collect()
    }

    #[test]
    fn the_last_record_of_each_key_is_written_once_with_the_commit() {
        let mut latest = LatestOutputs::default();
        for (topic, key, id) in [
            ("T", "a", "a1"),
            ("T", "b", "b1"),
            ("T", "a", "a2"),
            ("U", "a", "ua1"),
            ("T", "a", "a3"),
        ] {
            assert!(latest.hold(record(topic, Some(key), id)).is_none());
        }
        let keyless = latest.hold(record("T", None, "n1"));
        assert_eq!(keyless.map(|r| r.id), Some("n1".to_string()));
        assert_eq!(ids(&latest.closing_records()), ["a3", "b1", "ua1"]);
        assert!(latest.closing_records().is_empty(), "written once");
    }

    #[test]
    fn dropped_work_writes_nothing() {
        let mut latest = LatestOutputs::default();
        latest.hold(record("T", Some("a"), "a1"));
        latest.on_dropped(&[]);
        assert!(latest.closing_records().is_empty());
        latest.hold(record("T", Some("a"), "a2"));
        assert_eq!(ids(&latest.closing_records()), ["a2"]);
    }
}
