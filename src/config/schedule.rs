//! Flow schedules: `every <duration>` or a 5-field cron expression.
//!
//! Durations are parsed by `humantime` (`30s`, `5m`, `1h30m`); cron
//! expressions by `croner` (POSIX/Vixie syntax, `@hourly` aliases),
//! evaluated in UTC unless the flow names an IANA `timezone`.
//!
//! Invariant: a parsed cron schedule has a next occurrence, so a flow whose
//! expression can never fire (`0 2 30 2 *`, 30 February) is refused at load
//! time rather than silently never running.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

/// When a flow runs on its own.
#[derive(Clone, Debug)]
pub enum Schedule {
    /// At a fixed interval, counted from the end of the previous pass.
    Every(Duration),
    /// At the times a cron expression matches, in a time zone.
    Cron {
        /// The parsed expression.
        cron: Box<croner::Cron>,
        /// Zone the expression is read in (UTC when the flow sets none).
        timezone: Tz,
    },
}

impl Schedule {
    /// Parses `every 5m` or a cron expression; `timezone` is an IANA name
    /// applying to cron expressions. Errors are one-line messages.
    pub fn parse(text: &str, timezone: Option<&str>) -> Result<Schedule, String> {
        let tz = match timezone {
            Some(name) => parse_timezone(name)?,
            None => Tz::UTC,
        };
        let trimmed = text.trim();
        if let Some(duration) = trimmed.strip_prefix("every ") {
            let interval = humantime::parse_duration(duration.trim()).map_err(|e| {
                format!("invalid interval `{duration}` in schedule `{text}`: {e} (examples: `30s`, `5m`, `1h30m`)")
            })?;
            if interval < Duration::from_secs(1) {
                return Err(format!("schedule `{text}` is shorter than one second"));
            }
            return Ok(Schedule::Every(interval));
        }
        if trimmed.starts_with('@') {
            check_alias(trimmed)?;
        } else if trimmed.split_whitespace().count() != 5 {
            return Err(format!(
                "schedule `{text}` is neither `every <duration>` nor a 5-field cron expression (minute hour day month weekday)"
            ));
        }
        let cron = croner::Cron::from_str(trimmed)
            .map_err(|e| format!("invalid cron expression `{text}`: {e}"))?;
        let schedule = Schedule::Cron {
            cron: Box::new(cron),
            timezone: tz,
        };
        // croner searches a few thousand years ahead and then gives up, so
        // `None` here means the expression names a date that never exists.
        if schedule.next_after(Utc::now()).is_none() {
            return Err(format!(
                "cron expression `{trimmed}` never matches a date; check the day of month against the month"
            ));
        }
        Ok(schedule)
    }

    /// The first time strictly after `after` when the flow is due.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Schedule::Every(interval) => Some(after + chrono::Duration::from_std(*interval).ok()?),
            Schedule::Cron { cron, timezone } => cron
                .find_next_occurrence(&after.with_timezone(timezone), false)
                .ok()
                .map(|t| t.with_timezone(&Utc)),
        }
    }
}

/// Cron aliases `croner` understands (matched without regard to case).
const CRON_ALIASES: [&str; 6] = [
    "@hourly",
    "@daily",
    "@weekly",
    "@monthly",
    "@yearly",
    "@annually",
];

/// Refuses `@` aliases `croner` does not know, which it would otherwise
/// report as "Pattern must have between 5 and 7 fields".
fn check_alias(alias: &str) -> Result<(), String> {
    if alias.eq_ignore_ascii_case("@reboot") {
        return Err(
            "`@reboot` is not supported; use `every <duration>` to run at start-up and then at an interval"
                .into(),
        );
    }
    if CRON_ALIASES
        .iter()
        .any(|known| alias.eq_ignore_ascii_case(known))
    {
        return Ok(());
    }
    let known: Vec<String> = CRON_ALIASES.iter().map(|a| format!("`{a}`")).collect();
    Err(format!(
        "unknown cron alias `{alias}`; use one of {} or a 5-field cron expression",
        known.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals() {
        assert!(
            matches!(Schedule::parse("every 1h30m", None), Ok(Schedule::Every(d)) if d.as_secs() == 5400)
        );
        assert!(
            Schedule::parse("every soon", None)
                .unwrap_err()
                .contains("invalid interval")
        );
    }

    #[test]
    fn cron_in_a_timezone() {
        let s = Schedule::parse("0 2 * * *", Some("Europe/Paris")).unwrap();
        let now = DateTime::parse_from_rfc3339("2026-07-01T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        // 02:00 in Paris in summer is 00:00 UTC.
        assert_eq!(
            s.next_after(now).unwrap().to_rfc3339(),
            "2026-07-02T00:00:00+00:00"
        );
        let utc = Schedule::parse("0 2 * * *", None).unwrap();
        assert_eq!(
            utc.next_after(now).unwrap().to_rfc3339(),
            "2026-07-02T02:00:00+00:00"
        );
    }

    #[test]
    fn bad_input_is_explained() {
        assert!(
            Schedule::parse("daily", None)
                .unwrap_err()
                .contains("5-field cron")
        );
        assert!(
            Schedule::parse("0 2 * * *", Some("Mars/Base"))
                .unwrap_err()
                .contains("unknown timezone")
        );
    }

    /// Regression: `0 2 30 2 *` (30 February) loaded fine and the flow never ran.
    #[test]
    fn cron_that_never_fires_is_refused() {
        assert_eq!(
            Schedule::parse("0 2 30 2 *", None).unwrap_err(),
            "cron expression `0 2 30 2 *` never matches a date; check the day of month against the month"
        );
        assert!(
            Schedule::parse("0 0 31 4 *", Some("Europe/Paris"))
                .unwrap_err()
                .contains("never matches a date")
        );
        // 29 February exists every four years.
        assert!(Schedule::parse("0 0 29 2 *", None).is_ok());
    }

    #[test]
    fn reboot_is_explained() {
        assert_eq!(
            Schedule::parse("@reboot", None).unwrap_err(),
            "`@reboot` is not supported; use `every <duration>` to run at start-up and then at an interval"
        );
        assert_eq!(
            Schedule::parse("@midnight", None).unwrap_err(),
            "unknown cron alias `@midnight`; use one of `@hourly`, `@daily`, `@weekly`, `@monthly`, `@yearly`, `@annually` or a 5-field cron expression"
        );
    }

    #[test]
    fn cron_aliases_keep_working() {
        let now = DateTime::parse_from_rfc3339("2026-07-01T12:34:00Z")
            .unwrap()
            .with_timezone(&Utc);
        for (alias, next) in [
            ("@hourly", "2026-07-01T13:00:00+00:00"),
            ("@daily", "2026-07-02T00:00:00+00:00"),
            ("@DAILY", "2026-07-02T00:00:00+00:00"),
            ("@weekly", "2026-07-05T00:00:00+00:00"),
            ("@monthly", "2026-08-01T00:00:00+00:00"),
            ("@yearly", "2027-01-01T00:00:00+00:00"),
            ("@annually", "2027-01-01T00:00:00+00:00"),
        ] {
            let schedule = Schedule::parse(alias, None).unwrap();
            assert_eq!(
                schedule.next_after(now).unwrap().to_rfc3339(),
                next,
                "{alias}"
            );
        }
    }
}

/// A daily span of local wall-clock time in which a flow may work a site
/// (`"22:00-06:00"`): start inclusive, end exclusive; a start after the
/// end crosses midnight. Read in the site's `timezone` tag (an IANA name),
/// else the flow's `timezone`, else UTC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyncWindow {
    /// First minute inside the window.
    pub start: chrono::NaiveTime,
    /// First minute after the window.
    pub end: chrono::NaiveTime,
}

impl SyncWindow {
    /// Parses `HH:MM-HH:MM` (24-hour clock). Errors are one-line messages.
    pub fn parse(text: &str) -> Result<SyncWindow, String> {
        let bad = || {
            format!(
                "`{text}` is not a daily window `HH:MM-HH:MM` (examples: `22:00-06:00`, `01:30-05:00`)"
            )
        };
        let (start, end) = text.split_once('-').ok_or_else(bad)?;
        let time =
            |part: &str| chrono::NaiveTime::parse_from_str(part.trim(), "%H:%M").map_err(|_| bad());
        let window = SyncWindow {
            start: time(start)?,
            end: time(end)?,
        };
        if window.start == window.end {
            return Err(format!(
                "window `{text}` is empty (start = end); leave `window` out to allow any time"
            ));
        }
        Ok(window)
    }

    /// Whether local time `at` is inside the window.
    pub fn contains(&self, at: chrono::NaiveTime) -> bool {
        if self.start < self.end {
            self.start <= at && at < self.end
        } else {
            at >= self.start || at < self.end
        }
    }
}

impl std::fmt::Display for SyncWindow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}-{}",
            self.start.format("%H:%M"),
            self.end.format("%H:%M")
        )
    }
}

/// Parses an IANA time zone name (`Europe/Paris`). Errors are one-line
/// messages.
pub fn parse_timezone(name: &str) -> Result<Tz, String> {
    Tz::from_str(name.trim())
        .map_err(|_| format!("unknown timezone `{name}`; use an IANA name such as `Europe/Paris`"))
}

#[cfg(test)]
mod window_tests {
    use super::*;
    use chrono::NaiveTime;

    fn at(h: u32, m: u32) -> NaiveTime {
        NaiveTime::from_hms_opt(h, m, 0).unwrap()
    }

    #[test]
    fn a_window_across_midnight_holds_late_evening_and_early_morning() {
        let night = SyncWindow::parse("22:00-06:00").unwrap();
        assert!(night.contains(at(22, 0)));
        assert!(night.contains(at(23, 59)));
        assert!(night.contains(at(0, 0)));
        assert!(night.contains(at(5, 59)));
        assert!(!night.contains(at(6, 0)));
        assert!(!night.contains(at(12, 0)));
        assert!(!night.contains(at(21, 59)));
        assert_eq!(night.to_string(), "22:00-06:00");
    }

    #[test]
    fn a_daytime_window_is_start_inclusive_end_exclusive() {
        let w = SyncWindow::parse(" 01:30 - 05:00 ").unwrap();
        assert!(!w.contains(at(1, 29)));
        assert!(w.contains(at(1, 30)));
        assert!(w.contains(at(4, 59)));
        assert!(!w.contains(at(5, 0)));
    }

    #[test]
    fn bad_windows_are_explained() {
        assert_eq!(
            SyncWindow::parse("22-6").unwrap_err(),
            "`22-6` is not a daily window `HH:MM-HH:MM` (examples: `22:00-06:00`, `01:30-05:00`)"
        );
        assert_eq!(
            SyncWindow::parse("03:00-03:00").unwrap_err(),
            "window `03:00-03:00` is empty (start = end); leave `window` out to allow any time"
        );
    }
}
