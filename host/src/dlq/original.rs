//! The whole failed event of a dead letter whose `original_event` was cut to fit in a Kafka
//! record: read back from the source topic, partition and offset the letter names, and checked
//! against the size and SHA-256 digest the letter recorded.

use std::time::Duration;

use crate::event::dead_letter::{Cut, DeadLetter};
use crate::kafka::{KafkaClients, committed_payload_at};

/// The failed event's body, exactly as the stage read it, or why it cannot be had (gone with
/// the topic's retention, or not the record the letter describes). Blocking.
pub fn read(
    kafka: &KafkaClients,
    letter: &DeadLetter,
    timeout: Duration,
) -> Result<Vec<u8>, String> {
    let origin = &letter.origin;
    let place = format!(
        "{}/{}@{}",
        origin.source_topic, origin.partition, origin.offset
    );
    let Some(expected) = letter.truncated.get("original_event") else {
        return Err("the letter does not say which event it cut".into());
    };
    let payload = committed_payload_at(
        kafka,
        &origin.source_topic,
        origin.partition,
        origin.offset,
        timeout,
    )
    .map_err(|why| {
        format!(
            "its original event was cut in the dead letter, and reading the whole one at \
                 {place} failed: {why}"
        )
    })?;
    check(&payload, expected).map_err(|why| {
        format!("the record at {place} is not the event this letter cut ({why}); not replaying it")
    })?;
    Ok(payload)
}

/// Whether `payload` is the body the letter cut: same size, same digest.
fn check(payload: &[u8], expected: &Cut) -> Result<(), String> {
    let actual = Cut::of(payload);
    if &actual == expected {
        Ok(())
    } else {
        Err(format!(
            "{} bytes with sha256 {}, the letter recorded {} bytes with sha256 {}",
            actual.size_bytes, actual.sha256, expected.size_bytes, expected.sha256
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_record_the_letter_cut_passes() {
        let payload = b"\"abc\"";
        assert_eq!(check(payload, &Cut::of(payload)), Ok(()));
        let error = check(b"\"abd\"", &Cut::of(payload)).unwrap_err();
        assert!(
            error.contains("5 bytes") && error.contains(&Cut::of(payload).sha256),
            "{error}"
        );
    }
}
