//! Statistics of one commune over a period of local dates `from..=to` (SPEC.md, "Statistics"),
//! and their CSV export.
//!
//! What counts as what:
//! - an appointment belongs to the period when it *starts* on one of its local dates; calls and
//!   SMS when they start or are sent on one;
//! - **booked** means confirmed at some point (`confirmed_at` is set): lapsed and live holds are
//!   left out, and so is an appointment that was *moved*, because it lives on in its replacement,
//!   which is counted under its own date — counting both would count one citizen twice;
//! - the cancellation rate is cancelled (by the citizen or the commune) ÷ booked; the no-show
//!   rate is no-shows ÷ (honoured + no-shows), i.e. among appointments whose outcome is known;
//! - occupancy is booked seat-minutes (appointments that still hold their seat: confirmed,
//!   honoured, no-show) ÷ offered seat-minutes. Offered time is what the free-slot search can
//!   offer: opening rules of active plannings at active locations, on days that are not public
//!   holidays, minus closures, times the planning's capacity. Overlapping rules of one planning
//!   count once, since they open the same seats;
//! - the lead time runs from the appointment's creation to its start. For a replacement created
//!   by a move, that is the move, not the first booking.

use super::holidays::HolidayCalendar;
use super::model::{
    Appointment, Closure, Commune, Location, LocationId, OpeningRule, Planning, Service,
};
use super::pricing::decimal_euros;
use super::reminders::resolve;
use super::values::{Channel, Status};
use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveTime, Utc};
use chrono_tz::Tz;
use serde::Serialize;
use std::collections::HashMap;

/// One telephone call, as far as statistics go. `outcome` is the calls table's: `booked`,
/// `cancelled`, `moved`, `transferred`, `abandoned`, `failed`, or none while the call runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallSummary {
    pub started_at: DateTime<Utc>,
    pub outcome: Option<String>,
}

/// One SMS sent: when, its segments, and its cost in micro-euros.
pub type SmsSent = (DateTime<Utc>, i32, i64);

/// Everything the statistics read, loaded by the caller for one commune.
#[derive(Debug, Clone, Copy)]
pub struct StatsInput<'a> {
    pub commune: &'a Commune,
    /// First and last local dates of the period, both included.
    pub from: NaiveDate,
    pub to: NaiveDate,
    /// The appointments starting in the period, whatever their status. Others are ignored.
    pub appointments: &'a [Appointment],
    pub services: &'a [Service],
    pub locations: &'a [Location],
    pub plannings: &'a [Planning],
    pub rules: &'a [OpeningRule],
    pub closures: &'a [Closure],
    pub calls: &'a [CallSummary],
    pub sms: &'a [SmsSent],
    /// Tells a live hold from a lapsed one.
    pub now: DateTime<Utc>,
}

/// A labelled count, one row of a table or one bar of a chart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Count {
    pub label: String,
    pub count: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CallStats {
    pub received: u64,
    pub booked: u64,
    pub transferred: u64,
    pub abandoned: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SmsStats {
    pub messages: u64,
    pub segments: i64,
    pub cost_micro_eur: i64,
}

impl SmsStats {
    /// The cost rounded to the cent.
    pub fn cost_cents(&self) -> i64 {
        (self.cost_micro_eur + 5_000).div_euclid(10_000)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stats {
    /// Appointments starting in the period, whatever became of them (lapsed holds included).
    pub appointments: u64,
    /// Of those, the booked ones (see the module documentation).
    pub booked: u64,
    /// Booked appointments per channel, in a fixed order (web, phone, agent), zeros included.
    pub by_channel: Vec<Count>,
    /// Booked appointments per service, most booked first; active services with none included.
    pub by_service: Vec<Count>,
    /// Booked appointments per location, most booked first; active locations with none included.
    pub by_location: Vec<Count>,
    /// All appointments of the period per status as seen now, every status listed.
    pub by_status: Vec<Count>,
    pub cancelled: u64,
    pub honoured: u64,
    pub no_shows: u64,
    /// Fractions between 0 and 1; `None` when there is nothing to divide by.
    pub cancellation_rate: Option<f64>,
    pub no_show_rate: Option<f64>,
    pub occupancy: Option<f64>,
    pub booked_seat_minutes: i64,
    pub offered_seat_minutes: i64,
    /// Days between booking and appointment, over booked appointments.
    pub lead_time_mean_days: Option<f64>,
    pub lead_time_median_days: Option<f64>,
    pub calls: CallStats,
    pub sms: SmsStats,
    /// Booked appointments per local date of the period, every date listed.
    pub by_day: Vec<(NaiveDate, u64)>,
}

impl Stats {
    /// Booked appointments per week, each week named by its Monday (which may fall before the
    /// period's first date).
    pub fn by_week(&self) -> Vec<(NaiveDate, u64)> {
        let mut weeks: Vec<(NaiveDate, u64)> = Vec::new();
        for &(date, count) in &self.by_day {
            let monday = date - Duration::days(i64::from(date.weekday().num_days_from_monday()));
            match weeks.last_mut() {
                Some((week, total)) if *week == monday => *total += count,
                _ => weeks.push((monday, count)),
            }
        }
        weeks
    }
}

/// How an appointment was booked, in French.
pub fn channel_label(channel: Channel) -> &'static str {
    match channel {
        Channel::Web => "En ligne",
        Channel::Phone => "Téléphone (serveur vocal)",
        Channel::Agent => "Par un agent",
    }
}

/// Confirmed at some point, and not replaced by a move (see the module documentation).
pub fn was_booked(appointment: &Appointment) -> bool {
    appointment.confirmed_at.is_some() && appointment.status != Status::Moved
}

fn days(from: NaiveDate, to: NaiveDate) -> impl Iterator<Item = NaiveDate> {
    from.iter_days().take_while(move |d| *d <= to)
}

fn ratio(numerator: u64, denominator: u64) -> Option<f64> {
    (denominator > 0).then(|| numerator as f64 / denominator as f64)
}

/// Most first, then by label, so tables and charts read from the largest.
fn sorted(mut counts: Vec<Count>) -> Vec<Count> {
    counts.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.label.cmp(&b.label)));
    counts
}

/// Counts per id, labelled by name; ids missing from `names` (a deleted service) get `fallback`.
fn counts_by_id(
    ids: impl Iterator<Item = i64>,
    names: impl Iterator<Item = (i64, String, bool)>,
    fallback: impl Fn(i64) -> String,
) -> Vec<Count> {
    let mut per_id: HashMap<i64, u64> = HashMap::new();
    for id in ids {
        *per_id.entry(id).or_default() += 1;
    }
    let mut counts = Vec::new();
    for (id, name, active) in names {
        let count = per_id.remove(&id).unwrap_or(0);
        if count > 0 || active {
            counts.push(Count { label: name, count });
        }
    }
    counts.extend(per_id.into_iter().map(|(id, count)| Count {
        label: fallback(id),
        count,
    }));
    sorted(counts)
}

fn median(sorted_values: &[f64]) -> Option<f64> {
    let n = sorted_values.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(sorted_values[n / 2]),
        _ => Some((sorted_values[n / 2 - 1] + sorted_values[n / 2]) / 2.0),
    }
}

/// The instant a wall-clock minute of `date` happens (minute 1440 is the next midnight), with
/// the reminders' rule for daylight-saving changes.
fn local_instant(tz: Tz, date: NaiveDate, minute: u16) -> DateTime<Utc> {
    resolve(
        tz,
        date.and_time(NaiveTime::MIN) + Duration::minutes(i64::from(minute)),
    )
}

type Interval = (DateTime<Utc>, DateTime<Utc>);

/// `pieces` without the part `[start, end)`.
fn subtract(pieces: Vec<Interval>, start: DateTime<Utc>, end: DateTime<Utc>) -> Vec<Interval> {
    let mut out = Vec::with_capacity(pieces.len() + 1);
    for (a, b) in pieces {
        if end <= a || b <= start {
            out.push((a, b));
            continue;
        }
        if a < start {
            out.push((a, start));
        }
        if end < b {
            out.push((end, b));
        }
    }
    out
}

/// Total length of the union of `intervals`, in seconds.
fn union_seconds(mut intervals: Vec<Interval>) -> i64 {
    intervals.sort();
    let mut total = 0;
    let mut current: Option<Interval> = None;
    for (a, b) in intervals {
        current = match current {
            Some((s, e)) if a <= e => Some((s, e.max(b))),
            Some((s, e)) => {
                total += (e - s).num_seconds();
                Some((a, b))
            }
            None => Some((a, b)),
        };
    }
    if let Some((s, e)) = current {
        total += (e - s).num_seconds();
    }
    total
}

/// Seat-minutes the commune offered over the period (see the module documentation).
fn offered_seat_minutes(input: &StatsInput<'_>) -> i64 {
    let tz = input.commune.timezone;
    let active_location = |id: LocationId| input.locations.iter().any(|l| l.id == id && l.active);
    // The same rules the free-slot search would use.
    let usable: Vec<&OpeningRule> = input
        .rules
        .iter()
        .filter(|r| r.step_minutes > 0 && r.start < r.end && !r.service_ids.is_empty())
        .filter(|r| active_location(r.location_id))
        .collect();
    let mut holidays = HolidayCalendar::new(input.commune.holiday_region());
    let mut seat_seconds = 0;
    for date in days(input.from, input.to) {
        if holidays.is_holiday(date) {
            continue;
        }
        for planning in input
            .plannings
            .iter()
            .filter(|p| p.active && p.capacity > 0)
        {
            let mut open = Vec::new();
            for rule in usable
                .iter()
                .filter(|r| r.planning_id == planning.id && r.applies_on(date))
            {
                let start = local_instant(tz, date, rule.start.0);
                let end = local_instant(tz, date, rule.end.0);
                let mut pieces = vec![(start, end)];
                for closure in input
                    .closures
                    .iter()
                    .filter(|c| c.closes(planning.id, rule.location_id, start, end))
                {
                    pieces = subtract(pieces, closure.starts_at, closure.ends_at);
                }
                open.extend(pieces);
            }
            seat_seconds += union_seconds(open) * i64::from(planning.capacity);
        }
    }
    seat_seconds / 60
}

/// The statistics of `input.commune` over `input.from..=input.to`.
pub fn compute_stats(input: &StatsInput<'_>) -> Stats {
    let commune = input.commune;
    let in_period = |at: DateTime<Utc>| {
        let date = commune.local_date(at);
        input.from <= date && date <= input.to
    };
    let all: Vec<&Appointment> = input
        .appointments
        .iter()
        .filter(|a| in_period(a.starts_at))
        .collect();
    let booked: Vec<&Appointment> = all.iter().copied().filter(|a| was_booked(a)).collect();
    let with_status = |status: Status| booked.iter().filter(|a| a.status == status).count() as u64;

    let by_channel = Channel::ALL
        .iter()
        .map(|&channel| Count {
            label: channel_label(channel).to_owned(),
            count: booked.iter().filter(|a| a.channel == channel).count() as u64,
        })
        .collect();
    let by_service = counts_by_id(
        booked.iter().map(|a| a.service_id),
        input
            .services
            .iter()
            .map(|s| (s.id, s.name.clone(), s.active)),
        |id| format!("Motif n° {id}"),
    );
    let by_location = counts_by_id(
        booked.iter().map(|a| a.location_id),
        input
            .locations
            .iter()
            .map(|l| (l.id, l.name.clone(), l.active)),
        |id| format!("Lieu n° {id}"),
    );
    let by_status = Status::ALL
        .iter()
        .map(|&status| Count {
            label: status.label().to_owned(),
            count: all
                .iter()
                .filter(|a| a.effective_status(input.now) == status)
                .count() as u64,
        })
        .collect();

    let cancelled =
        with_status(Status::CancelledByCitizen) + with_status(Status::CancelledByCommune);
    let honoured = with_status(Status::Honoured);
    let no_shows = with_status(Status::NoShow);
    let booked_seat_minutes = booked
        .iter()
        .filter(|a| a.status.occupies_seat())
        .map(|a| (a.ends_at - a.starts_at).num_minutes().max(0))
        .sum();
    let offered_seat_minutes = offered_seat_minutes(input);

    // An agent may record an appointment after the fact; it was not booked in advance.
    let mut lead_times: Vec<f64> = booked
        .iter()
        .map(|a| (a.starts_at - a.created_at).num_seconds().max(0) as f64 / 86_400.0)
        .collect();
    lead_times.sort_by(f64::total_cmp);
    let lead_time_mean_days =
        (!lead_times.is_empty()).then(|| lead_times.iter().sum::<f64>() / lead_times.len() as f64);

    let mut calls = CallStats::default();
    for call in input.calls.iter().filter(|c| in_period(c.started_at)) {
        calls.received += 1;
        match call.outcome.as_deref() {
            Some("booked") => calls.booked += 1,
            Some("transferred") => calls.transferred += 1,
            Some("abandoned") => calls.abandoned += 1,
            _ => {}
        }
    }
    let mut sms = SmsStats::default();
    for &(_, segments, cost) in input.sms.iter().filter(|(at, _, _)| in_period(*at)) {
        sms.messages += 1;
        sms.segments += i64::from(segments);
        sms.cost_micro_eur += cost;
    }

    let mut per_day: HashMap<NaiveDate, u64> = HashMap::new();
    for a in &booked {
        *per_day.entry(commune.local_date(a.starts_at)).or_default() += 1;
    }
    let by_day = days(input.from, input.to)
        .map(|d| (d, per_day.get(&d).copied().unwrap_or(0)))
        .collect();

    Stats {
        appointments: all.len() as u64,
        booked: booked.len() as u64,
        by_channel,
        by_service,
        by_location,
        by_status,
        cancelled,
        honoured,
        no_shows,
        cancellation_rate: ratio(cancelled, booked.len() as u64),
        no_show_rate: ratio(no_shows, honoured + no_shows),
        occupancy: (offered_seat_minutes > 0)
            .then(|| booked_seat_minutes as f64 / offered_seat_minutes as f64),
        booked_seat_minutes,
        offered_seat_minutes,
        lead_time_mean_days,
        lead_time_median_days: median(&lead_times),
        calls,
        sms,
        by_day,
    }
}

/// A field of the CSV: quoted when it holds the separator, a quote or a line break. Text that a
/// spreadsheet would run as a formula (`=`, `+`, `-`, `@`) is prefixed with an apostrophe:
/// service and location names are typed by people.
fn csv_text(text: &str) -> String {
    let text = if text.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{text}")
    } else {
        text.to_owned()
    };
    if text.contains([';', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text
    }
}

/// "12,5": one decimal, decimal comma, as French spreadsheets read numbers.
fn csv_decimal(value: Option<f64>) -> String {
    value
        .map(|v| format!("{v:.1}").replace('.', ","))
        .unwrap_or_default()
}

fn csv_date(date: NaiveDate) -> String {
    date.format("%d/%m/%Y").to_string()
}

/// The statistics as a CSV file for French spreadsheets: UTF-8 with a byte-order mark (so Excel
/// reads the accents), `;` between fields, CRLF line ends, decimal commas, one row per figure
/// under the header `Indicateur;Catégorie;Valeur`. Rates are percentages, amounts in euros.
pub fn stats_csv(stats: &Stats, commune_name: &str, from: NaiveDate, to: NaiveDate) -> String {
    let mut rows: Vec<[String; 3]> = Vec::new();
    let mut row = |indicator: &str, category: &str, value: String| {
        rows.push([csv_text(indicator), csv_text(category), value]);
    };
    let percent = |rate: Option<f64>| csv_decimal(rate.map(|r| r * 100.0));

    row("Commune", "", csv_text(commune_name));
    row("Période", "Du", csv_date(from));
    row("Période", "Au", csv_date(to));
    row(
        "Rendez-vous (tous statuts)",
        "",
        stats.appointments.to_string(),
    );
    row("Rendez-vous pris", "", stats.booked.to_string());
    for (indicator, counts) in [
        ("Rendez-vous pris par canal", &stats.by_channel),
        ("Rendez-vous pris par motif", &stats.by_service),
        ("Rendez-vous pris par lieu", &stats.by_location),
        ("Rendez-vous par statut", &stats.by_status),
    ] {
        for c in counts {
            row(indicator, &c.label, c.count.to_string());
        }
    }
    row(
        "Taux d'annulation (%)",
        "",
        percent(stats.cancellation_rate),
    );
    row("Taux d'absence (%)", "", percent(stats.no_show_rate));
    row("Taux d'occupation (%)", "", percent(stats.occupancy));
    row(
        "Minutes-places réservées",
        "",
        stats.booked_seat_minutes.to_string(),
    );
    row(
        "Minutes-places offertes",
        "",
        stats.offered_seat_minutes.to_string(),
    );
    let lead = "Délai entre réservation et rendez-vous (jours)";
    row(lead, "Moyenne", csv_decimal(stats.lead_time_mean_days));
    row(lead, "Médiane", csv_decimal(stats.lead_time_median_days));
    row("Appels", "Reçus", stats.calls.received.to_string());
    row(
        "Appels",
        "Terminés par une prise de rendez-vous",
        stats.calls.booked.to_string(),
    );
    row(
        "Appels",
        "Transférés au standard",
        stats.calls.transferred.to_string(),
    );
    row("Appels", "Abandonnés", stats.calls.abandoned.to_string());
    row("SMS", "Messages envoyés", stats.sms.messages.to_string());
    row("SMS", "Segments", stats.sms.segments.to_string());
    row("SMS", "Coût (€)", decimal_euros(stats.sms.cost_cents()));
    for &(date, count) in &stats.by_day {
        row(
            "Rendez-vous pris par jour",
            &csv_date(date),
            count.to_string(),
        );
    }

    let mut out = String::from("\u{feff}Indicateur;Catégorie;Valeur\r\n");
    for fields in rows {
        out.push_str(&fields.join(";"));
        out.push_str("\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{
        Category, Channels, Citizen, CitizenName, MinuteOfDay, ServiceId, Weekdays, WeeklyHours,
    };
    use chrono::Weekday;
    use chrono_tz::Europe::Paris;
    use uuid::Uuid;

    fn d(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    fn utc(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn commune() -> Commune {
        Commune {
            id: 1,
            slug: "annecy".into(),
            name: "Annecy".into(),
            insee_code: "74010".into(),
            timezone: Paris,
            population: 130_000,
            phone_numbers: vec![],
            switchboard_number: None,
            switchboard_hours: WeeklyHours::default(),
            reminder_delay_hours: 48,
            quiet_start: MinuteOfDay::hm(20, 0),
            quiet_end: MinuteOfDay::hm(8, 0),
            sms_sender: "Annecy".into(),
            allow_multiple_per_category: false,
            sms_daily_budget: 300,
            allow_foreign_mobiles: false,
        }
    }

    fn service(id: ServiceId, name: &str, active: bool) -> Service {
        Service {
            id,
            commune_id: 1,
            name: name.into(),
            spoken_name: name.into(),
            category: Category::Autre,
            duration_minutes: 30,
            max_persons: 4,
            min_notice_minutes: 0,
            horizon_days: 60,
            channels: Channels::ALL,
            what_to_bring: String::new(),
            active,
        }
    }

    fn location(id: LocationId, name: &str) -> Location {
        Location {
            id,
            commune_id: 1,
            name: name.into(),
            address: String::new(),
            postcode: "74000".into(),
            city: "Annecy".into(),
            access_notes: String::new(),
            active: true,
        }
    }

    fn planning(id: i64, capacity: i32, active: bool) -> Planning {
        Planning {
            id,
            commune_id: 1,
            name: format!("Planning {id}"),
            capacity,
            active,
        }
    }

    fn rule(
        planning: i64,
        location: LocationId,
        days: &[Weekday],
        from: (u16, u16),
        to: (u16, u16),
    ) -> OpeningRule {
        OpeningRule {
            id: planning * 100 + location,
            planning_id: planning,
            location_id: location,
            weekdays: Weekdays::of(days),
            start: MinuteOfDay::hm(from.0, from.1),
            end: MinuteOfDay::hm(to.0, to.1),
            step_minutes: 30,
            valid_from: d("2020-01-01"),
            valid_until: None,
            service_ids: vec![10, 20],
        }
    }

    fn closure(
        planning: Option<i64>,
        location: Option<LocationId>,
        from: &str,
        to: &str,
    ) -> Closure {
        Closure {
            id: 0,
            commune_id: 1,
            planning_id: planning,
            location_id: location,
            starts_at: utc(from),
            ends_at: utc(to),
            reason: String::new(),
        }
    }

    /// An appointment starting at `start` (UTC) for `minutes`, created `lead_days` before.
    fn appointment(
        channel: Channel,
        service: ServiceId,
        location: LocationId,
        start: &str,
        minutes: i64,
        status: Status,
        lead_days: i64,
    ) -> Appointment {
        let starts_at = utc(start);
        let created_at = starts_at - Duration::days(lead_days);
        let confirmed = !matches!(status, Status::Held | Status::Expired);
        Appointment {
            id: Uuid::new_v4(),
            commune_id: 1,
            planning_id: 1,
            location_id: location,
            service_id: service,
            starts_at,
            ends_at: starts_at + Duration::minutes(minutes),
            seat: status.occupies_seat().then_some(1),
            persons: 1,
            citizen: Citizen {
                name: CitizenName::from_trusted("Marie Dupont".into()),
                phone: None,
                email: None,
                ants_application_ids: vec![],
            },
            channel,
            status,
            hold_expires_at: (status == Status::Held).then(|| created_at + Duration::minutes(10)),
            replaces_id: None,
            cancel_reason: None,
            version: 1,
            created_at,
            updated_at: created_at,
            confirmed_at: confirmed.then_some(created_at),
            cancelled_at: None,
        }
    }

    struct World {
        commune: Commune,
        appointments: Vec<Appointment>,
        services: Vec<Service>,
        locations: Vec<Location>,
        plannings: Vec<Planning>,
        rules: Vec<OpeningRule>,
        closures: Vec<Closure>,
        calls: Vec<CallSummary>,
        sms: Vec<SmsSent>,
    }

    impl World {
        fn stats(&self, from: &str, to: &str) -> Stats {
            compute_stats(&StatsInput {
                commune: &self.commune,
                from: d(from),
                to: d(to),
                appointments: &self.appointments,
                services: &self.services,
                locations: &self.locations,
                plannings: &self.plannings,
                rules: &self.rules,
                closures: &self.closures,
                calls: &self.calls,
                sms: &self.sms,
                now: utc("2026-06-01T00:00:00Z"),
            })
        }
    }

    fn call(at: &str, outcome: Option<&str>) -> CallSummary {
        CallSummary {
            started_at: utc(at),
            outcome: outcome.map(str::to_owned),
        }
    }

    /// The week of Monday 27 April 2026 (CEST, UTC+2); Friday 1 May is a public holiday.
    fn week() -> World {
        use Channel::*;
        use Weekday::*;
        World {
            commune: commune(),
            appointments: vec![
                appointment(Web, 10, 1, "2026-04-27T07:00:00Z", 30, Status::Confirmed, 3),
                appointment(
                    Phone,
                    10,
                    1,
                    "2026-04-28T07:00:00Z",
                    30,
                    Status::Honoured,
                    1,
                ),
                appointment(Agent, 20, 2, "2026-04-28T12:00:00Z", 60, Status::NoShow, 5),
                appointment(
                    Web,
                    10,
                    1,
                    "2026-04-29T07:00:00Z",
                    30,
                    Status::CancelledByCitizen,
                    2,
                ),
                appointment(
                    Web,
                    20,
                    1,
                    "2026-04-30T07:00:00Z",
                    30,
                    Status::CancelledByCommune,
                    10,
                ),
                appointment(Web, 10, 1, "2026-04-29T08:00:00Z", 30, Status::Moved, 4),
                // A hold that lapsed without anyone writing it down yet.
                appointment(Web, 10, 1, "2026-04-29T09:00:00Z", 30, Status::Held, 1),
                appointment(Web, 10, 1, "2026-04-29T09:30:00Z", 30, Status::Expired, 1),
                // Monday 4 May 00:30 in Annecy: the next period.
                appointment(Web, 10, 1, "2026-05-03T22:30:00Z", 30, Status::Confirmed, 1),
            ],
            services: vec![
                service(10, "Carte d'identité", true),
                service(20, "Inscription scolaire; maternelle", true),
                service(30, "Ancien motif", false),
                service(40, "Mariage", true),
            ],
            locations: vec![location(1, "Hôtel de ville"), location(2, "Mairie annexe")],
            plannings: vec![
                planning(1, 2, true),
                planning(2, 1, true),
                planning(3, 5, false),
            ],
            rules: vec![
                rule(1, 1, &[Mon, Tue, Wed, Thu, Fri], (9, 0), (12, 0)),
                // Two overlapping rules of planning 2 open 14:00–17:00, once.
                rule(2, 2, &[Tue], (14, 0), (16, 0)),
                rule(2, 2, &[Tue], (15, 0), (17, 0)),
                // An inactive planning offers nothing.
                rule(3, 1, &[Mon, Tue, Wed, Thu, Fri], (9, 0), (17, 0)),
            ],
            closures: vec![
                // Planning 1 closed Tuesday 10:00–11:00.
                closure(
                    Some(1),
                    None,
                    "2026-04-28T08:00:00Z",
                    "2026-04-28T09:00:00Z",
                ),
                // The whole commune closed Thursday from 11:30 to 14:00.
                closure(None, None, "2026-04-30T09:30:00Z", "2026-04-30T12:00:00Z"),
                // Location 2 closed Wednesday, when planning 2 is closed anyway.
                closure(
                    None,
                    Some(2),
                    "2026-04-29T06:00:00Z",
                    "2026-04-29T16:00:00Z",
                ),
                // Another location's closure does not touch planning 1 on Monday.
                closure(
                    None,
                    Some(9),
                    "2026-04-27T06:00:00Z",
                    "2026-04-27T16:00:00Z",
                ),
            ],
            calls: vec![
                call("2026-04-27T08:00:00Z", Some("booked")),
                call("2026-04-27T09:00:00Z", Some("transferred")),
                call("2026-04-28T08:00:00Z", Some("abandoned")),
                call("2026-04-28T09:00:00Z", None),
                call("2026-04-29T09:00:00Z", Some("booked")),
                call("2026-04-30T09:00:00Z", Some("failed")),
                // Sunday 26 April 23:50 in Annecy: the previous period.
                call("2026-04-26T21:50:00Z", Some("booked")),
            ],
            sms: vec![
                (utc("2026-04-27T08:00:00Z"), 1, 70_000),
                (utc("2026-04-28T08:00:00Z"), 2, 140_000),
                (utc("2026-05-03T22:10:00Z"), 1, 70_000),
            ],
        }
    }

    fn count(counts: &[Count], label: &str) -> u64 {
        counts
            .iter()
            .find(|c| c.label == label)
            .unwrap_or_else(|| panic!("no row {label} in {counts:?}"))
            .count
    }

    #[test]
    fn appointments_are_counted_by_channel_service_location_and_status() {
        let s = week().stats("2026-04-27", "2026-05-03");
        assert_eq!(
            s.appointments, 8,
            "the one on 4 May local is not in the week"
        );
        assert_eq!(
            s.booked, 5,
            "holds, lapsed holds and the moved one are not booked"
        );
        assert_eq!(
            s.by_channel,
            [
                Count {
                    label: "En ligne".into(),
                    count: 3
                },
                Count {
                    label: "Téléphone (serveur vocal)".into(),
                    count: 1
                },
                Count {
                    label: "Par un agent".into(),
                    count: 1
                },
            ]
        );
        let services: Vec<_> = s
            .by_service
            .iter()
            .map(|c| (c.label.as_str(), c.count))
            .collect();
        assert_eq!(
            services,
            [
                ("Carte d'identité", 3),
                ("Inscription scolaire; maternelle", 2),
                ("Mariage", 0),
            ],
            "most booked first, inactive services with nothing left out"
        );
        assert_eq!(count(&s.by_location, "Hôtel de ville"), 4);
        assert_eq!(count(&s.by_location, "Mairie annexe"), 1);
        assert_eq!(count(&s.by_status, "confirmé"), 1);
        assert_eq!(count(&s.by_status, "honoré"), 1);
        assert_eq!(count(&s.by_status, "absent"), 1);
        assert_eq!(count(&s.by_status, "annulé par l'usager"), 1);
        assert_eq!(count(&s.by_status, "annulé par la mairie"), 1);
        assert_eq!(count(&s.by_status, "déplacé"), 1);
        assert_eq!(count(&s.by_status, "expiré"), 2, "a lapsed hold is expired");
        assert_eq!(count(&s.by_status, "en attente de confirmation"), 0);
        assert_eq!(s.by_status.len(), Status::ALL.len());
    }

    #[test]
    fn rates_divide_by_what_they_should() {
        let s = week().stats("2026-04-27", "2026-05-03");
        assert_eq!(s.cancelled, 2);
        assert_eq!(s.cancellation_rate, Some(0.4), "2 cancelled of 5 booked");
        assert_eq!(s.no_show_rate, Some(0.5), "1 no-show of 2 known outcomes");
        let empty = week().stats("2027-01-04", "2027-01-10");
        assert_eq!(empty.booked, 0);
        assert_eq!(empty.cancellation_rate, None);
        assert_eq!(empty.no_show_rate, None);
        assert_eq!(empty.lead_time_mean_days, None);
        assert_eq!(empty.lead_time_median_days, None);
    }

    #[test]
    fn occupancy_counts_offered_seats_without_holidays_and_closures() {
        let s = week().stats("2026-04-27", "2026-05-03");
        // Planning 1: Monday to Thursday 9:00–12:00 × 2 seats (Friday 1 May is a holiday)
        // = 1,440, minus Tuesday 10:00–11:00 (120) and Thursday 11:30–12:00 (60).
        // Planning 2: Tuesday 14:00–17:00 × 1 seat = 180, the overlap counted once.
        assert_eq!(s.offered_seat_minutes, 1_440 - 120 - 60 + 180);
        // Confirmed 30 + honoured 30 + no-show 60; cancelled ones free their seat.
        assert_eq!(s.booked_seat_minutes, 120);
        assert_eq!(s.occupancy, Some(120.0 / 1_440.0));
    }

    #[test]
    fn offered_time_follows_validity_and_local_time() {
        let mut w = week();
        w.rules = vec![rule(1, 1, &[Weekday::Sun], (0, 0), (4, 0))];
        w.plannings = vec![planning(1, 1, true)];
        w.closures.clear();
        // 29 March 2026: clocks go from 2:00 to 3:00, the office is open three real hours.
        assert_eq!(
            w.stats("2026-03-29", "2026-03-29").offered_seat_minutes,
            180
        );
        // 25 October 2026: 3:00 becomes 2:00 again, five real hours.
        assert_eq!(
            w.stats("2026-10-25", "2026-10-25").offered_seat_minutes,
            300
        );
        assert_eq!(
            w.stats("2026-03-22", "2026-03-22").offered_seat_minutes,
            240
        );
        w.rules[0].valid_from = d("2026-03-23");
        w.rules[0].valid_until = Some(d("2026-03-29"));
        assert_eq!(
            w.stats("2026-03-22", "2026-04-05").offered_seat_minutes,
            180
        );
        assert_eq!(w.stats("2026-04-05", "2026-03-22").offered_seat_minutes, 0);
    }

    #[test]
    fn lead_time_is_measured_in_days() {
        let s = week().stats("2026-04-27", "2026-05-03");
        // Booked: 3, 1, 5, 2 and 10 days ahead.
        assert_eq!(s.lead_time_mean_days, Some(4.2));
        assert_eq!(s.lead_time_median_days, Some(3.0));
        let mut w = week();
        w.appointments.truncate(4);
        let s = w.stats("2026-04-27", "2026-05-03");
        assert_eq!(
            s.lead_time_median_days,
            Some(2.5),
            "3, 1, 5, 2: between 2 and 3"
        );
    }

    #[test]
    fn calls_and_sms_of_the_period() {
        let s = week().stats("2026-04-27", "2026-05-03");
        assert_eq!(
            s.calls,
            CallStats {
                received: 6,
                booked: 2,
                transferred: 1,
                abandoned: 1,
            }
        );
        assert_eq!(
            s.sms,
            SmsStats {
                messages: 2,
                segments: 3,
                cost_micro_eur: 210_000,
            }
        );
        assert_eq!(s.sms.cost_cents(), 21);
        assert_eq!(
            SmsStats {
                cost_micro_eur: 72_500,
                ..SmsStats::default()
            }
            .cost_cents(),
            7
        );
    }

    #[test]
    fn bookings_per_day_and_week() {
        let s = week().stats("2026-04-27", "2026-05-03");
        let counts: Vec<u64> = s.by_day.iter().map(|(_, c)| *c).collect();
        assert_eq!(counts, [1, 2, 1, 1, 0, 0, 0]);
        assert_eq!(s.by_day[0].0, d("2026-04-27"));
        let s = week().stats("2026-04-22", "2026-04-29");
        assert_eq!(
            s.by_week(),
            [(d("2026-04-20"), 0), (d("2026-04-27"), 4)],
            "weeks named by their Monday"
        );
    }

    #[test]
    fn csv_opens_in_a_french_spreadsheet() {
        let s = week().stats("2026-04-27", "2026-05-03");
        let csv = stats_csv(&s, "=Annecy", d("2026-04-27"), d("2026-05-03"));
        assert!(csv.starts_with("\u{feff}Indicateur;Catégorie;Valeur\r\n"));
        assert!(csv.ends_with("\r\n"));
        assert_eq!(csv.matches('\n').count(), csv.matches("\r\n").count());
        let lines: Vec<&str> = csv.trim_start_matches('\u{feff}').split("\r\n").collect();
        for line in [
            "Commune;;'=Annecy",
            "Période;Du;27/04/2026",
            "Période;Au;03/05/2026",
            "Rendez-vous pris;;5",
            "Rendez-vous pris par canal;En ligne;3",
            "Rendez-vous pris par motif;\"Inscription scolaire; maternelle\";2",
            "Rendez-vous pris par lieu;Hôtel de ville;4",
            "Rendez-vous par statut;annulé par l'usager;1",
            "Taux d'annulation (%);;40,0",
            "Taux d'absence (%);;50,0",
            "Taux d'occupation (%);;8,3",
            "Minutes-places offertes;;1440",
            "Délai entre réservation et rendez-vous (jours);Moyenne;4,2",
            "Délai entre réservation et rendez-vous (jours);Médiane;3,0",
            "Appels;Reçus;6",
            "Appels;Transférés au standard;1",
            "SMS;Segments;3",
            "SMS;Coût (€);0,21",
            "Rendez-vous pris par jour;28/04/2026;2",
        ] {
            assert!(lines.contains(&line), "missing {line:?} in\n{csv}");
        }
        assert!(
            lines
                .iter()
                .all(|l| l.is_empty() || l.split(';').count() >= 3)
        );
        let empty = week().stats("2027-01-04", "2027-01-04");
        let csv = stats_csv(&empty, "Annecy", d("2027-01-04"), d("2027-01-04"));
        assert!(
            csv.contains("\r\nTaux d'annulation (%);;\r\n"),
            "no rate: empty cell"
        );
    }

    #[test]
    fn csv_fields_are_quoted_when_needed() {
        assert_eq!(csv_text("simple"), "simple");
        assert_eq!(csv_text("a;b"), "\"a;b\"");
        assert_eq!(csv_text("dit \"oui\""), "\"dit \"\"oui\"\"\"");
        assert_eq!(csv_text("deux\nlignes"), "\"deux\nlignes\"");
        assert_eq!(csv_text("@SUM(A1)"), "'@SUM(A1)");
    }
}
