//! Kubernetes resource quantities (`500m`, `1.5Gi`, `1e3`), parsed exactly as
//! `resource.ParseQuantity` accepts them and compared by value.

use std::cmp::Ordering;
use std::fmt;

/// The message upstream gives for a string that is not a quantity.
pub const QUANTITY_FORMAT_MESSAGE: &str =
    "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    #[error(
        "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
    )]
    Format,
    #[error("unable to parse quantity's suffix")]
    Suffix,
    #[error("quantity {0:?} is too large")]
    TooLarge(String),
}

/// How a quantity was written, which decides how it is printed back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuantityFormat {
    /// `Ki`, `Mi`, ... (powers of 1024).
    BinarySI,
    /// `n`, `u`, `m`, ``, `k`, `M`, ... (powers of 1000).
    DecimalSI,
    /// `1e3`, `5E-3`.
    DecimalExponent,
}

/// A parsed quantity: its value in billionths (rounded up, as upstream rounds values more
/// precise than a nano) and its format. Equality and order compare values only.
#[derive(Debug, Clone, Copy)]
pub struct Quantity {
    nanos: i128,
    pub format: QuantityFormat,
}

const NANOS: i128 = 1_000_000_000;

impl Quantity {
    /// The value in billionths of a unit.
    pub fn nanos(&self) -> i128 {
        self.nanos
    }

    /// The value in thousandths, rounded up (`MilliValue`).
    pub fn milli_value(&self) -> i128 {
        div_ceil(self.nanos, 1_000_000)
    }

    /// The value in units, rounded up (`Value`).
    pub fn value(&self) -> i128 {
        div_ceil(self.nanos, NANOS)
    }

    pub fn is_zero(&self) -> bool {
        self.nanos == 0
    }

    pub fn is_negative(&self) -> bool {
        self.nanos < 0
    }

    /// A whole number of units.
    pub fn is_integer(&self) -> bool {
        self.nanos % NANOS == 0
    }

    pub fn from_nanos(nanos: i128, format: QuantityFormat) -> Self {
        Self { nanos, format }
    }
}

fn div_ceil(a: i128, b: i128) -> i128 {
    let q = a / b;
    if a % b > 0 { q + 1 } else { q }
}

impl PartialEq for Quantity {
    fn eq(&self, other: &Self) -> bool {
        self.nanos == other.nanos
    }
}

impl Eq for Quantity {}

impl PartialOrd for Quantity {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Quantity {
    fn cmp(&self, other: &Self) -> Ordering {
        self.nanos.cmp(&other.nanos)
    }
}

impl std::str::FromStr for Quantity {
    type Err = QuantityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_quantity(s)
    }
}

/// Parse a quantity string.
pub fn parse_quantity(input: &str) -> Result<Quantity, QuantityError> {
    if input.is_empty() {
        return Err(QuantityError::Format);
    }
    let bytes = input.as_bytes();
    let mut pos = 0;
    let negative = match bytes[0] {
        b'-' => {
            pos = 1;
            true
        }
        b'+' => {
            pos = 1;
            false
        }
        _ => false,
    };
    let int_start = pos;
    while pos < bytes.len() && bytes[pos].is_ascii_digit() {
        pos += 1;
    }
    let int_digits = &input[int_start..pos];
    let mut frac_digits = "";
    if pos < bytes.len() && bytes[pos] == b'.' {
        pos += 1;
        let frac_start = pos;
        while pos < bytes.len() && bytes[pos].is_ascii_digit() {
            pos += 1;
        }
        frac_digits = &input[frac_start..pos];
    }
    if int_digits.is_empty() && frac_digits.is_empty() {
        return Err(QuantityError::Format);
    }
    let suffix = &input[pos..];
    // The suffix must match `[eEinumkKMGTP]*[-+]?[0-9]*` before it is interpreted.
    let letters_end = suffix
        .find(|c: char| !"eEinumkKMGTP".contains(c))
        .unwrap_or(suffix.len());
    let rest = &suffix[letters_end..];
    let rest_digits = rest.strip_prefix(['+', '-']).unwrap_or(rest);
    if !rest_digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(QuantityError::Format);
    }
    let (base, exponent, format): (i128, i32, QuantityFormat) = match suffix {
        "" => (10, 0, QuantityFormat::DecimalSI),
        "n" => (10, -9, QuantityFormat::DecimalSI),
        "u" => (10, -6, QuantityFormat::DecimalSI),
        "m" => (10, -3, QuantityFormat::DecimalSI),
        "k" => (10, 3, QuantityFormat::DecimalSI),
        "M" => (10, 6, QuantityFormat::DecimalSI),
        "G" => (10, 9, QuantityFormat::DecimalSI),
        "T" => (10, 12, QuantityFormat::DecimalSI),
        "P" => (10, 15, QuantityFormat::DecimalSI),
        "E" => (10, 18, QuantityFormat::DecimalSI),
        "Ki" => (2, 10, QuantityFormat::BinarySI),
        "Mi" => (2, 20, QuantityFormat::BinarySI),
        "Gi" => (2, 30, QuantityFormat::BinarySI),
        "Ti" => (2, 40, QuantityFormat::BinarySI),
        "Pi" => (2, 50, QuantityFormat::BinarySI),
        "Ei" => (2, 60, QuantityFormat::BinarySI),
        s if (s.starts_with('e') || s.starts_with('E')) && s.len() > 1 => {
            let exp: i32 = s[1..].parse().map_err(|_| QuantityError::Suffix)?;
            (10, exp, QuantityFormat::DecimalExponent)
        }
        _ => return Err(QuantityError::Suffix),
    };
    let too_large = || QuantityError::TooLarge(input.to_string());
    // Mantissa as an integer of all digits, with the decimal point `frac_digits.len()` in.
    let digits = format!("{int_digits}{frac_digits}");
    let digits = digits.trim_start_matches('0');
    if digits.len() > 36 {
        return Err(too_large());
    }
    let mantissa: i128 = if digits.is_empty() {
        0
    } else {
        digits.parse().map_err(|_| too_large())?
    };
    let scale = frac_digits.len() as i32;
    let nanos = if base == 2 {
        // mantissa * 2^exp * 1e9 / 10^scale, rounded up.
        let numerator = mantissa
            .checked_mul(1i128 << exponent)
            .and_then(|v| v.checked_mul(NANOS))
            .ok_or_else(too_large)?;
        div_ceil(numerator, pow10(scale).ok_or_else(too_large)?)
    } else {
        // mantissa * 10^(exp + 9 - scale).
        let shift = exponent + 9 - scale;
        if shift >= 0 {
            mantissa
                .checked_mul(pow10(shift).ok_or_else(too_large)?)
                .ok_or_else(too_large)?
        } else {
            match pow10(-shift) {
                Some(div) => div_ceil(mantissa, div),
                // Far below a nano: anything non-zero rounds up to one.
                None => i128::from(mantissa != 0),
            }
        }
    };
    Ok(Quantity {
        nanos: if negative { -nanos } else { nanos },
        format,
    })
}

fn pow10(exp: i32) -> Option<i128> {
    if !(0..=38).contains(&exp) {
        return None;
    }
    10i128.checked_pow(exp as u32)
}

impl fmt::Display for Quantity {
    /// The canonical form upstream prints (`1000m` → `1`, `1536Mi` stays, `0.5` → `500m`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.nanos == 0 {
            return f.write_str("0");
        }
        let sign = if self.nanos < 0 { "-" } else { "" };
        let abs = self.nanos.unsigned_abs() as i128;
        if self.format == QuantityFormat::BinarySI && abs % NANOS == 0 {
            let mut units = abs / NANOS;
            let suffixes = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"];
            let mut i = 0;
            while i + 1 < suffixes.len() && units % 1024 == 0 {
                units /= 1024;
                i += 1;
            }
            // Binary is only used when it is exact and at least 1Ki, otherwise decimal.
            if i > 0 {
                return write!(f, "{sign}{units}{}", suffixes[i]);
            }
        }
        // Largest power of 1000 that divides the value exactly.
        let mut exp = -9i32;
        let mut mantissa = abs;
        while exp < 18 && mantissa % 1000 == 0 {
            mantissa /= 1000;
            exp += 3;
        }
        let suffix = if self.format == QuantityFormat::DecimalExponent {
            if exp == 0 {
                String::new()
            } else {
                format!("e{exp}")
            }
        } else {
            match exp {
                -9 => "n",
                -6 => "u",
                -3 => "m",
                0 => "",
                3 => "k",
                6 => "M",
                9 => "G",
                12 => "T",
                15 => "P",
                _ => "E",
            }
            .to_string()
        };
        write!(f, "{sign}{mantissa}{suffix}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_values() {
        let cases: &[(&str, i128)] = &[
            ("0", 0),
            ("1", NANOS),
            ("500m", NANOS / 2),
            ("0.5", NANOS / 2),
            (".5", NANOS / 2),
            ("1.", NANOS),
            ("1k", 1000 * NANOS),
            ("1Ki", 1024 * NANOS),
            ("1.5Gi", 1536 * 1024 * 1024 * NANOS),
            ("1e3", 1000 * NANOS),
            ("1E-3", NANOS / 1000),
            ("100n", 100),
            ("1u", 1000),
            ("-1", -NANOS),
            ("+2M", 2_000_000 * NANOS),
            ("1Ei", (1i128 << 60) * NANOS),
            ("0.1n", 1),
        ];
        for (input, nanos) in cases {
            let q = parse_quantity(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(q.nanos(), *nanos, "{input}");
        }
    }

    #[test]
    fn rejects_malformed() {
        let cases: &[(&str, QuantityError)] = &[
            ("", QuantityError::Format),
            ("abc", QuantityError::Format),
            (".", QuantityError::Format),
            ("1x", QuantityError::Format),
            ("1 Gi", QuantityError::Format),
            ("1Gb", QuantityError::Format),
            ("1kk", QuantityError::Suffix),
            ("1Ki5", QuantityError::Suffix),
            ("1mi", QuantityError::Suffix),
        ];
        for (input, err) in cases {
            assert_eq!(parse_quantity(input).unwrap_err(), *err, "{input}");
        }
        assert_eq!(
            QuantityError::Format.to_string(),
            QUANTITY_FORMAT_MESSAGE,
            "message matches upstream"
        );
    }

    #[test]
    fn compares_by_value() {
        let q = |s| parse_quantity(s).unwrap();
        assert_eq!(q("1000m"), q("1"));
        assert_eq!(q("1024"), q("1Ki"));
        assert!(q("1Gi") > q("1G"));
        assert!(q("250m") < q("0.3"));
        assert_eq!(q("1500m").milli_value(), 1500);
        assert_eq!(q("1500m").value(), 2);
    }

    #[test]
    fn prints_canonical_forms() {
        let cases = [
            ("1000m", "1"),
            ("1500m", "1500m"),
            ("0.5", "500m"),
            ("1000", "1k"),
            ("1Ki", "1Ki"),
            ("1024Ki", "1Mi"),
            ("1.5Gi", "1536Mi"),
            ("0.5Ki", "512"),
            ("1e3", "1e3"),
            ("0", "0"),
            ("-100m", "-100m"),
            ("128974848", "128974848"),
        ];
        for (input, out) in cases {
            assert_eq!(parse_quantity(input).unwrap().to_string(), out, "{input}");
        }
    }
}
