//! `pipeline.toml`: its model, loading with environment overrides, and validation.

mod kafka_settings;
mod load;
mod model;
mod problem;
mod replication;
mod validate;

pub use kafka_settings::{KafkaSettings, REDACTED, is_secret};
pub use load::{ConfigError, Overrides, load, parse};
pub use model::*;
pub use problem::Problem;
pub use replication::Replication;
