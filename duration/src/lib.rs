//! The duration syntax that `loadgen` and the autoscaler share for their flags and
//! variables: `250ms`, `10s`, `2m`, `1.5h`, `500us`, or a bare number of seconds.
//!
//! One function, so the two command lines cannot drift apart (they once had a copy each,
//! one of which knew `us` and a bound the other did not). No crate in the tree parses
//! this syntax: `humantime` is not a dependency, and it refuses both bare numbers and
//! decimals, which the documented flags accept. The balancer keeps its own stricter rule
//! (a whole number and a unit) for its configuration file, where `2` alone is refused on
//! purpose.
//!
//! [`parse`] fits clap's `value_parser`; clap then names the flag, and the error names the
//! value, e.g. `invalid value '5 fortnights' for '--interval <INTERVAL>': unknown unit
//! `fortnights` in `5 fortnights` (use us, ms, s, m or h; a bare number is seconds)`.

use std::time::Duration;

/// The longest duration accepted: a year and a day. Longer is a typo (a missing unit
/// suffix on milliseconds, say), and would overflow a deadline computed from it.
pub const MAX: Duration = Duration::from_secs(366 * 86_400);

/// Why a text is not a duration; each variant carries the text as given (trimmed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("`{text}` is not a duration (examples: 250ms, 10s, 2m, 1.5h)")]
    NotANumber { text: String },
    #[error("unknown unit `{unit}` in `{text}` (use us, ms, s, m or h; a bare number is seconds)")]
    UnknownUnit { unit: String, text: String },
    #[error("`{text}` is too long (at most 366 days)")]
    TooLong { text: String },
}

/// Parses a number (decimals allowed) followed by `us`, `ms`, `s`, `m` or `h`, or by
/// nothing, which means seconds. Spaces around the text and between number and unit are
/// allowed; signs, exponents and combined forms (`1m30s`) are not.
pub fn parse(text: &str) -> Result<Duration, Error> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let seconds_per_unit = match unit.trim_start() {
        "" | "s" => 1.0,
        "ms" => 1e-3,
        "us" => 1e-6,
        "m" => 60.0,
        "h" => 3600.0,
        other => {
            // A text with no number at all ("fast", "s") is no duration, whatever follows.
            if number.is_empty() {
                return Err(Error::NotANumber { text: text.into() });
            }
            return Err(Error::UnknownUnit {
                unit: other.into(),
                text: text.into(),
            });
        }
    };
    let value: f64 = number
        .parse()
        .map_err(|_| Error::NotANumber { text: text.into() })?;
    let seconds = value * seconds_per_unit;
    if !seconds.is_finite() || seconds > MAX.as_secs_f64() {
        return Err(Error::TooLong { text: text.into() });
    }
    Ok(Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_unit_and_bare_seconds() {
        assert_eq!(parse("500us"), Ok(Duration::from_micros(500)));
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse("0.25m"), Ok(Duration::from_secs(15)));
        assert_eq!(parse(" 15 s "), Ok(Duration::from_secs(15)));
        assert_eq!(parse("0"), Ok(Duration::ZERO));
    }

    #[test]
    fn errors_name_the_text_and_what_is_wrong() {
        assert_eq!(
            parse("5 fortnights"),
            Err(Error::UnknownUnit {
                unit: "fortnights".into(),
                text: "5 fortnights".into()
            })
        );
        assert_eq!(
            parse("5 fortnights").unwrap_err().to_string(),
            "unknown unit `fortnights` in `5 fortnights` (use us, ms, s, m or h; a bare number is seconds)"
        );
        for text in ["", "s", "fast", "-5s", "1.2.3s", "."] {
            assert_eq!(
                parse(text),
                Err(Error::NotANumber { text: text.into() }),
                "{text:?}"
            );
        }
        assert_eq!(
            parse("1e3s").unwrap_err().to_string(),
            "unknown unit `e3s` in `1e3s` (use us, ms, s, m or h; a bare number is seconds)"
        );
    }

    #[test]
    fn longer_than_a_year_and_a_day_is_refused() {
        assert_eq!(parse("8784h"), Ok(MAX));
        assert_eq!(
            parse("8785h"),
            Err(Error::TooLong {
                text: "8785h".into()
            })
        );
        let huge = format!("{}s", "9".repeat(400));
        assert!(matches!(parse(&huge), Err(Error::TooLong { .. })));
    }
}
