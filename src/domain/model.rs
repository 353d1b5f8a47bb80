//! The domain model of SPEC.md (glossary: commune → `Commune`, lieu → `Location`, motif →
//! `Service`, agenda → `Planning`, plage d'ouverture → `OpeningRule`, fermeture → `Closure`,
//! rendez-vous → `Appointment`). Instants are UTC; calendar values (dates, times of day, weekdays)
//! are in the commune's time zone.

use super::holidays::HolidayRegion;
use super::values::{AntsApplicationId, Category, Channel, CitizenName, Email, PhoneE164, Status};
use chrono::{DateTime, Datelike, NaiveDate, NaiveTime, Timelike, Utc, Weekday};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub type CommuneId = i64;
pub type LocationId = i64;
pub type ServiceId = i64;
pub type PlanningId = i64;
pub type OpeningRuleId = i64;
pub type ClosureId = i64;
pub type AppointmentId = Uuid;

/// A set of weekdays, Monday = bit 0 … Sunday = bit 6.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Weekdays(pub u8);

impl Weekdays {
    pub const MONDAY_TO_FRIDAY: Weekdays = Weekdays(0b001_1111);

    pub fn of(days: &[Weekday]) -> Self {
        Self(
            days.iter()
                .fold(0, |m, d| m | (1 << d.num_days_from_monday())),
        )
    }

    pub fn contains(self, day: Weekday) -> bool {
        self.0 & (1 << day.num_days_from_monday()) != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 & 0x7f == 0
    }
}

/// A time of day as minutes after local midnight (`9 h 30` = 570). Opening hours are wall-clock
/// times: "9 h 30" stays "9 h 30" on both sides of a daylight-saving change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MinuteOfDay(pub u16);

impl MinuteOfDay {
    pub fn hm(hour: u16, minute: u16) -> Self {
        Self(hour * 60 + minute)
    }

    /// The clock time of day: the end of a day ("24:00", 1440), which opening hours may name,
    /// is 00:00 — as quiet hours, which are times of day, need it.
    pub fn time_of_day(self) -> Self {
        Self(self.0 % (24 * 60))
    }

    pub fn to_time(self) -> Option<NaiveTime> {
        NaiveTime::from_hms_opt(u32::from(self.0 / 60), u32::from(self.0 % 60), 0)
    }

    pub fn of_time(t: NaiveTime) -> Self {
        Self((t.hour() * 60 + t.minute()) as u16)
    }

    /// "09:30".
    pub fn hhmm(self) -> String {
        format!("{:02}:{:02}", self.0 / 60, self.0 % 60)
    }
}

/// Recurring weekly hours (the switchboard's, for instance).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WeeklyRange {
    pub weekdays: Weekdays,
    pub start: MinuteOfDay,
    pub end: MinuteOfDay,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct WeeklyHours(pub Vec<WeeklyRange>);

impl WeeklyHours {
    pub fn is_open(&self, day: Weekday, at: MinuteOfDay) -> bool {
        self.0
            .iter()
            .any(|r| r.weekdays.contains(day) && r.start <= at && at < r.end)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Commune {
    pub id: CommuneId,
    pub slug: String,
    pub name: String,
    pub insee_code: String,
    pub timezone: Tz,
    pub population: i64,
    pub phone_numbers: Vec<String>,
    pub switchboard_number: Option<String>,
    pub switchboard_hours: WeeklyHours,
    pub reminder_delay_hours: i32,
    pub quiet_start: MinuteOfDay,
    pub quiet_end: MinuteOfDay,
    pub sms_sender: String,
    /// Lets a citizen hold several active appointments of one category here (invariant 2).
    pub allow_multiple_per_category: bool,
    /// SMS the commune may send in one day (codes first to suffer: e-mail still works).
    pub sms_daily_budget: i32,
    /// Whether codes and reminders may go to mobiles outside France.
    pub allow_foreign_mobiles: bool,
}

impl Commune {
    pub fn holiday_region(&self) -> HolidayRegion {
        HolidayRegion::from_insee(&self.insee_code)
    }

    pub fn local_date(&self, at: DateTime<Utc>) -> NaiveDate {
        at.with_timezone(&self.timezone).date_naive()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Location {
    pub id: LocationId,
    pub commune_id: CommuneId,
    pub name: String,
    pub address: String,
    pub postcode: String,
    pub city: String,
    pub access_notes: String,
    pub active: bool,
}

/// Which channels may book a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Channels {
    pub web: bool,
    pub phone: bool,
    pub agent: bool,
}

impl Channels {
    pub const ALL: Channels = Channels {
        web: true,
        phone: true,
        agent: true,
    };

    pub fn allows(self, channel: Channel) -> bool {
        match channel {
            Channel::Web => self.web,
            Channel::Phone => self.phone,
            Channel::Agent => self.agent,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Service {
    pub id: ServiceId,
    pub commune_id: CommuneId,
    pub name: String,
    /// What the voice menu says ("carte d'identité ou passeport").
    pub spoken_name: String,
    pub category: Category,
    pub duration_minutes: i32,
    pub max_persons: i32,
    pub min_notice_minutes: i32,
    pub horizon_days: i32,
    pub channels: Channels,
    pub what_to_bring: String,
    pub active: bool,
}

impl Service {
    /// A family of three applying for passports books one appointment of 3 × the duration.
    pub fn duration_for(&self, persons: u32) -> chrono::Duration {
        chrono::Duration::minutes(i64::from(self.duration_minutes) * i64::from(persons))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Planning {
    pub id: PlanningId,
    pub commune_id: CommuneId,
    pub name: String,
    /// Parallel seats: how many appointments can run at the same instant.
    pub capacity: i32,
    pub active: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OpeningRule {
    pub id: OpeningRuleId,
    pub planning_id: PlanningId,
    pub location_id: LocationId,
    pub weekdays: Weekdays,
    pub start: MinuteOfDay,
    pub end: MinuteOfDay,
    pub step_minutes: i32,
    pub valid_from: NaiveDate,
    pub valid_until: Option<NaiveDate>,
    pub service_ids: Vec<ServiceId>,
}

impl OpeningRule {
    pub fn applies_on(&self, date: NaiveDate) -> bool {
        self.weekdays.contains(date.weekday())
            && self.valid_from <= date
            && self.valid_until.is_none_or(|until| date <= until)
    }

    /// Whether this rule still opens the time of an existing appointment: its planning, place,
    /// service, day and hours. Not whether its start is on the rule's grid — a changed step
    /// strands nobody.
    pub fn covers(&self, a: &Appointment, tz: Tz) -> bool {
        let start = a.starts_at.with_timezone(&tz).naive_local();
        let end = a.ends_at.with_timezone(&tz).naive_local();
        let end_minute = if end.date() > start.date() {
            if end.date() > start.date() + chrono::Duration::days(1)
                || end.time() != chrono::NaiveTime::MIN
            {
                return false;
            }
            MinuteOfDay(1440)
        } else {
            MinuteOfDay::of_time(end.time())
        };
        self.planning_id == a.planning_id
            && self.location_id == a.location_id
            && self.service_ids.contains(&a.service_id)
            && self.applies_on(start.date())
            && MinuteOfDay::of_time(start.time()) >= self.start
            && end_minute <= self.end
    }
}

/// A period when a planning, a location, or (with neither) the whole commune is closed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Closure {
    pub id: ClosureId,
    pub commune_id: CommuneId,
    pub planning_id: Option<PlanningId>,
    pub location_id: Option<LocationId>,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub reason: String,
}

impl Closure {
    pub fn closes(
        &self,
        planning: PlanningId,
        location: LocationId,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> bool {
        let in_scope = self.planning_id.is_none_or(|p| p == planning)
            && self.location_id.is_none_or(|l| l == location);
        in_scope && self.starts_at < end && start < self.ends_at
    }
}

/// Who is coming and how to reach them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Citizen {
    pub name: CitizenName,
    pub phone: Option<PhoneE164>,
    pub email: Option<Email>,
    /// One per person for CNI/passport appointments.
    pub ants_application_ids: Vec<AntsApplicationId>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Appointment {
    pub id: AppointmentId,
    pub commune_id: CommuneId,
    pub planning_id: PlanningId,
    pub location_id: LocationId,
    pub service_id: ServiceId,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    /// The planning seat taken, while the appointment takes one (see [`Status::occupies_seat`]).
    pub seat: Option<i32>,
    pub persons: i32,
    pub citizen: Citizen,
    pub channel: Channel,
    pub status: Status,
    pub hold_expires_at: Option<DateTime<Utc>>,
    /// The appointment this one replaced when it was moved.
    pub replaces_id: Option<AppointmentId>,
    pub cancel_reason: Option<String>,
    /// Bumped by every change; notifications are de-duplicated per (appointment, kind, version).
    pub version: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub confirmed_at: Option<DateTime<Utc>>,
    pub cancelled_at: Option<DateTime<Utc>>,
}

impl Appointment {
    /// The status as a person would see it now: a hold past its expiry has expired, whether or
    /// not a later transaction has written that down yet.
    pub fn effective_status(&self, now: DateTime<Utc>) -> Status {
        match (self.status, self.hold_expires_at) {
            (Status::Held, Some(expiry)) if expiry <= now => Status::Expired,
            (status, _) => status,
        }
    }

    /// Whether this appointment counts against its planning's capacity at `now`.
    pub fn occupies_at(&self, now: DateTime<Utc>) -> bool {
        self.seat.is_some() && self.effective_status(now).occupies_seat()
    }

    /// Active for the duplicate rule (invariant 2): a live hold, or a confirmed appointment that
    /// has not ended yet.
    pub fn is_active(&self, now: DateTime<Utc>) -> bool {
        match self.effective_status(now) {
            Status::Held => true,
            Status::Confirmed => self.ends_at > now,
            _ => false,
        }
    }
}

/// Where and when an appointment is, in words a citizen understands; used when a duplicate is
/// refused ("you already have an appointment at … on …").
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AppointmentPlace {
    pub appointment_id: AppointmentId,
    pub commune_name: String,
    pub commune_slug: String,
    pub location_name: String,
    pub location_address: String,
    pub service_name: String,
    pub starts_at: DateTime<Utc>,
    pub timezone: Tz,
}
