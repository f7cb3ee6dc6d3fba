//! Wall-clock time in epoch milliseconds, the unit positions, events and freshness are kept in,
//! and its RFC 3339 rendering for clients.

/// Milliseconds since the Unix epoch.
#[must_use]
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// `ms` epoch milliseconds as an RFC 3339 UTC timestamp with millisecond precision.
#[must_use]
pub fn rfc3339(ms: i64) -> String {
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_else(|| "1970-01-01T00:00:00.000Z".to_owned())
}

/// Parses an RFC 3339 timestamp or an integer of epoch milliseconds.
#[must_use]
pub fn parse_time_ms(raw: &str) -> Option<i64> {
    raw.parse::<i64>().ok().or_else(|| parse_rfc3339_ms(raw))
}

/// An RFC 3339 time as epoch milliseconds.
#[must_use]
pub fn parse_rfc3339_ms(raw: &str) -> Option<i64> {
    let t =
        time::OffsetDateTime::parse(raw, &time::format_description::well_known::Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_and_parses_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_790_000_000_123), "2026-09-21T14:13:20.123Z");
        assert_eq!(
            parse_time_ms("2026-09-21T14:13:20.123Z"),
            Some(1_790_000_000_123)
        );
        assert_eq!(parse_time_ms("1790000000123"), Some(1_790_000_000_123));
        assert_eq!(parse_time_ms("yesterday"), None);
    }
}
