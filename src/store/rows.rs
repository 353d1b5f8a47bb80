//! Rows as both databases return them, and their conversion into domain values. Both schemas use
//! the same column names and compatible types (SQLite's INTEGER instants decode as `DateTime`), so
//! one set of row types serves both backends.

use super::{NewNotification, Notification, OtpRecord, Result, StoreError};
use crate::domain::{
    AntsApplicationId, Appointment, AppointmentPlace, Category, Channel, Channels, Citizen,
    CitizenName, Closure, Commune, Email, Location, MessageChannel, MinuteOfDay, NotificationKind,
    NotificationStatus, OpeningRule, PhoneE164, Planning, Service, Status, Weekdays, WeeklyHours,
    slots::Occupied,
};
use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;
use uuid::Uuid;

fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(what.to_string())
}

fn minute(value: i32, column: &str) -> Result<MinuteOfDay> {
    u16::try_from(value)
        .ok()
        .filter(|m| *m <= 1440)
        .map(MinuteOfDay)
        .ok_or_else(|| corrupt(format!("{column} = {value}")))
}

fn timezone(name: &str) -> Result<Tz> {
    name.parse()
        .map_err(|_| corrupt(format!("unknown time zone {name}")))
}

#[derive(sqlx::FromRow)]
pub struct CommuneRow {
    pub id: i64,
    pub slug: String,
    pub name: String,
    pub insee_code: String,
    pub timezone: String,
    pub population: i64,
    pub switchboard_number: Option<String>,
    pub switchboard_hours: String,
    pub reminder_delay_hours: i32,
    pub quiet_start_minute: i32,
    pub quiet_end_minute: i32,
    pub sms_sender: String,
    pub allow_multiple_per_category: bool,
    pub sms_daily_budget: i32,
    pub allow_foreign_mobiles: bool,
    /// Comma-separated, in order.
    pub phone_numbers: Option<String>,
}

/// `"12,15"` → `[12, 15]`: lists aggregated by `string_agg`.
fn split_list<T: std::str::FromStr>(list: Option<&str>, what: &str) -> Result<Vec<T>> {
    list.unwrap_or_default()
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().map_err(|_| corrupt(format!("{what}: {s}"))))
        .collect()
}

impl CommuneRow {
    pub fn into_domain(self) -> Result<Commune> {
        Ok(Commune {
            timezone: timezone(&self.timezone)?,
            switchboard_hours: serde_json::from_str::<WeeklyHours>(&self.switchboard_hours)
                .map_err(|e| corrupt(format!("switchboard_hours of {}: {e}", self.slug)))?,
            quiet_start: minute(self.quiet_start_minute, "quiet_start_minute")?,
            quiet_end: minute(self.quiet_end_minute, "quiet_end_minute")?,
            phone_numbers: split_list(self.phone_numbers.as_deref(), "phone number")?,
            id: self.id,
            slug: self.slug,
            name: self.name,
            insee_code: self.insee_code,
            population: self.population,
            switchboard_number: self.switchboard_number,
            reminder_delay_hours: self.reminder_delay_hours,
            sms_sender: self.sms_sender,
            allow_multiple_per_category: self.allow_multiple_per_category,
            sms_daily_budget: self.sms_daily_budget,
            allow_foreign_mobiles: self.allow_foreign_mobiles,
        })
    }
}

#[derive(sqlx::FromRow)]
pub struct LocationRow {
    pub id: i64,
    pub commune_id: i64,
    pub name: String,
    pub address: String,
    pub postcode: String,
    pub city: String,
    pub access_notes: String,
    pub active: bool,
}

impl From<LocationRow> for Location {
    fn from(r: LocationRow) -> Self {
        Location {
            id: r.id,
            commune_id: r.commune_id,
            name: r.name,
            address: r.address,
            postcode: r.postcode,
            city: r.city,
            access_notes: r.access_notes,
            active: r.active,
        }
    }
}

#[derive(sqlx::FromRow)]
pub struct ServiceRow {
    pub id: i64,
    pub commune_id: i64,
    pub name: String,
    pub spoken_name: String,
    pub category: String,
    pub duration_minutes: i32,
    pub max_persons: i32,
    pub min_notice_minutes: i32,
    pub horizon_days: i32,
    pub channel_web: bool,
    pub channel_phone: bool,
    pub channel_agent: bool,
    pub what_to_bring: String,
    pub active: bool,
}

impl TryFrom<ServiceRow> for Service {
    type Error = StoreError;
    fn try_from(r: ServiceRow) -> Result<Self> {
        Ok(Service {
            category: Category::parse(&r.category)
                .ok_or_else(|| corrupt(format!("service category {}", r.category)))?,
            id: r.id,
            commune_id: r.commune_id,
            name: r.name,
            spoken_name: r.spoken_name,
            duration_minutes: r.duration_minutes,
            max_persons: r.max_persons,
            min_notice_minutes: r.min_notice_minutes,
            horizon_days: r.horizon_days,
            channels: Channels {
                web: r.channel_web,
                phone: r.channel_phone,
                agent: r.channel_agent,
            },
            what_to_bring: r.what_to_bring,
            active: r.active,
        })
    }
}

#[derive(sqlx::FromRow)]
pub struct PlanningRow {
    pub id: i64,
    pub commune_id: i64,
    pub name: String,
    pub capacity: i32,
    pub active: bool,
}

impl From<PlanningRow> for Planning {
    fn from(r: PlanningRow) -> Self {
        Planning {
            id: r.id,
            commune_id: r.commune_id,
            name: r.name,
            capacity: r.capacity,
            active: r.active,
        }
    }
}

#[derive(sqlx::FromRow)]
pub struct RuleRow {
    pub id: i64,
    pub planning_id: i64,
    pub location_id: i64,
    pub weekdays: i32,
    pub start_minute: i32,
    pub end_minute: i32,
    pub step_minutes: i32,
    pub valid_from: NaiveDate,
    pub valid_until: Option<NaiveDate>,
    pub service_ids: Option<String>,
}

impl TryFrom<RuleRow> for OpeningRule {
    type Error = StoreError;
    fn try_from(r: RuleRow) -> Result<Self> {
        Ok(OpeningRule {
            weekdays: Weekdays(
                u8::try_from(r.weekdays)
                    .map_err(|_| corrupt(format!("weekdays {}", r.weekdays)))?,
            ),
            start: minute(r.start_minute, "start_minute")?,
            end: minute(r.end_minute, "end_minute")?,
            service_ids: split_list(r.service_ids.as_deref(), "rule service")?,
            id: r.id,
            planning_id: r.planning_id,
            location_id: r.location_id,
            step_minutes: r.step_minutes,
            valid_from: r.valid_from,
            valid_until: r.valid_until,
        })
    }
}

#[derive(sqlx::FromRow)]
pub struct ClosureRow {
    pub id: i64,
    pub commune_id: i64,
    pub planning_id: Option<i64>,
    pub location_id: Option<i64>,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub reason: String,
}

impl From<ClosureRow> for Closure {
    fn from(r: ClosureRow) -> Self {
        Closure {
            id: r.id,
            commune_id: r.commune_id,
            planning_id: r.planning_id,
            location_id: r.location_id,
            starts_at: r.starts_at,
            ends_at: r.ends_at,
            reason: r.reason,
        }
    }
}

#[derive(sqlx::FromRow)]
pub struct OccupiedRow {
    pub planning_id: i64,
    pub seat: i32,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
}

impl From<OccupiedRow> for Occupied {
    fn from(r: OccupiedRow) -> Self {
        Occupied {
            planning_id: r.planning_id,
            seat: r.seat,
            starts_at: r.starts_at,
            ends_at: r.ends_at,
        }
    }
}

#[derive(sqlx::FromRow)]
pub struct AppointmentRow {
    pub id: Uuid,
    pub commune_id: i64,
    pub planning_id: i64,
    pub location_id: i64,
    pub service_id: i64,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub seat: Option<i32>,
    pub persons: i32,
    pub citizen_name: String,
    pub phone: Option<String>,
    pub email: Option<String>,
    pub ants_ids: String,
    pub channel: String,
    pub status: String,
    pub hold_expires_at: Option<DateTime<Utc>>,
    pub replaces_id: Option<Uuid>,
    pub cancel_reason: Option<String>,
    pub version: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub confirmed_at: Option<DateTime<Utc>>,
    pub cancelled_at: Option<DateTime<Utc>>,
}

impl TryFrom<AppointmentRow> for Appointment {
    type Error = StoreError;
    fn try_from(r: AppointmentRow) -> Result<Self> {
        let ants_application_ids = r
            .ants_ids
            .split(',')
            .filter(|s| !s.is_empty())
            .map(|s| AntsApplicationId::parse(s).map_err(|_| corrupt(format!("ANTS id {s}"))))
            .collect::<Result<Vec<_>>>()?;
        Ok(Appointment {
            channel: Channel::parse(&r.channel)
                .ok_or_else(|| corrupt(format!("channel {}", r.channel)))?,
            status: Status::parse(&r.status)
                .ok_or_else(|| corrupt(format!("status {}", r.status)))?,
            citizen: Citizen {
                name: CitizenName::from_trusted(r.citizen_name),
                phone: r.phone.map(PhoneE164::from_trusted),
                email: r.email.map(Email::from_trusted),
                ants_application_ids,
            },
            id: r.id,
            commune_id: r.commune_id,
            planning_id: r.planning_id,
            location_id: r.location_id,
            service_id: r.service_id,
            starts_at: r.starts_at,
            ends_at: r.ends_at,
            seat: r.seat,
            persons: r.persons,
            hold_expires_at: r.hold_expires_at,
            replaces_id: r.replaces_id,
            cancel_reason: r.cancel_reason,
            version: r.version,
            created_at: r.created_at,
            updated_at: r.updated_at,
            confirmed_at: r.confirmed_at,
            cancelled_at: r.cancelled_at,
        })
    }
}

/// ANTS ids as stored: comma-separated (they never contain a comma).
pub fn ants_ids_text(a: &Appointment) -> String {
    a.citizen
        .ants_application_ids
        .iter()
        .map(|id| id.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

#[derive(sqlx::FromRow)]
pub struct PlaceRow {
    pub id: Uuid,
    pub commune_name: String,
    pub commune_slug: String,
    pub location_name: String,
    pub location_address: String,
    pub service_name: String,
    pub starts_at: DateTime<Utc>,
    pub timezone: String,
}

impl TryFrom<PlaceRow> for AppointmentPlace {
    type Error = StoreError;
    fn try_from(r: PlaceRow) -> Result<Self> {
        Ok(AppointmentPlace {
            timezone: timezone(&r.timezone)?,
            appointment_id: r.id,
            commune_name: r.commune_name,
            commune_slug: r.commune_slug,
            location_name: r.location_name,
            location_address: r.location_address,
            service_name: r.service_name,
            starts_at: r.starts_at,
        })
    }
}

#[derive(sqlx::FromRow)]
pub struct NotificationRow {
    pub id: Uuid,
    pub commune_id: Option<i64>,
    pub appointment_id: Option<Uuid>,
    pub kind: String,
    pub channel: String,
    pub destination: String,
    pub dedupe_key: Option<String>,
    pub subject: Option<String>,
    pub body: String,
    pub html: Option<String>,
    pub ics: Option<String>,
    pub due_at: DateTime<Utc>,
    pub status: String,
    pub attempts: i32,
    pub provider_id: Option<String>,
    pub delivery_status: Option<String>,
    pub segments: Option<i32>,
    pub cost_micro_eur: Option<i64>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub sent_at: Option<DateTime<Utc>>,
}

impl TryFrom<NotificationRow> for Notification {
    type Error = StoreError;
    fn try_from(r: NotificationRow) -> Result<Self> {
        Ok(Notification {
            message: NewNotification {
                kind: NotificationKind::parse(&r.kind)
                    .ok_or_else(|| corrupt(format!("notification kind {}", r.kind)))?,
                channel: MessageChannel::parse(&r.channel)
                    .ok_or_else(|| corrupt(format!("notification channel {}", r.channel)))?,
                id: r.id,
                commune_id: r.commune_id,
                appointment_id: r.appointment_id,
                destination: r.destination,
                dedupe_key: r.dedupe_key,
                subject: r.subject,
                body: r.body,
                html: r.html,
                ics: r.ics,
                due_at: r.due_at,
            },
            status: NotificationStatus::parse(&r.status)
                .ok_or_else(|| corrupt(format!("notification status {}", r.status)))?,
            attempts: r.attempts,
            provider_id: r.provider_id,
            delivery_status: r.delivery_status,
            segments: r.segments,
            cost_micro_eur: r.cost_micro_eur,
            last_error: r.last_error,
            created_at: r.created_at,
            sent_at: r.sent_at,
        })
    }
}

#[derive(sqlx::FromRow)]
pub struct OtpRow {
    pub appointment_id: Uuid,
    pub destination: String,
    pub code_hash: String,
    pub expires_at: DateTime<Utc>,
    pub attempts_left: i32,
    pub used_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

impl From<OtpRow> for OtpRecord {
    fn from(r: OtpRow) -> Self {
        OtpRecord {
            appointment_id: r.appointment_id,
            destination: r.destination,
            code_hash: r.code_hash,
            expires_at: r.expires_at,
            attempts_left: r.attempts_left,
            used_at: r.used_at,
            created_at: r.created_at,
        }
    }
}

#[derive(sqlx::FromRow)]
pub struct CallRow {
    pub call_sid: String,
    pub commune_id: i64,
    pub caller: String,
    pub seq: i64,
    pub answered: i64,
    pub state: String,
    pub last_twiml: String,
    pub outcome: Option<String>,
    pub spoken_name: Option<String>,
    pub started_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
}

impl From<CallRow> for super::CallRecord {
    fn from(r: CallRow) -> Self {
        Self {
            call_sid: r.call_sid,
            commune_id: r.commune_id,
            caller: r.caller,
            seq: r.seq,
            answered: r.answered,
            state: r.state,
            last_twiml: r.last_twiml,
            outcome: r.outcome,
            spoken_name: r.spoken_name,
            started_at: r.started_at,
            ended_at: r.ended_at,
        }
    }
}

#[derive(sqlx::FromRow)]
pub struct AgentRow {
    pub id: i64,
    pub email: String,
    pub name: String,
    pub password_hash: String,
    pub role: String,
    pub commune_id: Option<i64>,
    pub active: bool,
    pub created_at: DateTime<Utc>,
}

impl TryFrom<AgentRow> for super::Agent {
    type Error = StoreError;
    fn try_from(r: AgentRow) -> Result<Self> {
        Ok(Self {
            id: r.id,
            email: r.email,
            name: r.name,
            password_hash: r.password_hash,
            role: crate::domain::Role::parse(&r.role)
                .ok_or_else(|| corrupt(format!("agent role {}", r.role)))?,
            commune_id: r.commune_id,
            active: r.active,
            created_at: r.created_at,
        })
    }
}

#[derive(sqlx::FromRow)]
pub struct AuditRow {
    pub commune_id: Option<i64>,
    pub agent_id: Option<i64>,
    pub agent_email: String,
    pub at: DateTime<Utc>,
    pub action: String,
    pub detail: String,
}

impl From<AuditRow> for super::AuditEntry {
    fn from(r: AuditRow) -> Self {
        Self {
            commune_id: r.commune_id,
            agent_id: r.agent_id,
            agent_email: r.agent_email,
            at: r.at,
            action: r.action,
            detail: r.detail,
        }
    }
}
