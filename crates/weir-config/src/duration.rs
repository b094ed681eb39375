//! Human durations in pipeline files: `250ms`, `60s`, `5m`, `1h`.

/// Parses a duration into milliseconds.
pub fn parse_duration_ms(text: &str) -> Result<i64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).ok_or_else(|| {
        format!("duration {text:?} has no unit (use ms, s, m or h, e.g. \"60s\")")
    })?;
    let (digits, unit) = t.split_at(split);
    let value: i64 = digits
        .parse()
        .map_err(|_| format!("duration {text:?} must start with a whole number, e.g. \"60s\""))?;
    let scale = match unit.trim() {
        "ms" => 1,
        "s" => 1_000,
        "m" | "min" => 60_000,
        "h" => 3_600_000,
        other => {
            return Err(format!(
                "unknown duration unit {other:?} in {text:?} (use ms, s, m or h)"
            ))
        }
    };
    value
        .checked_mul(scale)
        .ok_or_else(|| format!("duration {text:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units() {
        assert_eq!(parse_duration_ms("250ms"), Ok(250));
        assert_eq!(parse_duration_ms("60s"), Ok(60_000));
        assert_eq!(parse_duration_ms("5m"), Ok(300_000));
        assert_eq!(parse_duration_ms("1h"), Ok(3_600_000));
        assert!(parse_duration_ms("60").is_err());
        assert!(parse_duration_ms("s").is_err());
        assert!(parse_duration_ms("3 weeks").is_err());
    }
}
