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
    match rfc3339_ms(ms) {
        Some(b) => b.iter().map(|&c| c as char).collect(),
        None => {
            DateTime::<Utc>::from_timestamp_millis(ms).unwrap_or_default().to_rfc3339_opts(SecondsFormat::Millis, true)
        }
    }
}

/// [`format_ms`] as ASCII bytes, without an allocation, for the years 0 to 9999 (every time a
/// client can send); `None` outside them. Run for every stored change on the tenant's writer,
/// where chrono's general formatter was a measurable share (issue 21).
pub fn rfc3339_ms(ms: i64) -> Option<[u8; 24]> {
    // days to the civil date: H. Hinnant's `civil_from_days`, proleptic Gregorian
    let (days, in_day) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    if !(0..=9999).contains(&year) {
        return None;
    }
    let mut out = *b"0000-00-00T00:00:00.000Z";
    let mut put = |at: usize, width: usize, mut v: i64| {
        for i in (at..at + width).rev() {
            out[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, 4, year);
    put(5, 2, month);
    put(8, 2, day);
    put(11, 2, in_day / 3_600_000);
    put(14, 2, in_day / 60_000 % 60);
    put(17, 2, in_day / 1000 % 60);
    put(20, 3, in_day % 1000);
    Some(out)
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
    fn the_fast_formatter_writes_what_chrono_writes() {
        let chrono =
            |ms: i64| DateTime::<Utc>::from_timestamp_millis(ms).unwrap().to_rfc3339_opts(SecondsFormat::Millis, true);
        // the edges of the fast range, leap days, the epoch, and a spread of instants between
        let year0 = -62_167_219_200_000;
        let year9999_end = 253_402_300_799_999;
        let mut cases = vec![year0, year9999_end, 0, -1, 1, 951_782_400_000, 4_107_542_399_999, 1_790_000_000_123];
        let mut x: i64 = 0x2545_f491_4f6c_dd1d;
        for _ in 0..100_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            cases.push(year0 + x.rem_euclid(year9999_end - year0 + 1));
        }
        for ms in cases {
            let fast = rfc3339_ms(ms).expect("within years 0 to 9999");
            assert_eq!(std::str::from_utf8(&fast).unwrap(), chrono(ms), "{ms}");
            assert_eq!(format_ms(ms), chrono(ms));
        }
        // outside: chrono's forms
        for ms in [year0 - 1, year9999_end + 1] {
            assert_eq!(rfc3339_ms(ms), None);
            assert_eq!(format_ms(ms), chrono(ms));
        }
    }

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
