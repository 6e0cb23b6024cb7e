//! Money helpers: amounts travel as JSON numbers (`f64`) but are compared in integer cents.

/// Converts an amount to integer cents, rounding to the nearest cent (halves away from zero).
///
/// `19.99` becomes `1999` even though `19.99 * 100.0` is `1998.9999999999998` in binary
/// floating point. Amounts beyond the `i64` range saturate; NaN becomes 0.
#[must_use]
pub fn to_cents(amount: f64) -> i64 {
    // `as` from f64 to i64 saturates and maps NaN to 0, which is what we want here.
    (amount * 100.0).round() as i64
}

/// Formats integer cents as a decimal amount with two fraction digits, e.g. `3998` -> `39.98`.
#[must_use]
pub fn format_cents(cents: i128) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    let abs = cents.unsigned_abs();
    format!("{sign}{}.{:02}", abs / 100, abs % 100)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_binary_fractions_to_the_nearest_cent() {
        assert_eq!(to_cents(19.99), 1999);
        assert_eq!(to_cents(0.1 + 0.2), 30);
        assert_eq!(to_cents(39.98), 3998);
        assert_eq!(to_cents(0.0), 0);
        assert_eq!(to_cents(-1.5), -150);
        assert_eq!(to_cents(12.345_000_1), 1235);
        assert_eq!(to_cents(12.344), 1234);
    }

    #[test]
    fn three_times_19_99_is_59_97() {
        assert_eq!(3 * to_cents(19.99), 5997);
        assert_eq!(to_cents(59.97), 5997);
        // Float sums drift (0.1 + 0.2 != 0.3), which is why totals are compared in cents.
        assert_eq!(to_cents(0.1) + to_cents(0.2), to_cents(0.3));
    }

    #[test]
    fn saturates_instead_of_wrapping() {
        assert_eq!(to_cents(1e300), i64::MAX);
        assert_eq!(to_cents(-1e300), i64::MIN);
        assert_eq!(to_cents(f64::NAN), 0);
    }

    #[test]
    fn formats_cents_with_two_digits() {
        assert_eq!(format_cents(3998), "39.98");
        assert_eq!(format_cents(4000), "40.00");
        assert_eq!(format_cents(5), "0.05");
        assert_eq!(format_cents(0), "0.00");
        assert_eq!(format_cents(-105), "-1.05");
    }
}
