//! `pipeline.toml`: its model, loading with environment overrides, and validation.

mod load;
mod model;
mod validate;

pub use load::{ConfigError, Overrides, load, parse};
pub use model::*;
pub use validate::Problem;
