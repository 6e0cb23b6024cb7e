//! What travels on the topics: CloudEvents headers and ids, the headers of records the host
//! writes, dead-letter envelopes, schemas.

pub mod cloudevents;
pub mod dead_letter;
pub mod headers;
pub mod schema;
