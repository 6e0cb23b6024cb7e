//! Events of the admin listener: a request refused by its guard.

use super::HostEvent;
use super::catalogue;

/// Longest piece of outside text (a path, a `Host`, an `Origin`) a log line carries.
const MAX_LOGGED_CHARS: usize = 200;

/// The admin API refused a request: no token, a wrong one, the read-only token on a change, a
/// `Host` it does not serve or a foreign browser `Origin`.
pub struct AdminRefused<'a> {
    /// Why (`missing_token`, `wrong_token`, `read_only_token`, `bad_host`, `bad_origin`).
    pub reason: &'static str,
    /// The request's method.
    pub method: &'a str,
    /// The request's path, as sent.
    pub path: &'a str,
    /// The refused `Host` or `Origin`, as sent (empty for token refusals).
    pub detail: &'a str,
}

impl HostEvent for AdminRefused<'_> {
    fn emit(self) {
        tracing::warn!(
            reason = self.reason,
            method = %clipped(self.method),
            path = %clipped(self.path),
            detail = %clipped(self.detail),
            "admin API request refused"
        );
        metrics::counter!(catalogue::ADMIN_REFUSED, "reason" => self.reason).increment(1);
    }
}

/// `text` for a log line: control characters, quotes and backslashes escaped, so outside
/// text (or a multi-line wasm backtrace) stays on its one line and cannot forge another.
pub fn escaped(text: &str) -> String {
    text.chars().flat_map(char::escape_debug).collect()
}

/// [`escaped`], cut to at most [`MAX_LOGGED_CHARS`] characters of `text` (then `…`).
fn clipped(text: &str) -> String {
    let mut out: String = text
        .chars()
        .take(MAX_LOGGED_CHARS)
        .flat_map(char::escape_debug)
        .collect();
    if text.chars().nth(MAX_LOGGED_CHARS).is_some() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outside_text_stays_on_one_line() {
        let forged = "/plugins\n2026-12-07T10:00:00Z  INFO swap accepted";
        let logged = clipped(forged);
        assert!(!logged.contains('\n'), "{logged}");
        assert!(logged.starts_with("/plugins\\n2026"), "{logged}");
        assert_eq!(escaped("\r\u{1b}[31m"), "\\r\\u{1b}[31m");
        let long = "x".repeat(500);
        assert_eq!(clipped(&long).chars().count(), MAX_LOGGED_CHARS + 1);
        assert_eq!(escaped(&long), long);
    }
}
