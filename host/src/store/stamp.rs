//! The time stamp that begins each value of an expiring table ([`super::Table::expiring`]):
//! how it is written, read, and judged against a retention.

use std::time::{Duration, SystemTime};

use super::keyspaces::{decode_ms, unix_ms};

/// A value of an expiring table: the time it was written (unix ms, 8 bytes big-endian) and
/// then `payload`.
pub fn stamp(at_ms: u64, payload: &[u8]) -> Vec<u8> {
    let mut value = Vec::with_capacity(8 + payload.len());
    value.extend_from_slice(&at_ms.to_be_bytes());
    value.extend_from_slice(payload);
    value
}

/// The payload of a value made by [`stamp`].
pub fn unstamp(value: &[u8]) -> &[u8] {
    value.get(8..).unwrap_or_default()
}

fn stamp_of(value: &[u8]) -> &[u8] {
    value.get(..8).unwrap_or(value)
}

/// The oldest write time still kept under `retention`.
fn oldest_kept(retention: Duration) -> u64 {
    unix_ms(SystemTime::now())
        .saturating_sub(u64::try_from(retention.as_millis()).unwrap_or(u64::MAX))
}

/// Whether a value of an expiring table is still kept under `retention`.
pub(super) fn kept(value: &[u8], retention: Duration) -> bool {
    decode_ms(stamp_of(value)) >= oldest_kept(retention)
}
