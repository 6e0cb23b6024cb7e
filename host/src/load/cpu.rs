//! CPU time of a process (user + system), read from Linux's `/proc/<pid>/stat`: what the load
//! generator reports of itself, and what benchmarks read of the host and the broker.

/// Clock ticks per second of `/proc/<pid>/stat` (`USER_HZ`: 100 on every Linux architecture
/// this runs on; reading `sysconf(_SC_CLK_TCK)` would need `unsafe`).
const TICKS_PER_SECOND: f64 = 100.0;

/// CPU seconds (user + system, all threads) process `pid` used so far; `None` for this
/// process. `None` when it cannot be read (no such process, not Linux).
pub fn cpu_seconds(pid: Option<u32>) -> Option<f64> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/stat"),
        None => "/proc/self/stat".to_string(),
    };
    parse_stat(&std::fs::read_to_string(path).ok()?)
}

/// User + system seconds of a `/proc/<pid>/stat` line (fields 14 and 15; the command name,
/// field 2, is in parentheses and may hold spaces, so fields are counted after its `)`).
fn parse_stat(stat: &str) -> Option<f64> {
    let after_name = stat.rsplit_once(')')?.1;
    let mut fields = after_name.split_whitespace().skip(11);
    let user: f64 = fields.next()?.parse().ok()?;
    let system: f64 = fields.next()?.parse().ok()?;
    Some((user + system) / TICKS_PER_SECOND)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn user_and_system_ticks_after_a_name_with_spaces() {
        let stat = "42 (a (b) c) S 1 42 42 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 9 0";
        assert_eq!(parse_stat(stat), Some(3.25));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn this_process_has_a_cpu_time() {
        assert!(cpu_seconds(None).is_some());
        assert!(cpu_seconds(Some(u32::MAX)).is_none());
    }
}
