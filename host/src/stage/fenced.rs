//! The error that ends a stage incarnation fenced out by another client with its identity.

/// Another client took this stage's place: a consumer with its `group.instance.id`
/// (`FencedInstanceId`: another host runs with the same instance id), or a producer with its
/// `transactional.id` (another host with the same instance id, or this host's own rebuilt
/// stage after a transaction outlived its timeout).
#[derive(Debug, Clone)]
pub struct FencedOut {
    /// Whether a consumer with the same `group.instance.id` did it: that is always another
    /// process with the same instance id.
    pub by_same_member: bool,
    /// What the client reported.
    pub detail: String,
}

impl std::fmt::Display for FencedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.by_same_member {
            write!(
                f,
                "another consumer with this stage's group.instance.id joined its group and fenced this one out ({})",
                self.detail
            )
        } else {
            write!(
                f,
                "another producer with this stage's transactional.id took over ({})",
                self.detail
            )
        }
    }
}

impl std::error::Error for FencedOut {}
