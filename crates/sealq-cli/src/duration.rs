//! Human durations for command-line flags: `500ms`, `30s`, `5m`, `2h`, `1d`,
//! and sums of them such as `1h30m`.

use std::time::Duration;

/// Parse a duration such as `500ms`, `30s`, `5m`, `2h`, `1d` or `1h30m`.
///
/// A bare number is refused: the unit is always spelled out, so `--delay 5`
/// cannot silently mean five milliseconds to one reader and five seconds to
/// another.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err("empty duration; use for example 500ms, 30s, 5m, 2h or 1d".into());
    }
    let mut total_ms: u64 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(format!(
                "`{s}` is not a duration; use a number and a unit: 500ms, 30s, 5m, 2h, 1d"
            ));
        }
        let number: u64 = rest[..digits]
            .parse()
            .map_err(|_| format!("`{s}`: number too large"))?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(|b| b.is_ascii_alphabetic()).count();
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let per_unit_ms: u64 = match unit {
            "ms" => 1,
            "s" | "sec" | "secs" => 1_000,
            "m" | "min" | "mins" => 60_000,
            "h" | "hr" | "hrs" => 3_600_000,
            "d" | "day" | "days" => 86_400_000,
            "" => {
                return Err(format!(
                    "`{s}` lacks a unit; write for example {number}s or {number}ms"
                ));
            }
            other => {
                return Err(format!(
                    "`{s}`: unknown unit `{other}`; use ms, s, m, h or d"
                ));
            }
        };
        total_ms = number
            .checked_mul(per_unit_ms)
            .and_then(|v| total_ms.checked_add(v))
            .ok_or_else(|| format!("`{s}`: duration too large"))?;
    }
    Ok(Duration::from_millis(total_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration(" 0s "), Ok(Duration::ZERO));
    }

    #[test]
    fn compound() {
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("1s500ms"), Ok(Duration::from_millis(1500)));
    }

    #[test]
    fn errors() {
        for bad in [
            "",
            "5",
            "s",
            "5x",
            "-5s",
            "1.5s",
            "99999999999999999999s",
            "5 s",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should fail");
        }
        assert!(parse_duration("5").unwrap_err().contains("unit"));
        assert!(parse_duration("213503982334601d").is_err());
    }
}
