//! [`Problem`]: one thing wrong with the configuration, found while loading or validating it.

use std::fmt;

/// One thing wrong with the configuration, with the path of the offending key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted path of the key, e.g. `stages[enricher].outputs.confirmed`.
    pub key: String,
    /// What is wrong and, where it helps, how to fix it.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}
