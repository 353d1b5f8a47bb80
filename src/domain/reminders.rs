//! When a reminder goes out ("rappel"). The commune's delay (48 h by default) is counted in wall
//! clock time: an appointment on Monday at 9:00 is reminded on Saturday at 9:00, whatever the
//! clocks did on Sunday night. A reminder never goes out in quiet hours (20:00–08:00 by default):
//! it moves to the nearest allowed moment that is still before the appointment — usually the
//! evening before the quiet hours began. No reminder is sent for an appointment booked so
//! recently that the confirmation itself is the reminder.

use super::model::{Commune, MinuteOfDay};
use chrono::{DateTime, Duration, LocalResult, NaiveDateTime, TimeZone, Timelike, Utc};
use chrono_tz::Tz;

/// A reminder must come at least this long after the booking to be worth sending.
pub const MIN_GAP_AFTER_BOOKING: Duration = Duration::hours(12);

/// The instant of a local wall-clock time: the first minute after a spring gap, the first of the
/// two in the autumn overlap.
pub fn resolve(tz: Tz, local: NaiveDateTime) -> DateTime<Utc> {
    // In the spring gap, the wall-clock time does not exist: take the first minute after it.
    let mut probe = local;
    for _ in 0..(3 * 60) {
        match tz.from_local_datetime(&probe) {
            LocalResult::Single(t) => return t.with_timezone(&Utc),
            LocalResult::Ambiguous(first, _) => return first.with_timezone(&Utc),
            LocalResult::None => probe += Duration::minutes(1),
        }
    }
    local.and_utc()
}

fn minute_of(local: NaiveDateTime) -> MinuteOfDay {
    MinuteOfDay((local.hour() * 60 + local.minute()) as u16)
}

/// Whether a local time of day is in the quiet hours `[start, end)` (which may span midnight;
/// "24:00" is midnight).
pub fn is_quiet(at: MinuteOfDay, start: MinuteOfDay, end: MinuteOfDay) -> bool {
    let (start, end) = (start.time_of_day(), end.time_of_day());
    if start == end {
        false
    } else if start < end {
        start <= at && at < end
    } else {
        at >= start || at < end
    }
}

/// When to remind of an appointment starting at `starts_at` and booked at `booked_at`; `None`
/// when no reminder should be sent.
pub fn reminder_due(
    commune: &Commune,
    starts_at: DateTime<Utc>,
    booked_at: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let tz = commune.timezone;
    let local_start = starts_at.with_timezone(&tz).naive_local();
    let local_due = local_start - Duration::hours(i64::from(commune.reminder_delay_hours.max(0)));
    let due = resolve(tz, local_due);
    let worth_it = |t: &DateTime<Utc>| *t >= booked_at + MIN_GAP_AFTER_BOOKING && *t < starts_at;
    let (quiet_start, quiet_end) = (commune.quiet_start, commune.quiet_end);
    if !is_quiet(
        minute_of(due.with_timezone(&tz).naive_local()),
        quiet_start,
        quiet_end,
    ) {
        return worth_it(&due).then_some(due);
    }
    // The nearer of the allowed moments around it that still helps: when the evening before
    // is too soon after the booking, the morning after may not be.
    let (before, after) = allowed_around(tz, due, quiet_start, quiet_end);
    [before, after]
        .into_iter()
        .filter(worth_it)
        .min_by_key(|t| (*t - due).abs())
}

/// When the quiet hours that the quiet instant `at` falls in end: when a reminder that is late
/// (a retry, a worker down overnight) may go.
pub fn end_of_quiet_hours(
    tz: Tz,
    at: DateTime<Utc>,
    quiet_start: MinuteOfDay,
    quiet_end: MinuteOfDay,
) -> DateTime<Utc> {
    allowed_around(tz, at, quiet_start, quiet_end).1
}

/// The allowed moments around a quiet `due`: the last minute before the quiet hours began and
/// the first one after they end.
fn allowed_around(
    tz: Tz,
    due: DateTime<Utc>,
    quiet_start: MinuteOfDay,
    quiet_end: MinuteOfDay,
) -> (DateTime<Utc>, DateTime<Utc>) {
    let (quiet_start, quiet_end) = (quiet_start.time_of_day(), quiet_end.time_of_day());
    let local = due.with_timezone(&tz).naive_local();
    let at = minute_of(local);
    let date = local.date();
    let time = |m: MinuteOfDay| m.to_time().unwrap_or_default();
    // Which calendar day the quiet period began on, and which day it ends on.
    let (began_on, ends_on) = if quiet_start > quiet_end && at < quiet_end {
        (date.pred_opt().unwrap_or(date), date)
    } else if quiet_start > quiet_end {
        (date, date.succ_opt().unwrap_or(date))
    } else {
        (date, date)
    };
    let before = resolve(
        tz,
        began_on.and_time(time(quiet_start)) - Duration::minutes(1),
    );
    let after = resolve(tz, ends_on.and_time(time(quiet_end)));
    (before, after)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::WeeklyHours;
    use chrono_tz::Europe::Paris;

    fn commune(delay: i32) -> Commune {
        Commune {
            id: 1,
            slug: "annecy".into(),
            name: "Annecy".into(),
            insee_code: "74010".into(),
            timezone: Paris,
            population: 0,
            phone_numbers: vec![],
            switchboard_number: None,
            switchboard_hours: WeeklyHours::default(),
            reminder_delay_hours: delay,
            quiet_start: MinuteOfDay::hm(20, 0),
            quiet_end: MinuteOfDay::hm(8, 0),
            sms_sender: String::new(),
            allow_multiple_per_category: false,
            sms_daily_budget: 300,
            allow_foreign_mobiles: false,
        }
    }

    fn paris(s: &str) -> DateTime<Utc> {
        Paris
            .from_local_datetime(&s.parse::<NaiveDateTime>().unwrap())
            .single()
            .unwrap()
            .with_timezone(&Utc)
    }

    fn local(t: DateTime<Utc>) -> String {
        t.with_timezone(&Paris).format("%Y-%m-%dT%H:%M").to_string()
    }

    const LONG_AGO: &str = "2026-01-01T10:00:00";

    #[test]
    fn forty_eight_hours_before() {
        let due = reminder_due(&commune(48), paris("2026-12-03T09:30:00"), paris(LONG_AGO));
        assert_eq!(local(due.unwrap()), "2026-12-01T09:30");
    }

    #[test]
    fn never_in_quiet_hours() {
        // 7:45 minus 48 h is quiet; 8:00 that morning is nearer than 19:59 the evening before.
        let c = commune(48);
        let due = reminder_due(&c, paris("2026-12-03T07:45:00"), paris(LONG_AGO)).unwrap();
        assert_eq!(local(due), "2026-12-01T08:00");
        // 21:00 is quiet; 19:59 the same evening is nearer than 8:00 the next morning.
        let due = reminder_due(&c, paris("2026-12-03T21:00:00"), paris(LONG_AGO)).unwrap();
        assert_eq!(local(due), "2026-12-01T19:59");
        // With a 12-hour delay, an 8:30 appointment falls at 20:30 the evening before: 19:59.
        let due = reminder_due(&commune(12), paris("2026-12-03T08:30:00"), paris(LONG_AGO));
        assert_eq!(local(due.unwrap()), "2026-12-02T19:59");
        // 2-hour delay, 9:30 appointment: due 7:30 is quiet, 8:00 is nearer and still before.
        let due = reminder_due(&commune(2), paris("2026-12-03T09:30:00"), paris(LONG_AGO));
        assert_eq!(local(due.unwrap()), "2026-12-03T08:00");
        assert!(is_quiet(
            MinuteOfDay::hm(23, 0),
            MinuteOfDay::hm(20, 0),
            MinuteOfDay::hm(8, 0)
        ));
        assert!(!is_quiet(
            MinuteOfDay::hm(8, 0),
            MinuteOfDay::hm(20, 0),
            MinuteOfDay::hm(8, 0)
        ));
        assert!(is_quiet(
            MinuteOfDay::hm(12, 30),
            MinuteOfDay::hm(12, 0),
            MinuteOfDay::hm(14, 0)
        ));
    }

    #[test]
    fn the_other_side_of_the_quiet_hours_when_the_nearer_is_too_soon() {
        // 36 h before Friday 9:00 is Wednesday 21:00, quiet. Booked on Wednesday at 8:00,
        // 19:59 that evening would come too soon after the booking; Thursday 8:00 does not.
        let c = commune(36);
        let start = paris("2026-12-04T09:00:00");
        let due = reminder_due(&c, start, paris("2026-12-02T08:00:00"));
        assert_eq!(local(due.unwrap()), "2026-12-03T08:00");
        // Booked earlier, the nearer one, the evening before.
        let due = reminder_due(&c, start, paris(LONG_AGO));
        assert_eq!(local(due.unwrap()), "2026-12-02T19:59");
    }

    #[test]
    fn quiet_hours_ending_at_midnight() {
        // "24:00", as the hours form takes it, is midnight: the night after 20:00 is quiet
        // until 00:00 of the next day, not of the same one.
        let c = Commune {
            quiet_end: MinuteOfDay(24 * 60),
            ..commune(48)
        };
        assert!(is_quiet(MinuteOfDay::hm(21, 0), c.quiet_start, c.quiet_end));
        assert!(!is_quiet(MinuteOfDay::hm(3, 0), c.quiet_start, c.quiet_end));
        // Due Tuesday 21:00: 19:59 is nearer than midnight.
        let due = reminder_due(&c, paris("2026-12-03T21:00:00"), paris(LONG_AGO)).unwrap();
        assert_eq!(local(due), "2026-12-01T19:59");
        // Due Tuesday 23:30: midnight, half an hour later, is nearer.
        let due = reminder_due(&c, paris("2026-12-03T23:30:00"), paris(LONG_AGO)).unwrap();
        assert_eq!(local(due), "2026-12-02T00:00");
    }

    #[test]
    fn not_when_booked_too_recently() {
        let c = commune(48);
        let start = paris("2026-12-03T09:30:00");
        // Booked yesterday for the day after tomorrow: the reminder time has passed.
        assert_eq!(reminder_due(&c, start, paris("2026-12-02T10:00:00")), None);
        // Booked 54 h ahead: the reminder would come 6 h after the confirmation.
        assert_eq!(reminder_due(&c, start, paris("2026-12-01T03:30:00")), None);
        // Booked 61 h ahead: 13 h later is worth it.
        assert!(reminder_due(&c, start, paris("2026-11-30T20:30:00")).is_some());
    }

    #[test]
    fn across_daylight_saving_changes() {
        let c = commune(48);
        // Monday 30 March 2026 at 9:00 (CEST): reminded Saturday 28 at 9:00 (CET), 47 real
        // hours earlier (the night of the change is an hour short).
        let start = paris("2026-03-30T09:00:00");
        let due = reminder_due(&c, start, paris(LONG_AGO)).unwrap();
        assert_eq!(local(due), "2026-03-28T09:00");
        assert_eq!(start - due, Duration::hours(47));
        // Monday 26 October 2026 at 9:00 (CET): Saturday 24 at 9:00 (CEST), 49 real hours.
        let start = paris("2026-10-26T09:00:00");
        let due = reminder_due(&c, start, paris(LONG_AGO)).unwrap();
        assert_eq!(local(due), "2026-10-24T09:00");
        assert_eq!(start - due, Duration::hours(49));
        // A reminder landing in the spring gap (2:30 does not exist) moves past it, then out of
        // the quiet hours.
        let mut night = commune(24);
        night.quiet_start = MinuteOfDay::hm(4, 0);
        night.quiet_end = MinuteOfDay::hm(5, 0);
        let due = reminder_due(&night, paris("2026-03-30T02:30:00"), paris(LONG_AGO)).unwrap();
        assert_eq!(local(due), "2026-03-29T03:00");
    }
}
