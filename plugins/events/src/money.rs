//! Money: an amount is an exact, whole number of cents from 0 to [`MAX_CENTS`].
//!
//! Amounts travel as JSON numbers (`price`, `total`). The order stage reads the literal text
//! the client wrote ([`parse_cents`]), so `0.004` or `19.990000000000000001` is refused
//! instead of being rounded, and `1e300` is refused instead of saturating. No amount is ever
//! rounded: a line costs exactly `quantity x price` cents.
//!
//! Every accepted amount is exact as an `f64` number of units ([`cents_to_f64`]: at most 15
//! significant digits, so its shortest decimal form is the amount itself). The events keep
//! `f64` fields, serialize as the same decimal, and later stages recover the cents exactly with
//! [`cents_of`].

use std::fmt;

/// The largest amount, in cents: 1,000,000,000,000.00 (10^14 cents). A price, a line
/// (`quantity x price`) and a total must each be at most this.
pub const MAX_CENTS: i64 = 100_000_000_000_000;

/// Why a number is not an amount.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AmountError {
    /// The text is not a JSON number (or the `f64` is not finite).
    NotANumber,
    /// Below zero.
    Negative,
    /// Not a whole number of cents: a non-zero digit after the second decimal place.
    FractionOfCent,
    /// Above [`MAX_CENTS`].
    TooLarge,
}

impl fmt::Display for AmountError {
    /// The rule broken, to follow a field name: `total must not be negative`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotANumber => f.write_str("must be a number"),
            Self::Negative => f.write_str("must not be negative"),
            Self::FractionOfCent => {
                f.write_str("must be a whole number of cents, with at most 2 decimal places")
            }
            Self::TooLarge => write!(f, "must be at most {}", format_cents(MAX_CENTS.into())),
        }
    }
}

impl std::error::Error for AmountError {}

/// Parses the text of a JSON number (`19.99`, `5`, `1.5e1`, `0.10`) into exact integer
/// cents. Trailing zeros after the second decimal place are fine (`19.990` is `1999`), and
/// any zero is 0 (`-0`, `0e999`).
///
/// # Errors
/// [`AmountError::NotANumber`] for text that is not a JSON number (leading zeros are
/// tolerated), else [`AmountError::Negative`], [`AmountError::FractionOfCent`] or
/// [`AmountError::TooLarge`], checked in that order.
pub fn parse_cents(literal: &str) -> Result<i64, AmountError> {
    let text = literal.trim();
    let (negative, unsigned) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (mantissa, exponent) = match unsigned.split_once(['e', 'E']) {
        Some((mantissa, exponent)) => (mantissa, parse_exponent(exponent)?),
        None => (unsigned, 0),
    };
    let (int, frac) = match mantissa.split_once('.') {
        Some((_, "")) => return Err(AmountError::NotANumber),
        Some((int, frac)) => (int, frac),
        None => (mantissa, ""),
    };
    let is_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if int.is_empty() || !is_digits(int) || !is_digits(frac) {
        return Err(AmountError::NotANumber);
    }

    // value = digits x 10^(exponent - frac.len()); keep the significant digits only.
    let digits = format!("{int}{frac}");
    let significant = digits.trim_start_matches('0').trim_end_matches('0');
    if significant.is_empty() {
        return Ok(0);
    }
    if negative {
        return Err(AmountError::Negative);
    }
    let trailing_zeros = digits.len() - digits.trim_end_matches('0').len();
    let frac_len = i64::try_from(frac.len()).map_err(|_| AmountError::FractionOfCent)?;
    let trailing_zeros = i64::try_from(trailing_zeros).map_err(|_| AmountError::TooLarge)?;
    // cents = significant x 10^shift
    let shift = exponent - frac_len + trailing_zeros + 2;
    if shift < 0 {
        return Err(AmountError::FractionOfCent);
    }
    let max_digits = i64::from(MAX_CENTS.ilog10()) + 1;
    let len = i64::try_from(significant.len()).map_err(|_| AmountError::TooLarge)?;
    if len + shift > max_digits {
        return Err(AmountError::TooLarge);
    }
    // At most 15 digits: no overflow below.
    let significant: i64 = significant.parse().map_err(|_| AmountError::NotANumber)?;
    let shift = u32::try_from(shift).map_err(|_| AmountError::TooLarge)?;
    let cents = significant
        .checked_mul(10_i64.pow(shift))
        .ok_or(AmountError::TooLarge)?;
    if cents > MAX_CENTS {
        return Err(AmountError::TooLarge);
    }
    Ok(cents)
}

/// The exponent of a number literal, clamped to +-10^9 (beyond that every non-zero amount is
/// out of range or a fraction of a cent anyway).
fn parse_exponent(text: &str) -> Result<i64, AmountError> {
    let (negative, digits) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(AmountError::NotANumber);
    }
    let digits = digits.trim_start_matches('0');
    let magnitude = if digits.len() > 9 {
        1_000_000_000
    } else {
        digits.parse::<i64>().unwrap_or(0)
    };
    Ok(if negative { -magnitude } else { magnitude })
}

/// The exact cents of an amount that arrived as an `f64` (an event field): the value of its
/// shortest decimal form, which for every amount the order stage accepts is the amount the
/// client wrote.
///
/// # Errors
/// As [`parse_cents`]; [`AmountError::NotANumber`] for NaN and infinities.
pub fn cents_of(amount: f64) -> Result<i64, AmountError> {
    if !amount.is_finite() {
        return Err(AmountError::NotANumber);
    }
    // `{:e}` prints the shortest digits that read back as the same f64, e.g. `1.999e1`.
    parse_cents(&format!("{amount:e}"))
}

/// The `f64` for an event field holding `cents`; exact (it prints as the same decimal) for
/// every amount from 0 to [`MAX_CENTS`].
#[must_use]
pub fn cents_to_f64(cents: i64) -> f64 {
    // Integers below 2^53 are exact in f64, and the division is correctly rounded.
    cents as f64 / 100.0
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
    fn parses_literals_exactly() {
        for (literal, cents) in [
            ("19.99", 1999),
            ("0", 0),
            ("0.0", 0),
            ("-0", 0),
            ("-0.00", 0),
            ("0e999999999999", 0),
            ("5", 500),
            ("0.1", 10),
            ("0.05", 5),
            ("19.990", 1999),
            ("19.99000000000000000000", 1999),
            ("1.5e1", 1500),
            ("1999E-2", 1999),
            ("1999e-2", 1999),
            ("0.01e2", 100),
            ("12.5e+1", 12500),
            ("1e12", MAX_CENTS),
            ("1000000000000.00", MAX_CENTS),
            ("999999999999.99", MAX_CENTS - 1),
            (" 7 ", 700),
        ] {
            assert_eq!(parse_cents(literal), Ok(cents), "{literal}");
        }
    }

    #[test]
    fn refuses_fractions_of_a_cent_instead_of_rounding() {
        for literal in [
            "0.004",
            "0.333",
            "19.995",
            "19.990000000000000001",
            "1e-3",
            "1e-999999999999",
            "0.30000000000000004",
        ] {
            assert_eq!(
                parse_cents(literal),
                Err(AmountError::FractionOfCent),
                "{literal}"
            );
        }
    }

    #[test]
    fn refuses_amounts_out_of_range_instead_of_saturating() {
        for literal in [
            "1e17",
            "1e300",
            "1E+300",
            "1e999999999999999999999",
            "1000000000000.01",
            "10000000000000",
            "92233720368547758.07",
            "123456789012345678901234567890",
        ] {
            assert_eq!(
                parse_cents(literal),
                Err(AmountError::TooLarge),
                "{literal}"
            );
        }
        // Negative first, then fractions, then range.
        assert_eq!(parse_cents("-0.01"), Err(AmountError::Negative));
        assert_eq!(parse_cents("-1e300"), Err(AmountError::Negative));
        assert_eq!(parse_cents("-0.001"), Err(AmountError::Negative));
        assert_eq!(parse_cents("1.001e300"), Err(AmountError::TooLarge));
    }

    #[test]
    fn refuses_what_is_not_a_number() {
        for literal in [
            "", "-", "abc", "1.", ".5", "1e", "1e+", "1.2.3", "\"1.00\"", "1_000", "NaN", "--1",
            "1e1.5",
        ] {
            assert_eq!(
                parse_cents(literal),
                Err(AmountError::NotANumber),
                "{literal:?}"
            );
        }
    }

    #[test]
    fn f64_amounts_convert_exactly_both_ways() {
        assert_eq!(cents_of(19.99), Ok(1999));
        assert_eq!(cents_of(39.98), Ok(3998));
        assert_eq!(cents_of(0.0), Ok(0));
        assert_eq!(cents_of(1e12), Ok(MAX_CENTS));
        assert_eq!(cents_of(0.1 + 0.2), Err(AmountError::FractionOfCent));
        assert_eq!(cents_of(0.004), Err(AmountError::FractionOfCent));
        assert_eq!(cents_of(1e17), Err(AmountError::TooLarge));
        assert_eq!(cents_of(1e300), Err(AmountError::TooLarge));
        assert_eq!(cents_of(-1.5), Err(AmountError::Negative));
        assert_eq!(cents_of(f64::NAN), Err(AmountError::NotANumber));
        assert_eq!(cents_of(f64::INFINITY), Err(AmountError::NotANumber));

        // Every amount in range survives the trip through an f64 field: the edges, and a
        // spread of values in between (a fixed linear congruential sequence).
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut samples = vec![0, 1, 5, 10, 99, 100, 1999, MAX_CENTS - 1, MAX_CENTS];
        for _ in 0..200_000 {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let bound = 10_u64.pow(u32::try_from(x % 15).expect("small") + 1);
            let cents = i64::try_from((x >> 7) % bound).expect("small") % (MAX_CENTS + 1);
            samples.push(cents);
        }
        for cents in samples {
            let amount = cents_to_f64(cents);
            assert_eq!(cents_of(amount), Ok(cents), "{cents} -> {amount}");
            // Serialized as JSON it is the same decimal, read back exactly from the text.
            let text = serde_json::to_string(&amount).expect("serializes");
            assert_eq!(parse_cents(&text), Ok(cents), "{cents} -> {text}");
        }
    }

    #[test]
    fn errors_read_as_rules() {
        assert_eq!(
            AmountError::TooLarge.to_string(),
            "must be at most 1000000000000.00"
        );
        assert_eq!(
            AmountError::FractionOfCent.to_string(),
            "must be a whole number of cents, with at most 2 decimal places"
        );
        assert_eq!(AmountError::Negative.to_string(), "must not be negative");
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
