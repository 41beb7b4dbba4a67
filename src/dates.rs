//! The date a file is uploaded with (`fileCreatedAt`): its capture time when the file has
//! one, else a date in its name, else its mtime (docs/ARCHITECTURE.md#dates).
//!
//! Owns: the order of the sources, reading a time written without an offset in the root's
//! `timezone`, and the file-name patterns ([`name_date`]). The capture time is read by
//! [`media`] from a bounded part of the file (never the whole of it).
//!
//! Must not: talk to the server or write the database. Reading is blocking: callers run
//! [`created_at`] on the blocking pool.

use std::path::Path;

use jiff::civil::DateTime;
use jiff::tz::TimeZone;
use jiff::Timestamp;

pub mod media;

/// Where a file's `fileCreatedAt` came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DateSource {
    /// EXIF `DateTimeOriginal` (or `CreateDate`), or a video's `mvhd` creation time.
    Capture,
    /// A date in the file name.
    Name,
    /// The file's modification time.
    Mtime,
}

/// A time as a file states it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stated {
    /// An instant (an offset was given, or the format is UTC by definition).
    Instant(Timestamp),
    /// A wall-clock time without an offset: read in the root's zone.
    Local(DateTime),
}

impl Stated {
    /// The instant, reading a local time in `tz` (a time that does not exist or exists
    /// twice at a DST change is resolved as RFC 5545 "compatible": later for a gap,
    /// earlier for a fold).
    pub fn instant(self, tz: &TimeZone) -> Option<Timestamp> {
        match self {
            Stated::Instant(t) => Some(t),
            Stated::Local(dt) => tz.to_timestamp(dt).ok(),
        }
    }
}

/// The machine's zone: `TZ`, else `/etc/localtime`; UTC when neither can be read (with a
/// warning), never the `time` crate's offset, which is unreliable in a threaded program.
pub fn local_zone() -> TimeZone {
    match TimeZone::try_system() {
        Ok(tz) => tz,
        Err(e) => {
            tracing::warn!("cannot tell the machine's time zone ({e}); using UTC for dates without an offset (set timezone in [[roots]])");
            TimeZone::UTC
        }
    }
}

/// How a root dates its files.
#[derive(Clone, Debug)]
pub struct Dating {
    pub from_names: bool,
    pub timezone: TimeZone,
}

/// Blocking: the `fileCreatedAt` of the file at `path` (Unix nanoseconds) and where it came
/// from. Reads at most [`media::READ_MAX`] bytes of the file.
pub fn created_at(path: &Path, mtime_ns: i64, dating: &Dating) -> (i64, DateSource) {
    created_at_with(path, None, mtime_ns, dating)
}

/// [`created_at`], reading the capture time from `content` (the whole file, already read)
/// when given, instead of from the file again.
pub fn created_at_with(
    path: &Path,
    content: Option<&[u8]>,
    mtime_ns: i64,
    dating: &Dating,
) -> (i64, DateSource) {
    let ns = |t: Timestamp| i64::try_from(t.as_nanosecond()).ok();
    let stated = match content {
        Some(bytes) => media::capture_time_of(bytes),
        None => media::capture_time(path),
    };
    if let Some(t) = stated.and_then(|s| s.instant(&dating.timezone)) {
        if let Some(n) = ns(t) {
            return (n, DateSource::Capture);
        }
    }
    if dating.from_names {
        let name = path.file_name().map(|n| n.to_string_lossy());
        if let Some(t) = name
            .and_then(|n| name_date(&n))
            .and_then(|d| dating.timezone.to_timestamp(d).ok())
        {
            if let Some(n) = ns(t) {
                return (n, DateSource::Name);
            }
        }
    }
    (mtime_ns, DateSource::Mtime)
}

/// A date (and time, when there is one) in a file name, as phones and apps write them: a
/// year 1990..=2099 not preceded by a digit, then month and day, with `-`, `_` or `.`
/// between them or nothing; then optionally a separator (`_`, `-`, ` `, `.`, `T`) and hours,
/// minutes, seconds (with `-`, `.`, `:`, `_` or nothing between them) and any further digits
/// (milliseconds, read as such when there are 3). A date alone is midnight. Examples:
/// `IMG_20240501_123456.jpg`, `PXL_20240501_123456789.jpg`, `VID-20240501-WA0001.mp4`,
/// `Screenshot_2024-05-01-12-34-56.png`, `signal-2024-05-01-123456.jpg`,
/// `2024-05-01 12.34.56.jpg`. The first match in the name wins.
pub fn name_date(name: &str) -> Option<DateTime> {
    let b = name.as_bytes();
    (0..b.len())
        .filter(|&i| i == 0 || !b[i - 1].is_ascii_digit())
        .find_map(|i| date_at(&b[i..]))
}

fn digits(b: &[u8], at: usize, n: usize) -> Option<i32> {
    let s = b.get(at..at + n)?;
    s.iter()
        .all(u8::is_ascii_digit)
        .then(|| s.iter().fold(0i32, |acc, d| acc * 10 + i32::from(d - b'0')))
}

fn date_at(b: &[u8]) -> Option<DateTime> {
    let year = digits(b, 0, 4)?;
    if !(1990..=2099).contains(&year) {
        return None;
    }
    let mut at = 4;
    let sep = b.get(at).copied().filter(|c| b"-_.".contains(c));
    if sep.is_some() {
        at += 1;
    }
    let month = digits(b, at, 2)?;
    at += 2;
    if let Some(s) = sep {
        if b.get(at) != Some(&s) {
            return None;
        }
        at += 1;
    }
    let day = digits(b, at, 2)?;
    at += 2;
    let date = jiff::civil::Date::new(year as i16, month as i8, day as i8).ok()?;
    let time = time_at(b, at);
    // A date alone must not run on into more digits (an id, not a date).
    if time.is_none() && b.get(at).is_some_and(u8::is_ascii_digit) {
        return None;
    }
    let (h, m, s, ns) = time.unwrap_or((0, 0, 0, 0));
    Some(date.at(h, m, s, ns))
}

fn time_at(b: &[u8], mut at: usize) -> Option<(i8, i8, i8, i32)> {
    if b.get(at).is_some_and(|c| b"_- .T".contains(c)) {
        at += 1;
    } else if !b.get(at).is_some_and(u8::is_ascii_digit) {
        return None;
    }
    let part = |at: &mut usize, first: bool| -> Option<i32> {
        if !first && b.get(*at).is_some_and(|c| b"-.:_".contains(c)) {
            *at += 1;
        }
        let v = digits(b, *at, 2)?;
        *at += 2;
        Some(v)
    };
    let h = part(&mut at, true)?;
    let m = part(&mut at, false)?;
    let s = part(&mut at, false)?;
    if h > 23 || m > 59 || s > 59 {
        return None;
    }
    let frac = b[at..].iter().take_while(|c| c.is_ascii_digit()).count();
    let ns = if frac == 3 {
        digits(b, at, 3)? * 1_000_000
    } else {
        0
    };
    Some((h as i8, m as i8, s as i8, ns))
}

/// `YYYY:MM:DD HH:MM:SS` (EXIF), with optional sub-second digits and `±HH:MM` offset.
pub(crate) fn exif_time(dt: &str, subsec: Option<&str>, offset: Option<&str>) -> Option<Stated> {
    let b = dt.trim_end_matches('\0').trim().as_bytes();
    if b.len() < 19 || b[4] != b':' || b[7] != b':' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let n = |at, len| digits(b, at, len);
    let ns = subsec
        .map(|s| s.trim_end_matches('\0').trim())
        .filter(|s| !s.is_empty() && s.len() <= 9 && s.bytes().all(|c| c.is_ascii_digit()))
        .map_or(0, |s| {
            s.parse::<i32>().unwrap_or(0) * 10i32.pow(9 - s.len() as u32)
        });
    let dt = DateTime::new(
        n(0, 4)? as i16,
        n(5, 2)? as i8,
        n(8, 2)? as i8,
        n(11, 2)? as i8,
        n(14, 2)? as i8,
        n(17, 2)? as i8,
        ns,
    )
    .ok()?;
    match offset.and_then(parse_offset) {
        Some(off) => off.to_timestamp(dt).ok().map(Stated::Instant),
        None => Some(Stated::Local(dt)),
    }
}

/// `+02:00`, `-05:30`, `Z`.
fn parse_offset(s: &str) -> Option<jiff::tz::Offset> {
    let s = s.trim_end_matches('\0').trim();
    if s == "Z" {
        return Some(jiff::tz::Offset::UTC);
    }
    let b = s.as_bytes();
    if b.len() != 6 || b[3] != b':' {
        return None;
    }
    let sign = match b[0] {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let (h, m) = (digits(b, 1, 2)?, digits(b, 4, 2)?);
    if h > 18 || m > 59 {
        return None;
    }
    jiff::tz::Offset::from_seconds(sign * (h * 3600 + m * 60)).ok()
}

/// Formats Unix nanoseconds as `YYYY-MM-DDTHH:MM:SS.sssZ` (UTC, milliseconds truncated
/// towards the past), the one date format both v2.7.5 and the next major accept (the
/// requests' dates, and the mirror's dates read back as the server wrote them).
///
/// Every `i64` is in range (1677..2262), so this cannot fail.
pub fn format_timestamp(unix_ns: i64) -> String {
    let secs = unix_ns.div_euclid(1_000_000_000);
    let millis = unix_ns.rem_euclid(1_000_000_000) / 1_000_000;
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day); Howard Hinnant's
/// `civil_from_days`, exact for the whole `i64`-nanosecond range.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod fuzz;

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::civil::date;
    use proptest::prelude::*;

    #[test]
    fn names_phones_and_apps_write() {
        let cases = [
            (
                "IMG_20240501_123456.jpg",
                date(2024, 5, 1).at(12, 34, 56, 0),
            ),
            (
                "VID_20240501_123456.mp4",
                date(2024, 5, 1).at(12, 34, 56, 0),
            ),
            (
                "PXL_20240501_123456789.jpg",
                date(2024, 5, 1).at(12, 34, 56, 789_000_000),
            ),
            ("VID-20240501-WA0001.mp4", date(2024, 5, 1).at(0, 0, 0, 0)),
            ("IMG-20240501-WA0001.jpeg", date(2024, 5, 1).at(0, 0, 0, 0)),
            (
                "Screenshot_2024-05-01-12-34-56.png",
                date(2024, 5, 1).at(12, 34, 56, 0),
            ),
            (
                "Screenshot_20240501-123456_Chrome.jpg",
                date(2024, 5, 1).at(12, 34, 56, 0),
            ),
            (
                "signal-2024-05-01-123456.jpg",
                date(2024, 5, 1).at(12, 34, 56, 0),
            ),
            (
                "2024-05-01 12.34.56.jpg",
                date(2024, 5, 1).at(12, 34, 56, 0),
            ),
            ("20240501_123456.heic", date(2024, 5, 1).at(12, 34, 56, 0)),
        ];
        for (name, want) in cases {
            assert_eq!(name_date(name), Some(want), "{name}");
        }
        for name in [
            "IMG_0001.jpg",
            "DSC_2024.jpg",
            "IMG_20241301_123456.jpg",
            "IMG_20240230.jpg",
            "1234567890123.jpg",
            "photo_120240501.jpg",
            "IMG_202405011.jpg",
            "x_2024-05_01.jpg",
        ] {
            assert_eq!(name_date(name), None, "{name}");
        }
        // A bad time of day leaves the date.
        assert_eq!(
            name_date("IMG_20240501_993456.jpg"),
            Some(date(2024, 5, 1).at(0, 0, 0, 0))
        );
    }

    proptest! {
        #[test]
        fn any_valid_time_in_any_pattern_reads_back(
            y in 1990i16..=2099, mo in 1i8..=12, d in 1i8..=28,
            h in 0i8..=23, mi in 0i8..=59, s in 0i8..=59, pattern in 0usize..5,
            prefix in "(IMG_|VID_|PXL_|Screenshot_|signal-|)", suffix in "(\\.jpg|_Chrome\\.png|)",
        ) {
            let body = match pattern {
                0 => format!("{y:04}{mo:02}{d:02}_{h:02}{mi:02}{s:02}"),
                1 => format!("{y:04}-{mo:02}-{d:02}-{h:02}-{mi:02}-{s:02}"),
                2 => format!("{y:04}-{mo:02}-{d:02}-{h:02}{mi:02}{s:02}"),
                3 => format!("{y:04}-{mo:02}-{d:02} {h:02}.{mi:02}.{s:02}"),
                _ => format!("{y:04}{mo:02}{d:02}-{h:02}{mi:02}{s:02}"),
            };
            let name = format!("{prefix}{body}{suffix}");
            prop_assert_eq!(name_date(&name), Some(date(y, mo, d).at(h, mi, s, 0)), "{}", name);
        }

        #[test]
        fn any_name_is_read_without_panicking(name in "\\PC{0,40}") {
            let _ = name_date(&name);
        }
    }

    #[test]
    fn exif_times_with_and_without_an_offset() {
        let with = exif_time("2019:07:04 18:30:00\0", Some("250"), Some("+02:00")).unwrap();
        assert_eq!(
            with.instant(&TimeZone::UTC).unwrap().to_string(),
            "2019-07-04T16:30:00.25Z"
        );
        let local = exif_time("2019:07:04 18:30:00", None, None).unwrap();
        assert_eq!(local, Stated::Local(date(2019, 7, 4).at(18, 30, 0, 0)));
        let berlin = TimeZone::get("Europe/Berlin").unwrap();
        assert_eq!(
            local.instant(&berlin).unwrap().to_string(),
            "2019-07-04T16:30:00Z",
            "summer time in Berlin is +02:00"
        );
        assert_eq!(exif_time("0000:00:00 00:00:00", None, None), None);
        assert_eq!(exif_time("    :  :     :  :  ", None, None), None);
        assert!(matches!(
            exif_time("2019:07:04 18:30:00", None, Some("bogus")),
            Some(Stated::Local(_))
        ));
    }
}
