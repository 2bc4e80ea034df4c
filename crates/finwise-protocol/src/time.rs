//! Timestamps: milliseconds since the Unix epoch internally, `YYYY-MM-DDTHH:MM:SS.mmmZ` on the wire.

use chrono::{DateTime, NaiveDateTime, SecondsFormat, Utc};

/// Parses an ISO-8601 / RFC 3339 timestamp into epoch milliseconds (truncated).
///
/// Accepts a zone (`Z` or an offset) or none; a timestamp without a zone is UTC, as 0.4 stored it.
pub fn parse_ms(s: &str) -> Option<i64> {
    let s = s.trim();
    if let Ok(dt) = DateTime::parse_from_rfc3339(s) {
        return Some(dt.timestamp_millis());
    }
    for fmt in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S"] {
        if let Ok(n) = NaiveDateTime::parse_from_str(s, fmt) {
            return Some(n.and_utc().timestamp_millis());
        }
    }
    None
}

/// Formats epoch milliseconds as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn format_ms(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms).unwrap_or_default().to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Formats epoch milliseconds the way Python's naive `datetime.isoformat()` does
/// (`2026-01-02T03:04:05.678000`, or without fraction when it is zero). Used by the 0.4 checksum.
pub fn format_python_naive(ms: i64) -> String {
    let dt = DateTime::<Utc>::from_timestamp_millis(ms).unwrap_or_default().naive_utc();
    if ms.rem_euclid(1000) == 0 {
        dt.format("%Y-%m-%dT%H:%M:%S").to_string()
    } else {
        dt.format("%Y-%m-%dT%H:%M:%S%.6f").to_string()
    }
}

/// The current time in epoch milliseconds.
pub fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_zoned_and_naive_forms_to_the_same_instant() {
        let z = parse_ms("2026-11-25T14:50:22.024Z").unwrap();
        assert_eq!(parse_ms("2026-11-25T14:50:22.024").unwrap(), z);
        assert_eq!(parse_ms("2026-11-25T15:50:22.024+01:00").unwrap(), z);
        assert_eq!(format_ms(z), "2026-11-25T14:50:22.024Z");
        assert_eq!(parse_ms("yesterday"), None);
    }

    #[test]
    fn python_naive_form_matches_isoformat() {
        let ms = parse_ms("2026-01-02T03:04:05.678Z").unwrap();
        assert_eq!(format_python_naive(ms), "2026-01-02T03:04:05.678000");
        assert_eq!(format_python_naive(ms - 678), "2026-01-02T03:04:05");
    }
}
