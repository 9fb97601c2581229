//! Time as text, in one place: RFC 3339 timestamps (the ledger's records,
//! image creation dates, advisories' dates) and durations on the command
//! line (`--timeout 5m`) and in messages. humantime does the calendar
//! arithmetic and the parsing.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Seconds since 1970, now.
pub fn epoch_seconds() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |since| since.as_secs() as i64)
}

/// Seconds since 1970 as `YYYY-MM-DDTHH:MM:SSZ`. Times before 1970 (none
/// of ours) come out as the epoch.
pub fn rfc3339(epoch: i64) -> String {
    let time = UNIX_EPOCH + Duration::from_secs(epoch.max(0) as u64);
    humantime::format_rfc3339_seconds(time).to_string()
}

/// Now as `YYYY-MM-DDTHH:MM:SS.fffZ`: milliseconds, so that records made in
/// the same second still sort in the order they were made, as text.
pub fn now_rfc3339_millis() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

/// Seconds since 1970 of `YYYY-MM-DDTHH:MM:SS[.fff]Z` (what we write).
pub fn parse_rfc3339(text: &str) -> Option<i64> {
    let time = humantime::parse_rfc3339(text).ok()?;
    Some(time.duration_since(UNIX_EPOCH).ok()?.as_secs() as i64)
}

/// A duration on the command line: `300s`, `5m`, `1h 30m`; a bare number is
/// seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if let Ok(seconds) = text.parse::<u64>() {
        return Ok(Duration::from_secs(seconds));
    }
    humantime::parse_duration(text).map_err(|_| format!("{text:?} is not a duration such as 300s or 5m"))
}

/// A duration in a message: `4.2s` under a minute, `3m07s` above.
pub fn format_duration(duration: Duration) -> String {
    let secs = duration.as_secs_f64();
    if secs < 60.0 {
        format!("{secs:.1}s")
    } else {
        format!("{}m{:02}s", duration.as_secs() / 60, duration.as_secs() % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_matches_known_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(4_107_542_399), "2100-02-28T23:59:59Z");
    }

    #[test]
    fn timestamps_parse_back_and_sort_as_text() {
        for seconds in [0, 951_782_400, 1_795_000_000, 4_107_542_399] {
            assert_eq!(parse_rfc3339(&rfc3339(seconds)), Some(seconds));
        }
        assert_eq!(parse_rfc3339("2026-11-18T11:06:40.042Z"), Some(1_795_000_000));
        assert_eq!(parse_rfc3339("not a time"), None);
        let now = now_rfc3339_millis();
        assert_eq!(now.len(), "2026-11-18T11:06:40.042Z".len(), "{now}");
        assert!("2026-11-18T11:06:40.042Z" < "2026-11-18T11:06:41.000Z");
    }

    #[test]
    fn durations_on_the_command_line() {
        assert_eq!(parse_duration("300s"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("42"), Ok(Duration::from_secs(42)));
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn durations_in_messages() {
        assert_eq!(format_duration(Duration::from_millis(4200)), "4.2s");
        assert_eq!(format_duration(Duration::from_secs(187)), "3m07s");
    }
}
