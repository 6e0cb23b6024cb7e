//! What travels on the topics: CloudEvents headers and ids, dead-letter envelopes, schemas.

pub mod cloudevents;
pub mod dead_letter;
pub mod schema;
