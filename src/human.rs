//! Numbers for people: sizes, durations, ages and timestamps as the command line and the logs
//! print them.
//!
//! Owns: the one spelling of each (`5m`, `12s ago`, `1234567 bytes, 1.2 MiB`, `12.3 MB`,
//! `2024-05-01T10:00:00.000Z`), so that `status`, `mirror`, `scan` and the log lines agree.
//! Must not: format anything a server or a file reads back (the wire formats belong to
//! [`crate::api`]), or read the clock itself where the caller can pass it (the pure forms
//! are what the tests pin down).

use std::time::Duration;

/// A config-like duration: `1h`, `5m`, `30s`, `500ms` (the largest unit that divides it).
pub fn duration(d: Duration) -> String {
    let s = d.as_secs();
    if s == 0 {
        format!("{}ms", d.as_millis())
    } else if s.is_multiple_of(3600) {
        format!("{}h", s / 3600)
    } else if s.is_multiple_of(60) {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

/// How long before `now_ms` the moment `at_ms` was: `12s ago`, `5m ago`, `3h ago`, `2d ago`.
/// A moment in the future (another machine's clock) reads `0s ago`.
pub fn ago_at(at_ms: i64, now_ms: i64) -> String {
    let secs = (now_ms.saturating_sub(at_ms) / 1000).max(0);
    match secs {
        0..=119 => format!("{secs}s ago"),
        120..=7199 => format!("{}m ago", secs / 60),
        7200..=172_799 => format!("{}h ago", secs / 3600),
        _ => format!("{}d ago", secs / 86_400),
    }
}

/// [`ago_at`] from now.
pub fn ago(at_ms: i64) -> String {
    ago_at(at_ms, crate::db::now_ms())
}

/// `1234567` → `1234567 bytes, 1.2 MiB`: the exact count (what a server limit is written
/// in) and a binary size to read.
pub fn size(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} bytes");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{n} bytes, {v:.1} {}", UNITS[unit])
}

/// Decimal megabytes with one decimal, `12.3 MB`, as transfer summaries give them.
pub fn megabytes(n: u64) -> String {
    format!("{:.1} MB", n as f64 / 1e6)
}

/// Decimal megabytes per second over `elapsed` (at least a millisecond), `4.5 MB/s`.
pub fn megabytes_per_second(n: u64, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64().max(0.001);
    format!("{:.1} MB/s", n as f64 / 1e6 / secs)
}

/// Unix milliseconds as `YYYY-MM-DDTHH:MM:SS.sssZ` (UTC). Out of the range of an `i64` of
/// nanoseconds (years 1677..2262) the nearest end of it is shown.
pub fn timestamp(unix_ms: i64) -> String {
    let ns = unix_ms.saturating_mul(1_000_000);
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    // Every i64 of nanoseconds is a valid `OffsetDateTime` and formats with four-digit
    // years, so neither step can fail; the fallback only keeps this free of a panic.
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ns))
        .ok()
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_else(|| format!("{unix_ms} ms since 1970"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_the_config() {
        assert_eq!(duration(Duration::from_secs(300)), "5m");
        assert_eq!(duration(Duration::from_secs(86400)), "24h");
        assert_eq!(duration(Duration::from_secs(90)), "90s");
        assert_eq!(duration(Duration::from_millis(500)), "500ms");
    }

    #[test]
    fn ages_pick_the_unit_by_size() {
        let now = 1_000_000_000_000;
        assert_eq!(ago_at(now - 12_000, now), "12s ago");
        assert_eq!(ago_at(now - 119_999, now), "119s ago");
        assert_eq!(ago_at(now - 120_000, now), "2m ago");
        assert_eq!(ago_at(now - 7_199_000, now), "119m ago");
        assert_eq!(ago_at(now - 7_200_000, now), "2h ago");
        assert_eq!(ago_at(now - 172_800_000, now), "2d ago");
        assert_eq!(ago_at(now + 60_000, now), "0s ago", "a clock ahead of ours");
    }

    #[test]
    fn sizes_give_the_exact_count_and_a_readable_one() {
        assert_eq!(size(0), "0 bytes");
        assert_eq!(size(1023), "1023 bytes");
        assert_eq!(size(1024), "1024 bytes, 1.0 KiB");
        assert_eq!(size(157_286_400), "157286400 bytes, 150.0 MiB");
        assert_eq!(megabytes(12_345_678), "12.3 MB");
        assert_eq!(
            megabytes_per_second(10_000_000, Duration::from_secs(4)),
            "2.5 MB/s"
        );
        assert_eq!(megabytes_per_second(1_000, Duration::ZERO), "1.0 MB/s");
    }

    #[test]
    fn timestamps_are_utc_with_milliseconds() {
        assert_eq!(timestamp(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(timestamp(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(timestamp(-1), "1969-12-31T23:59:59.999Z");
        assert_eq!(timestamp(i64::MAX), "2262-04-11T23:47:16.854Z");
        assert_eq!(timestamp(i64::MIN), "1677-09-21T00:12:43.145Z");
    }
}
