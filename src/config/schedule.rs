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
            Some(name) => Tz::from_str(name).map_err(|_| {
                format!("unknown timezone `{name}`; use an IANA name such as `Europe/Paris`")
            })?,
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
