//! Upload time windows (`[upload] windows = ["01:00-07:00", "22:00-23:30"]`): the times of
//! day, in the machine's local time zone, when new uploads may start
//! (docs/ARCHITECTURE.md#upload-windows).
//!
//! Owns: the syntax of a window and the arithmetic of "is now inside one, else when does
//! the next one open". Must not: decide what a closed window stops (the engine's gate does:
//! only new uploads; hashing, checking and uploads in flight go on).

use std::fmt;

use jiff::{ToSpan, ZonedDateTime as Zoned};

/// One window, in minutes since midnight: `start` inclusive, `end` exclusive. A window
/// with `end < start` crosses midnight ("22:00-02:00").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    start: u16,
    end: u16,
}

const DAY: u16 = 24 * 60;

impl Window {
    fn contains(&self, minute: u16) -> bool {
        if self.start < self.end {
            (self.start..self.end).contains(&minute)
        } else {
            minute >= self.start || minute < self.end
        }
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hm = |m: u16| format!("{:02}:{:02}", m / 60, m % 60);
        write!(f, "{}-{}", hm(self.start), hm(self.end))
    }
}

/// `"HH:MM-HH:MM"` (24-hour clock; `24:00` allowed as an end). A window that starts
/// where it ends is refused: it would be either nothing or the whole day.
pub fn parse_window(s: &str) -> Result<Window, String> {
    let bad = |why: &str| {
        format!(
            "invalid upload window {s:?}: {why} (expected \"HH:MM-HH:MM\", like \"01:00-07:00\")"
        )
    };
    let (a, b) = s
        .trim()
        .split_once('-')
        .ok_or_else(|| bad("no '-' between start and end"))?;
    let time = |t: &str, end: bool| -> Result<u16, String> {
        let (h, m) = t
            .trim()
            .split_once(':')
            .ok_or_else(|| bad("a time is HH:MM"))?;
        let h: u16 = h.parse().map_err(|_| bad("the hour is not a number"))?;
        let m: u16 = m.parse().map_err(|_| bad("the minute is not a number"))?;
        if m > 59 || h > 24 || (h == 24 && (m != 0 || !end)) {
            return Err(bad("no such time of day"));
        }
        Ok(h * 60 + m)
    };
    let (start, end) = (time(a, false)?, time(b, true)?);
    let end = if end == DAY { 0 } else { end };
    if start == end {
        return Err(bad("it starts where it ends"));
    }
    Ok(Window { start, end })
}

/// The windows of `[upload] windows`; empty means uploads may start at any time.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Windows(pub Vec<Window>);

impl Windows {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `None` when new uploads may start at `now`; otherwise when the next window opens.
    pub fn closed_until(&self, now: &Zoned) -> Option<Zoned> {
        if self.0.is_empty() {
            return None;
        }
        let minute = now.hour() as u16 * 60 + now.minute() as u16;
        if self.0.iter().any(|w| w.contains(minute)) {
            return None;
        }
        self.0
            .iter()
            .filter_map(|w| {
                let at = now
                    .with()
                    .hour((w.start / 60) as i8)
                    .minute((w.start % 60) as i8)
                    .second(0)
                    .subsec_nanosecond(0)
                    .build()
                    .ok()?;
                if at > *now {
                    Some(at)
                } else {
                    at.checked_add(1.day()).ok()
                }
            })
            .min()
    }
}

impl fmt::Display for Windows {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let all: Vec<String> = self.0.iter().map(|w| w.to_string()).collect();
        f.write_str(&all.join(", "))
    }
}

/// `HH:MM` of the unix time `ms` in the local time zone.
pub fn local_hh_mm(ms: i64) -> String {
    match jiff::Timestamp::from_millisecond(ms) {
        Ok(t) => {
            let z = t.to_zoned_datetime(jiff::tz::TimeZone::system());
            format!("{:02}:{:02}", z.hour(), z.minute())
        }
        Err(_) => "?".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(hm: &str) -> Zoned {
        format!("2026-03-10T{hm}:30[UTC]").parse().expect("time")
    }

    fn windows(list: &[&str]) -> Windows {
        Windows(list.iter().map(|w| parse_window(w).expect(w)).collect())
    }

    #[test]
    fn the_syntax_is_hh_mm_dash_hh_mm() {
        assert_eq!(
            parse_window("01:00-07:00").unwrap().to_string(),
            "01:00-07:00"
        );
        assert_eq!(
            parse_window(" 22:00 - 24:00 ").unwrap().to_string(),
            "22:00-00:00"
        );
        for bad in [
            "01:00",
            "1-7",
            "25:00-01:00",
            "01:60-02:00",
            "24:00-01:00",
            "03:00-03:00",
            "a:b-c:d",
        ] {
            let e = parse_window(bad).unwrap_err();
            assert!(
                e.contains("invalid upload window") && e.contains(bad),
                "{e}"
            );
        }
    }

    #[test]
    fn inside_a_window_uploads_go_and_outside_the_next_opening_is_named() {
        let w = windows(&["01:00-07:00", "22:00-23:30"]);
        assert_eq!(w.closed_until(&at("03:00")), None);
        assert_eq!(w.closed_until(&at("22:10")), None);
        assert_eq!(
            w.closed_until(&at("12:00")),
            Some(at("22:00").with().second(0).build().unwrap())
        );
        let next = w.closed_until(&at("23:45")).unwrap();
        assert_eq!(
            (next.day(), next.hour(), next.minute()),
            (11, 1, 0),
            "tomorrow at 01:00"
        );
        assert_eq!(
            w.closed_until(&at("07:00")).unwrap().hour(),
            22,
            "the end is exclusive"
        );
    }

    #[test]
    fn a_window_may_cross_midnight() {
        let w = windows(&["22:00-02:00"]);
        assert_eq!(w.closed_until(&at("23:00")), None);
        assert_eq!(w.closed_until(&at("01:59")), None);
        assert_eq!(w.closed_until(&at("02:00")).unwrap().hour(), 22);
        assert_eq!(Windows::default().closed_until(&at("12:00")), None);
    }
}
